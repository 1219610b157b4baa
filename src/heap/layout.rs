//! Per-version byte layouts of the CPython objects the census decodes
//! (x86_64, default GIL builds). Offsets were measured on the builds this
//! project tests (see `/work/shared/research/readonly-heap.md` and the
//! code-object probe in tests/heap_readonly.rs); 3.13+ roots come from the
//! target's own `_Py_DebugOffsets` instead (see `roots`).

/// Offsets inside `PyTypeObject`, identical from 2.7 to 3.15.
pub mod tp {
    pub const NAME: u64 = 24;
    pub const BASICSIZE: u64 = 32;
    pub const ITEMSIZE: u64 = 40;
    pub const FLAGS: u64 = 168;
    pub const MEMBERS: u64 = 240;
    pub const BASE: u64 = 256;
    pub const DICT: u64 = 264;
    pub const DICTOFFSET: u64 = 288;
    pub const BASES: u64 = 336;
    pub const MRO: u64 = 344;
    pub const CACHE: u64 = 352;
    /// Bytes of the type object read at once (all fields above).
    pub const READ: usize = 368;
}

/// `tp_flags` bits.
pub mod flags {
    pub const MANAGED_WEAKREF: u64 = 1 << 3;
    pub const MANAGED_DICT: u64 = 1 << 4;
    pub const INLINE_VALUES: u64 = 1 << 2;
    pub const HEAPTYPE: u64 = 1 << 9;
    pub const READY: u64 = 1 << 12;
    pub const HAVE_GC: u64 = 1 << 14;
    pub const TYPE_SUBCLASS: u64 = 1 << 31;
}

/// How dicts are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictLayout {
    /// 2.7: an open table of {hash, key, value} in the object.
    Py27,
    /// 3.6–3.10: `PyDictKeysObject` with `dk_size` and 24-byte entries.
    Py36,
    /// 3.11+: log2 sizes, kinds, 16-byte unicode entries.
    Py311,
}

/// Where a heap-type instance keeps its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceLayout {
    /// ≤3.10: a dict pointer at `tp_dictoffset`.
    DictOffset,
    /// 3.11: dict at obj−24, else values at obj−32.
    Managed311,
    /// 3.12: obj−24 holds the dict, or the values tagged with bit 0.
    Managed312,
    /// 3.13+: obj−24 holds the dict; values inline after the object.
    Inline313,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub major: u8,
    pub minor: u8,
    /// `sizeof(PyGC_Head)`: the object starts this far after its node.
    pub gc_head: u64,
    /// Tuple items start here.
    pub tuple_items: u64,
    pub dict: DictLayout,
    /// Bytes before the values array of split dicts (3.13+ header).
    pub values_header: u64,
    pub instance: InstanceLayout,
    /// Flags whose presence adds 16 bytes of pre-header to getsizeof.
    pub preheader_flags: u64,
    /// `basicsize` of a plain class with `__dict__` and `__weakref__`.
    pub plain_basicsize: u64,
    /// `sizeof(PyTypeObject)` (getsizeof of a static type).
    pub type_size: u64,
    pub ht_name: u64,
    pub ht_qualname: Option<u64>,
    pub ht_cached_keys: Option<u64>,
    pub ht_module: Option<u64>,
    /// Set: `smalltable` offset, and whether entries are {key, hash} (3.x)
    /// or {hash, key} (2.7).
    pub set_small: u64,
    pub set_key_first: bool,
    /// Unicode (3.x): sizeof of the ASCII and compact structs, the legacy
    /// data pointer, and whether `wstr` fields exist (≤3.11).
    pub str_ascii: u64,
    pub str_compact: u64,
    pub str_data: u64,
    pub str_wstr: bool,
    /// `bytearray.ob_alloc`.
    pub bytearray_alloc: u64,
    /// Code-object fields the census follows (what the agent's
    /// `code_attrs` reads): consts, names, filename, name and the
    /// version's byte strings.
    pub code_fields: &'static [u64],
    /// Offset of `long` digits count/sign: `ob_size` (≤3.11) or `lv_tag` (3.12+).
    pub long_tag: bool,
}

impl Layout {
    /// The layout of Python `major.minor`, if known.
    pub fn for_version(major: u8, minor: u8) -> Option<Layout> {
        let v = (major, minor);
        if v != (2, 7) && !(major == 3 && (6..=15).contains(&minor)) {
            return None;
        }
        let py3 = major == 3;
        let (ht_name, ht_qualname, ht_cached_keys, ht_module) = match v {
            (2, 7) => (856, None, None, None),
            (3, 6) | (3, 7) => (832, Some(848), Some(856), None),
            (3, 8) => (848, Some(864), Some(872), None),
            (3, 9) => (840, Some(856), Some(864), Some(872)),
            (3, 10) | (3, 11) => (848, Some(864), Some(872), Some(880)),
            (3, 12) | (3, 13) | (3, 14) => (856, Some(872), Some(880), Some(888)),
            _ => (864, Some(880), Some(888), Some(896)),
        };
        // sys.getsizeof of a static type (measured: 3.11 and 3.12 add the
        // GC header although static types are not collected; 2.7 has no
        // type.__sizeof__: see sizes).
        let type_size = match v {
            (2, 7) => 0,
            (3, 6) | (3, 7) => 400,
            (3, 8) => 416,
            (3, 9) | (3, 10) => 408,
            (3, 11) => 424,
            (3, 12) => 432,
            (3, 13) | (3, 14) => 416,
            _ => 424,
        };
        const C27: &[u64] = &[40, 48, 80, 88, 32, 56, 64, 72, 104];
        const C36: &[u64] = &[48, 56, 96, 104, 40, 64, 72, 80, 112];
        const C38: &[u64] = &[56, 64, 104, 112, 48, 72, 80, 88, 120];
        const C311: &[u64] = &[24, 32, 112, 120, 136, 40, 128];
        let code_fields = match v {
            (2, 7) => C27,
            (3, 6) | (3, 7) => C36,
            (3, 8) | (3, 9) | (3, 10) => C38,
            _ => C311,
        };
        Some(Layout {
            major,
            minor,
            gc_head: if v <= (3, 7) { 32 } else { 16 },
            tuple_items: if v >= (3, 14) { 32 } else { 24 },
            dict: match v {
                (2, 7) => DictLayout::Py27,
                _ if v <= (3, 10) => DictLayout::Py36,
                _ => DictLayout::Py311,
            },
            values_header: if v >= (3, 13) { 8 } else { 0 },
            instance: match v {
                _ if v <= (3, 10) => InstanceLayout::DictOffset,
                (3, 11) => InstanceLayout::Managed311,
                (3, 12) => InstanceLayout::Managed312,
                _ => InstanceLayout::Inline313,
            },
            preheader_flags: match v {
                _ if v <= (3, 10) => 0,
                (3, 11) => flags::MANAGED_DICT,
                _ => flags::MANAGED_DICT | flags::MANAGED_WEAKREF,
            },
            plain_basicsize: match v {
                _ if v <= (3, 10) => 32,
                (3, 11) => 24,
                _ => 16,
            },
            type_size,
            ht_name,
            ht_qualname,
            ht_cached_keys,
            ht_module,
            set_small: if py3 { 64 } else { 56 },
            set_key_first: py3,
            str_ascii: if v >= (3, 12) { 40 } else { 48 },
            str_compact: if v >= (3, 12) { 56 } else { 72 },
            str_data: if v >= (3, 12) { 56 } else { 72 },
            str_wstr: v <= (3, 11),
            bytearray_alloc: if py3 { 24 } else { 32 },
            code_fields,
            long_tag: v >= (3, 12),
        })
    }

    pub fn at_least(&self, major: u8, minor: u8) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}
