//! One thread's share of a census: counting, sizing, owner attribution and
//! following untracked referents.

use super::super::mem::{MAX_ITEMS, Mem};
use super::super::referents::{decode, owned_dict, plausible};
use super::super::roots::Interpreter;
use super::super::sizes::getsizeof;
use super::super::space::AddressSpace;
use super::super::types::{Kind, TypeInfo, Types};
use super::super::visited::{RangeCache, SharedVisited};
use super::{Agg, DictRec, MAX_OBJECT_BYTES, MAX_OBJECTS};
use crate::analysis::census::{IdMap, fingerprint_key};

/// One thread's census: its own reads, type cache and totals; the visited
/// set is shared (each object is counted by the thread that reaches it
/// first).
pub(super) struct Counter<'a> {
    pub(super) mem: Mem<'a>,
    pub(super) it: &'a Interpreter,
    pub(super) types: Types,
    pub(super) seen: &'a SharedVisited,
    /// This thread's cache of the visited set's ranges.
    pub(super) hint: RangeCache,
    /// By type index.
    pub(super) aggs: Vec<Agg>,
    /// 2.7 old-style instances, by class.
    pub(super) old: IdMap<Agg>,
    pub(super) dicts: Vec<DictRec>,
    /// Dict → (walk position of the claimant, owner type): the first
    /// tracked object in walk order that claims a dict owns it, whichever
    /// thread saw it.
    pub(super) owners: IdMap<(u64, u64)>,
    pub(super) keep_ids: bool,
    pub(super) stack: Vec<(u64, u32)>,
    /// Referents of the object being followed: aligned addresses, bit 0
    /// set for scanned words (at most `MAX_ITEMS`: bounded like the
    /// target's own largest container).
    pub(super) found: Vec<u64>,
    pub(super) skipped: u64,
    /// Objects left out for an impossible size.
    pub(super) implausible: u64,
}

/// What one [`Counter`] found, by type address (type indices are per
/// thread).
#[derive(Default)]
pub(super) struct Partial {
    pub(super) by_type: IdMap<Agg>,
    pub(super) old: IdMap<Agg>,
    pub(super) dicts: Vec<DictRec>,
    pub(super) owners: IdMap<(u64, u64)>,
    pub(super) skipped: u64,
    pub(super) implausible: u64,
}

impl Partial {
    pub(super) fn absorb(&mut self, o: Partial) {
        for (tid, a) in o.by_type {
            merge_agg(self.by_type.entry(tid).or_default(), a);
        }
        for (cls, a) in o.old {
            merge_agg(self.old.entry(cls).or_default(), a);
        }
        self.dicts.extend(o.dicts);
        for (d, (seq, owner)) in o.owners {
            let e = self.owners.entry(d).or_insert((seq, owner));
            if seq < e.0 {
                *e = (seq, owner);
            }
        }
        self.skipped += o.skipped;
        self.implausible += o.implausible;
    }
}

fn merge_agg(into: &mut Agg, mut a: Agg) {
    into.tracked += a.tracked;
    into.untracked += a.untracked;
    into.size = into.size.saturating_add(a.size);
    into.ids.append(&mut a.ids);
}

impl<'a> Counter<'a> {
    pub(super) fn new(
        space: &'a dyn AddressSpace,
        it: &'a Interpreter,
        seen: &'a SharedVisited,
        keep_ids: bool,
    ) -> Counter<'a> {
        Counter {
            mem: Mem::new(space),
            it,
            types: Types::new(),
            seen,
            hint: RangeCache::default(),
            aggs: Vec::new(),
            old: IdMap::default(),
            dicts: Vec::new(),
            owners: IdMap::default(),
            keep_ids,
            stack: Vec::new(),
            found: Vec::new(),
            skipped: 0,
            implausible: 0,
        }
    }

    /// A tracked object found on a list (`seq`: its position in the walk):
    /// counted, its `__dict__` attributed, and (unless gc-only) what it
    /// holds that the collector does not track, recursively.
    pub(super) fn tracked(&mut self, seq: u64, obj: u64, ti: u32, gc_only: bool) {
        self.count(obj, ti, true);
        self.owners_of(seq, obj, ti);
        if !gc_only {
            self.follow(obj, ti);
            while let Some((u, ui)) = self.stack.pop() {
                self.follow(u, ui);
            }
        }
    }

    pub(super) fn into_partial(mut self) -> Partial {
        let mut by_type: IdMap<Agg> = IdMap::default();
        for (i, agg) in std::mem::take(&mut self.aggs).into_iter().enumerate() {
            if agg.tracked + agg.untracked > 0 {
                by_type.insert(self.types.info(i as u32).addr, agg);
            }
        }
        Partial {
            by_type,
            old: self.old,
            dicts: self.dicts,
            owners: self.owners,
            skipped: self.skipped,
            implausible: self.implausible,
        }
    }

    fn count(&mut self, obj: u64, ti: u32, tracked: bool) {
        let mem = &self.mem;
        let it = self.it;
        let t = self.types.info(ti);
        let size = getsizeof(mem, it, t, obj);
        if size > MAX_OBJECT_BYTES {
            // A size no object can have: memory torn under a read without
            // pausing (freed and reused), or corrupt. Left out, counted.
            self.implausible += 1;
            return;
        }
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
    fn owners_of(&mut self, seq: u64, obj: u64, ti: u32) {
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
                        .u64(obj + super::super::layout::tp::FLAGS)
                        .is_some_and(|f| f & super::super::layout::flags::HEAPTYPE != 0);
                    if heap {
                        (mem.ptr(obj + super::super::layout::tp::DICT), t.addr)
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
            // (The lowest position wins: a thread walking backward meets
            // the later claimants first.)
            let e = self.owners.entry(d).or_insert((seq, owner));
            if seq < e.0 {
                *e = (seq, owner);
            }
        }
    }

    /// Decodes `obj`'s referents; the untracked ones not seen yet are
    /// counted and queued.
    fn follow(&mut self, obj: u64, ti: u32) {
        let t = self.types.info(ti);
        if !t.holds_refs() {
            return;
        }
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        let mut over = 0u64;
        decode(&self.mem, self.it, t, obj, &mut |p, s| {
            if p == 0 || !p.is_multiple_of(8) {
                return;
            }
            if found.len() as u64 >= MAX_ITEMS {
                over += 1;
                return;
            }
            found.push(p | u64::from(s));
        });
        self.skipped += over;
        for &w in &found {
            let (p, scanned) = (w & !1, w & 1 != 0);
            // (An address that is no object stays in `seen`: it never
            // becomes one. A scanned word is checked first: the stricter
            // test may reject what a decoded reference would count.)
            let pi = if scanned {
                match plausible(&self.mem, self.it, &mut self.types, p, true) {
                    Some(pi) if self.seen.insert(p, &mut self.hint) => Some(pi),
                    _ => continue,
                }
            } else if self.seen.insert(p, &mut self.hint) {
                plausible(&self.mem, self.it, &mut self.types, p, false)
            } else {
                continue;
            };
            if let Some(pi) = pi {
                // A tracked object is counted where the walk finds it.
                if is_tracked(&self.mem, self.it, self.types.info(pi), p) {
                    continue;
                }
                if self.stack.len() >= MAX_OBJECTS {
                    self.skipped += 1;
                    continue;
                }
                self.count(p, pi, false);
                // (Leaves hold nothing to follow: not queued.)
                if self.types.info(pi).holds_refs() {
                    self.stack.push((p, pi));
                }
            }
        }
        self.found = found;
    }
}

/// Whether the collector tracks `obj` (of type `t`), from its GC header: a
/// tracked object is on a generation list. Static type objects have no
/// header.
pub(super) fn is_tracked(mem: &Mem, it: &Interpreter, t: &TypeInfo, obj: u64) -> bool {
    if !t.gc() {
        return false;
    }
    if t.kind == Kind::Type
        && mem
            .u64(obj + super::super::layout::tp::FLAGS)
            .is_none_or(|f| f & super::super::layout::flags::HEAPTYPE == 0)
    {
        return false;
    }
    // 3.8+: `_gc_next` is NULL when untracked. Up to 3.7, `gc_refs` (the
    // header's last word) is -2, shifted left by one on 3.6 and 3.7.
    let Some(w) = mem.i64(obj.wrapping_sub(16)) else {
        return false;
    };
    match (it.layout.major, it.layout.minor) {
        (2, _) => w != -2,
        (3, 6) | (3, 7) => w >> 1 != -2,
        _ => w != 0,
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
