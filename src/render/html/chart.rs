//! SVG line charts: time on x, bytes or counts on y, ticks in human units,
//! an HTML legend under the plot.
//!
//! Robust by construction rather than by the caller's care: points with a
//! non-finite coordinate break the line instead of poisoning the scale, a
//! zero range is widened, a line of one point becomes a dot, and a chart
//! with no point at all says so. The y axis fits the data (it does not
//! start at zero) because the point is to see growth of a few percent.

use std::fmt::Write;

use super::escape::esc;

/// What the y values are, for the tick labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Count,
}

/// One line: a name for the legend and the (t, value) points.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub color: &'static str,
    pub width: f64,
    pub points: Vec<(f64, f64)>,
}

impl Line {
    /// Zips times and values (the shorter wins, so ragged input is safe).
    pub fn new<T: Copy + Into<f64>>(name: &str, color: &'static str, t: &[f64], v: &[T]) -> Line {
        Line {
            name: name.to_string(),
            color,
            width: 1.8,
            points: t.iter().zip(v).map(|(&t, &v)| (t, v.into())).collect(),
        }
    }

    /// `u64`s as values (bytes and counts do not fit `Into<f64>`).
    pub fn of_u64(name: &str, color: &'static str, t: &[f64], v: &[u64]) -> Line {
        Line {
            name: name.to_string(),
            color,
            width: 1.8,
            points: t.iter().zip(v).map(|(&t, &v)| (t, v as f64)).collect(),
        }
    }
}

pub struct Chart {
    /// Element id of the figure (also prefixes nothing else: ids stay unique).
    pub id: String,
    pub title: String,
    pub unit: Unit,
    pub lines: Vec<Line>,
}

/// Line colours, distinguishable and print-safe (Tableau 10).
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;
/// Lines with at most this many points get a dot at each (censuses are
/// few, and a dot says "measured here").
const DOTS_UP_TO: usize = 16;

/// An axis: its range after rounding out to whole ticks, and the ticks.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    step: f64,
}

/// The 1, 2 or 5 × 10^k nearest `raw` (raw > 0 and finite).
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// An axis over the data range [lo, hi] (padded by `pad` of the span on
/// each side), with ticks at nice multiples of `unit` inside it (1024^k
/// for bytes, so labels read 18.4 MiB, not 19.3 M). `whole` keeps steps
/// at least 1 (counts). The range is not rounded out to whole ticks: that
/// would leave up to a third of the plot empty.
fn axis(lo: f64, hi: f64, unit: f64, whole: bool, pad: f64) -> Axis {
    // Far beyond any byte count, and keeps hi - lo finite.
    const LIMIT: f64 = 1e300;
    let (mut lo, mut hi) = (lo, hi);
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (0.0, 1.0);
    }
    if hi < lo {
        std::mem::swap(&mut lo, &mut hi);
    }
    (lo, hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    let non_negative = lo >= 0.0;
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        // A flat line: centre it in a band of ±5% (at least one unit).
        let w = (hi.abs() * 0.05).max(if whole { 1.0 } else { unit });
        lo -= w;
        hi += w;
    } else {
        lo -= span * pad;
        hi += span * pad;
    }
    if non_negative {
        lo = lo.max(0.0);
    }
    let mut step = nice_step((hi - lo) / unit / 5.0) * unit;
    if whole {
        step = step.max(1.0);
    }
    if !(step.is_finite() && step > 0.0) {
        step = hi - lo;
    }
    let first = (lo / step).ceil();
    let n = ((hi / step).floor() - first).clamp(0.0, 20.0) as usize;
    // `+ 0.0` turns -0.0 into 0.0 (no "-0 s" label).
    let ticks = (0..=n)
        .map(|i| (first + i as f64) * step + 0.0)
        .filter(|t| *t >= lo && *t <= hi)
        .collect();
    Axis {
        lo,
        hi,
        ticks,
        step,
    }
}

/// Bytes unit (1, 1024, 1024², ...) and its name for values up to `max`.
fn byte_unit(max: f64) -> (f64, &'static str) {
    const NAMES: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut u = 1.0;
    let mut k = 0;
    while max.abs() >= u * 1024.0 && k < NAMES.len() - 1 {
        u *= 1024.0;
        k += 1;
    }
    (u, NAMES[k])
}

/// Decimals needed to tell ticks `step` apart (in the label's unit).
fn decimals(step: f64) -> usize {
    if step >= 1.0 || step <= 0.0 || !step.is_finite() {
        0
    } else {
        ((-step.log10() - 1e-9).ceil() as usize).min(6)
    }
}

fn count_label(v: f64, step: f64) -> String {
    if v.abs() >= 1e6 {
        let d = decimals(step / 1e6);
        return format!("{:.d$}M", v / 1e6);
    }
    if v.abs() >= 1e4 {
        let d = decimals(step / 1e3);
        return format!("{:.d$}k", v / 1e3);
    }
    let d = decimals(step);
    format!("{v:.d$}")
}

fn seconds_label(v: f64, step: f64) -> String {
    if step >= 60.0 && (step % 60.0).abs() < 1e-9 {
        return format!("{:.0} min", v / 60.0);
    }
    let d = decimals(step);
    format!("{v:.d$} s")
}

/// Points of one line, in runs of finite ones.
type Runs = Vec<Vec<(f64, f64)>>;

/// Finite points, grouped into runs broken by non-finite ones.
fn runs(points: &[(f64, f64)]) -> Runs {
    let mut out = vec![Vec::new()];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            out.last_mut().expect("never empty").push((x, y));
        } else if !out.last().expect("never empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// The chart as a `<figure>`: caption, SVG plot, legend.
pub fn figure(c: &Chart) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\" id=\"{}\"><figcaption>{}</figcaption>",
        esc(&c.id),
        esc(&c.title)
    );
    out.push_str(&svg(c));
    out.push_str("<ul class=\"legend\">");
    for l in &c.lines {
        let _ = write!(
            out,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            l.color,
            esc(&l.name)
        );
    }
    out.push_str("</ul></figure>\n");
    out
}

/// The plot alone.
pub fn svg(c: &Chart) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"ms-chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-label=\"{}\">",
        esc(&c.title)
    );
    let line_runs: Vec<(&Line, Runs)> = c.lines.iter().map(|l| (l, runs(&l.points))).collect();
    let all = || line_runs.iter().flat_map(|(_, r)| r.iter().flatten());
    let Some((x0, x1, y0, y1)) = all().fold(None, |acc: Option<(f64, f64, f64, f64)>, &(x, y)| {
        Some(match acc {
            None => (x, x, y, y),
            Some((a, b, c, d)) => (a.min(x), b.max(x), c.min(y), d.max(y)),
        })
    }) else {
        let _ = write!(
            out,
            "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no samples</text></svg>",
            W / 2.0,
            H / 2.0
        );
        return out;
    };

    let (yunit, yname) = match c.unit {
        Unit::Bytes => byte_unit(y0.abs().max(y1.abs())),
        Unit::Count => (1.0, ""),
    };
    let xa = axis(x0, x1, 1.0, false, 0.0);
    let ya = axis(y0, y1, yunit, c.unit == Unit::Count || yunit == 1.0, 0.06);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + (x - xa.lo) / (xa.hi - xa.lo) * pw;
    let py = |y: f64| TOP + ph - (y - ya.lo) / (ya.hi - ya.lo) * ph;

    // Grid and tick labels.
    out.push_str("<g class=\"grid\">");
    for &t in &ya.ticks {
        let y = py(t);
        let label = match c.unit {
            Unit::Bytes => {
                let d = decimals(ya.step / yunit);
                format!("{:.d$} {yname}", t / yunit)
            }
            Unit::Count => count_label(t, ya.step),
        };
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&label)
        );
    }
    for &t in &xa.ticks {
        let x = px(t);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 16.0,
            esc(&seconds_label(t, xa.step))
        );
    }
    out.push_str("</g>");
    let _ = write!(
        out,
        "<rect class=\"frame\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw:.1}\" height=\"{ph:.1}\"/>\
         <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds</text>",
        LEFT + pw / 2.0,
        H - 4.0
    );

    // The lines, first listed drawn last (on top).
    for (l, rs) in line_runs.iter().rev() {
        let n: usize = rs.iter().map(Vec::len).sum();
        let _ = write!(
            out,
            "<g class=\"series\" stroke=\"{}\" fill=\"{}\"><title>{}</title>",
            l.color,
            l.color,
            esc(&l.name)
        );
        for r in rs {
            if r.len() > 1 {
                out.push_str("<polyline fill=\"none\" stroke-width=\"");
                let _ = write!(out, "{}\" points=\"", l.width);
                for (i, &(x, y)) in r.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{:.1},{:.1}", px(x), py(y));
                }
                out.push_str("\"/>");
            }
            if r.len() == 1 || n <= DOTS_UP_TO {
                for &(x, y) in r {
                    let _ = write!(
                        out,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.6\"/>",
                        px(x),
                        py(y)
                    );
                }
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(lines: Vec<Line>, unit: Unit) -> Chart {
        Chart {
            id: "c".into(),
            title: "t".into(),
            unit,
            lines,
        }
    }

    #[test]
    fn axes_have_nice_ticks_inside_the_data_range() {
        let a = axis(0.1, 10.0, 1.0, false, 0.0);
        assert_eq!((a.lo, a.hi, a.step), (0.1, 10.0, 2.0));
        assert_eq!(a.ticks, [2.0, 4.0, 6.0, 8.0, 10.0]);
        // 18.3 → 18.6 MiB: ticks every 0.05 MiB, the range padded a little.
        let mib = 1048576.0;
        let a = axis(18.3 * mib, 18.6 * mib, mib, false, 0.06);
        assert!((a.step - 0.05 * mib).abs() < 1.0, "{a:?}");
        assert!(a.lo < 18.3 * mib && a.hi > 18.6 * mib && a.hi < 18.7 * mib);
        assert!(a.ticks.len() >= 5, "{a:?}");
        // Flat counts: a band around the value, whole steps.
        let a = axis(3.0, 3.0, 1.0, true, 0.06);
        assert!(a.lo < 3.0 && a.hi > 3.0 && a.step >= 1.0, "{a:?}");
        assert!(a.ticks.contains(&3.0));
        // Padding never takes non-negative data below zero.
        let a = axis(0.0, 0.0, 1.0, false, 0.06);
        assert!(a.lo == 0.0 && a.hi > 0.0);
        let a = axis(0.0, 100.0, 1.0, true, 0.06);
        assert_eq!(a.lo, 0.0);
        // Nonsense in, something sane out.
        let a = axis(f64::NAN, f64::INFINITY, 1.0, false, 0.0);
        assert!(a.hi > a.lo && a.ticks.len() <= 21);
        for (lo, hi) in [(0.0, 1e300), (-f64::MAX, f64::MAX), (5e-300, 6e-300)] {
            let a = axis(lo, hi, 1.0, false, 0.06);
            assert!(a.hi > a.lo, "{a:?}");
            assert!(a.ticks.len() <= 21 && a.ticks.iter().all(|t| t.is_finite()));
        }
    }

    #[test]
    fn labels_in_human_units() {
        assert_eq!(byte_unit(19.0 * 1048576.0), (1048576.0, "MiB"));
        assert_eq!(byte_unit(10.0), (1.0, "B"));
        assert_eq!(seconds_label(2.0, 2.0), "2 s");
        assert_eq!(seconds_label(0.5, 0.5), "0.5 s");
        assert_eq!(seconds_label(120.0, 60.0), "2 min");
        assert_eq!(count_label(1200.0, 200.0), "1200");
        assert_eq!(count_label(25000.0, 5000.0), "25k");
        let mib = 1048576.0;
        let s = svg(&chart(
            vec![Line::new(
                "rss",
                PALETTE[0],
                &[0.0, 1.0, 2.0],
                &[18.3 * mib, 18.4 * mib, 18.6 * mib],
            )],
            Unit::Bytes,
        ));
        assert!(s.contains(">18.40 MiB<"), "{s}");
        assert!(s.contains("<polyline"));
    }

    #[test]
    fn survives_degenerate_input() {
        // Nothing at all.
        let s = svg(&chart(vec![], Unit::Bytes));
        assert!(s.contains("no samples") && !s.contains("<polyline"));
        // One point: a dot, no NaN anywhere.
        let s = svg(&chart(
            vec![Line::of_u64("one", PALETTE[1], &[5.0], &[100])],
            Unit::Count,
        ));
        assert!(s.contains("<circle") && !s.contains("NaN") && !s.contains("inf"));
        // NaN and infinities break the line but do not reach the output.
        let s = svg(&chart(
            vec![Line::new(
                "odd",
                PALETTE[2],
                &[0.0, 1.0, f64::NAN, 3.0, 4.0, 5.0],
                &[1.0, 2.0, 3.0, f64::INFINITY, 5.0, 6.0],
            )],
            Unit::Count,
        ));
        assert_eq!(s.matches("<polyline").count(), 2, "{s}");
        assert!(!s.contains("NaN") && !s.contains("inf"));
        // Ragged input: the shorter side wins.
        let l = Line::of_u64("r", PALETTE[3], &[0.0, 1.0, 2.0], &[1]);
        assert_eq!(l.points.len(), 1);
        // Every value the same, many lines.
        let s = svg(&chart(
            (0..12)
                .map(|i| Line::of_u64("flat", PALETTE[i % 10], &[0.0, 0.0], &[7, 7]))
                .collect(),
            Unit::Bytes,
        ));
        assert!(!s.contains("NaN") && s.contains("<polyline"));
    }

    #[test]
    fn legend_names_are_escaped() {
        let f = figure(&chart(
            vec![Line::of_u64(
                "<script>alert(1)</script>",
                PALETTE[0],
                &[0.0, 1.0],
                &[1, 2],
            )],
            Unit::Count,
        ));
        assert!(!f.contains("<script>"));
        assert!(f.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
