//! `memsleuth retained`: the objects that keep the most memory alive.
//!
//! By default the graph is read from the target's memory ([`collect_memory`]:
//! a paused copy, walked by `heap::graph` with no code run in the target,
//! roots and graph built by `analysis::retained::memory`, path names read
//! from the same copy). With `--inject`, or where the read-only reader does
//! not support the process, the agent streams the whole heap graph
//! (`retained_graph` op: the census walk plus every object's references and
//! the roots) and names only the references on the entries' paths
//! (`refgraph_labels`), as `why` does. Either way memsleuth builds the
//! dominator tree, the retained sizes and the MAT-style top entries
//! (`analysis::retained`). `why` and `view` use [`take_retained`] (the agent:
//! they are in a session already) for the retained size of the holders they
//! name.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use super::readonly::Target;
use super::{CmdResult, Out};
use crate::agent::{Session, SessionError};
use crate::analysis::refgraph::explain::{self, Labels, LabelsAnswer, RootRecord};
use crate::analysis::refgraph::{PathStatus, RetainerPath, RootKind};
use crate::analysis::retained::agent::{AgentGraph, AgentGraphBuilder, WireError};
use crate::analysis::retained::{
    DomTree, Entry, HeapGraph, Options, dominators, memory, top_entries,
};
use crate::cli::RetainedArgs;
use crate::heap::graph::read_graph;
use crate::heap::read::ReadError;
use crate::heap::read::locate_opened;
use crate::heap::source::{self, Source};
use crate::inject::attach::Attached;
use crate::render::retained::{
    MemoryRead, RetainedEntry, RetainedHeap, RetainedReport, TypeInside, text,
};

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
fn retainer_path(g: &HeapGraph, e: &Entry) -> RetainerPath {
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

/// The entries of a graph and the heap's figures, with the entries' paths
/// named by `name` (given the paths and the entries' type names).
struct Built {
    entries: Vec<RetainedEntry>,
    heap: RetainedHeap,
    analysis_s: f64,
    labels_s: f64,
}

fn build_entries(
    g: &HeapGraph,
    dom: &DomTree,
    dom_s: f64,
    held_from_c: u64,
    limit: usize,
    name: impl FnOnce(&[RetainerPath], &[String]) -> anyhow::Result<Vec<explain::ExplainedPath>>,
) -> anyhow::Result<Built> {
    let t = Instant::now();
    let summary = top_entries(
        g,
        dom,
        &Options {
            limit,
            ..Options::default()
        },
    );
    let analysis_s = dom_s + t.elapsed().as_secs_f64();
    let t = Instant::now();
    let paths: Vec<RetainerPath> = summary
        .entries
        .iter()
        .map(|e| retainer_path(g, e))
        .collect();
    let types: Vec<String> = summary
        .entries
        .iter()
        .map(|e| g.type_name(e.node).to_string())
        .collect();
    let named = name(&paths, &types)?;
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
    Ok(Built {
        entries,
        heap: RetainedHeap {
            objects: summary.objects,
            references: summary.references,
            total_bytes: summary.total_bytes,
            roots,
            held_from_c,
        },
        analysis_s,
        labels_s,
    })
}

/// Runs the whole query in the session.
pub fn collect(attached: &mut Attached, limit: usize) -> anyhow::Result<RetainedReport> {
    let r = take_retained(&mut attached.session)?;
    let b = build_entries(
        &r.graph.graph,
        &r.dom,
        r.dom_s,
        r.graph.stats.held_from_c,
        limit,
        |paths, types| name_paths(attached, paths, &r.graph.roots, types),
    )?;
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
        heap: b.heap,
        entries: b.entries,
        attach_s: attached.attach_s,
        graph_s: r.graph_s,
        analysis_s: b.analysis_s,
        labels_s: b.labels_s,
        detach_s: 0.0,
        total_s: 0.0,
        gil_s: attached.session.gil_total_s,
        max_gil_hold_s: max_hold,
        agent_cpu_s: r.agent.get("cpu_s").and_then(Value::as_f64),
        memory: None,
    })
}

/// Copies retried when the first one caught a collection in progress.
const COLLECTING_RETRIES: u32 = 3;

/// The query from the target's memory: copied while its threads are
/// paused (unless `pause` is off), walked and named after they resume. No
/// code runs in the target.
pub fn collect_memory(source: &Source, limit: usize) -> Result<RetainedReport, ReadError> {
    let started = Instant::now();
    let pid = source.pid();
    let pause = matches!(source, Source::Live { pause: true, .. });
    let mut retries = 0;
    let (opened, interp, read) = loop {
        let opened = source::open(source)?;
        let interp = locate_opened(&opened, source).map_err(|e| gone(e, pid))?;
        let read = read_graph(opened.space.as_ref(), &interp).map_err(|e| gone(e, pid))?;
        if read.collecting && pause && retries < COLLECTING_RETRIES {
            retries += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        break (opened, interp, read);
    };
    let graph_s = started.elapsed().as_secs_f64();
    let walk_s = read.walk_s;
    let skipped = read.skipped;
    let mut warnings = opened.warnings.clone();
    warnings.extend(interp.warnings.iter().cloned());
    warnings.extend(read.warnings);
    let t = Instant::now();
    let (graph, stats) = memory::build(read.parts)
        .map_err(|e| ReadError::Heap(crate::heap::HeapError::Corrupt(e.to_string())))?;
    let dom = dominators(&graph);
    let dom_s = t.elapsed().as_secs_f64();
    let space = opened.space.as_ref();
    let b = build_entries(
        &graph,
        &dom,
        dom_s,
        stats.held_from_c,
        limit,
        |paths, types| {
            let (edges, nodes) = explain::wanted(paths);
            let labels = Labels::new(
                crate::heap::graph::labels(space, &interp, &edges, &nodes),
                &[],
            );
            Ok(paths
                .iter()
                .zip(types)
                .map(|(p, ty)| explain::explain(p, &labels, ty))
                .collect())
        },
    )
    .map_err(|e| ReadError::Heap(crate::heap::HeapError::Corrupt(e.to_string())))?;
    let python = opened
        .python
        .version
        .map_or_else(|| "unknown".into(), |v| v.to_string());
    let tool_peak_rss_bytes = crate::process::Process::open(std::process::id())
        .and_then(|p| p.status())
        .ok()
        .map(|s| s.vm_hwm);
    Ok(RetainedReport {
        schema: 1,
        pid: opened.pid,
        python,
        source: "memory",
        heap: b.heap,
        entries: b.entries,
        attach_s: 0.0,
        graph_s,
        analysis_s: b.analysis_s,
        labels_s: b.labels_s,
        detach_s: 0.0,
        total_s: 0.0,
        gil_s: 0.0,
        max_gil_hold_s: 0.0,
        agent_cpu_s: None,
        memory: Some(MemoryRead {
            paused_s: opened.paused_s,
            copy_s: opened.copy_s,
            copied_bytes: opened.copied_bytes,
            walk_s,
            skipped,
            retries,
            tool_peak_rss_bytes,
            warnings,
            core: source.core_name(),
        }),
    })
}

/// A read that failed on a process that is gone is said as such (`pid`:
/// None for a core file).
fn gone(e: crate::heap::HeapError, pid: Option<u32>) -> ReadError {
    if let Some(pid) = pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        return ReadError::Exited { pid };
    }
    ReadError::Heap(e)
}

pub fn run(args: &RetainedArgs) -> CmdResult {
    let started = Instant::now();
    let limit = args.limit as usize;
    let t = &args.target;
    let mut report = match super::readonly::target(t)? {
        Target::Core(source) => collect_memory(&source, limit)?,
        Target::Live(pid) => {
            let from_memory = super::readonly::from_memory(&t.read, false, |pause| {
                collect_memory(&Source::Live { pid, pause }, limit)
            })?;
            match from_memory {
                Some(r) => r,
                None => {
                    let (mut report, detach_s) =
                        super::with_session_timed(&t.attach.with_pid(pid), |attached| {
                            collect(attached, limit)
                        })?;
                    report.detach_s = detach_s;
                    report
                }
            }
        }
    };
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
    if let Some(m) = &report.memory {
        for w in &m.warnings {
            eprintln!("memsleuth: warning: {w}");
        }
    }
    if args.json {
        return Ok(ExitCode::SUCCESS);
    }
    match &report.memory {
        Some(m) if m.core.is_some() => eprintln!(
            "memsleuth: read from the core {}: graph {:.2} s, analysis {:.2} s, labels {:.2} s, total {:.2} s",
            m.core.as_deref().unwrap_or_default(),
            report.graph_s,
            report.analysis_s,
            report.labels_s,
            report.total_s,
        ),
        Some(m) => eprintln!(
            "memsleuth: read from memory, no code run in the target: paused {:.2} s (copy of {} MiB), graph {:.2} s, analysis {:.2} s, labels {:.2} s, total {:.2} s",
            m.paused_s,
            m.copied_bytes >> 20,
            report.graph_s,
            report.analysis_s,
            report.labels_s,
            report.total_s,
        ),
        None => eprintln!(
            "memsleuth: attach {:.2} s, graph {:.2} s, analysis {:.2} s, labels {:.2} s, total {:.2} s (GIL held in the target {:.2} s, longest hold {:.2} s)",
            report.attach_s,
            report.graph_s,
            report.analysis_s,
            report.labels_s,
            report.total_s,
            report.gil_s,
            report.max_gil_hold_s
        ),
    }
    Ok(ExitCode::SUCCESS)
}
