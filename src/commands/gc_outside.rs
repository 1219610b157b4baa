//! `memsleuth gc` from outside: the collector's state read from the
//! target's memory (or a core) twice `--interval` apart, turned into the
//! same report the agent's reads give. What only the interpreter knows
//! (`gc.get_stats()`, `gc.callbacks`, whether a class defines `__del__`)
//! is left out and said so.

use std::time::{Duration, Instant};

use crate::analysis::gcstate::{
    self, GarbageScan, GarbageTypeRaw, GcBasics, GcReport, GcStateRaw, Meta,
};
use crate::heap::gcstate::{DEBUG_SAVEALL, GcReading};
use crate::heap::read::{ReadError, read_gc, reread_gc};
use crate::heap::source::Source;

/// `gc.DEBUG_*` names by bit, as `gc` spells them.
const DEBUG_FLAGS: [(u32, &str); 6] = [
    (1, "DEBUG_STATS"),
    (2, "DEBUG_COLLECTABLE"),
    (4, "DEBUG_UNCOLLECTABLE"),
    (8, "DEBUG_INSTANCES"),
    (16, "DEBUG_OBJECTS"),
    (DEBUG_SAVEALL, "DEBUG_SAVEALL"),
];

/// Reads `source` (a live one twice, `interval` apart) into a report.
pub fn report(source: &Source, limit: usize, interval: Duration) -> Result<GcReport, ReadError> {
    let first = read_gc(source)?;
    let t = Instant::now();
    let (second, interval_s) = match source {
        Source::Live { pid, .. } => {
            std::thread::sleep(interval);
            (reread_gc(*pid)?, t.elapsed().as_secs_f64())
        }
        Source::Core { .. } => (first.reading.clone(), 0.0),
    };
    let mut warnings = first.cost.warnings.clone();
    let (major, minor, _) = first.version;
    if first.reading.enabled.is_none() {
        warnings.push(format!(
            "whether automatic collection is enabled cannot be read from outside on Python {major}.{minor}; use --inject to know"
        ));
    }
    let mut basics = basics(&first.reading);
    basics.freeze_count = ((major, minor) >= (3, 7)).then_some(first.permanent);
    let r = &first.reading;
    let listed: Vec<GarbageTypeRaw> = r
        .garbage_types
        .iter()
        .take(limit)
        .map(|(name, count)| GarbageTypeRaw {
            type_name: name.clone(),
            count: *count,
            generator: name == "generator",
            ..GarbageTypeRaw::default()
        })
        .collect();
    let shown: u64 = listed.iter().map(|t| t.count).sum();
    let total: u64 = r.garbage_types.iter().map(|(_, n)| n).sum();
    if major == 2 && !basics.saveall && total > 0 {
        warnings.push(
            "why objects sit in gc.garbage (a __del__ in a cycle) is not read from outside on Python 2; use --inject to see it".into(),
        );
    }
    let raw = GcStateRaw {
        garbage: GarbageScan {
            len: basics.garbage_len,
            scanned: total,
            types: r.garbage_types.len() as u64,
            other: total - shown,
            by_type: listed,
        },
        basics,
        gc_objects: first.gc_objects,
        ctypes_loaded_now: false,
    };
    let meta = Meta {
        pid: first.pid,
        version: first.version,
        attach_s: 0.0,
        gil_s: 0.0,
    };
    let mut report = gcstate::build_report(&meta, raw, &self::basics(&second), interval_s, None);
    report.source = "memory".into();
    report.paused_s = first.cost.paused_s;
    report.warnings = warnings;
    Ok(report)
}

fn basics(r: &GcReading) -> GcBasics {
    let debug = r.debug.unwrap_or(0);
    GcBasics {
        enabled: r.enabled.unwrap_or(true),
        thresholds: r.thresholds.iter().map(|&v| i64::from(v)).collect(),
        count: r.counts.iter().map(|&v| i64::from(v)).collect(),
        debug: u64::from(debug),
        debug_flags: DEBUG_FLAGS
            .iter()
            .filter(|(bit, _)| debug & bit != 0)
            .map(|(_, name)| name.to_string())
            .collect(),
        saveall: debug & DEBUG_SAVEALL != 0,
        stats: None,
        freeze_count: None,
        callbacks: None,
        garbage_len: r.garbage_len.unwrap_or(0),
        time: 0.0,
    }
}
