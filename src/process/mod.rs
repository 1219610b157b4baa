//! Process facts from /proc: the files a process exposes about its memory,
//! read with our own small parsers.
//!
//! Everything here is read-only and needs no ptrace stop. Parsers take bytes
//! and never panic on malformed input: a target (or a hostile procfs mount in
//! a container) must not be able to crash the tool.

pub mod error;
pub mod fds;
pub mod freeze;
pub mod maps;
pub mod memory;
pub mod relay;
pub mod sample;
pub mod stat;
pub mod status;
pub mod sysvipc;
pub mod users;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use error::{DeniedReason, ProcError};

/// Files larger than this are cut off: smaps of a process with 60k mappings is
/// ~45 MB, so 1 GiB is far beyond anything real and still bounds memory.
const MAX_PROC_FILE: u64 = 1 << 30;

/// A process seen through /proc/PID.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    dir: PathBuf,
}

impl Process {
    /// Opens a process, checking that it exists and has user-space memory.
    pub fn open(pid: u32) -> Result<Process, ProcError> {
        let proc = Process::unchecked(pid);
        let stat = proc.stat()?;
        if stat.is_kernel_thread() {
            return Err(ProcError::KernelThread { pid });
        }
        if stat.state == 'Z' || stat.state == 'X' {
            return Err(ProcError::Zombie {
                pid,
                ppid: stat.ppid,
            });
        }
        Ok(proc)
    }

    /// A handle without any checks, for scans over all of /proc.
    pub fn unchecked(pid: u32) -> Process {
        Process {
            pid,
            dir: PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// `/proc/PID/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads `/proc/PID/<name>` whole, mapping errors to [`ProcError`].
    pub fn read(&self, name: &str) -> Result<Vec<u8>, ProcError> {
        let path = self.path(name);
        let mut buf = Vec::new();
        let result = std::fs::File::open(&path).and_then(|f| {
            // /proc files report size 0; read in large chunks to keep the
            // number of syscalls (each one a page-table walk for smaps) low.
            let mut f = f.take(MAX_PROC_FILE);
            buf.reserve(256 * 1024);
            f.read_to_end(&mut buf)
        });
        match result {
            Ok(_) => Ok(buf),
            Err(err) => match self.relayed(name, &err, |r| r.read(name)) {
                Some(bytes) => Ok(bytes),
                None => Err(self.diagnose(path, err)),
            },
        }
    }

    /// When the kernel refuses us `name`, the answer of the process's own
    /// relay (see [`relay`]), if it offers one and it answers.
    pub(crate) fn relayed<T>(
        &self,
        name: &str,
        err: &std::io::Error,
        ask: impl FnOnce(&dyn relay::Relay) -> std::io::Result<T>,
    ) -> Option<T> {
        if !relay::is_refusal(err) || !relay::allowed(name) {
            return None;
        }
        let r = relay::for_pid(self.pid)?;
        match ask(&*r) {
            Ok(v) => Some(v),
            Err(_) => {
                relay::forget(self.pid);
                None
            }
        }
    }

    /// Reads a file as (lossy) UTF-8 text.
    pub fn read_string(&self, name: &str) -> Result<String, ProcError> {
        self.read(name)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    pub fn status(&self) -> Result<status::Status, ProcError> {
        Ok(status::Status::parse(&self.read("status")?))
    }

    pub fn statm(&self) -> Result<status::Statm, ProcError> {
        Ok(status::Statm::parse(&self.read("statm")?))
    }

    pub fn stat(&self) -> Result<stat::Stat, ProcError> {
        let bytes = self.read("stat")?;
        stat::Stat::parse(&bytes).ok_or_else(|| ProcError::Io {
            path: self.path("stat"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unrecognised format"),
        })
    }

    /// All mappings with their smaps figures.
    pub fn smaps(&self) -> Result<Vec<maps::Mapping>, ProcError> {
        let bytes = self.read("smaps")?;
        let list = maps::parse_smaps(&bytes);
        self.non_empty(list)
    }

    /// All mappings from `maps` (cheap: no page-table walk, so no Rss/Pss).
    pub fn maps(&self) -> Result<Vec<maps::Mapping>, ProcError> {
        let bytes = self.read("maps")?;
        let list = maps::parse_maps(&bytes);
        self.non_empty(list)
    }

    /// The whole-process smaps totals (Pss split by anon/file/shmem).
    pub fn smaps_rollup(&self) -> Result<maps::MemStats, ProcError> {
        let bytes = self.read("smaps_rollup")?;
        let list = maps::parse_smaps(&bytes);
        Ok(list.into_iter().next().map(|m| m.stats).unwrap_or_default())
    }

    /// An empty maps file means the mm is gone: the process exited (or became
    /// a zombie) between our checks and the read.
    fn non_empty(&self, list: Vec<maps::Mapping>) -> Result<Vec<maps::Mapping>, ProcError> {
        if list.is_empty()
            && self
                .stat()
                .map(|s| s.state == 'Z' || s.state == 'X')
                .unwrap_or(true)
        {
            return Err(ProcError::Exited { pid: self.pid });
        }
        Ok(list)
    }

    /// Number of threads (entries in /proc/PID/task).
    pub fn thread_count(&self) -> Result<u32, ProcError> {
        Ok(self.status()?.threads)
    }

    /// The target's executable path as the kernel reports it.
    pub fn exe(&self) -> Result<PathBuf, ProcError> {
        let path = self.path("exe");
        std::fs::read_link(&path).or_else(|e| {
            self.relayed("exe", &e, |r| r.read_link("exe"))
                .map(PathBuf::from)
                .ok_or_else(|| self.diagnose(path, e))
        })
    }

    /// The command line, NUL-separated arguments joined by spaces.
    pub fn cmdline(&self) -> String {
        let raw = self.read("cmdline").unwrap_or_default();
        let mut parts: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if parts.is_empty()
            && let Ok(comm) = self.read_string("comm")
        {
            parts.push(format!("[{}]", comm.trim_end()));
        }
        parts.join(" ")
    }

    /// A path inside the target's mount namespace, reachable from ours.
    /// Opening files via /proc/PID/root makes containers work.
    pub fn root_path(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        self.dir.join("root").join(rel)
    }

    /// Turns an I/O error on one of our files into the sentence the user sees.
    pub fn diagnose(&self, path: PathBuf, err: std::io::Error) -> ProcError {
        let pid = self.pid;
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => {
                if self.dir.exists() {
                    // The directory is there but the file vanished: the
                    // process is exiting right now.
                    ProcError::Exited { pid }
                } else {
                    let hint = if hidepid_active() {
                        " (note: /proc is mounted with hidepid, so other users' processes are invisible)"
                    } else {
                        ""
                    };
                    ProcError::NoSuchProcess { pid, hint }
                }
            }
            Some(libc::EACCES) | Some(libc::EPERM) => ProcError::PermissionDenied {
                reason: self.denied_reason(),
                path,
            },
            _ => ProcError::Io { path, source: err },
        }
    }

    fn denied_reason(&self) -> DeniedReason {
        let our_uid = users::our_uid();
        let Ok(raw) = std::fs::read(self.path("status")) else {
            // status is world-readable unless hidepid=noaccess.
            return if hidepid_active() {
                DeniedReason::Hidepid
            } else {
                DeniedReason::Unknown { our_uid }
            };
        };
        let status = status::Status::parse(&raw);
        if our_uid != 0 && status.uid != our_uid {
            return DeniedReason::OtherUser {
                target_uid: status.uid,
                our_uid,
            };
        }
        // A non-dumpable process's /proc files are owned by root.
        let owner = std::fs::metadata(self.path("maps"))
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if our_uid != 0 && status.uid == our_uid && owner == 0 {
            return DeniedReason::NonDumpable { our_uid };
        }
        DeniedReason::Unknown { our_uid }
    }
}

/// Lists the pids of all visible processes.
pub fn all_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Whether /proc is mounted with a hidepid option.
pub fn hidepid_active() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts.lines().any(|l| {
        l.contains(" /proc ")
            && l.contains("hidepid=")
            && !l.contains("hidepid=0")
            && !l.contains("hidepid=off")
    })
}

/// System-wide facts used for percentages and ages.
#[derive(Debug, Clone, Copy, Default)]
pub struct System {
    pub mem_total: u64,
    pub page_size: u64,
    pub clock_ticks: u64,
    pub uptime_s: f64,
}

impl System {
    pub fn read() -> System {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        let uptime_s = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let (page, ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        System {
            mem_total,
            page_size: if page > 0 { page as u64 } else { 4096 },
            clock_ticks: if ticks > 0 { ticks as u64 } else { 100 },
            uptime_s,
        }
    }
}

/// Reads a whole file outside /proc/PID with a size cap (for /proc/sysvipc/shm).
pub fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PROC_FILE)
        .read_to_end(&mut buf)?;
    Ok(buf)
}
