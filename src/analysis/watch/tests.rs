use super::*;
use crate::analysis::census::{RowKind, TypeRow};
use crate::process::maps::parse_maps;
use crate::process::status::{Statm, Status};

const MIB: u64 = 1 << 20;

fn sample(t: f64, anon: u64, threads: u32, fds: u64, maps: &str) -> Sample {
    let m = parse_maps(maps.as_bytes());
    Sample {
        t,
        status: Status {
            vm_size: 200 * MIB,
            vm_rss: anon + 8 * MIB,
            rss_anon: anon,
            rss_file: 8 * MIB,
            threads,
            ..Status::default()
        },
        statm: Statm::default(),
        rollup: None,
        threads,
        fd_count: Some(fds),
        fds: None,
        map_count: Some(m.len()),
        mappings: Some(m),
    }
}

const BASE_MAPS: &str = "555500000000-555500400000 rw-p 00000000 00:00 0 [heap]\n\
     7f0000000000-7f0000001000 r--p 00000000 fe:01 10 /usr/lib/libc.so.6\n\
     7f0000001000-7f0000005000 r-xp 00001000 fe:01 10 /usr/lib/libc.so.6\n";

fn run(watch: &mut Watch, series: impl Iterator<Item = Sample>) -> Vec<Assessment> {
    series
        .map(|s| {
            watch.push(s);
            watch.assess(42)
        })
        .collect()
}

#[test]
fn steady_fd_leak_is_flagged_from_the_fourth_sample_and_flat_process_never() {
    let mut w = Watch::new((3, 12, 1));
    let a = run(
        &mut w,
        (0..10).map(|i| sample(i as f64 * 15.0, 30 * MIB, 2, 10 + 5 * i, BASE_MAPS)),
    );
    // Three samples make the first steady judgement; the flag needs two.
    assert!(a[2].leaking.is_empty(), "{:?}", a[2]);
    assert_eq!(a[3].leaking, vec!["file-descriptors"]);
    assert_eq!(a[9].leaking, vec!["file-descriptors"]);

    let mut h = Watch::new((3, 12, 1));
    let wobble = [0u64, 3, 1, 4, 0, 2, 5, 1, 3, 0, 4, 2];
    let a = run(
        &mut h,
        wobble.iter().enumerate().map(|(i, &x)| {
            sample(
                i as f64 * 15.0,
                30 * MIB + x * (MIB / 4),
                2,
                10 + x % 2,
                BASE_MAPS,
            )
        }),
    );
    assert!(a.iter().all(|a| a.leaking.is_empty()), "{a:?}");
    assert!(a.last().unwrap().growth_bytes_per_s.abs() < 20_000.0);
}

#[test]
fn anonymous_growth_without_a_census_is_anonymous_memory() {
    let mut w = Watch::new((3, 12, 1));
    let a = run(
        &mut w,
        (0..6).map(|i| sample(i as f64, 30 * MIB + i * 2 * MIB, 2, 10, BASE_MAPS)),
    );
    assert_eq!(a[5].leaking, vec![ANONYMOUS_MEMORY]);
    assert!((a[5].growth_bytes_per_s - 2.0 * MIB as f64).abs() < 1.0);
    assert_eq!(a[5].samples, 6);
    assert_eq!(a[5].window_s, 5.0);
}

#[test]
fn growth_that_stopped_leaves_the_window_and_the_flag_clears() {
    let mut w = Watch::new((3, 12, 1));
    let threads = |i: u64| if i < 8 { 2 + 2 * i as u32 } else { 16 };
    let a = run(
        &mut w,
        (0..8 + WINDOW_SAMPLES as u64)
            .map(|i| sample(i as f64, 30 * MIB, threads(i), 10, BASE_MAPS)),
    );
    assert!(a[6].leaking.contains(&"threads"), "{:?}", a[6]);
    assert!(a.last().unwrap().leaking.is_empty());
    assert_eq!(w.samples().len(), WINDOW_SAMPLES);
}

fn census(rows: &[(&str, u64, u64)]) -> Census {
    Census {
        rows: rows
            .iter()
            .map(|&(name, count, size)| TypeRow {
                name: name.into(),
                kind: RowKind::Type,
                module: name.rsplit_once('.').map(|(m, _)| m.to_string()),
                qualname: name.rsplit('.').next().unwrap_or(name).into(),
                count,
                tracked: count,
                size,
                classes: 1,
                tids: vec![],
            })
            .collect(),
        count: rows.iter().map(|r| r.1).sum(),
        size: rows.iter().map(|r| r.2).sum(),
        tracked: 0,
        untracked: 0,
        gc_only: false,
        dict_tid: 0,
        chunks: 0,
        payload_bytes: 0,
        repeats: 0,
        feed_s: 0.0,
        stats: Default::default(),
        ids: None,
    }
}

#[test]
fn censuses_turn_anonymous_growth_into_python_objects_and_rank_types() {
    let mut w = Watch::new((3, 12, 1));
    let mut out = Vec::new();
    for i in 0..6u64 {
        let s = sample(i as f64, 30 * MIB + i * MIB, 2, 10, BASE_MAPS);
        w.push(s);
        w.push_heap(HeapPoint {
            t: i as f64,
            census: census(&[
                ("str", 5000 + 2000 * i, 300_000 + 120_000 * i),
                ("app.UserSession", 10 + 2500 * i, 560 + 140_000 * i),
                ("dict", 900, 200_000),
            ]),
            gc: None,
        });
        out.push(w.assess(42));
    }
    assert!(out[5].leaking.contains(&"python-objects"), "{:?}", out[5]);
    assert!(!out[5].leaking.contains(&ANONYMOUS_MEMORY));
    let top = w.top_types(2);
    assert_eq!(top[0].0, "app.UserSession");
    assert_eq!(top[0].1, 12_510);
    assert_eq!(top[1].0, "str");
    assert!(w.heap().len() <= WINDOW_CENSUSES);
}

#[test]
fn figures_group_mappings_and_find_the_largest_repeat() {
    let mut maps = String::from(BASE_MAPS);
    for i in 0..5u64 {
        let start = 0x7e0000000000 + i * 0x20000;
        maps.push_str(&format!(
            "{:x}-{:x} rw-s 00000000 00:01 77 /SYSV000000aa (deleted)\n",
            start,
            start + 0x10000
        ));
    }
    let f = Figures::of(&sample(0.0, MIB, 1, 3, &maps));
    assert_eq!(f.max_instances, Some(5));
    assert_eq!(
        f.categories,
        vec![
            ("file", 2, 0x5000),
            ("heap", 1, 0x400000),
            ("shared_memory", 5, 5 * 0x10000)
        ]
    );
    assert_eq!((f.rss, f.fds, f.threads), (9 * MIB, Some(3), 1));
}

#[test]
fn theil_sen_ignores_an_outlier_and_bad_times() {
    let pts = [
        (0.0, 0.0),
        (1.0, 10.0),
        (2.0, 20.0),
        (3.0, 1e9),
        (4.0, 40.0),
    ];
    assert_eq!(theil_sen(&pts), 10.0);
    assert_eq!(theil_sen(&[(1.0, 5.0)]), 0.0);
    assert_eq!(theil_sen(&[(f64::NAN, 1.0), (f64::NAN, 2.0)]), 0.0);
}
