//! What each key does: moving, drilling in and out, filtering, sorting,
//! the baseline, refreshes and the panels. Pure, like the rest of the
//! state machine: a key changes the state and returns the commands for the
//! worker.

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use ratatui::widgets::TableState;

use super::app::{App, Command, Loading, ObjectFrame, Pane, Screen};
use super::data::InstanceQuery;
use super::types::Base;
use crate::analysis::census::RowKind;

impl App {
    /// Handles one terminal event; returns what to ask the worker.
    pub fn handle(&mut self, ev: &Event) -> Vec<Command> {
        if self.quitting {
            return Vec::new();
        }
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.key(*k),
            Event::Mouse(m) => match m.kind {
                MouseEventKind::ScrollDown => self.move_by(3),
                MouseEventKind::ScrollUp => self.move_by(-3),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Asks the worker to stop and detach (q, Esc, Ctrl-C, a signal).
    pub fn quit(&mut self) -> Vec<Command> {
        if self.quitting {
            return Vec::new();
        }
        self.quitting = true;
        self.help = false;
        self.note("detaching…");
        vec![Command::Quit]
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Command> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c')) {
            return self.quit();
        }
        if self.editing {
            return self.filter_key(k);
        }
        if self.help {
            if matches!(
                k.code,
                KeyCode::Char('?') | KeyCode::Esc | KeyCode::Backspace | KeyCode::Enter
            ) {
                self.help = false;
            } else if k.code == KeyCode::Char('q') {
                return self.quit();
            }
            return Vec::new();
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit(),
            KeyCode::Char('?') => {
                self.help = true;
                Vec::new()
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Char('u') if ctrl => self.move_by(-(self.page as i64 / 2).max(1)),
            KeyCode::Char('d') if ctrl => self.move_by((self.page as i64 / 2).max(1)),
            KeyCode::PageUp => self.move_by(-(self.page as i64).max(1)),
            KeyCode::PageDown => self.move_by((self.page as i64).max(1)),
            KeyCode::Home => self.move_by(i64::MIN / 2),
            KeyCode::End => self.move_by(i64::MAX / 2),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => self.enter(),
            KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h') => {
                self.back();
                Vec::new()
            }
            KeyCode::Tab | KeyCode::BackTab => {
                if let Some(o) = self.objects.last_mut()
                    && self.screens.last() == Some(&Screen::Object)
                {
                    o.focus = match o.focus {
                        Pane::Chain => Pane::Referents,
                        Pane::Referents => Pane::Chain,
                    };
                }
                Vec::new()
            }
            KeyCode::Char('/') => {
                self.goto_types();
                self.editing = true;
                Vec::new()
            }
            KeyCode::Char('R') => {
                self.retained = Some(Loading::Pending);
                vec![Command::Retained]
            }
            KeyCode::Char('s') if self.screen() == Screen::Instances => {
                if matches!(self.retained, Some(Loading::Ready(_))) {
                    self.inst_by_retained = !self.inst_by_retained;
                    self.sort_instances();
                    self.inst_state.select(Some(0));
                    self.note(if self.inst_by_retained {
                        "instances by retained size"
                    } else {
                        "instances by size"
                    });
                } else {
                    self.note("press R first: it computes every object's retained size");
                }
                Vec::new()
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.recompute();
                // A new order starts at its top.
                self.types_state = TableState::default().with_selected(Some(0));
                self.note(format!("sorted by {}", self.sort.name()));
                Vec::new()
            }
            KeyCode::Char('d') => {
                self.base = match self.base {
                    Base::Start if self.baseline > 0 => Base::Baseline,
                    Base::Start => {
                        self.note("no baseline yet: press b to set one");
                        Base::Start
                    }
                    Base::Baseline => Base::Start,
                };
                self.recompute();
                Vec::new()
            }
            KeyCode::Char('b') => {
                self.baseline_pending = true;
                self.census()
            }
            KeyCode::Char('r') => self.refresh(),
            KeyCode::Char('g') => self.toggle(Screen::Gc),
            KeyCode::Char('m') => self.toggle(Screen::Maps),
            _ => Vec::new(),
        }
    }

    fn filter_key(&mut self, k: KeyEvent) -> Vec<Command> {
        let keep = self.selected_line().map(|l| l.name.clone());
        match k.code {
            KeyCode::Enter => self.editing = false,
            KeyCode::Esc => {
                self.editing = false;
                self.filter.clear();
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() && self.filter.chars().count() < 80 => {
                self.filter.push(c)
            }
            _ => return Vec::new(),
        }
        self.refilter(keep);
        Vec::new()
    }

    fn census(&mut self) -> Vec<Command> {
        if self.census_pending {
            return Vec::new();
        }
        self.census_pending = true;
        vec![Command::Census]
    }

    /// `r`: the data of the screen in front, again.
    fn refresh(&mut self) -> Vec<Command> {
        match self.screen() {
            Screen::Types => self.census(),
            Screen::Instances => match self.instances.as_ref().and_then(|l| l.ready()) {
                Some(list) => {
                    let name = list.name.clone();
                    self.instances_of(&name)
                }
                None => Vec::new(),
            },
            Screen::Object => match self.objects.last() {
                Some(o) => {
                    let (id, parent) = (o.id, o.parent);
                    self.referents.remove(&id);
                    self.chains.remove(&id);
                    self.object_commands(id, parent)
                }
                None => Vec::new(),
            },
            Screen::Gc => {
                self.gc = Some(Loading::Pending);
                vec![Command::Gc]
            }
            Screen::Maps => {
                self.maps = Some(Loading::Pending);
                vec![Command::Maps]
            }
        }
    }

    /// `g` / `m`: open the panel (reading it the first time), or close it.
    fn toggle(&mut self, s: Screen) -> Vec<Command> {
        if self.screen() == s {
            self.back();
            return Vec::new();
        }
        self.screens
            .retain(|x| *x != Screen::Gc && *x != Screen::Maps);
        self.screens.push(s);
        if s == Screen::Gc && self.gc.is_none() {
            self.gc = Some(Loading::Pending);
            return vec![Command::Gc];
        }
        if s == Screen::Maps && self.maps.is_none() {
            self.maps = Some(Loading::Pending);
            return vec![Command::Maps];
        }
        Vec::new()
    }

    fn goto_types(&mut self) {
        self.screens.truncate(1);
        self.objects.clear();
    }

    fn back(&mut self) {
        if self.screens.len() <= 1 {
            return;
        }
        if self.screens.pop() == Some(Screen::Object) {
            self.objects.pop();
        }
    }

    /// The list in front moves by `by` rows (clamped).
    fn move_by(&mut self, by: i64) -> Vec<Command> {
        if self.help {
            return Vec::new();
        }
        let (state, len) = match self.screen() {
            Screen::Types => (&mut self.types_state, self.visible.len()),
            Screen::Instances => (
                &mut self.inst_state,
                self.instances
                    .as_ref()
                    .and_then(|l| l.ready())
                    .map_or(0, |l| l.objects.len()),
            ),
            Screen::Maps => (
                &mut self.maps_state,
                self.maps
                    .as_ref()
                    .and_then(|l| l.ready())
                    .map_or(0, |m| m.groups.len()),
            ),
            Screen::Gc => {
                let y = i64::from(self.gc_scroll).saturating_add(by).clamp(0, 1000);
                self.gc_scroll = y as u16;
                return Vec::new();
            }
            Screen::Object => {
                let Some(o) = self.objects.last_mut() else {
                    return Vec::new();
                };
                match o.focus {
                    Pane::Chain => (
                        &mut o.chain_state,
                        self.chains
                            .get(&o.id)
                            .and_then(|c| c.ready())
                            .map_or(0, |c| c.steps.len()),
                    ),
                    Pane::Referents => (
                        &mut o.ref_state,
                        self.referents
                            .get(&o.id)
                            .and_then(|r| r.ready())
                            .map_or(0, |r| r.referents.len()),
                    ),
                }
            }
        };
        if len == 0 {
            state.select(Some(0));
            return Vec::new();
        }
        let cur = state.selected().unwrap_or(0) as i64;
        let next = cur.saturating_add(by).clamp(0, len as i64 - 1);
        state.select(Some(next as usize));
        Vec::new()
    }

    /// Enter: drill into the selected row.
    fn enter(&mut self) -> Vec<Command> {
        match self.screen() {
            Screen::Types => {
                let Some(name) = self.selected_line().map(|l| l.name.clone()) else {
                    return Vec::new();
                };
                let cmds = self.instances_of(&name);
                if !cmds.is_empty() {
                    self.screens.push(Screen::Instances);
                }
                cmds
            }
            Screen::Instances => {
                let Some(list) = self.instances.as_ref().and_then(|l| l.ready()) else {
                    return Vec::new();
                };
                let Some(obj) = self.inst_state.selected().and_then(|i| list.objects.get(i)) else {
                    return Vec::new();
                };
                let (id, title) = (obj.id, list.name.clone());
                self.open_object(id, title, None)
            }
            Screen::Object => {
                let Some(o) = self.objects.last() else {
                    return Vec::new();
                };
                // (id, type, the object it is reached from)
                let target = match o.focus {
                    Pane::Chain => self
                        .chains
                        .get(&o.id)
                        .and_then(|c| c.ready())
                        .and_then(|c| {
                            let i = o.chain_state.selected()?;
                            let s = c.steps.get(i)?;
                            let parent =
                                i.checked_sub(1).and_then(|j| c.steps.get(j)).map(|p| p.id);
                            Some((s.id, s.type_name.clone(), parent))
                        }),
                    Pane::Referents => self
                        .referents
                        .get(&o.id)
                        .and_then(|r| r.ready())
                        .and_then(|r| r.referents.get(o.ref_state.selected()?))
                        .map(|r| (r.id, r.node.type_name.clone(), Some(o.id))),
                };
                match target {
                    Some((id, _, _)) if id == o.id => Vec::new(),
                    Some((id, title, parent)) => self.open_object(id, title, parent),
                    None => Vec::new(),
                }
            }
            Screen::Gc | Screen::Maps => Vec::new(),
        }
    }

    /// Asks for sampled instances of the type named `name` in the latest
    /// census.
    fn instances_of(&mut self, name: &str) -> Vec<Command> {
        let Some(snap) = self.current() else {
            return Vec::new();
        };
        let Some(row) = snap.census.row(name) else {
            self.note(format!("no live {name} in the latest census"));
            return Vec::new();
        };
        let q = InstanceQuery {
            name: row.name.clone(),
            tids: row.tids.clone(),
            dict_of: row.kind == RowKind::DictOf,
            untracked: row.tracked < row.count,
            expect: row.count,
        };
        self.instances = Some(Loading::Pending);
        self.inst_state.select(Some(0));
        vec![Command::Instances(q)]
    }

    fn open_object(&mut self, id: u64, title: String, parent: Option<u64>) -> Vec<Command> {
        self.objects.push(ObjectFrame {
            id,
            parent,
            title,
            focus: Pane::Chain,
            chain_state: TableState::default(),
            ref_state: TableState::default().with_selected(Some(0)),
        });
        self.screens.push(Screen::Object);
        self.settle();
        self.object_commands(id, parent)
    }

    /// Referents first (quick), then the retainer chain (a heap walk); what
    /// is known or already asked for is not asked again (the worker answers
    /// every command, also one it skipped because a newer one superseded it).
    fn object_commands(&mut self, id: u64, parent: Option<u64>) -> Vec<Command> {
        let mut cmds = Vec::new();
        if matches!(self.referents.get(&id), None | Some(Loading::Failed(_))) {
            self.referents.insert(id, Loading::Pending);
            cmds.push(Command::Referents(id, parent));
        }
        if matches!(self.chains.get(&id), None | Some(Loading::Failed(_))) {
            self.chains.insert(id, Loading::Pending);
            cmds.push(Command::Why(id));
        }
        cmds
    }
}
