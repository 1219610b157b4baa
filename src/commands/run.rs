//! `memsleuth run [--] python app.py ...`: start a program so that memsleuth
//! can get in later without ptrace (see [`crate::inject::launch`]).
//!
//! It makes the program's private directory `<base>/<pid>-<start time>`
//! (the pid and start time are ours, and stay the program's), writes the
//! listener there as `site/sitecustomize.py`, puts that first on
//! PYTHONPATH, and then *execs* the program: memsleuth is gone, the program
//! has our pid, and its stdin/stdout/stderr, signals and exit status are
//! its own; there is no wrapper process to forward signals through or to
//! leave behind. The listener restores PYTHONPATH and deletes `site/` at
//! start-up, and removes the rest at exit. A program killed before its exit
//! handlers ran leaves its directory; the next `memsleuth run` sweeps it.
//!
//! Unless `--survive-parent`, the program gets SIGTERM when the process
//! that started `memsleuth run` exits (PR_SET_PDEATHSIG, kept across exec),
//! so that killing a test harness or a supervisor leaves no orphan.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::CmdResult;
use crate::cli::RunArgs;
use crate::inject::launch::{self, LISTENER_SOURCE};
use crate::process::{Process, users};

/// The signal the program gets when our parent exits.
const PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGTERM;

pub fn run(args: &RunArgs) -> CmdResult {
    let Some(program) = args.command.first() else {
        bail!("give the program to run, e.g. `memsleuth run -- python app.py`");
    };
    if let Some(why) = refuses_site(&args.command) {
        bail!(why);
    }
    let euid = users::our_uid();
    let (base, own) = own_dir(euid)?;
    let site = own.join("site");
    if let Err(e) = write_site(&site) {
        remove_entry(&own);
        let _ = std::fs::remove_dir(&base);
        return Err(e);
    }

    let old = std::env::var_os("PYTHONPATH");
    let mut path = site.clone().into_os_string();
    let mut saved = OsString::from("-");
    if let Some(old) = &old {
        saved = OsString::from("=");
        saved.push(old);
        if !old.is_empty() {
            path.push(":");
            path.push(old);
        }
    }
    if !args.survive_parent
        && let Err(e) = die_with_parent()
    {
        remove_entry(&own);
        let _ = std::fs::remove_dir(&base);
        return Err(e);
    }
    let err = std::process::Command::new(program)
        .args(&args.command[1..])
        .env("PYTHONPATH", path)
        .env("MEMSLEUTH_LAUNCH_DIR", &base)
        .env("MEMSLEUTH_LAUNCH_SITE", &site)
        .env("MEMSLEUTH_LAUNCH_PYTHONPATH", saved)
        .exec();
    // Only reached when exec failed: nothing may stay, and exit like a
    // shell would.
    remove_entry(&own);
    let _ = std::fs::remove_dir(&base);
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    eprintln!(
        "memsleuth: cannot run {}: {err}; give the interpreter or script as it would be typed in a shell",
        program.to_string_lossy()
    );
    Ok(ExitCode::from(code))
}

/// Asks the kernel to send the program PARENT_DEATH_SIGNAL when our
/// parent exits; refuses to start when that parent is already gone.
fn die_with_parent() -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            PARENT_DEATH_SIGNAL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "cannot ask to be stopped with our parent (prctl PR_SET_PDEATHSIG: {e}); add --survive-parent to start the program anyway"
        );
    }
    if std::os::unix::process::parent_id() != parent {
        bail!(
            "the process that started `memsleuth run` has already exited, so the program was not started (add --survive-parent to start it anyway)"
        );
    }
    Ok(())
}

/// Why the listener cannot load into this command line, if it cannot: a
/// Python started with -I or -E ignores PYTHONPATH, and -S skips `site`
/// (which imports sitecustomize). Only the interpreter's own options are
/// looked at (those before the script, `-c` or `-m`).
fn refuses_site(argv: &[OsString]) -> Option<String> {
    let prog = Path::new(argv.first()?).file_name()?.to_string_lossy();
    if !prog.starts_with("python") && !prog.starts_with("pypy") {
        return None;
    }
    let mut args = argv[1..].iter();
    while let Some(a) = args.next() {
        let a = a.as_bytes();
        if a == b"--" || a == b"-" || a.first() != Some(&b'-') {
            return None;
        }
        if a.starts_with(b"--") {
            continue;
        }
        for (i, &c) in a.iter().enumerate().skip(1) {
            match c {
                b'I' | b'E' => {
                    return Some(format!(
                        "`{prog} -{}` ignores PYTHONPATH, so `memsleuth run` cannot load its listener into it; drop -{}, or attach with ptrace instead (plain `memsleuth eval PID ...`)",
                        c as char, c as char
                    ));
                }
                b'S' => {
                    return Some(format!(
                        "`{prog} -S` skips the site module that loads sitecustomize, so `memsleuth run` cannot load its listener into it; drop -S, or attach with ptrace instead (plain `memsleuth eval PID ...`)"
                    ));
                }
                // The rest of the program's arguments follow.
                b'c' | b'm' => return None,
                // Options with a value: the rest of this word, or the next.
                b'W' | b'X' | b'Q' => {
                    if i + 1 == a.len() {
                        args.next();
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    None
}

/// The private directory for our uid: `$XDG_RUNTIME_DIR/memsleuth` when
/// that is `/run/user/UID` (where the tool looks), else `/tmp/memsleuth-UID`;
/// made 0700, and refused unless it is ours and private.
fn base_dir(euid: u32) -> anyhow::Result<PathBuf> {
    let [run_user, tmp] = launch::base_dirs(euid);
    let xdg_ok = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|x| {
        Path::new(&x) == run_user.parent().unwrap_or(Path::new("/"))
            && std::fs::metadata(&x).is_ok_and(|m| m.is_dir() && m.uid() == euid)
    });
    let base = if xdg_ok { run_user } else { tmp };
    match std::fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", base.display())),
    }
    let m = std::fs::symlink_metadata(&base)
        .with_context(|| format!("cannot look at {}", base.display()))?;
    if !m.is_dir() || m.uid() != euid || m.mode() & 0o077 != 0 {
        bail!(
            "{} is not a private directory of yours (owner uid {}, mode {:o}); someone else may have made it: remove it and try again",
            base.display(),
            m.uid(),
            m.mode() & 0o7777
        );
    }
    Ok(base)
}

/// The base directory (stale entries swept) and, made in it, this
/// program's own `<pid>-<start time>` (0700). The last program to exit
/// removes an empty base: when that races with us, we make it again.
fn own_dir(euid: u32) -> anyhow::Result<(PathBuf, PathBuf)> {
    let pid = std::process::id();
    let start = Process::unchecked(pid)
        .stat()
        .context("cannot read our own /proc/self/stat")?
        .start_time;
    let mut tries = 0;
    loop {
        let base = base_dir(euid)?;
        sweep_stale(&base);
        let own = base.join(format!("{pid}-{start}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&own) {
            Ok(()) => return Ok((base, own)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", own.display())),
        }
    }
}

/// Writes the listener to `<site>/sitecustomize.py`, in a new 0700
/// directory.
fn write_site(site: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(site)
        .with_context(|| format!("cannot create {}", site.display()))?;
    let file = site.join("sitecustomize.py");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    f.write_all(LISTENER_SOURCE.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// Removes the directories of programs that are gone (killed before their
/// exit handler ran): `<pid>-<start>` whose pid no longer has that start
/// time.
fn sweep_stale(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for entry in dir.flatten().take(100_000) {
        let name = entry.file_name();
        let Some((pid, start)) = parse_entry(&name) else {
            continue;
        };
        let alive = Process::unchecked(pid)
            .stat()
            .is_ok_and(|s| s.start_time == start && s.state != 'Z');
        if !alive {
            remove_entry(&entry.path());
        }
    }
}

fn parse_entry(name: &OsStr) -> Option<(u32, u64)> {
    let s = name.to_str()?;
    let (pid, start) = s.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// A program's directory: its socket, token, `site/` (with a `__pycache__`)
/// and leftover session directories, then the directory itself. Symlinks
/// are removed, never followed.
fn remove_entry(dir: &Path) {
    remove_tree(dir, 3);
}

fn remove_tree(dir: &Path, depth: u32) {
    if let Ok(list) = std::fs::read_dir(dir) {
        for e in list.flatten().take(1000) {
            match e.file_type() {
                Ok(t) if t.is_dir() && depth > 0 => remove_tree(&e.path(), depth - 1),
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn isolating_flags_are_refused_before_the_script_only() {
        for bad in [
            &["python3", "-I", "app.py"][..],
            &["python", "-E", "app.py"],
            &["python3.11", "-uS", "app.py"],
            &["/usr/bin/python3", "-W", "error", "-Bs", "-I", "-c", "1"],
        ] {
            assert!(refuses_site(&argv(bad)).is_some(), "{bad:?}");
        }
        for ok in [
            &["python3", "app.py", "-I"][..],
            &["python3", "-c", "import sys", "-I"],
            &["python3", "-m", "http.server", "-E"],
            &["python3", "-X", "importtime", "-W", "I", "app.py"],
            &["node", "-E", "app.js"],
            &["python3", "-u", "app.py"],
        ] {
            assert!(refuses_site(&argv(ok)).is_none(), "{ok:?}");
        }
    }

    #[test]
    fn entry_names_parse() {
        assert_eq!(parse_entry(OsStr::new("123-456")), Some((123, 456)));
        for bad in ["site-0123", "12", "a-1", "1-b"] {
            assert_eq!(parse_entry(OsStr::new(bad)), None, "{bad}");
        }
    }
}
