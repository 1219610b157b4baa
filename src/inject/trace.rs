//! Progress notes with timestamps on stderr when `MEMSLEUTH_TRACE_INJECT` is
//! set (debugging and measuring attach). Times are from the first note.
//! Used by the whole attach path: preflight, injection, session, detach.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Option<Instant> {
    static ON: OnceLock<Option<Instant>> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("MEMSLEUTH_TRACE_INJECT").map(|_| Instant::now()))
}

/// Whether tracing is on.
pub fn enabled() -> bool {
    start().is_some()
}

/// One note (nothing unless tracing is on).
pub fn trace(args: std::fmt::Arguments) {
    if let Some(t0) = start() {
        // CLOCK_MONOTONIC too: the target's time.monotonic() on Linux, to
        // line up with timestamps taken inside the target.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        eprintln!(
            "memsleuth inject [{:.3} ms, monotonic {:.3} s]: {args}",
            t0.elapsed().as_secs_f64() * 1e3,
            ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
        );
    }
}
