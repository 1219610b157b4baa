//! `memsleuth run`: programs started with the launch listener, reached
//! without ptrace (tests/targets/launch_target.py).
//!
//! The unprivileged tests run the program *and* memsleuth as nobody, with a
//! program that made itself non-dumpable, so that neither ptrace nor
//! /proc/PID/{maps,smaps,fd,mem} is open to the tool: everything must go
//! through the listener. Only interpreters that start as nobody are used
//! there (pyenv's shared builds need root's environment).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Interpreter, Run, for_each_interpreter, run, targets_dir};

const NOBODY: u32 = 65534;
/// Another unprivileged user (daemon).
const OTHER: u32 = 1;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_memsleuth")
}

fn target_script() -> PathBuf {
    targets_dir().join("launch_target.py")
}

/// `cmd` as `uid` (None: as we are), without the caller's PYTHON* variables.
fn as_user(uid: Option<u32>, program: &str) -> Command {
    let mut c = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--clear-groups",
                "--",
                program,
            ]);
            c
        }
        None => Command::new(program),
    };
    c.env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir("/");
    c
}

/// One test at a time: each already runs its interpreters in parallel, and
/// doctor's GIL budget (2% of its observation) must not pay for a
/// starved machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}

/// Whether the tests may become nobody (root, with setpriv).
fn setpriv_works() -> bool {
    euid() == 0 && Command::new("setpriv").arg("--version").output().is_ok()
}

/// A program started with `memsleuth run`, killed on drop.
struct Launched {
    child: Child,
    pid: u32,
    uid: u32,
}

impl Launched {
    fn start(uid: Option<u32>, interp: &Path, args: &[&str]) -> Launched {
        let mut child = as_user(uid, bin())
            .args(["run", "--"])
            .arg(interp)
            .arg("-u")
            .arg(target_script())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn memsleuth run");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).expect("read ready line");
        let pid: u32 = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ready line from {interp:?}: {line:?}"));
        // Keep draining, so that the program never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Launched {
            child,
            pid,
            uid: uid.unwrap_or_else(euid),
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Killed, its exit handler cannot clean up: the test does.
        let dir = launch_dir_of(self.pid, self.uid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = dir {
            remove_launch_dir(&dir);
        }
    }
}

/// What a killed program leaves (the next `memsleuth run` would sweep it).
fn remove_launch_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(base) = dir.parent() {
        let _ = std::fs::remove_dir(base);
    }
}

fn memsleuth_as(uid: Option<u32>, args: &[&str]) -> Run {
    run(as_user(uid, bin()).args(args))
}

/// Interpreters that start as an unprivileged user.
fn unprivileged_interpreters() -> Vec<Interpreter> {
    common::interpreters()
        .into_iter()
        .filter(|i| {
            // Through `memsleuth run` itself: setpriv execs with root's
            // capabilities still in effect, so it may start what nobody
            // cannot (a pyenv build under /root).
            as_user(Some(NOBODY), bin())
                .args(["run", "--"])
                .arg(&i.path)
                .args(["-c", "pass"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

#[test]
fn nondumpable_program_as_nobody_eval_types_doctor() {
    let _one = one_at_a_time();
    if !setpriv_works() {
        eprintln!("needs root and setpriv; skipping");
        return;
    }
    let interps = unprivileged_interpreters();
    assert!(
        !interps.is_empty(),
        "no interpreter starts as nobody (/usr/bin/python3.11 should)"
    );
    for interp in &interps {
        let label = &interp.label;
        let t = Launched::start(Some(NOBODY), &interp.path, &["--nondumpable", "grow"]);
        assert_eq!(
            t.pid,
            t.child.id(),
            "[{label}] memsleuth run execs the program"
        );
        // Non-dumpable: its /proc files are root's, ptrace is refused.
        let maps = std::fs::metadata(format!("/proc/{}/maps", t.pid)).unwrap();
        assert_eq!(maps.uid(), 0, "[{label}] the target is not non-dumpable");
        let p = t.pid.to_string();
        let refused = memsleuth_as(
            Some(NOBODY),
            &["eval", &p, "1", "--method", "ptrace", "--timeout", "2"],
        );
        assert_eq!(refused.code, 1, "[{label}] ptrace: {}", refused.stderr);
        assert!(
            refused.stderr.contains("not dumpable"),
            "[{label}] {}",
            refused.stderr
        );

        let r = memsleuth_as(
            Some(NOBODY),
            &["eval", &p, "len(sys.modules['__main__'].cache) > 0"],
        );
        assert_eq!(
            (r.code, r.stdout.trim()),
            (0, "True"),
            "[{label}] eval: {}",
            r.stderr
        );

        // The other attach commands take the same way in.
        for (args, expect) in [
            (
                &["exec", &p, "print(len(sys.modules['__main__'].cache) > 0)"][..],
                "True",
            ),
            (&["gc", &p], "automatic collection"),
            // /proc/PID/smaps is root's: the program reads it for us.
            (&["maps", &p], "[heap]"),
            (&["why", &p, "--type", "__main__.Record"], "__main__.cache"),
            (
                &["growth", &p, "--interval", "1s", "--samples", "2"],
                "__main__.Record",
            ),
        ] {
            let r = memsleuth_as(Some(NOBODY), args);
            assert!(
                r.code == 0 && r.stdout.contains(expect),
                "[{label}] {args:?}: {}\n{}",
                r.stderr,
                r.stdout
            );
        }
        let mut shell = as_user(Some(NOBODY), bin())
            .args(["shell", &p])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        shell
            .stdin
            .take()
            .unwrap()
            .write_all(b"n = len(sys.modules['__main__'].cache)\nprint(n > 0, os.getpid())\n")
            .unwrap();
        let out = shell.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(&format!("True {p}")),
            "[{label}] shell: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let r = memsleuth_as(Some(NOBODY), &["types", &p, "--json", "--limit", "0"]);
        assert_eq!(r.code, 0, "[{label}] types: {}", r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let records = j["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "__main__.Record")
            .unwrap_or_else(|| panic!("[{label}] no Record row: {}", r.stdout));
        assert!(
            records["count"].as_u64().unwrap() > 0,
            "[{label}] {records}"
        );
        // The RSS beside the census comes from status (readable by all).
        assert!(j["rss_bytes"].as_u64().unwrap_or(0) > 0, "[{label}] {j}");

        let r = memsleuth_as(Some(NOBODY), &["doctor", &p, "--duration", "20s", "--json"]);
        assert!(
            r.code == 3,
            "[{label}] doctor should say Leak (exit 3), got {}: {}\n{}",
            r.code,
            r.stderr,
            r.stdout
        );
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(j["findings"][0]["kind"], "python-objects", "[{label}] {j}");
        assert!(
            j["findings"][0]["evidence"]["types"]
                .to_string()
                .contains("__main__.Record"),
            "[{label}] {j}"
        );
        // The /proc side was read through the program: mappings and fds.
        let skipped = j["skipped"].to_string();
        assert!(!skipped.contains("python heap"), "[{label}] {skipped}");

        // Another unprivileged user: one sentence, nothing done.
        let r = memsleuth_as(Some(OTHER), &["eval", &p, "1"]);
        assert_eq!(r.code, 1, "[{label}] other uid: {}", r.stdout);
        assert_eq!(r.stderr.trim().lines().count(), 1, "[{label}] {}", r.stderr);
        assert!(
            r.stderr.contains("belongs to uid 65534"),
            "[{label}] {}",
            r.stderr
        );
        assert!(t.child.id() == t.pid && Path::new(&format!("/proc/{p}")).exists());

        // A normal exit (its own SIGUSR1 handler): nothing of ours stays.
        let dir = launch_dir_of(t.pid, NOBODY).expect("socket directory");
        let mut t = t;
        unsafe { libc::kill(t.pid as i32, libc::SIGUSR1) };
        let status = t.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "[{label}] {status:?}");
        assert!(!dir.exists(), "[{label}] {dir:?} left behind");
        let left: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.iter()
                .all(|n| !n.to_string_lossy().starts_with(&format!("{p}-"))),
            "[{label}] {left:?}"
        );

        // Output and status, as nobody too.
        let direct = echo(Some(NOBODY), &interp.path, false, "5");
        let launched = echo(Some(NOBODY), &interp.path, true, "5");
        assert_eq!(direct.2, 5, "[{label}] {direct:?}");
        assert_eq!(launched, direct, "[{label}]");
        eprintln!("[{label}] ok");
    }
}

/// Runs the echo mode with `input` on stdin, directly or through
/// `memsleuth run`; returns (stdout, stderr, status).
fn echo(uid: Option<u32>, interp: &Path, launched: bool, status: &str) -> (String, String, i32) {
    let mut c = if launched {
        let mut c = as_user(uid, bin());
        c.args(["run", "--"]).arg(interp);
        c
    } else {
        as_user(uid, &interp.to_string_lossy())
    };
    let mut child = c
        .arg(target_script())
        .args(["echo", status, "-I", "--", "x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first line\nsecond\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn output_status_and_environment_are_the_programs() {
    let _one = one_at_a_time();
    for_each_interpreter(|i| {
        let direct = echo(None, &i.path, false, "7");
        let launched = echo(None, &i.path, true, "7");
        assert_eq!(direct.2, 7, "[{}] {direct:?}", i.label);
        assert!(direct.0.contains("SECOND"), "[{}] {direct:?}", i.label);
        assert_eq!(launched, direct, "[{}]", i.label);
    });
}

#[test]
fn signals_reach_the_program_and_no_process_is_left() {
    let _one = one_at_a_time();
    for_each_interpreter(|i| {
        let mut t = Launched::start(None, &i.path, &["grow", "10"]);
        // No wrapper: memsleuth run's pid is the program, with no children.
        let exe = std::fs::read_link(format!("/proc/{}/exe", t.pid)).unwrap();
        assert_eq!(
            exe,
            std::fs::canonicalize(&i.path).unwrap(),
            "[{}] memsleuth run did not exec the program",
            i.label
        );
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid)).unwrap();
        assert_eq!(children.trim(), "", "[{}]", i.label);
        let sock = launch_dir_of(t.pid, euid()).expect("socket directory");
        unsafe { libc::kill(t.pid as i32, libc::SIGTERM) };
        let status = t.child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "[{}]", i.label);
        assert!(!Path::new(&format!("/proc/{}", t.pid)).exists());
        // Killed before its exit handler: the next `memsleuth run` sweeps
        // it (if a run of another test here has not done so already).
        let r = run(as_user(None, bin())
            .args(["run", "--"])
            .arg(&i.path)
            .args(["-c", "pass"]));
        assert_eq!(r.code, 0, "[{}] {}", i.label, r.stderr);
        assert!(!sock.exists(), "[{}] stale {sock:?} not swept", i.label);
    });
}

/// The `<base>/<pid>-<start>` directory of a launched program of `uid`.
fn launch_dir_of(pid: u32, uid: u32) -> Option<PathBuf> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = stat
        .rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .to_string();
    [
        format!("/run/user/{uid}/memsleuth"),
        format!("/tmp/memsleuth-{uid}"),
    ]
    .iter()
    .map(|b| Path::new(b).join(format!("{pid}-{start}")))
    .find(|p| p.join("s").exists())
}

#[test]
fn run_then_eval_and_exit_handler_cleans_up_on_every_interpreter() {
    let _one = one_at_a_time();
    for_each_interpreter(|i| {
        let t = Launched::start(None, &i.path, &["grow", "10"]);
        let p = t.pid.to_string();
        // --method launch: only the listener may be used.
        let r = memsleuth_as(
            None,
            &[
                "eval",
                &p,
                "--method",
                "launch",
                "(len(sys.modules['__main__'].cache) >= 0, os.getpid())",
            ],
        );
        assert_eq!(r.code, 0, "[{}] {}", i.label, r.stderr);
        assert_eq!(r.stdout.trim(), format!("(True, {p})"), "[{}]", i.label);
        // A second session works too (the first one ended cleanly).
        let r = memsleuth_as(None, &["exec", &p, "--method", "launch", "print(6 * 7)"]);
        assert_eq!(
            (r.code, r.stdout.trim()),
            (0, "42"),
            "[{}] {}",
            i.label,
            r.stderr
        );
        let dir = launch_dir_of(t.pid, euid()).expect("socket directory");
        // The listener deleted its own file at start-up (and any .pyc):
        // only the socket and the token are on disk while it runs.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["s", "token"], "[{}] in {dir:?}", i.label);
        // The program's own SIGUSR1 handler exits normally: the listener's
        // exit handler removes everything it made.
        let mut t = t;
        unsafe { libc::kill(t.pid as i32, libc::SIGUSR1) };
        let status = t.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "[{}] {status:?}", i.label);
        assert!(!dir.exists(), "[{}] {dir:?} left behind", i.label);
        drop(t);
    });
}

/// `sh -c 'memsleuth run ... & wait'`, printing the program's ready line;
/// returns (the shell, the program's pid).
fn under_a_shell(interp: &Path, extra: &[&str]) -> (Child, u32) {
    let line = format!(
        "{} run {} -- {} -u {} grow 10 & wait",
        bin(),
        extra.join(" "),
        interp.display(),
        target_script().display()
    );
    let mut sh = as_user(None, "sh")
        .args(["-c", &line])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(sh.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    let pid: u32 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ready line: {ready:?}"));
    std::thread::spawn(move || for _ in out.lines() {});
    (sh, pid)
}

/// Whether `pid` is gone (or a zombie waiting for init) within `secs`.
fn ends_within(pid: u32, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(st) if st.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => return true,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    false
}

#[test]
fn killing_the_parent_leaves_no_orphan() {
    let _one = one_at_a_time();
    for_each_interpreter(|i| {
        let (mut sh, pid) = under_a_shell(&i.path, &[]);
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: u32 = ppid
            .rsplit(") ")
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            ppid,
            sh.id(),
            "[{}] the program is the shell's child",
            i.label
        );
        let dir = launch_dir_of(pid, euid()).expect("socket directory");
        sh.kill().unwrap();
        sh.wait().unwrap();
        assert!(
            ends_within(pid, 5),
            "[{}] program {pid} outlived its parent",
            i.label
        );
        remove_launch_dir(&dir);

        // --survive-parent: it keeps running, as a plain `python` would.
        let (mut sh, pid) = under_a_shell(&i.path, &["--survive-parent"]);
        let dir = launch_dir_of(pid, euid()).expect("socket directory");
        sh.kill().unwrap();
        sh.wait().unwrap();
        assert!(
            !ends_within(pid, 2),
            "[{}] --survive-parent: program ended",
            i.label
        );
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(ends_within(pid, 5), "[{}]", i.label);
        remove_launch_dir(&dir);
    });
}

#[test]
fn without_run_method_launch_says_what_to_do() {
    let _one = one_at_a_time();
    let mut plain = Command::new("sleep").arg("30").spawn().unwrap();
    let r = memsleuth_as(
        None,
        &["eval", &plain.id().to_string(), "--method", "launch", "1"],
    );
    let _ = plain.kill();
    let _ = plain.wait();
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("was not started with `memsleuth run`"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
}

#[test]
fn isolated_interpreters_are_refused_before_starting() {
    let _one = one_at_a_time();
    for flags in [["-I"], ["-E"], ["-S"]] {
        let r = run(as_user(None, bin())
            .args(["run", "--", "/usr/bin/python3.11"])
            .args(flags)
            .args(["-c", "print('ran')"]));
        assert_eq!(r.code, 1, "{flags:?}: {}", r.stdout);
        assert!(!r.stdout.contains("ran"));
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(flags[0]), "{}", r.stderr);
    }
    let r = run(as_user(None, bin()).args(["run", "--", "/nonexistent/python"]));
    assert_eq!(r.code, 127, "{}", r.stderr);
}

#[test]
fn the_program_reads_its_own_proc_files_for_us_on_every_interpreter() {
    let _one = one_at_a_time();
    use memsleuth::inject::launch::relay::relay_for;
    for_each_interpreter(|i| {
        let t = Launched::start(None, &i.path, &["grow", "10"]);
        let label = &i.label;
        let relay = relay_for(t.pid).unwrap_or_else(|| panic!("[{label}] no relay"));
        let maps = String::from_utf8(relay.read("maps").unwrap()).unwrap();
        let exe = std::fs::read_link(format!("/proc/{}/exe", t.pid)).unwrap();
        assert!(
            maps.lines().any(|l| l.ends_with(&*exe.to_string_lossy()))
                || maps.contains("libpython"),
            "[{label}] {maps}"
        );
        let status = String::from_utf8(relay.read("status").unwrap()).unwrap();
        assert!(
            status.contains(&format!("\nPid:\t{}\n", t.pid)),
            "[{label}] {status}"
        );
        assert_eq!(relay.read_link("exe").unwrap(), exe.to_string_lossy());
        // Its fds as /proc shows them, less the relay's and the listener's.
        let fds = relay.fds().unwrap();
        for fd in [0, 1, 2] {
            let mine = std::fs::read_link(format!("/proc/{}/fd/{fd}", t.pid)).unwrap();
            assert!(
                fds.contains(&(fd, mine.to_string_lossy().into_owned())),
                "[{label}] {fds:?}"
            );
        }
        let sockets = fds.iter().filter(|(_, l)| l.starts_with("socket:")).count();
        assert_eq!(sockets, 0, "[{label}] {fds:?}");
        // Only the listed files, one name at a time.
        for bad in ["mem", "environ/../mem", "../../etc/passwd", "fd/0"] {
            assert!(relay.read(bad).is_err(), "[{label}] {bad}");
        }
        // The same connection keeps serving.
        assert!(relay.read("statm").is_ok(), "[{label}]");
    });
}

#[test]
fn a_program_holding_the_gil_gets_one_sentence_within_the_timeout() {
    let _one = one_at_a_time();
    for_each_interpreter(|i| {
        let t = Launched::start(None, &i.path, &["stuck"]);
        let started = std::time::Instant::now();
        let r = memsleuth_as(None, &["eval", &t.pid.to_string(), "1", "--timeout", "2"]);
        let took = started.elapsed();
        assert_eq!(r.code, 1, "[{}] {}", i.label, r.stdout);
        assert!(
            r.stderr.contains("holds the GIL"),
            "[{}] {}",
            i.label,
            r.stderr
        );
        assert_eq!(
            r.stderr.trim().lines().count(),
            1,
            "[{}] {}",
            i.label,
            r.stderr
        );
        assert!(took.as_secs() < 8, "[{}] took {took:?}", i.label);
        assert!(Path::new(&format!("/proc/{}", t.pid)).exists());
    });
}

/// The modules a program sees: `launch_target.py modules`.
fn modules(interp: &Path, launched: bool) -> std::collections::BTreeSet<String> {
    let mut c = if launched {
        let mut c = as_user(None, bin());
        c.args(["run", "--"]).arg(interp);
        c
    } else {
        as_user(None, &interp.to_string_lossy())
    };
    let r = run(c.arg(target_script()).arg("modules"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout.lines().map(str::to_string).collect()
}

#[test]
fn the_listener_leaves_only_atexit_and_its_own_name_in_sys_modules() {
    let _one = one_at_a_time();
    for_each_interpreter(|i| {
        let direct = modules(&i.path, false);
        let launched = modules(&i.path, true);
        let gone: Vec<_> = direct.difference(&launched).collect();
        assert!(gone.is_empty(), "[{}] missing {gone:?}", i.label);
        // `atexit` holds the exit handler that cleans up; `sitecustomize`
        // is the listener's module when the program has none of its own.
        let added: Vec<_> = launched
            .difference(&direct)
            .filter(|m| *m != "atexit" && *m != "sitecustomize")
            .collect();
        assert!(added.is_empty(), "[{}] added {added:?}", i.label);
    });
}

#[test]
fn the_programs_own_sitecustomize_and_pythonpath_still_apply() {
    let _one = one_at_a_time();
    let dir = tempfile::Builder::new()
        .prefix("launch-site-test-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join("sitecustomize.py"),
        "import sys\nsys.stderr.write('own sitecustomize ran\\n')\n",
    )
    .unwrap();
    let pythonpath = format!("{}:/nonexistent", dir.path().display());
    for_each_interpreter(|i| {
        let go = |launched: bool| {
            let mut c = if launched {
                let mut c = as_user(None, bin());
                c.args(["run", "--"]).arg(&i.path);
                c
            } else {
                as_user(None, &i.path.to_string_lossy())
            };
            let mut child = c
                .env("PYTHONPATH", &pythonpath)
                .arg(target_script())
                .args(["echo", "0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take();
            let out = child.wait_with_output().unwrap();
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                out.status.code(),
            )
        };
        let direct = go(false);
        assert!(
            direct.1.contains("own sitecustomize ran") && direct.0.contains("/nonexistent"),
            "[{}] {direct:?}",
            i.label
        );
        assert_eq!(go(true), direct, "[{}]", i.label);
    });
}
