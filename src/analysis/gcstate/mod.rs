//! `memsleuth gc`: what the agent's `gc_state` / `gc_sample` / `gc_collect`
//! ops report, and the rules that turn two reads of it into findings (the
//! collector is off, DEBUG_SAVEALL, a growing `gc.garbage` and why its
//! objects are there). Pure: unit-tested on hand-made and recorded data.

use serde::{Deserialize, Serialize};

mod rules;

pub use rules::findings;

/// `gc.get_stats()` for one generation (3.4+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GenStats {
    pub collections: u64,
    pub collected: u64,
    pub uncollectable: u64,
}

/// The cheap counters (`gc_sample`; also part of `gc_state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GcBasics {
    pub enabled: bool,
    pub thresholds: Vec<i64>,
    pub count: Vec<i64>,
    pub debug: u64,
    pub debug_flags: Vec<String>,
    pub saveall: bool,
    /// None before 3.4.
    pub stats: Option<Vec<GenStats>>,
    /// None before 3.7.
    pub freeze_count: Option<u64>,
    /// `len(gc.callbacks)`; None on 2.7.
    pub callbacks: Option<u64>,
    pub garbage_len: u64,
    /// The target's time.time() when read.
    #[serde(default)]
    pub time: f64,
}

/// One class among the objects in `gc.garbage`, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GarbageTypeRaw {
    /// Qualified name (`module.Qualname`; builtins bare).
    #[serde(rename = "type")]
    pub type_name: String,
    pub count: u64,
    /// The class or a base defines `__del__`.
    pub has_del: bool,
    /// The type's legacy `tp_del` slot is set (None: could not be read).
    pub tp_del: Option<bool>,
    pub generator: bool,
    pub heap_type: bool,
    /// Instances checked for a reference cycle back to themselves...
    pub sampled: u32,
    /// ...and how many were found in one.
    pub in_cycle: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GarbageScan {
    pub len: u64,
    /// Entries looked at (the scan stops at a million).
    pub scanned: u64,
    /// Distinct classes seen.
    pub types: u64,
    /// Objects of the classes not listed in `by_type`.
    pub other: u64,
    pub by_type: Vec<GarbageTypeRaw>,
}

/// What `gc_state` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GcStateRaw {
    #[serde(flatten)]
    pub basics: GcBasics,
    pub garbage: GarbageScan,
    /// `len(gc.get_objects())`.
    pub gc_objects: u64,
    /// ctypes had to be loaded to read tp_del slots.
    #[serde(default)]
    pub ctypes_loaded_now: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TypeDelta {
    #[serde(rename = "type")]
    pub type_name: String,
    pub delta: i64,
}

/// What `gc_collect` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CollectRaw {
    /// gc.collect()'s return value: unreachable objects found.
    pub returned: i64,
    pub seconds: f64,
    pub objects_before: u64,
    pub objects_after: u64,
    pub garbage_before: u64,
    pub garbage_after: u64,
    /// Types whose gc-tracked count fell most.
    pub freed: Vec<TypeDelta>,
    #[serde(default)]
    pub counts_after: Vec<i64>,
}

/// Why objects of a class sit in `gc.garbage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GarbageReason {
    /// Python 2: an instance whose class defines `__del__`, in a cycle.
    DelCycle,
    /// Python 2: a generator suspended inside try/finally (or with).
    GeneratorFinally,
    /// A C type with the legacy `tp_del` finalizer, in a cycle.
    LegacyTpDel,
    /// `gc.DEBUG_SAVEALL`: every unreachable object is kept.
    Saveall,
    /// None of the above: code appended it, or DEBUG_SAVEALL was on earlier.
    Unexplained,
}

impl GarbageReason {
    pub fn describe(self) -> &'static str {
        match self {
            GarbageReason::DelCycle => "__del__ in a reference cycle (uncollectable on Python 2)",
            GarbageReason::GeneratorFinally => {
                "generator suspended in try/finally, in a cycle (uncollectable on Python 2)"
            }
            GarbageReason::LegacyTpDel => "C type with a legacy tp_del finalizer, in a cycle",
            GarbageReason::Saveall => "kept by DEBUG_SAVEALL instead of being freed",
            GarbageReason::Unexplained => {
                "not the collector's doing: appended by code, or saved by an earlier DEBUG_SAVEALL"
            }
        }
    }
}

/// The rule, given the facts the agent found about the class.
pub fn garbage_reason(t: &GarbageTypeRaw, python_major: u32, saveall: bool) -> GarbageReason {
    if python_major == 2 {
        if t.has_del {
            return GarbageReason::DelCycle;
        }
        if t.generator {
            return GarbageReason::GeneratorFinally;
        }
    } else if t.tp_del == Some(true) {
        // 3.4+: only a legacy tp_del makes a cycle uncollectable (PEP 442).
        return GarbageReason::LegacyTpDel;
    }
    if saveall {
        GarbageReason::Saveall
    } else {
        GarbageReason::Unexplained
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GarbageType {
    #[serde(flatten)]
    pub raw: GarbageTypeRaw,
    pub reason: GarbageReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GarbageReport {
    /// `len(gc.garbage)` at the first read...
    pub len: u64,
    /// ...and `interval_s` later.
    pub len_after: u64,
    pub growth: i64,
    pub scanned: u64,
    pub types: u64,
    pub other: u64,
    pub by_type: Vec<GarbageType>,
}

/// What `--collect` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectReport {
    pub returned: i64,
    pub seconds: f64,
    pub objects_before: u64,
    pub objects_after: u64,
    pub garbage_before: u64,
    pub garbage_after: u64,
    /// VmRSS (bytes) right before and after, from /proc.
    pub rss_before: u64,
    pub rss_after: u64,
    pub freed: Vec<TypeDelta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Memory is (or will be) held because of this.
    Problem,
    /// Worth a look.
    Warning,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identifier: collector_disabled, threshold_zero,
    /// collector_stalled, saveall, garbage_growing, garbage_present,
    /// del_cycles, generator_cycles, legacy_tp_del, uncollectable,
    /// debug_output.
    pub kind: String,
    pub severity: Severity,
    pub message: String,
}

/// Everything `memsleuth gc --json` prints (schema 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    pub schema: u32,
    pub pid: u32,
    /// e.g. "3.11.7".
    pub python: String,
    pub attach_s: f64,
    /// Time the session kept the target in our Python code.
    pub gil_s: f64,
    pub enabled: bool,
    /// Enabled again at the second read (normally the same).
    pub enabled_after: bool,
    pub thresholds: Vec<i64>,
    /// `gc.get_count()` at the first read and `interval_s` later.
    pub count: Vec<i64>,
    pub count_after: Vec<i64>,
    pub interval_s: f64,
    pub debug: u64,
    pub debug_flags: Vec<String>,
    pub saveall: bool,
    pub stats: Option<Vec<GenStats>>,
    pub stats_after: Option<Vec<GenStats>>,
    pub freeze_count: Option<u64>,
    pub callbacks: Option<u64>,
    pub gc_objects: u64,
    /// memsleuth loaded ctypes into the target (to read tp_del slots): its C
    /// parts stay loaded after detach.
    #[serde(default)]
    pub ctypes_loaded_now: bool,
    pub garbage: GarbageReport,
    pub collect: Option<CollectReport>,
    pub findings: Vec<Finding>,
    /// "agent" (read by the injected agent) or "memory" (read from outside).
    #[serde(default = "agent_source")]
    pub source: String,
    /// From memory: how long the target's threads were stopped.
    #[serde(default)]
    pub paused_s: f64,
    /// From memory: what could not be read, one sentence each.
    #[serde(default)]
    pub warnings: Vec<String>,
}

fn agent_source() -> String {
    "agent".into()
}

/// Who is asking and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub pid: u32,
    pub version: (u32, u32, u32),
    pub attach_s: f64,
    pub gil_s: f64,
}

/// Combines the two reads (and an optional collection) into the report,
/// with its findings.
pub fn build_report(
    meta: &Meta,
    first: GcStateRaw,
    second: &GcBasics,
    interval_s: f64,
    collect: Option<CollectReport>,
) -> GcReport {
    let major = meta.version.0;
    let b = first.basics;
    let saveall = b.saveall || second.saveall;
    let by_type: Vec<GarbageType> = first
        .garbage
        .by_type
        .into_iter()
        .map(|raw| {
            let reason = garbage_reason(&raw, major, saveall);
            GarbageType { raw, reason }
        })
        .collect();
    let growth = second.garbage_len as i64 - b.garbage_len as i64;
    let garbage = GarbageReport {
        len: b.garbage_len,
        len_after: second.garbage_len,
        growth,
        scanned: first.garbage.scanned,
        types: first.garbage.types,
        other: first.garbage.other,
        by_type,
    };
    let mut report = GcReport {
        schema: 1,
        pid: meta.pid,
        python: format!("{}.{}.{}", meta.version.0, meta.version.1, meta.version.2),
        attach_s: meta.attach_s,
        gil_s: meta.gil_s,
        enabled: b.enabled,
        enabled_after: second.enabled,
        thresholds: b.thresholds,
        count: b.count,
        count_after: second.count.clone(),
        interval_s,
        debug: b.debug,
        debug_flags: b.debug_flags,
        saveall,
        stats: b.stats,
        stats_after: second.stats.clone(),
        freeze_count: b.freeze_count,
        callbacks: b.callbacks,
        gc_objects: first.gc_objects,
        ctypes_loaded_now: first.ctypes_loaded_now,
        garbage,
        collect,
        findings: Vec::new(),
        source: agent_source(),
        paused_s: 0.0,
        warnings: Vec::new(),
    };
    report.findings = findings(&report, major);
    report
}

#[cfg(test)]
mod tests;
