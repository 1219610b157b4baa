use std::time::Instant;

use super::*;

/// A graph over nodes 0..n (address 0x1000 + 16·i), edges by index.
fn graph(
    sizes: &[u64],
    types: &[&str],
    edges: &[(u32, u32)],
    roots: &[(u32, RootKind)],
) -> HeapGraph {
    let mut b = HeapGraphBuilder::with_capacity(sizes.len());
    for (i, &s) in sizes.iter().enumerate() {
        let t = b.type_index(types.get(i).copied().unwrap_or("object"));
        b.add_node(0x1000 + 16 * i as u64, t, s).unwrap();
    }
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); sizes.len()];
    for &(s, d) in edges {
        adj[s as usize].push(d);
    }
    for (s, ds) in adj.iter().enumerate() {
        b.set_referent_nodes(s as u32, ds).unwrap();
    }
    for &(r, k) in roots {
        b.add_root(r, k);
    }
    b.finish()
}

const M: RootKind = RootKind::Module;

#[test]
fn diamond_shared_object_is_retained_by_neither_holder() {
    // module 0 -> a 1, b 2; a -> c 3; b -> c.
    let g = graph(
        &[10, 100, 200, 5000],
        &[],
        &[(0, 1), (0, 2), (1, 3), (2, 3)],
        &[(0, M)],
    );
    let d = dominators(&g);
    assert_eq!(d.retained[1], 100);
    assert_eq!(d.retained[2], 200);
    assert_eq!(d.retained[3], 5000);
    assert_eq!(d.idom[3], 0);
    assert_eq!(d.retained[0], 5310);
    assert_eq!(d.total, 5310);
}

#[test]
fn chains_and_cycles() {
    // 0 -> 1 -> 2 -> 3 -> 1 (a cycle below a chain).
    let g = graph(
        &[1, 2, 4, 8],
        &[],
        &[(0, 1), (1, 2), (2, 3), (3, 1)],
        &[(0, M)],
    );
    let d = dominators(&g);
    assert_eq!(d.idom, vec![SUPER_ROOT, 0, 1, 2]);
    assert_eq!(d.retained, vec![15, 14, 12, 8]);
    assert_eq!(d.count, vec![4, 3, 2, 1]);
}

#[test]
fn two_roots_share_what_both_reach() {
    // Root 0 and root 1 both reach 2; 2 -> 3.
    let g = graph(
        &[1, 1, 10, 100],
        &[],
        &[(0, 2), (1, 2), (2, 3)],
        &[(0, M), (1, RootKind::Frame)],
    );
    let d = dominators(&g);
    assert_eq!(d.idom[2], SUPER_ROOT);
    assert_eq!(d.retained[0], 1);
    assert_eq!(d.retained[2], 110);
    // A named root reached from another root stays a root.
    let g = graph(&[1, 1, 10], &[], &[(0, 1), (1, 2)], &[(0, M), (1, M)]);
    let d = dominators(&g);
    assert_eq!(d.idom[1], SUPER_ROOT);
    assert_eq!(d.retained[0], 1);
    assert_eq!(d.retained[1], 11);
}

#[test]
fn unreachable_islands_enter_through_one_object_each() {
    // Reached: 0 -> 1. Islands: 2 -> 3 (2 is the entry); a cycle 4 <-> 5
    // with 5 -> 6; 7 -> 4 makes 7 the entry of that whole part.
    let g = graph(
        &[1, 1, 10, 20, 100, 200, 400, 3],
        &[],
        &[(0, 1), (2, 3), (4, 5), (5, 4), (5, 6), (7, 4)],
        &[(0, M)],
    );
    let d = dominators(&g);
    let mut entries: Vec<u32> = d.roots[1..].iter().map(|r| r.0).collect();
    entries.sort();
    assert_eq!(entries, vec![2, 7]);
    assert_eq!(d.unreached_roots, 2);
    assert!(d.roots[1..].iter().all(|r| r.1 == RootKind::NoReferrer));
    assert_eq!(d.retained[2], 30);
    assert_eq!(d.retained[7], 703);
    assert_eq!(d.idom[6], 5);
    assert_eq!(d.total, 735);
    // A pure cycle with nothing before it: one of its objects is the entry.
    let g = graph(&[1, 2, 3], &[], &[(0, 1), (1, 2), (2, 0)], &[]);
    let d = dominators(&g);
    assert_eq!(d.roots.len(), 1);
    assert_eq!(d.retained[d.roots[0].0 as usize], 6);
}

/// Small deterministic xorshift for random graphs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Retained sizes by definition: what becomes unreachable from the roots
/// when the object is removed (itself included).
fn brute_retained(g: &HeapGraph, roots: &[u32]) -> Vec<u64> {
    let n = g.len();
    let reach = |skip: Option<u32>| {
        let mut seen = vec![false; n];
        let mut stack: Vec<u32> = roots.iter().copied().filter(|&r| Some(r) != skip).collect();
        for &r in &stack {
            seen[r as usize] = true;
        }
        while let Some(v) = stack.pop() {
            for &w in g.referents(v) {
                if Some(w) != skip && !seen[w as usize] {
                    seen[w as usize] = true;
                    stack.push(w);
                }
            }
        }
        seen
    };
    let all = reach(None);
    (0..n as u32)
        .map(|v| {
            let without = reach(Some(v));
            (0..n)
                .filter(|&i| all[i] && !without[i])
                .map(|i| g.size[i])
                .sum()
        })
        .collect()
}

#[test]
fn random_graphs_match_the_definition() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for round in 0..300 {
        let n = 2 + rng.below(40) as usize;
        let m = rng.below(3 * n as u64) as usize;
        let sizes: Vec<u64> = (0..n).map(|_| 1 + rng.below(1000)).collect();
        let edges: Vec<(u32, u32)> = (0..m)
            .map(|_| (rng.below(n as u64) as u32, rng.below(n as u64) as u32))
            .collect();
        let nroots = rng.below(3) as usize;
        let roots: Vec<(u32, RootKind)> = (0..nroots)
            .map(|_| (rng.below(n as u64) as u32, M))
            .collect();
        let g = graph(&sizes, &[], &edges, &roots);
        let d = dominators(&g);
        assert_eq!(d.preorder.len(), n, "round {round}: every node reached");
        let root_nodes: Vec<u32> = d.roots.iter().map(|r| r.0).collect();
        let want = brute_retained(&g, &root_nodes);
        assert_eq!(
            d.retained, want,
            "round {round}: {edges:?} roots {root_nodes:?}"
        );
        assert_eq!(d.total, sizes.iter().sum::<u64>());
    }
}

#[test]
fn a_million_long_chain_does_not_overflow_the_stack() {
    let n = 1_000_000u32;
    let mut b = HeapGraphBuilder::with_capacity(n as usize);
    let t = b.type_index("list");
    for i in 0..n {
        b.add_node(0x1000 + 16 * i as u64, t, 8).unwrap();
    }
    for i in 0..n - 1 {
        b.set_referent_nodes(i, &[i + 1]).unwrap();
    }
    b.add_root(0, M);
    let g = b.finish();
    let d = dominators(&g);
    assert_eq!(d.retained[0], 8 * n as u64);
    assert_eq!(d.count[n as usize / 2], n / 2);
    let s = top_entries(&g, &d, &Options::default());
    assert!(s.entries[0].retained >= 8 * n as u64 * 9 / 10);
}

#[test]
fn builder_drops_unknown_addresses_and_self_references() {
    let mut b = HeapGraphBuilder::with_capacity(4);
    let t = b.type_index("dict");
    assert_eq!(b.type_index("dict"), t);
    let a = b.add_node(0x10, t, 1).unwrap().unwrap();
    let c = b.add_node(0x20, t, 2).unwrap().unwrap();
    assert_eq!(b.add_node(0x10, t, 99).unwrap(), Some(a));
    assert_eq!(b.add_node(0, t, 1).unwrap(), None);
    b.set_referents(c, &[0x10, 0x20, 0x30]).unwrap();
    // Out of order: ignored.
    b.set_referents(a, &[0x20]).unwrap();
    b.add_root(7, M);
    let g = b.finish();
    assert_eq!(g.referents(a), &[] as &[u32]);
    assert_eq!(g.referents(c), &[a]);
    assert!(g.roots().is_empty());
    assert_eq!(g.total_size(), 3);
}

/// module 0 -> its dict 1 -> cache dict 2 -> payloads; module dict -> a
/// function 3 and an instance 4 -> its dict 5 -> list 6 -> payloads; a
/// frame 7 holds a list 8 of one payload.
fn app_heap() -> (HeapGraph, u32, u32) {
    let mut sizes = vec![72, 1200, 4000, 136, 48, 104, 800, 56, 64, 33];
    let mut types = vec![
        "module",
        "dict",
        "dict",
        "function",
        "app.Cache",
        "dict",
        "list",
        "frame",
        "list",
        "bytes",
    ];
    let mut edges = vec![
        (0, 1),
        (1, 2),
        (1, 3),
        (3, 1),
        (1, 4),
        (4, 5),
        (5, 6),
        (7, 8),
        (8, 9),
        (7, 1),
    ];
    let mut add = |from: u32, size: u64, count: usize, sizes: &mut Vec<u64>| {
        for _ in 0..count {
            let i = sizes.len() as u32;
            sizes.push(size);
            types.push("bytes");
            edges.push((from, i));
        }
    };
    add(2, 10_033, 100, &mut sizes);
    add(6, 1_033, 200, &mut sizes);
    let roots = [(0, M), (7, RootKind::Frame)];
    (graph(&sizes, &types, &edges, &roots), 2, 6)
}

#[test]
fn top_entries_open_namespaces_and_collapse_chains() {
    let (g, cache, list) = app_heap();
    let d = dominators(&g);
    let s = top_entries(&g, &d, &Options::default());
    let e = &s.entries[0];
    assert_eq!(e.node, cache);
    assert_eq!(e.retained, 4000 + 100 * 10_033);
    assert_eq!(e.count, 101);
    assert_eq!(e.path, vec![0, 1, cache]);
    assert_eq!(e.root, M);
    assert_eq!(g.type_names[e.top_types[0].ty as usize], "bytes");
    assert_eq!(e.top_types[0].count, 100);
    assert_eq!(e.top_types[1].bytes, 4000);
    let e = &s.entries[1];
    // The instance and its dict collapse onto the list.
    assert_eq!((e.node, e.holder), (list, 4));
    assert_eq!(e.retained, 800 + 200 * 1_033);
    assert_eq!(e.path, vec![0, 1, 4, 5, list]);
    let total: u64 = g.size.iter().sum();
    assert_eq!(s.total_bytes, total);
    assert!((s.entries[0].share - e_share(&g, 4000 + 100 * 10_033)).abs() < 1e-12);
    // Entries are disjoint and never namespaces.
    assert!(s.entries.iter().all(|e| e.node != 0 && e.node != 1));
    let limited = top_entries(
        &g,
        &d,
        &Options {
            limit: 1,
            ..Options::default()
        },
    );
    assert_eq!(limited.entries.len(), 1);
}

fn e_share(g: &HeapGraph, bytes: u64) -> f64 {
    bytes as f64 / g.total_size() as f64
}

/// The 2M-object benchmark: `cargo test --release --lib
/// retained::tests::bench -- --ignored --nocapture` prints the time.
#[test]
#[ignore]
fn bench_two_million_random_objects() {
    let n = 2_000_000u32;
    let mut rng = Rng(42);
    let t0 = Instant::now();
    let mut b = HeapGraphBuilder::with_capacity(n as usize);
    let t = b.type_index("object");
    for i in 0..n {
        b.add_node(0x7f00_0000_0000 + 48 * i as u64, t, 16 + rng.below(200))
            .unwrap();
    }
    // Mostly tree-like with cross links, ~2.5 references per object.
    let mut refs = Vec::new();
    for i in 0..n {
        refs.clear();
        for _ in 0..rng.below(5) {
            let d = if rng.below(4) == 0 {
                rng.below(n as u64) as u32
            } else {
                (i + 1 + rng.below(64) as u32).min(n - 1)
            };
            refs.push(d);
        }
        b.set_referent_nodes(i, &refs).unwrap();
    }
    for r in 0..1000 {
        b.add_root(r * 7, M);
    }
    let g = b.finish();
    let build_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let d = dominators(&g);
    let dom_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let s = top_entries(&g, &d, &Options::default());
    let top_s = t2.elapsed().as_secs_f64();
    println!(
        "2M objects, {} references: build {build_s:.3} s, dominators {dom_s:.3} s, top entries {top_s:.3} s ({} roots, {} unreached entries)",
        g.edge_count(),
        d.roots.len(),
        d.unreached_roots
    );
    assert_eq!(d.total, g.total_size());
    assert!(!s.entries.is_empty());
}
