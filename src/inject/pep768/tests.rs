use super::memory::{proc_mem_read, proc_mem_write, vm_read, vm_write};
use super::offsets::pos;
use super::*;
use proptest::prelude::*;

/// A table as 3.14.10 / 3.15.2 (Debian, x86-64) have it, with the values
/// read from their `.PyRuntime` sections.
fn table(minor: u8) -> Vec<u8> {
    let l = *LAYOUTS.iter().find(|l| l.minor == minor).unwrap();
    let mut b = vec![0u8; l.table_size];
    let mut put = |p: usize, v: u64| b[p..p + 8].copy_from_slice(&v.to_ne_bytes());
    let (version, runtime, head, interp, tsize, tid, rds, enabled) = match minor {
        14 => (
            0x030e_0af0u64,
            316_616u64,
            808u64,
            225_864u64,
            832u64,
            160u64,
            304u64,
            8076u64,
        ),
        _ => (0x030f_02f0, 346_568, 936, 226_240, 888, 184, 344, 8028),
    };
    put(pos::VERSION, version);
    put(pos::RUNTIME_SIZE, runtime);
    put(pos::INTERPRETERS_HEAD, head);
    put(pos::INTERP_SIZE, interp);
    put(pos::INTERP_ID, 7272);
    put(pos::INTERP_NEXT, 7264);
    put(pos::THREADS_HEAD, 7336);
    put(pos::THREADS_MAIN, 7352);
    put(pos::GIL_LOCKED, 7752);
    put(pos::GIL_HOLDER, 7744);
    put(pos::TSTATE_SIZE, tsize);
    put(pos::TSTATE_NEXT, 8);
    put(pos::TSTATE_INTERP, 16);
    put(pos::CURRENT_FRAME, 72);
    put(l.native_thread_id, tid);
    let d = l.debugger_support;
    put(d + pos::EVAL_BREAKER, 24);
    put(d + pos::REMOTE_DEBUGGER_SUPPORT, rds);
    put(d + pos::REMOTE_DEBUGGING_ENABLED, enabled);
    put(d + pos::PENDING_CALL, 0);
    put(d + pos::SCRIPT_PATH, 4);
    put(d + pos::SCRIPT_PATH_SIZE, 512);
    b[..8].copy_from_slice(COOKIE);
    b
}

fn put(b: &mut [u8], p: usize, v: u64) {
    b[p..p + 8].copy_from_slice(&v.to_ne_bytes());
}

fn malformed(r: Result<DebugOffsets, TableError>) -> String {
    match r {
        Err(TableError::Malformed(s)) => s,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn unsupported(r: Result<DebugOffsets, TableError>) -> String {
    match r {
        Err(TableError::Unsupported(s)) => s,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn parses_real_layouts() {
    let o = DebugOffsets::parse(&table(14), Some(PythonVersion::new(3, 14, 10))).unwrap();
    assert_eq!(
        (
            o.native_thread_id,
            o.remote_debugger_support,
            o.remote_debugging_enabled
        ),
        (160, 304, 8076)
    );
    assert_eq!(o.version, PythonVersion::new(3, 14, 10));
    assert_eq!((o.pending_at(), o.path_at()), (304, 308));
    let o = DebugOffsets::parse(&table(15), None).unwrap();
    assert_eq!(
        (
            o.native_thread_id,
            o.remote_debugger_support,
            o.remote_debugging_enabled
        ),
        (184, 344, 8028)
    );
    // Longer buffers are fine.
    let mut long = table(15);
    long.extend_from_slice(&[0xAA; 4096]);
    assert!(DebugOffsets::parse(&long, None).is_ok());
}

#[test]
fn version_rules() {
    let mut t = table(14);
    assert!(
        malformed(DebugOffsets::parse(&t, Some(PythonVersion::new(3, 15, 0)))).contains("replaced")
    );
    put(&mut t, pos::VERSION, 0x030d_00f0);
    assert!(unsupported(DebugOffsets::parse(&t, None)).contains("3.13.0 has no remote debugging"));
    put(&mut t, pos::VERSION, 0x0310_00f0);
    assert!(unsupported(DebugOffsets::parse(&t, None)).contains("newer"));
    let mut t = table(15);
    put(&mut t, pos::VERSION, 0x030f_00b3);
    assert!(unsupported(DebugOffsets::parse(&t, None)).contains("alpha or beta"));
    put(&mut t, pos::VERSION, 0x030f_00a1);
    assert!(unsupported(DebugOffsets::parse(&t, None)).contains("alpha or beta"));
    put(&mut t, pos::VERSION, 0x030f_00c1);
    assert!(
        DebugOffsets::parse(&t, None).is_ok(),
        "release candidates are accepted"
    );
    put(&mut t, pos::VERSION, 0xdead_beef_0000);
    malformed(DebugOffsets::parse(&t, None));
    let mut t = table(15);
    put(&mut t, pos::FREE_THREADED, 1);
    assert!(unsupported(DebugOffsets::parse(&t, None)).contains("free-threaded"));
    put(&mut t, pos::FREE_THREADED, 7);
    malformed(DebugOffsets::parse(&t, None));
}

#[test]
fn rejects_corruption() {
    let mut t = table(14);
    t[0] = b'X';
    assert!(unsupported(DebugOffsets::parse(&t, None)).contains("cookie"));
    let v = Some(PythonVersion::new(3, 14, 10));
    assert!(malformed(DebugOffsets::parse(&t, v)).contains("cookie is missing"));
    let v = Some(PythonVersion::new(3, 12, 1));
    assert!(unsupported(DebugOffsets::parse(&t, v)).contains("3.12 or older"));
    for len in [0, 7, 23, 24, 100, 759] {
        assert!(
            DebugOffsets::parse(&table(14)[..len], None).is_err(),
            "len {len}"
        );
    }
    let d14 = LAYOUTS[0].debugger_support;
    let cases: &[(usize, u64)] = &[
        (d14 + pos::SCRIPT_PATH_SIZE, 511),
        (d14 + pos::SCRIPT_PATH, 8),
        (d14 + pos::PENDING_CALL, 4),
        (d14 + pos::EVAL_BREAKER, 32),
        (d14 + pos::REMOTE_DEBUGGER_SUPPORT, 832 - 100),
        (d14 + pos::REMOTE_DEBUGGER_SUPPORT, u64::MAX - 2),
        (d14 + pos::REMOTE_DEBUGGER_SUPPORT, 20),
        (d14 + pos::REMOTE_DEBUGGING_ENABLED, 225_864),
        (d14 + pos::REMOTE_DEBUGGING_ENABLED, 8077),
        (pos::INTERPRETERS_HEAD, 8),
        (pos::INTERPRETERS_HEAD, u64::MAX),
        (pos::RUNTIME_SIZE, 1 << 40),
        (pos::RUNTIME_SIZE, 100),
        (pos::TSTATE_SIZE, 0),
        (pos::TSTATE_SIZE, 1 << 20),
        (pos::INTERP_SIZE, u64::MAX),
        (pos::THREADS_HEAD, u64::MAX - 7),
        (pos::THREADS_MAIN, 3),
        (224, 1 << 20),
        (pos::TSTATE_NEXT, 830),
    ];
    for &(p, v) in cases {
        let mut t = table(14);
        put(&mut t, p, v);
        let why = malformed(DebugOffsets::parse(&t, None));
        assert!(!why.is_empty(), "{p} = {v}");
    }
}

#[test]
fn writable_check_spans_mappings() {
    let m = |start: u64, end: u64, perms: &[u8; 4]| crate::process::maps::Mapping {
        start,
        end,
        perms: *perms,
        offset: 0,
        dev_major: 0,
        dev_minor: 0,
        inode: 0,
        path: String::new(),
        stats: Default::default(),
    };
    let maps = [
        m(0x1000, 0x2000, b"rw-p"),
        m(0x2000, 0x3000, b"rw-p"),
        m(0x3000, 0x4000, b"r--p"),
    ];
    assert!(writable(&maps, 0x1ff0, 0x20));
    assert!(!writable(&maps, 0x2ff0, 0x20));
    assert!(!writable(&maps, 0x800, 4));
    assert!(!writable(&maps, u64::MAX - 1, 4));
    assert!(writable(&maps, 0x1000, 0));
}

#[test]
fn both_memory_backends_work_on_ourselves() {
    let me = Process::unchecked(std::process::id());
    let src: [u8; 16] = *b"memsleuth-pep768";
    let addr = src.as_ptr() as u64;
    let mut a = [0u8; 16];
    vm_read(me.pid, addr, &mut a).unwrap();
    let mut b = [0u8; 16];
    proc_mem_read(me.pid, addr, &mut b).unwrap();
    assert_eq!((a, b), (src, src));
    // The kernel writes behind the compiler's back: go through a raw
    // pointer and volatile reads.
    let dst: *mut [u8; 8] = Box::into_raw(Box::new([0u8; 8]));
    let daddr = dst as u64;
    // SAFETY: `dst` is a live, exclusively owned allocation.
    let now = || unsafe { std::ptr::read_volatile(dst) };
    vm_write(me.pid, daddr, b"vm-write").unwrap();
    assert_eq!(&now(), b"vm-write");
    proc_mem_write(me.pid, daddr, b"procmem!").unwrap();
    assert_eq!(&now(), b"procmem!");
    // Through Remote with the fallback forced on this thread.
    force_proc_mem_on_this_thread(true);
    let remote = Remote { proc: &me };
    remote.write(daddr, b"remote!!").unwrap();
    assert_eq!(&now(), b"remote!!");
    assert_eq!(
        remote.read_u64(daddr).unwrap(),
        u64::from_ne_bytes(*b"remote!!")
    );
    force_proc_mem_on_this_thread(false);
    // SAFETY: allocated above by Box::into_raw, not freed elsewhere.
    drop(unsafe { Box::from_raw(dst) });
    assert!(vm_read(me.pid, 8, &mut a).is_err());
    assert!(Remote { proc: &me }.read(0, &mut a).is_err());
    assert!(Remote { proc: &me }.read(u64::MAX - 4, &mut a).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = DebugOffsets::parse(&bytes, None);
    }

    #[test]
    fn corrupted_real_tables_never_panic_and_stay_in_bounds(
        minor in 14u8..=15,
        edits in proptest::collection::vec((0usize..888, any::<u64>()), 1..8),
        cut in 0usize..900,
    ) {
        let mut t = table(minor);
        for (p, v) in edits {
            let p = p / 8 * 8;
            if p + 8 <= t.len() {
                // Favour small and boundary values, where bugs hide.
                let v = match v % 4 { 0 => v, 1 => v % 1024, 2 => v % (1 << 20), _ => u64::MAX - v % 16 };
                put(&mut t, p, v);
            }
        }
        t.truncate(cut.max(t.len() * usize::from(cut >= 888)));
        if let Ok(o) = DebugOffsets::parse(&t, None) {
            prop_assert!(o.interpreters_head + 8 <= o.runtime_size);
            prop_assert!(o.remote_debugging_enabled + 4 <= o.interp_size);
            prop_assert!(o.threads_main + 8 <= o.interp_size);
            prop_assert!(o.path_at() + SCRIPT_PATH_SIZE <= o.tstate_size);
            prop_assert!(o.eval_breaker + 8 <= o.tstate_size);
            prop_assert!(o.tstate_span() <= o.tstate_size);
            prop_assert!(o.tstate_size <= MAX_TSTATE_SIZE);
        }
    }
}
