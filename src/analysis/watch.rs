//! Watching one process over a sliding window, for `memsleuth exporter`:
//! the samples (and, when the heap is read from outside, the censuses) of
//! the last few intervals, judged by doctor's rules after every sample.
//!
//! Why doctor's rules and not a simpler threshold: they already know which
//! growth is a leak and of what kind (a mapping taken again and again,
//! threads, fds, Python objects, garbage, native memory), and which growth
//! stopped during warm-up (the classifier's steadiness rule). The exporter
//! only adds what a long-running watcher needs:
//! * a bounded window: at most [`WINDOW_SAMPLES`] samples and
//!   [`WINDOW_CENSUSES`] censuses, the oldest dropped first, so memory is
//!   bounded by the number of processes and a leak that stopped is no
//!   longer flagged once it left the window; at start the window is simply
//!   shorter (three samples can already be judged steady);
//! * a flag needs two judgements in a row, so a single lucky window (a GC
//!   sawtooth whose ends happen to line up) does not flip it;
//! * without a census, steady anonymous growth cannot be told apart as
//!   Python objects or native memory; it is flagged `anonymous-memory`.
//!
//! Pure: the exporter samples, this decides, and tests feed it by hand.

use std::collections::BTreeSet;

use crate::analysis::census::{Census, growth_rows};
use crate::analysis::classify::Signal;
use crate::analysis::doctor::{self, Observation, PythonSide};
use crate::analysis::gcstate::GcBasics;
use crate::analysis::groups::{self, Category};
use crate::process::sample::Sample;

/// Samples kept per process (10 minutes at the default 15 s interval).
pub const WINDOW_SAMPLES: usize = 40;
/// Censuses kept per process.
pub const WINDOW_CENSUSES: usize = 12;
/// The flag kind for steady anonymous growth when no census says whose.
pub const ANONYMOUS_MEMORY: &str = "anonymous-memory";
/// The kinds the exporter can flag, in a fixed order.
pub const KINDS: [&str; 9] = [
    "python-objects",
    "uncollectable-garbage",
    "gc-disabled",
    "shared-memory-mappings",
    "file-mappings",
    "native-heap",
    "threads",
    "file-descriptors",
    ANONYMOUS_MEMORY,
];

/// One read of the heap from outside.
#[derive(Debug, Clone)]
pub struct HeapPoint {
    /// On the samples' time axis.
    pub t: f64,
    pub census: Census,
    pub gc: Option<GcBasics>,
}

/// What the window says now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// Kinds of steady leak, in [`KINDS`] order; empty when healthy.
    pub leaking: Vec<&'static str>,
    /// Robust slope of VmRSS over the window (Theil–Sen), bytes per second.
    pub growth_bytes_per_s: f64,
    pub window_s: f64,
    pub samples: usize,
}

/// The sliding window of one process.
#[derive(Debug, Default)]
pub struct Watch {
    samples: Vec<Sample>,
    heap: Vec<HeapPoint>,
    /// Kinds judged steady at the previous assessment.
    pending: BTreeSet<&'static str>,
    version: (u32, u32, u32),
}

impl Watch {
    pub fn new(version: (u32, u32, u32)) -> Watch {
        Watch {
            version,
            ..Watch::default()
        }
    }

    /// Adds a sample (times must not go backwards), dropping the oldest
    /// beyond [`WINDOW_SAMPLES`]. Mappings are kept only with the classifier
    /// in mind: the latest figures are read by [`Figures::of`] beforehand.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() >= WINDOW_SAMPLES {
            self.samples.remove(0);
        }
        self.samples.push(sample);
    }

    pub fn push_heap(&mut self, point: HeapPoint) {
        if self.heap.len() >= WINDOW_CENSUSES {
            self.heap.remove(0);
        }
        self.heap.push(point);
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn heap(&self) -> &[HeapPoint] {
        &self.heap
    }

    /// Judges the window (call once per new sample).
    pub fn assess(&mut self, pid: u32) -> Assessment {
        let python = self.python_side();
        let has_census = python.is_some();
        let obs = Observation {
            pid,
            samples: std::mem::take(&mut self.samples),
            python,
            ..Observation::default()
        };
        let diagnosis = doctor::diagnose(&obs);
        self.samples = obs.samples;

        let mut steady: BTreeSet<&'static str> = diagnosis
            .findings
            .iter()
            .filter(|f| !f.informational && f.steady)
            .map(|f| f.kind.name())
            .collect();
        if !has_census && anonymous_unexplained(&diagnosis.signals) {
            steady.insert(ANONYMOUS_MEMORY);
        }
        let leaking = KINDS
            .iter()
            .copied()
            .filter(|k| steady.contains(k) && self.pending.contains(k))
            .collect();
        self.pending = steady;

        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.t, s.status.vm_rss as f64))
            .collect();
        Assessment {
            leaking,
            growth_bytes_per_s: theil_sen(&points),
            window_s: match (self.samples.first(), self.samples.last()) {
                (Some(a), Some(b)) => (b.t - a.t).max(0.0),
                _ => 0.0,
            },
            samples: self.samples.len(),
        }
    }

    /// Doctor's view of the censuses in the window (two or more).
    fn python_side(&self) -> Option<PythonSide> {
        if self.heap.len() < 2 {
            return None;
        }
        let censuses: Vec<&Census> = self.heap.iter().map(|h| &h.census).collect();
        Some(PythonSide {
            version: self.version,
            census_times: self.heap.iter().map(|h| h.t).collect(),
            rows: growth_rows(&censuses),
            census_bytes: self.heap.iter().map(|h| h.census.size).collect(),
            gc_only: self.heap.iter().any(|h| h.census.gc_only),
            gc: self
                .heap
                .iter()
                .filter_map(|h| Some((h.t, h.gc.clone()?)))
                .collect(),
            ..PythonSide::default()
        })
    }

    /// The `n` types whose count grew most over the censuses in the window
    /// (then the largest by size), with their latest count and bytes.
    pub fn top_types(&self, n: usize) -> Vec<(String, u64, u64)> {
        let Some(last) = self.heap.last() else {
            return Vec::new();
        };
        let first: std::collections::HashMap<&str, u64> = self.heap[0]
            .census
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.count))
            .collect();
        let mut rows: Vec<(i128, u64, &str, u64)> = last
            .census
            .rows
            .iter()
            .map(|r| {
                let before = first.get(r.name.as_str()).copied().unwrap_or(0);
                (
                    r.count as i128 - before as i128,
                    r.size,
                    r.name.as_str(),
                    r.count,
                )
            })
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
        rows.into_iter()
            .take(n)
            .map(|(_, size, name, count)| (name.to_string(), count, size))
            .collect()
    }
}

/// Steady anonymous growth that new threads do not explain (doctor's
/// note "Python objects and native memory cannot be told apart").
fn anonymous_unexplained(signals: &[Signal]) -> bool {
    let Some((anon, steady)) = signals.iter().find_map(|s| match s {
        Signal::AnonGrowth {
            rss_anon, window, ..
        } => Some((rss_anon.delta.max(0), window.steady)),
        _ => None,
    }) else {
        return false;
    };
    let threads = signals
        .iter()
        .find_map(|s| match s {
            Signal::ThreadGrowth { threads, .. } => Some(threads.delta.max(0)),
            _ => None,
        })
        .unwrap_or(0);
    let thread_rss = threads.saturating_mul(doctor::THREAD_ALLOWANCE as i64);
    steady && thread_rss < anon / 2
}

/// Median of the pairwise slopes (robust to a GC sawtooth and to one odd
/// sample); 0 with fewer than two usable points.
pub fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.0 - a.0;
            if dt > 0.0 && dt.is_finite() {
                let s = (b.1 - a.1) / dt;
                if s.is_finite() {
                    slopes.push(s);
                }
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let m = slopes.len() / 2;
    if slopes.len() % 2 == 1 {
        slopes[m]
    } else {
        (slopes[m - 1] + slopes[m]) / 2.0
    }
}

/// The figures of one sample the exporter publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub pss: Option<u64>,
    pub swap: u64,
    pub vm_size: u64,
    pub threads: u32,
    pub fds: Option<u64>,
    /// Per category (as `maps` groups them): mappings and address space.
    pub categories: Vec<(&'static str, u64, u64)>,
    /// The most separate times one file or shared-memory object is mapped
    /// (1: nothing is mapped twice); None without maps.
    pub max_instances: Option<u64>,
}

impl Figures {
    pub fn of(s: &Sample) -> Figures {
        let mut categories: Vec<(&'static str, u64, u64)> = Vec::new();
        let mut max_instances = None;
        if let Some(maps) = &s.mappings {
            let mut max = 0u64;
            for g in groups::group(maps) {
                let name = category_name(g.category);
                match categories.iter_mut().find(|c| c.0 == name) {
                    Some(c) => {
                        c.1 += g.mappings as u64;
                        c.2 = c.2.saturating_add(g.size);
                    }
                    None => categories.push((name, g.mappings as u64, g.size)),
                }
                if g.backing.is_object() {
                    max = max.max(g.instances as u64);
                }
            }
            categories.sort_by_key(|c| c.0);
            max_instances = Some(max.max(1));
        }
        Figures {
            rss: s.status.vm_rss,
            rss_anon: s.status.rss_anon,
            rss_file: s.status.rss_file,
            rss_shmem: s.status.rss_shmem,
            pss: s.rollup.map(|r| r.pss),
            swap: s.status.vm_swap,
            vm_size: s.status.vm_size,
            threads: s.threads,
            fds: s.fd_count,
            categories,
            max_instances,
        }
    }
}

/// Stable label values for mapping categories.
pub fn category_name(c: Category) -> &'static str {
    match c {
        Category::SharedMemory => "shared_memory",
        Category::File => "file",
        Category::DeletedFile => "deleted_file",
        Category::Heap => "heap",
        Category::Stack => "stack",
        Category::ThreadStacks => "thread_stacks",
        Category::Arenas => "arenas",
        Category::Anonymous => "anonymous",
        Category::Kernel => "kernel",
    }
}

#[cfg(test)]
mod tests;
