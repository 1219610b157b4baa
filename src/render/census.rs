//! Text for `memsleuth types` and `memsleuth growth`: tables in the spirit
//! of guppy's `hpy().heap()` and objgraph's `show_growth()`. Pure functions
//! of the analysed data, so they can be snapshot-tested.

use crate::analysis::census::{Census, GrowthRow};
use crate::render::table::Table;
use crate::render::units;

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn signed_thousands(d: i64) -> String {
    match d {
        0 => "0".into(),
        d if d > 0 => format!("+{}", thousands(d as u64)),
        d => format!("-{}", thousands(d.unsigned_abs())),
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

fn ms(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// Inputs of the `types` view besides the census.
#[derive(Debug, Clone, Default)]
pub struct TypesContext {
    pub pid: u32,
    pub python: String,
    /// VmRSS in bytes, when it could be read.
    pub rss: Option<u64>,
    pub limit: usize,
    pub by_count: bool,
    /// Wall time of the census request.
    pub census_s: f64,
    /// Read from outside (no agent): what it cost.
    pub read: Option<crate::heap::read::ReadCost>,
    /// The core file it was read from.
    pub core: Option<String>,
}

/// The note line of a census read from outside, and its warnings.
pub fn read_note(cost: &crate::heap::read::ReadCost, core: Option<&str>) -> String {
    let mut notes = Vec::new();
    match core {
        Some(path) => notes.push(format!("read from the core file {path}")),
        None if cost.paused_s > 0.0 => notes.push(format!(
            "read from memory, no code run in the target; threads paused {}",
            ms(cost.paused_s)
        )),
        None => notes.push(
            "read from memory without pausing (--nonblocking), no code run in the target".into(),
        ),
    }
    notes.push(format!(
        "{} {}, decoded in {}, {} in all",
        units::bytes(cost.copied_bytes),
        if core.is_some() { "mapped" } else { "copied" },
        ms(cost.walk_s),
        ms(cost.total_s)
    ));
    if cost.skipped > 0 {
        notes.push(format!(
            "{} invalid objects skipped",
            thousands(cost.skipped)
        ));
    }
    let mut out = format!("({})\n", notes.join("; "));
    for w in &cost.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// The note line of a census the agent took.
fn agent_note(c: &Census, ctx: &TypesContext) -> String {
    let s = &c.stats;
    let mut notes = vec![format!(
        "census {} in {} frames, GIL held at most {} at a time",
        ms(ctx.census_s),
        thousands(c.chunks),
        ms(s.max_hold_s)
    )];
    notes.push(format!(
        "memsleuth's own {} objects left out",
        thousands(s.excluded)
    ));
    if let Some(n) = s.collected {
        notes.push(format!("gc.collect() freed {} first", thousands(n)));
    }
    format!("({})\n", notes.join("; "))
}

/// The `types` table.
pub fn types_view(c: &Census, ctx: &TypesContext) -> String {
    let mut out = String::new();
    let rss = match ctx.rss {
        Some(r) if r > 0 => format!(" of {} RSS ({})", units::bytes(r), pct(c.size.min(r), r)),
        _ => String::new(),
    };
    out.push_str(&format!(
        "Python objects: {}{rss} in {} objects (pid {}, Python {})\n",
        units::bytes(c.size),
        thousands(c.count),
        ctx.pid,
        ctx.python
    ));
    if c.gc_only {
        out.push_str(&format!(
            "Only the {} objects the garbage collector tracks (--gc-only: no str, int, float, ...).\n",
            thousands(c.tracked)
        ));
    } else {
        out.push_str(&format!(
            "{} tracked by the garbage collector, {} more found through them (str, int, float, ...).\n",
            thousands(c.tracked),
            thousands(c.untracked)
        ));
    }
    let s = &c.stats;
    if let Some(cost) = &ctx.read {
        out.push_str(&read_note(cost, ctx.core.as_deref()));
    } else {
        out.push_str(&agent_note(c, ctx));
    }

    // (3.12 keeps a few hundred of its own tuples there from the start.)
    if s.frozen > 1000 {
        out.push_str(&format!(
            "note: {} objects frozen by gc.freeze() are not counted.\n",
            thousands(s.frozen)
        ));
    }
    if s.size_errors > 0 {
        out.push_str(&format!(
            "note: {} objects whose __sizeof__ failed are counted as 0 bytes.\n",
            thousands(s.size_errors)
        ));
    }
    out.push('\n');

    let rows = c.sorted_rows(ctx.by_count);
    let shown = if ctx.limit == 0 {
        rows.len()
    } else {
        ctx.limit.min(rows.len())
    };
    let mut t = Table::new(&[
        ("#", true),
        ("COUNT", true),
        ("%", true),
        ("SIZE", true),
        ("%", true),
        ("CUMUL", true),
        ("TYPE", false),
    ]);
    let mut cumul = 0u64;
    for (i, r) in rows.iter().take(shown).enumerate() {
        cumul += if ctx.by_count { r.count } else { r.size };
        let whole = if ctx.by_count { c.count } else { c.size };
        let mut name = r.name.clone();
        if r.classes > 1 {
            name.push_str(&format!(
                "  [{} classes of this name]",
                thousands(r.classes)
            ));
        }
        t.row(vec![
            (i + 1).to_string(),
            thousands(r.count),
            pct(r.count, c.count),
            units::bytes(r.size),
            pct(r.size, c.size),
            pct(cumul, whole),
            name,
        ]);
    }
    out.push_str(&t.render());
    if shown < rows.len() {
        let rest = &rows[shown..];
        let n: u64 = rest.iter().map(|r| r.count).sum();
        let sz: u64 = rest.iter().map(|r| r.size).sum();
        out.push_str(&format!(
            "... {} more types: {} objects, {} (--limit 0 shows all)\n",
            thousands(rest.len() as u64),
            thousands(n),
            units::bytes(sz)
        ));
    }
    out
}

/// Inputs of the `growth` view besides the rows.
#[derive(Debug, Clone, Default)]
pub struct GrowthContext {
    pub pid: u32,
    pub python: String,
    pub interval_s: f64,
    /// Seconds since the first census, per census.
    pub times: Vec<f64>,
    pub counts: Vec<u64>,
    pub sizes: Vec<u64>,
    /// VmRSS per census, bytes.
    pub rss: Vec<u64>,
    pub gc_only: bool,
    pub collect: bool,
    pub limit: usize,
    pub max_hold_s: f64,
    /// Read from outside: each census's cost (empty: the agent took them).
    pub reads: Vec<crate::heap::read::ReadCost>,
}

fn per_interval(deltas: &[i64]) -> String {
    const MAX: usize = 8;
    let skip = deltas.len().saturating_sub(MAX);
    let mut parts: Vec<String> = deltas[skip..]
        .iter()
        .map(|d| signed_thousands(*d))
        .collect();
    if skip > 0 {
        parts.insert(0, "…".into());
    }
    parts.join(" ")
}

/// The `growth` table and the sampled new objects.
pub fn growth_view(rows: &[GrowthRow], ctx: &GrowthContext) -> String {
    let mut out = String::new();
    let n = ctx.times.len();
    let span = ctx.times.last().copied().unwrap_or(0.0);
    out.push_str(&format!(
        "Growth in pid {} (Python {}) over {:.1} s: {} censuses {:.1} s apart, {}{}\n",
        ctx.pid,
        ctx.python,
        span,
        n,
        ctx.interval_s,
        if ctx.gc_only {
            "gc-tracked objects only"
        } else {
            "all objects"
        },
        if ctx.collect {
            ", gc.collect() before each"
        } else {
            ""
        },
    ));
    if let (Some(a), Some(b)) = (ctx.counts.first(), ctx.counts.last()) {
        let (sa, sb) = (ctx.sizes[0], ctx.sizes[ctx.sizes.len() - 1]);
        out.push_str(&format!(
            "Python objects: {} -> {} ({}), {} -> {} ({})",
            thousands(*a),
            thousands(*b),
            signed_thousands(units::delta(*b, *a)),
            units::bytes(sa),
            units::bytes(sb),
            units::bytes_delta(units::delta(sb, sa)),
        ));
        if let (Some(ra), Some(rb)) = (ctx.rss.first(), ctx.rss.last()) {
            out.push_str(&format!(
                "; RSS {} -> {} ({})",
                units::bytes(*ra),
                units::bytes(*rb),
                units::bytes_delta(units::delta(*rb, *ra))
            ));
        }
        out.push('\n');
    }
    let cost = if ctx.reads.is_empty() {
        format!("GIL held at most {} at a time", ms(ctx.max_hold_s))
    } else {
        let paused = ctx.reads.iter().map(|r| r.paused_s).fold(0.0, f64::max);
        let skipped = ctx.reads.iter().map(|r| r.skipped).max().unwrap_or(0);
        let mut c = format!(
            "read from memory, no code run in the target; paused at most {}",
            ms(paused)
        );
        if skipped > 0 {
            c.push_str(&format!(
                ", up to {} invalid objects skipped",
                thousands(skipped)
            ));
        }
        c
    };
    out.push_str(&format!(
        "({cost}. SCORE = intervals with growth x net/total change x share of new objects still alive; >= {:.1}: growing steadily, marked ^)\n\n",
        crate::analysis::census::MONOTONIC_THRESHOLD
    ));
    let mut warned: Vec<&String> = Vec::new();
    for w in ctx.reads.iter().flat_map(|r| &r.warnings) {
        if !warned.contains(&w) {
            out.push_str(&format!("warning: {w}\n"));
            warned.push(w);
        }
    }
    if rows.is_empty() {
        out.push_str("No type changed in count or size.\n");
        return out;
    }
    let shown = if ctx.limit == 0 {
        rows.len()
    } else {
        ctx.limit.min(rows.len())
    };
    let mut t = Table::new(&[
        ("TYPE", false),
        ("COUNT", true),
        ("+COUNT", true),
        ("+SIZE", true),
        ("NEW/GONE", true),
        ("SCORE", true),
        ("PER INTERVAL", false),
    ]);
    for r in &rows[..shown] {
        let turnover = match (r.born, r.died) {
            (Some(b), Some(d)) => format!("+{}/-{}", thousands(b), thousands(d)),
            _ => "-".into(),
        };
        t.row(vec![
            r.name.clone(),
            thousands(*r.counts.last().unwrap_or(&0)),
            signed_thousands(r.delta_count),
            units::bytes_delta(r.delta_size),
            turnover,
            format!("{:.2}{}", r.score, if r.monotonic { " ^" } else { "" }),
            per_interval(&r.deltas),
        ]);
    }
    out.push_str(&t.render());
    if shown < rows.len() {
        out.push_str(&format!(
            "... {} more types changed (--limit 0 shows all)\n",
            thousands((rows.len() - shown) as u64)
        ));
    }
    let growing = rows.iter().filter(|r| r.monotonic).count();
    if growing == 0 {
        out.push_str("\nNo type grew steadily.\n");
    } else {
        let top = &rows[0];
        out.push_str(&format!(
            "\nTop grower: {} ({} objects, {} in {:.1} s).\n",
            top.name,
            signed_thousands(top.delta_count),
            units::bytes_delta(top.delta_size),
            span
        ));
    }
    let sampled: Vec<&GrowthRow> = rows.iter().filter(|r| !r.new_objects.is_empty()).collect();
    if !sampled.is_empty() {
        out.push_str("\nNew objects (alive now, absent from the first census):\n");
        for r in sampled {
            out.push_str(&format!("  {}:\n", r.name));
            for o in &r.new_objects {
                match &o.repr {
                    Some(s) => out.push_str(&format!("    {:#x}  {s}\n", o.id)),
                    None => out.push_str(&format!("    {:#x}  (gone)\n", o.id)),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(signed_thousands(-1234), "-1,234");
        assert_eq!(per_interval(&[1, -2, 0]), "+1 -2 0");
        assert_eq!(per_interval(&[1; 10]), "… +1 +1 +1 +1 +1 +1 +1 +1");
    }
}
