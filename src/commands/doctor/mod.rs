//! `memsleuth doctor`: watch a process for a while and say why its memory
//! grows. Observation in [`observe`], the rules in `analysis::doctor`, the
//! words in `render::doctor` and `render::html`.

use std::process::ExitCode;

use anyhow::Context;

use super::{CmdResult, Out};
use crate::analysis::doctor::report::{ProcessReport, PythonReport, Report};
use crate::analysis::doctor::{self, Observation};
use crate::cli::{AttachArgs, DoctorArgs};

pub mod observe;
mod outside;
mod payload;
mod progress;
mod session;

/// Everything `doctor` and `demo` share: options in, report out.
pub struct Request<'a> {
    pub attach: &'a AttachArgs,
    pub duration: f64,
    pub allow_collect: bool,
    pub progress: bool,
    /// Census with the agent even where the heap can be read from outside.
    pub inject: bool,
}

fn process_report(obs: &Observation, pid: u32) -> ProcessReport {
    let proc = crate::process::Process::unchecked(pid);
    let first = obs.samples.first();
    let last = obs.samples.last();
    ProcessReport {
        pid,
        cmdline: proc.cmdline(),
        exe: proc.exe().ok().map(|p| p.display().to_string()),
        rss_bytes_start: first.map_or(0, |s| s.status.vm_rss),
        rss_bytes_end: last.map_or(0, |s| s.status.vm_rss),
        vm_size_bytes_end: last.map_or(0, |s| s.status.vm_size),
        threads_end: last.map_or(0, |s| s.threads),
        fds_end: last.and_then(|s| s.fd_count),
        growth_bytes_per_s: 0.0,
        doubling_s: None,
        rss_slope_bytes_per_s: None,
        rss_slope_window_s: None,
        explained_share: None,
    }
}

/// Watches, decides, and builds the report (with the retainer graph drawn
/// when `want_svg`).
pub fn investigate(req: &Request, want_svg: bool) -> anyhow::Result<Report> {
    let pid = req.attach.pid;
    let settings = observe::Settings {
        duration: req.duration,
        allow_collect: req.allow_collect,
        progress: req.progress,
        inject: req.inject,
    };
    let (obs, extras) = observe::observe(pid, req.attach, &settings)?;
    let diagnosis = doctor::diagnose(&obs);
    let observed = match (obs.samples.first(), obs.samples.last()) {
        (Some(a), Some(b)) => (b.t - a.t).max(0.0),
        _ => 0.0,
    };
    let python = obs.python.as_ref().map(|py| PythonReport {
        version: extras.version.clone().unwrap_or_default(),
        attach_method: extras.method.clone().unwrap_or_default(),
        attach_s: extras.attach_s,
        gil_s: extras.gil_s,
        gil_share: if observed > 0.0 {
            extras.gil_s / observed
        } else {
            0.0
        },
        gil_by_part: extras
            .gil_parts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        censuses: py.census_times.len(),
        census_mode: extras.census_mode.to_string(),
        census_max_hold_s: extras.census_max_hold_s,
        gc_enabled: py.gc.last().map(|(_, b)| b.enabled),
        garbage_len: py.gc.last().map(|(_, b)| b.garbage_len),
        collect: extras.collect.clone(),
        source: if extras.outside.as_ref().is_some_and(|o| o.censuses > 0) {
            "memory".into()
        } else {
            "agent".into()
        },
        outside: extras.outside.clone(),
        heap: py.heap.clone(),
    });
    let mut report = Report::new(&obs, diagnosis, process_report(&obs, pid), python);
    if want_svg
        && let Some(w) = &extras.why
        && !w.paths.is_empty()
    {
        let g = crate::render::why::graph(w);
        report.retainer_svg = crate::render::graph::to_svg(&g).ok().map(|(svg, _)| svg);
    }
    Ok(report)
}

/// Prints (text or JSON), writes the HTML file, and maps the verdict to
/// the exit status.
pub fn emit(report: &Report, json: bool, html: Option<&std::path::Path>) -> CmdResult {
    if let Some(path) = html {
        std::fs::write(path, crate::render::html::report(report))
            .with_context(|| format!("cannot write the HTML report to {}", path.display()))?;
    }
    let mut out = Out::new();
    if json {
        out.json(report, false)?;
    } else {
        out.text(&crate::render::doctor::text(report))?;
    }
    out.flush()?;
    if let Some(path) = html
        && !json
    {
        eprintln!("memsleuth: wrote {}", path.display());
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}

pub fn run(args: &DoctorArgs) -> CmdResult {
    use std::io::IsTerminal;
    let req = Request {
        attach: &args.attach,
        duration: args.duration,
        allow_collect: args.allow_collect,
        progress: !args.json && std::io::stderr().is_terminal(),
        inject: args.inject,
    };
    let report = investigate(&req, args.html.is_some())?;
    emit(&report, args.json, args.html.as_deref())
}
