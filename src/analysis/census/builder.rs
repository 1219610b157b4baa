//! [`CensusBuilder`]: chunk frames in, one [`Census`] out.
//!
//! Records are counted as frames arrive, so the arrays are never held
//! twice: each record's address goes into [`Seen`] (a repeat is dropped:
//! the first record wins), and its size into its type's slot (type ids map
//! to dense slots, so the per-record work is a bit test and an add).
//! Exact dicts are kept aside, to be attributed to their owners at the end.
//! Within a census an address is one object; across censuses (growth's
//! kept ids) a fingerprinted int or float is identified by its
//! [`fingerprint_key`], as its address is soon reused by another number.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;

use super::frame::{self, Segment, Words};
use super::seen::Seen;
use super::{
    AgentStats, Census, CensusError, IdMap, IdSet, RowKind, TypeRow, fingerprint_key, sorted_rows,
    type_row,
};

/// Per type while aggregating.
#[derive(Debug, Default, Clone, Copy)]
struct Agg {
    tid: u64,
    tracked: u64,
    untracked: u64,
    /// Sizes as sent (without the type's `pre`).
    size: u64,
}

#[derive(Debug, Clone, Copy)]
struct DictRec {
    id: u64,
    size: u64,
    tracked: bool,
}

/// Collects the chunk frames of one census.
#[derive(Debug, Default)]
pub struct CensusBuilder {
    seen: Seen,
    slots: IdMap<u32>,
    aggs: Vec<Agg>,
    /// (type id, slot) of the last lookup.
    last: Option<(u64, u32)>,
    /// Records of exact dicts, attributed to owners at the end.
    dicts: Vec<DictRec>,
    owners: IdMap<u64>,
    dict_tid: Option<u64>,
    /// Per slot, the key of every object counted, when growth needs them.
    ids: Option<Vec<Vec<u64>>>,
    pub chunks: u64,
    pub payload_bytes: u64,
    /// Records dropped because their id was already counted.
    pub repeats: u64,
    /// Time spent in `feed` (and, in the census, in `finish`).
    pub feed_s: f64,
}

impl CensusBuilder {
    /// `keep_ids`: remember every object's identity key per type (for
    /// `growth`'s new objects; 8 bytes per object).
    pub fn new(keep_ids: bool) -> CensusBuilder {
        CensusBuilder {
            ids: keep_ids.then(Vec::new),
            ..CensusBuilder::default()
        }
    }

    /// Adds one chunk frame (`header`, `payload`). A malformed frame is an
    /// error and adds nothing.
    pub fn feed(&mut self, header: &Value, payload: &[u8]) -> Result<(), CensusError> {
        let started = Instant::now();
        let f = frame::parse(header, payload)?;
        if let Some(dt) = f.dict_tid {
            self.dict_tid = Some(dt);
        }
        // Check the hash counts before counting anything.
        for s in &f.segments {
            if let Segment::Untracked { tids, hashes, .. } = s {
                let want = if f.fp_tids.is_empty() {
                    0
                } else {
                    tids.iter().filter(|t| f.fp_tids.contains(t)).count()
                };
                if want != hashes.len() {
                    return Err(CensusError::BadSegment("u hashes"));
                }
            }
        }
        for s in &f.segments {
            match s {
                Segment::Tracked { ids, tids, sizes } => {
                    for ((id, tid), size) in ids.iter().zip(tids.iter()).zip(sizes.iter()) {
                        self.add(id, tid, size, true, id);
                    }
                }
                Segment::Untracked {
                    ids,
                    tids,
                    sizes,
                    hashes,
                } => self.add_untracked(ids, tids, sizes, hashes, &f.fp_tids),
                Segment::Owners { dicts, tids } => {
                    for (d, t) in dicts.iter().zip(tids.iter()) {
                        self.owners.entry(d).or_insert(t);
                    }
                }
            }
        }
        self.chunks += 1;
        self.payload_bytes += payload.len() as u64;
        self.feed_s += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn add_untracked(
        &mut self,
        ids: &Words,
        tids: &Words,
        sizes: &Words,
        hashes: &Words,
        fp_tids: &[u64],
    ) {
        if fp_tids.is_empty() {
            for ((id, tid), size) in ids.iter().zip(tids.iter()).zip(sizes.iter()) {
                self.add(id, tid, size, false, id);
            }
            return;
        }
        let mut hashes = hashes.iter();
        for ((id, tid), size) in ids.iter().zip(tids.iter()).zip(sizes.iter()) {
            let key = if fp_tids.contains(&tid) {
                // Counted above: there is one hash per such record.
                fingerprint_key(id, hashes.next().unwrap_or(0))
            } else {
                id
            };
            self.add(id, tid, size, false, key);
        }
    }

    fn slot(&mut self, tid: u64) -> usize {
        if let Some((t, s)) = self.last
            && t == tid
        {
            return s as usize;
        }
        let next = self.aggs.len() as u32;
        let s = *self.slots.entry(tid).or_insert(next);
        if s == next {
            self.aggs.push(Agg {
                tid,
                ..Agg::default()
            });
        }
        self.last = Some((tid, s));
        s as usize
    }

    /// Counts the object at address `id` unless it was counted already;
    /// `key` is what identifies it across censuses (see [`fingerprint_key`]).
    fn add(&mut self, id: u64, tid: u64, size: u64, tracked: bool, key: u64) {
        if !self.seen.insert(id) {
            self.repeats += 1;
            return;
        }
        if self.dict_tid == Some(tid) {
            self.dicts.push(DictRec {
                id: key,
                size,
                tracked,
            });
            return;
        }
        let s = self.slot(tid);
        let a = &mut self.aggs[s];
        if tracked {
            a.tracked += 1;
        } else {
            a.untracked += 1;
        }
        a.size = a.size.saturating_add(size);
        if let Some(ids) = &mut self.ids {
            if ids.len() <= s {
                ids.resize_with(s + 1, Vec::new);
            }
            ids[s].push(key);
        }
    }

    /// The census, from the op's final `result`.
    pub fn finish(self, result: &Value) -> Result<Census, CensusError> {
        let started = Instant::now();
        let stats: AgentStats = serde_json::from_value(result.clone())
            .map_err(|e| CensusError::BadResult(e.to_string()))?;
        let mut types: IdMap<TypeInfo> = IdMap::default();
        for entry in result
            .get("types")
            .and_then(Value::as_array)
            .ok_or_else(|| CensusError::BadResult("no `types`".into()))?
        {
            let Some(tid) = entry.get(0).and_then(Value::as_u64) else {
                return Err(CensusError::BadResult(format!("bad type entry {entry}")));
            };
            types.insert(
                tid,
                TypeInfo {
                    module: entry.get(1).and_then(Value::as_str).map(str::to_string),
                    qualname: entry
                        .get(2)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    pre: entry.get(3).and_then(Value::as_u64).unwrap_or(0),
                },
            );
        }
        let dict_tid = self
            .dict_tid
            .or_else(|| result.get("dict_tid").and_then(Value::as_u64));

        // Rows keyed by display name (several type objects can share a name:
        // a class re-created in a loop shows as one row with `classes` > 1).
        let mut rows: BTreeMap<String, TypeRow> = BTreeMap::new();
        let keep = self.ids.is_some();
        let mut ids_by_name: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut slot_names: Vec<String> = Vec::with_capacity(self.aggs.len());
        for a in &self.aggs {
            let info = types.get(&a.tid);
            let pre = info.map_or(0, |i| i.pre);
            let row = row_for(&mut rows, RowKind::Type, a.tid, info);
            let n = a.tracked + a.untracked;
            row.count += n;
            row.tracked += a.tracked;
            row.size = row
                .size
                .saturating_add(a.size)
                .saturating_add(n.saturating_mul(pre));
            slot_names.push(row.name.clone());
        }
        if let Some(ids) = self.ids {
            for (s, keys) in ids.into_iter().enumerate() {
                let name = &slot_names[s];
                match ids_by_name.get_mut(name) {
                    Some(v) => v.extend(keys),
                    None => {
                        ids_by_name.insert(name.clone(), keys);
                    }
                }
            }
        }
        let dict_pre = dict_tid.and_then(|t| types.get(&t)).map_or(0, |i| i.pre);
        // Dicts of modules and classes the agent found to be its own (left
        // over by earlier sessions) after their records were sent.
        let drop: IdSet = result
            .get("drop_dicts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        for d in self.dicts.iter().filter(|d| !drop.contains(&d.id)) {
            let (kind, tid) = match self.owners.get(&d.id) {
                Some(owner) => (RowKind::DictOf, *owner),
                None => (RowKind::Type, dict_tid.unwrap_or(0)),
            };
            let info = types.get(&tid);
            let row = row_for(&mut rows, kind, tid, info);
            row.count += 1;
            row.size = row.size.saturating_add(d.size).saturating_add(dict_pre);
            if d.tracked {
                row.tracked += 1;
            }
            if keep {
                ids_by_name.entry(row.name.clone()).or_default().push(d.id);
            }
        }
        let (rows, count, size, tracked) = sorted_rows(rows);
        let ids = keep.then(|| {
            ids_by_name
                .into_iter()
                .map(|(k, mut v)| {
                    v.sort_unstable();
                    (k, v)
                })
                .collect()
        });
        Ok(Census {
            rows,
            count,
            size,
            tracked,
            untracked: count - tracked,
            gc_only: stats.gc_only,
            dict_tid: dict_tid.unwrap_or(0),
            chunks: self.chunks,
            payload_bytes: self.payload_bytes,
            repeats: self.repeats,
            feed_s: self.feed_s + started.elapsed().as_secs_f64(),
            stats,
            ids,
        })
    }
}

#[derive(Debug, Clone)]
struct TypeInfo {
    module: Option<String>,
    qualname: String,
    pre: u64,
}

fn row_for<'a>(
    rows: &'a mut BTreeMap<String, TypeRow>,
    kind: RowKind,
    tid: u64,
    info: Option<&TypeInfo>,
) -> &'a mut TypeRow {
    let (module, qualname) = match info {
        Some(i) => (i.module.clone(), i.qualname.clone()),
        None => (None, format!("<type {tid:#x}>")),
    };
    type_row(rows, kind, tid, module, qualname)
}
