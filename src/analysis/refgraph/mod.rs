//! Why is an object alive? The reference graph the agent's `refgraph` op
//! ships (every gc-tracked object with the tracked objects it refers to),
//! reversed, and searched backwards from each sampled target to the nearest
//! root: a module, a class, a running frame, `sys.modules` — or, failing
//! those, an object nothing in Python refers to (held from C).
//!
//! Everything here comes from the target and is untrusted: sizes are capped,
//! malformed input is an error, never a panic.
//!
//! Wire format (see `src/agent/plugins/refgraph.py`): chunk payloads are
//! native-endian words of `itemsize` bytes. `edges` chunks hold records
//! `SRC DST... 0`; `types` chunks hold class ids.

pub mod explain;
pub mod report;

mod aggregate;
mod build;
pub(crate) mod idmap;
mod labels;
mod names;
mod search;

use serde::Serialize;

use idmap::IdMap;

pub use build::GraphBuilder;
pub use search::{PathStatus, RetainerPath, Scratch};

/// What holds a path's first object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootKind {
    /// A module object (its globals).
    Module,
    /// A class (its attributes).
    Class,
    /// The `sys.modules` dict itself.
    SysModules,
    /// A frame on a thread's stack (its locals).
    Frame,
    /// An object with no referrer in Python: held from C (an extension, the
    /// interpreter, a running frame's value stack).
    NoReferrer,
}

impl RootKind {
    /// Preference among roots found at the same distance (lower wins).
    fn rank(self) -> u8 {
        match self {
            RootKind::Module => 1,
            RootKind::Class => 2,
            RootKind::SysModules => 3,
            RootKind::Frame => 4,
            RootKind::NoReferrer => 5,
        }
    }

    fn from_rank(r: u8) -> Option<RootKind> {
        Some(match r {
            1 => RootKind::Module,
            2 => RootKind::Class,
            3 => RootKind::SysModules,
            4 => RootKind::Frame,
            5 => RootKind::NoReferrer,
            _ => return None,
        })
    }

    /// The kind named in the agent's roots list.
    pub fn from_agent(kind: &str) -> Option<RootKind> {
        Some(match kind {
            "module" => RootKind::Module,
            "class" => RootKind::Class,
            "sys.modules" => RootKind::SysModules,
            "frame" => RootKind::Frame,
            _ => return None,
        })
    }
}

/// Most words (ids and separators) accepted from one target: 2^29 words is
/// 4 GiB of ids, far beyond any heap we can usefully search.
pub const MAX_WORDS: u64 = 1 << 29;
/// Most distinct objects in a graph.
pub const MAX_NODES: usize = 100_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("the reference graph is larger than memsleuth handles ({0})")]
    TooLarge(&'static str),
    #[error("malformed reference graph chunk: {0}")]
    BadChunk(String),
}

/// The reverse reference graph: for each object, who refers to it.
#[derive(Debug)]
pub struct RefGraph {
    index: IdMap,
    ids: Vec<u64>,
    has_record: Vec<bool>,
    off: Vec<usize>,
    rev: Vec<u32>,
    root: Vec<u8>,
    records: u64,
}

#[cfg(test)]
mod tests;
