//! Walking the collector's generation lists (and the permanent generation)
//! with every node checked: aligned, readable, a valid type; a walk stops at
//! an unreadable link, a cycle that misses the head (Brent's algorithm: no
//! memory per node) or a bound on steps, and reports what it skipped.

use super::error::HeapError;
use super::mem::Mem;
use super::roots::Interpreter;
use super::types::Types;

/// Most nodes walked in all (a torn list cannot make a walk unbounded;
/// 2 GiB of addresses at most).
pub const MAX_NODES: u64 = 1 << 28;

/// Invalid nodes in a row after which the rest of a list is given up (it
/// has left the heap: torn or garbage).
const MAX_BAD_RUN: u64 = 64;

#[derive(Debug, Default)]
pub struct Walked {
    /// Objects on the generation lists (what `gc.get_objects()` lists).
    pub tracked: Vec<u64>,
    /// Objects in the permanent generation (`gc.freeze()`; not listed).
    pub permanent: Vec<u64>,
    /// Nodes whose object did not validate (left out).
    pub skipped: u64,
    /// The collector was running when memory was read.
    pub collecting: bool,
    pub warnings: Vec<String>,
}

/// Walks every generation of every interpreter; `f` is told each valid
/// object (address, type index, permanent).
pub fn walk(mem: &Mem, it: &Interpreter, types: &mut Types) -> Result<Walked, HeapError> {
    let mut out = Walked::default();
    let mut budget = MAX_NODES;
    for gc in &it.gcs {
        if let Some(c) = gc.collecting
            && mem.u32(c).is_some_and(|v| v != 0)
        {
            out.collecting = true;
        }
        let mut lists: Vec<(u64, bool)> = gc.heads.iter().map(|h| (*h, false)).collect();
        lists.extend(gc.permanent.map(|p| (p, true)));
        for (head, perm) in lists {
            walk_list(mem, it, types, head, perm, &mut budget, &mut out);
        }
    }
    if out.collecting {
        out.warnings.push(
            "the collector was running when the heap was read, so objects it was moving may be missing"
                .into(),
        );
    }
    if out.skipped > 0 {
        out.warnings.push(format!(
            "{} list nodes did not look like objects and were skipped (a torn or corrupt heap)",
            out.skipped
        ));
    }
    Ok(out)
}

fn walk_list(
    mem: &Mem,
    it: &Interpreter,
    types: &mut Types,
    head: u64,
    perm: bool,
    budget: &mut u64,
    out: &mut Walked,
) {
    let gch = it.layout.gc_head;
    let Some(mut n) = mem.u64(head).map(|v| v & !3) else {
        out.warnings.push(format!(
            "the generation list at {head:#x} could not be read"
        ));
        return;
    };
    // Brent's cycle detection.
    let mut tortoise = head;
    let mut power = 1u64;
    let mut lam = 0u64;
    let mut bad_run = 0u64;
    while n != head {
        if *budget == 0 {
            out.warnings
                .push("the walk stopped at its bound on nodes".into());
            return;
        }
        *budget -= 1;
        if !super::mem::valid_ptr(n) {
            out.skipped += 1;
            out.warnings.push(format!(
                "a generation list is broken at {n:#x}; the rest of it was skipped"
            ));
            return;
        }
        let obj = n + gch;
        let valid = mem
            .u64(obj + 8)
            .and_then(|ty| types.get(mem, it, ty))
            .is_some();
        if valid {
            bad_run = 0;
            if perm {
                out.permanent.push(obj);
            } else {
                out.tracked.push(obj);
            }
        } else {
            out.skipped += 1;
            bad_run += 1;
            if bad_run >= MAX_BAD_RUN {
                out.warnings.push(format!(
                    "a generation list runs into memory that holds no objects at {n:#x}; the rest of it was skipped"
                ));
                return;
            }
        }
        let Some(next) = mem.u64(n).map(|v| v & !3) else {
            out.skipped += 1;
            out.warnings.push(format!(
                "a generation list link at {n:#x} is unreadable; the rest of it was skipped"
            ));
            return;
        };
        if next == tortoise {
            out.warnings.push(
                "a generation list loops without returning to its head; the walk stopped there"
                    .into(),
            );
            return;
        }
        lam += 1;
        if lam == power {
            tortoise = n;
            power *= 2;
            lam = 0;
        }
        n = next;
    }
}
