//! The read-only heap reader on real processes, on every interpreter: the
//! walk of the collector's lists equals `gc.get_objects()` per type, known
//! populations decode to their exact `sys.getsizeof` totals, the complete
//! census agrees with the agent's (the reference) within 0.5% and exactly
//! for user classes, and the target runs no code of ours meanwhile (an
//! audit hook in the target, 3.8+).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{Target, for_each_interpreter, memsleuth, run, spawn_target};
use memsleuth::heap::copied::Copied;
use memsleuth::heap::mem::Mem;
use memsleuth::heap::space::{AddressSpace, LiveLazy};
use memsleuth::heap::types::Types;
use memsleuth::heap::{
    CensusOptions, Interpreter, census, census_parallel, locate, referents, sizes, walk,
};
use serde_json::Value;

fn open(t: &Target) -> (Interpreter, Copied) {
    let proc = memsleuth::process::Process::open(t.pid).unwrap();
    let maps = proc.maps().unwrap();
    let py = memsleuth::python::detect(&proc, &maps)
        .unwrap()
        .expect("a Python process");
    let interp = locate(&LiveLazy { pid: t.pid }, &py)
        .unwrap_or_else(|e| panic!("[{}] locate: {e}", t.interp_label));
    let copy = Copied::take(t.pid).unwrap();
    (interp, copy)
}

/// Asks for reports until two in a row give the same counts per type.
fn settle(t: &Target) {
    let mut last = t.fifo_report()["types"].clone();
    for _ in 0..8 {
        let now = t.fifo_report()["types"].clone();
        if now == last {
            return;
        }
        last = now;
    }
    panic!("[{}] the target's heap does not settle", t.interp_label);
}

/// `pop NAME ID COUNT SIZE` lines.
fn pops(t: &Target) -> Vec<(String, u64, u64, u64)> {
    let mut out = Vec::new();
    for l in t.stdout_lines_so_far() {
        if let Some(rest) = l.strip_prefix("pop ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            out.push((
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            ));
        }
    }
    assert!(out.len() > 10, "populations: {out:?}");
    out
}

/// `holds NAME HOLDER HELD` lines.
fn holds(t: &Target) -> Vec<(String, u64, u64)> {
    t.stdout_lines_so_far()
        .iter()
        .filter_map(|l| l.strip_prefix("holds "))
        .map(|rest| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Waits until the agent's thread (2.7–3.x injection) has exited: it may
/// still be winding down when the command returns.
fn wait_threads(t: &Target, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while thread_count(t.pid) > n {
        assert!(
            std::time::Instant::now() < deadline,
            "[{}] the agent's thread did not exit",
            t.interp_label
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tracked_by_type(space: &dyn AddressSpace, interp: &Interpreter) -> (HashMap<u64, u64>, u64) {
    let mem = Mem::new(space);
    let mut types = Types::new();
    let w = walk::walk(&mem, interp, &mut types).unwrap();
    assert_eq!(w.skipped, 0, "skipped nodes: {:?}", w.warnings);
    let mut by = HashMap::new();
    for o in &w.tracked {
        *by.entry(mem.u64(o + 8).unwrap()).or_insert(0) += 1;
    }
    (by, w.permanent.len() as u64)
}

#[test]
fn read_only_census_matches_the_interpreter_and_the_agent() {
    for_each_interpreter(|py| {
        let label = &py.label;
        let Some(t) = spawn_target(py, "heap_population", &["--scale", "8"]) else {
            return;
        };
        // A first agent visit, so that what it leaves behind (modules it
        // imports, on 2.7 `_ast`) is in the heap both censuses see.
        let threads = thread_count(t.pid);
        let warm = run(memsleuth().args([
            "types",
            "--inject",
            &t.pid.to_string(),
            "--json",
            "--limit",
            "1",
        ]));
        assert_eq!(warm.code, 0, "[{label}] agent census: {}", warm.stderr);
        wait_threads(&t, threads);
        // Until the counts settle: whatever the agent left to run when the
        // target next runs Python (3.14+ remote scripts, 3.15 lazy imports
        // reified one report at a time) has run by then.
        settle(&t);
        let (interp, space) = open(&t);
        // 1. The walk, then the interpreter's own count.
        let (mine, frozen) = tracked_by_type(&space, &interp);
        let hc = census(&space, &interp, &CensusOptions::default()).unwrap();
        // The census on two threads (the lists walked from both ends, each
        // end decoding what it walks) and on three (the two ends handing
        // batches to a third) finds the very same rows. On a paused
        // target the two ends must have met, not fallen back to one walker.
        for threads in [2, 3] {
            let opts = CensusOptions::default();
            let par = census_parallel(&space, &interp, &opts, threads).unwrap();
            assert_eq!(
                format!("{:?}", par.census.rows),
                format!("{:?}", hc.census.rows),
                "[{label}] census on {threads} threads"
            );
            assert_eq!(par.walkers, 2, "[{label}] lists walked from both ends");
            let gc_only = CensusOptions {
                gc_only: true,
                ..opts
            };
            let par = census_parallel(&space, &interp, &gc_only, threads).unwrap();
            let one = census(&space, &interp, &gc_only).unwrap();
            assert_eq!(
                format!("{:?}", par.census.rows),
                format!("{:?}", one.census.rows),
                "[{label}] gc-only census on {threads} threads"
            );
        }
        assert!(
            hc.warnings.is_empty(),
            "[{label}] warnings {:?}",
            hc.warnings
        );
        let rep = t.fifo_report();
        let theirs: HashMap<u64, u64> = rep["types"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
            .collect();
        let mut bad = Vec::new();
        let mut theirs = theirs;
        if !py.at_least(3, 7) {
            // The args tuple of the blocked `os.read(fd, n)` call (no
            // fast calls before 3.7): alive when memory was read, freed
            // before the target's count.
            *theirs.entry(interp.builtins.tuple).or_insert(0) += 1;
        }
        for (tid, n) in &theirs {
            if mine.get(tid) != Some(n) {
                bad.push((*tid, mine.get(tid).copied(), *n));
            }
        }
        for (tid, n) in &mine {
            if !theirs.contains_key(tid) {
                bad.push((*tid, Some(*n), 0));
            }
        }
        let mut names = memsleuth::heap::names::Names::default();
        let mem = Mem::new(&space);
        let bad: Vec<_> = bad
            .into_iter()
            .map(|(tid, a, b)| (names.of(&mem, &interp, tid), a, b))
            .collect();
        assert!(
            bad.is_empty(),
            "[{label}] tracked per type (type, mine, gc.get_objects): {bad:?}"
        );
        assert_eq!(
            frozen,
            rep["frozen"].as_u64().unwrap(),
            "[{label}] permanent generation"
        );
        if py.at_least(3, 8) {
            assert_eq!(
                rep["audit"],
                serde_json::json!([]),
                "[{label}] audit events during the read"
            );
        }
        // 2. Known populations: count and sys.getsizeof totals, exactly.
        let mem = Mem::new(&space);
        let mut types = Types::new();
        for (name, id, count, size) in pops(&t) {
            let mut n = 0;
            let mut total = 0;
            referents::for_each(&mem, &interp, &mut types, id, &mut |o| {
                let ti = types_get(&mem, &interp, o);
                n += 1;
                total += sizes::getsizeof(&mem, &interp, &ti, o);
            });
            assert_eq!((n, total), (count, size), "[{label}] population {name}");
        }
        // What frames' and generators' locals hold is theirs.
        let holds = holds(&t);
        assert!(!holds.is_empty(), "[{label}] no holds lines");
        for (name, holder, held) in holds {
            let ti = types_get(&mem, &interp, holder);
            let mut found = false;
            referents::decode(&mem, &interp, &ti, holder, &mut |p, _| found |= p == held);
            assert!(
                found,
                "[{label}] the {name} at {holder:#x} does not hold {held:#x}"
            );
        }
        // The classes' instances, exactly (scale 8).
        for (name, n) in [
            ("__main__.WithDict", 3000 * 8),
            ("__main__.WithSlots", 2000 * 8),
            ("__main__.Wide", 150 * 8),
            ("__main__.Node", 201),
        ] {
            let got = hc
                .census
                .rows
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.count);
            assert_eq!(got, Some(n), "[{label}] {name}");
        }
        // 3. The complete census against the agent's.
        let out = run(memsleuth().args([
            "types",
            "--inject",
            &t.pid.to_string(),
            "--json",
            "--limit",
            "0",
        ]));
        assert_eq!(out.code, 0, "[{label}] agent census: {}", out.stderr);
        let agent: Value = serde_json::from_str(&out.stdout).unwrap();
        let rows: BTreeMap<String, (u64, u64)> = agent["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    (r["count"].as_u64().unwrap(), r["size"].as_u64().unwrap()),
                )
            })
            .collect();
        let c = &hc.census;
        let (ac, asz) = (
            agent["total"]["count"].as_u64().unwrap() as f64,
            agent["total"]["size"].as_u64().unwrap() as f64,
        );
        let dc = 100.0 * (c.count as f64 - ac) / ac;
        let ds = 100.0 * (c.size as f64 - asz) / asz;
        eprintln!(
            "[{label}] census: {} objects {} bytes; agent {ac} / {asz}: {dc:+.3}% objects, {ds:+.3}% bytes; walk+decode {:.3}s",
            c.count, c.size, hc.walk_s
        );
        assert!(
            dc.abs() < 0.5 && ds.abs() < 0.5,
            "[{label}] deviation {dc:+.3}% / {ds:+.3}%"
        );
        for r in &c.rows {
            if r.name.contains("__main__.") {
                assert_eq!(
                    Some(&(r.count, r.size)),
                    rows.get(&r.name),
                    "[{label}] user row {}",
                    r.name
                );
            }
        }
        // 4. The audit hook works: the agent's visit shows in it.
        if py.at_least(3, 8) {
            let rep = t.fifo_report();
            assert!(
                rep["audit"].as_array().is_some_and(|a| !a.is_empty()),
                "[{label}] the audit hook saw nothing of the agent: {rep}"
            );
        }
    });
}

fn types_get(mem: &Mem, interp: &Interpreter, o: u64) -> memsleuth::heap::types::TypeInfo {
    let mut types = Types::new();
    let ti = types.get(mem, interp, mem.u64(o + 8).unwrap()).unwrap();
    types.info(ti).clone()
}

/// The main thread's current system call number.
fn main_syscall(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/syscall"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_process_holding_the_gil_in_c_is_censused_from_outside() {
    for_each_interpreter(|py| {
        let label = &py.label;
        let Some(t) = spawn_target(py, "heap_gil_held", &[]) else {
            return;
        };
        // In its C sleep (nanosleep, clock_nanosleep), GIL held.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !["35", "230"].contains(&main_syscall(t.pid).as_str()) {
            assert!(
                std::time::Instant::now() < deadline,
                "[{label}] never slept"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (interp, space) = open(&t);
        let hc = census(&space, &interp, &CensusOptions::default())
            .unwrap_or_else(|e| panic!("[{label}] census: {e}"));
        let row = |name: &str| {
            hc.census
                .rows
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.count)
        };
        assert_eq!(row("__main__.Held"), Some(1234), "[{label}]");
        assert_eq!(row("__main__.Slotted"), Some(777), "[{label}]");
        // (3.11+: attribute values without a dict.)
        let dicts = (!py.at_least(3, 11)).then_some(1234);
        assert_eq!(row("dict of __main__.Held"), dicts, "[{label}]");
        assert!(row("str").unwrap_or(0) >= 500 + 1234 + 777, "[{label}]");
        assert!(hc.warnings.is_empty(), "[{label}] {:?}", hc.warnings);
        // Untouched: still in the same C sleep.
        assert!(
            ["35", "230"].contains(&main_syscall(t.pid).as_str()),
            "[{label}] the main thread left its sleep"
        );
    });
}
