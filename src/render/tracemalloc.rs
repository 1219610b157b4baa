//! Text for `memsleuth tracemalloc`. Pure, snapshot-tested on recorded
//! reports.

use crate::analysis::tracemalloc::{Diff, GroupBy, SiteStat, TmReport, TmStatus};
use crate::render::gcstate::{secs, thousands, wrap};
use crate::render::table::Table;
use crate::render::units;

fn status_line(s: &TmStatus) -> String {
    if s.tracing {
        format!(
            "tracemalloc: tracing, {} frame(s) per traceback; traced {} now (peak {}); its own \
             memory {}\n",
            s.traceback_limit,
            units::bytes(s.traced_current),
            units::bytes(s.traced_peak),
            units::bytes(s.overhead)
        )
    } else {
        "tracemalloc: not tracing\n".to_string()
    }
}

fn site_rows(sites: &[SiteStat], with_diff: bool, by: GroupBy) -> String {
    let mut cols = vec![("  SIZE", true)];
    if with_diff {
        cols.push(("GROWTH", true));
    }
    cols.push(("COUNT", true));
    if with_diff {
        cols.push(("+COUNT", true));
    }
    cols.push(("SITE", false));
    let mut t = Table::new(&cols);
    let mut extra: Vec<Vec<String>> = Vec::new();
    for s in sites {
        let mut row = vec![format!("  {}", units::bytes(s.size))];
        if with_diff {
            row.push(units::bytes_delta(s.size_diff));
        }
        row.push(thousands(s.count as i64));
        if with_diff {
            row.push(if s.count_diff > 0 {
                format!("+{}", thousands(s.count_diff))
            } else {
                thousands(s.count_diff)
            });
        }
        row.push(s.site());
        t.row(row);
        extra.push(if by == GroupBy::Traceback {
            s.frames.iter().skip(1).map(|f| f.to_string()).collect()
        } else {
            Vec::new()
        });
    }
    if by == GroupBy::Line {
        return t.render();
    }
    // By traceback: the older frames under each site, most recent first.
    let rendered = t.render();
    let mut lines = rendered.lines();
    let mut out = String::new();
    if let Some(h) = lines.next() {
        out.push_str(h);
        out.push('\n');
    }
    let indent = rendered
        .lines()
        .next()
        .and_then(|h| h.find("SITE"))
        .unwrap_or(4);
    for (line, older) in lines.zip(extra) {
        out.push_str(line);
        out.push('\n');
        for f in older {
            out.push_str(&format!("{:indent$}  called from {f}\n", ""));
        }
    }
    out
}

fn diff_block(d: &Diff) -> String {
    let by = match d.by {
        GroupBy::Line => "line",
        GroupBy::Traceback => "traceback",
    };
    let mut out = format!(
        "Allocation sites by {by}, snapshot {} → {} ({} apart): traced memory {} → {} ({})\n",
        d.old_seq,
        d.new_seq,
        units::duration(d.elapsed_s.max(0.0)),
        units::bytes(d.old_total),
        units::bytes(d.new_total),
        units::bytes_delta(units::delta(d.new_total, d.old_total))
    );
    let shrunk = if d.shrunk_sites == 0 {
        "none shrank".to_string()
    } else {
        format!(
            "{} shrank by {}",
            thousands(d.shrunk_sites as i64),
            units::bytes(d.shrunk_bytes)
        )
    };
    out.push_str(&format!(
        "{} sites grew by {} in total; {shrunk}\n\n",
        thousands(d.grown_sites as i64),
        units::bytes(d.grown_bytes),
    ));
    if !d.sites.is_empty() {
        out.push_str(&site_rows(&d.sites, true, d.by));
    }
    if d.elapsed_s > 0.0
        && let Some(top) = d.sites.first()
        && top.size_diff > 0
    {
        out.push_str(&format!(
            "\nTop grower: {} ({})\n",
            top.site(),
            units::rate(top.size_diff as f64 / d.elapsed_s)
        ));
    }
    out
}

/// The whole text for any `memsleuth tracemalloc` action.
pub fn report(r: &TmReport) -> String {
    let py = r
        .python
        .as_deref()
        .map(|v| format!(" (Python {v})"))
        .unwrap_or_default();
    let mut out = format!("tracemalloc {} in process {}{py}\n\n", r.action, r.pid);
    if let Some(s) = &r.status {
        out.push_str(&status_line(s));
    }
    if let Some(s) = &r.snapshot {
        out.push_str(&format!(
            "snapshot {}: {} live traces at {} sites, {} ({} traces of memsleuth's own left out), \
             taken in {}\n",
            s.seq,
            thousands(s.traces as i64),
            thousands(s.sites as i64),
            units::bytes(s.total_size),
            thousands(s.traces_own as i64),
            secs(s.seconds)
        ));
        if let Some(n) = s.collected {
            out.push_str(&format!(
                "(gc.collect() ran first and found {} unreachable objects)\n",
                thousands(n)
            ));
        }
        out.push_str(&format!("saved as {}\n", s.path));
        if !s.top.is_empty() {
            out.push_str("\nLargest sites by line:\n");
            out.push_str(&site_rows(&s.top, false, GroupBy::Line));
        }
    }
    if let Some(d) = &r.diff {
        out.push_str(&diff_block(d));
    }
    if !r.notes.is_empty() {
        out.push('\n');
        for n in &r.notes {
            out.push_str(&wrap(n, 100, "", ""));
        }
    }
    if let (Some(a), Some(g)) = (r.attach_s, r.gil_s) {
        out.push_str(&super::gcstate::session_footer(a, g));
    }
    out
}
