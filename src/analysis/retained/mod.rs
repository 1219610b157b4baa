//! Retained sizes: how much memory would come back if an object went away.
//!
//! An object's retained size is the sum of the shallow sizes of every
//! object it dominates: those that every reference path from a root runs
//! through it. That is the dominator tree of the reference graph (as in
//! Eclipse MAT, guppy's `domisize`), computed here over the whole heap.
//!
//! The roots hang under one virtual super-root: modules, class objects,
//! thread frames (what the program names), and then every part of the heap
//! those do not reach (held from C, or garbage the collector has not freed):
//! each such unreached component enters through one of its objects, so its
//! size is accounted for instead of vanishing.
//!
//! The graph is compact (addresses, type indices and sizes per node,
//! references as `u32` indices in CSR form) and every algorithm here is
//! iterative: a 2M-object heap with million-long chains must not overflow
//! the stack. Nothing here does I/O: the graph comes from the agent's
//! frames ([`agent`]), from a walk of the target's memory ([`memory`], the
//! parts `heap::graph` reads) or from tests.

pub mod agent;
mod build;
mod dominators;
pub mod memory;
mod report;

pub use build::HeapGraphBuilder;
pub use dominators::{DomTree, SUPER_ROOT, dominators};
pub use report::{Entry, Options, Summary, TypeShare, top_entries};

pub use crate::analysis::refgraph::RootKind;

/// Most objects in a graph (indices are `u32`; one is the super-root).
pub const MAX_NODES: usize = (u32::MAX - 2) as usize;
/// Most references in a graph.
pub const MAX_EDGES: usize = u32::MAX as usize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("the heap graph is larger than memsleuth handles (more than {0} {1})")]
    TooLarge(usize, &'static str),
}

/// The heap as a graph: per node its address, type and shallow size; the
/// references between nodes; the roots.
#[derive(Debug, Clone, Default)]
pub struct HeapGraph {
    /// Object addresses (ids), one per node.
    pub addr: Vec<u64>,
    /// Index into `type_names`, one per node.
    pub ty: Vec<u32>,
    /// Shallow size in bytes (`sys.getsizeof`), one per node.
    pub size: Vec<u64>,
    pub type_names: Vec<String>,
    /// Node `i`'s referents are `dst[off[i]..off[i + 1]]`.
    off: Vec<u32>,
    dst: Vec<u32>,
    /// Named roots (modules, classes, frames), in order of preference.
    roots: Vec<(u32, RootKind)>,
}

impl HeapGraph {
    pub fn len(&self) -> usize {
        self.addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addr.is_empty()
    }

    pub fn edge_count(&self) -> usize {
        self.dst.len()
    }

    /// What node `i` refers to.
    pub fn referents(&self, i: u32) -> &[u32] {
        let i = i as usize;
        match (self.off.get(i), self.off.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.dst[a as usize..b as usize],
            _ => &[],
        }
    }

    pub fn roots(&self) -> &[(u32, RootKind)] {
        &self.roots
    }

    pub fn type_name(&self, i: u32) -> &str {
        self.ty
            .get(i as usize)
            .and_then(|&t| self.type_names.get(t as usize))
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// The node of the object at `addr` (a scan: for a few lookups).
    pub fn node_of(&self, addr: u64) -> Option<u32> {
        self.addr.iter().position(|&a| a == addr).map(|i| i as u32)
    }

    /// The nodes of several objects, in one pass.
    pub fn nodes_of(&self, addrs: &[u64]) -> Vec<Option<u32>> {
        let want: std::collections::HashMap<u64, usize> =
            addrs.iter().enumerate().map(|(i, &a)| (a, i)).collect();
        let mut out = vec![None; addrs.len()];
        for (i, a) in self.addr.iter().enumerate() {
            if let Some(&j) = want.get(a) {
                out[j] = Some(i as u32);
            }
        }
        // Repeated addresses get the node too.
        for (j, a) in addrs.iter().enumerate() {
            if out[j].is_none()
                && let Some(&k) = want.get(a)
            {
                out[j] = out[k];
            }
        }
        out
    }

    /// Sum of all shallow sizes.
    pub fn total_size(&self) -> u64 {
        self.size.iter().fold(0u64, |a, &s| a.saturating_add(s))
    }
}

#[cfg(test)]
mod tests;
