//! Agent sessions against real interpreters, with the injector simulated: a
//! harness runs the rendered bootstrap with `exec` in `__main__` (exactly what
//! PyRun_SimpleString does) while its main thread keeps printing heartbeats
//! that report its own state (threads, modules and `__main__` names added since
//! it started). The tests drive full sessions and then check from the
//! heartbeats that the target is back where it was.

mod common;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Interpreter, for_each_interpreter, interpreters};
use memsleuth::agent::protocol::CompileStatus;
use memsleuth::agent::session::render_bootstrap;
use memsleuth::agent::{ExecMode, Listener, Session, SessionError};
use memsleuth::process::Process;

/// The simulated target. Heartbeat: `hb N threads=T mods=A,B names=X tenum=E`
/// where mods/names are what was added since start ("-" when nothing) and
/// tenum is len(threading.enumerate()) when threading is imported, else "-".
/// After running a command file: `ran NAME new=<names added by the exec>`.
const HARNESS: &str = r#"
from __future__ import print_function
import sys, os, time
MODE = sys.argv[2]
if MODE == 'threading':
    import threading
if MODE == 'printer':
    # A second thread printing all the time, each print() switching threads
    # in the middle (in __str__ of its second argument).
    try:
        import _thread as _t
    except ImportError:
        import thread as _t
    class Slow(object):
        def __str__(self):
            time.sleep(0.0002)
            return 's'
    STARTED = []
    def printer():
        STARTED.append(1)
        while True:
            print('p', Slow(), 'q')
    _t.start_new_thread(printer, ())
    while not STARTED:
        time.sleep(0.001)
def say(line):
    # One write per line: another thread may print at the same time.
    sys.stdout.write(line + '\n')
CMD_DIR = sys.argv[1]
HB = 0
RAN = set()
name = path = src = before = new = f = None
def state():
    mods = sorted(set(sys.modules) - BASE_MODS)
    names = sorted(set(globals()) - BASE_NAMES)
    th = sys.modules.get('threading')
    tenum = th is not None and str(len(th.enumerate())) or '-'
    return 'threads=%d mods=%s names=%s tenum=%s' % (
        len(sys._current_frames()), ','.join(mods) or '-', ','.join(names) or '-', tenum)
BASE_MODS = set(sys.modules)
BASE_NAMES = None
BASE_NAMES = set(globals())
say('threading %d' % ('threading' in sys.modules))
say('ready %d' % os.getpid())
while True:
    HB += 1
    say('hb %d %s' % (HB, state()))
    for name in sorted(os.listdir(CMD_DIR)):
        if name.endswith('.py') and name not in RAN:
            RAN.add(name)
            path = os.path.join(CMD_DIR, name)
            with open(path) as f:
                src = f.read()
            before = set(globals())
            try:
                exec(compile(src, '<string>', 'exec', 0, True), globals())
            except BaseException:
                import traceback
                traceback.print_exc()
            new = sorted(set(globals()) - before)
            say('ran %s new=%s' % (name, ','.join(new) or '-'))
    time.sleep(0.02)
"#;

/// How a harness starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    /// `import threading` first.
    Threading,
    /// A second thread printing all the time.
    Printer,
}
const WAIT: Duration = Duration::from_secs(20);

struct Harness {
    label: String,
    pid: u32,
    child: Mutex<Child>,
    dir: tempfile::TempDir,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    stderr_path: PathBuf,
    next_cmd: u32,
    threading: bool,
    /// What a heartbeat says when the target is as it started.
    baseline: String,
}

impl Harness {
    /// Starts the harness; `as_nobody` runs it as uid/gid 65534 via setpriv.
    fn spawn(interp: &Interpreter, mode: Mode, as_nobody: bool) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("memsleuth-agent-test-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("harness.py");
        fs::write(&script, HARNESS).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        let cmd_dir = dir.path().join("cmd");
        fs::create_dir(&cmd_dir).unwrap();
        fs::set_permissions(&cmd_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let stderr_path = dir.path().join("stderr.txt");
        let stderr = File::create(&stderr_path).unwrap();

        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&interp.path);
            c
        } else {
            Command::new(&interp.path)
        };
        cmd.arg("-u")
            .arg(&script)
            .arg(&cmd_dir)
            .arg(match mode {
                Mode::Plain => "plain",
                Mode::Threading => "threading",
                Mode::Printer => "printer",
            })
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONSTARTUP")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("[{}] spawn harness: {e}", interp.label));
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        {
            let stdout = child.stdout.take().unwrap();
            let lines = Arc::clone(&lines);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // The printer thread's `p s q` pieces can precede a line.
                    let line = line.trim_start_matches(['p', 's', 'q', ' ']).to_string();
                    let (m, cv) = &*lines;
                    m.lock().unwrap().push(line);
                    cv.notify_all();
                }
            });
        }
        let pid = child.id();
        let mut h = Harness {
            label: interp.label.clone(),
            pid,
            child: Mutex::new(child),
            dir,
            lines,
            stderr_path,
            next_cmd: 0,
            threading: false,
            baseline: format!(
                "threads={} mods=- names=-",
                if mode == Mode::Printer { 2 } else { 1 }
            ),
        };
        let ready = h.wait_line("ready", |l| l.starts_with("ready "));
        assert_eq!(ready, format!("ready {pid}"), "[{}]", h.label);
        h.threading = h.all_lines().iter().any(|l| l == "threading 1");
        let hb = h.wait_line("first heartbeat", |l| l.starts_with("hb "));
        assert!(hb.contains(&h.baseline), "[{}] {hb}", h.label);
        h
    }

    fn all_lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Where each thread of the target is (for hangs).
    fn threads_report(&self) -> String {
        let mut out = String::new();
        let Ok(rd) = fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return out;
        };
        for e in rd.flatten() {
            let t = e.path();
            let rd = |n: &str| {
                fs::read_to_string(t.join(n))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let state = rd("stat")
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string();
            out.push_str(&format!(
                "  tid {} state {state} wchan {} syscall {}\n",
                e.file_name().to_string_lossy(),
                rd("wchan"),
                rd("syscall")
            ));
        }
        out
    }

    fn fail(&self, why: &str) -> ! {
        let status = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait();
        panic!(
            "[{}] {why}\n--- exit status: {:?}\n--- threads ---\n{}--- stdout (last 40) ---\n{}\n--- stderr ---\n{}",
            self.label,
            status,
            self.threads_report(),
            {
                let l = self.all_lines();
                l[l.len().saturating_sub(40)..].join("\n")
            },
            self.stderr()
        )
    }

    /// Waits for a line (from the start of the output) matching `pred`
    /// after line index `from`.
    fn wait_line_from(&self, from: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let (m, cv) = &*self.lines;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.iter().skip(from).find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(g);
                self.fail(&format!("no {what} line within {WAIT:?}"));
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_from(0, what, pred)
    }

    fn line_count(&self) -> usize {
        self.lines.0.lock().unwrap().len()
    }

    /// Has the harness run `code` in __main__ (like PyRun_SimpleString) and
    /// returns the name of the command file.
    fn inject(&mut self, code: &str) -> String {
        self.next_cmd += 1;
        let name = format!("{:03}.py", self.next_cmd);
        let cmd_dir = self.dir.path().join("cmd");
        let tmp = cmd_dir.join(format!("{name}.tmp"));
        fs::write(&tmp, code).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&tmp, cmd_dir.join(&name)).unwrap();
        name
    }

    /// Waits for `ran NAME` and checks the exec added no names to __main__.
    fn wait_ran(&self, name: &str) {
        let l = self.wait_line(&format!("ran {name}"), |l| {
            l.starts_with(&format!("ran {name} "))
        });
        if l != format!("ran {name} new=-") {
            self.fail(&format!("the bootstrap left names in __main__: {l}"));
        }
    }

    /// Waits for a heartbeat, after everything printed so far, showing the
    /// starting state (agent thread gone, no new modules or names, and
    /// threading.enumerate() at one when threading is imported).
    fn wait_baseline(&self, what: &str) {
        let from = self.line_count();
        let want_tenum = if self.threading { "tenum=1" } else { "tenum=-" };
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.all_lines();
            if lines.iter().skip(from).any(|l| {
                l.starts_with("hb ") && l.contains(&self.baseline) && l.ends_with(want_tenum)
            }) {
                return;
            }
            if Instant::now() >= deadline {
                let last = lines
                    .iter()
                    .rev()
                    .find(|l| l.starts_with("hb "))
                    .cloned()
                    .unwrap_or_default();
                self.fail(&format!(
                    "{what}: target not back to `{} {want_tenum}`; last heartbeat: {last}",
                    self.baseline
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_clean_stderr(&self) {
        let e = self.stderr();
        if !e.trim().is_empty() {
            self.fail("the target printed on stderr");
        }
    }

    /// The host path of a directory given as the target sees it.
    fn host_path(&self, in_target: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{in_target}", self.pid))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}

fn target_ids(pid: u32) -> (u32, u32) {
    let st = common::proc_status(pid);
    (st["Uid"] as u32, st["Gid"] as u32)
}

/// prepare + inject + wait + into_session.
fn attach(h: &mut Harness) -> (Session, String) {
    let proc = Process::open(h.pid).unwrap();
    let (uid, gid) = target_ids(h.pid);
    let mut l =
        Listener::prepare(&proc, uid, gid).unwrap_or_else(|e| h.fail(&format!("prepare: {e}")));
    let dir = l.dir_in_target().to_string();
    assert!(h.host_path(&dir).is_dir());
    let name = h.inject(&l.bootstrap_code(euid()));
    match l.wait(WAIT) {
        Ok(true) => {}
        Ok(false) => h.fail("the bootstrap did not connect"),
        Err(e) => h.fail(&format!("wait: {e}")),
    }
    h.wait_ran(&name);
    // Connected: the socket and its directory are gone already.
    assert!(
        !h.host_path(&dir).exists(),
        "[{}] {dir} still there after accept",
        h.label
    );
    let s = l
        .into_session()
        .unwrap_or_else(|e| h.fail(&format!("into_session: {e}")));
    (s, dir)
}

fn full_session(interp: &Interpreter) {
    let mut h = Harness::spawn(interp, Mode::Plain, false);
    let (mut s, _dir) = attach(&mut h);
    let label = h.label.clone();

    // hello
    let hello = s.hello.clone();
    assert_eq!(hello.pid, h.pid, "[{label}]");
    assert_eq!(
        (
            hello.version_info.major,
            hello.version_info.minor,
            hello.version_info.micro
        ),
        interp.version,
        "[{label}]"
    );
    assert!(
        hello.python_version.starts_with(&format!(
            "{}.{}.{}",
            interp.version.0, interp.version.1, interp.version.2
        )),
        "[{label}] {}",
        hello.python_version
    );
    assert_eq!(hello.implementation, "cpython", "[{label}]");
    assert!(!hello.executable.is_empty(), "[{label}]");
    assert_eq!(hello.thread_count, 2, "[{label}] main + agent");
    assert!(hello.gc_enabled, "[{label}]");
    assert_eq!(hello.threading_imported, h.threading, "[{label}]");
    assert!(hello.stdout_proxy && hello.stderr_proxy, "[{label}]");
    assert!(
        hello.gil_s > 0.0 && hello.gil_s < 10.0,
        "[{label}] {}",
        hello.gil_s
    );
    let ping = s.ping().unwrap();
    eprintln!(
        "[{label}] hello gil_s={:.4} ping gil_s={:.6}",
        hello.gil_s, ping.gil_s
    );

    // exec with capture while the main thread keeps printing.
    let code = "import __main__, time\n\
                a = __main__.HB\n\
                print('captured-out %d' % a)\n\
                sys.stderr.write('captured-err\\n')\n\
                time.sleep(0.4)\n\
                print('captured-end %d' % __main__.HB)\n";
    let r = s.exec(code, ExecMode::Exec).unwrap();
    assert!(!r.raised, "[{label}] {:?}", r.error);
    assert_eq!(r.stderr, "captured-err\n", "[{label}]");
    let nums: Vec<u64> = r
        .stdout
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 2, "[{label}] {:?}", r.stdout);
    assert!(r.stdout.starts_with("captured-out "), "[{label}]");
    let (a, b) = (nums[0], nums[1]);
    assert!(
        b >= a + 3,
        "[{label}] heartbeat stalled during capture: {a}..{b}"
    );
    assert!(
        r.gil_s >= 0.35,
        "[{label}] gil_s {} for a 0.4 s exec",
        r.gil_s
    );
    assert_eq!(r.value_repr, None);
    // The heartbeats printed during the capture reached the real stdout.
    let lines = h.all_lines();
    for k in (a + 1)..b {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("hb {k} "))),
            "[{label}] heartbeat {k} (printed during the capture) missing from the target's stdout"
        );
    }

    // single mode: values shown like the REPL.
    let r = s.exec("1 + 1", ExecMode::Single).unwrap();
    assert_eq!(r.value_repr.as_deref(), Some("2"), "[{label}]");
    assert_eq!(r.stdout, "");
    let r = s.exec("x = 5", ExecMode::Single).unwrap();
    assert_eq!(r.value_repr, None, "[{label}]");
    let r = s.exec("None", ExecMode::Single).unwrap();
    assert_eq!(r.value_repr, None, "[{label}]");
    let r = s
        .exec("for i in range(3): i * x", ExecMode::Single)
        .unwrap();
    assert!(!r.raised, "[{label}] {:?}", r.error);
    assert_eq!(r.value_repr.as_deref(), Some("0\n5\n10"), "[{label}]");
    let r = s.exec("_", ExecMode::Single).unwrap();
    assert_eq!(
        r.value_repr.as_deref(),
        Some("10"),
        "[{label}] `_` is the last value"
    );
    let r = s.exec("print('x')", ExecMode::Single).unwrap();
    assert_eq!(
        (r.stdout.as_str(), r.value_repr),
        ("x\n", None),
        "[{label}]"
    );

    // exec that raises: an error as data, with the user's traceback only.
    let r = s
        .exec(
            "print('before')\ndef f():\n    raise ValueError('boom')\nf()\n",
            ExecMode::Exec,
        )
        .unwrap();
    assert!(r.raised, "[{label}]");
    assert_eq!(r.stdout, "before\n", "[{label}]");
    let e = r.error.unwrap();
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("ValueError", "boom")
    );
    assert!(
        e.traceback.contains("Traceback"),
        "[{label}] {}",
        e.traceback
    );
    assert!(
        e.traceback.contains("line 3, in f"),
        "[{label}] {}",
        e.traceback
    );
    assert!(
        e.traceback.contains("ValueError: boom"),
        "[{label}] {}",
        e.traceback
    );
    assert!(
        !e.traceback.contains("memsleuth-agent"),
        "[{label}] {}",
        e.traceback
    );
    let r = s.exec("x = )", ExecMode::Exec).unwrap();
    assert!(r.raised);
    assert_eq!(r.error.unwrap().type_name, "SyntaxError", "[{label}]");
    let r = s.exec("raise SystemExit(3)", ExecMode::Exec).unwrap();
    assert_eq!(r.error.unwrap().type_name, "SystemExit", "[{label}]");

    // eval
    let r = s.eval("[1, 'a', None, x]").unwrap();
    assert_eq!(r.value_repr, "[1, 'a', None, 5]", "[{label}]");
    assert_eq!(r.type_name, "list");
    assert!(!r.truncated);
    let r = s.eval("'y' * (3 << 20)").unwrap();
    assert!(r.truncated, "[{label}]");
    assert_eq!(r.repr_len, (3 << 20) + 2);
    assert_eq!(r.value_repr.len(), 1 << 20);
    match s.eval("undefined_name") {
        Err(SessionError::Remote { op, error }) => {
            assert_eq!(op, "eval");
            assert_eq!(error.type_name, "NameError", "[{label}]");
            assert!(error.message.contains("undefined_name"), "[{label}]");
            assert!(error.traceback.contains("NameError"), "[{label}]");
        }
        other => panic!("[{label}] eval of an undefined name: {other:?}"),
    }
    // The session namespace has the helpers; stdout's attributes show through.
    let r = s.eval("types_count(3)[0][1] > 0").unwrap();
    assert_eq!(r.value_repr, "True", "[{label}]");
    let r = s
        .eval("(sys.stdout.fileno(), sys.stdout.isatty(), sys.stderr.fileno())")
        .unwrap();
    assert_eq!(r.value_repr, "(1, False, 2)", "[{label}]");
    let r = s
        .eval("sorted(k for k in ('gc', 'sys', 'os') if k in globals())")
        .unwrap();
    assert_eq!(r.value_repr, "['gc', 'os', 'sys']", "[{label}]");

    // complete
    let m = s.complete("sys.ver").unwrap().matches;
    assert!(m.contains(&"sys.version".to_string()), "[{label}] {m:?}");
    assert!(
        m.contains(&"sys.version_info".to_string()),
        "[{label}] {m:?}"
    );
    assert!(
        m.iter().all(|c| c.starts_with("sys.ver")),
        "[{label}] {m:?}"
    );
    let m = s.complete("os.path.jo").unwrap().matches;
    assert_eq!(m, vec!["os.path.join".to_string()], "[{label}]");
    let m = s.complete("typ").unwrap().matches;
    assert!(
        m.contains(&"type".to_string()) && m.contains(&"types_count".to_string()),
        "[{label}] {m:?}"
    );
    let m = s.complete("wh").unwrap().matches;
    assert!(
        m.contains(&"while".to_string()),
        "[{label}] keywords: {m:?}"
    );
    let m = s.complete("sys.").unwrap().matches;
    assert!(
        !m.iter().any(|c| c.starts_with("sys._")),
        "[{label}] private names only on `_`"
    );
    let m = s.complete("sys._cur").unwrap().matches;
    assert!(
        m.contains(&"sys._current_frames".to_string()),
        "[{label}] {m:?}"
    );
    // Never calls or subscripts.
    s.exec("calls = []\nclass C(object):\n    def __getitem__(self, k):\n        calls.append(k)\n        return self\nc = C()\ndef g():\n    calls.append('g')\n    return c\n", ExecMode::Exec).unwrap();
    for t in ["g().x", "c[0].x", "c['a'].", "(g).x", "c.__getitem__(1).x"] {
        assert_eq!(
            s.complete(t).unwrap().matches,
            Vec::<String>::new(),
            "[{label}] {t}"
        );
    }
    assert_eq!(s.eval("calls").unwrap().value_repr, "[]", "[{label}]");

    // compile_check
    let c = s.compile_check("if x:").unwrap();
    assert_eq!(c.status, CompileStatus::Incomplete, "[{label}]");
    assert_eq!(
        s.compile_check("if x:\n    y = 1\n").unwrap().status,
        CompileStatus::Complete
    );
    assert_eq!(
        s.compile_check("x = 1").unwrap().status,
        CompileStatus::Complete
    );
    let c = s.compile_check("x = )").unwrap();
    assert_eq!(c.status, CompileStatus::Error, "[{label}]");
    assert_eq!(c.error.unwrap().type_name, "SyntaxError");

    // ping, and gil_s on everything
    let p = s.ping().unwrap();
    assert!(p.time > 1.6e9, "[{label}]");
    assert!(p.gil_s >= 0.0 && p.gil_s < 1.0, "[{label}] {}", p.gil_s);
    let raw = s.request("no_such_op", serde_json::Value::Null).unwrap();
    assert!(!raw.ok, "[{label}]");
    assert!(raw.error.unwrap().message.contains("unknown op"));

    // A second attach while this one is live is refused; this one goes on.
    {
        let proc = Process::open(h.pid).unwrap();
        let mut l2 = Listener::prepare(&proc, 0, 0).unwrap();
        let name = h.inject(&l2.bootstrap_code(euid()));
        assert!(l2.wait(WAIT).unwrap(), "[{label}]");
        h.wait_ran(&name);
        match l2.into_session() {
            Err(SessionError::Refused(why)) => assert!(why.contains("already"), "{why}"),
            other => panic!("[{label}] second attach: {other:?}"),
        }
    }
    assert!(s.ping().is_ok(), "[{label}]");

    // Modules the session imported go away at detach (this one is stdlib and
    // cannot have been imported by the harness).
    s.exec("import colorsys", ExecMode::Exec).unwrap();
    s.detach().unwrap();
    h.wait_baseline("after detach");

    // A second session sees the first left nothing: one agent thread (its
    // own), and no functions or proxies from the first agent still alive.
    let (mut s2, _) = attach(&mut h);
    assert_eq!(s2.hello.thread_count, 2, "[{label}]");
    let check = r#"
import gc, types
gc.collect()
mine = types_count.__globals__
f = sys._getframe()
boot = None
while f is not None:
    if f.f_code.co_filename == '<memsleuth-bootstrap>':
        boot = f.f_globals
    f = f.f_back
stale = []
for o in gc.get_objects():
    if isinstance(o, types.FunctionType):
        fn = o.__code__.co_filename
        if fn == '<memsleuth-agent>' and o.__globals__ is not mine:
            stale.append(o.__name__)
        if fn == '<memsleuth-bootstrap>' and o.__globals__ is not boot:
            stale.append('bootstrap ' + o.__name__)
proxies = [type(o).__name__ for o in gc.get_objects() if getattr(type(o), '_memsleuth_proxy', False)]
result = (sorted(stale), sorted(proxies), 'colorsys' in sys.modules, len(sys._current_frames()))
"#;
    let r = s2.exec(check, ExecMode::Exec).unwrap();
    assert!(!r.raised, "[{label}] {:?}", r.error);
    let v = s2.eval("result").unwrap().value_repr;
    assert_eq!(
        v, "([], ['_DisplayHook', '_Stream', '_Stream'], False, 2)",
        "[{label}] (stale agent functions, live proxies, colorsys left, threads)"
    );
    drop(s2); // Drop detaches too.
    h.wait_baseline("after dropping the second session");

    // The child's own stdout never saw captured output.
    let lines = h.all_lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("captured-") || l == "before" || l == "x"),
        "[{label}] captured output leaked to the target's stdout"
    );
    h.assert_clean_stderr();
}

#[test]
fn full_session_on_every_interpreter() {
    for_each_interpreter(full_session);
}

/// Flips one hex digit of the 64-digit token in rendered bootstrap code.
fn corrupt_token(code: &str) -> String {
    let b = code.as_bytes();
    let is_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        run = if is_hex(c) { run + 1 } else { 0 };
        if run == 64 {
            let start = i + 1 - 64;
            let mut out = code.to_string();
            let flipped = if b[start] == b'0' { "1" } else { "0" };
            out.replace_range(start..start + 1, flipped);
            return out;
        }
    }
    panic!("no token in the rendered code");
}

fn refusals(interp: &Interpreter) {
    // threading imported by the target: the agent must remove the
    // _DummyThread that threading.current_thread() registers for it.
    let mut h = Harness::spawn(interp, Mode::Threading, false);
    let label = h.label.clone();
    assert!(h.threading);
    let proc = Process::open(h.pid).unwrap();

    // Wrong token: refused, nothing left.
    let mut l = Listener::prepare(&proc, 0, 0).unwrap();
    let name = h.inject(&corrupt_token(&l.bootstrap_code(euid())));
    assert!(l.wait(WAIT).unwrap(), "[{label}]");
    h.wait_ran(&name);
    match l.into_session() {
        Err(SessionError::Refused(why)) => assert!(why.contains("token"), "[{label}] {why}"),
        other => panic!("[{label}] wrong token: {other:?}"),
    }
    h.wait_baseline("after a wrong token");

    // The bootstrap was rendered for another tool uid: it hangs up silently.
    let mut l = Listener::prepare(&proc, 0, 0).unwrap();
    let name = h.inject(&l.bootstrap_code(euid() + 4242));
    assert!(l.wait(WAIT).unwrap(), "[{label}]");
    h.wait_ran(&name);
    match l.into_session() {
        Err(SessionError::Refused(why)) => assert!(why.contains("hung up"), "[{label}] {why}"),
        other => panic!("[{label}] wrong uid: {other:?}"),
    }
    h.wait_baseline("after a uid mismatch");

    // The session is gone before the bootstrap runs (a late pending call):
    // nothing happens, nothing on stderr.
    let l = Listener::prepare(&proc, 0, 0).unwrap();
    let code = l.bootstrap_code(euid());
    let dir = h.host_path(l.dir_in_target());
    drop(l);
    assert!(
        !dir.exists(),
        "[{label}] Listener drop must remove {}",
        dir.display()
    );
    let name = h.inject(&code);
    h.wait_ran(&name);
    h.wait_baseline("after a late bootstrap");

    // A connection from another process is turned away; the target's still
    // gets through.
    let mut l = Listener::prepare(&proc, 0, 0).unwrap();
    let intruder = UnixStream::connect(h.host_path(&l.socket_path_in_target())).unwrap();
    assert!(!l.wait(Duration::from_millis(300)).unwrap(), "[{label}]");
    assert_eq!(l.rejected(), 1);
    drop(intruder);
    let name = h.inject(&l.bootstrap_code(euid()));
    assert!(l.wait(WAIT).unwrap(), "[{label}]");
    h.wait_ran(&name);
    let mut s = l.into_session().unwrap();
    assert!(s.hello.threading_imported);
    // Register a _DummyThread for the agent thread, then hang up without
    // detaching (as if the tool died): the agent cleans up by itself.
    let r = s
        .exec(
            "import threading\nn = len(threading.enumerate())\nthreading.current_thread()\nm = len(threading.enumerate())",
            ExecMode::Exec,
        )
        .unwrap();
    assert!(!r.raised, "[{label}] {:?}", r.error);
    assert_eq!(s.eval("(n, m)").unwrap().value_repr, "(1, 2)", "[{label}]");
    s.set_timeout(Some(Duration::from_millis(100))).unwrap();
    match s.exec("import time\ntime.sleep(0.5)", ExecMode::Exec) {
        Err(SessionError::Timeout { .. }) => {}
        other => panic!("[{label}] expected a timeout: {other:?}"),
    }
    assert!(s.broken().is_some());
    assert!(matches!(s.ping(), Err(SessionError::Broken(_))));
    drop(s);
    h.wait_baseline("after the tool hung up mid-request");

    // The app wraps sys.stdout (as colorama does) while we are attached: our
    // proxy cannot be taken out at detach, stays inside the wrapper and keeps
    // forwarding; the next attach is not mistaken for a second agent.
    let (mut s, _) = attach(&mut h);
    let wrap = "class W(object):\n\
                \x20   def __init__(self, w): self.w = w\n\
                \x20   def write(self, x): return self.w.write(x)\n\
                \x20   def flush(self): return self.w.flush()\n\
                \x20   def __getattr__(self, n): return getattr(self.w, n)\n\
                sys.stdout = W(sys.stdout)\n";
    let r = s.exec(wrap, ExecMode::Exec).unwrap();
    assert!(!r.raised, "[{label}] {:?}", r.error);
    s.detach().unwrap();
    h.wait_baseline("after detach with a wrapped stdout");
    let (mut s, _) = attach(&mut h);
    let r = s
        .exec(
            "print('again ' + type(sys.stdout).__name__)",
            ExecMode::Exec,
        )
        .unwrap();
    assert_eq!(r.stdout, "again _Stream\n", "[{label}]");
    s.detach().unwrap();
    h.wait_baseline("after the second detach with a wrapped stdout");
    assert!(
        !h.all_lines().iter().any(|l| l.contains("again")),
        "[{label}]"
    );
    h.assert_clean_stderr();
}

#[test]
fn refusals_and_hangups_on_every_interpreter() {
    for_each_interpreter(refusals);
}

/// Detaching restores sys.stdout while another thread is in the middle of a
/// print() that holds it as a borrowed reference (cpython#130163): the old
/// proxy must not be freed under it. Many sessions against a thread that
/// prints all the time, switching threads inside each print.
fn detach_under_print_storm(interp: &Interpreter) {
    let mut h = Harness::spawn(interp, Mode::Printer, false);
    let label = h.label.clone();
    for round in 0..6 {
        let (mut s, _) = attach(&mut h);
        let r = s.exec("print('round')", ExecMode::Exec).unwrap();
        assert_eq!(r.stdout, "round\n", "[{label}] round {round}");
        s.detach().unwrap();
        h.wait_baseline(&format!("after round {round}"));
    }
    let st = h.child.lock().unwrap().try_wait().unwrap();
    assert!(
        st.is_none(),
        "[{label}] the target died: {st:?}\n{}",
        h.stderr()
    );
    h.assert_clean_stderr();
}

#[test]
fn detach_while_another_thread_prints_on_every_interpreter() {
    for_each_interpreter(detach_under_print_storm);
}

/// Interpreters that can run as nobody (pyenv ones under /root usually
/// cannot).
fn runs_as_nobody(interp: &Interpreter) -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&interp.path)
        .args(["-c", "pass"])
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn target_running_as_nobody() {
    if euid() != 0 {
        eprintln!("skipping: needs root to start a target as nobody");
        return;
    }
    let list: Vec<Interpreter> = interpreters().into_iter().filter(runs_as_nobody).collect();
    assert!(
        !list.is_empty(),
        "no interpreter runs as nobody (setpriv missing?)"
    );
    for interp in &list {
        let mut h = Harness::spawn(interp, Mode::Plain, true);
        let label = h.label.clone();
        assert_eq!(target_ids(h.pid), (65534, 65534), "[{label}]");
        let proc = Process::open(h.pid).unwrap();
        let mut l = Listener::prepare(&proc, 65534, 65534).unwrap();
        // Private to the target's user.
        let dir = h.host_path(l.dir_in_target());
        let md = fs::metadata(&dir).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (65534, 65534, 0o700),
            "[{label}]"
        );
        let sock = fs::symlink_metadata(h.host_path(&l.socket_path_in_target())).unwrap();
        assert_eq!(
            (sock.uid(), sock.mode() & 0o777),
            (65534, 0o600),
            "[{label}]"
        );
        // The tool is root: the bootstrap must accept uid 0 as the tool.
        let name = h.inject(&l.bootstrap_code(0));
        assert!(
            l.wait(WAIT).unwrap(),
            "[{label}] the target could not connect"
        );
        h.wait_ran(&name);
        let mut s = l.into_session().unwrap();
        assert_eq!(s.hello.pid, h.pid);
        let r = s
            .exec("import os\nprint(os.getuid())", ExecMode::Exec)
            .unwrap();
        assert_eq!(r.stdout, "65534\n", "[{label}]");
        s.detach().unwrap();
        assert!(!dir.exists(), "[{label}]");
        h.wait_baseline("after detach (nobody)");
        h.assert_clean_stderr();
        eprintln!("[{label}] as nobody: ok");
    }
}

/// Real PEP 768 on 3.14+: the bootstrap written with `write_file` and run by
/// `sys.remote_exec` from another interpreter (a fresh namespace, not
/// __main__), as the PEP 768 injector will.
#[test]
fn pep768_script_file_on_314_plus() {
    let list: Vec<Interpreter> = interpreters()
        .into_iter()
        .filter(|i| i.at_least(3, 14))
        .collect();
    if list.is_empty() {
        eprintln!("skipping: no Python 3.14+");
        return;
    }
    for interp in &list {
        let h = Harness::spawn(interp, Mode::Plain, false);
        let label = h.label.clone();
        let proc = Process::open(h.pid).unwrap();
        let (uid, gid) = target_ids(h.pid);
        let mut l = Listener::prepare(&proc, uid, gid).unwrap();
        let code = l.bootstrap_code(euid());
        let script = l.write_file("boot.py", code.as_bytes()).unwrap();
        assert_eq!(script, format!("{}/boot.py", l.dir_in_target()));
        let host = h.host_path(&script);
        assert_eq!(fs::read_to_string(&host).unwrap(), code);
        assert_eq!(fs::metadata(&host).unwrap().mode() & 0o777, 0o600);
        assert!(l.write_file("boot.py", b"x").is_err(), "no overwrite");
        assert!(l.write_file("../x", b"x").is_err());
        assert!(l.write_file("s", b"x").is_err());
        let out = Command::new(&interp.path)
            .args([
                "-c",
                &format!("import sys; sys.remote_exec({}, {script:?})", h.pid),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "[{label}] remote_exec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            l.wait(WAIT).unwrap(),
            "[{label}] no connection after remote_exec"
        );
        assert!(
            !host.exists(),
            "[{label}] the script goes with the directory"
        );
        let mut s = l.into_session().unwrap();
        let r = s.exec("print(6 * 7)", ExecMode::Exec).unwrap();
        assert_eq!(r.stdout, "42\n", "[{label}]");
        s.detach().unwrap();
        h.wait_baseline("after a PEP 768 session");
        h.assert_clean_stderr();
        eprintln!("[{label}] PEP 768: ok");
    }
}

/// The rendered literal survives quotes, backslashes and newlines in the
/// path: the bootstrap stats exactly the path it was given.
#[test]
fn bootstrap_quoting() {
    let interps = interpreters();
    let weird = "/tmp/it's \"odd\"\\dir\nx\t/s";
    let code = render_bootstrap(weird, &"0".repeat(64), 0);
    let probe = format!(
        "import os, sys\nseen = []\ndef fake_stat(p):\n    seen.append(p)\n    raise OSError('no')\nos.stat = fake_stat\n{code}\nsys.stdout.write(repr(seen[0]) + '\\n' + repr(sorted(k for k in globals() if not k.startswith('__'))))\n"
    );
    let mut seen: HashSet<String> = HashSet::new();
    for interp in &interps {
        let out = Command::new(&interp.path)
            .args(["-c", &probe])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "[{}] {}",
            interp.label,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "[{}] {}",
            interp.label,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        let path = lines.next().unwrap().trim_start_matches('u').to_string();
        assert_eq!(
            path, r#"'/tmp/it\'s "odd"\\dir\nx\t/s'"#,
            "[{}]",
            interp.label
        );
        assert_eq!(
            lines.next().unwrap(),
            "['fake_stat', 'os', 'seen', 'sys']",
            "[{}] the bootstrap must add no names",
            interp.label
        );
        seen.insert(path);
    }
    assert_eq!(seen.len(), 1);
}

/// Every global name the agent and its plugins read exists once they are
/// loaded together (the plugins run in the agent's namespace and use its
/// helpers): moving a helper out of the core must not leave a plugin with a
/// NameError that only shows on some path. Checked with `dis` on each 3.x
/// interpreter; names that only 2.7 branches read are allowed.
#[test]
fn plugins_read_only_defined_globals() {
    const CHECK: &str = r#"
import builtins, dis, sys, types
src = sys.stdin.read()
g = {'__name__': '_memsleuth_agent'}
exec(compile(src, '<memsleuth-agent>', 'exec'), g)
py2_only = {'unicode', 'long', 'basestring', 'xrange', 'unichr', 'buffer', 'file', 'reduce', 'raw_input', 'execfile', 'cmp'}
missing = set()
def walk(code):
    for ins in dis.get_instructions(code):
        if ins.opname in ('LOAD_GLOBAL', 'LOAD_NAME', 'STORE_GLOBAL') and isinstance(ins.argval, str):
            name = ins.argval
            if name not in g and not hasattr(builtins, name) and name not in py2_only:
                missing.add('%s (in %s)' % (name, code.co_name))
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            walk(c)
walk(compile(src, '<memsleuth-agent>', 'exec'))
print(sorted(missing))
"#;
    let mut source = String::from(memsleuth::agent::session::AGENT_CORE);
    for plugin in memsleuth::agent::session::AGENT_PLUGINS {
        source.push('\n');
        source.push_str(plugin);
    }
    let list: Vec<Interpreter> = interpreters()
        .into_iter()
        .filter(|i| i.at_least(3, 6))
        .collect();
    for interp in &list {
        let mut child = Command::new(&interp.path)
            .args(["-c", CHECK])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), source.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "[{}] {}",
            interp.label,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "[]",
            "[{}] globals read but defined nowhere",
            interp.label
        );
    }
}

/// Requests queued with `Listener::pipeline` go out with the load frame and
/// are answered with the hello; a session that asks for something else
/// first skips their answers; plugin ops cannot be queued.
fn pipelined(interp: &Interpreter) {
    let mut h = Harness::spawn(interp, Mode::Plain, false);
    let label = h.label.clone();
    let proc = Process::open(h.pid).unwrap();
    let (uid, gid) = target_ids(h.pid);

    let mut l = Listener::prepare(&proc, uid, gid).unwrap();
    assert!(l.pipeline(
        "exec",
        serde_json::json!({"code": "y = 41", "mode": "exec"})
    ));
    assert!(l.pipeline("eval", serde_json::json!({"expr": "y + 1"})));
    assert!(
        !l.pipeline("census", serde_json::Value::Null),
        "[{label}] plugin op"
    );
    assert!(
        !l.pipeline("ping", serde_json::json!([1])),
        "[{label}] params not an object"
    );
    let name = h.inject(&l.bootstrap_code(euid()));
    assert!(l.wait(WAIT).unwrap(), "[{label}]");
    h.wait_ran(&name);
    let mut s = l.into_session().unwrap();
    let r = s.exec("y = 41", ExecMode::Exec).unwrap();
    assert!(!r.raised, "[{label}] {:?}", r.error);
    assert_eq!(s.eval("y + 1").unwrap().value_repr, "42", "[{label}]");
    assert!(s.ping().is_ok(), "[{label}]");
    s.detach().unwrap();
    h.wait_baseline("after a pipelined session");

    // Queued, then not asked for: skipped (it ran, in order); the detach
    // goes along too.
    let mut l = Listener::prepare(&proc, uid, gid).unwrap();
    assert!(l.pipeline("exec", serde_json::json!({"code": "z = 7", "mode": "exec"})));
    let name = h.inject(&l.bootstrap_code(euid()));
    assert!(l.wait(WAIT).unwrap(), "[{label}]");
    h.wait_ran(&name);
    let mut s = l.into_session().unwrap();
    assert_eq!(s.eval("z * 6").unwrap().value_repr, "42", "[{label}]");
    s.detach().unwrap();
    h.wait_baseline("after skipping a pipelined answer");

    let mut l = Listener::prepare(&proc, uid, gid).unwrap();
    assert!(l.pipeline("eval", serde_json::json!({"expr": "6 * 7"})));
    assert!(l.pipeline("detach", serde_json::Value::Null));
    let name = h.inject(&l.bootstrap_code(euid()));
    assert!(l.wait(WAIT).unwrap(), "[{label}]");
    h.wait_ran(&name);
    let mut s = l.into_session().unwrap();
    assert_eq!(s.eval("6 * 7").unwrap().value_repr, "42", "[{label}]");
    s.detach().unwrap();
    h.wait_baseline("after a pipelined detach");
    h.assert_clean_stderr();
}

#[test]
fn pipelined_requests_on_every_interpreter() {
    for_each_interpreter(pipelined);
}
