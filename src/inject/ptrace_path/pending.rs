//! The pending call, and the nudge: queueing `PyRun_SimpleString(page)`
//! with `Py_AddPendingCall`, and telling whether the main thread's futex
//! wait is a Python lock wait that may be interrupted (see the module docs
//! of [`super`]).

use super::symbols::{Range, in_ranges};
use super::{Ctx, STACK_SCAN, page_len, trace};
use crate::inject::ptrace::{PtraceError, Result};
use crate::inject::remote::{self, Tracee};
use crate::inject::threads::{self, ThreadInfo};

/// What the main thread's futex wait is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parked {
    /// A Python-level lock/event wait.
    PythonLock,
    /// The GIL, malloc, stdio, the loader, or unknown: never nudged.
    Other,
    /// The thread was not waiting any more when looked at (not cached).
    Moved,
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl Ctx<'_> {
    /// Maps a page, writes the code and queues `PyRun_SimpleString(page)` as a
    /// pending call. Returns the page (it must stay mapped).
    pub(super) fn queue_pending(&self, list: &[ThreadInfo], code: &[u8]) -> Result<(u64, usize)> {
        let tid = self.quiet_thread(list);
        let mut t = Tracee::seize(self.pid, tid, self.quick())?;
        let q = self.quick();
        if let Some(fin) = self.sym.is_finalizing
            && t.call(fin, &[], q)? as u32 != 0
        {
            return Err(PtraceError::RemoteCallFailed {
                function: "Py_AddPendingCall",
                detail: "the interpreter is shutting down".into(),
            });
        }
        let len = page_len(code.len() + 1);
        let addr = remote::remote_mmap(&mut t, self.libc.mmap, len, q)?;
        let mut buf = Vec::with_capacity(code.len() + 1);
        buf.extend_from_slice(code);
        buf.push(0);
        let queued = t
            .write_mem(addr, &buf)
            .and_then(|_| t.call(self.sym.add_pending, &[self.sym.run, addr], q));
        match queued {
            Ok(rc) if rc as u32 == 0 => {
                t.detach()?;
                Ok((addr, len))
            }
            other => {
                let _ = remote::remote_munmap(&mut t, self.libc.munmap, addr, len, q);
                t.detach()?;
                match other {
                    Err(e) => Err(e),
                    Ok(rc) => Err(PtraceError::RemoteCallFailed {
                        function: "Py_AddPendingCall",
                        detail: format!(
                            "returned {} (the pending-call queue is full)",
                            rc as u32 as i32
                        ),
                    }),
                }
            }
        }
    }

    /// Seizes the main thread, tells what its futex wait is, and if it is a
    /// Python lock wait and `nudge` is set, makes it return EINTR.
    pub(super) fn examine_main(&self, nudge: bool) -> Result<(Parked, bool)> {
        let mut t = match Tracee::seize(self.pid, self.pid, self.quick()) {
            Ok(t) => t,
            Err(PtraceError::Timeout { .. }) => return Ok((Parked::Moved, false)),
            Err(e) => return Err(e),
        };
        let parked = self.parked_on_python_lock(&t)?;
        let nudged = nudge && parked == Parked::PythonLock;
        if nudged {
            t.set_saved_syscall_result(-(libc::EINTR as i64));
        }
        t.detach()?;
        Ok((parked, nudged))
    }

    /// The nudge rule (see the module docs), on a stopped thread.
    fn parked_on_python_lock(&self, t: &Tracee) -> Result<Parked> {
        let verdict = self.lock_wait_verdict(t)?;
        trace(format_args!("thread {}: {verdict}", t.tid()));
        Ok(match verdict {
            "a Python lock wait" => Parked::PythonLock,
            "not in a syscall" | "its syscall had just returned" => Parked::Moved,
            _ => Parked::Other,
        })
    }

    fn lock_wait_verdict(&self, t: &Tracee) -> Result<&'static str> {
        let Some((nr, _)) = t.stopped_syscall() else {
            return Ok("not in a syscall");
        };
        if !t.interrupted_in_syscall() {
            return Ok("its syscall had just returned");
        }
        let regs = t.saved_regs();
        if nr == threads::NR_RESTART_SYSCALL {
            // A futex wait with a timeout resumed: rdi still holds its word.
            if self.resumes_safe_wait(t.tid(), regs.rip, regs.rsp, [regs.rdi, regs.rsi, regs.rdx]) {
                return Ok("resuming a safe wait");
            }
        } else if nr != threads::NR_FUTEX {
            return Ok("not a futex wait");
        }
        if !self.futex_word_is_private(regs.rdi) {
            return Ok("the futex word is in a binary's data (GIL, malloc, loader or stdio lock)");
        }
        let sp = regs.rsp;
        let end = self
            .maps
            .iter()
            .find(|m| m.start <= sp && sp < m.end)
            .map(|m| m.end)
            .unwrap_or(sp);
        let len = (end.saturating_sub(sp) as usize).min(STACK_SCAN) & !7;
        if len == 0 {
            return Ok("no readable stack");
        }
        let mut stack = vec![0u8; len];
        t.read_mem(sp, &mut stack)?;
        // Return addresses into the interpreter: in its text and just after a
        // call instruction (a non-PIE binary's addresses are small numbers
        // that sizes and flags on the stack can look like).
        let mut py_addrs = stack
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .filter(|&v| in_ranges(&self.py_text, v))
            .filter(|&v| follows_a_call(t.pid(), v));
        // The first few interpreter return addresses decide. A stale return
        // address left in a callee's uninitialised locals (after a pending
        // call ran from inside this very wait, for instance) can come first,
        // so one that is neither a lock wait nor a GIL wait is skipped; a GIL
        // wait (or running out of candidates) rejects. The futex word check
        // above is the stronger guard: the GIL and malloc/loader/stdio locks
        // live in a binary's data.
        const CANDIDATES: usize = 6;
        let mut seen_any = false;
        let mut lock_wait_at = None;
        for (i, addr) in py_addrs.by_ref().take(CANDIDATES).enumerate() {
            seen_any = true;
            if in_ranges(&self.sym.lock_waits, addr) {
                lock_wait_at = Some(i);
                break;
            }
            if in_ranges(&self.sym.gil_waits, addr) {
                return Ok("waiting for the GIL");
            }
        }
        if !seen_any {
            return Ok("no interpreter frame on the stack");
        }
        if lock_wait_at.is_none() {
            trace(format_args!(
                "no lock wait among the first interpreter frames; lock waits {:x?}",
                self.sym.lock_waits
            ));
            return Ok("the innermost interpreter frames are not a lock wait");
        }
        if self.is_py2() {
            // 2.7's GIL is a PyThread lock too: its caller tells.
            if py_addrs
                .next()
                .is_some_and(|next| in_ranges(&self.sym.gil_waits, next))
            {
                return Ok("waiting for the GIL");
            }
        }
        Ok("a Python lock wait")
    }

    /// A futex word of a Python lock lives on the heap, in an anonymous
    /// mapping or on a stack; the GIL, malloc's main arena and ld.so/stdio
    /// locks live in the data of a file mapping.
    fn futex_word_is_private(&self, addr: u64) -> bool {
        let Some(m) = self.maps.iter().find(|m| m.start <= addr && addr < m.end) else {
            return false;
        };
        if m.inode != 0 {
            return false;
        }
        let inside = |r: Option<Range>| r.is_some_and(|(s, e)| s <= addr && addr < e);
        !inside(self.py_image) && !inside(Some(self.libc.image))
    }
}

/// Whether the bytes before `addr` in the target end with an x86-64 call:
/// `e8 rel32`, or `ff /2` (indirect) with a register, disp8, SIB or disp32
/// operand (REX prefixes come before the ff and do not matter).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn follows_a_call(pid: u32, addr: u64) -> bool {
    let mut b = [0u8; 7];
    if addr < 7 || crate::inject::ptrace::read_mem(pid, addr - 7, &mut b).is_err() {
        return false;
    }
    is_call_before(&b)
}

/// `b` holds the 7 bytes before a candidate return address.
pub(super) fn is_call_before(b: &[u8; 7]) -> bool {
    let ff2 = |at: usize, len: usize| {
        // ff at b[at], modrm at b[at + 1], instruction `len` bytes long.
        let modrm = b[at + 1];
        if b[at] != 0xff || (modrm >> 3) & 7 != 2 {
            return false;
        }
        let (md, rm) = (modrm >> 6, modrm & 7);
        let sib = usize::from(md != 3 && rm == 4);
        let disp = match md {
            0 if rm == 5 => 4,
            0 if sib == 1 && b[at + 2] & 7 == 5 => 4,
            1 => 1,
            2 => 4,
            _ => 0,
        };
        2 + sib + disp == len
    };
    b[2] == 0xe8 || ff2(5, 2) || ff2(4, 3) || ff2(3, 4) || ff2(1, 6) || ff2(0, 7)
}
