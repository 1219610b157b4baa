//! Open file descriptors, classified by what they point at.
//!
//! A leak of fds shows up here long before EMFILE, and some kinds hold memory
//! that RSS never shows (a memfd filled with write() is charged to Shmem).

use serde::Serialize;
use std::collections::BTreeMap;

use super::{ProcError, Process};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    File,
    DeletedFile,
    Pipe,
    Socket,
    Memfd,
    AnonInode,
    Device,
    Other,
}

impl FdKind {
    pub fn name(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::DeletedFile => "deleted file",
            FdKind::Pipe => "pipe",
            FdKind::Socket => "socket",
            FdKind::Memfd => "memfd",
            FdKind::AnonInode => "anon_inode",
            FdKind::Device => "device",
            FdKind::Other => "other",
        }
    }

    /// Classifies a readlink() target of /proc/PID/fd/N.
    pub fn classify(target: &str) -> FdKind {
        if target.starts_with("socket:") {
            FdKind::Socket
        } else if target.starts_with("pipe:") {
            FdKind::Pipe
        } else if target.starts_with("/memfd:") {
            FdKind::Memfd
        } else if target.starts_with("anon_inode:") {
            FdKind::AnonInode
        } else if target.starts_with("/dev/") && !target.starts_with("/dev/shm/") {
            FdKind::Device
        } else if target.starts_with('/') {
            if target.ends_with(" (deleted)") {
                FdKind::DeletedFile
            } else {
                FdKind::File
            }
        } else {
            FdKind::Other
        }
    }
}

/// Counts of fds by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FdSummary {
    pub total: u64,
    pub by_kind: BTreeMap<FdKind, u64>,
}

impl FdSummary {
    pub fn count(&self, kind: FdKind) -> u64 {
        self.by_kind.get(&kind).copied().unwrap_or(0)
    }
}

/// Fast fd count: on Linux 6.2+ the size of /proc/PID/fd is the number of
/// open fds; older kernels report 0 and we count entries.
pub fn count(proc: &Process) -> Result<u64, ProcError> {
    use std::os::unix::fs::MetadataExt;
    let path = proc.path("fd");
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            return proc
                .relayed("fd", &e, |r| r.fds())
                .map(|v| v.len() as u64)
                .ok_or_else(|| proc.diagnose(path.clone(), e));
        }
    };
    if meta.size() > 0 {
        return Ok(meta.size());
    }
    let dir = std::fs::read_dir(&path).map_err(|e| proc.diagnose(path.clone(), e))?;
    Ok(dir.count() as u64)
}

/// Lists every fd with its target and classifies it.
pub fn summarize(proc: &Process) -> Result<FdSummary, ProcError> {
    let mut summary = FdSummary::default();
    for (_, target) in list(proc)? {
        summary.total += 1;
        *summary
            .by_kind
            .entry(FdKind::classify(&target))
            .or_insert(0) += 1;
    }
    Ok(summary)
}

/// (fd number, link target) pairs; fds closed while we read are skipped.
pub fn list(proc: &Process) -> Result<Vec<(u32, String)>, ProcError> {
    let path = proc.path("fd");
    let dir = match std::fs::read_dir(&path) {
        Ok(d) => d,
        Err(e) => {
            let mut v = proc
                .relayed("fd", &e, |r| r.fds())
                .ok_or_else(|| proc.diagnose(path.clone(), e))?;
            v.sort();
            return Ok(v);
        }
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path()) {
            out.push((fd, target.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_link_targets() {
        assert_eq!(FdKind::classify("socket:[12345]"), FdKind::Socket);
        assert_eq!(FdKind::classify("pipe:[999]"), FdKind::Pipe);
        assert_eq!(FdKind::classify("/memfd:buf (deleted)"), FdKind::Memfd);
        assert_eq!(
            FdKind::classify("anon_inode:[eventpoll]"),
            FdKind::AnonInode
        );
        assert_eq!(FdKind::classify("/dev/null"), FdKind::Device);
        assert_eq!(FdKind::classify("/dev/shm/psm_1"), FdKind::File);
        assert_eq!(FdKind::classify("/tmp/x (deleted)"), FdKind::DeletedFile);
        assert_eq!(FdKind::classify("/var/log/app.log"), FdKind::File);
        assert_eq!(FdKind::classify("net:[4026531840]"), FdKind::Other);
    }
}
