//! Dict internals for every layout from 2.7 to 3.15: entries (key, value)
//! of combined and split tables, and `sys.getsizeof`'s keys-size rule.

use super::layout::DictLayout;
use super::mem::{Mem, word};
use super::roots::Interpreter;

/// Largest table (slots) walked.
const MAX_SLOTS: u64 = 1 << 27;

/// Calls `f(key, value)` for each live entry of the dict at `d`; false if
/// the table could not be read whole.
pub fn entries(mem: &Mem, it: &Interpreter, d: u64, f: &mut dyn FnMut(u64, u64)) -> bool {
    match it.layout.dict {
        DictLayout::Py27 => {
            let (Some(mask), Some(table)) = (mem.u64(d + 32), mem.ptr(d + 40)) else {
                return false;
            };
            if mask >= MAX_SLOTS {
                return false;
            }
            mem.records(table, mask + 1, 24, &mut |r| {
                let v = word(r, 16);
                if v != 0 {
                    f(word(r, 8), v);
                }
            })
        }
        DictLayout::Py36 => {
            let (Some(keys), Some(values)) = (mem.ptr(d + 32), mem.ptr(d + 40)) else {
                return false;
            };
            let (Some(size), Some(n)) = (mem.u64(keys + 8), mem.u64(keys + 32)) else {
                return false;
            };
            if size >= MAX_SLOTS || n > size {
                return false;
            }
            let start = keys + 40 + size * ix_width(size);
            if values == 0 {
                mem.records(start, n, 24, &mut |r| {
                    let (k, v) = (word(r, 8), word(r, 16));
                    if k != 0 && v != 0 {
                        f(k, v);
                    }
                })
            } else {
                let mut i = 0u64;
                mem.records(start, n, 24, &mut |r| {
                    let k = word(r, 8);
                    if k != 0
                        && let Some(v) = mem.u64(values + 8 * i)
                        && v != 0
                    {
                        f(k, v);
                    }
                    i += 1;
                })
            }
        }
        DictLayout::Py311 => {
            let (Some(keys), Some(values)) = (mem.ptr(d + 32), mem.ptr(d + 40)) else {
                return false;
            };
            let Some(k) = keys_311(mem, keys) else {
                return false;
            };
            let stride = if k.kind == 0 { 24 } else { 16 };
            let koff = if k.kind == 0 { 8 } else { 0 };
            if values == 0 {
                mem.records(k.entries, k.nentries, stride, &mut |r| {
                    let (key, v) = (word(r, koff), word(r, koff + 8));
                    if key != 0 && v != 0 {
                        f(key, v);
                    }
                })
            } else {
                let vals = values + it.layout.values_header;
                let mut i = 0u64;
                mem.records(k.entries, k.nentries, stride, &mut |r| {
                    let key = word(r, koff);
                    if key != 0
                        && let Some(v) = mem.u64(vals + 8 * i)
                        && v != 0
                    {
                        f(key, v);
                    }
                    i += 1;
                })
            }
        }
    }
}

/// Width of one index of a 3.6–3.10 table of `size` slots.
fn ix_width(size: u64) -> u64 {
    if size <= 0xff {
        1
    } else if size <= 0xffff {
        2
    } else if size <= 0xffff_ffff {
        4
    } else {
        8
    }
}

/// A 3.11+ `PyDictKeysObject`.
pub struct Keys311 {
    pub refcnt: u64,
    pub log2_size: u8,
    pub log2_index_bytes: u8,
    pub kind: u8,
    pub usable: u64,
    pub nentries: u64,
    pub entries: u64,
}

pub fn keys_311(mem: &Mem, keys: u64) -> Option<Keys311> {
    let raw = mem.bytes(keys, 32)?;
    let log2_size = raw[8];
    let log2_index_bytes = raw[9];
    let kind = raw[10];
    let nentries = word(&raw, 24);
    if log2_size > 40 || log2_index_bytes > 43 || kind > 2 || nentries > 1u64 << log2_size {
        return None;
    }
    Some(Keys311 {
        refcnt: word(&raw, 0),
        log2_size,
        log2_index_bytes,
        kind,
        usable: word(&raw, 16),
        nentries,
        entries: keys + 32 + (1u64 << log2_index_bytes),
    })
}

/// `_PyDict_KeysSize` of the keys object at `keys` (0 when unreadable).
pub fn keys_size(mem: &Mem, it: &Interpreter, keys: u64) -> u64 {
    match it.layout.dict {
        DictLayout::Py27 => 0,
        DictLayout::Py36 => {
            let Some(size) = mem.u64(keys + 8).filter(|s| *s < MAX_SLOTS) else {
                return 0;
            };
            40 + ix_width(size) * size + 24 * (2 * size / 3)
        }
        DictLayout::Py311 => {
            let Some(k) = keys_311(mem, keys) else {
                return 0;
            };
            let size = 1u64 << k.log2_size;
            let entry = if k.kind == 0 { 24 } else { 16 };
            32 + (1u64 << k.log2_index_bytes) + (2 * size / 3) * entry
        }
    }
}

/// `dict.__sizeof__` (without the GC header) of the dict at `d`, whose
/// type has `basicsize`.
pub fn sizeof(mem: &Mem, it: &Interpreter, d: u64, basicsize: u64) -> u64 {
    match it.layout.dict {
        DictLayout::Py27 => {
            let (Some(mask), Some(table)) = (mem.u64(d + 32), mem.ptr(d + 40)) else {
                return basicsize;
            };
            if table != d + 56 && mask < MAX_SLOTS {
                basicsize + 24 * (mask + 1)
            } else {
                basicsize
            }
        }
        DictLayout::Py36 => {
            let (Some(keys), Some(values)) = (mem.ptr(d + 32), mem.ptr(d + 40)) else {
                return basicsize;
            };
            let Some(size) = mem.u64(keys + 8).filter(|s| *s < MAX_SLOTS) else {
                return basicsize;
            };
            let usable = 2 * size / 3;
            let mut res = basicsize;
            if values != 0 {
                res += 8 * usable;
            }
            if mem.u64(keys) == Some(1) {
                res += keys_size(mem, it, keys);
            }
            res
        }
        DictLayout::Py311 => {
            let (Some(keys), Some(values)) = (mem.ptr(d + 32), mem.ptr(d + 40)) else {
                return basicsize;
            };
            let Some(k) = keys_311(mem, keys) else {
                return basicsize;
            };
            let mut res = basicsize;
            if values != 0 {
                // 3.13+: values embedded in an object are not counted.
                let embedded = it.layout.values_header != 0 && mem.u8(values + 2) == Some(1);
                if !embedded {
                    res += 8 * (k.nentries + k.usable);
                }
            }
            if k.refcnt == 1 {
                res += keys_size(mem, it, keys);
            }
            res
        }
    }
}
