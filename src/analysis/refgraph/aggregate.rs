//! Grouping explained paths over the samples: "19 of 20 are held by
//! app._session_cache".

use std::collections::HashMap;

use serde::Serialize;

use super::explain::{ExplainedPath, held_by, path_text};
use super::labels::{EdgeKind, RootRecord};
use super::{PathStatus, RootKind};

/// Samples that share a retainer structure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub count: usize,
    pub status: PathStatus,
    pub root: Option<RootKind>,
    pub held_by: String,
    /// The path with `[…]` where samples differ.
    pub pattern: String,
    /// The first sample's path.
    pub example: String,
    /// Which sampled paths (indices into the list given to [`aggregate`]).
    pub members: Vec<usize>,
}

/// Groups paths by root and structure (same root object, same kinds of
/// references, same attribute and namespace names, same types), keeping
/// container keys and indexes out of the key.
pub fn aggregate(paths: &[ExplainedPath], roots: &HashMap<u64, RootRecord>) -> Vec<Group> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        let key = group_key(p);
        let entry = groups.entry(key.clone()).or_default();
        if entry.is_empty() {
            order.push(key);
        }
        entry.push(i);
    }
    let mut out: Vec<Group> = order
        .iter()
        .map(|key| {
            let members = groups.remove(key).unwrap_or_default();
            let first = &paths[members[0]];
            let varying: Vec<bool> = (0..first.edges.len())
                .map(|j| {
                    members.iter().any(|&m| {
                        paths[m].edges.get(j).map(|e| &e.label) != Some(&first.edges[j].label)
                    })
                })
                .collect();
            let root = first.nodes.first().and_then(|n| roots.get(&n.id));
            Group {
                count: members.len(),
                status: first.status,
                root: first.root,
                held_by: held_by(first, &varying, root),
                pattern: path_text(first, &varying),
                example: first.text.clone(),
                members,
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.members[0].cmp(&b.members[0])));
    out
}

fn group_key(p: &ExplainedPath) -> String {
    use std::fmt::Write;
    let mut key = format!("{:?}|", p.status);
    match p.status {
        PathStatus::Rooted => {
            let _ = write!(key, "{}", p.nodes.first().map_or(0, |n| n.id));
        }
        PathStatus::HeldFromC | PathStatus::TooDeep => {
            let _ = write!(
                key,
                "{}",
                p.nodes.first().map_or("", |n| n.type_name.as_str())
            );
        }
        PathStatus::Unreachable | PathStatus::NotInGraph => {
            let _ = write!(key, "{}", p.target_type);
            return key;
        }
    }
    for (j, e) in p.edges.iter().enumerate() {
        let namespace = j > 0 && p.edges[j - 1].kind == EdgeKind::Dict
            || (j == 0 && p.root == Some(RootKind::SysModules));
        let label = match e.kind {
            EdgeKind::Key if !namespace => "*",
            EdgeKind::Index => "*",
            _ => e.label.as_str(),
        };
        let ty = p.nodes.get(j + 1).map_or("", |n| n.type_name.as_str());
        let _ = write!(key, "|{:?}:{}:{}", e.kind, label, ty);
    }
    key
}
