//! The verdict and the one-line headline.

use super::rates::RssSlope;
use super::{Finding, Observation, Verdict, secs};
use crate::analysis::classify::{Signal, trend};
use crate::units;

/// RSS rise tolerated when Python objects could not be compared.
const UNCOMPARED_RSS_NOISE: u64 = 64 * 1024;

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
    // Python objects were not compared (no agent, or no second census):
    // "no leak" only if RSS did not rise at all after the agent settled.
    if !compared {
        let settled = obs.python.as_ref().map_or(0.0, |p| p.settled_t);
        let rss: Vec<(f64, u64)> = obs
            .samples
            .iter()
            .filter(|s| s.t >= settled)
            .map(|s| (s.t, s.status.vm_rss))
            .collect();
        if let Some((c, _)) = trend::rising(&rss, UNCOMPARED_RSS_NOISE) {
            notes.push(format!(
                "RSS kept rising ({}) while the Python heap could not be compared.",
                crate::units::bytes_delta(c.delta)
            ));
            return Verdict::Inconclusive;
        }
    }
    Verdict::NoLeak
}

fn span(obs: &Observation) -> f64 {
    match (obs.samples.first(), obs.samples.last()) {
        (Some(a), Some(b)) => (b.t - a.t).max(0.0),
        _ => 0.0,
    }
}

/// Sum of the leak findings' rates.
pub fn explained_rate(findings: &[Finding]) -> f64 {
    findings
        .iter()
        .filter(|f| !f.informational)
        .map(|f| f.rate_bytes_per_s.max(0.0))
        .filter(|r| r.is_finite())
        .sum()
}

/// "RSS grows +1.8 MiB/s (doubles in 21 s); the findings explain 95% of
/// it", when RSS measurably grows.
fn growth_clause(obs: &Observation, findings: &[Finding], slope: Option<&RssSlope>) -> String {
    let Some(s) = slope.filter(|s| s.bytes_per_s > 0.0 && s.bytes_per_s.is_finite()) else {
        return String::new();
    };
    let rss = obs.samples.last().map_or(0, |x| x.status.vm_rss);
    let doubles = doubling_s(rss, s.bytes_per_s)
        .map(|d| format!(" (doubles in {})", units::duration(d)))
        .unwrap_or_default();
    format!(
        ". RSS grows {}{doubles}; {}",
        units::rate(s.bytes_per_s),
        explained_words(explained_rate(findings), s.bytes_per_s)
    )
}

/// How the findings' rate sum compares with the RSS slope, in words:
/// "the findings explain 95% of it", or — when they add up to more than
/// RSS grew — that the allocators are refilling memory they already held.
pub fn explained_words(findings_rate: f64, slope: f64) -> String {
    let share = if slope > 0.0 {
        findings_rate / slope
    } else {
        0.0
    };
    if share > 1.5 {
        format!(
            "the findings add up to more ({}): the allocators are refilling memory they \
             already held, and RSS will follow once it is used up",
            units::rate(findings_rate)
        )
    } else {
        format!("the findings explain {:.0}% of it", share * 100.0)
    }
}

pub fn headline(
    obs: &Observation,
    verdict: Verdict,
    findings: &[Finding],
    slope: Option<&RssSlope>,
) -> String {
    let leaks: Vec<&Finding> = findings.iter().filter(|f| !f.informational).collect();
    match verdict {
        Verdict::Leak => {
            let first = leaks.first().map(|f| f.summary.clone()).unwrap_or_default();
            let more = match leaks.len() {
                0 | 1 => String::new(),
                2 => " (and 1 more finding)".into(),
                n => format!(" (and {} more findings)", n - 1),
            };
            let growth = growth_clause(obs, findings, slope);
            format!("Leak: {first}{more}{growth}")
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
                    "Inconclusive: memory grows, but the Python heap could not be compared{why}"
                )
            }
        }
    }
}

/// Seconds until RSS doubles at `rate` bytes/s (None when not growing).
pub fn doubling_s(rss: u64, rate: f64) -> Option<f64> {
    (rate > 0.0 && rate.is_finite()).then(|| rss as f64 / rate)
}
