//! What `memsleuth why` found, as data: the query, the heap figures, the
//! groups of sampled paths and the sentence heading each group. It lives
//! here (not in `render`) because doctor's rules quote it; `render::why`
//! prints it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::PathStatus;
use super::explain::{ExplainedPath, Group};

/// Which renderer produced an SVG (`render::graph` draws it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Graphviz,
    Builtin,
}

#[derive(Debug, Clone, Serialize)]
pub struct Query {
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    pub id: Option<u64>,
    pub samples: usize,
    pub depth: usize,
}

/// The retained size of the holder a group names.
#[derive(Debug, Clone, Serialize)]
pub struct HolderRetained {
    /// Index into `groups`.
    pub group: usize,
    /// The holder's id() (the deepest object every sample of the group
    /// is reached through, short of the samples themselves).
    pub id: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Bytes freed if the holder went away (what only it keeps alive).
    pub retained_bytes: u64,
    /// Objects freed with it.
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HeapStats {
    /// gc-tracked objects in the graph.
    pub objects: u64,
    /// References between them (the agent's own left out).
    pub references: usize,
    /// Listed roots by kind.
    pub roots: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphOutput {
    pub format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    pub text: String,
}

/// Everything `why` found; serialized as the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct WhyReport {
    pub schema: u32,
    pub pid: u32,
    pub query: Query,
    /// Classes whose name matched `--type`.
    pub matched_types: Vec<String>,
    /// Live instances found (of the matched types; 1 or 0 with `--id`).
    pub instances: u64,
    pub sampled: usize,
    pub heap: HeapStats,
    /// Samples grouped by how they are held, most common first.
    pub groups: Vec<Group>,
    /// One path per sample.
    pub paths: Vec<ExplainedPath>,
    /// Attach time (preflight to the agent's hello).
    pub attach_s: f64,
    /// Time the agent spent in Python for this session (GIL proxy).
    pub gil_s: f64,
    /// Round trip of the graph collection.
    pub collect_s: f64,
    /// Of which the agent's walk of the heap (as it measured it).
    pub agent_graph_s: f64,
    /// Round trip of the label lookups.
    pub labels_s: f64,
    /// Building the graph and searching it, in memsleuth.
    pub analysis_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphOutput>,
    /// Retained size of each group's holder (empty with `--no-retained`).
    pub holders: Vec<HolderRetained>,
    /// Collecting the heap graph and its dominator tree for them.
    pub retained_s: f64,
}

impl WhyReport {
    /// What the samples are, for sentences: `app.UserSession`.
    pub fn subject(&self) -> String {
        if let Some(p) = self.paths.first()
            && self.query.id.is_some()
        {
            return p.target_type.clone();
        }
        if self.matched_types.is_empty() {
            return self.query.type_name.clone().unwrap_or_default();
        }
        self.matched_types.join(" / ")
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The sentence heading a group.
pub fn group_sentence(r: &WhyReport, g: &Group) -> String {
    let what = if r.query.id.is_some() {
        let id = r.query.id.unwrap_or(0);
        format!("{} at {id:#x}", r.subject())
    } else {
        // With several matching classes, each group names its own.
        let subject = match g.members.first().and_then(|&m| r.paths.get(m)) {
            Some(p) if r.matched_types.len() > 1 => p.target_type.clone(),
            _ => r.subject(),
        };
        format!(
            "{} of {} sampled {} {}",
            g.count,
            r.sampled,
            subject,
            plural(r.sampled, "object", "objects")
        )
    };
    let one = g.count == 1;
    match g.status {
        PathStatus::Rooted | PathStatus::HeldFromC => {
            format!(
                "{what} {} held by {}",
                if one { "is" } else { "are" },
                g.held_by
            )
        }
        PathStatus::Unreachable => format!(
            "{what} {} kept only by a reference cycle: garbage the cycle collector has not freed yet",
            if one { "is" } else { "are" }
        ),
        PathStatus::TooDeep => format!(
            "{what} {} no root within {} references (try a larger --depth); the chain so far:",
            if one { "has" } else { "have" },
            r.query.depth
        ),
        PathStatus::NotInGraph => format!(
            "{what} {} freed before it could be examined",
            if one { "was" } else { "were" }
        ),
    }
}
