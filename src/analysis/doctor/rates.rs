//! Measured rates: the RSS slope over the steady part of the window (what
//! the findings' rates are checked against) and the resident pages of the
//! threads' stacks (what a thread leak really costs: a stack is reserved
//! at 8 MiB but only the pages a thread touched are resident).
//!
//! The slope is Theil–Sen (the median of the pairwise slopes): one sample
//! taken during a burst or a census's transient allocation moves a least
//! squares fit, not the median.

use serde::Serialize;

use super::Observation;
use crate::process::maps::Mapping;

/// Fewer points than this give no slope.
const MIN_POINTS: usize = 3;
/// Points kept for the pairwise slopes (evenly thinned beyond it).
const MAX_POINTS: usize = 400;
/// A guard page below a thread stack is at most this large (glibc's
/// default is one page; `pthread_attr_setguardsize` may ask for more).
const MAX_GUARD: u64 = 1 << 20;

/// The median of the pairwise slopes of `points` (t, value).
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = if points.len() > MAX_POINTS {
        let step = points.len() as f64 / MAX_POINTS as f64;
        (0..MAX_POINTS)
            .map(|i| points[((i as f64 * step) as usize).min(points.len() - 1)])
            .collect()
    } else {
        points.to_vec()
    };
    let mut slopes = Vec::with_capacity(pts.len() * pts.len() / 2);
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            let dt = b.0 - a.0;
            if dt > 1e-6 && dt.is_finite() && (b.1 - a.1).is_finite() {
                slopes.push((b.1 - a.1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let n = slopes.len();
    Some(if n % 2 == 1 {
        slopes[n / 2]
    } else {
        (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0
    })
}

/// RSS growth measured from /proc over the steady part of the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RssSlope {
    /// Theil–Sen slope of VmRSS, bytes per second.
    pub bytes_per_s: f64,
    /// The part of the window it was measured on (seconds on the samples'
    /// axis): the second half of the span after the agent's own memory was
    /// in place and before the closing reads.
    pub from_s: f64,
    pub to_s: f64,
    pub samples: usize,
}

/// The slope of `series` (t, value) over the second half of [from, to].
pub fn slope_second_half(series: &[(f64, u64)], from: f64, to: f64) -> Option<RssSlope> {
    let inside: Vec<(f64, u64)> = series
        .iter()
        .copied()
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    let (first, last) = (inside.first()?.0, inside.last()?.0);
    let mid = first + (last - first) / 2.0;
    let half: Vec<(f64, f64)> = inside
        .iter()
        .filter(|(t, _)| *t >= mid)
        .map(|(t, v)| (*t, *v as f64))
        .collect();
    if half.len() < MIN_POINTS {
        return None;
    }
    Some(RssSlope {
        bytes_per_s: theil_sen(&half)?,
        from_s: half[0].0,
        to_s: half[half.len() - 1].0,
        samples: half.len(),
    })
}

/// When growth can be judged: from when the agent's own memory was in
/// place until its closing reads began (to the end when there were none).
pub fn settled_window(obs: &Observation) -> (f64, f64) {
    let (settled, closing) = obs
        .python
        .as_ref()
        .map_or((0.0, 0.0), |p| (p.settled_t, p.closing_t));
    let to = if closing > settled {
        closing
    } else {
        f64::INFINITY
    };
    (settled, to)
}

/// The RSS slope of the observation (see [`RssSlope`]).
pub fn rss_slope(obs: &Observation) -> Option<RssSlope> {
    let (settled, to) = settled_window(obs);
    let series: Vec<(f64, u64)> = obs.samples.iter().map(|s| (s.t, s.status.vm_rss)).collect();
    // A window cut too short by a late settle falls back to all of it.
    slope_second_half(&series, settled, to).or_else(|| slope_second_half(&series, 0.0, to))
}

/// The threads' stacks at one moment, from smaps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StackSample {
    pub t: f64,
    /// Mappings that look like thread stacks.
    pub stacks: u32,
    /// Their resident bytes.
    pub rss: u64,
    /// Their reserved bytes.
    pub size: u64,
}

/// Thread stacks in a mapping list (with smaps figures): anonymous
/// private read-write mappings that either hold a thread's stack pointer
/// (`sps`: the new threads', from /proc/PID/task/TID/syscall) or lie right
/// above an adjacent no-access guard of at most [`MAX_GUARD`] — how glibc
/// (and musl) lay out a new thread's stack. Where the guard is an
/// `madvise` guard region inside the mapping (newer glibc), the stacks of
/// consecutive threads merge into one mapping: the stack pointers still
/// find it. The main thread's `[stack]` is not counted (it is not a new
/// thread's), and a malloc arena's reserve lies above its heap, not below.
pub fn thread_stacks(maps: &[Mapping], sps: &[u64], t: f64) -> StackSample {
    let mut out = StackSample {
        t,
        ..Default::default()
    };
    for (i, m) in maps.iter().enumerate() {
        if is_thread_stack(maps, i, sps) {
            out.stacks += 1;
            out.rss = out.rss.saturating_add(m.stats.rss);
            out.size = out.size.saturating_add(m.size());
        }
    }
    out
}

/// Whether `maps[i]` holds new threads' stacks (see [`thread_stacks`]).
pub fn is_thread_stack(maps: &[Mapping], i: usize, sps: &[u64]) -> bool {
    let Some(m) = maps.get(i) else {
        return false;
    };
    let stack_like =
        m.is_anonymous() && m.readable() && m.writable() && !m.executable() && !m.shared();
    if !stack_like {
        return false;
    }
    let guarded = i > 0 && {
        let g = &maps[i - 1];
        g.end == m.start && g.no_access() && g.is_anonymous() && g.size() <= MAX_GUARD
    };
    guarded || sps.iter().any(|&sp| sp >= m.start && sp < m.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let mut pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 1000.0 * i as f64)).collect();
        pts[7].1 = 1e9;
        let s = theil_sen(&pts).unwrap();
        assert!((s - 1000.0).abs() < 1e-6, "{s}");
        assert_eq!(theil_sen(&[(1.0, 5.0)]), None);
    }

    #[test]
    fn slope_over_the_second_half_only() {
        // Warm-up jump in the first half, steady 2 KiB/s after.
        let series: Vec<(f64, u64)> = (0..40)
            .map(|i| {
                let t = i as f64 * 0.25;
                let v = if t < 3.0 { 1 << 20 } else { 5 << 20 } + (t * 2048.0) as u64;
                (t, v)
            })
            .collect();
        let s = slope_second_half(&series, 0.0, f64::INFINITY).unwrap();
        assert!((s.bytes_per_s - 2048.0).abs() < 64.0, "{s:?}");
        assert!(s.from_s >= 4.8 && s.to_s > 9.0, "{s:?}");
        assert!(slope_second_half(&series[..3], 0.0, 10.0).is_none());
    }

    fn map(start: u64, end: u64, perms: &[u8; 4], rss: u64) -> Mapping {
        let mut m = crate::process::maps::parse_maps(
            format!(
                "{start:x}-{end:x} {} 00000000 00:00 0\n",
                std::str::from_utf8(perms).unwrap()
            )
            .as_bytes(),
        )
        .remove(0);
        m.stats.rss = rss;
        m
    }

    #[test]
    fn stacks_are_rw_above_a_small_guard() {
        let maps = vec![
            // Two thread stacks, adjacent.
            map(0x1000_0000, 0x1000_1000, b"---p", 0),
            map(0x1000_1000, 0x1080_1000, b"rw-p", 16 << 10),
            map(0x1080_1000, 0x1080_2000, b"---p", 0),
            map(0x1080_2000, 0x1100_2000, b"rw-p", 20 << 10),
            // A malloc arena: heap, then its reserve (no guard below).
            map(0x2000_0000, 0x2002_1000, b"rw-p", 132 << 10),
            map(0x2002_1000, 0x2400_0000, b"---p", 0),
            // The next arena's heap sits above a large reserve: not a stack.
            map(0x2400_0000, 0x2402_1000, b"rw-p", 100 << 10),
        ];
        let s = thread_stacks(&maps, &[], 1.5);
        assert_eq!(s.stacks, 2);
        assert_eq!(s.rss, 36 << 10);
        assert_eq!(s.size, 16 << 20);
        assert_eq!(s.t, 1.5);
    }

    #[test]
    fn merged_stacks_are_found_by_their_stack_pointers() {
        // glibc with madvise guard regions: three 8 MiB stacks in one
        // mapping, no PROT_NONE guard; an arena heap next to it.
        let maps = vec![
            map(0x1000_0000, 0x1180_0000, b"rw-p", 60 << 10),
            map(0x2000_0000, 0x2002_1000, b"rw-p", 132 << 10),
            map(0x2002_1000, 0x2400_0000, b"---p", 0),
        ];
        let sps = [0x107f_f000, 0x10ff_f000, 0x117f_f000];
        let s = thread_stacks(&maps, &sps, 2.0);
        assert_eq!((s.stacks, s.rss, s.size), (1, 60 << 10, 24 << 20));
        assert_eq!(thread_stacks(&maps, &[], 2.0).stacks, 0);
    }
}
