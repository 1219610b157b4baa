//! `memsleuth doctor --html` against a real leaking process, rendered in
//! headless Chromium: the page must load offline and show the charts and
//! the findings once a browser has parsed it (not just contain the bytes).
//!
//! Chromium: `chromium` (Debian's package), `chromium-browser` or
//! `google-chrome` on PATH, or `MEMSLEUTH_CHROMIUM=/path`. Without one the
//! test is skipped with a message, except under `CI=true`, where it fails.
//! `MEMSLEUTH_HTML_SCREENSHOT=FILE.png` also saves a screenshot.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Interpreter, interpreters, memsleuth, spawn_target};

const DOCTOR_TIMEOUT: Duration = Duration::from_secs(120);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `cmd` to completion or kills it after `timeout` (None then).
/// Output is drained while it runs, so a large DOM cannot fill the pipe.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    status.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MEMSLEUTH_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// A CPython 3 the test bed found (the newest pyenv one: the attach path
/// every developer machine has), else any.
fn pick_interpreter() -> Interpreter {
    let all = interpreters();
    all.iter()
        .rev()
        .find(|i| i.kind == "pyenv-shared" && i.at_least(3, 8))
        .or_else(|| all.iter().rev().find(|i| i.at_least(3, 6)))
        .or(all.last())
        .cloned()
        .expect("no Python interpreter found (see tests/common/mod.rs)")
}

/// Headless Chromium's serialized DOM of `page` (after parsing and layout).
fn dump_dom(browser: &Path, page: &Path, profile: &Path, screenshot: Option<&str>) -> String {
    let url = format!("file://{}", page.display());
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    };
    let mut cmd = Command::new(browser);
    base(&mut cmd);
    cmd.args(["--dump-dom", &url]);
    let out = run_with_timeout(&mut cmd, BROWSER_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "{} --dump-dom took over {BROWSER_TIMEOUT:?}",
            browser.display()
        )
    });
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "{} --dump-dom failed ({}): {}",
        browser.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(png) = screenshot {
        let mut cmd = Command::new(browser);
        base(&mut cmd);
        cmd.args([
            "--hide-scrollbars",
            "--window-size=1200,3000",
            &format!("--screenshot={png}"),
            &url,
        ]);
        match run_with_timeout(&mut cmd, BROWSER_TIMEOUT) {
            Some(o) if o.status.success() => eprintln!("screenshot: {png}"),
            _ => eprintln!("screenshot failed (not part of the test)"),
        }
    }
    dom
}

#[test]
fn html_report_of_a_leak_renders_in_a_browser() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let Some(browser) = chromium() else {
        assert!(
            !ci,
            "CI=true but no Chromium found (install Debian's `chromium`, or set MEMSLEUTH_CHROMIUM)"
        );
        eprintln!(
            "SKIPPED doctor_html: no chromium on PATH (install Debian's `chromium` or set \
             MEMSLEUTH_CHROMIUM to run it)"
        );
        return;
    };
    let interp = pick_interpreter();
    let t = spawn_target(&interp, "unbounded_cache", &["--main", "sleep"])
        .unwrap_or_else(|| panic!("[{interp}] unbounded_cache unsupported"));
    let dir = tempfile::Builder::new()
        .prefix("memsleuth-html-")
        .tempdir()
        .expect("temp dir");
    let page = dir.path().join("report.html");

    let out = run_with_timeout(
        memsleuth()
            .args(["doctor", &t.pid.to_string(), "--duration", "8s", "--html"])
            .arg(&page),
        DOCTOR_TIMEOUT,
    )
    .unwrap_or_else(|| panic!("[{interp}] doctor took over {DOCTOR_TIMEOUT:?}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // The target is done with: stop it before the slow browser part.
    t.terminate(Duration::from_secs(5));
    assert_eq!(
        out.status.code(),
        Some(3),
        "[{interp}] doctor should find a leak (exit 3)\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("wrote"), "[{interp}] {stderr}");
    let html = std::fs::read_to_string(&page).expect("the HTML file");

    // Self-contained: nothing to fetch (the SVG namespaces are names, not
    // fetched), no script.
    let offline = html
        .replace("xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace("xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "");
    assert!(
        !offline.contains("http://") && !offline.contains("https://"),
        "[{interp}] the page refers to the network"
    );
    assert!(!html.contains("<script"), "[{interp}] script in the page");

    let profile = dir.path().join("profile");
    let screenshot = std::env::var("MEMSLEUTH_HTML_SCREENSHOT").ok();
    let dom = dump_dom(&browser, &page, &profile, screenshot.as_deref());
    // Kept for a look when an assertion below fails.
    let dom_dump = std::env::temp_dir().join("memsleuth-doctor-html-dom.html");
    let _ = std::fs::write(&dom_dump, &dom);
    let ctx = format!("[{interp}] (the DOM is in {})", dom_dump.display());

    for id in ["chart-memory", "chart-type-counts", "chart-type-bytes"] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "{ctx}: no #{id}");
    }
    let charts = dom.matches("<svg class=\"ms-chart\"").count();
    assert!(charts >= 3, "{ctx}: {charts} chart svg elements");
    let lines = dom.matches("<polyline").count();
    assert!(lines >= 4 + 2, "{ctx}: {lines} polylines");
    assert!(dom.contains(" MiB</text>"), "{ctx}: no MiB ticks");
    assert!(
        dom.contains("badge verdict-leak"),
        "{ctx}: no leak verdict badge"
    );
    assert!(
        dom.contains("data-kind=\"python-objects\""),
        "{ctx}: no python-objects finding"
    );
    assert!(dom.contains("app.UserSession"), "{ctx}: no app.UserSession");
    assert!(
        dom.contains("<code>memsleuth why "),
        "{ctx}: no next command"
    );
    assert!(dom.contains("id=\"cost\""), "{ctx}: no cost line");
    drop(t);
}
