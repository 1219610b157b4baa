//! Before/after changes and the steadiness rule for one counter over a
//! series of samples.
//!
//! All arithmetic is done in i128/f64 so that garbage counters (u64::MAX from
//! a hostile or broken procfs) can neither overflow nor panic.

use serde::Serialize;

/// How one counter changed over a window: first and last value, the signed
/// difference and its rate (units per second; 0 when the window has no
/// usable duration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    pub before: u64,
    pub after: u64,
    pub delta: i64,
    pub rate_per_s: f64,
}

impl Change {
    pub fn new(before: u64, after: u64, seconds: f64) -> Change {
        let d = after as i128 - before as i128;
        let delta = d.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let rate_per_s = if seconds > 0.0 && seconds.is_finite() {
            d as f64 / seconds
        } else {
            0.0
        };
        Change {
            before,
            after,
            delta,
            rate_per_s,
        }
    }

    /// The change from the first to the last point of a series.
    pub fn of(points: &[(f64, u64)]) -> Option<Change> {
        let (&(t0, v0), &(t1, v1)) = (points.first()?, points.last()?);
        Some(Change::new(v0, v1, span(t0, t1)))
    }

    pub fn rose(&self) -> bool {
        self.delta > 0
    }
}

/// The stretch of samples a signal was judged on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub seconds: f64,
    pub samples: usize,
    /// The rise was seen to be steady: at least 3 samples, at least two
    /// thirds of the steps non-decreasing, and still rising in the second
    /// half of the window. Always false with only 2 samples (no way to tell).
    pub steady: bool,
}

/// Seconds between two sample times; 0 when the clock is unusable.
pub fn span(t0: f64, t1: f64) -> f64 {
    let s = t1 - t0;
    if s.is_finite() && s > 0.0 { s } else { 0.0 }
}

/// The growth rule shared by every signal. `points` are (t, value) in time
/// order. Returns the change and window when the value rose by at least
/// `min_delta` (and by at least 1) from the first to the last point and, with
/// 3 or more points, is still rising in the later part of the window:
///
/// * the "late part" runs from the first sample at or after the window's
///   midpoint (by time; by index when times are unusable) to the last
///   sample, and never starts at the first sample or ends before the last;
/// * the late part must rise, at no less than a quarter of the average rate
///   of the whole window. Growth that stopped (warm-up, a one-off burst) is
///   therefore not reported at all;
/// * when it still rises, `steady` says whether at least two thirds of the
///   steps were non-decreasing; an irregular but continuing rise is reported
///   with `steady: false`.
pub fn rising(points: &[(f64, u64)], min_delta: u64) -> Option<(Change, Window)> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let (t0, v0) = points[0];
    let (tn, vn) = points[n - 1];
    let total = vn as i128 - v0 as i128;
    if total < min_delta.max(1) as i128 {
        return None;
    }
    let seconds = span(t0, tn);
    let mut steady = false;
    if n >= 3 {
        let mid = late_start(points, seconds);
        let (tm, vm) = points[mid];
        let late = vn as i128 - vm as i128;
        // Time when usable, else sample index, as the measure of duration.
        let (whole, part) = if seconds > 0.0 {
            (seconds, span(tm, tn))
        } else {
            ((n - 1) as f64, (n - 1 - mid) as f64)
        };
        // late/part >= (total/whole) / 4, without dividing.
        if late <= 0 || (late as f64) * whole * 4.0 < (total as f64) * part {
            return None;
        }
        let up = points.windows(2).filter(|w| w[1].1 >= w[0].1).count();
        steady = up * 3 >= (n - 1) * 2;
    }
    Some((
        Change::new(v0, vn, seconds),
        Window {
            seconds,
            samples: n,
            steady,
        },
    ))
}

/// Index where the late part of the window starts, in 1..=n-2.
fn late_start(points: &[(f64, u64)], seconds: f64) -> usize {
    let n = points.len();
    let by_time = if seconds > 0.0 {
        let half = points[0].0 + seconds / 2.0;
        points.iter().position(|&(t, _)| t >= half)
    } else {
        None
    };
    by_time.unwrap_or(n / 2).clamp(1, n - 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[u64]) -> Vec<(f64, u64)> {
        v.iter().enumerate().map(|(i, &v)| (i as f64, v)).collect()
    }

    #[test]
    fn linear_rise_is_steady() {
        let (c, w) = rising(&pts(&[10, 20, 30, 40]), 3).unwrap();
        assert_eq!((c.before, c.after, c.delta), (10, 40, 30));
        assert_eq!(c.rate_per_s, 10.0);
        assert!(w.steady);
        assert_eq!(w.samples, 4);
    }

    #[test]
    fn growth_that_stopped_is_not_reported() {
        assert!(rising(&pts(&[10, 40, 40, 40]), 3).is_none());
        assert!(rising(&pts(&[10, 40, 41]), 3).is_none()); // late rate 1 < 30/4
        assert!(rising(&pts(&[10, 40, 45, 40]), 3).is_none()); // late part falls
    }

    #[test]
    fn jumpy_but_continuing_rise_is_not_steady() {
        let (_, w) = rising(&pts(&[10, 30, 20, 40, 35, 60]), 3).unwrap();
        assert!(!w.steady);
    }

    #[test]
    fn two_samples_are_never_steady_and_floor_applies() {
        let (_, w) = rising(&pts(&[1, 5]), 3).unwrap();
        assert!(!w.steady);
        assert!(rising(&pts(&[1, 3]), 3).is_none());
        assert!(rising(&pts(&[5, 5]), 0).is_none());
        assert!(rising(&pts(&[5]), 0).is_none());
    }

    #[test]
    fn unusable_times_fall_back_to_indexes_and_rate_zero() {
        let p: Vec<(f64, u64)> = [0u64, 10, 20].iter().map(|&v| (f64::NAN, v)).collect();
        let (c, w) = rising(&p, 1).unwrap();
        assert_eq!(c.rate_per_s, 0.0);
        assert_eq!(w.seconds, 0.0);
        assert!(w.steady);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let c = Change::new(0, u64::MAX, 1.0);
        assert_eq!(c.delta, i64::MAX);
        let c = Change::new(u64::MAX, 0, 1.0);
        assert_eq!(c.delta, i64::MIN);
        assert!(rising(&pts(&[0, u64::MAX / 2, u64::MAX]), u64::MAX).is_some());
        assert!(rising(&pts(&[u64::MAX, 0, u64::MAX]), 1).is_none());
    }
}
