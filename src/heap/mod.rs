//! Reading the Python heap from outside: no code of ours runs in the target.
//!
//! Everything the agent learns from `gc.get_objects()` and `sys.getsizeof`
//! can also be read straight out of the target's memory, the way py-spy
//! reads stacks: find the collector's generation lists from exported
//! symbols (`_PyGC_generation0`, `_PyRuntime`, `_Py_DebugOffsets`), walk
//! them, and decode each object's type, size and referents in Rust. That
//! works on a process stuck in C with the GIL held, where injection is
//! forbidden, and on a core dump.
//!
//! The memory comes through [`space::AddressSpace`]: a live process (read
//! lazily, or copied in bulk while its threads are paused) or an ELF core
//! file. Every byte read is untrusted: walks are bounded, pointers are
//! validated before use, and a torn or hostile heap gives an error or a
//! partial result with a count of what was skipped, never a panic.

pub mod core;
pub mod read;
pub mod snapshot;
pub mod source;
pub mod space;

mod arena;
pub mod census;
#[doc(hidden)]
pub mod copied;
pub mod dicts;
pub mod error;
pub mod frames;
pub mod gcstate;
pub mod graph;
#[cfg(test)]
mod hostile;
pub mod layout;
pub mod mem;
pub mod names;
pub mod referents;
pub mod roots;
pub mod sizes;
pub mod strs;
pub mod types;
pub mod visited;
pub mod walk;

pub use census::{CensusOptions, HeapCensus, census, census_parallel};

/// Threads for the heap reader's bulk work (faulting buffers in, the copy,
/// the census): the machine's cores, at most 4 (beyond that the memory
/// bandwidth is shared). `MEMSLEUTH_THREADS` overrides it (1: everything on
/// one thread, e.g. to compare). Worked out once: the standard library
/// reads three cgroup files each time it is asked.
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        if let Some(n) = std::env::var("MEMSLEUTH_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return n.clamp(1, 64);
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4)
    })
}
pub use error::HeapError;
pub use roots::{Interpreter, locate, locate_running};
