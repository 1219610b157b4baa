//! The decoders on a fake address space: a small well-formed 3.12 heap
//! built byte by byte, then broken the ways a torn or hostile target can
//! break it (garbage under `_PyRuntime`, a list link into nowhere, a list
//! that loops, containers that hold themselves or claim huge sizes, memory
//! that is random everywhere). Each must end in an error or a partial
//! census with a warning: no panic, no hang, bounded memory.

use std::collections::{BTreeMap, HashMap};

use super::census::{CensusOptions, HeapCensus, census, census_parallel};
use super::error::HeapError;
use super::mem::Mem;
use super::roots::{Heads, Interpreter, locate_heads, locate_with};
use super::space::AddressSpace;
use super::types::Types;
use super::walk::Walker;
use crate::python::PythonVersion;

/// Regions of bytes; with `garbage`, every other address below 2^47 reads
/// as deterministic pseudo-random bytes (a fully mapped hostile target).
#[derive(Default)]
struct Fake {
    regions: BTreeMap<u64, Vec<u8>>,
    garbage: Option<u64>,
}

fn noise(seed: u64, addr: u64) -> u8 {
    let mut x = (addr >> 3) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> (8 * (addr & 7))) as u8
}

impl Fake {
    fn map(&mut self, addr: u64, len: usize) {
        self.regions.insert(addr, vec![0; len]);
    }

    fn region_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let (start, data) = self.regions.range_mut(..=addr).next_back().expect("mapped");
        let off = (addr - start) as usize;
        &mut data[off..off + len]
    }

    fn w64(&mut self, addr: u64, v: u64) {
        self.region_mut(addr, 8).copy_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, addr: u64, b: &[u8]) {
        self.region_mut(addr, b.len()).copy_from_slice(b);
    }
}

impl AddressSpace for Fake {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if let Some(s) = self.slice(addr, buf.len()) {
            buf.copy_from_slice(s);
            return true;
        }
        match self.garbage {
            Some(seed)
                if addr
                    .checked_add(buf.len() as u64)
                    .is_some_and(|e| e < 1 << 47) =>
            {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = noise(seed, addr + i as u64);
                }
                true
            }
            _ => false,
        }
    }

    fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (start, data) = self.regions.range(..=addr).next_back()?;
        let off = (addr - start) as usize;
        data.get(off..off.checked_add(len)?)
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .map(|(a, d)| (*a, a + d.len() as u64))
            .collect()
    }
}

const TYPES: u64 = 0x5000_0000;
const RUNTIME: u64 = 0x6000_0000;
const INTERP: u64 = 0x6100_0000;
const HEAP: u64 = 0x7000_0000;
const GC: u64 = INTERP + 112;

/// A 3.12 heap: static types, `_PyRuntime` → interpreter → GC state, and a
/// bump allocator for objects.
struct Heap {
    mem: Fake,
    syms: HashMap<&'static str, u64>,
    next: u64,
}

impl Heap {
    fn new() -> Heap {
        let mut mem = Fake::default();
        mem.map(TYPES, 0x10000);
        mem.map(RUNTIME, 0x1000);
        mem.map(INTERP, 0x1000);
        mem.map(HEAP, 1 << 20);
        let mut h = Heap {
            mem,
            syms: HashMap::new(),
            next: HEAP,
        };
        // (name, symbol, basicsize, itemsize, gc)
        let types: [(&str, &'static str, u64, u64, bool); 7] = [
            ("type", "PyType_Type", 928, 40, true),
            ("object", "PyBaseObject_Type", 16, 0, false),
            ("list", "PyList_Type", 40, 0, true),
            ("tuple", "PyTuple_Type", 24, 8, true),
            ("dict", "PyDict_Type", 48, 0, true),
            ("str", "PyUnicode_Type", 40, 0, false),
            ("int", "PyLong_Type", 24, 4, false),
        ];
        for (i, (name, sym, basic, item, gc)) in types.iter().enumerate() {
            let t = TYPES + 0x400 * i as u64;
            h.syms.insert(sym, t);
            h.mem.bytes(t + 0x300, name.as_bytes());
            let ty = TYPES;
            let mut flags = 1 << 12;
            if *gc {
                flags |= 1 << 14;
            }
            if i == 0 {
                flags |= 1 << 31;
            }
            for (off, v) in [
                (0, 1),
                (8, ty),
                (24, t + 0x300),
                (32, *basic),
                (40, *item),
                (168, flags),
                (256, if i == 1 { 0 } else { TYPES + 0x400 }),
            ] {
                h.mem.w64(t + off, v);
            }
        }
        h.mem.w64(RUNTIME + 40, INTERP);
        for head in [GC + 24, GC + 48, GC + 72, GC + 104] {
            h.mem.w64(head, head);
            h.mem.w64(head + 8, head);
        }
        h
    }

    fn ty(&self, sym: &str) -> u64 {
        self.syms[sym]
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let a = self.next;
        self.next += (len + 15) & !15;
        a
    }

    /// A GC-tracked object of `len` bytes on generation 0's list.
    fn tracked(&mut self, ty: u64, len: u64) -> u64 {
        let node = self.alloc(16 + len);
        let head = GC + 24;
        let last = self.mem.read_u64(head + 8).unwrap();
        self.mem.w64(node, head);
        self.mem.w64(node + 8, last);
        self.mem.w64(last, node);
        self.mem.w64(head + 8, node);
        let obj = node + 16;
        self.mem.w64(obj, 1);
        self.mem.w64(obj + 8, ty);
        obj
    }

    fn int(&mut self, v: u32) -> u64 {
        let o = self.alloc(32);
        self.mem.w64(o, 1);
        self.mem.w64(o + 8, self.ty("PyLong_Type"));
        self.mem.w64(o + 16, 1 << 3);
        self.mem.w64(o + 24, u64::from(v));
        o
    }

    fn list(&mut self, items: &[u64]) -> u64 {
        let o = self.tracked(self.ty("PyList_Type"), 40);
        let arr = self.alloc(8 * items.len() as u64 + 8);
        for (i, it) in items.iter().enumerate() {
            self.mem.w64(arr + 8 * i as u64, *it);
        }
        self.mem.w64(o + 16, items.len() as u64);
        self.mem.w64(o + 24, arr);
        self.mem.w64(o + 32, items.len() as u64);
        o
    }

    fn locate(&self) -> Result<Interpreter, HeapError> {
        self.locate_as(Heads::AllLinked)
    }

    /// [`Heap::locate`] as for a running process, with the lenient check
    /// of the heads (see `roots::locate_running`).
    fn locate_running(&self) -> Result<Interpreter, HeapError> {
        self.locate_as(Heads::OneLinked)
    }

    fn locate_as(&self, check: Heads) -> Result<Interpreter, HeapError> {
        let v = PythonVersion::from_hex(0x030c_01f0).unwrap();
        let syms = |n: &str| match n {
            "_PyRuntime" => Some(RUNTIME),
            _ => self.syms.get(n).copied(),
        };
        locate_heads(&self.mem, v, "libpython3.12.so.1.0", &syms, None, check)
    }
}

/// The census on one thread, on two (the lists walked from both ends) and
/// on three: the same rows, skips and warnings. Returns the one-thread
/// census and how many threads walked the lists on two.
fn both(space: &(dyn AddressSpace + Sync), it: &Interpreter) -> (HeapCensus, u8) {
    let one = census(space, it, &CensusOptions::default()).unwrap();
    let mut walkers = 0;
    for threads in [2, 3] {
        let par = census_parallel(space, it, &CensusOptions::default(), threads).unwrap();
        assert_eq!(
            format!("{:?}", one.census.rows),
            format!("{:?}", par.census.rows),
            "{threads} threads"
        );
        assert_eq!(
            (one.skipped, &one.warnings),
            (par.skipped, &par.warnings),
            "{threads} threads"
        );
        if threads == 2 {
            walkers = par.walkers;
        }
    }
    (one, walkers)
}

fn row(hc: &HeapCensus, name: &str) -> (u64, u64) {
    hc.census
        .rows
        .iter()
        .find(|r| r.name == name)
        .map_or((0, 0), |r| (r.count, r.tracked))
}

/// Ten lists of three ints each (one int shared by all).
fn populated() -> (Heap, Vec<u64>) {
    let mut h = Heap::new();
    let shared = h.int(7);
    let mut lists = Vec::new();
    for i in 0..10 {
        let a = h.int(i);
        let b = h.int(100 + i);
        lists.push(h.list(&[a, b, shared]));
    }
    (h, lists)
}

#[test]
fn a_well_formed_fake_heap_is_counted_exactly() {
    let (h, _) = populated();
    let it = h.locate().unwrap();
    let (hc, walkers) = both(&h.mem, &it);
    assert_eq!(walkers, 2, "the two ends met");
    assert_eq!(row(&hc, "list"), (10, 10), "{:?}", hc.census.rows);
    assert_eq!(row(&hc, "int"), (21, 0));
    assert_eq!(hc.skipped, 0);
    assert!(hc.warnings.is_empty(), "{:?}", hc.warnings);
}

#[test]
fn a_torn_list_gives_a_partial_census_with_a_warning() {
    let (mut h, lists) = populated();
    // The 4th list's node now points into unmapped memory.
    h.mem.w64(lists[3] - 16, 0x1234_5678_0000);
    let it = h.locate().unwrap();
    let (hc, _) = both(&h.mem, &it);
    assert_eq!(row(&hc, "list").0, 4);
    assert!(hc.skipped > 0);
    assert!(!hc.warnings.is_empty());
}

#[test]
fn a_prev_link_that_disagrees_with_next_falls_back_to_one_walker() {
    let (mut h, lists) = populated();
    // The 7th list's node says the 3rd comes before it; the 3rd's `next`
    // says otherwise. The forward walk still sees all ten.
    h.mem.w64(lists[6] - 16 + 8, lists[2] - 16);
    let it = h.locate().unwrap();
    // (Whether the backward end gets that far depends on timing; the
    // result may not.)
    let (hc, _) = both(&h.mem, &it);
    assert_eq!(row(&hc, "list"), (10, 10), "{:?}", hc.census.rows);
    // Walking backward alone, it stops there (before the node whose link
    // is wrong) and says so.
    let back = backward_walk(&h.mem, &it);
    assert!(back.1, "inconsistent");
    assert_eq!(back.0, vec![lists[9], lists[8], lists[7]]);
}

/// The objects a backward walk lists, and whether it stopped at a link
/// that disagrees with its reverse.
fn backward_walk(space: &dyn AddressSpace, it: &Interpreter) -> (Vec<u64>, bool) {
    let mem = Mem::new(space);
    let mut types = Types::new();
    let mut w = Walker::backward(&mem, it);
    let mut out = Vec::new();
    while let Some(f) = w.next(&mem, it, &mut types) {
        out.push(f.obj);
    }
    (out, w.inconsistent)
}

#[test]
fn a_backward_walk_lists_what_a_forward_walk_does_in_reverse() {
    let (h, lists) = populated();
    let it = h.locate().unwrap();
    let (mut back, inconsistent) = backward_walk(&h.mem, &it);
    assert!(!inconsistent);
    back.reverse();
    assert_eq!(back, lists);
}

#[test]
fn a_torn_young_head_is_refused_when_paused_and_walked_when_running() {
    let (mut h, lists) = populated();
    // Generation 0's first node no longer points back at its head (as in
    // a copy taken without pausing, where the two were read apart).
    h.mem.w64(lists[0] - 16 + 8, lists[5] - 16);
    assert!(matches!(h.locate(), Err(HeapError::Corrupt(_))));
    let it = h.locate_running().unwrap();
    let hc = census(&h.mem, &it, &CensusOptions::default()).unwrap();
    assert_eq!(row(&hc, "list"), (10, 10), "{:?}", hc.census.rows);
    // A head whose first node is not even a plausible address is no list,
    // running or not.
    let (mut h, _) = populated();
    h.mem.w64(GC + 24, 0x13);
    assert!(matches!(h.locate_running(), Err(HeapError::Corrupt(_))));
}

#[test]
fn a_list_that_loops_short_of_its_head_stops() {
    let (mut h, lists) = populated();
    h.mem.w64(lists[7] - 16, lists[2] - 16);
    let it = h.locate().unwrap();
    let (hc, _) = both(&h.mem, &it);
    assert!(row(&hc, "list").0 <= 10);
    assert!(
        hc.warnings.iter().any(|w| w.contains("loops")),
        "{:?}",
        hc.warnings
    );
}

/// [`populated`] with a list that holds itself and another list, and a
/// list claiming 2^40 items and an allocation of 2^62 words.
fn self_holding_and_huge() -> Heap {
    let (mut h, lists) = populated();
    let arr = h.alloc(16);
    h.mem.w64(arr, lists[0]);
    h.mem.w64(arr + 8, lists[1]);
    h.mem.w64(lists[0] + 16, 2);
    h.mem.w64(lists[0] + 24, arr);
    h.mem.w64(lists[5] + 16, 1 << 40);
    h.mem.w64(lists[5] + 32, 1 << 62);
    h
}

#[test]
fn containers_holding_themselves_or_claiming_huge_sizes_are_bounded() {
    let h = self_holding_and_huge();
    let it = h.locate().unwrap();
    let (hc, _) = both(&h.mem, &it);
    // The one claiming 2^62 words is left out (no object is that big) and
    // said so; the nine others are counted.
    assert_eq!(row(&hc, "list").0, 9);
    let bytes: u64 = hc.census.rows.iter().map(|r| r.size).sum();
    assert!(bytes < 1 << 36, "{bytes}");
    assert!(
        hc.warnings.iter().any(|w| w.contains("impossible size")),
        "{:?}",
        hc.warnings
    );
}

#[test]
fn lists_running_into_garbage_memory_stop() {
    for seed in 0..8 {
        let (mut h, lists) = populated();
        h.mem.garbage = Some(seed);
        h.mem.w64(lists[4] - 16, 0x4000_0000_0000 + 0x1000 * seed);
        h.mem.w64(lists[6] + 24, 0x3000_0000_0000);
        let it = h.locate().unwrap();
        let (hc, _) = both(&h.mem, &it);
        assert!(row(&hc, "list").0 >= 5);
        assert!(!hc.warnings.is_empty());
    }
}

#[test]
fn garbage_under_a_fake_runtime_is_an_error() {
    for seed in 0..32 {
        for hex in [
            0x0207_12f0,
            0x0306_0ff0,
            0x0308_12f0,
            0x030c_01f0,
            0x030d_00f0,
            0x030e_0af0,
            0x030f_02f0,
        ] {
            let mut mem = Fake {
                garbage: Some(seed),
                ..Fake::default()
            };
            mem.map(0x10000, 0x100);
            let v = PythonVersion::from_hex(hex).unwrap();
            let syms = |_: &str| Some(0x5555_0000 + 8 * seed);
            match locate_with(&mem, v, "libpython.so", &syms, Some(RUNTIME)) {
                Err(e) => {
                    let s = e.to_string();
                    assert!(
                        s.ends_with("--inject") || s.contains("try again") || s.contains("root"),
                        "{s}"
                    );
                }
                // Against all odds it looked valid: the census must still end.
                Ok(it) => {
                    let _ = census(&mem, &it, &CensusOptions::default());
                    let _ = census_parallel(&mem, &it, &CensusOptions::default(), 2);
                }
            }
        }
    }
}

#[test]
fn garbage_runtime_over_valid_types_is_an_error() {
    for seed in 0..32 {
        for hex in [
            0x0207_12f0,
            0x0306_0ff0,
            0x0308_12f0,
            0x030c_01f0,
            0x030d_00f0,
            0x030f_02f0,
        ] {
            let mut h = Heap::new();
            h.mem.regions.remove(&RUNTIME);
            h.mem.regions.remove(&INTERP);
            h.mem.garbage = Some(seed);
            let v = PythonVersion::from_hex(hex).unwrap();
            let syms = |n: &str| match n {
                "_PyRuntime" | "_PyGC_generation0" => Some(RUNTIME),
                _ => h.syms.get(n).copied(),
            };
            if let Ok(it) = locate_with(&h.mem, v, "libpython.so", &syms, Some(RUNTIME)) {
                let _ = census(&h.mem, &it, &CensusOptions::default());
                let _ = census_parallel(&h.mem, &it, &CensusOptions::default(), 2);
            }
        }
    }
}

#[test]
fn a_free_threaded_runtime_is_refused_in_one_sentence() {
    let mut mem = Fake::default();
    mem.map(RUNTIME, 0x1000);
    mem.bytes(RUNTIME, b"xdebugpy");
    mem.w64(RUNTIME + 8, 0x030d_00f0);
    mem.w64(RUNTIME + 16, 1);
    let v = PythonVersion::from_hex(0x030d_00f0).unwrap();
    let syms = |_: &str| Some(TYPES);
    mem.map(TYPES, 0x1000);
    mem.w64(TYPES + 32, 928);
    let e = locate_with(&mem, v, "libpython3.13.so.1.0", &syms, Some(RUNTIME)).unwrap_err();
    assert!(matches!(e, HeapError::FreeThreaded(_)), "{e}");
    let e = locate_with(&mem, v, "/usr/lib/libpython3.13t.so.1.0", &syms, None).unwrap_err();
    assert!(matches!(e, HeapError::FreeThreaded(_)), "{e}");
    assert_eq!(e.to_string().matches(". ").count(), 0, "one sentence: {e}");
}

// The retained-size graph (heap::graph) on the same heaps.

fn graph_of(h: &Heap) -> (crate::analysis::retained::HeapGraph, u64, Vec<String>) {
    let it = h.locate().unwrap();
    let read = super::graph::read_graph(&h.mem, &it).unwrap();
    let (g, stats) = crate::analysis::retained::memory::build(read.parts).unwrap();
    (g, stats.held_from_c, read.warnings)
}

#[test]
fn the_graph_of_a_well_formed_fake_heap_is_exact() {
    let (h, lists) = populated();
    let (g, held, warnings) = graph_of(&h);
    assert_eq!(g.len(), 31);
    assert_eq!(g.edge_count(), 30);
    // Nothing refers to the lists (refcount 1): each is held from C.
    assert_eq!(held, 10);
    assert!(warnings.is_empty(), "{warnings:?}");
    let dom = crate::analysis::retained::dominators(&g);
    let l = g.node_of(lists[0]).unwrap() as usize;
    // Its own two ints, not the one all ten share.
    assert_eq!(dom.count[l], 3);
    let it = h.locate().unwrap();
    let int0 = h
        .mem
        .read_u64(h.mem.read_u64(lists[0] + 24).unwrap())
        .unwrap();
    let ans = super::graph::labels(&h.mem, &it, &[(lists[0], int0)], &[lists[0]]);
    assert_eq!(ans.edges[0].2, "index");
    assert_eq!(ans.edges[0].3, "[0]");
    assert_eq!(ans.nodes[&lists[0].to_string()].len, Some(3));
}

#[test]
fn the_graph_of_a_hostile_heap_is_bounded() {
    let h = self_holding_and_huge();
    let (g, _, _) = graph_of(&h);
    assert!(g.len() <= 31);
    for seed in 0..8 {
        let (mut h, lists) = populated();
        h.mem.garbage = Some(seed);
        h.mem.w64(lists[4] - 16, 0x4000_0000_0000 + 0x1000 * seed);
        h.mem.w64(lists[6] + 24, 0x3000_0000_0000);
        let (g, _, warnings) = graph_of(&h);
        assert!(g.len() >= 5);
        assert!(!warnings.is_empty());
        let it = h.locate().unwrap();
        let edges: Vec<(u64, u64)> = lists.iter().map(|&l| (l, 0x3000_0000_0000)).collect();
        let _ = super::graph::labels(&h.mem, &it, &edges, &lists);
    }
}

#[test]
fn generator_frames_with_hostile_counts_are_bounded() {
    use super::frames;
    let (mut h, _) = populated();
    let mut it = h.locate().unwrap();
    it.builtins.code = TYPES + 0x8000;
    // A 3.12 generator (basic size 144: its frame at 72, locals at 144)
    // whose code and stack fields lie.
    let code = h.alloc(256);
    h.mem.w64(code + 8, it.builtins.code);
    let g = h.alloc(4096);
    h.mem.w64(g + 72, code);
    let top = g + 72 + 64;
    for (nlocals, stack, depth, most) in [
        (u32::MAX, 3u32, 5u32, 4),
        (3, 4, u32::MAX, 4),
        (3, 4, 2, 6),
        (3, 4, 400, 11),
        ((1 << 19) + 1, 1 << 19, i32::MAX as u32, 4 + (1 << 20)),
    ] {
        h.mem.bytes(code + 72, &nlocals.to_le_bytes());
        h.mem.bytes(code + 64, &stack.to_le_bytes());
        h.mem.bytes(top, &depth.to_le_bytes());
        h.mem.bytes(g + 67, &[0xff]); // suspended
        let mem = Mem::new(&h.mem);
        let mut calls = 0;
        frames::gen_referents(&mem, &it, 144, g, &mut |_, _| calls += 1);
        assert!(
            calls <= most,
            "{nlocals} {stack} {depth}: {calls} referents"
        );
        if let Some(size) = frames::gen_size(&mem, &it, 144, g) {
            assert!(size <= 144 + 8 * (2 << 20), "{size}");
        }
        // Cleared: the frame is not read at all.
        h.mem.bytes(g + 67, &[4]);
        let mem = Mem::new(&h.mem);
        let mut calls = 0;
        frames::gen_referents(&mem, &it, 144, g, &mut |_, _| calls += 1);
        assert_eq!(calls, 0);
    }
    // Garbage everywhere else: whatever a frame object's pointers say.
    h.mem.garbage = Some(7);
    let mem = Mem::new(&h.mem);
    for obj in (0x7100_0000u64..0x7100_0000 + 64 * 1024).step_by(1032) {
        let mut calls = 0u64;
        frames::frame_referents(&mem, &it, 120, obj, &mut |_, _| calls += 1);
        frames::gen_referents(&mem, &it, 144, obj, &mut |_, _| calls += 1);
        let _ = frames::frame_size(&mem, &it, 120, obj);
        assert!(calls <= 8 + 2 * (1 << 21));
    }
}
