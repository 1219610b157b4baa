use clap::Parser;
use std::process::ExitCode;

use memsleuth::cli::{Cli, Command};
use memsleuth::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A program started with `memsleuth run` reads its own /proc for us.
    memsleuth::process::relay::set_provider(memsleuth::inject::launch::relay::relay_for);
    let result = match cli.command {
        Command::Doctor(args) => commands::doctor::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::Ps(args) => commands::ps::run(&args),
        Command::Top(args) => commands::top::run(&args),
        Command::Maps(args) => commands::maps::run(&args),
        Command::Shm(args) => commands::shm::run(&args),
        Command::Info(args) => commands::info::run(&args),
        Command::Exec(args) => commands::exec::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Shell(args) => commands::shell::run(&args),
        Command::Types(args) => commands::types::run(&args),
        Command::Growth(args) => commands::growth::run(&args),
        Command::Gc(args) => commands::gc::run(&args),
        Command::Why(args) => commands::why::run(&args),
        Command::Retained(args) => commands::retained::run(&args),
        Command::Tracemalloc(args) => commands::tracemalloc::run(&args),
        Command::Native(args) => commands::native::run(&args),
        Command::View(args) => commands::view::run(&args),
        Command::Exporter(args) => commands::exporter::run(&args),
        Command::Run(args) => commands::run::run(&args),
        Command::Completions(args) => commands::completions::run(&args),
        Command::Man => commands::completions::man(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`memsleuth ps | head`) is not an error.
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("memsleuth: {}", commands::error_sentence(&err));
            ExitCode::from(1)
        }
    }
}
