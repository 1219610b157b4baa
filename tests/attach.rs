//! Attaching for real: `exec`, `eval` and `shell` on every interpreter, with
//! the main thread busy, sleeping, parked on a lock or blocked in accept();
//! and what must hold afterwards (nothing of ours left in the target).

mod common;

use common::{Interpreter, Run, for_each_interpreter, memsleuth, run, spawn_target};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn exec_json(pid: u32, code: &str, extra: &[&str]) -> (Run, Option<Value>) {
    let r = run(memsleuth()
        .args(["exec", "--json", &pid.to_string(), code])
        .args(extra));
    let v = serde_json::from_str(&r.stdout).ok();
    (r, v)
}

/// Python 2.7 cannot run pending calls while its main thread waits on a lock.
fn parked_on_2_7(interp: &Interpreter, mode: &str) -> bool {
    interp.version.0 == 2 && mode == "event"
}

#[test]
fn exec_and_eval_with_the_main_thread_in_every_state() {
    for_each_interpreter(|interp| {
        for mode in ["spin", "sleep", "event", "accept"] {
            let t = spawn_target(interp, "idle", &["--main", mode]).unwrap();
            let (r, json) = exec_json(t.pid, "sys.stdout.write('pid %d\\n' % os.getpid())", &[]);
            if parked_on_2_7(interp, mode) {
                assert_eq!(
                    r.code, 1,
                    "[{interp}] {mode}: expected a refusal, got {}",
                    r.stdout
                );
                assert!(
                    r.stderr.contains("2.7"),
                    "[{interp}] {mode}: unclear refusal: {}",
                    r.stderr
                );
                assert!(t.is_alive());
                continue;
            }
            assert_eq!(
                r.code, 0,
                "[{interp}] main={mode}: exec failed: {}",
                r.stderr
            );
            let json = json.unwrap_or_else(|| panic!("[{interp}] {mode}: no JSON: {}", r.stdout));
            assert_eq!(
                json["stdout"],
                format!("pid {}\n", t.pid),
                "[{interp}] {mode}"
            );
            let method = json["method"]["method"].as_str().unwrap().to_string();
            if interp.at_least(3, 14) && mode == "spin" {
                assert_eq!(
                    method, "pep768",
                    "[{interp}] {mode}: PEP 768 expected for a busy 3.14+ main thread"
                );
            }
            let e = run(memsleuth().args(["eval", &t.pid.to_string(), "6 * 7"]));
            assert_eq!(
                (e.code, e.stdout.trim()),
                (0, "42"),
                "[{interp}] {mode}: eval: {}",
                e.stderr
            );
            assert!(t.is_alive(), "[{interp}] {mode}: target died");
            eprintln!("[{interp}] main={mode}: {method}");
        }
    });
}

#[test]
fn exec_reports_exceptions_and_exit_status() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "idle", &["--main", "sleep"]).unwrap();
        let r =
            run(memsleuth().args(["exec", &t.pid.to_string(), "print('before'); {}['missing']"]));
        assert_eq!(r.code, 1, "[{interp}] a raising exec exits 1");
        assert_eq!(r.stdout, "before\n");
        assert!(
            r.stderr.contains("KeyError") && r.stderr.contains("Traceback"),
            "[{interp}] {}",
            r.stderr
        );
        let e = run(memsleuth().args(["eval", &t.pid.to_string(), "undefined_name"]));
        assert_eq!(e.code, 1);
        assert!(e.stderr.contains("NameError"), "[{interp}] {}", e.stderr);
        // The target's own output is not swallowed by the capture.
        assert!(t.is_alive());
    });
}

#[test]
fn detach_leaves_nothing_behind() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "idle", &["--main", "sleep"]).unwrap();
        let before = t.report_state();
        // Import something the target never had, from inside a session.
        // With --wait-detach, nothing of ours is left when memsleuth exits.
        let (r, json) = exec_json(
            t.pid,
            "import json, codeop; x = json.dumps([1])",
            &["--wait-detach"],
        );
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        let dir = json.unwrap()["session_dir"].as_str().unwrap().to_string();
        assert!(dir.starts_with("/tmp/memsleuth-"), "[{interp}] {dir}");
        let after = t.report_state();
        for key in ["modules", "threads", "fds", "main_names"] {
            assert_eq!(
                before[key], after[key],
                "[{interp}] {key} changed by an attach"
            );
        }
        let seen = format!("/proc/{}/root{dir}", t.pid);
        assert!(
            !std::path::Path::new(&seen).exists(),
            "[{interp}] {dir} left in the target"
        );
        // Without it, memsleuth returns as soon as everything is restored:
        // only the agent's thread may still be there, asleep (before 3.12.10
        // and 3.13.3), and it ends within half a second (a loaded machine
        // may take a little longer). Looked at from /proc first: a signal
        // for report_state could go to that thread, and on 2.7 the main
        // thread would then only see it after its sleep.
        let fds = |pid: u32| {
            let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let tasks = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .count()
        };
        let (fds_before, tasks_before) = (fds(t.pid), tasks(t.pid));
        let (r, _) = exec_json(t.pid, "import colorsys", &[]);
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        let returned = std::time::Instant::now();
        assert_eq!(fds(t.pid), fds_before, "[{interp}] fds right after detach");
        while tasks(t.pid) != tasks_before {
            assert!(
                returned.elapsed() < Duration::from_secs(5),
                "[{interp}] the agent thread is still there"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = t.report_state();
        for key in ["modules", "threads", "fds", "main_names"] {
            assert_eq!(
                before[key], after[key],
                "[{interp}] {key} changed by an attach (without --wait-detach)"
            );
        }
    });
}

/// Entries named memsleuth-* in the target's /tmp (seen through its root)
/// created by a session (the test harness's own are memsleuth-target-*).
fn memsleuth_dirs(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/tmp"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("memsleuth-") && !n.starts_with("memsleuth-target-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn gives_up_on_a_process_stuck_in_c_code_holding_the_gil() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "gil_stuck", &[]).unwrap();
        let started = std::time::Instant::now();
        let r = run(memsleuth().args(["exec", "--timeout", "2", &t.pid.to_string(), "print(1)"]));
        assert_eq!(r.code, 1, "[{interp}] expected a refusal");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "[{interp}] took too long"
        );
        assert!(
            r.stderr.contains("GIL"),
            "[{interp}] the message should name the GIL: {}",
            r.stderr
        );
        assert!(t.is_alive(), "[{interp}] target died");
        // Left running, not stopped, its main thread still in its C sleep.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).unwrap();
        let state = stat.rsplit(") ").next().unwrap().chars().next().unwrap();
        assert!(
            state == 'S' || state == 'R',
            "[{interp}] target left in state {state}"
        );
        let sc = std::fs::read_to_string(format!("/proc/{0}/task/{0}/syscall", t.pid)).unwrap();
        let nr = sc.split_whitespace().next().unwrap_or("");
        assert!(
            ["230", "35", "219"].contains(&nr),
            "[{interp}] main thread no longer sleeping: {sc}"
        );
    });
}

#[test]
fn remote_debugging_disabled_falls_back_to_ptrace() {
    for interp in common::interpreters().iter().filter(|i| i.at_least(3, 14)) {
        // The harness passes the environment through to targets.
        let t = spawn_target_env(interp, &[("PYTHON_DISABLE_REMOTE_DEBUG", "1")]);
        let (r, json) = exec_json(t.pid, "print('ok')", &[]);
        assert_eq!(r.code, 0, "[{interp}] {}", r.stderr);
        let json = json.unwrap();
        assert!(
            json["method"]["method"]
                .as_str()
                .unwrap()
                .starts_with("ptrace"),
            "[{interp}] {json}"
        );
        assert_eq!(json["stdout"], "ok\n");
        let r =
            run(memsleuth().args(["exec", "--method", "pep768", &t.pid.to_string(), "print(1)"]));
        assert_eq!(r.code, 1);
        assert!(
            r.stderr.contains("remote debugging disabled"),
            "[{interp}] {}",
            r.stderr
        );
    }
}

fn spawn_target_env(interp: &Interpreter, env: &[(&str, &str)]) -> common::Target {
    for (k, v) in env {
        // SAFETY: tests in this binary that use this run one interpreter at a
        // time and only read the variable when spawning.
        unsafe { std::env::set_var(k, v) };
    }
    let t = spawn_target(interp, "idle", &["--main", "spin"]).unwrap();
    for (k, _) in env {
        unsafe { std::env::remove_var(k) };
    }
    t
}

/// Paths owned by uid 65534 under the target's `/tmp/memsleuth-*` (two
/// levels deep), with their modification times.
fn owned_by_nobody(pid: u32) -> std::collections::BTreeSet<(String, i64)> {
    use std::os::unix::fs::MetadataExt;
    let root = format!("/proc/{pid}/root/tmp");
    let mut out = std::collections::BTreeSet::new();
    for name in memsleuth_dirs(pid) {
        let top = format!("{root}/{name}");
        let mut paths = vec![top.clone()];
        if let Ok(d) = std::fs::read_dir(&top) {
            paths.extend(
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().display().to_string()),
            );
        }
        for p in paths {
            if let Ok(m) = std::fs::symlink_metadata(&p)
                && m.uid() == 65534
            {
                out.insert((p, m.mtime()));
            }
        }
    }
    out
}

#[test]
fn unprivileged_user_gets_a_clear_error_and_leaves_nothing() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        return;
    }
    let interp = &common::interpreters()[0];
    let t = spawn_target(interp, "idle", &["--main", "sleep"]).unwrap();
    // Other tests (a target run as nobody in agent_session) may have left
    // nobody's session directories; only new ones would be ours.
    let before = owned_by_nobody(t.pid);
    let r = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_memsleuth"))
        .args(["exec", &t.pid.to_string(), "print(1)"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("belongs to uid 0 (root)") && r.stderr.contains("sudo"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "one sentence: {}", r.stderr);
    // Nothing was created as nobody by this run.
    let after = owned_by_nobody(t.pid);
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "nobody left {new:?}");
    assert!(t.is_alive());
}

#[test]
fn shell_through_a_pty() {
    let driver = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drive_shell.py");
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "idle", &["--main", "sleep"]).unwrap();
        let home = tempfile::tempdir().unwrap();
        let r = run(Command::new("python3")
            .arg(&driver)
            .arg(env!("CARGO_BIN_EXE_memsleuth"))
            .arg(t.pid.to_string())
            .env("HOME", home.path()));
        assert_eq!(
            r.code, 0,
            "[{interp}] shell session failed:\n{}\n{}",
            r.stdout, r.stderr
        );
        // History persisted.
        let history =
            std::fs::read_to_string(home.path().join(".memsleuth_history")).unwrap_or_default();
        assert!(
            history.contains("x = 41"),
            "[{interp}] history not saved: {history:?}"
        );
        assert!(t.is_alive());
    });
}
