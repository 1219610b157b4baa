//! The verdict and the one-line headline.

use super::{Finding, Observation, Verdict, secs};
use crate::analysis::classify::Signal;
use crate::render::units;

/// Fewer /proc samples than this cannot show a trend.
const MIN_SAMPLES: usize = 3;

pub fn verdict(
    obs: &Observation,
    signals: &[Signal],
    findings: &[Finding],
    notes: &mut Vec<String>,
) -> Verdict {
    if findings.iter().any(|f| !f.informational) {
        return Verdict::Leak;
    }
    if obs.samples.len() < MIN_SAMPLES {
        notes.push(format!(
            "Only {} /proc samples: too few to see a trend; watch longer (--duration).",
            obs.samples.len()
        ));
        return Verdict::Inconclusive;
    }
    let anon_grows = signals
        .iter()
        .any(|s| matches!(s, Signal::AnonGrowth { .. }));
    // Without two censuses, Python objects and native memory look alike.
    let compared = obs
        .python
        .as_ref()
        .is_some_and(|p| p.census_times.len() >= 2);
    if anon_grows && !compared {
        return Verdict::Inconclusive;
    }
    Verdict::NoLeak
}

fn span(obs: &Observation) -> f64 {
    match (obs.samples.first(), obs.samples.last()) {
        (Some(a), Some(b)) => (b.t - a.t).max(0.0),
        _ => 0.0,
    }
}

pub fn headline(obs: &Observation, verdict: Verdict, findings: &[Finding]) -> String {
    let leaks: Vec<&Finding> = findings.iter().filter(|f| !f.informational).collect();
    match verdict {
        Verdict::Leak => {
            let first = leaks.first().map(|f| f.summary.clone()).unwrap_or_default();
            let more = match leaks.len() {
                0 | 1 => String::new(),
                2 => " (and 1 more finding)".into(),
                n => format!(" (and {} more findings)", n - 1),
            };
            format!("Leak: {first}{more}")
        }
        Verdict::NoLeak => {
            let rss = match (obs.samples.first(), obs.samples.last()) {
                (Some(a), Some(b)) => {
                    let (x, y) = (a.status.vm_rss, b.status.vm_rss);
                    if x == y {
                        format!("RSS flat at {}", units::bytes(y))
                    } else {
                        format!("RSS {} → {}", units::bytes(x), units::bytes(y))
                    }
                }
                _ => "RSS unknown".into(),
            };
            match findings.iter().find(|f| f.informational) {
                Some(f) => format!("No leak ({rss} over {}): {}", secs(span(obs)), f.summary),
                None => format!(
                    "No leak: {rss} over {}, and nothing grows steadily",
                    secs(span(obs))
                ),
            }
        }
        Verdict::Inconclusive => {
            if obs.samples.len() < MIN_SAMPLES {
                "Inconclusive: watched too briefly to see a trend".into()
            } else {
                let why = obs
                    .skipped
                    .first()
                    .map(|s| format!(" ({})", s.reason))
                    .unwrap_or_default();
                format!(
                    "Inconclusive: anonymous memory grows, but the Python heap could not be inspected{why}"
                )
            }
        }
    }
}

/// Seconds until RSS doubles at `rate` bytes/s (None when not growing).
pub fn doubling_s(rss: u64, rate: f64) -> Option<f64> {
    (rate > 0.0 && rate.is_finite()).then(|| rss as f64 / rate)
}
