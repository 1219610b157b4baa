//! Sampled instances of one type: address, size and a short repr, largest
//! first. Enter asks why the selected one is alive.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, HighlightSpacing, Paragraph, Row, Table};

use super::app::{App, Loading};
use super::widgets::{fit, safe, thousands, window};
use crate::render::units::bytes_short;

/// `  1.2M (3,401)`, or `?` for an object the graph did not have.
pub fn retained_cell(r: Option<(u64, u32)>) -> String {
    match r {
        Some((b, n)) => format!(
            "{:>9} {:>8}",
            bytes_short(b),
            format!("({})", thousands(u64::from(n)))
        ),
        None => format!("{:>9}", "?"),
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &mut App) {
    let th = app.theme;
    let (title, body): (Vec<Span>, Option<&str>) = match &app.instances {
        None | Some(Loading::Pending) => (
            vec![Span::styled(" Instances ", th.title())],
            Some("Sampling instances…"),
        ),
        Some(Loading::Failed(e)) => (
            vec![Span::styled(" Instances ", th.title())],
            Some(e.as_str()),
        ),
        Some(Loading::Ready(list)) => (
            vec![
                Span::styled(format!(" {} ", fit(&safe(&list.name), 40)), th.title()),
                Span::raw(format!(
                    "{} live, {} sampled, {} ",
                    thousands(list.live),
                    list.objects.len(),
                    if app.inst_by_retained && app.retained_of_any() {
                        "most retained first"
                    } else {
                        "largest first"
                    }
                )),
                Span::styled("│ Enter: why is it alive ", th.dim()),
            ],
            list.objects
                .is_empty()
                .then_some("None found (they may be gone since the census)."),
        ),
    };
    let block = Block::new().borders(Borders::TOP).title(Line::from(title));
    if let Some(text) = body {
        let style = if matches!(app.instances, Some(Loading::Failed(_))) {
            th.warn()
        } else {
            th.dim()
        };
        f.render_widget(
            Paragraph::new(Line::styled(format!(" {}", safe(text)), style)).block(block),
            area,
        );
        return;
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(Loading::Ready(list)) = &app.instances else {
        return;
    };
    app.page = inner.height.saturating_sub(1) as usize;
    let (first, mut state) = window(&mut app.inst_state, list.objects.len(), app.page);
    // The retained column once `R` has computed them.
    let with_retained = app.retained_of_any();
    let ret_w = if with_retained { 20 } else { 0 };
    let repr_w = (inner.width as usize).saturating_sub(2 + 14 + 9 + 2 + ret_w);
    let rows: Vec<Row> = list
        .objects
        .iter()
        .skip(first)
        .take(app.page)
        .map(|o| {
            let repr = o
                .repr
                .as_deref()
                .map_or_else(|| "(gone)".to_string(), |r| fit(&safe(r), repr_w));
            let mut cells = vec![
                Cell::from(format!("{:#x}", o.id)),
                Cell::from(format!("{:>9}", bytes_short(o.size))),
            ];
            if with_retained {
                cells.push(Cell::from(retained_cell(app.retained_of(o.id))));
            }
            cells.push(Cell::from(repr));
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![Constraint::Length(14), Constraint::Length(9)];
    let mut heads = vec!["ADDRESS", "     SIZE"];
    if with_retained {
        widths.push(Constraint::Length(18));
        heads.push("   RETAINED (OBJS)");
    }
    widths.push(Constraint::Fill(1));
    heads.push("REPR");
    let table = Table::new(rows, widths)
        .header(Row::new(heads).style(th.heading()))
        .row_highlight_style(th.selected())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    f.render_stateful_widget(table, inner, &mut state);
}
