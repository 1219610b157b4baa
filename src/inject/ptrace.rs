//! Thin, safe wrappers over the ptrace and process_vm_* calls the injector
//! needs, and the error type the whole ptrace path reports.
//!
//! Only what `PTRACE_SEIZE`-based tracing of single threads needs: no
//! options (in particular no `PTRACE_O_EXITKILL`: if memsleuth dies, the
//! kernel detaches and the target lives on), no `PTRACE_ATTACH` (its SIGSTOP
//! interacts with job control). Every wait has a timeout.
//!
//! ptrace requests must come from the thread that seized the tracee, so the
//! types built on top of this ([`super::remote::Tracee`]) are not `Send`.

#![cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code, unused_imports, unused_variables)
)]

use std::io;
use std::time::{Duration, Instant};

use super::threads::ThreadReport;

/// `PTRACE_EVENT_STOP` (glibc ≥ 2.26 has it; the libc crate does not).
pub const PTRACE_EVENT_STOP: u32 = 128;
/// The regset of the full XSAVE area (`NT_X86_XSTATE`).
pub const NT_X86_XSTATE: u32 = 0x202;
/// Upper bound for the XSAVE area; the kernel tells the real size (11,008
/// bytes with AMX, 2,696 with AVX-512, 832 with AVX).
const XSTATE_MAX: usize = 64 * 1024;

/// Why a ptrace operation (or the injection built on it) failed. Every case
/// leaves the target running as before, except where stated.
#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    /// EPERM from PTRACE_SEIZE: another uid without CAP_SYS_PTRACE, Yama's
    /// ptrace_scope, an LSM, or the thread is already traced (a debugger,
    /// strace, py-spy). `detail` says which, when it can be told.
    #[error("not allowed to trace thread {tid} of process {pid}: {detail}")]
    PermissionDenied { pid: u32, tid: u32, detail: String },
    /// ESRCH, or the thread exited while traced.
    #[error("thread {tid} is gone (the process or thread exited)")]
    Gone { tid: u32 },
    /// A wait did not finish in time. The operation was abandoned and the
    /// thread's registers restored.
    #[error("timed out after {:.1} s waiting for {what}", after.as_secs_f64())]
    Timeout { what: String, after: Duration },
    /// The thread stopped for a reason we did not cause (a crash in a called
    /// function, a job-control stop).
    #[error("thread {tid} stopped unexpectedly: {detail}")]
    UnexpectedStop { tid: u32, detail: String },
    #[error("{op}: {source}")]
    Io { op: String, source: io::Error },
    /// Not possible on this platform or with this target (no libc found, a
    /// symbol missing, not x86_64).
    #[error("{0}")]
    Unsupported(String),
    /// A function called in the target reported failure.
    #[error("{function} failed in the target: {detail}")]
    RemoteCallFailed {
        function: &'static str,
        detail: String,
    },
    /// Nothing ran the injected code within the timeout. `threads` says what
    /// each thread was doing; a queued pending call (and its page at
    /// `pending_page`) may still run later, which the code must tolerate.
    #[error("{}", not_reached_message(.threads, .after))]
    NotReached {
        threads: Vec<ThreadReport>,
        after: Duration,
        pending_page: Option<(u64, usize)>,
    },
    /// Python 2.7 retries lock waits interrupted by a signal without running
    /// pending calls, so a main thread parked on a lock cannot be reached.
    #[error(
        "the main thread is parked on a lock (threading.Event/Thread.join/Queue.get without a timeout); \
         Python 2.7 only runs injected code on the main thread and cannot be woken from such a wait, \
         so it can be attached once the main thread wakes up"
    )]
    MainParkedOnLock {
        threads: Vec<ThreadReport>,
        pending_page: Option<(u64, usize)>,
    },
    /// The code ran (directly) but the expected side effect did not happen.
    #[error("the injected code ran in thread {tid} but nothing connected back within {:.1} s", after.as_secs_f64())]
    NoSideEffect { tid: u32, after: Duration },
}

fn not_reached_message(threads: &[ThreadReport], after: &Duration) -> String {
    let mut s = format!(
        "no thread reached a safe point within {:.1} s; the process may be stuck in C code (or in a \
         long system call with the GIL held). It was not harmed. Threads:",
        after.as_secs_f64()
    );
    for t in threads {
        s.push_str("\n  ");
        s.push_str(&t.to_string());
    }
    s
}

impl PtraceError {
    fn io(op: impl Into<String>, source: io::Error) -> PtraceError {
        PtraceError::Io {
            op: op.into(),
            source,
        }
    }

    /// True when the process (or thread) is gone.
    pub fn is_gone(&self) -> bool {
        matches!(self, PtraceError::Gone { .. })
    }
}

pub type Result<T, E = PtraceError> = std::result::Result<T, E>;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Why PTRACE_SEIZE said EPERM, as far as /proc tells.
pub fn permission_detail(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    };
    if let Some(tracer) = field("TracerPid:")
        .and_then(|t| t.parse::<u32>().ok())
        .filter(|&t| t != 0)
    {
        // TracerPid is the tracing thread; name its process.
        let tgid = std::fs::read_to_string(format!("/proc/{tracer}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })
            .unwrap_or(tracer);
        if tgid == std::process::id() {
            return format!(
                "this memsleuth process (pid {tgid}) already traces it: another injection is in progress"
            );
        }
        let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).unwrap_or_default();
        return format!(
            "it is already being traced by process {tgid} ({}); only one tracer at a time: stop that \
             debugger/strace first",
            comm.trim()
        );
    }
    // SAFETY: getuid has no preconditions.
    let our_uid = unsafe { libc::getuid() };
    let target_uid = field("Uid:").and_then(|u| u.parse::<u32>().ok());
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let cap_ptrace = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|caps| caps & (1 << 19) != 0);
    match (target_uid, scope) {
        (Some(uid), _) if uid != our_uid && !cap_ptrace => format!(
            "the process runs as uid {uid} and memsleuth as uid {our_uid}; run memsleuth as that user or as \
             root, or give it CAP_SYS_PTRACE"
        ),
        (_, Some(3)) => "kernel.yama.ptrace_scope is 3 (ptrace disabled until reboot)".to_owned(),
        (_, Some(2)) if !cap_ptrace => {
            "kernel.yama.ptrace_scope is 2 (admin-only attach); run memsleuth as root or with CAP_SYS_PTRACE".to_owned()
        }
        (_, Some(1)) if !cap_ptrace => "kernel.yama.ptrace_scope is 1 (only a parent may trace); run memsleuth \
             with sudo or CAP_SYS_PTRACE, or set `sysctl kernel.yama.ptrace_scope=0`"
            .to_owned(),
        _ if !cap_ptrace && our_uid != 0 => {
            "the kernel refused (the process may be non-dumpable, or a security module forbids ptrace)".to_owned()
        }
        _ => "the kernel refused even with CAP_SYS_PTRACE: a security module (AppArmor, SELinux, seccomp) or a \
              container's policy forbids ptrace; run memsleuth on the host, or add CAP_SYS_PTRACE to the container"
            .to_owned(),
    }
}

/// The result of a wait on one traced thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Killed(i32),
    /// `event` is `status >> 16` (PTRACE_EVENT_STOP for SEIZE stops; 0 for a
    /// signal-delivery-stop of `sig`).
    Stopped {
        sig: i32,
        event: u32,
    },
}

impl WaitStatus {
    pub fn from_raw(status: i32) -> WaitStatus {
        if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Killed(libc::WTERMSIG(status))
        } else {
            WaitStatus::Stopped {
                sig: libc::WSTOPSIG(status),
                event: ((status as u32) >> 16) & 0xff,
            }
        }
    }

    /// A signal about to be delivered, which the tracer may suppress.
    pub fn delivery_signal(&self) -> Option<i32> {
        match *self {
            WaitStatus::Stopped { sig, event: 0 } => Some(sig),
            _ => None,
        }
    }

    pub fn is_event_stop(&self) -> bool {
        matches!(
            self,
            WaitStatus::Stopped {
                event: PTRACE_EVENT_STOP,
                ..
            }
        )
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    pub type Regs = libc::user_regs_struct;

    fn ptrace(
        req: libc::c_uint,
        tid: u32,
        addr: usize,
        data: usize,
    ) -> std::result::Result<libc::c_long, i32> {
        // SAFETY: every request used here reads or writes only the buffers
        // the callers pass (valid for the sizes the requests imply).
        let r = unsafe {
            libc::ptrace(
                req as _,
                tid as libc::pid_t,
                addr as *mut libc::c_void,
                data as *mut libc::c_void,
            )
        };
        if r == -1 { Err(errno()) } else { Ok(r) }
    }

    fn fail(op: &str, tid: u32, err: i32) -> PtraceError {
        if err == libc::ESRCH {
            PtraceError::Gone { tid }
        } else {
            PtraceError::io(
                format!("{op} on thread {tid}"),
                io::Error::from_raw_os_error(err),
            )
        }
    }

    /// PTRACE_SEIZE without options: the thread keeps running.
    pub fn seize(pid: u32, tid: u32) -> Result<()> {
        match ptrace(libc::PTRACE_SEIZE as libc::c_uint, tid, 0, 0) {
            Ok(_) => Ok(()),
            Err(libc::EPERM) => Err(PtraceError::PermissionDenied {
                pid,
                tid,
                detail: permission_detail(pid),
            }),
            Err(e) => Err(fail("PTRACE_SEIZE", tid, e)),
        }
    }

    /// Asks a seized thread to stop (reported as a PTRACE_EVENT_STOP).
    pub fn interrupt(tid: u32) -> Result<()> {
        ptrace(libc::PTRACE_INTERRUPT as libc::c_uint, tid, 0, 0)
            .map(drop)
            .map_err(|e| fail("PTRACE_INTERRUPT", tid, e))
    }

    pub fn cont(tid: u32, sig: i32) -> Result<()> {
        ptrace(libc::PTRACE_CONT as libc::c_uint, tid, 0, sig as usize)
            .map(drop)
            .map_err(|e| fail("PTRACE_CONT", tid, e))
    }

    pub fn detach(tid: u32, sig: i32) -> Result<()> {
        ptrace(libc::PTRACE_DETACH as libc::c_uint, tid, 0, sig as usize)
            .map(drop)
            .map_err(|e| fail("PTRACE_DETACH", tid, e))
    }

    #[cfg(target_arch = "x86_64")]
    pub fn get_regs(tid: u32) -> Result<Regs> {
        // SAFETY: all-zero is a valid user_regs_struct (plain integers).
        let mut regs: Regs = unsafe { std::mem::zeroed() };
        ptrace(
            libc::PTRACE_GETREGS as libc::c_uint,
            tid,
            0,
            &mut regs as *mut Regs as usize,
        )
        .map_err(|e| fail("PTRACE_GETREGS", tid, e))?;
        Ok(regs)
    }

    #[cfg(target_arch = "x86_64")]
    pub fn set_regs(tid: u32, regs: &Regs) -> Result<()> {
        ptrace(
            libc::PTRACE_SETREGS as libc::c_uint,
            tid,
            0,
            regs as *const Regs as usize,
        )
        .map(drop)
        .map_err(|e| fail("PTRACE_SETREGS", tid, e))
    }

    #[cfg(target_arch = "x86_64")]
    /// The whole XSAVE area (x87, SSE, AVX, AVX-512, AMX...), exactly as
    /// long as the kernel's regset: it must be written back with that length.
    pub fn get_xstate(tid: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; XSTATE_MAX];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        ptrace(
            libc::PTRACE_GETREGSET as libc::c_uint,
            tid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut libc::iovec as usize,
        )
        .map_err(|e| fail("PTRACE_GETREGSET(NT_X86_XSTATE)", tid, e))?;
        buf.truncate(iov.iov_len.min(XSTATE_MAX));
        Ok(buf)
    }

    #[cfg(target_arch = "x86_64")]
    pub fn set_xstate(tid: u32, xstate: &[u8]) -> Result<()> {
        let mut iov = libc::iovec {
            iov_base: xstate.as_ptr() as *mut libc::c_void,
            iov_len: xstate.len(),
        };
        ptrace(
            libc::PTRACE_SETREGSET as libc::c_uint,
            tid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut libc::iovec as usize,
        )
        .map(drop)
        .map_err(|e| fail("PTRACE_SETREGSET(NT_X86_XSTATE)", tid, e))
    }

    /// One non-blocking waitpid on a traced thread.
    pub fn try_wait(tid: u32) -> Result<Option<WaitStatus>> {
        let mut status = 0;
        loop {
            // SAFETY: status is a valid out-pointer.
            let r = unsafe {
                libc::waitpid(
                    tid as libc::pid_t,
                    &mut status,
                    libc::__WALL | libc::WNOHANG,
                )
            };
            match r {
                0 => return Ok(None),
                -1 if errno() == libc::EINTR => continue,
                -1 if errno() == libc::ECHILD => return Err(PtraceError::Gone { tid }),
                -1 => return Err(fail("waitpid", tid, errno())),
                _ => return Ok(Some(WaitStatus::from_raw(status))),
            }
        }
    }

    /// Waits for the next state change of a traced thread, polling so it can
    /// give up: short naps first (remote calls take microseconds), longer
    /// ones later.
    pub fn wait(tid: u32, timeout: Duration, what: &str) -> Result<WaitStatus> {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            if let Some(status) = try_wait(tid)? {
                return Ok(status);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(PtraceError::Timeout {
                    what: what.to_owned(),
                    after: waited,
                });
            }
            polls += 1;
            let nap = match polls {
                0..=20 => Duration::from_micros(5),
                21..=200 => Duration::from_micros(50),
                _ => Duration::from_millis(1),
            };
            std::thread::sleep(nap.min(timeout.saturating_sub(waited)));
        }
    }

    /// Re-delivers a signal to one thread.
    pub fn tgkill(pid: u32, tid: u32, sig: i32) -> Result<()> {
        // SAFETY: plain syscall.
        let r = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                pid as libc::c_long,
                tid as libc::c_long,
                sig as libc::c_long,
            )
        };
        if r == -1 {
            Err(fail("tgkill", tid, errno()))
        } else {
            Ok(())
        }
    }

    /// Reads target memory: process_vm_readv, else /proc/PID/mem (both
    /// through [`crate::process::memory`]).
    pub fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> Result<()> {
        use crate::process::memory;
        if buf.is_empty() {
            return Ok(());
        }
        match memory::read(pid, addr, buf) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(PtraceError::Gone { tid: pid });
            }
            Err(_) => {}
        }
        memory::proc_mem_read(pid, addr, buf).map_err(|e| {
            PtraceError::io(
                format!("read {} bytes at {addr:#x} in process {pid}", buf.len()),
                e,
            )
        })
    }

    /// Writes target memory: process_vm_writev, else /proc/PID/mem (which
    /// also writes read-only pages of a traced process).
    pub fn write_mem(pid: u32, addr: u64, data: &[u8]) -> Result<()> {
        use crate::process::memory;
        if data.is_empty() {
            return Ok(());
        }
        match memory::write(pid, addr, data) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(PtraceError::Gone { tid: pid });
            }
            Err(_) => {}
        }
        memory::proc_mem_write(pid, addr, data).map_err(|e| {
            PtraceError::io(
                format!("write {} bytes at {addr:#x} in process {pid}", data.len()),
                e,
            )
        })
    }

    pub fn read_u64(pid: u32, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        read_mem(pid, addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(target_os = "linux")]
pub use imp::*;

/// On other platforms every entry point reports this.
pub fn unsupported_arch() -> PtraceError {
    PtraceError::Unsupported(format!(
        "ptrace injection is implemented for Linux on x86_64 only (this is {} on {})",
        std::env::consts::OS,
        std::env::consts::ARCH
    ))
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        // Stopped by PTRACE_EVENT_STOP with SIGTRAP: (event << 16) | (sig << 8) | 0x7f.
        let raw = ((PTRACE_EVENT_STOP as i32) << 16) | (libc::SIGTRAP << 8) | 0x7f;
        let st = WaitStatus::from_raw(raw);
        assert_eq!(
            st,
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: PTRACE_EVENT_STOP
            }
        );
        assert!(st.is_event_stop());
        assert_eq!(st.delivery_signal(), None);
        let st = WaitStatus::from_raw((libc::SIGSEGV << 8) | 0x7f);
        assert_eq!(st.delivery_signal(), Some(libc::SIGSEGV));
        assert_eq!(WaitStatus::from_raw(3 << 8), WaitStatus::Exited(3));
        assert_eq!(
            WaitStatus::from_raw(libc::SIGKILL),
            WaitStatus::Killed(libc::SIGKILL)
        );
    }

    #[test]
    fn reads_and_writes_own_memory() {
        let pid = std::process::id();
        let mut target = [1u8, 2, 3, 4];
        let addr = target.as_mut_ptr() as u64;
        let mut out = [0u8; 4];
        read_mem(pid, addr, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
        write_mem(pid, addr, &[9, 8]).unwrap();
        assert_eq!(std::hint::black_box(&target)[..2], [9, 8]);
        assert!(read_mem(pid, 8, &mut out).is_err(), "unmapped address");
    }

    #[test]
    fn seizing_a_missing_thread_is_gone() {
        let err = seize(999_999_999, 999_999_999).unwrap_err();
        assert!(err.is_gone(), "{err:?}");
    }
}
