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

use object::{Object, ObjectSymbol, SymbolKind};

use super::ptrace::{PtraceError, Result};
use super::remote::{self, Tracee};
use super::threads::{self, Activity, ThreadInfo, ThreadReport};
use crate::process::Process;
use crate::process::maps::Mapping;
use crate::python::PythonProcess;
use crate::python::elf::{ElfFile, ElfInfo};

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
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1));
                return if connected(wait) {
                    Ok(PtraceOutcome {
                        method: PtraceMethod::Direct { tid: t.tid },
                        leftover_page: None,
                        stale_pending_page: None,
                        scratch_page: page,
                    })
                } else {
                    Err(PtraceError::NoSideEffect {
                        tid: t.tid,
                        after: wait,
                    })
                };
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
                    let wait = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_secs(1));
                    return if connected(wait) {
                        Ok(PtraceOutcome {
                            method: PtraceMethod::Direct { tid: t.tid },
                            leftover_page: None,
                            stale_pending_page: Some(page),
                            scratch_page: page,
                        })
                    } else {
                        Err(PtraceError::NoSideEffect {
                            tid: t.tid,
                            after: wait,
                        })
                    };
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

/// The outcome of one direct attempt.
enum Direct {
    /// The code ran; it was in this page.
    Ran((u64, usize)),
    Ineligible(String),
}

/// Progress notes on stderr when MEMSLEUTH_TRACE_INJECT is set (debugging).
fn trace(args: std::fmt::Arguments) {
    static ON: std::sync::OnceLock<Option<Instant>> = std::sync::OnceLock::new();
    if let Some(t0) =
        ON.get_or_init(|| std::env::var_os("MEMSLEUTH_TRACE_INJECT").map(|_| Instant::now()))
    {
        eprintln!(
            "memsleuth inject [{:.3} ms]: {args}",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// What the main thread's futex wait is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parked {
    /// A Python-level lock/event wait.
    PythonLock,
    /// The GIL, malloc, stdio, the loader, or unknown: never nudged.
    Other,
    /// The thread was not waiting any more when looked at (not cached).
    Moved,
}

/// What a restart_syscall resumes.
enum Resumed<'a> {
    Syscall(i64),
    Function(&'a str),
}

/// [start, end) of a function in the target.
type Range = (u64, u64);

fn in_ranges(ranges: &[Range], addr: u64) -> bool {
    ranges.iter().any(|&(s, e)| s <= addr && addr < e)
}

/// The C-API entry points used, as run-time addresses.
struct PySyms {
    ensure: u64,
    release: u64,
    run: u64,
    add_pending: u64,
    this_tstate: u64,
    /// PyGILState_Check (3.4+).
    check: Option<u64>,
    /// `_PyThreadState_UncheckedGet` (3.5.2–3.12) / `PyThreadState_GetUnchecked`
    /// (3.13+): the GIL holder's tstate on ≤ 3.11, the calling thread's
    /// attached tstate on 3.12+.
    unchecked_get: Option<u64>,
    /// The variable `_PyThreadState_Current` (2.7–3.6): the GIL holder's tstate.
    tstate_current_var: Option<u64>,
    /// `_Py_IsFinalizing` (3.7–3.12) / `Py_IsFinalizing` (3.13+).
    is_finalizing: Option<u64>,
    /// The bytecode loop: a GIL holder seen here honours a drop request.
    eval_loop: Vec<Range>,
    /// Functions in which a parked thread waits on a Python lock.
    lock_waits: Vec<Range>,
    /// 2.7: where a thread waits for the GIL (also a PyThread lock there).
    gil_waits: Vec<Range>,
}

/// What we need from the target's libc.
struct Libc {
    mmap: u64,
    munmap: u64,
    errno_location: Option<u64>,
    /// Exported functions, sorted by address, to name a program counter.
    functions: Vec<(u64, u64, String)>,
    /// [start, end) of the loaded image, including .bss.
    image: Range,
}

impl Libc {
    fn function_at(&self, addr: u64) -> Option<&str> {
        let i = self.functions.partition_point(|f| f.0 <= addr);
        let f = self.functions.get(i.checked_sub(1)?)?;
        (addr < f.1).then_some(f.2.as_str())
    }
}

/// libc functions whose syscalls are safe waits (see threads::is_safe_syscall).
const SAFE_WRAPPERS: &[&str] = &[
    "clock_nanosleep",
    "__clock_nanosleep",
    "nanosleep",
    "__nanosleep",
    "sleep",
    "usleep",
    "poll",
    "__poll",
    "ppoll",
    "select",
    "__select",
    "pselect",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "read",
    "__read",
    "readv",
    "pread",
    "pread64",
    "__pread64",
    "recv",
    "__recv",
    "recvfrom",
    "__recvfrom",
    "recvmsg",
    "__recvmsg",
    "recvmmsg",
    "accept",
    "__accept",
    "accept4",
    "wait",
    "wait4",
    "__wait4",
    "waitpid",
    "__waitpid",
    "waitid",
];

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
        let sym = py_symbols(py)?;
        let libc = find_libc(proc, &maps)?;
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

    /// Threads blocked in a safe syscall, the main thread first. On 2.7,
    /// epoll waits are left alone: a ptrace stop makes them fail with EINTR,
    /// which 2.7 (no PEP 475 retries) raises as IOError.
    fn direct_candidates(&self, list: &[ThreadInfo]) -> Vec<ThreadInfo> {
        list.iter()
            .filter(|t| self.safe_wait(t.tid, &t.activity))
            .filter(|t| {
                !(self.is_py2()
                    && matches!(
                        t.activity.syscall_nr(),
                        Some(
                            threads::NR_EPOLL_WAIT
                                | threads::NR_EPOLL_PWAIT
                                | threads::NR_EPOLL_PWAIT2
                        )
                    ))
            })
            .cloned()
            .collect()
    }

    /// A safe syscall, or restart_syscall resuming one (told by the libc
    /// function the program counter is in).
    fn safe_wait(&self, tid: u32, a: &Activity) -> bool {
        match *a {
            Activity::Syscall {
                nr, pc, sp, args, ..
            } if nr == threads::NR_RESTART_SYSCALL => {
                self.resumes_safe_wait(tid, pc, sp, [args[0], args[1], args[2]])
            }
            _ => a.in_safe_syscall(),
        }
    }

    /// What a thread blocked in restart_syscall at (`pc`, `sp`) resumes: the
    /// syscall memsleuth interrupted there earlier, else the exported libc
    /// function the program counter is in (pc is just after the syscall
    /// instruction, so pc - 1 is inside). On glibc ≥ 2.41 every cancellable
    /// syscall sits in one unexported helper, so only the first way works.
    fn resumed(&self, tid: u32, pc: u64, sp: u64, args: [u64; 3]) -> Option<Resumed<'_>> {
        if let Some(nr) = remote::restarted_syscall(self.pid, tid, pc, sp, args) {
            return Some(Resumed::Syscall(nr));
        }
        self.libc
            .function_at(pc.wrapping_sub(1))
            .map(Resumed::Function)
    }

    fn resumes_safe_wait(&self, tid: u32, pc: u64, sp: u64, args: [u64; 3]) -> bool {
        match self.resumed(tid, pc, sp, args) {
            Some(Resumed::Syscall(nr)) => threads::is_safe_syscall(nr),
            Some(Resumed::Function(f)) => SAFE_WRAPPERS.contains(&f),
            None => false,
        }
    }

    fn resumed_label(&self, tid: u32, pc: u64, sp: u64, args: [u64; 3]) -> Option<String> {
        match self.resumed(tid, pc, sp, args)? {
            Resumed::Syscall(nr) => Some(threads::syscall_name(nr).to_owned()),
            Resumed::Function(f) => Some(f.to_owned()),
        }
    }

    fn safe_regs(&self, t: &Tracee) -> bool {
        match t.stopped_syscall() {
            Some((nr, _)) if nr == threads::NR_RESTART_SYSCALL => {
                let r = t.saved_regs();
                self.resumes_safe_wait(t.tid(), r.rip, r.rsp, [r.rdi, r.rsi, r.rdx])
            }
            Some((nr, _)) => threads::is_safe_syscall(nr),
            None => false,
        }
    }

    /// A thread to make a short call on: one in a safe wait if any, else main.
    fn quiet_thread(&self, list: &[ThreadInfo]) -> u32 {
        self.direct_candidates(list)
            .first()
            .map(|t| t.tid)
            .unwrap_or(self.pid)
    }

    /// Whether the stopped thread holds the GIL.
    fn holds_gil(&self, t: &mut Tracee) -> Result<bool> {
        let q = self.quick();
        if let Some(check) = self.sym.check {
            let held = t.call(check, &[], q)? as u32 != 0;
            if !held {
                return Ok(false);
            }
            // PyGILState_Check also says 1 when GIL checking is off
            // (subinterpreters): confirm from the thread state.
            if let Some(get) = self.sym.unchecked_get {
                let cur = t.call(get, &[], q)?;
                if self.unchecked_get_is_global() {
                    let this = t.call(self.sym.this_tstate, &[], q)?;
                    return Ok(cur != 0 && cur == this);
                }
                if self.version().is_some() {
                    return Ok(cur != 0);
                }
            }
            return Ok(true);
        }
        if let Some(var) = self.sym.tstate_current_var {
            let this = t.call(self.sym.this_tstate, &[], q)?;
            let cur = t.read_u64(var)?;
            return Ok(this != 0 && cur == this);
        }
        Err(PtraceError::Unsupported(
            "cannot tell whether a thread holds the GIL in this interpreter".into(),
        ))
    }

    /// The GIL holder's tstate when the interpreter keeps it globally
    /// (≤ 3.11): Some(0) when the GIL is free. None: must probe threads.
    fn global_holder(&self, t: &mut Tracee) -> Result<Option<u64>> {
        if let Some(var) = self
            .sym
            .tstate_current_var
            .filter(|_| self.sym.unchecked_get.is_none() || self.is_py2())
        {
            return Ok(Some(t.read_u64(var)?));
        }
        match self.sym.unchecked_get {
            Some(get) if self.unchecked_get_is_global() => {
                Ok(Some(t.call(get, &[], self.quick())?))
            }
            _ => Ok(None),
        }
    }

    /// [`Self::try_direct`], with the failures that concern only this thread
    /// (it exited, did not stop, PyGILState_Ensure did not get the GIL in
    /// time) turned into a reason to try another way.
    fn try_direct_or_skip(
        &self,
        info: &ThreadInfo,
        code: &[u8],
        page: Option<(u64, usize)>,
    ) -> Result<Direct> {
        match self.try_direct(info, code, page) {
            Err(PtraceError::Gone { .. }) if info.tid != self.pid => {
                Ok(Direct::Ineligible("it exited".into()))
            }
            Err(e @ (PtraceError::Timeout { .. } | PtraceError::UnexpectedStop { .. })) => {
                Ok(Direct::Ineligible(e.to_string()))
            }
            other => other,
        }
    }

    /// Direct injection on thread `info` if it is (still) eligible.
    fn try_direct(
        &self,
        info: &ThreadInfo,
        code: &[u8],
        page: Option<(u64, usize)>,
    ) -> Result<Direct> {
        let mut t = match Tracee::seize(self.pid, info.tid, self.quick()) {
            Ok(t) => t,
            Err(PtraceError::Gone { .. }) if info.tid != self.pid => {
                return Ok(Direct::Ineligible("exited".into()));
            }
            Err(e) => return Err(e),
        };
        if !self.safe_regs(&t) {
            return Ok(Direct::Ineligible("no longer in a safe syscall".into()));
        }
        let q = self.quick();
        let this = t.call(self.sym.this_tstate, &[], q)?;
        if this == 0 {
            return Ok(Direct::Ineligible("not a Python thread".into()));
        }
        if self.holds_gil(&mut t)? {
            return Ok(Direct::Ineligible("holds the GIL".into()));
        }
        if let Some(fin) = self.sym.is_finalizing
            && t.call(fin, &[], q)? as u32 != 0
        {
            return Ok(Direct::Ineligible(
                "the interpreter is shutting down".into(),
            ));
        }
        match self.global_holder(&mut t)? {
            Some(0) => {}
            _ => {
                if let Some(why) = self.gil_stuck(info.tid)? {
                    return Ok(Direct::Ineligible(why));
                }
            }
        }

        // Eligible: run the code. errno is the thread's; keep it.
        let errno_addr = match self.libc.errno_location {
            Some(f) => Some(t.call(f, &[], q)?).filter(|&a| a != 0),
            None => None,
        };
        let mut errno = [0u8; 4];
        if let Some(a) = errno_addr {
            t.read_mem(a, &mut errno)?;
        }
        let (addr, len, ours) = match page {
            Some((a, l)) => (a, l, false),
            None => {
                let len = page_len(code.len() + 1);
                let a = remote::remote_mmap(&mut t, self.libc.mmap, len, q)?;
                (a, len, true)
            }
        };
        let ran = self.run_with_gil(&mut t, addr, code, ours);
        if ours {
            // Unmap even if the run failed (the code is not referenced any more).
            let _ = remote::remote_munmap(&mut t, self.libc.munmap, addr, len, self.quick());
        }
        if let Some(a) = errno_addr {
            let _ = t.write_mem(a, &errno);
        }
        t.detach()?;
        ran?;
        Ok(Direct::Ran((addr, len)))
    }

    fn run_with_gil(&self, t: &mut Tracee, addr: u64, code: &[u8], write: bool) -> Result<()> {
        if write {
            let mut buf = Vec::with_capacity(code.len() + 1);
            buf.extend_from_slice(code);
            buf.push(0);
            t.write_mem(addr, &buf)?;
        }
        // Ensure may wait for the GIL (its holder runs bytecode: a few ms).
        let state = t.call(
            self.sym.ensure,
            &[],
            self.remaining().max(Duration::from_secs(1)),
        )?;
        trace(format_args!(
            "thread {}: PyGILState_Ensure returned {state}",
            t.tid()
        ));
        // With the GIL held, abandoning the call would deadlock the process:
        // give the code time, and never retry it elsewhere.
        let budget = self.remaining().max(Duration::from_secs(30));
        let rc = t.call(self.sym.run, &[addr], budget).map_err(|e| match e {
            PtraceError::Timeout { .. } | PtraceError::UnexpectedStop { .. } => {
                PtraceError::RemoteCallFailed {
                    function: "PyRun_SimpleString",
                    detail: format!(
                        "{e}; the call was abandoned with the GIL held, the process may hang"
                    ),
                }
            }
            e => e,
        });
        let released = t.call(
            self.sym.release,
            &[state & 0xffff_ffff],
            Duration::from_secs(10),
        );
        let rc = rc? as u32 as i32;
        released?;
        trace(format_args!(
            "thread {}: PyRun_SimpleString returned {rc}, GIL released",
            t.tid()
        ));
        if rc != 0 {
            return Err(PtraceError::RemoteCallFailed {
                function: "PyRun_SimpleString",
                detail: "the code raised an exception (printed on the target's stderr)".into(),
            });
        }
        Ok(())
    }

    /// Whether another thread holds the GIL in a way that would make
    /// PyGILState_Ensure wait long: blocked in a syscall, or running
    /// outside the bytecode loop. Some(reason) when it does.
    fn gil_stuck(&self, except: u32) -> Result<Option<String>> {
        let list = threads::list(self.pid).map_err(|e| gone_or_io(self.pid, "list threads", e))?;
        let mut others: Vec<&ThreadInfo> = list.iter().filter(|t| t.tid != except).collect();
        // Likely holders first: running threads, then the main thread.
        others.sort_by_key(|t| {
            (
                !matches!(
                    t.activity,
                    Activity::Running | Activity::NotInSyscall { .. }
                ),
                !t.is_main,
            )
        });
        for info in others.into_iter().take(MAX_PROBES) {
            if self.is_py2()
                && matches!(
                    info.activity.syscall_nr(),
                    Some(threads::NR_EPOLL_WAIT | threads::NR_EPOLL_PWAIT)
                )
            {
                continue;
            }
            let mut y = match Tracee::seize(self.pid, info.tid, self.quick()) {
                Ok(y) => y,
                Err(PtraceError::Gone { .. }) => continue,
                Err(e) => return Err(e),
            };
            if !self.holds_gil(&mut y)? {
                continue;
            }
            // Sample the holder. Seen in the bytecode loop: it honours a drop
            // request within milliseconds. Blocked in a syscall (sleep, I/O,
            // a lock) with the GIL: Ensure would wait as long. Never seen in
            // the loop: C code that may not let go for a long time.
            let mut last = String::new();
            let mut first = Some(y);
            for i in 0..HOLDER_SAMPLES {
                let y = match first.take() {
                    Some(y) => y,
                    None => {
                        std::thread::sleep(HOLDER_SAMPLE_GAP);
                        let mut y = match Tracee::seize(self.pid, info.tid, self.quick()) {
                            Ok(y) => y,
                            Err(PtraceError::Gone { .. }) => return Ok(None),
                            Err(e) => return Err(e),
                        };
                        if y.stopped_syscall().is_some() && !self.holds_gil(&mut y)? {
                            trace(format_args!("GIL holder {} let go of the GIL", info.tid));
                            return Ok(None);
                        }
                        y
                    }
                };
                let r = y.saved_regs();
                let (pc, sp, args) = (r.rip, r.rsp, [r.rdi, r.rsi, r.rdx]);
                match y.stopped_syscall() {
                    Some((nr, _)) if y.interrupted_in_syscall() => {
                        return Ok(Some(format!(
                            "thread {} holds the GIL while blocked in {}",
                            info.tid,
                            self.syscall_label(info.tid, nr, pc, sp, args)
                        )));
                    }
                    // A syscall that completed (mmap, write...): transient.
                    Some((nr, _)) => {
                        last = format!("in {}", self.syscall_label(info.tid, nr, pc, sp, args))
                    }
                    None if in_ranges(&self.sym.eval_loop, pc) => {
                        trace(format_args!(
                            "GIL holder {} seen in the eval loop after {i} samples",
                            info.tid
                        ));
                        return Ok(None);
                    }
                    None => last = "running C code".to_owned(),
                }
            }
            return Ok(Some(format!(
                "thread {} holds the GIL, {last} ({HOLDER_SAMPLES} samples, never in the bytecode loop)",
                info.tid
            )));
        }
        Ok(None)
    }

    /// A syscall's name; for restart_syscall, the libc function it resumes.
    fn syscall_label(&self, tid: u32, nr: i64, pc: u64, sp: u64, args: [u64; 3]) -> String {
        match self.resumed_label(tid, pc, sp, args) {
            Some(f) if nr == threads::NR_RESTART_SYSCALL => format!("{f} (resumed)"),
            _ => threads::syscall_name(nr).to_owned(),
        }
    }

    /// Maps a page, writes the code and queues `PyRun_SimpleString(page)` as a
    /// pending call. Returns the page (it must stay mapped).
    fn queue_pending(&self, list: &[ThreadInfo], code: &[u8]) -> Result<(u64, usize)> {
        let tid = self.quiet_thread(list);
        let mut t = Tracee::seize(self.pid, tid, self.quick())?;
        let q = self.quick();
        if let Some(fin) = self.sym.is_finalizing
            && t.call(fin, &[], q)? as u32 != 0
        {
            return Err(PtraceError::RemoteCallFailed {
                function: "Py_AddPendingCall",
                detail: "the interpreter is shutting down".into(),
            });
        }
        let len = page_len(code.len() + 1);
        let addr = remote::remote_mmap(&mut t, self.libc.mmap, len, q)?;
        let mut buf = Vec::with_capacity(code.len() + 1);
        buf.extend_from_slice(code);
        buf.push(0);
        let queued = t
            .write_mem(addr, &buf)
            .and_then(|_| t.call(self.sym.add_pending, &[self.sym.run, addr], q));
        match queued {
            Ok(rc) if rc as u32 == 0 => {
                t.detach()?;
                Ok((addr, len))
            }
            other => {
                let _ = remote::remote_munmap(&mut t, self.libc.munmap, addr, len, q);
                t.detach()?;
                match other {
                    Err(e) => Err(e),
                    Ok(rc) => Err(PtraceError::RemoteCallFailed {
                        function: "Py_AddPendingCall",
                        detail: format!(
                            "returned {} (the pending-call queue is full)",
                            rc as u32 as i32
                        ),
                    }),
                }
            }
        }
    }

    /// Seizes the main thread, tells what its futex wait is, and if it is a
    /// Python lock wait and `nudge` is set, makes it return EINTR.
    fn examine_main(&self, nudge: bool) -> Result<(Parked, bool)> {
        let mut t = match Tracee::seize(self.pid, self.pid, self.quick()) {
            Ok(t) => t,
            Err(PtraceError::Timeout { .. }) => return Ok((Parked::Moved, false)),
            Err(e) => return Err(e),
        };
        let parked = self.parked_on_python_lock(&t)?;
        let nudged = nudge && parked == Parked::PythonLock;
        if nudged {
            t.set_saved_syscall_result(-(libc::EINTR as i64));
        }
        t.detach()?;
        Ok((parked, nudged))
    }

    /// The nudge rule (see the module docs), on a stopped thread.
    fn parked_on_python_lock(&self, t: &Tracee) -> Result<Parked> {
        let verdict = self.lock_wait_verdict(t)?;
        trace(format_args!("thread {}: {verdict}", t.tid()));
        Ok(match verdict {
            "a Python lock wait" => Parked::PythonLock,
            "not in a syscall" | "its syscall had just returned" => Parked::Moved,
            _ => Parked::Other,
        })
    }

    fn lock_wait_verdict(&self, t: &Tracee) -> Result<&'static str> {
        let Some((nr, _)) = t.stopped_syscall() else {
            return Ok("not in a syscall");
        };
        if !t.interrupted_in_syscall() {
            return Ok("its syscall had just returned");
        }
        let regs = t.saved_regs();
        if nr == threads::NR_RESTART_SYSCALL {
            // A futex wait with a timeout resumed: rdi still holds its word.
            if self.resumes_safe_wait(t.tid(), regs.rip, regs.rsp, [regs.rdi, regs.rsi, regs.rdx]) {
                return Ok("resuming a safe wait");
            }
        } else if nr != threads::NR_FUTEX {
            return Ok("not a futex wait");
        }
        if !self.futex_word_is_private(regs.rdi) {
            return Ok("the futex word is in a binary's data (GIL, malloc, loader or stdio lock)");
        }
        let sp = regs.rsp;
        let end = self
            .maps
            .iter()
            .find(|m| m.start <= sp && sp < m.end)
            .map(|m| m.end)
            .unwrap_or(sp);
        let len = (end.saturating_sub(sp) as usize).min(STACK_SCAN) & !7;
        if len == 0 {
            return Ok("no readable stack");
        }
        let mut stack = vec![0u8; len];
        t.read_mem(sp, &mut stack)?;
        // Return addresses into the interpreter: in its text and just after a
        // call instruction (a non-PIE binary's addresses are small numbers
        // that sizes and flags on the stack can look like).
        let mut py_addrs = stack
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .filter(|&v| in_ranges(&self.py_text, v))
            .filter(|&v| follows_a_call(t.pid(), v));
        // The first few interpreter return addresses decide. A stale return
        // address left in a callee's uninitialised locals (after a pending
        // call ran from inside this very wait, for instance) can come first,
        // so one that is neither a lock wait nor a GIL wait is skipped; a GIL
        // wait (or running out of candidates) rejects. The futex word check
        // above is the stronger guard: the GIL and malloc/loader/stdio locks
        // live in a binary's data.
        const CANDIDATES: usize = 6;
        let mut seen_any = false;
        let mut lock_wait_at = None;
        for (i, addr) in py_addrs.by_ref().take(CANDIDATES).enumerate() {
            seen_any = true;
            if in_ranges(&self.sym.lock_waits, addr) {
                lock_wait_at = Some(i);
                break;
            }
            if in_ranges(&self.sym.gil_waits, addr) {
                return Ok("waiting for the GIL");
            }
        }
        if !seen_any {
            return Ok("no interpreter frame on the stack");
        }
        if lock_wait_at.is_none() {
            trace(format_args!(
                "no lock wait among the first interpreter frames; lock waits {:x?}",
                self.sym.lock_waits
            ));
            return Ok("the innermost interpreter frames are not a lock wait");
        }
        if self.is_py2() {
            // 2.7's GIL is a PyThread lock too: its caller tells.
            if py_addrs
                .next()
                .is_some_and(|next| in_ranges(&self.sym.gil_waits, next))
            {
                return Ok("waiting for the GIL");
            }
        }
        Ok("a Python lock wait")
    }

    /// A futex word of a Python lock lives on the heap, in an anonymous
    /// mapping or on a stack; the GIL, malloc's main arena and ld.so/stdio
    /// locks live in the data of a file mapping.
    fn futex_word_is_private(&self, addr: u64) -> bool {
        let Some(m) = self.maps.iter().find(|m| m.start <= addr && addr < m.end) else {
            return false;
        };
        if m.inode != 0 {
            return false;
        }
        let inside = |r: Option<Range>| r.is_some_and(|(s, e)| s <= addr && addr < e);
        !inside(self.py_image) && !inside(Some(self.libc.image))
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

/// Whether the bytes before `addr` in the target end with an x86-64 call:
/// `e8 rel32`, or `ff /2` (indirect) with a register, disp8, SIB or disp32
/// operand (REX prefixes come before the ff and do not matter).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn follows_a_call(pid: u32, addr: u64) -> bool {
    let mut b = [0u8; 7];
    if addr < 7 || super::ptrace::read_mem(pid, addr - 7, &mut b).is_err() {
        return false;
    }
    is_call_before(&b)
}

/// `b` holds the 7 bytes before a candidate return address.
fn is_call_before(b: &[u8; 7]) -> bool {
    let ff2 = |at: usize, len: usize| {
        // ff at b[at], modrm at b[at + 1], instruction `len` bytes long.
        let modrm = b[at + 1];
        if b[at] != 0xff || (modrm >> 3) & 7 != 2 {
            return false;
        }
        let (md, rm) = (modrm >> 6, modrm & 7);
        let sib = usize::from(md != 3 && rm == 4);
        let disp = match md {
            0 if rm == 5 => 4,
            0 if sib == 1 && b[at + 2] & 7 == 5 => 4,
            1 => 1,
            2 => 4,
            _ => 0,
        };
        2 + sib + disp == len
    };
    b[2] == 0xe8 || ff2(5, 2) || ff2(4, 3) || ff2(3, 4) || ff2(1, 6) || ff2(0, 7)
}

fn page_len(n: usize) -> usize {
    n.div_ceil(4096).max(1) * 4096
}

/// [first PT_LOAD start, last PT_LOAD end) at run time.
fn image_range(info: &ElfInfo, bias: u64) -> Option<Range> {
    let start = info.loads.iter().map(|l| l.vaddr).min()?;
    let end = info
        .loads
        .iter()
        .map(|l| l.vaddr.saturating_add(l.memsz))
        .max()?;
    Some((start.wrapping_add(bias), end.wrapping_add(bias)))
}

fn py_symbols(py: &PythonProcess) -> Result<PySyms> {
    let addr = |name: &str| py.symbol_address(name);
    let need = |name: &'static str| {
        addr(name).ok_or_else(|| {
            PtraceError::Unsupported(format!(
                "{} does not export {name}; memsleuth cannot call into this interpreter",
                py.binary.display()
            ))
        })
    };
    let range = |name: &str| -> Option<Range> {
        let size = py.elf()?.symbol(name)?.size;
        let start = addr(name)?;
        (size > 0).then(|| (start, start + size))
    };
    let ranges = |names: &[&str]| names.iter().filter_map(|n| range(n)).collect::<Vec<_>>();
    let py2 = py.version.is_some_and(|v| v.major == 2);
    Ok(PySyms {
        ensure: need("PyGILState_Ensure")?,
        release: need("PyGILState_Release")?,
        run: need("PyRun_SimpleString")?,
        add_pending: need("Py_AddPendingCall")?,
        this_tstate: need("PyGILState_GetThisThreadState")?,
        check: addr("PyGILState_Check"),
        unchecked_get: addr("PyThreadState_GetUnchecked")
            .or_else(|| addr("_PyThreadState_UncheckedGet")),
        tstate_current_var: addr("_PyThreadState_Current"),
        is_finalizing: addr("Py_IsFinalizing").or_else(|| addr("_Py_IsFinalizing")),
        eval_loop: ranges(&["_PyEval_EvalFrameDefault", "PyEval_EvalFrameEx"]),
        lock_waits: if py2 {
            ranges(&["PyThread_acquire_lock"])
        } else {
            ranges(&["PyThread_acquire_lock_timed", "_PySemaphore_Wait"])
        },
        gil_waits: ranges(&[
            "PyEval_RestoreThread",
            "PyEval_AcquireThread",
            "PyEval_AcquireLock",
        ]),
    })
}

/// glibc's `libc.so.6` / `libc-2.NN.so`, or musl's loader-libc.
fn is_libc_name(name: &str) -> bool {
    name == "libc.so.6"
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("libc.musl-")
        || name.starts_with("ld-musl-")
}

fn find_libc(proc: &Process, maps: &[Mapping]) -> Result<Libc> {
    let path = maps
        .iter()
        .map(|m| m.clean_path())
        .find(|p| is_libc_name(p.rsplit('/').next().unwrap_or(p)))
        .ok_or_else(|| {
            PtraceError::Unsupported(
                "no C library (libc.so.6 or musl) is mapped in the target".into(),
            )
        })?
        .to_owned();
    let mine: Vec<&Mapping> = maps.iter().filter(|m| m.clean_path() == path).collect();
    let file = libc_file(proc, &path, &mine)?;
    let placement = file.info.place(&mine).ok_or_else(|| {
        PtraceError::Unsupported(format!("cannot tell where {path} is loaded in the target"))
    })?;
    let at = |v: u64| placement.runtime(v);
    let missing = |n: &str| PtraceError::Unsupported(format!("{path} does not export {n}"));
    Ok(Libc {
        mmap: file.mmap.map(at).ok_or_else(|| missing("mmap"))?,
        munmap: file.munmap.map(at).ok_or_else(|| missing("munmap"))?,
        errno_location: file.errno_location.map(at),
        functions: file
            .functions
            .iter()
            .map(|(s, e, n)| (at(*s), at(*e), n.clone()))
            .collect(),
        image: image_range(&file.info, placement.bias)
            .ok_or_else(|| PtraceError::Unsupported(format!("{path} has no loadable segments")))?,
    })
}

/// What is read from a C library file, at link-time addresses.
struct LibcFile {
    info: ElfInfo,
    mmap: Option<u64>,
    munmap: Option<u64>,
    errno_location: Option<u64>,
    functions: Vec<(u64, u64, String)>,
}

/// Parses (once per device, inode and path: every process on a host shares
/// the same libc) the C library mapped at `path`.
fn libc_file(proc: &Process, path: &str, mine: &[&Mapping]) -> Result<std::sync::Arc<LibcFile>> {
    type Key = (u32, u32, u64, String);
    static CACHE: std::sync::Mutex<Vec<(Key, std::sync::Arc<LibcFile>)>> =
        std::sync::Mutex::new(Vec::new());
    let first = mine
        .first()
        .ok_or_else(|| PtraceError::Unsupported(format!("{path} is not mapped")))?;
    let key: Key = (
        first.dev_major,
        first.dev_minor,
        first.inode,
        path.to_owned(),
    );
    if let Some((_, f)) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(f.clone());
    }
    let file = ElfFile::open(&proc.root_path(path))
        .ok()
        .filter(|f| f.inode == first.inode)
        .or_else(|| {
            let m = mine.iter().find(|m| m.offset == 0)?;
            ElfFile::open(&proc.path(&format!("map_files/{:x}-{:x}", m.start, m.end))).ok()
        })
        .or_else(|| ElfFile::open(&proc.root_path(path)).ok())
        .ok_or_else(|| {
            PtraceError::Unsupported(format!("cannot open the target's C library {path}"))
        })?;
    let bytes = file
        .read_all()
        .map_err(|e| PtraceError::Unsupported(format!("cannot read {path}: {e}")))?;
    let info = ElfInfo::parse(bytes.as_bytes())
        .map_err(|e| PtraceError::Unsupported(format!("{path}: {e}")))?;
    let obj = object::File::parse(bytes.as_bytes())
        .map_err(|e| PtraceError::Unsupported(format!("{path}: {e}")))?;
    let mut functions: Vec<(u64, u64, String)> = Vec::new();
    let mut named: HashMap<&str, u64> = HashMap::new();
    for sym in obj.dynamic_symbols() {
        if sym.kind() != SymbolKind::Text || !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if matches!(name, "mmap" | "mmap64" | "munmap" | "__errno_location") {
            named.insert(name, sym.address());
        }
        if sym.size() > 0 {
            functions.push((
                sym.address(),
                sym.address().saturating_add(sym.size()),
                name.to_owned(),
            ));
        }
    }
    // Aliases share an address: keep the name of a safe wrapper if any.
    functions.sort_by_key(|f| {
        (
            f.0,
            std::cmp::Reverse(SAFE_WRAPPERS.contains(&f.2.as_str())),
        )
    });
    functions.dedup_by_key(|f| f.0);
    let parsed = std::sync::Arc::new(LibcFile {
        info,
        mmap: named.get("mmap").or(named.get("mmap64")).copied(),
        munmap: named.get("munmap").copied(),
        errno_location: named.get("__errno_location").copied(),
        functions,
    });
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 16 {
        cache.remove(0);
    }
    cache.push((key, parsed.clone()));
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_calls_before_return_addresses() {
        let before = |tail: &[u8]| {
            let mut b = [0x90u8; 7];
            b[7 - tail.len()..].copy_from_slice(tail);
            is_call_before(&b)
        };
        assert!(before(&[0xe8, 1, 2, 3, 4])); // call rel32
        assert!(before(&[0xff, 0xd0])); // call *%rax
        assert!(before(&[0x41, 0xff, 0xd4])); // call *%r12
        assert!(before(&[0xff, 0x50, 0x08])); // call *0x8(%rax)
        assert!(before(&[0xff, 0x54, 0x24, 0x08])); // call *0x8(%rsp)
        assert!(before(&[0xff, 0x15, 1, 2, 3, 4])); // call *rip+disp32
        assert!(before(&[0xff, 0x90, 1, 2, 3, 4])); // call *disp32(%rax)
        assert!(before(&[0xff, 0x94, 0x24, 1, 2, 3, 4])); // call *disp32(%rsp)
        assert!(!before(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00]));
        assert!(!before(&[0xff, 0xe0])); // jmp *%rax
        assert!(!before(&[0x48, 0x89, 0xc7])); // mov
    }

    #[test]
    fn page_lengths() {
        assert_eq!(page_len(1), 4096);
        assert_eq!(page_len(4096), 4096);
        assert_eq!(page_len(4097), 8192);
    }

    #[test]
    fn libc_names() {
        for n in [
            "libc.so.6",
            "libc-2.31.so",
            "ld-musl-x86_64.so.1",
            "libc.musl-x86_64.so.1",
        ] {
            assert!(is_libc_name(n), "{n}");
        }
        for n in ["libcrypto.so.3", "libc.so", "libcap.so.2", "libc++.so.1"] {
            assert!(!is_libc_name(n), "{n}");
        }
    }

    #[test]
    fn finds_our_own_libc() {
        let me = Process::open(std::process::id()).unwrap();
        let maps = me.maps().unwrap();
        let libc = find_libc(&me, &maps).unwrap();
        assert_eq!(libc.mmap, libc::mmap as *const () as usize as u64);
        assert_eq!(libc.munmap, libc::munmap as *const () as usize as u64);
        assert!(libc.image.0 <= libc.mmap && libc.mmap < libc.image.1);
        let nanosleep = libc::nanosleep as *const () as usize as u64;
        assert!(matches!(libc.function_at(nanosleep + 1), Some(n) if SAFE_WRAPPERS.contains(&n)));
    }
}
