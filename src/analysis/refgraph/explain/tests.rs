use super::*;

fn info(kind: &str, ty: &str, name: Option<&str>) -> NodeInfo {
    NodeInfo {
        type_name: ty.into(),
        kind: kind.into(),
        name: name.map(Into::into),
        ..NodeInfo::default()
    }
}

fn labels(
    nodes: &[(u64, NodeInfo)],
    edges: &[(u64, u64, &str, &str)],
    roots: &[RootRecord],
) -> Labels {
    Labels::new(
        LabelsAnswer {
            edges: edges
                .iter()
                .map(|(s, d, k, l)| (*s, *d, k.to_string(), l.to_string()))
                .collect(),
            nodes: nodes
                .iter()
                .map(|(i, n)| (i.to_string(), n.clone()))
                .collect(),
        },
        roots,
    )
}

fn rooted(nodes: &[u64], root: RootKind) -> RetainerPath {
    RetainerPath {
        target: *nodes.last().unwrap(),
        status: PathStatus::Rooted,
        root: Some(root),
        nodes: nodes.to_vec(),
        visited: 0,
    }
}

fn module_labels(key: &str) -> Labels {
    labels(
        &[
            (1, info("module", "module", Some("app"))),
            (2, info("dict", "dict", None)),
            (3, info("dict", "dict", None)),
            (10, info("object", "app.UserSession", None)),
            (11, info("object", "app.UserSession", None)),
        ],
        &[
            (1, 2, "dict", "__dict__"),
            (2, 3, "key", "['_session_cache']"),
            (3, 10, "key", key),
            (3, 11, "key", "[12]"),
        ],
        &[RootRecord {
            id: 1,
            kind: "module".into(),
            name: Some("app".into()),
            ..RootRecord::default()
        }],
    )
}

#[test]
fn module_global_path_reads_like_the_issue() {
    let l = module_labels("[4711]");
    let p = explain(&rooted(&[1, 2, 3, 10], RootKind::Module), &l, "?");
    assert_eq!(
        p.text,
        "module app → app.__dict__['_session_cache'] → dict[4711] → app.UserSession"
    );
    assert_eq!(p.held_by, "app._session_cache[4711]");
    let q = explain(&rooted(&[1, 2, 3, 11], RootKind::Module), &l, "?");
    let groups = aggregate(&[p, q], &l.roots);
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g.count, 2);
    assert_eq!(g.held_by, "app._session_cache");
    assert_eq!(
        g.pattern,
        "module app → app.__dict__['_session_cache'] → dict[…] → app.UserSession"
    );
}

#[test]
fn class_attribute_list_of_bound_methods() {
    let l = labels(
        &[
            (1, info("class", "type", Some("app.Bus"))),
            (2, info("dict", "dict", None)),
            (3, info("container", "list", None)),
            (
                4,
                NodeInfo {
                    bound: Some(true),
                    ..info("method", "method", Some("Handler.on_event"))
                },
            ),
            (5, info("object", "app.Handler", None)),
        ],
        &[
            (1, 2, "dict", "__dict__"),
            (2, 3, "key", "['listeners']"),
            (3, 4, "index", "[3]"),
            (4, 5, "attr", ".__self__"),
        ],
        &[],
    );
    let p = explain(&rooted(&[1, 2, 3, 4, 5], RootKind::Class), &l, "?");
    assert_eq!(
        p.text,
        "class app.Bus → Bus.__dict__['listeners'] → list[3] → bound method Handler.on_event.__self__ → app.Handler"
    );
    assert_eq!(p.held_by, "app.Bus.listeners[3].__self__");
}

#[test]
fn closure_and_instance_dict_are_folded() {
    let l = labels(
        &[
            (1, info("module", "module", Some("m"))),
            (2, info("dict", "dict", None)),
            (
                3,
                info("function", "function", Some("m.make.<locals>.handler")),
            ),
            (4, info("container", "tuple", None)),
            (5, info("cell", "cell", None)),
            (6, info("object", "m.Holder", None)),
            (7, info("dict", "dict", None)),
            (8, info("object", "m.Item", None)),
        ],
        &[
            (1, 2, "dict", "__dict__"),
            (2, 3, "key", "['handler']"),
            (3, 4, "attr", ".__closure__"),
            (4, 5, "cell", "closure 'holder'"),
            (5, 6, "attr", ".cell_contents"),
            (6, 7, "dict", "__dict__"),
            (7, 8, "key", "['item']"),
        ],
        &[],
    );
    let p = explain(
        &rooted(&[1, 2, 3, 4, 5, 6, 7, 8], RootKind::Module),
        &l,
        "?",
    );
    assert_eq!(
        p.text,
        "module m → m.__dict__['handler'] → function m.make.<locals>.handler → closure 'holder' → m.Holder.item → m.Item"
    );
    assert_eq!(p.held_by, "m.handler");
}

#[test]
fn thread_frame_local() {
    let rec = RootRecord {
        id: 1,
        kind: "frame".into(),
        thread: Some("worker-1".into()),
        func: Some("worker".into()),
        file: Some("/x/app.py".into()),
        line: Some(42),
        ..RootRecord::default()
    };
    let l = labels(
        &[
            (1, info("frame", "frame", None)),
            (2, info("container", "list", None)),
            (3, info("object", "app.Item", None)),
        ],
        &[(1, 2, "local", "cache"), (2, 3, "index", "[0]")],
        &[rec],
    );
    let p = explain(&rooted(&[1, 2, 3], RootKind::Frame), &l, "?");
    assert_eq!(
        p.text,
        "thread 'worker-1' frame worker() at app.py:42 → local 'cache' → list[0] → app.Item"
    );
    let groups = aggregate(std::slice::from_ref(&p), &l.roots);
    assert_eq!(
        groups[0].held_by,
        "cache[0] (local 'cache' of worker() in thread 'worker-1')"
    );
    let v = vec![false, true];
    assert_eq!(
        held_by(&p, &v, l.roots.get(&1)),
        "local 'cache' of worker() in thread 'worker-1'"
    );
}

#[test]
fn hostile_text_is_cleaned() {
    assert_eq!(clean("a\nb\x1b[31m\u{202e}", 100), "a\\nb\\x1b[31m\\u202e");
    assert_eq!(clean("abcdef", 3), "abc…");
    let l = labels(
        &[
            (1, info("module", "module", Some("evil\x1b]0;x\x07"))),
            (2, info("object", "t\n", None)),
        ],
        &[(1, 2, "attr", ".x\r\ny")],
        &[],
    );
    let p = explain(&rooted(&[1, 2], RootKind::Module), &l, "?");
    assert!(!p.text.chars().any(|c| c.is_control()), "{}", p.text);
}

#[test]
fn unreachable_and_c_held() {
    let l = labels(
        &[
            (5, info("object", "app.Item", None)),
            (4, info("container", "list", None)),
        ],
        &[(4, 5, "index", "[0]")],
        &[],
    );
    let p = RetainerPath {
        target: 5,
        status: PathStatus::HeldFromC,
        root: Some(RootKind::NoReferrer),
        nodes: vec![4, 5],
        visited: 2,
    };
    let e = explain(&p, &l, "app.Item");
    assert_eq!(e.text, "(held from C) list[0] → app.Item");
    assert_eq!(e.held_by, "list with no Python referrer (held from C)");
    let u = RetainerPath {
        status: PathStatus::Unreachable,
        root: None,
        nodes: vec![5],
        ..p
    };
    let e = explain(&u, &l, "app.Item");
    assert_eq!(e.text, "app.Item");
    assert!(e.held_by.contains("cycle"));
}

proptest::proptest! {
    /// Whatever the agent says, explaining and aggregating never panics
    /// and never lets a control character through.
    #[test]
    fn hostile_labels(
        kinds in proptest::collection::vec(
            proptest::sample::select(vec!["key", "dictkey", "index", "attr", "dict", "local",
                                          "cell", "member", "gone", "??"]), 0..8),
        texts in proptest::collection::vec(".{0,30}", 8),
        node_kinds in proptest::collection::vec(
            proptest::sample::select(vec!["module", "class", "frame", "function", "method",
                                          "dict", "container", "object", "value", ""]), 9),
        root in proptest::sample::select(vec![RootKind::Module, RootKind::Class,
            RootKind::SysModules, RootKind::Frame, RootKind::NoReferrer]),
        missing_label in proptest::bool::ANY,
    ) {
        let ids: Vec<u64> = (1..=kinds.len() as u64 + 1).collect();
        let nodes: Vec<(u64, NodeInfo)> = ids.iter().enumerate().map(|(i, &id)| (id, NodeInfo {
            type_name: texts[i % texts.len()].clone(),
            kind: node_kinds[i].to_string(),
            name: Some(texts[(i + 1) % texts.len()].clone()),
            func: Some(texts[(i + 2) % texts.len()].clone()),
            file: Some(texts[(i + 3) % texts.len()].clone()),
            ..NodeInfo::default()
        })).collect();
        let edges: Vec<(u64, u64, &str, &str)> = kinds.iter().enumerate()
            .filter(|(i, _)| !(missing_label && *i == 0))
            .map(|(i, k)| (ids[i], ids[i + 1], *k, texts[i].as_str())).collect();
        let rec = RootRecord { id: 1, kind: "frame".into(), thread: Some(texts[0].clone()),
            func: Some(texts[1].clone()), file: Some(texts[2].clone()), ..RootRecord::default() };
        let l = labels(&nodes, &edges, &[rec]);
        let mut paths = Vec::new();
        for status in [PathStatus::Rooted, PathStatus::HeldFromC, PathStatus::TooDeep] {
            let rp = RetainerPath { target: *ids.last().unwrap(), status, root: Some(root),
                nodes: ids.clone(), visited: 0 };
            let e = explain(&rp, &l, &texts[3]);
            for t in [&e.text, &e.held_by] {
                proptest::prop_assert!(!t.chars().any(|c| c.is_control()), "{:?}", t);
            }
            paths.push(e);
        }
        for g in aggregate(&paths, &l.roots) {
            for t in [&g.pattern, &g.example, &g.held_by] {
                proptest::prop_assert!(!t.chars().any(|c| c.is_control()), "{:?}", t);
            }
        }
    }
}

#[test]
fn ident_keys() {
    assert_eq!(ident_key("['abc']"), Some("abc"));
    assert_eq!(ident_key("[u'abc']"), Some("abc"));
    assert_eq!(ident_key("['a b']"), None);
    assert_eq!(ident_key("[3]"), None);
    assert_eq!(ident_key("['']"), None);
}
