//! Doctor from outside: the censuses and the collector reads straight from
//! the target's memory with the heap reader (`crate::heap`), no code of ours
//! in the target. The agent is then only needed for what needs the
//! interpreter (the retainer walk, `--allow-collect`, the allocators'
//! figures, thread names and stacks, reprs and what sampled objects hold),
//! and a process stuck in C with the GIL held still gets its heap censused.
//!
//! Each census pauses the target's threads (PTRACE_SEIZE + INTERRUPT) only
//! for the copy of the memory that can hold Python objects, then decodes
//! the copy after they resume. Thread stacks hold none and are not copied:
//! a process with hundreds of threads would otherwise cost a copy of 8 MiB
//! per thread. What is read from outside costs the target no GIL at all,
//! so censuses are complete (str, int, ... counted through their holders).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::observe::{GC_EVERY, MAX_CENSUSES, wait_until};
use crate::analysis::census::Census;
use crate::analysis::doctor::PythonSide;
use crate::analysis::doctor::rates::is_thread_stack;
pub use crate::analysis::doctor::report::OutsideStats;
use crate::analysis::gcstate::{GarbageScan, GarbageTypeRaw, GcBasics};
use crate::heap::space::{CopiedRegions, LiveLazy};
use crate::heap::{CensusOptions, Interpreter};
use crate::process::Process;
use crate::process::freeze::Freeze;
use crate::process::memory::{Chunk, read_chunks_parallel};

/// Most bytes one census copies (the rest is read lazily, unpaused).
const MAX_COPY: u64 = 2 << 30;
/// Copies retried when one caught a collection in progress.
const COLLECTING_RETRIES: u32 = 3;
/// A page: buffers are touched once per page before the pause.
const PAGE: usize = 4096;
/// `gc.DEBUG_*` bits by name, in the agent's order.
const DEBUG_FLAGS: [(&str, u32); 6] = [
    ("DEBUG_STATS", 1),
    ("DEBUG_COLLECTABLE", 2),
    ("DEBUG_UNCOLLECTABLE", 4),
    ("DEBUG_INSTANCES", 8),
    ("DEBUG_OBJECTS", 16),
    ("DEBUG_SAVEALL", 32),
];

/// A target whose heap can be read from outside.
pub struct Outside {
    pid: u32,
    interp: Interpreter,
    /// Census the collector's lists only. With the agent attached doctor
    /// does: the agent then measures what sampled new objects hold through
    /// `gc.get_referents` (a frame's locals on 3.11+ live in data the
    /// reader does not follow), exactly as with its own gc-only censuses.
    pub gc_only: bool,
    pub stats: OutsideStats,
}

/// Copied mappings: (start, bytes), by start.
type Regions = Vec<(u64, Vec<u8>)>;

/// The copied memory of one census; reads outside it go to the live
/// process (type names in read-only data, a mapping that appeared).
type HeapCopy = CopiedRegions;

impl Outside {
    /// Finds the interpreter's state in `pid`'s memory; the error is one
    /// sentence (not a Python process, an unsupported build, ...).
    pub fn open(pid: u32) -> anyhow::Result<Outside> {
        let proc = Process::open(pid)?;
        let maps = proc.maps()?;
        let py = crate::python::detect(&proc, &maps)?
            .ok_or_else(|| anyhow::anyhow!("process {pid} is not a Python process"))?;
        let interp = crate::heap::locate_running(&LiveLazy { pid }, &py)?;
        Ok(Outside {
            pid,
            interp,
            gc_only: false,
            stats: OutsideStats::default(),
        })
    }

    pub fn version(&self) -> (u32, u32, u32) {
        let v = &self.interp.version;
        (u32::from(v.major), u32::from(v.minor), u32::from(v.micro))
    }

    /// The mappings a census copies: writable ones that can hold Python
    /// objects, not thread stacks, at most MAX_COPY bytes (the rest is
    /// read lazily).
    fn plan(&self, sps: &[u64]) -> anyhow::Result<Vec<(u64, u64)>> {
        let maps = Process::unchecked(self.pid).maps()?;
        let mut ranges = Vec::new();
        let mut total = 0u64;
        for (i, m) in maps.iter().enumerate() {
            if !crate::heap::snapshot::wanted(m) || is_thread_stack(&maps, i, sps) {
                continue;
            }
            if total + m.size() > MAX_COPY {
                continue;
            }
            total += m.size();
            ranges.push((m.start, m.end));
        }
        Ok(ranges)
    }

    /// Copies what can hold Python objects while the threads are paused.
    /// Buffers are allocated and faulted in before the pause; the maps are
    /// read again during it (the heap of a growing process has grown since),
    /// and only what changed gets a buffer then.
    fn copy(&mut self) -> anyhow::Result<HeapCopy> {
        let pid = self.pid;
        let sps = super::observe::stack_pointers(pid);
        let mut spare: std::collections::HashMap<u64, Vec<u8>> = self
            .plan(&sps)?
            .into_iter()
            .map(|(a, b)| {
                let mut v = vec![0u8; (b - a) as usize];
                for p in v.iter_mut().step_by(PAGE) {
                    *p = 1;
                }
                (a, v)
            })
            .collect();
        let freeze = Freeze::pause(pid)?;
        let copied = (|| -> anyhow::Result<(Regions, u64)> {
            let now = self.plan(&sps)?;
            let mut bufs: Vec<(u64, Vec<u8>)> = now
                .iter()
                .map(|&(a, b)| {
                    let len = (b - a) as usize;
                    let mut v = spare.remove(&a).unwrap_or_default();
                    v.resize(len, 0);
                    (a, v)
                })
                .collect();
            let mut chunks: Vec<Chunk> = bufs.iter_mut().map(|(a, v)| Chunk::new(*a, v)).collect();
            read_chunks_parallel(pid, &mut chunks, crate::heap::threads())?;
            let filled: Vec<usize> = chunks.iter().map(|c| c.filled).collect();
            drop(chunks);
            let mut total = 0u64;
            for ((_, v), n) in bufs.iter_mut().zip(filled) {
                v.truncate(n);
                total += n as u64;
            }
            Ok((bufs, total))
        })();
        // Resumed on every path (dropping the freeze resumes too).
        let paused = freeze.resume().as_secs_f64();
        let (regions, total) = copied?;
        self.stats.paused_s += paused;
        self.stats.max_pause_s = self.stats.max_pause_s.max(paused);
        self.stats.copied_bytes = self.stats.copied_bytes.max(total);
        Ok(CopiedRegions::new(pid, regions))
    }

    /// One census (complete unless `gc_only`), with object ids (for
    /// sampling new ones).
    /// A copy that caught a collection in progress (objects then sit on
    /// the collector's private lists) is taken again after letting the
    /// target run briefly, up to COLLECTING_RETRIES times.
    pub fn census(&mut self) -> anyhow::Result<Census> {
        let mut tries = 0;
        let hc = loop {
            let copy = self.copy()?;
            let t = Instant::now();
            let hc = crate::heap::census_parallel(
                &copy,
                &self.interp,
                &CensusOptions {
                    gc_only: self.gc_only,
                    keep_ids: true,
                },
                crate::heap::threads(),
            )?;
            self.stats.walk_s += t.elapsed().as_secs_f64();
            // A size read from memory that changed under us must not pass
            // for growth: no census is larger than what is mapped.
            let mapped = Process::unchecked(self.pid)
                .status()
                .map(|st| st.vm_size)
                .unwrap_or(u64::MAX);
            if hc.census.size > mapped {
                anyhow::bail!(
                    "the census read {} bytes of objects in a process that maps {mapped}: a torn \
                     read, left out",
                    hc.census.size
                );
            }
            tries += 1;
            if !hc.collecting || tries > COLLECTING_RETRIES {
                break hc;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stats.censuses += 1;
        self.stats.skipped_objects += hc.skipped;
        for w in hc.warnings {
            if self.stats.warnings.len() < 10 && !self.stats.warnings.contains(&w) {
                self.stats.warnings.push(w);
            }
        }
        Ok(hc.census)
    }

    fn reading(&self) -> Option<crate::heap::gcstate::GcReading> {
        crate::heap::gcstate::read(&LiveLazy { pid: self.pid }, &self.interp).ok()
    }

    /// The collector's counters as the agent's `gc_sample` gives them, when
    /// memory holds all of them (not on 2.7 and 3.6, whose enabled flag is
    /// static data without a symbol).
    pub fn gc(&mut self) -> Option<GcBasics> {
        let r = self.reading()?;
        let (enabled, debug, garbage_len) = (r.enabled?, r.debug?, r.garbage_len?);
        self.stats.gc_reads += 1;
        Some(GcBasics {
            enabled,
            thresholds: r.thresholds.iter().map(|&v| i64::from(v)).collect(),
            count: r.counts.iter().map(|&v| i64::from(v)).collect(),
            debug: u64::from(debug),
            debug_flags: DEBUG_FLAGS
                .iter()
                .filter(|(_, bit)| debug & bit == *bit)
                .map(|(n, _)| n.to_string())
                .collect(),
            saveall: debug & crate::heap::gcstate::DEBUG_SAVEALL != 0,
            garbage_len,
            ..GcBasics::default()
        })
    }

    /// `gc.garbage` by type (names and counts; whether a class defines
    /// `__del__` needs the interpreter).
    pub fn garbage(&mut self) -> Option<GarbageScan> {
        let r = self.reading()?;
        let len = r.garbage_len?;
        let types = r.garbage_types.len() as u64;
        let mut by_type: Vec<GarbageTypeRaw> = r
            .garbage_types
            .into_iter()
            .map(|(type_name, count)| GarbageTypeRaw {
                type_name,
                count,
                ..GarbageTypeRaw::default()
            })
            .collect();
        let other = by_type.iter().skip(20).map(|t| t.count).sum();
        by_type.truncate(20);
        Some(GarbageScan {
            len,
            scanned: len,
            types,
            other,
            by_type,
        })
    }
}

/// The window from outside: MAX_CENSUSES complete censuses spread evenly up
/// to just before `end`, the collector's counters every GC_EVERY seconds
/// (through `gc_fallback`, the agent, where memory does not hold them all).
/// A census that fails (the copy or the walk) is left out with a warning.
/// Returns the censuses and their times (on the samples' axis).
pub fn window(
    o: &mut Outside,
    t0: Instant,
    end: Instant,
    done: &AtomicUsize,
    py: &mut PythonSide,
    gc_fallback: &mut dyn FnMut(&mut PythonSide) -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<Census>, Vec<f64>)> {
    let since = |at: Instant| at.saturating_duration_since(t0).as_secs_f64();
    let mut gc = |o: &mut Outside, py: &mut PythonSide| -> anyhow::Result<()> {
        let t = since(Instant::now());
        match o.gc() {
            Some(b) => {
                py.gc.push((t, b));
                Ok(())
            }
            None => gc_fallback(py),
        }
    };
    let mut censuses = Vec::new();
    let mut times = Vec::new();
    let take = |o: &mut Outside, censuses: &mut Vec<Census>, times: &mut Vec<f64>| {
        let t = since(Instant::now());
        match o.census() {
            Ok(c) => {
                // Only the first and the latest keep their ids.
                if censuses.len() >= 2
                    && let Some(prev) = censuses.last_mut()
                {
                    let prev: &mut Census = prev;
                    prev.ids = None;
                }
                censuses.push(c);
                times.push(t);
                done.store(censuses.len(), Ordering::Relaxed);
            }
            Err(e) => {
                let w = format!(
                    "a census from memory failed: {}",
                    crate::commands::error_sentence(&e)
                );
                if o.stats.warnings.len() < 10 && !o.stats.warnings.contains(&w) {
                    o.stats.warnings.push(w);
                }
            }
        }
    };
    gc(o, py)?;
    take(o, &mut censuses, &mut times);
    // Nothing of ours is in the target's memory from outside; with an
    // agent attached, its memory was in place before this.
    py.settled_t = since(Instant::now());
    let first_t = Instant::now();
    let last_at = end
        .checked_sub(Duration::from_millis(300))
        .unwrap_or(end)
        .max(first_t);
    let span = last_at.saturating_duration_since(first_t);
    let later = MAX_CENSUSES - 1;
    let census_at: Vec<Instant> = (1..=later)
        .map(|k| first_t + span.mul_f64(k as f64 / later as f64))
        .collect();
    let mut next_gc = Instant::now() + Duration::from_secs_f64(GC_EVERY);
    for at in census_at {
        while next_gc < at && next_gc < last_at {
            wait_until(next_gc);
            gc(o, py)?;
            next_gc += Duration::from_secs_f64(GC_EVERY);
        }
        wait_until(at);
        take(o, &mut censuses, &mut times);
    }
    wait_until(last_at);
    Ok((censuses, times))
}

/// The Python side from outside alone, when the agent cannot attach (the
/// GIL held in C, injection refused): censuses, the collector and
/// `gc.garbage` by type; thread names, allocators and retainer paths are
/// left out (the caller says why).
pub fn alone(
    o: &mut Outside,
    t0: Instant,
    end: Instant,
    done: &AtomicUsize,
) -> anyhow::Result<PythonSide> {
    let mut py = PythonSide {
        version: o.version(),
        gc_only: false,
        ..Default::default()
    };
    let (censuses, times) = window(o, t0, end, done, &mut py, &mut |_| Ok(()))?;
    py.closing_t = t0.elapsed().as_secs_f64();
    if let Some(b) = o.gc() {
        py.gc.push((py.closing_t, b));
    }
    if py.gc.last().is_some_and(|(_, b)| b.garbage_len > 0) {
        py.garbage = o.garbage();
    }
    let refs: Vec<&Census> = censuses.iter().collect();
    py.rows = crate::analysis::census::growth_rows(&refs);
    py.census_bytes = censuses.iter().map(|c| c.size).collect();
    py.heap = censuses.last().map(crate::analysis::doctor::HeapTotals::of);
    py.census_times = times;
    Ok(py)
}
