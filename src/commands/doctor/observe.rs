//! The watching: a /proc sampler thread (several samples a second, never
//! touching the interpreter) and, on the main thread, the heap: censuses
//! and collector reads from outside ([`super::outside`], the default where
//! the reader supports the build) and one agent session for what needs the
//! interpreter — thread names and stacks, what new objects hold, and at
//! the end the allocators' figures and the retainer paths of the top
//! grower. With `--inject` (or an unsupported build) the agent also takes
//! the censuses and reads gc.
//!
//! The GIL budget: everything the session makes the target run stays below
//! [`GIL_SHARE`] of the observation. With the agent's censuses the first
//! one is measured; the number of later ones (and whether they are
//! complete or gc-only, and whether `why` runs) follows from what is left.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::progress::Progress;
use crate::analysis::doctor::rates::{StackSample, thread_stacks};
use crate::analysis::doctor::{Observation, Skipped};
use crate::analysis::gcstate::CollectRaw;
use crate::process::Process;
use crate::process::sample::{Sample, Want};

/// Most of the observation the target may spend in our code.
pub const GIL_SHARE: f64 = 0.02;
/// /proc sample period.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Censuses wanted (the first included) when the budget allows.
pub(super) const MAX_CENSUSES: usize = 5;
/// A complete census costs about this many gc-only ones (measured here:
/// 3 ms vs 32-42 ms on a 10k-object heap).
pub(super) const COMPLETE_FACTOR: f64 = 15.0;
/// gc counters read this often between censuses.
pub(super) const GC_EVERY: f64 = 2.0;
/// Reprs of new objects: types, per type.
pub(super) const REPR_TYPES: usize = 3;
pub(super) const REPRS_PER_TYPE: usize = 3;
pub(super) const WHY_SAMPLES: usize = 10;
/// gc.garbage entries looked at to tell its types (a sample of a big one).
pub(super) const GARBAGE_SCAN: u64 = 20_000;
pub(super) const WHY_DEPTH: usize = 30;

pub struct Settings {
    pub duration: f64,
    pub allow_collect: bool,
    pub progress: bool,
    /// Census with the agent even where the heap can be read from outside.
    pub inject: bool,
}

/// What the report needs besides the observation.
#[derive(Default)]
pub struct Extras {
    pub version: Option<String>,
    pub method: Option<String>,
    pub attach_s: f64,
    pub gil_s: f64,
    pub census_mode: &'static str,
    pub census_max_hold_s: f64,
    pub collect: Option<CollectRaw>,
    pub why: Option<crate::render::why::WhyReport>,
    /// GIL time by part of the investigation (attach, censuses, ...).
    pub gil_parts: std::collections::BTreeMap<&'static str, f64>,
    /// What was read from outside (censuses, collector), when it was.
    pub outside: Option<super::outside::OutsideStats>,
}

/// Thread names from /proc (for thread findings without the agent).
fn comm_names(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .take(100_000)
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Open fds by target, most common first ("pipe", "socket" collapsed).
fn fd_targets(proc: &Process) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for (_, t) in crate::process::fds::list(proc).unwrap_or_default() {
        let key = if t.starts_with("pipe:") {
            "pipe".to_string()
        } else if t.starts_with("socket:") {
            "socket".to_string()
        } else {
            t.chars().take(300).collect()
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(20);
    v
}

/// Thread stacks are read from smaps this often (a page-table walk like
/// smaps_rollup's, so not at every sample).
const STACKS_EVERY: Duration = Duration::from_secs(1);

/// The sampler: runs until `stop`, pushing samples (and thread-stack
/// readings) and drawing progress.
fn sampler(
    proc: Process,
    t0: Instant,
    end: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stacks: Arc<Mutex<Vec<StackSample>>>,
    stop: Arc<AtomicBool>,
    mut progress: Progress,
) {
    let mut next_stacks = Instant::now();
    let want = Want {
        rollup: true,
        maps: true,
        fd_kinds: true,
    };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            match Sample::collect(&proc, t0, want) {
                Ok(s) => {
                    let rss = s.status.vm_rss;
                    if let Ok(mut v) = samples.lock() {
                        v.push(s);
                    }
                    progress.draw(now.saturating_duration_since(t0), rss);
                }
                Err(_) => break, // the process is gone
            }
            if now >= next_stacks || now >= end {
                let t = t0.elapsed().as_secs_f64();
                if let Ok(maps) = proc.smaps()
                    && let Ok(mut v) = stacks.lock()
                {
                    v.push(thread_stacks(&maps, &stack_pointers(proc.pid), t));
                }
                next_stacks = now + STACKS_EVERY;
            }
            next += SAMPLE_EVERY;
            if now >= end {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20).min(next.saturating_duration_since(now)));
    }
    progress.clear();
}

/// Most threads whose stack pointer is read per smaps reading.
const MAX_SP_THREADS: usize = 4096;

/// The stack pointers of the process's threads but the main one, from
/// /proc/PID/task/TID/syscall (threads on a CPU right now have none).
pub(super) fn stack_pointers(pid: u32) -> Vec<u64> {
    use crate::inject::threads::Activity;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&tid| tid != pid)
        .take(MAX_SP_THREADS)
        .filter_map(|tid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
            match Activity::parse(&text) {
                Activity::Syscall { sp, .. } | Activity::NotInSyscall { sp, .. } => Some(sp),
                _ => None,
            }
        })
        .collect()
}

pub(super) fn wait_until(at: Instant) {
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

pub fn observe(
    pid: u32,
    attach: &crate::cli::AttachArgs,
    settings: &Settings,
) -> anyhow::Result<(Observation, Extras)> {
    let proc = crate::commands::open(pid)?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(settings.duration);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stacks = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let censuses_done = Arc::new(AtomicUsize::new(0));
    let progress = Progress::new(
        settings.progress,
        settings.duration,
        Arc::clone(&censuses_done),
    );
    let comm_first = comm_names(pid);
    let handle = {
        let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
        let stacks = Arc::clone(&stacks);
        let proc = Process::unchecked(pid);
        std::thread::Builder::new()
            .name("memsleuth-sampler".into())
            .spawn(move || sampler(proc, t0, end, samples, stacks, stop, progress))?
    };

    let mut obs = Observation {
        pid,
        ..Default::default()
    };
    let mut extras = Extras {
        census_mode: "complete",
        ..Default::default()
    };
    // The heap from outside wherever the reader supports this build.
    let mut outside = if settings.inject {
        None
    } else {
        match super::outside::Outside::open(pid) {
            Ok(o) => Some(o),
            Err(e) => {
                obs.skipped.push(Skipped {
                    part: "reading the heap from outside".into(),
                    reason: format!(
                        "{}; the agent censuses it instead",
                        crate::commands::error_sentence(&e).trim_end_matches('.')
                    ),
                });
                None
            }
        }
    };
    match crate::inject::attach::attach(pid, &attach.options()) {
        Ok(mut attached) => {
            let watched = super::session::watch(
                &mut attached,
                &proc,
                t0,
                end,
                settings,
                &samples,
                &censuses_done,
                &mut obs,
                &mut extras,
                outside.as_mut(),
            );
            if extras.gil_s == 0.0 {
                extras.gil_s = attached.session.gil_used_s + attached.session.hello.gil_s.max(0.0);
            }
            let detached = attached.detach();
            if let Err(e) = watched {
                obs.skipped.push(Skipped {
                    part: "python heap".into(),
                    reason: format!(
                        "the session failed part-way: {}",
                        crate::commands::error_sentence(&e)
                    ),
                });
            }
            if let Err(e) = detached {
                obs.skipped.push(Skipped {
                    part: "detach".into(),
                    reason: format!("detaching failed: {e}"),
                });
            }
        }
        Err(e) => match outside.as_mut() {
            // The heap from outside still: censuses, collector, garbage.
            Some(o) => {
                obs.skipped.push(Skipped {
                    part: "the agent (thread names, allocators, retainer paths, what new \
                           objects hold)"
                        .into(),
                    reason: crate::commands::error_sentence(&e.into()),
                });
                extras.version = Some({
                    let v = o.version();
                    format!("{}.{}.{}", v.0, v.1, v.2)
                });
                extras.method = Some("none: read from outside".into());
                extras.census_mode = "complete";
                match super::outside::alone(o, t0, end, &censuses_done) {
                    Ok(py) => obs.python = Some(py),
                    Err(e) => obs.skipped.push(Skipped {
                        part: "python heap from outside".into(),
                        reason: crate::commands::error_sentence(&e),
                    }),
                }
            }
            None => obs.skipped.push(Skipped {
                part: "python heap (censuses, gc, threads, allocators)".into(),
                reason: crate::commands::error_sentence(&e.into()),
            }),
        },
    }
    extras.outside = outside.map(|o| o.stats);
    // The /proc side runs to the end whatever happened to the session.
    while Instant::now() < end + SAMPLE_EVERY && !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = handle.join();
    obs.samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    obs.stacks = std::mem::take(&mut *stacks.lock().unwrap_or_else(|e| e.into_inner()));
    obs.segments = crate::process::sysvipc::read();
    obs.fd_targets = fd_targets(&proc);
    obs.comm_first = comm_first;
    obs.comm_last = comm_names(pid);
    Ok((obs, extras))
}
