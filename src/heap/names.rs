//! Type names as the agent's census gives them: `(module, qualname)` from
//! `type.__module__` and `type.__qualname__` (2.7: `__name__`), read from
//! memory: a static type's `tp_name`, a heap type's `ht_qualname` and its
//! dict's `__module__`, a 2.7 old-style class's `__name__` and `__module__`.

use super::dicts;
use super::layout::{flags, tp};
use super::mem::Mem;
use super::roots::Interpreter;
use super::strs;
use crate::analysis::census::IdMap;

#[derive(Debug, Default)]
pub struct Names {
    cache: IdMap<(Option<String>, String)>,
}

impl Names {
    /// `(module, qualname)` of the type (or 2.7 class) at `t`.
    pub fn of(&mut self, mem: &Mem, it: &Interpreter, t: u64) -> (Option<String>, String) {
        if let Some(n) = self.cache.get(&t) {
            return n.clone();
        }
        let n = name_of(mem, it, t).unwrap_or_else(|| (None, format!("<type {t:#x}>")));
        self.cache.insert(t, n.clone());
        n
    }
}

fn name_of(mem: &Mem, it: &Interpreter, t: u64) -> Option<(Option<String>, String)> {
    if !super::mem::valid_ptr(t) {
        return None;
    }
    let meta = mem.u64(t + 8)?;
    if meta != 0 && meta == it.builtins.classobj {
        let name = strs::read(mem, it, mem.u64(t + 32)?).unwrap_or_else(|| "?".into());
        let module = module_in(mem, it, mem.ptr(t + 24)?);
        return Some((module, name));
    }
    let fl = mem.u64(t + tp::FLAGS)?;
    let builtin_mod = if it.layout.major == 2 {
        "__builtin__"
    } else {
        "builtins"
    };
    if fl & flags::HEAPTYPE == 0 {
        let full = strs::cstr(mem, mem.u64(t + tp::NAME)?)?;
        return Some(match full.rsplit_once('.') {
            Some((m, q)) => (Some(m.to_string()), q.to_string()),
            None => (Some(builtin_mod.to_string()), full),
        });
    }
    let lay = &it.layout;
    let qual = lay
        .ht_qualname
        .and_then(|o| mem.u64(t + o))
        .and_then(|s| strs::read(mem, it, s))
        .or_else(|| {
            mem.u64(t + lay.ht_name)
                .and_then(|s| strs::read(mem, it, s))
        })
        .unwrap_or_else(|| "?".into());
    let module = module_in(mem, it, mem.ptr(t + tp::DICT)?);
    Some((module, qual))
}

/// `d['__module__']` when it is a str.
fn module_in(mem: &Mem, it: &Interpreter, d: u64) -> Option<String> {
    if d == 0 {
        return None;
    }
    let mut found = None;
    dicts::entries(mem, it, d, &mut |k, v| {
        if found.is_none() && strs::read(mem, it, k).as_deref() == Some("__module__") {
            found = Some(v);
        }
    });
    strs::read(mem, it, found?)
}
