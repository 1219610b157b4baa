//! `memsleuth exec`: run code inside the target, print what it printed.

use serde::Serialize;
use std::io::Read;
use std::process::ExitCode;

use super::{CmdResult, Out};
use crate::agent::protocol::{ExecMode, ExecResult};
use crate::cli::ExecArgs;
use crate::inject::attach::{self, Method};

#[derive(Serialize)]
struct ExecReport<'a> {
    schema: u32,
    pid: u32,
    method: &'a Method,
    /// From the start to the agent's hello (the exec request went along
    /// with the handshake, so its answer mostly came with the hello).
    attach_s: f64,
    /// From the hello to the exec's answer.
    exec_s: f64,
    /// Time for the agent to clean up and hang up.
    detach_s: f64,
    session_dir: &'a str,
    #[serde(flatten)]
    result: &'a ExecResult,
}

pub fn run(args: &ExecArgs) -> CmdResult {
    let code = match (&args.code, &args.file) {
        (Some(code), _) => code.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}; check the path", path.display()))?,
        (None, None) => unreachable!("clap requires CODE or --file"),
    };
    // The exec and the detach go along with the handshake: the agent
    // answers them as it starts (see Listener::pipeline).
    let mut opts = args.attach.options();
    opts.pipeline = vec![
        (
            "exec".into(),
            serde_json::json!({"code": code, "mode": ExecMode::Exec}),
        ),
        ("detach".into(), serde_json::Value::Null),
    ];
    let mut attached = attach::attach(args.attach.pid, &opts)?;
    let t = std::time::Instant::now();
    let result = attached.session.exec(&code, ExecMode::Exec);
    let exec_s = t.elapsed().as_secs_f64();
    crate::inject::trace::trace(format_args!("exec answered"));
    let method = attached.method.clone();
    let attach_s = attached.attach_s;
    let session_dir = attached.session_dir.clone();
    let notes = std::mem::take(&mut attached.notes);
    let t = std::time::Instant::now();
    attached.detach()?;
    let detach_s = t.elapsed().as_secs_f64();
    let result = result?;
    let mut out = Out::new();
    if args.json {
        out.json(
            &ExecReport {
                schema: 1,
                pid: args.attach.pid,
                method: &method,
                attach_s,
                exec_s,
                detach_s,
                session_dir: &session_dir,
                result: &result,
            },
            false,
        )?;
    } else {
        for note in notes {
            eprintln!("memsleuth: note: {note}");
        }
        out.text(&result.stdout)?;
        out.flush()?;
        eprint!("{}", result.stderr);
        if let Some(err) = &result.error {
            eprint!("{}", super::traceback_text(err));
        }
    }
    out.flush()?;
    Ok(if result.raised {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
