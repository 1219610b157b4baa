//! `memsleuth completions` and `memsleuth man`: shell completion scripts and
//! the man page, generated from the clap definitions so they cannot drift
//! from the real command line.

use std::process::ExitCode;

use clap::CommandFactory;

use super::{CmdResult, Out};
use crate::cli::{Cli, CompletionShell, CompletionsArgs};

pub fn run(args: &CompletionsArgs) -> CmdResult {
    let mut out = Out::new();
    out.text(&completion_script(args.shell))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn man() -> CmdResult {
    let mut out = Out::new();
    out.text(&man_page()?)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script for `shell`.
pub fn completion_script(shell: CompletionShell) -> String {
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "memsleuth", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// memsleuth(1) in roff: the top-level page, then each subcommand's options
/// as a section of it (one page is what `man memsleuth` finds).
pub fn man_page() -> anyhow::Result<String> {
    // The page carries the bare Cargo version, not the commit: the copy in
    // the wheel's data is checked in and must not change at every commit.
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut buf = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    // The list points at the sections below, not at per-command pages.
    let mut list = Vec::new();
    man.render_subcommands_section(&mut list)?;
    let mut list = String::from_utf8_lossy(&list).into_owned();
    let names = cmd.get_subcommands().map(|s| s.get_name().to_string());
    for name in names.chain(["help".to_string()]) {
        list = list.replace(
            &format!("memsleuth\\-{}(1)", name.replace('-', "\\-")),
            &format!("\\fBmemsleuth {name}\\fR"),
        );
    }
    buf.extend_from_slice(list.as_bytes());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub = sub
            .clone()
            .bin_name(format!("memsleuth {}", sub.get_name()));
        let page = clap_mangen::Man::new(sub.clone());
        let mut one = Vec::new();
        page.render_synopsis_section(&mut one)?;
        page.render_options_section(&mut one)?;
        page.render_extra_section(&mut one)?;
        // Each piece begins with its own `.SH`: as a subsection of this page.
        let text = String::from_utf8_lossy(&one)
            .replacen(
                ".SH SYNOPSIS",
                &format!(".SH \"{}\"", sub.get_name().to_uppercase()),
                1,
            )
            .replace(".SH OPTIONS", ".SS Options");
        buf.extend_from_slice(text.as_bytes());
    }
    man.render_version_section(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
