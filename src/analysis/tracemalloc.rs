//! `memsleuth tracemalloc`: snapshots shipped from the target, grouped and
//! diffed here (pure functions).
//!
//! The agent sends one entry per distinct traceback (size, count, frames
//! most recent first), with its own and tracemalloc's frames already left
//! out. Grouping "by line" keys on the most recent frame, like
//! `Snapshot.statistics('lineno')`; "by traceback" on the whole traceback.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// All live allocations made at one traceback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStat {
    /// Most recent frame first.
    pub frames: Vec<Frame>,
    pub size: u64,
    pub count: u64,
}

/// One snapshot as kept on the tool side
/// (`~/.cache/memsleuth/tracemalloc/<pid>-<starttime>/snap-N.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: u32,
    pub pid: u32,
    /// Process start time (clock ticks after boot, /proc/PID/stat field 22):
    /// with the pid, names the process for good.
    pub start_time: u64,
    /// 1, 2, 3... per process.
    pub seq: u64,
    /// Unix time on the tool side when taken.
    pub taken_unix: f64,
    pub traceback_limit: u32,
    pub traced_current: u64,
    pub traced_peak: u64,
    /// Memory tracemalloc itself uses in the target.
    pub overhead: u64,
    /// Traces kept, and traces dropped because they were ours.
    pub traces: u64,
    pub traces_own: u64,
    pub stats: Vec<TraceStat>,
}

impl Snapshot {
    pub fn total_size(&self) -> u64 {
        self.stats.iter().map(|s| s.size).sum()
    }
}

/// How to group allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Line,
    Traceback,
}

/// The frames that identify a group: the most recent one (by line) or all.
fn key(stat: &TraceStat, by: GroupBy) -> Vec<Frame> {
    match by {
        GroupBy::Line => stat.frames.first().cloned().into_iter().collect(),
        GroupBy::Traceback => stat.frames.clone(),
    }
}

/// (size, count) per group.
pub fn group(snap: &Snapshot, by: GroupBy) -> HashMap<Vec<Frame>, (u64, u64)> {
    let mut out: HashMap<Vec<Frame>, (u64, u64)> = HashMap::new();
    for s in &snap.stats {
        let e = out.entry(key(s, by)).or_default();
        e.0 = e.0.saturating_add(s.size);
        e.1 = e.1.saturating_add(s.count);
    }
    out
}

/// One allocation site in a listing or a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStat {
    /// Most recent first; one frame when grouped by line (none when
    /// tracemalloc recorded no frame).
    pub frames: Vec<Frame>,
    pub size: u64,
    pub count: u64,
    /// Change since the older snapshot (0 in a plain listing).
    pub size_diff: i64,
    pub count_diff: i64,
}

impl SiteStat {
    /// "file:line" of the most recent frame, or "<unknown>".
    pub fn site(&self) -> String {
        self.frames
            .first()
            .map(|f| f.to_string())
            .unwrap_or_else(|| "<unknown>".into())
    }
}

/// Sites sorted by size (largest first); ties by site for stable output.
pub fn top(snap: &Snapshot, by: GroupBy, limit: usize) -> Vec<SiteStat> {
    let mut v: Vec<SiteStat> = group(snap, by)
        .into_iter()
        .map(|(frames, (size, count))| SiteStat {
            frames,
            size,
            count,
            size_diff: 0,
            count_diff: 0,
        })
        .collect();
    v.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.frames.cmp(&b.frames)));
    v.truncate(limit);
    v
}

/// The comparison of two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub by: GroupBy,
    pub old_seq: u64,
    pub new_seq: u64,
    /// Seconds between the two snapshots.
    pub elapsed_s: f64,
    pub old_total: u64,
    pub new_total: u64,
    /// Sites that grew most first, then those that shrank most.
    pub sites: Vec<SiteStat>,
    /// Sites that grew, and the bytes they added in total.
    pub grown_sites: u64,
    pub grown_bytes: u64,
    /// Sites that shrank or vanished, and the bytes they gave back.
    pub shrunk_sites: u64,
    pub shrunk_bytes: u64,
}

fn sdiff(a: u64, b: u64) -> i64 {
    (a as i128 - b as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// What grew between `old` and `new`: growth first (largest first), then
/// the sites that shrank (largest drop first); unchanged sites are left out.
/// At most `limit` sites.
pub fn diff(old: &Snapshot, new: &Snapshot, by: GroupBy, limit: usize) -> Diff {
    let a = group(old, by);
    let b = group(new, by);
    let mut sites = Vec::new();
    for (k, &(size, count)) in &b {
        let (osize, ocount) = a.get(k).copied().unwrap_or((0, 0));
        sites.push(SiteStat {
            frames: k.clone(),
            size,
            count,
            size_diff: sdiff(size, osize),
            count_diff: sdiff(count, ocount),
        });
    }
    for (k, &(osize, ocount)) in &a {
        if !b.contains_key(k) {
            sites.push(SiteStat {
                frames: k.clone(),
                size: 0,
                count: 0,
                size_diff: -sdiff(osize, 0),
                count_diff: -sdiff(ocount, 0),
            });
        }
    }
    sites.retain(|s| s.size_diff != 0 || s.count_diff != 0);
    let grown: Vec<&SiteStat> = sites.iter().filter(|s| s.size_diff > 0).collect();
    let grown_sites = grown.len() as u64;
    let grown_bytes = grown.iter().map(|s| s.size_diff as u64).sum();
    let shrunk: Vec<&SiteStat> = sites.iter().filter(|s| s.size_diff < 0).collect();
    let shrunk_sites = shrunk.len() as u64;
    let shrunk_bytes = shrunk.iter().map(|s| s.size_diff.unsigned_abs()).sum();
    sites.sort_by(|x, y| {
        y.size_diff
            .cmp(&x.size_diff)
            .then_with(|| y.count_diff.cmp(&x.count_diff))
            .then_with(|| x.frames.cmp(&y.frames))
    });
    // Growth first, then the largest drops (most negative first).
    let (mut up, mut down): (Vec<SiteStat>, Vec<SiteStat>) = sites
        .into_iter()
        .partition(|s| s.size_diff > 0 || (s.size_diff == 0 && s.count_diff > 0));
    down.sort_by(|x, y| {
        x.size_diff
            .cmp(&y.size_diff)
            .then_with(|| x.frames.cmp(&y.frames))
    });
    up.truncate(limit);
    let room = limit.saturating_sub(up.len()).min(limit / 3 + 1);
    down.truncate(room);
    up.extend(down);
    Diff {
        by,
        old_seq: old.seq,
        new_seq: new.seq,
        elapsed_s: new.taken_unix - old.taken_unix,
        old_total: old.total_size(),
        new_total: new.total_size(),
        sites: up,
        grown_sites,
        grown_bytes,
        shrunk_sites,
        shrunk_bytes,
    }
}

/// One chunk of `tm_snapshot` stats:
/// `{"files": [...new names...], "stats": [[size, count, [file_idx, line, ...]], ...]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct StatsChunk {
    pub files: Vec<String>,
    pub stats: Vec<(u64, u64, Vec<u64>)>,
}

/// Turns streamed chunks into [`TraceStat`]s, keeping the file-name table
/// that grows from chunk to chunk. Bad indexes become "<unknown>" (the data
/// comes from the target).
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    files: Vec<String>,
    pub stats: Vec<TraceStat>,
}

/// Most chunks' entries we accept in total (a runaway target cannot make
/// us allocate without bound).
pub const MAX_STATS: usize = 5_000_000;
/// Most frames per entry (tracemalloc's own limit is 65535).
const MAX_FRAMES: usize = 1024;

impl ChunkDecoder {
    pub fn feed(&mut self, chunk: StatsChunk) -> Result<(), String> {
        self.files.extend(chunk.files);
        for (size, count, flat) in chunk.stats {
            if self.stats.len() >= MAX_STATS {
                return Err(format!("more than {MAX_STATS} allocation sites"));
            }
            let frames = flat
                .chunks(2)
                .take(MAX_FRAMES)
                .map(|p| Frame {
                    file: usize::try_from(p[0])
                        .ok()
                        .and_then(|i| self.files.get(i))
                        .cloned()
                        .unwrap_or_else(|| "<unknown>".into()),
                    line: p.get(1).map_or(0, |l| u32::try_from(*l).unwrap_or(0)),
                })
                .collect();
            self.stats.push(TraceStat {
                frames,
                size,
                count,
            });
        }
        Ok(())
    }
}

/// tracemalloc's state in the target (`tm_status`, also part of other ops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TmStatus {
    pub tracing: bool,
    pub traceback_limit: u32,
    pub traced_current: u64,
    pub traced_peak: u64,
    /// Memory tracemalloc itself uses (`get_tracemalloc_memory()`).
    pub overhead: u64,
}

/// What a `snapshot` stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub seq: u64,
    pub path: String,
    pub traces: u64,
    pub traces_own: u64,
    pub sites: u64,
    pub total_size: u64,
    /// The largest sites by line.
    pub top: Vec<SiteStat>,
    /// Seconds the snapshot took in the target.
    pub seconds: f64,
    /// What the gc.collect() run first found (None: not run).
    pub collected: Option<i64>,
}

/// Everything `memsleuth tracemalloc ... --json` prints (schema 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TmReport {
    pub schema: u32,
    pub pid: u32,
    /// "start", "snapshot", "diff" or "stop".
    pub action: String,
    /// None for `diff`, which does not attach.
    pub python: Option<String>,
    pub attach_s: Option<f64>,
    pub gil_s: Option<f64>,
    /// tracemalloc's state after the action (None for `diff`).
    pub status: Option<TmStatus>,
    /// Whether it was tracing before the action (start, stop).
    pub was_tracing: Option<bool>,
    pub snapshot: Option<SnapshotSummary>,
    pub diff: Option<Diff>,
    /// Where the snapshots of this process are kept.
    pub store: String,
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(file: &str, line: u32) -> Frame {
        Frame {
            file: file.into(),
            line,
        }
    }

    fn snap(seq: u64, t: f64, stats: Vec<(Vec<Frame>, u64, u64)>) -> Snapshot {
        Snapshot {
            schema: 1,
            pid: 1,
            start_time: 7,
            seq,
            taken_unix: t,
            traceback_limit: 2,
            traced_current: 0,
            traced_peak: 0,
            overhead: 0,
            traces: 0,
            traces_own: 0,
            stats: stats
                .into_iter()
                .map(|(frames, size, count)| TraceStat {
                    frames,
                    size,
                    count,
                })
                .collect(),
        }
    }

    fn pair() -> (Snapshot, Snapshot) {
        let old = snap(
            1,
            100.0,
            vec![
                (vec![f("app.py", 10), f("main.py", 3)], 1000, 10),
                (vec![f("app.py", 10), f("worker.py", 8)], 500, 5),
                (vec![f("cache.py", 4)], 300, 3),
                (vec![f("gone.py", 1)], 200, 2),
            ],
        );
        let new = snap(
            2,
            160.0,
            vec![
                (vec![f("app.py", 10), f("main.py", 3)], 5000, 50),
                (vec![f("app.py", 10), f("worker.py", 8)], 600, 6),
                (vec![f("cache.py", 4)], 300, 3),
                (vec![f("new.py", 2)], 50, 1),
            ],
        );
        (old, new)
    }

    #[test]
    fn by_line_merges_tracebacks() {
        let (old, new) = pair();
        let d = diff(&old, &new, GroupBy::Line, 10);
        assert_eq!(d.sites[0].site(), "app.py:10");
        assert_eq!(d.sites[0].size_diff, 4100);
        assert_eq!(d.sites[0].count_diff, 41);
        assert_eq!(d.sites[1].site(), "new.py:2");
        // Then the drops; cache.py is unchanged and left out.
        assert_eq!(d.sites.last().unwrap().site(), "gone.py:1");
        assert_eq!(d.sites.last().unwrap().size_diff, -200);
        assert!(d.sites.iter().all(|s| s.site() != "cache.py:4"));
        assert_eq!((d.grown_sites, d.grown_bytes), (2, 4150));
        assert_eq!((d.shrunk_sites, d.shrunk_bytes), (1, 200));
        assert_eq!(d.elapsed_s, 60.0);
        assert_eq!((d.old_total, d.new_total), (2000, 5950));
    }

    #[test]
    fn by_traceback_keeps_them_apart() {
        let (old, new) = pair();
        let d = diff(&old, &new, GroupBy::Traceback, 10);
        assert_eq!(d.sites[0].frames, vec![f("app.py", 10), f("main.py", 3)]);
        assert_eq!(d.sites[0].size_diff, 4000);
        assert_eq!(d.sites[1].frames, vec![f("app.py", 10), f("worker.py", 8)]);
        assert_eq!(d.sites[2].frames, vec![f("new.py", 2)]);
    }

    #[test]
    fn limit_leaves_room_for_drops() {
        let (old, new) = pair();
        let d = diff(&old, &new, GroupBy::Line, 1);
        assert_eq!(d.sites.len(), 1);
        assert_eq!(d.sites[0].site(), "app.py:10");
        let d = diff(&old, &new, GroupBy::Line, 0);
        assert!(d.sites.is_empty());
    }

    #[test]
    fn top_sorts_by_size() {
        let (_, new) = pair();
        let t = top(&new, GroupBy::Line, 2);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].site(), t[0].size), ("app.py:10".to_string(), 5600));
        assert_eq!(t[1].site(), "cache.py:4");
    }

    #[test]
    fn decoder_keeps_the_file_table_across_chunks() {
        let mut d = ChunkDecoder::default();
        let c1: StatsChunk = serde_json::from_str(
            r#"{"files": ["a.py", "b.py"], "stats": [[100, 2, [0, 5, 1, 9]]]}"#,
        )
        .unwrap();
        let c2: StatsChunk = serde_json::from_str(
            r#"{"files": ["c.py"], "stats": [[7, 1, [2, 1]], [3, 1, [9, 1, 0]], [1, 1, []]]}"#,
        )
        .unwrap();
        d.feed(c1).unwrap();
        d.feed(c2).unwrap();
        assert_eq!(d.stats[0].frames, vec![f("a.py", 5), f("b.py", 9)]);
        assert_eq!(d.stats[1].frames, vec![f("c.py", 1)]);
        // A bad index and an odd tail do not panic.
        assert_eq!(d.stats[2].frames, vec![f("<unknown>", 1), f("a.py", 0)]);
        assert!(d.stats[3].frames.is_empty());
        assert_eq!(
            SiteStat {
                frames: vec![],
                size: 1,
                count: 1,
                size_diff: 0,
                count_diff: 0
            }
            .site(),
            "<unknown>"
        );
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let (old, _) = pair();
        let s = serde_json::to_string(&old).unwrap();
        let back: Snapshot = serde_json::from_str(&s).unwrap();
        assert_eq!(back, old);
    }
}
