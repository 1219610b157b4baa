//! PEP 768 (`sys.remote_exec`) driven from outside: ask a CPython 3.14+
//! process to run a script file at its next safe point, by writing three
//! fields of one of its thread states, without ptrace and without stopping it.
//!
//! The protocol (see `shared/research/pep768.md` §1–§3):
//!
//! 1. `_PyRuntime` starts with `_Py_DebugOffsets`: the `.PyRuntime` section
//!    start (else the `_PyRuntime` symbol) is the table address.
//! 2. The table gives, at run time, every offset we use. Its *layout* (where
//!    each field sits inside the table) depends on the minor version and is
//!    the only thing hard-coded here ([`LAYOUTS`]).
//! 3. `interpreters_head` → `next` until `id == 0` (the head is the newest
//!    interpreter); `remote_debugging_enabled` there must be 1.
//! 4. The thread state: `threads_main`, or the `threads_head` → `next` entry
//!    whose `native_thread_id` is the requested thread.
//! 5. Write the path and its NUL into `debugger_script_path`, then the int 1
//!    into `debugger_pending_call`, then OR `_PY_EVAL_PLEASE_STOP_BIT` (0x20)
//!    into the low byte of `eval_breaker` (a one-byte read-modify-write: the
//!    high bits hold the instrumentation version, which we never touch).
//!
//! The table is **untrusted**: a hostile or corrupted target must not crash
//! us or make us write somewhere it chose. Every offset is checked against the
//! size of the structure it indexes and against sane limits, every pointer
//! read from the target is checked (non-null, aligned, user space), list
//! walks are bounded and detect loops, reads are capped, and we write only
//! into writable mappings (`/proc/PID/mem` could otherwise force-write
//! read-only pages).
//!
//! What is accepted (versions):
//!
//! - final releases of 3.14.x and 3.15.x (layouts are stable across patch
//!   releases);
//! - release candidates of those (`rc`): the ABI, and with it this table, is
//!   frozen from rc1 (3.15.0rc1's table is byte-for-byte the shape of
//!   3.15.2's);
//! - alphas and betas are [`Pep768Status::Unsupported`]: the table changed
//!   between 3.15 pre-releases, and CPython itself requires an exact match;
//! - 3.16+ (unknown layout), ≤ 3.13 (3.13 has the table but no remote
//!   debugging; ≤ 3.12 have no cookie), free-threaded builds (not verified
//!   here), 32-bit or foreign-endian targets are Unsupported too.
//!
//! Every accepted table must also have the debugger tail CPython's source
//! fixes: `eval_breaker == 24`, `debugger_pending_call == 0`,
//! `debugger_script_path == 4`, `debugger_script_path_size == 512`.
//!
//! Races we cannot close without stopping the target (documented, narrowed):
//! a non-main thread may exit between our walk and our write (we re-read its
//! `native_thread_id` right before writing, and only write into writable
//! mappings); the one-byte `eval_breaker` update can race with the target
//! setting another event bit of the same byte (CPython's own writer rewrites
//! all 8 bytes). The pending call survives a lost bit: the target runs it at
//! the end of any eval-breaker handling.

mod memory;
mod offsets;
mod walk;

#[cfg(test)]
mod tests;

use std::io;
use std::os::unix::fs::MetadataExt;

use crate::process::{ProcError, Process};
use crate::python::{PythonProcess, PythonVersion};

use memory::{Remote, writable};
use walk::{Target, find_main_interp};

pub use memory::force_proc_mem_on_this_thread;
pub use offsets::{DebugOffsets, LAYOUTS, Layout, TableError};
pub use walk::read_offsets;

/// The first 8 bytes of `_Py_DebugOffsets`.
pub const COOKIE: &[u8; 8] = b"xdebugpy";
/// `sizeof(tstate->remote_debugger_support.debugger_script_path)`.
pub const SCRIPT_PATH_SIZE: u64 = 512;
/// The longest script path the target accepts (the buffer keeps a NUL).
pub const MAX_SCRIPT_PATH: usize = SCRIPT_PATH_SIZE as usize - 1;
/// `_PY_EVAL_PLEASE_STOP_BIT` (`Include/internal/pycore_ceval.h`).
pub const EVAL_PLEASE_STOP_BIT: u8 = 1 << 5;

/// No CPython structure is near this large (`_PyRuntimeState` is ~310 KiB,
/// `PyInterpreterState` ~220 KiB, a thread state < 1 KiB).
const MAX_STRUCT_SIZE: u64 = 16 << 20;
/// A thread state is read whole-ish per thread, so it gets a tighter cap.
const MAX_TSTATE_SIZE: u64 = 64 << 10;
/// Bounds for list walks (a loop in a hostile target must end).
const MAX_INTERPRETERS: usize = 4096;
const MAX_THREADS: usize = 1 << 16;
/// Highest user-space address we accept for a pointer read from the target
/// (x86-64 uses 47 bits, aarch64 up to 52).
const MAX_USER_ADDR: u64 = 1 << 56;

/// What the target allows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Pep768Status {
    Enabled {
        /// Native id of the thread `sys.remote_exec` would use; None when the
        /// interpreter has no main thread state (some embedders).
        main_tid: Option<u64>,
        /// From the table.
        version: PythonVersion,
        /// Address of `_PyRuntime` (and of the table).
        runtime_addr: u64,
        /// A script is already pending on the main thread (ours or another
        /// debugger's, waiting for the thread to run bytecode).
        main_pending: bool,
    },
    /// `remote_debugging_enabled == 0`: `PYTHON_DISABLE_REMOTE_DEBUG`,
    /// `-X disable-remote-debug`, or a `--without-remote-debug` build.
    DisabledInTarget,
    /// The target cannot do PEP 768: why.
    Unsupported(String),
}

/// A request to run a script in the target.
#[derive(Debug, Clone, Copy)]
pub struct Pep768Request<'a> {
    /// Absolute path as the TARGET sees it (its mount namespace), ≤ 511
    /// bytes, readable by the target's user.
    pub script_path: &'a str,
    /// None: the main thread (what `sys.remote_exec` does); else a native
    /// thread id (`threading.get_native_id()`, a TID in /proc/PID/task).
    pub tid: Option<u32>,
}

/// A request written into the target, pending until the thread runs bytecode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scheduled {
    pub pid: u32,
    pub native_tid: u64,
    pub tstate_addr: u64,
    pub is_main: bool,
    pub script_path: String,
    pub runtime_addr: u64,
    pub offsets: DebugOffsets,
}

impl Scheduled {
    /// Address of the thread's `debugger_pending_call`.
    pub fn pending_addr(&self) -> u64 {
        self.tstate_addr + self.offsets.pending_at()
    }

    /// Address of the thread's `debugger_script_path`.
    pub fn script_path_addr(&self) -> u64 {
        self.tstate_addr + self.offsets.path_at()
    }

    /// Address of the thread's `eval_breaker`.
    pub fn eval_breaker_addr(&self) -> u64 {
        self.tstate_addr + self.offsets.eval_breaker
    }
}

/// A Python thread of the target's main interpreter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteThread {
    pub native_tid: u64,
    pub tstate_addr: u64,
    /// `current_frame != 0`: the thread is inside Python code. Note that a
    /// thread blocked in a C call made from Python (`time.sleep`, a socket
    /// read) also has a frame; see `holds_gil`.
    pub has_frame: bool,
    /// The GIL was held by this thread when sampled: it was running bytecode
    /// (or C code holding the GIL) at that instant.
    pub holds_gil: bool,
    pub is_main: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Pep768Error {
    #[error(
        "remote debugging (PEP 768) cannot be used in process {pid}: {reason}; memsleuth will attach through ptrace instead"
    )]
    Unsupported { pid: u32, reason: String },
    #[error(
        "remote debugging is disabled in process {pid} (PYTHON_DISABLE_REMOTE_DEBUG or -X disable-remote-debug); memsleuth will attach through ptrace instead"
    )]
    Disabled { pid: u32 },
    #[error(
        "the _Py_DebugOffsets table of process {pid} at {addr:#x} is not valid ({reason}), so its memory is corrupted or it is not the CPython it claims to be; memsleuth will attach through ptrace instead"
    )]
    BadTable { pid: u32, addr: u64, reason: String },
    #[error(
        "the interpreter state of process {pid} looks corrupted ({reason}), so memsleuth will not write into it; it will attach through ptrace instead"
    )]
    Corrupt { pid: u32, reason: String },
    #[error(
        "process {pid} has no running Python interpreter ({reason}); it may be starting up or shutting down, so retry in a moment"
    )]
    NoInterpreter { pid: u32, reason: String },
    #[error(
        "process {pid} has no main Python thread state (an embedder that never registered one); ask for one of its Python threads by native thread id instead, or attach through ptrace"
    )]
    NoMainThread { pid: u32 },
    #[error(
        "thread {tid} of process {pid} is not a Python thread of its main interpreter; pick one of: {known}"
    )]
    NoSuchThread { pid: u32, tid: u32, known: String },
    #[error(
        "thread {tid} of process {pid} exited while memsleuth was choosing it; nothing was written, so pick another thread"
    )]
    ThreadGone { pid: u32, tid: u64 },
    #[error(
        "a remote-debugger script ({path:?}) is already pending on thread {tid} of process {pid}; wait until that thread runs Python code, or cancel the earlier request"
    )]
    AlreadyPending { pid: u32, tid: u64, path: String },
    #[error("invalid script path {path:?}: {why}")]
    BadScriptPath { path: String, why: String },
    #[error(
        "cannot {op} {len} bytes at {addr:#x} in process {pid}: {source}; the process may have just changed or exited, so retry, or attach through ptrace"
    )]
    Memory {
        pid: u32,
        op: &'static str,
        addr: u64,
        len: u64,
        source: io::Error,
    },
    #[error(
        "refusing to write {len} bytes at {addr:#x} in process {pid}: that is not writable memory, so the thread state it came from is stale or bogus; retry, or attach through ptrace"
    )]
    NotWritable { pid: u32, addr: u64, len: u64 },
    #[error(
        "this request was scheduled in process {scheduled}, not {pid}; cancel it through a handle on process {scheduled}"
    )]
    WrongProcess { pid: u32, scheduled: u32 },
    #[error(transparent)]
    Proc(#[from] ProcError),
}

// ---------------------------------------------------------------------------
// The public operations.

/// Whether the target accepts PEP 768 requests. Reads only. Targets that
/// cannot do it by nature (version, build) give `Ok(Unsupported)`; errors
/// are for what stops us from finding out (permissions, exit, a table that
/// cannot be real).
pub fn status(proc: &Process, py: &PythonProcess) -> Result<Pep768Status, Pep768Error> {
    let t = match Target::open(proc, py) {
        Ok(t) => t,
        Err(Pep768Error::Unsupported { reason, .. }) => {
            return Ok(Pep768Status::Unsupported(reason));
        }
        Err(e) => return Err(e),
    };
    if !t.enabled()? {
        return Ok(Pep768Status::DisabledInTarget);
    }
    let main = t.main_tstate()?;
    let (main_tid, main_pending) = if main == 0 {
        (None, false)
    } else {
        let tid = t.mem.read_u64(main + t.off.native_thread_id)?;
        (Some(tid), t.mem.read_i32(main + t.off.pending_at())? == 1)
    };
    Ok(Pep768Status::Enabled {
        main_tid,
        version: t.off.version,
        runtime_addr: t.runtime,
        main_pending,
    })
}

/// The Python threads of the main interpreter, newest first. Reads only;
/// works whether or not remote debugging is enabled.
pub fn threads(proc: &Process, py: &PythonProcess) -> Result<Vec<RemoteThread>, Pep768Error> {
    Target::open(proc, py)?.threads()
}

/// Asks the target to run `req.script_path` on the chosen thread at its next
/// bytecode boundary. Nothing is written unless every check passes.
pub fn schedule(
    proc: &Process,
    py: &PythonProcess,
    req: &Pep768Request,
) -> Result<Scheduled, Pep768Error> {
    let pid = proc.pid;
    check_script(proc, req.script_path)?;
    let t = Target::open(proc, py)?;
    if !t.enabled()? {
        return Err(Pep768Error::Disabled { pid });
    }
    let off = &t.off;
    let (tstate, native_tid, is_main) = match req.tid {
        None => {
            let main = t.main_tstate()?;
            if main == 0 {
                return Err(Pep768Error::NoMainThread { pid });
            }
            (main, t.mem.read_u64(main + off.native_thread_id)?, true)
        }
        Some(tid) => {
            let all = t.threads()?;
            let Some(th) = all.iter().find(|th| th.native_tid == u64::from(tid)) else {
                let known: Vec<String> = all
                    .iter()
                    .map(|th| {
                        format!(
                            "{}{}",
                            th.native_tid,
                            if th.is_main { " (main)" } else { "" }
                        )
                    })
                    .collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(Pep768Error::NoSuchThread { pid, tid, known });
            };
            (th.tstate_addr, th.native_tid, th.is_main)
        }
    };
    let scheduled = Scheduled {
        pid,
        native_tid,
        tstate_addr: tstate,
        is_main,
        script_path: req.script_path.to_owned(),
        runtime_addr: t.runtime,
        offsets: off.clone(),
    };
    // Everything we will write must be in private writable memory.
    let maps = proc.maps()?;
    for (addr, len) in [
        (scheduled.script_path_addr(), SCRIPT_PATH_SIZE),
        (scheduled.pending_addr(), 4),
        (scheduled.eval_breaker_addr(), 1),
    ] {
        if !writable(&maps, addr, len) {
            return Err(Pep768Error::NotWritable { pid, addr, len });
        }
    }
    if t.mem.read_i32(scheduled.pending_addr())? == 1 {
        return Err(Pep768Error::AlreadyPending {
            pid,
            tid: native_tid,
            path: read_path(&t.mem, scheduled.script_path_addr())?,
        });
    }
    // Narrow the window in which a non-main thread could have exited.
    if t.mem.read_u64(tstate + off.native_thread_id)? != native_tid {
        return Err(Pep768Error::ThreadGone {
            pid,
            tid: native_tid,
        });
    }
    let mut path = Vec::with_capacity(req.script_path.len() + 1);
    path.extend_from_slice(req.script_path.as_bytes());
    path.push(0);
    t.mem.write(scheduled.script_path_addr(), &path)?;
    t.mem.write(scheduled.pending_addr(), &1i32.to_ne_bytes())?;
    set_stop_bit(&t.mem, scheduled.eval_breaker_addr())?;
    Ok(scheduled)
}

/// ORs the STOP bit into the low byte of `eval_breaker` (one-byte
/// read-modify-write), and re-sets it once if the target raced us.
fn set_stop_bit(mem: &Remote, eval_breaker: u64) -> Result<(), Pep768Error> {
    let low = if cfg!(target_endian = "little") {
        eval_breaker
    } else {
        eval_breaker + 7
    };
    for _ in 0..2 {
        let mut b = [0u8; 1];
        mem.read(low, &mut b)?;
        if b[0] & EVAL_PLEASE_STOP_BIT != 0 {
            return Ok(());
        }
        mem.write(low, &[b[0] | EVAL_PLEASE_STOP_BIT])?;
        let mut check = [0u8; 1];
        mem.read(low, &mut check)?;
        // Set, or already handled by the target (which clears it): done.
        if check[0] & EVAL_PLEASE_STOP_BIT != 0 || check[0] != b[0] {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether our request is still waiting: the thread still exists in the
/// interpreter, its buffer still holds our path, and the flag is 1.
pub fn is_pending(proc: &Process, scheduled: &Scheduled) -> Result<bool, Pep768Error> {
    Ok(locate_request(proc, scheduled)?.is_some())
}

/// Withdraws a request that has not run yet (sets `debugger_pending_call`
/// back to 0 if it is still 1 and the buffer still holds our path). A
/// request that already ran, was replaced by another debugger's, or whose
/// thread is gone, is left alone. The STOP bit is left set: the target
/// clears it at its next check, and it may not be ours alone.
pub fn cancel(proc: &Process, scheduled: &Scheduled) -> Result<(), Pep768Error> {
    if let Some((mem, pending)) = locate_request(proc, scheduled)? {
        mem.write(pending, &0i32.to_ne_bytes())?;
    }
    Ok(())
}

/// Re-finds the thread state of a request from the runtime (a freed thread
/// state must not be written) and returns its pending flag's address when
/// the request is still ours and pending.
fn locate_request<'a>(
    proc: &'a Process,
    s: &Scheduled,
) -> Result<Option<(Remote<'a>, u64)>, Pep768Error> {
    if proc.pid != s.pid {
        return Err(Pep768Error::WrongProcess {
            pid: proc.pid,
            scheduled: s.pid,
        });
    }
    let mem = Remote { proc };
    let interp = find_main_interp(&mem, s.runtime_addr, &s.offsets)?;
    let t = Target {
        mem,
        runtime: s.runtime_addr,
        off: s.offsets.clone(),
        interp,
    };
    let alive = t
        .threads()?
        .iter()
        .any(|th| th.tstate_addr == s.tstate_addr && th.native_tid == s.native_tid);
    if !alive {
        return Ok(None);
    }
    if t.mem.read_i32(s.pending_addr())? != 1 {
        return Ok(None);
    }
    let mut buf = vec![0u8; s.script_path.len() + 1];
    t.mem.read(s.script_path_addr(), &mut buf)?;
    if buf.last() != Some(&0) || &buf[..s.script_path.len()] != s.script_path.as_bytes() {
        return Ok(None);
    }
    if !writable(&proc.maps()?, s.pending_addr(), 4) {
        return Err(Pep768Error::NotWritable {
            pid: s.pid,
            addr: s.pending_addr(),
            len: 4,
        });
    }
    let pending = s.pending_addr();
    Ok(Some((t.mem, pending)))
}

fn read_path(mem: &Remote, addr: u64) -> Result<String, Pep768Error> {
    let mut buf = vec![0u8; SCRIPT_PATH_SIZE as usize];
    mem.read(addr, &mut buf)?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The path must fit, be absolute, and name a file the target can open.
fn check_script(proc: &Process, path: &str) -> Result<(), Pep768Error> {
    let bad = |why: String| {
        Err(Pep768Error::BadScriptPath {
            path: path.to_owned(),
            why,
        })
    };
    if path.len() > MAX_SCRIPT_PATH {
        return bad(format!(
            "it is {} bytes and the target's buffer holds at most {MAX_SCRIPT_PATH}; put the script under a shorter directory such as /tmp",
            path.len()
        ));
    }
    if path.bytes().any(|b| b == 0) {
        return bad("it contains a NUL byte; use a plain file name".into());
    }
    if !path.starts_with('/') {
        return bad("it is relative, and the target would resolve it against its own working directory; pass an absolute path".into());
    }
    let seen = proc.root_path(path);
    let meta = match std::fs::metadata(&seen) {
        Ok(m) => m,
        Err(e) => {
            return bad(format!(
                "process {} cannot see it ({} gives: {e}); write the script under /proc/{}/root so the target's mount namespace has it",
                proc.pid,
                seen.display(),
                proc.pid
            ));
        }
    };
    if !meta.is_file() {
        return bad("it is not a regular file; write the script to a file".into());
    }
    // The classic failure (gh-134546): a 0600 file of ours, a target of
    // another user. Only refuse when nobody but the owner may read it.
    let target_uid = proc.status()?.uid;
    if target_uid != 0 && meta.uid() != target_uid && meta.mode() & 0o044 == 0 {
        return bad(format!(
            "it belongs to uid {} with mode {:o}, so the target (uid {target_uid}) cannot read it; chmod o+r the file or chown it to the target's user",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}
