//! Building a [`HeapGraph`]: nodes first (every object found), then each
//! node's referents in node order, then the roots.

use std::collections::HashMap;

use super::{GraphError, HeapGraph, MAX_EDGES, MAX_NODES, RootKind};
use crate::analysis::refgraph::idmap::IdMap;

#[derive(Debug, Default)]
pub struct HeapGraphBuilder {
    g: HeapGraph,
    index: IdMap,
    types: HashMap<String, u32>,
    off: Vec<u32>,
    dst: Vec<u32>,
    roots: Vec<(u32, RootKind)>,
}

impl HeapGraph {
    /// A graph from its nodes, its references as (source, referent) node
    /// pairs in any order (out-of-range ones and self-references dropped)
    /// and its roots.
    pub fn from_parts(
        addr: Vec<u64>,
        ty: Vec<u32>,
        size: Vec<u64>,
        type_names: Vec<String>,
        edges: impl Iterator<Item = (u32, u32)> + Clone,
        roots: Vec<(u32, RootKind)>,
    ) -> Result<HeapGraph, GraphError> {
        let n = addr.len();
        if n > MAX_NODES {
            return Err(GraphError::TooLarge(MAX_NODES, "objects"));
        }
        let keep = |&(s, d): &(u32, u32)| s != d && (s as usize) < n && (d as usize) < n;
        let mut off = vec![0u32; n + 1];
        let mut m = 0usize;
        for (s, _) in edges.clone().filter(keep) {
            off[s as usize + 1] += 1;
            m += 1;
        }
        if m > MAX_EDGES {
            return Err(GraphError::TooLarge(MAX_EDGES, "references"));
        }
        for i in 0..n {
            off[i + 1] += off[i];
        }
        let mut fill: Vec<u32> = off[..n].to_vec();
        let mut dst = vec![0u32; m];
        for (s, d) in edges.filter(keep) {
            dst[fill[s as usize] as usize] = d;
            fill[s as usize] += 1;
        }
        let mut g = HeapGraph {
            addr,
            ty,
            size,
            type_names,
            off,
            dst,
            roots: Vec::new(),
        };
        g.roots = ordered_roots(roots, n);
        Ok(g)
    }
}

/// Roots in order of preference (modules, classes, sys.modules, frames,
/// held from C; stable), each node once.
fn ordered_roots(mut roots: Vec<(u32, RootKind)>, n: usize) -> Vec<(u32, RootKind)> {
    roots.retain(|&(i, _)| (i as usize) < n);
    roots.sort_by_key(|&(_, k)| k);
    let mut seen = vec![false; n];
    roots.retain(|&(i, _)| !std::mem::replace(&mut seen[i as usize], true));
    roots
}

impl HeapGraphBuilder {
    pub fn with_capacity(nodes: usize) -> HeapGraphBuilder {
        HeapGraphBuilder {
            index: IdMap::with_capacity(nodes),
            ..HeapGraphBuilder::default()
        }
    }

    /// The index of a type name (interned).
    pub fn type_index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.types.get(name) {
            return i;
        }
        let i = self.g.type_names.len() as u32;
        self.g.type_names.push(name.to_string());
        self.types.insert(name.to_string(), i);
        i
    }

    /// Adds an object (once: a second call with the same address returns
    /// the first node). Address 0 is not an object.
    pub fn add_node(&mut self, addr: u64, ty: u32, size: u64) -> Result<Option<u32>, GraphError> {
        if addr == 0 {
            return Ok(None);
        }
        if let Some(i) = self.index.get(addr) {
            return Ok(Some(i));
        }
        if self.g.addr.len() >= MAX_NODES {
            return Err(GraphError::TooLarge(MAX_NODES, "objects"));
        }
        let (i, _) = self.index.intern(addr, self.g.addr.len() as u32);
        self.g.addr.push(addr);
        self.g.ty.push(ty);
        self.g.size.push(size);
        Ok(Some(i))
    }

    pub fn node(&self, addr: u64) -> Option<u32> {
        self.index.get(addr)
    }

    pub fn len(&self) -> usize {
        self.g.addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.g.addr.is_empty()
    }

    /// Opens node `src`'s referent list; nodes skipped over get none.
    /// Sources must come in increasing order (a smaller one is ignored:
    /// false).
    fn open(&mut self, src: u32) -> bool {
        let src = src as usize;
        if src >= self.g.addr.len() || src + 1 < self.off.len() {
            return false;
        }
        if self.off.is_empty() {
            self.off.push(0);
        }
        while self.off.len() <= src {
            self.off.push(self.dst.len() as u32);
        }
        true
    }

    fn close(&mut self) {
        self.off.push(self.dst.len() as u32);
    }

    /// Node `src`'s referents, by address; addresses that are not nodes
    /// (and self-references) are dropped.
    pub fn set_referents(&mut self, src: u32, referents: &[u64]) -> Result<(), GraphError> {
        if !self.open(src) {
            return Ok(());
        }
        for &a in referents {
            if let Some(d) = self.index.get(a)
                && d != src
            {
                self.push(d)?;
            }
        }
        self.close();
        Ok(())
    }

    /// Node `src`'s referents, by node index.
    pub fn set_referent_nodes(&mut self, src: u32, referents: &[u32]) -> Result<(), GraphError> {
        if !self.open(src) {
            return Ok(());
        }
        let n = self.g.addr.len() as u32;
        for &d in referents {
            if d < n && d != src {
                self.push(d)?;
            }
        }
        self.close();
        Ok(())
    }

    fn push(&mut self, d: u32) -> Result<(), GraphError> {
        if self.dst.len() >= MAX_EDGES {
            return Err(GraphError::TooLarge(MAX_EDGES, "references"));
        }
        self.dst.push(d);
        Ok(())
    }

    /// A named root (by node index). Earlier roots are preferred for paths.
    pub fn add_root(&mut self, node: u32, kind: RootKind) {
        if (node as usize) < self.g.addr.len() {
            self.roots.push((node, kind));
        }
    }

    pub fn finish(mut self) -> HeapGraph {
        let n = self.g.addr.len();
        if self.off.is_empty() {
            self.off.push(0);
        }
        while self.off.len() <= n {
            self.off.push(self.dst.len() as u32);
        }
        self.g.off = self.off;
        self.g.dst = self.dst;
        self.g.roots = ordered_roots(self.roots, n);
        self.g
    }
}
