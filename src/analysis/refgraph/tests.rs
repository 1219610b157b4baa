use super::*;

/// Records as little-endian 8-byte words.
fn words(ws: &[u64]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn graph(records: &[&[u64]], roots: &[(u64, RootKind)], classes: &[u64]) -> RefGraph {
    let mut b = GraphBuilder::new();
    let mut ws = Vec::new();
    for r in records {
        ws.extend_from_slice(r);
        ws.push(0);
    }
    b.add_chunk("edges", 8, false, &words(&ws)).unwrap();
    b.add_chunk("types", 8, false, &words(classes)).unwrap();
    b.finish(roots, &[]).unwrap()
}

#[test]
fn module_dict_chain() {
    // module 1 -> dict 2 -> dict 3 -> target 4; function 5 -> dict 2.
    let g = graph(
        &[&[1, 2], &[2, 3, 5], &[3, 4], &[4], &[5, 2]],
        &[(1, RootKind::Module)],
        &[],
    );
    let mut s = Scratch::default();
    let p = g.find_path(4, 30, &mut s);
    assert_eq!(p.status, PathStatus::Rooted);
    assert_eq!(p.root, Some(RootKind::Module));
    assert_eq!(p.nodes, vec![1, 2, 3, 4]);
}

#[test]
fn module_beats_frame_at_equal_distance_and_nearer_wins() {
    // frame 9 -> dict 2 (its globals); module 1 -> dict 2 -> 3 -> 4
    let g = graph(
        &[&[9, 2], &[1, 2], &[2, 3], &[3, 4]],
        &[(9, RootKind::Frame), (1, RootKind::Module)],
        &[],
    );
    let mut s = Scratch::default();
    assert_eq!(g.find_path(4, 30, &mut s).nodes, vec![1, 2, 3, 4]);
    // A frame holding the list directly is nearer than the module.
    let g = graph(
        &[&[9, 3], &[1, 2], &[2, 3], &[3, 4]],
        &[(9, RootKind::Frame), (1, RootKind::Module)],
        &[],
    );
    let p = g.find_path(4, 30, &mut s);
    assert_eq!((p.root, p.nodes), (Some(RootKind::Frame), vec![9, 3, 4]));
}

#[test]
fn classes_from_the_types_chunk_are_roots() {
    let g = graph(&[&[7, 8], &[8, 10], &[10, 11], &[11, 12]], &[], &[7]);
    let p = g.find_path(12, 30, &mut Scratch::default());
    assert_eq!(p.root, Some(RootKind::Class));
    assert_eq!(p.nodes, vec![7, 8, 10, 11, 12]);
}

#[test]
fn held_from_c_unreachable_and_too_deep() {
    // 20 -> 21 -> 22, nothing refers to 20.
    let g = graph(&[&[20, 21], &[21, 22], &[30, 31], &[31, 30, 32]], &[], &[]);
    let mut s = Scratch::default();
    let p = g.find_path(22, 30, &mut s);
    assert_eq!(
        (p.status, p.nodes),
        (PathStatus::HeldFromC, vec![20, 21, 22])
    );
    // A cycle 30 <-> 31 holding 32.
    let p = g.find_path(32, 30, &mut s);
    assert_eq!((p.status, p.nodes), (PathStatus::Unreachable, vec![32]));
    // Depth 1 from 22 reaches 21 (which has a referrer): too deep.
    let p = g.find_path(22, 1, &mut s);
    assert_eq!((p.status, p.nodes), (PathStatus::TooDeep, vec![21, 22]));
    assert_eq!(g.find_path(99, 30, &mut s).status, PathStatus::NotInGraph);
}

#[test]
fn excluded_objects_refer_to_nothing() {
    let mut b = GraphBuilder::new();
    b.add_chunk("edges", 8, false, &words(&[1, 2, 0, 5, 2, 0]))
        .unwrap();
    let g = b.finish(&[(1, RootKind::Module)], &[1]).unwrap();
    let p = g.find_path(2, 30, &mut Scratch::default());
    assert_eq!((p.status, p.nodes), (PathStatus::HeldFromC, vec![5, 2]));
}

#[test]
fn records_span_chunks_and_word_sizes() {
    let mut b = GraphBuilder::new();
    b.add_chunk("edges", 8, false, &words(&[1, 2])).unwrap();
    b.add_chunk("edges", 8, false, &words(&[3, 0, 2, 3, 0]))
        .unwrap();
    let be: Vec<u8> = [4u32, 1, 0].iter().flat_map(|w| w.to_be_bytes()).collect();
    b.add_chunk("edges", 4, true, &be).unwrap();
    let g = b.finish(&[(4, RootKind::Module)], &[]).unwrap();
    let mut r = g.referrers(3);
    r.sort();
    assert_eq!(r, vec![1, 2]);
    assert_eq!(g.referrers(1), vec![4]);
    assert!(g.is_tracked(4) && !g.contains(9));
}

#[test]
fn malformed_chunks_are_errors() {
    let mut b = GraphBuilder::new();
    assert!(b.add_chunk("edges", 8, false, &[1, 2, 3]).is_err());
    assert!(b.add_chunk("edges", 3, false, &[1, 2, 3]).is_err());
    assert!(b.add_chunk("other", 8, false, &words(&[1])).is_ok());
}

#[test]
fn id_map_grows_and_finds_everything() {
    let mut m = IdMap::with_capacity(0);
    for k in 1..50_000u64 {
        assert_eq!(m.intern(k * 16, k as u32), (k as u32, true));
    }
    for k in 1..50_000u64 {
        assert_eq!(m.get(k * 16), Some(k as u32));
        assert_eq!(m.intern(k * 16, 0), (k as u32, false));
    }
    assert_eq!(m.get(8), None);
    assert_eq!(m.get(0), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                   target in 0u64..4, depth in 0usize..6) {
        let mut b = GraphBuilder::new();
        let _ = b.add_chunk("edges", 8, false, &bytes[..bytes.len() / 8 * 8]);
        let _ = b.add_chunk("edges", 4, true, &bytes[..bytes.len() / 4 * 4]);
        let _ = b.add_chunk("types", 8, true, &bytes[..bytes.len() / 8 * 8]);
        let g = b.finish(&[(1, RootKind::Module), (2, RootKind::Frame)], &[3]).unwrap();
        let p = g.find_path(target, depth, &mut Scratch::default());
        if !p.nodes.is_empty() {
            proptest::prop_assert_eq!(*p.nodes.last().unwrap(), target);
        }
    }

    #[test]
    fn small_graphs_give_valid_paths(ws in proptest::collection::vec(0u64..8, 0..80),
                                     target in 1u64..8, depth in 0usize..6) {
        let mut b = GraphBuilder::new();
        b.add_chunk("edges", 8, false, &words(&ws)).unwrap();
        let g = b.finish(&[(1, RootKind::Module), (2, RootKind::Frame)], &[3]).unwrap();
        let p = g.find_path(target, depth, &mut Scratch::default());
        if p.status == PathStatus::NotInGraph {
            proptest::prop_assert!(!g.contains(target));
            return Ok(());
        }
        proptest::prop_assert_eq!(*p.nodes.last().unwrap(), target);
        proptest::prop_assert!(p.nodes.len() <= depth + 1);
        // Each hop is a real reference, from a referrer to its referent.
        for w in p.nodes.windows(2) {
            proptest::prop_assert!(g.referrers(w[1]).contains(&w[0]));
            proptest::prop_assert!(w[0] != 3, "an excluded object refers to nothing");
        }
        match p.status {
            PathStatus::Rooted => proptest::prop_assert!(g.root_kind(p.nodes[0]).is_some()),
            PathStatus::HeldFromC => proptest::prop_assert!(g.referrers(p.nodes[0]).is_empty()),
            _ => {}
        }
    }
}
