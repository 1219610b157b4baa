//! `sys.getsizeof` computed from memory: `__sizeof__` per builtin (list,
//! tuple, dict, set, str, bytes, int, float, bytearray, type, ...), the
//! generic `basicsize + itemsize·size` otherwise, plus what getsizeof adds
//! (the GC header, and the 3.11+ pre-header of managed-dict types).

use super::dicts;
use super::layout::flags;
use super::mem::Mem;
use super::roots::Interpreter;
use super::types::{Kind, Special, TypeInfo};

/// `_io.Buffered*`: `buffer` and `buffer_size` (3.x).
const BUFFER: u64 = 56;
const BUFFER_SIZE: u64 = 120;

/// A deque's (length, leftindex, BLOCKLEN, sizeof(block)).
pub fn deque_fields(mem: &Mem, it: &Interpreter, obj: u64) -> (u64, u64, u64, u64) {
    if it.layout.major == 2 {
        let len = mem.u64(obj + 48).unwrap_or(0).min(1 << 40);
        (len, mem.u64(obj + 32).unwrap_or(0).min(64), 62, 512)
    } else {
        let len = mem.u64(obj + 16).unwrap_or(0).min(1 << 40);
        (len, mem.u64(obj + 40).unwrap_or(0).min(64), 64, 528)
    }
}

/// `sys.getsizeof(obj)` for an object of type `t` (0 parts that cannot be
/// read are left out rather than failing).
pub fn getsizeof(mem: &Mem, it: &Interpreter, t: &TypeInfo, obj: u64) -> u64 {
    let lay = &it.layout;
    let ob_size = || mem.i64(obj + 16).unwrap_or(0);
    let generic = || {
        // (A field that is not a size, e.g. in 3.11+ generators, is left out.)
        let n = if t.itemsize > 0 { ob_size() } else { 0 };
        let n = if n.unsigned_abs() > 1 << 32 { 0 } else { n };
        (t.basicsize as i64 + n.saturating_mul(t.itemsize as i64)).max(0) as u64
    };
    let base = match t.kind {
        Kind::List => t.basicsize + 8 * mem.u64(obj + 32).unwrap_or(0).min(1 << 40),
        Kind::Dict if t.special == Special::OrderedDict => {
            dicts::sizeof(mem, it, obj, t.basicsize) + odict_extra(mem, obj)
        }
        Kind::Dict => dicts::sizeof(mem, it, obj, t.basicsize),
        Kind::Set => {
            let table = mem.u64(obj + 40).unwrap_or(0);
            let mask = mem.u64(obj + 32).unwrap_or(0);
            if table != obj + lay.set_small && mask < 1 << 40 {
                t.basicsize + 16 * (mask + 1)
            } else {
                t.basicsize
            }
        }
        Kind::Unicode => unicode_size(mem, it, t, obj),
        // 2.7 `str.__sizeof__` counts `str`'s own header, not a subclass's
        // (whose basic size adds its `__dict__` pointer).
        Kind::Bytes if lay.major == 2 => {
            t.static_basicsize + t.itemsize * ob_size().clamp(0, 1 << 40) as u64
        }
        Kind::Long => {
            if lay.long_tag {
                let ndigits = mem.u64(obj + 16).unwrap_or(0) >> 3;
                let n = ndigits.clamp(1, 1 << 40);
                if lay.at_least(3, 14) {
                    t.basicsize + t.itemsize * n
                } else {
                    24 + 4 * n
                }
            } else {
                let n = ob_size().unsigned_abs().min(1 << 40);
                let n = if lay.at_least(3, 11) { n.max(1) } else { n };
                24 + 4 * n
            }
        }
        // 3.11+ `code.__sizeof__` rounds its variable size up to words.
        Kind::Code if lay.at_least(3, 11) => (generic() + 7) & !7,
        Kind::ByteArray => {
            let alloc = mem.u64(obj + lay.bytearray_alloc).unwrap_or(0).min(1 << 40);
            // 3.15 keeps the buffer in a bytes object and counts its header.
            let header = if lay.at_least(3, 15) && alloc > 0 {
                33
            } else {
                0
            };
            t.basicsize + alloc + header
        }
        Kind::Type => {
            // Every object of kind Type is a type object itself.
            let fl = mem.u64(obj + super::layout::tp::FLAGS).unwrap_or(0);
            if lay.major == 2 {
                // No type.__sizeof__: object's generic one (a heap type's
                // ob_size counts its __slots__ member descriptors).
                let n = ob_size().clamp(0, 1 << 20) as u64;
                let gc = if fl & flags::HEAPTYPE != 0 {
                    lay.gc_head
                } else {
                    0
                };
                return it.heap_type_size + t.itemsize * n + gc;
            }
            if fl & flags::HEAPTYPE != 0 {
                let keys = lay
                    .ht_cached_keys
                    .and_then(|o| mem.ptr(obj + o))
                    .unwrap_or(0);
                let ks = if keys != 0 {
                    dicts::keys_size(mem, it, keys)
                } else {
                    0
                };
                return it.heap_type_size + ks + lay.gc_head;
            }
            return lay.type_size;
        }
        _ => match t.special {
            Special::Deque => {
                let (len, left, blocklen, block) = deque_fields(mem, it, obj);
                t.basicsize + (left + len).div_ceil(blocklen) * block
            }
            Special::Buffered if lay.major == 3 => {
                let has = mem.u64(obj + BUFFER).unwrap_or(0) != 0;
                t.basicsize
                    + if has {
                        mem.u64(obj + BUFFER_SIZE).unwrap_or(0).min(1 << 40)
                    } else {
                        0
                    }
            }
            Special::Struct => t.basicsize + struct_codes(mem, lay.major, obj),
            Special::Gen if lay.at_least(3, 11) => {
                super::frames::gen_size(mem, it, t.basicsize, obj).unwrap_or(t.basicsize)
            }
            Special::Frame if lay.at_least(3, 11) => {
                super::frames::frame_size(mem, it, t.basicsize, obj).unwrap_or(t.basicsize)
            }
            Special::Frame => legacy_frame_size(mem, lay, t.basicsize, obj).unwrap_or_else(generic),
            Special::Array => t.basicsize + array_items(mem, obj),
            Special::BytesIo => t.basicsize + bytesio_buffer(mem, lay.major, obj),
            _ => generic(),
        },
    };
    base + t.pre
}

/// `frame_sizeof` up to 3.10: `sizeof(PyFrameObject)` (the basic size,
/// which holds one slot) and a slot per stack entry, local, cell and free
/// variable but that one, from the code object (`f_code`@32). Not from the
/// frame's `ob_size`: a frame taken from a free list may be larger.
fn legacy_frame_size(
    mem: &Mem,
    lay: &super::layout::Layout,
    basicsize: u64,
    obj: u64,
) -> Option<u64> {
    // (co_nlocals, co_stacksize, co_consts) in the code object.
    let (nlocals, stacksize, consts) = match (lay.major, lay.minor) {
        (2, _) => (20, 24, 40),
        (3, 6 | 7) => (24, 28, 48),
        (3, 8..=10) => (28, 32, 56),
        _ => return None,
    };
    let code = mem.ptr(obj + 32).filter(|&c| c != 0)?;
    let tuple_len = |off: u64| {
        mem.ptr(code + off)
            .filter(|&t| t != 0)
            .and_then(|t| mem.u64(t + 16))
            .filter(|&n| n < 1 << 20)
    };
    let extras = u64::from(mem.u32(code + nlocals)?).min(1 << 20)
        + u64::from(mem.u32(code + stacksize)?).min(1 << 20)
        + tuple_len(consts + 32)? // co_cellvars
        + tuple_len(consts + 24)?; // co_freevars
    Some(basicsize + 8 * extras.saturating_sub(1))
}

/// What `odict_sizeof` adds to the dict's size: the fast-lookup array
/// (`od_fast_nodes_size`@72 pointers) and, unless it is empty
/// (`od_first`@48 NULL), a 32-byte node per item (`ma_used`@16).
fn odict_extra(mem: &Mem, obj: u64) -> u64 {
    let fast = mem.u64(obj + 72).unwrap_or(0).min(1 << 40);
    let used = match mem.u64(obj + 48) {
        Some(first) if first != 0 => mem.u64(obj + 16).unwrap_or(0).min(1 << 40),
        _ => 0,
    };
    8 * fast + 32 * used
}

/// An `array.array`'s allocated items: `allocated`@32 times the
/// descriptor's (`ob_descr`@40) `itemsize`@4.
fn array_items(mem: &Mem, obj: u64) -> u64 {
    let allocated = mem.u64(obj + 32).unwrap_or(0).min(1 << 40);
    let itemsize = mem
        .ptr(obj + 40)
        .filter(|&d| d != 0)
        .and_then(|d| mem.u32(d + 4))
        .map_or(0, |n| u64::from(n).min(64));
    allocated * itemsize
}

/// A `BytesIO`'s buffer as its `__sizeof__` counts it. 3.x: the `bytes`
/// object at `buf`@16, by its own size, unless another reference shares
/// it (refcount > 1; its low 32 bits, which 3.14 keeps apart from flags).
/// 2.7: `buf_size`@40 when `buf`@16 is set.
fn bytesio_buffer(mem: &Mem, major: u8, obj: u64) -> u64 {
    let buf = mem.ptr(obj + 16).unwrap_or(0);
    if buf == 0 {
        return 0;
    }
    if major == 2 {
        return mem.u64(obj + 40).unwrap_or(0).min(1 << 40);
    }
    if mem.u32(buf).is_none_or(|r| r > 1) {
        return 0;
    }
    let Some(ty) = mem.ptr(buf + 8).filter(|&t| t != 0) else {
        return 0;
    };
    let basic = mem
        .u64(ty + super::layout::tp::BASICSIZE)
        .unwrap_or(0)
        .min(1 << 16);
    let item = mem
        .u64(ty + super::layout::tp::ITEMSIZE)
        .unwrap_or(0)
        .min(8);
    let len = mem.u64(buf + 16).unwrap_or(0).min(1 << 40);
    basic + item * len
}

/// The format codes of a `_struct.Struct`, in bytes, with their
/// terminator: 2.7 has one 24-byte code per item (`s_len`@24); 3.x one
/// 32-byte code per run ("4H" is one), listed at `s_codes`@32 up to the
/// one whose `fmtdef` is NULL.
fn struct_codes(mem: &Mem, major: u8, obj: u64) -> u64 {
    let len = mem.u64(obj + 24).unwrap_or(0).min(1 << 16);
    if major == 2 {
        return 24 * (len + 1);
    }
    let codes = mem.ptr(obj + 32).unwrap_or(0);
    let mut n = 0;
    while n < len && mem.u64(codes + 32 * n).is_some_and(|d| d != 0) {
        n += 1;
    }
    32 * (n + 1)
}

/// `str.__sizeof__` (3.x) or 2.7 `unicode.__sizeof__`.
fn unicode_size(mem: &Mem, it: &Interpreter, t: &TypeInfo, s: u64) -> u64 {
    let lay = &it.layout;
    let n = mem.u64(s + 16).unwrap_or(0).min(1 << 40);
    if lay.major == 2 {
        return t.basicsize + it.builtins.py2_ucs * (n + 1);
    }
    let state = mem.u32(s + 32).unwrap_or(0);
    let kind = u64::from((state >> 2) & 7);
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    let mut size = if compact && ascii {
        lay.str_ascii + n + 1
    } else if compact {
        lay.str_compact + (n + 1) * kind
    } else {
        let data = mem.u64(s + lay.str_data).unwrap_or(0);
        lay.str_data + 8 + if data != 0 { (n + 1) * kind } else { 0 }
    };
    if !(compact && ascii) {
        // utf8 cache (not for compact ASCII: it is the data itself).
        let utf8_len = mem.u64(s + lay.str_ascii).unwrap_or(0);
        let utf8 = mem.u64(s + lay.str_ascii + 8).unwrap_or(0);
        let data = if compact {
            s + lay.str_compact
        } else {
            mem.u64(s + lay.str_data).unwrap_or(0)
        };
        if utf8 != 0 && utf8 != data {
            size += utf8_len.min(1 << 40) + 1;
        }
    }
    if lay.str_wstr {
        let wstr = mem.u64(s + 40).unwrap_or(0);
        if wstr != 0 {
            let wlen = if compact && ascii {
                n
            } else {
                mem.u64(s + 64).unwrap_or(0).min(1 << 40)
            };
            let ready = state & (1 << 7) != 0;
            let data = if compact && ascii {
                s + lay.str_ascii
            } else if compact {
                s + lay.str_compact
            } else {
                mem.u64(s + lay.str_data).unwrap_or(0)
            };
            if !ready || wstr != data {
                size += (wlen + 1) * 4;
            }
        }
    }
    size
}
