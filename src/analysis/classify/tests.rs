use super::*;
use crate::process::fds::FdSummary;
use crate::process::maps::{MemStats, parse_maps};
use crate::process::status::{Statm, Status};

const KIB: u64 = 1024;

fn sample(t: f64, f: impl FnOnce(&mut Sample)) -> Sample {
    let mut s = Sample {
        t,
        status: Status {
            vm_size: 20 * MIB,
            vm_rss: 14 * MIB,
            rss_anon: 6 * MIB,
            rss_file: 8 * MIB,
            threads: 1,
            ..Status::default()
        },
        statm: Statm::default(),
        rollup: None,
        threads: 1,
        fd_count: None,
        fds: None,
        map_count: None,
        mappings: None,
    };
    f(&mut s);
    s.threads = s.status.threads;
    s
}

/// Libc segments plus `n` attaches of one 64 KiB SysV segment.
fn sysv_maps(n: u64) -> String {
    let mut m = String::from(
        "7f0000000000-7f0000001000 r--p 00000000 fe:01 10 /usr/lib/libc.so.6\n\
         7f0000001000-7f0000005000 r-xp 00001000 fe:01 10 /usr/lib/libc.so.6\n\
         555500000000-555500400000 rw-p 00000000 00:00 0 [heap]\n",
    );
    for i in 0..n {
        let start = 0x7e0000000000 + i * 0x10000;
        m.push_str(&format!(
            "{:x}-{:x} rw-s 00000000 00:01 1789692874 /SYSV6aac8bca (deleted)\n",
            start,
            start + 0x10000
        ));
    }
    m
}

fn with_maps(s: &mut Sample, text: &str) {
    let m = parse_maps(text.as_bytes());
    s.map_count = Some(m.len());
    s.mappings = Some(m);
}

fn sysv_series(counts: &[u64], pss: Option<u64>) -> Vec<Sample> {
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            sample(i as f64, |s| {
                s.status.rss_shmem = n * 64 * KIB;
                s.status.vm_rss += n * 64 * KIB;
                s.rollup = pss.map(|p| MemStats {
                    pss_shmem: p,
                    ..MemStats::default()
                });
                with_maps(s, &sysv_maps(n));
            })
        })
        .collect()
}

fn names(sig: &[Signal]) -> Vec<&'static str> {
    sig.iter().map(Signal::name).collect()
}

#[test]
fn no_samples_or_one_sample_give_nothing() {
    assert!(classify(&[]).is_empty());
    assert!(classify(&sysv_series(&[40], Some(64 * KIB))).is_empty());
}

#[test]
fn repeated_sysv_attach_names_the_shmid() {
    let sig = classify(&sysv_series(&[2, 22, 42], Some(64 * KIB)));
    assert_eq!(names(&sig), ["repeated-shared-mapping"]);
    let Signal::RepeatedSharedMapping {
        object,
        rss,
        pss_shmem,
        window,
        rate_per_s,
        ..
    } = &sig[0]
    else {
        panic!()
    };
    assert_eq!(
        object.backing,
        Backing::Sysv {
            shmid: 1789692874,
            key: 0x6aac8bca
        }
    );
    assert_eq!((object.mappings.before, object.mappings.after), (2, 42));
    assert_eq!(rss.delta, 40 * 64 * 1024);
    assert_eq!(pss_shmem.unwrap().delta, 0);
    assert!(window.steady);
    assert_eq!(*rate_per_s, (20 * 64 * 1024) as f64);
    assert_eq!(
        sig[0].summary(),
        "shmid 0x6aac8bca gained 40 mappings in 2.0 s (20/s): RSS +2.5 MiB while Pss_Shmem stayed at 64.0 KiB \
         — shmat without shmdt?"
    );
}

#[test]
fn decreasing_or_flat_values_give_nothing() {
    assert!(classify(&sysv_series(&[42, 22, 2], Some(64 * KIB))).is_empty());
    assert!(classify(&sysv_series(&[5, 5, 5, 5], None)).is_empty());
    let s: Vec<Sample> = (0..4)
        .map(|i| {
            sample(i as f64, |s| {
                s.status.threads = 40 - i * 10;
                s.status.rss_anon = (400 - i as u64 * 100) * MIB;
                s.fd_count = Some(100 - i as u64 * 20);
            })
        })
        .collect();
    assert!(classify(&s).is_empty());
}

#[test]
fn growth_that_stopped_during_warm_up_is_not_reported() {
    assert!(classify(&sysv_series(&[2, 40, 40, 40], None)).is_empty());
    let s: Vec<Sample> = [1u32, 30, 30, 31]
        .iter()
        .enumerate()
        .map(|(i, &n)| sample(i as f64, |s| s.status.threads = n))
        .collect();
    assert!(classify(&s).is_empty());
}

#[test]
fn noise_below_the_floors_is_ignored() {
    let s: Vec<Sample> = (0..4)
        .map(|i| {
            sample(i as f64, |s| {
                s.status.rss_anon = 6 * MIB + i * 300 * KIB; // +900 KiB < 1 MiB
                s.status.threads = 1 + i as u32 / 2; // +1
                s.fd_count = Some(5 + i / 2); // +1
            })
        })
        .collect();
    assert!(classify(&s).is_empty());
    // 1 MiB on a 1 GiB heap is under 3 %.
    let s: Vec<Sample> = (0..3)
        .map(|i| sample(i as f64, |s| s.status.rss_anon = 1024 * MIB + i * 4 * MIB))
        .collect();
    assert!(classify(&s).is_empty());
}

#[test]
fn missing_maps_rollup_and_fds_skip_what_needs_them() {
    let s: Vec<Sample> = (0..3)
        .map(|i| {
            sample(i as f64, |s| {
                s.status.rss_anon = 6 * MIB + i * 2 * MIB;
                s.status.rss_shmem = i * MIB; // no maps: cannot name an object
                s.status.threads = 1 + 10 * i as u32;
                s.fd_count = Some(5 + 10 * i);
            })
        })
        .collect();
    let sig = classify(&s);
    assert_eq!(names(&sig), ["anon-growth", "thread-growth", "fd-growth"]);
    let Signal::AnonGrowth {
        pss_anon,
        heap_size,
        anon_mmap_size,
        ..
    } = &sig[0]
    else {
        panic!()
    };
    assert_eq!((pss_anon, heap_size, anon_mmap_size), (&None, &None, &None));
    let Signal::ThreadGrowth { stacks, .. } = &sig[1] else {
        panic!()
    };
    assert!(stacks.is_none());
    let Signal::FdGrowth { by_kind, .. } = &sig[2] else {
        panic!()
    };
    assert!(by_kind.is_none());
    // Without fd counts there is no fd signal at all.
    let no_fds: Vec<Sample> = s
        .into_iter()
        .map(|mut s| {
            s.fd_count = None;
            s
        })
        .collect();
    assert!(!names(&classify(&no_fds)).contains(&"fd-growth"));
}

#[test]
fn fd_kinds_are_broken_down() {
    let s: Vec<Sample> = (0..3u64)
        .map(|i| {
            sample(i as f64, |s| {
                let mut f = FdSummary {
                    total: 5 + 6 * i,
                    ..FdSummary::default()
                };
                f.by_kind.insert(FdKind::Device, 3);
                f.by_kind.insert(FdKind::Pipe, 2 + 4 * i);
                if i > 0 {
                    f.by_kind.insert(FdKind::Socket, 2 * i);
                }
                s.fd_count = Some(f.total);
                s.fds = Some(f);
            })
        })
        .collect();
    let sig = classify(&s);
    let Signal::FdGrowth {
        by_kind: Some(k),
        fds,
        ..
    } = &sig[0]
    else {
        panic!("{sig:?}")
    };
    assert_eq!(fds.delta, 12);
    assert_eq!(
        k.iter().map(|(k, d)| (*k, *d)).collect::<Vec<_>>(),
        [(FdKind::Pipe, 8), (FdKind::Socket, 4)]
    );
    assert!(
        sig[0].summary().contains("+8 pipe, +4 socket"),
        "{}",
        sig[0].summary()
    );
}

#[test]
fn garbage_values_do_not_panic() {
    let huge = "0-ffffffffffffffff rw-p 00000000 00:00 0 \n";
    let mut s: Vec<Sample> = (0..4)
        .map(|i| {
            sample(if i == 2 { f64::NAN } else { i as f64 }, |s| {
                let v = if i % 2 == 0 { u64::MAX } else { 0 };
                s.status = Status {
                    vm_size: v,
                    vm_rss: v,
                    rss_anon: v,
                    rss_file: v,
                    rss_shmem: v,
                    vm_swap: v,
                    threads: u32::MAX,
                    ..Status::default()
                };
                s.fd_count = Some(v);
                s.rollup = Some(MemStats {
                    pss_anon: v,
                    pss_shmem: v,
                    pss_file: v,
                    ..MemStats::default()
                });
                with_maps(s, huge);
            })
        })
        .collect();
    let _ = classify(&s);
    s.reverse();
    for sig in classify(&s) {
        let _ = sig.summary();
    }
    let rising: Vec<Sample> = (0..3u64)
        .map(|i| {
            sample(i as f64, |s| {
                s.status.vm_swap = [0, u64::MAX / 2, u64::MAX][i as usize]
            })
        })
        .collect();
    for sig in classify(&rising) {
        let _ = (sig.summary(), serde_json::to_string(&sig).unwrap());
    }
}

#[test]
fn repeated_file_range_counts_but_library_segments_do_not() {
    let maps = |n: u64| {
        let mut m = String::from(
            "7f0000000000-7f0000001000 r--p 00000000 fe:01 10 /usr/lib/libc.so.6\n\
             7f0000001000-7f0000005000 r-xp 00001000 fe:01 10 /usr/lib/libc.so.6\n\
             7f0000005000-7f0000006000 rw-p 00005000 fe:01 10 /usr/lib/libc.so.6\n",
        );
        for i in 0..n {
            let start = 0x7e0000000000 + i * 0x10000;
            m.push_str(&format!(
                "{:x}-{:x} rw-s 00000000 fe:01 20 /data/blob\n",
                start,
                start + 0x10000
            ));
        }
        m
    };
    let s: Vec<Sample> = [1u64, 11, 21]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            sample(i as f64, |s| {
                s.status.rss_file = 8 * MIB + n * 64 * KIB;
                with_maps(s, &maps(n));
            })
        })
        .collect();
    let sig = classify(&s);
    assert_eq!(names(&sig), ["repeated-file-mapping"]);
    let o = sig[0].object().unwrap();
    assert_eq!(o.label, "/data/blob");
    assert_eq!((o.instances.before, o.instances.after), (1, 21));
}

#[test]
fn thread_leak_stacks_explain_the_virtual_growth() {
    // n threads: an 8 MiB stack and a 4 KiB guard each.
    let maps = |n: u64| {
        let mut m = String::new();
        for i in 0..n {
            let base = 0x7f0000000000 + i * 0x1000000;
            m.push_str(&format!(
                "{:x}-{:x} ---p 00000000 00:00 0 \n",
                base,
                base + 0x1000
            ));
            m.push_str(&format!(
                "{:x}-{:x} rw-p 00000000 00:00 0 \n",
                base + 0x1000,
                base + 0x801000
            ));
        }
        m
    };
    let mk = |extra_anon: u64| -> Vec<Sample> {
        (0..4u64)
            .map(|i| {
                sample(i as f64, |s| {
                    let n = 1 + 20 * i;
                    s.status.threads = n as u32 + 1;
                    s.status.vm_size = 20 * MIB + n * 0x801000 + i * extra_anon;
                    let mut text = maps(n);
                    if extra_anon > 0 {
                        text.push_str(&format!(
                            "10000000-{:x} rw-p 00000000 00:00 0 \n",
                            0x10000000 + (i + 1) * extra_anon
                        ));
                    }
                    with_maps(s, &text);
                })
            })
            .collect()
    };
    let sig = classify(&mk(0));
    assert_eq!(names(&sig), ["thread-growth"]);
    let Signal::ThreadGrowth {
        stacks: Some(st), ..
    } = &sig[0]
    else {
        panic!()
    };
    assert_eq!(st.delta, 60);
    // Untouched anonymous mmaps on top are virtual-only growth, located.
    let sig = classify(&mk(100 * MIB));
    assert_eq!(names(&sig), ["virtual-only", "thread-growth"]);
    let Signal::VirtualOnly {
        largest: Some(g),
        unexplained,
        ..
    } = &sig[0]
    else {
        panic!()
    };
    assert_eq!(
        (g.label.as_str(), unexplained.delta),
        ("[anon]", 300 * MIB as i64)
    );
    assert!(
        sig[0].summary().contains("mostly in [anon]"),
        "{}",
        sig[0].summary()
    );
}

#[test]
fn swap_instead_of_free() {
    let s: Vec<Sample> = (0..4u64)
        .map(|i| {
            sample(i as f64, |s| {
                s.status.vm_rss = 100 * MIB - i * 8 * MIB;
                s.status.vm_swap = i * 8 * MIB;
            })
        })
        .collect();
    let sig = classify(&s);
    assert_eq!(names(&sig), ["swap-instead-of-free"]);
    assert!(
        sig[0]
            .summary()
            .starts_with("RSS fell 24.0 MiB while swap rose +24.0 MiB in 3.0 s"),
        "{}",
        sig[0].summary()
    );
    // Swap rising while RSS rises too is not "instead of free".
    let grow: Vec<Sample> = s
        .into_iter()
        .map(|mut s| {
            s.status.vm_rss = 100 * MIB + s.status.vm_swap;
            s
        })
        .collect();
    assert!(!names(&classify(&grow)).contains(&"swap-instead-of-free"));
}

#[test]
fn sorted_by_resident_bytes_then_address_then_counts() {
    let s: Vec<Sample> = (0..3u64)
        .map(|i| {
            sample(i as f64, |s| {
                s.status.rss_anon = 6 * MIB + i * 2 * MIB;
                s.status.vm_size = 20 * MIB + i * 200 * MIB;
                s.status.vm_rss = 14 * MIB + i * 2 * MIB;
                s.status.rss_shmem = i * 5 * MIB;
                s.status.threads = 1 + 5 * i as u32;
                s.fd_count = Some(5 + 50 * i);
                with_maps(s, &sysv_maps(2 + 80 * i));
            })
        })
        .collect();
    let sig = classify(&s);
    assert_eq!(
        names(&sig),
        [
            "repeated-shared-mapping",
            "anon-growth",
            "virtual-only",
            "fd-growth",
            "thread-growth"
        ]
    );
    let json = serde_json::to_value(&sig[0]).unwrap();
    assert_eq!(json["signal"], "repeated-shared-mapping");
    assert_eq!(json["object"]["backing"]["kind"], "sysv");
    assert_eq!(json["window"]["steady"], true);
}

#[test]
fn irregular_but_continuing_rise_is_flagged_not_steady() {
    let s: Vec<Sample> = [5u64, 30, 20, 40, 35, 60]
        .iter()
        .enumerate()
        .map(|(i, &n)| sample(i as f64, |s| s.fd_count = Some(n)))
        .collect();
    let sig = classify(&s);
    assert_eq!(names(&sig), ["fd-growth"]);
    assert!(!sig[0].window().steady);
    assert!(sig[0].summary().ends_with("(irregular rise)"));
}
