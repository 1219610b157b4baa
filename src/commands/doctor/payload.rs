//! Sampled new instances of the growing types: their short reprs (for the
//! report) and, when the censuses counted gc-tracked objects only, the
//! untracked payload each holds alone (the str, bytes, bytearray and int a
//! frame, instance or container keeps) — what a gc-only census misses and
//! the findings' rates need. One `census_reprs` request does both.

use serde_json::{Value, json};

use super::observe::{REPR_TYPES, REPRS_PER_TYPE};
use crate::agent::Session;
use crate::analysis::census::{Census, GrowthRow, NewObject};
use crate::analysis::doctor::Payload;
use crate::commands::growth::{file_new_objects, new_object_requests};

/// Growing types sampled for their payload...
const PAYLOAD_TYPES: usize = 8;
/// ...and instances per type.
const PAYLOAD_PER_TYPE: usize = 6;
/// Characters of each repr.
const REPR_CAP: usize = 200;

#[derive(serde::Deserialize)]
struct Found {
    id: u64,
    #[serde(default)]
    repr: Option<String>,
    #[serde(default)]
    payload: Option<u64>,
}

/// Files reprs under `rows` and returns the payload per sampled type.
pub(super) fn sample(
    s: &mut Session,
    rows: &mut [GrowthRow],
    first: &Census,
    last: &Census,
    gc_only: bool,
) -> anyhow::Result<Vec<Payload>> {
    let (types, per_type) = if gc_only {
        (
            PAYLOAD_TYPES.max(REPR_TYPES),
            PAYLOAD_PER_TYPE.max(REPRS_PER_TYPE),
        )
    } else {
        (REPR_TYPES, REPRS_PER_TYPE)
    };
    let (wanted, owner) = new_object_requests(rows, first, last, types, per_type);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Value> = wanted.iter().map(|(id, tids)| json!([id, tids])).collect();
    let resp = s.request(
        "census_reprs",
        json!({"ids": ids, "cap": REPR_CAP, "gc_only": gc_only, "payload": gc_only}),
    )?;
    if !resp.ok {
        anyhow::bail!(
            "census_reprs failed in the target: {}",
            resp.error.unwrap_or_default()
        );
    }
    let found: Vec<Found> = serde_json::from_value(
        resp.result
            .get("reprs")
            .cloned()
            .unwrap_or(Value::Array(Vec::new())),
    )
    .unwrap_or_default();
    // Rows in the order they were asked for: the first REPR_TYPES get
    // up to REPRS_PER_TYPE reprs in the report.
    let mut order: Vec<usize> = Vec::new();
    for o in &owner {
        if !order.contains(o) {
            order.push(*o);
        }
    }
    let mut per_row: std::collections::BTreeMap<usize, (u64, usize)> = Default::default();
    let mut shown: std::collections::BTreeMap<usize, usize> = Default::default();
    let mut kept_wanted = Vec::new();
    let mut kept_owner = Vec::new();
    let mut kept = Vec::new();
    for f in found.into_iter().take(wanted.len()) {
        let Some(k) = wanted.iter().position(|(id, _)| *id == f.id) else {
            continue;
        };
        let row = owner[k];
        if f.repr.is_none() {
            continue; // gone by the time we asked
        }
        if let Some(p) = f.payload {
            let e = per_row.entry(row).or_default();
            e.0 = e.0.saturating_add(p);
            e.1 += 1;
        }
        let rank = order.iter().position(|r| *r == row).unwrap_or(usize::MAX);
        let n = shown.entry(row).or_default();
        if rank < REPR_TYPES && *n < REPRS_PER_TYPE {
            *n += 1;
            kept_wanted.push(wanted[k].clone());
            kept_owner.push(row);
            kept.push(NewObject {
                id: f.id,
                repr: f.repr,
            });
        }
    }
    file_new_objects(rows, &kept_wanted, &kept_owner, kept);
    Ok(per_row
        .into_iter()
        .filter_map(|(row, (bytes, n))| {
            let r = rows.get(row)?;
            (n > 0).then(|| Payload {
                type_name: r.name.clone(),
                per_object: bytes as f64 / n as f64,
                sampled: n,
            })
        })
        .collect())
}
