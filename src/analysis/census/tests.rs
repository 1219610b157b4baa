//! Tests of the census builder (frames in, census out) and of the growth
//! figures.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn words(ws: &[u64]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// A frame header with these segments.
fn head(seg: Value) -> Value {
    json!({"k": "census", "v": 2, "w": 8, "le": cfg!(target_endian = "little"), "dt": 1, "seg": seg})
}

fn result(types: Value) -> Value {
    json!({"types": types, "gc_only": false, "listed": 3, "max_hold_s": 0.01})
}

#[test]
fn aggregates_dedupes_and_attributes_dicts() {
    let mut b = CensusBuilder::new(true);
    // Tracked: an instance (100) of type 10, its dict (200, type 1), a list (300, type 11).
    // Untracked: a str (400, type 12) seen twice, an untracked tuple (500, type 13).
    let payload = words(&[
        100, 200, 300, 10, 1, 11, // tracked: ids, type ids
        200, 10, // owners: dict, owner type
        400, 400, 500, 12, 12, 13, // untracked: ids, type ids
        48, 88, 56, // tracked: sizes
        60, 60, 24, // untracked: sizes
    ]);
    b.feed(&head(json!([["t", 3], ["o", 1], ["u", 3, 0]])), &payload)
        .unwrap();
    // Another chunk repeating the str and a second str.
    b.feed(
        &head(json!([["u", 2, 0]])),
        &words(&[400, 401, 12, 12, 60, 61]),
    )
    .unwrap();
    let c = b
        .finish(&result(json!([
            [1, "builtins", "dict", 16],
            [10, "app", "UserSession", 0],
            [11, "builtins", "list", 16],
            [12, "builtins", "str", 0],
            [13, "builtins", "tuple", 16],
        ])))
        .unwrap();
    assert_eq!(c.count, 6);
    assert_eq!(c.tracked, 3);
    assert_eq!(c.untracked, 3);
    assert_eq!(c.repeats, 2);
    let s = c.row("str").unwrap();
    assert_eq!((s.count, s.size, s.tracked), (2, 121, 0));
    // Sizes come without `pre`: the type table's is added to every object.
    let d = c.row("dict of app.UserSession").unwrap();
    assert_eq!((d.count, d.size, d.kind), (1, 104, RowKind::DictOf));
    assert!(c.row("dict").is_none());
    assert_eq!(c.row("list").unwrap().size, 72);
    assert_eq!(c.row("tuple").unwrap().size, 40);
    assert_eq!(c.rows[0].name, "str");
    assert_eq!(c.size, 48 + 104 + 72 + 121 + 40);
    let ids = c.ids.as_ref().unwrap();
    assert_eq!(ids["str"], vec![400, 401]);
    assert_eq!(ids["dict of app.UserSession"], vec![200]);
    assert_eq!(ids["app.UserSession"], vec![100]);
    assert_eq!(c.chunks, 2);
}

#[test]
fn a_tracked_object_seen_again_untracked_counts_once() {
    let mut b = CensusBuilder::new(false);
    // A tuple listed as tracked, later reached (untracked by a collection
    // in between) from another chunk.
    b.feed(&head(json!([["t", 1]])), &words(&[0x7f00_0010, 13, 40]))
        .unwrap();
    b.feed(&head(json!([["u", 1, 0]])), &words(&[0x7f00_0010, 13, 40]))
        .unwrap();
    let c = b
        .finish(&result(json!([[13, "builtins", "tuple", 16]])))
        .unwrap();
    let t = c.row("tuple").unwrap();
    assert_eq!((t.count, t.tracked, t.size), (1, 1, 56));
}

#[test]
fn fingerprints_identify_numbers_across_censuses() {
    let h = |seg: Value| {
        let mut h = head(seg);
        h["fpt"] = json!([3]);
        h
    };
    let census = |hash: u64| {
        let mut b = CensusBuilder::new(true);
        // An int at 0x500 referenced twice, and a str (no hash).
        b.feed(
            &h(json!([["u", 3, 2]])),
            &words(&[0x500, 0x600, 0x500, 3, 4, 3, 28, 50, 28, hash, hash]),
        )
        .unwrap();
        b.finish(&result(json!([
            [3, "builtins", "int", 0],
            [4, "builtins", "str", 0]
        ])))
        .unwrap()
    };
    let a = census(7);
    assert_eq!(a.row("int").unwrap().count, 1);
    assert_eq!(a.row("str").unwrap().count, 1);
    let keys = &a.ids.as_ref().unwrap()["int"];
    assert!(keys.iter().all(|k| k >> 63 == 1));
    assert_eq!(a.ids.as_ref().unwrap()["str"], vec![0x600]);
    // Later the address holds another int: born and died, not the same one.
    let b = census(9);
    assert_eq!(turnover(&a, &b, "int"), Some((1, 1)));
    assert_eq!(turnover(&a, &census(7), "int"), Some((0, 0)));
    // Fingerprinted keys are never offered as ids to look up.
    assert!(new_ids(&a, &b, "int", 3).is_empty());
    // Hashes must match the fingerprinted records one for one.
    let mut b = CensusBuilder::new(false);
    assert_eq!(
        b.feed(
            &h(json!([["u", 2, 1]])),
            &words(&[0x500, 0x508, 3, 3, 28, 28, 7])
        ),
        Err(CensusError::BadSegment("u hashes"))
    );
}

#[test]
fn dropped_dicts_are_not_counted() {
    let mut b = CensusBuilder::new(false);
    b.feed(&head(json!([["t", 2]])), &words(&[100, 101, 1, 1, 48, 48]))
        .unwrap();
    let mut r = result(json!([[1, "builtins", "dict", 16]]));
    r["drop_dicts"] = json!([101]);
    let c = b.finish(&r).unwrap();
    assert_eq!((c.count, c.row("dict").unwrap().count), (1, 1));
    assert_eq!(c.row("dict").unwrap().size, 64);
}

#[test]
fn same_name_types_merge_into_one_row() {
    let mut b = CensusBuilder::new(false);
    b.feed(
        &head(json!([["t", 2]])),
        &words(&[1000, 1001, 20, 21, 56, 56]),
    )
    .unwrap();
    let c = b
        .finish(&result(json!([
            [20, "m", "Point", 0],
            [21, "m", "Point", 0]
        ])))
        .unwrap();
    let r = c.row("m.Point").unwrap();
    assert_eq!((r.count, r.classes), (2, 2));
}

#[test]
fn four_byte_words() {
    let mut b = CensusBuilder::new(false);
    let mut h = head(json!([["t", 2]]));
    h["w"] = json!(4);
    let payload: Vec<u8> = [1000u32, 1008, 20, 20, 16, 16]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    b.feed(&h, &payload).unwrap();
    let c = b.finish(&result(json!([[20, "m", "P", 4]]))).unwrap();
    assert_eq!((c.count, c.size), (2, 40));
}

#[test]
fn rejects_malformed_chunks() {
    let mut b = CensusBuilder::new(false);
    assert!(matches!(
        b.feed(&head(json!([["t", 1]])), &[0u8; 23]),
        Err(CensusError::PayloadSize {
            got: 23,
            expected: 24
        })
    ));
    let mut h = head(json!([]));
    h["w"] = json!(3);
    assert_eq!(b.feed(&h, &[]), Err(CensusError::WordSize(3)));
    h["w"] = json!(8);
    h["k"] = json!("other");
    assert!(matches!(b.feed(&h, &[]), Err(CensusError::UnknownKind(_))));
    let h = json!({"k": "census", "w": 8});
    assert_eq!(b.feed(&h, &[]), Err(CensusError::Version(None)));
    let h = json!({"k": "census", "v": 1, "w": 8, "nt": 0});
    assert_eq!(b.feed(&h, &[]), Err(CensusError::Version(Some(1))));
    for seg in [
        json!([["x", 1]]),
        json!([["t"]]),
        json!([["t", 1, 2]]),
        json!([["u", 1]]),
        json!([["o", -1]]),
        json!("t"),
        json!([5]),
    ] {
        assert!(
            matches!(
                b.feed(&head(seg.clone()), &[]),
                Err(CensusError::BadSegment(_))
            ),
            "{seg}"
        );
    }
    // Absurd counts cannot overflow the size check.
    let seg = json!([["t", u64::MAX], ["u", u64::MAX, u64::MAX], ["o", u64::MAX]]);
    assert!(matches!(
        b.feed(&head(seg), &[]),
        Err(CensusError::PayloadSize { .. })
    ));
    assert_eq!(b.chunks, 0);
    assert!(CensusBuilder::new(false).finish(&json!({})).is_err());
}

#[test]
fn frames_without_segments_are_fine() {
    let mut b = CensusBuilder::new(false);
    let mut h = head(json!([]));
    h["stage"] = json!("collected");
    b.feed(&h, &[]).unwrap();
    h.as_object_mut().unwrap().remove("seg");
    b.feed(&h, &[]).unwrap();
    let c = b.finish(&result(json!([]))).unwrap();
    assert_eq!((c.count, c.chunks), (0, 2));
}

#[test]
fn unknown_type_ids_get_a_placeholder_name() {
    let mut b = CensusBuilder::new(false);
    b.feed(&head(json!([["t", 1]])), &words(&[5, 0xabc, 16]))
        .unwrap();
    let c = b.finish(&result(json!([]))).unwrap();
    assert_eq!(c.rows[0].name, "<type 0xabc>");
}

proptest! {
    /// Whatever the target sends, feeding never panics.
    #[test]
    fn feed_never_panics(
        seg in prop::collection::vec((0usize..4, 0u64..6, 0u64..4), 0..5),
        fpt in prop::collection::vec(0u64..8, 0..3),
        w in prop::sample::select(vec![4u64, 8, 3]),
        ws in prop::collection::vec(0u64..16, 0..80),
    ) {
        let kinds = ["t", "u", "o", "?"];
        let seg: Vec<Value> = seg
            .iter()
            .map(|(k, n, nf)| if kinds[*k] == "u" { json!([kinds[*k], n, nf]) } else { json!([kinds[*k], n]) })
            .collect();
        let mut h = head(json!(seg));
        h["w"] = json!(w);
        h["fpt"] = json!(fpt);
        let mut b = CensusBuilder::new(true);
        let _ = b.feed(&h, &words(&ws));
        let _ = b.finish(&result(json!([[1, "builtins", "dict", 16], [2, null, null, 8]])));
    }
}

#[test]
fn score_rewards_steady_growth_only() {
    assert_eq!(growth_score(&[10, 20, 30, 40, 50]), 1.0);
    assert_eq!(growth_score(&[10, 10, 10]), 0.0);
    assert_eq!(growth_score(&[50, 40, 30]), 0.0);
    assert_eq!(growth_score(&[5]), 0.0);
    // One flat interval out of four.
    assert!((growth_score(&[10, 20, 20, 30, 40]) - 0.75).abs() < 1e-9);
    // Churn: up 10, down 10, up 10, down 9 → net 1 of 39 moved.
    let churn = growth_score(&[100, 110, 100, 110, 101]);
    assert!(churn < 0.05, "{churn}");
    // A one-off step then flat.
    assert!((growth_score(&[10, 100, 100, 100, 100]) - 0.25).abs() < 1e-9);
    assert!(growth_score(&[0, u64::MAX]) > 0.99);
}

fn census_with(rows: &[(&str, Option<&str>, u64, u64)], ids: &[(&str, Vec<u64>)]) -> Census {
    Census {
        rows: rows
            .iter()
            .map(|(n, m, c, s)| TypeRow {
                name: n.to_string(),
                kind: RowKind::Type,
                module: m.map(str::to_string),
                qualname: n.to_string(),
                count: *c,
                tracked: *c,
                size: *s,
                classes: 1,
                tids: vec![7],
            })
            .collect(),
        count: 0,
        size: 0,
        tracked: 0,
        untracked: 0,
        gc_only: false,
        dict_tid: 1,
        chunks: 0,
        payload_bytes: 0,
        repeats: 0,
        feed_s: 0.0,
        stats: AgentStats::default(),
        ids: Some(
            ids.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ),
    }
}

#[test]
fn growth_puts_steady_user_types_first() {
    let a = census_with(
        &[
            ("str", None, 100, 5000),
            ("app.S", Some("app"), 10, 480),
            ("list", None, 50, 4000),
        ],
        &[],
    );
    let b = census_with(
        &[
            ("str", None, 130, 8000),
            ("app.S", Some("app"), 20, 960),
            ("list", None, 40, 3000),
        ],
        &[],
    );
    let c = census_with(
        &[
            ("str", None, 160, 11000),
            ("app.S", Some("app"), 30, 1440),
            ("list", None, 50, 4000),
        ],
        &[],
    );
    let rows = growth_rows(&[&a, &b, &c]);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["app.S", "str", "list"]);
    assert!(rows[0].monotonic && rows[1].monotonic && !rows[2].monotonic);
    assert_eq!(rows[0].deltas, vec![10, 10]);
    assert_eq!((rows[1].delta_count, rows[1].delta_size), (60, 6000));
    assert_eq!(rows[2].delta_size, 0);
    // Unchanged types are left out.
    let rows = growth_rows(&[&a, &a]);
    assert!(rows.is_empty());
}

#[test]
fn retention_tells_a_leak_from_a_fill_up() {
    assert_eq!(retention(100, Some(100)), 1.0);
    assert!((retention(26, Some(93)) - 0.2796).abs() < 1e-3);
    assert_eq!(retention(-5, Some(10)), 0.0);
    assert_eq!(retention(5, None), 1.0);
    assert_eq!(retention(5, Some(0)), 1.0);
    // Same counts, different turnover.
    let a = census_with(&[("int", None, 100, 2800)], &[("int", (0..100).collect())]);
    let b = census_with(&[("int", None, 110, 3080)], &[("int", (5..115).collect())]);
    let c = census_with(
        &[("int", None, 120, 3360)],
        &[("int", (0..100).chain(200..220).collect())],
    );
    let churn = growth_rows(&[
        &a,
        &b,
        &census_with(&[("int", None, 120, 3360)], &[("int", (50..170).collect())]),
    ]);
    assert_eq!((churn[0].born, churn[0].died), (Some(70), Some(50)));
    assert!(!churn[0].monotonic, "{}", churn[0].score);
    let leak = growth_rows(&[&a, &b, &c]);
    assert_eq!((leak[0].born, leak[0].died), (Some(20), Some(0)));
    assert_eq!(leak[0].score, 1.0);
}

#[test]
fn turnover_counts_both_sides() {
    let a = census_with(&[], &[("x", vec![1, 2, 3, 4])]);
    let b = census_with(&[], &[("x", vec![2, 4, 5, 6, 7])]);
    assert_eq!(turnover(&a, &b, "x"), Some((3, 2)));
    assert_eq!(turnover(&a, &b, "nothing"), Some((0, 0)));
    let no_ids = Census {
        ids: None,
        ..a.clone()
    };
    assert_eq!(turnover(&no_ids, &b, "x"), None);
}

#[test]
fn new_ids_are_spread_over_the_new_ones() {
    let a = census_with(&[], &[("x", vec![1, 2, 3])]);
    let b = census_with(&[], &[("x", vec![1, 2, 3, 10, 11, 12, 13, 14, 15])]);
    assert_eq!(new_ids(&a, &b, "x", 3), vec![10, 12, 14]);
    assert_eq!(new_ids(&a, &b, "x", 10), vec![10, 11, 12, 13, 14, 15]);
    assert!(new_ids(&a, &b, "y", 3).is_empty());
}
