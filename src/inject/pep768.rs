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

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::process::{ProcError, Process};
use crate::python::{PythonProcess, PythonVersion};

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

/// Where the fields we use sit inside `_Py_DebugOffsets`, per minor version.
/// Everything else comes from the target's own table at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub minor: u8,
    /// `sizeof(_Py_DebugOffsets)`.
    pub table_size: usize,
    /// Position of `thread_state.native_thread_id`.
    pub native_thread_id: usize,
    /// Position of the `debugger_support` group (always the last one).
    pub debugger_support: usize,
}

/// The layouts we know (Linux 64-bit; positions checked against 3.14.10 and
/// 3.15.2 tables and the research note's 3.14.6 and 3.15.0rc1 dumps).
pub const LAYOUTS: &[Layout] = &[
    Layout {
        minor: 14,
        table_size: 760,
        native_thread_id: 224,
        debugger_support: 712,
    },
    Layout {
        minor: 15,
        table_size: 888,
        native_thread_id: 248,
        debugger_support: 840,
    },
];

/// Positions shared by 3.13–3.15.
mod pos {
    pub const VERSION: usize = 8;
    pub const FREE_THREADED: usize = 16;
    pub const HEADER: usize = 24;
    pub const RUNTIME_SIZE: usize = 24;
    pub const INTERPRETERS_HEAD: usize = 40;
    pub const INTERP_SIZE: usize = 48;
    pub const INTERP_ID: usize = 56;
    pub const INTERP_NEXT: usize = 64;
    pub const THREADS_HEAD: usize = 72;
    pub const THREADS_MAIN: usize = 80;
    pub const GIL_LOCKED: usize = 144;
    pub const GIL_HOLDER: usize = 152;
    pub const TSTATE_SIZE: usize = 176;
    pub const TSTATE_NEXT: usize = 192;
    pub const TSTATE_INTERP: usize = 200;
    pub const CURRENT_FRAME: usize = 208;
    // Inside debugger_support:
    pub const EVAL_BREAKER: usize = 0;
    pub const REMOTE_DEBUGGER_SUPPORT: usize = 8;
    pub const REMOTE_DEBUGGING_ENABLED: usize = 16;
    pub const PENDING_CALL: usize = 24;
    pub const SCRIPT_PATH: usize = 32;
    pub const SCRIPT_PATH_SIZE: usize = 40;
}

/// The offsets we use, read from the target's own `_Py_DebugOffsets` and
/// validated. All are byte offsets into the structure named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX` recorded in the table.
    pub version_hex: u64,
    pub version: PythonVersion,
    pub free_threaded: bool,
    /// `sizeof(_Py_DebugOffsets)` for this layout.
    pub table_size: u64,
    /// `sizeof(_PyRuntimeState)` and the offset of `interpreters.head`.
    pub runtime_size: u64,
    pub interpreters_head: u64,
    /// `PyInterpreterState`.
    pub interp_size: u64,
    pub interp_id: u64,
    pub interp_next: u64,
    pub threads_head: u64,
    pub threads_main: u64,
    /// `_gil.locked` (int) and `_gil.last_holder` (pointer).
    pub gil_locked: u64,
    pub gil_holder: u64,
    /// `config.remote_debug` (int).
    pub remote_debugging_enabled: u64,
    /// `PyThreadState`.
    pub tstate_size: u64,
    pub tstate_next: u64,
    /// `PyThreadState.interp`: checked to point back at the interpreter.
    pub tstate_interp: u64,
    pub current_frame: u64,
    pub native_thread_id: u64,
    pub eval_breaker: u64,
    pub remote_debugger_support: u64,
    /// Relative to `remote_debugger_support`.
    pub debugger_pending_call: u64,
    pub debugger_script_path: u64,
    pub debugger_script_path_size: u64,
}

/// Why a table was refused, before any process is involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A well-formed table (or none at all) of a kind we do not drive.
    #[error("{0}")]
    Unsupported(String),
    /// Bytes that cannot be a real CPython table.
    #[error("{0}")]
    Malformed(String),
}

impl DebugOffsets {
    /// Parses and validates a `_Py_DebugOffsets` table. `bytes` may be longer
    /// than the table; `expect` is the interpreter's version from the binary
    /// (major.minor must agree). Never panics, whatever the bytes.
    pub fn parse(bytes: &[u8], expect: Option<PythonVersion>) -> Result<DebugOffsets, TableError> {
        let unsupported = |s: String| Err(TableError::Unsupported(s));
        let malformed = |s: String| Err(TableError::Malformed(s));
        if bytes.len() < pos::HEADER {
            return malformed(format!("table truncated to {} bytes", bytes.len()));
        }
        if &bytes[..8] != COOKIE {
            if let Some(e) = expect
                && (e.major, e.minor) >= (3, 13)
            {
                return malformed(format!(
                    "the \"xdebugpy\" cookie is missing although the binary is Python {e}"
                ));
            }
            return unsupported(
                "no _Py_DebugOffsets table (cookie \"xdebugpy\" missing): Python 3.12 or older, or not CPython".into(),
            );
        }
        let version_hex = u64_at(bytes, pos::VERSION).unwrap_or(0);
        let version = u32::try_from(version_hex)
            .ok()
            .and_then(PythonVersion::from_hex)
            .filter(|v| v.major == 3);
        let Some(version) = version else {
            return malformed(format!(
                "version field {version_hex:#x} is not a Python 3 version"
            ));
        };
        if let Some(e) = expect
            && (e.major, e.minor) != (version.major, version.minor)
        {
            return malformed(format!(
                "table says Python {version} but the binary is Python {e} (was the interpreter replaced on disk?)"
            ));
        }
        if version.minor < 14 {
            return unsupported(format!(
                "Python {version} has no remote debugging (PEP 768 arrived in 3.14)"
            ));
        }
        let Some(layout) = LAYOUTS.iter().find(|l| l.minor == version.minor) else {
            return unsupported(format!(
                "Python {version} is newer than this memsleuth knows (debug-offsets layouts known: 3.14, 3.15)"
            ));
        };
        if version.level == 'a' || version.level == 'b' {
            return unsupported(format!(
                "Python {version} is an alpha or beta, whose debug-offsets layout may differ from the release"
            ));
        }
        let free_threaded = match u64_at(bytes, pos::FREE_THREADED) {
            Some(0) => false,
            Some(1) => true,
            other => return malformed(format!("free_threaded field is {:#x}", other.unwrap_or(0))),
        };
        if free_threaded {
            return unsupported(format!(
                "Python {version} is a free-threaded (no-GIL) build, whose remote-debugging layout memsleuth has not verified"
            ));
        }
        if bytes.len() < layout.table_size {
            return malformed(format!(
                "table truncated to {} bytes; Python 3.{} needs {}",
                bytes.len(),
                layout.minor,
                layout.table_size
            ));
        }
        let at = |p: usize| u64_at(bytes, p).unwrap_or(u64::MAX);
        let dbg = layout.debugger_support;
        let o = DebugOffsets {
            version_hex,
            version,
            free_threaded,
            table_size: layout.table_size as u64,
            runtime_size: at(pos::RUNTIME_SIZE),
            interpreters_head: at(pos::INTERPRETERS_HEAD),
            interp_size: at(pos::INTERP_SIZE),
            interp_id: at(pos::INTERP_ID),
            interp_next: at(pos::INTERP_NEXT),
            threads_head: at(pos::THREADS_HEAD),
            threads_main: at(pos::THREADS_MAIN),
            gil_locked: at(pos::GIL_LOCKED),
            gil_holder: at(pos::GIL_HOLDER),
            remote_debugging_enabled: at(dbg + pos::REMOTE_DEBUGGING_ENABLED),
            tstate_size: at(pos::TSTATE_SIZE),
            tstate_next: at(pos::TSTATE_NEXT),
            tstate_interp: at(pos::TSTATE_INTERP),
            current_frame: at(pos::CURRENT_FRAME),
            native_thread_id: at(layout.native_thread_id),
            eval_breaker: at(dbg + pos::EVAL_BREAKER),
            remote_debugger_support: at(dbg + pos::REMOTE_DEBUGGER_SUPPORT),
            debugger_pending_call: at(dbg + pos::PENDING_CALL),
            debugger_script_path: at(dbg + pos::SCRIPT_PATH),
            debugger_script_path_size: at(dbg + pos::SCRIPT_PATH_SIZE),
        };
        o.validate().map_err(TableError::Malformed)?;
        Ok(o)
    }

    fn validate(&self) -> Result<(), String> {
        // The debugger tail CPython's source fixes: uintptr_t eval_breaker at
        // tstate+24 and {int32_t pending; char path[512];}.
        let tail = (
            self.eval_breaker,
            self.debugger_pending_call,
            self.debugger_script_path,
            self.debugger_script_path_size,
        );
        if tail != (24, 0, 4, SCRIPT_PATH_SIZE) {
            return Err(format!(
                "debugger_support fields (eval_breaker, pending_call, script_path, script_path_size) are {tail:?}, expected (24, 0, 4, 512)"
            ));
        }
        for (name, size, max) in [
            ("runtime_state.size", self.runtime_size, MAX_STRUCT_SIZE),
            ("interpreter_state.size", self.interp_size, MAX_STRUCT_SIZE),
            ("thread_state.size", self.tstate_size, MAX_TSTATE_SIZE),
        ] {
            if !(64..=max).contains(&size) {
                return Err(format!("{name} is {size}, outside 64..={max}"));
            }
        }
        // The table is the first field of _PyRuntimeState.
        if self.runtime_size < self.table_size {
            return Err(format!(
                "runtime_state.size {} is smaller than the table itself ({})",
                self.runtime_size, self.table_size
            ));
        }
        let field = |name: &str, off: u64, width: u64, size: u64| -> Result<(), String> {
            let fits = off.checked_add(width).is_some_and(|end| end <= size);
            if !fits || !off.is_multiple_of(width) {
                return Err(format!(
                    "{name} offset {off} does not hold an aligned {width}-byte field within {size} bytes"
                ));
            }
            Ok(())
        };
        field(
            "runtime_state.interpreters_head",
            self.interpreters_head,
            8,
            self.runtime_size,
        )?;
        if self.interpreters_head < self.table_size {
            return Err(format!(
                "runtime_state.interpreters_head {} points into the table itself",
                self.interpreters_head
            ));
        }
        field("interpreter_state.id", self.interp_id, 8, self.interp_size)?;
        field(
            "interpreter_state.next",
            self.interp_next,
            8,
            self.interp_size,
        )?;
        field(
            "interpreter_state.threads_head",
            self.threads_head,
            8,
            self.interp_size,
        )?;
        field(
            "interpreter_state.threads_main",
            self.threads_main,
            8,
            self.interp_size,
        )?;
        field(
            "interpreter_state.gil_runtime_state_locked",
            self.gil_locked,
            4,
            self.interp_size,
        )?;
        field(
            "interpreter_state.gil_runtime_state_holder",
            self.gil_holder,
            8,
            self.interp_size,
        )?;
        field(
            "debugger_support.remote_debugging_enabled",
            self.remote_debugging_enabled,
            4,
            self.interp_size,
        )?;
        field("thread_state.next", self.tstate_next, 8, self.tstate_size)?;
        field(
            "thread_state.interp",
            self.tstate_interp,
            8,
            self.tstate_size,
        )?;
        field(
            "thread_state.current_frame",
            self.current_frame,
            8,
            self.tstate_size,
        )?;
        field(
            "thread_state.native_thread_id",
            self.native_thread_id,
            8,
            self.tstate_size,
        )?;
        field(
            "debugger_support.eval_breaker",
            self.eval_breaker,
            8,
            self.tstate_size,
        )?;
        // remote_debugger_support is a struct of an int32 and char[512].
        field(
            "debugger_support.remote_debugger_support",
            self.remote_debugger_support,
            4,
            self.tstate_size,
        )?;
        let support_end = self
            .remote_debugger_support
            .checked_add(self.debugger_script_path + self.debugger_script_path_size);
        if support_end.is_none_or(|end| end > self.tstate_size) {
            return Err(format!(
                "remote_debugger_support at {} with its 516 bytes does not fit in a {}-byte thread state",
                self.remote_debugger_support, self.tstate_size
            ));
        }
        let overlaps = |a: u64, alen: u64, b: u64, blen: u64| a < b + blen && b < a + alen;
        if overlaps(self.eval_breaker, 8, self.remote_debugger_support, 516) {
            return Err("eval_breaker overlaps remote_debugger_support".into());
        }
        Ok(())
    }

    /// Offset of `debugger_pending_call` from the thread state.
    fn pending_at(&self) -> u64 {
        self.remote_debugger_support + self.debugger_pending_call
    }

    /// Offset of `debugger_script_path` from the thread state.
    fn path_at(&self) -> u64 {
        self.remote_debugger_support + self.debugger_script_path
    }

    /// How many bytes of a thread state the walk reads.
    fn tstate_span(&self) -> u64 {
        [
            self.tstate_next,
            self.tstate_interp,
            self.current_frame,
            self.native_thread_id,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 8
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

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
// Memory access.

/// Set after the first ENOSYS: the kernel lacks CONFIG_CROSS_MEMORY_ATTACH.
static NO_VM_RW: AtomicBool = AtomicBool::new(false);

thread_local! {
    static FORCE_PROC_MEM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests only: make this thread use `/proc/PID/mem` as if
/// `process_vm_readv`/`writev` returned ENOSYS.
#[doc(hidden)]
pub fn force_proc_mem_on_this_thread(on: bool) {
    FORCE_PROC_MEM.with(|f| f.set(on));
}

fn use_proc_mem() -> bool {
    NO_VM_RW.load(Ordering::Relaxed) || FORCE_PROC_MEM.with(|f| f.get())
}

/// Reading and writing the target's memory: `process_vm_readv`/`writev`,
/// or `/proc/PID/mem` where those do not exist (ENOSYS).
struct Remote<'a> {
    proc: &'a Process,
}

impl Remote<'_> {
    fn pid(&self) -> u32 {
        self.proc.pid
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Pep768Error> {
        self.checked(addr, buf.len() as u64, "read")?;
        let res = if use_proc_mem() {
            proc_mem_read(self.proc, addr, buf)
        } else {
            match vm_read(self.pid(), addr, buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_VM_RW.store(true, Ordering::Relaxed);
                    proc_mem_read(self.proc, addr, buf)
                }
                other => other,
            }
        };
        res.map_err(|e| self.error(e, "read", addr, buf.len() as u64))
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Pep768Error> {
        self.checked(addr, buf.len() as u64, "write")?;
        let res = if use_proc_mem() {
            proc_mem_write(self.proc, addr, buf)
        } else {
            match vm_write(self.pid(), addr, buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_VM_RW.store(true, Ordering::Relaxed);
                    proc_mem_write(self.proc, addr, buf)
                }
                other => other,
            }
        };
        res.map_err(|e| self.error(e, "write", addr, buf.len() as u64))
    }

    fn checked(&self, addr: u64, len: u64, op: &'static str) -> Result<(), Pep768Error> {
        if addr == 0 || addr.checked_add(len).is_none_or(|end| end > MAX_USER_ADDR) {
            return Err(Pep768Error::Memory {
                pid: self.pid(),
                op,
                addr,
                len,
                source: io::Error::new(io::ErrorKind::InvalidInput, "address outside user space"),
            });
        }
        Ok(())
    }

    fn error(&self, e: io::Error, op: &'static str, addr: u64, len: u64) -> Pep768Error {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ESRCH) => {
                self.proc.diagnose(self.proc.path("mem"), e).into()
            }
            _ => Pep768Error::Memory {
                pid: self.pid(),
                op,
                addr,
                len,
                source: e,
            },
        }
    }

    fn read_u64(&self, addr: u64) -> Result<u64, Pep768Error> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    fn read_i32(&self, addr: u64) -> Result<i32, Pep768Error> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(i32::from_ne_bytes(b))
    }
}

fn vm_read(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let local = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: (addr + done as u64) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: `local` describes memory we own exclusively for its length;
        // the remote range is only dereferenced by the kernel in the target.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        done += n as usize;
    }
    Ok(())
}

fn vm_write(pid: u32, addr: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &buf[done..];
        let local = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: (addr + done as u64) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: the kernel only reads `local`, which we own for its length.
        let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        done += n as usize;
    }
    Ok(())
}

fn proc_mem_read(proc: &Process, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    File::open(proc.path("mem"))?.read_exact_at(buf, addr)
}

fn proc_mem_write(proc: &Process, addr: u64, buf: &[u8]) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(proc.path("mem"))?
        .write_all_at(buf, addr)
}

/// Whether `[addr, addr+len)` lies in writable mappings (contiguous ones may
/// share the range). `/proc/PID/mem` writes even read-only pages, so every
/// write is checked against maps first.
fn writable(maps: &[crate::process::maps::Mapping], addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let mut at = addr;
    while at < end {
        match maps
            .iter()
            .find(|m| m.start <= at && at < m.end && m.writable() && !m.shared())
        {
            Some(m) => at = m.end,
            None => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------
// The target.

/// The table and main interpreter of one process, validated.
struct Target<'a> {
    mem: Remote<'a>,
    runtime: u64,
    off: DebugOffsets,
    interp: u64,
}

impl<'a> Target<'a> {
    fn open(proc: &'a Process, py: &PythonProcess) -> Result<Target<'a>, Pep768Error> {
        let (runtime, off) = read_offsets(proc, py)?;
        let mem = Remote { proc };
        let interp = find_main_interp(&mem, runtime, &off)?;
        Ok(Target {
            mem,
            runtime,
            off,
            interp,
        })
    }

    fn pid(&self) -> u32 {
        self.mem.pid()
    }

    fn enabled(&self) -> Result<bool, Pep768Error> {
        Ok(self
            .mem
            .read_i32(self.interp + self.off.remote_debugging_enabled)?
            == 1)
    }

    /// `threads_main`, checked to be a thread state of this interpreter
    /// (0 when there is none).
    fn main_tstate(&self) -> Result<u64, Pep768Error> {
        let t = self.mem.read_u64(self.interp + self.off.threads_main)?;
        if t != 0 {
            self.pointer(t, "interpreter_state.threads_main")?;
            self.belongs(t, self.mem.read_u64(t + self.off.tstate_interp)?)?;
        }
        Ok(t)
    }

    /// The round trip `tstate->interp == interp` (what py-spy and pystack
    /// check before trusting a candidate).
    fn belongs(&self, tstate: u64, its_interp: u64) -> Result<(), Pep768Error> {
        if its_interp != self.interp {
            return Err(Pep768Error::Corrupt {
                pid: self.pid(),
                reason: format!(
                    "thread state {tstate:#x} names interpreter {its_interp:#x}, not {:#x}",
                    self.interp
                ),
            });
        }
        Ok(())
    }

    fn pointer(&self, p: u64, what: &str) -> Result<(), Pep768Error> {
        check_pointer(p, self.off.tstate_size.max(8)).map_err(|why| Pep768Error::Corrupt {
            pid: self.pid(),
            reason: format!("{what} is {p:#x}: {why}"),
        })
    }

    fn threads(&self) -> Result<Vec<RemoteThread>, Pep768Error> {
        let main = self.main_tstate()?;
        let locked = self.mem.read_i32(self.interp + self.off.gil_locked)?;
        let holder = self.mem.read_u64(self.interp + self.off.gil_holder)?;
        let span = self.off.tstate_span() as usize;
        let mut buf = vec![0u8; span];
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut t = self.mem.read_u64(self.interp + self.off.threads_head)?;
        while t != 0 {
            self.pointer(t, "a thread_state.next")?;
            if !seen.insert(t) || out.len() >= MAX_THREADS {
                return Err(Pep768Error::Corrupt {
                    pid: self.pid(),
                    reason: format!("the thread list loops or exceeds {MAX_THREADS} entries"),
                });
            }
            self.mem.read(t, &mut buf)?;
            let field = |o: u64| u64_at(&buf, o as usize).unwrap_or(0);
            self.belongs(t, field(self.off.tstate_interp))?;
            out.push(RemoteThread {
                native_tid: field(self.off.native_thread_id),
                tstate_addr: t,
                has_frame: field(self.off.current_frame) != 0,
                holds_gil: locked != 0 && holder == t,
                is_main: t == main,
            });
            t = field(self.off.tstate_next);
        }
        Ok(out)
    }
}

/// Pointers read from the target: non-null, 8-aligned, in user space with
/// room for the structure.
fn check_pointer(p: u64, size: u64) -> Result<(), &'static str> {
    if p == 0 {
        return Err("null");
    }
    if !p.is_multiple_of(8) {
        return Err("misaligned");
    }
    if p.checked_add(size).is_none_or(|end| end > MAX_USER_ADDR) {
        return Err("outside user space");
    }
    Ok(())
}

/// Finds and validates the target's `_Py_DebugOffsets`. Returns the address
/// of `_PyRuntime` (= the table) and the offsets.
pub fn read_offsets(
    proc: &Process,
    py: &PythonProcess,
) -> Result<(u64, DebugOffsets), Pep768Error> {
    let pid = proc.pid;
    let unsupported = |reason: String| Pep768Error::Unsupported { pid, reason };
    if let Some(v) = py.version
        && (v.major, v.minor) < (3, 14)
    {
        let why = if (v.major, v.minor) == (3, 13) {
            "it has a debug-offsets table but no remote-debugging support"
        } else {
            "it has no debug-offsets table"
        };
        return Err(unsupported(format!(
            "it runs Python {v}, and {why} (PEP 768 needs 3.14 or later)"
        )));
    }
    if let Some(elf) = py.elf() {
        if !elf.is_64 {
            return Err(unsupported(
                "it is a 32-bit process, which memsleuth does not drive".into(),
            ));
        }
        if elf.little_endian != cfg!(target_endian = "little") {
            return Err(unsupported(
                "its byte order differs from memsleuth's".into(),
            ));
        }
    }
    // Candidates: the section (the note's §1 rule), else the symbol.
    let mut cands: Vec<(u64, Option<u64>)> = Vec::new();
    if let Some((addr, size)) = py
        .section_address(".PyRuntime")
        .filter(|&(a, s)| a != 0 && s != 0)
    {
        cands.push((addr, Some(size)));
    }
    if let Some(addr) = py.symbol_address("_PyRuntime").filter(|&a| a != 0)
        && cands.iter().all(|c| c.0 != addr)
    {
        cands.push((addr, None));
    }
    if cands.is_empty() {
        return Err(unsupported(format!(
            "{} has neither a .PyRuntime section nor a _PyRuntime symbol",
            py.binary.display()
        )));
    }
    let mem = Remote { proc };
    let max_table = LAYOUTS.iter().map(|l| l.table_size).max().unwrap_or(0);
    let mut first_err = None;
    for (addr, section_size) in cands {
        let mut header = [0u8; pos::HEADER];
        mem.read(addr, &mut header)?;
        // Read what the claimed version's layout needs (capped), then parse.
        let len = LAYOUTS
            .iter()
            .find(|l| {
                u64_at(&header, pos::VERSION)
                    .and_then(|v| u32::try_from(v).ok())
                    .and_then(PythonVersion::from_hex)
                    .is_some_and(|v| v.major == 3 && v.minor == l.minor)
            })
            .map_or(pos::HEADER, |l| l.table_size)
            .min(max_table);
        let mut bytes = vec![0u8; len];
        bytes[..pos::HEADER].copy_from_slice(&header);
        if len > pos::HEADER {
            mem.read(addr + pos::HEADER as u64, &mut bytes[pos::HEADER..])?;
        }
        let result = DebugOffsets::parse(&bytes, py.version).and_then(|o| match section_size {
            Some(size) if o.runtime_size > size => Err(TableError::Malformed(format!(
                "runtime_state.size {} exceeds the {size}-byte .PyRuntime section",
                o.runtime_size
            ))),
            _ => Ok(o),
        });
        match result {
            Ok(o) => return Ok((addr, o)),
            Err(e) => {
                first_err.get_or_insert(match e {
                    TableError::Unsupported(reason) => Pep768Error::Unsupported { pid, reason },
                    TableError::Malformed(reason) => Pep768Error::BadTable { pid, addr, reason },
                });
            }
        }
    }
    Err(first_err.unwrap_or_else(|| unsupported("no table found".into())))
}

/// `interpreters_head` → `next` to the interpreter with id 0.
fn find_main_interp(mem: &Remote, runtime: u64, off: &DebugOffsets) -> Result<u64, Pep768Error> {
    let pid = mem.pid();
    let bad = |reason: String| Pep768Error::Corrupt { pid, reason };
    let mut interp = mem.read_u64(runtime + off.interpreters_head)?;
    if interp == 0 {
        return Err(Pep768Error::NoInterpreter {
            pid,
            reason: "interpreters.head is NULL".into(),
        });
    }
    let mut seen = HashSet::new();
    while interp != 0 {
        check_pointer(interp, off.interp_size)
            .map_err(|why| bad(format!("an interpreter pointer is {interp:#x}: {why}")))?;
        if !seen.insert(interp) || seen.len() > MAX_INTERPRETERS {
            return Err(bad(format!(
                "the interpreter list loops or exceeds {MAX_INTERPRETERS} entries"
            )));
        }
        if mem.read_u64(interp + off.interp_id)? == 0 {
            return Ok(interp);
        }
        interp = mem.read_u64(interp + off.interp_next)?;
    }
    Err(Pep768Error::NoInterpreter {
        pid,
        reason: "no interpreter with id 0 in the list".into(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A table as 3.14.10 / 3.15.2 (Debian, x86-64) have it, with the values
    /// read from their `.PyRuntime` sections.
    fn table(minor: u8) -> Vec<u8> {
        let l = *LAYOUTS.iter().find(|l| l.minor == minor).unwrap();
        let mut b = vec![0u8; l.table_size];
        let mut put = |p: usize, v: u64| b[p..p + 8].copy_from_slice(&v.to_ne_bytes());
        let (version, runtime, head, interp, tsize, tid, rds, enabled) = match minor {
            14 => (
                0x030e_0af0u64,
                316_616u64,
                808u64,
                225_864u64,
                832u64,
                160u64,
                304u64,
                8076u64,
            ),
            _ => (0x030f_02f0, 346_568, 936, 226_240, 888, 184, 344, 8028),
        };
        put(pos::VERSION, version);
        put(pos::RUNTIME_SIZE, runtime);
        put(pos::INTERPRETERS_HEAD, head);
        put(pos::INTERP_SIZE, interp);
        put(pos::INTERP_ID, 7272);
        put(pos::INTERP_NEXT, 7264);
        put(pos::THREADS_HEAD, 7336);
        put(pos::THREADS_MAIN, 7352);
        put(pos::GIL_LOCKED, 7752);
        put(pos::GIL_HOLDER, 7744);
        put(pos::TSTATE_SIZE, tsize);
        put(pos::TSTATE_NEXT, 8);
        put(pos::TSTATE_INTERP, 16);
        put(pos::CURRENT_FRAME, 72);
        put(l.native_thread_id, tid);
        let d = l.debugger_support;
        put(d + pos::EVAL_BREAKER, 24);
        put(d + pos::REMOTE_DEBUGGER_SUPPORT, rds);
        put(d + pos::REMOTE_DEBUGGING_ENABLED, enabled);
        put(d + pos::PENDING_CALL, 0);
        put(d + pos::SCRIPT_PATH, 4);
        put(d + pos::SCRIPT_PATH_SIZE, 512);
        b[..8].copy_from_slice(COOKIE);
        b
    }

    fn put(b: &mut [u8], p: usize, v: u64) {
        b[p..p + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn malformed(r: Result<DebugOffsets, TableError>) -> String {
        match r {
            Err(TableError::Malformed(s)) => s,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn unsupported(r: Result<DebugOffsets, TableError>) -> String {
        match r {
            Err(TableError::Unsupported(s)) => s,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn parses_real_layouts() {
        let o = DebugOffsets::parse(&table(14), Some(PythonVersion::new(3, 14, 10))).unwrap();
        assert_eq!(
            (
                o.native_thread_id,
                o.remote_debugger_support,
                o.remote_debugging_enabled
            ),
            (160, 304, 8076)
        );
        assert_eq!(o.version, PythonVersion::new(3, 14, 10));
        assert_eq!((o.pending_at(), o.path_at()), (304, 308));
        let o = DebugOffsets::parse(&table(15), None).unwrap();
        assert_eq!(
            (
                o.native_thread_id,
                o.remote_debugger_support,
                o.remote_debugging_enabled
            ),
            (184, 344, 8028)
        );
        // Longer buffers are fine.
        let mut long = table(15);
        long.extend_from_slice(&[0xAA; 4096]);
        assert!(DebugOffsets::parse(&long, None).is_ok());
    }

    #[test]
    fn version_rules() {
        let mut t = table(14);
        assert!(
            malformed(DebugOffsets::parse(&t, Some(PythonVersion::new(3, 15, 0))))
                .contains("replaced")
        );
        put(&mut t, pos::VERSION, 0x030d_00f0);
        assert!(
            unsupported(DebugOffsets::parse(&t, None)).contains("3.13.0 has no remote debugging")
        );
        put(&mut t, pos::VERSION, 0x0310_00f0);
        assert!(unsupported(DebugOffsets::parse(&t, None)).contains("newer"));
        let mut t = table(15);
        put(&mut t, pos::VERSION, 0x030f_00b3);
        assert!(unsupported(DebugOffsets::parse(&t, None)).contains("alpha or beta"));
        put(&mut t, pos::VERSION, 0x030f_00a1);
        assert!(unsupported(DebugOffsets::parse(&t, None)).contains("alpha or beta"));
        put(&mut t, pos::VERSION, 0x030f_00c1);
        assert!(
            DebugOffsets::parse(&t, None).is_ok(),
            "release candidates are accepted"
        );
        put(&mut t, pos::VERSION, 0xdead_beef_0000);
        malformed(DebugOffsets::parse(&t, None));
        let mut t = table(15);
        put(&mut t, pos::FREE_THREADED, 1);
        assert!(unsupported(DebugOffsets::parse(&t, None)).contains("free-threaded"));
        put(&mut t, pos::FREE_THREADED, 7);
        malformed(DebugOffsets::parse(&t, None));
    }

    #[test]
    fn rejects_corruption() {
        let mut t = table(14);
        t[0] = b'X';
        assert!(unsupported(DebugOffsets::parse(&t, None)).contains("cookie"));
        let v = Some(PythonVersion::new(3, 14, 10));
        assert!(malformed(DebugOffsets::parse(&t, v)).contains("cookie is missing"));
        let v = Some(PythonVersion::new(3, 12, 1));
        assert!(unsupported(DebugOffsets::parse(&t, v)).contains("3.12 or older"));
        for len in [0, 7, 23, 24, 100, 759] {
            assert!(
                DebugOffsets::parse(&table(14)[..len], None).is_err(),
                "len {len}"
            );
        }
        let d14 = LAYOUTS[0].debugger_support;
        let cases: &[(usize, u64)] = &[
            (d14 + pos::SCRIPT_PATH_SIZE, 511),
            (d14 + pos::SCRIPT_PATH, 8),
            (d14 + pos::PENDING_CALL, 4),
            (d14 + pos::EVAL_BREAKER, 32),
            (d14 + pos::REMOTE_DEBUGGER_SUPPORT, 832 - 100),
            (d14 + pos::REMOTE_DEBUGGER_SUPPORT, u64::MAX - 2),
            (d14 + pos::REMOTE_DEBUGGER_SUPPORT, 20),
            (d14 + pos::REMOTE_DEBUGGING_ENABLED, 225_864),
            (d14 + pos::REMOTE_DEBUGGING_ENABLED, 8077),
            (pos::INTERPRETERS_HEAD, 8),
            (pos::INTERPRETERS_HEAD, u64::MAX),
            (pos::RUNTIME_SIZE, 1 << 40),
            (pos::RUNTIME_SIZE, 100),
            (pos::TSTATE_SIZE, 0),
            (pos::TSTATE_SIZE, 1 << 20),
            (pos::INTERP_SIZE, u64::MAX),
            (pos::THREADS_HEAD, u64::MAX - 7),
            (pos::THREADS_MAIN, 3),
            (224, 1 << 20),
            (pos::TSTATE_NEXT, 830),
        ];
        for &(p, v) in cases {
            let mut t = table(14);
            put(&mut t, p, v);
            let why = malformed(DebugOffsets::parse(&t, None));
            assert!(!why.is_empty(), "{p} = {v}");
        }
    }

    #[test]
    fn writable_check_spans_mappings() {
        let m = |start: u64, end: u64, perms: &[u8; 4]| crate::process::maps::Mapping {
            start,
            end,
            perms: *perms,
            offset: 0,
            dev_major: 0,
            dev_minor: 0,
            inode: 0,
            path: String::new(),
            stats: Default::default(),
        };
        let maps = [
            m(0x1000, 0x2000, b"rw-p"),
            m(0x2000, 0x3000, b"rw-p"),
            m(0x3000, 0x4000, b"r--p"),
        ];
        assert!(writable(&maps, 0x1ff0, 0x20));
        assert!(!writable(&maps, 0x2ff0, 0x20));
        assert!(!writable(&maps, 0x800, 4));
        assert!(!writable(&maps, u64::MAX - 1, 4));
        assert!(writable(&maps, 0x1000, 0));
    }

    #[test]
    fn both_memory_backends_work_on_ourselves() {
        let me = Process::unchecked(std::process::id());
        let src: [u8; 16] = *b"memsleuth-pep768";
        let addr = src.as_ptr() as u64;
        let mut a = [0u8; 16];
        vm_read(me.pid, addr, &mut a).unwrap();
        let mut b = [0u8; 16];
        proc_mem_read(&me, addr, &mut b).unwrap();
        assert_eq!((a, b), (src, src));
        // The kernel writes behind the compiler's back: go through a raw
        // pointer and volatile reads.
        let dst: *mut [u8; 8] = Box::into_raw(Box::new([0u8; 8]));
        let daddr = dst as u64;
        // SAFETY: `dst` is a live, exclusively owned allocation.
        let now = || unsafe { std::ptr::read_volatile(dst) };
        vm_write(me.pid, daddr, b"vm-write").unwrap();
        assert_eq!(&now(), b"vm-write");
        proc_mem_write(&me, daddr, b"procmem!").unwrap();
        assert_eq!(&now(), b"procmem!");
        // Through Remote with the fallback forced on this thread.
        force_proc_mem_on_this_thread(true);
        let remote = Remote { proc: &me };
        remote.write(daddr, b"remote!!").unwrap();
        assert_eq!(&now(), b"remote!!");
        assert_eq!(
            remote.read_u64(daddr).unwrap(),
            u64::from_ne_bytes(*b"remote!!")
        );
        force_proc_mem_on_this_thread(false);
        // SAFETY: allocated above by Box::into_raw, not freed elsewhere.
        drop(unsafe { Box::from_raw(dst) });
        assert!(vm_read(me.pid, 8, &mut a).is_err());
        assert!(Remote { proc: &me }.read(0, &mut a).is_err());
        assert!(Remote { proc: &me }.read(u64::MAX - 4, &mut a).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = DebugOffsets::parse(&bytes, None);
        }

        #[test]
        fn corrupted_real_tables_never_panic_and_stay_in_bounds(
            minor in 14u8..=15,
            edits in proptest::collection::vec((0usize..888, any::<u64>()), 1..8),
            cut in 0usize..900,
        ) {
            let mut t = table(minor);
            for (p, v) in edits {
                let p = p / 8 * 8;
                if p + 8 <= t.len() {
                    // Favour small and boundary values, where bugs hide.
                    let v = match v % 4 { 0 => v, 1 => v % 1024, 2 => v % (1 << 20), _ => u64::MAX - v % 16 };
                    put(&mut t, p, v);
                }
            }
            t.truncate(cut.max(t.len() * usize::from(cut >= 888)));
            if let Ok(o) = DebugOffsets::parse(&t, None) {
                prop_assert!(o.interpreters_head + 8 <= o.runtime_size);
                prop_assert!(o.remote_debugging_enabled + 4 <= o.interp_size);
                prop_assert!(o.threads_main + 8 <= o.interp_size);
                prop_assert!(o.path_at() + SCRIPT_PATH_SIZE <= o.tstate_size);
                prop_assert!(o.eval_breaker + 8 <= o.tstate_size);
                prop_assert!(o.tstate_span() <= o.tstate_size);
                prop_assert!(o.tstate_size <= MAX_TSTATE_SIZE);
            }
        }
    }
}
