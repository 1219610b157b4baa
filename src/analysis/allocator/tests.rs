use super::*;

const PY311: &str = include_str!("../../../tests/fixtures/heap_gc/debugmallocstats-3.11.txt");
const PY36: &str = include_str!("../../../tests/fixtures/heap_gc/debugmallocstats-3.6.txt");

#[test]
fn parses_311() {
    let st = parse_debugmallocstats(PY311).unwrap();
    assert_eq!(st.arena_size, Some(1 << 20));
    assert!(st.arenas_current.unwrap() >= 1);
    assert_eq!(st.arena_bytes, Some(st.arenas_current.unwrap() << 20));
    assert_eq!(st.total, st.arena_bytes);
    assert_eq!(st.pool_size, Some(16384));
    assert!(!st.size_classes.is_empty() && st.size_classes.len() <= 32);
    assert!(st.size_classes.iter().all(|c| c.size % 16 == 0));
    assert!(st.allocated_blocks_bytes.unwrap() > 0);
    assert!(st.free_list_bytes > 0);
    let live = st.live_fraction().unwrap();
    assert!(live > 0.0 && live <= 1.0);
}

#[test]
fn parses_36_small_arenas() {
    let st = parse_debugmallocstats(PY36).unwrap();
    assert_eq!(st.arena_size, Some(256 << 10));
    assert_eq!(st.pool_size, Some(4096));
    assert!(st.arenas_highwater >= st.arenas_current);
}

#[test]
fn numbers_with_commas_and_garbage() {
    assert_eq!(number("25,165,824"), Some(25_165_824));
    assert_eq!(number(" 0 "), Some(0));
    assert_eq!(number("1e5"), None);
    assert_eq!(number("99999999999999999999999999"), None);
    assert_eq!(number(""), None);
}

#[test]
fn no_pymalloc_section_is_none() {
    assert_eq!(parse_debugmallocstats(""), None);
    assert_eq!(
        parse_debugmallocstats("           9 free PyDictObjects * 48 bytes each =    432\n"),
        None
    );
    // Interleaved noise from another thread's stderr is ignored.
    let noisy = format!("WARNING: something = else\n{PY311}\nTraceback (most recent call last):\n");
    assert_eq!(
        parse_debugmallocstats(&noisy),
        parse_debugmallocstats(PY311)
    );
}

proptest::proptest! {
    #[test]
    fn never_panics(s in "\\PC{0,400}") {
        let _ = parse_debugmallocstats(&s);
    }

    #[test]
    fn never_panics_on_mutated_lines(cut in 0usize..3000, junk in "[0-9, #=*a-z]{0,40}") {
        let mut s = PY311.to_string();
        let mut at = cut.min(s.len());
        while !s.is_char_boundary(at) { at -= 1; }
        s.insert_str(at, &junk);
        let _ = parse_debugmallocstats(&s);
    }
}

fn step(name: &str, rss: u64, returned: i64) -> ProbeStep {
    ProbeStep {
        step: name.into(),
        rss,
        rss_anon: rss,
        returned,
        seconds: 0.01,
    }
}

#[test]
fn probe_attributes_retention_to_malloc() {
    let steps = vec![
        step("as-is", 220 << 20, 0),
        step("gc.collect()", 220 << 20, 0),
        step("malloc_trim(0)", 40 << 20, 180 << 20),
    ];
    let trim = TrimRaw {
        available: true,
        released: Some(true),
        seconds: 0.01,
        mallinfo: Some(Mallinfo {
            source: "mallinfo2".into(),
            uordblks: 5 << 20,
            ..Default::default()
        }),
    };
    let r = probe_report(steps, 3, &trim, None, None);
    assert_eq!(r.returned_by_trim, 180 << 20);
    assert!(r.verdict[0].contains("not what holds"), "{:?}", r.verdict);
    assert!(
        r.verdict[1].contains("gave back 180 MiB"),
        "{:?}",
        r.verdict
    );
    assert!(
        r.verdict[2].contains("What is left, 40.0 MiB"),
        "{:?}",
        r.verdict
    );
}

#[test]
fn probe_attributes_cycles_to_gc() {
    let steps = vec![
        step("as-is", 500 << 20, 0),
        step("gc.collect()", 300 << 20, 200 << 20),
        step("malloc_trim(0)", 299 << 20, 1 << 20),
    ];
    let trim = TrimRaw {
        available: true,
        ..Default::default()
    };
    let r = probe_report(steps, 1_000_000, &trim, None, None);
    assert!(r.verdict[0].contains("reference cycles"), "{:?}", r.verdict);
    assert!(r.verdict[1].contains("not sitting"), "{:?}", r.verdict);
}

#[test]
fn finds_replacement_allocators() {
    let maps = "7f00-7f01 r-xp 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n";
    assert_eq!(other_allocator(maps).as_deref(), Some("jemalloc"));
    assert_eq!(
        other_allocator("7f00-7f01 r-xp 0 0 0 /usr/lib/libc.so.6\n"),
        None
    );
}
