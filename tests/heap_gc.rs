//! `memsleuth gc`, `native` and `tracemalloc` against real processes on
//! every interpreter (where the feature exists), and their text rendering
//! snapshot-tested on recorded reports (tests/fixtures/heap_gc/, recorded
//! from the same targets; see the README there).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Interpreter, Target, for_each_interpreter, memsleuth, run, spawn_target};
use serde_json::Value;

/// Runs `memsleuth <args> --json` and parses the document; panics with
/// context on failure.
fn json_of(interp: &Interpreter, t: &Target, args: &[&str], cache: Option<&Path>) -> Value {
    let mut cmd = memsleuth();
    cmd.args(args).arg("--json");
    if let Some(c) = cache {
        cmd.env("XDG_CACHE_HOME", c);
    }
    let r = run(&mut cmd);
    assert_eq!(
        r.code,
        0,
        "[{interp}] memsleuth {args:?} failed: {}\n--- target stderr ---\n{}",
        r.stderr,
        t.stderr()
    );
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("[{interp}] {args:?}: bad JSON ({e}): {}", r.stdout));
    assert_eq!(v["schema"], 1, "[{interp}] {args:?}");
    v
}

fn kinds(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

fn assert_costs(interp: &Interpreter, v: &Value) {
    let gil = v["gil_s"].as_f64().expect("gil_s");
    let attach = v["attach_s"].as_f64().expect("attach_s");
    assert!(gil > 0.0 && gil < 10.0, "[{interp}] gil_s {gil}");
    assert!(
        attach > 0.0 && attach < 30.0,
        "[{interp}] attach_s {attach}"
    );
}

#[test]
fn gc_sees_a_disabled_collector() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "gc_disabled", &[]).unwrap();
        let pid = t.pid.to_string();
        let v = json_of(
            interp,
            &t,
            &["gc", "--inject", &pid, "--interval", "1"],
            None,
        );
        assert_eq!(v["enabled"], false, "[{interp}]");
        let (c0, c1) = (
            v["count"][0].as_i64().unwrap(),
            v["count_after"][0].as_i64().unwrap(),
        );
        assert!(c1 > c0, "[{interp}] gen-0 count did not grow: {c0} -> {c1}");
        assert_eq!(
            kinds(&v)[0],
            "collector_disabled",
            "[{interp}] {:?}",
            kinds(&v)
        );
        assert_costs(interp, &v);
        // Per-version availability of the counters.
        assert_eq!(
            v["stats"].is_array(),
            interp.at_least(3, 4),
            "[{interp}] stats"
        );
        assert_eq!(
            v["freeze_count"].is_u64(),
            interp.at_least(3, 7),
            "[{interp}] freeze_count"
        );
        assert_eq!(
            v["callbacks"].is_u64(),
            interp.at_least(3, 3),
            "[{interp}] callbacks"
        );
        // Text output names it too, and the target is unharmed and still
        // has its collector off (we changed nothing).
        let r = run(memsleuth().args(["gc", "--inject", &pid]));
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        assert!(
            r.stdout.contains("OFF (gc.disable() was called)"),
            "[{interp}] {}",
            r.stdout
        );
        let e = run(memsleuth().args(["eval", &pid, "gc.isenabled()"]));
        assert_eq!(e.stdout.trim(), "False", "[{interp}] {}", e.stderr);
        assert!(t.is_alive(), "[{interp}] target died");
    });
}

#[test]
fn gc_flags_debug_saveall_and_the_growing_garbage() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "gc_saveall", &[]).unwrap();
        let pid = t.pid.to_string();
        let v = json_of(
            interp,
            &t,
            &["gc", &pid, "--interval", "1", "--collect"],
            None,
        );
        assert_eq!(v["saveall"], true, "[{interp}]");
        assert!(
            v["debug_flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "DEBUG_SAVEALL"),
            "[{interp}] {}",
            v["debug_flags"]
        );
        let k = kinds(&v);
        assert_eq!(k[0], "saveall", "[{interp}] {k:?}");
        assert!(
            k.contains(&"garbage_growing".to_string()),
            "[{interp}] {k:?}"
        );
        assert!(v["garbage"]["growth"].as_i64().unwrap() > 0, "[{interp}]");
        // SavedNode first, or right after the instance dicts (before 3.11
        // each instance has its own __dict__, caught in the same cycles).
        let by = v["garbage"]["by_type"].as_array().unwrap();
        let top = by
            .iter()
            .take(2)
            .find(|t| t["type"] == "__main__.SavedNode")
            .unwrap_or_else(|| panic!("[{interp}] no SavedNode on top: {}", v["garbage"]));
        assert_eq!(top["reason"], "saveall", "[{interp}]");
        assert!(top["in_cycle"].as_u64().unwrap() > 0, "[{interp}] {top}");
        // --collect: what it found went to gc.garbage, not back to the heap.
        let c = &v["collect"];
        assert!(
            c["garbage_after"].as_u64() >= c["garbage_before"].as_u64(),
            "[{interp}] {c}"
        );
        assert!(c["rss_before"].as_u64().unwrap() > 0, "[{interp}] {c}");
        assert_costs(interp, &v);
        assert!(t.is_alive(), "[{interp}] target died");
    });
}

#[test]
fn gc_explains_del_cycles_on_2_7_only() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "gc_del_cycles", &[]).unwrap();
        let pid = t.pid.to_string();
        let v = json_of(
            interp,
            &t,
            &["gc", "--inject", &pid, "--interval", "1"],
            None,
        );
        let k = kinds(&v);
        let g = &v["garbage"];
        if interp.version.0 == 2 {
            assert!(
                g["growth"].as_i64().unwrap() > 0,
                "[{interp}] garbage did not grow: {g}"
            );
            assert_eq!(k[0], "del_cycles", "[{interp}] {k:?}");
            assert!(
                k.contains(&"garbage_growing".to_string()),
                "[{interp}] {k:?}"
            );
            let by: Vec<(&str, &str)> = g["by_type"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["type"].as_str().unwrap(), t["reason"].as_str().unwrap()))
                .collect();
            assert!(
                by.contains(&("__main__.Finalized", "del_cycle")),
                "[{interp}] {by:?}"
            );
            assert!(
                by.contains(&("__main__.Classic", "del_cycle")),
                "[{interp}] {by:?}"
            );
            let msg = v["findings"][0]["message"].as_str().unwrap();
            assert!(msg.contains("__main__.Finalized"), "[{interp}] {msg}");
        } else {
            // PEP 442: collectable since 3.4.
            assert_eq!(g["len"], 0, "[{interp}] {g}");
            assert_eq!(g["len_after"], 0, "[{interp}] {g}");
            assert!(k.is_empty(), "[{interp}] {k:?}");
        }
        assert!(t.is_alive(), "[{interp}] target died");
    });
}

#[test]
fn gc_names_legacy_tp_del_types() {
    for_each_interpreter(|interp| {
        let Some(t) = spawn_target(interp, "gc_tp_del", &[]) else {
            return;
        };
        let pid = t.pid.to_string();
        let v = json_of(
            interp,
            &t,
            &["gc", "--inject", &pid, "--interval", "1"],
            None,
        );
        let k = kinds(&v);
        assert_eq!(k[0], "legacy_tp_del", "[{interp}] {k:?}");
        assert!(
            k.contains(&"garbage_growing".to_string()),
            "[{interp}] {k:?}"
        );
        let top = &v["garbage"]["by_type"][0];
        assert_eq!(top["type"], "__main__.LegacyFinalized", "[{interp}] {top}");
        assert_eq!(top["tp_del"], true, "[{interp}] {top}");
        assert_eq!(top["reason"], "legacy_tp_del", "[{interp}] {top}");
        assert!(t.is_alive(), "[{interp}] target died");
    });
}

#[test]
fn tracemalloc_diff_points_at_the_leaking_line() {
    for_each_interpreter(|interp| {
        let cache = tempfile::tempdir().unwrap();
        let c = Some(cache.path());
        let t = spawn_target(interp, "tm_leak", &[]).unwrap();
        let pid = t.pid.to_string();
        let tm = |args: &[&str]| {
            let mut cmd = memsleuth();
            cmd.arg("tracemalloc")
                .arg(&pid)
                .args(args)
                .env("XDG_CACHE_HOME", cache.path());
            run(&mut cmd)
        };
        if interp.version.0 == 2 {
            let r = tm(&["start"]);
            assert_eq!(r.code, 1, "[{interp}] {}", r.stdout);
            assert!(
                r.stderr.contains("tracemalloc needs Python 3.4+")
                    && r.stderr.contains("memsleuth growth"),
                "[{interp}] {}",
                r.stderr
            );
            return;
        }
        // Nothing starts tracemalloc behind the user's back.
        let r = tm(&["snapshot"]);
        assert_eq!(r.code, 1, "[{interp}] snapshot before start: {}", r.stdout);
        assert!(r.stderr.contains("not tracing"), "[{interp}] {}", r.stderr);
        let r = tm(&["diff"]);
        assert_eq!(r.code, 1, "[{interp}]");
        assert!(
            r.stderr.contains("needs two snapshots"),
            "[{interp}] {}",
            r.stderr
        );

        let v = json_of(
            interp,
            &t,
            &["tracemalloc", &pid, "start", "--frames", "4"],
            c,
        );
        assert_eq!(v["status"]["tracing"], true, "[{interp}] {v}");
        assert_eq!(v["was_tracing"], false, "[{interp}]");
        assert_costs(interp, &v);
        let s1 = json_of(interp, &t, &["tracemalloc", &pid, "snapshot"], c);
        assert_eq!(s1["snapshot"]["seq"], 1, "[{interp}]");
        std::thread::sleep(Duration::from_millis(1500));
        let s2 = json_of(interp, &t, &["tracemalloc", &pid, "snapshot"], c);
        assert_eq!(s2["snapshot"]["seq"], 2, "[{interp}]");
        assert!(
            s2["snapshot"]["traces_own"].as_u64().unwrap() > 0,
            "[{interp}] {}",
            s2["snapshot"]
        );
        let d = json_of(interp, &t, &["tracemalloc", &pid, "diff"], c);
        assert!(
            d["attach_s"].is_null() && d["gil_s"].is_null(),
            "[{interp}] diff must not attach"
        );
        let first = &d["diff"]["sites"][0];
        let leak_file = t.info.get("leak_file").unwrap();
        let leak_line: u64 = t.info_parse("leak_line");
        assert_eq!(
            first["frames"][0]["file"],
            leak_file.as_str(),
            "[{interp}] {}",
            d["diff"]
        );
        assert_eq!(
            first["frames"][0]["line"], leak_line,
            "[{interp}] {}",
            d["diff"]
        );
        assert!(
            first["size_diff"].as_i64().unwrap() > 50_000,
            "[{interp}] {first}"
        );
        // Nothing of ours anywhere.
        let text = d.to_string();
        assert!(
            !text.contains("<memsleuth"),
            "[{interp}] own frames in the diff"
        );
        assert!(
            !text.contains("tracemalloc.py"),
            "[{interp}] tracemalloc's frames in the diff"
        );
        // By traceback: the same line first, with its callers.
        let d = json_of(
            interp,
            &t,
            &[
                "tracemalloc",
                &pid,
                "diff",
                "--by",
                "traceback",
                "--limit",
                "3",
            ],
            c,
        );
        let first = &d["diff"]["sites"][0];
        assert_eq!(first["frames"][0]["line"], leak_line, "[{interp}] {first}");
        assert!(
            first["frames"].as_array().unwrap().len() >= 2,
            "[{interp}] {first}"
        );
        let text = tm(&["diff"]);
        assert!(
            text.stdout
                .contains(&format!("Top grower: {leak_file}:{leak_line}")),
            "[{interp}] {}",
            text.stdout
        );
        // Two snapshots kept, in a directory named by pid and start time.
        let dirs: Vec<_> = std::fs::read_dir(cache.path().join("memsleuth/tracemalloc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(dirs.len(), 1, "[{interp}] {dirs:?}");
        assert!(
            dirs[0].starts_with(&format!("{pid}-")),
            "[{interp}] {dirs:?}"
        );
        let _ = json_of(interp, &t, &["tracemalloc", &pid, "snapshot"], c);
        let n = std::fs::read_dir(cache.path().join("memsleuth/tracemalloc").join(&dirs[0]))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snap-")
            })
            .count();
        assert_eq!(n, 2, "[{interp}] keeps the last two");

        let v = json_of(interp, &t, &["tracemalloc", &pid, "stop"], c);
        assert_eq!(v["was_tracing"], true, "[{interp}]");
        assert_eq!(v["status"]["tracing"], false, "[{interp}]");
        let e = run(memsleuth().args(["eval", &pid, "__import__('_tracemalloc').is_tracing()"]));
        assert_eq!(
            e.stdout.trim(),
            "False",
            "[{interp}] still tracing after stop: {}",
            e.stderr
        );
        assert!(t.is_alive(), "[{interp}] target died");
        // Once the process is gone its stored snapshots still compare.
        t.terminate(Duration::from_secs(5));
        let r = tm(&["diff"]);
        assert_eq!(r.code, 0, "[{interp}] diff of a gone process: {}", r.stderr);
        assert!(r.stdout.contains("is gone"), "[{interp}] {}", r.stdout);
    });
}

#[test]
fn native_probe_shows_what_malloc_trim_returns() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "native_frag", &[]).unwrap();
        let burst: u64 = t.info_parse("burst");
        let pid = t.pid.to_string();
        let v = json_of(interp, &t, &["native", &pid, "--probe"], None);
        let mi = &v["mallinfo"];
        assert!(
            mi["source"] == "mallinfo2" || mi["source"] == "mallinfo",
            "[{interp}] {mi}"
        );
        // Most of the burst is free inside malloc's heap but still resident.
        assert!(
            mi["fordblks"].as_u64().unwrap() > burst / 2,
            "[{interp}] {mi}"
        );
        let p = &v["probe"];
        let trim = p["returned_by_trim"].as_i64().unwrap();
        assert!(
            trim > (burst / 2) as i64,
            "[{interp}] malloc_trim returned only {trim}: {p}"
        );
        assert_eq!(p["steps"].as_array().unwrap().len(), 3, "[{interp}]");
        assert!(
            p["verdict"][1]
                .as_str()
                .unwrap()
                .contains("malloc_trim(0) gave back"),
            "[{interp}] {p}"
        );
        // pymalloc statistics where sys._debugmallocstats exists (3.3+).
        if interp.at_least(3, 3) {
            let pm = &v["pymalloc"];
            assert!(pm["arenas_current"].as_u64().unwrap() > 0, "[{interp}] {v}");
            assert!(
                pm["allocated_blocks_bytes"].as_u64().unwrap() > 0,
                "[{interp}] {pm}"
            );
            assert!(v["allocated_blocks"].as_u64().unwrap() > 0, "[{interp}]");
        } else {
            assert!(v["pymalloc"].is_null(), "[{interp}]");
            assert!(
                v["pymalloc_note"]
                    .as_str()
                    .unwrap()
                    .contains("_debugmallocstats"),
                "[{interp}]"
            );
        }
        assert_costs(interp, &v);
        // The target's stderr is back where it was: fd 2 was redirected for
        // the _debugmallocstats call only.
        let r = run(memsleuth().args(["exec", &pid, "os.write(2, b'after-native\\n')"]));
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            t.stderr().contains("after-native"),
            "[{interp}] stderr: {}",
            t.stderr()
        );
        assert!(
            !t.stderr().contains("Small block threshold"),
            "[{interp}] stats leaked to stderr"
        );
        assert!(t.is_alive(), "[{interp}] target died");
    });
}

#[test]
fn native_on_a_quiet_process() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "idle", &["--main", "sleep"]).unwrap();
        let pid = t.pid.to_string();
        let before = t.report_state();
        // --wait-detach: memsleuth exits once the agent's thread has ended.
        let r = run(memsleuth().args(["native", "--wait-detach", &pid]));
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        assert!(
            r.stdout.contains("glibc malloc (mallinfo"),
            "[{interp}] {}",
            r.stdout
        );
        assert!(!r.stdout.contains("Probe:"), "[{interp}]");
        std::thread::sleep(Duration::from_millis(300));
        let after = t.report_state();
        for key in ["modules", "threads", "main_names"] {
            assert_eq!(
                before[key], after[key],
                "[{interp}] {key} changed by `native`"
            );
        }
        // ctypes had to be loaded (mallinfo2): its C parts stay, and a libffi
        // built with static trampolines keeps an fd on its own .so file open
        // from the moment it is loaded (the provisioned 3.14/3.15 builds).
        // Nothing else may appear.
        assert!(
            r.stdout.contains("ctypes was not loaded"),
            "[{interp}] {}",
            r.stdout
        );
        let fds = |v: &Value| -> Vec<String> {
            v["fds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect()
        };
        for fd in fds(&after).iter().filter(|fd| !fds(&before).contains(fd)) {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap_or_default();
            assert!(
                link.to_string_lossy().contains("libffi"),
                "[{interp}] fd {fd} -> {} left open by `native`",
                link.display()
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Rendering, on recorded reports.

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/heap_gc")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn render_gc_reports() {
    use memsleuth::analysis::gcstate::GcReport;
    use memsleuth::render::gcstate::gc;
    for name in [
        "gc-2.7-del-cycles-collect",
        "gc-3.12-disabled",
        "gc-3.11-saveall",
    ] {
        let r: GcReport = serde_json::from_str(&fixture(&format!("{name}.json"))).unwrap();
        insta::assert_snapshot!(name, gc(&r));
    }
}

#[test]
fn render_native_reports() {
    use memsleuth::analysis::allocator::NativeReport;
    use memsleuth::render::allocator::native;
    for name in ["native-3.11-probe", "native-2.7"] {
        let r: NativeReport = serde_json::from_str(&fixture(&format!("{name}.json"))).unwrap();
        insta::assert_snapshot!(name, native(&r));
    }
}

#[test]
fn render_tracemalloc_reports() {
    use memsleuth::analysis::tracemalloc::TmReport;
    use memsleuth::render::tracemalloc::report;
    for name in [
        "tm-3.13-start",
        "tm-3.13-snapshot",
        "tm-3.13-diff-line",
        "tm-3.13-diff-traceback",
        "tm-3.13-stop",
    ] {
        let r: TmReport = serde_json::from_str(&fixture(&format!("{name}.json"))).unwrap();
        insta::assert_snapshot!(name, report(&r));
    }
}

#[test]
fn diff_recomputed_from_recorded_snapshots() {
    use memsleuth::analysis::tracemalloc::{GroupBy, Snapshot, diff};
    let a: Snapshot = serde_json::from_str(&fixture("tm-3.13-snap-1.json")).unwrap();
    let b: Snapshot = serde_json::from_str(&fixture("tm-3.13-snap-2.json")).unwrap();
    let d = diff(&a, &b, GroupBy::Line, 5);
    assert!(
        d.sites[0].site().ends_with("tm_leak.py:17"),
        "{:?}",
        d.sites[0]
    );
    assert!(d.sites[0].size_diff > 0);
}
