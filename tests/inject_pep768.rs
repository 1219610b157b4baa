//! PEP 768 injection against real interpreters: Debian 3.14/3.15 (provisioned
//! by scripts/provision-pythons) must run our script; disabled targets and
//! 3.13/3.12 must be refused cleanly; a blocked main thread is worked around
//! with `tid`, and `cancel` withdraws what is still pending.
//!
//! Interpreters that are missing are skipped with a note, except under
//! `CI=true`, where 3.14, 3.15, 3.13 and 3.12 must all exist.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use memsleuth::inject::pep768::{self, Pep768Error, Pep768Request, Pep768Status};
use memsleuth::process::Process;
use memsleuth::python::{PythonProcess, detect};

const RUN_TIMEOUT: Duration = Duration::from_secs(2);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn pythons_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MEMSLEUTH_PYTHONS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/memsleuth/pythons")
}

fn pyenv_root() -> Option<PathBuf> {
    if let Some(r) = std::env::var_os("PYENV_ROOT").filter(|r| !r.is_empty()) {
        return Some(PathBuf::from(r));
    }
    let out = Command::new("pyenv")
        .arg("root")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then(|| PathBuf::from(s))
}

/// An interpreter path, or None with a note (a panic under CI=true).
fn found(what: &str, path: Option<PathBuf>) -> Option<PathBuf> {
    match path.filter(|p| p.is_file()) {
        Some(p) => Some(p),
        None if ci() => {
            panic!("CI=true but {what} is missing (run scripts/provision-pythons / pyenv install)")
        }
        None => {
            eprintln!("note: {what} not found, skipping it");
            None
        }
    }
}

/// Provisioned Debian 3.14 / 3.15.
fn provisioned() -> Vec<(String, PathBuf)> {
    ["3.14", "3.15"]
        .into_iter()
        .filter_map(|v| {
            let p = pythons_dir().join(v).join(format!("usr/bin/python{v}"));
            found(&format!("Python {v} ({})", p.display()), Some(p)).map(|p| (v.to_string(), p))
        })
        .collect()
}

/// pyenv's `preferred`, else any `<minor>.*` version.
fn pyenv_python(preferred: &str, minor: &str) -> Option<PathBuf> {
    let root = pyenv_root()?.join("versions");
    let exact = root.join(preferred).join("bin/python");
    if exact.is_file() {
        return Some(exact);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{minor}."))
        })
        .map(|e| e.path().join("bin/python"))
        .filter(|p| p.is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

// ---------------------------------------------------------------------------
// Targets.

/// A single-threaded busy loop in bytecode.
const BUSY: &str = r#"
import os, sys, threading
print("ready", os.getpid(), threading.get_native_id(), int(sys.is_remote_debug_enabled()) if hasattr(sys, "is_remote_debug_enabled") else -1, flush=True)
x = 0
while True:
    x += 1
"#;

/// Main thread parked in time.sleep(3600) (a SIGUSR1 handler records that it
/// woke and ran bytecode), another thread busy in bytecode.
const BLOCKED_MAIN: &str = r#"
import os, signal, sys, threading, time
woke = sys.argv[1]
def on_usr1(signum, frame):
    with open(woke, "a") as f:
        f.write("woke\n")
signal.signal(signal.SIGUSR1, on_usr1)
started = threading.Event()
busy_ids = []
def busy():
    busy_ids.append(threading.get_native_id())
    started.set()
    x = 0
    while True:
        x += 1
threading.Thread(target=busy, daemon=True).start()
started.wait()
# One line from one thread: print() from two threads can interleave.
print("ready", os.getpid(), threading.get_native_id(), busy_ids[0], flush=True)
while True:
    time.sleep(3600)
"#;

struct Target {
    child: Child,
    pid: u32,
    /// `key values...` lines printed before (and including) `ready`.
    lines: Vec<Vec<String>>,
    label: String,
    stderr: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Target {
    fn spawn(
        label: &str,
        python: &Path,
        pre_args: &[&str],
        code: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Target {
        let tmp = tempfile::Builder::new()
            .prefix("memsleuth-pep768-target-")
            .tempdir_in("/tmp")
            .unwrap();
        let stderr = tmp.path().join("stderr");
        let mut cmd = Command::new(python);
        cmd.args(pre_args)
            .arg("-u")
            .arg("-c")
            .arg(code)
            .args(args)
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHON_DISABLE_REMOTE_DEBUG")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("[{label}] spawn {}: {e}", python.display()));
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut t = Target {
            child,
            pid,
            lines: Vec::new(),
            label: label.to_string(),
            stderr,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => t
                    .lines
                    .push(line.split_whitespace().map(str::to_string).collect()),
                Err(e) => t.fail(&format!("no ready line: {e:?}")),
            }
            if t.line("ready").is_some() {
                return t;
            }
        }
    }

    fn line(&self, key: &str) -> Option<&[String]> {
        self.lines
            .iter()
            .find(|l| l.first().is_some_and(|k| k == key))
            .map(|l| &l[1..])
    }

    fn field(&self, key: &str, i: usize) -> i64 {
        self.line(key)
            .and_then(|l| l.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                self.fail(&format!("no field {i} in `{key}` line"));
            })
    }

    fn main_tid(&self) -> u64 {
        self.field("ready", 1) as u64
    }

    fn proc_and_python(&self) -> (Process, PythonProcess) {
        let proc = Process::open(self.pid).unwrap();
        let py = detect(&proc, &proc.maps().unwrap())
            .unwrap()
            .unwrap_or_else(|| self.fail("detect found no Python"));
        (proc, py)
    }

    /// Waits until the thread sleeps in (clock_)nanosleep: then it cannot run
    /// bytecode until it wakes.
    fn wait_in_nanosleep(&self, tid: u64) {
        let wchan = format!("/proc/{}/task/{tid}/wchan", self.pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let w = std::fs::read_to_string(&wchan).unwrap_or_default();
            if w.contains("nanosleep") {
                return;
            }
            if w.is_empty() || w == "0" {
                // No wchan on this kernel: give it time instead.
                thread::sleep(Duration::from_millis(300));
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!("thread {tid} never went to sleep (wchan {w:?})"));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "[{}] target {}: {why}\nstdout: {:?}\nstderr:\n{}",
            self.label,
            self.pid,
            self.lines,
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A script under /tmp that writes the native id of the thread running it
/// into `marker` (atomically, by rename).
struct Script {
    dir: tempfile::TempDir,
    path: String,
    marker: PathBuf,
}

impl Script {
    fn new(tag: &str) -> Script {
        let dir = tempfile::Builder::new()
            .prefix("memsleuth-pep768-")
            .tempdir_in("/tmp")
            .unwrap();
        let marker = dir.path().join(format!("{tag}.marker"));
        let path = dir.path().join(format!("{tag}.py"));
        let m = marker.to_str().unwrap();
        std::fs::write(
            &path,
            format!(
                "import os, threading\nwith open({tmp:?}, 'w') as f:\n    f.write(str(threading.get_native_id()))\nos.rename({tmp:?}, {m:?})\n",
                tmp = format!("{m}.tmp"),
            ),
        )
        .unwrap();
        Script {
            path: path.to_str().unwrap().to_string(),
            marker,
            dir,
        }
    }

    fn request(&self, tid: Option<u32>) -> Pep768Request<'_> {
        Pep768Request {
            script_path: &self.path,
            tid,
        }
    }

    /// Polls for the marker; returns when it appeared and which thread wrote it.
    fn wait(&self, timeout: Duration) -> Option<(Instant, u64)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.marker) {
                return Some((Instant::now(), s.trim().parse().unwrap_or(0)));
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_micros(200));
        }
    }

    fn ran(&self) -> bool {
        self.marker.exists()
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (in {})", self.path, self.dir.path().display())
    }
}

/// Reads target memory through /proc/PID/mem, independently of memsleuth.
fn peek(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(format!("/proc/{pid}/mem"))
        .and_then(|f| f.read_exact_at(&mut buf, addr))
        .unwrap_or_else(|e| panic!("read {len} bytes at {addr:#x} of {pid}: {e}"));
    buf
}

fn peek_i32(pid: u32, addr: u64) -> i32 {
    i32::from_ne_bytes(peek(pid, addr, 4).try_into().unwrap())
}

fn tgkill(pid: u32, tid: u64, sig: i32) {
    // SAFETY: plain syscall on our own child.
    let r = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            pid as libc::c_long,
            tid as libc::c_long,
            sig as libc::c_long,
        )
    };
    assert_eq!(
        r,
        0,
        "tgkill({pid}, {tid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn runs_script_on_314_and_315_and_times_it() {
    for (v, python) in provisioned() {
        let label = format!("python{v}");
        let t = Target::spawn(&label, &python, &[], BUSY, &[], &[]);
        assert_eq!(
            t.field("ready", 2),
            1,
            "[{label}] sys.is_remote_debug_enabled()"
        );
        let (proc, py) = t.proc_and_python();

        let (runtime, off) = pep768::read_offsets(&proc, &py).unwrap();
        eprintln!(
            "[{label}] {} _PyRuntime at {runtime:#x}; offsets read at run time: {off:?}",
            py.version.unwrap()
        );
        match pep768::status(&proc, &py).unwrap() {
            Pep768Status::Enabled {
                main_tid,
                version,
                main_pending,
                runtime_addr,
            } => {
                assert_eq!(main_tid, Some(t.main_tid()), "[{label}]");
                assert_eq!(Some(version), py.version, "[{label}]");
                assert_eq!(runtime_addr, runtime);
                assert!(!main_pending);
            }
            other => t.fail(&format!("status {other:?}")),
        }
        let threads = pep768::threads(&proc, &py).unwrap();
        assert_eq!(threads.len(), 1, "[{label}] {threads:?}");
        assert!(
            threads[0].is_main && threads[0].has_frame && threads[0].native_tid == t.main_tid()
        );

        // Bad requests write nothing and name the remedy.
        let long = format!("/tmp/{}", "x".repeat(600));
        for (path, want) in [
            (long.as_str(), "at most 511"),
            ("relative.py", "absolute"),
            ("/tmp/memsleuth-no-such-file.py", "cannot see it"),
        ] {
            let err = pep768::schedule(
                &proc,
                &py,
                &Pep768Request {
                    script_path: path,
                    tid: None,
                },
            )
            .unwrap_err();
            assert!(
                matches!(err, Pep768Error::BadScriptPath { .. }) && err.to_string().contains(want),
                "[{label}] {err}"
            );
        }
        let s = Script::new("nothread");
        let err = pep768::schedule(&proc, &py, &s.request(Some(1))).unwrap_err();
        assert!(
            matches!(err, Pep768Error::NoSuchThread { tid: 1, .. }),
            "[{label}] {err}"
        );
        eprintln!("[{label}] e.g.: {err}");

        let mut latencies = Vec::new();
        let mut call_times = Vec::new();
        for i in 0..20 {
            let s = Script::new(&format!("run{i}"));
            let start = Instant::now();
            let sched = pep768::schedule(&proc, &py, &s.request(None))
                .unwrap_or_else(|e| t.fail(&e.to_string()));
            call_times.push(start.elapsed());
            assert!(sched.is_main);
            let Some((at, tid)) = s.wait(RUN_TIMEOUT) else {
                t.fail(&format!(
                    "run {i}: {s:?} did not run within {RUN_TIMEOUT:?}"
                ));
            };
            assert_eq!(tid, t.main_tid(), "[{label}] ran on the main thread");
            latencies.push(at - start);
            assert!(!pep768::is_pending(&proc, &sched).unwrap());
            // Cancelling a request that already ran is a no-op.
            pep768::cancel(&proc, &sched).unwrap();
        }
        eprintln!(
            "[{label}] schedule → marker: median {:?} (min {:?}, max {:?}) over 20 runs; schedule() itself: median {:?}",
            median(latencies.clone()),
            latencies.iter().min().unwrap(),
            latencies.iter().max().unwrap(),
            median(call_times),
        );

        // The same through /proc/PID/mem, as on kernels without
        // process_vm_readv/writev (ENOSYS).
        pep768::force_proc_mem_on_this_thread(true);
        for i in 0..5 {
            let s = Script::new(&format!("procmem{i}"));
            let sched = pep768::schedule(&proc, &py, &s.request(None))
                .unwrap_or_else(|e| t.fail(&format!("via /proc/PID/mem: {e}")));
            assert!(
                s.wait(RUN_TIMEOUT).is_some(),
                "[{label}] via /proc/PID/mem: {s:?} did not run"
            );
            assert!(!pep768::is_pending(&proc, &sched).unwrap());
        }
        pep768::force_proc_mem_on_this_thread(false);
        assert!(
            t.stderr().is_empty(),
            "[{label}] target stderr: {}",
            t.stderr()
        );
    }
}

fn check_disabled(label: &str, python: &Path, pre_args: &[&str], env: &[(&str, &str)]) {
    let t = Target::spawn(label, python, pre_args, BUSY, &[], env);
    assert_eq!(
        t.field("ready", 2),
        0,
        "[{label}] sys.is_remote_debug_enabled()"
    );
    let (proc, py) = t.proc_and_python();
    assert_eq!(
        pep768::status(&proc, &py).unwrap(),
        Pep768Status::DisabledInTarget,
        "[{label}]"
    );

    let (_, off) = pep768::read_offsets(&proc, &py).unwrap();
    let main = pep768::threads(&proc, &py)
        .unwrap()
        .into_iter()
        .find(|th| th.is_main)
        .unwrap();
    let region = main.tstate_addr + off.remote_debugger_support;
    let len = (off.debugger_script_path + off.debugger_script_path_size) as usize;
    let before = peek(t.pid, region, len);

    let s = Script::new("disabled");
    let err = pep768::schedule(&proc, &py, &s.request(None)).unwrap_err();
    assert!(
        matches!(err, Pep768Error::Disabled { pid } if pid == t.pid),
        "[{label}] {err:?}"
    );
    eprintln!("[{label}] {err}");
    assert!(
        err.to_string().contains("ptrace"),
        "[{label}] the message names the fallback"
    );
    assert_eq!(
        peek(t.pid, region, len),
        before,
        "[{label}] nothing written"
    );
    assert!(
        s.wait(Duration::from_millis(300)).is_none(),
        "[{label}] script ran in a disabled target"
    );
}

#[test]
fn disabled_by_environment_variable() {
    for (v, python) in provisioned() {
        check_disabled(
            &format!("python{v} PYTHON_DISABLE_REMOTE_DEBUG=1"),
            &python,
            &[],
            &[("PYTHON_DISABLE_REMOTE_DEBUG", "1")],
        );
    }
}

#[test]
fn disabled_by_x_option() {
    for (v, python) in provisioned() {
        check_disabled(
            &format!("python{v} -X disable-remote-debug"),
            &python,
            &["-X", "disable-remote-debug"],
            &[],
        );
    }
}

#[test]
fn older_interpreters_are_unsupported() {
    for (preferred, minor) in [("3.13.0", "3.13"), ("3.12.1", "3.12")] {
        let Some(python) = found(
            &format!("pyenv Python {minor}"),
            pyenv_python(preferred, minor),
        ) else {
            continue;
        };
        let label = format!("python{minor}");
        let t = Target::spawn(&label, &python, &[], BUSY, &[], &[]);
        let (proc, py) = t.proc_and_python();
        let reason = match pep768::status(&proc, &py).unwrap() {
            Pep768Status::Unsupported(r) => r,
            other => t.fail(&format!("status {other:?}")),
        };
        eprintln!("[{label}] Unsupported: {reason}");
        assert!(reason.contains(minor), "[{label}] {reason}");
        let s = Script::new("old");
        let err = pep768::schedule(&proc, &py, &s.request(None)).unwrap_err();
        assert!(
            matches!(err, Pep768Error::Unsupported { .. }),
            "[{label}] {err:?}"
        );
        eprintln!("[{label}] {err}");

        // Without the version from the binary, the table in memory decides:
        // 3.13's says 3.13, 3.12 has no cookie.
        let mut blind = py.clone();
        blind.version = None;
        let reason = match pep768::status(&proc, &blind).unwrap() {
            Pep768Status::Unsupported(r) => r,
            other => t.fail(&format!("status without version {other:?}")),
        };
        eprintln!("[{label}] from memory: {reason}");
        let want = if minor == "3.13" {
            "3.13.0 has no remote debugging"
        } else {
            "cookie"
        };
        assert!(reason.contains(want), "[{label}] {reason}");
        assert!(pep768::schedule(&proc, &blind, &s.request(None)).is_err());
        assert!(s.wait(Duration::from_millis(200)).is_none());
    }
}

#[test]
fn blocked_main_thread_tid_and_cancel() {
    for (v, python) in provisioned() {
        let label = format!("python{v} blocked main");
        let dir = tempfile::Builder::new()
            .prefix("memsleuth-pep768-woke-")
            .tempdir_in("/tmp")
            .unwrap();
        let woke = dir.path().join("woke");
        let t = Target::spawn(
            &label,
            &python,
            &[],
            BLOCKED_MAIN,
            &[woke.to_str().unwrap()],
            &[],
        );
        let main_tid = t.main_tid();
        let busy_tid = t.field("ready", 2) as u64;
        t.wait_in_nanosleep(main_tid);
        let (proc, py) = t.proc_and_python();

        let threads = pep768::threads(&proc, &py).unwrap();
        eprintln!("[{label}] threads: {threads:?}");
        assert_eq!(threads.len(), 2, "[{label}] {threads:?}");
        let main = threads.iter().find(|th| th.is_main).unwrap();
        let busy = threads.iter().find(|th| !th.is_main).unwrap();
        assert_eq!(
            (main.native_tid, busy.native_tid),
            (main_tid, busy_tid),
            "[{label}]"
        );
        assert_eq!(threads[0].native_tid, busy_tid, "[{label}] newest first");
        // A thread blocked in time.sleep still has a frame; the GIL tells.
        assert!(main.has_frame && busy.has_frame, "[{label}] {threads:?}");
        let (mut main_held, mut busy_held) = (0, 0);
        for _ in 0..20 {
            for th in pep768::threads(&proc, &py).unwrap() {
                if th.holds_gil {
                    *(if th.is_main {
                        &mut main_held
                    } else {
                        &mut busy_held
                    }) += 1;
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
        eprintln!("[{label}] GIL samples: busy {busy_held}/20, main {main_held}/20");
        assert_eq!(
            main_held, 0,
            "[{label}] the sleeping main thread held the GIL"
        );
        assert!(
            busy_held > 0,
            "[{label}] the busy thread never held the GIL"
        );

        // On the main thread: pending, but it does not run.
        let on_main = Script::new("main");
        let sched_main = pep768::schedule(&proc, &py, &on_main.request(None)).unwrap();
        assert!(sched_main.is_main && sched_main.native_tid == main_tid);
        assert!(
            on_main.wait(Duration::from_secs(1)).is_none(),
            "[{label}] ran on a main thread blocked in sleep"
        );
        assert_eq!(
            peek_i32(t.pid, sched_main.pending_addr()),
            1,
            "[{label}] still pending"
        );
        assert!(pep768::is_pending(&proc, &sched_main).unwrap());
        match pep768::status(&proc, &py).unwrap() {
            Pep768Status::Enabled {
                main_tid: Some(tid),
                main_pending: true,
                ..
            } => assert_eq!(tid, main_tid),
            other => t.fail(&format!("status {other:?}")),
        }
        let again = Script::new("again");
        let err = pep768::schedule(&proc, &py, &again.request(None)).unwrap_err();
        assert!(
            matches!(err, Pep768Error::AlreadyPending { .. }),
            "[{label}] {err:?}"
        );
        eprintln!("[{label}] {err}");

        // On the busy thread: runs there.
        let on_busy = Script::new("busy");
        let start = Instant::now();
        let sched_busy =
            pep768::schedule(&proc, &py, &on_busy.request(Some(busy_tid as u32))).unwrap();
        assert!(!sched_busy.is_main);
        let Some((at, tid)) = on_busy.wait(RUN_TIMEOUT) else {
            t.fail("the script scheduled on the busy thread did not run");
        };
        assert_eq!(tid, busy_tid, "[{label}] ran on the busy thread");
        eprintln!(
            "[{label}] busy thread ran the script after {:?}",
            at - start
        );

        // Cancel the main thread's request: the flag goes back to 0 ...
        pep768::cancel(&proc, &sched_main).unwrap();
        assert_eq!(
            peek_i32(t.pid, sched_main.pending_addr()),
            0,
            "[{label}] cancelled"
        );
        assert!(!pep768::is_pending(&proc, &sched_main).unwrap());
        // ... and when main wakes and runs bytecode (a SIGUSR1 handler), the
        // script does not run.
        tgkill(t.pid, main_tid, libc::SIGUSR1);
        let deadline = Instant::now() + RUN_TIMEOUT;
        while !woke.exists() {
            assert!(
                Instant::now() < deadline,
                "[{label}] main never ran its signal handler"
            );
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(500));
        assert!(
            !on_main.ran(),
            "[{label}] the cancelled script ran when main woke"
        );

        // Control: without cancel, waking main does run it.
        t.wait_in_nanosleep(main_tid);
        let control = Script::new("control");
        pep768::schedule(&proc, &py, &control.request(None)).unwrap();
        assert!(
            control.wait(Duration::from_millis(300)).is_none(),
            "[{label}] control ran before main woke"
        );
        tgkill(t.pid, main_tid, libc::SIGUSR1);
        let Some((_, tid)) = control.wait(RUN_TIMEOUT) else {
            t.fail("waking main did not run the pending script");
        };
        assert_eq!(tid, main_tid, "[{label}]");
        assert!(!on_main.ran(), "[{label}]");
        assert!(
            t.stderr().is_empty(),
            "[{label}] target stderr: {}",
            t.stderr()
        );
    }
}

/// (address, bytes) to write into the target.
type Poke = (u64, Vec<u8>);

fn poke(pid: u32, addr: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .and_then(|f| f.write_all_at(bytes, addr))
        .unwrap_or_else(|e| panic!("write {} bytes at {addr:#x} of {pid}: {e}", bytes.len()));
}

fn peek_u64(pid: u32, addr: u64) -> u64 {
    u64::from_ne_bytes(peek(pid, addr, 8).try_into().unwrap())
}

/// Waits until /proc/PID/stat shows the wanted state letter.
fn wait_state(pid: u32, stopped: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .chars()
            .next()
            .unwrap();
        if (state == 'T') == stopped {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} state {state}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// A (stopped) target whose interpreter structures we corrupt in memory, one
/// way at a time: every read must end in an error, never a panic or a hang,
/// and schedule must not write through a pointer into read-only memory (as
/// /proc/PID/mem would let it). After restoring, the target must still work.
#[test]
fn hostile_target_memory_is_refused_not_trusted() {
    for (v, python) in provisioned() {
        let label = format!("python{v} hostile");
        let t = Target::spawn(&label, &python, &[], BUSY, &[], &[]);
        let (proc, py) = t.proc_and_python();
        let (runtime, off) = pep768::read_offsets(&proc, &py).unwrap();
        let pid = t.pid;
        let interp = peek_u64(pid, runtime + off.interpreters_head);
        let main = pep768::threads(&proc, &py).unwrap()[0].tstate_addr;
        // A page in a read-only mapping (the executable's headers/rodata).
        let ro = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| {
                f[1] == "r--p" && {
                    let (a, b) = f[0].split_once('-').unwrap();
                    u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap()
                        >= 0x2000
                }
            })
            .map(|f| u64::from_str_radix(f[0].split_once('-').unwrap().0, 16).unwrap())
            .expect("a read-only mapping of two pages");
        let fake = ro + 0x800;

        // SAFETY: signals to our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        wait_state(pid, true);

        let s = Script::new("hostile");
        let tnext = main + off.tstate_next;
        let word = |a: u64, v: u64| (a, v.to_ne_bytes().to_vec());
        // (what, pokes, schedule on the main thread's tid rather than "main")
        let cases: Vec<(&str, Vec<Poke>, bool)> = vec![
            ("thread list loops", vec![word(tnext, main)], true),
            (
                "misaligned tstate.next",
                vec![word(tnext, 0x1234_5679)],
                true,
            ),
            (
                "unmapped tstate.next",
                vec![word(tnext, 0x7ff0_0000_0000)],
                true,
            ),
            (
                "kernel-space tstate.next",
                vec![word(tnext, 0xffff_8000_0000_0000)],
                true,
            ),
            (
                "interpreter list loops",
                vec![
                    word(interp + off.interp_id, 5),
                    word(interp + off.interp_next, interp),
                ],
                false,
            ),
            (
                "interpreters_head in the table",
                vec![word(runtime + 40, 8)],
                false,
            ),
            ("table version", vec![word(runtime + 8, 0x0316_00f0)], false),
            ("table cookie", vec![(runtime, b"ydebugpy".to_vec())], false),
            (
                "remote_debugger_support out of range",
                vec![word(runtime + (off.table_size - 40), 1 << 30)],
                false,
            ),
            (
                "threads_main to a stranger",
                vec![word(interp + off.threads_main, fake)],
                false,
            ),
            (
                "threads_main into read-only memory, round trip forged",
                vec![
                    word(interp + off.threads_main, fake),
                    word(fake + off.tstate_interp, interp),
                ],
                false,
            ),
        ];
        for (what, pokes, by_tid) in cases {
            let saved: Vec<Poke> = pokes
                .iter()
                .map(|(a, b)| (*a, peek(pid, *a, b.len())))
                .collect();
            for (a, b) in &pokes {
                poke(pid, *a, b);
            }
            let fake_before = peek(pid, fake, off.tstate_size as usize);
            let started = Instant::now();
            let status = pep768::status(&proc, &py);
            let threads = pep768::threads(&proc, &py);
            let req = s.request(by_tid.then_some(t.main_tid() as u32));
            let sched = pep768::schedule(&proc, &py, &req);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "[{label}] {what}: slow"
            );
            eprintln!(
                "[{label}] {what}:\n    status: {}\n    threads: {}\n    schedule: {}",
                match &status {
                    Ok(st) => format!("{st:?}"),
                    Err(e) => e.to_string(),
                },
                match &threads {
                    Ok(list) => format!("{} thread(s)", list.len()),
                    Err(e) => e.to_string(),
                },
                match &sched {
                    Ok(_) => "Ok".to_string(),
                    Err(e) => e.to_string(),
                }
            );
            assert!(
                sched.is_err(),
                "[{label}] {what}: schedule accepted a corrupted target"
            );
            let is =
                |r: &Result<Vec<pep768::RemoteThread>, Pep768Error>,
                 f: fn(&Pep768Error) -> bool| { r.as_ref().err().is_some_and(f) };
            match what {
                "unmapped tstate.next" => {
                    assert!(
                        is(&threads, |e| matches!(e, Pep768Error::Memory { .. })),
                        "[{label}] {what}"
                    )
                }
                w if w.contains("tstate.next") || w.contains("loops") || w.contains("stranger") => {
                    assert!(
                        is(&threads, |e| matches!(e, Pep768Error::Corrupt { .. })),
                        "[{label}] {what}"
                    )
                }
                w if w.contains("forged") => {
                    assert!(
                        matches!(sched, Err(Pep768Error::NotWritable { .. })),
                        "[{label}] {what}: {sched:?}"
                    );
                    assert_eq!(
                        peek(pid, fake, fake_before.len()),
                        fake_before,
                        "[{label}] wrote read-only memory"
                    );
                }
                _ => assert!(
                    matches!(status, Err(Pep768Error::BadTable { .. })),
                    "[{label}] {what}: {status:?}"
                ),
            }
            for (a, b) in saved.iter().rev() {
                poke(pid, *a, b);
            }
        }
        // Nothing was left pending, and the restored target still works.
        assert_eq!(
            peek_i32(pid, main + off.remote_debugger_support),
            0,
            "[{label}]"
        );
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        wait_state(pid, false);
        assert!(
            s.wait(Duration::from_millis(300)).is_none(),
            "[{label}] a refused request ran"
        );
        pep768::schedule(&proc, &py, &s.request(None)).unwrap();
        assert!(
            s.wait(RUN_TIMEOUT).is_some(),
            "[{label}] restored target did not run the script"
        );
        assert!(
            t.stderr().is_empty(),
            "[{label}] target stderr: {}",
            t.stderr()
        );
    }
}
