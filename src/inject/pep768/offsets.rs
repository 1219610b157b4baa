//! The `_Py_DebugOffsets` table: where the fields we use sit in it per minor
//! version ([`LAYOUTS`]), and parsing and validating its bytes
//! ([`DebugOffsets::parse`]). Pure: no process is involved here.

use super::{COOKIE, SCRIPT_PATH_SIZE};
use super::{MAX_STRUCT_SIZE, MAX_TSTATE_SIZE};
use crate::python::PythonVersion;

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
pub(super) mod pos {
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
    pub(super) fn pending_at(&self) -> u64 {
        self.remote_debugger_support + self.debugger_pending_call
    }

    /// Offset of `debugger_script_path` from the thread state.
    pub(super) fn path_at(&self) -> u64 {
        self.remote_debugger_support + self.debugger_script_path
    }

    /// How many bytes of a thread state the walk reads.
    pub(super) fn tstate_span(&self) -> u64 {
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

pub(super) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}
