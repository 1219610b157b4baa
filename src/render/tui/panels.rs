//! The side panels: the garbage collector and `gc.garbage` (`g`), the
//! grouped mappings with repeated mappings flagged (`m`), and the help
//! overlay (`?`).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, HighlightSpacing, Paragraph, Row, Table, Wrap,
};

use super::app::{App, Loading};
use super::widgets::{Theme, fit, fit_tail, safe, signed, thousands, window};
use crate::analysis::gcstate::{GcReport, Severity};
use crate::render::units::bytes_short;

fn waiting(f: &mut Frame, area: Rect, th: Theme, block: Block, state: Option<&str>) {
    let line = match state {
        Some(e) => Line::styled(format!(" {}", safe(e)), th.warn()),
        None => Line::styled(" reading…", th.dim()),
    };
    f.render_widget(Paragraph::new(line).block(block), area);
}

pub fn gc(f: &mut Frame, area: Rect, app: &mut App) {
    let th = app.theme;
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Line::styled(" Garbage collector ", th.title()));
    let r = match &app.gc {
        Some(Loading::Ready(r)) => r,
        Some(Loading::Failed(e)) => return waiting(f, area, th, block, Some(e)),
        _ => return waiting(f, area, th, block, None),
    };
    let lines = gc_lines(r, th);
    let inner = block.inner(area);
    let max = (lines.len() as u16).saturating_sub(inner.height);
    app.gc_scroll = app.gc_scroll.min(max);
    app.page = inner.height as usize;
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.gc_scroll, 0)),
        area,
    );
}

fn slashed(v: &[i64]) -> String {
    let parts: Vec<String> = v.iter().map(|n| n.to_string()).collect();
    parts.join(" / ")
}

fn gc_lines(r: &GcReport, th: Theme) -> Vec<Line<'static>> {
    let kv = |k: &str, v: Span<'static>| {
        Line::from(vec![Span::styled(format!("  {k:<22}"), th.heading()), v])
    };
    let auto = if !r.enabled {
        Span::styled("OFF (gc.disable() was called)", th.warn())
    } else if r.thresholds.first() == Some(&0) {
        Span::styled("OFF (threshold 0)", th.warn())
    } else {
        Span::styled("on", th.good())
    };
    let flags = if r.debug_flags.is_empty() {
        "none".to_string()
    } else {
        r.debug_flags
            .iter()
            .map(|f| safe(f))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut out = vec![
        kv("automatic collection", auto),
        kv("thresholds", Span::raw(slashed(&r.thresholds))),
        kv(
            "counts (gen 0/1/2)",
            Span::raw(format!(
                "{} → {} after {:.1} s",
                slashed(&r.count),
                slashed(&r.count_after),
                r.interval_s
            )),
        ),
        kv("debug flags", Span::raw(flags)),
        kv("tracked objects", Span::raw(thousands(r.gc_objects))),
        kv(
            "frozen objects",
            Span::raw(r.freeze_count.map_or("n/a".into(), thousands)),
        ),
        Line::raw(""),
    ];
    let g = &r.garbage;
    let growth = if g.growth != 0 {
        format!(", {} in {:.1} s", signed(g.growth), r.interval_s)
    } else {
        format!(", unchanged in {:.1} s", r.interval_s)
    };
    let style = if g.len > 0 { th.warn() } else { th.good() };
    out.push(Line::from(vec![
        Span::styled(" gc.garbage: ", th.heading()),
        Span::styled(format!("{} objects", thousands(g.len)), style),
        Span::raw(growth),
    ]));
    if !g.by_type.is_empty() {
        out.push(Line::styled(
            format!("  {:>9}  {:>8}  {:<28}  WHY", "COUNT", "IN CYCLE", "CLASS"),
            th.heading(),
        ));
        for t in &g.by_type {
            let cyc = if t.raw.sampled > 0 {
                format!("{}/{}", t.raw.in_cycle, t.raw.sampled)
            } else {
                "-".into()
            };
            out.push(Line::raw(format!(
                "  {:>9}  {:>8}  {:<28}  {}",
                thousands(t.raw.count),
                cyc,
                fit(&safe(&t.raw.type_name), 28),
                t.reason.describe()
            )));
        }
    }
    out.push(Line::raw(""));
    if r.findings.is_empty() {
        out.push(Line::styled(
            " ✓ Nothing wrong with the collector.",
            th.good(),
        ));
    }
    for fnd in &r.findings {
        let (mark, style) = match fnd.severity {
            Severity::Problem => ("✗", th.warn()),
            Severity::Warning => ("!", th.key()),
            Severity::Info => ("•", th.dim()),
        };
        out.push(Line::from(vec![
            Span::styled(format!(" {mark} "), style),
            Span::raw(safe(&fnd.message)),
        ]));
    }
    out
}

pub fn maps(f: &mut Frame, area: Rect, app: &mut App) {
    let th = app.theme;
    let m = match &app.maps {
        Some(Loading::Ready(m)) => m,
        other => {
            let block = Block::new()
                .borders(Borders::TOP)
                .title(Line::styled(" Mappings ", th.title()));
            let err = match other {
                Some(Loading::Failed(e)) => Some(e.as_str()),
                _ => None,
            };
            return waiting(f, area, th, block, err);
        }
    };
    let title = Line::from(vec![
        Span::styled(" Mappings ", th.title()),
        Span::raw(format!(
            "{} mappings, {} mapped, RSS {}, PSS {}, swap {} ",
            thousands(m.mappings as u64),
            bytes_short(m.size),
            bytes_short(m.rss),
            bytes_short(m.pss),
            bytes_short(m.swap)
        )),
    ]);
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let flags = m.repeated.len().min(4) as u16;
    let [table_area, flag_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(if flags > 0 { flags * 2 } else { 0 }),
    ])
    .areas(inner);
    app.page = table_area.height.saturating_sub(1) as usize;
    let (first, mut state) = window(&mut app.maps_state, m.groups.len(), app.page);
    // Highlight symbol, the fixed columns and the spaces between columns.
    let label_w = (table_area.width as usize).saturating_sub(2 + 5 + 6 * 4 + 13 + 6);
    let rows: Vec<Row> = m
        .groups
        .iter()
        .skip(first)
        .take(app.page)
        .map(|g| {
            let row = Row::new(vec![
                Cell::from(format!("{:>5}", g.mappings)),
                Cell::from(format!("{:>6}", bytes_short(g.size))),
                Cell::from(format!("{:>6}", bytes_short(g.rss))),
                Cell::from(format!("{:>6}", bytes_short(g.pss))),
                Cell::from(format!("{:>6}", bytes_short(g.swap))),
                Cell::from(fit(&g.kind, 13)),
                Cell::from(format!(
                    "{}{}",
                    if g.repeated { "! " } else { "" },
                    fit_tail(
                        &safe(&g.label),
                        label_w.saturating_sub(if g.repeated { 2 } else { 0 })
                    )
                )),
            ]);
            if g.repeated {
                row.style(th.warn())
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(13),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(vec![
            " MAPS",
            "  SIZE",
            "   RSS",
            "   PSS",
            "  SWAP",
            "KIND",
            "BACKED BY",
        ])
        .style(th.heading()),
    )
    .row_highlight_style(th.selected())
    .highlight_symbol("> ")
    .highlight_spacing(HighlightSpacing::Always);
    f.render_stateful_widget(table, table_area, &mut state);
    if flags > 0 {
        let lines: Vec<Line> = m
            .repeated
            .iter()
            .take(4)
            .map(|msg| Line::from(vec![Span::styled(" ! ", th.warn()), Span::raw(safe(msg))]))
            .collect();
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), flag_area);
    }
}

/// The keys, in a box over the screen.
pub fn help(f: &mut Frame, area: Rect, th: Theme) {
    const KEYS: &[(&str, &str)] = &[
        ("↑↓ j k, wheel", "move; PgUp PgDn, Ctrl-u Ctrl-d, Home End"),
        ("Enter → l", "open: a type's instances, an object's chain"),
        ("Backspace ← h", "go back"),
        ("Tab", "switch between the chain and the referents"),
        ("/", "filter types by name (Enter keeps, Esc clears)"),
        ("s", "sort by size, count or growth (instances: retained)"),
        ("R", "retained sizes: what each object keeps alive"),
        ("d", "deltas since the start or the baseline"),
        ("b", "set the baseline to now (takes a census)"),
        ("r", "refresh what is on screen"),
        ("g", "garbage collector and gc.garbage"),
        ("m", "mappings, repeated ones flagged"),
        ("?", "this help (Esc closes it)"),
        ("q Esc Ctrl-C", "quit and detach"),
    ];
    let w = area.width.min(72);
    let h = (KEYS.len() as u16 + 4).min(area.height);
    let x = area.x + (area.width - w) / 2;
    let y = area.y + (area.height - h) / 2;
    let rect = Rect::new(x, y, w, h);
    let mut lines = vec![Line::raw("")];
    for (k, what) in KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!(" {k:>14}  "), th.key()),
            Span::raw(*what),
        ]));
    }
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Line::styled(" memsleuth view: keys ", th.title()))),
        rect,
    );
}
