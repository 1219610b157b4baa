//! Sampled new instances of the growing types: their short reprs (for the
//! report), what each holds alone that a gc-only census does not count
//! (the str, bytes, bytearray and int a frame, instance or container
//! keeps), and on 3.11+ how many attribute values it keeps outside its own
//! getsizeof. One `census_reprs` request does all of it; doctor turns the
//! means into bytes per new instance (`analysis::doctor::footprint`).

use serde_json::{Value, json};

use super::observe::{REPR_TYPES, REPRS_PER_TYPE};
use crate::agent::Session;
use crate::analysis::census::{Census, GrowthRow, NewObject};
use crate::analysis::doctor::Payload;
use crate::commands::growth::{file_new_objects, new_object_requests};

/// Growing types sampled for what they hold...
const PAYLOAD_TYPES: usize = 8;
/// ...and new instances per type (spread over all new ones: a type whose
/// instances differ, like frames of two functions, needs a few dozen for a
/// mean within ~20%).
const PAYLOAD_PER_TYPE: usize = 24;
/// Characters of each repr.
const REPR_CAP: usize = 200;

#[derive(serde::Deserialize)]
struct Found {
    id: u64,
    #[serde(default)]
    repr: Option<String>,
    #[serde(default)]
    found: bool,
    #[serde(default)]
    payload: Option<u64>,
    #[serde(default)]
    payload_objects: Option<u64>,
    #[serde(default)]
    values: Option<u64>,
}

/// Sums of what the found instances of one row hold.
#[derive(Default)]
struct Sums {
    bytes: u64,
    objects: u64,
    values: u64,
    with_values: usize,
    n: usize,
}

/// Files reprs under `rows` and returns what sampled instances hold, by
/// type.
pub(super) fn sample(
    s: &mut Session,
    rows: &mut [GrowthRow],
    first: &Census,
    last: &Census,
    gc_only: bool,
) -> anyhow::Result<Vec<Payload>> {
    let (wanted, owner) = new_object_requests(
        rows,
        first,
        last,
        PAYLOAD_TYPES.max(REPR_TYPES),
        PAYLOAD_PER_TYPE.max(REPRS_PER_TYPE),
    );
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // Reprs only for the first REPR_TYPES rows asked for, REPRS_PER_TYPE
    // each: the report shows no more.
    let mut order: Vec<usize> = Vec::new();
    for o in &owner {
        if !order.contains(o) {
            order.push(*o);
        }
    }
    let mut per_row_reprs: std::collections::BTreeMap<usize, usize> = Default::default();
    let mut repr_ids = Vec::new();
    for ((id, _), row) in wanted.iter().zip(&owner) {
        let rank = order.iter().position(|r| r == row).unwrap_or(usize::MAX);
        let n = per_row_reprs.entry(*row).or_default();
        if rank < REPR_TYPES && *n < REPRS_PER_TYPE * 2 {
            *n += 1;
            repr_ids.push(*id);
        }
    }
    let ids: Vec<Value> = wanted.iter().map(|(id, tids)| json!([id, tids])).collect();
    let resp = s.request(
        "census_reprs",
        json!({"ids": ids, "cap": REPR_CAP, "gc_only": gc_only, "payload": true,
               "repr_ids": repr_ids}),
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
    let mut per_row: std::collections::BTreeMap<usize, Sums> = Default::default();
    let mut shown: std::collections::BTreeMap<usize, usize> = Default::default();
    let mut kept_wanted = Vec::new();
    let mut kept_owner = Vec::new();
    let mut kept = Vec::new();
    for f in found.into_iter().take(wanted.len()) {
        let Some(k) = wanted.iter().position(|(id, _)| *id == f.id) else {
            continue;
        };
        let row = owner[k];
        if !f.found {
            continue; // gone by the time we asked
        }
        if let Some(p) = f.payload {
            let e = per_row.entry(row).or_default();
            e.bytes = e.bytes.saturating_add(p);
            e.objects = e.objects.saturating_add(f.payload_objects.unwrap_or(0));
            if let Some(v) = f.values {
                e.values = e.values.saturating_add(v);
                e.with_values += 1;
            }
            e.n += 1;
        }
        let rank = order.iter().position(|r| *r == row).unwrap_or(usize::MAX);
        let n = shown.entry(row).or_default();
        if rank < REPR_TYPES && *n < REPRS_PER_TYPE && f.repr.is_some() {
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
        .filter_map(|(row, m)| {
            let r = rows.get(row)?;
            (m.n > 0).then(|| {
                let n = m.n as f64;
                Payload {
                    type_name: r.name.clone(),
                    per_object: m.bytes as f64 / n,
                    objects_per_object: m.objects as f64 / n,
                    managed_values: (m.with_values > 0)
                        .then(|| m.values as f64 / m.with_values as f64),
                    sampled: m.n,
                }
            })
        })
        .collect())
}
