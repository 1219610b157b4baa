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
