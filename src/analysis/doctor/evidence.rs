//! The evidence each finding kind carries (`--json`: `findings[].evidence`,
//! documented in `docs/doctor.schema.json`). Fields are only ever added.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{AllocatorState, Kind};
use crate::analysis::classify::Change;

/// One Python type over the censuses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeGrowth {
    /// `app.UserSession`, `str`, `dict of app.UserSession`.
    pub name: String,
    pub module: Option<String>,
    pub builtin: bool,
    /// Counts and getsizeof bytes at each census.
    pub counts: Vec<u64>,
    pub sizes: Vec<u64>,
    pub count_delta: i64,
    pub count_per_s: f64,
    pub bytes_delta: i64,
    pub bytes_per_s: f64,
    /// growth_score × retention, in [0, 1].
    pub score: f64,
    pub steady: bool,
    /// Short reprs of instances that are new since the first census.
    pub samples: Vec<String>,
    /// With gc-only censuses: the untracked objects (str, bytes, int, ...)
    /// the new instances hold alone, estimated as count_delta times the
    /// mean over sampled new instances (0 when not sampled, or when the
    /// censuses were complete and counted them already). Part of the rate.
    pub payload_bytes_delta: i64,
    /// New instances the payload was measured on.
    pub payload_sampled: usize,
    /// Storage the new instances own that getsizeof does not count (3.11+:
    /// managed dict values), count_delta times the sampled mean.
    pub hidden_bytes_delta: i64,
    /// What all of it (bytes_delta + payload + hidden) takes as the
    /// allocators hand it out (pymalloc blocks, malloc chunks): the figure
    /// the finding's rate sums. An estimate (see `footprint`).
    pub footprint_bytes_delta: i64,
}

impl TypeGrowth {
    /// What the type's growth costs in memory: its footprint.
    pub fn total_bytes_delta(&self) -> i64 {
        self.footprint_bytes_delta.max(0)
    }
}

/// How sampled instances of the top type are held (from `why`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retainer {
    /// "20 of 20 sampled app.UserSession objects are held by app._session_cache".
    pub sentence: String,
    /// `app._session_cache`, or empty when not rooted.
    pub held_by: String,
    /// The chain, `[…]` where samples differ.
    pub path: String,
    /// rooted, held_from_c, unreachable, too_deep, not_in_graph.
    pub status: String,
    pub samples: usize,
    pub of: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectsEvidence {
    /// Growing types, most bytes per second first.
    pub types: Vec<TypeGrowth>,
    pub count_delta: i64,
    pub bytes_delta: i64,
    pub census_times: Vec<f64>,
    /// For the first type, when `why` ran.
    pub retainers: Vec<Retainer>,
    /// `why` looked at these instances of `retainers_type`.
    pub retainers_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GarbageTypeEvidence {
    pub name: String,
    pub count: u64,
    /// `__del__` cycle, legacy tp_del, DEBUG_SAVEALL, ... in words.
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GarbageEvidence {
    /// len(gc.garbage) at each gc read.
    pub lengths: Vec<u64>,
    pub times: Vec<f64>,
    pub growth: i64,
    pub per_s: f64,
    pub saveall: bool,
    pub debug_flags: Vec<String>,
    pub types: Vec<GarbageTypeEvidence>,
    /// The growing Python types that are garbage.
    pub growing: Vec<TypeGrowth>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcDisabledEvidence {
    /// gc.isenabled() at each gc read.
    pub enabled: Vec<bool>,
    pub thresholds: Vec<i64>,
    /// Gen-0 count at each gc read (it only grows while the collector is off).
    pub gen0_counts: Vec<i64>,
    pub times: Vec<f64>,
    pub growing: Vec<TypeGrowth>,
    /// Sampled instances found only in reference cycles (None: not checked).
    pub cycles_confirmed: Option<bool>,
    pub retainers: Vec<Retainer>,
}

/// One mapped object (SysV, POSIX shm, memfd, shared anon, or a file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingEvidence {
    /// sysv-shm, posix-shm, memfd, shared-anon, file, deleted-file.
    pub backing: String,
    /// As `maps` prints it: `[ shmid=0x30003 ] key 0x00000000`, a path, ...
    pub label: String,
    /// SysV: shmid in hex, as pmap shows it.
    pub shmid: Option<String>,
    pub key: Option<String>,
    pub path: Option<String>,
    /// Separate times it is mapped.
    pub instances: Change,
    pub mappings: Change,
    /// Address space of its mappings.
    pub mapped_bytes: Change,
    /// RSS the process is charged for it (RssShmem or RssFile).
    pub rss: Change,
    /// Proportional set size, when smaps_rollup was read.
    pub pss: Option<Change>,
    /// SysV: the segment's real size and attach count (from /proc/sysvipc/shm).
    pub segment_bytes: Option<u64>,
    pub nattch: Option<u64>,
    pub hint: String,
}

/// New threads that do the same thing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadGroup {
    pub count: u64,
    /// `worker-<n>`: names with digits folded.
    pub name: String,
    /// Where they are: `_leaked_worker (thread_leak.py:25)`.
    pub doing: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadsEvidence {
    pub threads: Change,
    pub new_threads: Vec<ThreadGroup>,
    /// RSS the new threads are charged with: the growth of their stacks'
    /// resident pages (read from smaps), or — when smaps could not be read
    /// — anonymous growth up to THREAD_ALLOWANCE per thread.
    pub rss_bytes: u64,
    /// "stacks" (resident stack pages, measured) or "allowance".
    pub rss_source: String,
    /// Thread stacks at the end of the window: how many, resident and
    /// reserved bytes (null without smaps).
    pub stacks: Option<super::rates::StackSample>,
    /// Bytes per second charged beyond the stacks and the Python handles:
    /// anonymous growth nothing else explains, up to THREAD_NATIVE per new
    /// thread (the thread state, its frame stack, malloc's pieces).
    pub native_bytes_per_s: f64,
    /// Python objects that are the threads' own (Thread, frames, locks).
    pub handles: Vec<TypeGrowth>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FdsEvidence {
    pub fds: Change,
    /// Change per kind (file, pipe, socket, memfd, ...).
    pub by_kind: BTreeMap<String, i64>,
    /// Most common targets now.
    pub top_targets: Vec<(String, u64)>,
    pub handles: Vec<TypeGrowth>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NativeEvidence {
    pub rss_anon: Change,
    /// Python objects' getsizeof growth over the same window (None: no census).
    pub python_bytes_delta: Option<i64>,
    /// Anonymous growth left after Python objects and new threads.
    pub unexplained_bytes: i64,
    pub heap_mapped: Option<Change>,
    pub anon_mapped: Option<Change>,
    pub allocator: Option<AllocatorState>,
    pub hint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionEvidence {
    pub rss_bytes: u64,
    pub rss_peak_bytes: u64,
    /// Free inside glibc malloc's arenas (mallinfo fordblks).
    pub malloc_free_bytes: Option<u64>,
    /// Arena bytes pymalloc holds without live blocks.
    pub pymalloc_idle_bytes: Option<u64>,
    pub retained_bytes: u64,
    pub allocator: AllocatorState,
    pub hint: String,
}

/// Per-kind evidence; serialized without a tag (the finding's `kind` says
/// which).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    Objects(ObjectsEvidence),
    Garbage(GarbageEvidence),
    GcDisabled(GcDisabledEvidence),
    Mapping(MappingEvidence),
    Threads(ThreadsEvidence),
    Fds(FdsEvidence),
    Native(NativeEvidence),
    Retention(RetentionEvidence),
}

impl Evidence {
    /// The kinds this evidence can belong to (a consistency check).
    pub fn fits(&self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Evidence::Objects(_), Kind::PythonObjects)
                | (Evidence::Garbage(_), Kind::UncollectableGarbage)
                | (Evidence::GcDisabled(_), Kind::GcDisabled)
                | (
                    Evidence::Mapping(_),
                    Kind::SharedMemoryMappings | Kind::FileMappings
                )
                | (Evidence::Threads(_), Kind::Threads)
                | (Evidence::Fds(_), Kind::FileDescriptors)
                | (Evidence::Native(_), Kind::NativeHeap)
                | (Evidence::Retention(_), Kind::AllocatorRetention)
        )
    }
}
