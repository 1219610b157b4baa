//! The page on hand-built reports: hostile strings stay text, degenerate
//! series still draw, nothing points at the network, every evidence kind
//! renders.

use std::collections::BTreeMap;

use super::*;
use crate::analysis::allocator::{Mallinfo, PymallocStats};
use crate::analysis::classify::Change;
use crate::analysis::doctor::report::{ProcessReport, PythonReport, Series, TypeSeries};
use crate::analysis::doctor::*;

const EVIL: &str = "<script>alert(1)</script>";

fn tg(name: &str) -> TypeGrowth {
    TypeGrowth {
        name: name.into(),
        module: Some("app".into()),
        builtin: false,
        counts: vec![62, 214],
        sizes: vec![3472, 11984],
        count_delta: 152,
        count_per_s: 20.0,
        bytes_delta: 8512,
        bytes_per_s: 1120.0,
        score: 1.0,
        steady: true,
        samples: vec![format!("<{name} object at 0x7f> \"quoted\" & <b>bold</b>")],
        payload_bytes_delta: 0,
        payload_sampled: 0,
        hidden_bytes_delta: 0,
        footprint_bytes_delta: 8512,
    }
}

fn finding(kind: Kind, evidence: Evidence) -> Finding {
    Finding {
        kind,
        summary: format!("{EVIL} grows"),
        rate_bytes_per_s: 2560.0,
        informational: kind == Kind::AllocatorRetention,
        steady: false,
        evidence,
        next: vec![format!("memsleuth why 42 --type '{EVIL}'")],
    }
}

fn objects(name: &str) -> Finding {
    finding(
        Kind::PythonObjects,
        Evidence::Objects(ObjectsEvidence {
            types: vec![tg(name), tg("list")],
            count_delta: 304,
            bytes_delta: 19456,
            census_times: vec![0.1, 7.7],
            retainers: vec![Retainer {
                sentence: format!("10 of 10 sampled {name} objects are held by app._cache"),
                held_by: "app._cache".into(),
                path: format!("module app → app.__dict__['_cache'] → dict[…] → {name}"),
                status: "rooted".into(),
                samples: 10,
                of: 10,
            }],
            retainers_type: Some(name.into()),
        }),
    )
}

fn series(n: usize) -> Series {
    let mut s = Series::default();
    for i in 0..n {
        let k = i as u64;
        s.t.push(i as f64 * 0.25);
        s.rss.push((18 << 20) + k * 4096);
        s.rss_anon.push((12 << 20) + k * 4096);
        s.rss_file.push(6 << 20);
        s.rss_shmem.push(0);
        s.vm_size.push(160 << 20);
        s.swap.push(0);
        s.threads.push(3 + (i as u32 % 2));
        s.fds.push(if i == 1 { None } else { Some(6) });
    }
    s
}

fn report(findings: Vec<Finding>, series: Series, type_series: Vec<TypeSeries>) -> Report {
    Report {
        schema: 1,
        verdict: Verdict::Leak,
        headline: format!("Leak: {EVIL} objects grow"),
        findings,
        process: ProcessReport {
            pid: 42,
            cmdline: format!("python3 -c '{EVIL}'"),
            exe: Some("/usr/bin/python3.11".into()),
            rss_bytes_start: 18 << 20,
            rss_bytes_end: 19 << 20,
            vm_size_bytes_end: 160 << 20,
            threads_end: 3,
            fds_end: Some(6),
            growth_bytes_per_s: 2560.0,
            doubling_s: Some(7451.0),
            rss_slope_bytes_per_s: Some(2700.0),
            rss_slope_window_s: Some([5.0, 10.0]),
            explained_share: Some(2560.0 / 2700.0),
        },
        python: Some(PythonReport {
            version: "3.11.7".into(),
            attach_method: format!("ptrace {EVIL}"),
            attach_s: 0.09,
            gil_s: 0.144,
            gil_share: 0.018,
            gil_by_part: Default::default(),
            censuses: 2,
            census_mode: "gc_only".into(),
            census_max_hold_s: 0.012,
            gc_enabled: Some(true),
            garbage_len: Some(0),
            collect: None,
            source: "agent".into(),
            outside: None,
            heap: None,
        }),
        observed_s: 8.0,
        skipped: vec![Skipped {
            part: "retainer paths".into(),
            reason: format!("budget; run `memsleuth why 42 --type {EVIL}`"),
        }],
        notes: vec![format!("note about {EVIL}")],
        signals: vec![],
        series,
        type_series,
        retainer_svg: None,
    }
}

fn type_series(name: &str, n: usize) -> TypeSeries {
    TypeSeries {
        name: name.into(),
        t: (0..n).map(|i| i as f64 * 2.0).collect(),
        counts: (0..n as u64).map(|i| 62 + 40 * i).collect(),
        sizes: (0..n as u64).map(|i| 3472 + 2240 * i).collect(),
    }
}

/// Nothing that a browser would fetch: no `src`/`href` but `#fragments`,
/// no URL other than the SVG namespaces, no script, no stylesheet link.
fn assert_offline(html: &str) {
    let stripped = html
        .replace("xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace("xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "");
    assert!(!stripped.contains("http://"), "a URL in the page");
    assert!(!stripped.contains("https://"), "a URL in the page");
    assert!(!stripped.contains("//cdn"), "a URL in the page");
    for attr in ["src=", "href="] {
        for (i, _) in html.match_indices(attr) {
            let v = &html[i + attr.len()..];
            assert!(
                v.starts_with("\"#") || v.starts_with("'#"),
                "{attr} to somewhere: {}",
                &v[..v.len().min(60)]
            );
        }
    }
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script", "<link", "@import", "<iframe", "<img", "<object", "<embed",
    ] {
        assert!(!lower.contains(bad), "{bad} in the page");
    }
    for (i, _) in lower.match_indices("url(") {
        assert!(lower[i + 4..].starts_with('#'), "url() to somewhere");
    }
}

fn assert_sane(html: &str) {
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(!html.contains("NaN"), "NaN in the page");
    assert!(!html.contains("inf\""), "inf in the page");
    assert_offline(html);
}

#[test]
fn hostile_strings_are_escaped_everywhere() {
    let mut r = report(vec![objects(EVIL)], series(10), vec![type_series(EVIL, 3)]);
    r.process.exe = Some(format!("/tmp/{EVIL}"));
    let html = report_html(&r);
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(!html.contains("<b>bold</b>"), "unescaped repr markup");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // In the legend of both type charts, the table, the retainer path...
    assert!(
        html.matches("&lt;script&gt;alert(1)&lt;/script&gt;")
            .count()
            >= 10
    );
    assert_sane(&html);
}

fn report_html(r: &Report) -> String {
    super::report(r)
}

#[test]
fn a_normal_report_has_its_charts_and_findings() {
    let r = report(
        vec![objects("app.UserSession")],
        series(33),
        vec![type_series("app.UserSession", 2), type_series("list", 2)],
    );
    let html = report_html(&r);
    for id in [
        CHART_MEMORY,
        CHART_TASKS,
        CHART_TYPE_COUNTS,
        CHART_TYPE_BYTES,
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no {id}");
    }
    assert!(html.matches("class=\"ms-chart\"").count() == 4);
    assert!(html.matches("<polyline").count() >= 4 + 2 + 4);
    assert!(html.contains("MiB</text>"), "byte ticks in human units");
    assert!(html.contains(" s</text>"), "time ticks in seconds");
    assert!(html.contains("class=\"badge verdict-leak\""));
    assert!(html.contains("data-kind=\"python-objects\""));
    assert!(html.contains("app.UserSession"));
    assert!(html.contains("<code>memsleuth why 42 --type &#39;&lt;script&gt;"));
    assert!(html.contains("18.0 MiB → 19.0 MiB"));
    assert!(html.contains("2h04m"), "doubling time");
    assert!(html.contains("0.144 s in memsleuth"));
    assert!(html.contains("gc-only 2") || html.contains("2 gc-only censuses"));
    assert_sane(&html);
}

#[test]
fn empty_and_single_sample_reports_render() {
    let mut r = report(vec![], Series::default(), vec![]);
    r.python = None;
    r.verdict = Verdict::Inconclusive;
    r.process.doubling_s = None;
    r.process.growth_bytes_per_s = f64::NAN;
    let html = report_html(&r);
    assert!(html.contains("no samples"));
    assert!(html.contains("verdict-inconclusive"));
    assert!(html.contains("read from /proc only"));
    assert!(
        !html.contains(CHART_TASKS),
        "no threads chart without change"
    );
    assert_sane(&html);

    let r = report(
        vec![objects("app.UserSession")],
        series(1),
        vec![type_series("app.UserSession", 1)],
    );
    let html = report_html(&r);
    assert!(html.contains("<circle"), "a lone sample is a dot");
    assert_sane(&html);

    let mut r = report(vec![], series(4), vec![]);
    r.python.as_mut().unwrap().censuses = 1;
    let html = report_html(&r);
    assert!(html.contains("One census only"));
    assert!(html.contains("1 gc-only census (longest"));
    assert!(!html.contains(CHART_TYPE_COUNTS));
    assert_sane(&html);
}

#[test]
fn odd_numbers_do_not_break_the_page() {
    let mut r = report(vec![objects("x")], series(5), vec![type_series("x", 4)]);
    r.series.t[2] = f64::NAN;
    r.series.t.truncate(4); // ragged: fewer times than values
    r.type_series[0].t = vec![f64::INFINITY, 1.0, 1.0, 1.0];
    r.findings[0].rate_bytes_per_s = f64::INFINITY;
    if let Evidence::Objects(e) = &mut r.findings[0].evidence {
        e.types[0].count_per_s = f64::NAN;
        e.types[0].score = f64::NAN;
        e.types[0].counts.clear();
    }
    r.python.as_mut().unwrap().gil_share = f64::NAN;
    r.observed_s = 0.0;
    let html = report_html(&r);
    assert_sane(&html);
}

#[test]
fn retainer_svg_is_inlined_without_prolog_or_left_out() {
    let mut r = report(vec![objects("a")], series(3), vec![]);
    r.retainer_svg = Some(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \
         \"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd\">\n<!-- graphviz -->\n\
         <svg width=\"10pt\" height=\"10pt\" xmlns=\"http://www.w3.org/2000/svg\" \
         xmlns:xlink=\"http://www.w3.org/1999/xlink\"><g><title>n0</title>\
         <text>&lt;script&gt;</text></g></svg>\n"
            .into(),
    );
    let html = report_html(&r);
    assert!(html.contains("id=\"retainer-graph\"><svg width=\"10pt\""));
    assert!(!html.contains("<?xml") && !html.contains("<!DOCTYPE svg"));
    assert_sane(&html);

    r.retainer_svg = Some("<svg><script>alert(1)</script></svg>".into());
    let html = report_html(&r);
    assert!(html.contains("retainer graph was left out"));
    assert_sane(&html);
}

#[test]
fn every_evidence_kind_renders() {
    let c = |a, b| Change::new(a, b, 8.0);
    let alloc = AllocatorState {
        mallinfo: Some(Mallinfo {
            source: "mallinfo2".into(),
            uordblks: 5 << 20,
            fordblks: 40 << 20,
            ..Default::default()
        }),
        pymalloc: Some(PymallocStats {
            arenas_current: Some(4),
            arena_bytes: Some(4 << 20),
            ..Default::default()
        }),
    };
    let fs = vec![
        objects(EVIL),
        finding(
            Kind::UncollectableGarbage,
            Evidence::Garbage(GarbageEvidence {
                lengths: vec![0, 80],
                times: vec![0.0, 8.0],
                growth: 80,
                per_s: 10.0,
                saveall: true,
                debug_flags: vec!["DEBUG_SAVEALL".into()],
                types: vec![GarbageTypeEvidence {
                    name: EVIL.into(),
                    count: 80,
                    cause: "__del__ cycle".into(),
                }],
                growing: vec![tg(EVIL)],
            }),
        ),
        finding(
            Kind::GcDisabled,
            Evidence::GcDisabled(GcDisabledEvidence {
                enabled: vec![false, false],
                thresholds: vec![700, 10, 10],
                gen0_counts: vec![5, 9000],
                times: vec![0.0, 8.0],
                growing: vec![tg(EVIL)],
                cycles_confirmed: Some(true),
                retainers: vec![],
            }),
        ),
        finding(
            Kind::SharedMemoryMappings,
            Evidence::Mapping(MappingEvidence {
                backing: "posix-shm".into(),
                label: format!("/dev/shm/{EVIL}"),
                shmid: None,
                key: None,
                path: Some(format!("/dev/shm/{EVIL}")),
                instances: c(1, 40),
                mappings: c(1, 40),
                mapped_bytes: c(1 << 20, 40 << 20),
                rss: c(1 << 20, 40 << 20),
                pss: Some(c(1 << 20, 2 << 20)),
                segment_bytes: Some(1 << 20),
                nattch: Some(40),
                hint: "mapped again on every request".into(),
            }),
        ),
        finding(
            Kind::Threads,
            Evidence::Threads(ThreadsEvidence {
                threads: c(3, 40),
                new_threads: vec![ThreadGroup {
                    count: 37,
                    name: format!("worker-<n> {EVIL}"),
                    doing: "_leaked_worker (thread_leak.py:25)".into(),
                    function: Some("_leaked_worker".into()),
                    file: Some(format!("{EVIL}.py")),
                    line: Some(25),
                }],
                rss_bytes: 37 << 20,
                rss_source: "stacks".into(),
                stacks: Some(crate::analysis::doctor::rates::StackSample {
                    t: 9.5,
                    stacks: 40,
                    rss: 1 << 20,
                    size: 320 << 20,
                }),
                native_bytes_per_s: 0.0,
                handles: vec![],
            }),
        ),
        finding(
            Kind::FileDescriptors,
            Evidence::Fds(FdsEvidence {
                fds: c(6, 90),
                by_kind: BTreeMap::from([("socket".to_string(), 84)]),
                top_targets: vec![(format!("/tmp/{EVIL}"), 84)],
                handles: vec![tg("socket.socket")],
            }),
        ),
        finding(
            Kind::NativeHeap,
            Evidence::Native(NativeEvidence {
                rss_anon: c(10 << 20, 60 << 20),
                python_bytes_delta: Some(1 << 20),
                unexplained_bytes: 48 << 20,
                heap_mapped: Some(c(10 << 20, 60 << 20)),
                anon_mapped: None,
                allocator: Some(alloc.clone()),
                hint: format!("C extension {EVIL}"),
            }),
        ),
        finding(
            Kind::AllocatorRetention,
            Evidence::Retention(RetentionEvidence {
                rss_bytes: 200 << 20,
                rss_peak_bytes: 400 << 20,
                malloc_free_bytes: Some(40 << 20),
                pymalloc_idle_bytes: None,
                retained_bytes: 40 << 20,
                allocator: alloc,
                hint: "free memory kept by malloc".into(),
            }),
        ),
    ];
    for f in &fs {
        assert!(f.evidence.fits(f.kind), "{:?}", f.kind);
    }
    let r = report(fs, series(8), vec![]);
    let html = report_html(&r);
    for k in Kind::ALL {
        if k == Kind::FileMappings {
            continue;
        }
        assert!(
            html.contains(&format!("data-kind=\"{}\"", k.name())),
            "{}",
            k.name()
        );
    }
    for needle in [
        "__del__ cycle",
        "posix-shm",
        "40.0 MiB",
        "thread_leak.py:25",
        "socket",
        "mallinfo2",
        "(informational)",
        "reachable only from reference cycles",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    assert!(!html.contains("<script"));
    assert_sane(&html);
}

/// The sanitizer must accept what the real generators write, hostile
/// labels included (else the graph would never show).
#[test]
fn real_graph_svgs_pass_the_inlining_check() {
    use crate::render::graph::{self, Edge, Graph, Node, Role};
    let node = |s: &str, role| Node {
        lines: vec![s.to_string(), format!("{EVIL} \"q\" & 'a'")],
        role,
    };
    let g = Graph {
        title: format!("why are these {EVIL} alive?"),
        nodes: vec![
            node("module app", Role::Root),
            node("dict", Role::Plain),
            node(EVIL, Role::Target),
        ],
        edges: vec![
            Edge {
                from: 0,
                to: 1,
                label: "__dict__".into(),
            },
            Edge {
                from: 1,
                to: 2,
                label: format!("['{EVIL}']"),
            },
        ],
    };
    let mut svgs = vec![("built-in", graph::svg_builtin(&g).expect("layout"))];
    if let Some(dot) = graph::graphviz() {
        let svg = graph::svg_with_graphviz(&dot, &graph::to_dot(&g)).expect("dot");
        svgs.push(("graphviz", svg));
    }
    for (engine, svg) in svgs {
        let mut r = report(vec![objects("a")], series(3), vec![]);
        r.retainer_svg = Some(svg);
        let html = report_html(&r);
        assert!(html.contains("id=\"retainer-graph\"><svg"), "{engine}");
        assert!(!html.contains("<script"), "{engine}");
        assert_sane(&html);
    }
}

#[test]
fn long_command_lines_are_cut_between_words_and_marked() {
    let mut r = report(vec![objects("app.UserSession")], series(3), Vec::new());
    let words: Vec<String> = (0..400).map(|i| format!("--opt-{i}")).collect();
    r.process.cmdline = format!("python3 -m service {}", words.join(" "));
    // Text: one header line of at most 100 characters for the command.
    let text = crate::render::doctor::text(&r);
    let first = text.lines().next().unwrap();
    let cmd = first
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_once("), "))
        .map(|(c, _)| c)
        .unwrap();
    assert!(cmd.ends_with(" …"), "{first}");
    assert!(cmd.chars().count() <= 100, "{first}");
    let last = cmd.trim_end_matches(" …").rsplit(' ').next().unwrap();
    assert!(words.contains(&last.to_string()), "cut mid-word: {first}");
    // HTML: the same rule at 2000 characters.
    let html = report_html(&r);
    let shown = html
        .split_once("<code class=\"cmdline\">")
        .and_then(|(_, rest)| rest.split_once("</code>"))
        .map(|(c, _)| c)
        .unwrap();
    assert!(
        shown.ends_with(" …") && shown.chars().count() <= 2000,
        "{shown}"
    );
    let last = shown.trim_end_matches(" …").rsplit(' ').next().unwrap();
    assert!(words.contains(&last.to_string()), "cut mid-word: {last}");
    // Short ones are whole, unmarked.
    r.process.cmdline = "python3 app.py --scenario sysv-shm".into();
    assert!(crate::render::doctor::text(&r).contains("(python3 app.py --scenario sysv-shm)"));
}

#[test]
fn doctor_header_with_a_long_command_line() {
    let mut r = report(vec![objects("app.UserSession")], series(3), Vec::new());
    r.process.cmdline = "/usr/bin/python3.11 -u /srv/app/demo/service.py --port 8080 --workers 4 \
                         --scenario sysv-shm --rate 20"
        .into();
    let text = crate::render::doctor::text(&r);
    insta::assert_snapshot!(text.lines().next().unwrap());
}
