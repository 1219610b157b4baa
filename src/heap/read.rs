//! One call from a target (pid or core) to a census or a collector reading
//! taken from outside, with what it cost the target: the entry point the
//! commands (`types`, `growth`, `gc`) and doctor use.
//!
//! Open ([`source::open`]: detect, copy while paused, resume), locate the
//! interpreter, decode on the copy after the target runs again. A census
//! taken while a collection was running (objects sit on the collector's
//! private lists then) is retried after letting the target run briefly.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::census::{CensusOptions, HeapCensus, census, census_parallel};
use super::error::HeapError;
use super::gcstate::{self, GcReading};
use super::roots::{Interpreter, locate, locate_running};
use super::snapshot::SnapshotError;
use super::source::{self, Opened, Source, SourceError};
use super::space::LiveLazy;
use crate::analysis::census::Census;
use crate::process::freeze::FreezeError;

/// Copies retried when the first one caught a collection in progress.
const COLLECTING_RETRIES: u32 = 3;

/// How to read a census.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Stop the target's threads for the copy (false: `--nonblocking`).
    pub pause: bool,
    /// Only the objects on the collector's lists.
    pub gc_only: bool,
    /// Keep every object's identity per row (for growth).
    pub keep_ids: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            pause: true,
            gc_only: false,
            keep_ids: false,
        }
    }
}

/// What a read from outside cost, and what it could not read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadCost {
    /// "live" or "core".
    pub target: &'static str,
    /// How long the target's threads were stopped (0: not paused).
    pub paused_s: f64,
    /// Wall time of the copy (live) or of opening the core.
    pub copy_s: f64,
    pub copied_bytes: u64,
    /// Decoding, on memsleuth's side, after the target resumed.
    pub walk_s: f64,
    /// Open to result.
    pub total_s: f64,
    /// Objects rejected as invalid (torn lists, garbage).
    pub skipped: u64,
    /// Copies thrown away because a collection was running.
    pub retries: u32,
    /// memsleuth's own peak RSS (VmHWM) after the read, bytes.
    pub tool_peak_rss_bytes: Option<u64>,
    pub warnings: Vec<String>,
}

/// A census read from outside.
pub struct CensusRead {
    pub census: Census,
    pub cost: ReadCost,
    /// e.g. "3.12.1".
    pub python: String,
    /// The live pid, or the pid the core was taken from.
    pub pid: u32,
    /// Objects in the permanent generation (gc.freeze(); not counted).
    pub permanent: u64,
}

/// The collector's state read from outside.
pub struct GcRead {
    pub reading: GcReading,
    /// Objects on the collector's lists (`len(gc.get_objects())`).
    pub gc_objects: u64,
    /// `gc.get_freeze_count()`.
    pub permanent: u64,
    pub cost: ReadCost,
    pub python: String,
    pub pid: u32,
    /// (major, minor, micro), for the rules on `gc.garbage`.
    pub version: (u32, u32, u32),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Heap(#[from] HeapError),
    #[error("process {pid} exited while memsleuth was reading its heap; nothing is left to report")]
    Exited { pid: u32 },
}

impl ReadError {
    /// The build cannot be read from outside at all (version, free-threaded,
    /// symbols): the agent may still take the census (`--inject`).
    pub fn unsupported(&self) -> bool {
        matches!(
            self,
            ReadError::Heap(
                HeapError::UnknownVersion
                    | HeapError::Unsupported(_)
                    | HeapError::FreeThreaded(_)
                    | HeapError::MissingSymbol { .. }
            )
        )
    }

    /// The kernel refused to let us read or pause the process (another
    /// user, a non-dumpable process): a way in that does not need that
    /// (a program started with `memsleuth run` lets the agent in through
    /// its listener) may still work.
    pub fn denied(&self) -> bool {
        use crate::process::ProcError;
        let proc_denied = |e: &ProcError| matches!(e, ProcError::PermissionDenied { .. });
        match self {
            ReadError::Source(SourceError::Proc(e)) => proc_denied(e),
            ReadError::Source(SourceError::Freeze(FreezeError::Denied { .. })) => true,
            ReadError::Source(SourceError::Snapshot(SnapshotError::Denied { .. })) => true,
            ReadError::Source(SourceError::Snapshot(SnapshotError::Proc(e))) => proc_denied(e),
            _ => false,
        }
    }

    /// No interpreter was found from outside (not Python, or its binary
    /// could not be read).
    pub fn not_found(&self) -> bool {
        matches!(self, ReadError::Source(SourceError::NotPython { .. }))
    }
}

/// A census of a live pid, paused for the copy unless `opts.pause` is off:
/// the function doctor's censuses use.
pub fn read_census_pid(pid: u32, opts: &ReadOptions) -> Result<CensusRead, ReadError> {
    read_census(
        &Source::Live {
            pid,
            pause: opts.pause,
        },
        opts,
    )
}

/// A census from any source (`opts.pause` is ignored: `source` says).
pub fn read_census(source: &Source, opts: &ReadOptions) -> Result<CensusRead, ReadError> {
    let started = Instant::now();
    let census_opts = CensusOptions {
        gc_only: opts.gc_only,
        keep_ids: opts.keep_ids,
    };
    let mut retries = 0;
    loop {
        let opened = source::open(source)?;
        let interp = locate_in(&opened, source)?;
        let hc = census_parallel(
            opened.space.as_ref(),
            &interp,
            &census_opts,
            super::threads(),
        )
        .map_err(|e| exited_or(e, source))?;
        if hc.collecting && paused_live(source) && retries < COLLECTING_RETRIES {
            // Objects sit on a collection's private lists: let it finish.
            retries += 1;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut cost = cost_of(&opened, source, started);
        cost.walk_s = hc.walk_s;
        cost.skipped = hc.skipped;
        cost.retries = retries;
        cost.warnings.extend(interp.warnings.iter().cloned());
        cost.warnings.extend(census_warnings(&hc));
        cost.total_s = started.elapsed().as_secs_f64();
        return Ok(CensusRead {
            census: hc.census,
            cost,
            python: version_of(&opened),
            pid: opened.pid,
            permanent: hc.permanent,
        });
    }
}

/// The collector's state, `len(gc.get_objects())` and the freeze count.
pub fn read_gc(source: &Source) -> Result<GcRead, ReadError> {
    let started = Instant::now();
    let opened = source::open(source)?;
    let interp = locate_in(&opened, source)?;
    let reading = gcstate::read(opened.space.as_ref(), &interp)?;
    let opts = CensusOptions {
        gc_only: true,
        keep_ids: false,
    };
    let hc = census(opened.space.as_ref(), &interp, &opts).map_err(|e| exited_or(e, source))?;
    let mut cost = cost_of(&opened, source, started);
    cost.walk_s = hc.walk_s;
    cost.skipped = hc.skipped;
    cost.warnings.extend(interp.warnings.iter().cloned());
    cost.warnings.extend(census_warnings(&hc));
    cost.total_s = started.elapsed().as_secs_f64();
    let version = opened.python.version.map_or((0, 0, 0), |v| {
        (u32::from(v.major), u32::from(v.minor), u32::from(v.micro))
    });
    Ok(GcRead {
        reading,
        gc_objects: hc.census.tracked,
        permanent: hc.permanent,
        cost,
        python: version_of(&opened),
        pid: opened.pid,
        version,
    })
}

/// A second, cheap reading of a live process's counters (no pause, no
/// copy: a few lazy reads), for what moved since [`read_gc`].
pub fn reread_gc(pid: u32) -> Result<GcReading, ReadError> {
    let src = Source::Live { pid, pause: false };
    let proc = crate::process::Process::open(pid).map_err(SourceError::from)?;
    let maps = proc.maps().map_err(SourceError::from)?;
    let py = crate::python::detect(&proc, &maps)
        .map_err(SourceError::from)?
        .ok_or_else(|| SourceError::NotPython {
            pid,
            comm: String::new(),
        })?;
    let lazy = LiveLazy { pid };
    let interp = locate_running(&lazy, &py).map_err(|e| exited_or(e, &src))?;
    gcstate::read(&lazy, &interp).map_err(|e| exited_or(e, &src))
}

fn locate_in(opened: &Opened, source: &Source) -> Result<Interpreter, ReadError> {
    locate_opened(opened, source).map_err(|e| exited_or(e, source))
}

/// The interpreter of an opened target. A copy taken without pausing
/// (`--nonblocking`) holds each region as it was when that region was
/// read, so a generation list's head (in libpython's data) and its first
/// node (in the heap) may come from moments tens of milliseconds apart:
/// it is located as a running process is ([`locate_running`]).
pub fn locate_opened(opened: &Opened, source: &Source) -> Result<Interpreter, HeapError> {
    match source {
        Source::Live { pause: false, .. } => locate_running(opened.space.as_ref(), &opened.python),
        _ => locate(opened.space.as_ref(), &opened.python),
    }
}

/// A read that failed on a live process that is gone is said as such.
fn exited_or(e: HeapError, source: &Source) -> ReadError {
    if let Source::Live { pid, .. } = source
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        return ReadError::Exited { pid: *pid };
    }
    ReadError::Heap(e)
}

fn paused_live(source: &Source) -> bool {
    matches!(source, Source::Live { pause: true, .. })
}

fn cost_of(opened: &Opened, source: &Source, started: Instant) -> ReadCost {
    ReadCost {
        target: match source {
            Source::Live { .. } => "live",
            Source::Core { .. } => "core",
        },
        paused_s: opened.paused_s,
        copy_s: opened.copy_s,
        copied_bytes: opened.copied_bytes,
        total_s: started.elapsed().as_secs_f64(),
        tool_peak_rss_bytes: crate::process::Process::open(std::process::id())
            .and_then(|p| p.status())
            .ok()
            .map(|s| s.vm_hwm),
        warnings: opened.warnings.clone(),
        ..ReadCost::default()
    }
}

fn census_warnings(hc: &HeapCensus) -> Vec<String> {
    let mut w = hc.warnings.clone();
    if hc.collecting {
        w.push(
            "a garbage collection was running during the copy: objects it was moving may be missing"
                .into(),
        );
    }
    w
}

fn version_of(opened: &Opened) -> String {
    opened
        .python
        .version
        .map_or_else(|| "unknown".into(), |v| v.to_string())
}
