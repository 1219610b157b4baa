//! `memsleuth retained`: the objects that keep the most memory alive.
//!
//! The agent streams the whole heap graph (`retained_graph` op: the census
//! walk plus every object's references and the roots); memsleuth builds the
//! dominator tree, the retained sizes and the MAT-style top entries
//! (`analysis::retained`), then has the agent name only the references on
//! the entries' paths (`refgraph_labels`), as `why` does. `why` and `view`
//! use [`take_retained`] for the retained size of the holders they name.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use super::{CmdResult, Out};
use crate::agent::{Session, SessionError};
use crate::analysis::refgraph::explain::{self, Labels, LabelsAnswer, RootRecord};
use crate::analysis::refgraph::{PathStatus, RetainerPath, RootKind};
use crate::analysis::retained::agent::{AgentGraph, AgentGraphBuilder, WireError};
use crate::analysis::retained::{DomTree, Entry, Options, dominators, top_entries};
use crate::cli::RetainedArgs;
use crate::inject::attach::Attached;
use crate::render::retained::{RetainedEntry, RetainedHeap, RetainedReport, TypeInside, text};

/// The heap graph with its dominator tree.
pub struct Retained {
    pub graph: AgentGraph,
    pub dom: DomTree,
    /// The agent's answer (census statistics, timings).
    pub agent: Value,
    /// Round trip of the collection.
    pub graph_s: f64,
    /// Building the dominator tree.
    pub dom_s: f64,
}

impl Retained {
    /// (retained bytes, objects) of the object at `addr`, if it is in the
    /// graph.
    pub fn of(&self, addr: u64) -> Option<(u64, u64)> {
        let i = self.graph.graph.node_of(addr)? as usize;
        Some((self.dom.retained[i], u64::from(self.dom.count[i])))
    }

    /// [`Retained::of`] for many objects at once (one pass over the graph).
    pub fn of_many(&self, addrs: &[u64]) -> Vec<Option<(u64, u64)>> {
        let nodes = self.graph.graph.nodes_of(addrs);
        nodes
            .into_iter()
            .map(|n| {
                n.map(|i| {
                    (
                        self.dom.retained[i as usize],
                        u64::from(self.dom.count[i as usize]),
                    )
                })
            })
            .collect()
    }
}

/// Collects the graph and computes the dominator tree.
pub fn take_retained(session: &mut Session) -> anyhow::Result<Retained> {
    let started = Instant::now();
    let mut builder = AgentGraphBuilder::new();
    let mut failed: Option<WireError> = None;
    let resp =
        session.request_chunked("retained_graph", json!({"mem_reads": true}), &mut |frame| {
            if failed.is_none()
                && let Err(e) = builder.feed(&frame.header, &frame.payload)
            {
                // Keep reading (the session stays usable), drop the rest.
                failed = Some(e);
                builder = AgentGraphBuilder::new();
            }
            Ok::<(), SessionError>(())
        })?;
    if !resp.ok {
        let err = resp.error.unwrap_or_default();
        anyhow::bail!("collecting the heap graph failed in the target: {err}");
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    let graph = builder.finish(&resp.result)?;
    let graph_s = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let dom = dominators(&graph.graph);
    Ok(Retained {
        graph,
        dom,
        agent: resp.result,
        graph_s,
        dom_s: t.elapsed().as_secs_f64(),
    })
}

/// Names the references on `paths` (one `refgraph_labels` request).
pub fn name_paths(
    attached: &mut Attached,
    paths: &[RetainerPath],
    roots: &[RootRecord],
    types: &[String],
) -> anyhow::Result<Vec<explain::ExplainedPath>> {
    let (edges, nodes) = explain::wanted(paths);
    let pairs: Vec<[u64; 2]> = edges.iter().map(|&(s, d)| [s, d]).collect();
    let resp = attached
        .session
        .request("refgraph_labels", json!({"edges": pairs, "nodes": nodes}))?;
    if !resp.ok {
        let e = resp.error.unwrap_or_default();
        anyhow::bail!("`refgraph_labels` failed in the target: {e}");
    }
    let answer: LabelsAnswer =
        serde_json::from_value(resp.result).context("unexpected `refgraph_labels` answer")?;
    let labels = Labels::new(answer, roots);
    Ok(paths
        .iter()
        .zip(types)
        .map(|(p, ty)| explain::explain(p, &labels, ty))
        .collect())
}

/// The path of an entry, as `why` finds them.
fn retainer_path(r: &Retained, e: &Entry) -> RetainerPath {
    let g = &r.graph.graph;
    let nodes: Vec<u64> = e.path.iter().map(|&i| g.addr[i as usize]).collect();
    RetainerPath {
        target: g.addr[e.node as usize],
        status: if e.root == RootKind::NoReferrer {
            PathStatus::HeldFromC
        } else {
            PathStatus::Rooted
        },
        root: Some(e.root),
        nodes,
        visited: 0,
    }
}

/// Runs the whole query in the session.
pub fn collect(attached: &mut Attached, limit: usize) -> anyhow::Result<RetainedReport> {
    let r = take_retained(&mut attached.session)?;
    let t = Instant::now();
    let g = &r.graph.graph;
    let summary = top_entries(
        g,
        &r.dom,
        &Options {
            limit,
            ..Options::default()
        },
    );
    let analysis_s = r.dom_s + t.elapsed().as_secs_f64();
    let t = Instant::now();
    let paths: Vec<RetainerPath> = summary
        .entries
        .iter()
        .map(|e| retainer_path(&r, e))
        .collect();
    let types: Vec<String> = summary
        .entries
        .iter()
        .map(|e| g.type_name(e.node).to_string())
        .collect();
    let named = name_paths(attached, &paths, &r.graph.roots, &types)?;
    let labels_s = t.elapsed().as_secs_f64();
    let entries = summary
        .entries
        .iter()
        .zip(named)
        .map(|(e, p)| RetainedEntry {
            id: g.addr[e.node as usize],
            type_name: explain::clean(g.type_name(e.node), explain::TEXT_CAP),
            retained_bytes: e.retained,
            count: e.count,
            share: e.share,
            own_bytes: g.size[e.node as usize],
            path: p.text.clone(),
            path_detail: p,
            collapsed_from: (e.holder != e.node).then(|| g.addr[e.holder as usize]),
            root: e.root,
            top_types: e
                .top_types
                .iter()
                .map(|s| TypeInside {
                    type_name: explain::clean(
                        g.type_names.get(s.ty as usize).map_or("?", |s| s),
                        120,
                    ),
                    count: s.count,
                    bytes: s.bytes,
                })
                .collect(),
        })
        .collect();
    let mut roots = BTreeMap::new();
    for (kind, n) in &summary.roots {
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        roots.insert(name, *n);
    }
    let max_hold = r
        .agent
        .get("max_hold_s")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    Ok(RetainedReport {
        schema: 1,
        pid: attached.pid,
        python: super::types::python_version(&attached.session),
        source: "agent",
        heap: RetainedHeap {
            objects: summary.objects,
            references: summary.references,
            total_bytes: summary.total_bytes,
            roots,
            held_from_c: r.graph.stats.held_from_c,
        },
        entries,
        attach_s: attached.attach_s,
        graph_s: r.graph_s,
        analysis_s,
        labels_s,
        detach_s: 0.0,
        total_s: 0.0,
        gil_s: attached.session.gil_total_s,
        max_gil_hold_s: max_hold,
        agent_cpu_s: r.agent.get("cpu_s").and_then(Value::as_f64),
    })
}

pub fn run(args: &RetainedArgs) -> CmdResult {
    let started = Instant::now();
    let limit = args.limit as usize;
    let (mut report, detach_s) =
        super::with_session_timed(&args.attach, |attached| collect(attached, limit))?;
    report.detach_s = detach_s;
    report.total_s = started.elapsed().as_secs_f64();
    let mut out = Out::new();
    if args.json {
        let mut body = serde_json::to_string_pretty(&report)?;
        body.push('\n');
        out.text(&body)?;
    } else {
        out.text(&text(&report))?;
    }
    out.flush()?;
    if !args.json {
        eprintln!(
            "memsleuth: attach {:.2} s, graph {:.2} s, analysis {:.2} s, labels {:.2} s, total {:.2} s (GIL held in the target {:.2} s, longest hold {:.2} s)",
            report.attach_s,
            report.graph_s,
            report.analysis_s,
            report.labels_s,
            report.total_s,
            report.gil_s,
            report.max_gil_hold_s
        );
    }
    Ok(ExitCode::SUCCESS)
}
