use super::signals::SignalBlock;
use super::*;

fn blocked(sig: i32) -> bool {
    // SAFETY: sigset_t is plain data; pthread_sigmask only writes `cur`.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, sig) == 1
    }
}

#[test]
fn signal_block_nests_and_restores() {
    assert!(!signals_blocked() && !blocked(libc::SIGINT));
    let a = SignalBlock::new();
    let b = SignalBlock::new();
    assert!(signals_blocked() && blocked(libc::SIGINT) && blocked(libc::SIGTERM));
    drop(a);
    assert!(blocked(libc::SIGINT), "still one holder");
    drop(b);
    assert!(!signals_blocked() && !blocked(libc::SIGINT) && !blocked(libc::SIGQUIT));
}
