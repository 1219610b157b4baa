//! The heap graph from a walk of the target's memory (`heap::graph`): the
//! nodes, each node's referents in CSR form, and what the walk read of
//! each object's reference count. Pure: the walk does the reading.
//!
//! Roots, as for the agent's graph: modules and classes found in the walk,
//! and every gc-tracked object whose reference count is more than the
//! references the graph holds to it (a C global, the interpreter's state,
//! a running frame's value stack; `sys.modules` itself is one of these).
//! Immortal objects (3.12+) count as held from C.

use super::agent::GraphStats;
use super::{GraphError, HeapGraph, RootKind};

/// A reference count that says "held whatever the graph shows"
/// (immortal, or past what a `u32` holds).
pub const IMMORTAL: u32 = u32::MAX;

/// What the memory walk found.
#[derive(Debug, Clone, Default)]
pub struct MemoryParts {
    /// Object addresses, one per node.
    pub addr: Vec<u64>,
    /// Index into `type_names`, one per node.
    pub ty: Vec<u32>,
    /// Shallow size (`sys.getsizeof`), one per node.
    pub size: Vec<u64>,
    pub type_names: Vec<String>,
    /// Node `i`'s referents are `dst[off[i]..off[i + 1]]` (repeats kept:
    /// each is a reference counted in the referent's reference count).
    pub off: Vec<u32>,
    pub dst: Vec<u32>,
    /// Reference count of gc-tracked nodes (0: not measured, for
    /// untracked ones; [`IMMORTAL`]: always a root).
    pub refcnt: Vec<u32>,
    pub modules: Vec<u32>,
    pub classes: Vec<u32>,
}

/// The graph and its statistics (`modules`, `classes`, `held_from_c`).
pub fn build(parts: MemoryParts) -> Result<(HeapGraph, GraphStats), GraphError> {
    let n = parts.addr.len();
    let mut indeg = vec![0u32; n];
    for &d in &parts.dst {
        if let Some(x) = indeg.get_mut(d as usize) {
            *x = x.saturating_add(1);
        }
    }
    let mut stats = GraphStats::default();
    let mut roots: Vec<(u32, RootKind)> = Vec::new();
    for &m in &parts.modules {
        if (m as usize) < n {
            stats.modules += 1;
            roots.push((m, RootKind::Module));
        }
    }
    for &c in &parts.classes {
        if (c as usize) < n {
            stats.classes += 1;
            roots.push((c, RootKind::Class));
        }
    }
    for (i, &rc) in parts.refcnt.iter().enumerate().take(n) {
        if rc > 0 && (rc == IMMORTAL || rc > indeg[i]) {
            stats.held_from_c += 1;
            roots.push((i as u32, RootKind::NoReferrer));
        }
    }
    drop(indeg);
    let MemoryParts {
        addr,
        ty,
        size,
        type_names,
        off,
        dst,
        ..
    } = parts;
    let span = |s: usize| -> &[u32] {
        match (off.get(s), off.get(s + 1)) {
            (Some(&a), Some(&b)) if a <= b && (b as usize) <= dst.len() => {
                &dst[a as usize..b as usize]
            }
            _ => &[],
        }
    };
    let edges = (0..n).flat_map(|s| span(s).iter().map(move |&d| (s as u32, d)));
    let graph = HeapGraph::from_parts(addr, ty, size, type_names, edges, roots)?;
    Ok((graph, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::retained::dominators;

    /// module 0 → dict 1 → {list 2 → payload 3, payload 4};
    /// 5 held from C (refcount 1, no referrer); 6 and 7 both point at 8.
    fn parts() -> MemoryParts {
        MemoryParts {
            addr: (0..9).map(|i| 0x1000 + 16 * i).collect(),
            ty: vec![0, 1, 2, 3, 3, 1, 1, 1, 3],
            size: vec![50, 100, 60, 1000, 2000, 10, 10, 10, 500],
            type_names: ["module", "dict", "list", "bytes"]
                .map(String::from)
                .to_vec(),
            off: vec![0, 1, 3, 4, 4, 4, 6, 7, 8, 8],
            dst: vec![1, 2, 4, 3, 6, 7, 8, 8],
            refcnt: vec![3, 1, 1, 0, 0, 1, 1, 1, 0],
            modules: vec![0],
            classes: vec![],
        }
    }

    #[test]
    fn roots_are_modules_and_what_the_graph_does_not_hold() {
        let (g, stats) = build(parts()).unwrap();
        assert_eq!(g.len(), 9);
        assert_eq!(g.edge_count(), 8);
        assert_eq!(stats.modules, 1);
        // The module (refcount 3, no referrer) and node 5.
        assert_eq!(stats.held_from_c, 2);
        let dom = dominators(&g);
        assert_eq!(dom.retained[1], 100 + 60 + 1000 + 2000);
        assert_eq!(dom.retained[5], 10 + 10 + 10 + 500);
        // 8 is shared by 6 and 7: retained by neither.
        assert_eq!(dom.retained[6], 10);
    }

    #[test]
    fn immortal_and_ragged_parts_do_not_panic() {
        let mut p = parts();
        p.refcnt[2] = IMMORTAL;
        p.dst.push(99);
        p.off[9] = 100;
        p.modules.push(1000);
        let (g, stats) = build(p).unwrap();
        assert_eq!(stats.modules, 1);
        assert!(g.roots().iter().any(|&(i, _)| i == 2));
    }
}
