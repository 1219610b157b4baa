//! `memsleuth gc`: the garbage collector's state and `gc.garbage`, read
//! twice `--interval` apart (what moves tells whether anything collects),
//! and with `--collect` a collection and what it freed.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::readonly::Target;
use super::{CmdResult, Out};
use crate::agent::Session;
use crate::analysis::gcstate::{self, CollectRaw, CollectReport, GcBasics, GcStateRaw, Meta};
use crate::cli::GcArgs;
use crate::heap::source::Source;
use crate::process::Process;

/// Runs one of the plugin ops and decodes its result; an exception in the
/// target becomes an error naming the op. Used by `gc`, `native` and
/// `tracemalloc`.
pub(crate) fn call<T: DeserializeOwned>(
    session: &mut Session,
    op: &str,
    params: Value,
) -> anyhow::Result<T> {
    call_chunked(session, op, params, &mut |_| Ok(()))
}

/// [`call`] for ops that stream chunks before their answer.
pub(crate) fn call_chunked<T: DeserializeOwned>(
    session: &mut Session,
    op: &str,
    params: Value,
    on_chunk: &mut dyn FnMut(crate::agent::protocol::Frame) -> crate::agent::session::Result<()>,
) -> anyhow::Result<T> {
    let resp = session.request_chunked(op, params, on_chunk)?;
    if !resp.ok {
        let err = resp.error.unwrap_or_default();
        anyhow::bail!(
            "`{op}` failed in the target: {}: {}",
            err.type_name,
            err.message
        );
    }
    serde_json::from_value(resp.result)
        .map_err(|e| anyhow::anyhow!("unexpected answer to `{op}` from the agent: {e}"))
}

/// The interpreter's version from the agent's hello.
pub(crate) fn version(session: &Session) -> (u32, u32, u32) {
    let v = &session.hello.version_info;
    (v.major, v.minor, v.micro)
}

/// VmRSS and RssAnon now, in bytes.
pub(crate) fn rss(proc: &Process) -> anyhow::Result<(u64, u64)> {
    let st = proc.status()?;
    Ok((st.vm_rss, st.rss_anon))
}

pub fn run(args: &GcArgs) -> CmdResult {
    let interval = Duration::from_secs_f64(args.interval);
    let t = &args.target;
    let report = match super::readonly::target(t)? {
        Target::Core(source) => super::gc_outside::report(&source, args.limit, interval)?,
        Target::Live(pid) => {
            let outside = super::readonly::from_memory(&t.read, args.collect, |pause| {
                super::gc_outside::report(&Source::Live { pid, pause }, args.limit, interval)
            })?;
            match outside {
                Some(r) => r,
                None => {
                    let proc = super::open(pid)?;
                    super::with_session(&t.attach.with_pid(pid), |attached| {
                        read_report(attached, &proc, args.limit, interval, args.collect)
                    })?
                }
            }
        }
    };
    let mut out = Out::new();
    if args.json {
        out.json(&report, false)?;
    } else {
        out.text(&crate::render::gcstate::gc(&report))?;
    }
    out.flush()?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Reads the collector's state twice, `interval` apart (and collects when
/// asked), and builds the report with its findings. Also used by
/// `memsleuth view`'s gc panel.
pub(crate) fn read_report(
    attached: &mut crate::inject::attach::Attached,
    proc: &Process,
    limit: usize,
    interval: Duration,
    collect: bool,
) -> anyhow::Result<gcstate::GcReport> {
    let session = &mut attached.session;
    let first: GcStateRaw = call(session, "gc_state", json!({"type_limit": limit}))?;
    // The second read is a separate, tiny request: sleeping here, not in
    // the target, keeps the time we hold its GIL honest.
    let t = Instant::now();
    std::thread::sleep(interval);
    let second: GcBasics = call(session, "gc_sample", Value::Null)?;
    let interval_s = if second.time > first.basics.time && first.basics.time > 0.0 {
        second.time - first.basics.time
    } else {
        t.elapsed().as_secs_f64()
    };
    let collect = if collect {
        let (rss_before, _) = rss(proc)?;
        let raw: CollectRaw = call(session, "gc_collect", json!({"type_limit": 15}))?;
        let (rss_after, _) = rss(proc)?;
        Some(CollectReport {
            returned: raw.returned,
            seconds: raw.seconds,
            objects_before: raw.objects_before,
            objects_after: raw.objects_after,
            garbage_before: raw.garbage_before,
            garbage_after: raw.garbage_after,
            rss_before,
            rss_after,
            freed: raw.freed,
        })
    } else {
        None
    };
    let meta = Meta {
        pid: attached.pid,
        version: version(session),
        attach_s: attached.attach_s,
        gil_s: attached.session.gil_total_s,
    };
    Ok(gcstate::build_report(
        &meta, first, &second, interval_s, collect,
    ))
}
