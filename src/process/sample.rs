//! One observation of a process's memory, taken from /proc in a few µs to a
//! few ms, and the series of them that `top` and the classifier work on.

use serde::Serialize;
use std::path::Path;
use std::time::Instant;

use super::fds::{FdKind, FdSummary};
use super::maps::{self, Mapping, MemStats};
use super::status::{Statm, Status};
use super::{ProcError, Process, fds};

/// What to read besides the cheap counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// smaps_rollup: a page-table walk, ~4 ms per resident GiB.
    pub rollup: bool,
    /// maps: the mapping list (cheap, no page walk).
    pub maps: bool,
    /// readlink of every fd, to classify them (the count is always read).
    pub fd_kinds: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the first sample of the series.
    pub t: f64,
    pub status: Status,
    pub statm: Statm,
    pub rollup: Option<MemStats>,
    pub threads: u32,
    pub fd_count: Option<u64>,
    pub fds: Option<FdSummary>,
    /// Number of mappings, when maps was read.
    pub map_count: Option<usize>,
    #[serde(skip)]
    pub mappings: Option<Vec<Mapping>>,
}

impl Sample {
    /// Reads a sample now. `t0` anchors the time axis of a series.
    pub fn collect(proc: &Process, t0: Instant, want: Want) -> Result<Sample, ProcError> {
        let status = proc.status()?;
        let statm = proc.statm()?;
        let t = t0.elapsed().as_secs_f64();
        let rollup = if want.rollup {
            Some(proc.smaps_rollup()?)
        } else {
            None
        };
        let mappings = if want.maps { Some(proc.maps()?) } else { None };
        // fd counts need the same access as maps; without it we still have
        // the memory counters, so missing fds are not fatal.
        let fd_count = fds::count(proc).ok();
        let fds = if want.fd_kinds {
            fds::summarize(proc).ok()
        } else {
            None
        };
        Ok(Sample {
            t,
            threads: status.threads,
            status,
            statm,
            rollup,
            fd_count: fds.as_ref().map(|f| f.total).or(fd_count),
            fds,
            map_count: mappings.as_ref().map(Vec::len),
            mappings,
        })
    }

    /// Loads a sample recorded as copies of /proc files in a directory:
    /// `status`, `statm`, optional `smaps_rollup`, `maps`, `fd` (lines of
    /// `N -> target`, as `ls -l` prints) and `t` (seconds). Used for fixtures.
    pub fn from_dir(dir: &Path) -> std::io::Result<Sample> {
        let read = |name: &str| std::fs::read(dir.join(name));
        let status = Status::parse(&read("status")?);
        let statm = Statm::parse(&read("statm")?);
        let rollup = read("smaps_rollup")
            .ok()
            .and_then(|b| maps::parse_smaps(&b).into_iter().next())
            .map(|m| m.stats);
        let mappings = read("maps").ok().map(|b| maps::parse_maps(&b));
        let fds = read("fd").ok().map(|b| {
            let mut summary = FdSummary::default();
            for line in String::from_utf8_lossy(&b).lines() {
                if let Some((_, target)) = line.split_once(" -> ") {
                    summary.total += 1;
                    *summary
                        .by_kind
                        .entry(FdKind::classify(target.trim()))
                        .or_insert(0) += 1;
                }
            }
            summary
        });
        let t = read("t")
            .ok()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok())
            .unwrap_or(0.0);
        Ok(Sample {
            t,
            threads: status.threads,
            status,
            statm,
            rollup,
            fd_count: fds.as_ref().map(|f| f.total),
            fds,
            map_count: mappings.as_ref().map(Vec::len),
            mappings,
        })
    }
}
