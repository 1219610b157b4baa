//! `memsleuth growth`: repeated censuses in one session, and which types
//! keep growing (objgraph's `show_growth` + `get_new_ids`, over time).
//!
//! Each census keeps every object's id per type; the ids of the first and
//! the latest census are kept, so that for the top growers we can ask the
//! agent (`census_reprs`) for short reprs of objects that are alive now and
//! were not there at the start. It never runs `gc.collect()` unless
//! `--collect` is given.
//!
//! By default the censuses are read from outside (`heap::read`, no code
//! in the target); then there are no sample reprs (they need the
//! interpreter), and the JSON's `source` is "memory".

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::types::{CensusRequest, python_version, rss, take_census};
use super::{CmdResult, Out};
use crate::agent::Session;
use crate::analysis::census::{
    Census, GrowthRow, MONOTONIC_THRESHOLD, NewObject, growth_rows, new_ids,
};
use crate::cli::GrowthArgs;
use crate::heap::read::{CensusRead, ReadCost, ReadOptions, read_census_pid};
use crate::render::census::{GrowthContext, growth_view};

/// How many top growers get sample reprs, and how many each.
const SAMPLED_TYPES: usize = 3;
const SAMPLES_PER_TYPE: usize = 3;
/// Cap on each repr, characters.
const REPR_CAP: usize = 200;

#[derive(Serialize)]
struct SampleJson {
    t_s: f64,
    count: u64,
    size: u64,
    tracked: u64,
    rss_bytes: Option<u64>,
    census_s: f64,
    /// Of census_s, the time memsleuth spent aggregating what came.
    aggregate_s: f64,
    max_gil_hold_s: f64,
    /// Source "memory": how long the target was paused for this census.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_s: Option<f64>,
}

#[derive(Serialize)]
struct GrowthReport<'a> {
    schema: u32,
    pid: u32,
    python: &'a str,
    /// "memory" (read from outside) or "agent".
    source: &'static str,
    mode: &'static str,
    collect: bool,
    interval_s: f64,
    attach_s: f64,
    detach_s: f64,
    /// The whole command, from start to report.
    total_s: f64,
    gil_s: f64,
    max_gil_hold_s: f64,
    score_threshold: f64,
    samples: Vec<SampleJson>,
    top_grower: Option<&'a str>,
    types_total: usize,
    types: &'a [GrowthRow],
}

struct Taken {
    censuses: Vec<Census>,
    times: Vec<f64>,
    census_s: Vec<f64>,
    rss: Vec<Option<u64>>,
    rows: Vec<GrowthRow>,
    attach_s: f64,
    gil_s: f64,
    max_hold_s: f64,
    python: String,
    detach_s: f64,
    /// From outside: each census's cost.
    reads: Vec<ReadCost>,
}

/// Censuses taken `interval` apart from `start` by `take`, which returns
/// the census, its wall time and, from outside, its cost.
struct Series {
    censuses: Vec<Census>,
    times: Vec<f64>,
    census_s: Vec<f64>,
    rss: Vec<Option<u64>>,
    max_hold_s: f64,
    reads: Vec<ReadCost>,
}

fn series(
    args: &GrowthArgs,
    start: Instant,
    mut take: impl FnMut(usize) -> anyhow::Result<(Census, f64, Option<ReadCost>)>,
) -> anyhow::Result<Series> {
    let samples = args.samples.max(2) as usize;
    let pid = args.attach.pid;
    let mut s = Series {
        censuses: Vec::with_capacity(samples),
        times: Vec::with_capacity(samples),
        census_s: Vec::with_capacity(samples),
        rss: Vec::with_capacity(samples),
        max_hold_s: 0.0,
        reads: Vec::new(),
    };
    for i in 0..samples {
        if i > 0 {
            let due = Duration::from_secs_f64(args.interval * i as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let t = start.elapsed().as_secs_f64();
        let (c, secs, cost) = take(i)?;
        s.max_hold_s = s.max_hold_s.max(c.stats.max_hold_s);
        s.times.push(t);
        s.census_s.push(secs);
        s.rss.push(rss(pid));
        s.reads.extend(cost);
        // Only the first and the latest census keep their ids.
        if s.censuses.len() >= 2
            && let Some(prev) = s.censuses.last_mut()
        {
            prev.ids = None;
        }
        s.censuses.push(c);
    }
    Ok(s)
}

/// Asks the agent for short reprs of the given (id, acceptable type ids).
/// Ids (with their acceptable type ids) of up to `per_type` objects of each
/// of the first `types` steady growers that are new since `first`, and the
/// row each belongs to.
pub(crate) fn new_object_requests(
    rows: &[GrowthRow],
    first: &Census,
    last: &Census,
    types: usize,
    per_type: usize,
) -> (Vec<(u64, Vec<u64>)>, Vec<usize>) {
    let mut wanted = Vec::new();
    let mut owner = Vec::new();
    for (ri, r) in rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.monotonic)
        .take(types)
    {
        for id in new_ids(first, last, &r.name, per_type) {
            wanted.push((id, r.object_tids.clone()));
            owner.push(ri);
        }
    }
    (wanted, owner)
}

/// Files the reprs the agent found under the rows they were asked for.
pub(crate) fn file_new_objects(
    rows: &mut [GrowthRow],
    wanted: &[(u64, Vec<u64>)],
    owner: &[usize],
    found: Vec<NewObject>,
) {
    for (i, obj) in found.into_iter().enumerate() {
        if let Some(ri) = wanted
            .iter()
            .position(|(id, _)| *id == obj.id)
            .map(|k| owner[k])
            .or_else(|| owner.get(i).copied())
            && let Some(row) = rows.get_mut(ri)
        {
            row.new_objects.push(obj);
        }
    }
}

pub(crate) fn reprs(
    session: &mut Session,
    wanted: &[(u64, Vec<u64>)],
    gc_only: bool,
) -> anyhow::Result<(Vec<NewObject>, f64)> {
    if wanted.is_empty() {
        return Ok((Vec::new(), 0.0));
    }
    let ids: Vec<Value> = wanted.iter().map(|(id, tids)| json!([id, tids])).collect();
    let resp = session.request(
        "census_reprs",
        json!({"ids": ids, "cap": REPR_CAP, "gc_only": gc_only}),
    )?;
    if !resp.ok {
        anyhow::bail!(
            "census_reprs failed in the target: {}",
            resp.error.unwrap_or_default()
        );
    }
    let hold = resp
        .result
        .get("max_hold_s")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let list: Vec<NewObject> = serde_json::from_value(
        resp.result
            .get("reprs")
            .cloned()
            .unwrap_or(Value::Array(Vec::new())),
    )?;
    Ok((list, hold))
}

pub fn run(args: &GrowthArgs) -> CmdResult {
    let started = Instant::now();
    let pid = args.attach.pid;
    let opts = ReadOptions {
        pause: !args.read.nonblocking,
        gc_only: args.gc_only,
        keep_ids: true,
    };
    // The first census decides how all are taken.
    let first = super::readonly::from_memory(&args.read, args.collect, |pause| {
        read_census_pid(pid, &ReadOptions { pause, ..opts })
    })?;
    let taken = match first {
        Some(first) => by_memory(args, started, first, opts)?,
        None => by_agent(args)?,
    };
    print(args, &taken, started)
}

/// Every census read from outside; no sample reprs (they need the agent).
fn by_memory(
    args: &GrowthArgs,
    start: Instant,
    first: CensusRead,
    opts: ReadOptions,
) -> anyhow::Result<Taken> {
    let pid = args.attach.pid;
    let python = first.python.clone();
    let mut first = Some(first);
    let s = series(args, start, |_| {
        let r = match first.take() {
            Some(r) => r,
            None => read_census_pid(pid, &opts)?,
        };
        Ok((r.census, r.cost.total_s, Some(r.cost)))
    })?;
    let mut censuses = s.censuses;
    let rows = {
        let refs: Vec<&Census> = censuses.iter().collect();
        growth_rows(&refs)
    };
    for c in &mut censuses {
        c.ids = None;
    }
    Ok(Taken {
        censuses,
        times: s.times,
        census_s: s.census_s,
        rss: s.rss,
        rows,
        attach_s: 0.0,
        gil_s: 0.0,
        max_hold_s: 0.0,
        python,
        detach_s: 0.0,
        reads: s.reads,
    })
}

/// Every census taken by the agent, and reprs of the top growers' new
/// objects.
fn by_agent(args: &GrowthArgs) -> anyhow::Result<Taken> {
    let req = CensusRequest {
        gc_only: args.gc_only,
        collect: args.collect,
        keep_ids: true,
        ids_by_call: false,
    };
    let (mut taken, detach_s) = super::with_session_timed(&args.attach, |attached| {
        let start = Instant::now();
        let s = series(args, start, |_| {
            let (c, secs) = take_census(&mut attached.session, req)?;
            Ok((c, secs, None))
        })?;
        let session = &mut attached.session;
        let mut censuses = s.censuses;
        let mut max_hold_s = s.max_hold_s;
        let mut rows = {
            let refs: Vec<&Census> = censuses.iter().collect();
            growth_rows(&refs)
        };
        // Sample new objects of the top steady growers.
        let first = &censuses[0];
        let last = &censuses[censuses.len() - 1];
        let (wanted, owner) =
            new_object_requests(&rows, first, last, SAMPLED_TYPES, SAMPLES_PER_TYPE);
        let (found, hold) = reprs(session, &wanted, args.gc_only)?;
        max_hold_s = max_hold_s.max(hold);
        file_new_objects(&mut rows, &wanted, &owner, found);
        for c in &mut censuses {
            c.ids = None;
        }
        Ok(Taken {
            censuses,
            times: s.times,
            census_s: s.census_s,
            rss: s.rss,
            rows,
            attach_s: attached.attach_s,
            gil_s: attached.session.gil_total_s,
            max_hold_s,
            python: python_version(&attached.session),
            detach_s: 0.0,
            reads: Vec::new(),
        })
    })?;
    taken.detach_s = detach_s;
    Ok(taken)
}

fn print(args: &GrowthArgs, taken: &Taken, started: Instant) -> CmdResult {
    let pid = args.attach.pid;
    let detach_s = taken.detach_s;
    let from_memory = !taken.reads.is_empty();
    let top = taken.rows.first().filter(|r| r.monotonic);
    let shown = if args.limit == 0 {
        taken.rows.len()
    } else {
        args.limit.min(taken.rows.len())
    };
    let mut out = Out::new();
    if args.json {
        let report = GrowthReport {
            schema: 1,
            pid,
            python: &taken.python,
            source: if from_memory { "memory" } else { "agent" },
            mode: if args.gc_only { "gc_only" } else { "complete" },
            collect: args.collect,
            interval_s: args.interval,
            attach_s: taken.attach_s,
            detach_s,
            total_s: started.elapsed().as_secs_f64(),
            gil_s: taken.gil_s,
            max_gil_hold_s: taken.max_hold_s,
            score_threshold: MONOTONIC_THRESHOLD,
            samples: taken
                .censuses
                .iter()
                .enumerate()
                .map(|(i, c)| SampleJson {
                    t_s: taken.times[i],
                    count: c.count,
                    size: c.size,
                    tracked: c.tracked,
                    rss_bytes: taken.rss[i],
                    census_s: taken.census_s[i],
                    aggregate_s: c.feed_s,
                    max_gil_hold_s: c.stats.max_hold_s,
                    paused_s: taken.reads.get(i).map(|r| r.paused_s),
                })
                .collect(),
            top_grower: top.map(|r| r.name.as_str()),
            types_total: taken.rows.len(),
            types: &taken.rows[..shown],
        };
        out.json(&report, false)?;
    } else {
        let ctx = GrowthContext {
            pid,
            python: taken.python.clone(),
            interval_s: args.interval,
            times: taken.times.clone(),
            counts: taken.censuses.iter().map(|c| c.count).collect(),
            sizes: taken.censuses.iter().map(|c| c.size).collect(),
            rss: taken.rss.iter().flatten().copied().collect(),
            gc_only: args.gc_only,
            collect: args.collect,
            limit: args.limit,
            max_hold_s: taken.max_hold_s,
            reads: taken.reads.clone(),
        };
        out.text(&growth_view(&taken.rows, &ctx))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
