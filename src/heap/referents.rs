//! What an object refers to, decoded from memory the way `tp_traverse`
//! (what `gc.get_referents` shows) sees it, plus what the agent's census
//! adds: the keys of dicts and the constants, names and byte strings of
//! code objects. Lists, tuples, dicts (every layout), sets, instance
//! attributes (dict, split values, 3.11+ managed dicts, 3.13+ inline
//! values, `__slots__`), type objects, code objects, modules and 2.7
//! old-style instances are decoded field by field; any other
//! collector-aware object is scanned word by word over its fixed part,
//! keeping only words that point at a valid object outside it.

use super::dicts;
use super::frames;
use super::layout::{InstanceLayout, flags, tp};
use super::mem::{Mem, word};
use super::roots::Interpreter;
use super::types::{Kind, Special, TypeInfo, Types};

/// A deque's items: `len` of them from `leftindex` of the left block,
/// following the blocks' right links (2.7: data first, then rightlink;
/// 3.x: leftlink, data, rightlink).
fn deque_items(mem: &Mem, it: &Interpreter, obj: u64, f: &mut Sink) {
    let (len, mut i, blocklen, _) = super::sizes::deque_fields(mem, it, obj);
    let py2 = it.layout.major == 2;
    let (data, right) = if py2 {
        (0, 8 * blocklen)
    } else {
        (8, 8 + 8 * blocklen)
    };
    let mut block = mem.ptr(obj + if py2 { 16 } else { 24 }).unwrap_or(0);
    let mut left = len.min(1 << 28);
    while left > 0 && block != 0 {
        let n = (blocklen - i.min(blocklen)).min(left);
        if !mem.words(block + data + 8 * i, n, &mut |p| f(p, false)) {
            return;
        }
        left -= n;
        i = 0;
        block = mem.ptr(block + right).unwrap_or(0);
    }
}

/// A referent found: `scanned` ones came from the word scan and need the
/// stricter check (see [`plausible`]).
pub type Sink<'s> = dyn FnMut(u64, bool) + 's;

/// Calls `f` with every referent of `obj` (of type `t`). Nothing is
/// validated here beyond reading; the caller checks each address.
pub fn decode(mem: &Mem, it: &Interpreter, t: &TypeInfo, obj: u64, f: &mut Sink) {
    let lay = &it.layout;
    match t.kind {
        Kind::List => {
            let n = mem.u64(obj + 16).unwrap_or(0);
            let items = mem.ptr(obj + 24).unwrap_or(0);
            if items != 0 {
                mem.words(items, n, &mut |p| f(p, false));
            }
        }
        Kind::Tuple => {
            let n = mem.u64(obj + 16).unwrap_or(0);
            mem.words(obj + lay.tuple_items, n, &mut |p| f(p, false));
        }
        Kind::Dict => {
            dicts::entries(mem, it, obj, &mut |k, v| {
                f(k, false);
                f(v, false);
            });
        }
        Kind::Set => {
            let (Some(mask), Some(table)) = (mem.u64(obj + 32), mem.ptr(obj + 40)) else {
                return;
            };
            if mask < 1 << 28 {
                let at = if lay.set_key_first { 0 } else { 8 };
                let dummy = it.builtins.set_dummy;
                mem.records(table, mask + 1, 16, &mut |r| {
                    let k = word(r, at);
                    if k != 0 && k != dummy {
                        f(k, false);
                    }
                });
            }
        }
        Kind::Type => {
            if let Some(fl) = mem.u64(obj + tp::FLAGS)
                && fl & flags::HEAPTYPE != 0
            {
                for off in [tp::DICT, tp::CACHE, tp::MRO, tp::BASES, tp::BASE] {
                    f(mem.u64(obj + off).unwrap_or(0), false);
                }
                if let Some(m) = lay.ht_module {
                    f(mem.u64(obj + m).unwrap_or(0), false);
                }
            }
        }
        Kind::Code => {
            for &off in lay.code_fields {
                f(mem.u64(obj + off).unwrap_or(0), false);
            }
        }
        Kind::Module => {
            f(mem.u64(obj + 16).unwrap_or(0), false);
            if lay.major == 3 {
                module_state(mem, obj, f);
            }
        }
        Kind::OldInstance => {
            f(mem.u64(obj + 16).unwrap_or(0), false);
            f(mem.u64(obj + 24).unwrap_or(0), false);
        }
        Kind::Unicode | Kind::Bytes | Kind::Long | Kind::Int2 | Kind::Float | Kind::ByteArray => {}
        Kind::ClassObj | Kind::Other => {
            if t.special == Special::Deque {
                deque_items(mem, it, obj, f);
            }
            let inline_frame =
                it.layout.at_least(3, 11) && matches!(t.special, Special::Frame | Special::Gen);
            if inline_frame {
                // Its own fields, then its frame as the interpreter
                // traverses it (3.11+: the frame lives inside the object).
                scan_head(mem, t, obj, frames::head_end(it, t.basicsize), f);
                if t.special == Special::Gen {
                    frames::gen_referents(mem, it, t.basicsize, obj, f);
                } else {
                    frames::frame_referents(mem, it, t.basicsize, obj, f);
                }
            } else if t.special == Special::Frame {
                frame_up_to_310(mem, it, t, obj, f);
            } else if t.gc() {
                scan(mem, t, obj, f);
            }
        }
    }
    if t.heap {
        instance(mem, it, t, obj, f);
    }
}

/// The object's fixed part (a heap type made in C, e.g. 3.12+
/// `_struct.Struct` or `re.Pattern`, keeps its fields past the static
/// base), and its items when they are pointers (they start after the
/// static base's fixed part).
fn scan(mem: &Mem, t: &TypeInfo, obj: u64, f: &mut Sink) {
    let mut items = 0;
    if t.itemsize == 8 {
        items = mem.u64(obj + 16).unwrap_or(0);
        if items > 1 << 20 {
            items = 0;
        }
    }
    scan_words(mem, t, obj, items, f);
}

/// The first `end` bytes of an object, scanned word by word, keeping the
/// words that point outside it.
fn scan_head(mem: &Mem, t: &TypeInfo, obj: u64, end: u64, f: &mut Sink) {
    let end = end.min(t.basicsize).min(4096);
    let past = obj + t.basicsize.min(4096);
    if end > 16 {
        mem.words(obj + 16, (end - 16) / 8, &mut |p| {
            if p < obj || p >= past {
                f(p, true);
            }
        });
    }
}

/// The fixed part and `items` pointer items (after the static base's fixed
/// part), keeping the words that point outside the object.
fn scan_words(mem: &Mem, t: &TypeInfo, obj: u64, items: u64, f: &mut Sink) {
    let fixed = t.basicsize.min(4096);
    let start = t.static_basicsize.min(fixed);
    let end = obj + fixed.max(start + 8 * items);
    let mut visit = |p: u64| {
        if p < obj || p >= end {
            f(p, true);
        }
    };
    if fixed > 16 {
        mem.words(obj + 16, (fixed - 16) / 8, &mut visit);
    }
    if items > 0 {
        mem.words(obj + start, items, &mut visit);
    }
}

/// A 2.7–3.10 frame as `frame_traverse` visits it: `f_back`, `f_code`,
/// `f_builtins`, `f_globals`, `f_locals` (at 24–56 in every version),
/// `f_trace` (80; 72 on 3.10), the exception triple (88–104, 2.7 and
/// 3.6), the locals, cells and free variables (from `f_localsplus`, the
/// last field, to `f_valuestack`@64), and the value stack up to
/// `f_stacktop`@72 (≤3.9; NULL while the frame runs: then not at all) or
/// `f_stackdepth`@80 (3.10). Past the stack's top the slots hold stale
/// pointers of whatever ran before: reading them would invent references.
fn frame_up_to_310(mem: &Mem, it: &Interpreter, t: &TypeInfo, obj: u64, f: &mut Sink) {
    let v = (it.layout.major, it.layout.minor);
    for off in [24, 32, 40, 48, 56] {
        f(mem.u64(obj + off).unwrap_or(0), false);
    }
    f(
        mem.u64(obj + if v == (3, 10) { 72 } else { 80 })
            .unwrap_or(0),
        false,
    );
    if v <= (3, 6) {
        for off in [88, 96, 104] {
            f(mem.u64(obj + off).unwrap_or(0), false);
        }
    }
    // Slots: `ob_size` of them from `f_localsplus`; every pointer checked
    // against them before use.
    let plus = obj + t.basicsize.saturating_sub(8);
    let slots = mem.u64(obj + 16).unwrap_or(0).min(1 << 20);
    let end = plus + 8 * slots;
    let Some(stack) = mem.ptr(obj + 64).filter(|&s| s >= plus && s <= end) else {
        return;
    };
    mem.words(plus, (stack - plus) / 8, &mut |p| f(p, false));
    let top = if v == (3, 10) {
        let depth = u64::from(mem.u32(obj + 80).unwrap_or(0));
        stack + 8 * depth
    } else {
        mem.ptr(obj + 72).unwrap_or(0)
    };
    if top > stack && top <= end {
        mem.words(stack, (top - stack) / 8, &mut |p| f(p, false));
    }
}

/// An extension module's state (`md_state`, `m_size` bytes of its
/// `PyModuleDef`), scanned word by word like an unknown object: what its
/// `m_traverse` would visit (3.x; `md_def`@24, `md_state`@32, `m_size`@56).
fn module_state(mem: &Mem, obj: u64, f: &mut Sink) {
    let (Some(def), Some(state)) = (mem.ptr(obj + 24), mem.ptr(obj + 32)) else {
        return;
    };
    if def == 0 || state == 0 {
        return;
    }
    let size = mem.i64(def + 56).unwrap_or(0);
    if size > 0 {
        let words = (size as u64).min(4096) / 8;
        mem.words(state, words, &mut |p| f(p, true));
    }
}

/// Attributes of an instance of a heap type: `__slots__`, then its
/// `__dict__` or split values, as `subtype_traverse` visits them.
fn instance(mem: &Mem, it: &Interpreter, t: &TypeInfo, obj: u64, f: &mut Sink) {
    for &off in &t.slots {
        f(mem.u64(obj + u64::from(off)).unwrap_or(0), false);
    }
    match it.layout.instance {
        InstanceLayout::DictOffset => {
            if t.dictoffset != 0
                && t.dictoffset != t.static_dictoffset
                && let Some(p) = dict_ptr(mem, t, obj)
            {
                f(mem.u64(p).unwrap_or(0), false);
            }
        }
        InstanceLayout::Managed311 => {
            if t.flags & flags::MANAGED_DICT != 0 {
                let d = mem.u64(obj.wrapping_sub(24)).unwrap_or(0);
                if d != 0 {
                    f(d, false);
                } else {
                    let v = mem.ptr(obj.wrapping_sub(32)).unwrap_or(0);
                    if v != 0 {
                        split_values(mem, it, t, v, f);
                    }
                }
            } else {
                offset_dict(mem, t, obj, f);
            }
        }
        InstanceLayout::Managed312 => {
            if t.flags & flags::MANAGED_DICT != 0 {
                let dv = mem.ptr(obj.wrapping_sub(24)).unwrap_or(0);
                if dv & 1 != 0 {
                    split_values(mem, it, t, dv.wrapping_add(1), f);
                } else if dv != 0 {
                    f(dv, false);
                }
            } else {
                offset_dict(mem, t, obj, f);
            }
        }
        InstanceLayout::Inline313 => {
            if t.flags & flags::MANAGED_DICT != 0 {
                if t.flags & flags::INLINE_VALUES != 0 {
                    let v = obj + t.basicsize;
                    if mem.u8(v + 3) == Some(1) {
                        let cap = u64::from(mem.u8(v).unwrap_or(0));
                        mem.words(v + 8, cap, &mut |p| f(p, false));
                        return;
                    }
                }
                f(mem.u64(obj.wrapping_sub(24)).unwrap_or(0), false);
            } else {
                offset_dict(mem, t, obj, f);
            }
        }
    }
}

fn offset_dict(mem: &Mem, t: &TypeInfo, obj: u64, f: &mut Sink) {
    if t.dictoffset != 0
        && t.dictoffset != t.static_dictoffset
        && let Some(p) = dict_ptr(mem, t, obj)
    {
        f(mem.u64(p).unwrap_or(0), false);
    }
}

/// 3.11/3.12 values: as many as the cached keys have entries.
fn split_values(mem: &Mem, it: &Interpreter, t: &TypeInfo, v: u64, f: &mut Sink) {
    let _ = it;
    mem.words(v, t.cached_entries, &mut |p| f(p, false));
}

/// Where the `__dict__` pointer of `obj` sits (`tp_dictoffset`, negative:
/// from the end of a variable-size object).
pub fn dict_ptr(mem: &Mem, t: &TypeInfo, obj: u64) -> Option<u64> {
    let off = t.dictoffset;
    if off > 0 {
        return (off < 1 << 20).then(|| obj + off as u64);
    }
    if off < 0 && off > -(1 << 20) {
        let n = mem.i64(obj + 16)?.unsigned_abs().min(1 << 32);
        let size = (t.basicsize + n * t.itemsize + 7) & !7;
        return Some((obj + size).wrapping_sub(off.unsigned_abs()));
    }
    None
}

/// The instance `__dict__` the agent attributes to a plain class's instance
/// ("dict of X"): only a materialised dict that the instance's referents
/// show (not one sharing still-valid inline values).
pub fn owned_dict(mem: &Mem, it: &Interpreter, t: &TypeInfo, obj: u64) -> Option<u64> {
    let d = match it.layout.instance {
        InstanceLayout::DictOffset => mem.u64(dict_ptr(mem, t, obj)?)?,
        InstanceLayout::Managed311 => mem.u64(obj.wrapping_sub(24))?,
        InstanceLayout::Managed312 => {
            let dv = mem.u64(obj.wrapping_sub(24))?;
            if dv & 1 != 0 {
                return None;
            }
            dv
        }
        InstanceLayout::Inline313 => {
            if t.flags & flags::INLINE_VALUES != 0 && mem.u8(obj + t.basicsize + 3) == Some(1) {
                return None;
            }
            mem.u64(obj.wrapping_sub(24))?
        }
    };
    (d != 0).then_some(d)
}

/// Every referent of `obj`, validated (for the retained-size walker).
pub fn for_each(mem: &Mem, it: &Interpreter, types: &mut Types, obj: u64, f: &mut dyn FnMut(u64)) {
    let Some(ti) = mem.u64(obj + 8).and_then(|a| types.get(mem, it, a)) else {
        return;
    };
    let t = types.info(ti).clone();
    let mut found = Vec::new();
    decode(mem, it, &t, obj, &mut |p, scanned| found.push((p, scanned)));
    for (p, scanned) in found {
        if plausible(mem, it, types, p, scanned).is_some() {
            f(p);
        }
    }
}

/// The type index of the object at `p` if `p` looks like a live object:
/// aligned, readable, with a valid type; words found by scanning must also
/// have a non-zero reference count.
#[inline]
pub fn plausible(
    mem: &Mem,
    it: &Interpreter,
    types: &mut Types,
    p: u64,
    scanned: bool,
) -> Option<u32> {
    if !super::mem::valid_ptr(p) {
        return None;
    }
    if scanned {
        let rc = mem.u32(p)?;
        if rc == 0 {
            return None;
        }
    }
    let ty = mem.u64(p + 8)?;
    types.get(mem, it, ty)
}

/// Referents with a label saying where each sits: `['key']`, `.attr`,
/// `[3]` (for the retainer display).
pub fn labelled(mem: &Mem, it: &Interpreter, types: &mut Types, obj: u64) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Some(ti) = mem.u64(obj + 8).and_then(|a| types.get(mem, it, a)) else {
        return out;
    };
    let t = types.info(ti).clone();
    let key_text = |k: u64| {
        super::strs::read(mem, it, k).map_or_else(|| format!("[{k:#x}]"), |s| format!("[{s:?}]"))
    };
    match t.kind {
        Kind::Dict => {
            dicts::entries(mem, it, obj, &mut |k, v| {
                out.push((format!("{} (key)", key_text(k)), k));
                out.push((key_text(k), v));
            });
        }
        Kind::List | Kind::Tuple => {
            let mut i = 0u64;
            decode(mem, it, &t, obj, &mut |p, _| {
                out.push((format!("[{i}]"), p));
                i += 1;
            });
        }
        _ => {
            decode(mem, it, &t, obj, &mut |p, _| {
                out.push((String::from("?"), p))
            });
        }
    }
    out.retain(|(_, p)| plausible(mem, it, types, *p, false).is_some());
    out
}
