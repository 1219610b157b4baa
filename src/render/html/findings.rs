//! The ranked findings: one card each with its kind, rate, summary, the
//! evidence laid out for its kind (tables for types, facts for mappings,
//! groups for threads, targets for fds, allocator numbers), retainer
//! sentences and paths, and the next commands.
//!
//! Every string that came from the target (type names, reprs, paths,
//! thread names, commands that embed them) goes through `esc`.

use std::fmt::Write;

use super::escape::{esc, esc_cap};
use super::page::{Col, code, kv, table};
use crate::analysis::allocator::{Mallinfo, PymallocStats};
use crate::analysis::classify::Change;
use crate::analysis::doctor::{
    AllocatorState, Evidence, Finding, GarbageEvidence, GcDisabledEvidence, MappingEvidence,
    ObjectsEvidence, Retainer, ThreadsEvidence, TypeGrowth,
};
use crate::render::gcstate::thousands;
use crate::render::units;

/// Rows shown in a types table; the rest is counted.
const TYPE_ROWS: usize = 12;
/// Longest repr shown, in chars.
const REPR_CAP: usize = 300;

pub fn num(n: u64) -> String {
    thousands(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A per-second count: "+20/s", "+0.4/s", "?" when not finite.
fn per_s(v: f64) -> String {
    if !v.is_finite() {
        "?".into()
    } else if v.abs() >= 10.0 {
        format!("{v:+.0}/s")
    } else {
        format!("{v:+.1}/s")
    }
}

/// "371 → 523" from a series (its first and last values).
fn first_last(v: &[u64], f: impl Fn(u64) -> String) -> String {
    match (v.first(), v.last()) {
        (Some(a), Some(b)) => format!("{} → {}", f(*a), f(*b)),
        _ => "—".into(),
    }
}

/// A counter's change: "3 → 40 (+37, +4.6/s)".
fn change(c: &Change, bytes: bool) -> String {
    let f = |n: u64| if bytes { units::bytes(n) } else { num(n) };
    let d = if bytes {
        units::bytes_delta(c.delta)
    } else {
        format!("{:+}", c.delta)
    };
    let r = if bytes {
        units::rate(c.rate_per_s)
    } else {
        per_s(c.rate_per_s)
    };
    esc(&format!("{} → {} ({d}, {r})", f(c.before), f(c.after)))
}

fn opt_bytes(b: Option<u64>) -> String {
    b.map(|b| esc(&units::bytes(b))).unwrap_or_default()
}

/// The growing types as a table, then sample reprs of new instances.
fn types(out: &mut String, ts: &[TypeGrowth]) {
    let rows: Vec<Vec<String>> = ts
        .iter()
        .take(TYPE_ROWS)
        .map(|t| {
            vec![
                format!("<span class=\"mono\">{}</span>", esc(&t.name)),
                esc(t.module.as_deref().unwrap_or("")),
                esc(&first_last(&t.counts, num)),
                esc(&per_s(t.count_per_s)),
                esc(&units::bytes_delta(t.bytes_delta)),
                esc(&units::rate(t.bytes_per_s)),
                format!("{:.2}", if t.score.is_finite() { t.score } else { 0.0 }),
                if t.steady { "steady" } else { "irregular" }.into(),
            ]
        })
        .collect();
    table(
        out,
        &[
            ("type", Col::Name),
            ("module", Col::Text),
            ("count", Col::Num),
            ("objects/s", Col::Num),
            ("getsizeof Δ", Col::Num),
            ("bytes/s", Col::Num),
            ("score", Col::Num),
            ("trend", Col::Text),
        ],
        &rows,
    );
    if ts.len() > TYPE_ROWS {
        let _ = writeln!(
            out,
            "<p class=\"muted\">… and {} more types</p>",
            ts.len() - TYPE_ROWS
        );
    }
    let with: Vec<&TypeGrowth> = ts.iter().filter(|t| !t.samples.is_empty()).collect();
    if with.is_empty() {
        return;
    }
    out.push_str("<details><summary>sample reprs of new instances</summary><ul class=\"samples\">");
    for t in with.iter().take(4) {
        for s in t.samples.iter().take(3) {
            let _ = write!(
                out,
                "<li><b class=\"mono\">{}</b> <code>{}</code></li>",
                esc(&t.name),
                esc_cap(s, REPR_CAP)
            );
        }
    }
    out.push_str("</ul></details>\n");
}

fn retainers(out: &mut String, rs: &[Retainer], of_type: Option<&str>) {
    if rs.is_empty() {
        return;
    }
    out.push_str("<h3>What holds them</h3>");
    if let Some(t) = of_type {
        let _ = write!(
            out,
            "<p class=\"muted\">retainer paths of sampled new <span class=\"mono\">{}</span> instances</p>",
            esc(t)
        );
    }
    for r in rs.iter().take(5) {
        let _ = write!(
            out,
            "<div class=\"retainer\"><div>{}</div>{} <span class=\"muted\">{} · {} of {} samples</span></div>",
            esc(&r.sentence),
            if r.path.is_empty() {
                String::new()
            } else {
                code(&r.path)
            },
            esc(&r.status),
            r.samples,
            r.of
        );
    }
    out.push('\n');
}

fn objects(out: &mut String, e: &ObjectsEvidence) {
    kv(
        out,
        &[
            ("objects", esc(&format!("{:+}", e.count_delta))),
            ("getsizeof bytes", esc(&units::bytes_delta(e.bytes_delta))),
            ("censuses", e.census_times.len().to_string()),
        ],
    );
    types(out, &e.types);
    retainers(out, &e.retainers, e.retainers_type.as_deref());
}

fn garbage(out: &mut String, e: &GarbageEvidence) {
    kv(
        out,
        &[
            ("len(gc.garbage)", esc(&first_last(&e.lengths, num))),
            (
                "growth",
                esc(&format!("{:+} ({})", e.growth, per_s(e.per_s))),
            ),
            (
                "gc.DEBUG_SAVEALL",
                if e.saveall {
                    "set".into()
                } else {
                    String::new()
                },
            ),
            ("debug flags", esc(&e.debug_flags.join(", "))),
        ],
    );
    let rows: Vec<Vec<String>> = e
        .types
        .iter()
        .take(TYPE_ROWS)
        .map(|t| {
            vec![
                format!("<span class=\"mono\">{}</span>", esc(&t.name)),
                num(t.count),
                esc(&t.cause),
            ]
        })
        .collect();
    table(
        out,
        &[
            ("in gc.garbage", Col::Name),
            ("count", Col::Num),
            ("why", Col::Text),
        ],
        &rows,
    );
    types(out, &e.growing);
}

fn gc_disabled(out: &mut String, e: &GcDisabledEvidence) {
    let enabled = if e.enabled.is_empty() {
        "?"
    } else if e.enabled.iter().all(|x| *x) {
        "True"
    } else if e.enabled.iter().any(|x| *x) {
        "switched on and off"
    } else {
        "False"
    };
    let gen0 = match (e.gen0_counts.first(), e.gen0_counts.last()) {
        (Some(a), Some(b)) => format!("{} → {}", thousands(*a), thousands(*b)),
        _ => String::new(),
    };
    let cycles = match e.cycles_confirmed {
        Some(true) => "the sampled instances are reachable only from reference cycles",
        Some(false) => "the sampled instances are not only in cycles",
        None => "not checked (retainer paths were skipped)",
    };
    kv(
        out,
        &[
            ("gc.isenabled()", enabled.into()),
            ("thresholds", esc(&format!("{:?}", e.thresholds))),
            ("gen-0 count", esc(&gen0)),
            ("cycles", cycles.into()),
        ],
    );
    types(out, &e.growing);
    retainers(out, &e.retainers, None);
}

fn mapping(out: &mut String, e: &MappingEvidence) {
    kv(
        out,
        &[
            ("backing", esc(&e.backing)),
            ("object", code(&e.label)),
            ("path", e.path.as_deref().map(code).unwrap_or_default()),
            ("shmid", e.shmid.as_deref().map(esc).unwrap_or_default()),
            ("key", e.key.as_deref().map(esc).unwrap_or_default()),
            ("times mapped", change(&e.instances, false)),
            ("mappings", change(&e.mappings, false)),
            ("address space", change(&e.mapped_bytes, true)),
            ("RSS charged", change(&e.rss, true)),
            ("PSS", e.pss.map(|p| change(&p, true)).unwrap_or_default()),
            ("segment size", opt_bytes(e.segment_bytes)),
            ("nattch", e.nattch.map(num).unwrap_or_default()),
            ("cause", esc(&e.hint)),
        ],
    );
}

fn threads(out: &mut String, e: &ThreadsEvidence) {
    kv(
        out,
        &[
            ("threads", change(&e.threads, false)),
            (
                "their RSS",
                if e.rss_bytes > 0 {
                    esc(&format!("~{}", units::bytes(e.rss_bytes)))
                } else {
                    String::new()
                },
            ),
        ],
    );
    let rows: Vec<Vec<String>> = e
        .new_threads
        .iter()
        .take(TYPE_ROWS)
        .map(|g| {
            let at = match (&g.file, g.line) {
                (Some(f), Some(l)) => format!("{f}:{l}"),
                (Some(f), None) => f.clone(),
                _ => String::new(),
            };
            vec![
                num(g.count),
                format!("<span class=\"mono\">{}</span>", esc(&g.name)),
                esc(&g.doing),
                esc(g.function.as_deref().unwrap_or("")),
                format!("<span class=\"mono\">{}</span>", esc(&at)),
            ]
        })
        .collect();
    table(
        out,
        &[
            ("new", Col::Num),
            ("name", Col::Name),
            ("doing", Col::Name),
            ("function", Col::Text),
            ("where", Col::Name),
        ],
        &rows,
    );
    types(out, &e.handles);
}

fn fds(out: &mut String, e: &crate::analysis::doctor::FdsEvidence) {
    kv(out, &[("open fds", change(&e.fds, false))]);
    let rows: Vec<Vec<String>> = e
        .by_kind
        .iter()
        .map(|(k, d)| vec![esc(k), esc(&format!("{d:+}"))])
        .collect();
    table(out, &[("kind", Col::Text), ("change", Col::Num)], &rows);
    let rows: Vec<Vec<String>> = e
        .top_targets
        .iter()
        .take(TYPE_ROWS)
        .map(|(t, n)| vec![num(*n), format!("<span class=\"mono\">{}</span>", esc(t))])
        .collect();
    table(out, &[("open", Col::Num), ("target", Col::Name)], &rows);
    types(out, &e.handles);
}

fn mallinfo_rows(m: &Mallinfo) -> Vec<(&'static str, String)> {
    vec![
        ("malloc in use", esc(&units::bytes(m.uordblks))),
        ("malloc free in arenas", esc(&units::bytes(m.fordblks))),
        ("malloc arenas", esc(&units::bytes(m.arena))),
        (
            "malloc mmapped chunks",
            esc(&format!("{} in {}", units::bytes(m.hblkhd), num(m.hblks))),
        ),
        ("releasable at the top", esc(&units::bytes(m.keepcost))),
        ("source", esc(&m.source)),
    ]
}

fn pymalloc_rows(p: &PymallocStats) -> Vec<(&'static str, String)> {
    let arenas = match (p.arenas_current, p.arena_bytes) {
        (Some(n), Some(b)) => format!("{} ({})", num(n), units::bytes(b)),
        (Some(n), None) => num(n),
        _ => String::new(),
    };
    vec![
        ("pymalloc arenas", esc(&arenas)),
        ("pymalloc live blocks", opt_bytes(p.allocated_blocks_bytes)),
        ("pymalloc free blocks", opt_bytes(p.available_blocks_bytes)),
        ("pymalloc empty pools", opt_bytes(p.unused_pools_bytes)),
        (
            "free lists",
            if p.free_list_objects > 0 {
                esc(&format!(
                    "{} objects, {}",
                    num(p.free_list_objects),
                    units::bytes(p.free_list_bytes)
                ))
            } else {
                String::new()
            },
        ),
    ]
}

fn allocator(out: &mut String, a: &AllocatorState) {
    let mut rows = Vec::new();
    if let Some(m) = &a.mallinfo {
        rows.extend(mallinfo_rows(m));
    }
    if let Some(p) = &a.pymalloc {
        rows.extend(pymalloc_rows(p));
    }
    if !rows.is_empty() {
        out.push_str("<h3>Allocators at the end</h3>");
        kv(out, &rows);
    }
}

fn evidence(out: &mut String, f: &Finding) {
    match &f.evidence {
        Evidence::Objects(e) => objects(out, e),
        Evidence::Garbage(e) => garbage(out, e),
        Evidence::GcDisabled(e) => gc_disabled(out, e),
        Evidence::Mapping(e) => mapping(out, e),
        Evidence::Threads(e) => threads(out, e),
        Evidence::Fds(e) => fds(out, e),
        Evidence::Native(e) => {
            kv(
                out,
                &[
                    ("RssAnon", change(&e.rss_anon, true)),
                    (
                        "Python objects",
                        e.python_bytes_delta
                            .map(|d| esc(&units::bytes_delta(d)))
                            .unwrap_or_else(|| "? (no census)".into()),
                    ),
                    ("unexplained", esc(&units::bytes_delta(e.unexplained_bytes))),
                    (
                        "heap mapped",
                        e.heap_mapped.map(|c| change(&c, true)).unwrap_or_default(),
                    ),
                    (
                        "anonymous mapped",
                        e.anon_mapped.map(|c| change(&c, true)).unwrap_or_default(),
                    ),
                    ("cause", esc(&e.hint)),
                ],
            );
            if let Some(a) = &e.allocator {
                allocator(out, a);
            }
        }
        Evidence::Retention(e) => {
            kv(
                out,
                &[
                    ("RSS", esc(&units::bytes(e.rss_bytes))),
                    ("RSS peak", esc(&units::bytes(e.rss_peak_bytes))),
                    ("free inside glibc malloc", opt_bytes(e.malloc_free_bytes)),
                    ("idle in pymalloc arenas", opt_bytes(e.pymalloc_idle_bytes)),
                    ("retained", esc(&units::bytes(e.retained_bytes))),
                    ("what it means", esc(&e.hint)),
                ],
            );
            allocator(out, &e.allocator);
        }
    }
}

/// One finding as a card; `rank` counts from 1.
pub fn card(out: &mut String, rank: usize, f: &Finding) {
    let info = if f.informational {
        " informational"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<section class=\"finding{info}\" data-kind=\"{kind}\">\
         <h3><span class=\"rank\">{rank}.</span><span class=\"badge kind{info}\">{kind}</span>\
         <span class=\"rate\">{}</span>{}{}</h3>\
         <p class=\"summary\">{}</p>",
        esc(&units::rate(f.rate_bytes_per_s)),
        if f.informational {
            " <span class=\"muted\">(informational)</span>"
        } else {
            ""
        },
        if f.steady || f.informational {
            ""
        } else {
            " <span class=\"muted\">(irregular, or too few points to call it steady)</span>"
        },
        esc(&f.summary),
        kind = f.kind.name(),
    );
    evidence(out, f);
    if !f.next.is_empty() {
        out.push_str("<h3>Next</h3><ul class=\"next\">");
        for n in &f.next {
            let _ = write!(out, "<li>{}</li>", code(n));
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>\n");
}
