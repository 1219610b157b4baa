//! The viewer's state machine: what is on screen, what was asked of the
//! worker, and what the worker's answers change (the keys are in
//! `keys.rs`). Pure: keys and worker updates go in,
//! [`Command`]s for the worker come out, and `draw` renders the state. Time
//! is given (`now`), never read, so frames are deterministic.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ratatui::widgets::TableState;

use super::data::{
    Chain, GcLine, InstanceList, InstanceQuery, MapsView, ProcPoint, Referents, RetainedSizes,
    TargetInfo,
};
use super::types::{self, Base, Sort, TypeLine};
use super::widgets::Theme;
use crate::analysis::census::Census;
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
    /// The dominator tree of the whole heap: every object's retained size.
    Retained,
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
    Retained(Result<Arc<RetainedSizes>, String>),
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
    pub(super) baseline_pending: bool,
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
    /// Retained sizes (after `R`).
    pub retained: Option<Loading<Arc<RetainedSizes>>>,
    /// The instances are listed by retained size (else by size).
    pub inst_by_retained: bool,
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
    pub(super) census_pending: bool,
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
            retained: None,
            inst_by_retained: false,
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
                self.busy = Some(Busy {
                    label,
                    since: self.now,
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
                self.sort_instances();
                self.inst_state.select(Some(0));
            }
            Update::Retained(r) => {
                match &r {
                    Err(e) => self.error(format!("retained sizes failed: {e}")),
                    Ok(s) => self.note(format!(
                        "retained sizes of {} objects (s on the instances sorts by them)",
                        s.by_id.len()
                    )),
                }
                self.retained = Some(Loading::from(r));
                self.sort_instances();
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

    pub(super) fn error(&mut self, text: String) {
        self.message = Some(Message {
            text,
            error: true,
            at: self.now,
        });
    }

    pub(super) fn note(&mut self, text: impl Into<String>) {
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

    pub(super) fn refilter(&mut self, keep: Option<String>) {
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

    /// Whether retained sizes have been computed.
    pub fn retained_of_any(&self) -> bool {
        matches!(self.retained, Some(Loading::Ready(_)))
    }

    /// The retained size of `id`, once computed.
    pub fn retained_of(&self, id: u64) -> Option<(u64, u32)> {
        match &self.retained {
            Some(Loading::Ready(s)) => s.get(id),
            _ => None,
        }
    }

    /// Orders the sampled instances by size, or by retained size when
    /// asked and known (unknown ones last).
    pub(super) fn sort_instances(&mut self) {
        let sizes = match (&self.retained, self.inst_by_retained) {
            (Some(Loading::Ready(s)), true) => Some(Arc::clone(s)),
            _ => None,
        };
        if let Some(Loading::Ready(list)) = &mut self.instances {
            match sizes {
                Some(s) => list.objects.sort_by(|a, b| {
                    let ra = s.get(a.id).map(|x| x.0);
                    let rb = s.get(b.id).map(|x| x.0);
                    rb.cmp(&ra).then(b.size.cmp(&a.size)).then(a.id.cmp(&b.id))
                }),
                None => list
                    .objects
                    .sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id))),
            }
        }
    }

    /// Selects the object itself (the last step) once its chain arrives.
    pub(super) fn settle(&mut self) {
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
