//! `memsleuth native`: the allocators' view (glibc malloc via mallinfo2,
//! pymalloc via sys._debugmallocstats) and, with `--probe`, the three-point
//! probe: RSS as-is → after gc.collect() → after malloc_trim(0), read from
//! /proc between the steps.
//!
//! `sys._debugmallocstats()` prints to the C-level stderr, so the agent
//! points fd 2 at a private memfd (or unlinked temp file) for that one call
//! and restores it at once. Anything another thread writes to fd 2 during
//! those microseconds to milliseconds lands in our capture instead of the
//! target's stderr (and the parser skips it). `--probe` runs gc.collect()
//! and malloc_trim(0) in the target: both are interventions the user asked
//! for (a collection pause; malloc's lock held while trimming).

use serde_json::{Value, json};

use super::gc::{call, rss, version};
use super::{CmdResult, Out};
use crate::analysis::allocator::{
    self, NativeRaw, NativeReport, ProbeStep, RssNow, TrimRaw, parse_debugmallocstats,
};
use crate::analysis::gcstate::CollectRaw;
use crate::cli::NativeArgs;

pub fn run(args: &NativeArgs) -> CmdResult {
    let proc = super::open(args.attach.pid)?;
    let report = super::with_session(&args.attach, |attached| {
        let session = &mut attached.session;
        let (major, minor, micro) = version(session);
        let raw: NativeRaw = call(session, "native_state", json!({}))?;
        let pymalloc = raw
            .debugmallocstats
            .as_deref()
            .and_then(parse_debugmallocstats);
        let pymalloc_note = allocator::pymalloc_note(&raw, (major, minor));
        let st = proc.status()?;
        let rss_now = RssNow {
            vm_rss: st.vm_rss,
            rss_anon: st.rss_anon,
            rss_file: st.rss_file,
            vm_hwm: st.vm_hwm,
        };
        let other_allocator = proc
            .read_string("maps")
            .ok()
            .and_then(|m| allocator::other_allocator(&m));
        let mallinfo_note = if raw.mallinfo.is_some() {
            None
        } else if let Some(e) = &raw.libc_error {
            Some(format!("cannot reach the C library through ctypes: {e}"))
        } else {
            Some("this C library has no mallinfo2/mallinfo (not glibc?)".to_string())
        };
        let probe = if args.probe {
            let (r0, a0) = rss(&proc)?;
            let collect: CollectRaw = call(session, "gc_collect", json!({"type_limit": 5}))?;
            let (r1, a1) = rss(&proc)?;
            let trim: TrimRaw = call(session, "native_trim", Value::Null)?;
            let (r2, a2) = rss(&proc)?;
            let d = |a: u64, b: u64| crate::render::units::delta(a, b);
            let steps = vec![
                ProbeStep {
                    step: "as-is".into(),
                    rss: r0,
                    rss_anon: a0,
                    returned: 0,
                    seconds: 0.0,
                },
                ProbeStep {
                    step: "gc.collect()".into(),
                    rss: r1,
                    rss_anon: a1,
                    returned: d(r0, r1),
                    seconds: collect.seconds,
                },
                ProbeStep {
                    step: "malloc_trim(0)".into(),
                    rss: r2,
                    rss_anon: a2,
                    returned: d(r1, r2),
                    seconds: trim.seconds,
                },
            ];
            Some(allocator::probe_report(
                steps,
                collect.returned,
                &trim,
                raw.mallinfo.as_ref(),
                pymalloc.as_ref(),
            ))
        } else {
            None
        };
        Ok(NativeReport {
            schema: 1,
            pid: args.attach.pid,
            python: format!("{major}.{minor}.{micro}"),
            attach_s: attached.attach_s,
            gil_s: attached.session.gil_total_s,
            rss: rss_now,
            glibc_version: raw.glibc_version,
            mallinfo: raw.mallinfo,
            mallinfo_note,
            malloc_trim_available: raw.malloc_trim,
            other_allocator,
            pymalloc,
            pymalloc_note,
            allocated_blocks: raw.allocated_blocks,
            env: raw.env,
            ctypes_loaded_now: raw.ctypes_loaded_now,
            probe,
        })
    })?;
    let mut out = Out::new();
    if args.json {
        out.json(&report, false)?;
    } else {
        out.text(&crate::render::allocator::native(&report))?;
    }
    out.flush()?;
    Ok(std::process::ExitCode::SUCCESS)
}
