//! Escaping for HTML text, attribute values and inline SVG text.
//!
//! One escaper serves all three: the five markup characters become
//! entities (so the result is safe in text and in quoted attributes, in
//! HTML and in SVG alike), and control characters, which HTML parsers drop
//! or replace silently, are shown as visible `\xNN` escapes instead so a
//! name with a stray byte still reads as what it is.

/// `s` safe for HTML/SVG text and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            // Noncharacters and controls (C0, DEL, C1) are invalid or
            // invisible in HTML; show them.
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => {
                let v = c as u32;
                if v <= 0xff {
                    out.push_str(&format!("\\x{v:02x}"));
                } else {
                    out.push_str(&format!("\\u{v:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// [`esc`] of the first `max` characters, with `…` when cut.
pub fn esc_cap(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return esc(s);
    }
    let cut: String = s.chars().take(max).collect();
    format!("{}…", esc(&cut))
}

/// Tags an inline retainer graph may use: what graphviz and layout-rs
/// emit. Anything else (script, foreignObject, iframe, image, ...) makes
/// the whole SVG rejected.
const SVG_TAGS: &[&str] = &[
    "svg", "g", "title", "desc", "defs", "marker", "style", "polygon", "polyline", "path",
    "ellipse", "circle", "rect", "line", "text", "tspan", "textpath", "clippath", "a",
];

/// The retainer graph made fit to inline: everything before `<svg` (XML
/// prolog, DOCTYPE, comments) and after the last `</svg>` is cut, comments
/// are removed, and the result is checked against an allowlist of tags and
/// attributes (no event handlers, links only to `#fragments`, no CSS
/// `url()`/`@import` to elsewhere). None when it does not pass: the page
/// then says the graph was left out rather than inline something active.
///
/// The SVG comes from graphviz or layout-rs, which escape label text, so a
/// tag scanner that honours quoted attribute values is enough here; this
/// is a second line of defence, not an SVG parser.
pub fn inline_svg(svg: &str) -> Option<String> {
    let start = svg.find("<svg")?;
    let end = svg.rfind("</svg>")? + "</svg>".len();
    if end <= start {
        return None;
    }
    let body = strip_comments(&svg[start..end])?;
    check_tags(&body)?;
    let lower = body.to_ascii_lowercase();
    if lower.contains("@import") || lower.contains("javascript:") {
        return None;
    }
    // CSS url(...) only to local ids (markers, clip paths).
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("url(") {
        rest = &rest[i + 4..];
        let target = rest.trim_start_matches(['\'', '"', ' ']);
        if !target.starts_with('#') {
            return None;
        }
    }
    Some(body)
}

/// `s` without `<!-- ... -->` comments; None on an unterminated one.
fn strip_comments(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let j = after.find("-->")?;
        rest = &after[j + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Every tag's name in [`SVG_TAGS`], every attribute safe.
fn check_tags(s: &str) -> Option<()> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        i += 1;
        if b.get(i) == Some(&b'/') {
            i += 1;
        }
        // `<!` (DOCTYPE, CDATA) and `<?` are not expected inside.
        let name_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b':' || b[i] == b'-') {
            i += 1;
        }
        let name = s[name_start..i].to_ascii_lowercase();
        if !SVG_TAGS.contains(&name.as_str()) {
            return None;
        }
        // Attributes up to the closing `>`, quotes respected.
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            match b.get(i) {
                None => return None,
                Some(b'>') => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            let a_start = i;
            while i < b.len() && !b"=>/ \t\r\n".contains(&b[i]) {
                i += 1;
            }
            let attr = s[a_start..i].to_ascii_lowercase();
            if attr.is_empty() {
                return None;
            }
            // `name = "v"`: XML allows space around `=` (layout-rs writes it).
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let mut value = "";
            if b.get(j) == Some(&b'=') {
                i = j + 1;
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                let q = *b.get(i)?;
                if q != b'"' && q != b'\'' {
                    return None;
                }
                let v_start = i + 1;
                let len = s[v_start..].find(q as char)?;
                value = &s[v_start..v_start + len];
                i = v_start + len + 1;
            }
            let local = attr.rsplit(':').next().unwrap_or("");
            if local.starts_with("on") {
                return None;
            }
            if local == "href" && !value.starts_with('#') {
                return None;
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            esc("<script>alert('x\"&')</script>"),
            "&lt;script&gt;alert(&#39;x&quot;&amp;&#39;)&lt;/script&gt;"
        );
        assert_eq!(esc("a\u{0}b\u{7f}c\u{9b}"), "a\\x00b\\x7fc\\x9b");
        assert_eq!(esc("tab\tnl\n"), "tab\tnl\n");
        assert_eq!(esc_cap("abcdef", 3), "abc…");
        assert_eq!(esc_cap("a<c", 3), "a&lt;c");
    }

    #[test]
    fn inlines_graphviz_output_without_prolog() {
        let svg = r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"
 "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<!-- Generated by graphviz version 2.43.0 (0) -->
<svg width="62pt" height="44pt" viewBox="0 0 62 44" xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">
<g id="graph0" class="graph"><title>memsleuth_why</title>
<!-- n0 -->
<g id="node1" class="node"><title>n0</title>
<polygon fill="white" stroke="black" points="54,-36 0,-36 0,0 54,0 54,-36"/>
<text text-anchor="middle" x="27" y="-14.3">&lt;script&gt; a &gt; b</text>
</g></g>
</svg>
"#;
        let out = inline_svg(svg).expect("accepted");
        assert!(out.starts_with("<svg "));
        assert!(out.ends_with("</svg>"));
        assert!(!out.contains("<?xml") && !out.contains("DOCTYPE") && !out.contains("<!--"));
        assert!(out.contains("&lt;script&gt;"));
    }

    #[test]
    fn inlines_layout_rs_output() {
        let svg = r##"<?xml version="1.0" encoding="UTF-8" standalone="no"?><svg width="10" height="10" viewBox="0 0 10 10" xmlns="http://www.w3.org/2000/svg">
<defs><marker id="endarrow" markerWidth="10" markerHeight="7" refX="10" refY="3.5" orient="auto"><polygon points="0 0, 10 3.5, 0 7" fill="context-stroke" /></marker></defs><style>
.a12 { font-size: 12px; font-family: Times, serif; }
</style>
<g ><path id="arrow0" d="M 1 1 C 2 2, 3 3, 4 4 " stroke="black" marker-end="url(#endarrow)" fill="transparent" /></g>
<text><tspan x = "5" dy="1.0em">x &gt; y</tspan></text>
<text><textPath href="#arrow0" startOffset="50%" class="a12">x &gt; y</textPath></text></svg>"##;
        assert!(inline_svg(svg).is_some());
    }

    #[test]
    fn rejects_active_content() {
        for bad in [
            r#"<svg><script>alert(1)</script></svg>"#,
            r#"<svg onload="alert(1)"></svg>"#,
            r#"<svg><a xlink:href="https://example.invalid/">x</a></svg>"#,
            r#"<svg><image href="http://example.invalid/x.png"/></svg>"#,
            r#"<svg><foreignObject><div/></foreignObject></svg>"#,
            r#"<svg><style>@import "x.css";</style></svg>"#,
            r#"<svg><rect fill="url(http://x/y)"/></svg>"#,
            r#"<svg><rect width="1></svg>"#,
            r#"<svg><a href = "https://example.invalid/">x</a></svg>"#,
            r#"<svg onload = "alert(1)"></svg>"#,
            r#"<svg><!-- never closed </svg>"#,
            "no svg here",
        ] {
            assert_eq!(inline_svg(bad), None, "{bad}");
        }
        // Text that merely looks like an attribute is fine.
        assert!(inline_svg("<svg><text>x onload=1 javascript</text></svg>").is_some());
    }
}
