//! Keeping memsleuth alive while it holds a thread: the terminating signals
//! are blocked while any [`Tracee`](super::Tracee) lives.

use std::cell::Cell;
use std::marker::PhantomData;

thread_local! {
    static BLOCK_DEPTH: Cell<u32> = const { Cell::new(0) };
    static OLD_MASK: Cell<Option<libc::sigset_t>> = const { Cell::new(None) };
}

/// Blocks the signals that would kill memsleuth (Ctrl-C, kill, hangup) in
/// this thread while a guard lives; nested guards share one mask.
pub(super) struct SignalBlock {
    _not_send: PhantomData<*const ()>,
}

impl SignalBlock {
    pub(super) fn new() -> SignalBlock {
        BLOCK_DEPTH.with(|d| {
            if d.get() == 0 {
                // SAFETY: sigset_t is plain data; the libc calls only
                // read/write the sets passed.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    let mut old: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                        libc::sigaddset(&mut set, sig);
                    }
                    if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) == 0 {
                        OLD_MASK.with(|m| m.set(Some(old)));
                    }
                }
            }
            d.set(d.get() + 1);
        });
        SignalBlock {
            _not_send: PhantomData,
        }
    }
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        BLOCK_DEPTH.with(|d| {
            d.set(d.get().saturating_sub(1));
            if d.get() == 0
                && let Some(old) = OLD_MASK.with(|m| m.take())
            {
                // SAFETY: restores the mask saved above.
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            }
        });
    }
}

/// Whether memsleuth currently blocks its terminating signals (for tests).
pub fn signals_blocked() -> bool {
    BLOCK_DEPTH.with(|d| d.get() > 0)
}

pub(super) fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSTOP => "SIGSTOP".into(),
        libc::SIGTSTP => "SIGTSTP".into(),
        libc::SIGTTIN => "SIGTTIN".into(),
        libc::SIGTTOU => "SIGTTOU".into(),
        _ => format!("signal {sig}"),
    }
}
