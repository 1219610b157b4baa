//! The heap graph from the agent's `retained_graph` op (see
//! `src/agent/plugins/retained.py`): census-style frames of objects (ids,
//! type ids, sizes) and of references (`"e"` segments), then the roots.
//!
//! Objects come as the census sends them, repeats included (untracked
//! atoms are sent once per referrer); an address is one node. References
//! are interned as they come (a referent may be described in a later
//! frame); at the end, addresses that were never described (the agent's
//! own objects) are dropped with their references.
//!
//! Roots: modules, `sys.modules`, classes and thread frames as the agent
//! names them, and every gc-tracked object whose reference count is more
//! than the references the graph knows of: something outside Python's
//! view (C code, a running frame's value stack) holds it.

use std::collections::HashMap;

use serde_json::Value;

use super::{GraphError, HeapGraph, MAX_EDGES, MAX_NODES, RootKind};
use crate::analysis::census::qualified;
use crate::analysis::refgraph::explain::RootRecord;
use crate::analysis::refgraph::idmap::IdMap;

/// Frame format read (the agent sends `"v": 2`).
const VERSION: u64 = 2;
const MAX_SEGMENTS: usize = 1 << 16;
/// Most roots accepted from the agent's answer.
const MAX_ROOTS: usize = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed heap graph chunk: {0}")]
    Bad(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

fn bad(s: impl Into<String>) -> WireError {
    WireError::Bad(s.into())
}

/// Collects the frames as they arrive.
#[derive(Debug, Default)]
pub struct AgentGraphBuilder {
    index: IdMap,
    addr: Vec<u64>,
    tid: Vec<u64>,
    size: Vec<u64>,
    described: Vec<bool>,
    /// Untracked sources whose references (bit 0) and extra references
    /// (bit 1) came already.
    listed: Vec<u8>,
    /// References from the graph counted against reference counts.
    indeg: Vec<u32>,
    /// Reference count less the agent's own, plus one (0: not measured).
    held: Vec<u32>,
    src: Vec<u32>,
    dst: Vec<u32>,
    frames: u64,
    bytes: u64,
}

/// What the graph was built from, for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphStats {
    pub frames: u64,
    pub payload_bytes: u64,
    /// Objects held by more references than the graph knows of.
    pub held_from_c: u64,
    pub modules: u64,
    pub classes: u64,
    pub thread_frames: u64,
}

/// The graph, the roots the agent described (for path names) and stats.
#[derive(Debug)]
pub struct AgentGraph {
    pub graph: HeapGraph,
    pub roots: Vec<RootRecord>,
    pub stats: GraphStats,
}

struct Words<'a> {
    bytes: &'a [u8],
    w: usize,
}

impl<'a> Words<'a> {
    fn get(&self, i: usize) -> u64 {
        let b = &self.bytes[i * self.w..(i + 1) * self.w];
        if self.w == 8 {
            u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))
        } else {
            u64::from(u32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
        }
    }

    fn len(&self) -> usize {
        self.bytes.len() / self.w
    }
}

/// The parsed shape of one segment: kind, n, m, r, overhead, flags.
#[derive(Debug, Clone, Copy)]
struct Shape {
    kind: u8,
    n: u64,
    m: u64,
    r: u64,
    ov: u64,
    flags: u64,
}

impl Shape {
    /// Words in the id part and in the tail.
    fn words(&self) -> (u128, u128) {
        let (n, m, r) = (self.n as u128, self.m as u128, self.r as u128);
        match self.kind {
            b't' | b'o' => (2 * n, if self.kind == b't' { n } else { 0 }),
            b'u' => (2 * n, n + m),
            _ => (n + m, n + r),
        }
    }
}

fn shapes(header: &Value) -> Result<Vec<Shape>, WireError> {
    let segs = match header.get("seg") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() <= MAX_SEGMENTS => a,
        Some(_) => return Err(bad("segment list")),
    };
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        let a = s.as_array().ok_or_else(|| bad("segment"))?;
        let num = |i: usize| a.get(i).and_then(Value::as_u64);
        let kind = a.first().and_then(Value::as_str).unwrap_or("");
        let shape = match (kind, a.len()) {
            ("t", 2) | ("o", 2) => Shape {
                kind: kind.as_bytes()[0],
                n: num(1).ok_or_else(|| bad(kind))?,
                m: 0,
                r: 0,
                ov: 0,
                flags: 0,
            },
            // (m: the value hashes of a growth census; none here.)
            ("u", 3) => Shape {
                kind: b'u',
                n: num(1).ok_or_else(|| bad("u"))?,
                m: num(2).ok_or_else(|| bad("u"))?,
                r: 0,
                ov: 0,
                flags: 0,
            },
            ("e", 6) => {
                let n = num(1).ok_or_else(|| bad("e"))?;
                let r = num(3).ok_or_else(|| bad("e"))?;
                if r != 0 && r != n {
                    return Err(bad("e: reference counts for some sources only"));
                }
                Shape {
                    kind: b'e',
                    n,
                    m: num(2).ok_or_else(|| bad("e"))?,
                    r,
                    ov: num(4).ok_or_else(|| bad("e"))?,
                    flags: num(5).ok_or_else(|| bad("e"))?,
                }
            }
            _ => return Err(bad(format!("segment kind {kind:?}"))),
        };
        out.push(shape);
    }
    Ok(out)
}

fn take<'a>(from: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = from.split_at(n);
    *from = b;
    a
}

impl AgentGraphBuilder {
    pub fn new() -> AgentGraphBuilder {
        AgentGraphBuilder {
            index: IdMap::with_capacity(1 << 16),
            ..AgentGraphBuilder::default()
        }
    }

    fn intern(&mut self, a: u64) -> Result<u32, WireError> {
        if let Some(i) = self.index.get(a) {
            return Ok(i);
        }
        if self.addr.len() >= MAX_NODES {
            return Err(GraphError::TooLarge(MAX_NODES, "objects").into());
        }
        let (i, _) = self.index.intern(a, self.addr.len() as u32);
        self.addr.push(a);
        self.tid.push(0);
        self.size.push(0);
        self.described.push(false);
        self.listed.push(0);
        self.indeg.push(0);
        self.held.push(0);
        Ok(i)
    }

    fn describe(&mut self, ids: &Words, tids: &Words, sizes: &Words) -> Result<(), WireError> {
        for j in 0..ids.len() {
            let a = ids.get(j);
            if a == 0 {
                continue;
            }
            let i = self.intern(a)? as usize;
            if !self.described[i] {
                self.described[i] = true;
                self.tid[i] = tids.get(j);
                self.size[i] = sizes.get(j);
            }
        }
        Ok(())
    }

    fn references(
        &mut self,
        s: &Shape,
        ids: &[u8],
        tail: &[u8],
        w: usize,
    ) -> Result<(), WireError> {
        let n = s.n as usize;
        let srcs = Words {
            bytes: &ids[..n * w],
            w,
        };
        let dsts = Words {
            bytes: &ids[n * w..],
            w,
        };
        let counts = Words {
            bytes: &tail[..n * w],
            w,
        };
        let rc = Words {
            bytes: &tail[n * w..],
            w,
        };
        let untracked = s.flags & 1 != 0;
        let counted = s.flags & 2 == 0;
        let mut at = 0usize;
        for j in 0..n {
            let c = counts.get(j) as usize;
            if c > dsts.len() - at {
                return Err(bad("e: counts beyond the references sent"));
            }
            let a = srcs.get(j);
            if a == 0 {
                at += c;
                continue;
            }
            let si = self.intern(a)?;
            if s.r != 0 {
                let held = rc.get(j).saturating_sub(s.ov);
                self.held[si as usize] = held.min(u64::from(u32::MAX - 1)) as u32 + 1;
            }
            if untracked {
                let bit = if counted { 1 } else { 2 };
                let seen = self.listed[si as usize] & bit != 0;
                self.listed[si as usize] |= bit;
                if seen {
                    at += c;
                    continue;
                }
            }
            for k in at..at + c {
                let d = dsts.get(k);
                if d == 0 {
                    continue;
                }
                let di = self.intern(d)?;
                if counted {
                    let e = &mut self.indeg[di as usize];
                    *e = e.saturating_add(1);
                }
                if di != si {
                    if self.dst.len() >= MAX_EDGES {
                        return Err(GraphError::TooLarge(MAX_EDGES, "references").into());
                    }
                    self.src.push(si);
                    self.dst.push(di);
                }
            }
            at += c;
        }
        if at != dsts.len() {
            return Err(bad("e: references left over"));
        }
        Ok(())
    }

    /// One frame.
    pub fn feed(&mut self, header: &Value, payload: &[u8]) -> Result<(), WireError> {
        match header.get("k").and_then(Value::as_str) {
            Some("retained") => {}
            other => return Err(bad(format!("kind {other:?}"))),
        }
        if header.get("v").and_then(Value::as_u64) != Some(VERSION) {
            return Err(bad("format version"));
        }
        let w = header.get("w").and_then(Value::as_u64).unwrap_or(0);
        if w != 4 && w != 8 {
            return Err(bad(format!("word size {w}")));
        }
        if header.get("le").and_then(Value::as_bool).unwrap_or(true)
            != cfg!(target_endian = "little")
        {
            return Err(bad("the target's byte order differs from ours"));
        }
        let w = w as usize;
        let shapes = shapes(header)?;
        let (mut id_words, mut tail_words) = (0u128, 0u128);
        for s in &shapes {
            let (a, b) = s.words();
            id_words += a;
            tail_words += b;
        }
        if (id_words + tail_words) * w as u128 != payload.len() as u128 {
            return Err(bad(format!(
                "payload of {} bytes, expected {}",
                payload.len(),
                (id_words + tail_words) * w as u128
            )));
        }
        let (mut ids, mut tail) = payload.split_at(id_words as usize * w);
        for s in &shapes {
            let (a, b) = s.words();
            let id_part = take(&mut ids, a as usize * w);
            let tail_part = take(&mut tail, b as usize * w);
            let n = s.n as usize * w;
            match s.kind {
                b't' | b'u' => {
                    let objs = Words {
                        bytes: &id_part[..n],
                        w,
                    };
                    let tids = Words {
                        bytes: &id_part[n..],
                        w,
                    };
                    let sizes = Words {
                        bytes: &tail_part[..n],
                        w,
                    };
                    self.describe(&objs, &tids, &sizes)?;
                }
                b'e' => self.references(s, id_part, tail_part, w)?,
                _ => {}
            }
        }
        self.frames += 1;
        self.bytes += payload.len() as u64;
        Ok(())
    }

    /// The graph, given the agent's answer (types, roots, classes).
    pub fn finish(self, result: &Value) -> Result<AgentGraph, WireError> {
        let mut names: HashMap<u64, (String, u64)> = HashMap::new();
        for e in result
            .get("types")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no `types` in the answer"))?
        {
            let Some(tid) = e.get(0).and_then(Value::as_u64) else {
                return Err(bad(format!("type entry {e}")));
            };
            let module = e.get(1).and_then(Value::as_str);
            let qual = e.get(2).and_then(Value::as_str).unwrap_or("?");
            let pre = e.get(3).and_then(Value::as_u64).unwrap_or(0);
            names.insert(tid, (qualified(module, qual), pre));
        }
        let roots: Vec<RootRecord> = match result.get("roots") {
            Some(Value::Array(a)) if a.len() <= MAX_ROOTS => a
                .iter()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect(),
            None => Vec::new(),
            _ => return Err(bad("roots")),
        };
        let classes: Vec<u64> = match result.get("classes") {
            Some(Value::Array(a)) if a.len() <= MAX_ROOTS => {
                a.iter().filter_map(Value::as_u64).collect()
            }
            None => Vec::new(),
            _ => return Err(bad("classes")),
        };

        // Dicts of classes and modules the agent found to be its own after
        // their records went (left over by an earlier session).
        let mut described = self.described;
        if let Some(Value::Array(a)) = result.get("drop_dicts") {
            for id in a.iter().filter_map(Value::as_u64) {
                if let Some(i) = self.index.get(id) {
                    described[i as usize] = false;
                }
            }
        }
        let AgentGraphBuilder {
            index,
            addr,
            tid,
            size,
            indeg,
            held,
            src,
            dst,
            frames,
            bytes,
            ..
        } = self;
        // Described nodes only, renumbered.
        let mut new = vec![u32::MAX; addr.len()];
        let mut g_addr = Vec::new();
        let mut g_ty = Vec::new();
        let mut g_size = Vec::new();
        let mut type_names: Vec<String> = Vec::new();
        let mut type_index: HashMap<u64, u32> = HashMap::new();
        for i in 0..addr.len() {
            if !described[i] {
                continue;
            }
            new[i] = g_addr.len() as u32;
            let (name, pre) = names
                .get(&tid[i])
                .map(|(n, p)| (n.as_str(), *p))
                .unwrap_or(("?", 0));
            let t = *type_index.entry(tid[i]).or_insert_with(|| {
                type_names.push(name.to_string());
                (type_names.len() - 1) as u32
            });
            g_addr.push(addr[i]);
            g_ty.push(t);
            g_size.push(size[i].saturating_add(pre));
        }
        let edges = src.iter().zip(&dst).filter_map(|(&s, &d)| {
            let (s, d) = (new[s as usize], new[d as usize]);
            (s != u32::MAX && d != u32::MAX).then_some((s, d))
        });
        let mut stats = GraphStats {
            frames,
            payload_bytes: bytes,
            ..GraphStats::default()
        };
        let mut graph_roots: Vec<(u32, RootKind)> = Vec::new();
        let node_of = |a: u64| {
            index
                .get(a)
                .map(|i| new[i as usize])
                .filter(|&n| n != u32::MAX)
        };
        for r in &roots {
            let Some(kind) = RootKind::from_agent(&r.kind) else {
                continue;
            };
            if let Some(n) = node_of(r.id) {
                match kind {
                    RootKind::Module => stats.modules += 1,
                    RootKind::Frame => stats.thread_frames += 1,
                    _ => {}
                }
                graph_roots.push((n, kind));
            }
        }
        for &c in &classes {
            if let Some(n) = node_of(c) {
                stats.classes += 1;
                graph_roots.push((n, RootKind::Class));
            }
        }
        for i in 0..addr.len() {
            if new[i] != u32::MAX && held[i] > 0 && held[i] - 1 > indeg[i] {
                stats.held_from_c += 1;
                graph_roots.push((new[i], RootKind::NoReferrer));
            }
        }
        let graph = HeapGraph::from_parts(g_addr, g_ty, g_size, type_names, edges, graph_roots)?;
        Ok(AgentGraph {
            graph,
            roots,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(v: &[u64]) -> Vec<u8> {
        v.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    fn header(seg: Value) -> Value {
        json!({"k": "retained", "v": 2, "w": 8, "le": cfg!(target_endian = "little"), "seg": seg})
    }

    /// A module (100) whose dict (200) holds a list (300) of two strs
    /// (400, 500); the list's reference count says one more holder than
    /// the dict: it is held from C too.
    fn frame() -> (Value, Vec<u8>) {
        let seg = json!([["t", 3], ["e", 3, 3, 3, 2, 0], ["u", 2, 0]]);
        let mut ids = vec![100, 200, 300, 7, 8, 9]; // t: ids, tids
        ids.extend([100, 200, 300, 200, 300, 400]); // e: srcs, dsts (list -> 400 only)
        ids.extend([400, 500, 5, 5]); // u: ids, tids
        let mut tail = vec![56, 200, 72]; // t: sizes
        tail.extend([1, 1, 1]); // e: counts
        tail.extend([2, 3, 4]); // e: refcounts (2 are ours)
        tail.extend([60, 60]); // u: sizes
        ids.extend(tail);
        (header(seg), words(&ids))
    }

    fn answer() -> Value {
        json!({
            "types": [[7, null, "module", 0], [8, null, "dict", 16], [9, null, "list", 16], [5, null, "str", 0]],
            "roots": [{"id": 100, "kind": "module", "name": "app"}],
            "classes": [],
        })
    }

    #[test]
    fn builds_nodes_edges_sizes_and_roots() {
        let mut b = AgentGraphBuilder::new();
        let (h, p) = frame();
        b.feed(&h, &p).unwrap();
        let g = b.finish(&answer()).unwrap();
        // 500 was described but nothing refers to it.
        assert_eq!(g.graph.len(), 5);
        assert_eq!(g.graph.edge_count(), 3);
        let list = g.graph.node_of(300).unwrap();
        assert_eq!(g.graph.size[list as usize], 72 + 16);
        assert_eq!(g.graph.type_name(list), "list");
        assert_eq!(g.stats.held_from_c, 1);
        assert_eq!(g.stats.modules, 1);
        let kinds: Vec<RootKind> = g.graph.roots().iter().map(|r| r.1).collect();
        assert_eq!(kinds, vec![RootKind::Module, RootKind::NoReferrer]);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut b = AgentGraphBuilder::new();
        let (h, p) = frame();
        assert!(b.feed(&h, &p[..p.len() - 8]).is_err());
        assert!(
            b.feed(
                &header(json!([["e", 1, 1, 1, 0, 0]])),
                &words(&[1, 2, 5, 0])
            )
            .is_err()
        );
        assert!(
            b.feed(
                &header(json!([["e", 2, 1, 1, 0, 0]])),
                &words(&[1, 2, 3, 1, 0, 0])
            )
            .is_err()
        );
        assert!(b.feed(&header(json!([["x", 1]])), &words(&[1])).is_err());
        let mut bad = h.clone();
        bad["v"] = json!(1);
        assert!(b.feed(&bad, &p).is_err());
        bad = h.clone();
        bad["w"] = json!(3);
        assert!(b.feed(&bad, &p).is_err());
        assert!(b.finish(&json!({})).is_err());
    }
}
