//! The page shell (doctype, inline stylesheet) and small HTML builders.
//!
//! Builders take cells that are already HTML (escaped by the caller with
//! [`esc`]) so a cell can hold markup such as `<code>`; plain text goes
//! through [`esc`] first, always.

use std::fmt::Write;

use super::escape::esc;

/// The whole stylesheet. No web fonts, no external anything: the page must
/// render the same offline, attached to a ticket, years later.
const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#5b6475; --line:#d8dde6; --bg:#ffffff; --panel:#f5f7fa;
  --leak:#c62828; --ok:#2e7d32; --maybe:#b26a00; --info:#3f6fb5; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1080px; padding: 24px 20px 48px; color: var(--fg);
  background: var(--bg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 6px; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas,
  "DejaVu Sans Mono", monospace; font-size: 12.5px; }
code { background: var(--panel); padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 2px 9px; border-radius: 11px; color: #fff;
  font-weight: 600; font-size: 12.5px; vertical-align: middle; }
.verdict-leak { background: var(--leak); }
.verdict-no-leak { background: var(--ok); }
.verdict-inconclusive { background: var(--maybe); }
.kind { background: var(--info); }
.kind.informational { background: var(--muted); }
.headline { font-size: 16px; margin: 10px 0; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
  gap: 6px 18px; margin: 12px 0; padding: 10px 14px; background: var(--panel); border-radius: 6px; }
.facts div b { display: block; font-size: 11.5px; font-weight: 600; color: var(--muted);
  text-transform: uppercase; letter-spacing: .03em; }
.facts .wide { grid-column: span 2; }
.cmdline { overflow-wrap: anywhere; }
figure.chart { margin: 12px 0 18px; }
figure.chart figcaption { font-weight: 600; margin-bottom: 4px; }
svg.ms-chart { width: 100%; height: auto; max-width: 900px; display: block;
  font: 11px system-ui, sans-serif; }
svg.ms-chart .grid line { stroke: #e6e9ef; stroke-width: 1; }
svg.ms-chart .frame { fill: none; stroke: #9aa3b2; stroke-width: 1; }
svg.ms-chart text { fill: var(--muted); stroke: none; }
svg.ms-chart .empty { font-size: 14px; }
svg.ms-chart polyline { stroke-linejoin: round; stroke-linecap: round; }
ul.legend { list-style: none; padding: 0; margin: 4px 0 0 76px; display: flex;
  flex-wrap: wrap; gap: 2px 16px; }
ul.legend li { overflow-wrap: anywhere; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; }
.finding { border: 1px solid var(--line); border-left: 5px solid var(--leak);
  border-radius: 6px; padding: 12px 16px; margin: 14px 0; }
.finding.informational { border-left-color: var(--muted); }
.finding .rank { color: var(--muted); font-weight: 600; margin-right: 6px; }
.finding .rate { font-weight: 600; margin-left: 8px; }
.finding .summary { margin: 6px 0 10px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-size: 11.5px; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { overflow-wrap: anywhere; max-width: 420px; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0 10px; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; overflow-wrap: anywhere; }
.retainer { margin: 6px 0; }
.retainer code { display: inline-block; margin-top: 2px; }
details { margin: 6px 0; }
details summary { cursor: pointer; color: var(--muted); }
ul.samples li code, ul.next li code { white-space: pre-wrap; }
ul.next { margin: 6px 0 0; padding-left: 20px; }
.graph { overflow: auto; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
  background: #fff; max-height: 720px; }
.graph svg { max-width: 100%; height: auto; }
footer { margin-top: 30px; color: var(--muted); font-size: 12.5px; }
@media print { .graph { max-height: none; } body { max-width: none; } }
"#;

/// A complete document around `body` (which is HTML).
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        esc(title)
    )
}

/// How a column is aligned (numbers right, for comparing digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Text,
    Num,
    /// Free text that may be long (type names, paths): wraps anywhere.
    Name,
}

/// A table with a header; `rows` are HTML cells (escaped by the caller).
pub fn table(out: &mut String, cols: &[(&str, Col)], rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    out.push_str("<table><thead><tr>");
    for (name, col) in cols {
        let class = if *col == Col::Num {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(out, "<th{class}>{}</th>", esc(name));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = match cols.get(i).map(|c| c.1) {
                Some(Col::Num) => " class=\"num\"",
                Some(Col::Name) => " class=\"name\"",
                _ => "",
            };
            let _ = write!(out, "<td{class}>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

/// A definition list of (label, HTML value); rows with an empty value are
/// left out, so optional facts need no special casing.
pub fn kv(out: &mut String, rows: &[(&str, String)]) {
    let rows: Vec<_> = rows.iter().filter(|(_, v)| !v.is_empty()).collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("<dl class=\"kv\">");
    for (k, v) in rows {
        let _ = write!(out, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    }
    out.push_str("</dl>\n");
}

/// `text` escaped inside `<code>`.
pub fn code(text: &str) -> String {
    format!("<code>{}</code>", esc(text))
}
