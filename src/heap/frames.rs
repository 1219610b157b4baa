//! 3.11+ interpreter frames (`_PyInterpreterFrame`) embedded in the objects
//! that own them: a frame object whose function has returned (a traceback
//! keeps it) and every generator, coroutine and async generator. Their
//! locals are references like any container's, and their size counts the
//! code object's slots, so both are decoded as CPython does:
//! `_PyFrame_Traverse` for the referents (only up to the value stack's top:
//! past it lie stale pointers), `gen_sizeof` / `frame_sizeof` for the size.
//!
//! Layouts, measured on every 3.11–3.15 build here (a frame's
//! `localsplus` starts at 72, 80 from 3.14; the code object is at 32 on
//! 3.11, at 0 after, a tagged `_PyStackRef` from 3.14; the stack's top is
//! an `int` count at 64 up to 3.13, a pointer at 64 after).

use super::layout::Layout;
use super::mem::{Mem, valid_ptr};
use super::referents::Sink;
use super::roots::Interpreter;

/// Where the fields of a 3.11+ interpreter frame and its owners are.
#[derive(Debug, Clone, Copy)]
pub struct FrameLayout {
    /// `offsetof(_PyInterpreterFrame, localsplus)`.
    localsplus: u64,
    /// The code object (`f_code` / `f_executable`).
    code: u64,
    /// `f_funcobj` (3.11: `f_func`), `f_locals`, `frame_obj`.
    func: u64,
    locals: u64,
    frame_obj: u64,
    /// `_PyStackRef`s (3.14+): low bits are tags, `0b11` a tagged int.
    tagged: bool,
    /// The stack's top at 64 is a pointer (3.14+), else an `int` count.
    stack_pointer: bool,
    /// `owner` (a char; 2 = owned by a frame object).
    owner: u64,
    /// In the code object: `co_nlocalsplus` and `co_stacksize` (ints).
    nlocalsplus: u64,
    stacksize: u64,
    /// In a generator: `gi_frame_state` (int8), and the first state whose
    /// frame is cleared (`FRAME_CLEARED`).
    gen_state: u64,
    cleared: i8,
}

const OWNED_BY_FRAME_OBJECT: u8 = 2;
/// A frame object's `f_frame`: where its interpreter frame is.
const F_FRAME: u64 = 24;
/// More slots than any code object has (the compiler's limit is far lower).
const MAX_SLOTS: u64 = 1 << 20;

impl FrameLayout {
    pub fn of(lay: &Layout) -> Option<FrameLayout> {
        if !lay.at_least(3, 11) || lay.major != 3 {
            return None;
        }
        let py311 = lay.minor == 11;
        let py314 = lay.at_least(3, 14);
        Some(FrameLayout {
            localsplus: if py314 { 80 } else { 72 },
            code: if py311 { 32 } else { 0 },
            func: if py311 { 0 } else { 16 },
            locals: if py311 { 24 } else { 40 },
            frame_obj: if py311 { 40 } else { 48 },
            tagged: py314,
            stack_pointer: py314,
            owner: match lay.minor {
                11 => 69,
                12 | 13 => 70,
                _ => 74,
            },
            nlocalsplus: if py311 { 76 } else { 72 },
            stacksize: if py311 { 68 } else { 64 },
            gen_state: if py311 { 75 } else { 67 },
            cleared: if lay.at_least(3, 15) { 5 } else { 4 },
        })
    }

    /// A reference stored in a frame: untagged, or None for a tagged int.
    fn reference(&self, v: u64) -> Option<u64> {
        if !self.tagged {
            return Some(v);
        }
        (v & 3 != 3).then_some(v & !3)
    }

    /// The code object of the frame at `iframe`.
    fn code_of(&self, mem: &Mem, it: &Interpreter, iframe: u64) -> Option<u64> {
        let code = self.reference(mem.ptr(iframe + self.code)?)?;
        (valid_ptr(code) && mem.u64(code + 8)? == it.builtins.code).then_some(code)
    }

    /// Slots the code object reserves in a frame: locals, cells, free
    /// variables and the value stack.
    fn slots(&self, mem: &Mem, code: u64) -> Option<u64> {
        let n = u64::from(mem.u32(code + self.nlocalsplus)?);
        let s = u64::from(mem.u32(code + self.stacksize)?);
        (n < MAX_SLOTS && s < MAX_SLOTS).then_some(n + s)
    }

    /// The basic size and a slot per local and stack entry of the code of
    /// the frame at `iframe`.
    fn sized(&self, mem: &Mem, it: &Interpreter, basicsize: u64, iframe: u64) -> Option<u64> {
        let code = self.code_of(mem, it, iframe)?;
        Some(basicsize + 8 * self.slots(mem, code)?)
    }

    /// `_PyFrame_Traverse`: the frame object, locals dict, function and
    /// code, then the locals and the value stack up to its top.
    fn traverse(&self, mem: &Mem, it: &Interpreter, iframe: u64, f: &mut Sink) {
        for off in [self.frame_obj, self.locals, self.func, self.code] {
            if let Some(p) = mem.u64(iframe + off).and_then(|v| self.reference(v)) {
                f(p, false);
            }
        }
        let Some(slots) = self
            .code_of(mem, it, iframe)
            .and_then(|c| self.slots(mem, c))
        else {
            return;
        };
        let base = iframe + self.localsplus;
        let top = if self.stack_pointer {
            match mem.u64(iframe + 64) {
                Some(sp) if sp >= base && (sp - base).is_multiple_of(8) => (sp - base) / 8,
                _ => return,
            }
        } else {
            match mem.u32(iframe + 64).map(|n| n as i32) {
                Some(n) if n >= 0 => n as u64,
                _ => return,
            }
        };
        mem.words(base, top.min(slots), &mut |v| {
            if let Some(p) = self.reference(v) {
                f(p, false);
            }
        });
    }
}

/// Where the frame inside an object starts: it is the object's last
/// field, the type's basic size ends at its `localsplus`, and the object's
/// own fields before it take at least `head` bytes.
fn inline_frame(fl: &FrameLayout, basicsize: u64, obj: u64, head: u64) -> Option<u64> {
    basicsize
        .checked_sub(fl.localsplus)
        .filter(|&o| o >= head)
        .map(|o| obj + o)
}

/// A generator's head: its object header.
const GEN_HEAD: u64 = 16;
/// A frame object's: its header, `f_back` and `f_frame`.
const FRAME_HEAD: u64 = 32;

/// `gen_sizeof`: the fixed part and a slot per local and stack entry.
pub fn gen_size(mem: &Mem, it: &Interpreter, basicsize: u64, obj: u64) -> Option<u64> {
    let fl = FrameLayout::of(&it.layout)?;
    let iframe = inline_frame(&fl, basicsize, obj, GEN_HEAD)?;
    fl.sized(mem, it, basicsize, iframe)
}

/// `frame_sizeof` (3.11+): the same, for the code of the frame it shows
/// (its own data, or a running frame's on a thread's stack).
pub fn frame_size(mem: &Mem, it: &Interpreter, basicsize: u64, obj: u64) -> Option<u64> {
    let fl = FrameLayout::of(&it.layout)?;
    let iframe = mem.ptr(obj + F_FRAME).filter(|&p| valid_ptr(p))?;
    fl.sized(mem, it, basicsize, iframe)
}

/// A generator's referents past its head (which the caller scans): its
/// frame, unless the frame is cleared (`gen_traverse`).
pub fn gen_referents(mem: &Mem, it: &Interpreter, basicsize: u64, obj: u64, f: &mut Sink) {
    let Some(fl) = FrameLayout::of(&it.layout) else {
        return;
    };
    let Some(iframe) = inline_frame(&fl, basicsize, obj, GEN_HEAD) else {
        return;
    };
    match mem.u8(obj + fl.gen_state) {
        Some(s) if (s as i8) < fl.cleared => fl.traverse(mem, it, iframe, f),
        _ => {}
    }
}

/// Where the head of a generator or 3.11+ frame object ends (its own
/// fields, scanned word by word; the interpreter frame follows).
pub fn head_end(it: &Interpreter, basicsize: u64) -> u64 {
    FrameLayout::of(&it.layout).map_or(basicsize, |fl| basicsize.saturating_sub(fl.localsplus))
}

/// A 3.11+ frame object's own interpreter frame, when it owns it (the
/// function has returned): `frame_traverse`.
pub fn frame_referents(mem: &Mem, it: &Interpreter, basicsize: u64, obj: u64, f: &mut Sink) {
    let Some(fl) = FrameLayout::of(&it.layout) else {
        return;
    };
    let Some(own) = inline_frame(&fl, basicsize, obj, FRAME_HEAD) else {
        return;
    };
    if mem.ptr(obj + F_FRAME) == Some(own) && mem.u8(own + fl.owner) == Some(OWNED_BY_FRAME_OBJECT)
    {
        fl.traverse(mem, it, own, f);
    }
}
