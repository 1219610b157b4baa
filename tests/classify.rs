//! The growth classifier on samples recorded from the real leak targets
//! (tests/fixtures/classify/, see its README), and live on a healthy process.

mod common;

use common::{Interpreter, spawn_target};
use memsleuth::analysis::classify::{Signal, classify};
use memsleuth::analysis::groups::Backing;
use memsleuth::process::Process;
use memsleuth::process::fds::FdKind;
use memsleuth::process::sample::{Sample, Want};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCENARIOS: &[&str] = &[
    "sysv_shm_reattach",
    "posix_shm_reopen",
    "memfd_remap",
    "mmap_file_repeat",
    "native_malloc",
    "unbounded_cache",
    "glibc_arenas",
    "thread_leak",
    "fd_leak",
    "virtual_only",
    "swap_instead_of_free",
    "healthy",
    "idle",
];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/classify")
        .join(name)
}

/// t0, t1, ... of a fixture.
fn load(name: &str) -> Vec<Sample> {
    let dir = fixture_dir(name);
    let mut out = Vec::new();
    while dir.join(format!("t{}", out.len())).is_dir() {
        let d = dir.join(format!("t{}", out.len()));
        out.push(Sample::from_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())));
    }
    assert!(out.len() >= 3, "{name}: only {} samples", out.len());
    out
}

fn signals(name: &str) -> Vec<Signal> {
    let sig = classify(&load(name));
    for s in &sig {
        eprintln!("{name}: {}", s.summary());
    }
    sig
}

fn names(sig: &[Signal]) -> Vec<&'static str> {
    sig.iter().map(Signal::name).collect()
}

fn find<'a>(sig: &'a [Signal], name: &str) -> &'a Signal {
    sig.iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(sig)))
}

/// Lines of the last sample's raw maps whose path contains `needle`,
/// split into fields (read independently of memsleuth's parser).
fn raw_maps_lines(name: &str, needle: &str) -> Vec<Vec<String>> {
    let dir = fixture_dir(name);
    let last = (0..)
        .take_while(|i| dir.join(format!("t{i}")).is_dir())
        .last()
        .unwrap();
    std::fs::read_to_string(dir.join(format!("t{last}/maps")))
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn readme_lists_every_scenario() {
    let readme = std::fs::read_to_string(fixture_dir("README.md")).unwrap();
    for s in SCENARIOS {
        assert!(fixture_dir(s).is_dir(), "missing fixture {s}");
        assert!(
            readme.contains(&format!("`{s}`")),
            "README does not describe {s}"
        );
    }
}

#[test]
fn sysv_reattach_names_the_segment_from_the_maps() {
    let sig = signals("sysv_shm_reattach");
    assert_eq!(
        sig[0].name(),
        "repeated-shared-mapping",
        "{:?}",
        names(&sig)
    );
    let lines = raw_maps_lines("sysv_shm_reattach", "/SYSV");
    let shmid: u64 = lines[0][4].parse().unwrap();
    assert!(
        lines.iter().all(|l| l[4] == lines[0][4]),
        "one segment only"
    );
    let Signal::RepeatedSharedMapping {
        object,
        rss,
        rss_shmem,
        pss_shmem,
        window,
        ..
    } = &sig[0]
    else {
        panic!()
    };
    assert!(matches!(object.backing, Backing::Sysv { shmid: s, .. } if s == shmid));
    assert_eq!(object.instances.after as usize, lines.len());
    assert!(object.instances.delta >= 40, "{:?}", object.instances);
    assert!(window.steady);
    // 64 KiB per attach shows in RSS and RssShmem; PSS of the one segment stays put.
    assert!(rss_shmem.delta >= object.instances.delta * 60 * 1024);
    assert!(rss.delta >= rss_shmem.delta * 9 / 10);
    assert!(pss_shmem.unwrap().delta.abs() <= 4096, "{pss_shmem:?}");
    assert!(
        sig[0]
            .summary()
            .starts_with(&format!("shmid 0x{shmid:x} gained ")),
        "{}",
        sig[0].summary()
    );
    assert!(sig[0].summary().contains("shmat without shmdt"));
}

#[test]
fn posix_shm_reopen_names_the_dev_shm_file() {
    let sig = signals("posix_shm_reopen");
    assert_eq!(
        sig[0].name(),
        "repeated-shared-mapping",
        "{:?}",
        names(&sig)
    );
    let path = raw_maps_lines("posix_shm_reopen", "/dev/shm/")[0][5].clone();
    assert!(
        matches!(&sig[0].object().unwrap().backing, Backing::PosixShm { path: p, .. } if *p == path)
    );
    // Each SharedMemory keeps its fd open (and mmap dup()s it): fds grow too.
    let Signal::FdGrowth {
        by_kind: Some(k), ..
    } = find(&sig, "fd-growth")
    else {
        panic!()
    };
    assert!(k[&FdKind::File] >= 40, "{k:?}");
}

#[test]
fn memfd_remap_names_the_memfd() {
    let sig = signals("memfd_remap");
    assert_eq!(
        sig[0].name(),
        "repeated-shared-mapping",
        "{:?}",
        names(&sig)
    );
    assert!(
        matches!(&sig[0].object().unwrap().backing, Backing::Memfd { name, .. } if name == "memsleuth-memfd")
    );
    let Signal::FdGrowth {
        by_kind: Some(k), ..
    } = find(&sig, "fd-growth")
    else {
        panic!()
    };
    assert!(k[&FdKind::Memfd] >= 40, "{k:?}");
}

#[test]
fn mmap_file_repeat_names_the_file_not_the_libraries() {
    let sig = signals("mmap_file_repeat");
    assert_eq!(sig[0].name(), "repeated-file-mapping", "{:?}", names(&sig));
    assert_eq!(
        names(&sig)
            .iter()
            .filter(|n| **n == "repeated-file-mapping")
            .count(),
        1
    );
    let o = sig[0].object().unwrap();
    assert!(
        matches!(&o.backing, Backing::File { path, .. } if path.ends_with("/data.bin")),
        "{:?}",
        o.backing
    );
    assert!(o.instances.delta >= 40);
    let Signal::RepeatedFileMapping { rss_file, .. } = &sig[0] else {
        panic!()
    };
    assert!(rss_file.delta >= 40 * 60 * 1024);
    assert!(names(&sig).contains(&"fd-growth"));
}

#[test]
fn native_malloc_is_anon_growth_in_the_heap() {
    let sig = signals("native_malloc");
    assert_eq!(names(&sig), ["anon-growth"]);
    let Signal::AnonGrowth {
        rss_anon,
        heap_size: Some(h),
        anon_mmap_size: Some(a),
        ..
    } = &sig[0]
    else {
        panic!()
    };
    assert!(rss_anon.delta >= 2 << 20);
    assert!(h.delta > a.delta, "heap {h:?} anon {a:?}");
}

#[test]
fn unbounded_cache_is_anon_growth() {
    let sig = signals("unbounded_cache");
    assert_eq!(names(&sig), ["anon-growth"]);
}

#[test]
fn leaked_threads_that_malloc_grow_arenas() {
    let sig = signals("glibc_arenas");
    let Signal::ArenaGrowth {
        arenas,
        size,
        vm_rss,
        ..
    } = find(&sig, "arena-growth")
    else {
        panic!()
    };
    assert!(arenas.delta >= 4, "{arenas:?}");
    assert_eq!(size.delta, arenas.delta * (64 << 20));
    assert!(
        vm_rss.delta < 2 << 20,
        "arenas are address space, not RAM: {vm_rss:?}"
    );
    assert!(names(&sig).contains(&"thread-growth"));
    assert!(
        !names(&sig).contains(&"virtual-only"),
        "stacks and arenas explain VmSize"
    );
}

#[test]
fn thread_leak_is_thread_growth_only() {
    // Arenas reached glibc's 8×ncpu cap during warm-up: no arena signal.
    let sig = signals("thread_leak");
    assert_eq!(names(&sig), ["thread-growth"]);
    let Signal::ThreadGrowth {
        threads,
        stacks: Some(st),
        ..
    } = &sig[0]
    else {
        panic!()
    };
    assert!(threads.delta >= 40);
    assert_eq!(st.delta, threads.delta);
}

#[test]
fn fd_leak_breaks_down_by_kind() {
    let sig = signals("fd_leak");
    assert_eq!(names(&sig), ["fd-growth"]);
    let Signal::FdGrowth {
        by_kind: Some(k),
        fds,
        ..
    } = &sig[0]
    else {
        panic!()
    };
    // Events cycle file, pipe (2 fds), socket.
    assert!(k[&FdKind::File] >= 15 && k[&FdKind::Socket] >= 15, "{k:?}");
    assert_eq!(k[&FdKind::Pipe], 2 * k[&FdKind::Socket]);
    assert_eq!(k.values().sum::<i64>(), fds.delta);
}

#[test]
fn untouched_mmaps_are_virtual_only() {
    let sig = signals("virtual_only");
    assert_eq!(names(&sig), ["virtual-only"]);
    let Signal::VirtualOnly {
        unexplained,
        vm_rss,
        largest: Some(g),
        ..
    } = &sig[0]
    else {
        panic!()
    };
    assert!(unexplained.delta >= 256 << 20);
    assert!(vm_rss.delta.abs() < 1 << 20);
    assert_eq!(g.backing, Backing::Anonymous);
}

#[test]
fn swap_instead_of_free_is_recognised() {
    let sig = signals("swap_instead_of_free");
    assert_eq!(names(&sig), ["swap-instead-of-free"]);
}

#[test]
fn healthy_and_idle_give_no_signals() {
    for name in ["healthy", "idle"] {
        assert_eq!(names(&signals(name)), Vec::<&str>::new(), "{name}");
    }
}

#[test]
fn every_fixture_signal_is_steady_and_serialisable() {
    for name in SCENARIOS {
        for s in signals(name) {
            assert!(s.window().steady, "{name}: {}", s.summary());
            let json = serde_json::to_value(&s).unwrap();
            assert_eq!(json["signal"], s.name());
            assert!(json["rate_per_s"].as_f64().unwrap() > 0.0, "{name}: {json}");
        }
    }
}

#[test]
fn fixtures_without_maps_rollup_or_fds_degrade_gracefully() {
    for name in SCENARIOS {
        let strip = |f: &dyn Fn(&mut Sample)| -> Vec<Signal> {
            let mut s = load(name);
            s.iter_mut().for_each(f);
            classify(&s)
        };
        let no_maps = strip(&|s| {
            s.mappings = None;
            s.map_count = None;
        });
        assert!(
            no_maps.iter().all(|s| s.object().is_none()),
            "{name}: {:?}",
            names(&no_maps)
        );
        assert!(!names(&no_maps).contains(&"arena-growth"));
        let no_fds = strip(&|s| {
            s.fds = None;
            s.fd_count = None;
        });
        assert!(!names(&no_fds).contains(&"fd-growth"));
        let no_rollup = strip(&|s| s.rollup = None);
        assert_eq!(
            names(&no_rollup),
            names(&classify(&load(name))),
            "{name}: rollups are evidence only"
        );
        // Two samples: no steadiness judgement, still no panic.
        let two = load(name)[2..].to_vec();
        for s in classify(&two) {
            assert!(!s.window().steady);
        }
    }
}

/// python3 on PATH, else pyenv's 3.12.1.
fn find_python() -> Option<Interpreter> {
    let home = std::env::var("HOME").unwrap_or_default();
    let pyenv = PathBuf::from(home).join(".pyenv/versions/3.12.1/bin/python");
    for cand in [PathBuf::from("python3"), pyenv] {
        let Ok(out) = Command::new(&cand)
            .args(["-c", "import sys; print(*sys.version_info[:3])"])
            .output()
        else {
            continue;
        };
        let v: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if out.status.success() && v.len() == 3 {
            let label = format!("{} {}.{}.{}", cand.display(), v[0], v[1], v[2]);
            return Some(Interpreter {
                path: cand,
                version: (v[0], v[1], v[2]),
                label,
                kind: "env",
            });
        }
    }
    None
}

#[test]
fn live_healthy_process_shows_no_growth() {
    let Some(interp) = find_python() else {
        assert!(
            std::env::var("CI").is_err(),
            "no python3 for the live classify test"
        );
        eprintln!("skipped: no python3 on PATH and no ~/.pyenv/versions/3.12.1");
        return;
    };
    // Dropping the target terminates and reaps it, also when an assert fails.
    let target = spawn_target(&interp, "healthy", &[]).expect("healthy.py runs everywhere");
    std::thread::sleep(Duration::from_secs(2));
    let proc = Process::open(target.pid).unwrap();
    let want = Want {
        rollup: true,
        maps: true,
        fd_kinds: true,
    };
    let t0 = Instant::now();
    let mut samples = Vec::new();
    for i in 0..=10u32 {
        let due = t0 + Duration::from_secs(i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        samples.push(Sample::collect(&proc, t0, want).unwrap());
    }
    assert!(target.is_alive());
    assert!(
        samples
            .iter()
            .all(|s| s.rollup.is_some() && s.mappings.is_some() && s.fds.is_some())
    );
    let (first, last) = (&samples[0].status, &samples[10].status);
    eprintln!(
        "[{}] healthy over {:.1} s: VmRSS {} -> {} kB, RssAnon {} -> {} kB",
        interp.label,
        samples[10].t - samples[0].t,
        first.vm_rss / 1024,
        last.vm_rss / 1024,
        first.rss_anon / 1024,
        last.rss_anon / 1024
    );
    let sig = classify(&samples);
    let lines: Vec<String> = sig.iter().map(Signal::summary).collect();
    assert!(
        sig.is_empty(),
        "healthy process classified as growing:\n{}",
        lines.join("\n")
    );
}
