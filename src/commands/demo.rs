//! `memsleuth demo`: write the bundled leaky service to a temporary
//! directory, start it with `python3` (or `--python`), run doctor on it,
//! print the report, and stop and remove it whatever happens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::CmdResult;
use super::doctor::{Request, emit, investigate};
use crate::cli::{AttachArgs, DemoArgs};
use crate::demo::{SERVICE, SESSIONS};

/// How long the service may take to start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The service process and its directory; both go away on drop.
struct Service {
    child: Child,
    dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let dir = base.join(format!("memsleuth-demo-{}-{i}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).context(format!("cannot create {}", dir.display())),
        }
    }
    bail!(
        "cannot create a temporary directory under {}",
        base.display()
    )
}

fn start(python: &Path, scenario: &str) -> anyhow::Result<(Service, u32)> {
    let dir = temp_dir()?;
    std::fs::write(dir.join("service.py"), SERVICE)?;
    std::fs::write(dir.join("sessions.py"), SESSIONS)?;
    let child = Command::new(python)
        .arg("-u")
        .arg(dir.join("service.py"))
        .args(["--scenario", scenario])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            bail!(
                "cannot start {}: {e}; install Python 3 or pass --python /path/to/python",
                python.display()
            );
        }
    };
    let stdout = child.stdout.take();
    let service = Service { child, dir };
    let (tx, rx) = mpsc::channel();
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(pid) = line.strip_prefix("ready ") {
                    let _ = tx.send(pid.trim().parse::<u32>().ok());
                }
            }
        });
    }
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Some(pid)) => Ok((service, pid)),
        _ => bail!(
            "the demo service did not start within {} s (see its error above)",
            READY_TIMEOUT.as_secs()
        ),
    }
}

pub fn run(args: &DemoArgs) -> CmdResult {
    use std::io::IsTerminal;
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    let scenario = args.scenario.name();
    let (service, pid) = start(&python, scenario)?;
    if !args.json {
        eprintln!(
            "memsleuth demo: started the `{scenario}` service (pid {pid}, {}); watching it for {:.0} s...",
            python.display(),
            args.duration
        );
    }
    let attach = AttachArgs {
        pid,
        timeout: 5.0,
        method: crate::inject::attach::MethodChoice::Auto,
        wait_detach: false,
    };
    let req = Request {
        attach: &attach,
        duration: args.duration,
        allow_collect: false,
        progress: !args.json && std::io::stderr().is_terminal(),
        inject: false,
    };
    let report = investigate(&req, args.html.is_some());
    drop(service);
    emit(&report?, args.json, args.html.as_deref())
}
