//! The listening end: the socket directory and socket made before
//! injection, the wait for the target's connection, and the handshake that
//! turns it into a [`Session`].

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::dir::{SocketDir, cstr, cvt, open_dir_at, open_dir_path};
use super::{
    DEFAULT_REQUEST_TIMEOUT, DIR_PREFIX, HELLO_TIMEOUT, Result, SOCKET_NAME, Session, SessionError,
    TMP_CANDIDATES, render_bootstrap_for, setup_err,
};
use crate::agent::protocol::{
    self, Caps, Frame, Hello, LoadHeader, LoadOptions, ProtocolError, Response,
};
use crate::inject::trace::trace;
use crate::process::Process;

/// The largest request [`Listener::pipeline`] sends along.
const PIPELINE_MAX: usize = 64 << 10;

fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Credentials of the peer of a connected Unix socket.
fn peer_cred(fd: RawFd) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(cred)
}

/// socket + bind + listen(1) at `path` (which may go through /proc/self/fd).
fn bind_listener(path: &str) -> io::Result<UnixListener> {
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    })?;
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 1) })?;
    Ok(UnixListener::from(fd))
}

/// The listening end, made before injection. Dropping it removes the socket
/// and its directory (if the target has not connected yet).
pub struct Listener {
    target_pid: u32,
    /// The target's pid as it sees it (innermost pid namespace).
    target_ns_pid: u32,
    target_uid: u32,
    target_gid: u32,
    dir: SocketDir,
    /// e.g. "/tmp/memsleuth-ab12cd", as the target sees it.
    dir_in_target: String,
    listener: Option<UnixListener>,
    token: String,
    stream: Option<UnixStream>,
    /// Why writing the load frame at accept failed (the bootstrap may have
    /// refused and hung up already: its answer is still to be read).
    load_error: Option<ProtocolError>,
    /// Connections from other pids that were turned away.
    rejected: u32,
    options: LoadOptions,
    /// Requests sent right after the load frame: (id, op, params, frame).
    pipelined: Vec<(u64, String, Value, Vec<u8>)>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the token.
        f.debug_struct("Listener")
            .field("target_pid", &self.target_pid)
            .field("dir_in_target", &self.dir_in_target)
            .field("connected", &self.stream.is_some())
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Makes `/proc/PID/root/tmp/memsleuth-XXXXXX` (0700, owned by the
    /// target's uid/gid so the target can connect), binds the socket `s` in it
    /// (0600, same owner), listens, and draws a 256-bit token. Falls back to
    /// var/tmp and dev/shm when the target has no usable /tmp.
    pub fn prepare(proc: &Process, target_uid: u32, target_gid: u32) -> Result<Listener> {
        let root_path = proc.path("root");
        let root =
            File::open(&root_path).map_err(setup_err(format!("open {}", root_path.display())))?;
        let mut last_err = None;
        for cand in TMP_CANDIDATES {
            match Self::make_dir(root.as_raw_fd(), cand, target_uid, target_gid) {
                Ok((dir, listener)) => {
                    let dir_in_target = format!("/{cand}/{}", dir.name);
                    return Self::ready(proc, target_uid, target_gid, dir, dir_in_target, listener);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(SessionError::NotConnected))
    }

    /// Like [`prepare`](Self::prepare), but the session directory goes in
    /// `host_dir` (which the target sees as `dir_in_target`): the private
    /// directory of a program started with `memsleuth run`, the one place
    /// both sides are known to share when /proc/PID/root is closed to us.
    pub fn prepare_in(
        proc: &Process,
        host_dir: &std::path::Path,
        dir_in_target: &str,
        target_uid: u32,
        target_gid: u32,
    ) -> Result<Listener> {
        let base =
            File::open(host_dir).map_err(setup_err(format!("open {}", host_dir.display())))?;
        let (dir, listener) = Self::make_dir(base.as_raw_fd(), ".", target_uid, target_gid)?;
        let dir_in_target = format!("{}/{}", dir_in_target.trim_end_matches('/'), dir.name);
        Self::ready(proc, target_uid, target_gid, dir, dir_in_target, listener)
    }

    /// A listener on a session directory just made, with a fresh token.
    fn ready(
        proc: &Process,
        target_uid: u32,
        target_gid: u32,
        dir: SocketDir,
        dir_in_target: String,
        listener: UnixListener,
    ) -> Result<Listener> {
        let token = hex(&random_bytes(32).map_err(setup_err("read /dev/urandom"))?);
        Ok(Listener {
            target_pid: proc.pid,
            target_ns_pid: ns_pid(proc),
            target_uid,
            target_gid,
            dir,
            dir_in_target,
            listener: Some(listener),
            token,
            stream: None,
            load_error: None,
            rejected: 0,
            options: LoadOptions {
                trace: crate::inject::trace::enabled(),
                ..LoadOptions::default()
            },
            pipelined: Vec::new(),
        })
    }

    fn make_dir(root: RawFd, cand: &str, uid: u32, gid: u32) -> Result<(SocketDir, UnixListener)> {
        let shown = |what: &str| format!("{what} in the target's /{cand}");
        let parent = open_dir_path(root, cand).map_err(setup_err(shown("open")))?;
        let mut name = String::new();
        for attempt in 0.. {
            let rnd = random_bytes(6).map_err(setup_err("read /dev/urandom"))?;
            const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            name = DIR_PREFIX.to_string();
            name.extend(rnd.iter().map(|b| ALPHA[*b as usize % ALPHA.len()] as char));
            let c = cstr(&name);
            match cvt(unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o700) }) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 32 => continue,
                Err(e) => return Err(setup_err(shown(&format!("mkdir {name}")))(e)),
            }
        }
        let dir_fd = match open_dir_at(parent.as_raw_fd(), &name) {
            Ok(fd) => fd,
            Err(e) => {
                let c = cstr(&name);
                unsafe { libc::unlinkat(parent.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) };
                return Err(setup_err(shown(&format!("open {name}")))(e));
            }
        };
        // From here on, dropping `dir` removes whatever was made.
        let dir = SocketDir {
            parent,
            dir: dir_fd,
            name,
            files: Vec::new(),
            removed: false,
        };
        let dfd = dir.dir.as_raw_fd();
        cvt(unsafe { libc::fchmod(dfd, 0o700) }).map_err(setup_err(shown("chmod")))?;
        let listener = bind_listener(&format!("/proc/self/fd/{dfd}/{SOCKET_NAME}"))
            .map_err(setup_err(shown("bind the socket")))?;
        let s = cstr(SOCKET_NAME);
        cvt(unsafe { libc::fchmodat(dfd, s.as_ptr(), 0o600, 0) })
            .map_err(setup_err(shown("chmod the socket")))?;
        // Hand both to the target's user, unless they are ours already (an
        // unprivileged tool cannot chown, and needs not: the modes are 0700
        // and 0600, so only the owner counts).
        let euid = unsafe { libc::geteuid() };
        if uid != euid {
            let hint = "(attaching to another user's process needs root or CAP_CHOWN)";
            cvt(unsafe { libc::fchownat(dfd, s.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
                .map_err(setup_err(shown(&format!(
                    "chown the socket to {uid}:{gid} {hint}"
                ))))?;
            cvt(unsafe { libc::fchown(dfd, uid, gid) }).map_err(setup_err(shown(&format!(
                "chown the directory to {uid}:{gid} {hint}"
            ))))?;
        }
        Ok((dir, listener))
    }

    /// The socket path as the target sees it, e.g. "/tmp/memsleuth-ab12cd/s".
    pub fn socket_path_in_target(&self) -> String {
        format!("{}/{SOCKET_NAME}", self.dir_in_target)
    }

    /// The directory as the target sees it, e.g. "/tmp/memsleuth-ab12cd".
    pub fn dir_in_target(&self) -> &str {
        &self.dir_in_target
    }

    /// The bootstrap for this session, ready for PyRun_SimpleString or a
    /// PEP 768 script file. `tool_uid` is the uid the target will see for us
    /// in SO_PEERCRED (our euid, mapped into the target's user namespace).
    pub fn bootstrap_code(&self, tool_uid: u32) -> String {
        render_bootstrap_for(
            &self.socket_path_in_target(),
            &self.token,
            tool_uid,
            self.target_ns_pid,
        )
    }

    /// Writes `data` to a file `name` in the session directory, readable by
    /// the target's user only (0600, chowned like the socket), e.g. the
    /// bootstrap as a PEP 768 script. Returns its path as the target sees
    /// it. The file goes with the directory (on connect, or on drop).
    pub fn write_file(&mut self, name: &str, data: &[u8]) -> Result<String> {
        let bad = name.is_empty()
            || name == "."
            || name == ".."
            || name == SOCKET_NAME
            || name.contains('/')
            || name.contains('\0');
        if bad {
            return Err(SessionError::Setup {
                what: format!("write {name:?} in the session directory"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
            });
        }
        let what = format!("write {}/{name}", self.dir_in_target);
        if self.dir.removed {
            return Err(SessionError::Setup {
                what,
                source: io::Error::new(io::ErrorKind::NotFound, "the session directory is gone"),
            });
        }
        let c = cstr(name);
        let fd = cvt(unsafe {
            libc::openat(
                self.dir.dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        })
        .map_err(setup_err(what.clone()))?;
        self.dir.files.push(name.to_string());
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        io::Write::write_all(&mut file, data).map_err(setup_err(what.clone()))?;
        if self.target_uid != unsafe { libc::geteuid() } {
            cvt(unsafe { libc::fchown(file.as_raw_fd(), self.target_uid, self.target_gid) })
                .map_err(setup_err(format!("{what}: chown")))?;
        }
        Ok(format!("{}/{name}", self.dir_in_target))
    }

    /// Session options sent to the agent (repr and output caps), at accept:
    /// set them before [`wait`](Self::wait).
    pub fn set_options(&mut self, options: LoadOptions) {
        self.options = options;
    }

    /// Sends request `op` with `params` (an object or null) right behind the
    /// load frame, so that the agent finds it as it starts and answers it
    /// with its hello: a round trip less, and no wait for the GIL between
    /// the two. The session's first [`Session::request`] with the same op
    /// and params reads that answer (a different first request makes the
    /// session skip it). Call before [`wait`](Self::wait). Only for the
    /// agent's own ops (not plugin ones) and small requests (up to 64 KiB:
    /// the socket buffer takes them at once); returns whether it was queued.
    pub fn pipeline(&mut self, op: &str, params: Value) -> bool {
        if super::bootstrap::plugin_for_op(op).is_some() || self.stream.is_some() {
            return false;
        }
        let mut header = match &params {
            Value::Object(m) => m.clone(),
            Value::Null => serde_json::Map::new(),
            _ => return false,
        };
        let id = self.pipelined.len() as u64 + 1;
        header.insert("id".into(), Value::from(id));
        header.insert("op".into(), Value::from(op));
        match protocol::encode_frame(&Frame::new(Value::Object(header))) {
            Ok(bytes) if bytes.len() <= PIPELINE_MAX => {
                self.pipelined.push((id, op.to_string(), params, bytes));
                true
            }
            _ => false,
        }
    }

    /// How many connections from a pid other than the target's were refused.
    pub fn rejected(&self) -> u32 {
        self.rejected
    }

    /// Waits up to `timeout` for the target to connect. A connection from any
    /// other pid is closed and the wait goes on. Returns true once connected
    /// (then the listening socket is closed, the socket file and directory
    /// are gone, and the load frame, with the token, is on its way: the
    /// agent finds it as soon as it starts), false on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        if self.stream.is_some() {
            return Ok(true);
        }
        let Some(listener) = self.listener.as_ref() else {
            return Err(SessionError::NotConnected);
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(setup_err("poll the listening socket")(e));
            }
            if n == 0 {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                continue;
            }
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) || e.raw_os_error() == Some(libc::ECONNABORTED)
                {
                    continue;
                }
                return Err(setup_err("accept")(e));
            }
            let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            match peer_cred(stream.as_raw_fd()) {
                Ok(c) if c.pid > 0 && c.pid as u32 == self.target_pid => {
                    // One connection per session: stop listening, and leave
                    // nothing in the target's filesystem.
                    self.listener = None;
                    self.dir.remove();
                    trace(format_args!("accepted"));
                    self.load_error = self.send_load(&stream).err();
                    self.stream = Some(stream);
                    return Ok(true);
                }
                _ => {
                    self.rejected += 1;
                    drop(stream);
                }
            }
        }
    }

    /// The load frame: the token and the session options (a few hundred
    /// bytes: the socket buffer takes it without blocking).
    fn send_load(&self, mut stream: &UnixStream) -> Result<(), ProtocolError> {
        let header = LoadHeader {
            op: "load".into(),
            token: self.token.clone(),
            options: self.options.clone(),
        };
        let header = serde_json::to_value(&header).map_err(|e| ProtocolError::Io(e.into()))?;
        let mut bytes = protocol::encode_frame(&Frame::new(header))?;
        for (.., frame) in &self.pipelined {
            bytes.extend_from_slice(frame);
        }
        stream
            .set_write_timeout(Some(HELLO_TIMEOUT))
            .map_err(ProtocolError::Io)?;
        // One write: the agent reads it all with one recv.
        io::Write::write_all(&mut stream, &bytes).map_err(ProtocolError::Io)
    }

    /// Reads the agent's hello. Needs a successful [`wait`](Self::wait)
    /// first.
    pub fn into_session(self) -> Result<Session> {
        let Listener {
            dir,
            stream,
            load_error,
            pipelined,
            ..
        } = self;
        let Some(mut stream) = stream else {
            return Err(SessionError::NotConnected);
        };
        // With a request sent along, the hello comes with its answer.
        let hello_timeout = if pipelined.is_empty() {
            HELLO_TIMEOUT
        } else {
            HELLO_TIMEOUT + DEFAULT_REQUEST_TIMEOUT
        };
        stream
            .set_read_timeout(Some(hello_timeout))
            .map_err(setup_err("set socket timeouts"))?;
        let frame = match protocol::read_frame(&mut stream, Caps::FROM_TARGET) {
            Ok(f) => f,
            Err(e) => {
                // A refusal explains a failed load write; else the write
                // error is the first thing that went wrong.
                let e = load_error.unwrap_or(e);
                return Err(match e {
                    ProtocolError::Closed => refused_silently(),
                    ProtocolError::Io(io)
                        if matches!(
                            io.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ) =>
                    {
                        refused_silently()
                    }
                    ProtocolError::Io(io)
                        if matches!(
                            io.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        SessionError::Timeout {
                            op: "hello".into(),
                            after: hello_timeout,
                        }
                    }
                    ProtocolError::Timeout => SessionError::Timeout {
                        op: "hello".into(),
                        after: hello_timeout,
                    },
                    e => SessionError::Protocol(e),
                });
            }
        };
        trace(format_args!("first frame from the agent"));
        if let Some(m) = frame.header.get("result").and_then(|r| r.get("marks")) {
            crate::inject::trace::trace_target_marks(m);
        }
        let op = frame.header.get("op").and_then(Value::as_str).unwrap_or("");
        if op == "refused" {
            let reason = frame
                .header
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("?");
            return Err(SessionError::Refused(match reason {
                "token" => "wrong session token".to_string(),
                "busy" => "another memsleuth agent is already attached to this process".to_string(),
                "too-large" => "the load frame is too large".to_string(),
                "agent-error" => {
                    "the agent source does not compile or run on this Python".to_string()
                }
                other => other.to_string(),
            }));
        }
        if op != "hello" {
            return Err(SessionError::BadMessage(format!(
                "expected hello, got {}",
                frame.header
            )));
        }
        let resp =
            Response::from_frame(frame).map_err(|e| SessionError::BadMessage(e.to_string()))?;
        if !resp.ok {
            return Err(SessionError::StartFailed(resp.error.unwrap_or_default()));
        }
        let mut hello: Hello = serde_json::from_value(resp.result)
            .map_err(|e| SessionError::BadMessage(format!("hello: {e}")))?;
        hello.gil_s = resp.gil_s;
        let session = Session {
            gil_total_s: 0.0,
            gil_used_s: 0.0,
            plugins_loaded: 0,
            hello,
            stream,
            next_id: pipelined.len() as u64 + 1,
            pipelined: pipelined
                .into_iter()
                .map(|(id, op, params, _)| (id, op, params))
                .collect(),
            timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            broken: None,
            finished: false,
            // Normally removed already (on accept); kept so Drop makes sure.
            _dir: dir,
        };
        session.apply_timeout(session.timeout)?;
        Ok(session)
    }
}

/// The innermost pid of the target (`NSpid:` in status: host pid first,
/// its own namespace's last); the plain pid on kernels without NSpid.
fn ns_pid(proc: &Process) -> u32 {
    proc.read_string("status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last().and_then(|p| p.parse().ok()))
        })
        .unwrap_or(proc.pid)
}

fn refused_silently() -> SessionError {
    SessionError::Refused(
        "the target hung up without answering: the bootstrap saw a peer uid other \
         than the one it was rendered with (a user namespace maps our uid differently?)"
            .to_string(),
    )
}
