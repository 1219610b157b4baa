//! `--heap N`: censuses of the watched processes' heaps, read from outside
//! with the read-only heap reader ([`crate::heap`]), in a thread of their
//! own so a slow census never delays the /proc sampling.
//!
//! Nothing runs in the targets and nothing pauses them: the reader walks
//! the collector's lists with `process_vm_readv` while the process runs and
//! rejects what it cannot validate (a torn list node counts as skipped).
//! Why not [`crate::heap::read`], which `types` and doctor use: it copies
//! the target's writable memory (pausing it for the copy by default), so a
//! long-running exporter would pause production processes every interval
//! and hold a copy as large as the largest heap; read lazily, the
//! exporter's memory stays bounded by the number of processes.
//! Processes the reader cannot decode (an unknown or free-threaded build, a
//! missing symbol) are skipped, said once in the log and counted; they keep
//! their /proc metrics.
//!
//! Budget: one process at a time, the one whose census is oldest; at most
//! one census per process per interval; each census stopped after
//! [`CENSUS_TIMEOUT`]; and after a census that used d seconds of CPU the
//! thread rests d × (1 / [`CPU_SHARE`] − 1), so censuses take at most that
//! share of one core whatever the number and size of the processes (big
//! fleets and big heaps simply get censuses less often).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Shared, log};
use crate::analysis::census::Census;
use crate::analysis::gcstate::GcBasics;
use crate::analysis::watch::HeapPoint;
use crate::heap::space::{AddressSpace, LiveLazy};
use crate::heap::{CensusOptions, HeapError, Interpreter, census, gcstate, locate_running};
use crate::process::Process;
use crate::python::PythonProcess;

/// Most of one core the census thread may use.
pub const CPU_SHARE: f64 = 0.10;
/// A census still running after this is abandoned (`heap_timeout`).
pub const CENSUS_TIMEOUT: Duration = Duration::from_secs(10);

/// A process the sampler watches, offered to the census thread.
#[derive(Clone)]
pub struct Candidate {
    pub pid: u32,
    pub start_ticks: u64,
    pub py: PythonProcess,
}

/// One finished census, for the sampler to put in the process's window.
pub struct Done {
    pub pid: u32,
    pub start_ticks: u64,
    pub point: HeapPoint,
    /// Unix seconds.
    pub timestamp: f64,
    pub duration_s: f64,
    pub gc_enabled: Option<bool>,
    pub garbage: Option<u64>,
}

/// What the sampler and the census thread exchange.
#[derive(Default)]
pub struct Mailbox {
    candidates: Vec<Candidate>,
    done: Vec<Done>,
}

/// The sampler's end.
#[derive(Clone)]
pub struct Heap {
    mailbox: Arc<Mutex<Mailbox>>,
}

impl Heap {
    /// Starts the census thread. `t0` is the samples' time origin.
    pub fn start(interval: f64, t0: Instant, shared: Arc<Shared>) -> std::io::Result<Heap> {
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let m = mailbox.clone();
        std::thread::Builder::new()
            .name("heap-census".into())
            .spawn(move || {
                Worker {
                    mailbox: m,
                    interval: Duration::from_secs_f64(interval),
                    t0,
                    shared,
                    state: HashMap::new(),
                }
                .run()
            })?;
        Ok(Heap { mailbox })
    }

    /// Replaces the set of processes to take censuses of; returns the
    /// censuses finished since the last call.
    pub fn exchange(&self, candidates: Vec<Candidate>) -> Vec<Done> {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        m.candidates = candidates;
        std::mem::take(&mut m.done)
    }
}

enum State {
    Ready {
        /// Located on the first census.
        interp: Option<Box<Interpreter>>,
        last: Option<Instant>,
        /// Failure reasons already said in the log for this process.
        logged: Vec<&'static str>,
    },
    /// The reader cannot decode this process; never tried again.
    Unsupported,
}

struct Worker {
    mailbox: Arc<Mutex<Mailbox>>,
    interval: Duration,
    t0: Instant,
    shared: Arc<Shared>,
    /// By (pid, start time): forgotten when the sampler stops offering it.
    state: HashMap<(u32, u64), State>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let candidates = {
                let m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
                m.candidates.clone()
            };
            let offered: HashSet<(u32, u64)> =
                candidates.iter().map(|c| (c.pid, c.start_ticks)).collect();
            self.state.retain(|k, _| offered.contains(k));
            let Some(c) = self.next(&candidates) else {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            };
            let cpu = thread_cpu();
            let done = self.take(&c);
            // CPU time, not wall time: on a busy machine a census waits for
            // a core longer than it uses one.
            let spent = thread_cpu().saturating_sub(cpu);
            if let Some(done) = done {
                let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
                // Bounded: the sampler drains every interval; if it stalls,
                // keep only the newest census per process.
                m.done.retain(|d| d.pid != done.pid);
                m.done.push(done);
            }
            std::thread::sleep(spent.mul_f64(1.0 / CPU_SHARE - 1.0));
        }
    }

    /// The candidate whose census is due and oldest (never taken first).
    fn next(&self, candidates: &[Candidate]) -> Option<Candidate> {
        candidates
            .iter()
            .filter_map(|c| match self.state.get(&(c.pid, c.start_ticks)) {
                None => Some((None, c)),
                Some(State::Unsupported) => None,
                Some(State::Ready { last, .. }) => match last {
                    Some(t) if t.elapsed() < self.interval => None,
                    _ => Some((*last, c)),
                },
            })
            .min_by_key(|(last, _)| *last)
            .map(|(_, c)| c.clone())
    }

    fn take(&mut self, c: &Candidate) -> Option<Done> {
        let key = (c.pid, c.start_ticks);
        let live = LiveLazy { pid: c.pid };
        let State::Ready {
            interp,
            last,
            logged,
        } = self.state.entry(key).or_insert(State::Ready {
            interp: None,
            last: None,
            logged: Vec::new(),
        })
        else {
            return None;
        };
        *last = Some(Instant::now());
        let interp = match interp {
            Some(i) => i,
            None => match locate_running(&live, &c.py) {
                Ok(i) => interp.insert(Box::new(i)),
                Err(e) if unsupported(&e) => {
                    self.state.insert(key, State::Unsupported);
                    self.shared.error("heap_unsupported");
                    log(&format!(
                        "pid {}: no census of its heap ({e}); its /proc metrics go on",
                        c.pid
                    ));
                    return None;
                }
                Err(e) => {
                    fail(&self.shared, c.pid, logged, "heap_error", &e.to_string());
                    return None;
                }
            },
        };
        let started = Instant::now();
        let space = Deadline::new(&live, started + CENSUS_TIMEOUT);
        let result = census(&space, interp, &CensusOptions::default());
        let duration_s = started.elapsed().as_secs_f64();
        let gc = gcstate::read(&live, interp).ok();
        let (reason, message) = match result {
            Ok(_) if space.expired() => (
                "heap_timeout",
                format!(
                    "the census took over {} s and was abandoned",
                    CENSUS_TIMEOUT.as_secs()
                ),
            ),
            Ok(hc) if let Some((name, size)) = implausible(&hc.census, c.pid) => (
                "heap_torn",
                format!(
                    "`{name}` came out at {size} bytes, more than the whole address space \
                     (an object changed while it was read); the census was dropped"
                ),
            ),
            Ok(hc) if hc.collecting => (
                "heap_torn",
                "a garbage collection was running during the census (objects it was moving \
                 were missed); the census was dropped"
                    .to_string(),
            ),
            Ok(mut hc) => {
                hc.census.ids = None;
                let gc_enabled = gc.as_ref().and_then(|g| g.enabled);
                let garbage = gc.as_ref().and_then(|g| g.garbage_len);
                return Some(Done {
                    pid: c.pid,
                    start_ticks: c.start_ticks,
                    point: HeapPoint {
                        t: started.duration_since(self.t0).as_secs_f64() + duration_s / 2.0,
                        census: hc.census,
                        gc: gc.map(|g| basics(&g)),
                    },
                    timestamp: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                    duration_s,
                    gc_enabled,
                    garbage,
                });
            }
            Err(_) if !std::path::Path::new(&format!("/proc/{}", c.pid)).exists() => {
                // Exited during the census: the sampler says so on its next pass.
                self.shared.error("process_exited");
                return None;
            }
            Err(e) => ("heap_error", e.to_string()),
        };
        fail(&self.shared, c.pid, logged, reason, &message);
        None
    }
}

/// Counts a failed census; says so in the log the first time each reason
/// occurs for a process (a process that keeps failing does not flood the
/// log; the counter keeps counting).
fn fail(
    shared: &Shared,
    pid: u32,
    logged: &mut Vec<&'static str>,
    reason: &'static str,
    message: &str,
) {
    shared.error(reason);
    if !logged.contains(&reason) {
        logged.push(reason);
        log(&format!(
            "pid {pid}: census failed: {message} (said once; counted as {reason})"
        ));
    }
}

/// A row larger than the process's whole address space: the census read
/// an object in a transient state (a list being sorted has `allocated`
/// -1) or torn by a concurrent change, and its figures cannot be trusted.
fn implausible(census: &Census, pid: u32) -> Option<(String, u64)> {
    let limit = Process::unchecked(pid).status().ok()?.vm_size.max(1 << 20);
    census
        .rows
        .iter()
        .find(|r| r.size > limit)
        .map(|r| (r.name.clone(), r.size))
}

/// CPU time of the calling thread (user + system: the reads are syscalls).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Errors that will not go away for this process.
fn unsupported(e: &HeapError) -> bool {
    matches!(
        e,
        HeapError::UnknownVersion
            | HeapError::Unsupported(_)
            | HeapError::FreeThreaded(_)
            | HeapError::MissingSymbol { .. }
    )
}

/// The collector state as doctor's rules read it. Where the reader cannot
/// see whether the collector is enabled (2.7, 3.6), it counts as enabled:
/// the exporter never flags what it did not see.
fn basics(g: &gcstate::GcReading) -> GcBasics {
    let debug = g.debug.unwrap_or(0);
    GcBasics {
        enabled: g.enabled.unwrap_or(true),
        thresholds: g.thresholds.iter().map(|&v| i64::from(v)).collect(),
        count: g.counts.iter().map(|&v| i64::from(v)).collect(),
        debug: u64::from(debug),
        saveall: debug & gcstate::DEBUG_SAVEALL != 0,
        garbage_len: g.garbage_len.unwrap_or(0),
        ..GcBasics::default()
    }
}

/// An address space that stops answering at a deadline, so a census of a
/// huge (or hostile) heap ends soon after it, whatever the walk is doing.
struct Deadline<'a> {
    inner: &'a dyn AddressSpace,
    until: Instant,
    reads: Cell<u32>,
    expired: Cell<bool>,
}

impl<'a> Deadline<'a> {
    fn new(inner: &'a dyn AddressSpace, until: Instant) -> Deadline<'a> {
        Deadline {
            inner,
            until,
            reads: Cell::new(0),
            expired: Cell::new(false),
        }
    }

    fn expired(&self) -> bool {
        self.expired.get()
    }

    fn check(&self) -> bool {
        if self.expired.get() {
            return false;
        }
        let n = self.reads.get().wrapping_add(1);
        self.reads.set(n);
        if n.is_multiple_of(256) && Instant::now() >= self.until {
            self.expired.set(true);
            return false;
        }
        true
    }
}

impl AddressSpace for Deadline<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.check() && self.inner.read(addr, buf)
    }

    fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        if self.check() {
            self.inner.slice(addr, len)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Zeros;
    impl AddressSpace for Zeros {
        fn read(&self, _addr: u64, buf: &mut [u8]) -> bool {
            buf.fill(0);
            true
        }
    }

    #[test]
    fn deadline_stops_reads() {
        let z = Zeros;
        let d = Deadline::new(&z, Instant::now() + Duration::from_secs(3600));
        let mut b = [1u8; 8];
        assert!((0..1000).all(|_| d.read(0, &mut b)));
        assert!(!d.expired());
        let d = Deadline::new(&z, Instant::now());
        let ok = (0..1000).filter(|_| d.read(0, &mut b)).count();
        assert_eq!(ok, 255);
        assert!(d.expired());
        assert_eq!(d.read_u64(0), None);
    }

    #[test]
    fn unknown_collector_state_counts_as_enabled() {
        let g = gcstate::GcReading {
            enabled: None,
            debug: Some(gcstate::DEBUG_SAVEALL),
            thresholds: [700, 10, 10],
            counts: [5, 0, 0],
            collecting: None,
            garbage_len: None,
            garbage_types: Vec::new(),
        };
        let b = basics(&g);
        assert!(b.enabled && b.saveall);
        assert_eq!((b.thresholds[0], b.garbage_len), (700, 0));
    }
}
