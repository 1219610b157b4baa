//! The CLI surface: help texts and the one-sentence errors a user can hit,
//! as insta snapshots (pids filtered out).

mod common;

use common::memsleuth;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs memsleuth and renders status, stdout and stderr like ruff's CLI tests.
fn render(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run memsleuth");
    format!(
        "exit_code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

macro_rules! snap {
    ($name:expr, $value:expr, $($pid:expr),*) => {{
        #[allow(unused_mut)]
        let mut settings = insta::Settings::clone_current();
        $( settings.add_filter(&format!(r"\b{}\b", $pid), "[PID]"); )*
        settings.bind(|| insta::assert_snapshot!($name, $value));
    }};
}

#[test]
fn help_texts() {
    snap!("help", render(memsleuth().arg("--help")),);
    for sub in [
        "doctor",
        "demo",
        "ps",
        "top",
        "maps",
        "shm",
        "info",
        "exec",
        "eval",
        "shell",
        "types",
        "growth",
        "gc",
        "why",
        "retained",
        "tracemalloc",
        "native",
        "view",
        "run",
    ] {
        snap!(
            format!("help_{sub}"),
            render(memsleuth().args([sub, "--help"])),
        );
    }
}

#[test]
fn usage_error_exits_2() {
    let out = memsleuth().args(["top", "notapid"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = memsleuth()
        .args(["top", "1", "--interval", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn no_such_pid() {
    // Above any pid_max the kernel allows (2^22).
    snap!("no_such_pid", render(memsleuth().args(["maps", "4194305"])),);
}

#[test]
fn kernel_thread() {
    // kthreadd is pid 2 on Linux outside a pid namespace.
    let stat = std::fs::read_to_string("/proc/2/stat").unwrap_or_default();
    if !stat.contains("(kthreadd)") {
        eprintln!("no kthreadd visible (pid namespace?); skipping");
        return;
    }
    snap!(
        "kernel_thread",
        render(memsleuth().args(["top", "2", "-n", "1"])),
        2
    );
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

#[test]
fn zombie() {
    // A parent that forks a child which exits at once, and never reaps it.
    let script = "import os,sys,time\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid); sys.stdout.flush(); time.sleep(30)";
    let mut parent = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let zombie = first_line(&mut parent);
    let parent = Kill(parent);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{zombie}/stat"))
        .unwrap_or_default()
        .contains(") Z ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "child never became a zombie"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    snap!(
        "zombie",
        render(memsleuth().args(["maps", &zombie])),
        zombie,
        parent.0.id()
    );
}

/// Runs memsleuth as `nobody`.
fn as_nobody(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_memsleuth"))
        .args(args);
    cmd
}

fn can_drop_privileges() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    root && Command::new("setpriv").arg("--version").output().is_ok()
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn permission_denied_other_user() {
    if !can_drop_privileges() {
        eprintln!("needs root and setpriv; skipping");
        return;
    }
    let target = Kill(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = target.0.id().to_string();
    snap!(
        "denied_other_user",
        render(&mut as_nobody(&["maps", &pid])),
        pid
    );
}

#[test]
fn permission_denied_non_dumpable() {
    if !can_drop_privileges() {
        eprintln!("needs root and setpriv; skipping");
        return;
    }
    // A process of nobody's that made itself non-dumpable, read by nobody.
    let script = "import ctypes,sys,time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); print('ready', flush=True); time.sleep(30)";
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut child), "ready");
    let target = Kill(child);
    let pid = target.0.id().to_string();
    snap!(
        "denied_non_dumpable",
        render(&mut as_nobody(&["maps", &pid])),
        pid
    );
}
