//! The shell sees the program: in `exec`, `eval` and `shell`, names the
//! session lacks are read from the target's `__main__`, while what the
//! session assigns stays in the session and never reaches `__main__`.
//! Tracebacks show only the user's code. Every interpreter; the target is
//! tests/targets/main_names.py (`cache`, `LIMIT`, `counter`, `bump()`,
//! `round`).

mod common;

use common::{Interpreter, Run, Target, for_each_interpreter, memsleuth, run, spawn_target};
use memsleuth::agent::ExecMode;
use memsleuth::agent::protocol::ExecResult;
use memsleuth::inject::attach::{self, AttachOptions, Attached, MethodChoice};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

fn cli(args: &[&str]) -> Run {
    run(memsleuth().args(args))
}

fn target(interp: &Interpreter) -> Target {
    spawn_target(interp, "main_names", &["--main", "sleep"]).unwrap()
}

/// Checks a traceback printed for a failure in the user's code: the error
/// named, and every frame one of the code the user typed.
/// Notes memsleuth prints first (e.g. that PEP 768 fell back to ptrace on
/// 3.14+) are skipped.
fn assert_user_traceback(label: &str, text: &str, error: &str, frames: usize) {
    let text = text
        .lines()
        .skip_while(|l| l.starts_with("memsleuth: note:"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.as_str();
    assert!(text.starts_with("Traceback"), "[{label}] {text}");
    assert!(text.contains(error), "[{label}] {error} missing: {text}");
    let files: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("File \""))
        .collect();
    assert_eq!(files.len(), frames, "[{label}] frames: {text}");
    assert!(
        files.iter().all(|l| l.contains("File \"<memsleuth>\"")),
        "[{label}] a frame that is not the user's: {text}"
    );
}

fn exec_ok(label: &str, a: &mut Attached, code: &str, mode: ExecMode) -> ExecResult {
    let r = a.session.exec(code, mode).unwrap();
    assert!(!r.raised, "[{label}] {code:?} raised: {:?}", r.error);
    r
}

fn main_names(interp: &Interpreter) {
    let label = interp.label.as_str();
    let t = target(interp);
    let pid = t.pid.to_string();
    let pid = pid.as_str();

    // eval reads __main__'s names directly.
    let r = cli(&["eval", pid, "len(cache)"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "5\n"),
        "[{label}] {}",
        r.stderr
    );
    let r = cli(&["eval", pid, "LIMIT * 6"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "42\n"),
        "[{label}] {}",
        r.stderr
    );

    // __main__ comes before the builtins, as it would for its own code.
    let r = cli(&["eval", pid, "(round, abs(-3))"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "('main round', 3)\n"),
        "[{label}] {}",
        r.stderr
    );

    // Functions, lambdas, comprehensions and generators defined in the
    // session see both the session's names and __main__'s.
    let code = "def g():\n    return len(cache)\n\
                def f():\n    return g() + LIMIT\n\
                h = lambda: f() * 2\n\
                print('%s %s %s %s' % (f(), h(), [LIMIT for _ in cache][0], sorted(set(c[:4] for c in cache))))\n";
    let r = cli(&["exec", pid, code]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "12 24 7 ['item']\n"),
        "[{label}] {}",
        r.stderr
    );

    // Tracebacks: the user's frames only.
    let r = cli(&["eval", pid, "1/0"]);
    assert_eq!(r.code, 1, "[{label}] {}", r.stdout);
    assert_user_traceback(label, &r.stderr, "ZeroDivisionError", 1);
    let r = cli(&["eval", pid, "no_such_name"]);
    assert_eq!(r.code, 1, "[{label}] {}", r.stdout);
    assert_user_traceback(label, &r.stderr, "NameError", 1);
    assert!(r.stderr.contains("no_such_name"), "[{label}] {}", r.stderr);
    let r = cli(&["exec", pid, "def k():\n    return LIMIT + nowhere\nk()\n"]);
    assert_eq!(r.code, 1, "[{label}] {}", r.stdout);
    assert_user_traceback(label, &r.stderr, "NameError", 2);
    assert!(r.stderr.contains("nowhere"), "[{label}] {}", r.stderr);

    // One session (what `shell` runs): assignments persist from one
    // request to the next, and stay in the session.
    let opts = AttachOptions {
        timeout: Duration::from_secs(10),
        method: MethodChoice::Auto,
        wait_detach: true,
        pipeline: Vec::new(),
    };
    let mut a = attach::attach(t.pid, &opts).unwrap_or_else(|e| panic!("[{label}] attach: {e}"));
    exec_ok(label, &mut a, "x = 41", ExecMode::Single);
    let r = exec_ok(label, &mut a, "x += 1\nprint(x)", ExecMode::Exec);
    assert_eq!(r.stdout, "42\n", "[{label}]");
    let r = exec_ok(label, &mut a, "x", ExecMode::Single);
    assert_eq!(r.value_repr.as_deref(), Some("42"), "[{label}]");
    // A session name shadows __main__'s for the session only.
    exec_ok(label, &mut a, "LIMIT = 1000", ExecMode::Single);
    assert_eq!(
        a.session.eval("LIMIT").unwrap().value_repr,
        "1000",
        "[{label}]"
    );
    // Functions from an earlier request call each other and read both.
    exec_ok(
        label,
        &mut a,
        "def size():\n    return len(cache)\ndef report():\n    return (size(), x, LIMIT)\n",
        ExecMode::Exec,
    );
    let r = exec_ok(label, &mut a, "report()", ExecMode::Single);
    assert_eq!(r.value_repr.as_deref(), Some("(5, 42, 1000)"), "[{label}]");
    // What __main__ rebinds is seen at the next request on every version,
    // and at once (live) on 3.x; 2.7 reads the names as they were when the
    // request started.
    exec_ok(label, &mut a, "bump()", ExecMode::Single);
    assert_eq!(
        a.session.eval("counter").unwrap().value_repr,
        "1",
        "[{label}]"
    );
    let r = exec_ok(
        label,
        &mut a,
        "print('%s %s' % (bump(), counter))",
        ExecMode::Exec,
    );
    let want = if interp.version.0 == 2 {
        "2 1\n"
    } else {
        "2 2\n"
    };
    assert_eq!(r.stdout, want, "[{label}]");
    // Completion offers __main__'s names and follows them.
    let m = a.session.complete("cac").unwrap().matches;
    assert!(m.contains(&"cache".to_string()), "[{label}] {m:?}");
    let m = a.session.complete("cache.app").unwrap().matches;
    assert_eq!(m, vec!["cache.append".to_string()], "[{label}]");
    // Writing to __main__ takes saying so.
    exec_ok(
        label,
        &mut a,
        "import __main__\n__main__.written = x",
        ExecMode::Exec,
    );
    a.detach()
        .unwrap_or_else(|e| panic!("[{label}] detach: {e}"));

    // The same through `memsleuth shell` itself, its input piped.
    let hist = tempfile::NamedTempFile::new().unwrap();
    let mut child = memsleuth()
        .args(["shell", pid, "--history"])
        .arg(hist.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"y = 41\ny += 1\nprint('%s %s' % (len(cache), y))\nif y:\n    z = y + LIMIT\n\nz\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\n5 42\n49\ndetached\n"),
        "[{label}] shell: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The program's own view of __main__: the explicit write only.
    let state = t.report_state();
    let names: Vec<&str> = state["main_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(names.contains(&"written"), "[{label}] {names:?}");
    for n in ["x", "y", "z", "size", "report", "f", "g", "h", "k"] {
        assert!(
            !names.contains(&n),
            "[{label}] `{n}` leaked into __main__: {names:?}"
        );
    }
    // A new session starts empty and reads __main__ as the program has it.
    let r = cli(&["eval", pid, "(LIMIT, counter, written, cache[-1])"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "(7, 2, 42, 'item-4')\n"),
        "[{label}] {}",
        r.stderr
    );
    let r = cli(&["eval", pid, "x"]);
    assert_eq!(r.code, 1, "[{label}] a session name outlived its session");
    assert_user_traceback(label, &r.stderr, "NameError", 1);
    assert!(t.is_alive(), "[{label}] target died");
    assert!(t.stderr().trim().is_empty(), "[{label}] {}", t.stderr());
}

#[test]
fn the_session_reads_main_and_keeps_its_own_names_on_every_interpreter() {
    for_each_interpreter(main_names);
}
