//! Reading the heap from outside or with the agent: the choice `types`,
//! `growth` and `gc` share.
//!
//! From outside is the default. `--inject` (or an option that must run in
//! the interpreter, like `--collect`) uses the agent. Where the build
//! cannot be read from outside (unknown or unsupported version, a
//! free-threaded build), the default falls back to the agent with a note,
//! and quietly where the kernel refuses the read (a non-dumpable program
//! started with `memsleuth run` is reached through its listener);
//! `--read-only` and `--nonblocking` never inject and end in the error.

use crate::cli::{HeapReadArgs, HeapTarget};
use crate::heap::read::ReadError;
use crate::heap::source::Source;

/// What a command that also reads cores was pointed at.
pub enum Target {
    /// `--core FILE [--exe PATH]`.
    Core(Source),
    Live(u32),
}

/// The core file given with `--core`, else the pid.
pub fn target(t: &HeapTarget) -> anyhow::Result<Target> {
    if let Some(core) = &t.core.core {
        return Ok(Target::Core(Source::Core {
            core: core.clone(),
            exe: t.core.exe.clone(),
        }));
    }
    t.pid
        .map(Target::Live)
        .ok_or_else(|| anyhow::anyhow!("give a pid, or a core file with --core"))
}

/// Runs `read` (given whether to pause) unless the agent must be used;
/// `Ok(None)` means: use the agent.
pub fn from_memory<T>(
    args: &HeapReadArgs,
    needs_agent: bool,
    read: impl FnOnce(bool) -> Result<T, ReadError>,
) -> anyhow::Result<Option<T>> {
    if args.inject || needs_agent {
        return Ok(None);
    }
    match read(!args.nonblocking) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.unsupported() && !args.read_only && !args.nonblocking => {
            eprintln!(
                "memsleuth: this process's heap cannot be read from outside, so the agent is used: {e}"
            );
            Ok(None)
        }
        // Not ours to read or pause, or its interpreter not found from
        // outside: the agent's ways in (a launch listener, which also
        // reads /proc for us) may still reach it, and say why not
        // otherwise.
        Err(e) if (e.denied() || e.not_found()) && !args.read_only && !args.nonblocking => Ok(None),
        Err(e) => Err(e.into()),
    }
}
