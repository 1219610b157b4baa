//! `python::detect` against every interpreter installed on this machine:
//! pyenv's shared builds, Debian's static /usr/bin/python3.11, and the
//! interpreters `scripts/provision-pythons` puts under
//! ~/.cache/memsleuth/pythons. Interpreters that are missing are skipped.
//!
//! Each child reports its own truth (sys.version_info, and through ctypes the
//! run-time addresses of PyRun_SimpleString and _PyRuntime); the addresses
//! are also recomputed from `readelf` output and /proc/PID/maps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memsleuth::process::Process;
use memsleuth::process::maps::Mapping;
use memsleuth::python::elf::{ElfFile, ElfInfo, FileBytes};
use memsleuth::python::{self, BuildKind, PythonProcess, PythonVersion, version};

const CHILD: &str = r#"
import sys, time
a = r = 0
try:
    import ctypes
    a = ctypes.cast(ctypes.pythonapi.PyRun_SimpleString, ctypes.c_void_p).value
    try:
        r = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
    except Exception:
        pass
except Exception:
    pass
v = sys.version_info
sys.stdout.write("ready %d %d %d %s %d %d %d\n" % (v[0], v[1], v[2], v[3], v[4], a or 0, r))
sys.stdout.flush()
time.sleep(30)
"#;

/// Kills the child however the test ends.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a child Python says about itself.
struct Truth {
    version: PythonVersion,
    run_simple_string: u64,
    runtime: u64,
}

fn spawn_python(interp: &Path) -> (Guard, Truth) {
    let child = Command::new(interp)
        .args(["-c", CHILD])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", interp.display()));
    let mut guard = Guard(child);
    let mut line = String::new();
    BufReader::new(guard.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"ready"), "{}: {line:?}", interp.display());
    let num = |i: usize| f[i].parse::<u64>().unwrap();
    let level = match f[4] {
        "alpha" => 'a',
        "beta" => 'b',
        "candidate" => 'c',
        _ => 'f',
    };
    let version = PythonVersion {
        major: num(1) as u8,
        minor: num(2) as u8,
        micro: num(3) as u8,
        level,
        serial: num(5) as u8,
        micro_known: true,
    };
    (
        guard,
        Truth {
            version,
            run_simple_string: num(6),
            runtime: num(7),
        },
    )
}

fn spawn(cmd: &mut Command) -> Guard {
    Guard(cmd.stdout(Stdio::null()).spawn().expect("spawn"))
}

/// Maps of a child once `ready` holds (exec done, libraries loaded).
fn maps_when(pid: u32, ready: impl Fn(&[Mapping]) -> bool) -> (Process, Vec<Mapping>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let proc = Process::open(pid).unwrap();
        let maps = proc.maps().unwrap();
        if ready(&maps) || Instant::now() > deadline {
            return (proc, maps);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interpreters() -> Vec<(PathBuf, BuildKind)> {
    let mut out = Vec::new();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let pyenv_root = Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .or_else(|| std::env::var_os("PYENV_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| home.join(".pyenv"));
    let mut versions: Vec<PathBuf> = std::fs::read_dir(pyenv_root.join("versions"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    for dir in versions {
        let interp = dir.join("bin/python");
        if interp.exists() {
            let shared = std::fs::read_dir(dir.join("lib")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with("libpython") && n.contains(".so"))
                })
            });
            out.push((
                interp,
                if shared {
                    BuildKind::SharedLib
                } else {
                    BuildKind::Static
                },
            ));
        }
    }
    if Path::new("/usr/bin/python3.11").exists() {
        out.push((PathBuf::from("/usr/bin/python3.11"), BuildKind::Static));
    }
    let provisioned = std::env::var_os("MEMSLEUTH_PYTHONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/memsleuth/pythons"));
    for minor in 12..=20 {
        let interp = provisioned.join(format!("3.{minor}/usr/bin/python3.{minor}"));
        if interp.exists() {
            out.push((interp, BuildKind::Static));
        }
    }
    out
}

/// `readelf`'s view: (ELF type, first PT_LOAD vaddr, symbol value).
fn readelf(binary: &Path, symbol: &str) -> Option<(String, u64, u64)> {
    let run = |args: &[&str]| {
        let out = Command::new("readelf")
            .args(args)
            .arg(binary)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let headers = run(&["-W", "-h", "-l"])?;
    let kind = headers
        .lines()
        .find_map(|l| l.trim().strip_prefix("Type:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let first_load = headers
        .lines()
        .find(|l| l.trim_start().starts_with("LOAD"))?
        .split_whitespace()
        .nth(2)?;
    let first_load = u64::from_str_radix(first_load.trim_start_matches("0x"), 16).ok()?;
    let syms = run(&["-W", "--dyn-syms"])?;
    let value = syms.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 8 && f[7] == symbol && f[6] != "UND")
            .then(|| u64::from_str_radix(f[1], 16).ok())
            .flatten()
    })?;
    Some((kind, first_load, value))
}

/// Checks one live interpreter; returns what is wrong.
fn check(interp: &Path, build: BuildKind) -> Vec<String> {
    let (guard, truth) = spawn_python(interp);
    let (proc, maps) = maps_when(guard.0.id(), |_| true);
    let mut bad = Vec::new();
    let Some(p) = python::detect(&proc, &maps).unwrap() else {
        return vec!["not detected".into()];
    };
    let expect_source = if truth.version.minor >= 11 && truth.version.major == 3 {
        "Py_Version"
    } else {
        "version string"
    };
    if p.version != Some(truth.version) || p.version_source != expect_source {
        bad.push(format!(
            "version {:?} via {}, want {} via {expect_source}",
            p.version, p.version_source, truth.version
        ));
    }
    if p.build != build {
        bad.push(format!("build {:?}, want {build:?}", p.build));
    }
    let exe = std::fs::canonicalize(interp).unwrap();
    if p.exe != exe {
        bad.push(format!("exe {}, want {}", p.exe.display(), exe.display()));
    }
    bad.extend(check_addresses(&p, &maps, &truth));
    bad.extend(check_version_string(&p, &truth.version));
    bad.extend(check_partial_read(&p));
    println!(
        "{:<58} {:<8} {:<9} via {:<14} base {:#x} PyRun_SimpleString {:#x} (ctypes {:#x}) _PyRuntime {:#x} (ctypes {:#x})",
        interp.display(),
        p.version.map(|v| v.to_string()).unwrap_or_default(),
        format!("{:?}", p.build),
        p.version_source,
        p.load_base,
        p.symbol_address("PyRun_SimpleString").unwrap_or(0),
        truth.run_simple_string,
        p.symbol_address("_PyRuntime").unwrap_or(0),
        truth.runtime,
    );
    bad
}

fn check_addresses(p: &PythonProcess, maps: &[Mapping], truth: &Truth) -> Vec<String> {
    let mut bad = Vec::new();
    let binary = p.binary.to_str().unwrap();
    let own: Vec<&Mapping> = maps.iter().filter(|m| m.clean_path() == binary).collect();
    let offset0 = own.iter().filter(|m| m.offset == 0).map(|m| m.start).min();
    if Some(p.load_base) != offset0 {
        bad.push(format!(
            "load_base {:#x}, offset-0 mapping at {offset0:#x?}",
            p.load_base
        ));
    }
    let Some(run) = p.symbol_address("PyRun_SimpleString") else {
        return vec!["no PyRun_SimpleString address".into()];
    };
    if !own
        .iter()
        .any(|m| m.executable() && m.start <= run && run < m.end)
    {
        bad.push(format!(
            "PyRun_SimpleString {run:#x} is not in an executable mapping of {binary}"
        ));
    }
    if truth.run_simple_string != 0 && run != truth.run_simple_string {
        bad.push(format!(
            "PyRun_SimpleString {run:#x}, ctypes says {:#x}",
            truth.run_simple_string
        ));
    }
    let runtime = p.symbol_address("_PyRuntime");
    if truth.runtime != 0 && runtime != Some(truth.runtime) {
        bad.push(format!(
            "_PyRuntime {runtime:#x?}, ctypes says {:#x}",
            truth.runtime
        ));
    }
    if let Some((start, size)) = p.section_address(".PyRuntime")
        && (Some(start) != runtime || size == 0)
    {
        bad.push(format!(
            ".PyRuntime section at {start:#x}+{size:#x}, _PyRuntime at {runtime:#x?}"
        ));
    }
    // Independently: readelf's numbers on top of the maps.
    match readelf(&p.binary, "PyRun_SimpleString") {
        Some((kind, first_load, value)) => {
            let want = if kind == "EXEC" {
                Some(value)
            } else {
                offset0.map(|b| b + value - (first_load & !0xfff))
            };
            if want != Some(run) {
                bad.push(format!(
                    "PyRun_SimpleString {run:#x}, readelf + maps give {want:#x?}"
                ));
            }
        }
        None if Command::new("readelf").arg("--version").output().is_ok() => {
            bad.push("readelf output not understood".into());
        }
        None => {}
    }
    bad
}

/// The literal rule must find the right version in every binary, including
/// those where Py_Version made it unnecessary.
fn check_version_string(p: &PythonProcess, want: &PythonVersion) -> Vec<String> {
    let bytes = ElfFile::open(&p.binary).unwrap().read_all().unwrap();
    let info = ElfInfo::parse(bytes.as_bytes()).unwrap();
    let hint = version::hint_from_name(p.binary.file_name().unwrap().to_str().unwrap());
    let found = info
        .section_data(bytes.as_bytes(), ".rodata")
        .and_then(|r| version::find_in_rodata(r, hint));
    if found != Some(*want) {
        vec![format!("version string rule found {found:?}")]
    } else {
        vec![]
    }
}

/// Every `Py*`/`_Py*` name readelf lists in .dynsym and .symtab.
fn readelf_names(binary: &Path) -> Vec<String> {
    let Ok(out) = Command::new("readelf")
        .args(["-W", "--dyn-syms", "--syms"])
        .arg(binary)
        .output()
    else {
        return Vec::new();
    };
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("Py") || n.starts_with("_Py"))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Reading only parts of the file (what `detect` does) must give what
/// parsing the whole file in memory gives.
fn check_partial_read(p: &PythonProcess) -> Vec<String> {
    let file = ElfFile::open(&p.binary).unwrap();
    let bytes = file.read_all().unwrap();
    let parsed = ElfInfo::parse(bytes.as_bytes()).unwrap();
    let loaded = ElfInfo::load(&file).unwrap();
    let mut bad = Vec::new();
    if (loaded.kind, &loaded.loads, &loaded.sections)
        != (parsed.kind, &parsed.loads, &parsed.sections)
    {
        bad.push("partial read: different segments or sections".into());
    }
    let names = readelf_names(&p.binary);
    let differ: Vec<&String> = names
        .iter()
        .filter(|n| loaded.symbol(n) != parsed.symbol(n))
        .collect();
    if !differ.is_empty() {
        bad.push(format!("partial read: symbols differ: {differ:?}"));
    }
    if loaded.symbol_count() != parsed.symbol_count() {
        bad.push(format!(
            "partial read: {} symbols, whole file {}",
            loaded.symbol_count(),
            parsed.symbol_count()
        ));
    }
    let rodata = loaded.section_bytes(&FileBytes::File(&file), ".rodata");
    if rodata.as_deref() != parsed.section_data(bytes.as_bytes(), ".rodata") {
        bad.push("partial read: .rodata differs".into());
    }
    bad
}

#[test]
fn detects_every_installed_interpreter() {
    let found = interpreters();
    if found.is_empty() {
        eprintln!("no Python interpreters found; nothing to check");
        return;
    }
    let mut failures = Vec::new();
    for (interp, build) in &found {
        for problem in check(interp, *build) {
            failures.push(format!("{}: {problem}", interp.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn other_programs_are_not_python() {
    let sleep = spawn(Command::new("sleep").arg("30"));
    let (proc, maps) = maps_when(sleep.0.id(), |m| {
        m.iter().any(|m| m.path.ends_with("/sleep"))
    });
    assert!(python::detect(&proc, &maps).unwrap().is_none());

    // A program merely named like an interpreter.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("python3.11");
    let sleep_path = Command::new("sh")
        .args(["-c", "command -v sleep"])
        .output()
        .unwrap()
        .stdout;
    std::fs::copy(String::from_utf8_lossy(&sleep_path).trim(), &fake).unwrap();
    let launcher = spawn(Command::new(&fake).arg("30"));
    let (proc, maps) = maps_when(launcher.0.id(), |m| {
        m.iter().any(|m| m.path.ends_with("/python3.11"))
    });
    assert!(python::detect(&proc, &maps).unwrap().is_none());
}

/// A program that maps libpython without being python counts, as a shared build.
#[test]
fn embedding_programs_are_shared_builds() {
    let Some((interp, BuildKind::SharedLib)) = interpreters().into_iter().find(|(i, b)| {
        *b == BuildKind::SharedLib
            && i.parent()
                .and_then(|p| p.parent())
                .is_some_and(|v| v.join("lib/libpython3.11.so.1.0").exists())
    }) else {
        eprintln!("no shared 3.11 build; skipped");
        return;
    };
    let lib = interp
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lib/libpython3.11.so.1.0");
    let embed = spawn(Command::new("sleep").arg("30").env("LD_PRELOAD", &lib));
    let (proc, maps) = maps_when(embed.0.id(), |m| {
        m.iter().any(|m| m.path.contains("libpython3.11"))
    });
    let p = python::detect(&proc, &maps).unwrap().expect("detected");
    assert_eq!(p.build, BuildKind::SharedLib);
    assert_eq!(p.binary, lib);
    assert!(p.exe.ends_with("sleep"), "{}", p.exe.display());
    assert_eq!(
        (
            p.version.unwrap().major,
            p.version.unwrap().minor,
            p.version_source
        ),
        (3, 11, "Py_Version")
    );
    assert!(p.symbol_address("PyRun_SimpleString").is_some());
}
