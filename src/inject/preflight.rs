//! Checks made before touching a target, each ending in one sentence that
//! says what is wrong and what to do. Attaching fails in many ways that all
//! look like EPERM from ptrace; telling them apart here is what spares the
//! user an hour (silent failure is the top complaint about pyrasite and
//! memray attach).

use std::path::PathBuf;

use crate::process::{ProcError, Process, users};
use crate::python::{self, PythonProcess};

/// CAP_SYS_PTRACE's bit in CapEff.
const CAP_SYS_PTRACE: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(
        "process {pid} ({comm}) is not a Python process: no libpython is mapped and its executable exports no Python C API{hint}"
    )]
    NotPython {
        pid: u32,
        comm: String,
        hint: String,
    },
    #[error(
        "process {pid} is stopped (state {state}: Ctrl-Z, SIGSTOP or a debugger); resume it with `kill -CONT {pid}` and try again"
    )]
    Stopped { pid: u32, state: char },
    #[error(
        "process {pid} is already being traced by pid {tracer} ({tracer_comm}), a debugger such as gdb or strace; only one tracer at a time is possible, so detach it first"
    )]
    AlreadyTraced {
        pid: u32,
        tracer: u32,
        tracer_comm: String,
    },
    #[error(
        "process {pid} belongs to {target} and memsleuth runs as {us} without CAP_SYS_PTRACE; run memsleuth as that user or with sudo"
    )]
    OtherUser {
        pid: u32,
        target: String,
        us: String,
    },
    #[error(
        "process {pid} is not dumpable (setuid, or prctl(PR_SET_DUMPABLE, 0)), so only a process with CAP_SYS_PTRACE may attach; run memsleuth with sudo, or start the program with `memsleuth run -- python ...`"
    )]
    NonDumpable { pid: u32 },
    #[error(
        "kernel.yama.ptrace_scope is 1, so only a process's ancestors may attach to it and memsleuth is not one of {pid}'s; run memsleuth with sudo (CAP_SYS_PTRACE), or set `sysctl kernel.yama.ptrace_scope=0`"
    )]
    ScopeAncestorsOnly { pid: u32 },
    #[error(
        "kernel.yama.ptrace_scope is 2, so only processes with CAP_SYS_PTRACE may attach; run memsleuth with sudo (in a container: --cap-add=SYS_PTRACE), or start the program with `memsleuth run -- python ...`"
    )]
    ScopeAdminOnly,
    #[error(
        "kernel.yama.ptrace_scope is 3, so no process may attach to another until the machine reboots; reboot with a lower setting, or start the program with `memsleuth run -- python ...` (the /proc-only commands ps, top, maps and shm still work)"
    )]
    ScopeNone,
    #[error(
        "attaching to a process is supported on x86_64 Linux only for now; the /proc-only commands ps, top, maps and shm work here"
    )]
    UnsupportedArch,
    #[error(
        "the Python in process {pid} ({binary}) exports no dynamic symbols for its C API (a stripped static build), so memsleuth cannot find PyRun_SimpleString to call it"
    )]
    NoSymbols { pid: u32, binary: String },
}

/// What preflight learned and the attach path needs.
pub struct Target {
    pub proc: Process,
    pub python: PythonProcess,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
}

/// Every check, in the order a user would want to hear about them.
pub fn check(pid: u32) -> Result<Target, PreflightError> {
    let proc = Process::open(pid)?;
    let stat = proc.stat()?;
    let status_raw = proc.read_string("status")?;
    let status = crate::process::status::Status::parse(status_raw.as_bytes());
    let comm = stat.comm.clone();

    if matches!(stat.state, 'T' | 't') {
        return Err(PreflightError::Stopped {
            pid,
            state: stat.state,
        });
    }
    if status.tracer_pid != 0 {
        let tracer_comm = Process::unchecked(status.tracer_pid)
            .stat()
            .map(|s| s.comm)
            .unwrap_or_else(|_| "?".into());
        return Err(PreflightError::AlreadyTraced {
            pid,
            tracer: status.tracer_pid,
            tracer_comm,
        });
    }
    permission_checks(&proc, &status_raw, status.uid)?;

    let maps = proc.maps()?;
    let Some(py) = python::detect(&proc, &maps)? else {
        return Err(PreflightError::NotPython {
            pid,
            comm,
            hint: child_hint(pid),
        });
    };
    if !cfg!(target_arch = "x86_64") {
        return Err(PreflightError::UnsupportedArch);
    }
    if py.symbol_address("PyRun_SimpleString").is_none()
        && py.symbol_address("PyRun_SimpleStringFlags").is_none()
    {
        return Err(PreflightError::NoSymbols {
            pid,
            binary: py.binary.display().to_string(),
        });
    }
    let gid = status_field(&status_raw, "Gid:").unwrap_or(0);
    Ok(Target {
        proc,
        python: py,
        uid: status.uid,
        gid,
        comm,
    })
}

fn permission_checks(
    proc: &Process,
    status_raw: &str,
    target_uid: u32,
) -> Result<(), PreflightError> {
    let pid = proc.pid;
    let our_uid = users::our_uid();
    let privileged = has_cap_sys_ptrace();
    if !privileged {
        if our_uid != target_uid {
            return Err(PreflightError::OtherUser {
                pid,
                target: users::describe_uid(target_uid),
                us: users::describe_uid(our_uid),
            });
        }
        // A non-dumpable process's /proc files belong to root.
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(proc.path("mem"))
            .map(|m| m.uid() == 0 && target_uid != 0)
            .unwrap_or(false)
        {
            return Err(PreflightError::NonDumpable { pid });
        }
    }
    let _ = status_raw;
    match ptrace_scope() {
        Some(1) if !privileged && !is_ancestor_of(pid) => {
            Err(PreflightError::ScopeAncestorsOnly { pid })
        }
        Some(2) if !privileged => Err(PreflightError::ScopeAdminOnly),
        Some(3) => Err(PreflightError::ScopeNone),
        _ => Ok(()),
    }
}

/// The Yama setting; `MEMSLEUTH_PTRACE_SCOPE` overrides it so the messages
/// can be tested on machines without Yama.
pub fn ptrace_scope() -> Option<u32> {
    if let Ok(v) = std::env::var("MEMSLEUTH_PTRACE_SCOPE") {
        return v.trim().parse().ok();
    }
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Whether we hold CAP_SYS_PTRACE (root normally does).
pub fn has_cap_sys_ptrace() -> bool {
    if std::env::var("MEMSLEUTH_ASSUME_NO_CAP").is_ok_and(|v| v == "1") {
        return false;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

fn is_ancestor_of(pid: u32) -> bool {
    let me = std::process::id();
    let mut cur = pid;
    for _ in 0..4096 {
        let Ok(stat) = Process::unchecked(cur).stat() else {
            return false;
        };
        if stat.ppid == me {
            return true;
        }
        if stat.ppid <= 1 {
            return false;
        }
        cur = stat.ppid;
    }
    false
}

fn status_field(status: &str, key: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A PyInstaller one-file app's visible pid is a bootloader whose child runs
/// Python; point at the child.
fn child_hint(pid: u32) -> String {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
    {
        let proc = Process::unchecked(child);
        if let Ok(maps) = proc.maps()
            && let Ok(Some(_)) = python::detect(&proc, &maps)
        {
            return format!(" (its child {child} is; a PyInstaller-style launcher? try that pid)");
        }
    }
    String::new()
}

/// The path of a file in the target's filesystem, from ours.
pub fn target_path(proc: &Process, path: &str) -> PathBuf {
    proc.root_path(path)
}
