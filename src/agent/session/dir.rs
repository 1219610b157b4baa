//! Filesystem work inside the target's root: directory file descriptors
//! opened with O_NOFOLLOW, one path component at a time, and the socket
//! directory that removes itself.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::SOCKET_NAME;

pub(super) fn cstr(s: &str) -> CString {
    // Only called with our own names, which never contain NUL.
    CString::new(s).expect("no NUL in path component")
}

pub(super) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// openat(dir, name, O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC).
pub(super) fn open_dir_at(dir: RawFd, name: &str) -> io::Result<OwnedFd> {
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
pub(super) fn open_dir_path(root: RawFd, rel: &str) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        let base = cur.as_ref().map_or(root, |f| f.as_raw_fd());
        cur = Some(open_dir_at(base, comp)?);
    }
    cur.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
}

/// The socket directory inside the target's root; removed on drop.
#[derive(Debug)]
pub(super) struct SocketDir {
    pub(super) parent: OwnedFd,
    pub(super) dir: OwnedFd,
    pub(super) name: String,
    /// Files written with [`Listener::write_file`](super::Listener::write_file).
    pub(super) files: Vec<String>,
    pub(super) removed: bool,
}

impl SocketDir {
    pub(super) fn remove(&mut self) {
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
