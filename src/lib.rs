//! memsleuth finds out why a running Python process keeps growing, without
//! restarting it and without gdb.
//!
//! The crate is laid out the way the investigation goes:
//!
//! - [`process`]: facts about a process from /proc (status, maps, smaps, fds,
//!   SysV segments). Read-only, no ptrace.
//! - [`python`]: finding the interpreter in a process and reading its version
//!   from the binary on disk.
//! - [`analysis`]: pure functions over what was read: grouping mappings by the
//!   object behind them, and classifying growth between samples.
//! - [`heap`]: reading the Python heap out of process memory or a core
//!   file, with no code in the target.
//! - [`inject`]: getting code to run inside the target at a safe point (PEP 768
//!   or ptrace), without gdb.
//! - [`agent`]: the small stdlib-only Python agent that runs there, and the
//!   framed protocol we speak with it over a Unix socket.
//! - [`render`]: turning results into text tables and JSON.
//! - [`commands`]: one thin module per subcommand tying the above together.
//! - [`units`]: human-readable sizes, rates and durations, used by every
//!   layer above.

pub mod agent;
pub mod analysis;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod heap;
pub mod inject;
pub mod process;
pub mod python;
pub mod render;
pub mod units;
