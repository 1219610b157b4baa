use super::*;

fn basics(enabled: bool, count0: i64, garbage: u64) -> GcBasics {
    GcBasics {
        enabled,
        thresholds: vec![700, 10, 10],
        count: vec![count0, 0, 0],
        stats: Some(vec![GenStats::default(); 3]),
        freeze_count: Some(0),
        callbacks: Some(0),
        garbage_len: garbage,
        ..GcBasics::default()
    }
}

fn meta(major: u32) -> Meta {
    Meta {
        pid: 42,
        version: (major, if major == 2 { 7 } else { 12 }, 0),
        attach_s: 0.1,
        gil_s: 0.01,
    }
}

fn kinds(r: &GcReport) -> Vec<&str> {
    r.findings.iter().map(|f| f.kind.as_str()).collect()
}

#[test]
fn healthy_has_no_findings() {
    let first = GcStateRaw {
        basics: basics(true, 100, 0),
        ..Default::default()
    };
    let r = build_report(&meta(3), first, &basics(true, 150, 0), 0.2, None);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.garbage.growth, 0);
}

#[test]
fn disabled_collector_is_a_problem_and_tells_the_count() {
    let first = GcStateRaw {
        basics: basics(false, 5000, 0),
        ..Default::default()
    };
    let r = build_report(&meta(3), first, &basics(false, 6200, 0), 0.2, None);
    assert_eq!(kinds(&r), ["collector_disabled"]);
    assert!(
        r.findings[0].message.contains("5000 → 6200"),
        "{}",
        r.findings[0].message
    );
}

#[test]
fn stalled_and_threshold_zero() {
    let first = GcStateRaw {
        basics: basics(true, 9000, 0),
        ..Default::default()
    };
    let r = build_report(&meta(3), first.clone(), &basics(true, 9500, 0), 0.2, None);
    assert_eq!(kinds(&r), ["collector_stalled"]);
    let mut zero = first;
    zero.basics.thresholds = vec![0, 10, 10];
    let mut second = basics(true, 9500, 0);
    second.thresholds = vec![0, 10, 10];
    let r = build_report(&meta(3), zero, &second, 0.2, None);
    assert_eq!(kinds(&r), ["threshold_zero"]);
}

fn del_type(count: u64) -> GarbageTypeRaw {
    GarbageTypeRaw {
        type_name: "app.Node".into(),
        count,
        has_del: true,
        tp_del: Some(true),
        heap_type: true,
        sampled: 3,
        in_cycle: 3,
        ..Default::default()
    }
}

#[test]
fn python2_del_cycles_are_named() {
    let mut first = GcStateRaw {
        basics: basics(true, 10, 400),
        ..Default::default()
    };
    first.garbage.len = 400;
    first.garbage.by_type = vec![del_type(400)];
    let r = build_report(&meta(2), first, &basics(true, 20, 600), 0.5, None);
    assert_eq!(kinds(&r), ["del_cycles", "garbage_growing"]);
    assert!(r.findings[0].message.contains("app.Node"));
    assert_eq!(r.garbage.by_type[0].reason, GarbageReason::DelCycle);
    assert_eq!(r.garbage.growth, 200);
}

#[test]
fn reasons_follow_the_version_and_flags() {
    let t = del_type(1);
    assert_eq!(garbage_reason(&t, 2, false), GarbageReason::DelCycle);
    // On 3.x a Python class with __del__ has tp_finalize, not tp_del; the
    // agent reports tp_del false for it.
    let py3 = GarbageTypeRaw {
        tp_del: Some(false),
        ..t.clone()
    };
    assert_eq!(garbage_reason(&py3, 3, false), GarbageReason::Unexplained);
    assert_eq!(garbage_reason(&py3, 3, true), GarbageReason::Saveall);
    assert_eq!(garbage_reason(&t, 3, true), GarbageReason::LegacyTpDel);
    let gen_ = GarbageTypeRaw {
        type_name: "generator".into(),
        generator: true,
        ..Default::default()
    };
    assert_eq!(
        garbage_reason(&gen_, 2, false),
        GarbageReason::GeneratorFinally
    );
    assert_eq!(garbage_reason(&gen_, 3, false), GarbageReason::Unexplained);
}

#[test]
fn saveall_and_debug_flags() {
    let mut b = basics(true, 10, 0);
    b.saveall = true;
    b.debug = 0x26;
    b.debug_flags = vec![
        "DEBUG_COLLECTABLE".into(),
        "DEBUG_UNCOLLECTABLE".into(),
        "DEBUG_SAVEALL".into(),
    ];
    let first = GcStateRaw {
        basics: b.clone(),
        ..Default::default()
    };
    let mut second = b;
    second.garbage_len = 50;
    let r = build_report(&meta(3), first, &second, 0.2, None);
    assert_eq!(kinds(&r), ["saveall", "garbage_growing", "debug_output"]);
}

#[test]
fn uncollectable_stats_and_static_garbage() {
    let mut b = basics(true, 10, 5);
    b.stats = Some(vec![
        GenStats::default(),
        GenStats::default(),
        GenStats {
            collections: 2,
            collected: 10,
            uncollectable: 5,
        },
    ]);
    let mut first = GcStateRaw {
        basics: b.clone(),
        ..Default::default()
    };
    first.garbage.by_type = vec![GarbageTypeRaw {
        type_name: "list".into(),
        count: 5,
        tp_del: Some(false),
        ..Default::default()
    }];
    let r = build_report(&meta(3), first, &b, 0.2, None);
    assert_eq!(kinds(&r), ["garbage_present", "uncollectable"]);
    assert!(
        r.findings[0].message.contains("appended by code")
            || r.findings[0].message.contains("code appended")
    );
}

#[test]
fn raw_json_from_the_agent_parses() {
    let j = r#"{"enabled": true, "thresholds": [700, 10, 10], "count": [18, 0, 0], "debug": 0,
            "debug_flags": [], "saveall": false, "stats": null, "freeze_count": null,
            "callbacks": null, "garbage_len": 5, "time": 1.5, "gc_objects": 8172,
            "garbage": {"len": 5, "scanned": 5, "types": 1, "other": 0, "by_type": [
              {"type": "__main__.Legacy", "count": 5, "has_del": false, "tp_del": true,
               "generator": false, "heap_type": true, "sampled": 3, "in_cycle": 3}]}}"#;
    let raw: GcStateRaw = serde_json::from_str(j).unwrap();
    assert_eq!(raw.garbage.by_type[0].tp_del, Some(true));
    assert_eq!(raw.basics.garbage_len, 5);
    assert_eq!(raw.gc_objects, 8172);
}
