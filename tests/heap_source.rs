//! Where the read-only heap reader's bytes come from, against real
//! interpreters: the paused bulk copy equals lazy reads, a pause stops
//! every thread and always ends (also when the target dies meanwhile or
//! the tool is SIGKILLed), a `gcore` core reads the same interpreter bytes
//! as the live process had, also after it is gone, and the failures users
//! hit (truncated core, a pid that exits mid-read) are one sentence.
//!
//! `MEMSLEUTH_TEST_PYTHONS` (colon-separated paths) replaces discovery.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{for_each_interpreter, spawn_target};
use memsleuth::heap::core::CoreFile;
use memsleuth::heap::snapshot::{Prepared, Snapshot};
use memsleuth::heap::source::{self, Source};
use memsleuth::heap::space::{AddressSpace, LiveLazy};
use memsleuth::process::Process;
use memsleuth::process::freeze::Freeze;
use memsleuth::python;

/// The state letter of every thread of `pid`.
fn thread_states(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if let Some(c) = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.trim().chars().next())
        {
            out.push((tid, c));
        }
    }
    out
}

fn all_stopped(pid: u32) -> bool {
    let s = thread_states(pid);
    !s.is_empty() && s.iter().all(|(_, c)| *c == 't')
}

fn none_stopped_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if thread_states(pid)
            .iter()
            .all(|(_, c)| *c != 't' && *c != 'T')
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn sigkill(pid: u32) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Where the interpreter keeps its collector state: `_PyRuntime` (3.7+),
/// else the generation list `_PyGC_generation0` points at.
fn gc_root(py: &python::PythonProcess, space: &dyn AddressSpace) -> (u64, usize) {
    if let Some(a) = py.symbol_address("_PyRuntime") {
        return (a, 1024);
    }
    let g = py
        .symbol_address("_PyGC_generation0")
        .expect("neither _PyRuntime nor _PyGC_generation0");
    let heads = space.read_u64(g).expect("read _PyGC_generation0");
    (heads, 3 * 48)
}

#[test]
fn snapshot_equals_lazy_reads_while_paused() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "heapsrc_threads", &[]).unwrap();
        let (addr, len): (u64, usize) = {
            let v = t.info.get("marker").unwrap();
            let mut it = v.split_whitespace().map(|x| x.parse::<u64>().unwrap());
            (it.next().unwrap(), it.next().unwrap() as usize)
        };
        let prepared = Prepared::new(t.pid).unwrap();
        let freeze = Freeze::pause(t.pid).unwrap();
        assert!(all_stopped(t.pid), "{:?}", thread_states(t.pid));
        let snap = prepared.copy().unwrap();
        let lazy = LiveLazy { pid: t.pid };
        let mut compared = 0u64;
        for (start, len) in snap.ranges().collect::<Vec<_>>() {
            let mut a = vec![0u8; len as usize];
            let mut b = vec![0u8; len as usize];
            assert!(snap.read(start, &mut a));
            if !lazy.read(start, &mut b) {
                continue; // a mapping lazy reads cannot reach whole
            }
            assert!(
                a == b,
                "[{}] bytes differ in {start:#x}+{len}",
                interp.label
            );
            compared += len;
        }
        let paused = freeze.resume();
        assert!(compared > 1 << 20, "compared only {compared} bytes");
        let mut m = vec![0u8; len];
        assert!(snap.read(addr, &mut m));
        assert!(m.starts_with(b"memsleuth-heapsrc-marker-"), "{m:?}");
        assert!(none_stopped_soon(t.pid));
        eprintln!(
            "[{}] {} MiB copied, {compared} bytes compared, paused {:?}",
            interp.label,
            snap.copied_bytes() >> 20,
            paused
        );
    });
}

#[test]
fn a_pause_stops_every_busy_thread_and_ends() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "heapsrc_threads", &["--busy", "--threads", "4"]).unwrap();
        for _ in 0..3 {
            let f = Freeze::pause(t.pid).unwrap();
            let states = thread_states(t.pid);
            assert!(states.len() >= 5, "{states:?}");
            assert!(all_stopped(t.pid), "[{}] {states:?}", interp.label);
            assert_eq!(f.threads(), states.len());
            drop(f);
            assert!(none_stopped_soon(t.pid), "{:?}", thread_states(t.pid));
        }
        // Through source::open: detected, copied, resumed.
        let o = source::open(&Source::Live {
            pid: t.pid,
            pause: true,
        })
        .unwrap();
        assert!(o.paused_s > 0.0 && o.copied_bytes > 0);
        assert!(none_stopped_soon(t.pid));
        assert!(t.is_alive());
    });
}

#[test]
fn a_target_killed_during_the_pause_is_fine() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "heapsrc_threads", &["--busy"]).unwrap();
        let f = Freeze::pause(t.pid).unwrap();
        sigkill(t.pid);
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        drop(f);
        // A bound against hangs, not a speed goal: collecting the dying
        // threads waits at most 0.5 s, longer only on a starved machine.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "[{}] {took:?}", interp.label);
        let status = t.kill_and_reap();
        assert!(status.is_some(), "[{}] not reaped", interp.label);
    });
}

/// Not a test of its own: run by `a_killed_tool_leaves_the_target_running`
/// in a child process that pauses the pid in `HEAPSRC_HOLD_PID` and waits
/// to be killed.
#[test]
#[ignore]
fn hold_a_pause() {
    let Ok(pid) = std::env::var("HEAPSRC_HOLD_PID") else {
        return;
    };
    let _f = Freeze::pause(pid.parse().unwrap()).unwrap();
    println!("holding");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_tool_leaves_the_target_running() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "heapsrc_threads", &["--busy"]).unwrap();
        let mut holder = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hold_a_pause", "--ignored", "--nocapture"])
            .env("HEAPSRC_HOLD_PID", t.pid.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_stopped(t.pid) {
            assert!(Instant::now() < deadline, "never paused");
            std::thread::sleep(Duration::from_millis(10));
        }
        holder.kill().unwrap(); // SIGKILL
        holder.wait().unwrap();
        assert!(
            none_stopped_soon(t.pid),
            "[{}] still stopped: {:?}",
            interp.label,
            thread_states(t.pid)
        );
        assert!(t.is_alive());
    });
}

#[test]
fn a_pid_that_exits_mid_read_is_one_sentence() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "heapsrc_threads", &[]).unwrap();
        let prepared = Prepared::new(t.pid).unwrap();
        sigkill(t.pid);
        t.kill_and_reap();
        let err = prepared.copy().err().expect("copy of a dead process");
        let msg = err.to_string();
        assert!(
            msg.contains("exited") || msg.contains("does not exist"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        let err = source::open(&Source::Live {
            pid: t.pid,
            pause: true,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(&t.pid.to_string()) && !err.contains('\n'),
            "{err}"
        );
        let _ = interp;
    });
}

#[test]
fn a_gcore_core_reads_like_the_live_process_after_it_is_gone() {
    for_each_interpreter(|interp| {
        let t = spawn_target(interp, "heapsrc_threads", &[]).unwrap();
        let proc = Process::open(t.pid).unwrap();
        let live_py = python::detect(&proc, &proc.maps().unwrap())
            .unwrap()
            .unwrap();
        let live = Snapshot::take(t.pid).unwrap();
        let (root, len) = gc_root(&live_py, &live);
        let mut want = vec![0u8; len];
        assert!(live.read(root, &mut want));
        let core = common::gcore(t.pid, t.tmpdir());
        let (maddr, mlen): (u64, usize) = {
            let v = t.info.get("marker").unwrap();
            let mut it = v.split_whitespace().map(|x| x.parse::<u64>().unwrap());
            (it.next().unwrap(), it.next().unwrap() as usize)
        };
        t.kill_and_reap();
        assert!(!Path::new(&format!("/proc/{}", t.pid)).exists());

        let o = source::open(&Source::Core {
            core: core.clone(),
            exe: None,
        })
        .unwrap_or_else(|e| panic!("[{}] {e}", interp.label));
        assert_eq!(o.pid, t.pid);
        assert_eq!(o.python.version, live_py.version);
        assert_eq!(o.python.binary, live_py.binary);
        let mut got = vec![0u8; len];
        assert!(
            o.space.read(root, &mut got),
            "[{}] root unreadable",
            interp.label
        );
        assert!(got == want, "[{}] interpreter bytes differ", interp.label);
        let mut m = vec![0u8; mlen];
        assert!(o.space.read(maddr, &mut m));
        assert!(m.starts_with(b"memsleuth-heapsrc-marker-"));
        // Read-only data comes from the binaries on disk: the version
        // string / a static type's name, e.g. PyList_Type.tp_name.
        let list_type = o.python.symbol_address("PyList_Type").unwrap();
        let name_ptr = o.space.read_u64(list_type + 24).unwrap();
        let mut name = [0u8; 5];
        assert!(o.space.read(name_ptr, &mut name));
        assert_eq!(&name, b"list\0", "[{}]", interp.label);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);

        let c = CoreFile::open(&core, &Default::default()).unwrap();
        assert!(c.threads >= 4, "threads {}", c.threads);

        // Truncated: half of it, then only the headers.
        let data = std::fs::read(&core).unwrap();
        for keep in [data.len() / 2, 4096, 100] {
            let cut = t.tmpdir().join(format!("cut-{keep}"));
            std::fs::write(&cut, &data[..keep]).unwrap();
            match source::open(&Source::Core {
                core: cut.clone(),
                exe: None,
            }) {
                Ok(o) => assert!(
                    o.warnings.iter().any(|w| w.contains("truncated")),
                    "{keep}: {:?}",
                    o.warnings
                ),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&*cut.to_string_lossy()), "{msg}");
                    assert!(!msg.contains('\n'), "{msg}");
                }
            }
        }
        std::fs::remove_file(&core).ok();
    });
}
