//! The command line: one subcommand per job, one line of help each.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "memsleuth",
    version,
    about = "Find out why a running Python process keeps growing, without restarting it and without gdb.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List running Python processes with their version, build and memory.
    Ps(PsArgs),
    /// Watch a process's memory counters live, with deltas and rates since start.
    Top(TopArgs),
    /// Show a process's mappings grouped by what backs them, flagging repeated mappings (pmap's successor).
    Maps(MapsArgs),
    /// List SysV shared-memory segments and which processes have them attached, how many times.
    Shm(ShmArgs),
    /// Show the interpreter, how memsleuth would attach, and what each thread is doing (no attach).
    Info(InfoArgs),
    /// Run Python code inside the process and print its output.
    Exec(ExecArgs),
    /// Print the repr() of a Python expression evaluated inside the process.
    Eval(EvalArgs),
    /// Open an interactive Python shell inside the process (pyrasite-shell's successor).
    Shell(ShellArgs),
}

/// How to attach; shared by every command that runs code in the target.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The Python process.
    pub pid: u32,
    /// Seconds to wait for the interpreter to reach a safe point.
    #[arg(long, default_value_t = 5.0, value_parser = parse_interval)]
    pub timeout: f64,
    /// How to get in: PEP 768 when possible (auto), or force one way.
    #[arg(long, value_enum, default_value_t = crate::inject::attach::MethodChoice::Auto)]
    pub method: crate::inject::attach::MethodChoice,
}

impl AttachArgs {
    pub fn options(&self) -> crate::inject::attach::AttachOptions {
        crate::inject::attach::AttachOptions {
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            method: self.method,
        }
    }
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The process to describe.
    pub pid: u32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["code", "file"]))]
pub struct ExecArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// The code to run (statements, as in a .py file).
    pub code: Option<String>,
    /// Run the code in FILE instead (`-` reads standard input).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Print one JSON document instead of the output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// The expression.
    pub expr: String,
    /// Print one JSON document (the repr as a string) instead of the repr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// History file (default: ~/.memsleuth_history).
    #[arg(long, value_name = "FILE")]
    pub history: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The process to watch.
    pub pid: u32,
    /// Seconds between samples.
    #[arg(short, long, default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Stop after this many samples (default: until interrupted).
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Stream one JSON object per sample (NDJSON).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MapsArgs {
    /// The process to inspect.
    pub pid: u32,
    /// One line per mapping, like `pmap -x`.
    #[arg(long, conflicts_with = "diff")]
    pub raw: bool,
    /// Sample twice, SECONDS apart, and show groups that appeared, vanished or grew.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    pub diff: Option<f64>,
    /// Show every group (default: the 30 largest by RSS plus every repeated mapping).
    #[arg(long)]
    pub all: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShmArgs {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.01..=86400.0).contains(&v) {
        return Err("must be between 0.01 and 86400 seconds".into());
    }
    Ok(v)
}
