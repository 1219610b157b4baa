//! `memsleuth view PID`: the interactive memory viewer, the live half (the
//! state machine and the screens are pure, in `src/render/tui/`).
//!
//! Three threads: this one runs the terminal (input, /proc sampling for the
//! header once a second, drawing only when something changed or the busy
//! indicator moves); the worker ([`worker`]) owns the agent session and
//! answers census, instance, object, why and gc commands in the background,
//! so a multi-second census never blocks a frame; a short-lived thread
//! reads the mappings when asked.
//!
//! The terminal is restored however the viewer ends: a guard on return, a
//! panic hook on panic, and SIGINT/SIGTERM/SIGHUP become a quit (Ctrl-C in
//! raw mode is a key). The session is always detached: the worker detaches
//! on `Quit` or when the UI's channel closes, and `run` waits for it, also
//! after a panic of the UI.

mod terminal;
mod worker;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::bail;
use ratatui::crossterm::event;

use super::CmdResult;
use crate::cli::ViewArgs;
use crate::inject::attach::Method;
use crate::process::{Process, fds};
use crate::render::tui::app::App;
use crate::render::tui::data::{MapsView, ProcPoint, TargetInfo};
use crate::render::tui::widgets::Theme;
use crate::render::tui::{self, Command, Update};
use terminal::FrameStats;

/// How often the header's counters are read.
const PROC_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for input before looking at the worker again.
const POLL: Duration = Duration::from_millis(25);
/// How often the busy indicator moves.
const SPIN_EVERY: Duration = Duration::from_millis(100);

/// The method, short, for the header.
fn method_word(m: &Method) -> String {
    match m {
        Method::Pep768 { .. } => "PEP 768".into(),
        Method::PtraceDirect { .. } => "ptrace call".into(),
        Method::PtracePending => "ptrace pending call".into(),
        Method::PtracePendingNudged { .. } => "ptrace pending call (nudged)".into(),
        Method::Launched { .. } => "memsleuth run socket".into(),
    }
}

pub fn run(args: &ViewArgs) -> CmdResult {
    use std::io::IsTerminal;
    let pid = args.attach.pid;
    let proc = super::open(pid)?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "memsleuth view needs a terminal; for text output use `memsleuth types` or `memsleuth growth`"
        );
    }
    // From here a Ctrl-C or a signal ends the viewer cleanly (an attach in
    // progress completes, then the session is detached).
    terminal::install_handlers();
    let attached = crate::inject::attach::attach(pid, &args.attach.options())?;
    let target = TargetInfo {
        pid,
        python: super::types::python_version(&attached.session),
        method: method_word(&attached.method),
    };
    let record = std::env::var_os("MEMSLEUTH_VIEW_RECORD").map(std::path::PathBuf::from);
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
    let (up_tx, up_rx) = mpsc::channel::<Update>();
    let opts = worker::Options {
        gc_only: args.gc_only,
        record: record.clone(),
    };
    let worker = std::thread::Builder::new()
        .name("memsleuth-view".into())
        .spawn(move || worker::run(attached, cmd_rx, up_tx, opts))?;

    let mut stats = FrameStats::default();
    let ui = catch_unwind(AssertUnwindSafe(|| {
        let mut app = App::new(target, Theme::from_env());
        ui_loop(&mut app, &proc, &cmd_tx, &up_rx, &mut stats, record)
    }));
    // Whatever happened above, the worker detaches: ask (again) and wait.
    let _ = cmd_tx.send(Command::Quit);
    drop(cmd_tx);
    let mut detached = None;
    // The worker's last update says how the detach went.
    while let Ok(u) = up_rx.recv() {
        if let Update::Detached(r) = u {
            detached = Some(r);
        }
    }
    let worker_panicked = worker.join().is_err();
    if std::env::var_os("MEMSLEUTH_VIEW_STATS").is_some() {
        eprintln!("{}", stats.summary());
    }
    let outcome = match ui {
        Ok(r) => r,
        Err(panic) => resume_unwind(panic),
    };
    let detached = match (outcome, detached) {
        (Err(e), _) => return Err(e),
        (Ok(Some(d)), _) | (Ok(None), Some(d)) => d,
        (Ok(None), None) => Err(if worker_panicked {
            "the viewer's worker stopped unexpectedly".to_string()
        } else {
            "the session ended without a detach".to_string()
        }),
    };
    match detached {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(_) if proc.status().is_err() => bail!("process {pid} exited; nothing to detach"),
        Err(e) => bail!("detach failed: {e}"),
    }
}

/// Reads the counters of the header.
fn proc_point(proc: &Process, t: f64) -> Option<ProcPoint> {
    let st = proc.status().ok()?;
    Some(ProcPoint {
        t,
        virt: st.vm_size,
        res: st.vm_rss,
        shr: st.rss_file.saturating_add(st.rss_shmem),
        threads: st.threads,
        fds: fds::count(proc).ok(),
    })
}

/// Sends the app's commands where they go: mappings to a reader thread,
/// the rest to the worker.
fn dispatch(cmds: Vec<Command>, tx: &Sender<Command>, maps_tx: &Sender<Update>, pid: u32) {
    for c in cmds {
        if c == Command::Maps {
            let tx = maps_tx.clone();
            std::thread::spawn(move || {
                let r = Process::open(pid)
                    .map_err(anyhow::Error::from)
                    .and_then(|p| super::maps::read_grouped(&p))
                    .map(|g| MapsView::from_grouped(&g))
                    .map_err(|e| super::error_sentence(&e));
                let _ = tx.send(Update::Maps(r));
            });
        } else {
            let _ = tx.send(c);
        }
    }
}

/// Runs the screen until the worker has detached. Returns the detach result
/// when it came through here.
fn ui_loop(
    app: &mut App,
    proc: &Process,
    tx: &Sender<Command>,
    rx: &Receiver<Update>,
    stats: &mut FrameStats,
    record: Option<std::path::PathBuf>,
) -> anyhow::Result<Option<Result<(), String>>> {
    let mut term = terminal::enter()?;
    let t0 = Instant::now();
    let (maps_tx, maps_rx) = mpsc::channel::<Update>();
    dispatch(app.start(), tx, &maps_tx, proc.pid);
    let mut next_proc = Instant::now();
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    let mut input_at: Option<Instant> = None;
    loop {
        app.now = t0.elapsed().as_secs_f64();
        loop {
            let u = match rx.try_recv() {
                Ok(u) => u,
                Err(mpsc::TryRecvError::Empty) => match maps_rx.try_recv() {
                    Ok(u) => u,
                    Err(_) => break,
                },
                Err(mpsc::TryRecvError::Disconnected) => {
                    // The worker is gone without a word (it panicked).
                    Update::Detached(Err("the viewer's worker stopped unexpectedly".into()))
                }
            };
            if let (Some(dir), Update::Maps(Ok(m))) = (&record, &u) {
                let _ = serde_json::to_string_pretty(m)
                    .map(|t| std::fs::write(dir.join("maps.json"), t));
            }
            let done = matches!(u, Update::Detached(_));
            let cmds = app.update(u);
            dispatch(cmds, tx, &maps_tx, proc.pid);
            dirty = true;
            if done {
                break;
            }
        }
        if let Some(d) = app.detached.take() {
            return Ok(Some(d));
        }
        if Instant::now() >= next_proc {
            next_proc += PROC_EVERY;
            match proc_point(proc, app.now) {
                Some(p) => app.push_proc(p),
                None if !app.quitting => {
                    dispatch(app.quit(), tx, &maps_tx, proc.pid);
                }
                None => {}
            }
            dirty = true;
        }
        if terminal::signalled() {
            dispatch(app.quit(), tx, &maps_tx, proc.pid);
            dirty = true;
        }
        let spin = app.busy.is_some() && last_draw.is_none_or(|t| t.elapsed() >= SPIN_EVERY);
        if dirty || spin {
            let started = Instant::now();
            if term.draw(|f| tui::draw(f, app)).is_err() {
                // The terminal is gone (hung up): quit without drawing.
                dispatch(app.quit(), tx, &maps_tx, proc.pid);
                return Ok(None);
            }
            stats.frame(started.elapsed(), input_at.take().map(|t| t.elapsed()));
            last_draw = Some(Instant::now());
            dirty = false;
        }
        if event::poll(POLL)? {
            input_at.get_or_insert_with(Instant::now);
            // Everything already typed is handled before the next frame.
            loop {
                let ev = event::read()?;
                let cmds = app.handle(&ev);
                dispatch(cmds, tx, &maps_tx, proc.pid);
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
            dirty = true;
        }
    }
}
