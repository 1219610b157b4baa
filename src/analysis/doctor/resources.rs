//! Findings from /proc: repeated mappings, threads, fds, native memory,
//! and allocator retention.

use std::collections::BTreeMap;

use super::evidence::*;
use super::objects::{Ledger, per_s};
use super::rates::{self, StackSample};
use super::{
    Finding, Kind, MIN_RETAINED, MIN_RETAINED_SHARE, OBJECT_OVERHEAD, Observation,
    THREAD_ALLOWANCE, THREAD_NATIVE, ThreadInfo, UNTRACKED_ALLOWANCE, secs,
};
use crate::analysis::classify::{self, Change, Signal, trend};
use crate::analysis::groups::Backing;
use crate::units;

/// Standard-library modules whose objects stand for a thread.
const THREAD_MODULES: &[&str] = &[
    "threading",
    "_thread",
    "thread",
    "_threading_local",
    "queue",
    "Queue",
    "collections",
    "weakref",
    "_weakrefset",
    "_weakref",
    "contextvars",
    "_contextvars",
];
/// ... for an open fd.
const FD_MODULES: &[&str] = &[
    "socket",
    "_socket",
    "io",
    "_io",
    "select",
    "selectors",
    "ssl",
    "_ssl",
    "subprocess",
    "tempfile",
    "mmap",
    "os",
    "posix",
];
/// ... for a mapping.
const MAP_MODULES: &[&str] = &["mmap", "ctypes", "_ctypes", "multiprocessing.shared_memory"];

fn backing_name(b: &Backing) -> &'static str {
    match b {
        Backing::Sysv { .. } => "sysv-shm",
        Backing::PosixShm { .. } => "posix-shm",
        Backing::Memfd { .. } => "memfd",
        Backing::SharedAnon { .. } => "shared-anon",
        Backing::File { .. } => "file",
        Backing::DeletedFile { .. } => "deleted-file",
        _ => "other",
    }
}

fn shm_hint(b: &Backing) -> String {
    match b {
        Backing::Sysv { .. } => {
            "shmat() is called again without shmdt(): every attach maps the same segment once more".into()
        }
        Backing::PosixShm { .. } => {
            "the same /dev/shm object is mmap()ed again without munmap() (e.g. SharedMemory objects never close()d)".into()
        }
        Backing::Memfd { .. } => "the same memfd is mmap()ed again without munmap()".into(),
        _ => "the same shared memory is mapped again without munmap()".into(),
    }
}

/// Repeated shared-memory and file mappings.
pub fn mappings(
    obs: &Observation,
    signals: &[Signal],
    ledger: &mut Ledger,
    out: &mut Vec<Finding>,
) {
    let pid = obs.pid;
    for s in signals {
        let (object, rss, pss, window, shared) = match s {
            Signal::RepeatedSharedMapping {
                object,
                rss_shmem,
                pss_shmem,
                window,
                ..
            } => (object, *rss_shmem, *pss_shmem, window, true),
            Signal::RepeatedFileMapping {
                object,
                rss_file,
                pss_file,
                window,
                ..
            } => (object, *rss_file, *pss_file, window, false),
            _ => continue,
        };
        let handles = ledger.take_handles(MAP_MODULES, object.instances.delta, 3.0);
        // An untouched mapping adds no RSS, yet still leaks address space
        // and a slot of vm.max_map_count: rank it by what it maps then.
        let mut rate = rss.rate_per_s.max(0.0);
        if rate == 0.0 {
            rate = object.size.rate_per_s.max(0.0);
        }
        rate += ledger.rate(&handles);
        let (shmid, key, path) = match &object.backing {
            Backing::Sysv { shmid, key } => (
                Some(format!("0x{shmid:x}")),
                Some(format!("0x{key:08x}")),
                None,
            ),
            Backing::PosixShm { path, .. }
            | Backing::File { path, .. }
            | Backing::DeletedFile { path, .. } => (None, None, Some(path.clone())),
            Backing::Memfd { name, .. } => (None, None, Some(format!("memfd:{name}"))),
            _ => (None, None, None),
        };
        let segment = match &object.backing {
            Backing::Sysv { shmid, .. } => obs.segments.iter().find(|g| g.shmid == *shmid),
            _ => None,
        };
        let noun = object.backing.noun();
        let summary = format!(
            "{noun} is mapped again and again: {} → {} times (+{}), {} of RSS charged{}",
            object.instances.before,
            object.instances.after,
            per_s(object.instances.rate_per_s),
            units::bytes(rss.after),
            segment
                .map(|g| format!(" for one {} segment", units::bytes(g.size)))
                .unwrap_or_default()
        );
        let (kind, hint, next) = if shared {
            let next = match object.backing {
                Backing::Sysv { .. } => {
                    vec![format!("memsleuth shm"), format!("memsleuth maps {pid}")]
                }
                _ => vec![format!("memsleuth maps {pid}")],
            };
            (Kind::SharedMemoryMappings, shm_hint(&object.backing), next)
        } else {
            (
                Kind::FileMappings,
                "the file is mmap()ed again without munmap() (or mmap objects are kept)"
                    .to_string(),
                vec![
                    format!("memsleuth maps {pid}"),
                    format!("memsleuth maps {pid} --diff 5"),
                ],
            )
        };
        out.push(Finding {
            kind,
            summary,
            rate_bytes_per_s: rate,
            informational: false,
            steady: window.steady,
            evidence: Evidence::Mapping(MappingEvidence {
                backing: backing_name(&object.backing).into(),
                label: object.label.clone(),
                shmid,
                key,
                path,
                instances: object.instances,
                mappings: object.mappings,
                mapped_bytes: object.size,
                rss,
                pss,
                segment_bytes: segment.map(|g| g.size),
                nattch: segment.map(|g| g.nattch),
                hint,
            }),
            next,
        });
    }
}

/// "worker-17" → "worker-<n>".
fn fold_digits(name: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in name.chars().take(80) {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push_str("<n>");
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// The frame that says what a thread does: the innermost one outside the
/// threading machinery.
fn doing(t: &ThreadInfo) -> Option<&(String, String, u64)> {
    let plumbing = |file: &str| {
        let base = file.rsplit('/').next().unwrap_or(file);
        matches!(base, "threading.py" | "queue.py" | "Queue.py")
    };
    t.frames
        .iter()
        .find(|f| !plumbing(&f.1))
        .or(t.frames.first())
}

fn short_file(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// Groups threads by (folded name, frame).
fn group_threads(new: &[&ThreadInfo]) -> Vec<ThreadGroup> {
    let mut groups: BTreeMap<(String, String), ThreadGroup> = BTreeMap::new();
    for t in new {
        let name = fold_digits(t.name.as_deref().unwrap_or("?"));
        let f = doing(t);
        let desc = f
            .map(|(func, file, line)| format!("{func} ({}:{line})", short_file(file)))
            .unwrap_or_else(|| "no Python frame".into());
        let g = groups
            .entry((name.clone(), desc.clone()))
            .or_insert_with(|| ThreadGroup {
                count: 0,
                name,
                doing: desc,
                function: f.map(|x| x.0.clone()),
                file: f.map(|x| x.1.clone()),
                line: f.map(|x| x.2),
            });
        g.count += 1;
    }
    let mut v: Vec<ThreadGroup> = groups.into_values().collect();
    v.sort_by_key(|g| std::cmp::Reverse(g.count));
    v.truncate(10);
    v
}

/// Threads from /proc comm names when the agent could not list them.
fn group_comms(first: &[String], last: &[String]) -> Vec<ThreadGroup> {
    let mut before: BTreeMap<String, i64> = BTreeMap::new();
    for n in first {
        *before.entry(fold_digits(n)).or_default() += 1;
    }
    let mut after: BTreeMap<String, i64> = BTreeMap::new();
    for n in last {
        *after.entry(fold_digits(n)).or_default() += 1;
    }
    let mut v: Vec<ThreadGroup> = after
        .into_iter()
        .filter_map(|(name, n)| {
            let d = n - before.get(&name).copied().unwrap_or(0);
            (d > 0).then(|| ThreadGroup {
                count: d as u64,
                name,
                doing: "unknown (the agent could not list Python threads)".into(),
                function: None,
                file: None,
                line: None,
            })
        })
        .collect();
    v.sort_by_key(|g| std::cmp::Reverse(g.count));
    v.truncate(10);
    v
}

fn anon_change(signals: &[Signal]) -> Option<Change> {
    signals.iter().find_map(|s| match s {
        Signal::AnonGrowth { rss_anon, .. } => Some(*rss_anon),
        _ => None,
    })
}

/// RSS the new threads are charged with (see THREAD_ALLOWANCE).
fn thread_rss(signals: &[Signal]) -> u64 {
    let added = signals.iter().find_map(|s| match s {
        Signal::ThreadGrowth { threads, .. } => Some(threads.delta.max(0) as u64),
        _ => None,
    });
    let anon = anon_change(signals).map_or(0, |c| c.delta.max(0) as u64);
    added.map_or(0, |n| anon.min(n.saturating_mul(THREAD_ALLOWANCE)))
}

/// Growth of the thread stacks' resident bytes over the window and its
/// rate (Theil–Sen), when smaps was read at least three times.
fn stack_growth(stacks: &[StackSample]) -> Option<(u64, f64)> {
    if stacks.len() < 3 {
        return None;
    }
    let (a, b) = (stacks.first()?, stacks.last()?);
    let pts: Vec<(f64, f64)> = stacks.iter().map(|s| (s.t, s.rss as f64)).collect();
    let rate = rates::theil_sen(&pts)?.max(0.0);
    Some((b.rss.saturating_sub(a.rss), rate))
}

/// RssAnon samples between `from` and `to`, within the window where growth
/// can be judged ([`rates::settled_window`]).
fn settled_anon(obs: &Observation, from: f64, to: f64) -> Vec<(f64, u64)> {
    let (settled, closing) = rates::settled_window(obs);
    obs.samples
        .iter()
        .filter(|x| x.t >= from.max(settled) && x.t <= to.min(closing))
        .map(|x| (x.t, x.status.rss_anon))
        .collect()
}

/// Anonymous growth over the stacks' window that neither the stacks nor
/// Python objects (`python_rate`, their footprint) explain, up to
/// THREAD_NATIVE per new thread: what the interpreter and libc keep per
/// thread outside its stack (the thread state, the first chunk of its
/// frame stack, malloc's per-thread arena pieces). Measured, not assumed:
/// a few KiB per thread on these builds, which the findings would
/// otherwise leave out of the rate.
fn thread_native_rate(
    obs: &Observation,
    threads_per_s: f64,
    stack_rate: f64,
    python_rate: f64,
) -> f64 {
    let (Some(a), Some(b)) = (obs.stacks.first(), obs.stacks.last()) else {
        return 0.0;
    };
    let points: Vec<(f64, f64)> = settled_anon(obs, a.t, b.t)
        .into_iter()
        .map(|(t, v)| (t, v as f64))
        .collect();
    let Some(anon_rate) = rates::theil_sen(&points) else {
        return 0.0;
    };
    let rest = anon_rate - stack_rate - python_rate;
    if !rest.is_finite() || threads_per_s <= 0.0 {
        return 0.0;
    }
    rest.clamp(0.0, threads_per_s * THREAD_NATIVE as f64)
}

pub fn threads(obs: &Observation, signals: &[Signal], ledger: &mut Ledger, out: &mut Vec<Finding>) {
    let Some((threads, window)) = signals.iter().find_map(|s| match s {
        Signal::ThreadGrowth {
            threads, window, ..
        } => Some((*threads, *window)),
        _ => None,
    }) else {
        return;
    };
    let handles = ledger.take_handles(THREAD_MODULES, threads.delta, 12.0);
    // What the new threads' stacks made resident (a stack is reserved at
    // its full size but only touched pages count), else the allowance.
    let measured = stack_growth(&obs.stacks);
    let (rss, stack_rate, source) = match measured {
        Some((delta, rate)) => (delta, rate, "stacks"),
        None => {
            let rss = thread_rss(signals);
            let rate = if window.seconds > 0.0 {
                rss as f64 / window.seconds
            } else {
                0.0
            };
            (rss, rate, "allowance")
        }
    };
    let native = if source == "stacks" {
        thread_native_rate(obs, threads.rate_per_s, stack_rate, ledger.footprint_rate())
    } else {
        0.0 // the allowance already charges anonymous growth
    };
    let rate = stack_rate + ledger.rate(&handles) + native;
    let new_threads = match &obs.python {
        Some(py) if !py.threads_last.is_empty() => {
            let old: Vec<u64> = py.threads_first.iter().map(|t| t.ident).collect();
            let new: Vec<&ThreadInfo> = py
                .threads_last
                .iter()
                .filter(|t| !old.contains(&t.ident))
                .collect();
            group_threads(&new)
        }
        _ => group_comms(&obs.comm_first, &obs.comm_last),
    };
    let doing = new_threads
        .first()
        .map(|g| format!("; most new threads are {} in {}", g.name, g.doing))
        .unwrap_or_default();
    let summary = format!(
        "threads never end: {} → {} in {} (+{}){doing}",
        threads.before,
        threads.after,
        secs(window.seconds),
        per_s(threads.rate_per_s)
    );
    out.push(Finding {
        kind: Kind::Threads,
        summary,
        rate_bytes_per_s: rate,
        informational: false,
        steady: window.steady,
        evidence: Evidence::Threads(ThreadsEvidence {
            threads,
            new_threads,
            rss_bytes: rss,
            rss_source: source.into(),
            stacks: obs.stacks.last().copied(),
            native_bytes_per_s: native,
            handles,
        }),
        next: vec![
            format!("memsleuth info {}", obs.pid),
            format!(
                "memsleuth exec {} 'import threading; print(len(threading.enumerate()))'",
                obs.pid
            ),
        ],
    });
}

pub fn fds(obs: &Observation, signals: &[Signal], ledger: &mut Ledger, out: &mut Vec<Finding>) {
    let Some((fds, window, by_kind)) = signals.iter().find_map(|s| match s {
        Signal::FdGrowth {
            fds,
            window,
            by_kind,
            ..
        } => Some((*fds, *window, by_kind.clone())),
        _ => None,
    }) else {
        return;
    };
    let handles = ledger.take_handles(FD_MODULES, fds.delta, 3.0);
    let rate = ledger.rate(&handles);
    let by_kind: BTreeMap<String, i64> = by_kind
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|(k, d)| (k.name().to_string(), d))
        .collect();
    let kinds = {
        let mut v: Vec<(&String, &i64)> = by_kind.iter().filter(|(_, d)| **d > 0).collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter()
            .map(|(k, d)| format!("{k} +{d}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let summary = format!(
        "file descriptors are never closed: {} → {} in {} (+{}){}",
        fds.before,
        fds.after,
        secs(window.seconds),
        per_s(fds.rate_per_s),
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {kinds}")
        }
    );
    out.push(Finding {
        kind: Kind::FileDescriptors,
        summary,
        rate_bytes_per_s: rate,
        informational: false,
        steady: window.steady,
        evidence: Evidence::Fds(FdsEvidence {
            fds,
            by_kind,
            top_targets: obs.fd_targets.iter().take(10).cloned().collect(),
            handles,
        }),
        next: vec![
            format!("ls -l /proc/{}/fd", obs.pid),
            format!("memsleuth top {}", obs.pid),
        ],
    });
}

/// Anonymous growth that neither Python objects nor new threads explain.
pub fn native(
    obs: &Observation,
    signals: &[Signal],
    ledger: &Ledger,
    out: &mut Vec<Finding>,
    notes: &mut Vec<String>,
) {
    let Some(sig) = signals
        .iter()
        .find(|s| matches!(s, Signal::AnonGrowth { .. }))
    else {
        return;
    };
    let Signal::AnonGrowth {
        window,
        rss_anon,
        heap_size,
        anon_mmap_size,
        ..
    } = sig
    else {
        return;
    };
    let anon = rss_anon.delta.max(0);
    let threads = thread_rss(signals) as i64;
    if !ledger.has_census() {
        // Without a census Python objects and C memory look the same.
        if threads < anon / 2 {
            notes.push(format!(
                "Anonymous memory grows by {} ({} in {}), but the Python heap could not be \
                 inspected, so Python objects and native memory cannot be told apart.",
                units::rate(rss_anon.rate_per_s),
                units::bytes_delta(anon),
                secs(window.seconds)
            ));
        }
        return;
    }
    let points = settled_anon(obs, f64::NEG_INFINITY, f64::INFINITY);
    let Some(first) = points.first() else { return };
    let floor = classify::MIN_ANON_BYTES.max(first.1 / 100 * classify::MIN_ANON_PERCENT);
    let Some((rss_anon, window)) = trend::rising(&points, floor) else {
        return;
    };
    let rss_anon = &rss_anon;
    let window = &window;
    let anon = rss_anon.delta.max(0);
    let python = ledger.bytes_delta();
    // gc-only censuses miss the strs, bytes and ints the tracked objects
    // hold: each new tracked object may bring UNTRACKED_ALLOWANCE of them.
    let untracked = if ledger.gc_only {
        ledger.count_delta().saturating_mul(UNTRACKED_ALLOWANCE)
    } else {
        0
    };
    let explained = (python as f64 * OBJECT_OVERHEAD) as i64 + untracked + threads;
    let unexplained = anon - explained;
    // Most of the growth must be unexplained: memory that follows the heap
    // (allocator overhead, our own census buffers) is not a native leak.
    if unexplained < (1 << 20) || unexplained * 4 < anon * 3 {
        return;
    }
    let rate = if window.seconds > 0.0 {
        unexplained as f64 / window.seconds
    } else {
        0.0
    };
    let summary = format!(
        "native memory grows outside Python objects: RssAnon {} ({}) while Python objects \
         grew by {}",
        units::bytes_delta(anon),
        units::rate(rss_anon.rate_per_s),
        units::bytes_delta(python)
    );
    out.push(Finding {
        kind: Kind::NativeHeap,
        summary,
        rate_bytes_per_s: rate,
        informational: false,
        steady: window.steady,
        evidence: Evidence::Native(NativeEvidence {
            rss_anon: *rss_anon,
            python_bytes_delta: Some(python),
            unexplained_bytes: unexplained,
            heap_mapped: *heap_size,
            anon_mapped: *anon_mmap_size,
            allocator: obs.python.as_ref().and_then(|p| p.allocator.clone()),
            hint: "memory allocated by C code (an extension, ctypes, a library) and never freed; \
                   find the call site with `memray run --native` or valgrind"
                .into(),
        }),
        next: vec![
            format!("memsleuth native {} --probe", obs.pid),
            "memray run --native your_app.py   (or: valgrind --leak-check=full python your_app.py)"
                .into(),
        ],
    });
}

/// Signals no finding covers, as notes.
pub fn other_signals(signals: &[Signal], notes: &mut Vec<String>) {
    for s in signals {
        match s {
            Signal::VirtualOnly { vm_size, .. } => notes.push(format!(
                "Address space grows ({} VmSize) without RSS following: reserved, untouched memory.",
                units::bytes_delta(vm_size.delta)
            )),
            Signal::SwapInsteadOfFree { vm_swap, .. } => notes.push(format!(
                "Swap grows ({}) while RSS falls: memory is pushed out, not freed.",
                units::bytes_delta(vm_swap.delta)
            )),
            _ => {}
        }
    }
}

/// High but flat: much of the memory is free inside the allocators.
pub fn retention(obs: &Observation) -> Option<Finding> {
    let alloc = obs.python.as_ref()?.allocator.clone()?;
    let last = obs.samples.last()?;
    let rss = last.status.vm_rss;
    let malloc_free = alloc.mallinfo.as_ref().map(|m| m.fordblks);
    let pymalloc_idle = alloc.pymalloc.as_ref().and_then(|p| p.idle_bytes());
    let retained = malloc_free.unwrap_or(0) + pymalloc_idle.unwrap_or(0);
    if retained < MIN_RETAINED || (retained as f64) < rss as f64 * MIN_RETAINED_SHARE {
        return None;
    }
    let peak = last.status.vm_hwm;
    let summary = format!(
        "memory is high but flat: {} of the {} RSS is free inside the allocators (peak {})",
        units::bytes(retained),
        units::bytes(rss),
        units::bytes(peak)
    );
    Some(Finding {
        kind: Kind::AllocatorRetention,
        summary,
        rate_bytes_per_s: 0.0,
        informational: true,
        steady: true,
        evidence: Evidence::Retention(RetentionEvidence {
            rss_bytes: rss,
            rss_peak_bytes: peak,
            malloc_free_bytes: malloc_free,
            pymalloc_idle_bytes: pymalloc_idle,
            retained_bytes: retained,
            allocator: alloc,
            hint: "freed memory the allocators keep: malloc_trim(0) returns glibc's; \
                   MALLOC_ARENA_MAX=2 limits per-thread arenas; PYTHONMALLOC=malloc bypasses pymalloc"
                .into(),
        }),
        next: vec![format!("memsleuth native {} --probe", obs.pid)],
    })
}
