//! The viewer's worker thread: it owns the agent session, answers the UI's
//! commands one at a time in the background, and always detaches at the
//! end (on `Quit`, or when the UI is gone, also after a panic).
//!
//! Commands queue while one runs; a newer command of the same kind
//! supersedes a queued one (the user moved on), and the superseded object
//! queries are answered "skipped" so the UI can ask again when it returns.
//! Every answer is an [`Update`]; with `MEMSLEUTH_VIEW_RECORD=DIR` each is
//! also written to DIR as JSON (how the snapshot fixtures were recorded).

use std::collections::VecDeque;
use std::mem::discriminant;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};

use serde_json::{Value, json};

use crate::analysis::gcstate::GcBasics;
use crate::commands::gc::call;
use crate::commands::types::{CensusRequest, take_census};
use crate::inject::attach::Attached;
use crate::process::Process;
use crate::render::tui::data::{
    Chain, GcLine, InstanceList, InstanceQuery, Referents, RetainedSizes,
};
use crate::render::tui::{Command, Update};
use crate::render::why::Query;

/// Referents listed per object, and the repr cap for listings.
const REFERENTS: usize = 200;
const REPR_CAP: usize = 200;
/// Longest retainer chain searched.
const WHY_DEPTH: usize = 30;
/// How long the gc panel waits between its two reads.
const GC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(300);

pub struct Options {
    pub gc_only: bool,
    pub record: Option<PathBuf>,
}

/// Runs until `Quit` or until the UI hangs up, then detaches; the last
/// update is always `Detached`.
pub fn run(mut attached: Attached, rx: Receiver<Command>, tx: Sender<Update>, opts: Options) {
    let proc = Process::unchecked(attached.pid);
    let mut queue: VecDeque<Command> = VecDeque::new();
    let mut rec = Recorder::new(opts.record.clone());
    'outer: loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(c) => enqueue(&mut queue, c, &tx),
                Err(_) => break,
            }
        }
        while let Ok(c) = rx.try_recv() {
            enqueue(&mut queue, c, &tx);
        }
        let Some(cmd) = queue.pop_front() else {
            continue;
        };
        if cmd == Command::Quit || queue.contains(&Command::Quit) {
            break 'outer;
        }
        let _ = tx.send(Update::Busy {
            label: label(&cmd).to_string(),
            queued: queue.len(),
        });
        // A panic in the analysis of one answer must not lose the session.
        let updates = catch_unwind(AssertUnwindSafe(|| {
            handle(&mut attached, &proc, &cmd, &opts, &mut rec)
        }))
        .unwrap_or_else(|_| vec![failed(&cmd, "internal error (see the message after exit)")]);
        for u in updates {
            let _ = tx.send(u);
        }
        if queue.is_empty() {
            let _ = tx.send(Update::Idle);
        }
    }
    let _ = tx.send(Update::Busy {
        label: "detaching".into(),
        queued: 0,
    });
    let r = attached.detach().map_err(|e| e.to_string());
    let _ = tx.send(Update::Detached(r));
}

/// Adds `c`, replacing a queued command of the same kind.
fn enqueue(queue: &mut VecDeque<Command>, c: Command, tx: &Sender<Update>) {
    if let Some(old) = queue
        .iter_mut()
        .find(|q| discriminant(*q) == discriminant(&c))
    {
        let stale = std::mem::replace(old, c);
        if stale != *old && matches!(stale, Command::Referents(..) | Command::Why(_)) {
            let _ = tx.send(failed(
                &stale,
                "skipped (superseded); it is asked again when shown",
            ));
        }
        return;
    }
    queue.push_back(c);
}

fn label(c: &Command) -> &'static str {
    match c {
        Command::Census => "census",
        Command::Instances(_) => "sampling instances",
        Command::Referents(..) => "reading the object",
        Command::Why(_) => "walking the reference graph",
        Command::Retained => "computing retained sizes",
        Command::Gc => "reading the collector",
        Command::Maps => "reading mappings",
        Command::Quit => "detaching",
    }
}

fn failed(c: &Command, why: &str) -> Update {
    let e = why.to_string();
    match c {
        Command::Census => Update::Census(Err(e)),
        Command::Instances(_) => Update::Instances(Err(e)),
        Command::Referents(id, _) => Update::Referents(*id, Err(e)),
        Command::Why(id) => Update::Why(*id, Err(e)),
        Command::Retained => Update::Retained(Err(e)),
        Command::Gc => Update::Gc(Err(e)),
        Command::Maps => Update::Maps(Err(e)),
        Command::Quit => Update::Idle,
    }
}

fn handle(
    attached: &mut Attached,
    proc: &Process,
    cmd: &Command,
    opts: &Options,
    rec: &mut Recorder,
) -> Vec<Update> {
    let err = |e: anyhow::Error| super::super::error_sentence(&e);
    match cmd {
        Command::Census => {
            let req = CensusRequest {
                gc_only: opts.gc_only,
                collect: false,
                keep_ids: false,
                ids_by_call: false,
            };
            let census = take_census(&mut attached.session, req).map(|(c, _)| c);
            if let Ok(c) = &census {
                rec.write("census", c);
            }
            let mut out = vec![Update::Census(census.map(Box::new).map_err(err))];
            // The header's gc line rides along (a tiny request).
            if let Ok(b) = call::<GcBasics>(&mut attached.session, "gc_sample", Value::Null) {
                out.push(Update::GcLine(GcLine {
                    enabled: b.enabled,
                    garbage: b.garbage_len,
                }));
            }
            out
        }
        Command::Instances(q) => {
            let r = instances(attached, q);
            if let Ok(l) = &r {
                rec.write("instances", l);
            }
            vec![Update::Instances(r)]
        }
        Command::Referents(id, parent) => {
            let r = call::<Referents>(
                &mut attached.session,
                "refgraph_referents",
                json!({"object_id": id, "parent": parent, "limit": REFERENTS, "cap": REPR_CAP}),
            )
            .map_err(err);
            if let Ok(x) = &r {
                rec.write("referents", x);
            }
            vec![Update::Referents(*id, r)]
        }
        Command::Why(id) => {
            let r = why(attached, *id);
            if let Ok(c) = &r {
                rec.write("why", c);
            }
            vec![Update::Why(*id, r)]
        }
        Command::Retained => {
            let r = super::super::retained::take_retained(&mut attached.session)
                .map(|r| {
                    let g = &r.graph.graph;
                    let mut by_id: Vec<(u64, u64, u32)> = g
                        .addr
                        .iter()
                        .zip(&r.dom.retained)
                        .zip(&r.dom.count)
                        .map(|((&a, &b), &n)| (a, b, n))
                        .collect();
                    by_id.sort_unstable_by_key(|e| e.0);
                    std::sync::Arc::new(RetainedSizes {
                        by_id,
                        total_bytes: r.dom.total,
                    })
                })
                .map_err(err);
            vec![Update::Retained(r)]
        }
        Command::Gc => {
            let r = super::super::gc::read_report(attached, proc, 25, GC_INTERVAL, false);
            if let Ok(g) = &r {
                rec.write("gc", g);
            }
            vec![Update::Gc(r.map(Box::new).map_err(err))]
        }
        // Mappings need no agent: the UI reads them on its own thread.
        Command::Maps | Command::Quit => Vec::new(),
    }
}

fn instances(attached: &mut Attached, q: &InstanceQuery) -> Result<InstanceList, String> {
    let resp = attached
        .session
        .request(
            "census_instances",
            json!({
                "tids": q.tids,
                "dict_of": q.dict_of,
                "untracked": q.untracked,
                "expect": q.expect,
                "limit": crate::render::tui::app::INSTANCE_SAMPLES,
                "cap": REPR_CAP,
            }),
        )
        .map_err(|e| e.to_string())?;
    if !resp.ok {
        return Err(format!(
            "`census_instances` failed in the target: {}",
            resp.error.unwrap_or_default()
        ));
    }
    InstanceList::from_agent(q, &resp.result)
}

fn why(attached: &mut Attached, id: u64) -> Result<Chain, String> {
    let query = Query {
        type_name: None,
        id: Some(id),
        samples: 1,
        depth: WHY_DEPTH,
    };
    let report = super::super::why::collect(attached, &query)
        .map_err(|e| super::super::error_sentence(&e))?;
    report
        .paths
        .first()
        .map(Chain::from_path)
        .ok_or_else(|| "the object is gone (or it is memsleuth's own)".to_string())
}

/// Writes answers as JSON files `NNN-kind.json` when recording.
struct Recorder {
    dir: Option<PathBuf>,
    n: u32,
}

impl Recorder {
    fn new(dir: Option<PathBuf>) -> Recorder {
        if let Some(d) = &dir {
            let _ = std::fs::create_dir_all(d);
        }
        Recorder { dir, n: 0 }
    }

    fn write<T: serde::Serialize>(&mut self, kind: &str, value: &T) {
        let Some(dir) = &self.dir else {
            return;
        };
        self.n += 1;
        if let Ok(text) = serde_json::to_string_pretty(value) {
            let _ = std::fs::write(dir.join(format!("{:03}-{kind}.json", self.n)), text);
        }
    }
}
