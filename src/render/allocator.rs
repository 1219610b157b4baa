//! Text for `memsleuth native`. Pure, snapshot-tested on recorded reports.

use crate::analysis::allocator::{Mallinfo, NativeReport, PymallocStats};
use crate::render::gcstate::{secs, thousands, wrap};
use crate::render::table::Table;
use crate::render::units;

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn mallinfo_block(mi: &Mallinfo, out: &mut String) {
    out.push_str(&format!("glibc malloc ({}):\n", mi.source));
    let rows: [(&str, u64, String); 5] = [
        ("heap from the system (arena)", mi.arena, String::new()),
        (
            "in use (uordblks)",
            mi.uordblks,
            format!("{} of the heap", pct(mi.uordblks, mi.arena)),
        ),
        (
            "free, kept by malloc (fordblks)",
            mi.fordblks,
            format!("in {} free chunks", thousands(mi.ordblks as i64)),
        ),
        (
            "mmapped blocks (hblkhd)",
            mi.hblkhd,
            format!("{} blocks", thousands(mi.hblks as i64)),
        ),
        (
            "releasable at the top (keepcost)",
            mi.keepcost,
            String::new(),
        ),
    ];
    for (label, v, note) in rows {
        let line = format!("  {label:<34}{:>11}  {note}", units::bytes(v));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if mi.may_wrap() {
        out.push_str("  (old glibc: mallinfo() counters are C ints and wrap past 4 GiB)\n");
    }
    if mi.fordblks >= (16 << 20) && mi.fordblks * 2 >= mi.arena {
        out.push_str(&wrap(
            &format!(
                "→ {} of malloc's {} heap is free but still mapped: freed memory the \
                 allocator keeps (fragmentation or no trim). `--probe` measures how much \
                 malloc_trim(0) gives back.",
                pct(mi.fordblks, mi.arena),
                units::bytes(mi.arena)
            ),
            100,
            "  ",
            "    ",
        ));
    }
}

fn pymalloc_block(p: &PymallocStats, out: &mut String) {
    out.push_str("pymalloc (sys._debugmallocstats):\n");
    let arena = p.arena_size.map(units::bytes).unwrap_or_else(|| "?".into());
    let cur = p.arenas_current.unwrap_or(0);
    let mut line = format!(
        "{} now × {arena} = {}",
        thousands(cur as i64),
        units::bytes(p.arena_bytes.or(p.total).unwrap_or(0))
    );
    if let Some(hw) = p.arenas_highwater {
        line.push_str(&format!("; high-water {}", thousands(hw as i64)));
    }
    if let (Some(total), Some(back)) = (p.arenas_allocated_total, p.arenas_reclaimed) {
        line.push_str(&format!(
            "; {} allocated and {} returned over the process's life",
            thousands(total as i64),
            thousands(back as i64)
        ));
    }
    out.push_str(&wrap(
        &line,
        100,
        "  arenas           ",
        "                   ",
    ));
    if let Some(live) = p.allocated_blocks_bytes {
        let frac = p
            .live_fraction()
            .map(|f| format!(" ({:.0}% of arena memory)", f * 100.0))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<17}{}{frac}\n",
            "live blocks",
            units::bytes(live)
        ));
    }
    let overhead = p.pool_headers_bytes.unwrap_or(0)
        + p.quantization_bytes.unwrap_or(0)
        + p.arena_alignment_bytes.unwrap_or(0);
    out.push_str(&format!(
        "  {:<17}{} in free blocks, {} in empty pools, {} overhead\n",
        "free",
        units::bytes(p.available_blocks_bytes.unwrap_or(0)),
        units::bytes(p.unused_pools_bytes.unwrap_or(0)),
        units::bytes(overhead)
    ));
    if p.free_list_objects > 0 {
        out.push_str(&format!(
            "  {:<17}{} in {} objects kept for reuse by type\n",
            "free lists",
            units::bytes(p.free_list_bytes),
            thousands(p.free_list_objects as i64)
        ));
    }
    if let (Some(frac), Some(idle)) = (p.live_fraction(), p.idle_bytes())
        && frac < 0.5
        && idle >= (16 << 20)
    {
        out.push_str(&wrap(
            &format!(
                "→ {} of arena memory holds no live object, but an arena goes back to the \
                 system only when it is completely empty: a few long-lived small objects \
                 spread over many arenas pin them.",
                units::bytes(idle)
            ),
            100,
            "  ",
            "    ",
        ));
    }
}

/// The whole `memsleuth native` text.
pub fn native(r: &NativeReport) -> String {
    let libc = r
        .glibc_version
        .as_deref()
        .map(|v| format!(", glibc {v}"))
        .unwrap_or_default();
    let mut out = format!(
        "allocators of process {} (Python {}{libc})\n\n",
        r.pid, r.python
    );
    out.push_str(&format!(
        "RSS {} (anonymous {}, file {}), peak {}\n\n",
        units::bytes(r.rss.vm_rss),
        units::bytes(r.rss.rss_anon),
        units::bytes(r.rss.rss_file),
        units::bytes(r.rss.vm_hwm)
    ));
    if let Some(other) = &r.other_allocator {
        out.push_str(&wrap(
            &format!(
                "! {other} is loaded in this process: if it replaces malloc, glibc's numbers \
                 below describe only what still goes through glibc."
            ),
            100,
            "",
            "  ",
        ));
        out.push('\n');
    }
    match (&r.mallinfo, &r.mallinfo_note) {
        (Some(mi), _) => mallinfo_block(mi, &mut out),
        (None, Some(note)) => out.push_str(&format!("glibc malloc: {note}\n")),
        (None, None) => out.push_str("glibc malloc: no statistics\n"),
    }
    out.push('\n');
    match (&r.pymalloc, &r.pymalloc_note) {
        (Some(p), _) => pymalloc_block(p, &mut out),
        (None, Some(note)) => out.push_str(&wrap(note, 100, "pymalloc: ", "  ")),
        (None, None) => out.push_str("pymalloc: no statistics\n"),
    }
    if let Some(n) = r.allocated_blocks {
        out.push_str(&format!(
            "  {:<17}{} (sys.getallocatedblocks)\n",
            "allocated blocks",
            thousands(n as i64)
        ));
    }
    if !r.env.is_empty() {
        let vars: Vec<String> = r.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push('\n');
        out.push_str(&wrap(&vars.join(" "), 100, "environment: ", "  "));
    }
    if let Some(p) = &r.probe {
        out.push_str("\nProbe: what each step gave back to the system\n");
        let mut t = Table::new(&[
            ("  STEP", false),
            ("RSS", true),
            ("ANON", true),
            ("RETURNED", true),
            ("TOOK", true),
        ]);
        for (i, s) in p.steps.iter().enumerate() {
            t.row(vec![
                format!("  {}", s.step),
                units::bytes(s.rss),
                units::bytes(s.rss_anon),
                if i == 0 {
                    "-".into()
                } else {
                    units::bytes_delta(s.returned).replace('+', "")
                },
                if i == 0 { "-".into() } else { secs(s.seconds) },
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
        for v in &p.verdict {
            out.push_str(&wrap(v, 100, "  • ", "    "));
        }
    }
    if r.ctypes_loaded_now {
        out.push('\n');
        out.push_str(&wrap(
            "note: ctypes was not loaded in this process before; memsleuth removes its Python \
             modules at detach, but its C parts (_ctypes, libffi) stay loaded, as any extension \
             module does.",
            100,
            "",
            "  ",
        ));
    }
    out.push_str(&super::gcstate::session_footer(r.attach_s, r.gil_s));
    out
}
