//! `memsleuth doctor`: from everything observed about a process over a
//! window — /proc samples, censuses, gc reads, thread listings, allocator
//! figures, retainer paths — the verdict and the ranked findings. Pure: the
//! command collects, this decides, so every rule is unit-tested on recorded
//! or hand-made inputs.
//!
//! How memory is attributed, in order:
//! 1. Resource signals from /proc (the growth classifier): one mapped object
//!    mapped again and again, threads, fds. Each becomes a finding.
//! 2. Python types whose census count rises steadily (the classifier's
//!    steadiness rule, applied to census counts: growth that stopped during
//!    warm-up is not reported). Builtin and standard-library types that rise
//!    in step with a resource (sockets with fds, `threading.Thread` and frames
//!    with threads, `mmap.mmap` with file mappings) are that resource's
//!    handles and count towards its finding; user-defined classes never are.
//! 3. Of what is left: types in a growing `gc.garbage` make
//!    `uncollectable-garbage`; with the collector off and the gen-0 count
//!    rising, the growing types are `gc-disabled` (confirmed when the sampled
//!    instances are unreachable cycles); the rest is `python-objects`.
//! 4. Anonymous RSS growth not explained by Python objects (at twice their
//!    `getsizeof` bytes, for allocator overhead) nor by new threads is
//!    `native-heap`.
//! 5. With no leak, much free memory inside the allocators is reported as
//!    `allocator-retention` (informational).
//!
//! Findings are ranked by `rate_bytes_per_s`: the memory each makes the
//! process grow by, per second. The headline sets their sum against the RSS
//! slope measured over the steady part of the window ([`rates`]): how much
//! of the growth the findings explain.

use serde::Serialize;

use crate::analysis::allocator::{Mallinfo, PymallocStats};
use crate::analysis::census::GrowthRow;
use crate::analysis::classify::{self, Signal};
use crate::analysis::gcstate::{GarbageScan, GcBasics};
use crate::analysis::refgraph::report::WhyReport;
use crate::process::sample::Sample;
use crate::process::sysvipc::Segment;

mod evidence;
pub mod footprint;
mod objects;
pub mod rates;
pub mod report;
mod resources;
#[cfg(test)]
mod tests;
mod verdict;

pub use evidence::*;
pub use objects::why_candidate;
pub use verdict::{doubling_s, explained_rate, explained_words, headline};

/// A type must gain this many objects to be called growing.
pub const MIN_TYPE_OBJECTS: u64 = 20;
/// And the Python-objects finding at least this many bytes in all.
pub const MIN_OBJECT_BYTES: i64 = 8 * 1024;
/// gc.garbage must gain this many entries.
pub const MIN_GARBAGE: u64 = 10;
/// RSS a new thread may account for (stack pages, a glibc arena's first heap).
pub const THREAD_ALLOWANCE: u64 = 1 << 20;
/// Native memory a new thread may be charged with beyond its stack (see
/// `resources::thread_native_rate`): a thread state of 1–2 KiB, the
/// first 16 KiB chunk of its frame stack and malloc's per-thread pieces.
pub const THREAD_NATIVE: u64 = 24 << 10;
/// Getsizeof bytes undercount what objects cost (allocator headers,
/// alignment, free slots): anonymous growth up to this factor times the
/// objects' bytes is theirs.
pub const OBJECT_OVERHEAD: f64 = 2.0;
/// With gc-only censuses: untracked bytes (str, bytes, int) each new
/// tracked object may hold.
pub const UNTRACKED_ALLOWANCE: i64 = 1024;
/// Allocator-retention: free memory inside the allocators at least this...
pub const MIN_RETAINED: u64 = 32 << 20;
/// ...and this share of RSS.
pub const MIN_RETAINED_SHARE: f64 = 0.25;

/// What the verdict is; the exit status follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Leak,
    NoLeak,
    Inconclusive,
}

impl Verdict {
    /// 0 no-leak, 3 leak, 4 inconclusive (1 and 2 are errors and usage).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::NoLeak => 0,
            Verdict::Leak => 3,
            Verdict::Inconclusive => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::NoLeak => "no-leak",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The finding vocabulary: stable names, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    PythonObjects,
    UncollectableGarbage,
    GcDisabled,
    SharedMemoryMappings,
    FileMappings,
    NativeHeap,
    Threads,
    FileDescriptors,
    AllocatorRetention,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::PythonObjects => "python-objects",
            Kind::UncollectableGarbage => "uncollectable-garbage",
            Kind::GcDisabled => "gc-disabled",
            Kind::SharedMemoryMappings => "shared-memory-mappings",
            Kind::FileMappings => "file-mappings",
            Kind::NativeHeap => "native-heap",
            Kind::Threads => "threads",
            Kind::FileDescriptors => "file-descriptors",
            Kind::AllocatorRetention => "allocator-retention",
        }
    }

    pub const ALL: [Kind; 9] = [
        Kind::PythonObjects,
        Kind::UncollectableGarbage,
        Kind::GcDisabled,
        Kind::SharedMemoryMappings,
        Kind::FileMappings,
        Kind::NativeHeap,
        Kind::Threads,
        Kind::FileDescriptors,
        Kind::AllocatorRetention,
    ];
}

/// One reason the process grows (or, informational, why it is large).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// One sentence: what grows, how fast, what holds it.
    pub summary: String,
    /// Memory this makes the process grow by per second (the ranking key).
    pub rate_bytes_per_s: f64,
    /// Not a leak: a fact worth knowing (allocator-retention).
    pub informational: bool,
    /// The rise was steady over the window (false: irregular, or too few
    /// points to tell).
    pub steady: bool,
    pub evidence: Evidence,
    /// What to run next, most useful first.
    pub next: Vec<String>,
}

/// A thread as the agent listed it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, Default)]
pub struct ThreadInfo {
    pub ident: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub native_id: Option<u64>,
    #[serde(default)]
    pub daemon: Option<bool>,
    /// Innermost first: (function, file, line).
    #[serde(default)]
    pub frames: Vec<(String, String, u64)>,
}

/// The allocators' figures at the end of the window.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AllocatorState {
    pub mallinfo: Option<Mallinfo>,
    pub pymalloc: Option<PymallocStats>,
}

/// What the agent told us over the window. Census and gc times are on the
/// samples' time axis (seconds since the first /proc sample).
#[derive(Debug, Clone, Default)]
pub struct PythonSide {
    pub version: (u32, u32, u32),
    pub census_times: Vec<f64>,
    /// growth_rows over the censuses (with sample reprs of new objects).
    pub rows: Vec<GrowthRow>,
    /// Total getsizeof bytes per census.
    pub census_bytes: Vec<u64>,
    pub gc_only: bool,
    /// When the agent's own memory was in place (after its first census):
    /// anonymous growth before this is partly ours.
    pub settled_t: f64,
    /// When the closing reads began (0: never; then all samples count).
    pub closing_t: f64,
    pub gc: Vec<(f64, GcBasics)>,
    /// gc.garbage by type, read at the end.
    pub garbage: Option<GarbageScan>,
    pub threads_first: Vec<ThreadInfo>,
    pub threads_last: Vec<ThreadInfo>,
    pub allocator: Option<AllocatorState>,
    /// Retainer paths of the top growing type's new instances.
    pub why: Option<WhyReport>,
    /// What sampled new instances hold, by type.
    pub payload: Vec<Payload>,
    /// The heap at the last census.
    pub heap: Option<HeapTotals>,
}

/// The heap at one census: totals and the largest types by bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct HeapTotals {
    pub objects: u64,
    /// sys.getsizeof bytes.
    pub bytes: u64,
    /// Largest first, at most [`LARGEST_TYPES`].
    pub largest: Vec<TypeTotal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct TypeTotal {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
}

/// Types listed in [`HeapTotals::largest`].
pub const LARGEST_TYPES: usize = 10;

impl HeapTotals {
    pub fn of(c: &crate::analysis::census::Census) -> HeapTotals {
        let mut rows: Vec<&crate::analysis::census::TypeRow> = c.rows.iter().collect();
        rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
        HeapTotals {
            objects: c.count,
            bytes: c.size,
            largest: rows
                .into_iter()
                .take(LARGEST_TYPES)
                .map(|r| TypeTotal {
                    name: r.name.clone(),
                    count: r.count,
                    bytes: r.size,
                })
                .collect(),
        }
    }
}

/// What sampled new instances of a growing type hold that their own
/// getsizeof does not count: untracked objects (str, bytes, int, ... a
/// gc-only census does not count) they hold alone, and attribute values
/// kept in managed dict storage (3.11+).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Payload {
    pub type_name: String,
    /// Mean over the samples: getsizeof bytes of the untracked objects
    /// held alone, per instance...
    pub per_object: f64,
    /// ...and how many objects that is.
    pub objects_per_object: f64,
    /// Mean managed dict values per instance (None: not such a type).
    pub managed_values: Option<f64>,
    pub sampled: usize,
}

/// A part of the investigation that did not run, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub part: String,
    pub reason: String,
}

/// Everything the rules look at.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub pid: u32,
    pub samples: Vec<Sample>,
    pub python: Option<PythonSide>,
    pub skipped: Vec<Skipped>,
    /// SysV segments at the end (for sizes and nattch).
    pub segments: Vec<Segment>,
    /// Open fds at the end by target (paths; "pipe", "socket" collapsed).
    pub fd_targets: Vec<(String, u64)>,
    /// Thread names from /proc at the start and end (when the agent could
    /// not list threads).
    pub comm_first: Vec<String>,
    pub comm_last: Vec<String>,
    /// Thread stacks read from smaps over the window (empty when smaps
    /// could not be read: then a thread is charged THREAD_ALLOWANCE).
    pub stacks: Vec<rates::StackSample>,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    pub headline: String,
    /// Ranked by rate_bytes_per_s, leaks before informational findings.
    pub findings: Vec<Finding>,
    /// Other facts the rules noticed (address space only, swap, gc off
    /// without growth, ...).
    pub notes: Vec<String>,
    /// The classifier's raw signals.
    pub signals: Vec<Signal>,
    /// RSS growth measured over the steady part of the window.
    pub rss_slope: Option<rates::RssSlope>,
}

/// Seconds → "4.0 s" for sentences.
pub(crate) fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

/// Decides. See the module docs for the order of attribution.
pub fn diagnose(obs: &Observation) -> Diagnosis {
    let signals = classify::classify(&obs.samples);
    let mut notes = Vec::new();
    let mut findings = Vec::new();
    let mut ledger = objects::Ledger::new(obs.python.as_ref());

    resources::mappings(obs, &signals, &mut ledger, &mut findings);
    resources::threads(obs, &signals, &mut ledger, &mut findings);
    resources::fds(obs, &signals, &mut ledger, &mut findings);
    if let Some(py) = &obs.python {
        objects::garbage(obs.pid, py, &mut ledger, &mut findings);
        objects::gc_disabled(obs.pid, py, &mut ledger, &mut findings, &mut notes);
        objects::python_objects(obs.pid, py, &mut ledger, &mut findings);
    }
    resources::native(obs, &signals, &ledger, &mut findings, &mut notes);
    resources::other_signals(&signals, &mut notes);

    findings.sort_by(|a, b| {
        a.informational
            .cmp(&b.informational)
            .then(b.rate_bytes_per_s.total_cmp(&a.rate_bytes_per_s))
    });
    let leak = findings.iter().any(|f| !f.informational);
    if !leak && let Some(f) = resources::retention(obs) {
        findings.push(f);
    }
    let verdict = verdict::verdict(obs, &signals, &findings, &mut notes);
    let rss_slope = rates::rss_slope(obs);
    let headline = verdict::headline(obs, verdict, &findings, rss_slope.as_ref());
    Diagnosis {
        verdict,
        headline,
        findings,
        notes,
        signals,
        rss_slope,
    }
}
