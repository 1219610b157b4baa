//! Small pieces every screen uses: the colour theme (NO_COLOR), text
//! sparklines, the header, the status line with its busy indicator, and
//! text cleaning and fitting.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, TableState};

use super::app::App;
use crate::analysis::refgraph::explain::clean;
use crate::render::units::bytes_short;

/// Longest piece of target text drawn in a cell (chars).
pub const CELL_CAP: usize = 400;

/// Styles, with or without colour. Without colour only modifiers are used
/// (bold, reversed, underlined), so selection and warnings stay visible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colour unless NO_COLOR is set to anything non-empty (no-color.org).
    pub fn from_env() -> Theme {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn heading(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub fn grow(self) -> Style {
        self.fg(Color::Red)
    }

    pub fn shrink(self) -> Style {
        self.fg(Color::Green)
    }

    /// Problems: repeated mappings, growing garbage, errors.
    pub fn warn(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn good(self) -> Style {
        self.fg(Color::Green)
    }

    pub fn spark(self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn key(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }
}

/// Target text made safe for the terminal (no control characters) and
/// bounded.
pub fn safe(s: &str) -> String {
    clean(s, CELL_CAP)
}

/// `s` cut to `width` columns keeping its end (for paths).
pub fn fit_tail(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::from("…");
    out.extend(s.chars().skip(n - (width - 1)));
    out
}

/// `s` cut to `width` columns with an ellipsis.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Scrolls a list of `len` rows so that the selection is in a window of
/// `page` rows; returns the first row to build and the state to draw the
/// window with (only visible rows are ever built).
pub fn window(state: &mut TableState, len: usize, page: usize) -> (usize, TableState) {
    let page = page.max(1);
    let sel = state.selected().unwrap_or(0).min(len.saturating_sub(1));
    let mut off = state.offset();
    if sel < off {
        off = sel;
    } else if sel >= off + page {
        off = sel + 1 - page;
    }
    off = off.min(len.saturating_sub(page));
    state.select(Some(sel));
    *state.offset_mut() = off;
    (off, TableState::default().with_selected(Some(sel - off)))
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values as bar characters, scaled between their min and
/// max (a flat series is a flat low line).
pub fn sparkline(values: &[u64], width: usize) -> String {
    let tail = &values[values.len().saturating_sub(width)..];
    let (Some(lo), Some(hi)) = (tail.iter().min(), tail.iter().max()) else {
        return String::new();
    };
    let span = hi - lo;
    tail.iter()
        .map(|v| {
            if span == 0 {
                BARS[0]
            } else {
                let i = ((v - lo) as u128 * 7 / span as u128) as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

/// Signed thousands: "+1,205", "-3", "0".
pub fn signed(d: i64) -> String {
    match d {
        0 => "0".into(),
        d if d > 0 => format!("+{}", thousands(d as u64)),
        d => format!("-{}", thousands(d.unsigned_abs())),
    }
}

pub use crate::render::census::thousands;

/// Header: who, how, and the process counters with sparklines (2 lines).
pub fn header(f: &mut Frame, area: Rect, app: &App) {
    let th = app.theme;
    let t = &app.target;
    let last = app.proc.back().copied().unwrap_or_default();
    // Most telling first: a narrow terminal cuts the end of the line.
    let mut first = vec![
        Span::styled(format!(" pid {} ", t.pid), th.title()),
        Span::styled("· ", th.dim()),
        Span::raw(format!("Python {} ", safe(&t.python))),
        Span::styled("· ", th.dim()),
        Span::raw(format!("thr {} ", last.threads)),
        Span::styled("· ", th.dim()),
        Span::raw(format!(
            "fds {} ",
            last.fds.map_or("?".to_string(), |n| n.to_string())
        )),
        Span::styled("· ", th.dim()),
    ];
    match app.gc_line {
        Some(g) => {
            first.push(Span::raw("gc "));
            first.push(if g.enabled {
                Span::styled("on", th.good())
            } else {
                Span::styled("OFF", th.warn())
            });
            first.push(Span::styled(" · ", th.dim()));
            first.push(Span::raw("garbage "));
            let style = if g.garbage > 0 { th.warn() } else { th.good() };
            first.push(Span::styled(thousands(g.garbage), style));
        }
        None => first.push(Span::styled("gc ?", th.dim())),
    }
    first.push(Span::styled(" · ", th.dim()));
    first.push(Span::raw(format!("via {}", safe(&t.method))));
    // Three counters share the second line; each gets a third of it.
    let each = (area.width as usize / 3).max(12);
    let spark_w = each.saturating_sub(14).clamp(1, 60);
    let series = |get: fn(&super::data::ProcPoint) -> u64| -> Vec<u64> {
        app.proc.iter().map(get).collect()
    };
    let mut second = vec![Span::raw(" ")];
    for (name, values) in [
        ("VIRT", series(|p| p.virt)),
        ("RES", series(|p| p.res)),
        ("SHR", series(|p| p.shr)),
    ] {
        let now = values.last().copied().unwrap_or(0);
        second.push(Span::styled(format!("{name} "), th.heading()));
        second.push(Span::raw(format!("{:>6} ", bytes_short(now))));
        let spark = sparkline(&values, spark_w);
        let pad = spark_w.saturating_sub(spark.chars().count());
        second.push(Span::styled(spark, th.spark()));
        second.push(Span::raw(" ".repeat(pad + 1)));
    }
    f.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        area,
    );
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Bottom line: key hints on the left; the busy indicator or the last
/// message on the right.
pub fn status(f: &mut Frame, area: Rect, app: &App, hints: &[(&str, &str)]) {
    let th = app.theme;
    let mut right: Vec<Span> = Vec::new();
    if let Some(b) = &app.busy {
        let frame = ((app.now * 10.0).max(0.0) as usize) % SPINNER.len();
        let mut text = format!(
            "{} {} {:.1}s",
            SPINNER[frame],
            b.label,
            (app.now - b.since).max(0.0)
        );
        if b.queued > 0 {
            text.push_str(&format!(" (+{} queued)", b.queued));
        }
        right.push(Span::styled(text, th.key()));
    } else if let Some(m) = app.message.as_ref().filter(|m| m.live(app.now)) {
        let style = if m.error { th.warn() } else { th.dim() };
        right.push(Span::styled(safe(&m.text), style));
    }
    let right_w: usize = right.iter().map(|s| s.content.chars().count()).sum();
    let room = (area.width as usize).saturating_sub(right_w + 1);
    let mut left: Vec<Span> = vec![Span::raw(" ")];
    let mut used = 1;
    for (k, what) in hints {
        let w = k.chars().count() + what.chars().count() + 2;
        if used + w > room {
            break;
        }
        left.push(Span::styled(k.to_string(), th.key()));
        left.push(Span::raw(format!(" {what} ")));
        used += w;
    }
    if right_w > 0 {
        // A message longer than the line keeps its start.
        let avail = (area.width as usize).saturating_sub(used);
        if right_w > avail {
            let text: String = right.iter().map(|s| s.content.as_ref()).collect();
            let style = right[0].style;
            right = vec![Span::styled(fit(&text, avail), style)];
        } else {
            left.push(Span::raw(" ".repeat(avail - right_w)));
        }
    }
    left.extend(right);
    f.render_widget(Paragraph::new(Line::from(left)), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_between_min_and_max() {
        assert_eq!(sparkline(&[], 5), "");
        assert_eq!(sparkline(&[7, 7, 7], 5), "▁▁▁");
        assert_eq!(sparkline(&[0, 7, 14], 5), "▁▄█");
        assert_eq!(sparkline(&[0, 1, 2, 3, 100], 2), "▁█");
        assert_eq!(sparkline(&[0, u64::MAX], 2), "▁█");
    }

    #[test]
    fn fits_and_cleans() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(fit_tail("/a/b/c.so", 5), "…c.so");
        assert_eq!(fit_tail("c.so", 5), "c.so");
        assert_eq!(safe("a\x1b[2Jb"), "a\\x1b[2Jb");
    }
}
