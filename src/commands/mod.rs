//! One thin module per subcommand: read, analyse, render.
//!
//! Commands write through [`Out`] so that a closed pipe ends the command
//! quietly instead of panicking inside `println!`.

pub mod completions;
pub mod demo;
pub mod doctor;
pub mod eval;
pub mod exec;
pub mod exporter;
pub mod gc;
pub mod gc_outside;
pub mod growth;
pub mod info;
pub mod maps;
pub mod native;
pub mod ps;
pub mod readonly;
pub mod retained;
pub mod run;
pub mod shell;
pub mod shm;
pub mod top;
pub mod tracemalloc;
pub mod types;
pub mod view;
pub mod why;

use std::io::Write;
use std::process::ExitCode;

use crate::process::{ProcError, Process};

pub type CmdResult = anyhow::Result<ExitCode>;

/// Buffered stdout; flushes on drop and reports write errors to the caller.
pub struct Out(std::io::BufWriter<std::io::Stdout>);

impl Out {
    pub fn new() -> Out {
        Out(std::io::BufWriter::new(std::io::stdout()))
    }

    pub fn text(&mut self, s: &str) -> std::io::Result<()> {
        self.0.write_all(s.as_bytes())
    }

    pub fn line(&mut self, s: &str) -> std::io::Result<()> {
        self.0.write_all(s.as_bytes())?;
        self.0.write_all(b"\n")
    }

    /// One JSON document (pretty) or one NDJSON line (compact).
    pub fn json<T: serde::Serialize>(&mut self, value: &T, compact: bool) -> anyhow::Result<()> {
        if compact {
            serde_json::to_writer(&mut self.0, value)?;
        } else {
            serde_json::to_writer_pretty(&mut self.0, value)?;
        }
        self.0.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

/// Opens a target for a command, with the checks every command needs.
pub fn open(pid: u32) -> Result<Process, ProcError> {
    Process::open(pid)
}

/// The one sentence the user sees for an error: our own errors are already
/// complete sentences; others get their context chain.
pub fn error_sentence(err: &anyhow::Error) -> String {
    if let Some(proc_err) = err.downcast_ref::<ProcError>() {
        return proc_err.to_string();
    }
    if let Some(e) = err.downcast_ref::<crate::inject::attach::AttachError>() {
        return e.to_string();
    }
    let parts: Vec<String> = err.chain().map(|c| c.to_string()).collect();
    parts.join(": ")
}

/// A remote exception as Python would print it: the traceback when there is
/// one, else `Type: message`.
pub fn traceback_text(err: &crate::agent::protocol::RemoteError) -> String {
    if err.traceback.is_empty() {
        format!("{err}\n")
    } else if err.traceback.ends_with('\n') {
        err.traceback.clone()
    } else {
        format!("{}\n", err.traceback)
    }
}

/// Attaches, runs `f` with the session, and always detaches (also when `f`
/// fails), so the target is left as it was whatever happens.
pub fn with_session<T>(
    args: &crate::cli::AttachArgs,
    f: impl FnOnce(&mut crate::inject::attach::Attached) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    with_session_timed(args, f).map(|(value, _)| value)
}

/// [`with_session`], also returning how long the detach took (seconds).
pub fn with_session_timed<T>(
    args: &crate::cli::AttachArgs,
    f: impl FnOnce(&mut crate::inject::attach::Attached) -> anyhow::Result<T>,
) -> anyhow::Result<(T, f64)> {
    let mut attached = crate::inject::attach::attach(args.pid, &args.options())?;
    let result = f(&mut attached);
    let started = std::time::Instant::now();
    let detached = attached.detach();
    let detach_s = started.elapsed().as_secs_f64();
    let value = result?;
    detached?;
    Ok((value, detach_s))
}
