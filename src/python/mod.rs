//! Finding the CPython interpreter inside a process and understanding its
//! build (version, shared libpython or static executable).
//!
//! Everything is read from the binaries on disk (through /proc/PID/root, so
//! containers work) plus /proc/PID/maps: no process memory, no ptrace.
//!
//! Which file holds the interpreter:
//!
//! - an executable that *defines* the C API (`Py_Initialize`,
//!   `PyRun_SimpleString`) is a static build, e.g. Debian's non-PIE
//!   `/usr/bin/python3.11`. This is checked first: such a process may also
//!   map a libpython pulled in by an extension, but its own copy runs.
//! - otherwise a mapped `libpython2.7.so.1.0`, `libpython3.6m.so.1.0`,
//!   `libpython3.13t.so.1.0`... makes a shared build, whatever the executable
//!   (pyenv's `python`, uwsgi, an embedding application). The stable-ABI shim
//!   `libpython3.so` names no version and only forwards, so it is skipped.
//! - an executable merely named python that does neither is a launcher.
//!
//! How the version is found, best first (see [`version_source`](PythonProcess::version_source)):
//! `Py_Version` (3.11+: PY_VERSION_HEX as a `const unsigned long`), the
//! `PY_VERSION` string literal (see [`version::find_in_rodata`] for the rule
//! and what real binaries contain), then major.minor from the file name.

pub mod elf;
#[cfg(test)]
mod testelf;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::process::maps::Mapping;
use crate::process::{ProcError, Process};

use self::elf::{ElfFile, ElfInfo, FileBytes, Placement};
pub use self::version::PythonVersion;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildKind {
    /// The C API lives in a mapped libpython*.so.
    SharedLib,
    /// The C API is linked into the executable.
    Static,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PythonProcess {
    pub version: Option<PythonVersion>,
    pub build: BuildKind,
    /// The file with the C API (libpython or the executable), as the target sees it.
    pub binary: PathBuf,
    pub exe: PathBuf,
    /// Address where `binary` is mapped (start of its offset-0 mapping).
    pub load_base: u64,
    /// How the version was found: "Py_Version", "version string", "library
    /// name", "executable name" (these two: micro unknown), or "unknown".
    pub version_source: &'static str,
    /// The parsed binary and its placement; None when the file could not be
    /// read (then only the names in maps were used).
    #[serde(skip)]
    image: Option<Arc<Image>>,
}

#[derive(Debug)]
struct Image {
    info: ElfInfo,
    placement: Placement,
}

impl PythonProcess {
    /// The run-time address of a defined `Py*`/`_Py*` symbol of the binary
    /// (exported ones first, then .symtab globals): link-time address plus
    /// the load bias (0 for ET_EXEC).
    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        let image = self.image.as_ref()?;
        image
            .info
            .symbol(name)
            .map(|s| image.placement.runtime(s.vaddr))
    }

    /// Like [`symbol_address`](Self::symbol_address) for exported symbols
    /// only: cheap even when the name is absent (no .symtab read).
    pub fn exported_symbol_address(&self, name: &str) -> Option<u64> {
        let image = self.image.as_ref()?;
        image
            .info
            .exported_symbol(name)
            .map(|s| image.placement.runtime(s.vaddr))
    }

    /// The run-time address and size of an allocated section, e.g. `.PyRuntime`.
    pub fn section_address(&self, name: &str) -> Option<(u64, u64)> {
        let image = self.image.as_ref()?;
        image
            .info
            .section(name)
            .map(|s| (image.placement.runtime(s.vaddr), s.size))
    }

    /// What was parsed from the binary, for callers needing more than addresses.
    pub fn elf(&self) -> Option<&ElfInfo> {
        self.image.as_ref().map(|i| &i.info)
    }

    /// The load bias added to link-time addresses.
    pub fn load_bias(&self) -> Option<u64> {
        self.image.as_ref().map(|i| i.placement.bias)
    }
}

/// Detects a CPython interpreter in the process. `Ok(None)`: not Python (or
/// nothing readable says it is). Errors only when the process is gone.
pub fn detect(proc: &Process, mappings: &[Mapping]) -> Result<Option<PythonProcess>, ProcError> {
    detect_in(&LiveFiles(proc), mappings)
}

/// Detects the interpreter from a mapping list and the executable's path
/// alone, with no live process: for core files, whose NT_FILE note gives
/// the mappings. `open` turns a path the mappings name into the file to
/// read (the same path, or a replacement given by the user).
pub fn detect_offline(
    exe: &Path,
    mappings: &[Mapping],
    open: &dyn Fn(&str) -> Option<PathBuf>,
) -> Option<PythonProcess> {
    detect_in(
        &OfflineFiles {
            exe: exe.to_path_buf(),
            open,
        },
        mappings,
    )
    .ok()
    .flatten()
}

/// How the files behind a mapping list are reached: through /proc for a
/// live process, by path for a core file.
trait FileAccess {
    /// The executable's path as shown (maybe with " (deleted)").
    fn exe(&self) -> Result<Option<PathBuf>, ProcError>;
    /// The executable, to check whether it defines the C API.
    fn open_exe(&self, exe: &str, deleted: bool, maps: &[&Mapping]) -> Option<ElfFile>;
    /// The file behind a mapping.
    fn open_mapped(&self, m: &Mapping) -> Option<ElfFile>;
}

struct LiveFiles<'a>(&'a Process);

impl FileAccess for LiveFiles<'_> {
    fn exe(&self) -> Result<Option<PathBuf>, ProcError> {
        match self.0.exe() {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.is_gone() => Err(e),
            Err(_) => Ok(None), // permission: libpython in maps may still tell
        }
    }

    fn open_exe(&self, exe: &str, deleted: bool, maps: &[&Mapping]) -> Option<ElfFile> {
        let proc = self.0;
        // /proc/PID/exe reaches the file even when it was deleted or replaced.
        (!deleted)
            .then(|| ElfFile::open(&proc.root_path(exe)).ok())
            .flatten()
            .filter(|f| maps.first().is_none_or(|m| m.inode == f.inode))
            .or_else(|| ElfFile::open(&proc.path("exe")).ok())
    }

    fn open_mapped(&self, m: &Mapping) -> Option<ElfFile> {
        open_mapped(self.0, m)
    }
}

struct OfflineFiles<'a> {
    exe: PathBuf,
    open: &'a dyn Fn(&str) -> Option<PathBuf>,
}

impl FileAccess for OfflineFiles<'_> {
    fn exe(&self) -> Result<Option<PathBuf>, ProcError> {
        Ok(Some(self.exe.clone()))
    }

    fn open_exe(&self, exe: &str, _deleted: bool, _maps: &[&Mapping]) -> Option<ElfFile> {
        ElfFile::open(&(self.open)(exe)?).ok()
    }

    fn open_mapped(&self, m: &Mapping) -> Option<ElfFile> {
        ElfFile::open(&(self.open)(m.clean_path())?).ok()
    }
}

fn detect_in(
    files: &dyn FileAccess,
    mappings: &[Mapping],
) -> Result<Option<PythonProcess>, ProcError> {
    let exe = files.exe()?;
    let exe_shown = exe
        .as_deref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let exe_clean = exe_shown
        .strip_suffix(" (deleted)")
        .unwrap_or(&exe_shown)
        .to_owned();

    if exe.is_some() {
        let maps: Vec<&Mapping> = mappings
            .iter()
            .filter(|m| m.clean_path() == exe_clean)
            .collect();
        if let Some(found) = static_build(files, &exe_clean, exe_shown != exe_clean, &maps) {
            return Ok(Some(found));
        }
    }
    for maps in libpython_mappings(mappings) {
        let first = maps[0];
        let lib_hint = version::hint_from_name(file_name(first.clean_path()));
        let file = files.open_mapped(first);
        let parsed = match file.as_ref().map(|f| parse(f, &maps)) {
            Some(Err(Skip::NoApi)) => continue, // readable, yet no C API: merely named libpython
            Some(Ok(parsed)) => Some(parsed),
            Some(Err(Skip::Unusable)) | None => None, // go by the name
        };
        // The name always has major.minor: is_libpython demands it.
        let (version, source) = parsed
            .as_ref()
            .zip(file.as_ref())
            .and_then(|((info, _), f)| version_in_binary(info, &FileBytes::File(f), lib_hint))
            .or_else(|| lib_hint.map(|(a, b)| (PythonVersion::major_minor(a, b), "library name")))
            .map_or((None, "unknown"), |(v, s)| (Some(v), s));
        let (image, placement) = split(parsed);
        return Ok(Some(PythonProcess {
            version,
            build: BuildKind::SharedLib,
            binary: PathBuf::from(first.clean_path()),
            exe: PathBuf::from(&exe_clean),
            load_base: load_base(placement, &maps),
            version_source: source,
            image,
        }));
    }
    Ok(None)
}

/// The executable, if it defines the C API itself.
fn static_build(
    files: &dyn FileAccess,
    exe: &str,
    deleted: bool,
    maps: &[&Mapping],
) -> Option<PythonProcess> {
    let file = files.open_exe(exe, deleted, maps)?;
    if !file.may_define_c_api() {
        return None;
    }
    let (info, placement) = parse(&file, maps).ok()?;
    let hint = version::hint_from_name(file_name(exe));
    let (version, source) = version_in_binary(&info, &FileBytes::File(&file), hint)
        .or_else(|| hint.map(|(a, b)| (PythonVersion::major_minor(a, b), "executable name")))
        .map_or((None, "unknown"), |(v, s)| (Some(v), s));
    let (image, placement) = split(Some((info, placement)));
    Some(PythonProcess {
        version,
        build: BuildKind::Static,
        binary: PathBuf::from(exe),
        exe: PathBuf::from(exe),
        load_base: load_base(placement, maps),
        version_source: source,
        image,
    })
}

/// Why a file did not give a parsed interpreter binary.
enum Skip {
    /// A readable ELF file that does not define the C API.
    NoApi,
    /// Too large, unreadable or malformed: no verdict.
    Unusable,
}

type Parsed = (ElfInfo, Option<Placement>);

/// The image kept for address queries (only when it could be placed).
fn split(parsed: Option<Parsed>) -> (Option<Arc<Image>>, Option<Placement>) {
    match parsed {
        Some((info, Some(placement))) => {
            (Some(Arc::new(Image { info, placement })), Some(placement))
        }
        _ => (None, None),
    }
}

/// From the ELF placement, else the lowest offset-0 mapping of the file.
fn load_base(placement: Option<Placement>, maps: &[&Mapping]) -> u64 {
    placement.map(|p| p.load_base).unwrap_or_else(|| {
        let zero = maps.iter().filter(|m| m.offset == 0).map(|m| m.start).min();
        zero.or_else(|| maps.iter().map(|m| m.start).min())
            .unwrap_or(0)
    })
}

/// Parses a binary that must define the C API, reading only its headers and
/// dynamic symbols (more if a lookup needs it); `maps` are its mappings, to
/// place it.
fn parse(file: &ElfFile, maps: &[&Mapping]) -> Result<Parsed, Skip> {
    let info = ElfInfo::load(file).map_err(|_| Skip::Unusable)?;
    if !info.defines_c_api() {
        return Err(Skip::NoApi);
    }
    let placement = info.place(maps);
    Ok((info, placement))
}

/// The version recorded inside the binary: `Py_Version`, else the literal
/// (only then is .rodata read).
fn version_in_binary(
    info: &ElfInfo,
    data: &FileBytes,
    hint: Option<(u8, u8)>,
) -> Option<(PythonVersion, &'static str)> {
    let from_hex = info
        .symbol("Py_Version")
        .filter(|s| s.size == 4 || s.size == 8)
        .and_then(|s| info.read_uint_from(data, s.vaddr, s.size))
        .and_then(|v| u32::try_from(v).ok())
        .and_then(PythonVersion::from_hex)
        // Py_Version appeared in 3.11; anything else is not what we think.
        .filter(|v| v.major == 3 && v.minor >= 11);
    if let Some(v) = from_hex {
        return Some((v, "Py_Version"));
    }
    // Without section headers, look through every loaded byte instead.
    let found = match info.section_bytes(data, ".rodata") {
        Some(rodata) => version::find_in_rodata(&rodata, hint),
        None => info
            .loads
            .iter()
            .filter_map(|l| data.get(l.offset, l.filesz))
            .find_map(|bytes| version::find_in_rodata(&bytes, hint)),
    };
    found.map(|v| (v, "version string"))
}

/// Mappings grouped by libpython file (path and inode), in address order,
/// skipping the version-less `libpython3.so` shim.
fn libpython_mappings(mappings: &[Mapping]) -> Vec<Vec<&Mapping>> {
    let mut groups: Vec<Vec<&Mapping>> = Vec::new();
    for m in mappings {
        let name = file_name(m.clean_path());
        if !is_libpython(name) {
            continue;
        }
        match groups
            .iter_mut()
            .find(|g| g[0].clean_path() == m.clean_path() && g[0].inode == m.inode)
        {
            Some(g) => g.push(m),
            None => groups.push(vec![m]),
        }
    }
    groups
}

/// `libpython<major>.<minor><abiflags>.so[.<anything>]`.
fn is_libpython(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("libpython") else {
        return false;
    };
    let Some(so) = rest.find(".so") else {
        return false;
    };
    let after = &rest[so + 3..];
    (after.is_empty() || after.starts_with('.'))
        && version::hint_from_name(&name[..so + "libpython".len()]).is_some()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Opens the file behind a mapping as the target sees it; through
/// /proc/PID/map_files when the path no longer leads to the mapped file
/// (deleted, or replaced: inode differs). map_files needs CAP_SYS_ADMIN, so
/// a replaced file is used anyway when it is the only way in (inode numbers
/// also differ through some overlay filesystems).
fn open_mapped(proc: &Process, m: &Mapping) -> Option<ElfFile> {
    let by_path = (!m.is_deleted())
        .then(|| ElfFile::open(&proc.root_path(m.clean_path())).ok())
        .flatten();
    if let Some(f) = &by_path
        && f.inode == m.inode
    {
        return by_path;
    }
    let by_map = ElfFile::open(Path::new(
        &proc.path(&format!("map_files/{:x}-{:x}", m.start, m.end)),
    ))
    .ok();
    by_map.or(by_path)
}

#[cfg(test)]
mod tests;
