//! `memsleuth tracemalloc PID start|snapshot|diff|stop`.
//!
//! Every invocation is its own session (attach, act, detach), so snapshots
//! are shipped to the tool and kept here, in
//! `$XDG_CACHE_HOME/memsleuth/tracemalloc/<pid>-<starttime>/snap-N.json`
//! (default `~/.cache/...`): the process start time in the key means a
//! reused pid never mixes with an older process's data. The last two are
//! kept; `diff` compares them without touching the target. Directories of
//! processes that are gone are removed on the next run.
//!
//! tracemalloc keeps running after `start` (the user asked for it); nothing
//! else here starts it, and `stop` ends it and frees its memory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::gc::{call, call_chunked, version};
use super::{CmdResult, Out};
use crate::analysis::tracemalloc::{
    self as tm, ChunkDecoder, GroupBy, Snapshot, SnapshotSummary, StatsChunk, TmReport, TmStatus,
};
use crate::cli::{TraceGroup, TracemallocAction, TracemallocArgs};
use crate::process::Process;

/// Snapshots kept per process.
const KEEP: usize = 2;
const MARKER: &str = "started.json";

#[derive(serde::Deserialize)]
struct StartRaw {
    #[serde(flatten)]
    status: TmStatus,
    was_tracing: bool,
}

#[derive(serde::Deserialize)]
struct StopRaw {
    was_tracing: bool,
    before: TmStatus,
    after: TmStatus,
}

#[derive(serde::Deserialize)]
struct SnapRaw {
    #[serde(flatten)]
    status: TmStatus,
    #[serde(default)]
    traces: u64,
    #[serde(default)]
    traces_own: u64,
    #[serde(default)]
    seconds: f64,
    #[serde(default)]
    collected: Option<i64>,
}

/// Where this tool keeps its tracemalloc snapshots.
pub fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty() && Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("memsleuth").join("tracemalloc")
}

/// The snapshots of one process.
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn for_process(root: &Path, pid: u32, start_time: u64) -> Store {
        Store {
            dir: root.join(format!("{pid}-{start_time}")),
        }
    }

    fn create(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))
    }

    /// (seq, path) of the stored snapshots, oldest first.
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name();
                        let seq = name
                            .to_str()?
                            .strip_prefix("snap-")?
                            .strip_suffix(".json")?
                            .parse()
                            .ok()?;
                        Some((seq, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn next_seq(&self) -> u64 {
        self.list().last().map_or(1, |(s, _)| s + 1)
    }

    /// Writes the snapshot (atomically) and drops all but the last [`KEEP`].
    pub fn save(&self, snap: &Snapshot) -> anyhow::Result<PathBuf> {
        self.create()?;
        let path = self.dir.join(format!("snap-{}.json", snap.seq));
        let tmp = self.dir.join(format!(".snap-{}.tmp", snap.seq));
        let data = serde_json::to_vec(snap)?;
        std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        let list = self.list();
        if list.len() > KEEP {
            for (_, p) in &list[..list.len() - KEEP] {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(path)
    }

    pub fn load(path: &Path) -> anyhow::Result<Snapshot> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&data)
            .with_context(|| format!("{} is not a memsleuth snapshot", path.display()))
    }

    /// Removes the stored snapshots (a new tracing period starts).
    pub fn clear_snapshots(&self) {
        for (_, p) in self.list() {
            let _ = std::fs::remove_file(p);
        }
    }

    fn marker(&self) -> PathBuf {
        self.dir.join(MARKER)
    }
}

/// How long the snapshots of a process that is gone are kept (so `diff`
/// still works after, say, the OOM killer took it).
const KEEP_GONE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Parses a store directory name, `<pid>-<starttime>`.
fn parse_dir_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Removes the directories of processes that are gone (or whose pid now
/// belongs to another process) and were last written to over a week ago.
pub fn prune(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Some((pid, start)) = e.file_name().to_str().and_then(parse_dir_name) else {
            continue;
        };
        let alive = Process::unchecked(pid)
            .stat()
            .is_ok_and(|st| st.start_time == start);
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_GONE);
        if !alive && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The most recently written store of a pid whose process is gone.
fn store_of_gone(root: &Path, pid: u32) -> Option<Store> {
    let rd = std::fs::read_dir(root).ok()?;
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(parse_dir_name)
                .is_some_and(|(p, _)| p == pid)
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, dir)| Store { dir })
}

fn no_27(pid: u32, v: (u32, u32, u32)) -> anyhow::Error {
    anyhow::anyhow!(
        "tracemalloc needs Python 3.4+; process {pid} runs Python {}.{}.{}. On 2.7 use \
         `memsleuth growth {pid}` (which types keep growing) and `memsleuth why {pid} --type T` \
         (who holds them); `memsleuth native {pid}` for the allocators",
        v.0,
        v.1,
        v.2
    )
}

fn group_by(g: TraceGroup) -> GroupBy {
    match g {
        TraceGroup::Line => GroupBy::Line,
        TraceGroup::Traceback => GroupBy::Traceback,
    }
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn base_report(pid: u32, action: &str, store: &Store) -> TmReport {
    TmReport {
        schema: 1,
        pid,
        action: action.into(),
        python: None,
        attach_s: None,
        gil_s: None,
        status: None,
        was_tracing: None,
        snapshot: None,
        diff: None,
        store: store.dir.display().to_string(),
        notes: Vec::new(),
    }
}

pub fn run(args: &TracemallocArgs) -> CmdResult {
    let pid = args.attach.pid;
    let root = cache_root();
    prune(&root);
    let opened = super::open(pid).and_then(|p| {
        let start = p.stat()?.start_time;
        Ok((p, start))
    });
    let (proc, start_time) = match (opened, &args.action) {
        (Ok(v), _) => v,
        // The snapshots of a process that is gone can still be compared.
        (Err(e), TracemallocAction::Diff { by, limit }) => {
            let Some(store) = store_of_gone(&root, pid) else {
                return Err(e.into());
            };
            let mut report = diff(pid, &store, group_by(*by), *limit)?;
            report.notes.insert(
                0,
                format!("Process {pid} is gone; these are the last snapshots stored for it."),
            );
            return print(args, &report);
        }
        (Err(e), _) => return Err(e.into()),
    };
    let store = Store::for_process(&root, pid, start_time);

    let report = match &args.action {
        TracemallocAction::Diff { by, limit } => diff(pid, &store, group_by(*by), *limit)?,
        action => {
            // Refuse 2.7 before attaching when the binary tells the version.
            if let Ok(maps) = proc.maps()
                && let Ok(Some(py)) = crate::python::detect(&proc, &maps)
                && let Some(v) = py.version
                && v.major == 2
            {
                return Err(no_27(pid, (2, u32::from(v.minor), u32::from(v.micro))));
            }
            super::with_session(&args.attach, |attached| {
                let v = version(&attached.session);
                if v < (3, 4, 0) {
                    return Err(no_27(pid, v));
                }
                let mut r = match action {
                    TracemallocAction::Start { frames } => {
                        start(&mut attached.session, pid, *frames, &store)?
                    }
                    TracemallocAction::Snapshot { no_collect } => {
                        snapshot(&mut attached.session, pid, start_time, !no_collect, &store)?
                    }
                    TracemallocAction::Stop => stop(&mut attached.session, pid, &store)?,
                    TracemallocAction::Diff { .. } => unreachable!("handled above"),
                };
                r.python = Some(format!("{}.{}.{}", v.0, v.1, v.2));
                r.attach_s = Some(attached.attach_s);
                r.gil_s = Some(attached.session.gil_total_s);
                Ok(r)
            })?
        }
    };
    print(args, &report)
}

fn print(args: &TracemallocArgs, report: &TmReport) -> CmdResult {
    let mut out = Out::new();
    if args.json {
        out.json(report, false)?;
    } else {
        out.text(&crate::render::tracemalloc::report(report))?;
    }
    out.flush()?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn start(
    session: &mut crate::agent::Session,
    pid: u32,
    frames: u32,
    store: &Store,
) -> anyhow::Result<TmReport> {
    let raw: StartRaw = call(session, "tm_start", json!({"frames": frames}))?;
    let mut r = base_report(pid, "start", store);
    if raw.was_tracing {
        r.notes.push(format!(
            "tracemalloc was already tracing (started by the application or an earlier \
             `start`); it keeps its traceback limit of {} frame(s).",
            raw.status.traceback_limit
        ));
    } else {
        // A new tracing period: older snapshots would not compare.
        store.clear_snapshots();
        store.create()?;
        let marker = json!({"frames": frames, "unix": now_unix()});
        std::fs::write(store.marker(), marker.to_string())
            .with_context(|| format!("cannot write {}", store.marker().display()))?;
    }
    r.notes.push(
        "tracemalloc costs the target CPU (often 2-4x on allocation-heavy code, more with \
         many frames) and memory (about half as much again, for the traces) until it is \
         stopped."
            .into(),
    );
    r.notes.push(format!(
        "It stays on after memsleuth detaches, by design: take snapshots with `memsleuth \
         tracemalloc {pid} snapshot`, compare with `diff`, and end it with `memsleuth \
         tracemalloc {pid} stop`. It only sees allocations made from now on."
    ));
    r.was_tracing = Some(raw.was_tracing);
    r.status = Some(raw.status);
    Ok(r)
}

fn snapshot(
    session: &mut crate::agent::Session,
    pid: u32,
    start_time: u64,
    collect: bool,
    store: &Store,
) -> anyhow::Result<TmReport> {
    let mut dec = ChunkDecoder::default();
    let mut bad: Option<String> = None;
    let raw: SnapRaw = call_chunked(
        session,
        "tm_snapshot",
        json!({"collect": collect}),
        &mut |frame| {
            if bad.is_some() {
                return Ok(());
            }
            match serde_json::from_slice::<StatsChunk>(&frame.payload) {
                Ok(chunk) => {
                    if let Err(e) = dec.feed(chunk) {
                        bad = Some(e);
                    }
                }
                Err(e) => bad = Some(format!("bad snapshot chunk: {e}")),
            }
            Ok(())
        },
    )?;
    if let Some(e) = bad {
        anyhow::bail!("the snapshot from process {pid} could not be read: {e}");
    }
    if !raw.status.tracing {
        anyhow::bail!(
            "tracemalloc is not tracing in process {pid}: start it first with `memsleuth \
             tracemalloc {pid} start` (it only sees allocations made after that)"
        );
    }
    let seq = store.next_seq();
    let snap = Snapshot {
        schema: 1,
        pid,
        start_time,
        seq,
        taken_unix: now_unix(),
        traceback_limit: raw.status.traceback_limit,
        traced_current: raw.status.traced_current,
        traced_peak: raw.status.traced_peak,
        overhead: raw.status.overhead,
        traces: raw.traces,
        traces_own: raw.traces_own,
        stats: dec.stats,
    };
    let path = store.save(&snap)?;
    let mut r = base_report(pid, "snapshot", store);
    r.snapshot = Some(SnapshotSummary {
        seq,
        path: path.display().to_string(),
        traces: snap.traces,
        traces_own: snap.traces_own,
        sites: snap.stats.len() as u64,
        total_size: snap.total_size(),
        top: tm::top(&snap, GroupBy::Line, 10),
        seconds: raw.seconds,
        collected: raw.collected,
    });
    if collect && raw.collected.is_none() {
        r.notes.push(
            "Automatic collection is off in the target, so no gc.collect() ran first: \
             unreachable cycles (including what earlier memsleuth sessions left) count as live."
                .into(),
        );
    }
    if store.list().len() < 2 {
        r.notes.push(format!(
            "Take another snapshot later, then `memsleuth tracemalloc {pid} diff` shows what grew."
        ));
    } else {
        r.notes.push(format!(
            "`memsleuth tracemalloc {pid} diff` compares it with the previous one."
        ));
    }
    r.status = Some(raw.status);
    Ok(r)
}

fn stop(session: &mut crate::agent::Session, pid: u32, store: &Store) -> anyhow::Result<TmReport> {
    let raw: StopRaw = call(session, "tm_stop", json!({}))?;
    let mut r = base_report(pid, "stop", store);
    let ours = store.marker().exists();
    let _ = std::fs::remove_file(store.marker());
    if !raw.was_tracing {
        r.notes
            .push("tracemalloc was not tracing; nothing to stop.".into());
    } else {
        if !ours {
            r.notes.push(
                "tracemalloc had not been started by memsleuth (the application started it?); \
                 stopped anyway, as asked."
                    .into(),
            );
        }
        r.notes.push(format!(
            "Stopped: its traces ({} of memory) are freed.",
            crate::render::units::bytes(raw.before.overhead)
        ));
    }
    if !store.list().is_empty() {
        r.notes.push(format!(
            "Stored snapshots stay in {} (`diff` still works).",
            store.dir.display()
        ));
    }
    r.was_tracing = Some(raw.was_tracing);
    r.status = Some(raw.after);
    Ok(r)
}

fn diff(pid: u32, store: &Store, by: GroupBy, limit: usize) -> anyhow::Result<TmReport> {
    let list = store.list();
    if list.len() < 2 {
        anyhow::bail!(
            "diff needs two snapshots of process {pid} and there {}: run `memsleuth tracemalloc \
             {pid} snapshot`{}",
            match list.len() {
                0 => "are none".to_string(),
                _ => "is one".to_string(),
            },
            if list.is_empty() {
                " twice, some time apart (after `start`)"
            } else {
                " again"
            }
        );
    }
    let old = Store::load(&list[list.len() - 2].1)?;
    let new = Store::load(&list[list.len() - 1].1)?;
    let mut r = base_report(pid, "diff", store);
    let d = tm::diff(&old, &new, by, limit);
    if d.sites.is_empty() {
        r.notes
            .push("Nothing changed between the two snapshots.".into());
    }
    if new.traceback_limit <= 1 && by == GroupBy::Traceback {
        r.notes.push(
            "Tracebacks have one frame (start --frames N records more), so by traceback is \
             the same as by line."
                .into(),
        );
    }
    r.diff = Some(d);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: u64) -> Snapshot {
        Snapshot {
            schema: 1,
            pid: 1,
            start_time: 2,
            seq,
            taken_unix: seq as f64,
            traceback_limit: 1,
            traced_current: 0,
            traced_peak: 0,
            overhead: 0,
            traces: 0,
            traces_own: 0,
            stats: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_last_two() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::for_process(tmp.path(), 4242, 99);
        assert_eq!(store.next_seq(), 1);
        for _ in 0..4 {
            let seq = store.next_seq();
            store.save(&snap(seq)).unwrap();
        }
        let seqs: Vec<u64> = store.list().iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [3, 4]);
        assert_eq!(store.next_seq(), 5);
        assert_eq!(Store::load(&store.list()[1].1).unwrap().seq, 4);
        assert!(store.dir.ends_with("4242-99"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        store.clear_snapshots();
        assert!(store.list().is_empty());
    }

    #[test]
    fn prunes_only_old_directories_of_gone_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let my_start = Process::unchecked(me).stat().unwrap().start_time;
        let mine = Store::for_process(tmp.path(), me, my_start);
        let gone_recent = Store::for_process(tmp.path(), me, my_start + 1);
        let gone_old = Store::for_process(tmp.path(), u32::MAX - 1, 5);
        for s in [&mine, &gone_recent, &gone_old] {
            s.save(&snap(1)).unwrap();
        }
        let old = std::time::SystemTime::now() - KEEP_GONE - std::time::Duration::from_secs(60);
        for s in [&mine, &gone_old] {
            std::fs::File::open(&s.dir)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        std::fs::create_dir(tmp.path().join("not-a-store")).unwrap();
        prune(tmp.path());
        assert!(mine.dir.exists(), "a live process keeps its snapshots");
        assert!(
            gone_recent.dir.exists(),
            "recent data of a gone process is kept"
        );
        assert!(!gone_old.dir.exists());
        assert!(tmp.path().join("not-a-store").exists());
        assert_eq!(
            store_of_gone(tmp.path(), me).map(|s| s.dir.exists()),
            Some(true)
        );
        assert!(store_of_gone(tmp.path(), 7).is_none());
        assert_eq!(parse_dir_name("12-345"), Some((12, 345)));
        assert_eq!(parse_dir_name("12-x"), None);
    }
}
