//! Unit tests for ELF reading on a synthetic file (see `testelf`): symbol
//! and segment lookups, placement in a process, and malformed input.

use super::*;
use crate::process::maps::parse_maps;
use crate::python::testelf::{self, ET_EXEC, PYRUNTIME, RODATA, SYMTAB, Spec, TEXT};

fn info(spec: &Spec) -> ElfInfo {
    ElfInfo::parse(ElfBytes::from_slice(&testelf::build(spec)).as_bytes()).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> ElfFile {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    ElfFile::open(&path).unwrap()
}

const NAMES: [&str; 10] = [
    "Py_Initialize",
    "PyRun_SimpleString",
    "_PyRuntime",
    "Py_Version",
    "main",
    "_PyOnlyInSymtab",
    "_PyTwice",
    "Py_LocalThing",
    "PyUndef",
    "",
];

/// What `load` (from the file) must share with `parse` (from memory).
fn assert_same(loaded: &ElfInfo, parsed: &ElfInfo) {
    assert_eq!(
        (loaded.kind, loaded.is_64, loaded.little_endian),
        (parsed.kind, parsed.is_64, parsed.little_endian)
    );
    assert_eq!(loaded.loads, parsed.loads);
    assert_eq!(loaded.sections, parsed.sections);
    for name in NAMES {
        assert_eq!(loaded.symbol(name), parsed.symbol(name), "{name}");
    }
    assert_eq!(loaded.symbol_count(), parsed.symbol_count());
    assert_eq!(loaded.defines_c_api(), parsed.defines_c_api());
}

#[test]
fn parses_symbols_sections_and_segments() {
    let info = info(&Spec::default());
    assert_eq!(info.kind, ElfKind::Dynamic);
    assert!(info.is_64 && info.little_endian && info.defines_c_api());
    assert_eq!(info.loads.len(), 2);
    assert!(info.loads[1].executable() && !info.loads[0].executable());
    assert_eq!(
        info.symbol("PyRun_SimpleString").unwrap().vaddr,
        TEXT + 0x10
    );
    assert!(info.symbol("PyRun_SimpleString").unwrap().dynamic);
    assert_eq!(info.symbol("main"), None, "only CPython names are kept");
    assert_eq!(info.section(".PyRuntime").unwrap().vaddr, PYRUNTIME);
    assert_eq!(info.section(".data").unwrap().file_range, None);
    assert_eq!(info.section(".shstrtab"), None, "not allocated");
}

#[test]
fn reads_py_version_through_segments() {
    let bytes = testelf::build(&Spec {
        py_version: Some(0x030E00C1),
        ..Spec::default()
    });
    let info = ElfInfo::parse(ElfBytes::from_slice(&bytes).as_bytes()).unwrap();
    let sym = info.symbol("Py_Version").unwrap();
    assert_eq!(
        info.read_uint(&bytes, sym.vaddr, sym.size),
        Some(0x030E00C1)
    );
    assert_eq!(info.file_offset(RODATA, 8), Some(RODATA));
    // Not in the file: between segments, past the end, overflowing.
    assert_eq!(info.file_offset(0xa00, 1), None);
    assert_eq!(info.file_offset(0x9ff, 2), None);
    assert_eq!(info.file_offset(u64::MAX, 2), None);
    assert_eq!(info.read_uint(&bytes, RODATA, 9), None);
}

#[test]
fn exec_files_use_link_addresses() {
    let info = info(&Spec {
        e_type: ET_EXEC,
        base: 0x400000,
        ..Spec::default()
    });
    assert_eq!(info.kind, ElfKind::Executable);
    let maps = parse_maps(
        b"00400000-00401000 r--p 00000000 08:01 7 /usr/bin/python3.11\n\
          00401000-00402000 r-xp 00001000 08:01 7 /usr/bin/python3.11\n",
    );
    let refs: Vec<&Mapping> = maps.iter().collect();
    let p = info.place(&refs).unwrap();
    assert_eq!(
        p,
        Placement {
            bias: 0,
            load_base: 0x400000
        }
    );
    assert_eq!(
        p.runtime(info.symbol("Py_Initialize").unwrap().vaddr),
        0x401000
    );
}

#[test]
fn dynamic_files_are_placed_by_their_mappings_not_decoys() {
    let info = info(&Spec::default());
    // A read-only decoy mmap of the same file below the real image.
    let maps = parse_maps(
        b"10000000-10002000 r--s 00000000 08:01 9 /lib/libpython3.11.so.1.0\n\
          7f0000000000-7f0000001000 r--p 00000000 08:01 9 /lib/libpython3.11.so.1.0\n\
          7f0000001000-7f0000002000 r-xp 00001000 08:01 9 /lib/libpython3.11.so.1.0\n",
    );
    let refs: Vec<&Mapping> = maps.iter().collect();
    let p = info.place(&refs).unwrap();
    assert_eq!(
        p,
        Placement {
            bias: 0x7f0000000000,
            load_base: 0x7f0000000000
        }
    );
    assert_eq!(
        p.runtime(info.symbol("PyRun_SimpleString").unwrap().vaddr),
        0x7f0000001010
    );
    // Without confirmation the first candidate is the best guess; with no
    // mapping of the first segment there is no answer.
    assert_eq!(info.place(&refs[..1]).unwrap().bias, 0x10000000);
    assert_eq!(info.place(&refs[2..]), None);
    assert_eq!(info.place(&[]), None);
}

#[test]
fn launcher_only_references_the_api() {
    let info = info(&Spec {
        defines_api: false,
        ..Spec::default()
    });
    assert!(!info.defines_c_api());
    assert_eq!(info.symbol("Py_Initialize"), None);
}

/// Every truncation and many corruptions of a valid file: errors or
/// odd answers are fine, panics are not.
#[test]
fn malformed_files_never_panic() {
    let good = testelf::build(&Spec::default());
    let maps = parse_maps(b"7f0000000000-7f0000002000 r-xp 00000000 08:01 9 /x/libpython3.11.so\n");
    let refs: Vec<&Mapping> = maps.iter().collect();
    let parsed = std::cell::Cell::new(0);
    // Memory-backed if possible, and a new file each time: rewriting one
    // file on ext4 makes every close wait for the disk.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let written = std::cell::Cell::new(0);
    // Reading only parts of the file must give the same verdicts.
    let exercise = |bytes: &[u8]| {
        let in_memory = ElfInfo::parse(ElfBytes::from_slice(bytes).as_bytes());
        written.set(written.get() + 1);
        let file = write(dir.path(), &written.get().to_string(), bytes);
        let loaded = ElfInfo::load(&file);
        assert_eq!(
            loaded.is_ok(),
            in_memory.is_ok(),
            "{loaded:?} {in_memory:?}"
        );
        if let (Ok(info), Ok(loaded)) = (in_memory, loaded) {
            parsed.set(parsed.get() + 1);
            assert_same(&loaded, &info);
            let _ = info.place(&refs);
            if let Some(s) = info.symbol("Py_Version") {
                let value = info.read_uint(bytes, s.vaddr, s.size);
                let from_file = loaded.read_uint_from(&FileBytes::File(&file), s.vaddr, s.size);
                assert_eq!(value, from_file);
            }
            let rodata = info.section_data(bytes, ".rodata");
            let from_file = loaded.section_bytes(&FileBytes::File(&file), ".rodata");
            assert_eq!(rodata, from_file.as_deref());
        }
    };
    for len in 0..good.len() {
        exercise(&good[..len]);
    }
    let with_symtab = testelf::build(&Spec {
        symtab: true,
        ..Spec::default()
    });
    for len in (0..with_symtab.len()).step_by(7) {
        exercise(&with_symtab[..len]);
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut bad = good.clone();
        for _ in 0..1 + next() % 8 {
            // Mostly the headers, where the offsets and counts live.
            let at = if next() % 4 == 0 {
                next() as usize % bad.len()
            } else {
                next() as usize % 0xb00
            };
            bad[at] = match next() % 3 {
                0 => 0xff,
                1 => 0,
                _ => next() as u8,
            };
        }
        exercise(&bad);
    }
    // The corruptions must leave many files parseable, or the code after
    // parsing was not exercised.
    assert!(parsed.get() > 1000, "only {} parsed", parsed.get());
    for junk in [&b""[..], b"\x7fELF", &[0xff; 64], &[0; 4096]] {
        assert!(ElfInfo::parse(junk).is_err());
    }
}

#[test]
fn cheap_check_reads_string_tables() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        ElfFile::open(&path).unwrap()
    };
    let built = testelf::build(&Spec::default());
    let py = write("py", &built);
    assert!(py.may_define_c_api());
    assert_eq!(
        py.read_all().unwrap().as_bytes(),
        &built[..],
        "whole file despite the check's reads"
    );
    // A launcher still mentions the names; the full parse tells them apart.
    assert!(
        write(
            "launcher",
            &testelf::build(&Spec {
                defines_api: false,
                ..Spec::default()
            })
        )
        .may_define_c_api()
    );
    let mut no_api = testelf::build(&Spec::default());
    for name in ["Py_Initialize", "PyRun_SimpleString"] {
        let at = no_api
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap();
        no_api[at] = b'X';
    }
    assert!(!write("other", &no_api).may_define_c_api());
    assert!(!write("text", b"#!/bin/sh\n").may_define_c_api());
    let own = ElfFile::open(Path::new("/proc/self/exe")).unwrap();
    let info = ElfInfo::parse(own.read_all().unwrap().as_bytes()).unwrap();
    assert!(!info.defines_c_api());
}

#[test]
fn refuses_fifos_and_devices_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("libpython3.11.so");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(matches!(
        ElfFile::open(&fifo),
        Err(ElfError::NotAFile { .. })
    ));
    assert!(matches!(
        ElfFile::open(Path::new("/dev/null")),
        Err(ElfError::NotAFile { .. })
    ));
    assert!(matches!(
        ElfFile::open(&dir.path().join("missing")),
        Err(ElfError::Io { .. })
    ));
}

/// .symtab adds the globals .dynsym lacks, first definition first; the file
/// path reads it only on a .dynsym miss, and copes when it has gone.
#[test]
fn symtab_globals_fill_in_for_dynsym() {
    let bytes = testelf::build(&Spec {
        symtab: true,
        ..Spec::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "libpython3.11.so.1.0", &bytes);
    let loaded = ElfInfo::load(&file).unwrap();
    let parsed = ElfInfo::parse(ElfBytes::from_slice(&bytes).as_bytes()).unwrap();
    assert_same(&loaded, &parsed);
    let only = loaded.symbol("_PyOnlyInSymtab").unwrap();
    assert_eq!(
        (only.vaddr, only.size, only.dynamic),
        (PYRUNTIME + 8, 8, false)
    );
    assert_eq!(loaded.symbol("_PyTwice").unwrap().vaddr, TEXT + 0x50);
    let init = loaded.symbol("Py_Initialize").unwrap();
    assert_eq!((init.vaddr, init.dynamic), (TEXT, true), ".dynsym wins");
    for absent in ["Py_LocalThing", "PyUndef", "main"] {
        assert_eq!(loaded.symbol(absent), None, "{absent}");
    }
    // 4 in .dynsym, 2 more in .symtab.
    assert_eq!(loaded.symbol_count(), 6);
    assert_eq!(SYMTAB.len(), 7);

    // Truncated after loading (before .symtab was needed): .dynsym answers
    // stay, .symtab ones are simply missing, and reads past the end fail.
    let copy = write(dir.path(), "copy", &bytes);
    let loaded = ElfInfo::load(&copy).unwrap();
    let shrink = std::fs::OpenOptions::new().write(true).open(&copy.path);
    shrink.unwrap().set_len(0x1100).unwrap();
    assert!(loaded.defines_c_api());
    assert_eq!(loaded.symbol("_PyTwice"), None);
    assert_eq!(loaded.symbol("_PyRuntime").unwrap().vaddr, PYRUNTIME);
    assert_eq!(FileBytes::File(&copy).get(0x1100, 1), None);
    assert_eq!(FileBytes::File(&copy).get(0x10ff, 2), None);
    let text = FileBytes::File(&copy).get(TEXT, 0x80).unwrap();
    assert!(text.iter().all(|&b| b == 0xc3));
}

/// The fast search equals the plain one, at every position and block edge.
#[test]
fn string_search_equals_the_plain_one() {
    let plain = |hay: &[u8], name: &[u8]| {
        let needle = [b"\0", name, b"\0"].concat();
        hay.windows(needle.len()).any(|w| w == needle)
    };
    let pieces: [&[u8]; 6] = [b"\0", b"Py_Initialize", b"P", b"Py_Init", b"x", b"\0\0"];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut hits = 0;
    for _ in 0..3000 {
        let mut hay = Vec::new();
        for _ in 0..next() % 30 {
            hay.extend_from_slice(pieces[next() as usize % pieces.len()]);
        }
        for name in [&b"Py_Initialize"[..], b"P", b""] {
            let want = plain(&hay, name);
            hits += usize::from(want);
            assert_eq!(has_string(&hay, name), want, "{hay:?} {name:?}");
        }
    }
    assert!(hits > 1000, "{hits}");
}
