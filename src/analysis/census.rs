//! The heap census: turning the agent's streamed arrays into per-type counts
//! and sizes, and a series of censuses into growth figures.
//!
//! The agent (`src/agent/plugins/census.py`, op `census`) sends one chunk
//! frame per slice of `gc.get_objects()`, header
//! `{"k":"census","w":8,"le":true,"dt":DICT_TYPE_ID,"nt":NT,"nu":NU,"no":NO}`
//! and a payload of native-endian `w`-byte words:
//!
//! ```text
//! ids[NT] tids[NT] sizes[NT]      gc-tracked objects (sizes: sys.getsizeof)
//! ids[NU] tids[NU] sizes[NU]      untracked objects they refer to (with repeats;
//!                                 sizes without the type's `pre`, see below)
//! dict_ids[NO] owner_tids[NO]     dicts that are the __dict__ of an object of that type
//! ids[NF] hashes[NF]              (growth only) value hashes of exact ints and floats,
//!                                 sent before their records
//! ```
//!
//! Ints and floats are identified by (address, hash) when fingerprinted:
//! their memory is reused at once, so a new number often sits at the
//! address of one that died; keys for them have bit 63 set (addresses never
//! do).
//!
//! [`CensusBuilder`] deduplicates by id across chunks (an untracked str
//! referenced from many chunks counts once; the first record wins) and
//! aggregates per type as frames arrive, so the arrays are never held twice.
//! The final answer carries the type table `[[tid, module, qualname, pre],
//! ...]` (`pre` is added to each untracked object's size: the GC header
//! getsizeof counts for untracked tuples and dicts), `drop_dicts` (dicts of
//! the agent's own modules and classes found after they were sent) and the
//! agent's statistics; [`CensusBuilder::finish`] resolves names and
//! attributes instance dicts ("dict of app.UserSession").
//!
//! Everything here is pure: the input is untrusted data from the target, so
//! malformed frames are errors, never panics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Score at or above which a type counts as growing monotonically.
pub const MONOTONIC_THRESHOLD: f64 = 0.8;

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
    #[error("census words of {0} bytes are not supported")]
    WordSize(u64),
    #[error("the target's byte order differs from ours")]
    ByteOrder,
    #[error("census chunk payload is {got} bytes, expected {expected}")]
    PayloadSize { got: usize, expected: u128 },
    #[error("census result is malformed: {0}")]
    BadResult(String),
}

/// Per type id while aggregating.
#[derive(Debug, Default, Clone, Copy)]
struct Agg {
    tracked: u64,
    untracked: u64,
    /// Sizes as sent (untracked ones still without `pre`).
    size: u64,
}

#[derive(Debug, Clone, Copy)]
struct DictRec {
    id: u64,
    size: u64,
    tracked: bool,
}

/// Collects chunk frames of one census.
#[derive(Debug, Default)]
pub struct CensusBuilder {
    seen: IdSet,
    aggs: IdMap<Agg>,
    /// Records of exact dicts, attributed to owners at the end.
    dicts: Vec<DictRec>,
    owners: IdMap<u64>,
    /// Value hashes by id (fingerprinted ints and floats).
    fps: IdMap<u64>,
    dict_tid: Option<u64>,
    /// Ids per type id, when growth needs them.
    ids: Option<IdMap<Vec<u64>>>,
    pub chunks: u64,
    pub payload_bytes: u64,
    /// Records dropped because their id was already counted.
    pub repeats: u64,
}

impl CensusBuilder {
    /// `keep_ids`: remember every object's id per type (for `growth`'s new
    /// objects; 8 bytes per object).
    pub fn new(keep_ids: bool) -> CensusBuilder {
        CensusBuilder {
            ids: keep_ids.then(IdMap::default),
            ..CensusBuilder::default()
        }
    }

    /// Adds one chunk frame (`header`, `payload`).
    pub fn feed(&mut self, header: &Value, payload: &[u8]) -> Result<(), CensusError> {
        let field = |name: &'static str| {
            header
                .get(name)
                .and_then(Value::as_u64)
                .ok_or(CensusError::MissingField(name))
        };
        match header.get("k").and_then(Value::as_str) {
            Some("census") => {}
            Some(other) => return Err(CensusError::UnknownKind(other.to_string())),
            None => return Err(CensusError::MissingField("k")),
        }
        let w = field("w")?;
        if w != 4 && w != 8 {
            return Err(CensusError::WordSize(w));
        }
        let le = header.get("le").and_then(Value::as_bool).unwrap_or(true);
        if le != cfg!(target_endian = "little") {
            return Err(CensusError::ByteOrder);
        }
        let (nt, nu, no) = (field("nt")?, field("nu")?, field("no")?);
        let nf = header.get("nf").and_then(Value::as_u64).unwrap_or(0);
        if let Some(dt) = header.get("dt").and_then(Value::as_u64) {
            self.dict_tid = Some(dt);
        }
        let expected =
            (u128::from(nt) * 3 + u128::from(nu) * 3 + u128::from(no) * 2 + u128::from(nf) * 2)
                * u128::from(w);
        if expected != payload.len() as u128 {
            return Err(CensusError::PayloadSize {
                got: payload.len(),
                expected,
            });
        }
        let w = w as usize;
        let word = |i: usize| -> u64 {
            let b = &payload[i * w..(i + 1) * w];
            if w == 8 {
                u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))
            } else {
                u64::from(u32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
            }
        };
        let (nt, nu, no, nf) = (nt as usize, nu as usize, no as usize, nf as usize);
        let base = 3 * nt + 3 * nu + 2 * no;
        for i in 0..nf {
            self.fps.insert(word(base + i), word(base + nf + i));
        }
        for i in 0..nt {
            self.add(word(i), word(nt + i), word(2 * nt + i), true);
        }
        let base = 3 * nt;
        for i in 0..nu {
            self.add(
                word(base + i),
                word(base + nu + i),
                word(base + 2 * nu + i),
                false,
            );
        }
        let base = 3 * nt + 3 * nu;
        for i in 0..no {
            self.owners
                .entry(word(base + i))
                .or_insert(word(base + no + i));
        }
        self.chunks += 1;
        self.payload_bytes += payload.len() as u64;
        Ok(())
    }

    fn add(&mut self, id: u64, tid: u64, size: u64, tracked: bool) {
        let id = match self.fps.get(&id) {
            Some(fp) if !tracked => fingerprint_key(id, *fp),
            _ => id,
        };
        if !self.seen.insert(id) {
            self.repeats += 1;
            return;
        }
        if self.dict_tid == Some(tid) {
            self.dicts.push(DictRec { id, size, tracked });
            return;
        }
        let a = self.aggs.entry(tid).or_default();
        if tracked {
            a.tracked += 1;
        } else {
            a.untracked += 1;
        }
        a.size = a.size.saturating_add(size);
        if let Some(ids) = &mut self.ids {
            ids.entry(tid).or_default().push(id);
        }
    }

    /// The census, from the op's final `result`.
    pub fn finish(self, result: &Value) -> Result<Census, CensusError> {
        let stats: AgentStats = serde_json::from_value(result.clone())
            .map_err(|e| CensusError::BadResult(e.to_string()))?;
        let mut types: IdMap<TypeInfo> = IdMap::default();
        for entry in result
            .get("types")
            .and_then(Value::as_array)
            .ok_or_else(|| CensusError::BadResult("no `types`".into()))?
        {
            let Some(tid) = entry.get(0).and_then(Value::as_u64) else {
                return Err(CensusError::BadResult(format!("bad type entry {entry}")));
            };
            types.insert(
                tid,
                TypeInfo {
                    module: entry.get(1).and_then(Value::as_str).map(str::to_string),
                    qualname: entry
                        .get(2)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    pre: entry.get(3).and_then(Value::as_u64).unwrap_or(0),
                },
            );
        }
        let dict_tid = self
            .dict_tid
            .or_else(|| result.get("dict_tid").and_then(Value::as_u64));

        // Rows keyed by display name (several type objects can share a name:
        // a class re-created in a loop shows as one row with `classes` > 1).
        let mut rows: BTreeMap<String, TypeRow> = BTreeMap::new();
        let mut ids_by_name: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut keep = self.ids;
        for (tid, a) in &self.aggs {
            let info = types.get(tid);
            let pre = info.map_or(0, |i| i.pre);
            let row = row_for(&mut rows, RowKind::Type, *tid, info);
            row.count += a.tracked + a.untracked;
            row.tracked += a.tracked;
            row.size = row
                .size
                .saturating_add(a.size)
                .saturating_add(a.untracked.saturating_mul(pre));
            if let Some(ids) = keep.as_mut().and_then(|m| m.remove(tid)) {
                ids_by_name.entry(row.name.clone()).or_default().extend(ids);
            }
        }
        let dict_pre = dict_tid.and_then(|t| types.get(&t)).map_or(0, |i| i.pre);
        // Dicts of modules and classes the agent found to be its own (left
        // over by earlier sessions) after their records were sent.
        let drop: IdSet = result
            .get("drop_dicts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        for d in self.dicts.iter().filter(|d| !drop.contains(&d.id)) {
            let (kind, tid) = match self.owners.get(&d.id) {
                Some(owner) => (RowKind::DictOf, *owner),
                None => (RowKind::Type, dict_tid.unwrap_or(0)),
            };
            let info = types.get(&tid);
            let row = row_for(&mut rows, kind, tid, info);
            row.count += 1;
            row.size = row
                .size
                .saturating_add(d.size)
                .saturating_add(if d.tracked { 0 } else { dict_pre });
            if d.tracked {
                row.tracked += 1;
            }
            if keep.is_some() {
                ids_by_name.entry(row.name.clone()).or_default().push(d.id);
            }
        }
        let mut rows: Vec<TypeRow> = rows.into_values().collect();
        for r in &mut rows {
            r.classes = r.tids.len() as u64;
        }
        rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
        let count = rows.iter().map(|r| r.count).sum();
        let size = rows.iter().map(|r| r.size).sum();
        let tracked = rows.iter().map(|r| r.tracked).sum();
        let ids = keep.map(|_| {
            ids_by_name
                .into_iter()
                .map(|(k, mut v)| {
                    v.sort_unstable();
                    (k, v)
                })
                .collect()
        });
        Ok(Census {
            rows,
            count,
            size,
            tracked,
            untracked: count - tracked,
            gc_only: stats.gc_only,
            dict_tid: dict_tid.unwrap_or(0),
            chunks: self.chunks,
            payload_bytes: self.payload_bytes,
            repeats: self.repeats,
            stats,
            ids,
        })
    }
}

fn row_for<'a>(
    rows: &'a mut BTreeMap<String, TypeRow>,
    kind: RowKind,
    tid: u64,
    info: Option<&TypeInfo>,
) -> &'a mut TypeRow {
    let (module, qualname) = match info {
        Some(i) => (i.module.clone(), i.qualname.clone()),
        None => (None, format!("<type {tid:#x}>")),
    };
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

#[derive(Debug, Clone)]
struct TypeInfo {
    module: Option<String>,
    qualname: String,
    pre: u64,
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

// ---------------------------------------------------------------------------
// Growth over several censuses.

/// How steadily a count grew, from the counts alone, in [0, 1]: the
/// fraction of intervals in which it grew, times its consistency (net growth
/// over the total absolute change, so ups and downs cancel). 1.0: it grew in
/// every interval and never shrank; churn (up, down, up) and one-off steps
/// score low. Types that did not grow overall score 0.
pub fn growth_score(counts: &[u64]) -> f64 {
    if counts.len() < 2 {
        return 0.0;
    }
    let intervals = (counts.len() - 1) as f64;
    let mut grew = 0u64;
    let mut total_abs: u128 = 0;
    for w in counts.windows(2) {
        if w[1] > w[0] {
            grew += 1;
        }
        total_abs += u128::from(w[1].abs_diff(w[0]));
    }
    let first = counts[0];
    let last = counts[counts.len() - 1];
    if last <= first || total_abs == 0 {
        return 0.0;
    }
    let net = u128::from(last - first) as f64;
    (grew as f64 / intervals) * (net / total_abs as f64)
}

/// The share of the objects born between the first and the last census
/// that are still there: net growth / born, in [0, 1] (1 when unknown).
/// A leak keeps everything it makes (1.0); a bounded structure filling up
/// or a churning type that drifts upwards replaces objects as it goes, so
/// most of what it made is gone again.
pub fn retention(net: i64, born: Option<u64>) -> f64 {
    match born {
        Some(b) if b > 0 => (net.max(0) as f64 / b as f64).min(1.0),
        _ => 1.0,
    }
}

/// One type across the censuses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrowthRow {
    pub name: String,
    pub kind: RowKind,
    pub module: Option<String>,
    pub counts: Vec<u64>,
    pub sizes: Vec<u64>,
    /// Count change per interval.
    pub deltas: Vec<i64>,
    pub delta_count: i64,
    pub delta_size: i64,
    /// Objects present in the last census and not in the first (by id), and
    /// the other way round; None when ids were not kept.
    pub born: Option<u64>,
    pub died: Option<u64>,
    /// growth_score(counts) x retention(delta_count, born).
    pub score: f64,
    /// score >= MONOTONIC_THRESHOLD.
    pub monotonic: bool,
    /// Sample reprs of objects that are new since the first census.
    pub new_objects: Vec<NewObject>,
    #[serde(skip)]
    pub builtin: bool,
    /// Acceptable type ids of its objects (for repr lookups).
    #[serde(skip)]
    pub object_tids: Vec<u64>,
}

/// A sampled new object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewObject {
    pub id: u64,
    /// None when the object was gone by the time we asked.
    pub repr: Option<String>,
}

fn signed(a: u64, b: u64) -> i64 {
    (i128::from(b) - i128::from(a)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Per-type series over `censuses` (oldest first), only types whose count
/// or size changed, with births and deaths from the first and last
/// censuses' ids when they kept them. See [`growth_rows_with`].
pub fn growth_rows(censuses: &[&Census]) -> Vec<GrowthRow> {
    match (censuses.first(), censuses.last()) {
        (Some(a), Some(b)) if censuses.len() >= 2 => {
            growth_rows_with(censuses, |name| turnover(a, b, name))
        }
        _ => growth_rows_with(censuses, |_| None),
    }
}

/// [`growth_rows`] with births and deaths per name from `turnover`. Order:
/// monotonic growers first (user-defined types before builtins: a class's
/// growth usually explains the str/dict/list growth that comes with it),
/// then by size growth; then the other changes by size change.
pub fn growth_rows_with(
    censuses: &[&Census],
    turnover: impl Fn(&str) -> Option<(u64, u64)>,
) -> Vec<GrowthRow> {
    let n = censuses.len();
    let mut by_name: BTreeMap<&str, GrowthRow> = BTreeMap::new();
    for (i, c) in censuses.iter().enumerate() {
        for r in &c.rows {
            let g = by_name.entry(r.name.as_str()).or_insert_with(|| GrowthRow {
                name: r.name.clone(),
                kind: r.kind,
                module: r.module.clone(),
                counts: vec![0; n],
                sizes: vec![0; n],
                deltas: Vec::new(),
                delta_count: 0,
                delta_size: 0,
                born: None,
                died: None,
                score: 0.0,
                monotonic: false,
                new_objects: Vec::new(),
                builtin: r.is_builtin(),
                object_tids: Vec::new(),
            });
            g.counts[i] = r.count;
            g.sizes[i] = r.size;
            let tids: &[u64] = match r.kind {
                RowKind::Type => &r.tids,
                RowKind::DictOf => std::slice::from_ref(&c.dict_tid),
            };
            for t in tids {
                if !g.object_tids.contains(t) {
                    g.object_tids.push(*t);
                }
            }
        }
    }
    let mut rows: Vec<GrowthRow> = by_name
        .into_values()
        .filter_map(|mut g| {
            g.deltas = g.counts.windows(2).map(|w| signed(w[0], w[1])).collect();
            g.delta_count = signed(g.counts[0], g.counts[n - 1]);
            g.delta_size = signed(g.sizes[0], g.sizes[n - 1]);
            if let Some((born, died)) = turnover(&g.name) {
                g.born = Some(born);
                g.died = Some(died);
            }
            g.score = growth_score(&g.counts) * retention(g.delta_count, g.born);
            g.monotonic = g.score >= MONOTONIC_THRESHOLD;
            let changed =
                g.deltas.iter().any(|d| *d != 0) || g.sizes.windows(2).any(|w| w[0] != w[1]);
            changed.then_some(g)
        })
        .collect();
    rows.sort_by(|a, b| {
        b.monotonic
            .cmp(&a.monotonic)
            .then_with(|| {
                if a.monotonic {
                    a.builtin.cmp(&b.builtin)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| {
                if a.monotonic {
                    b.delta_size.cmp(&a.delta_size)
                } else {
                    b.delta_size
                        .unsigned_abs()
                        .cmp(&a.delta_size.unsigned_abs())
                }
            })
            .then_with(|| b.delta_count.cmp(&a.delta_count))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// (born, died) for row `name` between two censuses that kept their ids:
/// objects whose id is only in `last`, and only in `first`. (An address
/// reused by a new object of the same type counts as neither.)
pub fn turnover(first: &Census, last: &Census, name: &str) -> Option<(u64, u64)> {
    let a = first.ids.as_ref()?.get(name).map_or(&[][..], Vec::as_slice);
    let b = last.ids.as_ref()?.get(name).map_or(&[][..], Vec::as_slice);
    let (mut i, mut j, mut born, mut died) = (0, 0, 0u64, 0u64);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                died += 1;
                i += 1;
            }
            (Some(_), None) => {
                died += 1;
                i += 1;
            }
            _ => {
                born += 1;
                j += 1;
            }
        }
    }
    Some((born, died))
}

/// Up to `k` ids present in `last` but not in `first` for row `name`, spread
/// over the new ones (ids are sorted, so these come from different parts of
/// the heap).
pub fn new_ids(first: &Census, last: &Census, name: &str, k: usize) -> Vec<u64> {
    let empty = Vec::new();
    let (Some(a), Some(b)) = (first.ids.as_ref(), last.ids.as_ref()) else {
        return Vec::new();
    };
    let before = a.get(name).unwrap_or(&empty);
    let now = b.get(name).unwrap_or(&empty);
    let fresh: Vec<u64> = now
        .iter()
        .copied()
        .filter(|id| id >> 63 == 0 && before.binary_search(id).is_err())
        .collect();
    if fresh.len() <= k {
        return fresh;
    }
    (0..k).map(|i| fresh[i * fresh.len() / k]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    fn head(nt: u64, nu: u64, no: u64) -> Value {
        json!({"k": "census", "w": 8, "le": cfg!(target_endian = "little"), "dt": 1, "nt": nt, "nu": nu, "no": no})
    }

    fn result(types: Value) -> Value {
        json!({"types": types, "gc_only": false, "listed": 3, "max_hold_s": 0.01})
    }

    #[test]
    fn aggregates_dedupes_and_attributes_dicts() {
        let mut b = CensusBuilder::new(true);
        // Tracked: an instance (100) of type 10, its dict (200, type 1), a list (300, type 11).
        // Untracked: a str (400, type 12) seen twice, an untracked tuple (500, type 13).
        let payload = words(&[
            100, 200, 300, 10, 1, 11, 48, 104, 72, // tracked
            400, 400, 500, 12, 12, 13, 60, 60, 40, // untracked
            200, 10, // owners
        ]);
        b.feed(&head(3, 3, 1), &payload).unwrap();
        // Another chunk repeating the str and a second str.
        b.feed(&head(0, 2, 0), &words(&[400, 401, 12, 12, 60, 61]))
            .unwrap();
        let c = b
            .finish(&result(json!([
                [1, "builtins", "dict", 16],
                [10, "app", "UserSession", 0],
                [11, "builtins", "list", 16],
                [12, "builtins", "str", 0],
                [13, "builtins", "tuple", 16],
            ])))
            .unwrap();
        assert_eq!(c.count, 6);
        assert_eq!(c.tracked, 3);
        assert_eq!(c.untracked, 3);
        assert_eq!(c.repeats, 2);
        let s = c.row("str").unwrap();
        assert_eq!((s.count, s.size, s.tracked), (2, 121, 0));
        let d = c.row("dict of app.UserSession").unwrap();
        assert_eq!((d.count, d.size, d.kind), (1, 104, RowKind::DictOf));
        assert!(c.row("dict").is_none());
        // Untracked tuple: 40 + pre 16.
        assert_eq!(c.row("tuple").unwrap().size, 56);
        assert_eq!(c.rows[0].name, "str");
        assert_eq!(c.size, 48 + 104 + 72 + 121 + 56);
        let ids = c.ids.as_ref().unwrap();
        assert_eq!(ids["str"], vec![400, 401]);
        assert_eq!(ids["dict of app.UserSession"], vec![200]);
    }

    #[test]
    fn fingerprints_tell_reused_addresses_apart() {
        let mut b = CensusBuilder::new(true);
        let h = |nu: u64, nf: u64| {
            let mut h = head(0, nu, 0);
            h["nf"] = json!(nf);
            h
        };
        // An int at 500 with hash 7, referenced twice: one object.
        b.feed(&h(2, 1), &words(&[500, 500, 3, 3, 28, 28, 500, 7]))
            .unwrap();
        // Later the address holds another int (hash 9): a second object.
        b.feed(&h(1, 1), &words(&[500, 3, 28, 500, 9])).unwrap();
        // A str at an address once used by an int is not fingerprinted.
        b.feed(&head(1, 0, 0), &words(&[500, 4, 50])).unwrap();
        let c = b
            .finish(&result(json!([
                [3, "builtins", "int", 0],
                [4, "builtins", "str", 0]
            ])))
            .unwrap();
        assert_eq!(c.row("int").unwrap().count, 2);
        assert_eq!(c.row("str").unwrap().count, 1);
        let keys = &c.ids.as_ref().unwrap()["int"];
        assert!(keys.iter().all(|k| k >> 63 == 1));
        // Fingerprinted keys are never offered as ids to look up.
        let empty = Census {
            ids: Some(BTreeMap::new()),
            ..c.clone()
        };
        assert!(new_ids(&empty, &c, "int", 3).is_empty());
    }

    #[test]
    fn dropped_dicts_are_not_counted() {
        let mut b = CensusBuilder::new(false);
        b.feed(&head(2, 0, 0), &words(&[100, 101, 1, 1, 64, 64]))
            .unwrap();
        let mut r = result(json!([[1, "builtins", "dict", 16]]));
        r["drop_dicts"] = json!([101]);
        let c = b.finish(&r).unwrap();
        assert_eq!((c.count, c.row("dict").unwrap().count), (1, 1));
    }

    #[test]
    fn same_name_types_merge_into_one_row() {
        let mut b = CensusBuilder::new(false);
        b.feed(&head(2, 0, 0), &words(&[1000, 1001, 20, 21, 56, 56]))
            .unwrap();
        let c = b
            .finish(&result(json!([
                [20, "m", "Point", 0],
                [21, "m", "Point", 0]
            ])))
            .unwrap();
        let r = c.row("m.Point").unwrap();
        assert_eq!((r.count, r.classes), (2, 2));
    }

    #[test]
    fn rejects_malformed_chunks() {
        let mut b = CensusBuilder::new(false);
        assert!(matches!(
            b.feed(&head(1, 0, 0), &[0u8; 23]),
            Err(CensusError::PayloadSize {
                got: 23,
                expected: 24
            })
        ));
        let mut h = head(0, 0, 0);
        h["w"] = json!(3);
        assert_eq!(b.feed(&h, &[]), Err(CensusError::WordSize(3)));
        h["w"] = json!(8);
        h["k"] = json!("other");
        assert!(matches!(b.feed(&h, &[]), Err(CensusError::UnknownKind(_))));
        let h = json!({"k": "census", "w": 8});
        assert_eq!(b.feed(&h, &[]), Err(CensusError::MissingField("nt")));
        // Absurd counts cannot overflow the size check.
        let h = json!({"k": "census", "w": 8, "nt": u64::MAX, "nu": u64::MAX, "no": u64::MAX});
        assert!(matches!(
            b.feed(&h, &[]),
            Err(CensusError::PayloadSize { .. })
        ));
        assert!(CensusBuilder::new(false).finish(&json!({})).is_err());
    }

    #[test]
    fn unknown_type_ids_get_a_placeholder_name() {
        let mut b = CensusBuilder::new(false);
        b.feed(&head(1, 0, 0), &words(&[5, 0xabc, 16])).unwrap();
        let c = b.finish(&result(json!([]))).unwrap();
        assert_eq!(c.rows[0].name, "<type 0xabc>");
    }

    #[test]
    fn score_rewards_steady_growth_only() {
        assert_eq!(growth_score(&[10, 20, 30, 40, 50]), 1.0);
        assert_eq!(growth_score(&[10, 10, 10]), 0.0);
        assert_eq!(growth_score(&[50, 40, 30]), 0.0);
        assert_eq!(growth_score(&[5]), 0.0);
        // One flat interval out of four.
        assert!((growth_score(&[10, 20, 20, 30, 40]) - 0.75).abs() < 1e-9);
        // Churn: up 10, down 10, up 10, down 9 → net 1 of 39 moved.
        let churn = growth_score(&[100, 110, 100, 110, 101]);
        assert!(churn < 0.05, "{churn}");
        // A one-off step then flat.
        assert!((growth_score(&[10, 100, 100, 100, 100]) - 0.25).abs() < 1e-9);
        assert!(growth_score(&[0, u64::MAX]) > 0.99);
    }

    fn census_with(rows: &[(&str, Option<&str>, u64, u64)], ids: &[(&str, Vec<u64>)]) -> Census {
        Census {
            rows: rows
                .iter()
                .map(|(n, m, c, s)| TypeRow {
                    name: n.to_string(),
                    kind: RowKind::Type,
                    module: m.map(str::to_string),
                    qualname: n.to_string(),
                    count: *c,
                    tracked: *c,
                    size: *s,
                    classes: 1,
                    tids: vec![7],
                })
                .collect(),
            count: 0,
            size: 0,
            tracked: 0,
            untracked: 0,
            gc_only: false,
            dict_tid: 1,
            chunks: 0,
            payload_bytes: 0,
            repeats: 0,
            stats: AgentStats::default(),
            ids: Some(
                ids.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn growth_puts_steady_user_types_first() {
        let a = census_with(
            &[
                ("str", None, 100, 5000),
                ("app.S", Some("app"), 10, 480),
                ("list", None, 50, 4000),
            ],
            &[],
        );
        let b = census_with(
            &[
                ("str", None, 130, 8000),
                ("app.S", Some("app"), 20, 960),
                ("list", None, 40, 3000),
            ],
            &[],
        );
        let c = census_with(
            &[
                ("str", None, 160, 11000),
                ("app.S", Some("app"), 30, 1440),
                ("list", None, 50, 4000),
            ],
            &[],
        );
        let rows = growth_rows(&[&a, &b, &c]);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app.S", "str", "list"]);
        assert!(rows[0].monotonic && rows[1].monotonic && !rows[2].monotonic);
        assert_eq!(rows[0].deltas, vec![10, 10]);
        assert_eq!((rows[1].delta_count, rows[1].delta_size), (60, 6000));
        assert_eq!(rows[2].delta_size, 0);
        // Unchanged types are left out.
        let rows = growth_rows(&[&a, &a]);
        assert!(rows.is_empty());
    }

    #[test]
    fn retention_tells_a_leak_from_a_fill_up() {
        assert_eq!(retention(100, Some(100)), 1.0);
        assert!((retention(26, Some(93)) - 0.2796).abs() < 1e-3);
        assert_eq!(retention(-5, Some(10)), 0.0);
        assert_eq!(retention(5, None), 1.0);
        assert_eq!(retention(5, Some(0)), 1.0);
        // Same counts, different turnover.
        let a = census_with(&[("int", None, 100, 2800)], &[("int", (0..100).collect())]);
        let b = census_with(&[("int", None, 110, 3080)], &[("int", (5..115).collect())]);
        let c = census_with(
            &[("int", None, 120, 3360)],
            &[("int", (0..100).chain(200..220).collect())],
        );
        let churn = growth_rows(&[
            &a,
            &b,
            &census_with(&[("int", None, 120, 3360)], &[("int", (50..170).collect())]),
        ]);
        assert_eq!((churn[0].born, churn[0].died), (Some(70), Some(50)));
        assert!(!churn[0].monotonic, "{}", churn[0].score);
        let leak = growth_rows(&[&a, &b, &c]);
        assert_eq!((leak[0].born, leak[0].died), (Some(20), Some(0)));
        assert_eq!(leak[0].score, 1.0);
    }

    #[test]
    fn turnover_counts_both_sides() {
        let a = census_with(&[], &[("x", vec![1, 2, 3, 4])]);
        let b = census_with(&[], &[("x", vec![2, 4, 5, 6, 7])]);
        assert_eq!(turnover(&a, &b, "x"), Some((3, 2)));
        assert_eq!(turnover(&a, &b, "nothing"), Some((0, 0)));
        let no_ids = Census {
            ids: None,
            ..a.clone()
        };
        assert_eq!(turnover(&no_ids, &b, "x"), None);
    }

    #[test]
    fn new_ids_are_spread_over_the_new_ones() {
        let a = census_with(&[], &[("x", vec![1, 2, 3])]);
        let b = census_with(&[], &[("x", vec![1, 2, 3, 10, 11, 12, 13, 14, 15])]);
        assert_eq!(new_ids(&a, &b, "x", 3), vec![10, 12, 14]);
        assert_eq!(new_ids(&a, &b, "x", 10), vec![10, 11, 12, 13, 14, 15]);
        assert!(new_ids(&a, &b, "y", 3).is_empty());
    }
}
