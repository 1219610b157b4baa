//! `memsleuth ps`: the Python processes on this machine.

use serde::Serialize;
use std::process::ExitCode;

use super::{CmdResult, Out};
use crate::cli::PsArgs;
use crate::process::{Process, System, all_pids, users};
use crate::python::{self, BuildKind};
use crate::render::table::Table;
use crate::render::units::{bytes_short, duration};

#[derive(Debug, Serialize)]
pub struct PsEntry {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub user: String,
    /// "3.11.7"; null when it could not be read.
    pub version: Option<String>,
    /// "shared_lib", "static", or null when the process could not be inspected.
    pub build: Option<BuildKind>,
    /// The file holding the interpreter (libpython or the executable).
    pub binary: Option<String>,
    pub rss_bytes: u64,
    pub age_s: f64,
    pub cmdline: String,
    /// False when memsleuth lacked permission to read its maps (listed because its name looks like Python).
    pub inspected: bool,
}

#[derive(Debug, Serialize)]
struct PsReport {
    schema: u32,
    processes: Vec<PsEntry>,
    /// Processes whose maps could not be read (not counted as Python or not).
    unreadable: usize,
}

pub fn run(args: &PsArgs) -> CmdResult {
    let (processes, unreadable) = scan();
    let mut out = Out::new();
    if args.json {
        out.json(
            &PsReport {
                schema: 1,
                processes,
                unreadable,
            },
            false,
        )?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    if processes.is_empty() {
        out.line("no Python processes found")?;
    } else {
        let mut table = Table::new(&[
            ("PID", true),
            ("USER", false),
            ("PYTHON", false),
            ("BUILD", false),
            ("RSS", true),
            ("AGE", true),
            ("COMMAND", false),
        ]);
        for p in &processes {
            table.row(vec![
                p.pid.to_string(),
                p.user.clone(),
                p.version.clone().unwrap_or_else(|| "?".into()),
                match p.build {
                    Some(BuildKind::SharedLib) => "shared".into(),
                    Some(BuildKind::Static) => "static".into(),
                    None => "?".into(),
                },
                bytes_short(p.rss_bytes),
                duration(p.age_s),
                p.cmdline.clone(),
            ]);
        }
        out.text(&table.render())?;
    }
    if processes.iter().any(|p| !p.inspected) {
        out.line("? = not readable by this user; run memsleuth as root (sudo) to see versions")?;
    } else if unreadable > 0 && users::our_uid() != 0 {
        out.line(&format!(
            "note: {unreadable} other processes could not be read; run as root to list them all"
        ))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// All Python processes we can see, and the number we could not inspect.
pub fn scan() -> (Vec<PsEntry>, usize) {
    let sys = System::read();
    let me = std::process::id();
    let mut found = Vec::new();
    let mut unreadable = 0;
    for pid in all_pids() {
        if pid == me {
            continue;
        }
        let proc = Process::unchecked(pid);
        let Ok(stat) = proc.stat() else { continue };
        if stat.is_kernel_thread() || stat.state == 'Z' {
            continue;
        }
        let status = proc.status().unwrap_or_default();
        let entry = |version: Option<String>, build, binary: Option<String>, inspected| PsEntry {
            pid,
            ppid: stat.ppid,
            uid: status.uid,
            user: users::user_name(status.uid),
            version,
            build,
            binary,
            rss_bytes: status.vm_rss,
            age_s: stat.age_s(&sys),
            cmdline: proc.cmdline(),
            inspected,
        };
        match proc.maps() {
            Ok(maps) => {
                if let Ok(Some(py)) = python::detect(&proc, &maps) {
                    found.push(entry(
                        py.version.map(|v| v.to_string()),
                        Some(py.build),
                        Some(py.binary.display().to_string()),
                        true,
                    ));
                }
            }
            Err(e) if e.is_gone() => {}
            Err(_) => {
                unreadable += 1;
                if looks_like_python(&stat.comm) {
                    found.push(entry(None, None, None, false));
                }
            }
        }
    }
    (found, unreadable)
}

/// A name guess for processes we may not inspect: python, python3.11, python2.7, pythonw.
pub fn looks_like_python(comm: &str) -> bool {
    comm.strip_prefix("python").is_some_and(|rest| {
        rest.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == 'w')
    })
}
