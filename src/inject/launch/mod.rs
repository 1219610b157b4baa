//! Launch mode: reaching a program started with `memsleuth run`.
//!
//! Where ptrace is refused (Yama `ptrace_scope` 2/3, a container without
//! CAP_SYS_PTRACE, a non-dumpable process), nothing can be injected. A
//! program started with `memsleuth run` loads a small listener at start-up
//! instead (`src/agent/launch/sitecustomize.py`): one thread blocked in
//! accept() on `<base>/<pid>-<start time>/s`, next to a `token` file that
//! only its user can read. [`find`] locates that socket from the pid (the
//! start time in the name tells a reused pid apart); [`LaunchSocket::run`]
//! sends it Python source to run, after the token:
//!
//! - the usual attach bootstrap, so the session is the normal agent
//!   session (see [`super::attach`], which alone decides launch or inject);
//! - or the /proc relay (`relay.py`, see [`relay`]), which reads the
//!   process's own /proc/self files for a tool that may not.
//!
//! Base directories, per uid of the program: `/run/user/UID/memsleuth`
//! when the program had that as `$XDG_RUNTIME_DIR`, else
//! `/tmp/memsleuth-UID`; both 0700 and owned by that uid.

pub mod relay;

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::Process;

/// The listener, installed as `sitecustomize.py` by `memsleuth run`.
pub const LISTENER_SOURCE: &str = include_str!("../../agent/launch/sitecustomize.py");
/// The /proc relay, sent over the socket.
pub const RELAY_SOURCE: &str = include_str!("../../agent/launch/relay.py");

/// How long the listener may take to start the /proc relay.
pub const RELAY_START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "process {pid} was not started with `memsleuth run` (no socket for it under {dirs}); start it with `memsleuth run -- python ...`, or use --method auto to attach with ptrace"
    )]
    NoSocket { pid: u32, dirs: String },
    #[error(
        "cannot connect to the `memsleuth run` socket of process {pid} ({path}): {source}; is its Python still running (a program that exec'd something else, or a -I/-E/-S interpreter, has no listener)?"
    )]
    Connect {
        pid: u32,
        path: String,
        source: io::Error,
    },
    #[error("the `memsleuth run` listener of process {pid} {why}")]
    Refused { pid: u32, why: String },
}

/// The base directories where a program of `uid` may have its socket, in
/// the order looked at.
pub fn base_dirs(uid: u32) -> [PathBuf; 2] {
    [
        PathBuf::from(format!("/run/user/{uid}/memsleuth")),
        PathBuf::from(format!("/tmp/memsleuth-{uid}")),
    ]
}

/// The socket of a launched program.
#[derive(Debug, Clone)]
pub struct LaunchSocket {
    pub pid: u32,
    /// `<base>/<pid>-<start>` as we reach it (maybe through /proc/PID/root).
    pub dir: PathBuf,
    /// The same directory as the program sees it.
    pub dir_in_target: String,
    /// Owner of the directory (the program's user).
    pub uid: u32,
    pub gid: u32,
    token: String,
}

/// The `memsleuth run` socket of `pid`, if it has one we can use. `None`
/// when there is none (or none we may see: another user's directory is
/// closed to us, and then attaching says why in its own words).
pub fn find(pid: u32) -> Option<LaunchSocket> {
    let proc = Process::unchecked(pid);
    let start = proc.stat().ok()?.start_time;
    let uid = proc.status().ok()?.uid;
    let name = format!("{pid}-{start}");
    for base in base_dirs(uid) {
        let in_target = base.join(&name);
        let shown = in_target.to_string_lossy().into_owned();
        // The program's own view first (containers), then ours.
        for dir in [proc.root_path(&shown), in_target.clone()] {
            if let Some(s) = open_at(pid, &dir, &shown, uid) {
                return Some(s);
            }
        }
    }
    None
}

/// Whether `path` is a real directory (not a symlink) of `uid`, closed to
/// others.
fn private_dir_of(path: &Path, uid: u32) -> Option<std::fs::Metadata> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0).then_some(meta)
}

/// The socket in `dir`, if everything there is the program's user's own:
/// the base, the directory, the socket and the token file (read without
/// following a symlink: a root tool must not send anyone a file of its own).
fn open_at(pid: u32, dir: &Path, in_target: &str, uid: u32) -> Option<LaunchSocket> {
    private_dir_of(dir.parent()?, uid)?;
    let meta = private_dir_of(dir, uid)?;
    let sock = std::fs::symlink_metadata(dir.join("s")).ok()?;
    if !sock.file_type().is_socket() || sock.uid() != uid {
        return None;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("token"))
        .ok()?;
    let fm = file.metadata().ok()?;
    if !fm.is_file() || fm.uid() != uid || fm.mode() & 0o077 != 0 {
        return None;
    }
    let mut token = String::new();
    (&mut file).take(128).read_to_string(&mut token).ok()?;
    let token = token.trim().to_string();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(LaunchSocket {
        pid,
        dir: dir.to_path_buf(),
        dir_in_target: in_target.to_string(),
        uid: meta.uid(),
        gid: meta.gid(),
        token,
    })
}

impl LaunchSocket {
    /// The socket path as the program sees it.
    pub fn socket_in_target(&self) -> String {
        format!("{}/s", self.dir_in_target)
    }

    /// Connects, sends the token and `code`, and waits up to `timeout` for
    /// the listener to have run it (it needs the GIL). Returns the
    /// connection (the code may keep serving it).
    pub fn run(&self, code: &[u8], timeout: Duration) -> Result<UnixStream, LaunchError> {
        let path = self.dir.join("s");
        let connect_err = |source| LaunchError::Connect {
            pid: self.pid,
            path: path.display().to_string(),
            source,
        };
        let mut stream = UnixStream::connect(&path).map_err(connect_err)?;
        let io_err = |e: io::Error| LaunchError::Refused {
            pid: self.pid,
            why: format!("failed: {e}"),
        };
        let timeout = timeout.max(Duration::from_millis(100));
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(io_err)?;
        let mut msg = Vec::with_capacity(72 + code.len());
        msg.extend_from_slice(b"MSL1");
        msg.extend_from_slice(self.token.as_bytes());
        msg.extend_from_slice(&(code.len() as u32).to_be_bytes());
        msg.extend_from_slice(code);
        stream.write_all(&msg).map_err(io_err)?;
        let mut reply = [0u8; 1];
        let why = match stream.read(&mut reply) {
            Ok(1) if reply[0] == b'K' => return Ok(stream),
            Ok(1) if reply[0] == b'T' => {
                "refused our token (its token file changed: was the program restarted?); try again"
                    .to_string()
            }
            Ok(1) if reply[0] == b'E' => "could not run the code we sent".to_string(),
            Ok(_) => "hung up: it lets in only the program's own user and root".to_string(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                format!(
                    "did not answer within {:.1} s: the program is stopped or holds the GIL in C code; try again when it runs Python code, or raise --timeout",
                    timeout.as_secs_f64()
                )
            }
            Err(e) => format!("failed: {e}"),
        };
        Err(LaunchError::Refused { pid: self.pid, why })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::DirBuilderExt;

    /// A launch directory for this test process itself, as a listener
    /// would make it; removed on drop.
    struct Fake {
        dir: PathBuf,
        _listener: std::os::unix::net::UnixListener,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            for f in ["s", "token"] {
                let _ = std::fs::remove_file(self.dir.join(f));
            }
            let _ = std::fs::remove_dir(&self.dir);
            if let Some(base) = self.dir.parent() {
                let _ = std::fs::remove_dir(base);
            }
        }
    }

    fn fake(token: impl FnOnce(&Path)) -> Fake {
        let pid = std::process::id();
        let uid = unsafe { libc::geteuid() };
        let start = Process::unchecked(pid).stat().unwrap().start_time;
        let base = PathBuf::from(format!("/tmp/memsleuth-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&base);
        let dir = base.join(format!("{pid}-{start}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        token(&dir.join("token"));
        Fake {
            dir,
            _listener: listener,
        }
    }

    fn write_private(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    // One test: both cases use this process's one directory name.
    #[test]
    fn a_token_is_read_only_from_a_private_file_never_through_a_symlink() {
        let good = "ab".repeat(32);
        {
            let f = fake(|p| write_private(p, &good));
            let s = find(std::process::id()).expect("found");
            assert_eq!(Path::new(&s.dir_in_target), f.dir);
            assert_eq!(s.token, good);
        }
        let elsewhere = std::env::temp_dir().join(format!(
            "memsleuth-launch-unit-{}-secret",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&elsewhere);
        write_private(&elsewhere, &good);
        {
            let _f = fake(|p| std::os::unix::fs::symlink(&elsewhere, p).unwrap());
            assert!(find(std::process::id()).is_none());
        }
        let _ = std::fs::remove_file(&elsewhere);
        {
            // Readable by others: not the listener's.
            let _f = fake(|p| {
                write_private(p, &good);
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .unwrap();
            });
            assert!(find(std::process::id()).is_none());
        }
    }
}
