//! Opening a target for the heap reader: a live process (paused for the
//! copy, or not) or a core file, as one [`AddressSpace`] plus the detected
//! interpreter.
//!
//! For a live process everything slow happens outside the pause: the
//! interpreter is detected and the copy's buffers are allocated before the
//! threads stop; the decode runs after they resume. The pause covers only
//! the copy itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::core::{CoreError, CoreFile};
use super::snapshot::{Prepared, SnapshotError};
use super::space::AddressSpace;
use crate::process::freeze::{Freeze, FreezeError};
use crate::process::{ProcError, Process};
use crate::python::{self, PythonProcess};

/// Where the heap is read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A running process; `pause: false` (`--nonblocking`) copies without
    /// stopping its threads, so lists may be torn.
    Live { pid: u32, pause: bool },
    /// An ELF core file; `exe` replaces the executable it names (a core
    /// from another machine or container).
    Core { core: PathBuf, exe: Option<PathBuf> },
}

impl Source {
    /// The live process's pid; None for a core.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Source::Live { pid, .. } => Some(*pid),
            Source::Core { .. } => None,
        }
    }

    /// The core file's name as shown to the user; None for a live process.
    pub fn core_name(&self) -> Option<String> {
        match self {
            Source::Core { core, .. } => Some(core.display().to_string()),
            Source::Live { .. } => None,
        }
    }
}

/// An opened target.
pub struct Opened {
    pub space: Box<dyn AddressSpace + Send + Sync>,
    /// Detected from /proc maps or the core's NT_FILE note.
    pub python: PythonProcess,
    /// The live pid or the core's pid.
    pub pid: u32,
    /// How long the target's threads were stopped (0 for cores and
    /// `--nonblocking`).
    pub paused_s: f64,
    /// Bytes copied from the target (live) or mapped from the core's data.
    pub copied_bytes: u64,
    /// Wall time of the copy (live) or of opening the core.
    pub copy_s: f64,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(
        "process {pid} ({comm}) is not a Python process: no libpython is mapped and its executable exports no Python C API"
    )]
    NotPython { pid: u32, comm: String },
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("the core {core} holds no Python interpreter that memsleuth can find{why}")]
    CoreNotPython { core: PathBuf, why: String },
}

/// Opens a target: see [`Source`].
pub fn open(source: &Source) -> Result<Opened, SourceError> {
    match source {
        Source::Live { pid, pause } => open_live(*pid, *pause),
        Source::Core { core, exe } => open_core(core, exe.as_ref()),
    }
}

fn open_live(pid: u32, pause: bool) -> Result<Opened, SourceError> {
    let proc = Process::open(pid)?;
    let maps = proc.maps()?;
    // The copy's buffers are faulted in while the interpreter is detected
    // (ELF symbols): the two take about as long.
    let (detected, prepared) = std::thread::scope(|s| {
        let prepared = s.spawn(|| Prepared::with_maps(pid, &maps));
        let detected = python::detect(&proc, &maps);
        let prepared = prepared
            .join()
            .unwrap_or_else(|_| Err(SnapshotError::Exited { pid }));
        (detected, prepared)
    });
    let Some(py) = detected? else {
        let comm = proc.stat().map(|s| s.comm).unwrap_or_default();
        return Err(SourceError::NotPython { pid, comm });
    };
    let prepared = prepared?;
    let mut warnings = Vec::new();
    let start = Instant::now();
    let (snap, paused_s) = if pause {
        let freeze = Freeze::pause(pid)?;
        // An error here drops the freeze: the threads resume.
        let snap = prepared.copy()?;
        let paused = freeze.resume();
        (snap, paused.as_secs_f64())
    } else {
        warnings.push(format!(
            "process {pid} was read without pausing it (--nonblocking): objects that changed during the copy may be missing or skipped"
        ));
        (prepared.copy()?, 0.0)
    };
    let copy_s = start.elapsed().as_secs_f64();
    Ok(Opened {
        copied_bytes: snap.copied_bytes(),
        space: Box::new(snap),
        python: py,
        pid,
        paused_s,
        copy_s,
        warnings,
    })
}

fn open_core(core: &std::path::Path, exe: Option<&PathBuf>) -> Result<Opened, SourceError> {
    let start = Instant::now();
    // First open to learn the executable's name, then again with --exe
    // standing in for it (cheap: everything is mapped, not read).
    let mut file = CoreFile::open(core, &HashMap::new())?;
    let exe_named = file.exe_path();
    if let (Some(exe), Some(named)) = (exe, &exe_named) {
        let subst = HashMap::from([(named.clone(), exe.clone())]);
        file = CoreFile::open(core, &subst)?;
    }
    let mut warnings = file.binary_warnings();
    if file.truncated_bytes > 0 {
        warnings.push(format!(
            "the core {} is truncated: {} MiB of its memory data are missing, so parts of the heap cannot be read",
            core.display(),
            file.truncated_bytes >> 20
        ));
    }
    let mappings = file.mappings();
    let exe_path = PathBuf::from(exe_named.clone().unwrap_or_default());
    let python = python::detect_offline(&exe_path, &mappings, &|p| file.resolve(p));
    let Some(python) = python else {
        let why = if warnings.is_empty() {
            String::new()
        } else {
            format!(" ({})", warnings.join("; "))
        };
        return Err(SourceError::CoreNotPython {
            core: core.to_path_buf(),
            why,
        });
    };
    let copied_bytes = std::fs::metadata(core).map(|m| m.len()).unwrap_or(0);
    Ok(Opened {
        pid: file.pid,
        space: Box::new(file),
        python,
        paused_s: 0.0,
        copied_bytes,
        copy_s: start.elapsed().as_secs_f64(),
        warnings,
    })
}
