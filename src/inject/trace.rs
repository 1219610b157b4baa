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

/// CLOCK_MONOTONIC in seconds: what `time.monotonic()` says in the target
/// (Linux has one such clock for all processes).
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// One note (nothing unless tracing is on).
pub fn trace(args: std::fmt::Arguments) {
    if let Some(t0) = start() {
        eprintln!(
            "memsleuth inject [{:.3} ms]: {args}",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Notes for the timestamps `[[label, time.monotonic()], ...]` the agent
/// took in the target (sent when tracing is on), on the same time scale as
/// [`trace`]'s.
pub fn trace_target_marks(marks: &serde_json::Value) {
    let (Some(t0), Some(marks)) = (start(), marks.as_array()) else {
        return;
    };
    let mono_t0 = monotonic() - t0.elapsed().as_secs_f64();
    for m in marks {
        if let (Some(label), Some(at)) = (
            m.get(0).and_then(|v| v.as_str()),
            m.get(1).and_then(|v| v.as_f64()),
        ) {
            eprintln!(
                "memsleuth inject [{:.3} ms]:     (in the target) {}",
                (at - mono_t0) * 1e3,
                // From the target: no control characters, bounded.
                label
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(80)
                    .collect::<String>()
            );
        }
    }
}
