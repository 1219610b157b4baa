//! Unit tests for ELF reading on a synthetic file (see `testelf`): symbol
//! and segment lookups, placement in a process, and malformed input.

use super::*;
use crate::process::maps::parse_maps;
use crate::python::testelf::{self, ET_EXEC, PYRUNTIME, RODATA, Spec, TEXT};

fn info(spec: &Spec) -> ElfInfo {
    ElfInfo::parse(ElfBytes::from_slice(&testelf::build(spec)).as_bytes()).unwrap()
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
    let exercise = |bytes: &[u8]| {
        if let Ok(info) = ElfInfo::parse(ElfBytes::from_slice(bytes).as_bytes()) {
            parsed.set(parsed.get() + 1);
            let _ = info.place(&refs);
            if let Some(s) = info.symbol("Py_Version") {
                let _ = info.read_uint(bytes, s.vaddr, s.size);
            }
            let _ = info.section_data(bytes, ".rodata");
        }
    };
    for len in 0..good.len() {
        exercise(&good[..len]);
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
