//! What is looked up in the target's binaries: the interpreter's C-API
//! entry points ([`PySyms`]) and what is needed from its C library
//! ([`Libc`]: mmap, munmap, errno, and exported functions to name a program
//! counter).

use std::collections::HashMap;

use crate::inject::ptrace::{PtraceError, Result};
use crate::process::Process;
use crate::process::maps::Mapping;
use crate::python::PythonProcess;
use crate::python::elf::{ElfFile, ElfInfo};

/// [start, end) of a function in the target.
pub(super) type Range = (u64, u64);

pub(super) fn in_ranges(ranges: &[Range], addr: u64) -> bool {
    ranges.iter().any(|&(s, e)| s <= addr && addr < e)
}

/// The C-API entry points used, as run-time addresses.
pub(super) struct PySyms {
    pub(super) ensure: u64,
    pub(super) release: u64,
    pub(super) run: u64,
    pub(super) add_pending: u64,
    pub(super) this_tstate: u64,
    /// PyGILState_Check (3.4+).
    pub(super) check: Option<u64>,
    /// `_PyThreadState_UncheckedGet` (3.5.2–3.12) / `PyThreadState_GetUnchecked`
    /// (3.13+): the GIL holder's tstate on ≤ 3.11, the calling thread's
    /// attached tstate on 3.12+.
    pub(super) unchecked_get: Option<u64>,
    /// The variable `_PyThreadState_Current` (2.7–3.6): the GIL holder's tstate.
    pub(super) tstate_current_var: Option<u64>,
    /// `_Py_IsFinalizing` (3.7–3.12) / `Py_IsFinalizing` (3.13+).
    pub(super) is_finalizing: Option<u64>,
    /// The bytecode loop: a GIL holder seen here honours a drop request.
    pub(super) eval_loop: Vec<Range>,
    /// Functions in which a parked thread waits on a Python lock.
    pub(super) lock_waits: Vec<Range>,
    /// 2.7: where a thread waits for the GIL (also a PyThread lock there).
    pub(super) gil_waits: Vec<Range>,
}

/// What we need from the target's libc.
pub(super) struct Libc {
    pub(super) mmap: u64,
    pub(super) munmap: u64,
    pub(super) errno_location: Option<u64>,
    /// Exported functions, sorted by address, to name a program counter.
    pub(super) functions: Vec<(u64, u64, String)>,
    /// [start, end) of the loaded image, including .bss.
    pub(super) image: Range,
}

impl Libc {
    pub(super) fn function_at(&self, addr: u64) -> Option<&str> {
        let i = self.functions.partition_point(|f| f.0 <= addr);
        let f = self.functions.get(i.checked_sub(1)?)?;
        (addr < f.1).then_some(f.2.as_str())
    }
}

/// libc functions whose syscalls are safe waits (see threads::is_safe_syscall).
pub(super) const SAFE_WRAPPERS: &[&str] = &[
    "clock_nanosleep",
    "__clock_nanosleep",
    "nanosleep",
    "__nanosleep",
    "sleep",
    "usleep",
    "poll",
    "__poll",
    "ppoll",
    "select",
    "__select",
    "pselect",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "read",
    "__read",
    "readv",
    "pread",
    "pread64",
    "__pread64",
    "recv",
    "__recv",
    "recvfrom",
    "__recvfrom",
    "recvmsg",
    "__recvmsg",
    "recvmmsg",
    "accept",
    "__accept",
    "accept4",
    "wait",
    "wait4",
    "__wait4",
    "waitpid",
    "__waitpid",
    "waitid",
];

/// [first PT_LOAD start, last PT_LOAD end) at run time.
pub(super) fn image_range(info: &ElfInfo, bias: u64) -> Option<Range> {
    let start = info.loads.iter().map(|l| l.vaddr).min()?;
    let end = info
        .loads
        .iter()
        .map(|l| l.vaddr.saturating_add(l.memsz))
        .max()?;
    Some((start.wrapping_add(bias), end.wrapping_add(bias)))
}

pub(super) fn py_symbols(py: &PythonProcess) -> Result<PySyms> {
    // Exported names first: looking up a name .dynsym lacks would read the
    // whole .symtab of a debug build (~20 ms on pyenv's 30 MB libpython).
    let addr = |name: &str| py.exported_symbol_address(name);
    let need = |name: &'static str| {
        addr(name)
            .or_else(|| py.symbol_address(name))
            .ok_or_else(|| {
                PtraceError::Unsupported(format!(
                    "{} does not export {name}; memsleuth cannot call into this interpreter",
                    py.binary.display()
                ))
            })
    };
    let range = |name: &str| -> Option<Range> {
        let size = py.elf()?.exported_symbol(name)?.size;
        let start = addr(name)?;
        (size > 0).then(|| (start, start + size))
    };
    let ranges = |names: &[&str]| names.iter().filter_map(|n| range(n)).collect::<Vec<_>>();
    let py2 = py.version.is_some_and(|v| v.major == 2);
    Ok(PySyms {
        ensure: need("PyGILState_Ensure")?,
        release: need("PyGILState_Release")?,
        run: need("PyRun_SimpleString")?,
        add_pending: need("Py_AddPendingCall")?,
        this_tstate: need("PyGILState_GetThisThreadState")?,
        check: addr("PyGILState_Check"),
        unchecked_get: addr("PyThreadState_GetUnchecked")
            .or_else(|| addr("_PyThreadState_UncheckedGet")),
        tstate_current_var: addr("_PyThreadState_Current"),
        is_finalizing: addr("Py_IsFinalizing").or_else(|| addr("_Py_IsFinalizing")),
        eval_loop: ranges(&["_PyEval_EvalFrameDefault", "PyEval_EvalFrameEx"]),
        lock_waits: if py2 {
            ranges(&["PyThread_acquire_lock"])
        } else {
            ranges(&["PyThread_acquire_lock_timed", "_PySemaphore_Wait"])
        },
        gil_waits: ranges(&[
            "PyEval_RestoreThread",
            "PyEval_AcquireThread",
            "PyEval_AcquireLock",
        ]),
    })
}

/// glibc's `libc.so.6` / `libc-2.NN.so`, or musl's loader-libc.
pub(super) fn is_libc_name(name: &str) -> bool {
    name == "libc.so.6"
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("libc.musl-")
        || name.starts_with("ld-musl-")
}

pub(super) fn find_libc(proc: &Process, maps: &[Mapping]) -> Result<Libc> {
    let path = maps
        .iter()
        .map(|m| m.clean_path())
        .find(|p| is_libc_name(p.rsplit('/').next().unwrap_or(p)))
        .ok_or_else(|| {
            PtraceError::Unsupported(
                "no C library (libc.so.6 or musl) is mapped in the target".into(),
            )
        })?
        .to_owned();
    let mine: Vec<&Mapping> = maps.iter().filter(|m| m.clean_path() == path).collect();
    let file = libc_file(proc, &path, &mine)?;
    let placement = file.info.place(&mine).ok_or_else(|| {
        PtraceError::Unsupported(format!("cannot tell where {path} is loaded in the target"))
    })?;
    let at = |v: u64| placement.runtime(v);
    let missing = |n: &str| PtraceError::Unsupported(format!("{path} does not export {n}"));
    Ok(Libc {
        mmap: file.mmap.map(at).ok_or_else(|| missing("mmap"))?,
        munmap: file.munmap.map(at).ok_or_else(|| missing("munmap"))?,
        errno_location: file.errno_location.map(at),
        functions: file
            .functions
            .iter()
            .map(|(s, e, n)| (at(*s), at(*e), n.clone()))
            .collect(),
        image: image_range(&file.info, placement.bias)
            .ok_or_else(|| PtraceError::Unsupported(format!("{path} has no loadable segments")))?,
    })
}

/// What is read from a C library file, at link-time addresses.
struct LibcFile {
    info: ElfInfo,
    mmap: Option<u64>,
    munmap: Option<u64>,
    errno_location: Option<u64>,
    functions: Vec<(u64, u64, String)>,
}

/// Parses (once per device, inode and path: every process on a host shares
/// the same libc) the C library mapped at `path`.
fn libc_file(proc: &Process, path: &str, mine: &[&Mapping]) -> Result<std::sync::Arc<LibcFile>> {
    type Key = (u32, u32, u64, String);
    static CACHE: std::sync::Mutex<Vec<(Key, std::sync::Arc<LibcFile>)>> =
        std::sync::Mutex::new(Vec::new());
    let first = mine
        .first()
        .ok_or_else(|| PtraceError::Unsupported(format!("{path} is not mapped")))?;
    let key: Key = (
        first.dev_major,
        first.dev_minor,
        first.inode,
        path.to_owned(),
    );
    if let Some((_, f)) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(f.clone());
    }
    let file = ElfFile::open(&proc.root_path(path))
        .ok()
        .filter(|f| f.inode == first.inode)
        .or_else(|| {
            let m = mine.iter().find(|m| m.offset == 0)?;
            ElfFile::open(&proc.path(&format!("map_files/{:x}-{:x}", m.start, m.end))).ok()
        })
        .or_else(|| ElfFile::open(&proc.root_path(path)).ok())
        .ok_or_else(|| {
            PtraceError::Unsupported(format!("cannot open the target's C library {path}"))
        })?;
    // Only the headers, .dynsym and .dynstr are read (not 2 MB of code).
    let (info, exported) = ElfInfo::load_with_functions(&file)
        .map_err(|e| PtraceError::Unsupported(format!("{path}: {e}")))?;
    let mut functions: Vec<(u64, u64, String)> = Vec::new();
    let mut named: HashMap<&str, u64> = HashMap::new();
    for f in &exported {
        let name = f.name.as_str();
        if matches!(name, "mmap" | "mmap64" | "munmap" | "__errno_location") {
            named.entry(name).or_insert(f.vaddr);
        }
        if f.size > 0 {
            functions.push((f.vaddr, f.vaddr.saturating_add(f.size), name.to_owned()));
        }
    }
    // Aliases share an address: keep the name of a safe wrapper if any
    // (the key is computed once per function: ~3000 in glibc).
    functions.sort_by_cached_key(|f| {
        (
            f.0,
            std::cmp::Reverse(SAFE_WRAPPERS.contains(&f.2.as_str())),
        )
    });
    functions.dedup_by_key(|f| f.0);
    let parsed = std::sync::Arc::new(LibcFile {
        info,
        mmap: named.get("mmap").or(named.get("mmap64")).copied(),
        munmap: named.get("munmap").copied(),
        errno_location: named.get("__errno_location").copied(),
        functions,
    });
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 16 {
        cache.remove(0);
    }
    cache.push((key, parsed.clone()));
    Ok(parsed)
}
