//! `memsleuth retained`: the report (JSON schema 1, `docs/retained.schema.json`)
//! and its text form.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::refgraph::RootKind;
use crate::analysis::refgraph::explain::{ExplainedPath, clean};
use crate::render::table::Table;
use crate::render::units;

/// One type inside an entry's retained set.
#[derive(Debug, Clone, Serialize)]
pub struct TypeInside {
    #[serde(rename = "type")]
    pub type_name: String,
    pub count: u64,
    pub bytes: u64,
}

/// One object that keeps memory alive.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedEntry {
    /// The object's id() (address).
    pub id: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Bytes freed if this object went away (its own and everything only
    /// it keeps alive).
    pub retained_bytes: u64,
    /// Objects freed with it (itself included).
    pub count: u64,
    /// Of all the bytes in the graph.
    pub share: f64,
    /// Shallow size of the object itself.
    pub own_bytes: u64,
    /// The reference path from a root, as `why` prints it.
    pub path: String,
    /// The same path, object by object.
    pub path_detail: ExplainedPath,
    /// Where a chain of sole owners was collapsed onto this object: the
    /// top of the chain (its id), else null.
    pub collapsed_from: Option<u64>,
    pub root: RootKind,
    /// Biggest first.
    pub top_types: Vec<TypeInside>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetainedHeap {
    /// Objects in the graph (gc-tracked and what they refer to).
    pub objects: u64,
    pub references: u64,
    /// Sum of every object's sys.getsizeof.
    pub total_bytes: u64,
    /// Roots by kind (`no-referrer`: held from C, or parts nothing named
    /// reaches).
    pub roots: BTreeMap<String, u64>,
    /// Objects whose reference count exceeds the references seen (held
    /// from C code or a running frame's stack): roots of their own.
    pub held_from_c: u64,
}

/// Everything `retained` found; serialized as the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedReport {
    pub schema: u32,
    pub pid: u32,
    pub python: String,
    /// Where the references came from: `memory` (read from outside) or
    /// `agent`.
    pub source: &'static str,
    pub heap: RetainedHeap,
    pub entries: Vec<RetainedEntry>,
    pub attach_s: f64,
    /// Round trip of the graph collection (the agent's walk and the
    /// transfer, with building the graph as it arrived).
    pub graph_s: f64,
    /// Dominator tree, retained sizes and the entries, in memsleuth.
    pub analysis_s: f64,
    /// Round trip of naming the paths.
    pub labels_s: f64,
    pub detach_s: f64,
    /// The whole command.
    pub total_s: f64,
    /// Time the session made the target spend in our Python code.
    pub gil_s: f64,
    /// The longest the agent held the GIL without a break.
    pub max_gil_hold_s: f64,
    /// CPU time of the agent's thread for the graph (3.7+; null before):
    /// what it cost the target, whatever else the machine was doing.
    pub agent_cpu_s: Option<f64>,
    /// With the references read from memory: what the read cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryRead>,
}

/// The cost of reading the graph from the target's memory (no code of
/// ours ran in it).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRead {
    /// How long the target's threads were stopped for the copy.
    pub paused_s: f64,
    pub copy_s: f64,
    pub copied_bytes: u64,
    /// Walking the copy, on memsleuth's side.
    pub walk_s: f64,
    /// Objects rejected as invalid, references left out at a bound.
    pub skipped: u64,
    /// Copies thrown away because a collection was running.
    pub retries: u32,
    /// memsleuth's own peak RSS (VmHWM), bytes.
    pub tool_peak_rss_bytes: Option<u64>,
    pub warnings: Vec<String>,
    /// The core file read (`--core`); null for a live process.
    pub core: Option<String>,
}

fn types_line(e: &RetainedEntry) -> String {
    let parts: Vec<String> = e
        .top_types
        .iter()
        .map(|t| {
            format!(
                "{} {} ×{}",
                clean(&t.type_name, 60),
                units::bytes_short(t.bytes),
                units::thousands_u64(t.count)
            )
        })
        .collect();
    parts.join(", ")
}

/// The text form.
pub fn text(r: &RetainedReport) -> String {
    let mut out = format!(
        "PID {} (Python {}): {} objects, {} in Python objects, {} references\n",
        r.pid,
        r.python,
        units::thousands_u64(r.heap.objects),
        units::bytes(r.heap.total_bytes),
        units::thousands_u64(r.heap.references)
    );
    if r.entries.is_empty() {
        out.push_str("Nothing keeps memory alive beyond the roots themselves.\n");
        return out;
    }
    out.push_str("What keeps the most memory alive (retained: what would be freed if that object went away):\n\n");
    let mut t = Table::new(&[
        ("#", true),
        ("RETAINED", true),
        ("HEAP", true),
        ("OBJECTS", true),
        ("OBJECT", false),
    ]);
    for (i, e) in r.entries.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            units::bytes(e.retained_bytes),
            format!("{:.1}%", e.share * 100.0),
            units::thousands_u64(e.count),
            format!("{} at {:#x}", clean(&e.type_name, 80), e.id),
        ]);
    }
    let table = t.render();
    // The table, with each entry's path and contents under its row.
    let mut lines = table.lines();
    if let Some(head) = lines.next() {
        out.push_str(head);
        out.push('\n');
    }
    for (e, line) in r.entries.iter().zip(lines) {
        out.push_str(line);
        out.push('\n');
        out.push_str(&format!("      {}\n", e.path));
        let inside = types_line(e);
        if !inside.is_empty() {
            out.push_str(&format!("      inside: {inside}\n"));
        }
    }
    out
}
