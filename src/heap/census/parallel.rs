//! The census on several threads. Two threads walk the collector's lists
//! from both ends, one forward through the `next` links and one backward
//! through the `prev` links, and meet in the middle: each decodes what it
//! walks while that is still in its cache, and whichever is faster simply
//! walks further. More threads take batches from the two. Lists that
//! cannot be checked to be what a forward walk sees (the collector
//! running, a torn or corrupt list) are walked by one thread that hands
//! the objects out instead, which gives the same result as one thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::super::error::HeapError;
use super::super::mem::Mem;
use super::super::roots::Interpreter;
use super::super::space::AddressSpace;
use super::super::types::Types;
use super::super::visited::{RangeCache, SharedVisited};
use super::super::walk::Walker;
use super::counter::{Counter, Partial};
use super::{CensusOptions, HeapCensus, Listing, census, conclude};

/// Objects handed to a census thread at a time.
const BATCH: usize = 2048;

/// Largest visited bitmap faulted in before the threads start (covering
/// 4 GiB of copied memory; see [`SharedVisited::prefault`]).
const PREFAULT_BYTES: usize = 64 << 20;

/// Walk positions of the backward walker count down from here, so that
/// they sort after the forward walker's and among themselves as a forward
/// walk would number them.
const BACKWARD_SEQ: u64 = 1 << 62;

/// [`census`] on `threads` threads: the same result (counts, sizes,
/// owners, skips and warnings).
pub fn census_parallel(
    space: &(dyn AddressSpace + Sync),
    interp: &Interpreter,
    opts: &CensusOptions,
    threads: usize,
) -> Result<HeapCensus, HeapError> {
    if threads <= 1 {
        return census(space, interp, opts);
    }
    if let Some(hc) = from_both_ends(space, interp, opts, threads)? {
        return Ok(hc);
    }
    // (Counting what is on the lists alone is cheaper than handing it out.)
    if opts.gc_only {
        return census(space, interp, opts);
    }
    one_walker(space, interp, opts, threads)
}

/// What one end of the walk did.
struct End {
    walker: Walker,
    part: Partial,
    listed: u64,
    frozen: u64,
    /// The last node this end claimed (the one nearest the middle).
    last: Option<u64>,
    /// The node it found claimed by the other end, where it stopped.
    stop: Option<u64>,
}

/// The census with the lists walked from both ends; None when the two
/// walks cannot be checked to add up to the forward walk (then nothing of
/// this attempt is kept).
///
/// Each end claims the nodes it walks in a bitmap the two share, and
/// stops at the first node already claimed. On lists at rest they meet once, at
/// adjacent nodes: the forward end stops at the backward end's last node,
/// and the other way round. The backward walker checks every link against
/// its reverse, so its part is exactly the tail of the forward walk. Any
/// other ending (a node on two lists, a loop, a torn link, a skipped node)
/// gives None.
fn from_both_ends(
    space: &(dyn AddressSpace + Sync),
    interp: &Interpreter,
    opts: &CensusOptions,
    threads: usize,
) -> Result<Option<HeapCensus>, HeapError> {
    let started = Instant::now();
    let mem = Mem::new(space);
    let forward = Walker::new(&mem, interp);
    if forward.collecting {
        // (3.8+ keeps reference counts in `_gc_prev` while it collects.)
        return Ok(None);
    }
    let backward = Walker::backward(&mem, interp);
    let seen = SharedVisited::new(&space.ranges());
    let claims = SharedVisited::new(&space.ranges());
    let handout = Handout::default();
    let helpers = threads.saturating_sub(2);
    let walking = AtomicUsize::new(2);
    let both = std::sync::Barrier::new(2);
    let end = |mut walker: Walker, forward: bool| -> End {
        let closer = (helpers > 0).then(|| Closer {
            handout: &handout,
            walking: &walking,
        });
        let mut c = Counter::new(space, interp, &seen, opts.keep_ids);
        let mut hint = RangeCache::default();
        let (mut listed, mut frozen, mut last, mut stop) = (0u64, 0u64, None, None);
        let mut batch = Vec::new();
        while let Some(f) = walker.next(&c.mem, interp, &mut c.types) {
            let node = f.obj.wrapping_sub(interp.layout.gc_head);
            if !claims.insert(node, &mut hint) {
                stop = Some(node);
                break;
            }
            last = Some(node);
            if f.permanent {
                frozen += 1;
                continue;
            }
            listed += 1;
            let seq = if forward {
                listed
            } else {
                BACKWARD_SEQ - listed
            };
            if helpers == 0 {
                c.tracked(seq, f.obj, f.ty, opts.gc_only);
            } else {
                batch.push((seq, f.obj, c.types.info(f.ty).addr));
                if batch.len() == BATCH {
                    handout.push(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                }
            }
        }
        if let Some(closer) = closer {
            handout.push(batch);
            drop(closer);
            drain(&mut c, &handout, interp, opts);
        }
        End {
            walker,
            part: c.into_partial(),
            listed,
            frozen,
            last,
            stop,
        }
    };
    std::thread::scope(|s| {
        let helped: Vec<_> = (0..helpers)
            .map(|_| s.spawn(|| helper(space, interp, &seen, &handout, opts)))
            .collect();
        // Each end faults one of the two bitmaps in, then both start.
        let back = s.spawn(|| {
            claims.prefault(PREFAULT_BYTES);
            both.wait();
            end(backward, false)
        });
        seen.prefault(PREFAULT_BYTES);
        both.wait();
        let front = end(forward, true);
        let back = back.join();
        let mut helpers_part = Partial::default();
        absorb_helpers(&mut helpers_part, helped);
        let Ok(back) = back else {
            return Ok(None);
        };
        let clean = |w: &Walker| w.skipped == 0 && w.warnings.is_empty() && !w.inconsistent;
        let met = front.stop == back.last && back.stop == front.last;
        if !(met && clean(&front.walker) && clean(&back.walker)) {
            return Ok(None);
        }
        let mut part = front.part;
        part.absorb(back.part);
        part.absorb(helpers_part);
        let counts = (front.listed + back.listed, front.frozen + back.frozen, 0);
        let mut hc = conclude(&mem, interp, opts, front.walker, part, counts, started)?;
        hc.walkers = 2;
        Ok(Some(hc))
    })
}

/// One thread walks the lists (checking them as [`census`] does) and hands
/// the tracked objects out in batches; the others follow what they hold
/// meanwhile, and the walker joins them when its walk is done.
fn one_walker(
    space: &(dyn AddressSpace + Sync),
    interp: &Interpreter,
    opts: &CensusOptions,
    threads: usize,
) -> Result<HeapCensus, HeapError> {
    let started = Instant::now();
    let seen = SharedVisited::new(&space.ranges());
    seen.prefault(PREFAULT_BYTES);
    let handout = Handout::default();
    let walking = AtomicUsize::new(1);
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| s.spawn(|| helper(space, interp, &seen, &handout, opts)))
            .collect();
        let closer = Closer {
            handout: &handout,
            walking: &walking,
        };
        let mem = Mem::new(space);
        let mut types = Types::new();
        let mut listing = Listing::new(&mem, interp);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some((seq, obj, ty)) = listing.next(&mem, interp, &mut types) {
            batch.push((seq, obj, types.info(ty).addr));
            if batch.len() == BATCH {
                handout.push(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
            }
        }
        handout.push(batch);
        drop(closer);
        let mut part = helper(space, interp, &seen, &handout, opts);
        absorb_helpers(&mut part, helpers);
        listing.conclude(&mem, interp, opts, part, started)
    })
}

/// A census thread that only takes batches: what it counted.
fn helper(
    space: &dyn AddressSpace,
    interp: &Interpreter,
    seen: &SharedVisited,
    handout: &Handout,
    opts: &CensusOptions,
) -> Partial {
    let mut c = Counter::new(space, interp, seen, opts.keep_ids);
    drain(&mut c, handout, interp, opts);
    c.into_partial()
}

/// Joins the helper threads into `part`. A helper that panicked loses its
/// share: counted as skipped.
fn absorb_helpers(part: &mut Partial, helpers: Vec<std::thread::ScopedJoinHandle<'_, Partial>>) {
    for h in helpers {
        match h.join() {
            Ok(p) => part.absorb(p),
            Err(_) => part.skipped += 1,
        }
    }
}

/// Counts the batches handed out until the queue is closed and empty.
fn drain(c: &mut Counter, handout: &Handout, interp: &Interpreter, opts: &CensusOptions) {
    while let Some(batch) = handout.take() {
        for (seq, obj, tid) in batch {
            match c.types.get(&c.mem, interp, tid) {
                Some(ti) => c.tracked(seq, obj, ti, opts.gc_only),
                None => c.skipped += 1,
            }
        }
    }
}

/// A walking thread's part in closing the queue: the last walker to be
/// done (or to unwind) closes it, so that the threads waiting on it end.
struct Closer<'a> {
    handout: &'a Handout,
    walking: &'a AtomicUsize,
}

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        if self.walking.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.handout.close();
        }
    }
}

/// (walk position, object, type address) of tracked objects.
type Batch = Vec<(u64, u64, u64)>;

/// Batches handed from the walking threads to the census threads: a queue
/// locked only to push or pop (never while waiting), so a thread that is
/// descheduled cannot hold the others up.
#[derive(Default)]
struct Handout {
    queue: std::sync::Mutex<(std::collections::VecDeque<Batch>, bool)>,
    ready: std::sync::Condvar,
}

impl Handout {
    fn lock(&self) -> std::sync::MutexGuard<'_, (std::collections::VecDeque<Batch>, bool)> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, b: Batch) {
        self.lock().0.push_back(b);
        self.ready.notify_one();
    }

    /// No more batches: waiting threads finish.
    fn close(&self) {
        self.lock().1 = true;
        self.ready.notify_all();
    }

    /// The next batch; None once closed and empty.
    fn take(&self) -> Option<Batch> {
        let mut q = self.lock();
        loop {
            if let Some(b) = q.0.pop_front() {
                return Some(b);
            }
            if q.1 {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}
