//! Growth classification: from a time-ordered series of samples of one
//! process, typed [`Signal`]s saying *why* its memory grows, each carrying
//! the evidence behind it. Pure functions, no I/O.
//!
//! | signal | trigger (first → last sample) | floor |
//! |---|---|---|
//! | `repeated-shared-mapping` | one SysV / POSIX shm / memfd / shared-anon object is mapped more separate times (`instances`) | +3 instances |
//! | `repeated-file-mapping` | one file is mapped more separate times (`instances`; a shared library's segments are one instance) | +3 instances |
//! | `anon-growth` | RssAnon rises | +1 MiB and +3 % of the start |
//! | `arena-growth` | glibc arena heaps (64 MiB reservations) are added | +2 arenas |
//! | `thread-growth` | Threads rises | +3 threads |
//! | `fd-growth` | open fd count rises | +3 fds |
//! | `virtual-only` | VmSize not explained by thread stacks, arenas or repeated objects rises, RSS by at most 1/8 of it | +32 MiB and +10 % of the start |
//! | `swap-instead-of-free` | VmSwap rises while VmRSS falls | +1 MiB swap |
//!
//! Every trigger goes through [`trend::rising`]: with 3 or more samples the
//! counter must still be rising in the second half of the window (at no less
//! than a quarter of its average rate), so growth that stopped during warm-up
//! is not reported; an irregular but continuing rise (fewer than two thirds
//! of the steps non-decreasing) is reported with `steady: false`. Signals
//! whose inputs were not collected (no maps, rollup or fd kinds) are skipped;
//! evidence that needs them is `None`. Without maps, VmSize cannot be
//! attributed, so a thread or arena leak then also shows as `virtual-only`.
//!
//! The repeated-mapping signals trigger on the mapping count, not on RSS:
//! a shmat of an untouched segment adds no RSS yet still leaks a mapping
//! (and `vm.max_map_count` is finite). Their RSS, SHR, Rss{Shmem,File} and
//! Pss_{Shmem,File} changes are evidence: RSS rising while PSS stays flat is
//! the process sharing pages with itself.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use crate::analysis::groups::Backing;
use crate::process::fds::FdKind;
use crate::process::sample::Sample;

mod detect;
mod summary;
#[cfg(test)]
mod tests;
pub mod trend;

pub use trend::{Change, Window};

const MIB: u64 = 1 << 20;
pub const MIN_SHARED_INSTANCES: u64 = 3;
pub const MIN_FILE_INSTANCES: u64 = 3;
pub const MIN_ANON_BYTES: u64 = MIB;
pub const MIN_ANON_PERCENT: u64 = 3;
pub const MIN_ARENAS: u64 = 2;
pub const MIN_THREADS: u64 = 3;
pub const MIN_FDS: u64 = 3;
pub const MIN_VIRTUAL_BYTES: u64 = 32 * MIB;
pub const MIN_VIRTUAL_PERCENT: u64 = 10;
pub const MIN_SWAP_BYTES: u64 = MIB;

/// A mapped object (file or shared memory) and how its mappings changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappedObject {
    pub backing: Backing,
    pub label: String,
    /// Number of VMAs of the object.
    pub mappings: Change,
    /// How many separate times it is mapped (see `Group::instances`).
    pub instances: Change,
    /// Address space of all its mappings, bytes.
    pub size: Change,
}

/// A group of mappings whose address space grew.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupGrowth {
    pub backing: Backing,
    pub label: String,
    pub size: Change,
}

/// What a signal's `rate_per_s` counts; also the first sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateUnit {
    /// Bytes of RAM (or swap) per second.
    ResidentBytes,
    /// Bytes of address space per second.
    AddressBytes,
    /// Threads, arenas or fds per second.
    Count,
}

/// One reason the process grows. `rate_per_s` is the headline rate (see
/// [`Signal::rate_unit`]); the other fields are the evidence. All byte
/// figures are bytes, all changes run from the first to the last sample the
/// signal was judged on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "signal", rename_all = "kebab-case")]
pub enum Signal {
    /// One shared-memory object mapped again and again. Rate: RssShmem.
    RepeatedSharedMapping {
        rate_per_s: f64,
        window: Window,
        object: MappedObject,
        rss: Change,
        /// SHR = RssFile + RssShmem.
        shr: Change,
        rss_shmem: Change,
        pss_shmem: Option<Change>,
    },
    /// One range of one file mapped again and again. Rate: RssFile.
    RepeatedFileMapping {
        rate_per_s: f64,
        window: Window,
        object: MappedObject,
        rss_file: Change,
        pss_file: Option<Change>,
    },
    /// Anonymous memory (malloc, pymalloc, numpy...). Rate: RssAnon.
    AnonGrowth {
        rate_per_s: f64,
        window: Window,
        rss_anon: Change,
        pss_anon: Option<Change>,
        /// Mapped size of `[heap]` (brk: small malloc chunks).
        heap_size: Option<Change>,
        /// Mapped size of unnamed anonymous mappings (pymalloc arenas, large
        /// malloc chunks, numpy buffers).
        anon_mmap_size: Option<Change>,
    },
    /// glibc per-thread arenas. Rate: arenas/s.
    ArenaGrowth {
        rate_per_s: f64,
        window: Window,
        arenas: Change,
        size: Change,
        vm_rss: Change,
    },
    /// Threads that never end. Rate: threads/s.
    ThreadGrowth {
        rate_per_s: f64,
        window: Window,
        threads: Change,
        stacks: Option<Change>,
        stack_size: Option<Change>,
    },
    /// fds never closed. Rate: fds/s.
    FdGrowth {
        rate_per_s: f64,
        window: Window,
        fds: Change,
        by_kind: Option<BTreeMap<FdKind, i64>>,
    },
    /// Address space that RSS does not follow. Rate: unexplained VmSize.
    VirtualOnly {
        rate_per_s: f64,
        window: Window,
        vm_size: Change,
        /// VmSize minus thread stacks, arenas and repeated objects (when
        /// every sample has maps; else plain VmSize).
        unexplained: Change,
        vm_rss: Change,
        largest: Option<GroupGrowth>,
    },
    /// Memory pushed out to swap rather than freed. Rate: VmSwap.
    SwapInsteadOfFree {
        rate_per_s: f64,
        window: Window,
        vm_rss: Change,
        vm_swap: Change,
    },
}

impl Signal {
    pub fn name(&self) -> &'static str {
        match self {
            Signal::RepeatedSharedMapping { .. } => "repeated-shared-mapping",
            Signal::RepeatedFileMapping { .. } => "repeated-file-mapping",
            Signal::AnonGrowth { .. } => "anon-growth",
            Signal::ArenaGrowth { .. } => "arena-growth",
            Signal::ThreadGrowth { .. } => "thread-growth",
            Signal::FdGrowth { .. } => "fd-growth",
            Signal::VirtualOnly { .. } => "virtual-only",
            Signal::SwapInsteadOfFree { .. } => "swap-instead-of-free",
        }
    }

    pub fn rate_per_s(&self) -> f64 {
        match self {
            Signal::RepeatedSharedMapping { rate_per_s, .. }
            | Signal::RepeatedFileMapping { rate_per_s, .. }
            | Signal::AnonGrowth { rate_per_s, .. }
            | Signal::ArenaGrowth { rate_per_s, .. }
            | Signal::ThreadGrowth { rate_per_s, .. }
            | Signal::FdGrowth { rate_per_s, .. }
            | Signal::VirtualOnly { rate_per_s, .. }
            | Signal::SwapInsteadOfFree { rate_per_s, .. } => *rate_per_s,
        }
    }

    pub fn window(&self) -> &Window {
        match self {
            Signal::RepeatedSharedMapping { window, .. }
            | Signal::RepeatedFileMapping { window, .. }
            | Signal::AnonGrowth { window, .. }
            | Signal::ArenaGrowth { window, .. }
            | Signal::ThreadGrowth { window, .. }
            | Signal::FdGrowth { window, .. }
            | Signal::VirtualOnly { window, .. }
            | Signal::SwapInsteadOfFree { window, .. } => window,
        }
    }

    pub fn rate_unit(&self) -> RateUnit {
        match self {
            Signal::RepeatedSharedMapping { .. }
            | Signal::RepeatedFileMapping { .. }
            | Signal::AnonGrowth { .. }
            | Signal::SwapInsteadOfFree { .. } => RateUnit::ResidentBytes,
            Signal::VirtualOnly { .. } => RateUnit::AddressBytes,
            Signal::ArenaGrowth { .. } | Signal::ThreadGrowth { .. } | Signal::FdGrowth { .. } => {
                RateUnit::Count
            }
        }
    }

    /// The object of a repeated-mapping signal.
    pub fn object(&self) -> Option<&MappedObject> {
        match self {
            Signal::RepeatedSharedMapping { object, .. }
            | Signal::RepeatedFileMapping { object, .. } => Some(object),
            _ => None,
        }
    }
}

/// Classifies growth over time-ordered samples of one process. Sorted by
/// headline rate: RAM bytes/s first, then address-space bytes/s, then
/// count-only signals; highest rate first within each.
pub fn classify(samples: &[Sample]) -> Vec<Signal> {
    if samples.len() < 2 {
        return Vec::new();
    }
    let cx = detect::Ctx::new(samples);
    let mut out = Vec::new();
    let mut explained: BTreeSet<Backing> = [Backing::ThreadStacks, Backing::GlibcArenas].into();
    for sig in cx.repeated_mappings() {
        if let Some(o) = sig.object() {
            explained.insert(o.backing.clone());
        }
        out.push(sig);
    }
    out.extend(cx.anon());
    out.extend(cx.arenas());
    out.extend(cx.threads());
    out.extend(cx.fds());
    out.extend(cx.virtual_only(&explained));
    out.extend(cx.swap());
    out.sort_by(|a, b| {
        a.rate_unit()
            .cmp(&b.rate_unit())
            .then(b.rate_per_s().total_cmp(&a.rate_per_s()))
    });
    out
}
