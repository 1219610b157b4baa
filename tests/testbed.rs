//! Proves the test bed: every target, under every discovered interpreter,
//! really leaks (or really stays flat) as seen directly in /proc, and cleans
//! up after itself.

mod common;

use common::{
    Interpreter, Target, for_each_interpreter, proc_fd_count, proc_maps, proc_status, spawn_target,
    sysv_shmids,
};
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

const WARM: Duration = Duration::from_millis(1500);
const GAP: Duration = Duration::from_secs(1);
/// Default rate is 20 events/s; demand at least half of that over GAP.
const MIN_EVENTS: i64 = 10;
/// 10 events of 64 KiB, in kB.
const MIN_KB: i64 = 10 * 64;

#[derive(Debug, Clone)]
struct Snap {
    rss: i64,
    anon: i64,
    shmem: i64,
    file: i64,
    threads: i64,
    fds: i64,
    maps: Vec<String>,
}

fn snap(pid: u32) -> Snap {
    let st = proc_status(pid);
    let g = |k: &str| {
        *st.get(k)
            .unwrap_or_else(|| panic!("no {k} in /proc/{pid}/status")) as i64
    };
    Snap {
        rss: g("VmRSS"),
        anon: g("RssAnon"),
        shmem: g("RssShmem"),
        file: g("RssFile"),
        threads: g("Threads"),
        fds: proc_fd_count(pid) as i64,
        maps: proc_maps(pid),
    }
}

impl Snap {
    fn maps_count(&self, pred: impl Fn(&str) -> bool) -> i64 {
        self.maps.iter().filter(|l| pred(l)).count() as i64
    }
}

/// Snapshot after `warm`, and again GAP later.
fn two_snaps(t: &Target, warm: Duration) -> (Snap, Snap) {
    sleep(warm);
    assert!(
        t.is_alive(),
        "[{}] {} died:\n{}",
        t.interp_label,
        t.name,
        t.stderr()
    );
    let a = snap(t.pid);
    sleep(GAP);
    assert!(
        t.is_alive(),
        "[{}] {} died:\n{}",
        t.interp_label,
        t.name,
        t.stderr()
    );
    let b = snap(t.pid);
    (a, b)
}

fn spawn(i: &Interpreter, name: &str, args: &[&str]) -> Target {
    spawn_target(i, name, args)
        .unwrap_or_else(|| panic!("{name} unexpectedly unsupported on {}", i.label))
}

fn grew(what: &str, a: i64, b: i64, min: i64) {
    assert!(b - a >= min, "{what} should grow by >= {min}: {a} -> {b}");
}

fn flat(what: &str, a: i64, b: i64, tol: i64) {
    assert!(
        (b - a).abs() <= tol,
        "{what} should stay flat (±{tol}): {a} -> {b}"
    );
}

/// maps lines of a SysV attach of `shmid` (inode column is the shmid).
fn is_sysv(shmid: i64) -> impl Fn(&str) -> bool {
    move |l: &str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[4] == shmid.to_string() && f[5].starts_with("/SYSV")
    }
}

/// Row of /proc/sysvipc/shm for shmid created by pid (guards against id reuse).
fn sysv_row_exists(shmid: i64, cpid: u32) -> bool {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 4 && f[1] == shmid.to_string() && f[4] == cpid.to_string()
    })
}

#[test]
fn discovery_finds_working_interpreters() {
    let list = common::interpreters();
    assert!(!list.is_empty());
    for i in &list {
        assert!(i.path.exists(), "{}", i.label);
        assert!(
            i.version.0 == 2 || i.version.0 == 3,
            "{}: {:?}",
            i.label,
            i.version
        );
        assert!(["pyenv-shared", "debian-static", "provisioned", "env"].contains(&i.kind));
        assert_eq!(i.minor(), (i.version.0, i.version.1));
        assert!(i.at_least(i.version.0, i.version.1));
        assert!(!i.at_least(i.version.0, i.version.1 + 1));
    }
}

#[test]
fn sysv_shm_reattach_leaks_and_never_outlives_target() {
    for_each_interpreter(|i| {
        let t = spawn(i, "sysv_shm_reattach", &[]);
        let shmid: i64 = t.info_parse("shmid");
        assert_eq!(t.info_parse::<u64>("size"), 65536);
        let first = snap(t.pid).maps_count(is_sysv(shmid));
        assert!(
            first >= 6,
            "1 attach + 5 initial expected at ready, got {first}"
        );
        assert!(
            sysv_row_exists(shmid, t.pid),
            "shmid {shmid} not in /proc/sysvipc/shm"
        );
        let (a, b) = two_snaps(&t, WARM);
        grew(
            "SYSV maps lines",
            a.maps_count(is_sysv(shmid)),
            b.maps_count(is_sysv(shmid)),
            MIN_EVENTS,
        );
        grew("RssShmem kB", a.shmem, b.shmem, MIN_KB);
        grew("VmRSS kB", a.rss, b.rss, MIN_KB);
        // Even SIGKILL (no cleanup code runs) must not leave the segment.
        let pid = t.pid;
        t.kill_and_reap();
        drop(t);
        assert!(
            !sysv_row_exists(shmid, pid),
            "shmid {shmid} outlived its target"
        );
        assert!(!sysv_shmids().is_empty() || !sysv_row_exists(shmid, pid));
    });
}

#[test]
fn mmap_file_repeat_leaks_and_removes_file() {
    for_each_interpreter(|i| {
        let t = spawn(i, "mmap_file_repeat", &[]);
        let path = t.info["path"].clone();
        assert!(
            Path::new(&path).is_absolute() && Path::new(&path).is_file(),
            "{path}"
        );
        let m = |l: &str| l.ends_with(&format!(" {path}"));
        let (a, b) = two_snaps(&t, WARM);
        grew(
            "file maps lines",
            a.maps_count(m),
            b.maps_count(m),
            MIN_EVENTS,
        );
        grew("VmRSS kB", a.rss, b.rss, MIN_KB);
        grew(
            "RssFile+RssShmem kB",
            a.file + a.shmem,
            b.file + b.shmem,
            MIN_KB,
        );
        // Its own SIGTERM handler removes the file and its directory.
        let st = t.terminate(Duration::from_secs(5));
        assert!(
            st.is_some_and(|s| s.success()),
            "no clean exit on SIGTERM: {st:?}"
        );
        assert!(!Path::new(&path).exists(), "{path} left behind");
        assert!(
            !Path::new(&path).parent().unwrap().exists(),
            "dir of {path} left behind"
        );
    });
}

#[test]
fn posix_shm_reopen_leaks_and_unlinks() {
    for_each_interpreter(|i| {
        let Some(t) = spawn_target(i, "posix_shm_reopen", &[]) else {
            assert!(!i.at_least(3, 8), "SharedMemory exists on {}", i.label);
            return;
        };
        assert!(i.at_least(3, 8));
        let name = t.info["name"].clone();
        let file = format!("/dev/shm/{name}");
        assert!(Path::new(&file).exists(), "{file}");
        let m = |l: &str| l.ends_with(&format!(" {file}"));
        let (a, b) = two_snaps(&t, WARM);
        grew(
            "/dev/shm maps lines",
            a.maps_count(m),
            b.maps_count(m),
            MIN_EVENTS,
        );
        grew("RssShmem kB", a.shmem, b.shmem, MIN_KB);
        // SharedMemory keeps its fd plus mmap's dup: fds grow as well.
        grew("fds", a.fds, b.fds, MIN_EVENTS);
        assert_eq!(
            b.threads, 1,
            "no resource-tracker or other threads expected"
        );
        let st = t.terminate(Duration::from_secs(5));
        assert!(
            st.is_some_and(|s| s.success()),
            "no clean exit on SIGTERM: {st:?}"
        );
        assert!(!Path::new(&file).exists(), "{file} left behind");
        drop(t);
        assert!(!Path::new(&file).exists(), "{file} left behind");
    });
}

#[test]
fn memfd_remap_leaks() {
    for_each_interpreter(|i| {
        let t = spawn(i, "memfd_remap", &[]);
        let method = t.info["method"].clone();
        assert_eq!(method, if i.at_least(3, 8) { "os" } else { "ctypes" });
        let tag = format!("/memfd:{}", t.info["memfd"]);
        let m = |l: &str| l.contains(&tag);
        let (a, b) = two_snaps(&t, WARM);
        grew(
            "memfd maps lines",
            a.maps_count(m),
            b.maps_count(m),
            MIN_EVENTS,
        );
        grew("RssShmem kB", a.shmem, b.shmem, MIN_KB);
    });
}

#[test]
fn thread_leak_leaks_threads() {
    for_each_interpreter(|i| {
        for block in ["event", "sleep"] {
            let t = spawn(i, "thread_leak", &["--block", block]);
            let first = snap(t.pid).threads;
            assert!(first >= 6, "main + 5 initial threads expected, got {first}");
            let (a, b) = two_snaps(&t, WARM);
            grew(
                &format!("Threads (--block {block})"),
                a.threads,
                b.threads,
                MIN_EVENTS,
            );
        }
    });
}

#[test]
fn fd_leak_leaks_each_kind() {
    for_each_interpreter(|i| {
        let t = spawn(i, "fd_leak", &[]);
        let path = t.info["path"].clone();
        assert_eq!(t.info["kinds"], "file,pipe,socket");
        let (a, b) = two_snaps(&t, WARM);
        grew("fds", a.fds, b.fds, MIN_EVENTS);
        let mut kinds = (0, 0, 0);
        for e in std::fs::read_dir(format!("/proc/{}/fd", t.pid)).unwrap() {
            let Ok(l) = std::fs::read_link(e.unwrap().path()) else {
                continue;
            };
            let l = l.to_string_lossy().into_owned();
            if l == path {
                kinds.0 += 1;
            } else if l.starts_with("pipe:") {
                kinds.1 += 1;
            } else if l.starts_with("socket:") {
                kinds.2 += 1;
            }
        }
        assert!(
            kinds.0 >= 4 && kinds.1 >= 8 && kinds.2 >= 4,
            "file/pipe/socket fds: {kinds:?}"
        );
        let st = t.terminate(Duration::from_secs(5));
        assert!(
            st.is_some_and(|s| s.success()),
            "no clean exit on SIGTERM: {st:?}"
        );
        assert!(!Path::new(&path).exists(), "{path} left behind");
        drop(t);

        let t = spawn(i, "fd_leak", &["--kinds", "pipe"]);
        let (a, b) = two_snaps(&t, Duration::from_millis(200));
        grew(
            "fds (--kinds pipe: 2 per event)",
            a.fds,
            b.fds,
            2 * MIN_EVENTS,
        );
    });
}

#[test]
fn native_malloc_leaks_anon() {
    for_each_interpreter(|i| {
        let t = spawn(i, "native_malloc", &[]);
        let (a, b) = two_snaps(&t, WARM);
        grew("RssAnon kB", a.anon, b.anon, MIN_KB);
        flat("fds", a.fds, b.fds, 0);
        flat("Threads", a.threads, b.threads, 0);
    });
}

#[test]
fn unbounded_cache_grows() {
    for_each_interpreter(|i| {
        let t = spawn(
            i,
            "unbounded_cache",
            &["--rate", "200", "--payload", "4096"],
        );
        assert_eq!(t.info["module"], "app");
        assert_eq!(t.info["cache"], "_session_cache");
        assert_eq!(t.info["class"], "UserSession");
        // Longer warm-up: newer interpreters first reuse ~1 MB of heap freed
        // during start-up before the heap grows.
        let (a, b) = two_snaps(&t, Duration::from_secs(3));
        // 100+ sessions of >4 KiB each.
        grew("RssAnon kB", a.anon, b.anon, 400);
        flat("fds", a.fds, b.fds, 0);
    });
}

#[test]
fn healthy_stays_flat() {
    for_each_interpreter(|i| {
        let t = spawn(i, "healthy", &["--rate", "100"]);
        assert_eq!(t.info["capacity"], "1000");
        let (a, b) = two_snaps(&t, WARM);
        flat("VmRSS kB", a.rss, b.rss, 256);
        flat("fds", a.fds, b.fds, 0);
        flat("Threads", a.threads, b.threads, 0);
        flat("maps lines", a.maps.len() as i64, b.maps.len() as i64, 2);
    });
}

#[test]
fn idle_stays_flat() {
    for_each_interpreter(|i| {
        let t = spawn(i, "idle", &[]);
        assert!(t.info.is_empty(), "{:?}", t.info);
        let (a, b) = two_snaps(&t, Duration::from_millis(300));
        flat("VmRSS kB", a.rss, b.rss, 16);
        flat("fds", a.fds, b.fds, 0);
        assert_eq!((a.threads, b.threads), (1, 1));
        assert_eq!(a.maps.len(), b.maps.len());
    });
}

/// Syscall number the main thread is blocked in (x86_64 only).
fn main_thread_syscall(pid: u32) -> Option<i64> {
    for _ in 0..50 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
        if let Some(n) = s.split_whitespace().next().and_then(|n| n.parse().ok()) {
            return Some(n);
        }
        sleep(Duration::from_millis(20)); // "running"
    }
    None
}

#[test]
fn main_thread_modes() {
    for_each_interpreter(|i| {
        let modes = ["busy", "sleep", "event", "accept"];
        let targets: Vec<Target> = modes
            .iter()
            .map(|m| spawn(i, "sysv_shm_reattach", &["--main", m]))
            .collect();
        sleep(WARM);
        let a: Vec<Snap> = targets.iter().map(|t| snap(t.pid)).collect();
        sleep(GAP);
        for ((mode, t), a) in modes.iter().zip(&targets).zip(&a) {
            assert!(t.is_alive(), "--main {mode} died:\n{}", t.stderr());
            let b = snap(t.pid);
            let shmid: i64 = t.info_parse("shmid");
            grew(
                &format!("--main {mode}: SYSV maps lines"),
                a.maps_count(is_sysv(shmid)),
                b.maps_count(is_sysv(shmid)),
                MIN_EVENTS,
            );
            let want_threads = if *mode == "busy" { 1 } else { 2 };
            assert_eq!(b.threads, want_threads, "--main {mode}: Threads");
            assert_eq!(
                t.info.contains_key("port"),
                *mode == "accept",
                "--main {mode}: {:?}",
                t.info
            );
            if cfg!(target_arch = "x86_64") {
                let nr = main_thread_syscall(t.pid);
                let ok: &[i64] = match *mode {
                    "event" => &[202],                 // futex
                    "accept" => &[43, 288],            // accept, accept4
                    "sleep" => &[23, 35, 230, 270, 7], // select, nanosleep, clock_nanosleep, pselect6, poll
                    _ => &[],
                };
                if !ok.is_empty() {
                    assert!(
                        nr.is_some_and(|n| ok.contains(&n)),
                        "--main {mode}: main thread in syscall {nr:?}"
                    );
                }
            }
            if *mode == "accept" {
                let port: u16 = t.info_parse("port");
                let c = std::net::TcpStream::connect(("127.0.0.1", port));
                assert!(c.is_ok(), "--main accept: connect to {port}: {c:?}");
            }
        }
    });
}

#[test]
fn max_stops_leaking_and_rate_zero_is_flat() {
    for_each_interpreter(|i| {
        let t = spawn(i, "sysv_shm_reattach", &["--max", "10", "--rate", "50"]);
        let shmid: i64 = t.info_parse("shmid");
        let (a, b) = two_snaps(&t, Duration::from_millis(800));
        // 1 set-up attach + 10 events, then nothing more.
        assert_eq!(a.maps_count(is_sysv(shmid)), 11);
        assert_eq!(b.maps_count(is_sysv(shmid)), 11);
        drop(t);

        let t = spawn(
            i,
            "native_malloc",
            &["--rate", "0", "--initial", "3", "--main", "event"],
        );
        let (a, b) = two_snaps(&t, Duration::from_millis(300));
        flat("RssAnon kB (--rate 0)", a.anon, b.anon, 32);
    });
}
