//! Queries on the reverse graph, and the backwards search from a target
//! to its nearest root.

use serde::Serialize;

use super::{RefGraph, RootKind};

/// How a search from one target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathStatus {
    /// Reached a root (module, class, sys.modules, thread frame).
    Rooted,
    /// No root, but an object nothing in Python refers to: held from C.
    HeldFromC,
    /// Every referrer chain runs in circles: a garbage cycle the collector
    /// has not freed yet.
    Unreachable,
    /// No root within the depth limit.
    TooDeep,
    /// The target is not in the graph (it died, or it is the agent's).
    NotInGraph,
}

/// One retainer chain, root first, target last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainerPath {
    pub target: u64,
    pub status: PathStatus,
    pub root: Option<RootKind>,
    /// Object ids from the root (or the farthest object reached) to the
    /// target.
    pub nodes: Vec<u64>,
    /// Objects the search looked at.
    pub visited: usize,
}

/// Reusable search state (one per graph).
#[derive(Debug, Default)]
pub struct Scratch {
    stamp: Vec<u32>,
    parent: Vec<u32>,
    generation: u32,
}

impl RefGraph {
    pub fn node_count(&self) -> usize {
        self.ids.len()
    }

    /// References kept (after dropping the agent's).
    pub fn edge_count(&self) -> usize {
        self.rev.len()
    }

    /// Objects that came with a record (the gc-tracked heap).
    pub fn tracked_count(&self) -> u64 {
        self.records
    }

    pub fn contains(&self, id: u64) -> bool {
        self.index.get(id).is_some()
    }

    /// Ids of the objects referring to `id`.
    pub fn referrers(&self, id: u64) -> Vec<u64> {
        match self.index.get(id) {
            Some(i) => self.refs(i).iter().map(|&r| self.ids[r as usize]).collect(),
            None => Vec::new(),
        }
    }

    /// The root kind of `id`, if it is one of the listed roots.
    pub fn root_kind(&self, id: u64) -> Option<RootKind> {
        let i = self.index.get(id)?;
        RootKind::from_rank(self.root[i as usize])
    }

    /// Counts of listed roots by kind.
    pub fn root_counts(&self) -> Vec<(RootKind, usize)> {
        let mut counts = [0usize; 6];
        for &r in &self.root {
            counts[r as usize] += 1;
        }
        (1..6u8)
            .filter_map(|r| Some((RootKind::from_rank(r)?, counts[r as usize])))
            .filter(|&(_, c)| c > 0)
            .collect()
    }

    fn refs(&self, i: u32) -> &[u32] {
        &self.rev[self.off[i as usize]..self.off[i as usize + 1]]
    }

    /// Breadth-first search backwards from `target`, at most `max_depth`
    /// references away. The nearest listed root wins (at equal distance:
    /// module, class, sys.modules, frame); if there is none, the nearest
    /// object without referrers (held from C).
    pub fn find_path(&self, target: u64, max_depth: usize, scratch: &mut Scratch) -> RetainerPath {
        let Some(t) = self.index.get(target) else {
            return RetainerPath {
                target,
                status: PathStatus::NotInGraph,
                root: None,
                nodes: Vec::new(),
                visited: 0,
            };
        };
        let n = self.ids.len();
        if scratch.stamp.len() != n {
            scratch.stamp = vec![0; n];
            scratch.parent = vec![u32::MAX; n];
            scratch.generation = 0;
        }
        scratch.generation = scratch.generation.wrapping_add(1);
        if scratch.generation == 0 {
            scratch.stamp.iter_mut().for_each(|s| *s = 0);
            scratch.generation = 1;
        }
        let g = scratch.generation;
        scratch.stamp[t as usize] = g;
        scratch.parent[t as usize] = u32::MAX;
        let mut frontier = vec![t];
        let mut next = Vec::new();
        let mut visited = 1usize;
        let mut orphan: Option<u32> = None;
        let mut depth = 0usize;
        let exhausted;
        loop {
            let best = frontier
                .iter()
                .enumerate()
                .filter(|(_, i)| self.root[**i as usize] != 0)
                .min_by_key(|(pos, i)| (self.root[**i as usize], *pos))
                .map(|(_, i)| *i);
            if let Some(r) = best {
                return RetainerPath {
                    target,
                    status: PathStatus::Rooted,
                    root: RootKind::from_rank(self.root[r as usize]),
                    nodes: self.chain(r, &scratch.parent),
                    visited,
                };
            }
            if orphan.is_none() {
                orphan = frontier.iter().copied().find(|&i| self.refs(i).is_empty());
            }
            if depth >= max_depth {
                exhausted = false;
                break;
            }
            next.clear();
            for &i in &frontier {
                for &r in self.refs(i) {
                    if scratch.stamp[r as usize] != g {
                        scratch.stamp[r as usize] = g;
                        scratch.parent[r as usize] = i;
                        next.push(r);
                    }
                }
            }
            visited += next.len();
            if next.is_empty() {
                exhausted = true;
                break;
            }
            std::mem::swap(&mut frontier, &mut next);
            depth += 1;
        }
        if let Some(o) = orphan {
            return RetainerPath {
                target,
                status: PathStatus::HeldFromC,
                root: Some(RootKind::NoReferrer),
                nodes: self.chain(o, &scratch.parent),
                visited,
            };
        }
        let (status, nodes) = if exhausted {
            (PathStatus::Unreachable, vec![target])
        } else {
            // The chain to the farthest object reached, for a hint.
            (
                PathStatus::TooDeep,
                self.chain(frontier[0], &scratch.parent),
            )
        };
        RetainerPath {
            target,
            status,
            root: None,
            nodes,
            visited,
        }
    }

    /// Ids from `start` following parents to the target.
    fn chain(&self, start: u32, parent: &[u32]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cur = start;
        loop {
            out.push(self.ids[cur as usize]);
            let p = parent[cur as usize];
            if p == u32::MAX || out.len() > self.ids.len() {
                break;
            }
            cur = p;
        }
        out
    }

    /// Whether the object came as a record (it is gc-tracked).
    pub fn is_tracked(&self, id: u64) -> bool {
        self.index
            .get(id)
            .is_some_and(|i| self.has_record[i as usize])
    }
}
