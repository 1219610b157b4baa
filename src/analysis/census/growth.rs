//! Growth over several censuses: per-type series, how steadily each grew,
//! and which objects are new.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Census, RowKind};

/// Score at or above which a type counts as growing monotonically.
pub const MONOTONIC_THRESHOLD: f64 = 0.8;

/// How steadily a count grew, from the counts alone, in [0, 1]: the
/// fraction of intervals in which it grew, times its consistency (net growth
/// over the total absolute change, so ups and downs cancel). 1.0: it grew in
/// every interval and never shrank; churn (up, down, up) and one-off steps
/// score low. Types that did not grow overall score 0.
pub fn growth_score(counts: &[u64]) -> f64 {
    if counts.len() < 2 {
        return 0.0;
    }
    let intervals = (counts.len() - 1) as f64;
    let mut grew = 0u64;
    let mut total_abs: u128 = 0;
    for w in counts.windows(2) {
        if w[1] > w[0] {
            grew += 1;
        }
        total_abs += u128::from(w[1].abs_diff(w[0]));
    }
    let first = counts[0];
    let last = counts[counts.len() - 1];
    if last <= first || total_abs == 0 {
        return 0.0;
    }
    let net = u128::from(last - first) as f64;
    (grew as f64 / intervals) * (net / total_abs as f64)
}

/// The share of the objects born between the first and the last census
/// that are still there: net growth / born, in [0, 1] (1 when unknown).
/// A leak keeps everything it makes (1.0); a bounded structure filling up
/// or a churning type that drifts upwards replaces objects as it goes, so
/// most of what it made is gone again.
pub fn retention(net: i64, born: Option<u64>) -> f64 {
    match born {
        Some(b) if b > 0 => (net.max(0) as f64 / b as f64).min(1.0),
        _ => 1.0,
    }
}

/// One type across the censuses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrowthRow {
    pub name: String,
    pub kind: RowKind,
    pub module: Option<String>,
    pub counts: Vec<u64>,
    pub sizes: Vec<u64>,
    /// Count change per interval.
    pub deltas: Vec<i64>,
    pub delta_count: i64,
    pub delta_size: i64,
    /// Objects present in the last census and not in the first (by id), and
    /// the other way round; None when ids were not kept.
    pub born: Option<u64>,
    pub died: Option<u64>,
    /// growth_score(counts) x retention(delta_count, born).
    pub score: f64,
    /// score >= MONOTONIC_THRESHOLD.
    pub monotonic: bool,
    /// Sample reprs of objects that are new since the first census.
    pub new_objects: Vec<NewObject>,
    #[serde(skip)]
    pub builtin: bool,
    /// Acceptable type ids of its objects (for repr lookups).
    #[serde(skip)]
    pub object_tids: Vec<u64>,
}

/// A sampled new object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewObject {
    pub id: u64,
    /// None when the object was gone by the time we asked.
    pub repr: Option<String>,
}

fn signed(a: u64, b: u64) -> i64 {
    (i128::from(b) - i128::from(a)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Per-type series over `censuses` (oldest first), only types whose count
/// or size changed, with births and deaths from the first and last
/// censuses' ids when they kept them. See [`growth_rows_with`].
pub fn growth_rows(censuses: &[&Census]) -> Vec<GrowthRow> {
    match (censuses.first(), censuses.last()) {
        (Some(a), Some(b)) if censuses.len() >= 2 => {
            growth_rows_with(censuses, |name| turnover(a, b, name))
        }
        _ => growth_rows_with(censuses, |_| None),
    }
}

/// [`growth_rows`] with births and deaths per name from `turnover`. Order:
/// monotonic growers first (user-defined types before builtins: a class's
/// growth usually explains the str/dict/list growth that comes with it),
/// then by size growth; then the other changes by size change.
pub fn growth_rows_with(
    censuses: &[&Census],
    turnover: impl Fn(&str) -> Option<(u64, u64)>,
) -> Vec<GrowthRow> {
    let n = censuses.len();
    let mut by_name: BTreeMap<&str, GrowthRow> = BTreeMap::new();
    for (i, c) in censuses.iter().enumerate() {
        for r in &c.rows {
            let g = by_name.entry(r.name.as_str()).or_insert_with(|| GrowthRow {
                name: r.name.clone(),
                kind: r.kind,
                module: r.module.clone(),
                counts: vec![0; n],
                sizes: vec![0; n],
                deltas: Vec::new(),
                delta_count: 0,
                delta_size: 0,
                born: None,
                died: None,
                score: 0.0,
                monotonic: false,
                new_objects: Vec::new(),
                builtin: r.is_builtin(),
                object_tids: Vec::new(),
            });
            g.counts[i] = r.count;
            g.sizes[i] = r.size;
            let tids: &[u64] = match r.kind {
                RowKind::Type => &r.tids,
                RowKind::DictOf => std::slice::from_ref(&c.dict_tid),
            };
            for t in tids {
                if !g.object_tids.contains(t) {
                    g.object_tids.push(*t);
                }
            }
        }
    }
    let mut rows: Vec<GrowthRow> = by_name
        .into_values()
        .filter_map(|mut g| {
            g.deltas = g.counts.windows(2).map(|w| signed(w[0], w[1])).collect();
            g.delta_count = signed(g.counts[0], g.counts[n - 1]);
            g.delta_size = signed(g.sizes[0], g.sizes[n - 1]);
            if let Some((born, died)) = turnover(&g.name) {
                g.born = Some(born);
                g.died = Some(died);
            }
            g.score = growth_score(&g.counts) * retention(g.delta_count, g.born);
            g.monotonic = g.score >= MONOTONIC_THRESHOLD;
            let changed =
                g.deltas.iter().any(|d| *d != 0) || g.sizes.windows(2).any(|w| w[0] != w[1]);
            changed.then_some(g)
        })
        .collect();
    rows.sort_by(|a, b| {
        b.monotonic
            .cmp(&a.monotonic)
            .then_with(|| {
                if a.monotonic {
                    a.builtin.cmp(&b.builtin)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| {
                if a.monotonic {
                    b.delta_size.cmp(&a.delta_size)
                } else {
                    b.delta_size
                        .unsigned_abs()
                        .cmp(&a.delta_size.unsigned_abs())
                }
            })
            .then_with(|| b.delta_count.cmp(&a.delta_count))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// (born, died) for row `name` between two censuses that kept their ids:
/// objects whose id is only in `last`, and only in `first`. (An address
/// reused by a new object of the same type counts as neither.)
pub fn turnover(first: &Census, last: &Census, name: &str) -> Option<(u64, u64)> {
    let a = first.ids.as_ref()?.get(name).map_or(&[][..], Vec::as_slice);
    let b = last.ids.as_ref()?.get(name).map_or(&[][..], Vec::as_slice);
    let (mut i, mut j, mut born, mut died) = (0, 0, 0u64, 0u64);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                died += 1;
                i += 1;
            }
            (Some(_), None) => {
                died += 1;
                i += 1;
            }
            _ => {
                born += 1;
                j += 1;
            }
        }
    }
    Some((born, died))
}

/// Up to `k` ids present in `last` but not in `first` for row `name`, spread
/// over the new ones (ids are sorted, so these come from different parts of
/// the heap).
pub fn new_ids(first: &Census, last: &Census, name: &str, k: usize) -> Vec<u64> {
    let empty = Vec::new();
    let (Some(a), Some(b)) = (first.ids.as_ref(), last.ids.as_ref()) else {
        return Vec::new();
    };
    let before = a.get(name).unwrap_or(&empty);
    let now = b.get(name).unwrap_or(&empty);
    let fresh: Vec<u64> = now
        .iter()
        .copied()
        .filter(|id| id >> 63 == 0 && before.binary_search(id).is_err())
        .collect();
    if fresh.len() <= k {
        return fresh;
    }
    (0..k).map(|i| fresh[i * fresh.len() / k]).collect()
}
