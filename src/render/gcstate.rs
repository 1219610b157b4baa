//! Text for `memsleuth gc`. Pure, snapshot-tested on recorded reports.

use crate::analysis::gcstate::{Finding, GcReport, Severity};
use crate::render::table::Table;
use crate::render::units;

/// Wraps `text` at `width` columns, the first line after `first`, the rest
/// indented by `indent`.
pub fn wrap(text: &str, width: usize, first: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// 1234567 → "1,234,567".
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{}", thousands(n))
    } else {
        thousands(n)
    }
}

fn slashed(v: &[i64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The closing line of every attaching command: how long the attach took
/// and how long the target ran our Python (the GIL time we cost it).
pub fn session_footer(attach_s: f64, gil_s: f64) -> String {
    format!(
        "\n(attach {attach_s:.2} s; the target ran our code for {})\n",
        secs(gil_s)
    )
}

pub fn secs(s: f64) -> String {
    if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

pub fn findings_block(findings: &[Finding], ok_line: &str) -> String {
    if findings.is_empty() {
        return format!("{ok_line}\n");
    }
    let mut out = String::from("Findings:\n");
    for f in findings {
        let mark = match f.severity {
            Severity::Problem => "  ✗ ",
            Severity::Warning => "  ! ",
            Severity::Info => "  · ",
        };
        out.push_str(&wrap(&f.message, 100, mark, "    "));
    }
    out
}

/// The whole `memsleuth gc` text.
pub fn gc(r: &GcReport) -> String {
    let mut out = format!("gc state of process {} (Python {})\n\n", r.pid, r.python);
    let mut kv: Vec<(&str, String)> = Vec::new();
    let auto = if !r.enabled {
        "OFF (gc.disable() was called)".to_string()
    } else if r.thresholds.first() == Some(&0) {
        "OFF (threshold 0)".to_string()
    } else {
        "on".to_string()
    };
    kv.push(("automatic collection", auto));
    kv.push(("thresholds", slashed(&r.thresholds)));
    kv.push((
        "counts (gen 0/1/2)",
        format!(
            "{} → {} after {:.1} s",
            slashed(&r.count),
            slashed(&r.count_after),
            r.interval_s
        ),
    ));
    let flags = if r.debug_flags.is_empty() {
        "none".to_string()
    } else {
        r.debug_flags.join(" | ")
    };
    kv.push(("debug flags", flags));
    kv.push(("tracked objects", thousands(r.gc_objects as i64)));
    kv.push((
        "frozen objects",
        r.freeze_count
            .map(|n| thousands(n as i64))
            .unwrap_or_else(|| "n/a (gc.freeze() is 3.7+)".into()),
    ));
    kv.push((
        "gc.callbacks",
        r.callbacks.map(|n| n.to_string()).unwrap_or_else(|| {
            if r.source == "memory" {
                "n/a (not read from outside)".into()
            } else {
                "n/a (3.3+)".into()
            }
        }),
    ));
    for (k, v) in &kv {
        out.push_str(&format!("  {k:<22}{v}\n"));
    }
    out.push('\n');
    match &r.stats {
        Some(stats) => {
            let mut t = Table::new(&[
                ("  GEN", true),
                ("COLLECTIONS", true),
                ("COLLECTED", true),
                ("UNCOLLECTABLE", true),
            ]);
            for (i, s) in stats.iter().enumerate() {
                t.row(vec![
                    i.to_string(),
                    thousands(s.collections as i64),
                    thousands(s.collected as i64),
                    thousands(s.uncollectable as i64),
                ]);
            }
            out.push_str(&t.render());
        }
        None if r.source == "memory" => out.push_str(
            "  per-generation statistics: not read from outside (gc.get_stats() needs --inject)\n",
        ),
        None => out.push_str("  per-generation statistics: gc.get_stats() needs Python 3.4+\n"),
    }
    out.push('\n');

    let g = &r.garbage;
    let growth = if g.growth != 0 {
        format!(", {} in {:.1} s", signed(g.growth), r.interval_s)
    } else {
        format!(", unchanged in {:.1} s", r.interval_s)
    };
    out.push_str(&format!(
        "gc.garbage: {} objects{growth}\n",
        thousands(g.len as i64)
    ));
    if !g.by_type.is_empty() {
        let mut t = Table::new(&[
            ("  COUNT", true),
            ("IN CYCLE", true),
            ("CLASS", false),
            ("WHY IT IS THERE", false),
        ]);
        for ty in &g.by_type {
            let cyc = if ty.raw.sampled > 0 {
                format!("{}/{}", ty.raw.in_cycle, ty.raw.sampled)
            } else {
                "-".into()
            };
            t.row(vec![
                thousands(ty.raw.count as i64),
                cyc,
                ty.raw.type_name.clone(),
                ty.reason.describe().to_string(),
            ]);
        }
        out.push_str(&t.render());
        let listed = g.by_type.len() as u64;
        if g.types > listed && g.other > 0 {
            out.push_str(&format!(
                "  … {} more objects of {} more classes\n",
                thousands(g.other as i64),
                g.types - listed
            ));
        }
        if g.scanned < g.len {
            out.push_str(&format!(
                "  (classes counted over the first {} entries)\n",
                thousands(g.scanned as i64)
            ));
        }
        out.push_str(
            "  (IN CYCLE: sampled instances that can reach themselves through references)\n",
        );
    }
    out.push('\n');

    if let Some(c) = &r.collect {
        out.push_str(&format!(
            "gc.collect() found {} unreachable objects in {}\n",
            thousands(c.returned),
            secs(c.seconds)
        ));
        out.push_str(&format!(
            "  tracked objects  {} → {} ({})\n",
            thousands(c.objects_before as i64),
            thousands(c.objects_after as i64),
            signed(units::delta(c.objects_after, c.objects_before))
        ));
        out.push_str(&format!(
            "  gc.garbage       {} → {}\n",
            thousands(c.garbage_before as i64),
            thousands(c.garbage_after as i64)
        ));
        out.push_str(&format!(
            "  RSS              {} → {} ({})\n",
            units::bytes(c.rss_before),
            units::bytes(c.rss_after),
            units::bytes_delta(units::delta(c.rss_after, c.rss_before))
        ));
        if !c.freed.is_empty() {
            let list: Vec<String> = c
                .freed
                .iter()
                .take(8)
                .map(|d| format!("{} {}", d.type_name, signed(d.delta)))
                .collect();
            out.push_str(&wrap(&list.join(", "), 100, "  freed most: ", "    "));
        }
        if c.garbage_after > c.garbage_before {
            out.push_str(
                "  (what the collection found went to gc.garbage instead of being freed)\n",
            );
        }
        out.push('\n');
    }

    out.push_str(&findings_block(
        &r.findings,
        "No problems found: the collector runs and nothing is piling up in gc.garbage.",
    ));
    if r.ctypes_loaded_now {
        out.push('\n');
        out.push_str(&wrap(
            "note: ctypes was loaded into this process to read tp_del slots; its C parts \
             (_ctypes, libffi) stay loaded after memsleuth detaches.",
            100,
            "",
            "  ",
        ));
    }
    if r.source == "memory" {
        for w in &r.warnings {
            out.push_str(&wrap(w, 100, "warning: ", "  "));
        }
        out.push_str(&memory_footer(r.paused_s));
    } else {
        out.push_str(&session_footer(r.attach_s, r.gil_s));
    }
    out
}

/// The closing line when the state was read from outside.
pub fn memory_footer(paused_s: f64) -> String {
    if paused_s > 0.0 {
        format!(
            "\n(read from memory: no code ran in the target; its threads were paused {})\n",
            secs(paused_s)
        )
    } else {
        "\n(read from memory or a core file: no code ran in the target)\n".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_groups_digits() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(signed(5), "+5");
        assert_eq!(wrap("aaa bbb ccc", 8, "- ", "  "), "- aaa\n  bbb\n  ccc\n");
        assert_eq!(secs(0.0123), "12.3 ms");
    }
}
