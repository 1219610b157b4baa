//! Retainer paths made readable: node names and edge labels from the agent's
//! `refgraph_labels` op, the path as one line
//! (`module app → app.__dict__['_session_cache'] → dict[4711] → app.UserSession`),
//! and the aggregate over samples ("19 of 20 are held by app._session_cache").
//!
//! All text from the target goes through [`clean`] first: no control
//! characters reach a terminal, and every piece is bounded.

use serde::Serialize;

use super::names::{ident_key, owner_short, plain_name, root_name, short_type, thread_text};
use super::{PathStatus, RetainerPath, RootKind};

pub use super::aggregate::{Group, aggregate};
pub use super::labels::{
    EdgeKind, Labels, LabelsAnswer, NodeInfo, RootRecord, TEXT_CAP, clean, escape_controls, wanted,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathNode {
    pub id: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    pub kind: String,
    /// As shown in the path (`module app`, `app.__dict__`, `dict`).
    pub name: String,
    /// Items, for dicts and containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathEdge {
    pub kind: EdgeKind,
    pub label: String,
}

/// One sample's retainer path with names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedPath {
    pub target: u64,
    pub target_type: String,
    pub status: PathStatus,
    pub root: Option<RootKind>,
    /// Root first, target last.
    pub nodes: Vec<PathNode>,
    /// `edges[i]` goes from `nodes[i]` to `nodes[i + 1]`.
    pub edges: Vec<PathEdge>,
    pub text: String,
    pub held_by: String,
}

/// Builds the named path for one search result.
pub fn explain(path: &RetainerPath, labels: &Labels, target_type: &str) -> ExplainedPath {
    let ids = &path.nodes;
    let mut edges = Vec::new();
    for w in ids.windows(2) {
        let (kind, label) = labels
            .edges
            .get(&(w[0], w[1]))
            .cloned()
            .unwrap_or((EdgeKind::Gone, "?".to_string()));
        edges.push(PathEdge { kind, label });
    }
    let mut nodes: Vec<PathNode> = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let info = labels.nodes.get(&id);
        let name = if i == 0 && matches!(path.status, PathStatus::Rooted | PathStatus::HeldFromC) {
            let kind = path.root.unwrap_or(RootKind::NoReferrer);
            root_name(kind, labels.roots.get(&id), info)
        } else if i > 0 && edges[i - 1].kind == EdgeKind::Dict {
            format!("{}.__dict__", owner_short(labels.nodes.get(&ids[i - 1])))
        } else {
            plain_name(info)
        };
        nodes.push(PathNode {
            id,
            type_name: info.map(short_type).unwrap_or_default(),
            kind: info.map(|i| clean(&i.kind, 40)).unwrap_or_default(),
            name,
            len: info.and_then(|i| i.len).filter(|&n| n >= 0),
        });
    }
    let target_type = labels
        .nodes
        .get(&path.target)
        .map(short_type)
        .unwrap_or_else(|| clean(target_type, TEXT_CAP));
    let mut out = ExplainedPath {
        target: path.target,
        target_type,
        status: path.status,
        root: path.root,
        nodes,
        edges,
        text: String::new(),
        held_by: String::new(),
    };
    let constant = vec![false; out.edges.len()];
    out.text = path_text(&out, &constant);
    out.held_by = held_by(
        &out,
        &constant,
        labels.roots.get(&path.nodes.first().copied().unwrap_or(0)),
    );
    out
}

/// The label shown for edge `j` (`[…]` where the samples differ).
fn shown<'a>(p: &'a ExplainedPath, varying: &[bool], j: usize) -> &'a str {
    let e = &p.edges[j];
    if varying.get(j).copied().unwrap_or(false) && matches!(e.kind, EdgeKind::Key | EdgeKind::Index)
    {
        "[…]"
    } else {
        &e.label
    }
}

/// The path as one line: each object's name with the label of the
/// reference to the next glued on, joined by arrows. An instance's
/// `__dict__` hop is folded into `.attr`; a closure into `closure 'name'`.
pub fn path_text(p: &ExplainedPath, varying: &[bool]) -> String {
    let n = p.edges.len();
    if p.nodes.len() != n + 1 {
        // Not built by `explain`: no folding, just the names.
        let names: Vec<&str> = p.nodes.iter().map(|x| x.name.as_str()).collect();
        return names.join(" → ");
    }
    let mut segs: Vec<String> = Vec::new();
    let mut cur = p.nodes[0].name.clone();
    let mut i = 0;
    while i < n {
        let e = &p.edges[i];
        let label = shown(p, varying, i);
        match e.kind {
            EdgeKind::Dict => {
                let owner = p.nodes[i].kind.as_str();
                let fold = (owner != "module" && owner != "class" && i + 1 < n)
                    .then(|| &p.edges[i + 1])
                    .filter(|next| {
                        next.kind == EdgeKind::Key && !varying.get(i + 1).copied().unwrap_or(false)
                    })
                    .and_then(|next| ident_key(&next.label));
                if let Some(attr) = fold {
                    cur.push('.');
                    cur.push_str(attr);
                    i += 2;
                } else {
                    i += 1;
                }
                segs.push(std::mem::take(&mut cur));
                cur = p.nodes[i].name.clone();
            }
            EdgeKind::Local => {
                segs.push(std::mem::take(&mut cur));
                segs.push(format!("local '{label}'"));
                i += 1;
                cur = p.nodes[i].name.clone();
            }
            EdgeKind::Attr
                if label == ".__closure__"
                    && i + 1 < n
                    && p.edges[i + 1].kind == EdgeKind::Cell =>
            {
                segs.push(std::mem::take(&mut cur));
                segs.push(p.edges[i + 1].label.clone());
                i += 2;
                if i < n
                    && p.edges[i].kind == EdgeKind::Attr
                    && p.edges[i].label == ".cell_contents"
                {
                    i += 1;
                }
                cur = p.nodes[i].name.clone();
            }
            EdgeKind::Cell => {
                segs.push(std::mem::take(&mut cur));
                segs.push(label.to_string());
                i += 1;
                if i < n
                    && p.edges[i].kind == EdgeKind::Attr
                    && p.edges[i].label == ".cell_contents"
                {
                    i += 1;
                }
                cur = p.nodes[i].name.clone();
            }
            EdgeKind::Key | EdgeKind::Index | EdgeKind::Attr => {
                cur.push_str(label);
                segs.push(std::mem::take(&mut cur));
                i += 1;
                cur = p.nodes[i].name.clone();
            }
            EdgeKind::Member => {
                cur.push_str("{…}");
                segs.push(std::mem::take(&mut cur));
                i += 1;
                cur = p.nodes[i].name.clone();
            }
            EdgeKind::DictKey => {
                cur.push_str(" (as a key)");
                segs.push(std::mem::take(&mut cur));
                i += 1;
                cur = p.nodes[i].name.clone();
            }
            EdgeKind::Unknown | EdgeKind::Gone => {
                cur.push_str(if e.kind == EdgeKind::Gone {
                    " (gone)"
                } else {
                    " (?)"
                });
                segs.push(std::mem::take(&mut cur));
                i += 1;
                cur = p.nodes[i].name.clone();
            }
        }
    }
    segs.push(cur);
    segs.join(" → ")
}

/// The nearest named holder as an expression: `app._session_cache`,
/// `app.Bus.listeners`, `local 'cache' of worker() in thread 'worker-1'`.
/// Stops before the first hop that differs between samples.
pub fn held_by(p: &ExplainedPath, varying: &[bool], root: Option<&RootRecord>) -> String {
    match p.status {
        PathStatus::Unreachable => {
            return "nothing: only a reference cycle (garbage the cycle collector has not freed yet)"
                .to_string();
        }
        PathStatus::TooDeep => return "no root within the depth limit".to_string(),
        PathStatus::NotInGraph => return "nothing (the object is gone)".to_string(),
        PathStatus::Rooted | PathStatus::HeldFromC => {}
    }
    let Some(first) = p.nodes.first() else {
        return String::new();
    };
    let (mut expr, start) = match p.root {
        Some(RootKind::Module) => (
            first
                .name
                .strip_prefix("module ")
                .unwrap_or(&first.name)
                .to_string(),
            0,
        ),
        Some(RootKind::Class) => (
            first
                .name
                .strip_prefix("class ")
                .unwrap_or(&first.name)
                .to_string(),
            0,
        ),
        Some(RootKind::SysModules) => ("sys.modules".to_string(), 0),
        Some(RootKind::Frame) => {
            let whose = match root {
                Some(r) => format!(
                    "{}() in {}",
                    clean(r.func.as_deref().unwrap_or("?"), 80),
                    thread_text(r)
                ),
                None => first.name.clone(),
            };
            if p.edges.first().map(|e| e.kind) != Some(EdgeKind::Local) {
                return first.name.clone();
            }
            let local = p.edges[0].label.clone();
            let expr = extend_expr(p, varying, local.clone(), 1);
            return if expr == local {
                format!("local '{local}' of {whose}")
            } else {
                format!("{expr} (local '{local}' of {whose})")
            };
        }
        Some(RootKind::NoReferrer) | None => {
            return format!(
                "{} with no Python referrer (held from C)",
                if first.type_name.is_empty() {
                    "an object"
                } else {
                    &first.type_name
                }
            );
        }
    };
    expr = extend_expr(p, varying, expr, start);
    expr
}

fn extend_expr(p: &ExplainedPath, varying: &[bool], mut expr: String, start: usize) -> String {
    let mut ns = false;
    for j in start..p.edges.len() {
        if varying.get(j).copied().unwrap_or(false) || expr.chars().count() > 200 {
            break;
        }
        let e = &p.edges[j];
        match e.kind {
            EdgeKind::Dict => {
                ns = true;
                continue;
            }
            EdgeKind::Key if ns => match ident_key(&e.label) {
                Some(name) => {
                    expr.push('.');
                    expr.push_str(name);
                }
                None => expr.push_str(&e.label),
            },
            EdgeKind::Key | EdgeKind::Index | EdgeKind::Attr
                if e.label != ".__closure__" && e.label != ".cell_contents" =>
            {
                expr.push_str(&e.label)
            }
            EdgeKind::Local => {
                expr.push_str(".f_locals['");
                expr.push_str(&e.label);
                expr.push_str("']");
            }
            _ => break,
        }
        ns = false;
    }
    expr
}

#[cfg(test)]
mod tests;
