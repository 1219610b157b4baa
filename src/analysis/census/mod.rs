//! The heap census: turning the agent's streamed arrays into per-type counts
//! and sizes ([`CensusBuilder`]), and a series of censuses into growth
//! figures ([`growth`]).
//!
//! The agent (`src/agent/plugins/census.py`, op `census`) sends one chunk
//! frame per slice of `gc.get_objects()`, header
//! `{"k":"census","v":2,"w":8,"le":true,"dt":DICT_TYPE_ID,"seg":[...],"fpt":[...]}`
//! and a payload of native-endian `w`-byte words: first the id arrays of
//! every segment, in order, then the sizes (and hashes) of every segment
//! that has them, in order (the agent reads all the ids of a frame from its
//! memory at once):
//!
//! ```text
//!               ids part                       sizes part
//! ["t", n]      ids[n] tids[n]                 sizes[n]       gc-tracked objects
//! ["u", n, nf]  ids[n] tids[n]                 sizes[n]       untracked objects they refer to
//!                                              hashes[nf]     (with repeats), and (growth only)
//!                                                             the value hashes of those whose
//!                                                             type id is in fpt, in order
//! ["o", n]      dict_ids[n] owner_tids[n]      -              dicts that are the __dict__ of
//!                                                             an object of that type
//! ```
//!
//! Sizes are `type(o).__sizeof__(o)`: the type table adds `pre` per type
//! (what `sys.getsizeof` adds: the GC header and pre-header; 0 where the
//! agent sent getsizeof itself).
//!
//! Across censuses (`growth`), ints and floats are identified by (address,
//! hash) when fingerprinted: their memory is reused at once, so a new number
//! often sits at the address of one that died; keys for them have bit 63
//! set (addresses never do). Within one census an address is one object.
//!
//! [`CensusBuilder`] deduplicates by identity across chunks (an untracked
//! str referenced from many chunks counts once; the first record wins) and
//! aggregates per type as frames arrive, so the arrays are never held
//! twice. The final answer carries the type table `[[tid, module, qualname,
//! pre], ...]`, `drop_dicts` (dicts of the agent's own modules and classes
//! found after they were sent) and the agent's statistics;
//! [`CensusBuilder::finish`] resolves names and attributes instance dicts
//! ("dict of app.UserSession").
//!
//! Everything here is pure: the input is untrusted data from the target, so
//! malformed frames are errors, never panics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

mod builder;
mod frame;
pub mod growth;
pub mod seen;
#[cfg(test)]
mod tests;

pub use builder::CensusBuilder;
pub use growth::{
    GrowthRow, MONOTONIC_THRESHOLD, NewObject, growth_rows, growth_rows_with, growth_score,
    new_ids, retention, turnover,
};

/// Hasher for object ids (addresses): a splitmix64 finaliser. Ids are
/// 16-byte aligned and clustered, so the std SipHash would be wasted work
/// and the identity hash would be poor.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64((self.0 << 8) | u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut x = n ^ self.0;
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        self.0 = x;
    }
}

pub type IdBuild = BuildHasherDefault<IdHasher>;
pub type IdSet = HashSet<u64, IdBuild>;
pub type IdMap<V> = HashMap<u64, V, IdBuild>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CensusError {
    #[error("census chunk header lacks `{0}`")]
    MissingField(&'static str),
    #[error("census chunk has an unknown kind {0:?}")]
    UnknownKind(String),
    #[error("census chunk of format {0:?}, this memsleuth reads format 2")]
    Version(Option<u64>),
    #[error("census chunk has a malformed `{0}` segment list")]
    BadSegment(&'static str),
    #[error("census words of {0} bytes are not supported")]
    WordSize(u64),
    #[error("the target's byte order differs from ours")]
    ByteOrder,
    #[error("census chunk payload is {got} bytes, expected {expected}")]
    PayloadSize { got: usize, expected: u128 },
    #[error("census result is malformed: {0}")]
    BadResult(String),
}

/// The identity of a fingerprinted object: its address and value hash,
/// with bit 63 set.
pub fn fingerprint_key(id: u64, hash: u64) -> u64 {
    let mut h = IdHasher::default();
    h.write_u64(hash);
    (id ^ h.finish()) | (1 << 63)
}

/// `module.QualName`, or just the name for builtins.
pub fn qualified(module: Option<&str>, qualname: &str) -> String {
    match module {
        None | Some("builtins") | Some("__builtin__") | Some("exceptions") => qualname.to_string(),
        Some(m) => format!("{m}.{qualname}"),
    }
}

/// The row of `rows` for type `tid` (`module`, `qualname`) counted as
/// `kind`, made empty if new; the type's id joins the row's ids. Rows are
/// keyed by name, so same-named classes share one.
pub fn type_row(
    rows: &mut BTreeMap<String, TypeRow>,
    kind: RowKind,
    tid: u64,
    module: Option<String>,
    qualname: String,
) -> &mut TypeRow {
    let base = qualified(module.as_deref(), &qualname);
    let name = match kind {
        RowKind::Type => base,
        RowKind::DictOf => format!("dict of {base}"),
    };
    let row = rows.entry(name.clone()).or_insert_with(|| TypeRow {
        name,
        kind,
        module,
        qualname,
        count: 0,
        tracked: 0,
        size: 0,
        classes: 0,
        tids: Vec::new(),
    });
    if !row.tids.contains(&tid) {
        row.tids.push(tid);
    }
    row
}

/// The rows biggest first (then by name), each with its classes counted,
/// and their totals: (rows, count, size, tracked).
pub fn sorted_rows(rows: BTreeMap<String, TypeRow>) -> (Vec<TypeRow>, u64, u64, u64) {
    let mut rows: Vec<TypeRow> = rows.into_values().collect();
    for r in &mut rows {
        r.classes = r.tids.len() as u64;
    }
    rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
    let count = rows.iter().map(|r| r.count).sum();
    let size = rows.iter().fold(0u64, |s, r| s.saturating_add(r.size));
    let tracked = rows.iter().map(|r| r.tracked).sum();
    (rows, count, size, tracked)
}

/// What a row counts: instances of a type, or the dicts that are the
/// `__dict__` of instances (or modules, classes) of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Type,
    DictOf,
}

/// One line of the census.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeRow {
    /// `app.UserSession`, `str`, `dict of app.UserSession`.
    pub name: String,
    pub kind: RowKind,
    /// The type's (or, for `dict of`, the owner type's) module and qualified name.
    pub module: Option<String>,
    pub qualname: String,
    pub count: u64,
    /// How many of them the garbage collector tracks.
    pub tracked: u64,
    /// Sum of sys.getsizeof, bytes.
    pub size: u64,
    /// Distinct type objects with this name (more than 1: a class created
    /// over and over, itself a classic leak).
    pub classes: u64,
    /// Their ids (for `dict of` rows: the owner types).
    #[serde(skip)]
    pub tids: Vec<u64>,
}

impl TypeRow {
    /// Whether the type (or the owner of the dicts) is a builtin one.
    pub fn is_builtin(&self) -> bool {
        matches!(
            self.module.as_deref(),
            None | Some("builtins") | Some("__builtin__") | Some("exceptions")
        )
    }
}

/// The agent's own figures for one census (see the op's result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AgentStats {
    #[serde(default)]
    pub gc_only: bool,
    /// len(gc.get_objects()).
    #[serde(default)]
    pub listed: u64,
    /// Agent objects left out.
    #[serde(default)]
    pub excluded: u64,
    /// Objects in gc.freeze()'s permanent generation (not listed, not counted).
    #[serde(default)]
    pub frozen: u64,
    /// gc.collect()'s return value when asked to collect first.
    #[serde(default)]
    pub collected: Option<u64>,
    #[serde(default)]
    pub collect_s: f64,
    #[serde(default)]
    pub get_objects_s: f64,
    /// Finding the agent's own objects.
    #[serde(default)]
    pub own_s: f64,
    /// Records sent: gc-tracked, and untracked (with repeats).
    #[serde(default)]
    pub tracked: u64,
    #[serde(default)]
    pub untracked_sent: u64,
    #[serde(default)]
    pub sent_bytes: u64,
    /// How ids were read: "mem" (the lists' item arrays, through
    /// /proc/self/mem) or "id" (id() per object).
    #[serde(default)]
    pub reads: Option<String>,
    /// The longest stretch between two socket writes: the longest the census
    /// held the GIL without a break.
    #[serde(default)]
    pub max_hold_s: f64,
    /// Sum of those stretches.
    #[serde(default)]
    pub hold_total_s: f64,
    #[serde(default)]
    pub holds: u64,
    /// Objects whose __sizeof__ failed (counted with size 0).
    #[serde(default)]
    pub size_errors: u64,
    #[serde(default)]
    pub elapsed_s: f64,
    /// CPU time of the agent thread for the census (Python 3.7+).
    #[serde(default)]
    pub cpu_s: Option<f64>,
}

/// A finished census. (De)serialisable without the ids, so a recorded
/// census can serve as a test fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Census {
    /// Largest total size first.
    pub rows: Vec<TypeRow>,
    pub count: u64,
    pub size: u64,
    pub tracked: u64,
    pub untracked: u64,
    pub gc_only: bool,
    #[serde(default)]
    pub dict_tid: u64,
    pub chunks: u64,
    pub payload_bytes: u64,
    /// Untracked records dropped as already counted.
    pub repeats: u64,
    /// Time memsleuth spent aggregating the frames (as they came, and at
    /// the end).
    #[serde(default)]
    pub feed_s: f64,
    pub stats: AgentStats,
    /// Sorted identity keys per row name (only when the builder kept them):
    /// the id, or for fingerprinted ints and floats a [`fingerprint_key`].
    #[serde(skip)]
    pub ids: Option<BTreeMap<String, Vec<u64>>>,
}

impl Census {
    pub fn row(&self, name: &str) -> Option<&TypeRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// Rows in the requested order (size or count, largest first).
    pub fn sorted_rows(&self, by_count: bool) -> Vec<&TypeRow> {
        let mut v: Vec<&TypeRow> = self.rows.iter().collect();
        if by_count {
            v.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then(b.size.cmp(&a.size))
                    .then(a.name.cmp(&b.name))
            });
        }
        v
    }
}
