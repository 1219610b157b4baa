//! Pausing every thread of a process for a consistent copy of its memory.
//!
//! A heap read from outside walks linked lists the target rewrites all the
//! time; against a running mutator the walks break early (readonly-heap
//! research §6). So the threads are stopped for the copy, the way py-spy
//! and pystack do by default, with `PTRACE_SEIZE` + `PTRACE_INTERRUPT`
//! rather than SIGSTOP:
//!
//! - the stop is invisible to job control and to the target's signal
//!   handlers (no SIGSTOP/SIGCONT to observe);
//! - if memsleuth dies while holding the pause, the kernel detaches every
//!   seized thread and they run on (a killed tool that had sent SIGSTOP
//!   would leave the target stopped for good).
//!
//! This is a process fact, not an injection: nothing is written, no
//! register touched. [`Freeze`] resumes on drop, so every error path and
//! every panic resumes the target.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// How long one thread may take to reach its stop. A thread in an
/// uninterruptible sleep (disk I/O, page fault on NFS) stops only when it
/// returns to user space.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on listing passes: a process creating threads faster than we seize
/// them is not paused, it is reported.
const MAX_PASSES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("process {pid} does not exist (any more); check the pid with `memsleuth ps`")]
    Gone { pid: u32 },
    #[error("cannot pause process {pid} to read its memory consistently: {detail}")]
    Denied { pid: u32, detail: String },
    #[error(
        "thread {tid} of process {pid} did not stop within {}s (it may be in an uninterruptible sleep, state D); try again, or read without pausing with --nonblocking",
        .after.as_secs()
    )]
    Timeout { pid: u32, tid: u32, after: Duration },
    #[error(
        "process {pid} keeps creating threads faster than memsleuth can pause them; try again, or read without pausing with --nonblocking"
    )]
    Churn { pid: u32 },
    #[error("cannot pause process {pid}: {op} failed: {source}")]
    Io {
        pid: u32,
        op: String,
        source: std::io::Error,
    },
}

/// Every thread of a process, stopped. Dropping it resumes them all.
/// Not `Send`: ptrace requests must come from the thread that seized.
pub struct Freeze {
    pid: u32,
    /// Seized threads still alive, with the signal to hand back on detach
    /// (a signal-delivery-stop swallowed a signal meant for the thread).
    threads: Vec<(u32, i32)>,
    started: Instant,
    paused: Option<Duration>,
    _not_send: PhantomData<*const ()>,
}

impl Freeze {
    /// Stops every thread of `pid` and waits until each one is stopped.
    pub fn pause(pid: u32) -> Result<Freeze, FreezeError> {
        let mut f = Freeze {
            pid,
            threads: Vec::new(),
            started: Instant::now(),
            paused: None,
            _not_send: PhantomData,
        };
        let mut seen: HashSet<u32> = HashSet::new();
        for pass in 0.. {
            if pass >= MAX_PASSES {
                return Err(FreezeError::Churn { pid });
            }
            let tids = list_tasks(pid)?;
            let new: Vec<u32> = tids.into_iter().filter(|t| seen.insert(*t)).collect();
            if new.is_empty() {
                break;
            }
            let mut fresh = Vec::with_capacity(new.len());
            for tid in new {
                match seize_and_interrupt(tid) {
                    Ok(()) => fresh.push(tid),
                    Err(libc::ESRCH) => {} // exited meanwhile
                    Err(libc::EPERM) => {
                        return Err(FreezeError::Denied {
                            pid,
                            detail: crate::inject::ptrace::permission_detail(pid),
                        });
                    }
                    Err(e) => return Err(f.io("PTRACE_SEIZE", e)),
                }
            }
            for tid in fresh {
                if let Some(sig) = f.wait_stopped(tid)? {
                    f.threads.push((tid, sig));
                }
            }
        }
        if f.threads.is_empty() {
            return Err(FreezeError::Gone { pid });
        }
        Ok(f)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How many threads are stopped.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Time since the first thread was asked to stop.
    pub fn elapsed(&self) -> Duration {
        self.paused.unwrap_or_else(|| self.started.elapsed())
    }

    /// Resumes every thread; returns how long the target was paused.
    pub fn resume(mut self) -> Duration {
        self.detach_all();
        self.elapsed()
    }

    fn detach_all(&mut self) {
        let mut dead = Vec::new();
        for (tid, sig) in self.threads.drain(..) {
            // SAFETY: plain ptrace request on a thread we seized.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_DETACH,
                    tid as libc::pid_t,
                    std::ptr::null_mut::<libc::c_void>(),
                    sig as usize as *mut libc::c_void,
                )
            };
            // ESRCH: SIGKILL woke it out of its stop; nothing to resume.
            if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                dead.push(tid);
            }
        }
        reap_dead_tracees(self.pid, &dead);
        if self.paused.is_none() {
            self.paused = Some(self.started.elapsed());
        }
    }

    fn io(&self, op: &str, errno: i32) -> FreezeError {
        FreezeError::Io {
            pid: self.pid,
            op: op.to_owned(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// Waits for a seized thread's stop. `Some(signal to give back)` when
    /// stopped, `None` when the thread exited instead.
    fn wait_stopped(&mut self, tid: u32) -> Result<Option<i32>, FreezeError> {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            let mut status = 0i32;
            // SAFETY: plain wait on a ptrace child.
            let r = unsafe {
                libc::waitpid(
                    tid as libc::pid_t,
                    &mut status,
                    libc::__WALL | libc::WNOHANG,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if e == libc::EINTR {
                    continue;
                }
                // ECHILD: the thread is gone (reaped by its own exit).
                return if e == libc::ECHILD {
                    Ok(None)
                } else {
                    Err(self.io("waitpid", e))
                };
            }
            if r > 0 {
                if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                    return Ok(None);
                }
                if libc::WIFSTOPPED(status) {
                    let sig = libc::WSTOPSIG(status);
                    let event = (status >> 16) & 0xff;
                    // PTRACE_EVENT_STOP (interrupt or group stop) keeps no
                    // signal; a signal-delivery-stop holds one to hand back.
                    let give_back = if event != 0 || sig == libc::SIGTRAP {
                        0
                    } else {
                        sig
                    };
                    return Ok(Some(give_back));
                }
            }
            let waited = start.elapsed();
            if waited >= STOP_TIMEOUT {
                // Keep it: it is seized and must be detached on drop.
                self.threads.push((tid, 0));
                return Err(FreezeError::Timeout {
                    pid: self.pid,
                    tid,
                    after: STOP_TIMEOUT,
                });
            }
            polls += 1;
            let nap = match polls {
                0..=50 => Duration::from_micros(2),
                51..=500 => Duration::from_micros(20),
                _ => Duration::from_micros(500),
            };
            std::thread::sleep(nap);
        }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// A traced thread that dies reports its exit to the tracer, and its
/// process cannot be reaped by its parent until the tracer has collected
/// it. So collect the dying threads we traced (bounded: SIGKILL finishes
/// them within milliseconds). The leader is left to its parent when we are
/// that parent, so its exit status still reaches the parent's own wait.
fn reap_dead_tracees(pid: u32, dead: &[u32]) {
    if dead.is_empty() {
        return;
    }
    let we_are_parent = crate::process::Process::open(pid)
        .and_then(|p| p.stat())
        .map(|s| s.ppid == std::process::id())
        .unwrap_or(false);
    let deadline = Instant::now() + Duration::from_millis(500);
    for &tid in dead {
        if tid == pid && we_are_parent {
            continue;
        }
        loop {
            let mut status = 0i32;
            // SAFETY: plain non-blocking wait on a (former) ptrace child.
            let r = unsafe {
                libc::waitpid(
                    tid as libc::pid_t,
                    &mut status,
                    libc::__WALL | libc::WNOHANG,
                )
            };
            let interrupted =
                r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
            if (r != 0 && !interrupted) || Instant::now() >= deadline {
                break; // collected, not ours (ECHILD), or out of time
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn seize_and_interrupt(tid: u32) -> Result<(), i32> {
    let req = |r: libc::c_uint| {
        // SAFETY: plain ptrace requests without buffers.
        let n = unsafe {
            libc::ptrace(
                r as _,
                tid as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if n == -1 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        }
    };
    req(libc::PTRACE_SEIZE as libc::c_uint)?;
    if let Err(e) = req(libc::PTRACE_INTERRUPT as libc::c_uint) {
        req(libc::PTRACE_DETACH as libc::c_uint).ok();
        return Err(e);
    }
    Ok(())
}

/// The thread ids in /proc/PID/task.
fn list_tasks(pid: u32) -> Result<Vec<u32>, FreezeError> {
    let dir = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FreezeError::Gone { pid });
        }
        Err(e) => {
            return Err(FreezeError::Io {
                pid,
                op: format!("listing /proc/{pid}/task"),
                source: e,
            });
        }
    };
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pid_is_gone() {
        let err = Freeze::pause(999_999_999).err().unwrap();
        assert!(matches!(err, FreezeError::Gone { .. }), "{err}");
    }

    #[test]
    fn pauses_and_resumes_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let f = Freeze::pause(pid).unwrap();
        assert_eq!(f.threads(), 1);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
        assert_eq!(state, Some("t"), "{stat}");
        f.resume();
        let mut state = String::new();
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            state = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            if state != "t" {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Any state but a stop: a just-spawned `sleep` can still be paging
        // its binary in (D) on a cold machine.
        assert!(state != "t" && state != "T", "{state}");
        child.kill().ok();
        child.wait().ok();
    }
}
