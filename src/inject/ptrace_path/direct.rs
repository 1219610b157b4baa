//! The direct path: which threads are parked in a safe wait, whether a
//! thread holds the GIL (or another holds it while stuck), and running the
//! code on an eligible thread with `PyGILState_Ensure` /
//! `PyRun_SimpleString` / `PyGILState_Release`.

use std::time::Duration;

use super::symbols::{SAFE_WRAPPERS, in_ranges};
use super::{Ctx, HOLDER_SAMPLE_GAP, HOLDER_SAMPLES, MAX_PROBES, gone_or_io, page_len, trace};
use crate::inject::ptrace::{PtraceError, Result};
use crate::inject::remote::{self, Tracee};
use crate::inject::threads::{self, Activity, ThreadInfo};

/// The outcome of one direct attempt.
pub(super) enum Direct {
    /// The code ran; it was in this page.
    Ran((u64, usize)),
    Ineligible(String),
}

/// What a restart_syscall resumes.
enum Resumed<'a> {
    Syscall(i64),
    Function(&'a str),
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl Ctx<'_> {
    /// Threads blocked in a safe syscall, the main thread first. On 2.7,
    /// epoll waits are left alone: a ptrace stop makes them fail with EINTR,
    /// which 2.7 (no PEP 475 retries) raises as IOError.
    pub(super) fn direct_candidates(&self, list: &[ThreadInfo]) -> Vec<ThreadInfo> {
        list.iter()
            .filter(|t| self.safe_wait(t.tid, &t.activity))
            .filter(|t| {
                !(self.is_py2()
                    && matches!(
                        t.activity.syscall_nr(),
                        Some(
                            threads::NR_EPOLL_WAIT
                                | threads::NR_EPOLL_PWAIT
                                | threads::NR_EPOLL_PWAIT2
                        )
                    ))
            })
            .cloned()
            .collect()
    }

    /// A safe syscall, or restart_syscall resuming one (told by the libc
    /// function the program counter is in).
    fn safe_wait(&self, tid: u32, a: &Activity) -> bool {
        match *a {
            Activity::Syscall {
                nr, pc, sp, args, ..
            } if nr == threads::NR_RESTART_SYSCALL => {
                self.resumes_safe_wait(tid, pc, sp, [args[0], args[1], args[2]])
            }
            _ => a.in_safe_syscall(),
        }
    }

    /// What a thread blocked in restart_syscall at (`pc`, `sp`) resumes: the
    /// syscall memsleuth interrupted there earlier, else the exported libc
    /// function the program counter is in (pc is just after the syscall
    /// instruction, so pc - 1 is inside). On glibc ≥ 2.41 every cancellable
    /// syscall sits in one unexported helper, so only the first way works.
    fn resumed(&self, tid: u32, pc: u64, sp: u64, args: [u64; 3]) -> Option<Resumed<'_>> {
        if let Some(nr) = remote::restarted_syscall(self.pid, tid, pc, sp, args) {
            return Some(Resumed::Syscall(nr));
        }
        self.libc
            .function_at(pc.wrapping_sub(1))
            .map(Resumed::Function)
    }

    pub(super) fn resumes_safe_wait(&self, tid: u32, pc: u64, sp: u64, args: [u64; 3]) -> bool {
        match self.resumed(tid, pc, sp, args) {
            Some(Resumed::Syscall(nr)) => threads::is_safe_syscall(nr),
            Some(Resumed::Function(f)) => SAFE_WRAPPERS.contains(&f),
            None => false,
        }
    }

    pub(super) fn resumed_label(
        &self,
        tid: u32,
        pc: u64,
        sp: u64,
        args: [u64; 3],
    ) -> Option<String> {
        match self.resumed(tid, pc, sp, args)? {
            Resumed::Syscall(nr) => Some(threads::syscall_name(nr).to_owned()),
            Resumed::Function(f) => Some(f.to_owned()),
        }
    }

    fn safe_regs(&self, t: &Tracee) -> bool {
        match t.stopped_syscall() {
            Some((nr, _)) if nr == threads::NR_RESTART_SYSCALL => {
                let r = t.saved_regs();
                self.resumes_safe_wait(t.tid(), r.rip, r.rsp, [r.rdi, r.rsi, r.rdx])
            }
            Some((nr, _)) => threads::is_safe_syscall(nr),
            None => false,
        }
    }

    /// A thread to make a short call on: one in a safe wait if any, else main.
    pub(super) fn quiet_thread(&self, list: &[ThreadInfo]) -> u32 {
        self.direct_candidates(list)
            .first()
            .map(|t| t.tid)
            .unwrap_or(self.pid)
    }

    /// Whether the stopped thread holds the GIL.
    pub(super) fn holds_gil(&self, t: &mut Tracee) -> Result<bool> {
        let q = self.quick();
        if let Some(check) = self.sym.check {
            let held = t.call(check, &[], q)? as u32 != 0;
            if !held {
                return Ok(false);
            }
            // PyGILState_Check also says 1 when GIL checking is off
            // (subinterpreters): confirm from the thread state.
            if let Some(get) = self.sym.unchecked_get {
                let cur = t.call(get, &[], q)?;
                if self.unchecked_get_is_global() {
                    let this = t.call(self.sym.this_tstate, &[], q)?;
                    return Ok(cur != 0 && cur == this);
                }
                if self.version().is_some() {
                    return Ok(cur != 0);
                }
            }
            return Ok(true);
        }
        if let Some(var) = self.sym.tstate_current_var {
            let this = t.call(self.sym.this_tstate, &[], q)?;
            let cur = t.read_u64(var)?;
            return Ok(this != 0 && cur == this);
        }
        Err(PtraceError::Unsupported(
            "cannot tell whether a thread holds the GIL in this interpreter".into(),
        ))
    }

    /// The GIL holder's tstate when the interpreter keeps it globally
    /// (≤ 3.11): Some(0) when the GIL is free. None: must probe threads.
    fn global_holder(&self, t: &mut Tracee) -> Result<Option<u64>> {
        if let Some(var) = self
            .sym
            .tstate_current_var
            .filter(|_| self.sym.unchecked_get.is_none() || self.is_py2())
        {
            return Ok(Some(t.read_u64(var)?));
        }
        match self.sym.unchecked_get {
            Some(get) if self.unchecked_get_is_global() => {
                Ok(Some(t.call(get, &[], self.quick())?))
            }
            _ => Ok(None),
        }
    }

    /// [`Self::try_direct`], with the failures that concern only this thread
    /// (it exited, did not stop, PyGILState_Ensure did not get the GIL in
    /// time) turned into a reason to try another way.
    pub(super) fn try_direct_or_skip(
        &self,
        info: &ThreadInfo,
        code: &[u8],
        page: Option<(u64, usize)>,
    ) -> Result<Direct> {
        match self.try_direct(info, code, page) {
            Err(PtraceError::Gone { .. }) if info.tid != self.pid => {
                Ok(Direct::Ineligible("it exited".into()))
            }
            Err(e @ (PtraceError::Timeout { .. } | PtraceError::UnexpectedStop { .. })) => {
                Ok(Direct::Ineligible(e.to_string()))
            }
            other => other,
        }
    }

    /// Direct injection on thread `info` if it is (still) eligible.
    fn try_direct(
        &self,
        info: &ThreadInfo,
        code: &[u8],
        page: Option<(u64, usize)>,
    ) -> Result<Direct> {
        let mut t = match Tracee::seize(self.pid, info.tid, self.quick()) {
            Ok(t) => t,
            Err(PtraceError::Gone { .. }) if info.tid != self.pid => {
                return Ok(Direct::Ineligible("exited".into()));
            }
            Err(e) => return Err(e),
        };
        if !self.safe_regs(&t) {
            return Ok(Direct::Ineligible("no longer in a safe syscall".into()));
        }
        let q = self.quick();
        let this = t.call(self.sym.this_tstate, &[], q)?;
        if this == 0 {
            return Ok(Direct::Ineligible("not a Python thread".into()));
        }
        if self.holds_gil(&mut t)? {
            return Ok(Direct::Ineligible("holds the GIL".into()));
        }
        if let Some(fin) = self.sym.is_finalizing
            && t.call(fin, &[], q)? as u32 != 0
        {
            return Ok(Direct::Ineligible(
                "the interpreter is shutting down".into(),
            ));
        }
        match self.global_holder(&mut t)? {
            Some(0) => {}
            _ => {
                if let Some(why) = self.gil_stuck(info.tid)? {
                    return Ok(Direct::Ineligible(why));
                }
            }
        }

        // Eligible: run the code. errno is the thread's; keep it.
        let errno_addr = match self.libc.errno_location {
            Some(f) => Some(t.call(f, &[], q)?).filter(|&a| a != 0),
            None => None,
        };
        let mut errno = [0u8; 4];
        if let Some(a) = errno_addr {
            t.read_mem(a, &mut errno)?;
        }
        let (addr, len, ours) = match page {
            Some((a, l)) => (a, l, false),
            None => {
                let len = page_len(code.len() + 1);
                let a = remote::remote_mmap(&mut t, self.libc.mmap, len, q)?;
                (a, len, true)
            }
        };
        let ran = self.run_with_gil(&mut t, addr, code, ours);
        if ours {
            // Unmap even if the run failed (the code is not referenced any more).
            let _ = remote::remote_munmap(&mut t, self.libc.munmap, addr, len, self.quick());
        }
        if let Some(a) = errno_addr {
            let _ = t.write_mem(a, &errno);
        }
        t.detach()?;
        ran?;
        Ok(Direct::Ran((addr, len)))
    }

    fn run_with_gil(&self, t: &mut Tracee, addr: u64, code: &[u8], write: bool) -> Result<()> {
        if write {
            let mut buf = Vec::with_capacity(code.len() + 1);
            buf.extend_from_slice(code);
            buf.push(0);
            t.write_mem(addr, &buf)?;
        }
        // Ensure may wait for the GIL (its holder runs bytecode: a few ms).
        let state = t.call(
            self.sym.ensure,
            &[],
            self.remaining().max(Duration::from_secs(1)),
        )?;
        trace(format_args!(
            "thread {}: PyGILState_Ensure returned {state}",
            t.tid()
        ));
        // With the GIL held, abandoning the call would deadlock the process:
        // give the code time, and never retry it elsewhere.
        let budget = self.remaining().max(Duration::from_secs(30));
        let rc = t.call(self.sym.run, &[addr], budget).map_err(|e| match e {
            PtraceError::Timeout { .. } | PtraceError::UnexpectedStop { .. } => {
                PtraceError::RemoteCallFailed {
                    function: "PyRun_SimpleString",
                    detail: format!(
                        "{e}; the call was abandoned with the GIL held, the process may hang"
                    ),
                }
            }
            e => e,
        });
        let released = t.call(
            self.sym.release,
            &[state & 0xffff_ffff],
            Duration::from_secs(10),
        );
        let rc = rc? as u32 as i32;
        released?;
        trace(format_args!(
            "thread {}: PyRun_SimpleString returned {rc}, GIL released",
            t.tid()
        ));
        if rc != 0 {
            return Err(PtraceError::RemoteCallFailed {
                function: "PyRun_SimpleString",
                detail: "the code raised an exception (printed on the target's stderr)".into(),
            });
        }
        Ok(())
    }

    /// Whether another thread holds the GIL in a way that would make
    /// PyGILState_Ensure wait long: blocked in a syscall, or running
    /// outside the bytecode loop. Some(reason) when it does.
    fn gil_stuck(&self, except: u32) -> Result<Option<String>> {
        let list = threads::list(self.pid).map_err(|e| gone_or_io(self.pid, "list threads", e))?;
        let mut others: Vec<&ThreadInfo> = list.iter().filter(|t| t.tid != except).collect();
        // Likely holders first: running threads, then the main thread.
        others.sort_by_key(|t| {
            (
                !matches!(
                    t.activity,
                    Activity::Running | Activity::NotInSyscall { .. }
                ),
                !t.is_main,
            )
        });
        for info in others.into_iter().take(MAX_PROBES) {
            if self.is_py2()
                && matches!(
                    info.activity.syscall_nr(),
                    Some(threads::NR_EPOLL_WAIT | threads::NR_EPOLL_PWAIT)
                )
            {
                continue;
            }
            let mut y = match Tracee::seize(self.pid, info.tid, self.quick()) {
                Ok(y) => y,
                Err(PtraceError::Gone { .. }) => continue,
                Err(e) => return Err(e),
            };
            if !self.holds_gil(&mut y)? {
                continue;
            }
            // Sample the holder. Seen in the bytecode loop: it honours a drop
            // request within milliseconds. Blocked in a syscall (sleep, I/O,
            // a lock) with the GIL: Ensure would wait as long. Never seen in
            // the loop: C code that may not let go for a long time.
            let mut last = String::new();
            let mut first = Some(y);
            for i in 0..HOLDER_SAMPLES {
                let y = match first.take() {
                    Some(y) => y,
                    None => {
                        std::thread::sleep(HOLDER_SAMPLE_GAP);
                        let mut y = match Tracee::seize(self.pid, info.tid, self.quick()) {
                            Ok(y) => y,
                            Err(PtraceError::Gone { .. }) => return Ok(None),
                            Err(e) => return Err(e),
                        };
                        if y.stopped_syscall().is_some() && !self.holds_gil(&mut y)? {
                            trace(format_args!("GIL holder {} let go of the GIL", info.tid));
                            return Ok(None);
                        }
                        y
                    }
                };
                let r = y.saved_regs();
                let (pc, sp, args) = (r.rip, r.rsp, [r.rdi, r.rsi, r.rdx]);
                match y.stopped_syscall() {
                    Some((nr, _)) if y.interrupted_in_syscall() => {
                        return Ok(Some(format!(
                            "thread {} holds the GIL while blocked in {}",
                            info.tid,
                            self.syscall_label(info.tid, nr, pc, sp, args)
                        )));
                    }
                    // A syscall that completed (mmap, write...): transient.
                    Some((nr, _)) => {
                        last = format!("in {}", self.syscall_label(info.tid, nr, pc, sp, args))
                    }
                    None if in_ranges(&self.sym.eval_loop, pc) => {
                        trace(format_args!(
                            "GIL holder {} seen in the eval loop after {i} samples",
                            info.tid
                        ));
                        return Ok(None);
                    }
                    None => last = "running C code".to_owned(),
                }
            }
            return Ok(Some(format!(
                "thread {} holds the GIL, {last} ({HOLDER_SAMPLES} samples, never in the bytecode loop)",
                info.tid
            )));
        }
        Ok(None)
    }

    /// A syscall's name; for restart_syscall, the libc function it resumes.
    fn syscall_label(&self, tid: u32, nr: i64, pc: u64, sp: u64, args: [u64; 3]) -> String {
        match self.resumed_label(tid, pc, sp, args) {
            Some(f) if nr == threads::NR_RESTART_SYSCALL => format!("{f} (resumed)"),
            _ => threads::syscall_name(nr).to_owned(),
        }
    }
}
