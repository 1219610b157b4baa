//! The read-only heap reader through the command line, on every
//! interpreter: `types`, `growth` and `gc` read from outside by default
//! (JSON `source` "memory") and agree with the agent (`--inject`) on the
//! user classes and the collector's settings, the target runs no code of
//! ours meanwhile (audit hook, 3.8+), a process holding the GIL in C is
//! censused, one allocating all the time is read without pausing, a `gcore`
//! core is read after the process is gone, and the failures users hit are
//! one sentence.
//!
//! `MEMSLEUTH_TEST_PYTHONS` (colon-separated paths) replaces discovery.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Target, for_each_interpreter, memsleuth, run, spawn_target};
use serde_json::Value;

fn json(label: &str, args: &[&str]) -> Value {
    let r = run(memsleuth().args(args));
    assert_eq!(r.code, 0, "[{label}] memsleuth {args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("[{label}] {args:?}: bad JSON ({e}): {}", r.stdout))
}

/// Rows of user classes (`__main__.X`, `dict of __main__.X`): (count, size).
fn user_rows(v: &Value) -> BTreeMap<String, (u64, u64)> {
    v["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().contains("__main__."))
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                (r["count"].as_u64().unwrap(), r["size"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Until the agent's thread is gone and the target's counts stop moving.
fn settle(t: &Target, threads: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while thread_count(t.pid) > threads && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut last = t.fifo_report()["types"].clone();
    for _ in 0..8 {
        let now = t.fifo_report()["types"].clone();
        if now == last {
            return;
        }
        last = now;
    }
}

#[test]
fn types_gc_and_growth_read_from_outside_by_default() {
    for_each_interpreter(|py| {
        let label = &py.label;
        let Some(t) = spawn_target(py, "heap_population", &[]) else {
            return;
        };
        let pid = t.pid.to_string();
        // The agent first: what its visit leaves (imported modules) is then
        // in the heap both censuses see.
        let threads = thread_count(t.pid);
        let agent = json(
            label,
            &["types", "--inject", &pid, "--json", "--limit", "0"],
        );
        assert_eq!(agent["source"], "agent", "[{label}]");
        let agent_gc = json(
            label,
            &["gc", "--inject", &pid, "--json", "--interval", "0.05"],
        );
        assert_eq!(agent_gc["source"], "agent", "[{label}]");
        settle(&t, threads);

        // Default: from memory, same user classes, no code run.
        let mem = json(label, &["types", &pid, "--json", "--limit", "0"]);
        assert_eq!(mem["source"], "memory", "[{label}]");
        let read = &mem["read"];
        assert!(read["paused_s"].as_f64().unwrap() > 0.0, "[{label}] {read}");
        assert_eq!(read["warnings"], serde_json::json!([]), "[{label}]");
        assert_eq!(mem["gil_s"], 0.0);
        let users = user_rows(&mem);
        assert!(users.len() >= 3, "[{label}] user rows {users:?}");
        assert_eq!(users, user_rows(&agent), "[{label}] user classes");
        // --read-only and --nonblocking say the same on a quiet target.
        let ro = json(
            label,
            &["types", &pid, "--read-only", "--json", "--limit", "0"],
        );
        assert_eq!(user_rows(&ro), users, "[{label}] --read-only");
        let nb = json(
            label,
            &["types", &pid, "--nonblocking", "--json", "--limit", "0"],
        );
        assert_eq!(nb["read"]["paused_s"], 0.0, "[{label}]");
        assert_eq!(user_rows(&nb), users, "[{label}] --nonblocking");

        // gc from memory: the interpreter's own settings and count.
        let g = json(label, &["gc", &pid, "--json", "--interval", "0.1"]);
        assert_eq!(g["source"], "memory", "[{label}]");
        for key in ["thresholds", "debug_flags", "saveall"] {
            assert_eq!(g[key], agent_gc[key], "[{label}] gc {key}");
        }
        if py.at_least(3, 7) {
            assert_eq!(g["enabled"], agent_gc["enabled"], "[{label}] gc enabled");
        }
        assert_eq!(
            g["garbage"]["len"], agent_gc["garbage"]["len"],
            "[{label}] gc.garbage"
        );
        let rep = t.fifo_report();
        let listed: u64 = rep["types"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let objects = g["gc_objects"].as_u64().unwrap();
        // Before 3.7 the blocked os.read() call's args tuple is alive
        // while memory is read and freed before the target counts.
        let slack = u64::from(!py.at_least(3, 7));
        assert!(
            objects == listed || objects == listed + slack,
            "[{label}] gc_objects {objects}, gc.get_objects() {listed}"
        );
        if py.at_least(3, 8) {
            assert_eq!(
                rep["audit"],
                serde_json::json!([]),
                "[{label}] audit events during the reads from outside"
            );
        }

        // growth from memory: censuses, no reprs, no code run.
        let gr = json(
            label,
            &[
                "growth",
                &pid,
                "--json",
                "--interval",
                "0.2",
                "--samples",
                "2",
            ],
        );
        assert_eq!(gr["source"], "memory", "[{label}]");
        assert_eq!(gr["samples"].as_array().unwrap().len(), 2);
        assert!(gr["samples"][0]["paused_s"].as_f64().unwrap() > 0.0);
        if py.at_least(3, 8) {
            assert_eq!(t.fifo_report()["audit"], serde_json::json!([]), "[{label}]");
        }

        // Options that need the interpreter cannot be read-only.
        let r = run(memsleuth().args(["types", &pid, "--read-only", "--collect"]));
        assert_eq!(r.code, 2, "[{label}] {}", r.stderr);

        // A core of it, read after the process is gone.
        let core = common::gcore(t.pid, t.tmpdir());
        t.kill_and_reap();
        let path = core.to_string_lossy().to_string();
        let c = json(label, &["types", "--core", &path, "--json", "--limit", "0"]);
        assert_eq!(c["source"], "memory", "[{label}]");
        assert_eq!(c["core"], path.as_str());
        assert_eq!(c["pid"].as_u64(), Some(u64::from(t.pid)));
        assert_eq!(user_rows(&c), users, "[{label}] core vs live");
        let cg = json(label, &["gc", "--core", &path, "--json"]);
        assert_eq!(
            cg["thresholds"], agent_gc["thresholds"],
            "[{label}] core gc"
        );
        // --exe: the executable named explicitly.
        let exe = std::fs::canonicalize(&py.path).unwrap();
        let c2 = json(
            label,
            &[
                "types",
                "--core",
                &path,
                "--exe",
                &exe.to_string_lossy(),
                "--json",
                "--limit",
                "0",
            ],
        );
        assert_eq!(user_rows(&c2), users, "[{label}] core with --exe");
        std::fs::remove_file(&core).ok();
    });
}

#[test]
fn a_process_holding_the_gil_in_c_is_censused() {
    for_each_interpreter(|py| {
        let label = &py.label;
        let Some(t) = spawn_target(py, "gil_stuck", &[]) else {
            return;
        };
        let pid = t.pid.to_string();
        let v = json(label, &["types", &pid, "--json", "--limit", "5"]);
        assert_eq!(v["source"], "memory", "[{label}]");
        assert!(
            v["total"]["count"].as_u64().unwrap() > 1000,
            "[{label}] {v}"
        );
        let g = json(label, &["gc", &pid, "--json", "--interval", "0.05"]);
        assert_eq!(g["source"], "memory", "[{label}]");
        assert!(t.is_alive());
    });
}

#[test]
fn a_process_allocating_all_the_time_is_read_without_pausing() {
    for_each_interpreter(|py| {
        let label = &py.label;
        let Some(t) = spawn_target(py, "heap_churn", &[]) else {
            return;
        };
        let pid = t.pid.to_string();
        // Its generation lists change while they are copied: the read
        // skips what it must and says so, but always gives a census. (The
        // lists' heads were once checked on the torn copy, and this failed
        // every time.)
        for _ in 0..4 {
            let v = json(
                label,
                &["types", &pid, "--nonblocking", "--json", "--limit", "0"],
            );
            assert_eq!(v["source"], "memory", "[{label}]");
            let count = v["total"]["count"].as_u64().unwrap();
            assert!(count > 100_000, "[{label}] {count} objects");
            let records = v["types"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "__main__.Record")
                .and_then(|r| r["count"].as_u64())
                .unwrap_or(0);
            assert!(records >= 40_000, "[{label}] {records} records");
        }
        let g = json(label, &["gc", &pid, "--nonblocking", "--json"]);
        assert_eq!(g["source"], "memory", "[{label}]");
        assert!(t.is_alive(), "[{label}]");
    });
}

#[test]
fn bad_targets_are_one_sentence() {
    let dir = std::env::temp_dir().join(format!("memsleuth-clicore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.core");
    std::fs::write(&junk, b"\x7fELF but nothing else").unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["types".into(), "--core".into(), junk.display().to_string()],
        vec!["gc".into(), "--core".into(), "/nonexistent/core".into()],
        vec!["types".into(), "--core".into(), "/etc/passwd".into()],
        vec!["types".into(), "999999999".into()],
        vec!["gc".into(), "--read-only".into(), "999999999".into()],
    ];
    for args in cases {
        let r = run(memsleuth().args(&args));
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        let msg = r.stderr.trim();
        assert_eq!(msg.lines().count(), 1, "{args:?}: {msg}");
        assert!(msg.len() > 20, "{args:?}: {msg}");
    }
    // Usage: --exe without --core, --core with a pid.
    let r = run(memsleuth().args(["types", "--exe", "/bin/true", "1"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run(memsleuth().args(["types", "1", "--core", "/tmp/x"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    std::fs::remove_dir_all(&dir).ok();
}
