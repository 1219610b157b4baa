//! The doctor's rules on recorded /proc samples (tests/fixtures/classify,
//! recorded from the test targets) and hand-made census rows.

use std::path::PathBuf;

use super::*;
use crate::analysis::census::{GrowthRow, RowKind, growth_score};
use crate::analysis::gcstate::GcBasics;

fn samples(name: &str) -> Vec<Sample> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/classify")
        .join(name);
    let mut out = Vec::new();
    for i in 0.. {
        let d = dir.join(format!("t{i}"));
        if !d.is_dir() {
            break;
        }
        out.push(Sample::from_dir(&d).unwrap());
    }
    assert!(out.len() >= 2, "fixture {name}");
    out
}

fn row(name: &str, module: Option<&str>, counts: &[u64], each: u64) -> GrowthRow {
    let n = counts.len();
    let born = counts[n - 1].saturating_sub(counts[0]);
    GrowthRow {
        name: name.into(),
        kind: RowKind::Type,
        module: module.map(str::to_string),
        counts: counts.to_vec(),
        sizes: counts.iter().map(|c| c * each).collect(),
        deltas: counts
            .windows(2)
            .map(|w| w[1] as i64 - w[0] as i64)
            .collect(),
        delta_count: counts[n - 1] as i64 - counts[0] as i64,
        delta_size: (counts[n - 1] as i64 - counts[0] as i64) * each as i64,
        born: Some(born),
        died: Some(0),
        score: growth_score(counts),
        monotonic: growth_score(counts) >= 0.8,
        new_objects: Vec::new(),
        builtin: matches!(module, None | Some("builtins")),
        object_tids: Vec::new(),
    }
}

fn gc(t: f64, enabled: bool, gen0: i64, garbage: u64) -> (f64, GcBasics) {
    (
        t,
        GcBasics {
            enabled,
            thresholds: vec![700, 10, 10],
            count: vec![gen0, 0, 0],
            garbage_len: garbage,
            ..GcBasics::default()
        },
    )
}

fn python(rows: Vec<GrowthRow>, gcs: Vec<(f64, GcBasics)>) -> PythonSide {
    PythonSide {
        version: (3, 12, 1),
        census_times: vec![0.0, 2.0, 4.0, 6.0],
        rows,
        census_bytes: vec![0; 4],
        gc: gcs,
        ..PythonSide::default()
    }
}

fn obs(fixture: &str, py: Option<PythonSide>) -> Observation {
    Observation {
        pid: 42,
        samples: samples(fixture),
        python: py,
        ..Observation::default()
    }
}

fn kinds(d: &Diagnosis) -> Vec<Kind> {
    d.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn a_growing_user_class_is_python_objects() {
    let rows = vec![
        row("app.UserSession", Some("app"), &[100, 200, 300, 400], 56),
        row("str", None, &[5000, 5100, 5200, 5300], 1100),
        // churn: up and down, not a leak
        row("list", None, &[900, 1200, 850, 1000], 88),
    ];
    let d = diagnose(&obs("healthy", Some(python(rows, vec![]))));
    assert_eq!(d.verdict, Verdict::Leak);
    assert_eq!(kinds(&d), vec![Kind::PythonObjects]);
    let Evidence::Objects(e) = &d.findings[0].evidence else {
        panic!()
    };
    let names: Vec<&str> = e.types.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"app.UserSession") && names.contains(&"str"));
    assert!(!names.contains(&"list"));
    assert!(
        d.headline
            .starts_with("Leak: app.UserSession objects grow by"),
        "{}",
        d.headline
    );
    assert_eq!(Verdict::Leak.exit_code(), 3);
}

#[test]
fn warm_up_that_stopped_is_not_a_leak() {
    let rows = vec![row("app.Cache", Some("app"), &[100, 900, 1000, 1000], 200)];
    let d = diagnose(&obs("healthy", Some(python(rows, vec![]))));
    assert_eq!(d.verdict, Verdict::NoLeak, "{:?}", d.findings);
    assert!(d.findings.is_empty());
    assert_eq!(d.verdict.exit_code(), 0);
}

#[test]
fn threads_take_their_stdlib_handles_but_not_user_classes() {
    let rows = vec![
        row("threading.Thread", Some("threading"), &[5, 25, 45, 65], 56),
        row("frame", None, &[40, 120, 200, 280], 400),
        row("app.Job", Some("app"), &[5, 25, 45, 65], 400),
    ];
    let d = diagnose(&obs("thread_leak", Some(python(rows, vec![]))));
    assert_eq!(kinds(&d)[0], Kind::Threads, "{:?}", kinds(&d));
    let Evidence::Threads(e) = &d.findings[0].evidence else {
        panic!()
    };
    let handles: Vec<&str> = e.handles.iter().map(|t| t.name.as_str()).collect();
    assert!(handles.contains(&"threading.Thread") && handles.contains(&"frame"));
    assert!(!handles.contains(&"app.Job"));
    // The user class stays a Python-objects finding of its own.
    assert!(kinds(&d).contains(&Kind::PythonObjects));
}

/// Stack readings at the fixture's sample times, `per_s` resident bytes a
/// second.
fn stacks_growing(o: &Observation, per_s: f64) -> Vec<rates::StackSample> {
    o.samples
        .iter()
        .map(|x| rates::StackSample {
            t: x.t,
            stacks: 10,
            rss: (1_000_000.0 + per_s * x.t) as u64,
            size: 80 << 20,
        })
        .collect()
}

#[test]
fn threads_are_charged_the_anonymous_growth_their_stacks_leave_up_to_a_bound() {
    let rows = vec![row(
        "threading.Thread",
        Some("threading"),
        &[5, 25, 45, 65],
        56,
    )];
    let threads_of = |stack_rate: f64| {
        let mut o = obs("thread_leak", Some(python(rows.clone(), vec![])));
        o.stacks = stacks_growing(&o, stack_rate);
        let d = diagnose(&o);
        let f = d.findings[0].clone();
        let Evidence::Threads(e) = f.evidence else {
            panic!("{:?}", kinds(&d))
        };
        (f.rate_bytes_per_s, e)
    };
    // RssAnon grows ~317 KiB/s with 20 new threads a second; stacks 160.
    let (rate, e) = threads_of(160.0 * 1024.0);
    let handles: f64 = e
        .handles
        .iter()
        .map(|h| h.total_bytes_delta() as f64)
        .sum::<f64>()
        / 6.0;
    assert!(
        e.native_bytes_per_s > 100.0 * 1024.0,
        "{}",
        e.native_bytes_per_s
    );
    assert!(e.native_bytes_per_s <= 20.5 * THREAD_NATIVE as f64);
    let sum = 160.0 * 1024.0 + handles + e.native_bytes_per_s;
    assert!((rate - sum).abs() < 1.0, "{rate} vs {sum}");
    assert!(
        rate < 330.0 * 1024.0,
        "never more than RssAnon grew: {rate}"
    );
    // Stacks that explain all of it leave nothing to charge.
    let (_, e) = threads_of(400.0 * 1024.0);
    assert_eq!(e.native_bytes_per_s, 0.0);
}

#[test]
fn repeated_sysv_mapping_is_ranked_first() {
    let d = diagnose(&obs("sysv_shm_reattach", None));
    assert_eq!(d.verdict, Verdict::Leak);
    assert_eq!(kinds(&d)[0], Kind::SharedMemoryMappings);
    let Evidence::Mapping(e) = &d.findings[0].evidence else {
        panic!()
    };
    assert!(e.shmid.as_deref().is_some_and(|s| s.starts_with("0x")));
    assert!(e.hint.contains("shmdt"));
}

#[test]
fn fds_without_the_agent() {
    let d = diagnose(&obs("fd_leak", None));
    assert_eq!(kinds(&d), vec![Kind::FileDescriptors]);
}

#[test]
fn anonymous_growth_without_a_census_is_inconclusive() {
    let mut o = obs("native_malloc", None);
    o.skipped.push(Skipped {
        part: "python heap".into(),
        reason: "permission denied".into(),
    });
    let d = diagnose(&o);
    assert_eq!(d.verdict, Verdict::Inconclusive, "{:?}", d.findings);
    assert_eq!(d.verdict.exit_code(), 4);
    assert!(d.headline.contains("permission denied"), "{}", d.headline);
}

#[test]
fn anonymous_growth_with_flat_objects_is_native() {
    let rows = vec![row("list", None, &[900, 1200, 850, 1000], 88)];
    let d = diagnose(&obs("native_malloc", Some(python(rows, vec![]))));
    assert_eq!(kinds(&d), vec![Kind::NativeHeap], "{:?}", d.notes);
}

#[test]
fn growing_garbage_claims_its_types() {
    let rows = vec![row(
        "__main__.Node",
        Some("__main__"),
        &[0, 400, 800, 1200],
        56,
    )];
    let gcs = vec![
        gc(0.0, true, 10, 0),
        gc(2.0, true, 20, 400),
        gc(4.0, true, 30, 800),
        gc(6.0, true, 40, 1200),
    ];
    let mut py = python(rows, gcs);
    py.gc.iter_mut().for_each(|(_, b)| b.saveall = true);
    py.garbage = Some(crate::analysis::gcstate::GarbageScan {
        len: 1200,
        by_type: vec![crate::analysis::gcstate::GarbageTypeRaw {
            type_name: "__main__.Node".into(),
            count: 1200,
            ..Default::default()
        }],
        ..Default::default()
    });
    let d = diagnose(&obs("healthy", Some(py)));
    assert_eq!(kinds(&d), vec![Kind::UncollectableGarbage]);
    let Evidence::Garbage(e) = &d.findings[0].evidence else {
        panic!()
    };
    assert!(e.saveall && e.growing[0].name == "__main__.Node");
}

#[test]
fn collector_off_with_growing_cycles() {
    let rows = vec![row(
        "__main__.Pair",
        Some("__main__"),
        &[0, 400, 800, 1200],
        56,
    )];
    let gcs = vec![
        gc(0.0, false, 10, 0),
        gc(2.0, false, 410, 0),
        gc(4.0, false, 810, 0),
        gc(6.0, false, 1210, 0),
    ];
    let d = diagnose(&obs("healthy", Some(python(rows, gcs))));
    assert_eq!(kinds(&d), vec![Kind::GcDisabled]);
}

#[test]
fn collector_off_without_censuses_still_tells() {
    let mut py = python(Vec::new(), Vec::new());
    py.census_times = vec![0.0];
    py.gc = vec![
        gc(0.0, false, 10, 0),
        gc(3.0, false, 3000, 0),
        gc(6.0, false, 6000, 0),
    ];
    let d = diagnose(&obs("healthy", Some(py)));
    assert_eq!(kinds(&d), vec![Kind::GcDisabled]);
}

#[test]
fn quiet_processes_are_no_leak() {
    for name in ["healthy", "idle"] {
        let d = diagnose(&obs(name, Some(python(Vec::new(), Vec::new()))));
        assert_eq!(d.verdict, Verdict::NoLeak, "{name}: {:?}", d.findings);
        assert!(d.headline.starts_with("No leak"), "{}", d.headline);
    }
}

#[test]
fn evidence_matches_its_kind_and_names_are_stable() {
    let d = diagnose(&obs("sysv_shm_reattach", None));
    for f in &d.findings {
        assert!(f.evidence.fits(f.kind));
    }
    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(
        names,
        [
            "python-objects",
            "uncollectable-garbage",
            "gc-disabled",
            "shared-memory-mappings",
            "file-mappings",
            "native-heap",
            "threads",
            "file-descriptors",
            "allocator-retention"
        ]
    );
    for k in Kind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.name());
    }
}

/// Checks `v` against the parts of JSON Schema docs/doctor.schema.json
/// uses: required, properties, items, $ref, allOf with if/const/then,
/// oneOf with null, enum and const.
fn check(schema: &serde_json::Value, root: &serde_json::Value, v: &serde_json::Value, at: &str) {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return check(&root["$defs"][name], root, v, at);
    }
    if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
        if v.is_null() {
            assert!(
                alts.iter().any(|a| a["type"] == "null"
                    || a["type"]
                        .as_array()
                        .is_some_and(|t| t.contains(&"null".into()))),
                "{at}: null not allowed"
            );
        } else {
            let a = alts.iter().find(|a| a["type"] != "null").unwrap();
            check(a, root, v, at);
        }
        return;
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        assert!(e.contains(v), "{at}: {v} not in {e:?}");
    }
    if let Some(c) = schema.get("const") {
        assert_eq!(c, v, "{at}");
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for k in req {
            let k = k.as_str().unwrap();
            assert!(v.get(k).is_some(), "{at}: missing `{k}` in {v}");
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            if let Some(x) = v.get(k) {
                check(s, root, x, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
        for (i, x) in list.iter().enumerate() {
            check(items, root, x, &format!("{at}[{i}]"));
        }
    }
    for cond in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (key, want) = cond["if"]["properties"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        if v.get(key) == Some(&want["const"]) {
            check(&cond["then"], root, v, at);
        }
    }
}

#[test]
fn reports_follow_the_published_schema() {
    use super::report::{ProcessReport, Report};
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/doctor.schema.json"),
    )
    .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kinds: Vec<&str> = schema["$defs"]["finding"]["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds, Kind::ALL.map(Kind::name));
    let rows = vec![row(
        "threading.Thread",
        Some("threading"),
        &[5, 25, 45, 65],
        56,
    )];
    let gcs = vec![gc(0.0, true, 10, 0), gc(6.0, true, 40, 1200)];
    let cases = [
        ("sysv_shm_reattach", None),
        ("thread_leak", Some(python(rows, gcs))),
        ("fd_leak", None),
        ("mmap_file_repeat", None),
        ("native_malloc", Some(python(Vec::new(), Vec::new()))),
    ];
    for (fixture, py) in cases {
        let o = obs(fixture, py);
        let d = diagnose(&o);
        let process = ProcessReport {
            pid: 42,
            cmdline: "python3 app.py".into(),
            exe: None,
            rss_bytes_start: 1,
            rss_bytes_end: 2,
            vm_size_bytes_end: 3,
            threads_end: 4,
            fds_end: Some(5),
            growth_bytes_per_s: 0.0,
            doubling_s: None,
            rss_slope_bytes_per_s: None,
            rss_slope_window_s: None,
            explained_share: None,
        };
        let r = Report::new(&o, d, process, None);
        let v = serde_json::to_value(&r).unwrap();
        check(&schema, &schema, &v, fixture);
    }
}
