//! `memsleuth exporter` end to end: a real Prometheus (Debian's package)
//! scrapes the exporter every second while a leaking and a healthy Python
//! service run; its HTTP API must show the leakers flagged with their kind
//! and the healthy one at 0. Also: `promtool check metrics` on the
//! exposition, `promtool test rules` on the shipped alert rules, the
//! dashboard's PromQL, bad input (port in use, processes it may not read),
//! and a quick look at every interpreter.
//!
//! Without prometheus/promtool the Prometheus tests skip with a message,
//! except under CI (CI=true), where `.ci/run` installs them.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Interpreter, interpreters, memsleuth, spawn_target};
use serde_json::Value;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether prometheus and promtool are there; under CI they must be.
fn prometheus_available() -> bool {
    if have("prometheus") && have("promtool") {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "prometheus/promtool missing under CI (.ci/run installs Debian's `prometheus`)"
    );
    eprintln!(
        "skipping: prometheus/promtool not installed (apt-get install --no-install-recommends prometheus)"
    );
    false
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The exporter with its stderr in a file.
struct Exporter {
    _child: Reaped,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Exporter {
    fn start(extra: &[&str]) -> Exporter {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("exporter.log");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = memsleuth()
            .args(["exporter", "--listen", &addr, "--interval", "1s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let e = Exporter {
            _child: Reaped(child),
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(&e.addr, "/healthz", None).is_none_or(|(s, _, _)| s != 200) {
            assert!(
                Instant::now() < deadline,
                "exporter never healthy: {}",
                e.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let (status, _, body) = http(&self.addr, "/metrics", None).expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }
}

/// GET over a plain TCP connection: (status, head, body). HTTP/1.0, so
/// that Prometheus answers without chunked encoding.
fn http(addr: &str, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's instant query result vector.
fn query(prom: &str, q: &str) -> Vec<Value> {
    let Some((200, _, body)) = http(prom, &format!("/api/v1/query?query={}", urlencode(q)), None)
    else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value_of(r: &Value) -> f64 {
    r["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A --match for this checkout's targets only (other test runs on the
/// machine may run the same scripts).
fn own_targets(names: &str) -> String {
    let dir = repo().join("tests/targets");
    format!(
        "{}/({names})\\.py",
        regex::escape(&dir.display().to_string())
    )
}

fn python312() -> Interpreter {
    let all = interpreters();
    all.iter()
        .find(|i| i.kind == "pyenv-shared" && i.minor() == (3, 12))
        .or_else(|| all.iter().rev().find(|i| i.at_least(3, 8)))
        .or(all.last())
        .cloned()
        .expect("no Python interpreter")
}

fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn start_prometheus(dir: &Path, exporter: &str) -> (Reaped, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let rules = repo().join("deploy/prometheus/memsleuth.rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: memsleuth\n    static_configs: [{{targets: ['{exporter}']}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    (Reaped(child), addr)
}

#[test]
fn prometheus_sees_the_leakers_flagged_and_the_healthy_one_at_zero() {
    if !prometheus_available() {
        return;
    }
    let py = python312();
    let fd = spawn_target(&py, "fd_leak", &["--rate", "5", "--main", "sleep"]).unwrap();
    let objects = spawn_target(
        &py,
        "unbounded_cache",
        &["--rate", "200", "--main", "sleep"],
    )
    .unwrap();
    let healthy = spawn_target(&py, "healthy", &["--rate", "20", "--main", "sleep"]).unwrap();
    let started = Instant::now();
    let exporter = Exporter::start(&[
        "--match",
        &own_targets("fd_leak|unbounded_cache|healthy"),
        "--heap",
        "5",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (_prom, prom) = start_prometheus(dir.path(), &exporter.addr);

    wait_for(
        "Prometheus to scrape the exporter",
        Duration::from_secs(40),
        || {
            query(&prom, "up{job=\"memsleuth\"} == 1")
                .first()
                .map(|_| ())
        },
    );
    let prom_ref = prom.as_str();
    let flagged = |pid: u32, kind: &str| {
        let q = format!("memsleuth_process_leaking{{pid=\"{pid}\",kind=\"{kind}\"}} == 1");
        move || query(prom_ref, &q).first().cloned()
    };
    let r = wait_for(
        "the fd leaker flagged",
        Duration::from_secs(90),
        flagged(fd.pid, "file-descriptors"),
    );
    assert_eq!(r["metric"]["comm"], "python", "{r}");
    // The heap is read from outside, so the growth is named as Python
    // objects, not merely anonymous memory.
    wait_for(
        "the object leaker flagged",
        Duration::from_secs(90),
        flagged(objects.pid, "python-objects"),
    );
    let within = started.elapsed();
    assert!(within < Duration::from_secs(90), "flagged after {within:?}");

    // Its growing type is among its top types, and its count rises in
    // Prometheus.
    let sessions = format!(
        "memsleuth_python_objects{{pid=\"{}\",type=\"app.UserSession\"}}",
        objects.pid
    );
    let rise = wait_for(
        "app.UserSession counts rising in Prometheus",
        Duration::from_secs(30),
        || {
            let r = query(&prom, &format!("delta({sessions}[20s])"));
            r.first().filter(|v| value_of(v) > 0.0).cloned()
        },
    );
    assert!(value_of(&rise) > 0.0, "{rise}");
    let bytes = query(
        &prom,
        &format!(
            "memsleuth_python_object_bytes{{pid=\"{}\",type=\"app.UserSession\"}}",
            objects.pid
        ),
    );
    assert!(value_of(&bytes[0]) > 0.0, "{bytes:?}");
    let types = query(
        &prom,
        &format!("count(memsleuth_python_objects{{pid=\"{}\"}})", objects.pid),
    );
    assert!(value_of(&types[0]) <= 5.0, "{types:?}");
    let fleet_counts = query(&prom, "memsleuth_python_heap_objects");
    assert!(fleet_counts.len() >= 2, "{fleet_counts:?}");

    // The healthy service: one series, kind="none" at 0, never anything else
    // while it was watched.
    let h = query(
        &prom,
        &format!("memsleuth_process_leaking{{pid=\"{}\"}}", healthy.pid),
    );
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["metric"]["kind"], "none");
    assert_eq!(value_of(&h[0]), 0.0);
    let ever = query(
        &prom,
        &format!(
            "max_over_time(memsleuth_process_leaking{{pid=\"{}\",kind!=\"none\"}}[5m])",
            healthy.pid
        ),
    );
    assert!(ever.is_empty(), "the healthy service was flagged: {ever:?}");

    // The other metrics arrive with their labels; RSS is the real one.
    let rss = query(
        &prom,
        &format!(
            "memsleuth_process_resident_memory_bytes{{pid=\"{}\"}}",
            healthy.pid
        ),
    );
    assert_eq!(rss.len(), 1);
    assert_eq!(
        rss[0]["metric"]["python"].as_str().unwrap(),
        format!("{}.{}.{}", py.version.0, py.version.1, py.version.2)
    );
    let status_rss = common::proc_status(healthy.pid)["VmRSS"] * 1024;
    let ratio = value_of(&rss[0]) / status_rss as f64;
    assert!(
        (0.5..2.0).contains(&ratio),
        "rss {rss:?} vs VmRSS {status_rss}"
    );
    let fds = query(
        &prom,
        &format!("memsleuth_process_open_fds{{pid=\"{}\"}}", fd.pid),
    );
    assert!(value_of(&fds[0]) >= 10.0, "{fds:?}");
    assert!(!query(&prom, "memsleuth_build_info").is_empty());

    // The shipped rules run in this Prometheus without errors, and the
    // leak alert is pending (it fires after 5 minutes) for the fd leaker.
    let alert = wait_for(
        "PythonProcessLeaking pending for the fd leaker",
        Duration::from_secs(20),
        || {
            let (_, _, body) = http(&prom, "/api/v1/alerts", None)?;
            let v: Value = serde_json::from_str(&body).ok()?;
            v["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "PythonProcessLeaking"
                        && a["labels"]["pid"] == fd.pid.to_string().as_str()
                })
                .cloned()
        },
    );
    assert_eq!(alert["labels"]["kind"], "file-descriptors", "{alert}");
    let (_, _, rules) = http(&prom, "/api/v1/rules", None).unwrap();
    let rules: Value = serde_json::from_str(&rules).unwrap();
    let mut n = 0;
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "{r}");
        }
    }
    assert!(n >= 4, "{rules}");

    // Prometheus negotiated OpenMetrics and had no trouble with it.
    let (_, _, targets) = http(&prom, "/api/v1/targets", None).unwrap();
    let t: Value = serde_json::from_str(&targets).unwrap();
    let active = &t["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{active}");
    assert_eq!(active["lastError"], "", "{active}");
    let (status, head, body) = http(
        &exporter.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE memsleuth_exporter_errors counter\n"));

    // The default format passes promtool's linter.
    let text = exporter.metrics();
    let (ok, out) = promtool_check_metrics(&text);
    assert!(ok, "promtool check metrics:\n{out}\n---\n{text}");

    // A watched process that exits: its series go, the exporter says so.
    let fd_pid = fd.pid;
    drop(fd);
    let series = format!("memsleuth_process_threads{{pid=\"{fd_pid}\"");
    wait_for(
        "the exited process to leave /metrics",
        Duration::from_secs(10),
        || (!exporter.metrics().contains(&series)).then_some(()),
    );
    let log = exporter.log();
    assert!(
        log.contains(&format!("pid {fd_pid} (python) exited")),
        "{log}"
    );
    let exits = exporter
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("memsleuth_exporter_process_exits_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(exits.is_some_and(|n| n >= 1.0), "{exits:?}");
    assert!(http(&exporter.addr, "/healthz", None).is_some_and(|(s, _, _)| s == 200));
}

#[test]
fn shipped_rules_pass_their_unit_tests_and_the_dashboard_parses() {
    if !prometheus_available() {
        return;
    }
    let prom = repo().join("deploy/prometheus");
    let out = Command::new("promtool")
        .args(["test", "rules", "memsleuth.rules.test.yml"])
        .current_dir(&prom)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every panel's PromQL as a recording rule: promtool parses them all.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/memsleuth-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard:panel{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    assert!(n >= 6);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dashboard PromQL:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn port_in_use_is_one_sentence_and_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = common::run(memsleuth().args(["exporter", "--listen", &addr]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&addr) && r.stderr.contains("another process listens there"),
        "{}",
        r.stderr
    );
    let r = common::run(memsleuth().args(["exporter", "--match", "("]));
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn processes_it_may_not_read_are_logged_and_counted() {
    if unsafe { libc_geteuid() } != 0 || !have("setpriv") {
        eprintln!("skipping: needs root and setpriv to run the exporter as nobody");
        return;
    }
    let py = python312();
    let t = spawn_target(&py, "idle", &["--main", "sleep"]).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let _child = Reaped(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_memsleuth"))
            .args(["exporter", "--listen", &addr, "--interval", "1s"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let body = wait_for("an exposition", Duration::from_secs(20), || {
        http(&addr, "/metrics", None)
            .filter(|(s, _, b)| *s == 200 && b.contains("memsleuth_exporter_processes"))
            .map(|(_, _, b)| b)
    });
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!("pid {} (python) is not watched", t.pid)),
        "{log}"
    );
    let counted = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("memsleuth_exporter_errors_total{reason=\"permission_denied\"} ")
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(counted >= 1.0, "{body}");
    assert!(!body.contains(&format!("pid=\"{}\"", t.pid)), "{body}");
    let unreadable = body
        .lines()
        .find_map(|l| l.strip_prefix("memsleuth_exporter_processes{state=\"unreadable\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(unreadable >= 1.0, "{body}");
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Every interpreter is found, labelled with its version and sampled.
#[test]
fn every_interpreter_is_watched() {
    let targets: Vec<_> = interpreters()
        .iter()
        .filter_map(|i| spawn_target(i, "idle", &["--main", "sleep"]).map(|t| (i.clone(), t)))
        .collect();
    let exporter = Exporter::start(&["--match", &own_targets("idle"), "--heap", "3"]);
    let body = wait_for("every target in /metrics", Duration::from_secs(30), || {
        let m = exporter.metrics();
        targets
            .iter()
            .all(|(_, t)| m.contains(&format!("memsleuth_process_leaking{{pid=\"{}\"", t.pid)))
            .then_some(m)
    });
    for (interp, t) in &targets {
        let (a, b, c) = interp.version;
        let line = body
            .lines()
            .find(|l| {
                l.starts_with("memsleuth_process_resident_memory_bytes{")
                    && l.contains(&format!("pid=\"{}\"", t.pid))
            })
            .unwrap_or_else(|| panic!("[{interp}] no RSS line"));
        assert!(
            line.contains(&format!("python=\"{a}.{b}.{c}\"")),
            "[{interp}] {line}"
        );
        let rss: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(rss > 1e6, "[{interp}] {line}");
    }
    eprintln!("{} interpreters watched", targets.len());

    // --heap: each process gets a census read from outside, or one log
    // line saying why not (and its /proc metrics go on).
    let census = |m: &str, pid: u32| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("memsleuth_python_heap_objects{{pid=\"{pid}\""))
                    .and_then(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
            })
            .filter(|n| *n > 100.0)
    };
    let skipped = |log: &str, pid: u32| log.contains(&format!("pid {pid}: no census of its heap"));
    let body = wait_for(
        "a census or a reason for each",
        Duration::from_secs(60),
        || {
            let m = exporter.metrics();
            let log = exporter.log();
            targets
                .iter()
                .all(|(_, t)| census(&m, t.pid).is_some() || skipped(&log, t.pid))
                .then_some(m)
        },
    );
    let log = exporter.log();
    let mut read = 0;
    for (interp, t) in &targets {
        match census(&body, t.pid) {
            Some(n) => {
                read += 1;
                eprintln!("[{interp}] census: {n} objects");
                assert!(
                    body.contains(&format!("memsleuth_python_objects{{pid=\"{}\"", t.pid)),
                    "[{interp}] no types"
                );
            }
            None => eprintln!(
                "[{interp}] {}",
                log.lines()
                    .find(|l| l.contains(&format!("pid {}:", t.pid)))
                    .unwrap_or_default()
            ),
        }
    }
    assert!(read >= 1, "no census on any interpreter:\n{log}");
    assert!(!log.contains("census failed"), "{log}");
}
