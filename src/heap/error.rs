//! The heap reader's errors: each one sentence saying what happened and
//! what to do.

/// Why the heap could not be read from outside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeapError {
    #[error(
        "the Python version of this process is unknown, so its heap layout cannot be decoded; use --inject to let the agent take the census"
    )]
    UnknownVersion,
    #[error(
        "Python {0} is not supported by the read-only heap reader (2.7 and 3.6–3.15 are); use --inject"
    )]
    Unsupported(String),
    #[error(
        "Python {0} is a free-threaded (no-GIL) build, whose heap is not on the collector's lists and cannot be read from outside; use --inject"
    )]
    FreeThreaded(String),
    #[error(
        "symbol {symbol} was not found in {binary}, so the collector's state cannot be located; use --inject"
    )]
    MissingSymbol {
        symbol: &'static str,
        binary: String,
    },
    #[error(
        "cannot read the target's memory at {addr:#x} ({what}): the process may have exited, or memsleuth needs the same user or root"
    )]
    Unreadable { addr: u64, what: &'static str },
    #[error(
        "the target's heap does not look like CPython's ({0}): it may be changing or corrupt, or a build memsleuth does not know; try again, or use --inject"
    )]
    Corrupt(String),
}
