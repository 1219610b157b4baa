//! `memsleuth growth`: repeated censuses in one session, and which types
//! keep growing (objgraph's `show_growth` + `get_new_ids`, over time).
//!
//! Each census keeps every object's id per type; the ids of the first and
//! the latest census are kept, so that for the top growers we can ask the
//! agent (`census_reprs`) for short reprs of objects that are alive now and
//! were not there at the start. It never runs `gc.collect()` unless
//! `--collect` is given.

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
}

#[derive(Serialize)]
struct GrowthReport<'a> {
    schema: u32,
    pid: u32,
    python: &'a str,
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
    let req = CensusRequest {
        gc_only: args.gc_only,
        collect: args.collect,
        keep_ids: true,
        ids_by_call: false,
    };
    let samples = args.samples.max(2) as usize;
    let (taken, detach_s) = super::with_session_timed(&args.attach, |attached| {
        let session = &mut attached.session;
        let start = Instant::now();
        let mut censuses: Vec<Census> = Vec::with_capacity(samples);
        let mut times = Vec::with_capacity(samples);
        let mut census_s = Vec::with_capacity(samples);
        let mut rsses = Vec::with_capacity(samples);
        let mut max_hold_s: f64 = 0.0;
        for i in 0..samples {
            if i > 0 {
                let due = Duration::from_secs_f64(args.interval * i as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let t = start.elapsed().as_secs_f64();
            let (c, secs) = take_census(session, req)?;
            max_hold_s = max_hold_s.max(c.stats.max_hold_s);
            times.push(t);
            census_s.push(secs);
            rsses.push(rss(pid));
            // Only the first and the latest census keep their ids.
            if censuses.len() >= 2
                && let Some(prev) = censuses.last_mut()
            {
                prev.ids = None;
            }
            censuses.push(c);
        }
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
            times,
            census_s,
            rss: rsses,
            rows,
            attach_s: attached.attach_s,
            gil_s: attached.session.gil_total_s,
            max_hold_s,
            python: python_version(&attached.session),
        })
    })?;

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
        };
        out.text(&growth_view(&taken.rows, &ctx))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
