//! `memsleuth top`: top's memory columns and more, one line per interval,
//! each value with its change since start.

use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{CmdResult, Out};
use crate::cli::TopArgs;
use crate::process::System;
use crate::process::maps::MemStats;
use crate::process::sample::{Sample, Want};
use crate::render::units::{bytes_delta_short, bytes_short, delta, duration};

/// The values of one line, all in bytes except the counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Values {
    pub virt: u64,
    pub res: u64,
    pub shr: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub swap: u64,
    pub pss_anon: u64,
    pub pss_file: u64,
    pub pss_shmem: u64,
    pub threads: u64,
    pub fds: u64,
    pub maps: u64,
}

/// Signed differences of [`Values`]; also used, divided by time, for rates.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Deltas {
    pub virt: f64,
    pub res: f64,
    pub shr: f64,
    pub rss_anon: f64,
    pub rss_file: f64,
    pub rss_shmem: f64,
    pub swap: f64,
    pub pss_anon: f64,
    pub pss_file: f64,
    pub pss_shmem: f64,
    pub threads: f64,
    pub fds: f64,
    pub maps: f64,
}

impl Values {
    fn from_sample(s: &Sample, page: u64, rollup: &MemStats) -> Values {
        Values {
            virt: s.statm.size * page,
            res: s.statm.resident * page,
            shr: s.statm.shared * page,
            rss_anon: s.status.rss_anon,
            rss_file: s.status.rss_file,
            rss_shmem: s.status.rss_shmem,
            swap: s.status.vm_swap,
            pss_anon: rollup.pss_anon,
            pss_file: rollup.pss_file,
            pss_shmem: rollup.pss_shmem,
            threads: s.threads as u64,
            fds: s.fd_count.unwrap_or(0),
            maps: s.map_count.unwrap_or(0) as u64,
        }
    }

    fn minus(&self, o: &Values, scale: f64) -> Deltas {
        let d = |a: u64, b: u64| delta(a, b) as f64 * scale;
        Deltas {
            virt: d(self.virt, o.virt),
            res: d(self.res, o.res),
            shr: d(self.shr, o.shr),
            rss_anon: d(self.rss_anon, o.rss_anon),
            rss_file: d(self.rss_file, o.rss_file),
            rss_shmem: d(self.rss_shmem, o.rss_shmem),
            swap: d(self.swap, o.swap),
            pss_anon: d(self.pss_anon, o.pss_anon),
            pss_file: d(self.pss_file, o.pss_file),
            pss_shmem: d(self.pss_shmem, o.pss_shmem),
            threads: d(self.threads, o.threads),
            fds: d(self.fds, o.fds),
            maps: d(self.maps, o.maps),
        }
    }
}

/// One NDJSON line of `top --json`.
#[derive(Debug, Serialize)]
struct JsonSample {
    schema: u32,
    pid: u32,
    t: f64,
    mem_percent: f64,
    /// Whether the PSS columns were read for this sample (they are re-read
    /// less often: each read walks the page tables).
    pss_fresh: bool,
    values: Values,
    delta: Deltas,
    rate_per_s: Deltas,
}

pub fn run(args: &TopArgs) -> CmdResult {
    let proc = super::open(args.pid)?;
    let sys = System::read();
    let mut out = Out::new();
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(args.interval);
    let mut first: Option<Values> = None;
    let mut rollup = MemStats::default();
    let mut next_rollup = t0;
    let mut n: u64 = 0;
    loop {
        let now = Instant::now();
        // smaps_rollup costs ~4 ms per resident GiB: read it at most every
        // interval, and no more than ~5% of the time.
        let want_rollup = now >= next_rollup;
        let started = Instant::now();
        let sample = Sample::collect(
            &proc,
            t0,
            Want {
                rollup: want_rollup,
                maps: true,
                fd_kinds: false,
            },
        )?;
        if let Some(r) = sample.rollup {
            rollup = r;
            let cost = started.elapsed();
            next_rollup = now + interval.max(cost * 20);
        }
        let values = Values::from_sample(&sample, sys.page_size, &rollup);
        let base = *first.get_or_insert(values);
        let t = sample.t;
        let deltas = values.minus(&base, 1.0);
        let rates = if t > 0.0 {
            values.minus(&base, 1.0 / t)
        } else {
            Deltas::default()
        };
        let mem_percent = if sys.mem_total > 0 {
            values.res as f64 * 100.0 / sys.mem_total as f64
        } else {
            0.0
        };
        if args.json {
            out.json(
                &JsonSample {
                    schema: 1,
                    pid: proc.pid,
                    t,
                    mem_percent,
                    pss_fresh: want_rollup,
                    values,
                    delta: deltas,
                    rate_per_s: rates,
                },
                true,
            )?;
        } else {
            if n.is_multiple_of(20) {
                if n == 0 {
                    out.line(&format!("{}  {}", proc.pid, proc.cmdline()))?;
                }
                out.line(HEADER)?;
            }
            out.line(&value_line(t, mem_percent, &values))?;
            if n > 0 {
                out.line(&delta_line(&deltas, "Δ"))?;
            }
        }
        out.flush()?;
        n += 1;
        if args.count.is_some_and(|c| n >= c) {
            break;
        }
        let next = t0 + interval.mul_f64(n as f64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        if !proc.path("").exists() {
            // Exited between samples: say so once and stop like top would.
            return Err(crate::process::ProcError::Exited { pid: proc.pid }.into());
        }
    }
    if !args.json
        && n > 1
        && let Some(base) = first
    {
        let last = Sample::collect(
            &proc,
            t0,
            Want {
                rollup: false,
                maps: true,
                fd_kinds: false,
            },
        )?;
        let values = Values::from_sample(&last, sys.page_size, &rollup);
        if last.t > 0.0 {
            out.line(&delta_line(&values.minus(&base, 1.0 / last.t), "/s"))?;
            out.line(&format!("(rates per second over {})", duration(last.t)))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

const HEADER: &str = "    TIME    VIRT     RES     SHR  %MEM RssAnon RssFile RssShm    SWAP PssAnon PssFile PssShm  THR   FDS  MAPS";

fn value_line(t: f64, mem: f64, v: &Values) -> String {
    format!(
        "{:>8} {:>7} {:>7} {:>7} {:>5.1} {:>7} {:>7} {:>6} {:>7} {:>7} {:>7} {:>6} {:>4} {:>5} {:>5}",
        duration(t),
        bytes_short(v.virt),
        bytes_short(v.res),
        bytes_short(v.shr),
        mem,
        bytes_short(v.rss_anon),
        bytes_short(v.rss_file),
        bytes_short(v.rss_shmem),
        bytes_short(v.swap),
        bytes_short(v.pss_anon),
        bytes_short(v.pss_file),
        bytes_short(v.pss_shmem),
        v.threads,
        v.fds,
        v.maps
    )
}

fn delta_line(d: &Deltas, label: &str) -> String {
    let b = |x: f64| bytes_delta_short(x.round() as i64);
    let c = |x: f64| {
        let r = (x * 10.0).round() / 10.0;
        if r == 0.0 {
            "0".to_string()
        } else if r.fract() == 0.0 {
            format!("{r:+.0}")
        } else {
            format!("{r:+.1}")
        }
    };
    format!(
        "{:>8} {:>7} {:>7} {:>7} {:>5} {:>7} {:>7} {:>6} {:>7} {:>7} {:>7} {:>6} {:>4} {:>5} {:>5}",
        label,
        b(d.virt),
        b(d.res),
        b(d.shr),
        "",
        b(d.rss_anon),
        b(d.rss_file),
        b(d.rss_shmem),
        b(d.swap),
        b(d.pss_anon),
        b(d.pss_file),
        b(d.pss_shmem),
        c(d.threads),
        c(d.fds),
        c(d.maps)
    )
}
