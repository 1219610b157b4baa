//! One object: its repr, its retainer chain (why it is alive, root first)
//! and its referents (what it keeps alive). Both lists are navigable: Enter
//! opens the selected object the same way, Tab switches lists.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap,
};

use super::app::{App, Loading, Pane};
use super::data::{Chain, Referents, RetainedSizes};
use super::instances::retained_cell;
use super::widgets::{Theme, fit, safe, thousands, window};
use crate::render::units::bytes_short;

pub fn draw(f: &mut Frame, area: Rect, app: &mut App) {
    let th = app.theme;
    let Some(o) = app.objects.last() else {
        return;
    };
    let (id, focus) = (o.id, o.focus);
    let refs = app.referents.get(&id).cloned();
    let chain = app.chains.get(&id).cloned();
    let (size, repr, type_name) = match &refs {
        Some(Loading::Ready(r)) if r.found => (
            Some(r.size),
            r.repr.clone(),
            Some(r.node.type_name.clone()).filter(|t| !t.is_empty()),
        ),
        _ => (None, None, None),
    };
    let type_name = type_name.unwrap_or_else(|| o.title.clone());
    let mut title = vec![
        Span::styled(format!(" {id:#x} "), th.title()),
        Span::raw(format!("{} ", fit(&safe(&type_name), 40))),
    ];
    if let Some(s) = size {
        title.push(Span::raw(format!("· {} ", bytes_short(s))));
    }
    match (app.retained_of_any(), app.retained_of(id)) {
        (true, Some((b, n))) => title.push(Span::raw(format!(
            "· retains {} ({} objects) ",
            bytes_short(b),
            thousands(u64::from(n))
        ))),
        (true, None) => title.push(Span::styled("· retained size unknown ", th.dim())),
        (false, _) => {}
    }
    if app.objects.len() > 1 {
        title.push(Span::styled(
            format!("│ depth {} (Backspace goes back) ", app.objects.len()),
            th.dim(),
        ));
    }
    let block = Block::new().borders(Borders::TOP).title(Line::from(title));
    let inner = block.inner(area);
    f.render_widget(block, area);

    let chain_rows = match &chain {
        Some(Loading::Ready(c)) => c.steps.len() as u16 + 2,
        _ => 2,
    };
    let [repr_area, chain_area, refs_area] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(chain_rows.max(3).min(inner.height / 2)),
        Constraint::Min(3),
    ])
    .areas(inner);
    let repr_line = match (&refs, repr) {
        (_, Some(r)) => Line::raw(format!(" {}", safe(&r))),
        (Some(Loading::Pending), None) => Line::styled(" reading the object…", th.dim()),
        (Some(Loading::Failed(e)), None) => Line::styled(format!(" {}", safe(e)), th.warn()),
        _ => Line::styled(" (gone: freed since it was listed)", th.dim()),
    };
    f.render_widget(
        Paragraph::new(repr_line).wrap(Wrap { trim: false }),
        repr_area,
    );

    let retained = match &app.retained {
        Some(Loading::Ready(s)) => Some(std::sync::Arc::clone(s)),
        _ => None,
    };
    let Some(frame) = app.objects.last_mut() else {
        return;
    };
    let page_chain = chain_area.height.saturating_sub(1) as usize;
    draw_chain(
        f,
        chain_area,
        th,
        chain.as_ref(),
        &mut frame.chain_state,
        focus == Pane::Chain,
    );
    draw_refs(
        f,
        refs_area,
        th,
        refs.as_ref(),
        &mut frame.ref_state,
        focus == Pane::Referents,
        retained.as_deref(),
    );
    app.page = if focus == Pane::Chain {
        page_chain
    } else {
        refs_area.height.saturating_sub(2) as usize
    };
}

fn section_title<'a>(th: Theme, name: &'a str, rest: String, focused: bool) -> Line<'a> {
    let style = if focused { th.key() } else { th.heading() };
    Line::from(vec![
        Span::styled(format!(" {name} "), style),
        Span::raw(rest),
    ])
}

fn draw_chain(
    f: &mut Frame,
    area: Rect,
    th: Theme,
    chain: Option<&Loading<Chain>>,
    state: &mut TableState,
    focused: bool,
) {
    let c = match chain {
        Some(Loading::Ready(c)) => c,
        other => {
            let text = match other {
                Some(Loading::Failed(e)) => format!("  {}", safe(e)),
                _ => "  walking the reference graph…".to_string(),
            };
            f.render_widget(
                Paragraph::new(vec![
                    section_title(th, "Why alive", String::new(), focused),
                    Line::styled(text, th.dim()),
                ]),
                area,
            );
            return;
        }
    };
    let verdict = match c.status.as_str() {
        "rooted" | "held-from-c" => format!("held by {}", safe(&c.held_by)),
        _ => safe(&c.held_by),
    };
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    f.render_widget(
        Paragraph::new(section_title(th, "Why alive:", verdict, focused)),
        head,
    );
    let label_w = c
        .steps
        .iter()
        .filter_map(|s| s.label.as_ref())
        .map(|l| l.chars().count().min(28))
        .max()
        .unwrap_or(0)
        .max(4) as u16;
    let (first, mut win) = window(state, c.steps.len(), body.height as usize);
    let last = c.steps.len().saturating_sub(1);
    let rows: Vec<Row> = c
        .steps
        .iter()
        .enumerate()
        .skip(first)
        .take(body.height as usize)
        .map(|(i, s)| {
            let label = s
                .label
                .as_deref()
                .map_or(String::new(), |l| fit(&safe(l), label_w as usize));
            let mut name = safe(&s.name);
            if let Some(n) = s.len {
                name.push_str(&format!(" ({} items)", thousands(n.max(0) as u64)));
            }
            let mut spans = vec![Span::raw(name)];
            if i == last {
                spans.push(Span::styled("  ← this object", th.key()));
            }
            Row::new(vec![
                Cell::from(Span::styled(label, th.dim())),
                Cell::from(Line::from(spans)),
            ])
        })
        .collect();
    if !focused {
        win.select(None);
    }
    let table = Table::new(rows, [Constraint::Length(label_w), Constraint::Fill(1)])
        .row_highlight_style(th.selected())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    f.render_stateful_widget(table, body, &mut win);
}

#[allow(clippy::too_many_arguments)]
fn draw_refs(
    f: &mut Frame,
    area: Rect,
    th: Theme,
    refs: Option<&Loading<Referents>>,
    state: &mut TableState,
    focused: bool,
    retained: Option<&RetainedSizes>,
) {
    let r = match refs {
        Some(Loading::Ready(r)) => r,
        other => {
            let text = match other {
                Some(Loading::Failed(e)) => format!("  {}", safe(e)),
                _ => "  reading the object…".to_string(),
            };
            f.render_widget(
                Paragraph::new(vec![
                    section_title(th, "Refers to", String::new(), focused),
                    Line::styled(text, th.dim()),
                ]),
                area,
            );
            return;
        }
    };
    let count = if r.total as usize > r.referents.len() {
        format!("{} of {}", r.referents.len(), thousands(r.total))
    } else {
        thousands(r.referents.len() as u64)
    };
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    f.render_widget(
        Paragraph::new(section_title(
            th,
            "Refers to",
            format!("({count})"),
            focused,
        )),
        head,
    );
    if !r.found || r.referents.is_empty() {
        f.render_widget(Paragraph::new(Line::styled("  nothing", th.dim())), body);
        return;
    }
    let page = body.height.saturating_sub(1) as usize;
    let (first, mut win) = window(state, r.referents.len(), page);
    let ret_w = if retained.is_some() { 19 } else { 0 };
    let repr_w = (body.width as usize).saturating_sub(2 + 18 + 8 + 18 + 3 + ret_w);
    let rows: Vec<Row> = r
        .referents
        .iter()
        .skip(first)
        .take(page)
        .map(|x| {
            let label = if x.kind == "unknown" || x.label == "?" {
                "?".to_string()
            } else {
                safe(&x.label)
            };
            let mut cells = vec![
                Cell::from(fit(&label, 18)),
                Cell::from(format!("{:>8}", bytes_short(x.size))),
            ];
            if let Some(s) = retained {
                cells.push(Cell::from(retained_cell(s.get(x.id))));
            }
            cells.push(Cell::from(fit(&safe(&x.node.type_name), 18)));
            cells.push(Cell::from(fit(
                &safe(x.repr.as_deref().unwrap_or("")),
                repr_w,
            )));
            Row::new(cells)
        })
        .collect();
    if !focused {
        win.select(None);
    }
    let mut widths = vec![Constraint::Length(18), Constraint::Length(8)];
    let mut heads = vec!["REFERENCE", "    SIZE"];
    if retained.is_some() {
        widths.push(Constraint::Length(18));
        heads.push("   RETAINED (OBJS)");
    }
    widths.extend([Constraint::Length(18), Constraint::Fill(1)]);
    heads.extend(["TYPE", "REPR"]);
    let table = Table::new(rows, widths)
        .header(Row::new(heads).style(th.heading()))
        .row_highlight_style(th.selected())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    f.render_stateful_widget(table, body, &mut win);
}
