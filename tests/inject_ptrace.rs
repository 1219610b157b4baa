//! The ptrace injection path against real interpreters: 2.7, 3.6–3.13
//! (pyenv, shared libpython), Debian's static /usr/bin/python3.11 and the
//! provisioned 3.14/3.15.
//!
//! Each target is a small script; the injected code writes a marker file
//! (wrapped in try/except so it never raises) and `connected` polls for it.
//! After every injection the target must still be alive and behave: its
//! heartbeat continues, a sleeping main thread still sleeps, nothing is
//! printed on stderr (an EINTR leaking out would show there).
//!
//! `MEMSLEUTH_TEST_PYTHONS` (colon-separated paths) replaces discovery.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use memsleuth::inject::ptrace::PtraceError;
use memsleuth::inject::ptrace_path::{self, PtraceMethod, PtraceOutcome, PtraceRequest};
use memsleuth::inject::remote::Tracee;
use memsleuth::inject::threads;
use memsleuth::process::Process;
use memsleuth::python::{self, PythonProcess};

// ---------------------------------------------------------------- harness

#[derive(Debug, Clone)]
struct Py {
    path: PathBuf,
    label: String,
    version: (u32, u32),
}

impl Py {
    fn is2(&self) -> bool {
        self.version.0 == 2
    }
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

fn pythons() -> Vec<Py> {
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Some(list) = std::env::var_os("MEMSLEUTH_TEST_PYTHONS") {
        paths.extend(std::env::split_paths(&list));
    } else {
        let pyenv = std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".pyenv"));
        if let Ok(dir) = std::fs::read_dir(pyenv.join("versions")) {
            let mut v: Vec<PathBuf> = dir
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin/python"))
                .collect();
            v.sort();
            paths.extend(v);
        }
        paths.push("/usr/bin/python3.11".into());
        let provisioned = std::env::var_os("MEMSLEUTH_PYTHONS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache/memsleuth/pythons"));
        for v in ["3.14", "3.15"] {
            paths.push(provisioned.join(v).join(format!("usr/bin/python{v}")));
        }
    }
    let mut found: Vec<Py> = paths
        .into_iter()
        .filter(|p| p.exists())
        .filter_map(|path| {
            let out = Command::new(&path)
                .args(["-c", "import sys; print('%d %d' % sys.version_info[:2])"])
                .env_remove("PYTHONHOME")
                .env_remove("PYTHONPATH")
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace().map(|s| s.parse::<u32>());
            let version = (it.next()?.ok()?, it.next()?.ok()?);
            let kind = if path.starts_with("/usr/bin") {
                "debian"
            } else {
                ""
            };
            Some(Py {
                label: format!("{kind}{}.{} ({})", version.0, version.1, path.display()),
                path,
                version,
            })
        })
        .collect();
    found.sort_by_key(|p| p.version);
    assert!(!found.is_empty(), "no Python interpreter found");
    found
}

/// A running target script, killed on drop; stdout and stderr collected.
struct Target {
    child: Child,
    pid: u32,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<String>>,
    label: String,
}

impl Target {
    fn spawn(py: &Py, script: &str) -> Target {
        let mut child = Command::new(&py.path)
            .args(["-u", "-c", script])
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let o = out.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                o.lock().unwrap().push(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let e = err.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let pid = child.id();
        Target {
            child,
            pid,
            out,
            err,
            label: py.label.clone(),
        }
    }

    /// Waits for a line starting with `prefix`.
    fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .out
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l.clone();
            }
            if !self.alive() {
                // Let the reader thread catch up with what was printed last.
                thread::sleep(Duration::from_millis(300));
                if let Some(l) = self
                    .out
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.starts_with(prefix))
                {
                    return l.clone();
                }
            }
            assert!(
                self.alive(),
                "{}: target exited before printing {prefix:?}; stderr: {}",
                self.label,
                self.stderr()
            );
            assert!(
                start.elapsed() < timeout,
                "{}: no {prefix:?} line; stderr: {}",
                self.label,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn lines(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    /// New stdout lines appear (the target keeps working).
    fn keeps_printing(&self, timeout: Duration) {
        let before = self.lines();
        let start = Instant::now();
        while self.lines() <= before {
            assert!(
                self.alive(),
                "{}: target died; stderr: {}",
                self.label,
                self.stderr()
            );
            assert!(
                start.elapsed() < timeout,
                "{}: target stopped printing; stderr: {}",
                self.label,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Alive and not a zombie; read from /proc (waitpid would steal ptrace
    /// stops from the injector).
    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.trim_start().chars().next())
            })
            .is_some_and(|c| c != 'Z' && c != 'X')
    }

    fn main_syscall(&self) -> Option<i64> {
        threads::read(self.pid, self.pid).and_then(|t| t.activity.syscall_nr())
    }

    fn python(&self) -> (Process, PythonProcess) {
        let proc = Process::open(self.pid).unwrap();
        let start = Instant::now();
        loop {
            let maps = proc.maps().unwrap();
            if let Some(py) = python::detect(&proc, &maps).unwrap() {
                return (proc, py);
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{}: not detected as Python",
                self.label
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_clean_stderr(&self) {
        let err = self.stderr();
        assert!(
            err.trim().is_empty(),
            "{}: the target printed on stderr:\n{err}",
            self.label
        );
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static MARKERS: AtomicUsize = AtomicUsize::new(0);

/// A marker file path and the code that writes the target's pid into it.
/// The pid check matters: a pending call queued just before a fork runs in
/// the child too if the child runs Python code (2.7's subprocess does).
fn marker_code(pid: u32) -> (PathBuf, String) {
    let n = MARKERS.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("memsleuth-inject-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let code = format!(
        "try:\n    import os\n    if os.getpid() == {pid}:\n        f = open({:?}, 'w')\n        f.write(str(os.getpid()))\n        f.close()\nexcept BaseException:\n    pass\n",
        path.display().to_string()
    );
    (path, code)
}

fn wait_for_file(path: &Path, d: Duration) -> bool {
    let start = Instant::now();
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return true;
        }
        if start.elapsed() >= d {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

struct Injected {
    result: Result<PtraceOutcome, PtraceError>,
    took: Duration,
    marker: PathBuf,
}

fn inject(t: &Target, timeout: Duration) -> Injected {
    let (proc, py) = t.python();
    let (marker, code) = marker_code(t.pid);
    let req = PtraceRequest {
        code: code.as_bytes(),
        timeout,
    };
    let start = Instant::now();
    let m = marker.clone();
    let result = ptrace_path::inject(&proc, &py, &req, &mut |d| wait_for_file(&m, d));
    let took = start.elapsed();
    if let Ok(out) = &result {
        let pid = std::fs::read_to_string(&marker).unwrap_or_default();
        let _ = std::fs::remove_file(&marker);
        assert_eq!(
            pid.trim(),
            t.pid.to_string(),
            "{}: the marker names the target ({out:?})",
            t.label
        );
        if let Some(page) = out.leftover_page {
            ptrace_path::unmap_leftover(&proc, &py, page).expect("unmap the leftover page");
            assert!(
                !mapped(t.pid, page.0),
                "{}: leftover page still mapped after unmap_leftover",
                t.label
            );
        }
    }
    Injected {
        result,
        took,
        marker,
    }
}

/// Whether an address is mapped in the process.
fn mapped(pid: u32, addr: u64) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap_or("");
        let mut it = range
            .split('-')
            .map(|x| u64::from_str_radix(x, 16).unwrap_or(0));
        let (s, e) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        s <= addr && addr < e
    })
}

/// Whether the scratch page of a direct injection was unmapped: either not
/// mapped at all, or reused and no longer holding our code.
fn scratch_gone(pid: u32, page: (u64, usize), code_start: &[u8]) -> bool {
    if !mapped(pid, page.0) {
        return true;
    }
    let mut buf = vec![0u8; code_start.len()];
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    use std::os::unix::fs::FileExt;
    mem.read_exact_at(&mut buf, page.0).is_err() || buf != code_start
}

/// Runs `f` for every interpreter, in parallel (bounded), reporting all
/// failures at the end.
fn each_python(name: &str, f: impl Fn(&Py) + Sync) {
    let pys = pythons();
    let failures = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let jobs = std::env::var("MEMSLEUTH_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(3usize);
    thread::scope(|s| {
        for _ in 0..jobs.min(pys.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(py) = pys.get(i) else { break };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(py)));
                    if let Err(e) = r {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {msg}", py.label));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{name}: {} interpreter(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn method_name(m: &PtraceMethod) -> &'static str {
    match m {
        PtraceMethod::Direct { .. } => "direct",
        PtraceMethod::Pending => "pending",
        PtraceMethod::PendingNudged { .. } => "pending+nudge",
    }
}

const T: Duration = Duration::from_secs(5);

/// A thread that prints a heartbeat from a busy loop (never in a syscall
/// for long, so never a direct candidate), for Python 2 and 3.
const BUSY_HEARTBEAT: &str = "
import threading, sys
def _hb():
    n = 0
    while True:
        n += 1
        if n % 200000 == 0:
            sys.stdout.write('hb %d\\n' % n)
_t = threading.Thread(target=_hb)
_t.daemon = True
_t.start()
";

// ---------------------------------------------------------------- scenarios

#[test]
fn main_busy_in_bytecode() {
    each_python("busy main", |py| {
        let t = Target::spawn(
            py,
            "import sys\nprint('ready')\nn = 0\nwhile True:\n    x = [i for i in range(100)]\n    n += 1\n    if n % 20000 == 0:\n        sys.stdout.write('hb %d\\n' % n)\n",
        );
        t.wait_line("ready", T);
        t.wait_line("hb", T);
        let r = inject(&t, T);
        let out = r.result.unwrap_or_else(|e| panic!("{}: {e}", t.label));
        assert_eq!(out.method, PtraceMethod::Pending, "{}", t.label);
        eprintln!(
            "{:<50} busy main       -> {:<14} {:>7.1} ms",
            t.label,
            method_name(&out.method),
            r.took.as_secs_f64() * 1e3
        );
        t.keeps_printing(T);
        t.assert_clean_stderr();
    });
}

#[test]
fn main_in_time_sleep() {
    each_python("sleeping main", |py| {
        let t = Target::spawn(
            py,
            "import time\nprint('ready')\ntime.sleep(3600)\nprint('woke')\n",
        );
        t.wait_line("ready", T);
        thread::sleep(Duration::from_millis(100));
        let before = t.main_syscall();
        let r = inject(&t, T);
        let out = r.result.unwrap_or_else(|e| panic!("{}: {e}", t.label));
        assert_eq!(
            out.method,
            PtraceMethod::Direct { tid: t.pid },
            "{}",
            t.label
        );
        assert!(
            scratch_gone(t.pid, out.scratch_page, b"try:\n    import os"),
            "{}: scratch page left mapped",
            t.label
        );
        eprintln!(
            "{:<50} sleeping main   -> {:<14} {:>7.1} ms",
            t.label,
            method_name(&out.method),
            r.took.as_secs_f64() * 1e3
        );
        // Still sleeping in the same call, no EINTR surfaced.
        thread::sleep(Duration::from_millis(300));
        assert!(t.alive(), "{}", t.label);
        assert_eq!(
            t.main_syscall(),
            before,
            "{}: the main thread left its sleep",
            t.label
        );
        assert!(
            !t.out.lock().unwrap().iter().any(|l| l == "woke"),
            "{}: time.sleep returned early",
            t.label
        );
        t.assert_clean_stderr();
        // A second injection works the same way (the restarted sleep).
        let r = inject(&t, T);
        assert!(
            matches!(
                r.result,
                Ok(PtraceOutcome {
                    method: PtraceMethod::Direct { .. },
                    ..
                })
            ),
            "{}: {:?}",
            t.label,
            r.result
        );
        t.assert_clean_stderr();
    });
}

#[test]
fn main_in_event_wait() {
    each_python("Event.wait main", |py| {
        let script =
            format!("{BUSY_HEARTBEAT}\nprint('ready')\nthreading.Event().wait()\nprint('woke')\n");
        let t = Target::spawn(py, &script);
        t.wait_line("ready", T);
        t.wait_line("hb", T);
        thread::sleep(Duration::from_millis(100));
        let r = inject(&t, T);
        if py.is2() {
            match r.result {
                Err(PtraceError::MainParkedOnLock { .. }) => {}
                other => panic!(
                    "{}: expected the 2.7 parked-on-a-lock error, got {other:?}",
                    t.label
                ),
            }
            let msg = PtraceError::MainParkedOnLock {
                threads: vec![],
                pending_page: None,
            }
            .to_string();
            assert!(
                msg.contains("2.7") && msg.contains("once the main thread wakes"),
                "{msg}"
            );
            eprintln!(
                "{:<50} Event.wait main -> 2.7 error     {:>7.1} ms",
                t.label,
                r.took.as_secs_f64() * 1e3
            );
        } else {
            let out = r.result.unwrap_or_else(|e| panic!("{}: {e}", t.label));
            assert_eq!(
                out.method,
                PtraceMethod::PendingNudged { tid: t.pid },
                "{}",
                t.label
            );
            eprintln!(
                "{:<50} Event.wait main -> {:<14} {:>7.1} ms",
                t.label,
                method_name(&out.method),
                r.took.as_secs_f64() * 1e3
            );
        }
        // The main thread went back to waiting: no 'woke', no error.
        thread::sleep(Duration::from_millis(200));
        t.keeps_printing(T);
        assert_eq!(
            t.main_syscall(),
            Some(threads::NR_FUTEX),
            "{}: main no longer waits",
            t.label
        );
        assert!(
            !t.out.lock().unwrap().iter().any(|l| l == "woke"),
            "{}: Event.wait returned",
            t.label
        );
        t.assert_clean_stderr();
    });
}

#[test]
fn main_in_thread_join_and_queue_get() {
    each_python("join/get main", |py| {
        if py.is2() {
            return;
        }
        for (what, wait) in [
            (
                "join",
                "import time\n_w = threading.Thread(target=time.sleep, args=(3600,))\n_w.daemon = True\n_w.start()\n_w.join()\n",
            ),
            ("Queue.get", "import queue\nqueue.Queue().get()\n"),
        ] {
            // The sleeping thread of the join case is a direct candidate:
            // only the busy heartbeat may exist besides main, so join on a
            // thread blocked in a lock instead.
            let wait = wait.replace(
                "target=time.sleep, args=(3600,)",
                "target=threading.Event().wait",
            );
            // Everything but the blocking call runs before "ready", so that
            // main is really parked (not still importing) when we attach.
            let wait = wait.trim_end();
            let (prep, call) = wait.rsplit_once('\n').unwrap_or(("", wait));
            let script =
                format!("{BUSY_HEARTBEAT}\n{prep}\nprint('ready')\n{call}\nprint('woke')\n");
            let t = Target::spawn(py, &script);
            t.wait_line("ready", T);
            t.wait_line("hb", T);
            thread::sleep(Duration::from_millis(100));
            let r = inject(&t, T);
            let out = r
                .result
                .unwrap_or_else(|e| panic!("{} {what}: {e}", t.label));
            assert_eq!(
                out.method,
                PtraceMethod::PendingNudged { tid: t.pid },
                "{} {what}",
                t.label
            );
            eprintln!(
                "{:<50} {what:<15} -> {:<14} {:>7.1} ms",
                t.label,
                method_name(&out.method),
                r.took.as_secs_f64() * 1e3
            );
            thread::sleep(Duration::from_millis(200));
            t.keeps_printing(T);
            assert_eq!(
                t.main_syscall(),
                Some(threads::NR_FUTEX),
                "{} {what}: main no longer waits",
                t.label
            );
            t.assert_clean_stderr();
        }
    });
}

#[test]
fn main_in_socket_accept() {
    each_python("accept main", |py| {
        let t = Target::spawn(
            py,
            "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen(1)\nprint('port %d' % s.getsockname()[1])\nc, a = s.accept()\nprint('accepted')\n",
        );
        let port: u16 = t.wait_line("port", T)[5..].trim().parse().unwrap();
        thread::sleep(Duration::from_millis(100));
        let r = inject(&t, T);
        let out = r.result.unwrap_or_else(|e| panic!("{}: {e}", t.label));
        assert_eq!(
            out.method,
            PtraceMethod::Direct { tid: t.pid },
            "{}",
            t.label
        );
        eprintln!(
            "{:<50} accept main     -> {:<14} {:>7.1} ms",
            t.label,
            method_name(&out.method),
            r.took.as_secs_f64() * 1e3
        );
        assert!(
            scratch_gone(t.pid, out.scratch_page, b"try:\n    import os"),
            "{}: scratch page left mapped",
            t.label
        );
        // accept() still works.
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.wait_line("accepted", T);
        t.assert_clean_stderr();
    });
}

/// accept() with a timeout waits in poll, which an interruption turns into
/// restart_syscall: the second injection must still see a safe wait (on
/// glibc ≥ 2.41 the syscall sits in an unexported helper, so the wrapper is
/// found from the stack).
#[test]
fn main_in_accept_with_timeout_twice() {
    each_python("accept with timeout", |py| {
        let t = Target::spawn(
            py,
            "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen(1)\ns.settimeout(60)\nprint('port %d' % s.getsockname()[1])\nc, a = s.accept()\nprint('accepted')\n",
        );
        let port: u16 = t.wait_line("port", T)[5..].trim().parse().unwrap();
        thread::sleep(Duration::from_millis(100));
        for round in 0..3 {
            let r = inject(&t, T);
            let out = r
                .result
                .unwrap_or_else(|e| panic!("{} round {round}: {e}", t.label));
            assert_eq!(
                out.method,
                PtraceMethod::Direct { tid: t.pid },
                "{} round {round}",
                t.label
            );
            // poll was interrupted: it now waits as restart_syscall.
            let start = Instant::now();
            while t.main_syscall() != Some(threads::NR_RESTART_SYSCALL) {
                assert!(
                    start.elapsed() < T,
                    "{}: main in {:?}",
                    t.label,
                    t.main_syscall()
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.wait_line("accepted", T);
        t.assert_clean_stderr();
    });
}

#[test]
fn main_holding_the_gil_in_c_is_not_reached() {
    each_python("GIL held in C", |py| {
        // Main sleeps in libc with the GIL held; a second thread wants to
        // print (blocked on the GIL) and a third sleeps in time.sleep (a
        // direct candidate that must be refused: Ensure would block).
        let script = "
import ctypes, threading, time, sys
def hb():
    while True:
        sys.stdout.write('hb\\n')
        time.sleep(0.05)
t = threading.Thread(target=hb)
t.daemon = True
t.start()
t2 = threading.Thread(target=time.sleep, args=(3600,))
t2.daemon = True
t2.start()
time.sleep(0.2)
print('ready')
ctypes.PyDLL(None).sleep(4)
print('after')
while True:
    time.sleep(1)
";
        let t = Target::spawn(py, script);
        t.wait_line("ready", T);
        thread::sleep(Duration::from_millis(150));
        let r = inject(&t, Duration::from_secs(2));
        match &r.result {
            Err(PtraceError::NotReached { threads, .. }) => {
                let main = threads
                    .iter()
                    .find(|th| th.is_main)
                    .expect("main thread reported");
                assert_eq!(main.holds_gil, Some(true), "{}: {main}", t.label);
                assert!(main.description.contains("GIL"), "{}: {main}", t.label);
                assert!(
                    r.took < Duration::from_secs(4),
                    "{}: took {:?}",
                    t.label,
                    r.took
                );
                eprintln!(
                    "{:<50} GIL held in C   -> not reached {:>7.1} ms\n{}",
                    t.label,
                    r.took.as_secs_f64() * 1e3,
                    r.result.as_ref().unwrap_err()
                );
            }
            other => panic!("{}: expected NotReached, got {other:?}", t.label),
        }
        // The target carries on when the C call returns; the late pending
        // call runs the (harmless) code.
        t.wait_line("after", Duration::from_secs(8));
        t.keeps_printing(T);
        assert!(
            wait_for_file(&r.marker, T),
            "{}: the pending call never ran",
            t.label
        );
        let _ = std::fs::remove_file(&r.marker);
        t.assert_clean_stderr();
    });
}

// ---------------------------------------------------------------- stress

/// Direct injections into a sleeping thread while other threads hammer
/// malloc: no hang, no deadlock, the target keeps printing.
#[test]
fn stress_200_cycles_with_malloc_hammering_threads() {
    let pys = pythons();
    let picks: Vec<&Py> = pys
        .iter()
        .filter(|p| matches!(p.version, (3, 12) | (3, 14)))
        .collect();
    let picks = if picks.is_empty() {
        vec![pys.last().unwrap()]
    } else {
        picks
    };
    let start = Instant::now();
    thread::scope(|s| {
        for py in picks {
            s.spawn(move || {
                let script = "
import threading, random, time, sys
def hammer():
    while True:
        b = bytearray(random.randint(1, 1 << 18))
for _ in range(3):
    t = threading.Thread(target=hammer)
    t.daemon = True
    t.start()
print('ready')
n = 0
while True:
    n += 1
    sys.stdout.write('hb %d\\n' % n)
    time.sleep(0.02)
";
                let t = Target::spawn(py, script);
                t.wait_line("ready", T);
                let mut methods = std::collections::BTreeMap::<&str, usize>::new();
                let mut times = Vec::new();
                for i in 0..200 {
                    let r = inject(&t, T);
                    let out = r.result.unwrap_or_else(|e| panic!("{} cycle {i}: {e}", t.label));
                    *methods.entry(method_name(&out.method)).or_default() += 1;
                    times.push(r.took);
                    let _ = std::fs::remove_file(&r.marker);
                    if i % 50 == 49 {
                        t.keeps_printing(T);
                    }
                }
                t.keeps_printing(T);
                t.assert_clean_stderr();
                times.sort();
                eprintln!(
                    "{:<50} 200 cycles, malloc hammering: {methods:?}, median {:.1} ms, max {:.1} ms",
                    t.label,
                    times[100].as_secs_f64() * 1e3,
                    times[199].as_secs_f64() * 1e3
                );
            });
        }
    });
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "stress took {:?}",
        start.elapsed()
    );
}

/// Injections while the target gets SIGCHLD from its children and SIGUSR1
/// (with a Python handler) from us, many per second.
#[test]
fn stress_under_a_stream_of_signals() {
    let pys = pythons();
    let picks: Vec<Py> = pys
        .into_iter()
        .filter(|p| matches!(p.version, (2, 7) | (3, 8) | (3, 11) | (3, 13) | (3, 15)))
        .collect();
    thread::scope(|s| {
        for py in &picks {
            s.spawn(move || {
                let script = "
import signal, subprocess, threading, time, sys, os
count = [0]
def on_usr1(signum, frame):
    count[0] += 1
signal.signal(signal.SIGUSR1, on_usr1)
def spawner():
    while True:
        p = subprocess.Popen(['true'])
        p.wait()
t = threading.Thread(target=spawner)
t.daemon = True
t.start()
print('ready')
while True:
    sys.stdout.write('hb %d\\n' % count[0])
    time.sleep(0.01)
";
                let t = Target::spawn(py, script);
                t.wait_line("ready", T);
                let stop = Arc::new(AtomicU64::new(0));
                let sent = Arc::new(AtomicU64::new(0));
                let (pid, st, se) = (t.pid, stop.clone(), sent.clone());
                let killer = thread::spawn(move || {
                    while st.load(Ordering::Relaxed) == 0 {
                        // SAFETY: plain kill(2) of our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
                        se.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_micros(500));
                    }
                });
                let mut methods = std::collections::BTreeMap::<&str, usize>::new();
                for i in 0..40 {
                    let r = inject(&t, T);
                    let out = r.result.unwrap_or_else(|e| panic!("{} cycle {i}: {e}", t.label));
                    *methods.entry(method_name(&out.method)).or_default() += 1;
                    let _ = std::fs::remove_file(&r.marker);
                }
                stop.store(1, Ordering::Relaxed);
                killer.join().unwrap();
                t.keeps_printing(T);
                thread::sleep(Duration::from_millis(100));
                let last = t.out.lock().unwrap().last().cloned().unwrap_or_default();
                let handled: u64 = last.trim_start_matches("hb ").parse().unwrap_or(0);
                assert!(handled > 0, "{}: SIGUSR1 handler never ran", t.label);
                t.assert_clean_stderr();
                eprintln!(
                    "{:<50} 40 cycles under signals: {methods:?}; {} SIGUSR1 sent, {handled} handled",
                    t.label,
                    sent.load(Ordering::Relaxed)
                );
            });
        }
    });
}

// ---------------------------------------------------------------- benchmark

/// Median round trip per method on a busy target (printed, not asserted).
#[test]
fn benchmark_round_trip_per_method() {
    let pys = pythons();
    let py = pys
        .iter()
        .find(|p| p.version == (3, 12))
        .unwrap_or_else(|| pys.last().unwrap());
    let busy = "import sys\nn = 0\nwhile True:\n    x = [i for i in range(100)]\n    n += 1\n    if n % 20000 == 0:\n        sys.stdout.write('hb %d\\n' % n)\n";
    let cases: [(&str, String); 3] = [
        (
            "direct",
            format!(
                "import threading, time\n_s = threading.Thread(target=time.sleep, args=(3600,))\n_s.daemon = True\n_s.start()\nprint('ready')\n{busy}"
            ),
        ),
        ("pending", format!("print('ready')\n{busy}")),
        (
            "pending+nudge",
            format!("{BUSY_HEARTBEAT}\nprint('ready')\nthreading.Event().wait()\n"),
        ),
    ];
    for (name, script) in cases {
        let t = Target::spawn(py, &script);
        t.wait_line("ready", T);
        t.wait_line("hb", T);
        let mut times = Vec::new();
        let mut others = std::collections::BTreeMap::<&str, usize>::new();
        for _ in 0..25 {
            // Let the target settle back (the nudged main thread waits
            // again once the code ran and it gave the GIL back).
            thread::sleep(Duration::from_millis(30));
            let r = inject(&t, T);
            let out = r
                .result
                .unwrap_or_else(|e| panic!("{} {name}: {e}", t.label));
            // Timing-dependent fallbacks (e.g. main caught waiting for the
            // GIL rather than in its lock wait) are counted, not timed.
            if method_name(&out.method) == name {
                times.push(r.took);
            } else {
                *others.entry(method_name(&out.method)).or_default() += 1;
            }
            let _ = std::fs::remove_file(&r.marker);
        }
        assert!(
            times.len() >= 20,
            "{} {name}: only {} of 25 used the expected method: {others:?}",
            t.label,
            times.len()
        );
        times.sort();
        eprintln!(
            "benchmark {:<40} {name:<14} median {:>6.2} ms  (min {:.2}, max {:.2}; n={}, other methods {others:?})",
            t.label,
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            times.len()
        );
        t.keeps_printing(T);
        t.assert_clean_stderr();
    }
}

// ---------------------------------------------------------------- low level

/// A remote call leaves the thread exactly as it was: registers, the whole
/// XSAVE area, and the interrupted sleep resumes with its remaining time.
#[test]
fn remote_call_restores_the_thread() {
    let pys = pythons();
    let py = pys
        .iter()
        .find(|p| p.version == (3, 11))
        .unwrap_or_else(|| pys.last().unwrap());
    let t = Target::spawn(
        py,
        "import time\nprint('ready')\ntime.sleep(1.5)\nprint('woke')\n",
    );
    t.wait_line("ready", T);
    thread::sleep(Duration::from_millis(100));
    let (_proc, py_proc) = t.python();
    let started = Instant::now();
    let mut tracee = Tracee::seize(t.pid, t.pid, T).unwrap();
    assert!(
        memsleuth::inject::remote::signals_blocked(),
        "Ctrl-C is blocked while a thread is held"
    );
    let before = *tracee.saved_regs();
    assert!(tracee.interrupted_in_syscall(), "stopped inside the sleep");
    eprintln!("xstate: {} bytes", tracee.xstate_len());
    assert!(
        tracee.xstate_len() >= 512 + 64,
        "at least the legacy area and header"
    );
    let get_this = py_proc
        .symbol_address("PyGILState_GetThisThreadState")
        .unwrap();
    let tstate = tracee.call(get_this, &[], T).unwrap();
    assert_ne!(tstate, 0, "the main thread has a thread state");
    let check = py_proc.symbol_address("PyGILState_Check").unwrap();
    assert_eq!(
        tracee.call(check, &[], T).unwrap() as u32,
        0,
        "a sleeping main thread does not hold the GIL"
    );
    for _ in 0..50 {
        assert_eq!(tracee.call(get_this, &[], T).unwrap(), tstate);
    }
    let after = *tracee.saved_regs();
    assert_eq!(format!("{before:?}"), format!("{after:?}"));
    tracee.detach().unwrap();
    assert!(!memsleuth::inject::remote::signals_blocked());
    t.wait_line("woke", T);
    let slept = started.elapsed();
    // The sleep resumed with its remaining time: not restarted from scratch
    // (≈1.5 s + what already passed) and not cut short.
    assert!(
        slept < Duration::from_millis(1500),
        "sleep restarted from scratch: {slept:?}"
    );
    t.assert_clean_stderr();
}

/// A call that blocks is abandoned at its timeout and the thread goes on as
/// before. Here the thread waits in `poll` (socket accept with a timeout),
/// whose restart uses the kernel's per-thread restart block, which the
/// abandoned call (libc `sleep`) overwrote: the wait must neither be resumed
/// as the wrong syscall nor cut short; it returns EINTR, Python retries it
/// with the remaining time (PEP 475), and the timeout fires on schedule.
#[test]
fn abandoned_call_leaves_the_thread_as_it_was() {
    each_python("abandoned call", |py| {
        if py.version < (3, 5) {
            return; // no PEP 475: an EINTR would surface
        }
        let t = Target::spawn(
            py,
            "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen(1)\ns.settimeout(2.0)\nt0 = time.time()\nprint('ready')\ntry:\n    s.accept()\n    print('accepted')\nexcept socket.timeout:\n    print('timeout after %.2f' % (time.time() - t0))\n",
        );
        t.wait_line("ready", T);
        thread::sleep(Duration::from_millis(100));
        let (proc, py_proc) = t.python();
        let sleep = ptrace_path::libc_function(&proc, "sleep")
            .unwrap()
            .expect("libc exports sleep");
        let mut tracee = Tracee::seize(t.pid, t.pid, T).unwrap();
        let (nr, rax) = tracee.stopped_syscall().expect("in a syscall");
        assert_eq!(nr, 7, "{}: accept with a timeout waits in poll", t.label);
        assert_eq!(
            rax, -516,
            "{}: poll is restarted through the restart block",
            t.label
        );
        let started = Instant::now();
        match tracee.call(sleep, &[30], Duration::from_millis(300)) {
            Err(PtraceError::Timeout { .. }) => {}
            other => panic!("{}: expected a timeout, got {other:?}", t.label),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{}", t.label);
        // Still usable after the abandoned call.
        let get_this = py_proc
            .symbol_address("PyGILState_GetThisThreadState")
            .unwrap();
        assert_ne!(tracee.call(get_this, &[], T).unwrap(), 0, "{}", t.label);
        tracee.detach().unwrap();
        let line = t.wait_line("timeout after", Duration::from_secs(6));
        let after: f64 = line["timeout after ".len()..].trim().parse().unwrap();
        assert!(
            (1.9..3.0).contains(&after),
            "{}: the 2 s accept timeout fired after {after} s",
            t.label
        );
        t.assert_clean_stderr();
        eprintln!(
            "{:<50} abandoned call: accept timed out after {after:.2} s (2 s expected)",
            t.label
        );
    });
}

/// A process stopped by job control is reported, and stays stopped; a
/// thread we already trace cannot be seized twice, and the error says who
/// traces it.
#[test]
fn stopped_and_already_traced_targets() {
    let pys = pythons();
    let py = pys.last().unwrap();
    let t = Target::spawn(
        py,
        "import time\nprint('ready')\nwhile True:\n    time.sleep(0.05)\n    print('hb')\n",
    );
    t.wait_line("ready", T);
    let first = Tracee::seize(t.pid, t.pid, T).unwrap();
    match Tracee::seize(t.pid, t.pid, T) {
        Err(PtraceError::PermissionDenied { detail, .. }) => {
            assert!(detail.contains(&std::process::id().to_string()), "{detail}")
        }
        other => panic!("expected PermissionDenied, got {:?}", other.map(|_| ())),
    }
    first.detach().unwrap();
    t.keeps_printing(T);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(t.pid as i32, libc::SIGSTOP) };
    thread::sleep(Duration::from_millis(100));
    match Tracee::seize(t.pid, t.pid, T) {
        Err(PtraceError::UnexpectedStop { detail, .. }) => {
            assert!(detail.contains("kill -CONT"), "{detail}")
        }
        other => panic!("expected UnexpectedStop, got {:?}", other.map(|_| ())),
    }
    thread::sleep(Duration::from_millis(100));
    let state = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).unwrap();
    assert!(
        state
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('T'),
        "still stopped: {state}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(t.pid as i32, libc::SIGCONT) };
    t.keeps_printing(T);
    t.assert_clean_stderr();
}

#[test]
fn thread_listing_of_a_python_process() {
    let pys = pythons();
    let py = pys.last().unwrap();
    let t = Target::spawn(
        py,
        "import threading, time\nth = threading.Thread(target=time.sleep, args=(60,), name='sleeper')\nth.daemon = True\nth.start()\nprint('ready')\nthreading.Event().wait()\n",
    );
    t.wait_line("ready", T);
    thread::sleep(Duration::from_millis(200));
    let list = threads::list(t.pid).unwrap();
    assert!(list[0].is_main);
    assert_eq!(list[0].activity.syscall_nr(), Some(threads::NR_FUTEX));
    assert_eq!(list[0].describe(), "waiting on a lock (futex)");
    assert!(
        list.iter()
            .any(|th| !th.is_main && th.activity.in_safe_syscall()),
        "{list:?}"
    );
}
