//! The census from memory: walk the generation lists, then (unless
//! gc-only) follow referents from every tracked object to the untracked
//! objects they hold, recursively, each counted once; size everything like
//! `sys.getsizeof`, attribute instance/module/class `__dict__`s to their
//! owners, and produce the same [`Census`] rows as the agent's census.

use std::collections::BTreeMap;
use std::time::Instant;

use super::error::HeapError;
use super::mem::Mem;
use super::names::Names;
use super::referents::{decode, owned_dict, plausible};
use super::roots::Interpreter;
use super::sizes::getsizeof;
use super::space::AddressSpace;
use super::types::{Kind, Types};
use super::walk::walk;
use crate::analysis::census::seen::Seen;
use crate::analysis::census::{
    AgentStats, Census, IdMap, RowKind, TypeRow, fingerprint_key, qualified,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct CensusOptions {
    /// Only the objects on the collector's lists.
    pub gc_only: bool,
    /// Keep every object's identity key per row (for `growth`).
    pub keep_ids: bool,
}

#[derive(Debug, Clone)]
pub struct HeapCensus {
    pub census: Census,
    /// Nodes/objects rejected as invalid.
    pub skipped: u64,
    pub warnings: Vec<String>,
    /// Seconds spent walking and decoding.
    pub walk_s: f64,
    /// Objects in the permanent generation (not counted, like the agent).
    pub permanent: u64,
    pub collecting: bool,
}

#[derive(Debug, Default, Clone)]
struct Agg {
    tracked: u64,
    untracked: u64,
    size: u64,
    ids: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct DictRec {
    id: u64,
    size: u64,
    tracked: bool,
}

/// Most untracked objects queued at once (bounds memory on a hostile heap).
const MAX_OBJECTS: usize = 1 << 28;

struct Counter<'a> {
    mem: Mem<'a>,
    it: &'a Interpreter,
    types: Types,
    seen: Seen,
    /// By type index.
    aggs: Vec<Agg>,
    /// 2.7 old-style instances, by class.
    old: IdMap<Agg>,
    dicts: Vec<DictRec>,
    owners: IdMap<u64>,
    keep_ids: bool,
    stack: Vec<(u64, u32)>,
    found: Vec<(u64, bool)>,
    skipped: u64,
}

impl Counter<'_> {
    fn count(&mut self, obj: u64, ti: u32, tracked: bool) {
        let mem = &self.mem;
        let it = self.it;
        let t = self.types.info(ti);
        let size = getsizeof(mem, it, t, obj);
        let key = if self.keep_ids {
            id_key(mem, t.kind, obj)
        } else {
            obj
        };
        if t.addr == it.builtins.dict {
            self.dicts.push(DictRec {
                id: key,
                size,
                tracked,
            });
            return;
        }
        let agg = if t.kind == Kind::OldInstance && !t.heap {
            let cls = mem.ptr(obj + 16).unwrap_or(0);
            self.old.entry(cls).or_default()
        } else {
            let i = ti as usize;
            if self.aggs.len() <= i {
                self.aggs.resize_with(i + 1, Agg::default);
            }
            &mut self.aggs[i]
        };
        if tracked {
            agg.tracked += 1;
        } else {
            agg.untracked += 1;
        }
        agg.size = agg.size.saturating_add(size);
        if self.keep_ids {
            agg.ids.push(key);
        }
    }

    /// Owner attribution, as the agent's `plain_owners`/`other_owners`.
    fn owners_of(&mut self, obj: u64, ti: u32) {
        let mem = &self.mem;
        let it = self.it;
        let t = self.types.info(ti);
        let (d, owner) = if t.plain {
            (owned_dict(mem, it, t, obj), t.addr)
        } else {
            match t.kind {
                Kind::Module => (mem.ptr(obj + 16), t.addr),
                // A class whose metaclass traverses it as `type` does
                // (tp_dict first): not when the metaclass is a heap type.
                Kind::Type if !t.heap => {
                    let heap = mem
                        .u64(obj + super::layout::tp::FLAGS)
                        .is_some_and(|f| f & super::layout::flags::HEAPTYPE != 0);
                    if heap {
                        (mem.ptr(obj + super::layout::tp::DICT), t.addr)
                    } else {
                        (None, 0)
                    }
                }
                Kind::OldInstance if !t.heap => (mem.ptr(obj + 24), mem.ptr(obj + 16).unwrap_or(0)),
                _ => (None, 0),
            }
        };
        if let Some(d) = d
            && d != 0
            && mem.u64(d + 8) == Some(it.builtins.dict)
        {
            self.owners.entry(d).or_insert(owner);
        }
    }

    /// Decodes `obj`'s referents; the untracked ones not seen yet are
    /// counted and queued.
    fn follow(&mut self, obj: u64, ti: u32) {
        let t = self.types.info(ti);
        let worth = t.gc() || t.kind == Kind::Code;
        if !worth {
            return;
        }
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        decode(&self.mem, self.it, t, obj, &mut |p, s| found.push((p, s)));
        for &(p, scanned) in &found {
            if p == 0 || p % 8 != 0 {
                continue;
            }
            // (An address that is no object stays in `seen`: it never
            // becomes one. A scanned word is checked first: the stricter
            // test may reject what a decoded reference would count.)
            let pi = if scanned {
                match plausible(&self.mem, self.it, &mut self.types, p, true) {
                    Some(pi) if self.seen.insert(p) => Some(pi),
                    _ => continue,
                }
            } else if self.seen.insert(p) {
                plausible(&self.mem, self.it, &mut self.types, p, false)
            } else {
                continue;
            };
            if let Some(pi) = pi {
                if self.stack.len() >= MAX_OBJECTS {
                    self.skipped += 1;
                    continue;
                }
                self.count(p, pi, false);
                self.stack.push((p, pi));
            }
        }
        self.found = found;
    }
}

/// Identity key of an object for growth: ints and floats by value too.
fn id_key(mem: &Mem, kind: Kind, obj: u64) -> u64 {
    match kind {
        Kind::Float => fingerprint_key(obj, mem.u64(obj + 16).unwrap_or(0)),
        Kind::Int2 => fingerprint_key(obj, mem.u64(obj + 16).unwrap_or(0)),
        Kind::Long => {
            // Small values: the first two digits and the size/tag word.
            let tag = mem.u64(obj + 16).unwrap_or(0);
            let d = mem.u64(obj + 24).unwrap_or(0);
            fingerprint_key(obj, tag.rotate_left(17) ^ d)
        }
        _ => obj,
    }
}

/// The census of the heap read through `space`.
pub fn census(
    space: &dyn AddressSpace,
    interp: &Interpreter,
    opts: &CensusOptions,
) -> Result<HeapCensus, HeapError> {
    let started = Instant::now();
    let mem = Mem::new(space);
    let mut types = Types::new();
    let walked = walk(&mem, interp, &mut types)?;
    let mut c = Counter {
        mem,
        it: interp,
        types,
        seen: Seen::default(),
        aggs: Vec::new(),
        old: IdMap::default(),
        dicts: Vec::new(),
        owners: IdMap::default(),
        keep_ids: opts.keep_ids,
        stack: Vec::new(),
        found: Vec::new(),
        skipped: walked.skipped,
    };
    // Every tracked object first, so that following referents only ever
    // adds untracked ones.
    let mut tracked: Vec<(u64, u32)> = Vec::with_capacity(walked.tracked.len());
    for &o in walked.permanent.iter() {
        c.seen.insert(o);
    }
    let mut dup = 0u64;
    for &o in &walked.tracked {
        if !c.seen.insert(o) {
            dup += 1;
            continue;
        }
        // Validated by the walk.
        if let Some(ti) = mem.u64(o + 8).and_then(|t| c.types.get(&mem, interp, t)) {
            tracked.push((o, ti));
        }
    }
    for &(o, ti) in &tracked {
        c.count(o, ti, true);
        c.owners_of(o, ti);
    }
    if !opts.gc_only {
        for &(o, ti) in &tracked {
            c.follow(o, ti);
            while let Some((u, ui)) = c.stack.pop() {
                c.follow(u, ui);
            }
        }
    }
    let walk_s = started.elapsed().as_secs_f64();
    let mut warnings = interp.warnings.clone();
    warnings.extend(walked.warnings);
    if dup > 0 {
        warnings.push(format!(
            "{dup} objects sat on two generation lists (counted once)"
        ));
    }
    let census = finish(
        &mut c,
        opts,
        walked.tracked.len() as u64,
        walked.permanent.len() as u64,
        walk_s,
    );
    Ok(HeapCensus {
        census,
        skipped: c.skipped,
        warnings,
        walk_s,
        permanent: walked.permanent.len() as u64,
        collecting: walked.collecting,
    })
}

fn finish(c: &mut Counter, opts: &CensusOptions, listed: u64, frozen: u64, walk_s: f64) -> Census {
    let started = Instant::now();
    let it = c.it;
    let mut names = Names::default();
    let mut rows: BTreeMap<String, TypeRow> = BTreeMap::new();
    let mut ids: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let add = |rows: &mut BTreeMap<String, TypeRow>,
               ids: &mut BTreeMap<String, Vec<u64>>,
               kind: RowKind,
               tid: u64,
               (module, qualname): (Option<String>, String),
               agg: &mut Agg| {
        let base = qualified(module.as_deref(), &qualname);
        let name = match kind {
            RowKind::Type => base,
            RowKind::DictOf => format!("dict of {base}"),
        };
        let row = rows.entry(name.clone()).or_insert_with(|| TypeRow {
            name: name.clone(),
            kind,
            module,
            qualname,
            count: 0,
            tracked: 0,
            size: 0,
            classes: 0,
            tids: Vec::new(),
        });
        if !row.tids.contains(&tid) {
            row.tids.push(tid);
        }
        row.count += agg.tracked + agg.untracked;
        row.tracked += agg.tracked;
        row.size = row.size.saturating_add(agg.size);
        if opts.keep_ids {
            ids.entry(name).or_default().append(&mut agg.ids);
        }
    };
    let mut aggs = std::mem::take(&mut c.aggs);
    for (i, agg) in aggs.iter_mut().enumerate() {
        if agg.tracked + agg.untracked == 0 {
            continue;
        }
        let tid = c.types.info(i as u32).addr;
        let n = names.of(&c.mem, it, tid);
        add(&mut rows, &mut ids, RowKind::Type, tid, n, agg);
    }
    let mut old = std::mem::take(&mut c.old);
    for (cls, agg) in old.iter_mut() {
        let n = names.of(&c.mem, it, *cls);
        add(&mut rows, &mut ids, RowKind::Type, *cls, n, agg);
    }
    let dict_tid = it.builtins.dict;
    for d in std::mem::take(&mut c.dicts) {
        let (kind, tid) = match c.owners.get(&d.id) {
            Some(&o) if !opts.keep_ids || d.id >> 63 == 0 => (RowKind::DictOf, o),
            _ => (RowKind::Type, dict_tid),
        };
        let n = names.of(&c.mem, it, tid);
        let mut agg = Agg {
            tracked: u64::from(d.tracked),
            untracked: u64::from(!d.tracked),
            size: d.size,
            ids: if opts.keep_ids {
                vec![d.id]
            } else {
                Vec::new()
            },
        };
        add(&mut rows, &mut ids, kind, tid, n, &mut agg);
    }
    let mut rows: Vec<TypeRow> = rows.into_values().collect();
    for r in &mut rows {
        r.classes = r.tids.len() as u64;
    }
    rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
    let count = rows.iter().map(|r| r.count).sum();
    let size = rows.iter().fold(0u64, |s, r| s.saturating_add(r.size));
    let tracked: u64 = rows.iter().map(|r| r.tracked).sum();
    let ids = opts.keep_ids.then(|| {
        ids.into_iter()
            .map(|(k, mut v)| {
                v.sort_unstable();
                (k, v)
            })
            .collect()
    });
    let feed_s = started.elapsed().as_secs_f64();
    Census {
        rows,
        count,
        size,
        tracked,
        untracked: count - tracked,
        gc_only: opts.gc_only,
        dict_tid,
        chunks: 0,
        payload_bytes: 0,
        repeats: 0,
        feed_s,
        stats: AgentStats {
            gc_only: opts.gc_only,
            listed,
            frozen,
            tracked,
            untracked_sent: count - tracked,
            reads: Some("memory".into()),
            elapsed_s: walk_s + feed_s,
            ..AgentStats::default()
        },
        ids,
    }
}
