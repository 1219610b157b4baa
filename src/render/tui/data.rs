//! What the viewer shows, as plain data: the answers of the agent and of
//! /proc in the shape the screens draw them. Everything here
//! (de)serialises, so a live session can be recorded
//! (`MEMSLEUTH_VIEW_RECORD=DIR`) and replayed by the snapshot tests.
//!
//! The agent's answers are untrusted: they are decoded with defaults for
//! missing fields, and their text is cleaned when it is drawn.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::analysis::refgraph::explain::ExplainedPath;

/// The process being viewed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub pid: u32,
    /// "3.12.1".
    pub python: String,
    /// How we got in, short: "PEP 768", "ptrace call", "ptrace pending call".
    pub method: String,
}

/// One /proc reading for the header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcPoint {
    /// Seconds since the viewer started.
    pub t: f64,
    pub virt: u64,
    pub res: u64,
    pub shr: u64,
    pub threads: u32,
    pub fds: Option<u64>,
}

/// The collector's switch and `gc.garbage`, from the cheap `gc_sample`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GcLine {
    pub enabled: bool,
    pub garbage: u64,
}

/// What to list for one census row (the `census_instances` op's input).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceQuery {
    /// The row's name (`app.UserSession`, `dict of app.UserSession`).
    pub name: String,
    /// Its type ids (for `dict of` rows: the owners' types).
    pub tids: Vec<u64>,
    pub dict_of: bool,
    /// Some of them are not tracked by the collector (str, int, ...).
    pub untracked: bool,
    /// How many the census counted (spreads the sample over the heap).
    pub expect: u64,
}

/// One sampled object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub repr: Option<String>,
}

/// Sampled instances of one census row, largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceList {
    pub name: String,
    /// Live ones in the latest census.
    pub live: u64,
    pub objects: Vec<Instance>,
}

impl InstanceList {
    /// From the `census_instances` answer.
    pub fn from_agent(query: &InstanceQuery, answer: &Value) -> Result<InstanceList, String> {
        let list = answer
            .get("objects")
            .cloned()
            .ok_or("the agent sent no `objects`")?;
        let mut objects: Vec<Instance> = serde_json::from_value(list)
            .map_err(|e| format!("unexpected `census_instances` answer: {e}"))?;
        objects.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
        Ok(InstanceList {
            name: query.name.clone(),
            live: query.expect,
            objects,
        })
    }
}

/// Retained sizes of every object in the heap graph (`R`), by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetainedSizes {
    /// (id, retained bytes, objects retained), sorted by id.
    pub by_id: Vec<(u64, u64, u32)>,
    /// Sum of every object's size.
    pub total_bytes: u64,
}

impl RetainedSizes {
    /// (retained bytes, objects) of the object `id`.
    pub fn get(&self, id: u64) -> Option<(u64, u32)> {
        let i = self.by_id.binary_search_by_key(&id, |e| e.0).ok()?;
        let (_, b, n) = self.by_id[i];
        Some((b, n))
    }
}

/// What the agent says about an object (as for the nodes of a path).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDesc {
    #[serde(rename = "type", default)]
    pub type_name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub len: Option<i64>,
}

/// One reference out of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referent {
    pub id: u64,
    /// Edge kind as the agent names it (key, attr, index, ...).
    #[serde(default)]
    pub kind: String,
    /// `.username`, `['theme']`, `[3]`.
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub repr: Option<String>,
    #[serde(default)]
    pub node: NodeDesc,
}

/// An object and what it refers to (the `refgraph_referents` answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referents {
    #[serde(default)]
    pub found: bool,
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub repr: Option<String>,
    #[serde(default)]
    pub node: NodeDesc,
    /// Distinct referents (only the first `limit` are listed).
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub referents: Vec<Referent>,
}

/// One object on a retainer chain, with the reference that leads to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStep {
    pub id: u64,
    /// The label of the reference from the previous step (None for the root).
    pub label: Option<String>,
    /// As `why` names it: `module app`, `app.__dict__`, `dict`.
    pub name: String,
    pub type_name: String,
    pub kind: String,
    pub len: Option<i64>,
}

/// Why one object is alive: the shortest chain from a root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// rooted, held-from-c, unreachable, too-deep, not-in-graph.
    pub status: String,
    /// `app._session_cache`.
    pub held_by: String,
    /// The whole chain on one line.
    pub text: String,
    /// Root first, the object last.
    pub steps: Vec<ChainStep>,
}

impl Chain {
    pub fn from_path(p: &ExplainedPath) -> Chain {
        let status = serde_json::to_value(p.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let steps = p
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| ChainStep {
                id: n.id,
                label: i
                    .checked_sub(1)
                    .and_then(|j| p.edges.get(j))
                    .map(|e| e.label.clone()),
                name: n.name.clone(),
                type_name: n.type_name.clone(),
                kind: n.kind.clone(),
                len: n.len,
            })
            .collect();
        Chain {
            status,
            held_by: p.held_by.clone(),
            text: p.text.clone(),
            steps,
        }
    }
}

/// One group of mappings, as the maps panel shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapGroup {
    pub label: String,
    /// sysv, file, heap, anon, ... (see `render::maps::kind_word`).
    pub kind: String,
    pub mappings: usize,
    pub size: u64,
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
    /// Mapped more than once by this process.
    pub repeated: bool,
}

/// The grouped mappings of the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapsView {
    pub mappings: usize,
    pub size: u64,
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
    /// Largest RSS first.
    pub groups: Vec<MapGroup>,
    /// One sentence per repeated mapping.
    pub repeated: Vec<String>,
}

impl MapsView {
    pub fn from_grouped(g: &crate::analysis::mapview::GroupedMaps) -> MapsView {
        MapsView {
            mappings: g.totals.mappings,
            size: g.totals.size,
            rss: g.totals.rss,
            pss: g.totals.pss,
            swap: g.totals.swap,
            groups: g
                .groups
                .iter()
                .map(|x| MapGroup {
                    label: x.label.clone(),
                    kind: crate::render::maps::kind_word(&x.backing).to_string(),
                    mappings: x.mappings,
                    size: x.size,
                    rss: x.rss,
                    pss: x.pss,
                    swap: x.swap,
                    repeated: x.is_repeated(),
                })
                .collect(),
            repeated: g.repeated.iter().map(|r| r.message.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instances_from_a_malformed_answer_are_an_error() {
        let q = InstanceQuery {
            name: "x".into(),
            expect: 3,
            ..InstanceQuery::default()
        };
        assert!(InstanceList::from_agent(&q, &json!({})).is_err());
        assert!(InstanceList::from_agent(&q, &json!({"objects": [{"size": 1}]})).is_err());
        let l = InstanceList::from_agent(
            &q,
            &json!({"objects": [{"id": 1, "size": 10}, {"id": 2, "size": 30, "repr": "r"}]}),
        )
        .unwrap();
        assert_eq!(l.objects[0].id, 2);
        assert_eq!(l.live, 3);
    }

    #[test]
    fn referents_tolerate_missing_fields() {
        let r: Referents =
            serde_json::from_value(json!({"found": true, "referents": [{"id": 5}]})).unwrap();
        assert_eq!(r.referents[0].id, 5);
        assert_eq!(r.referents[0].node.type_name, "");
    }
}
