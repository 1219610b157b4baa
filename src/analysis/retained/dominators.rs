//! The dominator tree and retained sizes.
//!
//! Semi-NCA (Georgiadis & Tarjan's simplification of Lengauer–Tarjan, the
//! variant LLVM uses): one iterative DFS numbers the nodes from the virtual
//! super-root, semidominators come from a link-eval forest with path
//! compression (done with an explicit stack), and each immediate dominator
//! is the nearest common ancestor of the DFS parent and the semidominator.
//! Near-linear on heap graphs, with no recursion anywhere.
//!
//! Work is done in DFS-number space (0 = the super-root): arrays indexed by
//! number are walked in order, which keeps the passes cache-friendly.

use super::{HeapGraph, RootKind};

/// The super-root, as a node index: the immediate dominator of every root.
pub const SUPER_ROOT: u32 = u32::MAX;
const NONE: u32 = u32::MAX;

/// The dominator tree over a [`HeapGraph`], in node indices.
#[derive(Debug, Clone, Default)]
pub struct DomTree {
    /// Immediate dominator of each node ([`SUPER_ROOT`] for roots).
    pub idom: Vec<u32>,
    /// Bytes each node keeps alive: its own and every dominated object's.
    pub retained: Vec<u64>,
    /// Objects each node keeps alive (itself included).
    pub count: Vec<u32>,
    /// Nodes in DFS preorder from the super-root: a node's dominators come
    /// before it.
    pub preorder: Vec<u32>,
    /// The roots: named ones first, then one entry per part of the heap
    /// they do not reach.
    pub roots: Vec<(u32, RootKind)>,
    /// How many of `roots` are entries into unreached parts.
    pub unreached_roots: usize,
    /// Sum of all shallow sizes.
    pub total: u64,
}

impl DomTree {
    /// The immediate dominator, `None` for roots.
    pub fn parent(&self, i: u32) -> Option<u32> {
        self.idom
            .get(i as usize)
            .copied()
            .filter(|&p| p != SUPER_ROOT)
    }
}

/// Iterative DFS numbering from one start node.
struct Dfs<'a> {
    g: &'a HeapGraph,
    /// DFS number of each node, 0 = not reached (0 is the super-root).
    num: Vec<u32>,
    /// Node of each number (`vertex[0]` is the super-root).
    vertex: Vec<u32>,
    /// DFS-tree parent of each number.
    parent: Vec<u32>,
    stack: Vec<(u32, u32)>,
}

impl<'a> Dfs<'a> {
    fn new(g: &'a HeapGraph) -> Dfs<'a> {
        let n = g.len();
        let mut vertex = Vec::with_capacity(n + 1);
        vertex.push(SUPER_ROOT);
        let mut parent = Vec::with_capacity(n + 1);
        parent.push(0);
        Dfs {
            g,
            num: vec![0; n],
            vertex,
            parent,
            stack: Vec::new(),
        }
    }

    fn visit(&mut self, v: u32, parent: u32) {
        let k = self.vertex.len() as u32;
        self.num[v as usize] = k;
        self.vertex.push(v);
        self.parent.push(parent);
        self.stack.push((v, 0));
    }

    /// Numbers everything reachable from `start`; false if it was reached
    /// already.
    fn run(&mut self, start: u32) -> bool {
        if self.num[start as usize] != 0 {
            return false;
        }
        self.visit(start, 0);
        while let Some(top) = self.stack.last_mut() {
            let (v, pos) = *top;
            let succ = self.g.referents(v);
            match succ.get(pos as usize) {
                Some(&w) => {
                    top.1 += 1;
                    if self.num[w as usize] == 0 {
                        let pv = self.num[v as usize];
                        self.visit(w, pv);
                    }
                }
                None => {
                    self.stack.pop();
                }
            }
        }
        true
    }
}

/// Nodes not yet numbered, ordered so that the first of each part of the
/// heap nothing numbered reaches comes first: reverse DFS finishing order
/// over the unnumbered nodes (as in Kosaraju's algorithm, the node that
/// finishes last lies in a component nothing else there reaches).
fn unreached_order(g: &HeapGraph, num: &[u32]) -> Vec<u32> {
    let n = g.len();
    let mut seen: Vec<bool> = num.iter().map(|&k| k != 0).collect();
    let mut post = Vec::new();
    let mut stack: Vec<(u32, u32)> = Vec::new();
    for s in 0..n as u32 {
        if seen[s as usize] {
            continue;
        }
        seen[s as usize] = true;
        stack.push((s, 0));
        while let Some(top) = stack.last_mut() {
            let (v, pos) = *top;
            match g.referents(v).get(pos as usize) {
                Some(&w) => {
                    top.1 += 1;
                    if !seen[w as usize] {
                        seen[w as usize] = true;
                        stack.push((w, 0));
                    }
                }
                None => {
                    post.push(v);
                    stack.pop();
                }
            }
        }
    }
    post.reverse();
    post
}

/// Computes the dominator tree and retained sizes of `g`.
pub fn dominators(g: &HeapGraph) -> DomTree {
    let n = g.len();
    let mut dfs = Dfs::new(g);
    let mut roots: Vec<(u32, RootKind)> = Vec::new();
    for &(r, kind) in g.roots() {
        // One reached from an earlier root is still a root in its own
        // right: the super-root's edge to it is a forward edge.
        dfs.run(r);
        roots.push((r, kind));
    }
    let named = roots.len();
    if dfs.vertex.len() <= n {
        for v in unreached_order(g, &dfs.num) {
            if dfs.run(v) {
                roots.push((v, RootKind::NoReferrer));
            }
        }
    }
    let Dfs {
        num,
        vertex,
        parent,
        ..
    } = dfs;
    let nn = vertex.len(); // n + 1
    // Every root hangs directly under the super-root.
    let mut from_super = vec![false; nn];
    for &(r, _) in &roots {
        let k = num[r as usize] as usize;
        from_super[k] = true;
    }

    // Predecessors in number space (CSR).
    let mut poff = vec![0u32; nn + 1];
    for k in 1..nn {
        for &w in g.referents(vertex[k]) {
            poff[num[w as usize] as usize + 1] += 1;
        }
        if from_super[k] {
            poff[k + 1] += 1;
        }
    }
    for k in 0..nn {
        poff[k + 1] += poff[k];
    }
    let mut fill: Vec<u32> = poff[..nn].to_vec();
    let mut pred = vec![0u32; poff[nn] as usize];
    for k in 1..nn {
        if from_super[k] {
            pred[fill[k] as usize] = 0;
            fill[k] += 1;
        }
        for &w in g.referents(vertex[k]) {
            let d = num[w as usize] as usize;
            pred[fill[d] as usize] = k as u32;
            fill[d] += 1;
        }
    }
    drop(fill);
    drop(from_super);

    // Semidominators.
    let mut semi: Vec<u32> = (0..nn as u32).collect();
    let mut label: Vec<u32> = (0..nn as u32).collect();
    let mut ancestor = vec![NONE; nn];
    let mut path: Vec<u32> = Vec::new();
    for w in (1..nn).rev() {
        let mut s = semi[w];
        for &v in &pred[poff[w] as usize..poff[w + 1] as usize] {
            let u = eval(v, &mut ancestor, &mut label, &semi, &mut path);
            s = s.min(semi[u as usize]);
        }
        semi[w] = s;
        ancestor[w] = parent[w];
    }
    drop(pred);
    drop(poff);
    drop(ancestor);
    drop(label);

    // Immediate dominators: the nearest ancestor of the DFS parent at or
    // above the semidominator.
    let mut idom = parent;
    for w in 1..nn {
        let mut d = idom[w];
        while d > semi[w] {
            d = idom[d as usize];
        }
        idom[w] = d;
    }
    drop(semi);

    // Retained sizes and counts, children before parents.
    let mut ret = vec![0u64; nn];
    let mut cnt = vec![0u32; nn];
    for k in 1..nn {
        ret[k] = g.size[vertex[k] as usize];
        cnt[k] = 1;
    }
    for w in (1..nn).rev() {
        let d = idom[w] as usize;
        ret[d] = ret[d].saturating_add(ret[w]);
        cnt[d] = cnt[d].saturating_add(cnt[w]);
    }

    let mut out = DomTree {
        idom: vec![SUPER_ROOT; n],
        retained: vec![0; n],
        count: vec![0; n],
        preorder: vertex[1..].to_vec(),
        unreached_roots: roots.len() - named,
        roots,
        total: ret[0],
    };
    for k in 1..nn {
        let v = vertex[k] as usize;
        let d = idom[k];
        out.idom[v] = if d == 0 {
            SUPER_ROOT
        } else {
            vertex[d as usize]
        };
        out.retained[v] = ret[k];
        out.count[v] = cnt[k];
    }
    out
}

/// The node of least semidominator on `v`'s path in the link-eval forest,
/// compressing the path on the way (iteratively).
fn eval(v: u32, ancestor: &mut [u32], label: &mut [u32], semi: &[u32], path: &mut Vec<u32>) -> u32 {
    let vi = v as usize;
    if ancestor[vi] == NONE {
        return v;
    }
    path.clear();
    let mut x = v;
    while ancestor[ancestor[x as usize] as usize] != NONE {
        path.push(x);
        x = ancestor[x as usize];
    }
    while let Some(x) = path.pop() {
        let xi = x as usize;
        let a = ancestor[xi] as usize;
        if semi[label[a] as usize] < semi[label[xi] as usize] {
            label[xi] = label[a];
        }
        ancestor[xi] = ancestor[a];
    }
    label[vi]
}
