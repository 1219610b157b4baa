//! `memsleuth doctor` as text: the headline, each finding with its
//! evidence and the next command, then what was noticed, skipped and what
//! the observation cost the target.

use crate::analysis::doctor::report::Report;
use crate::analysis::doctor::{Evidence, Finding, TypeGrowth, Verdict};
use crate::render::gcstate::thousands;
use crate::render::units;

fn num(n: u64) -> String {
    thousands(i64::try_from(n).unwrap_or(i64::MAX))
}

fn rate(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:+.0}/s")
    } else {
        format!("{v:+.1}/s")
    }
}

fn types_table(out: &mut String, types: &[TypeGrowth], indent: &str) {
    let width = types
        .iter()
        .take(8)
        .map(|t| t.name.chars().count().min(48))
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{indent}{:<width$}  {:>17}  {:>8}  {:>10}\n",
        "TYPE", "COUNT", "RATE", "BYTES"
    ));
    for t in types.iter().take(8) {
        let name: String = t.name.chars().take(48).collect();
        let (a, b) = (
            t.counts.first().copied().unwrap_or(0),
            t.counts.last().copied().unwrap_or(0),
        );
        out.push_str(&format!(
            "{indent}{name:<width$}  {:>17}  {:>8}  {:>10}\n",
            format!("{} → {}", num(a), num(b)),
            rate(t.count_per_s),
            units::bytes_delta(t.bytes_delta)
        ));
    }
    if types.len() > 8 {
        out.push_str(&format!("{indent}... and {} more types\n", types.len() - 8));
    }
}

fn samples(out: &mut String, types: &[TypeGrowth], indent: &str) {
    for t in types.iter().filter(|t| !t.samples.is_empty()).take(2) {
        for s in t.samples.iter().take(2) {
            let s: String = s.chars().take(120).collect();
            out.push_str(&format!("{indent}new {}: {s}\n", t.name));
        }
    }
}

fn evidence(out: &mut String, f: &Finding) {
    let ind = "   ";
    match &f.evidence {
        Evidence::Objects(e) => {
            types_table(out, &e.types, ind);
            for r in e.retainers.iter().take(3) {
                out.push_str(&format!("{ind}{}\n{ind}  {}\n", r.sentence, r.path));
            }
            samples(out, &e.types, ind);
        }
        Evidence::Garbage(e) => {
            out.push_str(&format!(
                "{ind}len(gc.garbage) {} → {} ({}){}\n",
                num(e.lengths.first().copied().unwrap_or(0)),
                num(e.lengths.last().copied().unwrap_or(0)),
                rate(e.per_s),
                if e.saveall {
                    "; gc.DEBUG_SAVEALL is set"
                } else {
                    ""
                }
            ));
            for t in e.types.iter().take(5) {
                out.push_str(&format!(
                    "{ind}  {} × {}: {}\n",
                    num(t.count),
                    t.name,
                    t.cause
                ));
            }
        }
        Evidence::GcDisabled(e) => {
            out.push_str(&format!(
                "{ind}gc.isenabled() {}; thresholds {:?}; gen-0 count {} → {}\n",
                if e.enabled.iter().all(|x| *x) {
                    "True"
                } else {
                    "False"
                },
                e.thresholds,
                thousands(e.gen0_counts.first().copied().unwrap_or(0)),
                thousands(e.gen0_counts.last().copied().unwrap_or(0)),
            ));
            types_table(out, &e.growing, ind);
            match e.cycles_confirmed {
                Some(true) => out.push_str(&format!(
                    "{ind}the sampled instances are reachable only from reference cycles\n"
                )),
                None => out.push_str(&format!(
                    "{ind}(not checked that the instances are cycles: retainer paths were skipped)\n"
                )),
                Some(false) => {}
            }
            for r in e.retainers.iter().take(2) {
                out.push_str(&format!("{ind}{}\n", r.sentence));
            }
        }
        Evidence::Mapping(e) => {
            out.push_str(&format!(
                "{ind}{}: mapped {} → {} times; {} mapped; RSS charged {} → {}{}\n",
                e.label,
                num(e.instances.before),
                num(e.instances.after),
                units::bytes(e.mapped_bytes.after),
                units::bytes(e.rss.before),
                units::bytes(e.rss.after),
                e.pss
                    .map(|p| format!(" (PSS {})", units::bytes(p.after)))
                    .unwrap_or_default()
            ));
            if let (Some(size), Some(n)) = (e.segment_bytes, e.nattch) {
                out.push_str(&format!(
                    "{ind}the segment itself is {} (nattch {})\n",
                    units::bytes(size),
                    num(n)
                ));
            }
            out.push_str(&format!("{ind}cause: {}\n", e.hint));
        }
        Evidence::Threads(e) => {
            for g in e.new_threads.iter().take(5) {
                out.push_str(&format!(
                    "{ind}{} new × {}: {}\n",
                    num(g.count),
                    g.name,
                    g.doing
                ));
            }
            match &e.stacks {
                Some(st) if e.rss_source == "stacks" => out.push_str(&format!(
                    "{ind}their stacks: {} resident (+{} over the window) of {} reserved, in {} \
                     stacks\n",
                    units::bytes(st.rss),
                    units::bytes(e.rss_bytes),
                    units::bytes(st.size),
                    num(u64::from(st.stacks))
                )),
                _ if e.rss_bytes > 0 => out.push_str(&format!(
                    "{ind}their stacks and arenas: ~{} of RSS (estimated: smaps unreadable)\n",
                    units::bytes(e.rss_bytes)
                )),
                _ => {}
            }
            if e.native_bytes_per_s >= 1.0 {
                out.push_str(&format!(
                    "{ind}and {} of native memory beyond the stacks (thread states, frame stacks)\n",
                    units::rate(e.native_bytes_per_s)
                ));
            }
        }
        Evidence::Fds(e) => {
            for (target, n) in e.top_targets.iter().take(5) {
                out.push_str(&format!("{ind}{:>6} open: {target}\n", num(*n)));
            }
        }
        Evidence::Native(e) => {
            out.push_str(&format!(
                "{ind}RssAnon {}; Python objects {}; unexplained {}\n",
                units::bytes_delta(e.rss_anon.delta),
                e.python_bytes_delta
                    .map(units::bytes_delta)
                    .unwrap_or_else(|| "?".into()),
                units::bytes_delta(e.unexplained_bytes)
            ));
            if let Some(m) = e.allocator.as_ref().and_then(|a| a.mallinfo.as_ref()) {
                out.push_str(&format!(
                    "{ind}malloc: {} in use, {} free in arenas, {} in mmapped chunks\n",
                    units::bytes(m.uordblks),
                    units::bytes(m.fordblks),
                    units::bytes(m.hblkhd)
                ));
            }
            out.push_str(&format!("{ind}cause: {}\n", e.hint));
        }
        Evidence::Retention(e) => {
            if let Some(b) = e.malloc_free_bytes {
                out.push_str(&format!(
                    "{ind}free inside glibc malloc: {}\n",
                    units::bytes(b)
                ));
            }
            if let Some(b) = e.pymalloc_idle_bytes {
                out.push_str(&format!(
                    "{ind}idle in pymalloc arenas: {}\n",
                    units::bytes(b)
                ));
            }
            out.push_str(&format!("{ind}{}\n", e.hint));
        }
    }
}

pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let p = &r.process;
    let cmd = units::clip_words(&p.cmdline, 100);
    out.push_str(&format!(
        "memsleuth doctor: pid {} ({cmd}){}, watched {:.1} s\n\n",
        p.pid,
        r.python
            .as_ref()
            .map(|py| format!(", Python {}", py.version))
            .unwrap_or_default(),
        r.observed_s
    ));
    out.push_str(&r.headline);
    out.push('\n');
    out.push_str(&format!(
        "RSS {} → {}",
        units::bytes(p.rss_bytes_start),
        units::bytes(p.rss_bytes_end)
    ));
    match p.rss_slope_bytes_per_s {
        Some(slope) if slope > 0.0 && (r.verdict == Verdict::Leak || slope >= 1024.0) => {
            out.push_str(&format!(
                "; growing {} (measured{})",
                units::rate(slope),
                p.rss_slope_window_s
                    .map(|[a, b]| format!(" over {:.1}–{:.1} s", a, b))
                    .unwrap_or_default()
            ));
            if let Some(d) = p.doubling_s {
                out.push_str(&format!(": it doubles in {}", units::duration(d)));
            }
            if r.verdict == Verdict::Leak {
                out.push_str(&format!(
                    "\nFindings: {} in all, {:.0}% of that",
                    units::rate(p.growth_bytes_per_s),
                    p.explained_share.unwrap_or(0.0) * 100.0
                ));
            }
        }
        _ if r.verdict == Verdict::Leak => {
            out.push_str(&format!(
                ", findings add {}",
                units::rate(p.growth_bytes_per_s)
            ));
            if let Some(d) = p.doubling_s {
                out.push_str(&format!(
                    ": at this rate it doubles in {}",
                    units::duration(d)
                ));
            }
        }
        _ => {}
    }
    out.push('\n');

    for (i, f) in r.findings.iter().enumerate() {
        out.push_str(&format!(
            "\n{}. {}{}  {}{}\n",
            i + 1,
            f.kind.name(),
            if f.informational {
                " (informational)"
            } else {
                ""
            },
            units::rate(f.rate_bytes_per_s),
            if f.steady || f.informational {
                ""
            } else {
                "  (irregular, or too few points to call it steady)"
            }
        ));
        out.push_str(&format!("   {}\n", f.summary));
        evidence(&mut out, f);
        for (k, n) in f.next.iter().enumerate() {
            out.push_str(&format!(
                "   {} {n}\n",
                if k == 0 { "next:" } else { "     " }
            ));
        }
    }
    if !r.notes.is_empty() {
        out.push_str("\nAlso noticed:\n");
        for n in &r.notes {
            out.push_str(&format!("  - {n}\n"));
        }
    }
    if !r.skipped.is_empty() {
        out.push_str("\nSkipped:\n");
        for s in &r.skipped {
            out.push_str(&format!("  - {}: {}\n", s.part, s.reason));
        }
    }
    out.push('\n');
    if let Some(h) = r.python.as_ref().and_then(|py| py.heap.as_ref()) {
        let largest: Vec<String> = h
            .largest
            .iter()
            .take(4)
            .map(|t| format!("{} {}", t.name, units::bytes(t.bytes)))
            .collect();
        out.push_str(&format!(
            "Heap at the last census: {} objects, {}; largest: {}\n",
            thousands(h.objects.min(i64::MAX as u64) as i64),
            units::bytes(h.bytes),
            largest.join(", ")
        ));
    }
    match &r.python {
        Some(py) if py.source == "memory" => {
            let o = py.outside.clone().unwrap_or_default();
            let agent = if py.attach_s > 0.0 {
                format!(
                    "; the agent ran the rest ({}), attached in {:.2} s ({})",
                    agent_parts(py),
                    py.attach_s,
                    py.attach_method
                )
            } else {
                "; no agent".to_string()
            };
            out.push_str(&format!(
                "Cost to the target: {:.3} s in memsleuth's code with the GIL ({:.1}% of {:.1} s); \
                 read from outside: {} {} {} and {} collector {} (threads paused {:.0} ms \
                 in all, {:.0} ms at most){agent}\n",
                py.gil_s,
                py.gil_share * 100.0,
                r.observed_s,
                o.censuses,
                if py.census_mode == "gc_only" {
                    "gc-only"
                } else {
                    "complete"
                },
                if o.censuses == 1 {
                    "census"
                } else {
                    "censuses"
                },
                o.gc_reads,
                if o.gc_reads == 1 { "read" } else { "reads" },
                o.paused_s * 1000.0,
                o.max_pause_s * 1000.0,
            ))
        }
        Some(py) => out.push_str(&format!(
            "Cost to the target: {:.3} s in memsleuth's code with the GIL ({:.1}% of {:.1} s); \
             {} {} {}; attached in {:.2} s ({})\n",
            py.gil_s,
            py.gil_share * 100.0,
            r.observed_s,
            py.censuses,
            if py.census_mode == "gc_only" {
                "gc-only"
            } else {
                "complete"
            },
            if py.censuses == 1 {
                "census"
            } else {
                "censuses"
            },
            py.attach_s,
            py.attach_method
        )),
        None => out.push_str("Cost to the target: none (read from /proc only)\n"),
    }
    out
}

/// The parts the agent ran, for the cost line: "threads, retainer paths".
fn agent_parts(py: &crate::analysis::doctor::report::PythonReport) -> String {
    let parts: Vec<&str> = py
        .gil_by_part
        .iter()
        .filter(|(k, v)| k.as_str() != "attach" && **v > 0.0)
        .map(|(k, _)| k.as_str())
        .collect();
    if parts.is_empty() {
        "nothing else".into()
    } else {
        parts.join(", ")
    }
}
