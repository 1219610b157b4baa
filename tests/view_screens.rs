//! Every screen of `memsleuth view`, drawn from recorded data with
//! ratatui's TestBackend and compared with insta snapshots: the types table
//! (by size, by growth, filtered while typing and kept), the busy
//! indicator, a type's instances, an object's retainer chain and
//! referents, the gc and maps panels, and the help overlay; at 80x24 (the
//! smallest supported size) unless said otherwise.
//!
//! The fixtures in tests/fixtures/view/ were recorded from real sessions
//! (`MEMSLEUTH_VIEW_RECORD=DIR memsleuth view PID`): censuses, instances,
//! referents and the retainer chain of tests/targets/unbounded_cache.py on
//! 3.12, the gc panel of gc_saveall.py and the mappings of
//! sysv_shm_reattach.py on 3.11.

use std::path::Path;

use memsleuth::analysis::census::Census;
use memsleuth::render::tui::app::{App, Screen};
use std::sync::Arc;

use memsleuth::render::tui::app::Loading;
use memsleuth::render::tui::data::{GcLine, InstanceList, ProcPoint, RetainedSizes, TargetInfo};
use memsleuth::render::tui::widgets::Theme;
use memsleuth::render::tui::{self, Command, Update};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers,
};
use serde::de::DeserializeOwned;

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/view")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.handle(&Event::Key(KeyEvent {
        code,
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Press,
        state: KeyEventState::NONE,
    }))
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn render(app: &mut App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| tui::draw(f, app)).unwrap();
    term.backend().to_string()
}

/// A viewer 12 s into a session with three censuses of the leaking target.
fn app() -> App {
    let mut app = App::new(
        TargetInfo {
            pid: 4242,
            python: "3.12.1".into(),
            method: "ptrace call".into(),
        },
        Theme { color: false },
    );
    assert_eq!(app.start(), vec![Command::Census]);
    for i in 0..12u64 {
        app.push_proc(ProcPoint {
            t: i as f64,
            virt: 170_000_000 + i * 40_960,
            res: 18_000_000 + i * 300_000,
            shr: 7_600_000,
            threads: 3,
            fds: Some(6),
        });
    }
    app.update(Update::GcLine(GcLine {
        enabled: true,
        garbage: 0,
    }));
    for (t, name) in [
        (0.5, "census-1.json"),
        (6.0, "census-2.json"),
        (11.5, "census-3.json"),
    ] {
        app.now = t;
        let c: Census = fixture(name);
        app.update(Update::Census(Ok(Box::new(c))));
    }
    app.now = 12.0;
    app
}

macro_rules! snap {
    ($name:expr, $app:expr) => {
        snap!($name, $app, 80, 24)
    };
    ($name:expr, $app:expr, $w:expr, $h:expr) => {
        insta::assert_snapshot!($name, render($app, $w, $h))
    };
}

#[test]
fn types_by_size_and_by_growth() {
    let mut a = app();
    snap!("types_by_size", &mut a);
    keys(&mut a, "ss");
    snap!("types_by_growth", &mut a);
    let top = a.selected_line().unwrap();
    assert_eq!(top.name, "app.UserSession");
    assert!(top.monotonic && top.d_count > 0);
    // A bigger terminal shows more of everything.
    snap!("types_by_growth_120x40", &mut a, 120, 40);
}

#[test]
fn types_filter_as_you_type_then_kept() {
    let mut a = app();
    keys(&mut a, "/user");
    assert!(a.editing);
    snap!("types_filter_typing", &mut a);
    key(&mut a, KeyCode::Enter);
    snap!("types_filter_kept", &mut a);
    key(&mut a, KeyCode::Char('/'));
    key(&mut a, KeyCode::Esc);
    assert!(a.filter.is_empty() && !a.quitting);
}

#[test]
fn busy_indicator() {
    // The first census of a big heap, 1.3 s in.
    let mut a = App::new(TargetInfo::default(), Theme { color: false });
    a.start();
    a.update(Update::Busy {
        label: "census".into(),
        queued: 0,
    });
    a.now = 1.3;
    snap!("busy_first_census", &mut a);
    // A refresh with a why queued behind it.
    let mut a = app();
    key(&mut a, KeyCode::Char('r'));
    a.update(Update::Busy {
        label: "census".into(),
        queued: 1,
    });
    a.now = 14.45;
    snap!("busy_refresh", &mut a);
}

/// From the types table to the first instance's object screen.
fn drilled() -> App {
    let mut a = app();
    keys(&mut a, "ss");
    let cmds = key(&mut a, KeyCode::Enter);
    assert!(matches!(&cmds[..], [Command::Instances(q)] if q.name == "app.UserSession"));
    a.update(Update::Instances(Ok(fixture("instances.json"))));
    a
}

#[test]
fn instances_of_a_type() {
    let mut a = drilled();
    assert_eq!(a.screen(), Screen::Instances);
    snap!("instances", &mut a);
}

#[test]
fn retainer_chain_and_referents() {
    let mut a = drilled();
    let cmds = key(&mut a, KeyCode::Enter);
    let id = 139644009238016;
    assert_eq!(cmds, vec![Command::Referents(id, None), Command::Why(id)]);
    snap!("object_loading", &mut a);
    a.update(Update::Referents(id, Ok(fixture("referents.json"))));
    a.update(Update::Why(id, Ok(fixture("why.json"))));
    snap!("object_chain", &mut a);
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Down);
    snap!("object_referents", &mut a);
    // Enter on `.username` opens that str, reached from the instance.
    let cmds = key(&mut a, KeyCode::Enter);
    assert!(matches!(&cmds[..], [Command::Referents(_, Some(p)), Command::Why(_)] if *p == id));
    key(&mut a, KeyCode::Backspace);
    assert_eq!(a.screen(), Screen::Object);
}

#[test]
fn retained_sizes_on_instances_and_object() {
    let mut a = drilled();
    // Before R, `s` on the instances only says what to do.
    assert!(key(&mut a, KeyCode::Char('s')).is_empty());
    assert!(!a.inst_by_retained);
    assert_eq!(key(&mut a, KeyCode::Char('R')), vec![Command::Retained]);
    // Retained sizes for the sampled instances, the smallest keeping the
    // most (so that sorting by them reverses the order), and none for one.
    let list: InstanceList = fixture("instances.json");
    let n = list.objects.len() as u64;
    let mut by_id: Vec<(u64, u64, u32)> = list
        .objects
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, o)| (o.id, 1000 * (i as u64 + 1) + o.size, i as u32 + 1))
        .collect();
    by_id.sort_unstable();
    a.update(Update::Retained(Ok(Arc::new(RetainedSizes {
        by_id,
        total_bytes: 1 << 20,
    }))));
    snap!("instances_retained", &mut a, 100, 24);
    key(&mut a, KeyCode::Char('s'));
    assert!(a.inst_by_retained);
    let Some(Loading::Ready(sorted)) = &a.instances else {
        panic!("no instances");
    };
    let last = list.objects.last().unwrap().id;
    assert_eq!(sorted.objects[0].id, last, "most retained first");
    assert_eq!(
        sorted.objects[n as usize - 1].id,
        list.objects[0].id,
        "unknown last"
    );
    snap!("instances_by_retained", &mut a, 100, 24);
    // The object screen says what it retains.
    let cmds = key(&mut a, KeyCode::Enter);
    assert!(matches!(&cmds[..], [Command::Referents(id, None), Command::Why(_)] if *id == last));
    a.update(Update::Referents(last, Ok(fixture("referents.json"))));
    let screen = render(&mut a, 100, 24);
    let title = screen.lines().nth(2).unwrap_or_default();
    assert!(title.contains("· retains "), "{screen}");
}

#[test]
fn gc_panel() {
    let mut a = app();
    assert_eq!(key(&mut a, KeyCode::Char('g')), vec![Command::Gc]);
    a.update(Update::Gc(Ok(Box::new(fixture("gc.json")))));
    a.update(Update::GcLine(GcLine {
        enabled: true,
        garbage: 137_022,
    }));
    snap!("gc_panel", &mut a);
    // g again goes back.
    key(&mut a, KeyCode::Char('g'));
    assert_eq!(a.screen(), Screen::Types);
}

#[test]
fn maps_panel() {
    let mut a = app();
    assert_eq!(key(&mut a, KeyCode::Char('m')), vec![Command::Maps]);
    a.update(Update::Maps(Ok(fixture("maps.json"))));
    snap!("maps_panel", &mut a);
    snap!("maps_panel_120x40", &mut a, 120, 40);
}

#[test]
fn help_overlay() {
    let mut a = app();
    key(&mut a, KeyCode::Char('?'));
    snap!("help", &mut a);
    key(&mut a, KeyCode::Esc);
    assert!(!a.help && !a.quitting);
    assert_eq!(key(&mut a, KeyCode::Esc), vec![Command::Quit]);
    snap!("quitting", &mut a);
}

#[test]
fn no_color_means_no_colour_at_all() {
    for color in [false, true] {
        let mut a = app();
        a.theme = Theme { color };
        keys(&mut a, "ss");
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        term.draw(|f| tui::draw(f, &mut a)).unwrap();
        let buf = term.backend().buffer();
        let coloured = buf
            .content()
            .iter()
            .any(|c| c.fg != ratatui::style::Color::Reset || c.bg != ratatui::style::Color::Reset);
        assert_eq!(coloured, color, "color={color}");
        // The selection shows without colour too.
        assert!(
            buf.content()
                .iter()
                .any(|c| c.modifier.contains(ratatui::style::Modifier::REVERSED))
        );
    }
}

#[test]
fn tiny_and_odd_sizes_do_not_panic() {
    let mut a = drilled();
    key(&mut a, KeyCode::Enter);
    for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 8), (80, 6), (300, 100)] {
        for screen in ["", "g", "m", "?"] {
            keys(&mut a, screen);
            render(&mut a, w, h);
        }
    }
}

#[test]
fn hostile_text_is_escaped() {
    let mut a = app();
    let mut c: Census = fixture("census-1.json");
    c.rows[0].name = "evil\x1b]0;owned\x07\nname".into();
    a.update(Update::Census(Ok(Box::new(c))));
    let screen = render(&mut a, 80, 24);
    assert!(!screen.contains('\x1b') && !screen.contains('\x07'));
    assert!(screen.contains("evil\\x1b]0;owned\\x07\\nname"), "{screen}");
}
