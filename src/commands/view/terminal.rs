//! The terminal for the viewer: raw mode and the alternate screen with
//! mouse reporting, restored by a guard, by a panic hook, and after a
//! signal (which only sets a flag the loop turns into a clean quit); and
//! frame-time figures (`MEMSLEUTH_VIEW_STATS=1` prints them at exit).

use std::io::{Stdout, stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

static SIGNALLED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Puts the terminal back: idempotent, never fails loudly.
pub fn restore() {
    let _ = execute!(stdout(), DisableMouseCapture, LeaveAlternateScreen, Show);
    let _ = disable_raw_mode();
}

/// The terminal in viewer mode; dropping it restores the terminal.
pub struct Term {
    inner: Terminal<CrosstermBackend<Stdout>>,
}

impl Term {
    pub fn draw(&mut self, f: impl FnOnce(&mut ratatui::Frame)) -> std::io::Result<()> {
        self.inner.draw(f).map(|_| ())
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        restore();
    }
}

pub fn enter() -> std::io::Result<Term> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Restore first, so the message lands on a normal screen.
            restore();
            previous(info);
        }));
    });
    enable_raw_mode()?;
    let guard = |e: std::io::Error| {
        restore();
        e
    };
    execute!(stdout(), EnterAlternateScreen, EnableMouseCapture, Hide).map_err(guard)?;
    let inner = Terminal::new(CrosstermBackend::new(stdout())).map_err(guard)?;
    Ok(Term { inner })
}

extern "C" fn on_signal(_sig: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set a flag that the loop turns into a quit:
/// the session is detached and the terminal restored before exiting.
pub fn install_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // the sigaction struct is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// Draw times and input-to-frame latencies, in seconds.
#[derive(Debug, Default)]
pub struct FrameStats {
    draws: Vec<f64>,
    latencies: Vec<f64>,
}

impl FrameStats {
    pub fn frame(&mut self, draw: Duration, since_input: Option<Duration>) {
        self.draws.push(draw.as_secs_f64());
        if let Some(l) = since_input {
            self.latencies.push(l.as_secs_f64());
        }
    }

    pub fn summary(&self) -> String {
        fn q(v: &[f64], p: f64) -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            s[((s.len() - 1) as f64 * p).round() as usize]
        }
        let ms = |x: f64| x * 1000.0;
        format!(
            "memsleuth view: {} frames, draw median {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             key to frame median {:.1} ms, max {:.1} ms ({} inputs)",
            self.draws.len(),
            ms(q(&self.draws, 0.5)),
            ms(q(&self.draws, 0.99)),
            ms(q(&self.draws, 1.0)),
            ms(q(&self.latencies, 0.5)),
            ms(q(&self.latencies, 1.0)),
            self.latencies.len()
        )
    }
}
