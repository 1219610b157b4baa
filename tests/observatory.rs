//! The /proc observatory against real interpreters: `maps`, `top`, `ps`,
//! `shm` on the SysV re-attach target (the motivating case), and `maps --raw`
//! against `pmap -x`.

mod common;

use common::{Interpreter, Target, for_each_interpreter, memsleuth, spawn_target};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

fn run_json(args: &[&str]) -> Value {
    let out = memsleuth().args(args).output().expect("run memsleuth");
    assert!(
        out.status.success(),
        "memsleuth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}"))
}

fn run_text(args: &[&str]) -> String {
    let out = memsleuth().args(args).output().expect("run memsleuth");
    assert!(
        out.status.success(),
        "memsleuth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sysv_target(interp: &Interpreter) -> Target {
    spawn_target(
        interp,
        "sysv_shm_reattach",
        &["--rate", "40", "--initial", "8"],
    )
    .unwrap_or_else(|| panic!("[{interp}] sysv target unsupported"))
}

/// Attach count of one shmid in `maps --json`'s repeated list.
fn repeated_count(view: &Value, shmid: u64) -> u64 {
    let repeated = view["repeated"].as_array().expect("repeated array");
    let entry = repeated
        .iter()
        .find(|r| r["backing"]["kind"] == "sysv" && r["backing"]["shmid"] == shmid)
        .unwrap_or_else(|| panic!("shmid {shmid} not flagged as repeated in {repeated:?}"));
    entry["times"].as_u64().unwrap()
}

#[test]
fn maps_flags_the_reattached_sysv_segment_and_its_count_grows() {
    for_each_interpreter(|interp| {
        let t = sysv_target(interp);
        let shmid: u64 = t.info_parse("shmid");
        let pid = t.pid.to_string();
        let first = repeated_count(&run_json(&["maps", &pid, "--json"]), shmid);
        std::thread::sleep(Duration::from_millis(600));
        let second = repeated_count(&run_json(&["maps", &pid, "--json"]), shmid);
        assert!(
            first >= 2 && second > first,
            "[{interp}] attach count did not grow: {first} → {second}"
        );
        let text = run_text(&["maps", &pid]);
        let needle = format!("shmid 0x{shmid:x} is mapped ");
        assert!(
            text.contains(&needle),
            "[{interp}] text lacks {needle:?}:\n{text}"
        );
        assert!(
            text.contains("for one 64.0 KiB segment"),
            "[{interp}] segment size missing:\n{text}"
        );
        assert!(
            text.contains(&format!("[ shmid=0x{shmid:x} ]")),
            "[{interp}] pmap-style label missing"
        );
    });
}

#[test]
fn top_shows_res_and_shr_rising_together_with_rss_anon_flat() {
    for_each_interpreter(|interp| {
        let t = sysv_target(interp);
        let pid = t.pid.to_string();
        let out = memsleuth()
            .args(["top", &pid, "--json", "-n", "4", "-i", "0.4"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "[{interp}] top failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect();
        assert_eq!(lines.len(), 4, "[{interp}] expected 4 samples");
        let last = &lines[3]["delta"];
        let (res, shr, anon, shmem) = (
            last["res"].as_f64().unwrap(),
            last["shr"].as_f64().unwrap(),
            last["rss_anon"].as_f64().unwrap(),
            last["rss_shmem"].as_f64().unwrap(),
        );
        // 40 attaches/s × 64 KiB over 1.2 s ≈ 3 MiB.
        assert!(res > 1.0e6, "[{interp}] RES did not rise: {last}");
        assert!(
            (res - shr).abs() <= res * 0.1 + 65536.0,
            "[{interp}] RES and SHR diverge: {last}"
        );
        assert!(
            (shmem - shr).abs() <= shr * 0.1 + 65536.0,
            "[{interp}] SHR is not RssShmem: {last}"
        );
        assert!(
            anon.abs() <= 512.0 * 1024.0,
            "[{interp}] RssAnon moved: {last}"
        );
        assert!(lines[3]["rate_per_s"]["res"].as_f64().unwrap() > 0.0);
        // Pss_Shmem stays at about one segment however often it is mapped.
        let pss_shmem = lines[3]["values"]["pss_shmem"].as_f64().unwrap();
        assert!(
            pss_shmem <= 2.0 * 65536.0,
            "[{interp}] Pss_Shmem grew: {pss_shmem}"
        );
    });
}

#[test]
fn ps_lists_the_target_with_its_version() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "idle", &[]).unwrap();
        let report = run_json(&["ps", "--json"]);
        let procs = report["processes"].as_array().unwrap();
        let me = procs
            .iter()
            .find(|p| p["pid"] == t.pid)
            .unwrap_or_else(|| panic!("[{interp}] pid {} not listed by ps", t.pid));
        let (a, b, c) = interp.version;
        assert_eq!(
            me["version"],
            format!("{a}.{b}.{c}"),
            "[{interp}] wrong version: {me}"
        );
        let build = if interp.kind == "pyenv-shared" {
            "shared_lib"
        } else {
            "static"
        };
        assert_eq!(me["build"], build, "[{interp}] wrong build: {me}");
        assert!(me["rss_bytes"].as_u64().unwrap() > 1 << 20);
        assert!(me["cmdline"].as_str().unwrap().contains("idle.py"));
    });
}

#[test]
fn shm_lists_the_segment_with_its_attach_count() {
    let interp = &common::interpreters()[0];
    let t = sysv_target(interp);
    let shmid: u64 = t.info_parse("shmid");
    let report = run_json(&["shm", "--json"]);
    let seg = report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shmid"] == shmid)
        .unwrap_or_else(|| panic!("shmid {shmid} missing from {report}"));
    assert_eq!(seg["size"], 65536);
    assert_eq!(
        seg["removed"], true,
        "the target IPC_RMIDs its segment at once"
    );
    let by = seg["attached_by"].as_array().unwrap();
    let mine = by
        .iter()
        .find(|a| a["pid"] == t.pid)
        .expect("target among attachers");
    assert!(mine["mappings"].as_u64().unwrap() >= 8);
    let text = run_text(&["shm"]);
    assert!(
        text.contains(&format!("process {} (", t.pid))
            && text.contains(&format!("0x{shmid:x} attached"))
    );
}

/// `pmap -x`: address → (Kbytes, RSS).
fn pmap_x(pid: u32) -> HashMap<u64, (u64, u64)> {
    let out = std::process::Command::new("pmap")
        .args(["-x", &pid.to_string()])
        .output()
        .expect("pmap");
    let mut rows = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let (Ok(addr), Ok(size), Ok(rss)) =
            (u64::from_str_radix(f[0], 16), f[1].parse(), f[2].parse())
        else {
            continue;
        };
        rows.insert(addr, (size, rss));
    }
    rows
}

#[test]
fn raw_agrees_with_pmap_x() {
    if std::process::Command::new("pmap")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "pmap (procps) is required in CI"
        );
        eprintln!("pmap not installed; skipping");
        return;
    }
    for_each_interpreter(|interp| {
        // A quiet target, so that nothing changes between the two reads.
        let t = spawn_target(interp, "idle", &[]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let pmap = pmap_x(t.pid);
        let ours = run_text(&["maps", &t.pid.to_string(), "--raw"]);
        let mut compared = 0;
        for line in ours.lines().skip(2) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(addr) = f.first().and_then(|a| u64::from_str_radix(a, 16).ok()) else {
                continue;
            };
            let (size, rss): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            let Some(&(psize, prss)) = pmap.get(&addr) else {
                panic!("[{interp}] mapping {addr:x} missing from pmap -x");
            };
            assert_eq!(
                (size, rss),
                (psize, prss),
                "[{interp}] mapping {addr:x} differs from pmap -x"
            );
            compared += 1;
        }
        assert_eq!(
            compared,
            pmap.len(),
            "[{interp}] pmap -x has mappings we lack"
        );
        assert!(compared > 20);
    });
}
