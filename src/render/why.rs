//! `memsleuth why`: the report (JSON schema 1), its text form, and the
//! back-reference graph of the sampled paths.

use std::collections::HashMap;

use crate::analysis::refgraph::PathStatus;
use crate::render::graph::{Edge, Graph, Node, Role};

pub use crate::analysis::refgraph::report::{
    GraphOutput, HeapStats, HolderRetained, Query, WhyReport, group_sentence,
};

/// Most objects drawn in a graph (paths beyond that are left out).
pub const GRAPH_MAX_NODES: usize = 400;

use crate::units::thousands_u64 as thousands;

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The report for people.
pub fn text(r: &WhyReport) -> String {
    let mut out = String::new();
    let heap = format!(
        "heap of {} tracked objects, {} references",
        thousands(r.heap.objects),
        thousands(r.heap.references as u64)
    );
    if r.query.id.is_none() {
        if r.matched_types.is_empty() {
            out.push_str(&format!(
                "no class named {} in process {}\n",
                r.query.type_name.as_deref().unwrap_or("?"),
                r.pid
            ));
            return out;
        }
        if r.instances == 0 {
            out.push_str(&format!("no live instances of {} ({heap})\n", r.subject()));
            return out;
        }
        out.push_str(&format!(
            "{}: {} live {}, {} sampled ({heap})\n",
            r.subject(),
            thousands(r.instances),
            plural(r.instances as usize, "instance", "instances"),
            r.sampled
        ));
    } else if r.paths.is_empty() {
        out.push_str(&format!(
            "no object with id {:#x} among the gc-tracked objects and their referents ({heap})\n",
            r.query.id.unwrap_or(0)
        ));
        return out;
    } else {
        out.push_str(&format!("{heap}\n"));
    }
    for g in &r.groups {
        out.push('\n');
        out.push_str(&group_sentence(r, g));
        out.push('\n');
        out.push_str("    ");
        out.push_str(&g.pattern);
        out.push('\n');
        if g.pattern != g.example {
            out.push_str("    e.g. ");
            out.push_str(&g.example);
            out.push('\n');
        }
        for h in r
            .holders
            .iter()
            .filter(|h| std::ptr::eq(&r.groups[h.group], g))
        {
            out.push_str(&format!(
                "    retained: {} ({} {}) would be freed with the {} at {:#x}\n",
                crate::render::units::bytes(h.retained_bytes),
                thousands(h.count),
                plural(h.count as usize, "object", "objects"),
                h.type_name,
                h.id
            ));
        }
    }
    out
}

/// The union of the sampled paths as a graph (like objgraph's
/// `show_backrefs` for the chosen chains): referrer → referent.
pub fn graph(r: &WhyReport) -> Graph {
    let title = if let Some(id) = r.query.id {
        format!(
            "why is {} at {id:#x} alive? (memsleuth, pid {})",
            r.subject(),
            r.pid
        )
    } else {
        format!(
            "why are these {} objects alive? {} of {} sampled (memsleuth, pid {})",
            r.subject(),
            r.sampled,
            thousands(r.instances),
            r.pid
        )
    };
    let mut g = Graph {
        title,
        ..Graph::default()
    };
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut edges: HashMap<(usize, usize), usize> = HashMap::new();
    let mut left_out = 0usize;
    for p in &r.paths {
        let new = p
            .nodes
            .iter()
            .filter(|n| !index.contains_key(&n.id))
            .count();
        if g.nodes.len() + new > GRAPH_MAX_NODES {
            left_out += 1;
            continue;
        }
        let last = p.nodes.len().saturating_sub(1);
        for (i, n) in p.nodes.iter().enumerate() {
            let role = if i == last {
                Role::Target
            } else if i == 0 && matches!(p.status, PathStatus::Rooted | PathStatus::HeldFromC) {
                Role::Root
            } else {
                Role::Plain
            };
            let idx = *index.entry(n.id).or_insert_with(|| {
                let mut lines = vec![n.name.clone()];
                let container = matches!(n.kind.as_str(), "dict" | "container");
                if container && !n.type_name.is_empty() && n.name != n.type_name {
                    lines.push(n.type_name.clone());
                }
                if let (true, Some(len)) = (container, n.len) {
                    lines.push(format!(
                        "{} {}",
                        thousands(len as u64),
                        plural(len as usize, "item", "items")
                    ));
                }
                if role == Role::Target {
                    lines.push(format!("{:#x}", n.id));
                }
                g.nodes.push(Node { lines, role });
                g.nodes.len() - 1
            });
            // A node first drawn plain may be a root or target elsewhere.
            if role != Role::Plain && g.nodes[idx].role == Role::Plain {
                g.nodes[idx].role = role;
            }
        }
        for (i, e) in p.edges.iter().enumerate() {
            let (Some(&a), Some(&b)) = (index.get(&p.nodes[i].id), index.get(&p.nodes[i + 1].id))
            else {
                continue;
            };
            edges.entry((a, b)).or_insert_with(|| {
                g.edges.push(Edge {
                    from: a,
                    to: b,
                    label: e.label.clone(),
                });
                g.edges.len() - 1
            });
        }
    }
    if left_out > 0 {
        g.title.push_str(&format!(
            " ({left_out} {} left out to keep the graph under {GRAPH_MAX_NODES} objects)",
            plural(left_out, "path", "paths")
        ));
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::refgraph::RootKind;
    use crate::analysis::refgraph::explain::{EdgeKind, ExplainedPath, PathEdge, PathNode};
    use std::collections::BTreeMap;

    fn node(id: u64, name: &str, ty: &str) -> PathNode {
        PathNode {
            id,
            type_name: ty.into(),
            kind: if ty == "module" {
                "module".into()
            } else {
                String::new()
            },
            name: name.into(),
            len: None,
        }
    }

    fn report() -> WhyReport {
        let path = |t: u64, key: &str| ExplainedPath {
            target: t,
            target_type: "app.UserSession".into(),
            status: PathStatus::Rooted,
            root: Some(RootKind::Module),
            nodes: vec![
                node(1, "module app", "module"),
                node(2, "app.__dict__", "dict"),
                node(3, "dict", "dict"),
                node(t, "app.UserSession", "app.UserSession"),
            ],
            edges: vec![
                PathEdge {
                    kind: EdgeKind::Dict,
                    label: "__dict__".into(),
                },
                PathEdge {
                    kind: EdgeKind::Key,
                    label: "['_session_cache']".into(),
                },
                PathEdge {
                    kind: EdgeKind::Key,
                    label: key.into(),
                },
            ],
            text: format!(
                "module app → app.__dict__['_session_cache'] → dict{key} → app.UserSession"
            ),
            held_by: "app._session_cache".into(),
        };
        let paths = vec![path(10, "[1]"), path(11, "[2]")];
        let groups = crate::analysis::refgraph::explain::aggregate(&paths, &HashMap::new());
        WhyReport {
            schema: 1,
            pid: 42,
            query: Query {
                type_name: Some("UserSession".into()),
                id: None,
                samples: 2,
                depth: 30,
            },
            matched_types: vec!["app.UserSession".into()],
            instances: 1042,
            sampled: 2,
            heap: HeapStats {
                objects: 612345,
                references: 2000000,
                roots: BTreeMap::new(),
            },
            groups,
            paths,
            attach_s: 0.1,
            gil_s: 0.2,
            collect_s: 0.3,
            agent_graph_s: 0.25,
            labels_s: 0.01,
            analysis_s: 0.05,
            graph: None,
            holders: Vec::new(),
            retained_s: 0.0,
        }
    }

    #[test]
    fn text_report() {
        let t = text(&report());
        assert_eq!(
            t,
            "app.UserSession: 1,042 live instances, 2 sampled (heap of 612,345 tracked objects, 2,000,000 references)\n\
             \n\
             2 of 2 sampled app.UserSession objects are held by app._session_cache\n    \
             module app → app.__dict__['_session_cache'] → dict[…] → app.UserSession\n    \
             e.g. module app → app.__dict__['_session_cache'] → dict[1] → app.UserSession\n"
        );
    }

    #[test]
    fn graph_is_the_union_of_paths() {
        let g = graph(&report());
        assert_eq!(g.nodes.len(), 5);
        assert_eq!(g.edges.len(), 4);
        assert_eq!(g.nodes[0].role, Role::Root);
        assert_eq!(g.nodes[3].role, Role::Target);
        let dot = crate::render::graph::to_dot(&g);
        assert!(dot.contains("n2 -> n3 [label=\"[1]\"]"), "{dot}");
    }
}
