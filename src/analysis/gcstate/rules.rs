//! The rules that turn a [`GcReport`] into findings, and the wording
//! helpers they share.

use super::{Finding, GarbageReason, GcReport, Severity};
use crate::units::thousands;

fn num(n: u64) -> String {
    thousands(i64::try_from(n).unwrap_or(i64::MAX))
}

fn finding(kind: &str, severity: Severity, message: String) -> Finding {
    Finding {
        kind: kind.into(),
        severity,
        message,
    }
}

fn join_names(names: &[String], max: usize) -> String {
    let mut s = names
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        s.push_str(&format!(" and {} more", names.len() - max));
    }
    s
}

fn fmt_secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

fn gen0(v: &[i64]) -> i64 {
    v.first().copied().unwrap_or(0)
}

fn count_story(r: &GcReport) -> String {
    let (a, b) = (gen0(&r.count), gen0(&r.count_after));
    if b > a {
        format!(
            "the gen-0 count went {a} → {b} in {} and nothing resets it",
            fmt_secs(r.interval_s)
        )
    } else {
        format!("gen-0 count {a} → {b} in {}", fmt_secs(r.interval_s))
    }
}

/// The rules. Ordered: problems first, then warnings, then notes.
pub fn findings(r: &GcReport, python_major: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    let threshold0 = gen0(&r.thresholds);
    let (c0, c1) = (gen0(&r.count), gen0(&r.count_after));
    if !r.enabled || !r.enabled_after {
        out.push(finding(
            "collector_disabled",
            Severity::Problem,
            format!(
                "Automatic garbage collection is OFF (gc.disable() was called): reference cycles \
                 are never freed unless something calls gc.collect(); {}.",
                count_story(r)
            ),
        ));
    } else if threshold0 == 0 {
        out.push(finding(
            "threshold_zero",
            Severity::Problem,
            format!(
                "gc.set_threshold(0) turned automatic collection off: reference cycles are never \
                 freed unless something calls gc.collect(); {}.",
                count_story(r)
            ),
        ));
    } else if c0 > threshold0.saturating_mul(4) && c1 > c0 {
        // 3.13+ counts work differently from 2.7-3.12, but a gen-0 count far
        // past its threshold and still rising means no young collection ran.
        out.push(finding(
            "collector_stalled",
            Severity::Warning,
            format!(
                "The collector is enabled but is not running: {} (threshold {threshold0}). \
                 A gc callback or a collection stuck in another thread?",
                count_story(r)
            ),
        ));
    }
    if r.saveall {
        out.push(finding(
            "saveall",
            Severity::Problem,
            "gc.DEBUG_SAVEALL is set: every unreachable object the collector finds is appended \
             to gc.garbage instead of being freed, so every reference cycle leaks. \
             Fix: gc.set_debug(0), then del gc.garbage[:]."
                .into(),
        ));
    }
    let names_for = |reason: GarbageReason| -> (u64, Vec<String>) {
        let mut n = 0;
        let mut names = Vec::new();
        for t in r.garbage.by_type.iter().filter(|t| t.reason == reason) {
            n += t.raw.count;
            names.push(t.raw.type_name.clone());
        }
        (n, names)
    };
    let (n, names) = names_for(GarbageReason::DelCycle);
    if n > 0 {
        let cyc: u32 = r
            .garbage
            .by_type
            .iter()
            .filter(|t| t.reason == GarbageReason::DelCycle)
            .map(|t| t.raw.in_cycle)
            .sum();
        let seen = if cyc > 0 {
            format!(" (sampled instances found in a cycle: {cyc})")
        } else {
            String::new()
        };
        out.push(finding(
            "del_cycles",
            Severity::Problem,
            format!(
                "{} objects in gc.garbage are instances of classes that define __del__, caught in \
                 reference cycles: {}{seen}. Python {python_major} cannot collect such cycles (it \
                 cannot pick an order for the finalizers); they and everything they reference \
                 stay alive forever. Break the cycle (weakref, or clear the link when done) or \
                 drop __del__ (Python 3.4+ collects these, PEP 442).",
                num(n),
                join_names(&names, 5)
            ),
        ));
    }
    let (n, names) = names_for(GarbageReason::GeneratorFinally);
    if n > 0 {
        out.push(finding(
            "generator_cycles",
            Severity::Problem,
            format!(
                "{} generators in gc.garbage: a generator suspended inside try/finally or with, \
                 caught in a cycle, cannot be collected on Python 2 ({}). Close them (.close()) \
                 when done.",
                num(n),
                join_names(&names, 5)
            ),
        ));
    }
    let (n, names) = names_for(GarbageReason::LegacyTpDel);
    if n > 0 {
        out.push(finding(
            "legacy_tp_del",
            Severity::Problem,
            format!(
                "{} objects in gc.garbage are of C types with a legacy tp_del finalizer, caught \
                 in cycles: {}. The collector cannot free these (only tp_finalize is \
                 cycle-safe); the extension that defines them needs fixing, or the cycle breaking.",
                num(n),
                join_names(&names, 5)
            ),
        ));
    }
    if r.garbage.growth > 0 {
        out.push(finding(
            "garbage_growing",
            Severity::Problem,
            format!(
                "gc.garbage grew by {} in {} (now {}): whatever the collector puts there is never \
                 freed.",
                thousands(r.garbage.growth),
                fmt_secs(r.interval_s),
                num(r.garbage.len_after)
            ),
        ));
    } else if r.garbage.len > 0 {
        let (n, names) = names_for(GarbageReason::Unexplained);
        let extra = if n > 0 && !r.saveall {
            format!(
                " {} of them ({}) are not there because of the collector: code appended them, \
                 or DEBUG_SAVEALL was on earlier.",
                num(n),
                join_names(&names, 5)
            )
        } else {
            String::new()
        };
        out.push(finding(
            "garbage_present",
            Severity::Warning,
            format!(
                "gc.garbage holds {} objects (not growing in {}); they stay alive until \
                 removed from the list.{extra}",
                num(r.garbage.len),
                fmt_secs(r.interval_s)
            ),
        ));
    }
    if let Some(stats) = &r.stats {
        let unc: u64 = stats.iter().map(|s| s.uncollectable).sum();
        let explained = out.iter().any(|f| {
            matches!(
                f.kind.as_str(),
                "del_cycles" | "generator_cycles" | "legacy_tp_del"
            )
        });
        if unc > 0 && !explained {
            out.push(finding(
                "uncollectable",
                Severity::Warning,
                format!(
                    "gc.get_stats() counts {} uncollectable objects since start (objects the \
                     collector found unreachable but had to put in gc.garbage).",
                    num(unc)
                ),
            ));
        }
    }
    let noisy: Vec<String> = r
        .debug_flags
        .iter()
        .filter(|f| f.as_str() != "DEBUG_SAVEALL")
        .cloned()
        .collect();
    if !noisy.is_empty() {
        out.push(finding(
            "debug_output",
            Severity::Info,
            format!(
                "gc debug flags {} are set: every collection prints to stderr (slow, noisy).",
                noisy.join(" | ")
            ),
        ));
    }
    out.sort_by_key(|f| f.severity);
    out
}
