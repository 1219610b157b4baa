//! `memsleuth view`: the interactive memory viewer, the pure half.
//!
//! The design splits the viewer in two:
//!
//! - here, the state machine ([`app::App`]) and the drawing: state and
//!   recorded data in, a frame out. Keys and worker updates change the
//!   state; the state asks for work by returning [`app::Command`]s. Nothing
//!   here attaches, reads /proc, sleeps or looks at the clock, so every
//!   screen is snapshot-tested on recorded data with ratatui's
//!   `TestBackend` (`tests/view_screens.rs`).
//! - `src/commands/view/`, the live half: attaching, the worker thread that
//!   owns the agent session and answers commands in the background, /proc
//!   sampling for the header, and the terminal (raw mode, restored on
//!   panic, Ctrl-C and signals).
//!
//! Screens: the types table ([`types`]), a type's sampled instances
//! ([`instances`]), one object with its retainer chain and referents
//! ([`object`]), and the gc, mappings and help panels ([`panels`]). The
//! header and the status line with its busy indicator are in [`widgets`].
//! Every string from the target is cleaned of control characters when it is
//! drawn ([`widgets::safe`]).

pub mod app;
pub mod data;
pub mod instances;
mod keys;
pub mod object;
pub mod panels;
pub mod types;
pub mod widgets;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};

use app::{App, Screen};

pub use app::{Command, Update};

/// Draws the whole screen for the current state. (Takes `&mut` only to
/// keep list scroll offsets and the page height for the keys.)
pub fn draw(f: &mut Frame, app: &mut App) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    widgets::header(f, head, app);
    let screen = app.screen();
    match screen {
        Screen::Types => types::draw(f, body, app),
        Screen::Instances => instances::draw(f, body, app),
        Screen::Object => object::draw(f, body, app),
        Screen::Gc => panels::gc(f, body, app),
        Screen::Maps => panels::maps(f, body, app),
    }
    if app.help {
        panels::help(f, body, app.theme);
    }
    widgets::status(f, foot, app, hints(app, screen));
}

/// The key hints for the status line, most useful first (they are cut
/// from the right on narrow terminals).
fn hints(app: &App, screen: Screen) -> &'static [(&'static str, &'static str)] {
    if app.quitting {
        return &[];
    }
    if app.editing {
        return &[("Enter", "keep"), ("Esc", "clear")];
    }
    match screen {
        Screen::Types => &[
            ("Enter", "instances"),
            ("/", "filter"),
            ("s", "sort"),
            ("r", "refresh"),
            ("b", "baseline"),
            ("g", "gc"),
            ("m", "maps"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Screen::Instances => &[
            ("Enter", "why alive"),
            ("Bksp", "back"),
            ("R", "retained"),
            ("s", "sort"),
            ("r", "resample"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Screen::Object => &[
            ("Enter", "open"),
            ("Tab", "chain/referents"),
            ("Bksp", "back"),
            ("R", "retained"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Screen::Gc | Screen::Maps => &[
            ("Bksp", "back"),
            ("r", "refresh"),
            ("?", "help"),
            ("q", "quit"),
        ],
    }
}
