//! Attaching: preflight, then the safest way in that works, then the agent
//! session.
//!
//! Order of preference:
//! 0. The socket of a program started with `memsleuth run` (see
//!    [`super::launch`]): no ptrace and no /proc/PID/mem at all, so it also
//!    works where those are refused. Used whenever the pid has one.
//! 1. PEP 768 (3.14+, remote debugging enabled): no ptrace stop at all. The
//!    request runs when the chosen thread next evaluates bytecode, so it goes
//!    to the main thread, or to a thread seen holding the GIL when main is
//!    parked. If nobody picks it up quickly it is cancelled (so it cannot run
//!    later and complain that its script is gone) and we fall through.
//! 2. ptrace at safe points (see [`super::ptrace_path`]): a call on a thread
//!    parked in a safe syscall without the GIL, or a pending call that the
//!    interpreter runs at its next safe point, nudged out of a lock wait.

use std::time::{Duration, Instant};

use super::launch::{self, LaunchError, LaunchSocket};
use super::pep768::{self, Pep768Request, Pep768Status};
use super::preflight::{self, PreflightError};
use super::ptrace::PtraceError;
use super::ptrace_path::{self, PtraceMethod, PtraceRequest};
use super::trace::trace;
use crate::agent::session::{Listener, Session, SessionError};
use crate::process::users;

/// How to get in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodChoice {
    /// The `memsleuth run` socket if the program has one; else PEP 768 when the target allows it, else ptrace.
    #[default]
    Auto,
    /// Only PEP 768 (3.14+).
    Pep768,
    /// Only ptrace, even on 3.14+.
    Ptrace,
    /// Only the socket of a program started with `memsleuth run`.
    Launch,
}

#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// How long to wait for the interpreter to run our bootstrap.
    pub timeout: Duration,
    pub method: MethodChoice,
    /// At detach, also wait for the agent's thread to end (it stays asleep
    /// up to half a second after the session, see [`Attached::detach`]).
    pub wait_detach: bool,
    /// Requests (op, params) sent along with the handshake, answered with
    /// the agent's hello (see [`Listener::pipeline`]): the session's first
    /// requests, when they are known before attaching.
    pub pipeline: Vec<(String, serde_json::Value)>,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            timeout: Duration::from_secs(5),
            method: MethodChoice::Auto,
            wait_detach: false,
            pipeline: Vec::new(),
        }
    }
}

/// The way the bootstrap got to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    /// PEP 768 request on this thread.
    Pep768 { tid: u64, main: bool },
    /// ptrace call on a thread parked in a safe syscall without the GIL.
    PtraceDirect { tid: u32 },
    /// ptrace-scheduled `Py_AddPendingCall`, run by the main thread.
    PtracePending,
    /// The same, after making the main thread's lock wait return EINTR.
    PtracePendingNudged { tid: u32 },
    /// The listener of a program started with `memsleuth run`.
    Launched { socket: String },
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Pep768 { tid, main: true } => write!(f, "PEP 768 on the main thread ({tid})"),
            Method::Pep768 { tid, .. } => write!(f, "PEP 768 on thread {tid}"),
            Method::PtraceDirect { tid } => {
                write!(f, "ptrace call on thread {tid}, parked in a safe syscall")
            }
            Method::PtracePending => write!(f, "ptrace pending call, run by the main thread"),
            Method::PtracePendingNudged { tid } => {
                write!(
                    f,
                    "ptrace pending call, main thread {tid} nudged out of its lock wait"
                )
            }
            Method::Launched { socket } => write!(f, "memsleuth run socket {socket}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Pep768(#[from] pep768::Pep768Error),
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(
        "--method pep768 needs Python 3.14 or newer with remote debugging enabled, and process {pid} {why}; use --method auto"
    )]
    Pep768Unavailable { pid: u32, why: String },
}

/// A live session inside the target.
pub struct Attached {
    pub session: Session,
    pub method: Method,
    /// Wall time from the start of preflight to the agent's hello.
    pub attach_s: f64,
    /// Things worth telling the user (e.g. why PEP 768 was not used).
    pub notes: Vec<String>,
    pub pid: u32,
    /// The private directory the session used in the target's filesystem
    /// (already removed once the agent connected).
    pub session_dir: String,
    /// What preflight learned (None for a launched program: no preflight).
    target: Option<preflight::Target>,
    leftover_page: Option<(u64, usize)>,
    wait_detach: bool,
}

impl Attached {
    /// Ends the session: the agent restores everything, closes its socket
    /// and removes what it imported; then our scratch page (pending-call
    /// path) is unmapped. The agent's thread may stay asleep a little longer
    /// (up to `RETIRE_GRACE_S`, half a second), holding only the stdout and
    /// stderr proxies it replaced, so that a print() in flight in another
    /// thread cannot use a freed proxy (cpython#130163); then it ends by
    /// itself. With `wait_detach`, this also waits for that.
    pub fn detach(mut self) -> Result<(), AttachError> {
        let page = self.leftover_page.take();
        let session_result = self.session.detach();
        if let (Some(page), Some(t)) = (page, &self.target) {
            ptrace_path::unmap_leftover(&t.proc, &t.python, page)?;
        }
        let detached = session_result?;
        if self.wait_detach && detached.retire > Duration::ZERO {
            let proc = crate::process::Process::unchecked(self.pid);
            wait_agent_thread_gone(&proc, &detached);
            trace(format_args!("agent thread gone"));
        }
        Ok(())
    }

    /// The interpreter as preflight found it (None for a launched program).
    pub fn python(&self) -> Option<&crate::python::PythonProcess> {
        self.target.as_ref().map(|t| &t.python)
    }
}

/// How long a PEP 768 request may wait on a thread before we try another.
const PEP768_FIRST_WAIT: Duration = Duration::from_millis(250);
/// The same for a thread seen holding the GIL (running bytecode).
const PEP768_BUSY_WAIT: Duration = Duration::from_millis(1500);

pub fn attach(pid: u32, opts: &AttachOptions) -> Result<Attached, AttachError> {
    let started = Instant::now();
    trace(format_args!("pid {pid}: attach"));
    // The one place that decides: the launch socket when the pid has one.
    if matches!(opts.method, MethodChoice::Auto | MethodChoice::Launch) {
        match launch::find(pid) {
            Some(sock) => return attach_launched(pid, &sock, opts, started),
            None if opts.method == MethodChoice::Launch => {
                let uid = crate::process::Process::unchecked(pid)
                    .status()
                    .map_or_else(|_| users::our_uid(), |s| s.uid);
                let dirs = launch::base_dirs(uid)
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ");
                return Err(LaunchError::NoSocket { pid, dirs }.into());
            }
            None => {}
        }
    }
    let target = preflight::check(pid)?;
    trace(format_args!("pid {pid}: preflight done"));
    let mut listener = Listener::prepare(&target.proc, target.uid, target.gid)?;
    for (op, params) in &opts.pipeline {
        if !listener.pipeline(op, params.clone()) {
            break;
        }
    }
    let code = listener.bootstrap_code(users::our_uid());
    trace(format_args!("pid {pid}: listening, bootstrap rendered"));
    let mut notes = Vec::new();
    let deadline = started + opts.timeout;

    let mut method = None;
    if opts.method != MethodChoice::Ptrace {
        match try_pep768(&target, &mut listener, &code, deadline)? {
            Pep768Outcome::Attached(m) => method = Some(m),
            Pep768Outcome::Skipped(why) => {
                if opts.method == MethodChoice::Pep768 {
                    return Err(AttachError::Pep768Unavailable { pid, why });
                }
                if target
                    .python
                    .version
                    .is_some_and(|v| (v.major, v.minor) >= (3, 14))
                {
                    notes.push(format!(
                        "PEP 768 not used: process {pid} {why}; attached through ptrace"
                    ));
                }
            }
        }
    }
    let mut leftover_page = None;
    let method = match method {
        Some(m) => m,
        None => {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(500));
            let req = PtraceRequest {
                code: code.as_bytes(),
                timeout: remaining,
            };
            let outcome = ptrace_path::inject(&target.proc, &target.python, &req, &mut |d| {
                listener.wait(d).unwrap_or(false)
            })?;
            leftover_page = outcome.leftover_page;
            match outcome.method {
                PtraceMethod::Direct { tid } => Method::PtraceDirect { tid },
                PtraceMethod::Pending => Method::PtracePending,
                PtraceMethod::PendingNudged { tid } => Method::PtracePendingNudged { tid },
            }
        }
    };
    trace(format_args!("pid {pid}: connected ({method})"));
    let session_dir = listener.dir_in_target().to_string();
    let session = match listener.into_session() {
        Ok(s) => s,
        Err(e) => {
            if let Some(page) = leftover_page {
                let _ = ptrace_path::unmap_leftover(&target.proc, &target.python, page);
            }
            return Err(e.into());
        }
    };
    trace(format_args!("pid {pid}: hello received"));
    Ok(Attached {
        session,
        method,
        attach_s: started.elapsed().as_secs_f64(),
        notes,
        pid,
        session_dir,
        target: Some(target),
        leftover_page,
        wait_detach: opts.wait_detach,
    })
}

/// A session through the listener of a program started with `memsleuth
/// run`: the normal bootstrap and agent, sent over its socket instead of
/// injected. The session's own socket goes in the launch directory.
fn attach_launched(
    pid: u32,
    sock: &LaunchSocket,
    opts: &AttachOptions,
    started: Instant,
) -> Result<Attached, AttachError> {
    let proc = crate::process::Process::open(pid).map_err(PreflightError::from)?;
    if let Ok(stat) = proc.stat()
        && matches!(stat.state, 'T' | 't')
    {
        return Err(PreflightError::Stopped {
            pid,
            state: stat.state,
        }
        .into());
    }
    let mut listener =
        Listener::prepare_in(&proc, &sock.dir, &sock.dir_in_target, sock.uid, sock.gid)?;
    for (op, params) in &opts.pipeline {
        if !listener.pipeline(op, params.clone()) {
            break;
        }
    }
    let code = listener.bootstrap_code(users::our_uid());
    trace(format_args!(
        "pid {pid}: launch socket found, bootstrap rendered"
    ));
    // The listener runs the bootstrap before it answers: the connection
    // to our socket is queued by then.
    drop(sock.run(
        code.as_bytes(),
        opts.timeout.saturating_sub(started.elapsed()),
    )?);
    let wait = opts
        .timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(500));
    if !listener.wait(wait)? {
        return Err(SessionError::Timeout {
            op: "connect".into(),
            after: wait,
        }
        .into());
    }
    let session_dir = listener.dir_in_target().to_string();
    let session = listener.into_session()?;
    trace(format_args!("pid {pid}: hello received (launched)"));
    Ok(Attached {
        session,
        method: Method::Launched {
            socket: sock.socket_in_target(),
        },
        attach_s: started.elapsed().as_secs_f64(),
        notes: Vec::new(),
        pid,
        session_dir,
        target: None,
        leftover_page: None,
        wait_detach: opts.wait_detach,
    })
}

/// Waits until the agent's thread has ended, at most its retire time plus
/// a second (a loaded machine may be late to run it). Without a thread id,
/// or one that cannot be found, waits the retire time plus a margin.
fn wait_agent_thread_gone(proc: &crate::process::Process, d: &crate::agent::session::Detached) {
    let limit = d.retire + Duration::from_secs(1);
    let started = Instant::now();
    let Some(tid) = d.agent_tid.and_then(|t| host_tid(proc, t)) else {
        std::thread::sleep(d.retire + Duration::from_millis(50));
        return;
    };
    let task = proc.path(&format!("task/{tid}"));
    while task.exists() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The host id of thread `ns_tid` (an id in the target's own pid namespace):
/// the task whose `NSpid:` ends with it; the same id where the kernel shows
/// no NSpid.
fn host_tid(proc: &crate::process::Process, ns_tid: u32) -> Option<u32> {
    let dir = std::fs::read_dir(proc.path("task")).ok()?;
    let mut saw_nspid = false;
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let Some(line) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
            continue;
        };
        saw_nspid = true;
        if line.split_whitespace().last().and_then(|v| v.parse().ok()) == Some(ns_tid) {
            return Some(tid);
        }
    }
    (!saw_nspid && proc.path(&format!("task/{ns_tid}")).exists()).then_some(ns_tid)
}

enum Pep768Outcome {
    Attached(Method),
    /// Why not (a phrase after "process N").
    Skipped(String),
}

fn try_pep768(
    target: &preflight::Target,
    listener: &mut Listener,
    code: &str,
    deadline: Instant,
) -> Result<Pep768Outcome, AttachError> {
    let (proc, py) = (&target.proc, &target.python);
    if py.version.is_none_or(|v| (v.major, v.minor) < (3, 14)) {
        return Ok(Pep768Outcome::Skipped(
            "runs a Python older than 3.14".into(),
        ));
    }
    let status = pep768::status(proc, py)?;
    trace(format_args!("PEP 768 status read"));
    match status {
        Pep768Status::Enabled { .. } => {}
        Pep768Status::DisabledInTarget => {
            return Ok(Pep768Outcome::Skipped(
                "has remote debugging disabled (PYTHON_DISABLE_REMOTE_DEBUG, -X disable-remote-debug, or a build without it)"
                    .into(),
            ));
        }
        Pep768Status::Unsupported(why) => {
            return Ok(Pep768Outcome::Skipped(format!("cannot use PEP 768: {why}")));
        }
    }
    let script = listener.write_file("boot.py", code.as_bytes())?;
    // Main first; if it does not pick the request up (parked in a syscall),
    // a thread seen holding the GIL is running bytecode and will.
    let mut tried_main = false;
    let mut tried: Vec<u64> = Vec::new();
    while Instant::now() < deadline {
        let tid = if !tried_main {
            tried_main = true;
            None
        } else {
            match gil_holder(target, &tried) {
                Some(t) => Some(t as u32),
                None => break,
            }
        };
        let scheduled = match pep768::schedule(
            proc,
            py,
            &Pep768Request {
                script_path: &script,
                tid,
            },
        ) {
            Ok(s) => s,
            Err(pep768::Pep768Error::AlreadyPending { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        trace(format_args!(
            "PEP 768 request scheduled on {}",
            scheduled.native_tid
        ));
        tried.push(scheduled.native_tid);
        // A thread seen running Python picks the request up at its next
        // eval-breaker check; on a loaded machine that can take a while, so
        // it gets longer than a thread that is probably parked. (Sampled
        // while listening: the bootstrap may connect meanwhile, and the
        // sooner it is accepted, the sooner its load frame is there.)
        let (busy, connected) = thread_runs_python(target, scheduled.native_tid, listener)?;
        let first_wait = if busy {
            PEP768_BUSY_WAIT
        } else {
            PEP768_FIRST_WAIT
        };
        let wait = first_wait.min(deadline.saturating_duration_since(Instant::now()));
        if connected || listener.wait(wait)? {
            return Ok(Pep768Outcome::Attached(Method::Pep768 {
                tid: scheduled.native_tid,
                main: scheduled.is_main,
            }));
        }
        // Not picked up: withdraw it so it cannot run later.
        pep768::cancel(proc, &scheduled)?;
        // It may have run between the wait and the cancel.
        if listener.wait(Duration::from_millis(20))? {
            return Ok(Pep768Outcome::Attached(Method::Pep768 {
                tid: scheduled.native_tid,
                main: scheduled.is_main,
            }));
        }
    }
    Ok(Pep768Outcome::Skipped(
        "did not run the PEP 768 request: no thread was executing Python code".into(),
    ))
}

/// Whether `tid` is seen holding the GIL in a few quick samples, 2 ms
/// apart, listening meanwhile; and whether the bootstrap connected.
fn thread_runs_python(
    target: &preflight::Target,
    tid: u64,
    listener: &mut Listener,
) -> Result<(bool, bool), AttachError> {
    for i in 0..5 {
        if i > 0 && listener.wait(Duration::from_millis(2))? {
            return Ok((true, true));
        }
        if pep768::threads(&target.proc, &target.python)
            .is_ok_and(|ts| ts.iter().any(|t| t.native_tid == tid && t.holds_gil))
        {
            return Ok((true, false));
        }
    }
    Ok((false, false))
}

/// A thread (not yet tried) seen holding the GIL in a few quick samples.
fn gil_holder(target: &preflight::Target, tried: &[u64]) -> Option<u64> {
    for _ in 0..10 {
        if let Ok(threads) = pep768::threads(&target.proc, &target.python)
            && let Some(t) = threads
                .iter()
                .find(|t| t.holds_gil && !tried.contains(&t.native_tid))
        {
            return Some(t.native_tid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}
