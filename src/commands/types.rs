//! `memsleuth types`: a census of the live Python objects, by type.
//!
//! One `census` request to the agent (see `src/agent/plugins/census.py`):
//! it streams arrays of ids, type ids and sizes in chunks (each chunk ends
//! with a socket write, which releases the GIL); [`CensusBuilder`]
//! deduplicates and aggregates them as they arrive. The JSON report times
//! each phase: attach, census (of which the tool's own aggregation), detach,
//! and the whole command.
//!
//! By default the census is read from outside instead (`heap::read`: the
//! target's memory copied while its threads are paused for milliseconds,
//! decoded by memsleuth), and from a core file with `--core`; the JSON
//! says which in `source` ("memory" or "agent").

use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::readonly::Target;
use super::{CmdResult, Out};
use crate::agent::{Session, SessionError};
use crate::analysis::census::{AgentStats, Census, CensusBuilder, RowKind};
use crate::cli::{SortBy, TypesArgs};
use crate::heap::read::{CensusRead, ReadCost, ReadOptions, read_census};
use crate::heap::source::Source;
use crate::render::census::{TypesContext, types_view};

/// What to ask the agent for.
#[derive(Debug, Clone, Copy, Default)]
pub struct CensusRequest {
    pub gc_only: bool,
    pub collect: bool,
    /// Keep every object's id per type (growth's new objects), and have
    /// ints and floats fingerprinted by value.
    pub keep_ids: bool,
    /// Have the agent call id() per object instead of reading the ids out
    /// of its lists (the fallback where /proc/self/mem cannot be read; for
    /// tests).
    pub ids_by_call: bool,
}

/// Runs one census in the session; returns it and the request's wall time.
pub fn take_census(session: &mut Session, req: CensusRequest) -> anyhow::Result<(Census, f64)> {
    let started = Instant::now();
    let mut builder = CensusBuilder::new(req.keep_ids);
    let resp = session.request_chunked(
        "census",
        json!({
            "gc_only": req.gc_only,
            "collect": req.collect,
            "fingerprint": req.keep_ids,
            "mem_reads": !req.ids_by_call,
        }),
        &mut |frame| {
            builder
                .feed(&frame.header, &frame.payload)
                .map_err(|e| SessionError::BadMessage(e.to_string()))
        },
    )?;
    if !resp.ok {
        let err = resp.error.unwrap_or_default();
        anyhow::bail!("the census failed in the target: {err}");
    }
    let census = builder.finish(&resp.result)?;
    Ok((census, started.elapsed().as_secs_f64()))
}

/// "3.12.1" from the agent's hello.
pub fn python_version(session: &Session) -> String {
    let v = &session.hello.version_info;
    format!("{}.{}.{}", v.major, v.minor, v.micro)
}

/// VmRSS in bytes, if it can be read.
pub fn rss(pid: u32) -> Option<u64> {
    crate::process::Process::open(pid)
        .ok()?
        .status()
        .ok()
        .map(|s| s.vm_rss)
}

#[derive(Serialize)]
struct TypesReport<'a> {
    schema: u32,
    pid: u32,
    python: String,
    /// "memory" (read from outside) or "agent".
    source: &'static str,
    /// The core file read, with --core.
    #[serde(skip_serializing_if = "Option::is_none")]
    core: Option<String>,
    /// What reading from outside cost (source "memory").
    #[serde(skip_serializing_if = "Option::is_none")]
    read: Option<&'a ReadCost>,
    mode: &'static str,
    collect: bool,
    attach_s: f64,
    census_s: f64,
    /// Of census_s, the time memsleuth spent aggregating what came.
    aggregate_s: f64,
    detach_s: f64,
    /// The whole command, from start to report.
    total_s: f64,
    /// Time the session made the target spend in our Python code.
    gil_s: f64,
    /// The longest the census held the GIL without a break.
    max_gil_hold_s: f64,
    rss_bytes: Option<u64>,
    total: Totals,
    types_total: usize,
    types: Vec<TypeJson<'a>>,
    agent: &'a AgentStats,
}

#[derive(Serialize)]
struct Totals {
    count: u64,
    size: u64,
    tracked: u64,
    untracked: u64,
}

#[derive(Serialize)]
struct TypeJson<'a> {
    name: &'a str,
    kind: RowKind,
    module: Option<&'a str>,
    qualname: &'a str,
    count: u64,
    tracked: u64,
    size: u64,
    count_share: f64,
    size_share: f64,
    classes: u64,
}

struct Taken {
    census: Census,
    census_s: f64,
    attach_s: f64,
    detach_s: f64,
    gil_s: f64,
    python: String,
    rss: Option<u64>,
    pid: u32,
    /// From outside: its cost, and the core file if any.
    read: Option<(ReadCost, Option<String>)>,
}

pub fn run(args: &TypesArgs) -> CmdResult {
    let started = Instant::now();
    let opts = ReadOptions {
        pause: true,
        gc_only: args.gc_only,
        keep_ids: false,
    };
    let taken = match super::readonly::target(&args.target)? {
        Target::Core(source) => from_outside(read_census(&source, &opts)?, source.core_name()),
        Target::Live(pid) => {
            let outside = super::readonly::from_memory(&args.target.read, args.collect, |pause| {
                read_census(&Source::Live { pid, pause }, &opts)
            })?;
            match outside {
                Some(r) => from_outside(r, None),
                None => by_agent(args, pid)?,
            }
        }
    };
    print(args, &taken, started)
}

/// A census read from outside; `core`: the core file it came from.
fn from_outside(r: CensusRead, core: Option<String>) -> Taken {
    Taken {
        census_s: r.cost.total_s,
        attach_s: 0.0,
        detach_s: 0.0,
        gil_s: 0.0,
        python: r.python,
        rss: if core.is_none() { rss(r.pid) } else { None },
        pid: r.pid,
        census: r.census,
        read: Some((r.cost, core)),
    }
}

/// The census taken by the agent inside the target.
fn by_agent(args: &TypesArgs, pid: u32) -> anyhow::Result<Taken> {
    let req = CensusRequest {
        gc_only: args.gc_only,
        collect: args.collect,
        keep_ids: false,
        ids_by_call: false,
    };
    let (mut taken, detach_s) =
        super::with_session_timed(&args.target.attach.with_pid(pid), |attached| {
            let (census, census_s) = take_census(&mut attached.session, req)?;
            Ok(Taken {
                census,
                census_s,
                attach_s: attached.attach_s,
                detach_s: 0.0,
                gil_s: attached.session.gil_total_s,
                python: python_version(&attached.session),
                rss: rss(pid),
                pid,
                read: None,
            })
        })?;
    taken.detach_s = detach_s;
    Ok(taken)
}

fn print(args: &TypesArgs, taken: &Taken, started: Instant) -> CmdResult {
    let pid = taken.pid;
    let detach_s = taken.detach_s;
    let c = &taken.census;
    let by_count = args.sort == SortBy::Count;
    let mut out = Out::new();
    if args.json {
        let rows = c.sorted_rows(by_count);
        let shown = if args.limit == 0 {
            rows.len()
        } else {
            args.limit.min(rows.len())
        };
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let report = TypesReport {
            schema: 1,
            pid,
            python: taken.python.clone(),
            source: if taken.read.is_some() {
                "memory"
            } else {
                "agent"
            },
            core: taken.read.as_ref().and_then(|(_, core)| core.clone()),
            read: taken.read.as_ref().map(|(cost, _)| cost),
            mode: if c.gc_only { "gc_only" } else { "complete" },
            collect: args.collect,
            attach_s: taken.attach_s,
            census_s: taken.census_s,
            aggregate_s: c.feed_s,
            detach_s,
            total_s: started.elapsed().as_secs_f64(),
            gil_s: taken.gil_s,
            max_gil_hold_s: c.stats.max_hold_s,
            rss_bytes: taken.rss,
            total: Totals {
                count: c.count,
                size: c.size,
                tracked: c.tracked,
                untracked: c.untracked,
            },
            types_total: rows.len(),
            types: rows[..shown]
                .iter()
                .map(|r| TypeJson {
                    name: &r.name,
                    kind: r.kind,
                    module: r.module.as_deref(),
                    qualname: &r.qualname,
                    count: r.count,
                    tracked: r.tracked,
                    size: r.size,
                    count_share: share(r.count, c.count),
                    size_share: share(r.size, c.size),
                    classes: r.classes,
                })
                .collect(),
            agent: &c.stats,
        };
        out.json(&report, false)?;
    } else {
        let ctx = TypesContext {
            pid,
            python: taken.python.clone(),
            rss: taken.rss,
            limit: args.limit,
            by_count,
            census_s: taken.census_s,
            read: taken.read.as_ref().map(|(cost, _)| cost.clone()),
            core: taken.read.as_ref().and_then(|(_, core)| core.clone()),
        };
        out.text(&types_view(c, &ctx))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
