//! Shared test harness: discovers real Python interpreters and runs the leak
//! targets in `tests/targets/` under them.
//!
//! Use from an integration test with `mod common;`.
//!
//! Environment:
//! * `MEMSLEUTH_TEST_PYTHONS` — colon- or comma-separated interpreter paths;
//!   replaces discovery entirely.
//! * `MEMSLEUTH_PYTHONS_DIR` — where provisioned interpreters live
//!   (default `~/.cache/memsleuth/pythons`).
//! * `CI=true` — every expected interpreter must be found (unless overridden).
//! * `MEMSLEUTH_TEST_JOBS` — how many interpreters `for_each_interpreter` runs
//!   at once (default: all).
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// A Python interpreter found on this machine.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub path: PathBuf,
    pub version: (u32, u32, u32),
    /// e.g. "pyenv 3.11.7", "debian /usr/bin/python3.11", "provisioned 3.14.0"
    pub label: String,
    /// "pyenv-shared" | "debian-static" | "provisioned" | "env"
    pub kind: &'static str,
}

impl Interpreter {
    pub fn minor(&self) -> (u32, u32) {
        (self.version.0, self.version.1)
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.minor() >= (major, minor)
    }
}

impl std::fmt::Display for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.label)
    }
}

const VERSION_PROBE: &str = r#"import sys; print("%d %d %d" % sys.version_info[:3])"#;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What CI must provide: (kind, major, minor).
const EXPECTED_IN_CI: &[(&str, u32, u32)] = &[
    ("pyenv-shared", 2, 7),
    ("pyenv-shared", 3, 6),
    ("pyenv-shared", 3, 7),
    ("pyenv-shared", 3, 8),
    ("pyenv-shared", 3, 9),
    ("pyenv-shared", 3, 10),
    ("pyenv-shared", 3, 11),
    ("pyenv-shared", 3, 12),
    ("pyenv-shared", 3, 13),
    ("debian-static", 3, 11),
    ("provisioned", 3, 14),
    ("provisioned", 3, 15),
];

/// All interpreters to test against (discovered once per test binary,
/// sorted by version).
pub fn interpreters() -> Vec<Interpreter> {
    interpreters_cached().to_vec()
}

fn interpreters_cached() -> &'static [Interpreter] {
    static CACHE: OnceLock<Vec<Interpreter>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let list = discover();
        let mut msg = format!("memsleuth tests: {} Python interpreter(s):\n", list.len());
        for i in &list {
            msg.push_str(&format!(
                "  {:<36} {}.{}.{:<4} {:<14} {}\n",
                i.label,
                i.version.0,
                i.version.1,
                i.version.2,
                i.kind,
                i.path.display()
            ));
        }
        eprint!("{msg}");
        list
    })
}

fn discover() -> Vec<Interpreter> {
    if let Ok(over) = std::env::var("MEMSLEUTH_TEST_PYTHONS")
        && !over.trim().is_empty()
    {
        let cands = over
            .split([':', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| (PathBuf::from(s), "env"))
            .collect();
        let list = probe_all(cands);
        assert!(
            !list.is_empty(),
            "MEMSLEUTH_TEST_PYTHONS={over:?} names no working interpreter"
        );
        return list;
    }

    let mut cands: Vec<(PathBuf, &'static str)> = Vec::new();
    if let Some(root) = pyenv_root() {
        for dir in sorted_dir(&root.join("versions")) {
            let p = dir.join("bin/python");
            if p.exists() {
                cands.push((p, "pyenv-shared"));
            }
        }
    }
    for p in sorted_dir(Path::new("/usr/bin")) {
        if is_versioned_python3(&p) {
            cands.push((p, "debian-static"));
        }
    }
    for dir in sorted_dir(&pythons_dir()) {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("3.") {
            continue;
        }
        for p in sorted_dir(&dir.join("usr/bin")) {
            if is_versioned_python3(&p) {
                cands.push((p, "provisioned"));
            }
        }
    }
    let list = probe_all(cands);

    if std::env::var("CI").is_ok_and(|v| v == "true") {
        let missing: Vec<String> = EXPECTED_IN_CI
            .iter()
            .filter(|(kind, ma, mi)| {
                !list
                    .iter()
                    .any(|i| i.kind == *kind && i.minor() == (*ma, *mi))
            })
            .map(|(kind, ma, mi)| format!("{ma}.{mi} ({kind})"))
            .collect();
        if !missing.is_empty() {
            let found: Vec<&str> = list.iter().map(|i| i.label.as_str()).collect();
            panic!(
                "CI=true but these Python interpreters are missing: {}\n\
                 found: {:?}\n\
                 (pyenv versions under $(pyenv root)/versions, Debian's /usr/bin/python3.11, \
                 provisioned 3.14/3.15 under {} via scripts/provision-pythons)",
                missing.join(", "),
                found,
                pythons_dir().display()
            );
        }
    }
    list
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn pyenv_root() -> Option<PathBuf> {
    if let Some(r) = std::env::var_os("PYENV_ROOT").filter(|r| !r.is_empty()) {
        return Some(PathBuf::from(r));
    }
    if let Ok(out) = Command::new("pyenv")
        .arg("root")
        .stderr(Stdio::null())
        .output()
    {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !s.is_empty() {
            return Some(PathBuf::from(s));
        }
    }
    home().map(|h| h.join(".pyenv")).filter(|p| p.is_dir())
}

fn pythons_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MEMSLEUTH_PYTHONS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    home()
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".cache/memsleuth/pythons")
}

/// Entries of a directory, sorted; empty when it does not exist.
fn sorted_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// `python3.<digits>` exactly (no `-config`, `m`, `-dbg` ...).
fn is_versioned_python3(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("python3.")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

fn probe_all(cands: Vec<(PathBuf, &'static str)>) -> Vec<Interpreter> {
    // Dedupe by canonical path, first source wins.
    let mut seen = BTreeSet::new();
    let mut uniq = Vec::new();
    for (p, kind) in cands {
        match std::fs::canonicalize(&p) {
            Ok(c) => {
                if seen.insert(c) {
                    uniq.push((p, kind));
                }
            }
            Err(e) => eprintln!("memsleuth tests: skipping {}: {e}", p.display()),
        }
    }
    let mut list: Vec<Interpreter> = thread::scope(|s| {
        let handles: Vec<_> = uniq
            .iter()
            .map(|(p, kind)| s.spawn(move || probe(p, kind)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    list.sort_by(|a, b| (a.version, a.kind, &a.path).cmp(&(b.version, b.kind, &b.path)));
    list
}

fn probe(path: &Path, kind: &'static str) -> Option<Interpreter> {
    let mut child = match Command::new(path)
        .args(["-c", VERSION_PROBE])
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("memsleuth tests: skipping {}: {e}", path.display());
            return None;
        }
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!(
                    "memsleuth tests: skipping {}: version probe timed out",
                    path.display()
                );
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u32> = text
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    if !out.status.success() || nums.len() != 3 {
        eprintln!(
            "memsleuth tests: skipping {}: version probe failed ({}): {}{}",
            path.display(),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let version = (nums[0], nums[1], nums[2]);
    let v = format!("{}.{}.{}", version.0, version.1, version.2);
    let label = match kind {
        "pyenv-shared" => format!("pyenv {v}"),
        "debian-static" => format!("debian {}", path.display()),
        "provisioned" => format!("provisioned {v}"),
        _ => format!("env {} ({v})", path.display()),
    };
    Some(Interpreter {
        path: path.to_path_buf(),
        version,
        label,
        kind,
    })
}

/// Run `f` for every interpreter (concurrently, up to `MEMSLEUTH_TEST_JOBS`
/// at a time), catching panics per interpreter; afterwards panic listing
/// every interpreter that failed.
pub fn for_each_interpreter(f: impl Fn(&Interpreter) + Sync) {
    let list = interpreters_cached();
    assert!(
        !list.is_empty(),
        "no Python interpreters found (set MEMSLEUTH_TEST_PYTHONS, install pyenv versions, \
         or run scripts/provision-pythons)"
    );
    let jobs = std::env::var("MEMSLEUTH_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .filter(|&j| j > 0)
        .unwrap_or(list.len());
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..jobs.min(list.len()) {
            s.spawn(|| {
                loop {
                    let idx = next.fetch_add(1, Ordering::SeqCst);
                    let Some(interp) = list.get(idx) else { break };
                    let res = catch_unwind(AssertUnwindSafe(|| f(interp)));
                    match res {
                        Ok(()) => eprintln!("[{}] ok", interp.label),
                        Err(e) => {
                            let msg = panic_message(&*e);
                            eprintln!("[{}] FAILED: {msg}", interp.label);
                            failures.lock().unwrap().push((idx, msg));
                        }
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    if !failures.is_empty() {
        failures.sort();
        let lines: Vec<String> = failures
            .iter()
            .map(|(idx, msg)| format!("  {}: {msg}", list[*idx].label))
            .collect();
        panic!(
            "{} of {} interpreter(s) failed:\n{}",
            failures.len(),
            list.len(),
            lines.join("\n")
        );
    }
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_string()
    }
}

/// What a finished command printed, and its exit code (-1: killed by a signal).
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion and keeps its output as text.
pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run memsleuth");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `memsleuth` binary under test.
pub fn memsleuth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memsleuth"))
}

pub fn targets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets")
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const TERM_GRACE: Duration = Duration::from_secs(2);
const SIGTERM: i32 = 15;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A running target process. Dropping it terminates it (SIGTERM, then
/// SIGKILL after a grace period), reaps it, and removes anything it left
/// behind (its private TMPDIR, a /dev/shm segment named in `info["name"]`).
pub struct Target {
    pub pid: u32,
    /// The `key value` lines printed before `ready` (e.g. "shmid" -> "7").
    pub info: HashMap<String, String>,
    pub interp_label: String,
    /// Script name, e.g. "sysv_shm_reattach".
    pub name: String,
    child: Mutex<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
    /// Holds the stderr file and is the target's $TMPDIR.
    tmp: tempfile::TempDir,
}

/// Spawn `<interp> -u tests/targets/<name>.py args...` and wait for its
/// `ready <pid>` line. Returns None when the target reports `unsupported`.
/// Panics (with the target's stderr) on a crash or a 20 s timeout.
pub fn spawn_target(interp: &Interpreter, name: &str, args: &[&str]) -> Option<Target> {
    let script = targets_dir().join(format!("{name}.py"));
    assert!(script.is_file(), "no such target: {}", script.display());
    let tmp = tempfile::Builder::new()
        .prefix("memsleuth-target-")
        .tempdir()
        .expect("create temp dir for target");
    let stderr_path = tmp.path().join("stderr.txt");
    let stderr_file = File::create(&stderr_path).expect("create target stderr file");
    let mut child = Command::new(&interp.path)
        .arg("-u")
        .arg(&script)
        .args(args)
        .env("TMPDIR", tmp.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONSTARTUP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file))
        .spawn()
        .unwrap_or_else(|e| panic!("[{}] spawn {name}: {e}", interp.label));

    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<String>();
    {
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::clone(&lines);
        thread::Builder::new()
            .name(format!("drain-{name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line); // receiver gone after ready: fine
                }
            })
            .expect("spawn stdout drain thread");
    }

    let mut t = Target {
        pid: child.id(),
        info: HashMap::new(),
        interp_label: interp.label.clone(),
        name: name.to_string(),
        child: Mutex::new(child),
        lines,
        stderr_path,
        tmp,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let (key, value) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                match key {
                    "ready" => {
                        let pid: u32 = value
                            .trim()
                            .parse()
                            .unwrap_or_else(|_| t.fail(&format!("bad ready line {line:?}")));
                        if pid != t.pid {
                            t.fail(&format!("ready pid {pid} != child pid {}", t.pid));
                        }
                        return Some(t);
                    }
                    "unsupported" => {
                        let status = t.wait_exit(Duration::from_secs(5));
                        eprintln!(
                            "[{}] {name}: unsupported: {value} (exit {status:?})",
                            t.interp_label
                        );
                        return None;
                    }
                    _ => {
                        t.info.insert(key.to_string(), value.to_string());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                t.fail(&format!("no `ready` line within {READY_TIMEOUT:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = t.wait_exit(Duration::from_secs(5));
                t.fail(&format!("stdout closed before `ready` (exit {status:?})"))
            }
        }
    }
}

impl Target {
    /// Exit status if the process has exited (it is reaped then), else None.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    pub fn is_alive(&self) -> bool {
        self.try_status().is_none()
    }

    /// The target's private $TMPDIR (removed when the Target is dropped).
    pub fn tmpdir(&self) -> &Path {
        self.tmp.path()
    }

    /// Everything the target printed on stdout so far (including `ready`).
    pub fn stdout_lines_so_far(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Send a signal to the target (while it is not reaped, the pid is ours).
    pub fn signal(&self, sig: i32) {
        if self.is_alive() {
            unsafe {
                kill(self.pid as i32, sig);
            }
        }
    }

    /// Waits for a stdout line starting with `prefix` printed after the
    /// first `skip` lines; returns the rest of that line.
    pub fn wait_line(&self, prefix: &str, skip: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let lines = self.stdout_lines_so_far();
            if let Some(l) = lines.iter().skip(skip).find(|l| l.starts_with(prefix)) {
                return Some(l[prefix.len()..].trim().to_string());
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The state the target reports on SIGUSR2 (modules, threads, fds,
    /// names in __main__): what an attach must leave as it found it.
    pub fn report_state(&self) -> serde_json::Value {
        const SIGUSR2: i32 = 12;
        let skip = self.stdout_lines_so_far().len();
        self.signal(SIGUSR2);
        // A process-directed signal can land on a thread other than the
        // sleeping main one, which then runs the handler only when it wakes:
        // ask once more before giving up.
        let line = self
            .wait_line("state ", skip, Duration::from_secs(5))
            .or_else(|| {
                self.signal(SIGUSR2);
                self.wait_line("state ", skip, Duration::from_secs(10))
            })
            .unwrap_or_else(|| {
                panic!(
                    "[{}] {}: no state line after SIGUSR2",
                    self.interp_label, self.name
                )
            });
        serde_json::from_str(&line).expect("state JSON")
    }

    /// A target blocked reading its fifo (heap_population, heap_gil_held):
    /// its `report` line (gc.get_objects() per type, the audit events since
    /// the last report).
    pub fn fifo_report(&self) -> serde_json::Value {
        use std::io::Write;
        let skip = self.stdout_lines_so_far().len();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.info["fifo"])
            .unwrap();
        f.write_all(b"report\n").unwrap();
        let line = self
            .wait_line("report ", skip, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("[{}] no report", self.interp_label));
        serde_json::from_str(&line).unwrap()
    }

    /// The target's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `info[key]` parsed, panicking with context when absent or malformed.
    pub fn info_parse<T: std::str::FromStr>(&self, key: &str) -> T {
        let v = self.info.get(key).unwrap_or_else(|| {
            panic!(
                "[{}] {}: no `{key}` line in {:?}",
                self.interp_label, self.name, self.info
            )
        });
        v.parse().unwrap_or_else(|_| {
            panic!(
                "[{}] {}: bad `{key}` value {v:?}",
                self.interp_label, self.name
            )
        })
    }

    /// Send SIGTERM and wait up to `grace` for exit. Returns the exit status
    /// if the target exited (its own cleanup handlers have then run), None if
    /// it is still running (Drop will SIGKILL it).
    pub fn terminate(&self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_status() {
            return Some(st);
        }
        // Not reaped yet, so the pid cannot have been reused.
        unsafe {
            kill(self.pid as i32, SIGTERM);
        }
        self.wait_exit(grace)
    }

    fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL (if still running) and reap.
    pub fn kill_and_reap(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap();
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let _ = child.kill();
        child.wait().ok()
    }

    fn fail(&self, why: &str) -> ! {
        self.kill_and_reap();
        panic!(
            "[{}] target {} (pid {}): {why}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.interp_label,
            self.name,
            self.pid,
            self.stdout_lines_so_far().join("\n"),
            self.stderr()
        );
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.terminate(TERM_GRACE).is_none() {
            eprintln!(
                "[{}] {}: no exit {TERM_GRACE:?} after SIGTERM, sending SIGKILL",
                self.interp_label, self.name
            );
            self.kill_and_reap();
        }
        // Safety net for SIGKILLed targets; the TempDir (their $TMPDIR) goes too.
        if let Some(name) = self.info.get("name") {
            let p = Path::new("/dev/shm").join(name.trim_start_matches('/'));
            if p.exists() {
                eprintln!(
                    "[{}] {}: removing leftover {}",
                    self.interp_label,
                    self.name,
                    p.display()
                );
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Small /proc readers (independent of memsleuth, for cross-checking).

/// /proc/PID/status as key -> first number (kB for memory fields).
pub fn proc_status(pid: u32) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), n))
        })
        .collect()
}

/// Number of open fds (entries of /proc/PID/fd).
pub fn proc_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .count()
}

/// Lines of /proc/PID/maps.
pub fn proc_maps(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/maps: {e}"))
        .lines()
        .map(str::to_string)
        .collect()
}

/// Shmids listed in /proc/sysvipc/shm.
pub fn sysv_shmids() -> Vec<i64> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// A core of `pid` made with gdb's `gcore` (it only reads memory) in
/// `dir`, as `core.PID`.
pub fn gcore(pid: u32, dir: &std::path::Path) -> std::path::PathBuf {
    let prefix = dir.join("core");
    let out = std::process::Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        .output()
        .expect("run gcore");
    let core = dir.join(format!("core.{pid}"));
    assert!(
        core.is_file(),
        "gcore made no core: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    core
}
