//! Errors from reading /proc, each ending in what the user can do about it.
//!
//! Reading another process's files fails in a handful of ways that look alike
//! from the syscall (ENOENT, EACCES, EPERM) but need different remedies, so the
//! reader diagnoses the cause once here and every command prints the same
//! sentence.

use std::path::PathBuf;

/// Why the kernel refused to show us a file of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeniedReason {
    /// The target runs as another user and we lack CAP_SYS_PTRACE.
    OtherUser { target_uid: u32, our_uid: u32 },
    /// Same user, but the target is non-dumpable (setuid, or PR_SET_DUMPABLE 0),
    /// so its /proc files belong to root.
    NonDumpable { our_uid: u32 },
    /// /proc is mounted with hidepid, which hides other users' details.
    Hidepid,
    /// Something else (an LSM such as AppArmor, or a container without CAP_SYS_PTRACE).
    Unknown { our_uid: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("no process with pid {pid}; check the pid with `memsleuth ps` (or `ps -ef`){hint}")]
    NoSuchProcess { pid: u32, hint: &'static str },
    #[error("process {pid} exited while memsleuth was reading it; nothing to inspect any more")]
    Exited { pid: u32 },
    #[error(
        "pid {pid} is a kernel thread, not a program with its own memory; pick a user-space process from `memsleuth ps`"
    )]
    KernelThread { pid: u32 },
    #[error(
        "process {pid} is a zombie (it exited and waits for its parent {ppid} to reap it), so it has no memory left to inspect; look at its parent or restart the service"
    )]
    Zombie { pid: u32, ppid: u32 },
    #[error("{}", denied_message(.path, .reason))]
    PermissionDenied { path: PathBuf, reason: DeniedReason },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ProcError {
    /// True when the error means the process is gone (or never existed).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            ProcError::NoSuchProcess { .. } | ProcError::Exited { .. }
        )
    }
}

fn denied_message(path: &std::path::Path, reason: &DeniedReason) -> String {
    let path = path.display();
    match reason {
        DeniedReason::OtherUser {
            target_uid,
            our_uid,
        } => format!(
            "permission denied reading {path}: the process belongs to {} and memsleuth runs as {}; \
             run memsleuth as that user or as root (sudo), or give it CAP_SYS_PTRACE",
            crate::process::users::describe_uid(*target_uid),
            crate::process::users::describe_uid(*our_uid),
        ),
        DeniedReason::NonDumpable { .. } => format!(
            "permission denied reading {path}: the process is not dumpable (it is setuid or called \
             prctl(PR_SET_DUMPABLE, 0)), so only root may read its memory details; run memsleuth as root (sudo)"
        ),
        DeniedReason::Hidepid => format!(
            "permission denied reading {path}: /proc is mounted with hidepid, which hides other users' \
             processes; run memsleuth as root or as a member of the /proc gid= group"
        ),
        DeniedReason::Unknown { our_uid } if *our_uid == 0 => format!(
            "permission denied reading {path} even as root: a security module (AppArmor, SELinux) or a \
             container without CAP_SYS_PTRACE is blocking it; run memsleuth on the host or add CAP_SYS_PTRACE"
        ),
        DeniedReason::Unknown { .. } => format!(
            "permission denied reading {path}; run memsleuth as the process's user or as root (sudo)"
        ),
    }
}
