//! The Python side: which types grow, which of them are another finding's
//! handles, and the garbage, collector and live-object findings.

use super::evidence::*;
use super::{
    Finding, Kind, MIN_GARBAGE, MIN_OBJECT_BYTES, MIN_TYPE_OBJECTS, Payload, PythonSide, secs,
};
use crate::analysis::census::{GrowthRow, growth_score, retention};
use crate::analysis::classify::trend;
use crate::analysis::refgraph::PathStatus;
use crate::units;

use super::footprint::{self, Allocator};

/// An estimate in bytes as a whole number (saturating, never negative).
fn whole(v: f64) -> i64 {
    if v.is_finite() && v > 0.0 {
        v.min(i64::MAX as f64) as i64
    } else {
        0
    }
}

/// A type whose count (or bytes) rose steadily, and whether a finding has
/// claimed it.
struct Growing {
    g: TypeGrowth,
    taken: bool,
}

/// Growing types and who claimed them.
pub struct Ledger {
    growing: Vec<Growing>,
    pub times: Vec<f64>,
    /// Census span, seconds.
    pub span: f64,
    /// The censuses counted gc-tracked objects only.
    pub gc_only: bool,
}

/// Least growth_score (share of steps that rose × net over total movement)
/// of a growing type.
const MIN_CONSISTENCY: f64 = 0.5;

/// Bytes rise that makes a type growing even when its count is flat (one
/// list, dict or bytearray that keeps getting bigger).
const MIN_TYPE_BYTES_ONLY: u64 = 64 * 1024;

/// How costs are counted: the interpreter's allocator and census mode.
struct Costing {
    alloc: Allocator,
    version: (u32, u32, u32),
    gc_only: bool,
}

fn growth_of(
    row: &GrowthRow,
    times: &[f64],
    payload: Option<&Payload>,
    costing: &Costing,
) -> Option<TypeGrowth> {
    let n = times.len().min(row.counts.len()).min(row.sizes.len());
    if n < 2 {
        return None;
    }
    let counts: Vec<(f64, u64)> = (0..n).map(|i| (times[i], row.counts[i])).collect();
    let sizes: Vec<(f64, u64)> = (0..n).map(|i| (times[i], row.sizes[i])).collect();
    let by_count = trend::rising(&counts, MIN_TYPE_OBJECTS);
    let by_size = trend::rising(&sizes, MIN_TYPE_BYTES_ONLY);
    let (_, window) = by_count.or(by_size)?;
    // A bounded structure that refills replaces what it made: most of what
    // was born is gone again. A leak keeps it.
    let kept = retention(row.delta_count, row.born);
    if by_count.is_some() && kept < 0.5 {
        return None;
    }
    // Ups and downs that happen to end higher: net growth must be most of
    // the movement.
    if by_size.is_none() && growth_score(&row.counts[..n]) < MIN_CONSISTENCY {
        return None;
    }
    // Two censuses cannot show steadiness; demand that nearly all is kept.
    if n == 2 && !(row.born.is_some() && kept >= 0.9) && by_size.is_none() {
        return None;
    }
    let span = trend::span(times[0], times[n - 1]);
    let per_s = |d: i64| if span > 0.0 { d as f64 / span } else { 0.0 };
    let count_delta = row.counts[n - 1] as i64 - row.counts[0] as i64;
    let bytes_delta = row.sizes[n - 1] as i64 - row.sizes[0] as i64;
    let mean = match (row.counts[n - 1], count_delta) {
        (c, _) if c > 0 => row.sizes[n - 1] as f64 / c as f64,
        (_, d) if d > 0 => bytes_delta as f64 / d as f64,
        _ => 0.0,
    };
    let cost = footprint::cost(
        &costing.alloc,
        costing.version,
        mean,
        bytes_delta,
        count_delta,
        payload,
        costing.gc_only,
    );
    Some(TypeGrowth {
        name: row.name.clone(),
        module: row.module.clone(),
        builtin: row.builtin,
        counts: row.counts[..n].to_vec(),
        sizes: row.sizes[..n].to_vec(),
        count_delta,
        count_per_s: per_s(count_delta),
        bytes_delta,
        bytes_per_s: per_s(bytes_delta),
        score: row.score,
        steady: window.steady,
        samples: row
            .new_objects
            .iter()
            .filter_map(|o| o.repr.clone())
            .collect(),
        payload_bytes_delta: whole(cost.payload),
        payload_sampled: payload.map_or(0, |p| p.sampled),
        hidden_bytes_delta: whole(cost.hidden),
        footprint_bytes_delta: whole(cost.footprint),
    })
}

impl Ledger {
    pub fn new(py: Option<&PythonSide>) -> Ledger {
        let Some(py) = py else {
            return Ledger {
                growing: Vec::new(),
                times: Vec::new(),
                span: 0.0,
                gc_only: false,
            };
        };
        let times = py.census_times.clone();
        let span = match (times.first(), times.last()) {
            (Some(a), Some(b)) => trend::span(*a, *b),
            _ => 0.0,
        };
        let costing = Costing {
            alloc: Allocator::for_version(py.version),
            version: py.version,
            gc_only: py.gc_only,
        };
        let mut growing: Vec<Growing> = py
            .rows
            .iter()
            .filter_map(|r| {
                let p = py.payload.iter().find(|p| p.type_name == r.name);
                growth_of(r, &times, p, &costing)
            })
            .map(|g| Growing { g, taken: false })
            .collect();
        growing.sort_by_key(|t| std::cmp::Reverse(t.g.bytes_delta));
        Ledger {
            growing,
            times,
            span,
            gc_only: py.gc_only,
        }
    }

    /// Claims the unclaimed types `pick` accepts.
    fn take(&mut self, pick: impl Fn(&TypeGrowth) -> bool) -> Vec<TypeGrowth> {
        let mut out = Vec::new();
        for t in self.growing.iter_mut().filter(|t| !t.taken) {
            if pick(&t.g) {
                t.taken = true;
                out.push(t.g.clone());
            }
        }
        out
    }

    /// Claims builtin and standard-library types (modules in `modules`)
    /// that rose by at most `per_unit` objects per unit of a resource that
    /// rose by `units`: the resource's own Python handles.
    pub fn take_handles(&mut self, modules: &[&str], units: i64, per_unit: f64) -> Vec<TypeGrowth> {
        if units <= 0 {
            return Vec::new();
        }
        let cap = units as f64 * per_unit;
        self.take(|g| {
            let stdlib = g.builtin || g.module.as_deref().is_some_and(|m| modules.contains(&m));
            stdlib && g.count_delta > 0 && g.count_delta as f64 <= cap
        })
    }

    fn unclaimed(&self) -> impl Iterator<Item = &TypeGrowth> {
        self.growing.iter().filter(|t| !t.taken).map(|t| &t.g)
    }

    /// Getsizeof growth of every growing type, claimed or not.
    pub fn bytes_delta(&self) -> i64 {
        self.growing.iter().map(|t| t.g.bytes_delta.max(0)).sum()
    }

    /// Objects gained by the growing types.
    pub fn count_delta(&self) -> i64 {
        self.growing.iter().map(|t| t.g.count_delta.max(0)).sum()
    }

    /// Footprint growth per second of every growing type, claimed or not.
    pub fn footprint_rate(&self) -> f64 {
        self.over_span(self.growing.iter().map(|t| t.g.total_bytes_delta()).sum())
    }

    pub fn rate(&self, types: &[TypeGrowth]) -> f64 {
        self.over_span(types.iter().map(TypeGrowth::total_bytes_delta).sum())
    }

    /// `bytes` over the censuses' span, per second.
    fn over_span(&self, bytes: i64) -> f64 {
        if self.span > 0.0 {
            bytes as f64 / self.span
        } else {
            0.0
        }
    }

    /// Whether any census was taken at all.
    pub fn has_census(&self) -> bool {
        self.times.len() >= 2
    }
}

/// "a, b, c": the first three type names, for sentences.
fn first_names(types: &[TypeGrowth]) -> String {
    types
        .iter()
        .take(3)
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A count per second for sentences: "250/s", "0.4/s".
pub(crate) fn per_s(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}/s")
    } else {
        format!("{v:.1}/s")
    }
}

fn status_name(s: PathStatus) -> &'static str {
    match s {
        PathStatus::Rooted => "rooted",
        PathStatus::HeldFromC => "held_from_c",
        PathStatus::Unreachable => "unreachable",
        PathStatus::TooDeep => "too_deep",
        PathStatus::NotInGraph => "not_in_graph",
    }
}

/// Retainer groups of the `why` run, when it was about one of `types`.
fn retainers(py: &PythonSide, types: &[TypeGrowth]) -> (Vec<Retainer>, Option<String>) {
    let Some(w) = &py.why else {
        return (Vec::new(), None);
    };
    let subject = w.subject();
    let about = w.query.type_name.as_deref().unwrap_or("");
    if !types
        .iter()
        .any(|t| t.name == about || t.name == subject || w.matched_types.contains(&t.name))
    {
        return (Vec::new(), None);
    }
    let list = w
        .groups
        .iter()
        .take(5)
        .map(|g| Retainer {
            sentence: crate::analysis::refgraph::report::group_sentence(w, g),
            held_by: g.held_by.clone(),
            path: g.pattern.clone(),
            status: status_name(g.status).to_string(),
            samples: g.count,
            of: w.sampled,
        })
        .collect();
    (list, Some(subject))
}

/// The series of one gc counter.
fn gc_series<T: Copy>(
    py: &PythonSide,
    f: impl Fn(&crate::analysis::gcstate::GcBasics) -> T,
) -> (Vec<f64>, Vec<T>) {
    py.gc.iter().map(|(t, b)| (*t, f(b))).unzip()
}

/// `gc.garbage` grows: its types (and builtins in step with it) are claimed.
pub fn garbage(pid: u32, py: &PythonSide, ledger: &mut Ledger, out: &mut Vec<Finding>) {
    let (times, lens) = gc_series(py, |b| b.garbage_len);
    let points: Vec<(f64, u64)> = times.iter().copied().zip(lens.iter().copied()).collect();
    let Some((change, window)) = trend::rising(&points, MIN_GARBAGE) else {
        return;
    };
    let saveall = py.gc.iter().any(|(_, b)| b.saveall);
    let debug_flags = py
        .gc
        .last()
        .map(|(_, b)| b.debug_flags.clone())
        .unwrap_or_default();
    let major = py.version.0;
    let types: Vec<GarbageTypeEvidence> = py
        .garbage
        .as_ref()
        .map(|g| {
            g.by_type
                .iter()
                .take(20)
                .map(|t| GarbageTypeEvidence {
                    name: t.type_name.clone(),
                    count: t.count,
                    cause: crate::analysis::gcstate::garbage_reason(t, major, saveall)
                        .describe()
                        .to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<String> = types.iter().map(|t| t.name.clone()).collect();
    let mut growing = ledger.take(|g| {
        names
            .iter()
            .any(|n| *n == g.name || g.name == format!("dict of {n}"))
    });
    growing.extend(ledger.take_handles(&[], change.delta, 3.0));
    let mut rate = ledger.rate(&growing);
    if rate == 0.0 {
        // No census to weigh them: the smallest object is ~56 bytes.
        rate = change.rate_per_s.max(0.0) * 56.0;
    }
    let cause = if saveall {
        "gc.DEBUG_SAVEALL is set: every collected object is kept in gc.garbage".to_string()
    } else if let Some(t) = types.first() {
        t.cause.clone()
    } else {
        "objects the collector cannot free".to_string()
    };
    let what = if !names.is_empty() {
        names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    } else if !growing.is_empty() {
        first_names(&growing)
    } else {
        "objects".to_string()
    };
    let summary = format!(
        "gc.garbage grows by {} entries ({}): {what}; {cause}",
        per_s(change.rate_per_s),
        units::rate(rate)
    );
    let mut next = vec![format!("memsleuth gc {pid}")];
    if saveall {
        next.push(format!(
            "find the gc.set_debug(gc.DEBUG_SAVEALL) call (check now: memsleuth eval {pid} 'gc.get_debug()')"
        ));
    } else if let Some(n) = names.first() {
        next.push(format!("memsleuth why {pid} --type {n}"));
    }
    out.push(Finding {
        kind: Kind::UncollectableGarbage,
        summary,
        rate_bytes_per_s: rate,
        informational: false,
        steady: window.steady,
        evidence: Evidence::Garbage(GarbageEvidence {
            lengths: lens,
            times,
            growth: change.delta,
            per_s: change.rate_per_s,
            saveall,
            debug_flags,
            types,
            growing,
        }),
        next,
    });
}

/// The collector is off (or its threshold is 0) and the gen-0 count rises:
/// the growing types are cycles nothing frees — unless `why` finds their
/// instances rooted, which makes them live objects (then only a note).
pub fn gc_disabled(
    pid: u32,
    py: &PythonSide,
    ledger: &mut Ledger,
    out: &mut Vec<Finding>,
    notes: &mut Vec<String>,
) {
    let off = py
        .gc
        .iter()
        .any(|(_, b)| !b.enabled || b.thresholds.first() == Some(&0));
    if !off {
        return;
    }
    let (times, gen0) = gc_series(py, |b| b.count.first().copied().unwrap_or(0));
    let points: Vec<(f64, u64)> = times
        .iter()
        .copied()
        .zip(gen0.iter().map(|c| (*c).max(0) as u64))
        .collect();
    let rising = trend::rising(&points, 100);
    let candidates: Vec<TypeGrowth> = ledger.unclaimed().cloned().collect();
    let (rets, subject) = retainers(py, &candidates);
    let cycles_confirmed = subject.as_ref().and_then(|_| {
        let w = py.why.as_ref()?;
        let unreachable: usize = w
            .groups
            .iter()
            .filter(|g| g.status == PathStatus::Unreachable)
            .map(|g| g.count)
            .sum();
        (w.sampled > 0).then_some(unreachable * 2 > w.sampled)
    });
    let sentence =
        |s: &str| format!("The garbage collector is off (gc.disable() or threshold 0){s}.");
    let Some((change, window)) = rising else {
        notes.push(sentence(
            ": reference cycles are never freed, though none piled up while we watched",
        ));
        return;
    };
    // Without censuses, the gen-0 count is the evidence: with the
    // collector off it only counts tracked objects that were never freed.
    let blind = candidates.is_empty() && !ledger.has_census() && change.delta >= 1000;
    if (candidates.is_empty() && !blind) || cycles_confirmed == Some(false) {
        notes.push(sentence(&format!(
            ", and the gen-0 count rose by {}: reference cycles are never freed",
            change.delta
        )));
        return;
    }
    let growing = ledger.take(|_| true);
    let rate = if blind {
        // No census to weigh them: the smallest tracked object is ~64 bytes.
        change.rate_per_s.max(0.0) * 64.0
    } else {
        ledger.rate(&growing)
    };
    let what = if blind {
        format!("{} tracked objects (no census to name them)", change.delta)
    } else {
        first_names(&growing)
    };
    let summary = format!(
        "the garbage collector is off and reference cycles pile up: {what} grow by {} \
         (gen-0 count +{} in {})",
        units::rate(rate),
        change.delta,
        secs(window.seconds)
    );
    let mut next = vec![format!("memsleuth gc {pid}")];
    if let Some(t) = growing.first() {
        next.push(format!("memsleuth why {pid} --type {}", t.name));
    }
    next.push(
        "find the gc.disable() call; gc.enable() (or periodic gc.collect()) frees the cycles"
            .into(),
    );
    out.push(Finding {
        kind: Kind::GcDisabled,
        summary,
        rate_bytes_per_s: rate,
        informational: false,
        steady: window.steady,
        evidence: Evidence::GcDisabled(GcDisabledEvidence {
            enabled: py.gc.iter().map(|(_, b)| b.enabled).collect(),
            thresholds: py
                .gc
                .last()
                .map(|(_, b)| b.thresholds.clone())
                .unwrap_or_default(),
            gen0_counts: gen0,
            times,
            growing,
            cycles_confirmed,
            retainers: rets,
        }),
        next,
    });
}

/// What is still unclaimed: live Python objects kept by something.
pub fn python_objects(pid: u32, py: &PythonSide, ledger: &mut Ledger, out: &mut Vec<Finding>) {
    let left: Vec<TypeGrowth> = ledger.unclaimed().cloned().collect();
    let bytes: i64 = left.iter().map(|t| t.bytes_delta.max(0)).sum();
    if left.is_empty() || bytes < MIN_OBJECT_BYTES {
        return;
    }
    let mut types = ledger.take(|_| true);
    types.sort_by(|a, b| b.bytes_per_s.total_cmp(&a.bytes_per_s));
    let rate = ledger.rate(&types);
    // The headline type: a user-defined class explains the builtins that
    // come with it.
    let lead = types
        .iter()
        .filter(|t| !t.builtin && !t.name.starts_with("dict of "))
        .max_by(|a, b| a.bytes_per_s.total_cmp(&b.bytes_per_s))
        .or_else(|| types.first())
        .cloned();
    let Some(lead) = lead else { return };
    let (rets, rtype) = retainers(py, &types);
    let held = rets
        .iter()
        .find(|r| r.status == "rooted" && !r.held_by.is_empty())
        .map(|r| format!(", held by {}", r.held_by))
        .unwrap_or_default();
    let others = types.len() - 1;
    let summary = format!(
        "{} objects grow by {} ({} in {} growing {}){held}",
        lead.name,
        per_s(lead.count_per_s),
        units::rate(rate),
        types.len(),
        if others == 0 { "type" } else { "types" }
    );
    let steady = types.iter().any(|t| t.steady);
    let count_delta = types.iter().map(|t| t.count_delta).sum();
    let mut next = vec![format!("memsleuth why {pid} --type {}", lead.name)];
    next.push(format!(
        "memsleuth view {pid}   (browse instances and what holds them)"
    ));
    next.push(format!("memsleuth growth {pid} --interval 5 --samples 6"));
    out.push(Finding {
        kind: Kind::PythonObjects,
        summary,
        rate_bytes_per_s: rate,
        informational: false,
        steady,
        evidence: Evidence::Objects(ObjectsEvidence {
            types,
            count_delta,
            bytes_delta: bytes,
            census_times: ledger.times.clone(),
            retainers: rets,
            retainers_type: rtype,
        }),
        next,
    });
}

/// The type `why` should look at: the growing user-defined class with the
/// most bytes, else the growing type with the most bytes. Types that look
/// like a resource's handles are still candidates (the rules decide later).
pub fn why_candidate(py: &PythonSide) -> Option<String> {
    let ledger = Ledger::new(Some(py));
    let user = ledger
        .growing
        .iter()
        .map(|t| &t.g)
        .filter(|g| !g.builtin && !g.name.starts_with("dict of ") && g.count_delta > 0)
        .max_by(|a, b| a.bytes_delta.cmp(&b.bytes_delta));
    user.or_else(|| {
        ledger
            .growing
            .iter()
            .map(|t| &t.g)
            .filter(|g| g.count_delta > 0 && !g.name.starts_with("dict of "))
            .max_by(|a, b| a.bytes_delta.cmp(&b.bytes_delta))
    })
    .map(|g| g.name.clone())
}
