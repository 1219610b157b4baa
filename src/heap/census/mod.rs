//! The census from memory: walk the generation lists, then (unless
//! gc-only) follow referents from every tracked object to the untracked
//! objects they hold, recursively, each counted once; size everything like
//! `sys.getsizeof`, attribute instance/module/class `__dict__`s to their
//! owners, and produce the same [`Census`] rows as the agent's census.

mod counter;
mod parallel;

use std::collections::BTreeMap;
use std::time::Instant;

use super::error::HeapError;
use super::mem::{MAX_ITEMS, Mem};
use super::names::Names;
use super::roots::Interpreter;
use super::space::AddressSpace;
use super::types::Types;
use super::visited::{SharedVisited, Visited};
use super::walk::Walker;
use crate::analysis::census::{AgentStats, Census, IdMap, RowKind, TypeRow, sorted_rows, type_row};
use counter::{Counter, Partial};

pub use parallel::census_parallel;

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
    /// Threads that walked the lists: 2 when two met in the middle.
    pub walkers: u8,
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
/// No object is bigger than this (64 GiB): a larger size was read from
/// memory that changed or is corrupt.
const MAX_OBJECT_BYTES: u64 = 1 << 36;

/// The census of the heap read through `space`, on this thread: each
/// object decoded as the walk finds it, while its memory is in the cache.
/// Tracked referents are left to the walk (see `is_tracked`); objects of
/// the permanent generation are not counted, like `gc.get_objects()`
/// leaves them out.
pub fn census(
    space: &dyn AddressSpace,
    interp: &Interpreter,
    opts: &CensusOptions,
) -> Result<HeapCensus, HeapError> {
    let started = Instant::now();
    let seen = SharedVisited::new(&space.ranges());
    let mut c = Counter::new(space, interp, &seen, opts.keep_ids);
    let mut listing = Listing::new(&c.mem, interp);
    while let Some((seq, obj, ty)) = listing.next(&c.mem, interp, &mut c.types) {
        c.tracked(seq, obj, ty, opts.gc_only);
    }
    let mem = c.mem.clone();
    let part = c.into_partial();
    listing.conclude(&mem, interp, opts, part, started)
}

/// The walk as the census counts it: objects of the permanent generation
/// left out (like `gc.get_objects()`), an object on two lists listed once.
struct Listing {
    walker: Walker,
    seen: Visited,
    listed: u64,
    frozen: u64,
    dup: u64,
}

impl Listing {
    fn new(mem: &Mem, interp: &Interpreter) -> Listing {
        Listing {
            walker: Walker::new(mem, interp),
            seen: Visited::default(),
            listed: 0,
            frozen: 0,
            dup: 0,
        }
    }

    /// The next object to count: (walk position, address, type index).
    fn next(
        &mut self,
        mem: &Mem,
        interp: &Interpreter,
        types: &mut Types,
    ) -> Option<(u64, u64, u32)> {
        while let Some(f) = self.walker.next(mem, interp, types) {
            if f.permanent {
                self.frozen += 1;
                continue;
            }
            self.listed += 1;
            if !self.seen.insert(f.obj) {
                self.dup += 1;
                continue;
            }
            return Some((self.listed, f.obj, f.ty));
        }
        None
    }

    fn conclude(
        self,
        mem: &Mem,
        interp: &Interpreter,
        opts: &CensusOptions,
        part: Partial,
        started: Instant,
    ) -> Result<HeapCensus, HeapError> {
        let counts = (self.listed, self.frozen, self.dup);
        conclude(mem, interp, opts, self.walker, part, counts, started)
    }
}

/// Warnings and rows of a finished census.
fn conclude(
    mem: &Mem,
    interp: &Interpreter,
    opts: &CensusOptions,
    mut walker: Walker,
    mut part: Partial,
    (listed, frozen, dup): (u64, u64, u64),
    started: Instant,
) -> Result<HeapCensus, HeapError> {
    let left_out = part.skipped;
    part.skipped += walker.skipped;
    let walk_s = started.elapsed().as_secs_f64();
    let mut warnings = interp.warnings.clone();
    warnings.extend(walker.finish());
    if left_out > 0 {
        warnings.push(format!(
            "{left_out} references in oversized containers were not followed (a corrupt heap, or a container of more than {MAX_ITEMS} items)"
        ));
    }
    if part.implausible > 0 {
        warnings.push(format!(
            "{} objects with an impossible size (over 64 GiB) were left out (memory changed under the read, or is corrupt)",
            part.implausible
        ));
        part.skipped += part.implausible;
    }
    if dup > 0 {
        warnings.push(format!(
            "{dup} objects sat on two generation lists (counted once)"
        ));
    }
    let skipped = part.skipped;
    let census = finish(mem, interp, part, opts, listed, frozen, walk_s);
    Ok(HeapCensus {
        census,
        skipped,
        warnings,
        walk_s,
        permanent: frozen,
        collecting: walker.collecting,
        walkers: 1,
    })
}

fn finish(
    mem: &Mem,
    it: &Interpreter,
    mut part: Partial,
    opts: &CensusOptions,
    listed: u64,
    frozen: u64,
    walk_s: f64,
) -> Census {
    let started = Instant::now();
    let mut names = Names::default();
    let mut rows: BTreeMap<String, TypeRow> = BTreeMap::new();
    let mut ids: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let add = |rows: &mut BTreeMap<String, TypeRow>,
               ids: &mut BTreeMap<String, Vec<u64>>,
               kind: RowKind,
               tid: u64,
               (module, qualname): (Option<String>, String),
               agg: &mut Agg| {
        let row = type_row(rows, kind, tid, module, qualname);
        row.count += agg.tracked + agg.untracked;
        row.tracked += agg.tracked;
        row.size = row.size.saturating_add(agg.size);
        if opts.keep_ids {
            ids.entry(row.name.clone())
                .or_default()
                .append(&mut agg.ids);
        }
    };
    // In address order, so that rows list their classes' ids the same
    // way whatever thread counted them.
    let mut by_type: Vec<(u64, Agg)> = std::mem::take(&mut part.by_type).into_iter().collect();
    by_type.sort_unstable_by_key(|(tid, _)| *tid);
    for (tid, mut agg) in by_type {
        let n = names.of(mem, it, tid);
        add(&mut rows, &mut ids, RowKind::Type, tid, n, &mut agg);
    }
    let mut old: Vec<(u64, Agg)> = std::mem::take(&mut part.old).into_iter().collect();
    old.sort_unstable_by_key(|(cls, _)| *cls);
    for (cls, mut agg) in old {
        let n = names.of(mem, it, cls);
        add(&mut rows, &mut ids, RowKind::Type, cls, n, &mut agg);
    }
    let dict_tid = it.builtins.dict;
    // Dicts by owner first (one row update per owner, not per dict).
    let mut by_owner: IdMap<Agg> = IdMap::default();
    let mut plain = Agg::default();
    for d in std::mem::take(&mut part.dicts) {
        let agg = match part.owners.get(&d.id) {
            Some(&(_, o)) if !opts.keep_ids || d.id >> 63 == 0 => by_owner.entry(o).or_default(),
            _ => &mut plain,
        };
        agg.tracked += u64::from(d.tracked);
        agg.untracked += u64::from(!d.tracked);
        agg.size = agg.size.saturating_add(d.size);
        if opts.keep_ids {
            agg.ids.push(d.id);
        }
    }
    let mut by_owner: Vec<(u64, Agg)> = by_owner.into_iter().collect();
    by_owner.sort_unstable_by_key(|(tid, _)| *tid);
    for (tid, agg) in by_owner.iter_mut() {
        let n = names.of(mem, it, *tid);
        add(&mut rows, &mut ids, RowKind::DictOf, *tid, n, agg);
    }
    if plain.tracked + plain.untracked > 0 {
        let n = names.of(mem, it, dict_tid);
        add(&mut rows, &mut ids, RowKind::Type, dict_tid, n, &mut plain);
    }
    let (rows, count, size, tracked) = sorted_rows(rows);
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
