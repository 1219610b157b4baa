//! Sampled instances of one type: address, size and a short repr, largest
//! first. Enter asks why the selected one is alive.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, HighlightSpacing, Paragraph, Row, Table};

use super::app::{App, Loading};
use super::widgets::{fit, safe, thousands, window};
use crate::render::units::bytes_short;

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
                    "{} live, {} sampled, largest first ",
                    thousands(list.live),
                    list.objects.len()
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
    let repr_w = (inner.width as usize).saturating_sub(2 + 14 + 9 + 2);
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
            Row::new(vec![
                Cell::from(format!("{:#x}", o.id)),
                Cell::from(format!("{:>9}", bytes_short(o.size))),
                Cell::from(repr),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(14),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(vec!["ADDRESS", "     SIZE", "REPR"]).style(th.heading()))
    .row_highlight_style(th.selected())
    .highlight_symbol("> ")
    .highlight_spacing(HighlightSpacing::Always);
    f.render_stateful_widget(table, inner, &mut state);
}
