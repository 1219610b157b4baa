//! The census on several threads: one walks the collector's lists and
//! hands the tracked objects out; all of them follow what those hold,
//! sharing only the visited set.

use std::time::Instant;

use super::super::error::HeapError;
use super::super::mem::Mem;
use super::super::roots::Interpreter;
use super::super::space::AddressSpace;
use super::super::types::Types;
use super::super::visited::SharedVisited;
use super::counter::{Counter, Partial};
use super::{CensusOptions, HeapCensus, Listing, census};

/// Objects handed to a census thread at a time.
const BATCH: usize = 2048;

/// [`census`] on `threads` threads: this thread walks the lists (a linked
/// list admits one walker) and hands the tracked objects out in batches;
/// the other threads follow what they hold meanwhile, and this one joins
/// them when the walk is done. They share only the visited set. Same
/// result as [`census`] (counts, sizes, owners).
pub fn census_parallel(
    space: &(dyn AddressSpace + Sync),
    interp: &Interpreter,
    opts: &CensusOptions,
    threads: usize,
) -> Result<HeapCensus, HeapError> {
    // (Counting what is on the lists alone is cheaper than the threads.)
    if threads <= 1 || opts.gc_only {
        return census(space, interp, opts);
    }
    let started = Instant::now();
    let seen = SharedVisited::new(&space.ranges());
    let handout = Handout::default();
    let work = |space: &dyn AddressSpace| -> Partial {
        let mut c = Counter::new(space, interp, &seen, opts.keep_ids);
        while let Some(batch) = handout.take() {
            for (seq, obj, tid) in batch {
                match c.types.get(&c.mem, interp, tid) {
                    Some(ti) => c.tracked(seq, obj, ti, opts.gc_only),
                    None => c.skipped += 1,
                }
            }
        }
        c.into_partial()
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| s.spawn(|| work(space as &dyn AddressSpace)))
            .collect();
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
        handout.close();
        let mut part = work(space);
        for h in helpers {
            // A helper that panicked loses its share: counted as skipped.
            match h.join() {
                Ok(p) => part.absorb(p),
                Err(_) => part.skipped += 1,
            }
        }
        listing.conclude(&mem, interp, opts, part, started)
    })
}

/// (walk position, object, type address) of tracked objects.
type Batch = Vec<(u64, u64, u64)>;

/// Batches handed from the walking thread to the census threads: a queue
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
