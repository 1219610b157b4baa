//! The collector's settings and state read from memory, as `gc.isenabled()`,
//! `gc.get_debug()`, `gc.get_threshold()`, `gc.get_count()` and
//! `gc.garbage` would give them.

use super::error::HeapError;
use super::mem::Mem;
use super::names::Names;
use super::roots::Interpreter;
use super::space::AddressSpace;
use super::types::{Kind, Types};
use crate::analysis::census::qualified;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcReading {
    /// None where the field is static data without a symbol (2.7, 3.6).
    pub enabled: Option<bool>,
    pub debug: Option<u32>,
    pub thresholds: [u32; 3],
    pub counts: [u32; 3],
    pub collecting: Option<bool>,
    /// `len(gc.garbage)`, and its items by type name (most first).
    pub garbage_len: Option<u64>,
    pub garbage_types: Vec<(String, u64)>,
}

/// `gc.DEBUG_SAVEALL`.
pub const DEBUG_SAVEALL: u32 = 1 << 5;

/// Reads the main interpreter's collector state.
pub fn read(space: &dyn AddressSpace, interp: &Interpreter) -> Result<GcReading, HeapError> {
    let mem = Mem::new(space);
    let gc = interp
        .gcs
        .first()
        .ok_or_else(|| HeapError::Corrupt("no GC state".into()))?;
    let u32_at = |a: Option<u64>| a.and_then(|a| mem.u32(a));
    let mut thresholds = [0; 3];
    let mut counts = [0; 3];
    for (i, h) in gc.heads.iter().enumerate() {
        thresholds[i] = mem.u32(h + gc.threshold_off).ok_or(HeapError::Unreadable {
            addr: *h,
            what: "the collector's thresholds",
        })?;
        counts[i] = mem.u32(h + gc.threshold_off + 4).unwrap_or(0);
    }
    let mut out = GcReading {
        enabled: u32_at(gc.enabled).map(|v| v != 0),
        debug: u32_at(gc.debug),
        thresholds,
        counts,
        collecting: u32_at(gc.collecting).map(|v| v != 0),
        garbage_len: None,
        garbage_types: Vec::new(),
    };
    let list = gc.garbage.and_then(|g| mem.ptr(g));
    if let Some(list) = list
        && mem.u64(list + 8) == Some(interp.builtins.list)
    {
        let n = mem.u64(list + 16).unwrap_or(0);
        out.garbage_len = Some(n);
        let items = mem.ptr(list + 24).unwrap_or(0);
        let mut types = Types::new();
        let mut names = Names::default();
        let mut by: std::collections::BTreeMap<String, u64> = Default::default();
        mem.words(items, n.min(1 << 24), &mut |o| {
            if !super::mem::valid_ptr(o) {
                return;
            }
            let Some(ta) = mem.u64(o + 8) else { return };
            let Some(ti) = types.get(&mem, interp, ta) else {
                return;
            };
            let t = types.info(ti);
            let tid = if t.kind == Kind::OldInstance {
                mem.u64(o + 16).unwrap_or(ta)
            } else {
                ta
            };
            let (m, q) = names.of(&mem, interp, tid);
            *by.entry(qualified(m.as_deref(), &q)).or_default() += 1;
        });
        let mut v: Vec<(String, u64)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.garbage_types = v;
    }
    Ok(out)
}
