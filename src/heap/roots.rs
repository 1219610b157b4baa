//! Finding the collector's generation lists from exported symbols:
//! `_PyGC_generation0` on 2.7/3.6, `_PyRuntime` on 3.7–3.12 (fixed
//! offsets), and the target's own `_Py_DebugOffsets` table (which starts
//! `_PyRuntime`) on 3.13+. Every head found is checked (its first node
//! points back at it) before it is trusted.

use super::error::HeapError;
use super::layout::Layout;
use super::mem::Mem;
use super::space::AddressSpace;
use crate::python::{PythonProcess, PythonVersion};

/// One interpreter's collector state (sub-interpreters have their own from 3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcState {
    /// Start of the GC state struct (None on 2.7/3.6: it is static data).
    pub state: Option<u64>,
    /// The three generation heads (`PyGC_Head` addresses).
    pub heads: [u64; 3],
    /// The permanent generation (`gc.freeze()`), 3.7+.
    pub permanent: Option<u64>,
    /// `int collecting`.
    pub collecting: Option<u64>,
    /// `PyObject *garbage` (the `gc.garbage` list).
    pub garbage: Option<u64>,
    /// `int enabled`, `int debug`.
    pub enabled: Option<u64>,
    pub debug: Option<u64>,
    /// Offset of `threshold` and `count` (ints) from a head.
    pub threshold_off: u64,
}

/// Addresses of the static builtin types, from the binary's symbols.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Builtins {
    pub object: u64,
    pub type_: u64,
    pub list: u64,
    pub tuple: u64,
    pub dict: u64,
    /// 3.15+ `frozendict`: a dict (and its hash) that is no dict subclass.
    pub frozendict: u64,
    pub set: u64,
    pub frozenset: u64,
    /// 3.x `str`; 2.7 `unicode`.
    pub unicode: u64,
    /// 3.x `bytes`; 2.7 `str`.
    pub bytes: u64,
    pub long: u64,
    /// 2.7 `int`.
    pub int: u64,
    pub float: u64,
    pub bytearray: u64,
    pub code: u64,
    pub module: u64,
    /// 2.7 old-style `instance` and `classobj`.
    pub instance: u64,
    pub classobj: u64,
    /// The set dummy key (3.x `_PySet_Dummy`).
    pub set_dummy: u64,
    /// 2.7: bytes per `Py_UNICODE` (2 or 4).
    pub py2_ucs: u64,
}

/// Everything the decoders need about one target interpreter.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub version: PythonVersion,
    pub layout: Layout,
    pub gcs: Vec<GcState>,
    pub builtins: Builtins,
    /// `sizeof(PyHeapTypeObject)` (the `type` type's basicsize).
    pub heap_type_size: u64,
    pub warnings: Vec<String>,
}

/// Finds the interpreter's GC state(s) and builtin types.
pub fn locate(space: &dyn AddressSpace, py: &PythonProcess) -> Result<Interpreter, HeapError> {
    locate_checked(space, py, Heads::AllLinked)
}

/// [`locate`] for memory read while the process runs (lazily, or copied
/// without pausing it). A process that allocates all the time relinks the
/// first nodes of its younger lists constantly, so a head and its first
/// node read moments apart often disagree, though nothing is wrong. When
/// the strict check fails, one head whose first node links back (the
/// older lists rarely change) is taken as proof of the layout, with every
/// head still readable and pointing at a plausible node; the census then
/// walks what it can and counts what it skips.
pub fn locate_running(
    space: &dyn AddressSpace,
    py: &PythonProcess,
) -> Result<Interpreter, HeapError> {
    match locate_checked(space, py, Heads::AllLinked) {
        Err(HeapError::Corrupt(_)) => locate_checked(space, py, Heads::OneLinked),
        r => r,
    }
}

/// How strictly the generation lists' heads are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heads {
    /// Every head's first node links back to it.
    AllLinked,
    /// At least one does (see [`locate_running`]).
    OneLinked,
}

fn locate_checked(
    space: &dyn AddressSpace,
    py: &PythonProcess,
    heads: Heads,
) -> Result<Interpreter, HeapError> {
    let version = py.version.ok_or(HeapError::UnknownVersion)?;
    let binary = py.binary.display().to_string();
    let symbols = |name: &str| py.exported_symbol_address(name);
    let runtime = py.section_address(".PyRuntime").map(|(a, _)| a);
    locate_heads(space, version, &binary, &symbols, runtime, heads)
}

/// [`locate`] from the pieces of a [`PythonProcess`] it uses: the version,
/// the binary's name, its exported symbols' run-time addresses and the
/// `.PyRuntime` section's (3.13+).
pub fn locate_with(
    space: &dyn AddressSpace,
    version: PythonVersion,
    binary: &str,
    symbols: &dyn Fn(&str) -> Option<u64>,
    runtime_section: Option<u64>,
) -> Result<Interpreter, HeapError> {
    locate_heads(
        space,
        version,
        binary,
        symbols,
        runtime_section,
        Heads::AllLinked,
    )
}

pub(super) fn locate_heads(
    space: &dyn AddressSpace,
    version: PythonVersion,
    binary: &str,
    symbols: &dyn Fn(&str) -> Option<u64>,
    runtime_section: Option<u64>,
    check: Heads,
) -> Result<Interpreter, HeapError> {
    let binary = binary.to_string();
    if free_threaded_name(&binary) {
        return Err(HeapError::FreeThreaded(version.to_string()));
    }
    let layout = Layout::for_version(version.major, version.minor)
        .ok_or_else(|| HeapError::Unsupported(version.to_string()))?;
    let mem = Mem::new(space);
    let sym = |name: &'static str| {
        symbols(name).ok_or(HeapError::MissingSymbol {
            symbol: name,
            binary: binary.clone(),
        })
    };
    let opt = |name: &str| symbols(name).unwrap_or(0);
    let py3 = version.major == 3;
    let mut b = Builtins {
        object: sym("PyBaseObject_Type")?,
        type_: sym("PyType_Type")?,
        list: sym("PyList_Type")?,
        tuple: sym("PyTuple_Type")?,
        dict: sym("PyDict_Type")?,
        frozendict: opt("PyFrozenDict_Type"),
        set: opt("PySet_Type"),
        frozenset: opt("PyFrozenSet_Type"),
        unicode: sym("PyUnicode_Type")?,
        bytes: if py3 {
            opt("PyBytes_Type")
        } else {
            opt("PyString_Type")
        },
        long: opt("PyLong_Type"),
        int: if py3 { 0 } else { opt("PyInt_Type") },
        float: opt("PyFloat_Type"),
        bytearray: opt("PyByteArray_Type"),
        code: opt("PyCode_Type"),
        module: opt("PyModule_Type"),
        instance: if py3 { 0 } else { opt("PyInstance_Type") },
        classobj: if py3 { 0 } else { opt("PyClass_Type") },
        set_dummy: 0,
        py2_ucs: if symbols("PyUnicodeUCS4_FromString").is_some() {
            4
        } else {
            2
        },
    };
    if let Some(p) = symbols("_PySet_Dummy") {
        b.set_dummy = mem.u64(p).unwrap_or(0);
    }
    let heap_type_size =
        mem.u64(b.type_ + super::layout::tp::BASICSIZE)
            .ok_or(HeapError::Unreadable {
                addr: b.type_,
                what: "the `type` type object",
            })?;
    if !(400..=2048).contains(&heap_type_size) {
        return Err(HeapError::Corrupt(format!(
            "`type` has a basicsize of {heap_type_size}"
        )));
    }
    let v = (version.major, version.minor);
    let mut warnings = Vec::new();
    let gcs = match v {
        (2, 7) | (3, 6) => vec![old_generations(&mem, &sym("_PyGC_generation0")?, v, check)?],
        (3, 7) | (3, 8) => {
            let rt = sym("_PyRuntime")?;
            let off = if v == (3, 7) { 320 } else { 344 };
            vec![gc_state(&mem, rt + off, v, check)?]
        }
        (3, 9) | (3, 10) | (3, 11) | (3, 12) => {
            let rt = sym("_PyRuntime")?;
            let (head, gc) = match v {
                (3, 9) | (3, 10) => (32, 616),
                (3, 11) => (40, 648),
                _ => (40, 112),
            };
            per_interpreter(&mem, rt + head, 0, gc, v, check, &mut warnings)?
        }
        _ => {
            let rt = runtime_section.or_else(|| symbols("_PyRuntime")).ok_or(
                HeapError::MissingSymbol {
                    symbol: "_PyRuntime",
                    binary: binary.clone(),
                },
            )?;
            debug_offsets(&mem, rt, version, check, &mut warnings)?
        }
    };
    Ok(Interpreter {
        version,
        layout,
        gcs,
        builtins: b,
        heap_type_size,
        warnings,
    })
}

/// `libpython3.13t.so`, `python3.14t`: the free-threaded ABI flag.
fn free_threaded_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split(".so").next().unwrap_or(name);
    let rest = stem
        .strip_prefix("libpython")
        .or_else(|| stem.strip_prefix("python"));
    rest.is_some_and(|r| {
        let abi = r.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        abi.contains('t')
    })
}

/// Whether `h`, whose `next` (masked) is `next`, is a plausible list head:
/// empty, or its first node's `prev` points back at it.
fn head_ok(mem: &Mem, h: u64, next: u64) -> bool {
    if next == h {
        return true;
    }
    super::mem::valid_ptr(next) && mem.u64(next + 8).map(|p| p & !3) == Some(h)
}

fn check_heads(mem: &Mem, heads: &[u64], what: &str, check: Heads) -> Result<(), HeapError> {
    let corrupt = |h: u64| {
        HeapError::Corrupt(format!(
            "the generation list at {h:#x} ({what}) is not a valid list: the process may be collecting garbage or corrupt; try again"
        ))
    };
    let mut linked = 0;
    let mut unlinked = None;
    for &h in heads {
        let Some(next) = mem.u64(h).map(|n| n & !3) else {
            return Err(HeapError::Unreadable {
                addr: h,
                what: "the collector's generation lists",
            });
        };
        if head_ok(mem, h, next) {
            linked += 1;
        } else if check == Heads::AllLinked || !super::mem::valid_ptr(next) {
            // (With no plausible first node it is no list at all.)
            return Err(corrupt(h));
        } else {
            unlinked.get_or_insert(h);
        }
    }
    match unlinked {
        Some(h) if linked == 0 => Err(corrupt(h)),
        _ => Ok(()),
    }
}

/// 2.7 and 3.6: `_PyGC_generation0` points at `generations[0].head`; the
/// stride is 40 or 48 bytes (2.7 builds differ), found by validation.
fn old_generations(mem: &Mem, sym: &u64, v: (u8, u8), check: Heads) -> Result<GcState, HeapError> {
    let g0 = mem.ptr(*sym).ok_or(HeapError::Unreadable {
        addr: *sym,
        what: "_PyGC_generation0",
    })?;
    let strides: &[u64] = if v == (2, 7) { &[40, 48] } else { &[48, 40] };
    let mut last = None;
    for &s in strides {
        let heads = [g0, g0 + s, g0 + 2 * s];
        // The threshold of generation 0 is a small positive int.
        let thr = mem.u32(g0 + 32).unwrap_or(0);
        match check_heads(mem, &heads, "generations", check) {
            Ok(()) if thr > 0 && thr < 1 << 24 => {
                return Ok(GcState {
                    state: None,
                    heads,
                    permanent: None,
                    collecting: None,
                    garbage: None,
                    enabled: None,
                    debug: None,
                    threshold_off: 32,
                });
            }
            Ok(()) => {
                last = Some(HeapError::Corrupt(format!(
                    "generation 0 threshold is {thr}"
                )))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(HeapError::Corrupt("no generation lists".into())))
}

/// The GC state struct at `gc`, for 3.7–3.14 (fixed offsets; 3.13/3.14
/// `collecting` comes from the debug table when given).
fn gc_state(mem: &Mem, gc: u64, v: (u8, u8), check: Heads) -> Result<GcState, HeapError> {
    let st = match v {
        (3, 7) => GcState {
            state: Some(gc),
            heads: [gc + 32, gc + 80, gc + 128],
            permanent: Some(gc + 192),
            collecting: Some(gc + 312),
            garbage: Some(gc + 320),
            enabled: Some(gc + 12),
            debug: Some(gc + 16),
            threshold_off: 32,
        },
        (3, 14) => GcState {
            state: Some(gc),
            heads: [gc + 24, gc + 48, gc + 72],
            permanent: Some(gc + 96),
            collecting: Some(gc + 192),
            garbage: Some(gc + 200),
            enabled: Some(gc + 12),
            debug: Some(gc + 16),
            threshold_off: 16,
        },
        (3, 15) => GcState {
            state: Some(gc),
            heads: [gc + 8, gc + 32, gc + 56],
            permanent: Some(gc + 80),
            collecting: Some(gc + 112),
            garbage: Some(gc + 128),
            enabled: Some(gc),
            debug: Some(gc + 4),
            threshold_off: 16,
        },
        _ => GcState {
            state: Some(gc),
            heads: [gc + 24, gc + 48, gc + 72],
            permanent: Some(gc + 104),
            collecting: Some(gc + 200),
            garbage: Some(gc + 208),
            enabled: Some(gc + 12),
            debug: Some(gc + 16),
            threshold_off: 16,
        },
    };
    let mut all = st.heads.to_vec();
    all.extend(st.permanent);
    check_heads(mem, &all, "GC state", check)?;
    Ok(st)
}

/// 3.9+: every interpreter's GC state, from `interpreters.head` at
/// `head_ptr`, following `next` at `next_off`.
fn per_interpreter(
    mem: &Mem,
    head_ptr: u64,
    next_off: u64,
    gc_off: u64,
    v: (u8, u8),
    check: Heads,
    warnings: &mut Vec<String>,
) -> Result<Vec<GcState>, HeapError> {
    let mut interp = mem.ptr(head_ptr).ok_or(HeapError::Unreadable {
        addr: head_ptr,
        what: "the interpreter list",
    })?;
    if interp == 0 || interp % 8 != 0 {
        return Err(HeapError::Corrupt(format!(
            "the interpreter list head is {interp:#x} (is the interpreter finalizing?)"
        )));
    }
    let mut out = Vec::new();
    for _ in 0..64 {
        if interp == 0 {
            break;
        }
        match gc_state(mem, interp + gc_off, v, check) {
            Ok(s) => out.push(s),
            Err(e) if out.is_empty() => return Err(e),
            Err(e) => warnings.push(format!("a sub-interpreter was skipped: {e}")),
        }
        interp = match mem.ptr(interp + next_off) {
            Some(n) if n % 8 == 0 => n,
            _ => break,
        };
    }
    Ok(out)
}

/// 3.13+: through the target's `_Py_DebugOffsets` at `rt`.
fn debug_offsets(
    mem: &Mem,
    rt: u64,
    version: PythonVersion,
    check: Heads,
    warnings: &mut Vec<String>,
) -> Result<Vec<GcState>, HeapError> {
    let table = mem.bytes(rt, 128).ok_or(HeapError::Unreadable {
        addr: rt,
        what: "_Py_DebugOffsets",
    })?;
    if &table[..8] != b"xdebugpy" {
        return Err(HeapError::Corrupt(format!(
            "_PyRuntime at {rt:#x} lacks the \"xdebugpy\" cookie"
        )));
    }
    let w = |at: usize| super::mem::word(&table, at);
    let hex = w(8);
    let tv = u32::try_from(hex).ok().and_then(PythonVersion::from_hex);
    if tv.is_none_or(|t| (t.major, t.minor) != (version.major, version.minor)) {
        return Err(HeapError::Corrupt(format!(
            "_Py_DebugOffsets says version {hex:#x}, the binary says {version}"
        )));
    }
    match w(16) {
        0 => {}
        1 => return Err(HeapError::FreeThreaded(version.to_string())),
        x => return Err(HeapError::Corrupt(format!("free_threaded field is {x:#x}"))),
    }
    let v = (version.major, version.minor);
    let interp_head = w(40);
    let next_off = w(64);
    let gc_off = w(if v == (3, 13) { 80 } else { 88 });
    for (name, x) in [
        ("interpreters.head", interp_head),
        ("next", next_off),
        ("gc", gc_off),
    ] {
        if x > 1 << 20 {
            return Err(HeapError::Corrupt(format!(
                "_Py_DebugOffsets gives {name} = {x:#x}"
            )));
        }
    }
    let mut gcs = per_interpreter(mem, rt + interp_head, next_off, gc_off, v, check, warnings)?;
    // `gc.collecting` as the table says (3.13: @576, 3.14: @656).
    let at = match v {
        (3, 13) => Some(576),
        (3, 14) => Some(656),
        _ => None,
    };
    if let Some(at) = at
        && let Some(c) = mem.u64(rt + at).filter(|c| *c < 4096)
    {
        for g in &mut gcs {
            if let Some(s) = g.state {
                g.collecting = Some(s + c);
                g.garbage = Some(s + c + 8);
            }
        }
    }
    Ok(gcs)
}

#[cfg(test)]
mod tests {
    use super::free_threaded_name;

    #[test]
    fn free_threaded_abi_in_names() {
        assert!(free_threaded_name("/usr/lib/libpython3.13t.so.1.0"));
        assert!(free_threaded_name("/usr/bin/python3.14t"));
        assert!(!free_threaded_name("/x/libpython3.13.so.1.0"));
        assert!(!free_threaded_name("/x/libpython3.6m.so.1.0"));
        assert!(!free_threaded_name("/usr/bin/python3.11"));
    }
}
