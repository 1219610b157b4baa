//! Building the reverse graph from the agent's streamed chunks.

use super::{GraphError, IdMap, MAX_NODES, MAX_WORDS, RefGraph, RootKind};

/// Collects the streamed chunks (cheaply: the agent waits while we read,
/// so the real work is left for [`finish`](Self::finish)).
#[derive(Debug, Default)]
pub struct GraphBuilder {
    words: Vec<u64>,
    classes: Vec<u64>,
    total: u64,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// One chunk: `kind` "edges" or "types" (others are ignored), words of
    /// `itemsize` (4 or 8) bytes in the given byte order.
    pub fn add_chunk(
        &mut self,
        kind: &str,
        itemsize: usize,
        big_endian: bool,
        payload: &[u8],
    ) -> Result<(), GraphError> {
        if itemsize != 4 && itemsize != 8 {
            return Err(GraphError::BadChunk(format!("word size {itemsize}")));
        }
        if !payload.len().is_multiple_of(itemsize) {
            return Err(GraphError::BadChunk(format!(
                "{} bytes is not a whole number of {itemsize}-byte words",
                payload.len()
            )));
        }
        let n = (payload.len() / itemsize) as u64;
        self.total = self.total.saturating_add(n);
        if self.total > MAX_WORDS {
            return Err(GraphError::TooLarge("words"));
        }
        let words = payload.chunks_exact(itemsize).map(|w| {
            let mut b = [0u8; 8];
            if big_endian {
                b[8 - itemsize..].copy_from_slice(w);
                u64::from_be_bytes(b)
            } else {
                b[..itemsize].copy_from_slice(w);
                u64::from_le_bytes(b)
            }
        });
        match kind {
            "edges" => self.words.extend(words),
            "types" => self.classes.extend(words.filter(|&w| w != 0)),
            _ => {}
        }
        Ok(())
    }

    /// Builds the reverse graph. `roots` come from the agent's answer;
    /// classes from the `types` chunks; `excluded` objects (the agent's own)
    /// lose their outgoing references.
    pub fn finish(
        self,
        roots: &[(u64, RootKind)],
        excluded: &[u64],
    ) -> Result<RefGraph, GraphError> {
        let GraphBuilder { words, classes, .. } = self;
        let records = words.iter().filter(|&&w| w == 0).count();
        let mut index = IdMap::with_capacity(records + records / 4);
        let mut ids: Vec<u64> = Vec::with_capacity(records + records / 4);
        let mut has_record: Vec<bool> = Vec::with_capacity(ids.capacity());
        let mut edges: Vec<(u32, u32)> =
            Vec::with_capacity(words.len().saturating_sub(2 * records));
        let mut intern =
            |id: u64, ids: &mut Vec<u64>, has_record: &mut Vec<bool>| -> Result<u32, GraphError> {
                if ids.len() >= MAX_NODES {
                    if let Some(i) = index.get(id) {
                        return Ok(i);
                    }
                    return Err(GraphError::TooLarge("objects"));
                }
                let (i, new) = index.intern(id, ids.len() as u32);
                if new {
                    ids.push(id);
                    has_record.push(false);
                }
                Ok(i)
            };
        let mut cur: Option<u32> = None;
        let mut n_records = 0u64;
        for &w in &words {
            match (cur, w) {
                (None, 0) => {}
                (None, src) => {
                    let i = intern(src, &mut ids, &mut has_record)?;
                    has_record[i as usize] = true;
                    n_records += 1;
                    cur = Some(i);
                }
                (Some(_), 0) => cur = None,
                (Some(s), dst) => {
                    let d = intern(dst, &mut ids, &mut has_record)?;
                    edges.push((s, d));
                }
            }
        }
        drop(words);
        let n = ids.len();
        let mut skip = vec![false; n];
        for &id in excluded {
            if let Some(i) = index.get(id) {
                skip[i as usize] = true;
            }
        }
        let keep = |&(s, d): &(u32, u32)| s != d && !skip[s as usize];
        let mut off = vec![0usize; n + 1];
        for &(_, d) in edges.iter().filter(|e| keep(e)) {
            off[d as usize + 1] += 1;
        }
        for i in 0..n {
            off[i + 1] += off[i];
        }
        let mut fill = off.clone();
        let mut rev = vec![0u32; off[n]];
        for &(s, d) in edges.iter().filter(|e| keep(e)) {
            rev[fill[d as usize]] = s;
            fill[d as usize] += 1;
        }
        drop(edges);
        drop(fill);
        let mut root = vec![0u8; n];
        let mut mark = |id: u64, kind: RootKind| {
            if let Some(i) = index.get(id) {
                let r = &mut root[i as usize];
                if *r == 0 || kind.rank() < *r {
                    *r = kind.rank();
                }
            }
        };
        for &c in &classes {
            mark(c, RootKind::Class);
        }
        for &(id, kind) in roots {
            if kind != RootKind::NoReferrer {
                mark(id, kind);
            }
        }
        Ok(RefGraph {
            index,
            ids,
            has_record,
            off,
            rev,
            root,
            records: n_records,
        })
    }
}
