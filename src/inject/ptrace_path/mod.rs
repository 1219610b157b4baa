//! The ptrace injection strategy: getting a piece of Python source run in the
//! target at a safe point, with no gdb and no malloc of ours.
//!
//! In order of preference:
//!
//! 1. **Direct.** A thread (the main thread first) blocked in a safe syscall
//!    ([`threads::is_safe_syscall`]) has released the GIL and holds no
//!    allocator or loader lock. If it is a Python thread that does not hold
//!    the GIL, and no other thread holds the GIL while stuck (blocked in a
//!    syscall, or running C code), we call `PyGILState_Ensure`,
//!    `PyRun_SimpleString(page)` and `PyGILState_Release` on it, with the code
//!    in a page mapped by the target's own `mmap`, then unmap the page.
//! 2. **Pending call.** Otherwise `Py_AddPendingCall(PyRun_SimpleString, page)`
//!    is called from a seized thread; it takes no GIL and no malloc, and the
//!    main thread runs it at its next eval-breaker check. The page stays
//!    mapped: the call outlives the seize.
//! 3. **Nudge.** A main thread parked in a Python lock wait (Event.wait,
//!    Thread.join, Queue.get) never reaches an eval-breaker check, but on
//!    Python 3 a lock wait interrupted with EINTR runs the pending calls and
//!    waits again. So its futex wait is made to return EINTR (seize, set the
//!    saved syscall result, detach), and only when the wait is a Python lock
//!    wait: the innermost return address into the interpreter binary on its
//!    stack must lie in `PyThread_acquire_lock_timed` (2.7–3.13 locks) or
//!    `_PySemaphore_Wait` (3.13+ parking lot: PyMutex, PyEvent), and the
//!    futex word must not be inside a file mapping or the binaries' data
//!    (the GIL, malloc's main arena and loader locks live there). Python 2.7
//!    retries such waits without running pending calls: it is reported
//!    instead.
//!
//! While waiting for the pending call, threads that become eligible for (1)
//! are used. If nothing runs in time, [`PtraceError::NotReached`] says what
//! every thread does.
//!
//! **Whether a thread holds the GIL**, per version:
//! - 3.4+: `PyGILState_Check()`. A 0 is always right. A 1 is also what it
//!   says when GIL checking is off (subinterpreters), so it is confirmed: on
//!   3.5.2–3.11 `_PyThreadState_UncheckedGet()` is the global GIL holder and
//!   must equal `PyGILState_GetThisThreadState()`; on 3.12+ it (and 3.13's
//!   `PyThreadState_GetUnchecked`) is the calling thread's attached state,
//!   which must be non-NULL.
//! - 2.7: `PyGILState_GetThisThreadState()` (remote call) against the
//!   variable `_PyThreadState_Current` (read from memory).
//!
//! Before `PyGILState_Ensure` (which waits for the GIL, and cannot be
//! abandoned midway without leaving a phantom condition-variable waiter),
//! the holder must be one that lets go soon: nobody (≤ 3.11 tells directly),
//! or a thread seen in the bytecode loop (`_PyEval_EvalFrameDefault`), which
//! honours the drop request within the switch interval. A holder blocked in
//! a syscall, or never seen in the loop over 40 samples (C code), rules the
//! direct path out.
//!
//! **Caveat for callers:** a pending call queued just before the target
//! forks also sits in the child's queue, and a child that runs Python code
//! before exec (2.7's subprocess, multiprocessing's fork) runs it there.
//! `connected` must only accept the target itself (SO_PEERCRED pid), and the
//! page may only be unmapped once the target ran the code.

#![cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code, unused_imports, unused_variables)
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ptrace::{PtraceError, Result};
use super::remote::{self, Tracee};
use super::threads::{self, Activity, ThreadInfo, ThreadReport};
pub(super) use super::trace::trace;
use crate::process::Process;
use crate::process::maps::Mapping;
use crate::python::PythonProcess;

mod direct;
mod pending;
mod symbols;
#[cfg(test)]
mod tests;

use direct::Direct;
use pending::Parked;
use symbols::{Libc, PySyms, Range, find_libc, image_range, py_symbols};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct PtraceRequest<'a> {
    /// Python source, without a NUL (one is appended).
    pub code: &'a [u8],
    /// For everything: finding a safe point and the code's side effect.
    pub timeout: Duration,
}

impl<'a> PtraceRequest<'a> {
    pub fn new(code: &'a [u8]) -> PtraceRequest<'a> {
        PtraceRequest {
            code,
            timeout: Duration::from_secs(5),
        }
    }
}

/// How the code got to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PtraceMethod {
    /// Called on thread `tid`, parked in a safe syscall.
    Direct { tid: u32 },
    /// Run by the main thread as a pending call.
    Pending,
    /// Run as a pending call after the main thread's lock wait was
    /// interrupted (main thread `tid`).
    PendingNudged { tid: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtraceOutcome {
    pub method: PtraceMethod,
    /// The scratch page of a pending call that has run: still mapped in the
    /// target, to be unmapped with [`unmap_leftover`] when the session ends
    /// (safe because `connected` saw the target itself run the code, so the
    /// queued call that points at the page is consumed).
    pub leftover_page: Option<(u64, usize)>,
    /// A page a queued pending call still points to (the code ran another
    /// way first). It must stay mapped; its code was blanked so the late
    /// call runs nothing.
    pub stale_pending_page: Option<(u64, usize)>,
    /// Where the code was (for Direct without a queued call: already unmapped).
    pub scratch_page: (u64, usize),
}

/// Short calls (no Python code runs): mmap, GIL checks, Py_AddPendingCall.
const QUICK: Duration = Duration::from_secs(1);
/// Polling slice while waiting for a pending call.
const SLICE: Duration = Duration::from_millis(25);
/// A thread rejected for the direct path is looked at again after this.
const RECHECK: Duration = Duration::from_millis(400);
/// Bytes of stack read to recognise a lock wait.
const STACK_SCAN: usize = 8192;
/// At most this many nudges per injection, this far apart.
const MAX_NUDGES: u32 = 3;
const NUDGE_EVERY: Duration = Duration::from_millis(700);
/// A running GIL holder is sampled this often, this far apart, to see it in
/// the bytecode loop (≈30% of samples of a thread running Python code are
/// there; the rest are in the C functions bytecode calls).
const HOLDER_SAMPLES: usize = 40;
const HOLDER_SAMPLE_GAP: Duration = Duration::from_micros(500);
/// At most this many threads are probed for the GIL.
const MAX_PROBES: usize = 64;

/// Runs `req.code` in the target. `connected(d)` waits up to `d` for the
/// code's side effect and says whether it happened.
pub fn inject(
    proc: &Process,
    py: &PythonProcess,
    req: &PtraceRequest,
    connected: &mut dyn FnMut(Duration) -> bool,
) -> Result<PtraceOutcome> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    return inject_x86(proc, py, req, connected);
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    return Err(super::ptrace::unsupported_arch());
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn inject_x86(
    proc: &Process,
    py: &PythonProcess,
    req: &PtraceRequest,
    connected: &mut dyn FnMut(Duration) -> bool,
) -> Result<PtraceOutcome> {
    if req.code.contains(&0) {
        return Err(PtraceError::Unsupported(
            "the code to inject contains a NUL byte".into(),
        ));
    }
    let start = Instant::now();
    let deadline = start + req.timeout;
    trace(format_args!("pid {}: start", proc.pid));
    let ctx = Ctx::new(proc, py, deadline)?;
    trace(format_args!("pid {}: context ready", ctx.pid));
    let mut rejected: HashMap<u32, (Instant, String)> = HashMap::new();

    // (a) Direct, on a thread parked in a safe syscall.
    let list = threads::list(ctx.pid).map_err(|e| gone_or_io(ctx.pid, "list threads", e))?;
    for t in ctx.direct_candidates(&list) {
        match ctx.try_direct_or_skip(&t, req.code, None)? {
            Direct::Ran(page) => {
                return direct_outcome(connected, deadline, t.tid, page, None);
            }
            Direct::Ineligible(why) => {
                trace(format_args!("direct: thread {} not used: {why}", t.tid));
                rejected.insert(t.tid, (Instant::now(), why));
            }
        }
    }

    // (b) A pending call.
    let page = ctx.queue_pending(&list, req.code)?;
    trace(format_args!("pending call queued, page {:#x}", page.0));

    // (c) Wait, nudging the main thread out of a lock wait, and keep looking
    // for a direct opportunity.
    let mut nudges = 0u32;
    let mut last_nudge: Option<Instant> = None;
    let mut main_checked: Option<(Activity, Parked)> = None;
    let mut parked_27_since: Option<Instant> = None;
    let main_tid = ctx.pid;
    let mut list = list;
    loop {
        if let Some(main) = list.iter().find(|t| t.is_main)
            && matches!(
                main.activity.syscall_nr(),
                Some(threads::NR_FUTEX | threads::NR_RESTART_SYSCALL)
            )
        {
            // Look at the wait once per (syscall, sp, pc, futex word), and
            // again only to nudge.
            let may_nudge = !ctx.is_py2()
                && nudges < MAX_NUDGES
                && last_nudge.is_none_or(|t| t.elapsed() >= NUDGE_EVERY);
            let cached = main_checked
                .filter(|(seen, _)| *seen == main.activity)
                .map(|(_, p)| p);
            let parked = match cached {
                Some(Parked::Other) => Parked::Other,
                Some(Parked::PythonLock) if !may_nudge => Parked::PythonLock,
                _ => {
                    let (parked, nudged) = ctx.examine_main(may_nudge)?;
                    trace(format_args!(
                        "main thread {:?}: {parked:?}, nudged: {nudged}",
                        main.activity
                    ));
                    if nudged {
                        nudges += 1;
                        last_nudge = Some(Instant::now());
                        main_checked = None;
                    } else if parked != Parked::Moved {
                        main_checked = Some((main.activity, parked));
                    }
                    parked
                }
            };
            if parked == Parked::PythonLock && ctx.is_py2() {
                let since = *parked_27_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= (req.timeout / 4).min(Duration::from_secs(1)) {
                    let threads = ctx.reports(&list, &rejected);
                    return Err(PtraceError::MainParkedOnLock {
                        threads,
                        pending_page: Some(page),
                    });
                }
            }
        } else {
            parked_27_since = None;
        }
        for t in ctx.direct_candidates(&list) {
            if rejected
                .get(&t.tid)
                .is_some_and(|(at, _)| at.elapsed() < RECHECK)
            {
                continue;
            }
            // The pending call may have just run: do not run the code twice.
            if connected(Duration::ZERO) {
                return Ok(pending_outcome(nudges, main_tid, page));
            }
            match ctx.try_direct_or_skip(&t, req.code, Some(page))? {
                Direct::Ran(_) => {
                    // The queued call still points at the page: blank the
                    // code so it runs nothing, and keep the page mapped.
                    let _ = super::ptrace::write_mem(ctx.pid, page.0, &[0]);
                    return direct_outcome(connected, deadline, t.tid, page, Some(page));
                }
                Direct::Ineligible(why) => {
                    trace(format_args!("direct: thread {} not used: {why}", t.tid));
                    rejected.insert(t.tid, (Instant::now(), why));
                }
            }
        }
        let slice = SLICE.min(deadline.saturating_duration_since(Instant::now()));
        if connected(slice) {
            trace(format_args!("pending call ran after {:?}", start.elapsed()));
            return Ok(pending_outcome(nudges, main_tid, page));
        }
        if Instant::now() >= deadline {
            break;
        }
        list = threads::list(ctx.pid).map_err(|e| gone_or_io(ctx.pid, "list threads", e))?;
    }
    let list = threads::list(ctx.pid).map_err(|e| gone_or_io(ctx.pid, "list threads", e))?;
    Err(PtraceError::NotReached {
        threads: ctx.reports(&list, &rejected),
        after: start.elapsed(),
        pending_page: Some(page),
    })
}

/// After a direct call ran: wait for its side effect (at least 1 s) and
/// say how the code got in. `stale` is a pending call's page that must stay
/// mapped because the queued call still points at it.
fn direct_outcome(
    connected: &mut dyn FnMut(Duration) -> bool,
    deadline: Instant,
    tid: u32,
    page: (u64, usize),
    stale: Option<(u64, usize)>,
) -> Result<PtraceOutcome> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    if connected(wait) {
        Ok(PtraceOutcome {
            method: PtraceMethod::Direct { tid },
            leftover_page: None,
            stale_pending_page: stale,
            scratch_page: page,
        })
    } else {
        Err(PtraceError::NoSideEffect { tid, after: wait })
    }
}

/// The outcome when the pending call ran (its page stays to be unmapped).
fn pending_outcome(nudges: u32, main_tid: u32, page: (u64, usize)) -> PtraceOutcome {
    let method = if nudges > 0 {
        PtraceMethod::PendingNudged { tid: main_tid }
    } else {
        PtraceMethod::Pending
    };
    PtraceOutcome {
        method,
        leftover_page: Some(page),
        stale_pending_page: None,
        scratch_page: page,
    }
}

/// Unmaps a page left by a pending-call injection, from any thread of the
/// target (munmap takes no user-space lock).
pub fn unmap_leftover(proc: &Process, py: &PythonProcess, page: (u64, usize)) -> Result<()> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    return unmap_leftover_x86(proc, py, page);
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    return Err(super::ptrace::unsupported_arch());
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn unmap_leftover_x86(proc: &Process, py: &PythonProcess, page: (u64, usize)) -> Result<()> {
    let ctx = Ctx::new(proc, py, Instant::now() + Duration::from_secs(5))?;
    let list = threads::list(ctx.pid).map_err(|e| gone_or_io(ctx.pid, "list threads", e))?;
    let tid = ctx.quiet_thread(&list);
    let mut t = Tracee::seize(ctx.pid, tid, QUICK)?;
    remote::remote_munmap(&mut t, ctx.libc.munmap, page.0, page.1, QUICK)?;
    t.detach()
}

/// The run-time address of an exported function of the target's C library
/// (`None` if it has no such export).
pub fn libc_function(proc: &Process, name: &str) -> Result<Option<u64>> {
    let maps = proc.maps().map_err(|e| PtraceError::Io {
        op: "read maps".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let libc = find_libc(proc, &maps)?;
    Ok(libc.functions.iter().find(|f| f.2 == name).map(|f| f.0))
}

fn gone_or_io(pid: u32, op: &str, e: std::io::Error) -> PtraceError {
    if e.kind() == std::io::ErrorKind::NotFound {
        PtraceError::Gone { tid: pid }
    } else {
        PtraceError::Io {
            op: format!("{op} of process {pid}"),
            source: e,
        }
    }
}

struct Ctx<'a> {
    pid: u32,
    py: &'a PythonProcess,
    sym: PySyms,
    libc: Libc,
    /// Executable mappings of the interpreter binary.
    py_text: Vec<Range>,
    /// The interpreter binary's loaded image, including .bss.
    py_image: Option<Range>,
    maps: Vec<Mapping>,
    deadline: Instant,
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl<'a> Ctx<'a> {
    fn new(proc: &'a Process, py: &'a PythonProcess, deadline: Instant) -> Result<Ctx<'a>> {
        let maps = proc.maps().map_err(|e| {
            if e.is_gone() {
                PtraceError::Gone { tid: proc.pid }
            } else {
                PtraceError::Io {
                    op: "read maps".into(),
                    source: std::io::Error::other(e.to_string()),
                }
            }
        })?;
        trace(format_args!("maps read"));
        let sym = py_symbols(py)?;
        trace(format_args!("python symbols"));
        let libc = find_libc(proc, &maps)?;
        trace(format_args!("libc parsed"));
        let binary = py.binary.to_string_lossy();
        let py_text = maps
            .iter()
            .filter(|m| m.executable() && m.clean_path() == binary)
            .map(|m| (m.start, m.end))
            .collect();
        let py_image = py
            .elf()
            .zip(py.load_bias())
            .and_then(|(info, bias)| image_range(info, bias));
        Ok(Ctx {
            pid: proc.pid,
            py,
            sym,
            libc,
            py_text,
            py_image,
            maps,
            deadline,
        })
    }

    fn version(&self) -> Option<(u8, u8)> {
        self.py.version.map(|v| (v.major, v.minor))
    }

    fn is_py2(&self) -> bool {
        match self.version() {
            Some((major, _)) => major == 2,
            None => self.sym.check.is_none(),
        }
    }

    /// Whether `_PyThreadState_UncheckedGet` returns the global GIL holder.
    fn unchecked_get_is_global(&self) -> bool {
        self.version().is_some_and(|v| v < (3, 12))
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn quick(&self) -> Duration {
        QUICK.min(self.remaining()).max(Duration::from_millis(200))
    }

    /// What every thread does, with a GIL probe for each (bounded), and why
    /// it was not used.
    fn reports(
        &self,
        list: &[ThreadInfo],
        rejected: &HashMap<u32, (Instant, String)>,
    ) -> Vec<ThreadReport> {
        list.iter()
            .enumerate()
            .map(|(i, info)| {
                let skip = i >= 16
                    || (self.is_py2()
                        && matches!(
                            info.activity.syscall_nr(),
                            Some(threads::NR_EPOLL_WAIT | threads::NR_EPOLL_PWAIT)
                        ));
                let holds = if skip {
                    None
                } else {
                    Tracee::seize(self.pid, info.tid, Duration::from_millis(300))
                        .ok()
                        .and_then(|mut t| self.holds_gil(&mut t).ok())
                };
                let mut report = ThreadReport::new(info, holds);
                if let Activity::Syscall {
                    nr: threads::NR_RESTART_SYSCALL,
                    pc,
                    sp,
                    args,
                } = info.activity
                    && let Some(f) =
                        self.resumed_label(info.tid, pc, sp, [args[0], args[1], args[2]])
                {
                    report.description = report.description.replacen(
                        "resuming an interrupted wait (restart_syscall)",
                        &format!("in {f} (resumed after an interruption)"),
                        1,
                    );
                }
                if let Some((_, why)) = rejected.get(&info.tid) {
                    report.description.push_str(&format!(" (not used: {why})"));
                }
                report
            })
            .collect()
    }
}

fn page_len(n: usize) -> usize {
    n.div_ceil(4096).max(1) * 4096
}
