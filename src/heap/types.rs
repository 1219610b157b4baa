//! Type objects: validated once, cached by address, with what the decoders
//! need (kind, sizes, flags, slot offsets, plain-class test) and, on
//! demand, their names as the agent's census gives them (`module`,
//! `qualname`).

use super::layout::{flags, tp};
use super::mem::{Mem, word};
use super::roots::Interpreter;
use crate::analysis::census::IdMap;

/// What an object is, as far as sizing and decoding go: the first builtin
/// found along `tp_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    List,
    Tuple,
    Dict,
    Set,
    /// 3.x `str`, 2.7 `unicode`.
    Unicode,
    /// 3.x `bytes`, 2.7 `str`.
    Bytes,
    Long,
    Int2,
    Float,
    ByteArray,
    Type,
    Code,
    Module,
    /// 2.7 old-style instance and class.
    OldInstance,
    ClassObj,
    Other,
}

/// Upper bound on types cached (a hostile heap cannot grow it further).
const MAX_TYPES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct TypeInfo {
    pub addr: u64,
    pub meta: u64,
    pub flags: u64,
    pub basicsize: u64,
    pub itemsize: u64,
    pub dictoffset: i64,
    pub kind: Kind,
    /// The nearest non-heap type along `tp_base`: its basicsize and dictoffset.
    pub static_basicsize: u64,
    pub static_dictoffset: i64,
    /// Offsets of `T_OBJECT_EX` slots of the heap types along `tp_base`.
    pub slots: Vec<u32>,
    /// A plain class (the agent's test: heap types up to `object`, a dict,
    /// the basicsize of a class with `__dict__` and `__weakref__`).
    pub plain: bool,
    pub heap: bool,
    /// What getsizeof adds (GC header, pre-header); for type objects it
    /// depends on the object (see sizes).
    pub pre: u64,
    pub cached_keys: u64,
    /// 3.11/3.12: entries of `cached_keys` (how many split values an
    /// instance has), read once.
    pub cached_entries: u64,
    pub tp_members: u64,
    /// A builtin with its own `__sizeof__` or item storage, by name.
    pub special: Special,
}

/// Builtins outside the core kinds that the census sizes or decodes
/// specially (recognised by the `tp_name` of the type or a base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    /// `collections.deque`: items in linked blocks.
    Deque,
    /// `_io.Buffered*`: `__sizeof__` adds `buffer_size`.
    Buffered,
    /// `_struct.Struct`: `__sizeof__` adds its format codes.
    Struct,
    /// A frame object: decoded as `frame_traverse` visits it, not scanned
    /// (the unused part of its value stack holds stale pointers).
    Frame,
    /// A generator, coroutine or async generator: on 3.11+ its frame is
    /// inline, decoded like a frame's (`heap::frames`).
    Gen,
    /// `collections.OrderedDict` (3.x): `__sizeof__` adds its linked list.
    OrderedDict,
    /// `array.array`: `__sizeof__` adds the allocated items.
    Array,
    /// `_io.BytesIO`: `__sizeof__` adds its buffer unless it is shared.
    BytesIo,
}

impl TypeInfo {
    pub fn gc(&self) -> bool {
        self.flags & flags::HAVE_GC != 0
    }

    /// Whether its objects can hold references worth decoding: the
    /// collector-aware ones, and code objects (constants and names,
    /// though the collector does not track them). Others are leaves.
    pub fn holds_refs(&self) -> bool {
        self.gc() || self.kind == Kind::Code
    }
}

/// Slots of the direct-mapped cache in front of the index.
const FAST: usize = 512;

/// The cache of validated types.
#[derive(Debug)]
pub struct Types {
    /// (type address, index) by address bits; address 0 = empty.
    fast: Box<[(u64, u32)]>,
    index: IdMap<u32>,
    pub infos: Vec<TypeInfo>,
    /// Addresses found not to be types.
    bad: IdMap<()>,
    last: Option<(u64, u32)>,
}

impl Default for Types {
    fn default() -> Types {
        Types {
            fast: vec![(0, 0); FAST].into_boxed_slice(),
            index: IdMap::default(),
            infos: Vec::new(),
            bad: IdMap::default(),
            last: None,
        }
    }
}

impl Types {
    pub fn new() -> Types {
        Types::default()
    }

    /// The index of the validated type at `addr`, or None.
    #[inline]
    pub fn get(&mut self, mem: &Mem, it: &Interpreter, addr: u64) -> Option<u32> {
        if let Some((a, i)) = self.last
            && a == addr
        {
            return Some(i);
        }
        let slot = (addr >> 4) as usize % FAST;
        let (a, i) = self.fast[slot];
        if a == addr && a != 0 {
            self.last = Some((addr, i));
            return Some(i);
        }
        if let Some(&i) = self.index.get(&addr) {
            self.last = Some((addr, i));
            self.fast[slot] = (addr, i);
            return Some(i);
        }
        if self.bad.contains_key(&addr) {
            return None;
        }
        self.load(mem, it, addr, 0)
    }

    pub fn info(&self, i: u32) -> &TypeInfo {
        &self.infos[i as usize]
    }

    fn load(&mut self, mem: &Mem, it: &Interpreter, addr: u64, depth: u32) -> Option<u32> {
        if self.infos.len() >= MAX_TYPES || depth > 8 {
            return None;
        }
        let r = self.validate(mem, it, addr, depth);
        match r {
            Some(info) => {
                let i = self.infos.len() as u32;
                self.infos.push(info);
                self.index.insert(addr, i);
                self.last = Some((addr, i));
                Some(i)
            }
            None => {
                if self.bad.len() < MAX_TYPES {
                    self.bad.insert(addr, ());
                }
                None
            }
        }
    }

    fn validate(&mut self, mem: &Mem, it: &Interpreter, addr: u64, depth: u32) -> Option<TypeInfo> {
        if !super::mem::valid_ptr(addr) {
            return None;
        }
        let mut raw = [0u8; tp::READ];
        if !mem.fill(addr, &mut raw) {
            return None;
        }
        let meta = word(&raw, 8);
        let b = &it.builtins;
        if meta != b.type_ {
            // A metaclass: itself a valid type, subclass of type.
            if meta == addr {
                return None;
            }
            let mi = self.get_depth(mem, it, meta, depth + 1)?;
            if self.info(mi).flags & flags::TYPE_SUBCLASS == 0 {
                return None;
            }
        }
        let fl = word(&raw, tp::FLAGS as usize);
        let basicsize = word(&raw, tp::BASICSIZE as usize);
        let itemsize = word(&raw, tp::ITEMSIZE as usize);
        // (Static types may be used without PyType_Ready: only heap types
        // must say they are ready.)
        let heap = fl & flags::HEAPTYPE != 0;
        if (heap && fl & flags::READY == 0)
            || !(16..1 << 20).contains(&basicsize)
            || itemsize > 1 << 16
        {
            return None;
        }
        if word(&raw, tp::NAME as usize) == 0 {
            return None;
        }
        let lay = &it.layout;
        // Kind, static base and slots along tp_base.
        let mut kind = Kind::Other;
        let mut static_basicsize = basicsize;
        let mut static_dictoffset = word(&raw, tp::DICTOFFSET as usize) as i64;
        let mut slots = Vec::new();
        let mut t = addr;
        let mut found_static = false;
        let mut special = Special::None;
        for _ in 0..64 {
            if t == 0 {
                break;
            }
            if special == Special::None
                && let Some(name) = mem
                    .u64(t + tp::NAME)
                    .and_then(|p| super::strs::cstr(mem, p))
            {
                special = match name.as_str() {
                    "collections.deque" => Special::Deque,
                    "_io.BufferedReader" | "_io.BufferedWriter" | "_io.BufferedRandom" => {
                        Special::Buffered
                    }
                    "_struct.Struct" | "Struct" => Special::Struct,
                    "frame" => Special::Frame,
                    "generator" | "coroutine" | "async_generator" => Special::Gen,
                    "collections.OrderedDict" => Special::OrderedDict,
                    "array.array" => Special::Array,
                    "_io.BytesIO" => Special::BytesIo,
                    _ => Special::None,
                };
            }
            if let Some(k) = builtin_kind(b, t)
                && kind == Kind::Other
            {
                kind = k;
            }
            let tf = mem.u64(t + tp::FLAGS)?;
            if tf & flags::HEAPTYPE != 0 {
                let members = mem.ptr(t + tp::MEMBERS).unwrap_or(0);
                collect_slots(mem, members, &mut slots);
            } else if !found_static {
                found_static = true;
                static_basicsize = mem.u64(t + tp::BASICSIZE)?;
                static_dictoffset = mem.u64(t + tp::DICTOFFSET)? as i64;
            }
            if kind != Kind::Other && found_static && !heap {
                break;
            }
            t = mem.ptr(t + tp::BASE)?;
        }
        let mut pre = 0;
        if fl & flags::HAVE_GC != 0 {
            pre += lay.gc_head;
            if fl & lay.preheader_flags != 0 {
                pre += 16;
            }
        }
        let dictoffset = word(&raw, tp::DICTOFFSET as usize) as i64;
        let plain = heap
            && dictoffset != 0
            && basicsize == lay.plain_basicsize
            && plain_mro(mem, it, word(&raw, tp::MRO as usize));
        let cached_keys = match lay.ht_cached_keys {
            Some(off) if heap => mem.ptr(addr + off).unwrap_or(0),
            _ => 0,
        };
        let cached_entries = if cached_keys != 0 && lay.dict == super::layout::DictLayout::Py311 {
            super::dicts::keys_311(mem, cached_keys).map_or(0, |k| k.nentries)
        } else {
            0
        };
        Some(TypeInfo {
            addr,
            meta,
            flags: fl,
            basicsize,
            itemsize,
            dictoffset,
            kind,
            static_basicsize,
            static_dictoffset,
            slots,
            plain,
            heap,
            pre,
            cached_keys,
            cached_entries,
            tp_members: word(&raw, tp::MEMBERS as usize),
            special,
        })
    }

    fn get_depth(&mut self, mem: &Mem, it: &Interpreter, addr: u64, depth: u32) -> Option<u32> {
        if let Some(&i) = self.index.get(&addr) {
            return Some(i);
        }
        if self.bad.contains_key(&addr) {
            return None;
        }
        self.load(mem, it, addr, depth)
    }
}

fn builtin_kind(b: &super::roots::Builtins, t: u64) -> Option<Kind> {
    let k = if t == b.list {
        Kind::List
    } else if t == b.tuple {
        Kind::Tuple
    } else if t == b.dict || (t == b.frozendict && t != 0) {
        Kind::Dict
    } else if t == b.set || t == b.frozenset {
        Kind::Set
    } else if t == b.unicode {
        Kind::Unicode
    } else if t == b.bytes {
        Kind::Bytes
    } else if t == b.long {
        Kind::Long
    } else if t == b.int {
        Kind::Int2
    } else if t == b.float {
        Kind::Float
    } else if t == b.bytearray {
        Kind::ByteArray
    } else if t == b.type_ {
        Kind::Type
    } else if t == b.code {
        Kind::Code
    } else if t == b.module {
        Kind::Module
    } else if t == b.instance {
        Kind::OldInstance
    } else if t == b.classobj {
        Kind::ClassObj
    } else if t == b.object {
        Kind::Other
    } else {
        return None;
    };
    (t != 0).then_some(k)
}

/// `PyMemberDef` (40 bytes: name, type, offset, flags, doc) entries of
/// type `T_OBJECT_EX` (16), until the NULL name.
fn collect_slots(mem: &Mem, members: u64, out: &mut Vec<u32>) {
    if !super::mem::valid_ptr(members) {
        return;
    }
    for i in 0..256u64 {
        let Some(rec) = mem.bytes(members + i * 40, 24) else {
            return;
        };
        if word(&rec, 0) == 0 {
            return;
        }
        let ty = super::mem::word32(&rec, 8);
        let off = word(&rec, 16);
        if ty == 16 && off < 1 << 20 && off.is_multiple_of(8) && !out.contains(&(off as u32)) {
            out.push(off as u32);
        }
    }
}

/// The agent's plain-class test on the MRO tuple: ends with `object`,
/// everything before it a heap type.
fn plain_mro(mem: &Mem, it: &Interpreter, mro: u64) -> bool {
    if !super::mem::valid_ptr(mro) {
        return false;
    }
    let Some(n) = mem.u64(mro + 16) else {
        return false;
    };
    if n == 0 || n > 64 {
        return false;
    }
    let items = mro + it.layout.tuple_items;
    let mut ok = true;
    let mut last = 0;
    mem.words(items, n, &mut |t| {
        last = t;
        if t != it.builtins.object
            && mem
                .u64(t + tp::FLAGS)
                .is_none_or(|f| f & flags::HEAPTYPE == 0)
        {
            ok = false;
        }
    }) && ok
        && last == it.builtins.object
}
