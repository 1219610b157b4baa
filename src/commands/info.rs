//! `memsleuth info`: the interpreter, how an attach would go, and what each
//! thread is doing — all without stopping or injecting anything.

use serde::Serialize;
use std::process::ExitCode;

use super::{CmdResult, Out};
use crate::cli::InfoArgs;
use crate::inject::pep768::{self, Pep768Status};
use crate::inject::preflight;
use crate::inject::threads::{self, ThreadInfo};
use crate::python::{BuildKind, PythonProcess};

#[derive(Debug, Serialize)]
struct ThreadView {
    tid: u32,
    name: String,
    is_main: bool,
    state: char,
    doing: String,
    /// Only known on 3.14+ (read from the interpreter's GIL state).
    holds_gil: Option<bool>,
    safe_point: bool,
}

#[derive(Debug, Serialize)]
struct InfoReport {
    schema: u32,
    pid: u32,
    cmdline: String,
    python: PythonProcess,
    /// Where the C API lives: the executable (static build) or libpython.
    c_api_in: String,
    pep768: Option<Pep768Status>,
    /// The method `exec`/`shell` would try first, and why.
    attach_plan: String,
    /// Why attaching would fail, if preflight already knows.
    attach_blocked: Option<String>,
    threads: Vec<ThreadView>,
}

pub fn run(args: &InfoArgs) -> CmdResult {
    let blocked = preflight::check(args.pid).err();
    // Preflight refusing (permissions, not Python...) is worth reporting,
    // but info still shows what /proc shows when it can.
    let proc = super::open(args.pid)?;
    let maps = proc.maps()?;
    let Some(py) = crate::python::detect(&proc, &maps)? else {
        if let Some(sock) = crate::inject::launch::find(args.pid) {
            anyhow::bail!(
                "process {} does not let us read its binary (non-dumpable?), so info cannot describe it; it was started with `memsleuth run`, so exec, eval, types, doctor and the rest reach it through {}",
                args.pid,
                sock.socket_in_target()
            );
        }
        return Err(blocked
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("process {} is not a Python process", args.pid)));
    };
    let pep = if py.version.is_some_and(|v| (v.major, v.minor) >= (3, 14)) {
        pep768::status(&proc, &py).ok()
    } else {
        None
    };
    let gil: Vec<(u64, bool)> = if matches!(
        pep,
        Some(Pep768Status::Enabled { .. }) | Some(Pep768Status::DisabledInTarget)
    ) {
        pep768::threads(&proc, &py)
            .map(|ts| ts.iter().map(|t| (t.native_tid, t.holds_gil)).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let infos = threads::list(args.pid).unwrap_or_default();
    // Started with `memsleuth run`: attach uses its socket, whatever ptrace allows.
    let launched = crate::inject::launch::find(args.pid);
    let blocked = if launched.is_some() { None } else { blocked };
    let views: Vec<ThreadView> = infos
        .iter()
        .map(|t| ThreadView {
            tid: t.tid,
            name: t.name.clone(),
            is_main: t.is_main,
            state: t.state,
            doing: t.describe(),
            holds_gil: gil
                .iter()
                .find(|(tid, _)| *tid == t.tid as u64)
                .map(|(_, g)| *g),
            safe_point: t.activity.in_safe_syscall(),
        })
        .collect();
    let report = InfoReport {
        schema: 1,
        pid: args.pid,
        cmdline: proc.cmdline(),
        c_api_in: match py.build {
            BuildKind::Static => format!("the executable {}", py.binary.display()),
            BuildKind::SharedLib => format!("{}", py.binary.display()),
        },
        attach_plan: match &launched {
            Some(sock) => format!(
                "the `memsleuth run` socket {} (no ptrace, no stop: its listener thread runs the request)",
                sock.socket_in_target()
            ),
            None => plan(&py, pep.as_ref(), &infos),
        },
        attach_blocked: blocked.map(|e| e.to_string()),
        pep768: pep,
        python: py,
        threads: views,
    };
    let mut out = Out::new();
    if args.json {
        out.json(&report, false)?;
    } else {
        out.text(&render(&report))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What attach would do, in words.
fn plan(py: &PythonProcess, pep: Option<&Pep768Status>, threads: &[ThreadInfo]) -> String {
    if let Some(Pep768Status::Enabled { .. }) = pep {
        return "PEP 768 (remote debugging is enabled): the request runs when the main thread, or a thread holding the GIL, next executes bytecode; no ptrace stop".into();
    }
    let prefix = match pep {
        Some(Pep768Status::DisabledInTarget) => {
            "remote debugging is disabled in the target, so ptrace: "
        }
        _ => "ptrace: ",
    };
    if let Some(t) = threads
        .iter()
        .find(|t| t.is_main && t.activity.in_safe_syscall())
        .or_else(|| threads.iter().find(|t| t.activity.in_safe_syscall()))
    {
        return format!(
            "{prefix}a direct call on thread {} ({}), {}, if it does not hold the GIL; otherwise a pending call run by the main thread at its next safe point",
            t.tid,
            t.name,
            t.describe()
        );
    }
    let main_in_futex = threads
        .iter()
        .any(|t| t.is_main && t.activity.syscall_nr() == Some(threads::NR_FUTEX));
    if main_in_futex {
        if py.version.is_some_and(|v| v.major == 2) {
            return format!(
                "{prefix}a pending call; the main thread waits on a lock and Python 2.7 runs pending calls only when it wakes"
            );
        }
        return format!(
            "{prefix}a pending call, with the main thread's lock wait interrupted (EINTR) so that it runs it at once"
        );
    }
    format!("{prefix}a pending call, run by the main thread at its next bytecode boundary")
}

fn render(r: &InfoReport) -> String {
    let py = &r.python;
    let version = py
        .version
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".into());
    let build = match py.build {
        BuildKind::Static => "static build",
        BuildKind::SharedLib => "shared libpython",
    };
    let mut s = format!("process {}: {}\n", r.pid, r.cmdline);
    s.push_str(&format!(
        "Python {version} ({build}; version from {})\n",
        py.version_source
    ));
    s.push_str(&format!(
        "C API in {} (loaded at 0x{:x})\n",
        r.c_api_in, py.load_base
    ));
    let pep = match &r.pep768 {
        None => "not available (Python older than 3.14)".to_string(),
        Some(Pep768Status::Enabled { .. }) => "enabled".to_string(),
        Some(Pep768Status::DisabledInTarget) => "disabled in the target (PYTHON_DISABLE_REMOTE_DEBUG, -X disable-remote-debug, or built without it)".to_string(),
        Some(Pep768Status::Unsupported(why)) => format!("unsupported: {why}"),
    };
    s.push_str(&format!("PEP 768 remote debugging: {pep}\n"));
    match &r.attach_blocked {
        Some(why) => s.push_str(&format!("attach: not possible now: {why}\n")),
        None => s.push_str(&format!("attach: {}\n", r.attach_plan)),
    }
    s.push_str("threads:\n");
    let mut table =
        crate::render::table::Table::new(&[("TID", true), ("NAME", false), ("DOING", false)]);
    for t in &r.threads {
        let mut doing = t.doing.clone();
        match t.holds_gil {
            Some(true) => doing.push_str(", holds the GIL"),
            Some(false) => {}
            None => {}
        }
        if t.safe_point {
            doing.push_str(" [safe point]");
        }
        table.row(vec![
            format!("{}{}", t.tid, if t.is_main { "*" } else { "" }),
            t.name.clone(),
            doing,
        ]);
    }
    for line in table.render().lines() {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str("  (* main thread)\n");
    s
}
