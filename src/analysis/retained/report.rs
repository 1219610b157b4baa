//! The biggest retainers, MAT style: walk down from the super-root, open
//! up namespaces (modules, classes, frames and their `__dict__`s: they name
//! things, they are not the thing), follow chains where one object keeps
//! nearly all of its parent's retained size alive (a cache held by one
//! attribute shows the cache), and list what is left biggest first, each
//! with the types inside it and a reference path from a root.

use std::collections::{BinaryHeap, HashMap};

use super::dominators::{DomTree, SUPER_ROOT};
use super::{HeapGraph, RootKind};

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most entries.
    pub limit: usize,
    /// A descendant that keeps at least this share of an object's
    /// retained size stands for it.
    pub collapse: f64,
    /// Most types listed per entry.
    pub top_types: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limit: 25,
            collapse: 0.9,
            top_types: 5,
        }
    }
}

/// One type inside an entry's retained set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeShare {
    pub ty: u32,
    pub count: u64,
    pub bytes: u64,
}

/// One big retainer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The object shown (at the bottom of a collapsed chain).
    pub node: u32,
    /// The top of the collapsed chain (== `node` when nothing collapsed).
    pub holder: u32,
    pub retained: u64,
    pub count: u64,
    /// Of all the bytes in the graph.
    pub share: f64,
    /// Biggest first.
    pub top_types: Vec<TypeShare>,
    /// A reference path: a root first, `node` last.
    pub path: Vec<u32>,
    pub root: RootKind,
}

/// The whole answer.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub objects: u64,
    pub references: u64,
    pub total_bytes: u64,
    /// Roots by kind (unreached parts as `NoReferrer`).
    pub roots: Vec<(RootKind, u64)>,
    pub entries: Vec<Entry>,
}

/// Children of each node in the dominator tree (CSR; the super-root's
/// children are the roots).
struct Children {
    off: Vec<u32>,
    kids: Vec<u32>,
    /// The super-root's: the roots and what several roots share.
    top: Vec<u32>,
}

impl Children {
    fn new(dom: &DomTree) -> Children {
        let n = dom.idom.len();
        let mut off = vec![0u32; n + 1];
        for &d in &dom.idom {
            if d != SUPER_ROOT {
                off[d as usize + 1] += 1;
            }
        }
        for i in 0..n {
            off[i + 1] += off[i];
        }
        let mut fill: Vec<u32> = off[..n].to_vec();
        let mut kids = vec![0u32; off[n] as usize];
        let mut top = Vec::new();
        for (v, &d) in dom.idom.iter().enumerate() {
            if d == SUPER_ROOT {
                top.push(v as u32);
            } else {
                kids[fill[d as usize] as usize] = v as u32;
                fill[d as usize] += 1;
            }
        }
        Children { off, kids, top }
    }

    fn of(&self, v: u32) -> &[u32] {
        &self.kids[self.off[v as usize] as usize..self.off[v as usize + 1] as usize]
    }
}

/// Which nodes are namespaces: module, class and frame roots, and the
/// dicts those refer to (their `__dict__`).
fn namespaces(g: &HeapGraph, dom: &DomTree) -> Vec<bool> {
    let mut ns = vec![false; g.len()];
    for &(r, kind) in &dom.roots {
        if matches!(kind, RootKind::Module | RootKind::Class | RootKind::Frame) {
            ns[r as usize] = true;
            for &d in g.referents(r) {
                if g.type_name(d) == "dict" {
                    ns[d as usize] = true;
                }
            }
        }
    }
    ns
}

/// Breadth-first parents: each node's shortest reference path back to a
/// named root (modules, classes, sys.modules, frames, in that preference),
/// and only for what those do not reach, to an object held from C.
fn bfs_parents(g: &HeapGraph, dom: &DomTree) -> (Vec<u32>, Vec<u8>) {
    let n = g.len();
    let mut parent = vec![SUPER_ROOT; n];
    let mut root_of = vec![u8::MAX; n];
    let mut queue: Vec<u32> = Vec::with_capacity(n);
    let mut head = 0;
    for held_from_c in [false, true] {
        for &(r, kind) in &dom.roots {
            if (kind == RootKind::NoReferrer) == held_from_c && root_of[r as usize] == u8::MAX {
                root_of[r as usize] = kind as u8;
                queue.push(r);
            }
        }
        while head < queue.len() {
            let v = queue[head];
            head += 1;
            for &w in g.referents(v) {
                if root_of[w as usize] == u8::MAX {
                    root_of[w as usize] = root_of[v as usize];
                    parent[w as usize] = v;
                    queue.push(w);
                }
            }
        }
    }
    (parent, root_of)
}

fn root_kind(k: u8) -> RootKind {
    [
        RootKind::Module,
        RootKind::Class,
        RootKind::SysModules,
        RootKind::Frame,
        RootKind::NoReferrer,
    ]
    .get(k as usize)
    .copied()
    .unwrap_or(RootKind::NoReferrer)
}

/// Types inside `top`'s dominated subtree, biggest first.
fn types_inside(
    g: &HeapGraph,
    kids: &Children,
    top: u32,
    limit: usize,
    stack: &mut Vec<u32>,
) -> Vec<TypeShare> {
    let mut by: HashMap<u32, (u64, u64)> = HashMap::new();
    stack.clear();
    stack.push(top);
    while let Some(v) = stack.pop() {
        let e = by.entry(g.ty[v as usize]).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(g.size[v as usize]);
        stack.extend_from_slice(kids.of(v));
    }
    let mut out: Vec<TypeShare> = by
        .into_iter()
        .map(|(ty, (count, bytes))| TypeShare { ty, count, bytes })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ty.cmp(&b.ty)));
    out.truncate(limit);
    out
}

/// The biggest retainers of `g` given its dominator tree.
pub fn top_entries(g: &HeapGraph, dom: &DomTree, opts: &Options) -> Summary {
    let kids = Children::new(dom);
    let ns = namespaces(g, dom);
    let total = dom.total;
    let mut heap: BinaryHeap<(u64, std::cmp::Reverse<u32>)> = kids
        .top
        .iter()
        .map(|&r| (dom.retained[r as usize], std::cmp::Reverse(r)))
        .collect();
    let mut chosen: Vec<(u32, u32)> = Vec::new();
    while chosen.len() < opts.limit {
        let Some((_, std::cmp::Reverse(v))) = heap.pop() else {
            break;
        };
        if ns[v as usize] {
            for &c in kids.of(v) {
                heap.push((dom.retained[c as usize], std::cmp::Reverse(c)));
            }
            continue;
        }
        // Compared with the top of the chain, so a linked list collapses
        // onto an object near its head, not its tail.
        let floor = opts.collapse * dom.retained[v as usize] as f64;
        let mut cur = v;
        loop {
            let best = kids
                .of(cur)
                .iter()
                .copied()
                .max_by_key(|&c| (dom.retained[c as usize], std::cmp::Reverse(c)));
            match best {
                Some(c) if !ns[c as usize] && dom.retained[c as usize] as f64 >= floor => cur = c,
                _ => break,
            }
        }
        chosen.push((cur, v));
    }

    let (parent, root_of) = bfs_parents(g, dom);
    let mut stack = Vec::new();
    let entries = chosen
        .into_iter()
        .map(|(node, holder)| {
            let mut path = vec![node];
            let mut x = node;
            while parent[x as usize] != SUPER_ROOT && path.len() <= g.len() {
                x = parent[x as usize];
                path.push(x);
            }
            path.reverse();
            let retained = dom.retained[node as usize];
            Entry {
                node,
                holder,
                retained,
                count: dom.count[node as usize] as u64,
                share: if total > 0 {
                    retained as f64 / total as f64
                } else {
                    0.0
                },
                top_types: types_inside(g, &kids, node, opts.top_types, &mut stack),
                path,
                root: root_kind(root_of[node as usize]),
            }
        })
        .collect();

    let mut roots: Vec<(RootKind, u64)> = Vec::new();
    for &(_, kind) in &dom.roots {
        match roots.iter_mut().find(|(k, _)| *k == kind) {
            Some(e) => e.1 += 1,
            None => roots.push((kind, 1)),
        }
    }
    roots.sort();
    Summary {
        objects: g.len() as u64,
        references: g.edge_count() as u64,
        total_bytes: total,
        roots,
        entries,
    }
}
