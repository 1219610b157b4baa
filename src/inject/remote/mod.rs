//! Calling functions inside another process on one stopped thread.
//!
//! A [`Tracee`] is one thread, seized and stopped, with its general-purpose
//! registers and full XSAVE area saved. [`Tracee::call`] runs a function of
//! the target on that thread with the System V calling convention and a
//! return address of 0: when the function returns, the thread faults at
//! address 0 and the SIGSEGV stop gives the result in rax. Between calls the
//! thread rests in a PTRACE_EVENT_STOP with its original registers and
//! extended state, so at any moment outside a call the kernel's automatic
//! detach (if memsleuth dies) lets the thread carry on untouched.
//!
//! Details that matter (each one verified against real interpreters):
//! - `orig_rax = -1` for the call: otherwise the kernel's syscall-restart
//!   logic (the thread was stopped inside a syscall) rewinds rip by 2 bytes
//!   and reloads rax before our function even runs.
//! - The stack pointer skips the 128-byte red zone (plus slack) below the
//!   thread's rsp and is aligned so that `(rsp + 8) % 16 == 0` at entry.
//! - Signals that arrive while the function runs are suppressed and queued
//!   again (tgkill) at detach, so none is lost or delivered into our call.
//! - A restartable syscall that used the kernel's per-thread restart block
//!   (`-ERESTART_RESTARTBLOCK`: poll, nanosleep, futex with a timeout) cannot
//!   be resumed if a stop inside our call may have overwritten that block;
//!   it then returns EINTR instead, which callers already handle (a signal
//!   with a handler does the same).
//! - SIGINT/SIGTERM/SIGHUP/SIGQUIT are blocked in memsleuth while any thread
//!   is seized: dying with a return address of 0 in flight, or with the
//!   thread in a SIGSEGV stop, would crash the target.

#![cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code, unused_imports, unused_variables)
)]

use std::time::{Duration, Instant};

use super::ptrace::{self as pt, PtraceError, Result, WaitStatus};

mod mmap;
mod signals;
#[cfg(test)]
mod tests;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use mmap::{remote_mmap, remote_munmap};
pub use signals::signals_blocked;
use signals::{SignalBlock, signal_name};

/// Bytes skipped below the thread's stack pointer: the 128-byte red zone
/// plus slack.
const STACK_SKIP: u64 = 128 + 256;
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
/// How long detach and the stop after a timed-out call may take.
const SETTLE: Duration = Duration::from_secs(2);

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub type Regs = libc::user_regs_struct;

const NR_RESTART_SYSCALL: i64 = 219;

/// Syscalls we interrupted that the kernel resumes through `restart_syscall`
/// (those that returned -ERESTART_RESTARTBLOCK: poll, relative nanosleep,
/// futex with a timeout), keyed by (pid, tid, pc, sp, first three
/// arguments; the restart leaves the argument registers alone): /proc then
/// shows only "restart_syscall", and on glibc ≥ 2.41 the program counter
/// sits in an unexported helper shared by all cancellable syscalls.
type RestartKey = (u32, u32, u64, u64, [u64; 3]);
static RESTARTS: std::sync::Mutex<Vec<(RestartKey, i64)>> = std::sync::Mutex::new(Vec::new());

/// The syscall a thread blocked in `restart_syscall` at (`pc`, `sp`) with
/// these first three arguments resumes, if memsleuth interrupted it there.
pub fn restarted_syscall(pid: u32, tid: u32, pc: u64, sp: u64, args: [u64; 3]) -> Option<i64> {
    let list = RESTARTS.lock().unwrap_or_else(|e| e.into_inner());
    list.iter()
        .find(|(k, _)| *k == (pid, tid, pc, sp, args))
        .map(|&(_, nr)| nr)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a PTRACE_EVENT_STOP (or another stop) with the original registers.
    Stopped,
    /// Running our function, or resumed and not yet stopped again.
    Running,
    Detached,
    Gone,
}

/// One seized, stopped thread of the target.
pub struct Tracee {
    pid: u32,
    tid: u32,
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    saved: Regs,
    xstate: Vec<u8>,
    /// Signals that arrived while we held the thread, to queue again.
    signals: Vec<i32>,
    /// A stop inside one of our calls may have reused the kernel's restart block.
    restart_block_dirty: bool,
    state: State,
    _block: SignalBlock,
}

/// A thread we still trace but could not stop in time: once it stops it
/// must get its registers back (if we changed them) and be detached, or it
/// would stay stopped until memsleuth exits.
struct Orphan {
    tid: u32,
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    restore: Option<(Regs, Vec<u8>)>,
}

thread_local! {
    static ORPHANS: std::cell::RefCell<Vec<Orphan>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Detaches threads that stopped late (after a seize or call gave up on
/// them), restoring them first. Called before every seize; cheap when there
/// are none.
pub fn reap_orphans() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    ORPHANS.with(|o| {
        o.borrow_mut()
            .retain(|orphan| match pt::try_wait(orphan.tid) {
                Ok(Some(WaitStatus::Stopped { .. })) => {
                    if let Some((regs, xstate)) = &orphan.restore {
                        let _ = pt::set_regs(orphan.tid, regs);
                        let _ = pt::set_xstate(orphan.tid, xstate);
                    }
                    let _ = pt::detach(orphan.tid, 0);
                    false
                }
                Ok(None) => true,
                _ => false,
            })
    });
}

/// How many threads are still waiting to be detached (see [`reap_orphans`]).
pub fn orphan_count() -> usize {
    ORPHANS.with(|o| o.borrow().len())
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl Tracee {
    /// Seizes thread `tid` of process `pid`, stops it and saves its state.
    /// The rest of the process keeps running.
    pub fn seize(pid: u32, tid: u32, timeout: Duration) -> Result<Tracee> {
        reap_orphans();
        let block = SignalBlock::new();
        pt::seize(pid, tid)?;
        let mut t = Tracee {
            pid,
            tid,
            // SAFETY: plain integers; overwritten below before any use.
            saved: unsafe { std::mem::zeroed() },
            xstate: Vec::new(),
            signals: Vec::new(),
            restart_block_dirty: false,
            state: State::Running,
            _block: block,
        };
        if let Err(e) = pt::interrupt(tid) {
            t.state = if e.is_gone() {
                State::Gone
            } else {
                State::Running
            };
            return Err(e);
        }
        if let Err(e) = t.wait_for_event_stop(timeout, "the thread to stop") {
            if t.state == State::Running && matches!(e, PtraceError::Timeout { .. }) {
                // Stuck in the kernel (state D): detach it once it stops.
                t.orphan(false);
            }
            return Err(e);
        }
        t.save()?;
        Ok(t)
    }

    fn save(&mut self) -> Result<()> {
        self.saved = pt::get_regs(self.tid)?;
        self.xstate = pt::get_xstate(self.tid)?;
        Ok(())
    }

    /// Waits until the thread sits in a PTRACE_EVENT_STOP (from our
    /// interrupt), suppressing and recording signals that come first.
    fn wait_for_event_stop(&mut self, timeout: Duration, what: &str) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = match pt::wait(self.tid, left, what) {
                Ok(s) => s,
                Err(e) => {
                    if e.is_gone() {
                        self.state = State::Gone;
                    }
                    return Err(e);
                }
            };
            match status {
                WaitStatus::Exited(_) | WaitStatus::Killed(_) => {
                    self.state = State::Gone;
                    return Err(PtraceError::Gone { tid: self.tid });
                }
                WaitStatus::Stopped {
                    sig,
                    event: pt::PTRACE_EVENT_STOP,
                } => {
                    self.state = State::Stopped;
                    if sig == libc::SIGTRAP {
                        return Ok(());
                    }
                    // A group stop: the process was stopped by job control
                    // (SIGSTOP/SIGTSTP). Leave it stopped.
                    return Err(PtraceError::UnexpectedStop {
                        tid: self.tid,
                        detail: format!(
                            "the process is stopped by {} (job control, state T); resume it with `kill -CONT {}` first",
                            signal_name(sig),
                            self.pid
                        ),
                    });
                }
                WaitStatus::Stopped { sig, .. } => {
                    self.record_signal(sig);
                    self.state = State::Running;
                    pt::cont(self.tid, 0)?;
                }
            }
        }
    }

    fn record_signal(&mut self, sig: i32) {
        // Standard signals do not queue: one pending instance is all there is.
        if sig < 32 && self.signals.contains(&sig) {
            return;
        }
        self.signals.push(sig);
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// The registers the thread had when it was stopped (what detach restores).
    pub fn saved_regs(&self) -> &Regs {
        &self.saved
    }

    /// Size of the saved XSAVE area (11,008 bytes with AMX).
    pub fn xstate_len(&self) -> usize {
        self.xstate.len()
    }

    /// Signals that arrived while we held the thread (to be re-sent at detach).
    pub fn deferred_signals(&self) -> &[i32] {
        &self.signals
    }

    /// The syscall the thread was stopped in, if any (`orig_rax`), with the
    /// value it had returned so far (a -ERESTART* code while it waits).
    pub fn stopped_syscall(&self) -> Option<(i64, i64)> {
        let nr = self.saved.orig_rax as i64;
        (nr >= 0).then_some((nr, self.saved.rax as i64))
    }

    /// Whether the thread was stopped while blocked in a syscall that the
    /// kernel will restart (as opposed to one that had just completed).
    pub fn interrupted_in_syscall(&self) -> bool {
        self.stopped_syscall().is_some_and(|(_, rax)| {
            matches!(
                -rax,
                ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
            )
        })
    }

    /// Makes the interrupted syscall return `rax` (e.g. `-EINTR`) at detach
    /// instead of being restarted: the "nudge".
    pub fn set_saved_syscall_result(&mut self, rax: i64) {
        self.saved.rax = rax as u64;
        self.saved.orig_rax = u64::MAX;
    }

    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        pt::read_mem(self.pid, addr, buf)
    }

    pub fn write_mem(&self, addr: u64, data: &[u8]) -> Result<()> {
        pt::write_mem(self.pid, addr, data)
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        pt::read_u64(self.pid, addr)
    }

    /// Calls `func(args...)` (at most 6 integer/pointer arguments) on this
    /// thread and returns rax. The thread's registers and extended state are
    /// put back afterwards, whatever happens. On timeout the call is
    /// abandoned (the thread is interrupted and restored).
    pub fn call(&mut self, func: u64, args: &[u64], timeout: Duration) -> Result<u64> {
        if args.len() > 6 {
            return Err(PtraceError::Unsupported(format!(
                "remote call with {} arguments (at most 6)",
                args.len()
            )));
        }
        match self.state {
            State::Stopped => {}
            State::Gone => return Err(PtraceError::Gone { tid: self.tid }),
            _ => {
                return Err(PtraceError::UnexpectedStop {
                    tid: self.tid,
                    detail: "the thread is not stopped".into(),
                });
            }
        }
        let mut regs = self.saved;
        let sp = (self.saved.rsp.wrapping_sub(STACK_SKIP) & !15).wrapping_sub(8);
        // Return address 0: returning faults at rip 0, our "breakpoint".
        self.write_mem(sp, &0u64.to_le_bytes())?;
        regs.rsp = sp;
        regs.rip = func;
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        (regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9) =
            (a[0], a[1], a[2], a[3], a[4], a[5]);
        regs.rax = 0;
        regs.orig_rax = u64::MAX;
        regs.eflags &= !(0x400 | 0x100); // DF (the ABI wants it clear) and TF.
        pt::set_regs(self.tid, &regs)?;
        self.state = State::Running;
        pt::cont(self.tid, 0).inspect_err(|e| self.note_gone(e))?;

        let outcome = self.wait_for_return(func, timeout);
        if self.state == State::Gone {
            return outcome;
        }
        if matches!(outcome, Err(PtraceError::Timeout { .. })) {
            // Abandon: stop the thread wherever it is in the function.
            self.restart_block_dirty = true;
            if let Err(e) = pt::interrupt(self.tid) {
                self.note_gone(&e);
                return Err(e);
            }
            match self.wait_for_stop_after_interrupt(func) {
                Ok(Some(result)) => {
                    // It finished just as we gave up.
                    self.restore_and_park()?;
                    return Ok(result);
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        self.restore_and_park()?;
        outcome
    }

    /// Remembers what a syscall resumed through restart_syscall really is.
    fn note_restart(&self) {
        let (nr, rax) = (self.saved.orig_rax as i64, self.saved.rax as i64);
        if nr < 0 || -rax != ERESTART_RESTARTBLOCK {
            return;
        }
        let r = &self.saved;
        let key = (self.pid, self.tid, r.rip, r.rsp, [r.rdi, r.rsi, r.rdx]);
        let mut list = RESTARTS.lock().unwrap_or_else(|e| e.into_inner());
        let original = if nr == NR_RESTART_SYSCALL {
            // Interrupted again: keep what it was the first time.
            match list.iter().find(|(k, _)| *k == key) {
                Some(&(_, first)) => first,
                None => return,
            }
        } else {
            nr
        };
        list.retain(|(k, _)| *k != key);
        if list.len() >= 256 {
            list.remove(0);
        }
        list.push((key, original));
    }

    /// Gives up on a thread that does not stop: [`reap_orphans`] finishes
    /// the job when it does.
    fn orphan(&mut self, restore: bool) {
        let restore = restore.then(|| (self.saved, self.xstate.clone()));
        ORPHANS.with(|o| {
            o.borrow_mut().push(Orphan {
                tid: self.tid,
                restore,
            })
        });
        self.state = State::Detached;
    }

    fn note_gone(&mut self, e: &PtraceError) {
        if e.is_gone() {
            self.state = State::Gone;
        }
    }

    /// Waits for the SIGSEGV at rip 0 that ends a call.
    fn wait_for_return(&mut self, func: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = pt::wait(
                self.tid,
                left,
                &format!("the remote call to {func:#x} to return"),
            )
            .inspect_err(|e| self.note_gone(e))?;
            match status {
                WaitStatus::Exited(_) | WaitStatus::Killed(_) => {
                    self.state = State::Gone;
                    return Err(PtraceError::Gone { tid: self.tid });
                }
                WaitStatus::Stopped {
                    sig: libc::SIGSEGV,
                    event: 0,
                } => {
                    self.state = State::Stopped;
                    let regs = pt::get_regs(self.tid).inspect_err(|e| self.note_gone(e))?;
                    if regs.rip == 0 {
                        return Ok(regs.rax);
                    }
                    return Err(PtraceError::UnexpectedStop {
                        tid: self.tid,
                        detail: format!(
                            "SIGSEGV at {:#x} inside the called function {func:#x} (fault suppressed, thread restored)",
                            regs.rip
                        ),
                    });
                }
                WaitStatus::Stopped { sig, event } => {
                    // A signal for the target (queued again at detach), a
                    // leftover interrupt, or a group stop: carry on.
                    self.restart_block_dirty = true;
                    if event == 0 {
                        self.record_signal(sig);
                    }
                    pt::cont(self.tid, 0).inspect_err(|e| self.note_gone(e))?;
                }
            }
        }
    }

    /// After PTRACE_INTERRUPT of a call in flight: the next stop. Some(rax)
    /// if the call happened to return first.
    fn wait_for_stop_after_interrupt(&mut self, func: u64) -> Result<Option<u64>> {
        let status = match pt::wait(
            self.tid,
            SETTLE,
            &format!("the thread to stop inside the call to {func:#x}"),
        ) {
            Ok(s) => s,
            Err(e) => {
                self.note_gone(&e);
                if !e.is_gone() {
                    // Still running our code: restore and detach it when it stops.
                    self.orphan(true);
                }
                return Err(e);
            }
        };
        match status {
            WaitStatus::Exited(_) | WaitStatus::Killed(_) => {
                self.state = State::Gone;
                Err(PtraceError::Gone { tid: self.tid })
            }
            WaitStatus::Stopped {
                sig: libc::SIGSEGV,
                event: 0,
            } => {
                self.state = State::Stopped;
                let regs = pt::get_regs(self.tid)?;
                Ok((regs.rip == 0).then_some(regs.rax))
            }
            WaitStatus::Stopped { sig, event } => {
                self.state = State::Stopped;
                if event == 0 {
                    self.record_signal(sig);
                }
                Ok(None)
            }
        }
    }

    /// Puts the original registers and extended state back and leaves the
    /// thread in a PTRACE_EVENT_STOP rather than a signal-delivery-stop (from
    /// which an unexpected detach would deliver the SIGSEGV).
    fn restore_and_park(&mut self) -> Result<()> {
        self.restore()?;
        pt::interrupt(self.tid).inspect_err(|e| self.note_gone(e))?;
        self.state = State::Running;
        pt::cont(self.tid, 0).inspect_err(|e| self.note_gone(e))?;
        self.wait_for_event_stop(SETTLE, "the thread to stop again after the call")
    }

    fn restore(&mut self) -> Result<()> {
        let mut regs = self.saved;
        if self.restart_block_dirty
            && -(regs.rax as i64) == ERESTART_RESTARTBLOCK
            && (regs.orig_rax as i64) >= 0
        {
            // The restart block may now describe a syscall of our call.
            regs.rax = (-libc::EINTR) as i64 as u64;
            regs.orig_rax = u64::MAX;
            self.saved = regs;
        }
        pt::set_regs(self.tid, &regs).inspect_err(|e| self.note_gone(e))?;
        if !self.xstate.is_empty() {
            pt::set_xstate(self.tid, &self.xstate).inspect_err(|e| self.note_gone(e))?;
        }
        Ok(())
    }

    /// Restores the thread exactly as it was, queues the signals that came
    /// meanwhile, and lets it go.
    pub fn detach(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        match self.state {
            State::Detached | State::Gone => return Ok(()),
            State::Running => {
                // Should not happen outside a failed wait: stop it first.
                let _ = pt::interrupt(self.tid);
                if let Err(e) =
                    self.wait_for_event_stop(SETTLE, "the thread to stop before detaching")
                {
                    if !e.is_gone() && self.state == State::Running {
                        self.orphan(!self.xstate.is_empty());
                    }
                    if self.state != State::Stopped {
                        return Err(e);
                    }
                }
            }
            State::Stopped => {}
        }
        let restored = if self.xstate.is_empty() {
            Ok(())
        } else {
            self.restore()
        };
        if restored.is_ok() && !self.xstate.is_empty() {
            self.note_restart();
        }
        // Queued while stopped, delivered as soon as the thread runs untraced.
        for &sig in &self.signals {
            let _ = pt::tgkill(self.pid, self.tid, sig);
        }
        let detached = pt::detach(self.tid, 0);
        self.state = State::Detached;
        restored.and(detached)
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl Drop for Tracee {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
impl Tracee {
    pub fn seize(_pid: u32, _tid: u32, _timeout: Duration) -> Result<Tracee> {
        Err(pt::unsupported_arch())
    }
    pub fn call(&mut self, _func: u64, _args: &[u64], _timeout: Duration) -> Result<u64> {
        Err(pt::unsupported_arch())
    }
    pub fn detach(self) -> Result<()> {
        Err(pt::unsupported_arch())
    }
}
