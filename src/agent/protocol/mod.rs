//! The framed protocol between the tool and the agent inside the target.
//!
//! One frame on the wire:
//!
//! ```text
//! +----------------+---------------------------+----+------------------+
//! | u32 BE length  | JSON header (UTF-8)       | \n | payload (binary) |
//! +----------------+---------------------------+----+------------------+
//!                  <------------------- length bytes ------------------>
//! ```
//!
//! The header is one JSON object; JSON never contains a raw newline, so the
//! first `\n` ends it. Everything after it, up to `length`, is an opaque
//! payload (empty for most messages; the agent source on `load`, and later
//! the census arrays).
//!
//! The target is not trusted: [`read_frame`] checks the length against the
//! caps before allocating anything for it, never panics, and grows its buffer
//! only as bytes actually arrive, so a lying length costs nothing.
//!
//! Requests carry an `id` that the response echoes. A response is
//! `{"id":N,"ok":true,"gil_s":0.0012,"result":{...}}` or
//! `{"id":N,"ok":false,"gil_s":...,"error":{"type":..,"message":..,"traceback":..}}`.
//! The agent sends one unsolicited frame after it starts: `{"op":"hello","id":0,...}`.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Size limits applied while reading a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Largest accepted frame (header + newline + payload).
    pub max_frame: usize,
    /// Largest accepted JSON header.
    pub max_header: usize,
}

impl Caps {
    /// Frames coming from the target: 256 MiB, headers 16 MiB.
    pub const FROM_TARGET: Caps = Caps {
        max_frame: 256 << 20,
        max_header: 16 << 20,
    };
}

impl Default for Caps {
    fn default() -> Self {
        Caps::FROM_TARGET
    }
}

/// The largest frame the agent accepts from the tool (it enforces this
/// itself; kept here so the tool refuses to send what would be dropped).
pub const MAX_FRAME_TO_AGENT: usize = 64 << 20;

/// One message: a JSON object and an optional binary payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: Value,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(header: Value) -> Frame {
        Frame {
            header,
            payload: Vec::new(),
        }
    }

    pub fn with_payload(header: Value, payload: Vec<u8>) -> Frame {
        Frame { header, payload }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream ended cleanly before the first byte of a frame.
    #[error("the agent closed the connection")]
    Closed,
    /// The stream ended inside a frame.
    #[error("the connection ended in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("frame of {len} bytes is larger than the {cap}-byte limit")]
    FrameTooLarge { len: usize, cap: usize },
    #[error("frame header is larger than the {cap}-byte limit")]
    HeaderTooLarge { cap: usize },
    #[error("frame has no header terminator (newline)")]
    MissingTerminator,
    #[error("frame header is not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("frame header is JSON but not an object")]
    NotAnObject,
    #[error("timed out waiting for the agent")]
    Timeout,
    #[error("i/o error on the agent connection: {0}")]
    Io(#[source] io::Error),
}

impl ProtocolError {
    fn from_io(e: io::Error) -> ProtocolError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ProtocolError::Timeout,
            _ => ProtocolError::Io(e),
        }
    }
}

/// Reads exactly `buf.len()` bytes; Ok(n < len) only at end of stream.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Appends exactly `n` bytes from `r` to `out`, growing the buffer only as
/// data arrives (so an announced-but-absent frame allocates nothing).
fn read_n_into(r: &mut impl Read, n: usize, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 64 * 1024];
    let mut got = 0;
    while got < n {
        let want = (n - got).min(chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(k) => {
                out.extend_from_slice(&chunk[..k]);
                got += k;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame, enforcing `caps`. Never panics on any input.
pub fn read_frame(r: &mut impl Read, caps: Caps) -> Result<Frame, ProtocolError> {
    let mut len_buf = [0u8; 4];
    let got = read_full(r, &mut len_buf).map_err(ProtocolError::from_io)?;
    if got == 0 {
        return Err(ProtocolError::Closed);
    }
    if got < 4 {
        return Err(ProtocolError::Truncated { got, expected: 4 });
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > caps.max_frame {
        return Err(ProtocolError::FrameTooLarge {
            len,
            cap: caps.max_frame,
        });
    }

    // The header: read until the newline, at most max_header + 1 bytes.
    let head_window = len.min(caps.max_header.saturating_add(1));
    let mut buf = Vec::with_capacity(head_window.min(64 * 1024));
    let mut header_end = None;
    while buf.len() < head_window {
        let before = buf.len();
        let want = (head_window - before).min(64 * 1024);
        let n = read_n_into(r, want, &mut buf).map_err(ProtocolError::from_io)?;
        if let Some(pos) = buf[before..].iter().position(|&b| b == b'\n') {
            header_end = Some(before + pos);
            break;
        }
        if n < want {
            return Err(ProtocolError::Truncated {
                got: 4 + buf.len(),
                expected: 4 + len,
            });
        }
    }
    let Some(header_end) = header_end else {
        return Err(if len > caps.max_header {
            ProtocolError::HeaderTooLarge {
                cap: caps.max_header,
            }
        } else {
            ProtocolError::MissingTerminator
        });
    };
    if header_end > caps.max_header {
        return Err(ProtocolError::HeaderTooLarge {
            cap: caps.max_header,
        });
    }

    // Whatever came after the newline already belongs to the payload.
    let mut payload = buf.split_off(header_end + 1);
    buf.truncate(header_end);
    let rest = len - (header_end + 1) - payload.len();
    let n = read_n_into(r, rest, &mut payload).map_err(ProtocolError::from_io)?;
    if n < rest {
        return Err(ProtocolError::Truncated {
            got: 4 + header_end + 1 + payload.len(),
            expected: 4 + len,
        });
    }

    let header: Value = serde_json::from_slice(&buf).map_err(ProtocolError::BadJson)?;
    if !header.is_object() {
        return Err(ProtocolError::NotAnObject);
    }
    Ok(Frame { header, payload })
}

/// Encodes a frame into bytes (length prefix included).
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, ProtocolError> {
    if !frame.header.is_object() {
        return Err(ProtocolError::NotAnObject);
    }
    let header = serde_json::to_vec(&frame.header).map_err(ProtocolError::BadJson)?;
    let len = header.len() + 1 + frame.payload.len();
    if len > u32::MAX as usize {
        return Err(ProtocolError::FrameTooLarge {
            len,
            cap: u32::MAX as usize,
        });
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(&frame.payload);
    Ok(out)
}

/// Writes one frame (a single `write_all`, then `flush`).
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> Result<(), ProtocolError> {
    let bytes = encode_frame(frame)?;
    w.write_all(&bytes).map_err(ProtocolError::from_io)?;
    w.flush().map_err(ProtocolError::from_io)
}

// ---------------------------------------------------------------------------
// Typed messages.

/// How `exec` compiles the code: `exec` runs statements silently, `single`
/// behaves like the interactive prompt (expression values are shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecMode {
    #[default]
    Exec,
    Single,
}

/// What the tool asks for. Serialised with the op name in `op`, flattened
/// next to `id` by [`RequestFrame`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run code in the session namespace, capturing this thread's output.
    Exec {
        code: String,
        mode: ExecMode,
    },
    /// Evaluate one expression and return its repr.
    Eval {
        expr: String,
    },
    /// Completion candidates for the word `text`.
    Complete {
        text: String,
    },
    /// Is `source` a complete statement, an incomplete one, or an error?
    CompileCheck {
        source: String,
    },
    Ping,
    /// Restore everything, answer, and end the agent thread.
    Detach,
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Exec { .. } => "exec",
            Request::Eval { .. } => "eval",
            Request::Complete { .. } => "complete",
            Request::CompileCheck { .. } => "compile_check",
            Request::Ping => "ping",
            Request::Detach => "detach",
        }
    }
}

/// A request with its id, as it goes on the wire: `{"id":3,"op":"eval","expr":"1+1"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    #[serde(flatten)]
    pub request: Request,
}

/// The first frame the tool sends: the bootstrap checks `token`, then runs
/// the payload (the agent source) and hands `options` to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadHeader {
    pub op: String,
    pub token: String,
    #[serde(default)]
    pub options: LoadOptions,
}

/// Session settings the agent reads from the load frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadOptions {
    /// Cap on a returned repr (eval, single-mode values), in characters.
    pub repr_cap: usize,
    /// Cap on captured stdout/stderr per request, in characters.
    pub output_cap: usize,
    /// Have the agent send the timestamps it took (hello and answers carry
    /// `marks`: `[[label, time.monotonic()], ...]`), for MEMSLEUTH_TRACE_INJECT.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            repr_cap: 1 << 20,
            output_cap: 16 << 20,
            trace: false,
        }
    }
}

/// An exception inside the target, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RemoteError {
    /// The exception class name, e.g. `NameError`.
    #[serde(rename = "type")]
    pub type_name: String,
    pub message: String,
    /// Formatted traceback (agent frames removed); may be empty.
    #[serde(default)]
    pub traceback: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.type_name)
        } else {
            write!(f, "{}: {}", self.type_name, self.message)
        }
    }
}

/// Any answer from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub id: u64,
    pub ok: bool,
    /// Wall time the request spent in Python code in the target (a proxy
    /// for how long it held the GIL), in seconds.
    #[serde(default)]
    pub gil_s: f64,
    /// The agent thread's CPU time over the request, when it can read it:
    /// a better measure of GIL hold than wall time, which also counts
    /// socket writes (GIL released) and time a busy machine kept it waiting.
    #[serde(default)]
    pub gil_cpu_s: Option<f64>,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<RemoteError>,
    /// Binary payload of the frame (empty for the ops here).
    #[serde(skip)]
    pub payload: Vec<u8>,
}

impl Response {
    /// Parses a frame into a response (the payload moves along).
    pub fn from_frame(frame: Frame) -> Result<Response, serde_json::Error> {
        let mut r: Response = serde_json::from_value(frame.header)?;
        r.payload = frame.payload;
        Ok(r)
    }
}

/// `sys.version_info` as five fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VersionInfo {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    pub releaselevel: String,
    pub serial: u32,
}

/// What the agent reports right after it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Hello {
    pub agent_version: String,
    /// `sys.version`, e.g. "3.12.1 (main, ...) [GCC 12.2.0]".
    pub python_version: String,
    pub version_info: VersionInfo,
    /// `sys.implementation.name` ("cpython"); "cpython" on 2.7.
    pub implementation: String,
    pub executable: String,
    pub pid: u32,
    /// Threads in the interpreter when the agent started (its own included).
    pub thread_count: u32,
    pub gc_enabled: bool,
    /// Whether the target had imported `threading` before the agent ran.
    pub threading_imported: bool,
    /// Whether the per-thread stdout/stderr proxies are installed (not when
    /// the target's sys.stdout/sys.stderr is None).
    #[serde(default)]
    pub stdout_proxy: bool,
    #[serde(default)]
    pub stderr_proxy: bool,
    /// The agent thread's `get_ident()`.
    #[serde(default)]
    pub agent_thread: u64,
    /// The agent thread's kernel thread id as the target sees it (in its own
    /// pid namespace), when the agent could tell.
    #[serde(default)]
    pub agent_tid: Option<u32>,
    /// Time the agent spent starting (imports, proxies), in seconds.
    #[serde(default)]
    pub gil_s: f64,
}

/// Result of `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    /// In `single` mode: the reprs of expression statements' values (None
    /// values are not shown, like the REPL), joined by newlines.
    #[serde(default)]
    pub value_repr: Option<String>,
    /// True when the code raised; `error` says what.
    pub raised: bool,
    #[serde(default)]
    pub error: Option<RemoteError>,
    /// True when output or a repr was cut at its cap.
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub gil_s: f64,
}

/// Result of `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EvalResult {
    pub value_repr: String,
    /// Qualified type name of the value, e.g. "builtins.dict".
    #[serde(rename = "type", default)]
    pub type_name: String,
    /// True when the repr was cut at the cap; `repr_len` is the full length.
    pub truncated: bool,
    #[serde(default)]
    pub repr_len: usize,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub gil_s: f64,
}

/// Result of `complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Completions {
    pub matches: Vec<String>,
    #[serde(default)]
    pub gil_s: f64,
}

/// What `compile_check` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompileStatus {
    /// A whole statement: run it.
    Complete,
    /// Needs more lines (e.g. `if x:`).
    Incomplete,
    /// Cannot become valid by adding lines.
    Error,
}

/// Result of `compile_check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompileCheck {
    pub status: CompileStatus,
    #[serde(default)]
    pub error: Option<RemoteError>,
    #[serde(default)]
    pub gil_s: f64,
}

/// Result of `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Pong {
    /// The target's `time.time()`.
    #[serde(default)]
    pub time: f64,
    #[serde(default)]
    pub gil_s: f64,
}

#[cfg(test)]
mod tests;
