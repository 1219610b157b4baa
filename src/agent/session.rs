//! The tool side of an agent session.
//!
//! 1. [`Listener::prepare`] makes a private directory in the target's own
//!    filesystem (`/proc/PID/root/tmp/memsleuth-XXXXXX`, mode 0700, owned by
//!    the target's uid), binds a Unix socket `s` in it (0600, listen(1)) and
//!    draws a random token.
//! 2. The injector runs [`Listener::bootstrap_code`] in the target.
//! 3. [`Listener::wait`] accepts the connection, checks with SO_PEERCRED that
//!    it comes from the target's pid, then closes the listening socket and
//!    removes the socket file and directory at once: nobody else can connect,
//!    and a bootstrap that runs late finds nothing and does nothing.
//! 4. [`Listener::into_session`] sends the token and the agent source, and
//!    reads the agent's hello.
//! 5. [`Session`] runs requests; [`Session::detach`] (or dropping it) tells the
//!    agent to restore everything and end its thread.
//!
//! All filesystem work inside the target's root goes through directory file
//! descriptors opened with O_NOFOLLOW, one path component at a time, so a
//! target that controls its own /tmp cannot redirect us through a symlink.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::protocol::{
    self, Caps, CompileCheck, Completions, EvalResult, ExecMode, ExecResult, Frame, Hello,
    LoadHeader, LoadOptions, Pong, ProtocolError, RemoteError, Response,
};
use crate::process::Process;

/// The bootstrap template (see the file for its rules).
pub const BOOTSTRAP_TEMPLATE: &str = include_str!("bootstrap.py");
/// The agent's core: protocol loop, exec/eval/shell ops, cleanup.
pub const AGENT_CORE: &str = include_str!("agent.py");

/// Extra ops, each file registering its handlers in `EXTRA_OPS` (see the
/// end of agent.py); appended to the core to make the agent source.
pub const AGENT_PLUGINS: &[&str] = &[];

/// The agent source sent to the bootstrap in the load frame.
pub fn agent_source() -> String {
    let mut src = String::from(AGENT_CORE);
    for plugin in AGENT_PLUGINS {
        src.push('\n');
        src.push_str(plugin);
    }
    src
}

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

fn cstr(s: &str) -> CString {
    // Only called with our own names, which never contain NUL.
    CString::new(s).expect("no NUL in path component")
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// openat(dir, name, O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC).
fn open_dir_at(dir: RawFd, name: &str) -> io::Result<OwnedFd> {
    let c = cstr(name);
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Walks `rel` under `root` one component at a time, refusing symlinks.
fn open_dir_path(root: RawFd, rel: &str) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        let base = cur.as_ref().map_or(root, |f| f.as_raw_fd());
        cur = Some(open_dir_at(base, comp)?);
    }
    cur.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
}

fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Python string literal for `s` that means the same on 2.7 and 3.x
/// (ASCII only: anything else is escaped per UTF-8 byte, which is only
/// right on 2.7, so callers pass ASCII; all our paths and tokens are).
pub fn py_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

/// The bootstrap with its parameters filled in, wrapped into the single
/// statement the injector runs (see bootstrap.py).
pub fn render_bootstrap(socket_path: &str, token: &str, tool_uid: u32) -> String {
    render_bootstrap_for(socket_path, token, tool_uid, 0)
}

/// [`render_bootstrap`] that also runs only in the process whose own pid
/// (as it sees it: its innermost pid namespace) is `target_pid`; 0: any.
pub fn render_bootstrap_for(
    socket_path: &str,
    token: &str,
    tool_uid: u32,
    target_pid: u32,
) -> String {
    let subst = [
        ("'__MEMSLEUTH_PATH__'", py_literal(socket_path)),
        ("'__MEMSLEUTH_TOKEN__'", format!("b{}", py_literal(token))),
        ("'__MEMSLEUTH_UID__'", tool_uid.to_string()),
        ("'__MEMSLEUTH_PID__'", target_pid.to_string()),
    ];
    let mut inner = String::with_capacity(BOOTSTRAP_TEMPLATE.len());
    for line in BOOTSTRAP_TEMPLATE.lines() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // One pass per line, so a value can never be re-substituted.
        let mut rest = line;
        'scan: while !rest.is_empty() {
            for (ph, val) in &subst {
                if rest.starts_with(ph) {
                    inner.push_str(val);
                    rest = &rest[ph.len()..];
                    continue 'scan;
                }
            }
            let ch = rest.chars().next().unwrap_or(' ');
            inner.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        inner.push('\n');
    }
    format!(
        "exec(compile({}, '<memsleuth-bootstrap>', 'exec'), {{'__name__': '_memsleuth_bootstrap'}})\n",
        py_literal(&inner)
    )
}

/// The socket directory inside the target's root; removed on drop.
#[derive(Debug)]
struct SocketDir {
    parent: OwnedFd,
    dir: OwnedFd,
    name: String,
    /// Files written with [`Listener::write_file`].
    files: Vec<String>,
    removed: bool,
}

impl SocketDir {
    fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        for f in self.files.iter().map(String::as_str).chain([SOCKET_NAME]) {
            let c = cstr(f);
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), c.as_ptr(), 0) };
        }
        let n = cstr(&self.name);
        unsafe { libc::unlinkat(self.parent.as_raw_fd(), n.as_ptr(), libc::AT_REMOVEDIR) };
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        self.remove();
    }
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
    /// Connections from other pids that were turned away.
    rejected: u32,
    options: LoadOptions,
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
                    let token = hex(&random_bytes(32).map_err(setup_err("read /dev/urandom"))?);
                    let dir_in_target = format!("/{cand}/{}", dir.name);
                    return Ok(Listener {
                        target_pid: proc.pid,
                        target_ns_pid: ns_pid(proc),
                        target_uid,
                        target_gid,
                        dir,
                        dir_in_target,
                        listener: Some(listener),
                        token,
                        stream: None,
                        rejected: 0,
                        options: LoadOptions::default(),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(SessionError::NotConnected))
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

    /// Session options sent to the agent (repr and output caps).
    pub fn set_options(&mut self, options: LoadOptions) {
        self.options = options;
    }

    /// How many connections from a pid other than the target's were refused.
    pub fn rejected(&self) -> u32 {
        self.rejected
    }

    /// Waits up to `timeout` for the target to connect. A connection from any
    /// other pid is closed and the wait goes on. Returns true once connected
    /// (then the listening socket is closed and the socket file and directory
    /// are gone), false on timeout.
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
                    self.stream = Some(stream);
                    // One connection per session: stop listening, and leave
                    // nothing in the target's filesystem.
                    self.listener = None;
                    self.dir.remove();
                    return Ok(true);
                }
                _ => {
                    self.rejected += 1;
                    drop(stream);
                }
            }
        }
    }

    /// Sends the token and the agent, reads the hello. Needs a successful
    /// [`wait`](Self::wait) first.
    pub fn into_session(self) -> Result<Session> {
        let Listener {
            dir,
            stream,
            token,
            options,
            ..
        } = self;
        let Some(mut stream) = stream else {
            return Err(SessionError::NotConnected);
        };
        let header = LoadHeader {
            op: "load".into(),
            token,
            options,
        };
        let header =
            serde_json::to_value(&header).map_err(|e| SessionError::BadMessage(e.to_string()))?;
        let frame = Frame::with_payload(header, agent_source().into_bytes());
        stream
            .set_write_timeout(Some(HELLO_TIMEOUT))
            .and_then(|_| stream.set_read_timeout(Some(HELLO_TIMEOUT)))
            .map_err(setup_err("set socket timeouts"))?;
        protocol::write_frame(&mut stream, &frame).map_err(|e| match e {
            ProtocolError::Io(ref io) if io.kind() == io::ErrorKind::BrokenPipe => {
                refused_silently()
            }
            ProtocolError::Timeout => SessionError::Timeout {
                op: "load".into(),
                after: HELLO_TIMEOUT,
            },
            e => SessionError::Protocol(e),
        })?;
        let frame = match protocol::read_frame(&mut stream, Caps::FROM_TARGET) {
            Ok(f) => f,
            Err(ProtocolError::Closed) => return Err(refused_silently()),
            Err(ProtocolError::Io(io)) if io.kind() == io::ErrorKind::ConnectionReset => {
                return Err(refused_silently());
            }
            Err(ProtocolError::Timeout) => {
                return Err(SessionError::Timeout {
                    op: "hello".into(),
                    after: HELLO_TIMEOUT,
                });
            }
            Err(e) => return Err(SessionError::Protocol(e)),
        };
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
            hello,
            stream,
            next_id: 1,
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

/// A live agent session.
#[derive(Debug)]
pub struct Session {
    /// What the agent reported when it started.
    pub hello: Hello,
    /// Sum of `gil_s` over every answer so far: the time this session made
    /// the target spend in our Python code (a proxy for GIL hold time).
    pub gil_total_s: f64,
    stream: UnixStream,
    next_id: u64,
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
    /// has (it hangs up as the last step of its cleanup).
    pub fn detach(mut self) -> Result<()> {
        self.detach_inner(None)
    }

    fn detach_inner(&mut self, timeout: Option<Duration>) -> Result<()> {
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
        // Wait for the hang-up that ends the agent's cleanup.
        self.apply_timeout(Some(timeout.unwrap_or(DETACH_EOF_TIMEOUT)))?;
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(self.fail("detach", normalize(ProtocolError::Io(e)))),
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_escapes() {
        assert_eq!(py_literal("a'b\\c\nd"), r"'a\'b\\c\nd'");
        assert_eq!(py_literal("\x00\x7f"), r"'\x00\x7f'");
    }

    #[test]
    fn rendered_bootstrap_is_one_ascii_line() {
        let code = render_bootstrap("/tmp/memsleuth-abc/s", &"ab".repeat(32), 1234);
        assert!(code.is_ascii());
        assert_eq!(code.trim_end().lines().count(), 1);
        assert!(code.starts_with("exec(compile('"));
        assert!(!code.contains("__MEMSLEUTH_"));
        assert!(code.contains("TOOL_UID = 1234\\n"));
        assert!(code.contains(r"PATH = \'/tmp/memsleuth-abc/s\'"));
        assert!(!code.contains('\0'));
        // Comments are stripped, the code is kept.
        assert!(!code.contains("# memsleuth bootstrap"));
        assert!(code.contains("start_new_thread"));
    }

    #[test]
    fn sources_are_ascii() {
        assert!(BOOTSTRAP_TEMPLATE.is_ascii());
        let source = agent_source();
        assert!(source.is_ascii());
        assert!(source.len() < 256 * 1024);
    }

    #[test]
    fn placeholder_in_value_is_not_resubstituted() {
        let code = render_bootstrap("/x/'__MEMSLEUTH_TOKEN__'", "tok", 0);
        assert!(code.contains("__MEMSLEUTH_TOKEN__"));
        assert!(!code.contains("tok\\'__"));
    }
}
