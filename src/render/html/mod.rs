//! `doctor --html FILE`: the report as one self-contained HTML page.
//!
//! Design:
//! - One file, nothing fetched: the stylesheet is inline, the charts are
//!   inline SVG drawn here (no JS library), no fonts or images are linked.
//!   The page reads the same offline, attached to a ticket, or printed.
//! - Built as strings, not through a template engine: the structure is
//!   small and fixed, and keeping every interpolation visible makes the
//!   escaping easy to audit. Everything that came from the target (type
//!   names, reprs, paths, thread names, the command line) passes through
//!   [`escape::esc`], in HTML and in SVG text alike.
//! - The retainer graph (graphviz or layout-rs output) is inlined only
//!   after [`escape::inline_svg`] has cut its prolog and checked it holds
//!   nothing active.
//! - Charts never fail: empty series, one sample, NaN or infinite values,
//!   flat lines all give a valid (if plain) plot ([`chart`]).
//!
//! Modules: [`page`] (shell, CSS, table builders), [`chart`] (SVG line
//! charts), [`findings`] (one card per finding, evidence per kind),
//! [`escape`] (escaping and SVG inlining).

use std::fmt::Write;

use crate::analysis::doctor::Verdict;
use crate::analysis::doctor::report::Report;
use crate::render::units;

pub mod chart;
pub mod escape;
pub mod findings;
pub mod page;
#[cfg(test)]
mod tests;

use chart::{Chart, Line, PALETTE, Unit};
use escape::esc;

/// Element ids of the charts (stable: tests and users' scripts find them).
pub const CHART_MEMORY: &str = "chart-memory";
pub const CHART_TASKS: &str = "chart-threads-fds";
pub const CHART_TYPE_COUNTS: &str = "chart-type-counts";
pub const CHART_TYPE_BYTES: &str = "chart-type-bytes";

/// The whole page.
pub fn report(r: &Report) -> String {
    let mut body = String::new();
    header(&mut body, r);
    charts(&mut body, r);
    body.push_str("<h2 id=\"findings\">Findings</h2>\n");
    if r.findings.is_empty() {
        body.push_str(
            "<p class=\"muted\">No finding: nothing grew steadily enough to attribute.</p>\n",
        );
    }
    for (i, f) in r.findings.iter().enumerate() {
        findings::card(&mut body, i + 1, f);
    }
    retainer_graph(&mut body, r);
    footer(&mut body, r);
    page::document(
        &format!(
            "memsleuth doctor: pid {} — {}",
            r.process.pid,
            r.verdict.name()
        ),
        &body,
    )
}

/// A fact in the header grid (value is HTML).
fn fact(out: &mut String, label: &str, value: &str) {
    let _ = write!(out, "<div><b>{}</b>{value}</div>", esc(label));
}

/// A fact two columns wide (paths and command lines).
fn wide_fact(out: &mut String, label: &str, value: &str) {
    let _ = write!(
        out,
        "<div class=\"wide\"><b>{}</b>{value}</div>",
        esc(label)
    );
}

fn header(out: &mut String, r: &Report) {
    let p = &r.process;
    let _ = write!(
        out,
        "<header><h1>memsleuth doctor <span class=\"muted\">pid {}</span> \
         <span class=\"badge verdict-{v}\" id=\"verdict\">{v}</span></h1>\
         <p class=\"headline\">{}</p>",
        p.pid,
        esc(&r.headline),
        v = r.verdict.name()
    );
    out.push_str("<div class=\"facts\">");
    wide_fact(
        out,
        "command line",
        &format!(
            "<code class=\"cmdline\">{}</code>",
            esc(&crate::render::units::clip_words(&p.cmdline, 2000))
        ),
    );
    if let Some(exe) = &p.exe {
        wide_fact(out, "executable", &format!("<code>{}</code>", esc(exe)));
    }
    if let Some(py) = &r.python {
        fact(out, "Python", &esc(&py.version));
    }
    fact(out, "observed", &esc(&format!("{:.1} s", r.observed_s)));
    fact(
        out,
        "RSS",
        &esc(&format!(
            "{} → {}",
            units::bytes(p.rss_bytes_start),
            units::bytes(p.rss_bytes_end)
        )),
    );
    if r.verdict == Verdict::Leak || p.growth_bytes_per_s > 0.0 {
        fact(out, "growth", &esc(&units::rate(p.growth_bytes_per_s)));
    }
    if let Some(d) = p.doubling_s {
        fact(out, "RSS doubles in", &esc(&units::duration(d)));
    }
    fact(
        out,
        "address space",
        &esc(&units::bytes(p.vm_size_bytes_end)),
    );
    fact(out, "threads", &p.threads_end.to_string());
    if let Some(n) = p.fds_end {
        fact(out, "open fds", &findings::num(n));
    }
    out.push_str("</div></header>\n");
}

/// True when a counter moved during the window (worth a chart).
fn varies<T: PartialEq>(v: &[T]) -> bool {
    v.windows(2).any(|w| w[0] != w[1])
}

fn charts(out: &mut String, r: &Report) {
    let s = &r.series;
    out.push_str("<h2 id=\"memory\">Memory over time</h2>\n");
    let mut lines = vec![
        Line {
            width: 2.6,
            ..Line::of_u64("RSS", "#1d2330", &s.t, &s.rss)
        },
        Line::of_u64("anonymous (heap, stacks)", PALETTE[2], &s.t, &s.rss_anon),
        Line::of_u64(
            "file-backed (code, mmapped files)",
            PALETTE[0],
            &s.t,
            &s.rss_file,
        ),
        Line::of_u64("shared memory", PALETTE[4], &s.t, &s.rss_shmem),
    ];
    if s.swap.iter().any(|&b| b > 0) {
        lines.push(Line::of_u64("swap", PALETTE[6], &s.t, &s.swap));
    }
    out.push_str(&chart::figure(&Chart {
        id: CHART_MEMORY.into(),
        title: "RSS and its components".into(),
        unit: Unit::Bytes,
        lines,
    }));

    if varies(&s.threads) || varies(&s.fds) {
        let mut lines = vec![Line::new("threads", PALETTE[1], &s.t, &s.threads)];
        if s.fds.iter().any(Option::is_some) {
            // A missing fd count breaks the line rather than reading as 0.
            let fds: Vec<f64> = s
                .fds
                .iter()
                .map(|n| n.map_or(f64::NAN, |n| n as f64))
                .collect();
            lines.push(Line::new("open fds", PALETTE[3], &s.t, &fds));
        }
        out.push_str(&chart::figure(&Chart {
            id: CHART_TASKS.into(),
            title: "Threads and file descriptors".into(),
            unit: Unit::Count,
            lines,
        }));
    }

    if r.type_series.is_empty() {
        match &r.python {
            Some(py) if py.censuses < 2 => out
                .push_str("<p class=\"muted\">One census only: no per-type series to draw.</p>\n"),
            Some(_) => {
                out.push_str("<p class=\"muted\">No Python type grew between the censuses.</p>\n")
            }
            None => {}
        }
        return;
    }
    out.push_str("<h2 id=\"types\">Top growing Python types</h2>\n");
    // The same colour for a type in both charts.
    let of = |bytes: bool| -> Vec<Line> {
        r.type_series
            .iter()
            .enumerate()
            .map(|(i, ts)| {
                let v = if bytes { &ts.sizes } else { &ts.counts };
                Line::of_u64(&ts.name, PALETTE[i % PALETTE.len()], &ts.t, v)
            })
            .collect()
    };
    out.push_str(&chart::figure(&Chart {
        id: CHART_TYPE_COUNTS.into(),
        title: "Live objects per type (census counts)".into(),
        unit: Unit::Count,
        lines: of(false),
    }));
    out.push_str(&chart::figure(&Chart {
        id: CHART_TYPE_BYTES.into(),
        title: "Bytes per type (sum of sys.getsizeof)".into(),
        unit: Unit::Bytes,
        lines: of(true),
    }));
}

fn retainer_graph(out: &mut String, r: &Report) {
    let Some(svg) = &r.retainer_svg else {
        return;
    };
    out.push_str("<h2 id=\"retainers\">Retainer graph</h2>\n");
    match escape::inline_svg(svg) {
        Some(svg) => {
            out.push_str(
                "<p class=\"muted\">How the sampled instances of the top growing type are \
                 held: roots in green, the instances in orange.</p>\n\
                 <div class=\"graph\" id=\"retainer-graph\">",
            );
            out.push_str(&svg);
            out.push_str("</div>\n");
        }
        None => out.push_str(
            "<p class=\"muted\">The retainer graph was left out: its SVG held markup that \
             is not safe to inline. <code>memsleuth why PID --format dot</code> gives it \
             as a graph to draw.</p>\n",
        ),
    }
}

fn list(out: &mut String, id: &str, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(out, "<h2 id=\"{id}\">{}</h2><ul>", esc(title));
    for i in items {
        let _ = write!(out, "<li>{i}</li>");
    }
    out.push_str("</ul>\n");
}

fn footer(out: &mut String, r: &Report) {
    let notes: Vec<String> = r.notes.iter().map(|n| esc(n)).collect();
    list(out, "notes", "Also noticed", &notes);
    let skipped: Vec<String> = r
        .skipped
        .iter()
        .map(|s| format!("<b>{}</b>: {}", esc(&s.part), esc(&s.reason)))
        .collect();
    list(out, "skipped", "Skipped", &skipped);

    out.push_str("<h2 id=\"cost\">Cost to the target</h2><p>");
    match &r.python {
        Some(py) => {
            let _ = write!(
                out,
                "{} s in memsleuth's code with the GIL held ({:.1}% of {:.1} s); \
                 {} {} census{} (longest GIL hold {} s); attached in {} s ({})",
                fixed(py.gil_s, 3),
                if py.gil_share.is_finite() {
                    py.gil_share * 100.0
                } else {
                    0.0
                },
                r.observed_s,
                py.censuses,
                if py.census_mode == "gc_only" {
                    "gc-only"
                } else {
                    "complete"
                },
                if py.censuses == 1 { "" } else { "es" },
                fixed(py.census_max_hold_s, 3),
                fixed(py.attach_s, 2),
                esc(&py.attach_method)
            );
        }
        None => out.push_str("none: read from /proc only"),
    }
    out.push_str("</p>\n");
    let _ = writeln!(
        out,
        "<footer>memsleuth {} · report schema {} · one self-contained file, \
         nothing loaded from the network</footer>",
        env!("CARGO_PKG_VERSION"),
        r.schema
    );
}

/// `v` with `d` decimals, "?" when not finite.
fn fixed(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "?".into()
    }
}
