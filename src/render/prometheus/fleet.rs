//! The metrics of `memsleuth exporter`: names, labels and help text. These
//! names are an interface (alert rules and dashboards depend on them): add,
//! never rename. README's "Fleet mode" section has the table.
//!
//! Every per-process series carries `pid`, `start_time` (the process's
//! start, Unix seconds: a pid reused by a new process is a new series) and
//! `comm`.

use super::{Family, Kind};
use crate::analysis::watch::{Assessment, Figures, KINDS};

/// What the exporter knows about one process at the last sampling pass.
#[derive(Debug, Clone, Default)]
pub struct ProcessMetrics {
    pub pid: u32,
    /// Unix seconds.
    pub start_time: u64,
    pub comm: String,
    /// "3.12.1", or "unknown".
    pub python: String,
    /// "shared_lib" or "static".
    pub build: &'static str,
    pub figures: Figures,
    pub assessment: Assessment,
    /// The tightest cgroup memory.max above the process, when limited.
    pub memory_limit: Option<u64>,
    pub heap: Option<HeapMetrics>,
}

/// The last census read from outside.
#[derive(Debug, Clone, Default)]
pub struct HeapMetrics {
    /// Unix seconds when it was taken.
    pub timestamp: f64,
    pub duration_s: f64,
    pub objects: u64,
    pub bytes: u64,
    /// Top types by growth: (name, count, bytes).
    pub types: Vec<(String, u64, u64)>,
    pub gc_enabled: Option<bool>,
    pub garbage: Option<u64>,
}

/// The exporter's own figures.
#[derive(Debug, Clone, Default)]
pub struct SelfMetrics {
    pub version: &'static str,
    /// Duration of the last sampling pass over /proc.
    pub scrape_duration_s: f64,
    /// Errors by reason, cumulative (every reason listed, zeros included).
    pub errors: Vec<(&'static str, u64)>,
    /// Watched processes that ended, cumulative.
    pub exits: u64,
    pub watched: usize,
    /// Python-looking processes it may not read.
    pub unreadable: usize,
}

fn ids(p: &ProcessMetrics) -> Vec<(&'static str, String)> {
    vec![
        ("pid", p.pid.to_string()),
        ("start_time", p.start_time.to_string()),
        ("comm", p.comm.clone()),
    ]
}

fn with(p: &ProcessMetrics, more: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut l = ids(p);
    l.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    l
}

/// All families for one exposition.
pub fn families(procs: &[ProcessMetrics], me: &SelfMetrics) -> Vec<Family> {
    use Kind::{Counter, Gauge, Info};
    let mut info = Family::new(
        "memsleuth_process",
        Info,
        "A watched Python process: interpreter version and build.",
    );
    let mut start = Family::new(
        "memsleuth_process_start_time_seconds",
        Gauge,
        "When the process started, Unix time.",
    );
    let mut rss = Family::new(
        "memsleuth_process_resident_memory_bytes",
        Gauge,
        "Resident set size (VmRSS).",
    );
    let mut parts = Family::new(
        "memsleuth_process_rss_bytes",
        Gauge,
        "Resident set size by kind: anon, file, shmem (RssAnon/RssFile/RssShmem; they sum to VmRSS).",
    );
    let mut pss = Family::new(
        "memsleuth_process_proportional_memory_bytes",
        Gauge,
        "Proportional set size from smaps_rollup (shared pages divided among their users).",
    );
    let mut virt = Family::new(
        "memsleuth_process_virtual_memory_bytes",
        Gauge,
        "Virtual memory size (VmSize).",
    );
    let mut swap = Family::new(
        "memsleuth_process_swap_bytes",
        Gauge,
        "Swapped-out memory (VmSwap).",
    );
    let mut threads = Family::new("memsleuth_process_threads", Gauge, "Number of threads.");
    let mut fds = Family::new(
        "memsleuth_process_open_fds",
        Gauge,
        "Number of open file descriptors.",
    );
    let mut maps = Family::new(
        "memsleuth_process_mappings",
        Gauge,
        "Number of memory mappings by category, grouped as `memsleuth maps` groups them.",
    );
    let mut mapped = Family::new(
        "memsleuth_process_mapped_bytes",
        Gauge,
        "Address space of the mappings by category.",
    );
    let mut repeats = Family::new(
        "memsleuth_process_mapping_instances_max",
        Gauge,
        "The most separate times one file or shared-memory object is mapped (1: none is mapped twice).",
    );
    let mut limit = Family::new(
        "memsleuth_process_memory_limit_bytes",
        Gauge,
        "The tightest cgroup memory.max above the process (absent when unlimited).",
    );
    let mut growth = Family::new(
        "memsleuth_process_growth_bytes_per_second",
        Gauge,
        "Robust slope (Theil-Sen) of the resident set size over the exporter's window.",
    );
    let mut window = Family::new(
        "memsleuth_process_window_seconds",
        Gauge,
        "Span of the samples the leak classifier judged.",
    );
    let mut leaking = Family::new(
        "memsleuth_process_leaking",
        Gauge,
        "1 for each kind of steady leak the classifier sees; one series kind=\"none\" at 0 when there is none.",
    );
    let mut objects = Family::new(
        "memsleuth_python_objects",
        Gauge,
        "Live Python objects of the top types by growth (--heap N), read from outside.",
    );
    let mut object_bytes = Family::new(
        "memsleuth_python_object_bytes",
        Gauge,
        "sys.getsizeof bytes of the top types by growth (--heap N), read from outside.",
    );
    let mut heap_objects = Family::new(
        "memsleuth_python_heap_objects",
        Gauge,
        "All live Python objects at the last census.",
    );
    let mut heap_bytes = Family::new(
        "memsleuth_python_heap_bytes",
        Gauge,
        "sys.getsizeof bytes of all live Python objects at the last census.",
    );
    let mut heap_ts = Family::new(
        "memsleuth_python_heap_census_timestamp_seconds",
        Gauge,
        "When the last census was taken, Unix time.",
    );
    let mut heap_dur = Family::new(
        "memsleuth_python_heap_census_duration_seconds",
        Gauge,
        "How long the last census took.",
    );
    let mut gc_enabled = Family::new(
        "memsleuth_python_gc_enabled",
        Gauge,
        "1 while the garbage collector is enabled.",
    );
    let mut garbage = Family::new(
        "memsleuth_python_gc_garbage_objects",
        Gauge,
        "len(gc.garbage).",
    );

    for p in procs {
        let f = &p.figures;
        info.add(with(p, &[("python", &p.python), ("build", p.build)]), 1.0);
        start.add(ids(p), p.start_time as f64);
        rss.add(with(p, &[("python", &p.python)]), f.rss as f64);
        for (kind, v) in [
            ("anon", f.rss_anon),
            ("file", f.rss_file),
            ("shmem", f.rss_shmem),
        ] {
            parts.add(with(p, &[("kind", kind)]), v as f64);
        }
        if let Some(v) = f.pss {
            pss.add(ids(p), v as f64);
        }
        virt.add(ids(p), f.vm_size as f64);
        swap.add(ids(p), f.swap as f64);
        threads.add(ids(p), f64::from(f.threads));
        if let Some(v) = f.fds {
            fds.add(ids(p), v as f64);
        }
        for (cat, n, bytes) in &f.categories {
            maps.add(with(p, &[("category", cat)]), *n as f64);
            mapped.add(with(p, &[("category", cat)]), *bytes as f64);
        }
        if let Some(v) = f.max_instances {
            repeats.add(ids(p), v as f64);
        }
        if let Some(v) = p.memory_limit {
            limit.add(ids(p), v as f64);
        }
        let a = &p.assessment;
        growth.add(ids(p), a.growth_bytes_per_s);
        window.add(ids(p), a.window_s);
        if a.leaking.is_empty() {
            leaking.add(with(p, &[("kind", "none")]), 0.0);
        }
        for k in KINDS.iter().filter(|k| a.leaking.contains(k)) {
            leaking.add(with(p, &[("kind", k)]), 1.0);
        }
        if let Some(h) = &p.heap {
            for (name, count, bytes) in &h.types {
                objects.add(with(p, &[("type", name)]), *count as f64);
                object_bytes.add(with(p, &[("type", name)]), *bytes as f64);
            }
            heap_objects.add(ids(p), h.objects as f64);
            heap_bytes.add(ids(p), h.bytes as f64);
            heap_ts.add(ids(p), h.timestamp);
            heap_dur.add(ids(p), h.duration_s);
            if let Some(e) = h.gc_enabled {
                gc_enabled.add(ids(p), if e { 1.0 } else { 0.0 });
            }
            if let Some(g) = h.garbage {
                garbage.add(ids(p), g as f64);
            }
        }
    }

    let mut build = Family::new("memsleuth_build", Info, "memsleuth's version.");
    build.add(vec![("version", me.version.to_string())], 1.0);
    let mut scrape = Family::new(
        "memsleuth_exporter_scrape_duration_seconds",
        Gauge,
        "Duration of the last sampling pass over the watched processes.",
    );
    scrape.add(vec![], me.scrape_duration_s);
    let mut errors = Family::new(
        "memsleuth_exporter_errors",
        Counter,
        "Errors by reason: process_exited (a target ended while sampled), permission_denied, read_error, heap_unsupported (a census the heap reader cannot take), heap_error, heap_timeout, heap_torn (a census dropped: an object changed while read, or a collection was running), http_*.",
    );
    for (reason, n) in &me.errors {
        errors.add(vec![("reason", reason.to_string())], *n as f64);
    }
    let mut exits = Family::new(
        "memsleuth_exporter_process_exits",
        Counter,
        "Watched Python processes that ended (their series end with them).",
    );
    exits.add(vec![], me.exits as f64);
    let mut count = Family::new(
        "memsleuth_exporter_processes",
        Gauge,
        "Python processes by state: watched, or unreadable (it may not read their /proc files).",
    );
    count.add(vec![("state", "watched".into())], me.watched as f64);
    count.add(vec![("state", "unreadable".into())], me.unreadable as f64);

    vec![
        info,
        start,
        rss,
        parts,
        pss,
        virt,
        swap,
        threads,
        fds,
        maps,
        mapped,
        repeats,
        limit,
        growth,
        window,
        leaking,
        objects,
        object_bytes,
        heap_objects,
        heap_bytes,
        heap_ts,
        heap_dur,
        gc_enabled,
        garbage,
        build,
        scrape,
        errors,
        exits,
        count,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::prometheus::{Format, encode};

    #[test]
    fn a_leaker_and_a_healthy_process() {
        let base = ProcessMetrics {
            pid: 7,
            start_time: 1_700_000_000,
            comm: "gunicorn".into(),
            python: "3.12.1".into(),
            build: "shared_lib",
            ..ProcessMetrics::default()
        };
        let leaker = ProcessMetrics {
            assessment: Assessment {
                leaking: vec!["threads", "file-descriptors"],
                ..Assessment::default()
            },
            heap: Some(HeapMetrics {
                types: vec![("app.UserSession".into(), 10, 560)],
                ..HeapMetrics::default()
            }),
            ..base.clone()
        };
        let me = SelfMetrics {
            version: "0.1.0",
            errors: vec![("process_exited", 2)],
            ..SelfMetrics::default()
        };
        let text = encode(&families(&[leaker, base], &me), Format::Text);
        let id = "pid=\"7\",start_time=\"1700000000\",comm=\"gunicorn\"";
        for line in [
            format!("memsleuth_process_leaking{{{id},kind=\"threads\"}} 1"),
            format!("memsleuth_process_leaking{{{id},kind=\"file-descriptors\"}} 1"),
            format!("memsleuth_process_leaking{{{id},kind=\"none\"}} 0"),
            format!("memsleuth_process_resident_memory_bytes{{{id},python=\"3.12.1\"}} 0"),
            format!("memsleuth_python_objects{{{id},type=\"app.UserSession\"}} 10"),
            format!("memsleuth_process_info{{{id},python=\"3.12.1\",build=\"shared_lib\"}} 1"),
            "memsleuth_exporter_errors_total{reason=\"process_exited\"} 2".into(),
            "memsleuth_build_info{version=\"0.1.0\"} 1".into(),
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}\n---\n{text}");
        }
        // Threads before fds: the fixed kind order.
        assert!(
            text.find("kind=\"threads\"").unwrap()
                < text.find("kind=\"file-descriptors\"").unwrap()
        );
    }
}
