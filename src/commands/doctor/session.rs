//! The session part of doctor's observation: censuses on a GIL budget (or
//! from outside, see [`super::outside`]), gc and thread reads, and the
//! closing reads (what new objects hold, gc.garbage by type, the
//! allocators, the retainer walk). See [`super::observe`] for the budget.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::observe::{
    COMPLETE_FACTOR, Extras, GARBAGE_SCAN, GC_EVERY, GIL_SHARE, MAX_CENSUSES, Settings, WHY_DEPTH,
    WHY_SAMPLES, wait_until,
};
use crate::agent::{Session, SessionError};
use crate::analysis::census::{Census, CensusBuilder, growth_rows};
use crate::analysis::classify;
use crate::analysis::doctor::{
    AllocatorState, Observation, PythonSide, Skipped, ThreadInfo, why_candidate,
};
use crate::analysis::gcstate::{GcBasics, GcStateRaw};
use crate::commands::gc::call;
use crate::commands::types::{CensusRequest, take_census};
use crate::commands::why::collect as why_collect;
use crate::inject::attach::Attached;
use crate::process::Process;
use crate::process::sample::Sample;
use crate::render::why::Query as WhyQuery;

/// Runs `f` and books the session's GIL time it caused under `part`.
fn booked<T>(
    s: &mut Session,
    parts: &mut std::collections::BTreeMap<&'static str, f64>,
    part: &'static str,
    f: impl FnOnce(&mut Session) -> T,
) -> T {
    let before = s.gil_used_s;
    let out = f(s);
    *parts.entry(part).or_default() += (s.gil_used_s - before).max(0.0);
    out
}

/// The watch plugin's lean census of gc-tracked objects (same chunk
/// format as `census`, read by the same builder).
fn type_counts(s: &mut Session) -> anyhow::Result<Census> {
    let mut builder = CensusBuilder::new(true);
    let resp = s.request_chunked("type_counts", json!({}), &mut |frame| {
        builder
            .feed(&frame.header, &frame.payload)
            .map_err(|e| SessionError::BadMessage(e.to_string()))
    })?;
    if !resp.ok {
        anyhow::bail!(
            "`type_counts` failed in the target: {}",
            resp.error.unwrap_or_default()
        );
    }
    Ok(builder.finish(&resp.result)?)
}

fn version_of(s: &Session) -> (u32, u32, u32) {
    let v = &s.hello.version_info;
    (v.major, v.minor, v.micro)
}

fn threads(s: &mut Session) -> anyhow::Result<Vec<ThreadInfo>> {
    let v: Value = call(s, "threads", json!({"frames": 12}))?;
    Ok(
        serde_json::from_value(v.get("threads").cloned().unwrap_or(Value::Null))
            .unwrap_or_default(),
    )
}

/// The session part of the observation.
#[allow(clippy::too_many_arguments)]
pub(super) fn watch(
    attached: &mut Attached,
    proc: &Process,
    t0: Instant,
    end: Instant,
    settings: &Settings,
    samples: &Mutex<Vec<Sample>>,
    done: &AtomicUsize,
    obs: &mut Observation,
    extras: &mut Extras,
    outside: Option<&mut super::outside::Outside>,
) -> anyhow::Result<()> {
    let duration = settings.duration;
    let mut outside = outside;
    // Plan to 75% of the share: the parts that always run (the first
    // census, gc and thread reads) cannot be known in advance.
    let budget = duration * GIL_SHARE * 0.75;
    extras.method = Some(attached.method.to_string());
    extras.attach_s = attached.attach_s;
    let s = &mut attached.session;
    let version = version_of(s);
    extras.version = Some(format!("{}.{}.{}", version.0, version.1, version.2));
    let mut py = PythonSide {
        version,
        ..Default::default()
    };
    let since = |at: Instant| at.saturating_duration_since(t0).as_secs_f64();
    // The agent's start-up (compiling itself, its imports) is ours too.
    let started = if s.hello.gil_s.is_finite() {
        s.hello.gil_s.max(0.0)
    } else {
        0.0
    };
    extras.gil_parts.insert("attach", started);
    py.threads_first = booked(s, &mut extras.gil_parts, "threads", threads)?;
    let gc = |s: &mut Session, py: &mut PythonSide, extras: &mut Extras| -> anyhow::Result<()> {
        let t = since(Instant::now());
        let b: GcBasics = booked(s, &mut extras.gil_parts, "gc reads", |s| {
            call(s, "gc_sample", Value::Null)
        })?;
        py.gc.push((t, b));
        Ok(())
    };
    match outside.as_deref_mut().and_then(|o| o.gc()) {
        Some(b) => py.gc.push((since(Instant::now()), b)),
        None => gc(s, &mut py, extras)?,
    }

    // The GIL ledger: what each request kept the target in our code. For
    // censuses the agent's own hold total (the request's wall time also
    // counts waits for the GIL between chunks, when we did not hold it).
    let mut over = 0.0f64; // request time that was not a hold
    let spent = move |s: &Session, over: f64| (started + s.gil_used_s - over).max(0.0);

    // A large process may be large because its allocators keep freed
    // memory: keep room to read them at the end.
    let big = proc
        .status()
        .is_ok_and(|st| st.vm_rss >= crate::analysis::doctor::MIN_RETAINED);
    let mut req = CensusRequest {
        gc_only: true,
        collect: false,
        keep_ids: true,
        ids_by_call: false,
    };
    let (censuses, times, gc_cost, cost, reserve) = if let Some(o) = outside.as_deref_mut() {
        // From outside: censuses and the collector's counters cost the
        // target no GIL; the agent stays idle until the closing reads, and
        // then measures what new objects hold (see `Outside::gc_only`).
        o.gc_only = true;
        req.gc_only = true;
        extras.census_mode = "gc_only";
        py.gc_only = true;
        let (censuses, times) =
            super::outside::window(o, t0, end, done, &mut py, &mut |py| gc(s, py, extras))?;
        py.closing_t = since(Instant::now());
        match o.gc() {
            Some(b) => py.gc.push((py.closing_t, b)),
            None => gc(s, &mut py, extras)?,
        }
        // What a gc-only census would cost in the agent (for the budget of
        // the sampling and the retainer walk, which scan the heap as one
        // does): about 0.4 us per tracked object, measured here.
        let tracked = censuses.last().map_or(0, |c| c.tracked);
        let gc_cost = (tracked as f64 * 4e-7).max(1e-3);
        let reserve = 3.0 * gc_cost + 0.01 + if big { 0.03 } else { 0.0 };
        (censuses, times, gc_cost, gc_cost, reserve)
    } else {
        // The first census is gc-only (cheap), to learn what one costs here;
        // complete censuses (which also count str, int, ... through the tracked
        // objects' referents) take about COMPLETE_FACTOR times as long, so they are used
        // only when the budget has room for a whole series of them.
        let mut censuses: Vec<Census> = Vec::new();
        let mut times: Vec<f64> = Vec::new();
        let measure = |s: &mut Session,
                       req: CensusRequest,
                       over: &mut f64,
                       extras: &mut Extras|
         -> anyhow::Result<(Census, f64, f64)> {
            let before = s.gil_used_s;
            let t = since(Instant::now());
            let c = if req.gc_only {
                type_counts(s)?
            } else {
                take_census(s, req)?.0
            };
            let asked = s.gil_used_s - before;
            // The agent's census hold excludes its socket writes; the request's
            // CPU figure (when the agent could read one) excludes time off the
            // CPU too. Whichever is smaller.
            let cost = if c.stats.hold_total_s > 0.0 {
                c.stats.hold_total_s.min(asked)
            } else {
                asked
            };
            *over += (asked - cost).max(0.0);
            *extras.gil_parts.entry("censuses").or_default() += cost;
            Ok((c, t, cost.max(1e-4)))
        };
        let (c, t, gc_cost) = measure(s, req, &mut over, extras)?;
        let mut cost = gc_cost;
        extras.census_max_hold_s = c.stats.max_hold_s;
        censuses.push(c);
        times.push(t);
        done.store(1, Ordering::Relaxed);
        // What is left, after reserving the retainer walk (about three gc-only
        // censuses) and the closing reads.
        let reserve = 3.0 * gc_cost + 0.01 + if big { 0.03 } else { 0.0 };
        let room = |s: &Session, over: f64| budget - spent(s, over) - reserve;
        if room(s, over) >= (MAX_CENSUSES as f64) * COMPLETE_FACTOR * gc_cost {
            req.gc_only = false;
            let (c, t, c_cost) = measure(s, req, &mut over, extras)?;
            cost = c_cost;
            extras.census_mode = "complete";
            extras.census_max_hold_s = extras.census_max_hold_s.max(c.stats.max_hold_s);
            censuses.clear();
            times.clear();
            censuses.push(c);
            times.push(t);
        } else {
            extras.census_mode = "gc_only";
        }
        py.gc_only = req.gc_only;
        // From here on the agent's own memory (its code, the census arrays) is
        // in place: anonymous growth is judged from now.
        py.settled_t = since(Instant::now());
        let planned = ((room(s, over) / cost).floor().max(0.0) as usize).min(MAX_CENSUSES - 1);

        // Later censuses evenly spread to the end, gc counters every GC_EVERY
        // seconds throughout. A census that the budget no longer affords (the
        // heap may have grown) is skipped, but the last one is kept if possible:
        // the end point matters most.
        let first_t = t0 + Duration::from_secs_f64(*times.last().unwrap_or(&0.0));
        let tail = Duration::from_millis(300); // room for the closing requests
        let last_at = end.checked_sub(tail).unwrap_or(end).max(first_t);
        let span = last_at.saturating_duration_since(first_t);
        let census_at: Vec<Instant> = (1..=planned)
            .map(|k| first_t + span.mul_f64(k as f64 / planned as f64))
            .collect();
        let mut k = 0;
        let mut next_gc = Instant::now() + Duration::from_secs_f64(GC_EVERY);
        let mut skipped_censuses = 0;
        loop {
            let next_census = census_at.get(k).copied();
            let gc_due = next_gc < last_at && next_census.is_none_or(|c| next_gc < c);
            if gc_due {
                wait_until(next_gc);
                gc(s, &mut py, extras)?;
                next_gc += Duration::from_secs_f64(GC_EVERY);
                continue;
            }
            let Some(at) = next_census else { break };
            k += 1;
            // A heap that grows makes the next census dearer: extrapolate.
            let grown = match censuses.as_slice() {
                [.., a, b] if a.stats.listed > 0 => {
                    (b.stats.listed as f64 / a.stats.listed as f64).clamp(1.0, 4.0)
                }
                _ => 1.0,
            };
            let next = cost * grown;
            let left_after = (census_at.len() - k) as f64;
            if room(s, over) < next * (1.0 + left_after.min(1.0) * grown) && left_after > 0.0 {
                skipped_censuses += 1;
                continue;
            }
            if room(s, over) < next {
                skipped_censuses += 1;
                continue;
            }
            wait_until(at);
            let (c, t, c_cost) = measure(s, req, &mut over, extras)?;
            cost = cost.max(c_cost);
            extras.census_max_hold_s = extras.census_max_hold_s.max(c.stats.max_hold_s);
            // Only the first and the latest keep their ids.
            if censuses.len() >= 2
                && let Some(prev) = censuses.last_mut()
            {
                prev.ids = None;
            }
            censuses.push(c);
            times.push(t);
            done.store(censuses.len(), Ordering::Relaxed);
        }
        wait_until(last_at);
        // The closing reads (gc.garbage, threads, allocators, the reference
        // graph) allocate in the target: anonymous growth is judged before them.
        py.closing_t = since(Instant::now());
        gc(s, &mut py, extras)?;
        if censuses.len() < 2 {
            obs.skipped.push(Skipped {
                part: "censuses".into(),
                reason: format!(
                    "one census costs the target {cost:.3} s of GIL: a second one would take it past \
                     {:.0}% of the {duration:.0} s observation; watch longer (--duration)",
                    GIL_SHARE * 100.0
                ),
            });
        } else if skipped_censuses > 0 {
            obs.skipped.push(Skipped {
                part: format!("{skipped_censuses} of {planned} later censuses"),
                reason: format!(
                    "censuses grew dearer as the heap grew ({cost:.3} s of GIL each); skipped to stay \
                     under {:.0}% of the observation",
                    GIL_SHARE * 100.0
                ),
            });
        }
        (censuses, times, gc_cost, cost, reserve)
    };
    let room = |s: &Session, over: f64| budget - spent(s, over) - reserve;
    // Sampling new objects for what they hold (the rates need it) scans
    // the heap about as a census does: it may use the retainer walk's
    // reserve (the walk is then skipped, and the report says so).
    let sample_reserve = 3.0 * gc_cost;

    let py_first_listed = censuses.first().map_or(0, |c| c.stats.listed);
    let py_last_listed = censuses.last().map_or(0, |c| c.stats.listed);
    let refs: Vec<&Census> = censuses.iter().collect();
    let mut rows = growth_rows(&refs);
    // Reprs of new objects of the top steady growers, what they hold alone
    // that gc-only censuses miss, and their managed dict values (3.11+).
    if let (Some(first), Some(last)) = (censuses.first(), censuses.last())
        && censuses.len() >= 2
    {
        if room(s, over) + sample_reserve >= cost {
            py.payload = booked(s, &mut extras.gil_parts, "reprs", |s| {
                super::payload::sample(s, &mut rows, first, last, req.gc_only)
            })?;
        } else {
            obs.skipped.push(Skipped {
                part: "what new objects hold".into(),
                reason: format!(
                    "sampling new objects would take the target past {:.0}% of the observation \
                     in our code: the rates are estimated from the {} objects' own sizes (rounded \
                     as the allocator does), without what they hold alone",
                    GIL_SHARE * 100.0,
                    if req.gc_only { "gc-tracked" } else { "counted" }
                ),
            });
        }
    }
    py.census_bytes = censuses.iter().map(|c| c.size).collect();
    py.heap = censuses.last().map(crate::analysis::doctor::HeapTotals::of);
    py.census_times = times;
    py.rows = rows;
    drop(censuses);

    // gc.garbage by type: only when there is garbage to explain, and the
    // scan (about a microsecond per entry) fits.
    let garbage = py.gc.last().map_or(0, |(_, b)| b.garbage_len);
    // From outside: names and counts. Python 2's causes (a class with
    // `__del__`) need the interpreter, unless DEBUG_SAVEALL explains all.
    let saveall = py.gc.iter().any(|(_, b)| b.saveall);
    let from_memory = match outside.as_mut() {
        Some(o) if garbage > 0 && (saveall || version.0 >= 3) => o.garbage(),
        _ => None,
    };
    if from_memory.is_some() {
        py.garbage = from_memory;
    } else if garbage > 0 {
        let scan = garbage.min(GARBAGE_SCAN);
        if room(s, over) + reserve >= 0.005 + scan as f64 * 2e-6 {
            let last_gc: GcStateRaw = booked(s, &mut extras.gil_parts, "gc.garbage", |s| {
                call(
                    s,
                    "gc_state",
                    json!({"type_limit": 20, "scan": GARBAGE_SCAN, "count_objects": false}),
                )
            })?;
            py.garbage = Some(last_gc.garbage);
        } else {
            obs.skipped.push(Skipped {
                part: "gc.garbage by type".into(),
                reason: format!(
                    "scanning {garbage} entries would take the target past {:.0}% of the \
                     observation in our code; run `memsleuth gc {}`",
                    GIL_SHARE * 100.0,
                    obs.pid
                ),
            });
        }
    }
    py.threads_last = booked(s, &mut extras.gil_parts, "threads", threads)?;

    // The allocators' figures only when they can matter: anonymous growth
    // to attribute, or a large process to explain. (Reading them loads
    // ctypes into the target.)
    let settled = py.settled_t;
    let so_far: Vec<Sample> = samples
        .lock()
        .map(|v| v.iter().filter(|x| x.t >= settled).cloned().collect())
        .unwrap_or_default();
    let anon = classify::classify(&so_far)
        .iter()
        .any(|g| matches!(g, classify::Signal::AnonGrowth { .. }));
    let rss = proc.status().map(|st| st.vm_rss).unwrap_or(0);
    // Reading them imports ctypes and runs sys._debugmallocstats(): a few
    // tens of ms, within the budget only.
    let native_cost = 0.03f64.max(cost);
    let affordable = budget - spent(s, over) >= native_cost;
    if (anon || rss >= crate::analysis::doctor::MIN_RETAINED) && !affordable {
        obs.skipped.push(Skipped {
            part: "allocator figures".into(),
            reason: format!(
                "reading them would take the target past {:.0}% of the observation in our \
                 code; run `memsleuth native {}`",
                GIL_SHARE * 100.0,
                obs.pid
            ),
        });
    } else if anon || rss >= crate::analysis::doctor::MIN_RETAINED {
        let raw: crate::analysis::allocator::NativeRaw =
            booked(s, &mut extras.gil_parts, "allocators", |s| {
                call(s, "native_state", json!({}))
            })?;
        py.allocator = Some(AllocatorState {
            pymalloc: raw
                .debugmallocstats
                .as_deref()
                .and_then(crate::analysis::allocator::parse_debugmallocstats),
            mallinfo: raw.mallinfo,
        });
    }

    // Why the top grower is alive, if the budget allows.
    if let Some(ty) = why_candidate(&py) {
        // The graph walk costs about three gc-only censuses of the heap as
        // it is now (whatever mode the censuses ran in).
        let grown = match (py_first_listed, py_last_listed) {
            (a, b) if a > 0 => (b as f64 / a as f64).clamp(1.0, 10.0),
            _ => 1.0,
        };
        if budget - spent(s, over) >= 3.0 * gc_cost * grown {
            let q = WhyQuery {
                type_name: Some(ty),
                id: None,
                samples: WHY_SAMPLES,
                depth: WHY_DEPTH,
            };
            let before = attached.session.gil_used_s;
            let walked = why_collect(attached, &q);
            *extras.gil_parts.entry("retainer paths").or_default() +=
                (attached.session.gil_used_s - before).max(0.0);
            match walked {
                Ok(w) => py.why = Some(w),
                Err(e) => obs.skipped.push(Skipped {
                    part: "retainer paths".into(),
                    reason: crate::commands::error_sentence(&e),
                }),
            }
        } else {
            obs.skipped.push(Skipped {
                part: "retainer paths".into(),
                reason: format!(
                    "walking the reference graph would take the target past {:.0}% of the \
                     observation in our code; run `memsleuth why {} --type {}`",
                    GIL_SHARE * 100.0,
                    obs.pid,
                    ty
                ),
            });
        }
    }
    let s = &mut attached.session;
    if settings.allow_collect {
        extras.collect = Some(booked(s, &mut extras.gil_parts, "gc.collect", |s| {
            call(s, "gc_collect", json!({"type_limit": 10}))
        })?);
    }
    extras.why = py.why.clone();
    extras.gil_s = spent(&attached.session, over);
    obs.python = Some(py);
    Ok(())
}
