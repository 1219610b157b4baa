use super::*;
use crate::analysis::census::{AgentStats, RowKind, TypeRow};
use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers,
};

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent {
        code,
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Press,
        state: KeyEventState::NONE,
    })
}

fn census(rows: &[(&str, u64, u64)]) -> Census {
    Census {
        rows: rows
            .iter()
            .map(|(n, c, s)| TypeRow {
                name: n.to_string(),
                kind: RowKind::Type,
                module: n.split_once('.').map(|(m, _)| m.to_string()),
                qualname: n.to_string(),
                count: *c,
                tracked: *c,
                size: *s,
                classes: 1,
                tids: vec![42],
            })
            .collect(),
        count: rows.iter().map(|r| r.1).sum(),
        size: rows.iter().map(|r| r.2).sum(),
        tracked: 0,
        untracked: 0,
        gc_only: false,
        dict_tid: 1,
        chunks: 1,
        payload_bytes: 0,
        repeats: 0,
        stats: AgentStats::default(),
        ids: None,
        feed_s: 0.0,
    }
}

fn app() -> App {
    let mut a = App::new(TargetInfo::default(), Theme::default());
    assert_eq!(a.start(), vec![Command::Census]);
    a
}

#[test]
fn growth_sort_puts_the_steady_user_type_first() {
    let mut a = app();
    a.update(Update::Census(Ok(Box::new(census(&[
        ("str", 100, 10_000),
        ("app.S", 10, 480),
    ])))));
    assert_eq!(a.selected_line().unwrap().name, "str");
    assert_eq!(a.handle(&key(KeyCode::Char('r'))), vec![Command::Census]);
    // A second refresh while one is pending asks nothing more.
    assert!(a.handle(&key(KeyCode::Char('r'))).is_empty());
    a.update(Update::Census(Ok(Box::new(census(&[
        ("str", 200, 30_000),
        ("app.S", 20, 960),
    ])))));
    for _ in 0..2 {
        a.handle(&key(KeyCode::Char('s')));
    }
    assert_eq!(a.sort, Sort::Growth);
    let names: Vec<&str> = a.lines.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["app.S", "str"]);
    assert_eq!((a.lines[0].d_count, a.lines[0].monotonic), (10, true));
}

#[test]
fn filter_enter_keeps_and_esc_clears() {
    let mut a = app();
    a.update(Update::Census(Ok(Box::new(census(&[
        ("str", 100, 10_000),
        ("app.Session", 10, 480),
        ("dict", 5, 400),
    ])))));
    a.handle(&key(KeyCode::Char('/')));
    for c in "SESS".chars() {
        a.handle(&key(KeyCode::Char(c)));
    }
    assert_eq!(a.visible.len(), 1);
    a.handle(&key(KeyCode::Enter));
    assert!(!a.editing && a.filter == "SESS");
    assert_eq!(a.selected_line().unwrap().name, "app.Session");
    a.handle(&key(KeyCode::Char('/')));
    a.handle(&key(KeyCode::Esc));
    assert!(a.filter.is_empty() && !a.quitting);
    assert_eq!(a.visible.len(), 3);
    // The selection stayed on the same type.
    assert_eq!(a.selected_line().unwrap().name, "app.Session");
}

#[test]
fn drilling_in_and_back() {
    let mut a = app();
    a.update(Update::Census(Ok(Box::new(census(&[("app.S", 10, 480)])))));
    let cmds = a.handle(&key(KeyCode::Enter));
    assert!(matches!(&cmds[..], [Command::Instances(q)] if q.name == "app.S" && q.tids == [42]));
    assert_eq!(a.screen(), Screen::Instances);
    a.update(Update::Instances(Ok(InstanceList {
        name: "app.S".into(),
        live: 10,
        objects: vec![super::super::data::Instance {
            id: 0x1000,
            size: 48,
            repr: Some("<S>".into()),
        }],
    })));
    let cmds = a.handle(&key(KeyCode::Enter));
    assert_eq!(
        cmds,
        vec![Command::Referents(0x1000, None), Command::Why(0x1000)]
    );
    assert_eq!(a.screen(), Screen::Object);
    a.handle(&key(KeyCode::Backspace));
    assert_eq!(a.screen(), Screen::Instances);
    // Going back in reuses what is known... and asks again for what failed.
    a.update(Update::Referents(0x1000, Err("gone".into())));
    let cmds = a.handle(&key(KeyCode::Enter));
    assert_eq!(cmds, vec![Command::Referents(0x1000, None)]);
    a.handle(&key(KeyCode::Backspace));
    a.handle(&key(KeyCode::Backspace));
    assert_eq!(a.screen(), Screen::Types);
    a.handle(&key(KeyCode::Backspace));
    assert_eq!(a.screen(), Screen::Types);
    assert!(!a.quitting);
    assert_eq!(a.handle(&key(KeyCode::Char('q'))), vec![Command::Quit]);
    assert!(a.handle(&key(KeyCode::Char('q'))).is_empty());
}

#[test]
fn baseline_is_the_next_census() {
    let mut a = app();
    a.update(Update::Census(Ok(Box::new(census(&[("x", 1, 10)])))));
    assert_eq!(a.handle(&key(KeyCode::Char('b'))), vec![Command::Census]);
    a.update(Update::Census(Ok(Box::new(census(&[("x", 5, 50)])))));
    assert_eq!((a.baseline, a.base), (1, Base::Baseline));
    a.update(Update::Census(Ok(Box::new(census(&[("x", 6, 60)])))));
    assert_eq!(a.lines[0].d_count, 1);
    a.handle(&key(KeyCode::Char('d')));
    assert_eq!(a.lines[0].d_count, 5);
}

#[test]
fn history_is_bounded_and_keeps_start_and_baseline() {
    let mut a = app();
    a.update(Update::Census(Ok(Box::new(census(&[("x", 1, 10)])))));
    a.handle(&key(KeyCode::Char('b')));
    a.update(Update::Census(Ok(Box::new(census(&[("x", 2, 20)])))));
    for i in 0..100 {
        a.update(Update::Census(Ok(Box::new(census(&[("x", 3 + i, 30)])))));
    }
    assert!(a.history.len() <= HISTORY_KEEP);
    assert_eq!(a.history[0].census.rows[0].count, 1);
    assert_eq!(a.history[a.baseline].census.rows[0].count, 2);
}

#[test]
fn movement_is_clamped_and_empty_lists_are_fine() {
    let mut a = app();
    a.handle(&key(KeyCode::Down));
    a.handle(&key(KeyCode::End));
    a.handle(&key(KeyCode::Enter));
    assert_eq!(a.screen(), Screen::Types);
    a.update(Update::Census(Ok(Box::new(census(&[
        ("a", 1, 1),
        ("b", 1, 2),
    ])))));
    a.handle(&key(KeyCode::End));
    assert_eq!(a.types_state.selected(), Some(1));
    a.handle(&key(KeyCode::PageDown));
    assert_eq!(a.types_state.selected(), Some(1));
    a.handle(&key(KeyCode::Home));
    assert_eq!(a.types_state.selected(), Some(0));
}
