//! `memsleuth exporter`: a Prometheus exporter for every Python process on
//! the host. One thread samples /proc every `--interval` and judges each
//! process's window ([`crate::analysis::watch`]); the HTTP server encodes
//! the last pass on each scrape ([`crate::render::prometheus`]). Nothing
//! is ever injected: the heap part (`--heap N`) reads memory from outside,
//! in its own thread, within a time budget.

mod cgroup;
mod heap;
mod procs;
mod server;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::CmdResult;
use crate::cli::ExporterArgs;
use crate::render::prometheus::fleet::{ProcessMetrics, SelfMetrics};

/// Every reason the error counter knows (all exported, zeros included).
pub const REASONS: [&str; 11] = [
    "process_exited",
    "permission_denied",
    "read_error",
    "heap_unsupported",
    "heap_error",
    "heap_timeout",
    "heap_torn",
    "http_bad_request",
    "http_timeout",
    "http_overload",
    "other",
];

/// What the sampler publishes and the server reads.
pub struct Shared {
    published: Mutex<Published>,
    errors: [AtomicU64; REASONS.len()],
    /// Watched processes that ended.
    exits: AtomicU64,
    interval: f64,
}

#[derive(Default)]
struct Published {
    procs: Arc<Vec<ProcessMetrics>>,
    scrape_s: f64,
    watched: usize,
    unreadable: usize,
    last_pass: Option<Instant>,
}

impl Shared {
    fn new(interval: f64) -> Shared {
        Shared {
            published: Mutex::new(Published::default()),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            exits: AtomicU64::new(0),
            interval,
        }
    }

    /// Counts one error.
    pub fn error(&self, reason: &str) {
        let i = REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len() - 1);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a watched process that ended.
    pub fn exited(&self) {
        self.exits.fetch_add(1, Ordering::Relaxed);
    }

    fn publish(&self, procs: Vec<ProcessMetrics>, scrape_s: f64, unreadable: usize) {
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        p.watched = procs.len();
        p.procs = Arc::new(procs);
        p.scrape_s = scrape_s;
        p.unreadable = unreadable;
        p.last_pass = Some(Instant::now());
    }

    pub fn snapshot(&self) -> (Arc<Vec<ProcessMetrics>>, SelfMetrics) {
        let p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let me = SelfMetrics {
            version: env!("CARGO_PKG_VERSION"),
            scrape_duration_s: p.scrape_s,
            errors: REASONS
                .iter()
                .zip(&self.errors)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            exits: self.exits.load(Ordering::Relaxed),
            watched: p.watched,
            unreadable: p.unreadable,
        };
        (p.procs.clone(), me)
    }

    /// Healthy while the sampler finished a pass within three intervals.
    pub fn health(&self) -> Result<(), String> {
        let p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        match p.last_pass {
            Some(t) if t.elapsed().as_secs_f64() <= 3.0 * self.interval + 5.0 => Ok(()),
            Some(t) => Err(format!(
                "the last sampling pass ended {:.0} s ago\n",
                t.elapsed().as_secs_f64()
            )),
            None => Err("no sampling pass has finished yet\n".into()),
        }
    }
}

/// A line in the exporter's log (stderr).
pub fn log(msg: &str) {
    eprintln!("memsleuth exporter: {msg}");
}

pub fn run(args: &ExporterArgs) -> CmdResult {
    let filter = match args.match_.as_deref().map(regex::Regex::new) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            eprintln!("memsleuth: --match is not a valid regular expression: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "another process listens there; stop it or pick another --listen address"
                    .to_string()
            } else {
                format!("{e}")
            };
            eprintln!("memsleuth: cannot listen on {}: {hint}.", args.listen);
            return Ok(ExitCode::from(1));
        }
    };
    let addr = listener
        .local_addr()
        .map_or(args.listen.clone(), |a| a.to_string());
    let shared = Arc::new(Shared::new(args.interval));
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || server::serve(listener, shared))?;
    }
    log(&format!(
        "serving http://{addr}/metrics, sampling every {} s{}{}",
        args.interval,
        filter
            .as_ref()
            .map(|r| format!(", processes matching /{r}/"))
            .unwrap_or_default(),
        if args.heap > 0 {
            format!(", top {} types per process", args.heap)
        } else {
            String::new()
        }
    ));

    let mut fleet = procs::Fleet::new(filter, args.heap, args.interval, shared.clone())?;
    let interval = Duration::from_secs_f64(args.interval);
    let mut next = Instant::now();
    loop {
        let started = Instant::now();
        let (metrics, unreadable) = fleet.pass();
        shared.publish(metrics, started.elapsed().as_secs_f64(), unreadable);
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Fell behind (a slow pass or a suspended machine): start afresh.
            next = now;
        }
    }
}
