//! Unit tests for the detection helpers: name rules and the version lookup
//! order, on synthetic binaries. Live interpreters are covered by
//! tests/python_detect.rs.

use super::elf::ElfBytes;
use super::testelf::{self, Spec};
use super::*;
use crate::process::maps::parse_maps;

/// The version found in memory, checked to be what reading from the file finds.
fn lookup(spec: &Spec, hint: Option<(u8, u8)>) -> Option<(String, &'static str)> {
    let built = testelf::build(spec);
    let bytes = ElfBytes::from_slice(&built);
    let info = ElfInfo::parse(bytes.as_bytes()).unwrap();
    let found = version_in_binary(&info, &FileBytes::Memory(bytes.as_bytes()), hint);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libpython3.11.so.1.0");
    std::fs::write(&path, &built).unwrap();
    let file = ElfFile::open(&path).unwrap();
    let loaded = ElfInfo::load(&file).unwrap();
    assert_eq!(
        version_in_binary(&loaded, &FileBytes::File(&file), hint),
        found
    );
    found.map(|(v, s)| (v.to_string(), s))
}

#[test]
fn py_version_wins_over_strings() {
    let spec = Spec {
        py_version: Some(0x030B07F0),
        rodata: b"\x003.11.2\0",
        ..Spec::default()
    };
    assert_eq!(
        lookup(&spec, Some((3, 11))),
        Some(("3.11.7".into(), "Py_Version"))
    );
    let rc = Spec {
        py_version: Some(0x030F00C2),
        ..Spec::default()
    };
    assert_eq!(lookup(&rc, None), Some(("3.15.0rc2".into(), "Py_Version")));
}

#[test]
fn falls_back_to_the_literal() {
    let old = Spec {
        py_version: None,
        rodata: b"\0/root/.pyenv/versions/3.9.18\0x\x003.2.0\0",
        ..Spec::default()
    };
    assert_eq!(
        lookup(&old, Some((3, 9))),
        Some(("3.9.18".into(), "version string"))
    );
    // Garbage in Py_Version, or a value from before Py_Version existed, is ignored.
    for bogus in [0xdead_beef_u64, 0x1_030B_07F0, 0x030A_0DF0] {
        let spec = Spec {
            py_version: Some(bogus),
            rodata: b"\x003.11.4\0",
            ..Spec::default()
        };
        assert_eq!(
            lookup(&spec, Some((3, 11))),
            Some(("3.11.4".into(), "version string")),
            "{bogus:#x}"
        );
    }
    let nothing = Spec {
        py_version: None,
        rodata: b"\0no version here\0",
        ..Spec::default()
    };
    assert_eq!(lookup(&nothing, Some((3, 9))), None);
}

#[test]
fn recognises_libpython_names() {
    for yes in [
        "libpython3.11.so.1.0",
        "libpython2.7.so.1.0",
        "libpython3.6m.so.1.0",
        "libpython3.13t.so",
        "libpython3.12d.so.1.0",
    ] {
        assert!(is_libpython(yes), "{yes}");
    }
    for no in [
        "libpython3.so",
        "libpython3.11.a",
        "libpython3.11.sox",
        "python3.11",
        "libpython.so",
        "libpythonista3.1.so",
    ] {
        assert!(!is_libpython(no), "{no}");
    }
}

#[test]
fn groups_mappings_per_library_file() {
    let maps = parse_maps(
        b"7f0000000000-7f0000001000 r--p 00000000 08:01 9 /usr/lib/libpython3.11.so.1.0\n\
          7f0000001000-7f0000002000 r-xp 00001000 08:01 9 /usr/lib/libpython3.11.so.1.0\n\
          7f0000100000-7f0000101000 r--p 00000000 08:01 5 /usr/lib/libpython3.so\n\
          7f0000200000-7f0000201000 r--p 00000000 08:01 12 /usr/lib/libpython3.11.so.1.0 (deleted)\n\
          7f0000300000-7f0000301000 r--p 00000000 08:01 3 /usr/lib/libc.so.6\n",
    );
    let groups = libpython_mappings(&maps);
    assert_eq!(groups.len(), 2, "same path, new inode: a different file");
    assert_eq!(groups[0].len(), 2);
    assert_eq!(groups[1][0].inode, 12);
    assert_eq!(load_base(None, &groups[0]), 0x7f0000000000);
}
