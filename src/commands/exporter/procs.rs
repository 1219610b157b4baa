//! One sampling pass: find the Python processes (as `memsleuth ps` does,
//! but detecting each process once, by pid and start time), sample each
//! from /proc, and judge its window.
//!
//! A pid is identified with its start time, so a pid reused by a new
//! process starts a new window (and a new series). Processes that are not
//! Python are remembered too, and looked at again when their name changes
//! (an exec) or every [`RECHECK_PASSES`] passes (an embedded interpreter
//! loaded late).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use regex::Regex;

use super::heap::{Candidate, Done, Heap};
use super::{Shared, cgroup, log};
use crate::analysis::watch::{Figures, Watch};
use crate::commands::ps::looks_like_python;
use crate::process::sample::{Sample, Want};
use crate::process::{ProcError, Process, all_pids};
use crate::python::{self, BuildKind, PythonProcess};
use crate::render::prometheus::fleet::{HeapMetrics, ProcessMetrics};

const RECHECK_PASSES: u64 = 20;

enum Known {
    Python(Box<Tracked>),
    Other { comm: String, pass: u64 },
    Unreadable { pass: u64 },
}

struct Tracked {
    start_ticks: u64,
    start_unix: u64,
    comm: String,
    python: String,
    build: &'static str,
    py: PythonProcess,
    watch: Watch,
    /// The last census's figures (its rows are in `watch`).
    heap: Option<HeapMetrics>,
}

pub struct Fleet {
    known: HashMap<u32, (u64, Known)>,
    filter: Option<Regex>,
    /// `--heap N`: the census thread, and how many types to export.
    heap: Option<Heap>,
    heap_top: usize,
    shared: Arc<Shared>,
    t0: Instant,
    boot_time: u64,
    clock_ticks: u64,
    passes: u64,
    me: u32,
}

impl Fleet {
    pub fn new(
        filter: Option<Regex>,
        heap_top: usize,
        interval: f64,
        shared: Arc<Shared>,
    ) -> std::io::Result<Fleet> {
        let t0 = Instant::now();
        let heap = if heap_top > 0 {
            Some(Heap::start(interval, t0, shared.clone())?)
        } else {
            None
        };
        Ok(Fleet {
            known: HashMap::new(),
            filter,
            heap,
            heap_top,
            shared,
            t0,
            boot_time: boot_time(),
            clock_ticks: crate::process::System::read().clock_ticks,
            passes: 0,
            me: std::process::id(),
        })
    }

    /// Hands the census thread the processes watched now and files the
    /// censuses it finished into their windows (at the start and the end of
    /// every pass).
    fn exchange_heap(&mut self) {
        let Some(heap) = &self.heap else { return };
        let candidates = self
            .known
            .iter()
            .filter_map(|(pid, (_, k))| match k {
                Known::Python(t) => Some(Candidate {
                    pid: *pid,
                    start_ticks: t.start_ticks,
                    py: t.py.clone(),
                }),
                _ => None,
            })
            .collect();
        for done in heap.exchange(candidates) {
            if let Some((_, Known::Python(t))) = self.known.get_mut(&done.pid)
                && t.start_ticks == done.start_ticks
            {
                t.file_census(done);
            }
        }
    }

    /// Samples every Python process; returns their metrics and the number
    /// of Python-looking processes it may not read.
    pub fn pass(&mut self) -> (Vec<ProcessMetrics>, usize) {
        self.passes += 1;
        self.exchange_heap();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for pid in all_pids() {
            if pid == self.me {
                continue;
            }
            let proc = Process::unchecked(pid);
            let Ok(stat) = proc.stat() else { continue };
            if stat.is_kernel_thread() || stat.state == 'Z' || stat.state == 'X' {
                continue;
            }
            seen.push(pid);
            let fresh = match self.known.get(&pid) {
                Some((start, Known::Python(_))) => *start != stat.start_time,
                Some((start, Known::Other { comm, pass })) => {
                    *start != stat.start_time
                        || *comm != stat.comm
                        || self.passes - pass >= RECHECK_PASSES
                }
                Some((start, Known::Unreadable { pass })) => {
                    *start != stat.start_time || self.passes - pass >= RECHECK_PASSES
                }
                None => true,
            };
            if fresh {
                let known = self.detect(&proc, &stat.comm, stat.start_time);
                self.known.insert(pid, (stat.start_time, known));
            }
            if let Some(m) = self.sample_tracked(pid, stat.start_time) {
                out.push(m);
            }
        }
        // Forget vanished pids (their windows go with them).
        let shared = &self.shared;
        self.known.retain(|pid, (_, k)| {
            let alive = seen.binary_search(pid).is_ok();
            if !alive && let Known::Python(t) = k {
                shared.exited();
                log(&format!("pid {pid} ({}) exited; its series end", t.comm));
            }
            alive
        });
        let unreadable = self
            .known
            .values()
            .filter(|(_, k)| matches!(k, Known::Unreadable { .. }))
            .count();
        // Again at the end, so a process found in this pass gets its first
        // census now rather than an interval later.
        self.exchange_heap();
        (out, unreadable)
    }

    /// Samples a watched process; on failure says why in the log, counts
    /// it, and stops watching (a process that exited, or one it may no
    /// longer read, until its next recheck).
    fn sample_tracked(&mut self, pid: u32, start_ticks: u64) -> Option<ProcessMetrics> {
        let Some((_, Known::Python(t))) = self.known.get_mut(&pid) else {
            return None;
        };
        let proc = Process::unchecked(pid);
        let e = match sample_one(&proc, t, self.t0, self.heap_top) {
            Ok(m) => return Some(m),
            Err(e) => e,
        };
        let reason = reason_of(&e);
        self.shared.error(reason);
        if reason == "process_exited" {
            log(&format!(
                "pid {pid} ({}) exited while it was sampled; its series end",
                t.comm
            ));
            self.shared.exited();
            self.known.remove(&pid);
        } else {
            log(&format!("pid {pid} ({}): {e}; no longer watched", t.comm));
            let pass = self.passes;
            self.known
                .insert(pid, (start_ticks, Known::Unreadable { pass }));
        }
        None
    }

    fn detect(&self, proc: &Process, comm: &str, start_ticks: u64) -> Known {
        let pass = self.passes;
        let other = || Known::Other {
            comm: comm.to_string(),
            pass,
        };
        let maps = match proc.maps() {
            Ok(m) => m,
            Err(e) if e.is_gone() => return other(),
            Err(e) => {
                if !looks_like_python(comm) {
                    return other();
                }
                self.shared.error("permission_denied");
                log(&format!("pid {} ({comm}) is not watched: {e}", proc.pid));
                return Known::Unreadable { pass };
            }
        };
        let py = match python::detect(proc, &maps) {
            Ok(Some(py)) => py,
            _ => return other(),
        };
        if let Some(re) = &self.filter
            && !re.is_match(&proc.cmdline())
        {
            return other();
        }
        let version = py
            .version
            .map(|v| (u32::from(v.major), u32::from(v.minor), u32::from(v.micro)));
        let python = py
            .version
            .map_or_else(|| "unknown".to_string(), |v| v.to_string());
        log(&format!(
            "watching pid {} ({comm}, Python {python})",
            proc.pid
        ));
        Known::Python(Box::new(Tracked {
            start_ticks,
            start_unix: self.boot_time + start_ticks / self.clock_ticks.max(1),
            comm: comm.to_string(),
            python,
            build: match py.build {
                BuildKind::SharedLib => "shared_lib",
                BuildKind::Static => "static",
            },
            watch: Watch::new(version.unwrap_or((0, 0, 0))),
            py,
            heap: None,
        }))
    }
}

impl Tracked {
    fn file_census(&mut self, done: Done) {
        self.heap = Some(HeapMetrics {
            timestamp: done.timestamp,
            duration_s: done.duration_s,
            objects: done.point.census.count,
            bytes: done.point.census.size,
            types: Vec::new(),
            gc_enabled: done.gc_enabled,
            garbage: done.garbage,
        });
        self.watch.push_heap(done.point);
    }
}

fn sample_one(
    proc: &Process,
    t: &mut Tracked,
    t0: Instant,
    heap_top: usize,
) -> Result<ProcessMetrics, ProcError> {
    let want = Want {
        rollup: true,
        maps: true,
        fd_kinds: false,
    };
    let sample = Sample::collect(proc, t0, want)?;
    // The pid may have been reused between discovery and sampling.
    if proc.stat()?.start_time != t.start_ticks {
        return Err(ProcError::Exited { pid: proc.pid });
    }
    let figures = Figures::of(&sample);
    t.watch.push(sample);
    let assessment = t.watch.assess(proc.pid);
    Ok(ProcessMetrics {
        pid: proc.pid,
        start_time: t.start_unix,
        comm: t.comm.clone(),
        python: t.python.clone(),
        build: t.build,
        figures,
        assessment,
        memory_limit: cgroup::memory_limit(proc.pid),
        heap: t.heap.as_ref().map(|h| HeapMetrics {
            types: t.watch.top_types(heap_top),
            ..h.clone()
        }),
    })
}

fn reason_of(e: &ProcError) -> &'static str {
    if e.is_gone() {
        "process_exited"
    } else if matches!(e, ProcError::PermissionDenied { .. }) {
        "permission_denied"
    } else {
        "read_error"
    }
}

/// Boot time, Unix seconds (`btime` in /proc/stat).
fn boot_time() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::atomic::Ordering;

    /// A target that exits between discovery and sampling: one log line,
    /// `process_exited` and the exit counter, no metrics, no panic; the
    /// exporter goes on.
    #[test]
    fn a_process_that_exits_while_sampled_is_counted_and_forgotten() {
        let Ok(mut child) = Command::new("python3")
            .args(["-c", "import time; time.sleep(60)"])
            .stdin(Stdio::null())
            .spawn()
        else {
            eprintln!("skipping: no python3 on PATH");
            return;
        };
        let pid = child.id();
        let shared = Arc::new(Shared::new(1.0));
        let mut fleet = Fleet::new(None, 0, 1.0, shared.clone()).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let start = loop {
            let (found, _) = fleet.pass();
            if let Some(m) = found.iter().find(|m| m.pid == pid) {
                assert!(m.figures.rss > 0);
                break fleet.known[&pid].0;
            }
            assert!(Instant::now() < deadline, "python3 never watched");
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(fleet.sample_tracked(pid, start).is_none());
        let exited = reason_index("process_exited");
        assert_eq!(shared.errors[exited].load(Ordering::Relaxed), 1);
        assert_eq!(shared.exits.load(Ordering::Relaxed), 1);
        assert!(!fleet.known.contains_key(&pid));
        let (after, unreadable) = fleet.pass();
        assert!(after.iter().all(|m| m.pid != pid));
        assert_eq!(unreadable, 0);
    }

    fn reason_index(r: &str) -> usize {
        super::super::REASONS.iter().position(|x| *x == r).unwrap()
    }
}
