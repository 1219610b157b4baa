//! The tool side of an agent session.
//!
//! 1. [`Listener::prepare`] makes a private directory in the target's own
//!    filesystem (`/proc/PID/root/tmp/memsleuth-XXXXXX`, mode 0700, owned by
//!    the target's uid), binds a Unix socket `s` in it (0600, listen(1)) and
//!    draws a random token. [`Listener::pipeline`] may queue the session's
//!    first requests.
//! 2. The injector runs [`Listener::bootstrap_code`] in the target: the
//!    bootstrap connects, checks our uid (SO_PEERCRED), compiles the agent
//!    (its source comes with the bootstrap) and starts the agent's thread.
//! 3. [`Listener::wait`] accepts the connection, checks with SO_PEERCRED that
//!    it comes from the target's pid, then closes the listening socket and
//!    removes the socket file and directory at once (nobody else can connect,
//!    and a bootstrap that runs late finds nothing and does nothing), and
//!    writes the load frame (token, options) and the queued requests.
//! 4. The agent checks the token before it touches anything, installs its
//!    output capture and says hello, answering the queued requests in the
//!    same write. [`Listener::into_session`] reads the hello.
//! 5. [`Session`] runs requests; [`Session::detach`] (or dropping it) tells the
//!    agent to restore everything and end its thread.
//!
//! All filesystem work inside the target's root goes through directory file
//! descriptors opened with O_NOFOLLOW, one path component at a time, so a
//! target that controls its own /tmp cannot redirect us through a symlink.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::inject::trace::trace;

use super::protocol::{
    self, Caps, CompileCheck, Completions, EvalResult, ExecMode, ExecResult, Frame, Hello, Pong,
    ProtocolError, RemoteError, Response,
};

mod bootstrap;
mod dir;
mod listener;
#[cfg(test)]
mod tests;

pub use bootstrap::{
    AGENT_CORE, AGENT_PLUGINS, BOOTSTRAP_TEMPLATE, agent_source, py_literal, render_bootstrap,
    render_bootstrap_for,
};
use dir::SocketDir;
pub use listener::Listener;

/// Where the socket directory may go, tried in order (relative to the
/// target's root).
const TMP_CANDIDATES: &[&str] = &["tmp", "var/tmp", "dev/shm"];
const SOCKET_NAME: &str = "s";
const DIR_PREFIX: &str = "memsleuth-";
/// How long the agent may take to start (imports) and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default wait for an answer to a request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long Drop waits for a best-effort detach.
const DROP_DETACH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long detach waits for the agent to finish its cleanup and hang up.
const DETACH_EOF_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot prepare the agent socket: {what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("no connection from the target yet; call wait() until it returns true")]
    NotConnected,
    #[error("the target refused the session: {0}")]
    Refused(String),
    #[error("the agent failed to start in the target: {0}")]
    StartFailed(RemoteError),
    #[error("timed out after {after:?} waiting for the agent to answer `{op}`")]
    Timeout { op: String, after: Duration },
    #[error("the agent closed the connection")]
    Closed,
    #[error(transparent)]
    Protocol(ProtocolError),
    #[error("unexpected message from the agent: {0}")]
    BadMessage(String),
    #[error("`{op}` failed in the target: {error}")]
    Remote { op: String, error: RemoteError },
    #[error("the session is unusable after an earlier error: {0}")]
    Broken(String),
}

pub type Result<T, E = SessionError> = std::result::Result<T, E>;

fn setup_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SessionError {
    let what = what.into();
    move |source| SessionError::Setup { what, source }
}

/// A live agent session.
#[derive(Debug)]
pub struct Session {
    /// What the agent reported when it started.
    pub hello: Hello,
    /// Sum of `gil_s` over every answer so far: the time this session made
    /// the target spend in our Python code (a proxy for GIL hold time).
    pub gil_total_s: f64,
    /// The same with each answer's CPU measure where the agent gave one
    /// (`gil_cpu_s`), its wall time otherwise.
    pub gil_used_s: f64,
    /// Bit i: plugin i of `AGENT_PLUGINS` is loaded in the agent.
    plugins_loaded: u64,
    stream: UnixStream,
    next_id: u64,
    /// Requests sent with the load frame, not yet asked for: (id, op, params).
    pipelined: std::collections::VecDeque<(u64, String, Value)>,
    timeout: Option<Duration>,
    broken: Option<String>,
    /// Detach was sent (or the connection is gone): Drop does nothing more.
    finished: bool,
    _dir: SocketDir,
}

impl Session {
    /// How long a request may wait for its answer (None: forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.timeout = timeout;
        self.apply_timeout(timeout)
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn apply_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.stream
            .set_read_timeout(timeout)
            .and_then(|_| self.stream.set_write_timeout(timeout))
            .map_err(setup_err("set socket timeouts"))
    }

    /// Why the session cannot be used any more, if it cannot.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    fn fail(&mut self, op: &str, e: ProtocolError) -> SessionError {
        let err = match e {
            ProtocolError::Timeout => SessionError::Timeout {
                op: op.to_string(),
                after: self.timeout.unwrap_or_default(),
            },
            ProtocolError::Closed => SessionError::Closed,
            ProtocolError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                SessionError::Closed
            }
            e => SessionError::Protocol(e),
        };
        // Mid-frame state is unknown after any of these: no more requests.
        self.broken = Some(err.to_string());
        if matches!(err, SessionError::Closed) {
            self.finished = true;
        }
        err
    }

    /// Sends `{"id":N,"op":op,...params}` and waits for the answer with that
    /// id. `params` must be a JSON object (or null). An `ok:false` answer is
    /// returned as data, not as an error.
    pub fn request(&mut self, op: &str, params: Value) -> Result<Response> {
        self.request_chunked(op, params, &mut |_| Ok(()))
    }

    /// Like [`request`](Self::request), for ops that stream their data: the
    /// agent may send any number of `{"id": ID, "chunk": true, ...}` frames
    /// (each with a binary payload) before the final response; each goes to
    /// `on_chunk` as it arrives, so large censuses are never held twice.
    pub fn request_chunked(
        &mut self,
        op: &str,
        params: Value,
        on_chunk: &mut dyn FnMut(Frame) -> Result<()>,
    ) -> Result<Response> {
        if let Some(why) = &self.broken {
            return Err(SessionError::Broken(why.clone()));
        }
        // Sent along with the load frame already: only its answer is due.
        match self.pipelined.pop_front() {
            Some((id, o, p)) if o == op && p == params => {
                return self.read_response(op, id, on_chunk);
            }
            // Not asked for after all: its answer will be skipped.
            Some(_) => self.pipelined.clear(),
            None => {}
        }
        if let Some((index, source)) = bootstrap::plugin_for_op(op)
            && self.plugins_loaded & (1 << index) == 0
        {
            let resp =
                self.request_chunked("load_plugin", json!({"source": source}), &mut |_| Ok(()))?;
            if !resp.ok {
                return Err(SessionError::Remote {
                    op: op.to_string(),
                    error: resp.error.unwrap_or_default(),
                });
            }
            self.plugins_loaded |= 1 << index;
        }
        let mut header = match params {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(SessionError::BadMessage(format!(
                    "request params must be an object, not {other}"
                )));
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        header.insert("id".into(), json!(id));
        header.insert("op".into(), json!(op));
        let frame = Frame::new(Value::Object(header));
        let bytes = protocol::encode_frame(&frame).map_err(SessionError::Protocol)?;
        if bytes.len() - 4 > protocol::MAX_FRAME_TO_AGENT {
            return Err(SessionError::BadMessage(format!(
                "request of {} bytes is over the agent's {}-byte limit",
                bytes.len(),
                protocol::MAX_FRAME_TO_AGENT
            )));
        }
        if let Err(e) = io::Write::write_all(&mut self.stream, &bytes) {
            let e = ProtocolError::Io(e);
            return Err(self.fail(op, normalize(e)));
        }
        self.read_response(op, id, on_chunk)
    }

    /// Reads frames until the answer to request `id` (chunks of it go to
    /// `on_chunk`; answers to other ids are skipped).
    fn read_response(
        &mut self,
        op: &str,
        id: u64,
        on_chunk: &mut dyn FnMut(Frame) -> Result<()>,
    ) -> Result<Response> {
        loop {
            let frame = match protocol::read_frame(&mut self.stream, Caps::FROM_TARGET) {
                Ok(f) => f,
                Err(e) => return Err(self.fail(op, e)),
            };
            let is_chunk = frame.header.get("chunk").and_then(Value::as_bool) == Some(true)
                && frame.header.get("id").and_then(Value::as_u64) == Some(id);
            if is_chunk {
                if let Err(e) = on_chunk(frame) {
                    // We stopped listening mid-stream: the rest of the
                    // stream would be misread as answers, so the session
                    // cannot go on.
                    self.broken = Some(e.to_string());
                    return Err(e);
                }
                continue;
            }
            if let Some(m) = frame.header.get("marks") {
                crate::inject::trace::trace_target_marks(m);
            }
            let resp = match Response::from_frame(frame) {
                Ok(r) => r,
                Err(e) => {
                    let err = SessionError::BadMessage(e.to_string());
                    self.broken = Some(err.to_string());
                    return Err(err);
                }
            };
            if resp.id == id {
                if resp.gil_s.is_finite() && resp.gil_s > 0.0 {
                    self.gil_total_s += resp.gil_s;
                }
                let used = resp.gil_cpu_s.unwrap_or(resp.gil_s);
                if used.is_finite() && used > 0.0 {
                    self.gil_used_s += used;
                }
                return Ok(resp);
            }
            // An answer to an earlier request that timed out cannot happen
            // (a timeout breaks the session); anything else is skipped.
        }
    }

    /// `request`, then the typed result of an `ok:true` answer; `ok:false`
    /// becomes [`SessionError::Remote`].
    fn typed<T: DeserializeOwned>(&mut self, op: &str, params: Value) -> Result<(T, f64)> {
        let resp = self.request(op, params)?;
        if !resp.ok {
            return Err(SessionError::Remote {
                op: op.to_string(),
                error: resp.error.unwrap_or_default(),
            });
        }
        let t = serde_json::from_value(resp.result)
            .map_err(|e| SessionError::BadMessage(format!("{op}: {e}")))?;
        Ok((t, resp.gil_s))
    }

    /// Runs code in the session namespace. An exception in the code is not
    /// an error here: see `raised` / `error` in the result.
    pub fn exec(&mut self, code: &str, mode: ExecMode) -> Result<ExecResult> {
        let (mut r, gil): (ExecResult, f64) =
            self.typed("exec", json!({"code": code, "mode": mode}))?;
        r.gil_s = gil;
        Ok(r)
    }

    /// Evaluates an expression; an exception comes back as
    /// [`SessionError::Remote`].
    pub fn eval(&mut self, expr: &str) -> Result<EvalResult> {
        let (mut r, gil): (EvalResult, f64) = self.typed("eval", json!({"expr": expr}))?;
        r.gil_s = gil;
        Ok(r)
    }

    /// Completion candidates for the word `text` (names, keywords, or
    /// attributes of a plain dotted name).
    pub fn complete(&mut self, text: &str) -> Result<Completions> {
        let (mut r, gil): (Completions, f64) = self.typed("complete", json!({"text": text}))?;
        r.gil_s = gil;
        Ok(r)
    }

    /// Whether `source` is a complete statement, needs more lines, or is an
    /// error (for multi-line input in a shell).
    pub fn compile_check(&mut self, source: &str) -> Result<CompileCheck> {
        let (mut r, gil): (CompileCheck, f64) =
            self.typed("compile_check", json!({"source": source}))?;
        r.gil_s = gil;
        Ok(r)
    }

    pub fn ping(&mut self) -> Result<Pong> {
        let (mut r, gil): (Pong, f64) = self.typed("ping", Value::Null)?;
        r.gil_s = gil;
        Ok(r)
    }

    /// Tells the agent to restore everything and end, and waits until it
    /// has restored everything (it hangs up as the last step of its cleanup).
    /// Its thread then stays asleep for [`Detached::retire`] at most, holding
    /// only the stdout/stderr proxies it replaced (see `_retire` in
    /// agent.py), and ends: [`Detached`] says how to wait for that.
    pub fn detach(mut self) -> Result<Detached> {
        self.detach_inner(None)
    }

    fn detach_inner(&mut self, timeout: Option<Duration>) -> Result<Detached> {
        if let Some(t) = timeout {
            self.timeout = Some(t);
            self.apply_timeout(Some(t))?;
        }
        self.finished = true;
        let resp = self.request("detach", Value::Null)?;
        if !resp.ok {
            return Err(SessionError::Remote {
                op: "detach".into(),
                error: resp.error.unwrap_or_default(),
            });
        }
        trace(format_args!("detach answered"));
        let retire = resp
            .result
            .get("retire_s")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::ZERO, |s| Duration::from_secs_f64(s.min(60.0)));
        let detached = Detached {
            agent_tid: self.hello.agent_tid,
            retire,
        };
        // Wait for the hang-up that ends the agent's cleanup.
        self.apply_timeout(Some(timeout.unwrap_or(DETACH_EOF_TIMEOUT)))?;
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    trace(format_args!("agent hung up"));
                    return Ok(detached);
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(detached),
                Err(e) => return Err(self.fail("detach", normalize(ProtocolError::Io(e)))),
            }
        }
    }
}

/// What is left of an agent after [`Session::detach`]: its thread, asleep
/// for `retire` at most before it ends (nothing else: the target is
/// restored and the socket is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached {
    /// The agent thread's id in the target's own pid namespace, if known.
    pub agent_tid: Option<u32>,
    /// How long the thread stays after the hang-up (0: it ends at once).
    pub retire: Duration,
}

fn normalize(e: ProtocolError) -> ProtocolError {
    match e {
        ProtocolError::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            ProtocolError::Timeout
        }
        e => e,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished && self.broken.is_none() {
            let _ = self.detach_inner(Some(DROP_DETACH_TIMEOUT));
        }
        // The stream closes here; an agent still busy sees EOF on its next
        // read and cleans up by itself.
    }
}
