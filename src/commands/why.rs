//! `memsleuth why`: why are these objects alive?
//!
//! The agent streams the reference graph (`refgraph` op); here it is
//! reversed and searched backwards from each sampled object to the nearest
//! root; the agent then names only the references on the chosen paths
//! (`refgraph_labels`), and the paths are aggregated over the samples.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CmdResult, Out};
use crate::agent::SessionError;
use crate::analysis::refgraph::explain::{self, Labels, LabelsAnswer, RootRecord};
use crate::analysis::refgraph::{GraphBuilder, GraphError, RootKind, Scratch};
use crate::cli::{GraphFormat, WhyArgs};
use crate::inject::attach::Attached;
use crate::render::why::{GraphOutput, HeapStats, HolderRetained, Query, WhyReport};
use crate::render::{graph, why};

/// Edges named per `refgraph_labels` request (each scans the heap once).
const LABEL_BATCH: usize = 20_000;
/// Most roots accepted from the agent.
const MAX_ROOTS: usize = 1_000_000;

/// The `refgraph` answer (the graph itself came in chunks).
#[derive(Debug, Deserialize)]
struct GraphAnswer {
    #[serde(default)]
    objects: u64,
    #[serde(default)]
    matched_types: Vec<String>,
    #[serde(default)]
    instances: u64,
    #[serde(default)]
    targets: Vec<u64>,
    #[serde(default)]
    target_types: HashMap<String, String>,
    #[serde(default)]
    roots: Vec<RootRecord>,
    #[serde(default)]
    excluded: Vec<u64>,
    #[serde(default)]
    total_s: f64,
}

/// `0x7f...` or decimal.
pub fn parse_address(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    };
    match parsed {
        Ok(0) | Err(_) => {
            bail!("--id {s:?} is not an object address: give id(obj) in decimal or 0x hex")
        }
        Ok(v) => Ok(v),
    }
}

pub fn run(args: &WhyArgs) -> CmdResult {
    let object_id = args.id.as_deref().map(parse_address).transpose()?;
    let query = Query {
        type_name: args.type_name.clone(),
        id: object_id,
        samples: args.samples as usize,
        depth: args.depth as usize,
    };
    let retained = !args.no_retained;
    let mut report = super::with_session(&args.attach, |attached| {
        collect_with(attached, &query, retained)
    })?;
    let found = !report.paths.is_empty();
    let mut body = String::new();
    let mut note = None;
    match args.format {
        GraphFormat::Text => {}
        GraphFormat::Dot => {
            let g = why::graph(&report);
            report.graph = Some(GraphOutput {
                format: "dot",
                engine: None,
                text: graph::to_dot(&g),
            });
        }
        GraphFormat::Svg => {
            let g = why::graph(&report);
            let (svg, engine) = graph::to_svg(&g)?;
            report.graph = Some(GraphOutput {
                format: "svg",
                engine: Some(engine),
                text: svg,
            });
            note = Some(match engine {
                graph::Engine::Graphviz => "drawn with graphviz",
                graph::Engine::Builtin => {
                    "drawn with the built-in layout (graphviz `dot` not used)"
                }
            });
        }
    }
    if args.json {
        body = serde_json::to_string_pretty(&report)?;
        body.push('\n');
    } else if let Some(g) = &report.graph {
        body.push_str(&g.text);
    } else {
        body = why::text(&report);
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, body.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            if !args.json && args.format != GraphFormat::Text {
                // The summary still goes to the terminal.
                let mut out = Out::new();
                out.text(&why::text(&report))?;
                out.flush()?;
            }
            eprintln!(
                "memsleuth: wrote {}{}",
                path.display(),
                note.map(|n| format!(" ({n})")).unwrap_or_default()
            );
        }
        None => {
            let mut out = Out::new();
            out.text(&body)?;
            out.flush()?;
        }
    }
    if !args.json {
        eprintln!(
            "memsleuth: attach {:.2} s, graph {:.2} s, labels {:.2} s, analysis {:.2} s, retained sizes {:.2} s (GIL held in the target {:.2} s)",
            report.attach_s,
            report.collect_s,
            report.labels_s,
            report.analysis_s,
            report.retained_s,
            report.gil_s
        );
    }
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn remote(op: &str, resp: &crate::agent::Response) -> anyhow::Error {
    let e = resp.error.clone().unwrap_or_default();
    anyhow::anyhow!("`{op}` failed in the target: {e}")
}

/// Runs the query in the session: the graph, the search, the labels (also
/// used by `memsleuth view` for one object at a time); no retained sizes.
pub fn collect(attached: &mut Attached, query: &Query) -> anyhow::Result<WhyReport> {
    collect_with(attached, query, false)
}

/// [`collect`], and with `retained` the retained size of each group's
/// holder (one more walk of the whole heap graph).
pub fn collect_with(
    attached: &mut Attached,
    query: &Query,
    retained: bool,
) -> anyhow::Result<WhyReport> {
    let samples = query.samples;
    let depth = query.depth;
    let t_collect = Instant::now();
    let mut builder = GraphBuilder::new();
    let mut chunk_error: Option<GraphError> = None;
    let params = json!({
        "type": query.type_name,
        "object_id": query.id,
        "samples": samples,
        "seed": 0,
    });
    let resp = attached
        .session
        .request_chunked("refgraph", params, &mut |frame| {
            if chunk_error.is_some() {
                // Keep reading (the session stays usable) but drop the rest.
                return Ok(());
            }
            let h = &frame.header;
            let kind = h.get("kind").and_then(Value::as_str).unwrap_or("");
            let itemsize = h.get("itemsize").and_then(Value::as_u64).unwrap_or(8) as usize;
            let big = h.get("byteorder").and_then(Value::as_str) == Some("big");
            if let Err(e) = builder.add_chunk(kind, itemsize, big, &frame.payload) {
                chunk_error = Some(e);
                builder = GraphBuilder::new();
            }
            Ok::<(), SessionError>(())
        })?;
    let collect_s = t_collect.elapsed().as_secs_f64();

    if !resp.ok {
        return Err(remote("refgraph", &resp));
    }
    if let Some(e) = chunk_error {
        return Err(e.into());
    }
    let answer: GraphAnswer =
        serde_json::from_value(resp.result).context("unexpected `refgraph` answer")?;
    if answer.roots.len() > MAX_ROOTS {
        bail!(
            "the target listed {} roots; more than memsleuth accepts",
            answer.roots.len()
        );
    }

    let t_analysis = Instant::now();
    let roots: Vec<(u64, RootKind)> = answer
        .roots
        .iter()
        .filter_map(|r| Some((r.id, RootKind::from_agent(&r.kind)?)))
        .collect();
    let g = builder.finish(&roots, &answer.excluded)?;
    let mut scratch = Scratch::default();
    let targets: Vec<u64> = answer.targets.iter().copied().take(samples).collect();
    let found: Vec<_> = targets
        .iter()
        .map(|&t| g.find_path(t, depth, &mut scratch))
        .collect();
    let mut analysis_s = t_analysis.elapsed().as_secs_f64();

    // Names for the edges on the chosen paths only.
    let t_labels = Instant::now();
    let (edges, nodes) = explain::wanted(&found);
    let mut answer_labels = LabelsAnswer::default();
    let mut start = 0;
    loop {
        let batch = &edges[start..(start + LABEL_BATCH).min(edges.len())];
        let node_batch: &[u64] = if start == 0 { &nodes } else { &[] };
        let pairs: Vec<[u64; 2]> = batch.iter().map(|&(s, d)| [s, d]).collect();
        let resp = attached.session.request(
            "refgraph_labels",
            json!({"edges": pairs, "nodes": node_batch}),
        )?;
        if !resp.ok {
            return Err(remote("refgraph_labels", &resp));
        }
        let part: LabelsAnswer =
            serde_json::from_value(resp.result).context("unexpected `refgraph_labels` answer")?;
        answer_labels.edges.extend(part.edges);
        answer_labels.nodes.extend(part.nodes);
        start += LABEL_BATCH;
        if start >= edges.len() {
            break;
        }
    }
    let labels_s = t_labels.elapsed().as_secs_f64();

    let t_explain = Instant::now();
    let labels = Labels::new(answer_labels, &answer.roots);
    let paths: Vec<_> = found
        .iter()
        .map(|p| {
            let ty = answer
                .target_types
                .get(&p.target.to_string())
                .map(String::as_str)
                .unwrap_or("?");
            explain::explain(p, &labels, ty)
        })
        .collect();
    let groups = explain::aggregate(&paths, &labels.roots);
    analysis_s += t_explain.elapsed().as_secs_f64();

    let t_retained = Instant::now();
    let holders = if retained && !groups.is_empty() {
        holders_retained(attached, &groups, &paths)?
    } else {
        Vec::new()
    };
    let retained_s = if retained {
        t_retained.elapsed().as_secs_f64()
    } else {
        0.0
    };

    let mut root_counts = BTreeMap::new();
    for (kind, n) in g.root_counts() {
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        root_counts.insert(name, n);
    }
    Ok(WhyReport {
        schema: 1,
        pid: attached.pid,
        query: query.clone(),
        matched_types: answer
            .matched_types
            .iter()
            .take(100)
            .map(|t| explain::clean(t, explain::TEXT_CAP))
            .collect(),
        instances: answer.instances,
        sampled: paths.len(),
        heap: HeapStats {
            objects: answer.objects,
            references: g.edge_count(),
            roots: root_counts,
        },
        groups,
        paths,
        attach_s: attached.attach_s,
        gil_s: attached.session.gil_total_s,
        collect_s,
        agent_graph_s: if answer.total_s.is_finite() {
            answer.total_s.max(0.0)
        } else {
            0.0
        },
        labels_s,
        analysis_s,
        graph: None,
        holders,
        retained_s,
    })
}

/// The holder of a group: the deepest object every member's path runs
/// through, short of the samples themselves (for one sample, the object
/// that refers to it).
fn holder_of(g: &explain::Group, paths: &[explain::ExplainedPath]) -> Option<u64> {
    let members: Vec<&explain::ExplainedPath> =
        g.members.iter().filter_map(|&m| paths.get(m)).collect();
    let first = members.first()?;
    let mut common = 0;
    while common < first.nodes.len()
        && members
            .iter()
            .all(|p| p.nodes.get(common).map(|n| n.id) == Some(first.nodes[common].id))
    {
        common += 1;
    }
    // Short of the sample itself, and of the root.
    let shortest = members.iter().map(|p| p.nodes.len()).min()?;
    let k = common.min(shortest.saturating_sub(1));
    (k >= 2).then(|| first.nodes[k - 1].id)
}

/// The retained size of each group's holder, from the dominator tree of the
/// whole heap graph.
fn holders_retained(
    attached: &mut Attached,
    groups: &[explain::Group],
    paths: &[explain::ExplainedPath],
) -> anyhow::Result<Vec<HolderRetained>> {
    let ids: Vec<Option<u64>> = groups.iter().map(|g| holder_of(g, paths)).collect();
    let want: Vec<u64> = ids.iter().flatten().copied().collect();
    if want.is_empty() {
        return Ok(Vec::new());
    }
    let r = super::retained::take_retained(&mut attached.session)?;
    let sizes = r.of_many(&want);
    let g = &r.graph.graph;
    let mut out = Vec::new();
    let mut k = 0;
    for (gi, id) in ids.iter().enumerate() {
        let Some(id) = *id else { continue };
        if let Some(Some((bytes, count))) = sizes.get(k) {
            let ty = g
                .node_of(id)
                .map(|n| g.type_name(n).to_string())
                .unwrap_or_default();
            out.push(HolderRetained {
                group: gi,
                id,
                type_name: explain::clean(&ty, 80),
                retained_bytes: *bytes,
                count: *count,
            });
        }
        k += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("0x10").unwrap(), 16);
        assert_eq!(parse_address("140000").unwrap(), 140000);
        assert!(parse_address("0").is_err());
        assert!(parse_address("zz").is_err());
        assert!(parse_address("-1").is_err());
    }
}
