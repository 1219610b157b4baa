//! Walking the collector's generation lists (and the permanent generation)
//! with every node checked: aligned, readable, a valid type; a walk stops at
//! an unreadable link, a cycle that misses the head (Brent's algorithm: no
//! memory per node), a run of nodes that are no objects, or a bound on
//! steps, and reports what it skipped.
//!
//! [`Walker`] hands out one object at a time, so that the census can decode
//! each object while its memory is still in the cache; [`walk`] collects
//! them all. [`Walker::backward`] walks the same sequence from its other
//! end, through the `prev` links, so that two threads can each take one end
//! and meet in the middle (a linked list admits no other split).

use super::error::HeapError;
use super::mem::Mem;
use super::roots::Interpreter;
use super::types::Types;

/// Most nodes walked in all (a torn list cannot make a walk unbounded;
/// 2 GiB of addresses at most).
pub const MAX_NODES: u64 = 1 << 28;

/// Invalid nodes in a row after which the rest of a list is given up (it
/// has left the heap: torn or garbage).
const MAX_BAD_RUN: u64 = 64;

#[derive(Debug, Default)]
pub struct Walked {
    /// Objects on the generation lists (what `gc.get_objects()` lists).
    pub tracked: Vec<u64>,
    /// The type index (in the walk's [`Types`]) of each of `tracked`.
    pub tracked_types: Vec<u32>,
    /// Objects in the permanent generation (`gc.freeze()`; not listed).
    pub permanent: Vec<u64>,
    /// Nodes whose object did not validate (left out).
    pub skipped: u64,
    /// The collector was running when memory was read.
    pub collecting: bool,
    pub warnings: Vec<String>,
}

/// One object found on a list.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub obj: u64,
    pub ty: u32,
    /// In the permanent generation (`gc.get_objects()` leaves it out).
    pub permanent: bool,
}

/// A walk in progress over every list of every interpreter.
pub struct Walker {
    /// (head, permanent) still to walk, last first.
    lists: Vec<(u64, bool)>,
    cur: Option<List>,
    budget: u64,
    /// Offset in a `PyGC_Head` of the link followed: `_gc_next` (0), or
    /// `_gc_prev` (8) walking backward. Both carry flags in their low two
    /// bits on 3.8+.
    link: u64,
    pub skipped: u64,
    pub collecting: bool,
    /// Walking backward, a link whose reverse does not lead back (`prev`
    /// of a node whose `next` is another): the walk stopped there.
    pub inconsistent: bool,
    pub warnings: Vec<String>,
}

struct List {
    head: u64,
    permanent: bool,
    n: u64,
    tortoise: u64,
    power: u64,
    lam: u64,
    bad_run: u64,
}

impl Walker {
    pub fn new(mem: &Mem, it: &Interpreter) -> Walker {
        let mut lists = Vec::new();
        let mut collecting = false;
        for gc in &it.gcs {
            if let Some(c) = gc.collecting
                && mem.u32(c).is_some_and(|v| v != 0)
            {
                collecting = true;
            }
            lists.extend(gc.heads.iter().map(|h| (*h, false)));
            lists.extend(gc.permanent.map(|p| (p, true)));
        }
        lists.reverse();
        Walker {
            lists,
            cur: None,
            budget: MAX_NODES,
            link: 0,
            skipped: 0,
            collecting,
            inconsistent: false,
            warnings: Vec::new(),
        }
    }

    /// The same walk from its other end: the last list first, each from its
    /// last node to its first through the `prev` links. Every link taken is
    /// checked against its reverse (the node reached must have the one left
    /// as its `next`), so that what this walker sees is exactly what a
    /// forward walk would see; at the first mismatch it stops and sets
    /// `inconsistent`. Only for lists at rest: while the collector runs,
    /// 3.8+ keeps reference counts in `_gc_prev`.
    pub fn backward(mem: &Mem, it: &Interpreter) -> Walker {
        let mut w = Walker::new(mem, it);
        w.lists.reverse();
        w.link = 8;
        w
    }

    /// The link of node `n` that a walk from the other end follows, masked.
    fn reverse_link(link: u64, mem: &Mem, n: u64) -> Option<u64> {
        mem.u64(n + (8 - link)).map(|v| v & !3)
    }

    /// The next valid object, or None when every list is done.
    pub fn next(&mut self, mem: &Mem, it: &Interpreter, types: &mut Types) -> Option<Found> {
        loop {
            if self.cur.is_none() {
                let (head, permanent) = self.lists.pop()?;
                let Some(n) = mem.u64(head + self.link).map(|v| v & !3) else {
                    self.warnings.push(format!(
                        "the generation list at {head:#x} could not be read"
                    ));
                    continue;
                };
                if self.link != 0 && Self::reverse_link(self.link, mem, n) != Some(head) {
                    self.inconsistent = true;
                    self.lists.clear();
                    return None;
                }
                self.cur = Some(List {
                    head,
                    permanent,
                    n,
                    tortoise: head,
                    power: 1,
                    lam: 0,
                    bad_run: 0,
                });
            }
            match self.step(mem, it, types) {
                Step::Object(f) => return Some(f),
                Step::Skipped => {}
                Step::Done => self.cur = None,
            }
        }
    }

    fn step(&mut self, mem: &Mem, it: &Interpreter, types: &mut Types) -> Step {
        let Some(l) = self.cur.as_mut() else {
            return Step::Done;
        };
        let n = l.n;
        if n == l.head {
            return Step::Done;
        }
        if self.budget == 0 {
            self.warnings
                .push("the walk stopped at its bound on nodes".into());
            self.lists.clear();
            return Step::Done;
        }
        self.budget -= 1;
        if !super::mem::valid_ptr(n) {
            self.skipped += 1;
            self.warnings.push(format!(
                "a generation list is broken at {n:#x}; the rest of it was skipped"
            ));
            return Step::Done;
        }
        let obj = n + it.layout.gc_head;
        let ti = mem.u64(obj + 8).and_then(|ty| types.get(mem, it, ty));
        let Some(next) = mem.u64(n + self.link).map(|v| v & !3) else {
            self.skipped += 1;
            self.warnings.push(format!(
                "a generation list link at {n:#x} is unreadable; the rest of it was skipped"
            ));
            return Step::Done;
        };
        if self.link != 0 && Self::reverse_link(self.link, mem, next) != Some(n) {
            self.inconsistent = true;
            self.lists.clear();
            return Step::Done;
        }
        if next == l.tortoise {
            self.warnings.push(
                "a generation list loops without returning to its head; the walk stopped there"
                    .into(),
            );
            // (This node is still valid.)
            l.n = l.head;
        } else {
            l.lam += 1;
            if l.lam == l.power {
                l.tortoise = n;
                l.power *= 2;
                l.lam = 0;
            }
            l.n = next;
            mem.prefetch(next);
        }
        match ti {
            Some(ty) => {
                l.bad_run = 0;
                Step::Object(Found {
                    obj,
                    ty,
                    permanent: l.permanent,
                })
            }
            None => {
                self.skipped += 1;
                l.bad_run += 1;
                if l.bad_run >= MAX_BAD_RUN {
                    self.warnings.push(format!(
                        "a generation list runs into memory that holds no objects at {n:#x}; the rest of it was skipped"
                    ));
                    return Step::Done;
                }
                Step::Skipped
            }
        }
    }

    /// The warnings of a finished walk (collector running, nodes skipped).
    pub fn finish(&mut self) -> Vec<String> {
        let mut w = std::mem::take(&mut self.warnings);
        if self.collecting {
            w.push(
                "the collector was running when the heap was read, so objects it was moving may be missing"
                    .into(),
            );
        }
        if self.skipped > 0 {
            w.push(format!(
                "{} list nodes did not look like objects and were skipped (a torn or corrupt heap)",
                self.skipped
            ));
        }
        w
    }
}

enum Step {
    Object(Found),
    Skipped,
    Done,
}

/// Walks every generation of every interpreter and lists the objects.
pub fn walk(mem: &Mem, it: &Interpreter, types: &mut Types) -> Result<Walked, HeapError> {
    let mut w = Walker::new(mem, it);
    let mut out = Walked::default();
    while let Some(f) = w.next(mem, it, types) {
        if f.permanent {
            out.permanent.push(f.obj);
        } else {
            out.tracked.push(f.obj);
            out.tracked_types.push(f.ty);
        }
    }
    out.skipped = w.skipped;
    out.collecting = w.collecting;
    out.warnings = w.finish();
    Ok(out)
}
