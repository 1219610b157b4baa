//! The viewer's state machine: what is on screen, what was asked of the
//! worker, and what each key does. Pure: keys and worker updates go in,
//! [`Command`]s for the worker come out, and `draw` renders the state. Time
//! is given (`now`), never read, so frames are deterministic.

use std::collections::{HashMap, VecDeque};

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use ratatui::widgets::TableState;

use super::data::{
    Chain, GcLine, InstanceList, InstanceQuery, MapsView, ProcPoint, Referents, TargetInfo,
};
use super::types::{self, Base, Sort, TypeLine};
use super::widgets::Theme;
use crate::analysis::census::{Census, RowKind};
use crate::analysis::gcstate::GcReport;

/// /proc readings kept for the sparklines.
const PROC_KEEP: usize = 240;
/// Censuses kept for deltas and growth (the first and the baseline stay).
const HISTORY_KEEP: usize = 32;
/// Instances sampled per type.
pub const INSTANCE_SAMPLES: usize = 50;

/// What the worker is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Census,
    Instances(InstanceQuery),
    /// An object and what it refers to; the parent (the object it was
    /// reached from) finds it when the collector does not track it.
    Referents(u64, Option<u64>),
    Why(u64),
    Gc,
    Maps,
    /// Stop, detach, and report `Update::Detached`.
    Quit,
}

/// What comes back (also what a recording replays).
#[derive(Debug, Clone)]
pub enum Update {
    /// The worker started `label`; `queued` more wait behind it.
    Busy {
        label: String,
        queued: usize,
    },
    Idle,
    Census(Result<Box<Census>, String>),
    GcLine(GcLine),
    Instances(Result<InstanceList, String>),
    Referents(u64, Result<Referents, String>),
    Why(u64, Result<Chain, String>),
    Gc(Result<Box<GcReport>, String>),
    Maps(Result<MapsView, String>),
    Detached(Result<(), String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Loading<T> {
    Pending,
    Ready(T),
    Failed(String),
}

impl<T> Loading<T> {
    pub fn ready(&self) -> Option<&T> {
        match self {
            Loading::Ready(t) => Some(t),
            _ => None,
        }
    }

    fn from(r: Result<T, String>) -> Loading<T> {
        match r {
            Ok(t) => Loading::Ready(t),
            Err(e) => Loading::Failed(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Types,
    Instances,
    Object,
    Gc,
    Maps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Chain,
    Referents,
}

/// One object being looked at (the object screens form a stack).
#[derive(Debug, Clone)]
pub struct ObjectFrame {
    pub id: u64,
    /// The object it was reached from, if any.
    pub parent: Option<u64>,
    /// The type name it was reached as.
    pub title: String,
    pub focus: Pane,
    pub chain_state: TableState,
    pub ref_state: TableState,
}

#[derive(Debug, Clone)]
pub struct Busy {
    pub label: String,
    pub since: f64,
    pub queued: usize,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub text: String,
    pub error: bool,
    /// When it was said (`now`); notes fade after a few seconds.
    pub at: f64,
}

impl Message {
    /// Whether it is still shown at `now`.
    pub fn live(&self, now: f64) -> bool {
        now - self.at < if self.error { 30.0 } else { 5.0 }
    }
}

/// One census and when it was taken.
#[derive(Debug, Clone)]
pub struct Snap {
    pub t: f64,
    pub census: Census,
}

pub struct App {
    pub target: TargetInfo,
    pub theme: Theme,
    /// Seconds since start, set by the caller before drawing.
    pub now: f64,
    pub proc: VecDeque<ProcPoint>,
    pub gc_line: Option<GcLine>,
    /// Censuses, oldest first; [0] is the first one (the start).
    pub history: Vec<Snap>,
    /// Index of the baseline in `history` (0: the start).
    pub baseline: usize,
    baseline_pending: bool,
    pub base: Base,
    pub sort: Sort,
    pub filter: String,
    /// The filter line is being typed.
    pub editing: bool,
    /// The table rows, sorted (all of them).
    pub lines: Vec<TypeLine>,
    /// Indices into `lines` that pass the filter.
    pub visible: Vec<usize>,
    pub types_state: TableState,
    pub instances: Option<Loading<InstanceList>>,
    pub inst_state: TableState,
    pub objects: Vec<ObjectFrame>,
    pub referents: HashMap<u64, Loading<Referents>>,
    pub chains: HashMap<u64, Loading<Chain>>,
    pub gc: Option<Loading<GcReport>>,
    pub gc_scroll: u16,
    pub maps: Option<Loading<MapsView>>,
    pub maps_state: TableState,
    pub screens: Vec<Screen>,
    pub help: bool,
    pub busy: Option<Busy>,
    pub message: Option<Message>,
    /// `q` was pressed: waiting for the worker to detach.
    pub quitting: bool,
    pub detached: Option<Result<(), String>>,
    /// Rows of the last drawn list (for page up/down).
    pub page: usize,
    census_pending: bool,
}

impl App {
    pub fn new(target: TargetInfo, theme: Theme) -> App {
        App {
            target,
            theme,
            now: 0.0,
            proc: VecDeque::new(),
            gc_line: None,
            history: Vec::new(),
            baseline: 0,
            baseline_pending: false,
            base: Base::Start,
            sort: Sort::Size,
            filter: String::new(),
            editing: false,
            lines: Vec::new(),
            visible: Vec::new(),
            types_state: TableState::default().with_selected(Some(0)),
            instances: None,
            inst_state: TableState::default().with_selected(Some(0)),
            objects: Vec::new(),
            referents: HashMap::new(),
            chains: HashMap::new(),
            gc: None,
            gc_scroll: 0,
            maps: None,
            maps_state: TableState::default().with_selected(Some(0)),
            screens: vec![Screen::Types],
            help: false,
            busy: None,
            message: None,
            quitting: false,
            detached: None,
            page: 10,
            census_pending: false,
        }
    }

    /// What to ask for at start.
    pub fn start(&mut self) -> Vec<Command> {
        self.census_pending = true;
        vec![Command::Census]
    }

    pub fn screen(&self) -> Screen {
        self.screens.last().copied().unwrap_or(Screen::Types)
    }

    pub fn push_proc(&mut self, p: ProcPoint) {
        if self.proc.len() >= PROC_KEEP {
            self.proc.pop_front();
        }
        self.proc.push_back(p);
    }

    pub fn current(&self) -> Option<&Snap> {
        self.history.last()
    }

    /// The census deltas are measured from.
    pub fn base_index(&self) -> usize {
        match self.base {
            Base::Start => 0,
            Base::Baseline => self.baseline.min(self.history.len().saturating_sub(1)),
        }
    }

    // -- worker updates ------------------------------------------------------

    pub fn update(&mut self, u: Update) -> Vec<Command> {
        match u {
            Update::Busy { label, queued } => {
                let since = match &self.busy {
                    Some(b) if b.label == label => b.since,
                    _ => self.now,
                };
                self.busy = Some(Busy {
                    label,
                    since,
                    queued,
                });
            }
            Update::Idle => self.busy = None,
            Update::Census(r) => {
                self.census_pending = false;
                match r {
                    Ok(c) => self.add_census(*c),
                    Err(e) => self.error(format!("census failed: {e}")),
                }
            }
            Update::GcLine(g) => self.gc_line = Some(g),
            Update::Instances(r) => {
                if let Err(e) = &r {
                    self.error(format!("listing instances failed: {e}"));
                }
                self.instances = Some(Loading::from(r));
                self.inst_state.select(Some(0));
            }
            Update::Referents(id, r) => {
                self.referents.insert(id, Loading::from(r));
            }
            Update::Why(id, r) => {
                self.chains.insert(id, Loading::from(r));
                self.settle();
            }
            Update::Gc(r) => self.gc = Some(Loading::from(r.map(|b| *b))),
            Update::Maps(r) => self.maps = Some(Loading::from(r)),
            Update::Detached(r) => {
                self.busy = None;
                self.detached = Some(r);
            }
        }
        Vec::new()
    }

    fn error(&mut self, text: String) {
        self.message = Some(Message {
            text,
            error: true,
            at: self.now,
        });
    }

    fn note(&mut self, text: impl Into<String>) {
        self.message = Some(Message {
            text: text.into(),
            error: false,
            at: self.now,
        });
    }

    fn add_census(&mut self, census: Census) {
        if self.history.len() >= HISTORY_KEEP {
            // Drop the oldest census that is neither the start nor the baseline.
            if let Some(i) = (1..self.history.len()).find(|&i| i != self.baseline) {
                self.history.remove(i);
                if i < self.baseline {
                    self.baseline -= 1;
                }
            }
        }
        self.history.push(Snap {
            t: self.now,
            census,
        });
        if self.baseline_pending {
            self.baseline_pending = false;
            self.baseline = self.history.len() - 1;
            self.base = Base::Baseline;
            self.note("baseline set: deltas are now since this census");
        }
        self.recompute();
    }

    /// Rebuilds the table rows (after a census, a sort or a base change),
    /// keeping the selected type selected.
    pub fn recompute(&mut self) {
        let keep = self.selected_line().map(|l| l.name.clone());
        let snaps: Vec<&Census> = self.history[self.base_index().min(self.history.len())..]
            .iter()
            .map(|s| &s.census)
            .collect();
        self.lines = types::lines(&snaps, self.sort);
        self.refilter(keep);
    }

    fn refilter(&mut self, keep: Option<String>) {
        let needle = self.filter.to_lowercase();
        self.visible = self
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| needle.is_empty() || l.name.to_lowercase().contains(&needle))
            .map(|(i, _)| i)
            .collect();
        let pos = keep
            .and_then(|name| {
                self.visible
                    .iter()
                    .position(|&i| self.lines[i].name == name)
            })
            .unwrap_or(0);
        self.types_state.select(Some(pos));
    }

    pub fn selected_line(&self) -> Option<&TypeLine> {
        let i = self.types_state.selected()?;
        self.lines.get(*self.visible.get(i)?)
    }

    // -- input ----------------------------------------------------------------

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

    /// Selects the object itself (the last step) once its chain arrives.
    fn settle(&mut self) {
        for o in &mut self.objects {
            if o.chain_state.selected().is_none()
                && let Some(Loading::Ready(c)) = self.chains.get(&o.id)
            {
                o.chain_state.select(Some(c.steps.len().saturating_sub(1)));
            }
        }
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
