//! The progress line on a terminal while doctor watches (nothing on a pipe).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::render::units;

pub struct Progress {
    enabled: bool,
    duration: f64,
    censuses: Arc<AtomicUsize>,
    first_rss: Option<u64>,
    drawn: bool,
}

const WIDTH: usize = 24;

impl Progress {
    pub fn new(enabled: bool, duration: f64, censuses: Arc<AtomicUsize>) -> Progress {
        Progress {
            enabled,
            duration,
            censuses,
            first_rss: None,
            drawn: false,
        }
    }

    pub fn draw(&mut self, elapsed: Duration, rss: u64) {
        let first = *self.first_rss.get_or_insert(rss);
        if !self.enabled {
            return;
        }
        let e = elapsed.as_secs_f64().min(self.duration);
        let filled = if self.duration > 0.0 {
            ((e / self.duration) * WIDTH as f64) as usize
        } else {
            WIDTH
        }
        .min(WIDTH);
        let n = self.censuses.load(Ordering::Relaxed);
        let line = format!(
            "\r\x1b[2Kwatching [{}{}] {:>3.0}/{:.0} s  RSS {} ({})  censuses {n}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            e,
            self.duration,
            units::bytes(rss),
            units::bytes_delta(rss as i64 - first as i64),
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.drawn = true;
    }

    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}
