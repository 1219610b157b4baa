//! When we may not read `/proc/PID/*` ourselves, the process may read its own
//! `/proc/self/*` for us.
//!
//! A non-dumpable process (`prctl(PR_SET_DUMPABLE, 0)`, setuid) has its
//! maps, smaps, fd and exe owned by root, so an unprivileged tool gets
//! EACCES even for its own user's process. A program started with
//! `memsleuth run` carries a listener that can read those files from the
//! inside. This module is the one place that decides "read it myself or
//! ask the process": [`Process::read`](super::Process::read) and the fd
//! listing try the file first and come here only when the kernel refuses.
//!
//! The way to reach a process lives in a higher layer (the attach code);
//! it registers a [`Provider`] once at start-up, so nothing here looks up.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

/// Largest file a relay hands back (smaps of a huge process is ~45 MB).
pub const MAX_RELAY_FILE: u64 = 256 << 20;

/// Reads a process's own /proc files on our behalf.
pub trait Relay: Send + Sync {
    /// The bytes of `/proc/self/<name>` (at most [`MAX_RELAY_FILE`]).
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// The target of the symlink `/proc/self/<name>` (e.g. `exe`).
    fn read_link(&self, name: &str) -> io::Result<String>;
    /// Every open fd with its link target.
    fn fds(&self) -> io::Result<Vec<(u32, String)>>;
}

/// Finds a relay for a pid, if that process offers one.
pub type Provider = fn(u32) -> Option<Arc<dyn Relay>>;

static PROVIDER: OnceLock<Provider> = OnceLock::new();
type Cache = Mutex<HashMap<u32, Option<Arc<dyn Relay>>>>;
static CACHE: OnceLock<Cache> = OnceLock::new();

/// Installs the way to find relays (once per process; later calls are
/// ignored).
pub fn set_provider(p: Provider) {
    let _ = PROVIDER.set(p);
}

/// Whether `name` is a file a relay may be asked for: one plain component
/// of lowercase letters and underscores (no paths, no `..`).
pub fn allowed(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The relay of process `pid`, looked up once per pid and kept for the
/// rest of this run (a refusal is remembered too, so a process without one
/// costs one look-up).
pub fn for_pid(pid: u32) -> Option<Arc<dyn Relay>> {
    let provider = PROVIDER.get()?;
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok()?.get(&pid) {
        return hit.clone();
    }
    // Not under the lock: connecting takes a round trip.
    let found = provider(pid);
    cache.lock().ok()?.entry(pid).or_insert(found).clone()
}

/// Forgets the relay of `pid` (after it failed: it may be gone).
pub fn forget(pid: u32) {
    if let Some(c) = CACHE.get()
        && let Ok(mut m) = c.lock()
    {
        m.remove(&pid);
    }
}

/// Whether an error from reading a /proc file is a refusal a relay may get
/// around.
pub fn is_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_allowed() {
        for ok in ["maps", "smaps_rollup", "status", "exe"] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "fd/3",
            "/etc/passwd",
            "Maps",
            "a.b",
            &"x".repeat(33),
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }
}
