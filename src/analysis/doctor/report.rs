//! The doctor's report: what `--json` prints (schema 1, documented in
//! `docs/doctor.schema.json`) and what the text and HTML renderers read.
//! Stable: fields are added, never renamed or removed.

use serde::Serialize;

use super::{Diagnosis, Finding, Observation, Skipped, Verdict, doubling_s, explained_rate};
use crate::analysis::classify::Signal;
use crate::analysis::gcstate::CollectRaw;

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub cmdline: String,
    pub exe: Option<String>,
    pub rss_bytes_start: u64,
    pub rss_bytes_end: u64,
    pub vm_size_bytes_end: u64,
    pub threads_end: u32,
    pub fds_end: Option<u64>,
    /// Sum of the leak findings' rates.
    pub growth_bytes_per_s: f64,
    /// Seconds until RSS doubles at the measured RSS slope (at
    /// growth_bytes_per_s when no slope was measured; null when not
    /// growing).
    pub doubling_s: Option<f64>,
    /// RSS slope (Theil–Sen) over the steady part of the window: the
    /// second half of the span between the agent's memory settling and the
    /// closing reads. Null with fewer than 3 samples there.
    pub rss_slope_bytes_per_s: Option<f64>,
    /// The part of the window the slope was measured on, seconds.
    pub rss_slope_window_s: Option<[f64; 2]>,
    /// growth_bytes_per_s / rss_slope_bytes_per_s: the share of the
    /// measured growth the findings explain (null unless RSS grows).
    pub explained_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PythonReport {
    /// "3.12.1".
    pub version: String,
    /// How memsleuth got in: "PEP 768 (...)", "ptrace ...".
    pub attach_method: String,
    pub attach_s: f64,
    /// Time the target spent in memsleuth's code (GIL held), and its share
    /// of the observation.
    pub gil_s: f64,
    pub gil_share: f64,
    /// gil_s by part: attach, threads, gc reads, censuses, reprs,
    /// gc.garbage, allocators, retainer paths, gc.collect.
    pub gil_by_part: std::collections::BTreeMap<String, f64>,
    pub censuses: usize,
    /// "complete" or "gc_only".
    pub census_mode: String,
    /// Longest single GIL hold of a census.
    pub census_max_hold_s: f64,
    pub gc_enabled: Option<bool>,
    pub garbage_len: Option<u64>,
    /// With --allow-collect: what one gc.collect() at the end freed.
    pub collect: Option<CollectRaw>,
    /// Where the censuses and the collector's counters came from: "memory"
    /// (read from outside, no code in the target) or "agent".
    pub source: String,
    /// What was read from outside, when the source is "memory".
    pub outside: Option<OutsideStats>,
    /// The heap at the last census (null without one).
    pub heap: Option<super::HeapTotals>,
}

/// What was read from outside over the window (the cost line says it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutsideStats {
    pub censuses: usize,
    pub gc_reads: usize,
    /// The target's threads were stopped this long in all...
    pub paused_s: f64,
    /// ...and at most this long at once.
    pub max_pause_s: f64,
    /// Largest copy, bytes.
    pub copied_bytes: u64,
    /// Decoding in memsleuth (the target runs meanwhile).
    pub walk_s: f64,
    /// Objects the reader rejected as invalid, over all censuses.
    pub skipped_objects: u64,
    pub warnings: Vec<String>,
}

/// /proc counters over the window, for charts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    pub t: Vec<f64>,
    pub rss: Vec<u64>,
    pub rss_anon: Vec<u64>,
    pub rss_file: Vec<u64>,
    pub rss_shmem: Vec<u64>,
    pub vm_size: Vec<u64>,
    pub swap: Vec<u64>,
    pub threads: Vec<u32>,
    pub fds: Vec<Option<u64>>,
}

impl Series {
    pub fn of(obs: &Observation) -> Series {
        let mut s = Series::default();
        for x in &obs.samples {
            s.t.push(x.t);
            s.rss.push(x.status.vm_rss);
            s.rss_anon.push(x.status.rss_anon);
            s.rss_file.push(x.status.rss_file);
            s.rss_shmem.push(x.status.rss_shmem);
            s.vm_size.push(x.status.vm_size);
            s.swap.push(x.status.vm_swap);
            s.threads.push(x.threads);
            s.fds.push(x.fd_count);
        }
        s
    }
}

/// One type's counts and bytes at each census (the top changers).
#[derive(Debug, Clone, Serialize)]
pub struct TypeSeries {
    pub name: String,
    pub t: Vec<f64>,
    pub counts: Vec<u64>,
    pub sizes: Vec<u64>,
}

/// How many types get a series in the report.
pub const TYPE_SERIES: usize = 8;

impl TypeSeries {
    /// The types that grew most (by bytes) over the censuses.
    pub fn top(obs: &Observation) -> Vec<TypeSeries> {
        let Some(py) = &obs.python else {
            return Vec::new();
        };
        let mut rows: Vec<_> = py.rows.iter().filter(|r| r.delta_size > 0).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.delta_size));
        rows.iter()
            .take(TYPE_SERIES)
            .map(|r| TypeSeries {
                name: r.name.clone(),
                t: py.census_times.clone(),
                counts: r.counts.clone(),
                sizes: r.sizes.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub verdict: Verdict,
    pub headline: String,
    pub findings: Vec<Finding>,
    pub process: ProcessReport,
    pub python: Option<PythonReport>,
    pub observed_s: f64,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
    /// The /proc growth classifier's raw signals.
    pub signals: Vec<Signal>,
    pub series: Series,
    pub type_series: Vec<TypeSeries>,
    /// The retainer graph of the top growing type, as SVG (HTML only).
    #[serde(skip)]
    pub retainer_svg: Option<String>,
}

impl Report {
    pub fn new(
        obs: &Observation,
        d: Diagnosis,
        mut process: ProcessReport,
        python: Option<PythonReport>,
    ) -> Report {
        let observed_s = match (obs.samples.first(), obs.samples.last()) {
            (Some(a), Some(b)) => (b.t - a.t).max(0.0),
            _ => 0.0,
        };
        let growth = explained_rate(&d.findings);
        process.growth_bytes_per_s = growth;
        process.doubling_s = doubling_s(process.rss_bytes_end, growth);
        if let Some(s) = &d.rss_slope {
            process.rss_slope_bytes_per_s = Some(s.bytes_per_s);
            process.rss_slope_window_s = Some([s.from_s, s.to_s]);
            if s.bytes_per_s > 0.0 {
                process.explained_share = Some(growth / s.bytes_per_s);
                process.doubling_s = doubling_s(process.rss_bytes_end, s.bytes_per_s);
            }
        }
        Report {
            schema: SCHEMA,
            verdict: d.verdict,
            headline: d.headline,
            findings: d.findings,
            process,
            python,
            observed_s,
            skipped: obs.skipped.clone(),
            notes: d.notes,
            signals: d.signals,
            series: Series::of(obs),
            type_series: TypeSeries::top(obs),
            retainer_svg: None,
        }
    }
}
