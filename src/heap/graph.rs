//! The whole reference graph read from memory, for retained sizes: every
//! object the census reaches (the collector's lists, then the untracked
//! objects they hold, recursively), each object's referents as
//! `tp_traverse` shows them ([`referents::decode`], validated like
//! [`referents::for_each`]), its size, and the reference count of each
//! gc-tracked one. Building the roots and the graph is
//! `analysis::retained::memory`'s (pure); naming the references on a few
//! chosen paths is [`labels`].
//!
//! Bounded: at most [`MAX_GRAPH_NODES`] objects and [`MAX_GRAPH_EDGES`]
//! references (a warning says when the walk stopped at a bound); every
//! address is validated before it is read as an object.

use std::collections::HashMap;
use std::time::Instant;

use super::dicts;
use super::error::HeapError;
use super::layout::{InstanceLayout, flags, tp};
use super::mem::Mem;
use super::names::Names;
use super::referents::{self, decode, owned_dict, plausible};
use super::roots::Interpreter;
use super::sizes::getsizeof;
use super::space::AddressSpace;
use super::strs;
use super::types::{Kind, TypeInfo, Types};
use super::walk::walk;
use crate::analysis::census::qualified;
use crate::analysis::refgraph::explain::{LabelsAnswer, NodeInfo};
use crate::analysis::refgraph::idmap::IdMap;
use crate::analysis::retained::memory::{IMMORTAL, MemoryParts};

/// Most objects in a graph read from memory.
pub const MAX_GRAPH_NODES: usize = 1 << 26;
/// Most references in a graph read from memory.
pub const MAX_GRAPH_EDGES: usize = 1 << 29;
/// Marks an address found not to be an object.
const NOT_OBJECT: u32 = u32::MAX;

/// The walk's result.
#[derive(Debug, Default)]
pub struct HeapGraphRead {
    pub parts: MemoryParts,
    /// Objects rejected as invalid, and references dropped at a bound.
    pub skipped: u64,
    pub warnings: Vec<String>,
    pub walk_s: f64,
    /// The collector was running when memory was read.
    pub collecting: bool,
}

/// Walks the heap in `space` into graph parts.
pub fn read_graph(
    space: &dyn AddressSpace,
    interp: &Interpreter,
) -> Result<HeapGraphRead, HeapError> {
    let started = Instant::now();
    let mem = Mem::new(space);
    let it = interp;
    let mut types = Types::new();
    let walked = walk(&mem, it, &mut types)?;
    let mut out = HeapGraphRead {
        skipped: walked.skipped,
        warnings: walked.warnings,
        collecting: walked.collecting,
        ..HeapGraphRead::default()
    };
    let listed = walked.tracked.len() + walked.permanent.len();
    // Untracked objects (str, int, float, ...) usually outnumber the
    // tracked ones: room for both without rehashing and regrowing.
    let guess = listed.saturating_mul(4).min(MAX_GRAPH_NODES);
    let mut index = IdMap::with_capacity(guess);
    let mut ti: Vec<u32> = Vec::with_capacity(guess);
    let p = &mut out.parts;
    p.addr.reserve(guess);
    p.size.reserve(guess);
    p.refcnt.reserve(guess);
    p.off.reserve(guess + 1);
    // The collector's lists (the permanent generation too: those objects
    // are live memory like any other), reference counts measured.
    for &o in walked.tracked.iter().chain(walked.permanent.iter()) {
        if p.addr.len() >= MAX_GRAPH_NODES {
            break;
        }
        let Some(t) = mem.u64(o + 8).and_then(|a| types.get(&mem, it, a)) else {
            continue;
        };
        let (_, new) = index.intern(o, p.addr.len() as u32);
        if !new {
            continue;
        }
        p.addr.push(o);
        ti.push(t);
        p.size.push(getsizeof(&mem, it, types.info(t), o));
        p.refcnt.push(refcnt(&mem, it, o));
    }
    // Referents, node by node; new (untracked) objects join the end.
    let mut found: Vec<(u64, bool)> = Vec::new();
    let mut dropped = 0u64;
    p.off.push(0);
    let mut i = 0usize;
    while i < p.addr.len() {
        let obj = p.addr[i];
        let t = types.info(ti[i]);
        if t.holds_refs() {
            found.clear();
            decode(&mem, it, t, obj, &mut |a, s| found.push((a, s)));
            for &(a, scanned) in &found {
                if !super::mem::valid_ptr(a) {
                    continue;
                }
                let d = match index.get(a) {
                    Some(NOT_OBJECT) => continue,
                    Some(d) => d,
                    None => match plausible(&mem, it, &mut types, a, scanned) {
                        Some(at) if p.addr.len() < MAX_GRAPH_NODES => {
                            let (d, _) = index.intern(a, p.addr.len() as u32);
                            p.addr.push(a);
                            ti.push(at);
                            p.size.push(getsizeof(&mem, it, types.info(at), a));
                            p.refcnt.push(0);
                            d
                        }
                        Some(_) => {
                            dropped += 1;
                            continue;
                        }
                        None => {
                            // A scanned word may still be an object another
                            // referrer names: only decoded ones are final.
                            if !scanned {
                                index.intern(a, NOT_OBJECT);
                            }
                            continue;
                        }
                    },
                };
                if p.dst.len() >= MAX_GRAPH_EDGES {
                    dropped += 1;
                    continue;
                }
                p.dst.push(d);
            }
        }
        p.off.push(p.dst.len() as u32);
        i += 1;
    }
    if dropped > 0 || p.addr.len() >= MAX_GRAPH_NODES {
        out.warnings.push(format!(
            "the heap graph stopped at its bound ({MAX_GRAPH_NODES} objects, {MAX_GRAPH_EDGES} references): {dropped} references left out"
        ));
        out.skipped += dropped;
    }
    // Types by name (the agent's census names), modules and classes.
    let mut names = Names::default();
    let mut by_name: HashMap<String, u32> = HashMap::new();
    let mut ty_of: Vec<u32> = vec![u32::MAX; types.infos.len()];
    p.ty = Vec::with_capacity(ti.len());
    for (n, &t) in ti.iter().enumerate() {
        let slot = &mut ty_of[t as usize];
        if *slot == u32::MAX {
            let (module, qual) = names.of(&mem, it, types.info(t).addr);
            let name = qualified(module.as_deref(), &qual);
            let next = p.type_names.len() as u32;
            *slot = *by_name.entry(name.clone()).or_insert_with(|| {
                p.type_names.push(name);
                next
            });
        }
        p.ty.push(*slot);
        match types.info(t).kind {
            Kind::Module => p.modules.push(n as u32),
            Kind::Type | Kind::ClassObj => p.classes.push(n as u32),
            _ => {}
        }
    }
    out.walk_s = started.elapsed().as_secs_f64();
    Ok(out)
}

/// The reference count of `obj` ([`IMMORTAL`] for 3.12+ immortal objects).
fn refcnt(mem: &Mem, it: &Interpreter, obj: u64) -> u32 {
    if it.layout.at_least(3, 12) {
        // The low half; immortal ones have the top bits set (3.12, 3.13:
        // all ones; 3.14+: from 3 << 30 down, never below 1 << 30).
        match mem.u32(obj) {
            Some(rc) if rc >= 1 << 30 => IMMORTAL,
            Some(rc) => rc,
            None => 0,
        }
    } else {
        match mem.i64(obj) {
            Some(rc) if rc >= i64::from(IMMORTAL) => IMMORTAL - 1,
            Some(rc) if rc > 0 => rc as u32,
            _ => 0,
        }
    }
}

/// Names for the references `edges` (referrer, referent) and the objects
/// `nodes` on the chosen paths, in the form `why`'s agent op gives them
/// (`['key']`, `[3]`, `__dict__`), from the same memory the graph was
/// read from.
pub fn labels(
    space: &dyn AddressSpace,
    interp: &Interpreter,
    edges: &[(u64, u64)],
    nodes: &[u64],
) -> LabelsAnswer {
    let mem = Mem::new(space);
    let it = interp;
    let mut types = Types::new();
    let mut names = Names::default();
    let mut out = LabelsAnswer::default();
    for &(s, d) in edges {
        let (kind, label) = edge_label(&mem, it, &mut types, s, d);
        out.edges.push((s, d, kind.to_string(), label));
    }
    for &n in nodes {
        out.nodes.insert(
            n.to_string(),
            node_info(&mem, it, &mut types, &mut names, n),
        );
    }
    out
}

/// (kind, label) as the agent's `refgraph_labels` names them.
fn edge_label(
    mem: &Mem,
    it: &Interpreter,
    types: &mut Types,
    s: u64,
    d: u64,
) -> (&'static str, String) {
    let unknown = ("unknown", "?".to_string());
    let Some(t) = mem.u64(s + 8).and_then(|a| types.get(mem, it, a)) else {
        return unknown;
    };
    let t = types.info(t).clone();
    match t.kind {
        Kind::Module => {
            if mem.u64(s + 16) == Some(d) {
                return ("dict", "__dict__".into());
            }
            return unknown;
        }
        Kind::Type => {
            let at = |off| mem.u64(s + off) == Some(d);
            if at(tp::DICT) {
                return ("dict", "__dict__".into());
            }
            for (off, name) in [
                (tp::MRO, ".__mro__"),
                (tp::BASES, ".__bases__"),
                (tp::BASE, ".__base__"),
            ] {
                if at(off) {
                    return ("attr", name.into());
                }
            }
            return unknown;
        }
        Kind::Dict | Kind::List | Kind::Tuple => {
            for (label, p) in referents::labelled(mem, it, types, s) {
                if p != d {
                    continue;
                }
                if let Some(k) = label.strip_suffix(" (key)") {
                    return (
                        "dictkey",
                        format!("key {}", py_key(k).trim_matches(['[', ']'])),
                    );
                }
                let kind = if t.kind == Kind::Dict { "key" } else { "index" };
                return (kind, py_key(&label));
            }
            return unknown;
        }
        Kind::Set => return ("member", "{…}".into()),
        _ => {}
    }
    if t.heap {
        if owned_dict(mem, it, &t, s) == Some(d) {
            return ("dict", "__dict__".into());
        }
        if let Some(name) = value_name(mem, it, &t, s, d) {
            return if is_identifier(&name) {
                ("attr", format!(".{name}"))
            } else {
                (
                    "key",
                    format!(
                        ".__dict__[{}]",
                        py_key(&format!("[{name:?}]")).trim_matches(['[', ']'])
                    ),
                )
            };
        }
    }
    unknown
}

/// The attribute name under which an instance keeps `d` in its values
/// (3.11+: split values shared with the class's cached keys, 3.13+ inline
/// values): entry `i` of the cached keys names value `i`.
fn value_name(mem: &Mem, it: &Interpreter, t: &TypeInfo, s: u64, d: u64) -> Option<String> {
    if t.flags & flags::MANAGED_DICT == 0 || t.cached_keys == 0 {
        return None;
    }
    let (vals, n) = match it.layout.instance {
        InstanceLayout::DictOffset => return None,
        InstanceLayout::Managed311 => {
            if mem.u64(s.wrapping_sub(24))? != 0 {
                return None;
            }
            (mem.ptr(s.wrapping_sub(32))?, None)
        }
        InstanceLayout::Managed312 => {
            let dv = mem.u64(s.wrapping_sub(24))?;
            if dv & 1 == 0 {
                return None;
            }
            (dv.wrapping_add(1), None)
        }
        InstanceLayout::Inline313 => {
            let v = s + t.basicsize;
            if t.flags & flags::INLINE_VALUES == 0 || mem.u8(v + 3) != Some(1) {
                return None;
            }
            (v + 8, Some(u64::from(mem.u8(v)?)))
        }
    };
    let keys = dicts::keys_311(mem, t.cached_keys)?;
    let n = n.unwrap_or(keys.nentries).min(keys.nentries).min(1 << 16);
    let stride = if keys.kind == 0 { 24 } else { 16 };
    let at = if keys.kind == 0 { 8 } else { 0 };
    for i in 0..n {
        if mem.u64(vals + 8 * i)? == d {
            let k = mem.u64(keys.entries + stride * i + at)?;
            return strs::read(mem, it, k);
        }
    }
    None
}

/// A Python identifier (ASCII rules are enough for a label).
fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f == '_' || f.is_alphabetic())
        && c.all(|x| x == '_' || x.is_alphanumeric())
}

/// `["key"]` (a Rust-quoted key from [`referents::labelled`]) as Python
/// shows it: `['key']`; other labels unchanged.
fn py_key(label: &str) -> String {
    if let Some(inner) = label
        .strip_prefix("[\"")
        .and_then(|r| r.strip_suffix("\"]"))
        && !inner.contains(['\\', '\'', '"'])
    {
        return format!("['{inner}']");
    }
    label.to_string()
}

/// What the path shows of one object.
fn node_info(
    mem: &Mem,
    it: &Interpreter,
    types: &mut Types,
    names: &mut Names,
    n: u64,
) -> NodeInfo {
    let mut info = NodeInfo {
        kind: "object".into(),
        ..NodeInfo::default()
    };
    let Some(t) = mem.u64(n + 8).and_then(|a| types.get(mem, it, a)) else {
        return info;
    };
    let t = types.info(t).clone();
    let (module, qual) = names.of(mem, it, t.addr);
    info.type_name = qualified(module.as_deref(), &qual);
    let len = |v: u64| Some(v.min(i64::MAX as u64) as i64);
    match t.kind {
        Kind::Module => {
            info.kind = "module".into();
            info.name = module_name(mem, it, n);
        }
        Kind::Type | Kind::ClassObj => {
            info.kind = "class".into();
            let (m, q) = names.of(mem, it, n);
            info.name = Some(qualified(m.as_deref(), &q));
        }
        Kind::Dict => {
            info.kind = "dict".into();
            let mut k = 0u64;
            dicts::entries(mem, it, n, &mut |_, _| k += 1);
            info.len = len(k);
        }
        Kind::List | Kind::Tuple => {
            info.kind = "container".into();
            info.len = len(mem.u64(n + 16).unwrap_or(0));
        }
        Kind::Set => {
            info.kind = "container".into();
            info.len = len(mem.u64(n + 24).unwrap_or(0));
        }
        _ => {}
    }
    info
}

/// `__name__` from a module's dict.
fn module_name(mem: &Mem, it: &Interpreter, m: u64) -> Option<String> {
    let d = mem.ptr(m + 16)?;
    let mut name = None;
    dicts::entries(mem, it, d, &mut |k, v| {
        if name.is_none() && strs::read(mem, it, k).as_deref() == Some("__name__") {
            name = strs::read(mem, it, v);
        }
    });
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_as_python_shows_them() {
        assert_eq!(py_key("[\"_cache\"]"), "['_cache']");
        assert_eq!(py_key("[\"it's\"]"), "[\"it's\"]");
        assert_eq!(py_key("[0x7f00]"), "[0x7f00]");
        assert!(is_identifier("_cache2"));
        assert!(!is_identifier("2x") && !is_identifier("a-b") && !is_identifier(""));
    }
}
