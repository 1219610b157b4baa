//! `memsleuth eval`: the repr() of an expression evaluated in the target.

use serde::Serialize;
use std::process::ExitCode;

use super::{CmdResult, Out};
use crate::agent::protocol::EvalResult;
use crate::cli::EvalArgs;
use crate::inject::attach::{self, Method};

#[derive(Serialize)]
struct EvalReport<'a> {
    schema: u32,
    pid: u32,
    method: &'a Method,
    attach_s: f64,
    session_dir: &'a str,
    #[serde(flatten)]
    result: &'a EvalResult,
}

pub fn run(args: &EvalArgs) -> CmdResult {
    // The eval and the detach go along with the handshake (see
    // Listener::pipeline).
    let mut opts = args.attach.options();
    opts.pipeline = vec![
        ("eval".into(), serde_json::json!({"expr": args.expr})),
        ("detach".into(), serde_json::Value::Null),
    ];
    let mut attached = attach::attach(args.attach.pid, &opts)?;
    let result = attached.session.eval(&args.expr);
    let (method, attach_s) = (attached.method.clone(), attached.attach_s);
    let session_dir = attached.session_dir.clone();
    attached.detach()?;
    let mut out = Out::new();
    let result = match result {
        Ok(r) => r,
        Err(crate::agent::session::SessionError::Remote { error, .. }) => {
            // The expression raised: show the traceback like Python would.
            eprint!("{}", super::traceback_text(&error));
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        out.json(
            &EvalReport {
                schema: 1,
                pid: args.attach.pid,
                method: &method,
                attach_s,
                session_dir: &session_dir,
                result: &result,
            },
            false,
        )?;
    } else {
        out.text(&result.stdout)?;
        out.line(&result.value_repr)?;
        if result.truncated {
            eprintln!(
                "memsleuth: repr cut at {} of {} characters",
                result.value_repr.len(),
                result.repr_len
            );
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
