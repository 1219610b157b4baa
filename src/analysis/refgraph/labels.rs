//! Cleaning target text, and the names the agent gives the objects and
//! references on the chosen paths (what [`super::explain`] works from).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::RetainerPath;

/// Longest piece of target text kept (in chars).
pub const TEXT_CAP: usize = 160;

/// Unicode line separators, direction marks and overrides (which can make
/// a terminal line read differently from its bytes), and non-characters.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{2028}'
            | '\u{2029}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{fffe}'
            | '\u{ffff}'
    )
}

/// `s` made safe to print: control characters (and the Unicode line/bidi
/// controls) become visible escapes, and it is cut to `max` chars.
pub fn clean(s: &str, max: usize) -> String {
    escape_controls(s, max, invisible)
}

/// `s` cut to `max` chars with newlines, tabs, control characters and the
/// characters `also` picks shown as escapes (`\n`, `\x1b`, `\u202e`).
pub fn escape_controls(s: &str, max: usize, also: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || also(c) => {
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

/// One root from the agent's `refgraph` answer.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct RootRecord {
    pub id: u64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Thread name (frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ident: Option<u64>,
    /// 0 for the innermost frame of its thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub func: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
}

/// What the agent says about one object on a path.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct NodeInfo {
    #[serde(rename = "type", default)]
    pub type_name: String,
    /// module, class, frame, traceback, cell, function, method, generator,
    /// dict, container, value, object.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub len: Option<i64>,
    #[serde(default)]
    pub func: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub line: Option<i64>,
    #[serde(default)]
    pub bound: Option<bool>,
}

/// How a referrer refers to the next object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    /// A dict value: `['key']`.
    Key,
    /// A dict key.
    DictKey,
    /// A list or tuple item: `[3]`.
    Index,
    /// An attribute: `.name` (instance, slot, `__self__`, `tb_frame`, ...).
    Attr,
    /// An object's own namespace: module, class or instance `__dict__`.
    Dict,
    /// A frame's local variable.
    Local,
    /// A closure cell of a function (`closure 'name'`).
    Cell,
    /// A set member.
    Member,
    /// A reference the agent could not name (held in C fields).
    Unknown,
    /// One of the two objects is gone since the graph was taken.
    Gone,
}

impl EdgeKind {
    pub fn from_agent(kind: &str) -> EdgeKind {
        match kind {
            "key" => EdgeKind::Key,
            "dictkey" => EdgeKind::DictKey,
            "index" => EdgeKind::Index,
            "attr" => EdgeKind::Attr,
            "dict" => EdgeKind::Dict,
            "local" => EdgeKind::Local,
            "cell" => EdgeKind::Cell,
            "member" => EdgeKind::Member,
            "gone" => EdgeKind::Gone,
            _ => EdgeKind::Unknown,
        }
    }
}

/// The `refgraph_labels` answer as sent.
#[derive(Debug, Default, Deserialize)]
pub struct LabelsAnswer {
    #[serde(default)]
    pub edges: Vec<(u64, u64, String, String)>,
    #[serde(default)]
    pub nodes: HashMap<String, NodeInfo>,
}

/// Names for the edges and nodes of the chosen paths.
#[derive(Debug, Default)]
pub struct Labels {
    pub edges: HashMap<(u64, u64), (EdgeKind, String)>,
    pub nodes: HashMap<u64, NodeInfo>,
    pub roots: HashMap<u64, RootRecord>,
}

impl Labels {
    pub fn new(answer: LabelsAnswer, roots: &[RootRecord]) -> Labels {
        let edges = answer
            .edges
            .into_iter()
            .map(|(s, d, kind, label)| {
                (
                    (s, d),
                    (EdgeKind::from_agent(&kind), clean(&label, TEXT_CAP)),
                )
            })
            .collect();
        let nodes = answer
            .nodes
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
        let roots = roots.iter().map(|r| (r.id, r.clone())).collect();
        Labels {
            edges,
            nodes,
            roots,
        }
    }
}

/// The (src, dst) pairs and node ids to ask names for.
pub fn wanted(paths: &[RetainerPath]) -> (Vec<(u64, u64)>, Vec<u64>) {
    let mut edges = Vec::new();
    let mut nodes = Vec::new();
    let mut seen_e = std::collections::HashSet::new();
    let mut seen_n = std::collections::HashSet::new();
    for p in paths {
        for w in p.nodes.windows(2) {
            if seen_e.insert((w[0], w[1])) {
                edges.push((w[0], w[1]));
            }
        }
        for &n in p.nodes.iter().chain([&p.target]) {
            if seen_n.insert(n) {
                nodes.push(n);
            }
        }
    }
    (edges, nodes)
}
