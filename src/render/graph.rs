//! Reference graphs as DOT and SVG.
//!
//! DOT is written by hand with every label quoted by [`dot_string`], which is
//! safe for any text (labels come from the target: reprs with quotes,
//! backslashes, newlines, `<>`, control characters). SVG comes from
//! graphviz's `dot -Tsvg` when it is on PATH, else from the pure-Rust
//! `layout-rs` crate; `MEMSLEUTH_NO_GRAPHVIZ=1` forces the built-in layout.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Environment variable: set (to anything but `0` or empty) to never run
/// graphviz, even when `dot` is installed.
pub const NO_GRAPHVIZ_ENV: &str = "MEMSLEUTH_NO_GRAPHVIZ";
/// Longest label line kept, in chars.
const LABEL_CAP: usize = 120;
/// How long `dot` may take.
const DOT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Where a retainer chain starts (module, class, frame, ...).
    Root,
    /// An object we were asked about.
    Target,
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Lines of the label (each is capped and cleaned when written).
    pub lines: Vec<String>,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub label: String,
}

/// A small directed graph to draw: edges go from referrer to referent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    pub title: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// Which renderer produced an SVG (defined with `why`'s report data).
pub use crate::analysis::refgraph::report::Engine;

/// One label line made printable: control characters (and U+FFFE/U+FFFF,
/// not allowed in XML) shown as escapes, capped to [`LABEL_CAP`] chars.
fn label_line(s: &str) -> String {
    crate::analysis::refgraph::explain::escape_controls(s, LABEL_CAP, |c| {
        c == '\u{fffe}' || c == '\u{ffff}'
    })
}

/// Escapes one label line for a DOT double-quoted string: backslash and
/// quote escaped, `&` as an entity (graphviz decodes entities in labels),
/// control characters as visible escapes.
fn dot_escape_into(out: &mut String, line: &str) {
    for c in label_line(line).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
}

/// `lines` as one DOT double-quoted string (lines joined by `\n`, centred).
pub fn dot_string_lines(lines: &[String]) -> String {
    let mut out = String::from("\"");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\\n");
        }
        dot_escape_into(&mut out, l);
    }
    out.push('"');
    out
}

/// Any text as one DOT double-quoted string (newlines inside it are shown
/// as `\n`, not broken).
pub fn dot_string(s: &str) -> String {
    dot_string_lines(std::slice::from_ref(&s.to_string()))
}

/// The graph in DOT, like objgraph's `show_backrefs`: referrers above the
/// objects they hold, roots green, targets orange.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::new();
    out.push_str("digraph memsleuth_why {\n");
    out.push_str("  graph [label=");
    out.push_str(&dot_string(&g.title));
    out.push_str(", labelloc=t, fontname=\"Helvetica\"];\n");
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\", fontsize=11];\n",
    );
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    for (i, n) in g.nodes.iter().enumerate() {
        let fill = match n.role {
            Role::Root => ", fillcolor=\"#b3e2cd\"",
            Role::Target => ", fillcolor=\"#fdcdac\"",
            Role::Plain => "",
        };
        out.push_str(&format!(
            "  n{i} [label={}{fill}];\n",
            dot_string_lines(&n.lines)
        ));
    }
    for e in &g.edges {
        if e.from >= g.nodes.len() || e.to >= g.nodes.len() {
            continue;
        }
        out.push_str(&format!(
            "  n{} -> n{} [label={}];\n",
            e.from,
            e.to,
            dot_string(&e.label)
        ));
    }
    out.push_str("}\n");
    out
}

/// graphviz's `dot`, unless [`NO_GRAPHVIZ_ENV`] says not to use it.
pub fn graphviz() -> Option<PathBuf> {
    if std::env::var_os(NO_GRAPHVIZ_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("dot"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// SVG with graphviz when available, else the built-in layout.
pub fn to_svg(g: &Graph) -> anyhow::Result<(String, Engine)> {
    match graphviz() {
        Some(dot) => Ok((svg_with_graphviz(&dot, &to_dot(g))?, Engine::Graphviz)),
        None => Ok((svg_builtin(g)?, Engine::Builtin)),
    }
}

/// Runs `dot -Tsvg` on `dot_text`.
pub fn svg_with_graphviz(dot: &Path, dot_text: &str) -> anyhow::Result<String> {
    let mut child = Command::new(dot)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", dot.display()))?;
    let mut stdin = child.stdin.take().context("dot stdin")?;
    let input = dot_text.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().context("dot stdout")?;
    let mut stderr = child.stderr.take().context("dot stderr")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + DOT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} took longer than {DOT_TIMEOUT:?}", dot.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "{} -Tsvg failed ({status}): {}",
            dot.display(),
            String::from_utf8_lossy(&err).trim()
        );
    }
    String::from_utf8(out).context("dot wrote something that is not UTF-8")
}

/// The pure-Rust layout (layout-rs). Its panics become errors.
pub fn svg_builtin(g: &Graph) -> anyhow::Result<String> {
    let g = g.clone();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || layout_svg(&g));
    std::panic::set_hook(prev);
    result.map_err(|_| {
        anyhow::anyhow!(
            "the built-in graph layout failed on this graph; \
             install graphviz (`dot`) or use --format dot"
        )
    })
}

fn layout_svg(g: &Graph) -> String {
    use layout::backends::svg::SVGWriter;
    use layout::core::base::Orientation;
    use layout::core::color::Color;
    use layout::core::style::StyleAttr;
    use layout::std_shapes::render::get_shape_size;
    use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
    use layout::topo::layout::VisualGraph;

    let dir = Orientation::TopToBottom;
    let mut vg = VisualGraph::new(dir);
    let mut handles = Vec::with_capacity(g.nodes.len());
    let font = 12;
    for n in &g.nodes {
        let text: Vec<String> = n.lines.iter().map(|l| label_line(l)).collect();
        let text = if text.is_empty() {
            " ".to_string()
        } else {
            text.join("\n")
        };
        let shape = ShapeKind::new_box(&text);
        let fill = match n.role {
            Role::Root => "#b3e2cd",
            Role::Target => "#fdcdac",
            Role::Plain => "white",
        };
        let look = StyleAttr::new(Color::fast("black"), 1, Some(Color::fast(fill)), 4, font);
        let size = get_shape_size(dir, &shape, font, false);
        handles.push(vg.add_node(Element::create(shape, look, dir, size)));
    }
    for e in &g.edges {
        if e.from >= handles.len() || e.to >= handles.len() || e.from == e.to {
            continue;
        }
        let arrow = Arrow::simple(&label_line(&e.label));
        vg.add_edge(arrow, handles[e.from], handles[e.to]);
    }
    let mut svg = SVGWriter::new();
    vg.do_it(false, false, false, &mut svg);
    svg.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one DOT double-quoted string starting at `s[0] == '"'` the way
    /// graphviz's lexer does (`\"` is a quote, `\\` stays two backslashes,
    /// backslash-newline is dropped); returns (content, rest after the quote).
    fn lex_quoted(s: &str) -> Option<(String, &str)> {
        let mut chars = s.char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Some((out, &s[i + 1..])),
                '\\' => match chars.next()? {
                    (_, '"') => out.push('"'),
                    (_, '\n') => {}
                    (_, o) => {
                        out.push('\\');
                        out.push(o);
                    }
                },
                c => out.push(c),
            }
        }
        None
    }

    /// What graphviz shows for a lexed label: escString (`\n` a line break,
    /// `\\` a backslash) and the `&amp;` entity, left to right.
    fn shown(lexed: &str) -> String {
        let mut out = String::new();
        let mut chars = lexed.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('\\') => out.push('\\'),
                    Some(o) => {
                        out.push('\\');
                        out.push(o);
                    }
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        out.replace("&amp;", "&")
    }

    #[test]
    fn quoting_examples() {
        assert_eq!(dot_string("a\"b"), r#""a\"b""#);
        assert_eq!(dot_string("ends\\"), r#""ends\\""#);
        assert_eq!(dot_string("<b>&"), r#""<b>&amp;""#);
        assert_eq!(dot_string("x\ny"), r#""x\\ny""#);
        assert_eq!(dot_string("\u{7}"), r#""\\x07""#);
    }

    #[test]
    fn builtin_svg_has_the_labels() {
        let g = Graph {
            title: "t".into(),
            nodes: vec![
                Node {
                    lines: vec!["module app".into()],
                    role: Role::Root,
                },
                Node {
                    lines: vec!["app.__dict__".into(), "dict".into()],
                    role: Role::Plain,
                },
                Node {
                    lines: vec!["app.UserSession <&>".into()],
                    role: Role::Target,
                },
            ],
            edges: vec![
                Edge {
                    from: 0,
                    to: 1,
                    label: "__dict__".into(),
                },
                Edge {
                    from: 1,
                    to: 2,
                    label: "['<x>']".into(),
                },
            ],
        };
        let svg = svg_builtin(&g).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("module app"));
        assert!(svg.contains("app.UserSession &lt;&amp;&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One node, no edges; and an empty graph.
        let one = Graph {
            nodes: vec![g.nodes[0].clone()],
            ..Graph::default()
        };
        assert!(svg_builtin(&one).unwrap().contains("module app"));
        let _ = svg_builtin(&Graph::default());
    }

    #[test]
    fn dot_refers_only_to_declared_nodes() {
        let g = Graph {
            title: "x".into(),
            nodes: vec![Node {
                lines: vec!["a".into()],
                role: Role::Plain,
            }],
            edges: vec![Edge {
                from: 0,
                to: 5,
                label: "bad".into(),
            }],
        };
        assert!(!to_dot(&g).contains("n5"));
    }

    proptest::proptest! {
        #[test]
        fn any_label_round_trips_through_the_dot_lexer(s in ".{0,40}", t in proptest::collection::vec(proptest::char::any(), 0..40)) {
            let t: String = t.into_iter().collect();
            for input in [s, t] {
                let quoted = dot_string(&input);
                let (lexed, rest) = lex_quoted(&quoted).expect("string ends");
                proptest::prop_assert_eq!(rest, "");
                // Nothing that graphviz would read as a line break or an
                // escape other than the ones we wrote.
                proptest::prop_assert!(!lexed.contains('\n') && !lexed.contains('\r'));
                proptest::prop_assert!(!lexed.chars().any(|c| c.is_control()));
                proptest::prop_assert_eq!(shown(&lexed), label_line(&input));
                // In a whole document too.
                let g = Graph {
                    title: input.clone(),
                    nodes: vec![Node { lines: vec![input.clone(), input.clone()], role: Role::Root }],
                    edges: vec![Edge { from: 0, to: 0, label: input.clone() }],
                };
                let dot = to_dot(&g);
                proptest::prop_assert!(dot.ends_with("}\n"), "unterminated");
                proptest::prop_assert_eq!(dot.lines().count(), 7);
            }
        }
    }
}
