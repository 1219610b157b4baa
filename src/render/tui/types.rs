//! The types table: count, size, share and the change since the start or
//! the baseline, sorted by size, count or growth, filtered by name.
//!
//! Growth order is `memsleuth growth`'s (steady growers first, user types
//! before the builtins that come with them), over the censuses taken since
//! the base; types that did not change follow, largest first, so the table
//! always lists everything.

use std::collections::{HashMap, HashSet};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, HighlightSpacing, Paragraph, Row, Table};

use super::app::App;
use super::widgets::{fit, safe, signed, thousands, window};
use crate::analysis::census::{Census, growth_rows_with};
use crate::render::units::{bytes, bytes_delta_short, bytes_short};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Size,
    Count,
    Growth,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Size => Sort::Count,
            Sort::Count => Sort::Growth,
            Sort::Growth => Sort::Size,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::Size => "size",
            Sort::Count => "count",
            Sort::Growth => "growth",
        }
    }
}

/// Where deltas are measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Start,
    Baseline,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeLine {
    pub name: String,
    pub count: u64,
    pub size: u64,
    pub d_count: i64,
    pub d_size: i64,
    /// Grew steadily over the censuses since the base.
    pub monotonic: bool,
}

fn diff(new: u64, old: u64) -> i64 {
    crate::render::units::delta(new, old)
}

/// The rows for censuses `snaps` (the base first, the latest last).
pub fn lines(snaps: &[&Census], sort: Sort) -> Vec<TypeLine> {
    let (Some(base), Some(cur)) = (snaps.first(), snaps.last()) else {
        return Vec::new();
    };
    let before: HashMap<&str, (u64, u64)> = base
        .rows
        .iter()
        .map(|r| (r.name.as_str(), (r.count, r.size)))
        .collect();
    let plain = |r: &crate::analysis::census::TypeRow| {
        let (c0, s0) = before.get(r.name.as_str()).copied().unwrap_or((0, 0));
        TypeLine {
            name: r.name.clone(),
            count: r.count,
            size: r.size,
            d_count: diff(r.count, c0),
            d_size: diff(r.size, s0),
            monotonic: false,
        }
    };
    let mut out: Vec<TypeLine> = Vec::with_capacity(cur.rows.len());
    if sort == Sort::Growth && snaps.len() >= 2 {
        let grown = growth_rows_with(snaps, |_| None);
        let named: HashSet<&str> = grown.iter().map(|g| g.name.as_str()).collect();
        out.extend(grown.iter().map(|g| TypeLine {
            name: g.name.clone(),
            count: g.counts.last().copied().unwrap_or(0),
            size: g.sizes.last().copied().unwrap_or(0),
            d_count: g.delta_count,
            d_size: g.delta_size,
            monotonic: g.monotonic,
        }));
        // Census rows are largest first already.
        out.extend(
            cur.rows
                .iter()
                .filter(|r| !named.contains(r.name.as_str()))
                .map(plain),
        );
        return out;
    }
    out.extend(cur.rows.iter().map(plain));
    match sort {
        Sort::Count => out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(b.size.cmp(&a.size))
                .then(a.name.cmp(&b.name))
        }),
        _ => out.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name))),
    }
    out
}

pub fn draw(f: &mut Frame, area: Rect, app: &mut App) {
    let th = app.theme;
    let Some(cur) = app.current() else {
        let text = if app.busy.is_some() {
            "Taking the first census of the heap…"
        } else {
            "No census yet: press r to take one."
        };
        f.render_widget(
            Paragraph::new(Line::styled(format!(" {text}"), th.dim()))
                .block(Block::new().borders(Borders::TOP).title(" Types ")),
            area,
        );
        return;
    };
    let c = &cur.census;
    let base_i = app.base_index();
    let censuses = app.history.len() - base_i;
    let since = match app.base {
        super::types::Base::Start => "start",
        super::types::Base::Baseline => "baseline",
    };
    let age = app.history.get(base_i).map_or(0.0, |s| cur.t - s.t);
    let mut title = vec![
        Span::styled(" Types ", th.title()),
        Span::raw(format!("{} objects {} ", thousands(c.count), bytes(c.size))),
        Span::styled("│ ", th.dim()),
        Span::raw(format!("by {} ", app.sort.name())),
        Span::styled("│ ", th.dim()),
        Span::raw(format!(
            "Δ since {since} {}, {censuses} {} ",
            crate::render::units::duration(age),
            if censuses == 1 { "census" } else { "censuses" }
        )),
    ];
    if !app.editing && !app.filter.is_empty() {
        title.push(Span::styled("│ ", th.dim()));
        title.push(Span::styled(
            format!("filter: {} ", fit(&safe(&app.filter), 20)),
            th.key(),
        ));
    }
    let block = Block::new().borders(Borders::TOP).title(Line::from(title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [filter_area, table_area] = if app.editing {
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner)
    } else {
        Layout::vertical([Constraint::Length(0), Constraint::Min(0)]).areas(inner)
    };
    if app.editing {
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(" / ", th.key()),
                Span::raw(safe(&app.filter)),
                Span::styled("▏", th.key()),
                Span::styled(
                    format!(
                        "   {} of {} types   Enter keeps, Esc clears",
                        app.visible.len(),
                        app.lines.len()
                    ),
                    th.dim(),
                ),
            ])),
            filter_area,
        );
    }
    let total = c.size;
    let note_growth = app.sort == Sort::Growth && censuses < 2;
    let header = Row::new(vec![
        Cell::from(format!("{:>9}", "COUNT")),
        Cell::from(format!("{:>8}", "ΔCOUNT")),
        Cell::from(format!("{:>8}", "SIZE")),
        Cell::from(format!("{:>8}", "ΔSIZE")),
        Cell::from(format!("{:>6}", "SIZE%")),
        Cell::from(if note_growth {
            "TYPE (growth needs a second census: press r)"
        } else {
            "TYPE"
        }),
    ])
    .style(th.heading());
    let name_w = (table_area.width as usize).saturating_sub(2 + 9 + 8 + 8 + 8 + 6 + 5);
    // Only the rows that can be on screen are built.
    app.page = table_area.height.saturating_sub(1) as usize;
    let (first, mut state) = window(&mut app.types_state, app.visible.len(), app.page);
    // With one census there is no change to show yet.
    let delta = |s: String| if censuses < 2 { String::new() } else { s };
    let delta_style = |d: i64| {
        if d > 0 {
            th.grow()
        } else if d < 0 {
            th.shrink()
        } else {
            th.dim()
        }
    };
    let rows: Vec<Row> = app
        .visible
        .iter()
        .skip(first)
        .take(app.page)
        .filter_map(|&i| app.lines.get(i))
        .map(|l| {
            let share = if total == 0 {
                0.0
            } else {
                l.size as f64 * 100.0 / total as f64
            };
            let mark = if l.monotonic { "^ " } else { "" };
            Row::new(vec![
                Cell::from(format!("{:>9}", thousands(l.count))),
                Cell::from(format!("{:>8}", delta(signed(l.d_count))))
                    .style(delta_style(l.d_count)),
                Cell::from(format!("{:>8}", bytes_short(l.size))),
                Cell::from(format!("{:>8}", delta(bytes_delta_short(l.d_size))))
                    .style(delta_style(l.d_size)),
                Cell::from(format!("{share:>5.1}%")),
                Cell::from(Line::from(vec![
                    Span::styled(mark, th.grow()),
                    Span::raw(fit(&safe(&l.name), name_w.saturating_sub(mark.len()))),
                ])),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .row_highlight_style(th.selected())
    .highlight_symbol("> ")
    .highlight_spacing(HighlightSpacing::Always);
    f.render_stateful_widget(table, table_area, &mut state);
    if app.visible.is_empty() && !app.lines.is_empty() {
        let msg = format!(" no type matches {:?}", safe(&app.filter));
        let y = table_area.y.saturating_add(1);
        if y < table_area.bottom() {
            f.render_widget(
                Paragraph::new(Line::styled(msg, th.dim())),
                Rect::new(table_area.x, y, table_area.width, 1),
            );
        }
    }
}
