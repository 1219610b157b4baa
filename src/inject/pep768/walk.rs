//! The target: finding and validating its `_Py_DebugOffsets` table, then
//! walking the runtime to the main interpreter and its thread states in the
//! target's memory. Reads only.

use std::collections::HashSet;

use super::memory::Remote;
use super::offsets::{DebugOffsets, LAYOUTS, TableError, pos, u64_at};
use super::{MAX_INTERPRETERS, MAX_THREADS, MAX_USER_ADDR, Pep768Error, RemoteThread};
use crate::process::Process;
use crate::python::{PythonProcess, PythonVersion};

/// The table and main interpreter of one process, validated.
pub(super) struct Target<'a> {
    pub(super) mem: Remote<'a>,
    pub(super) runtime: u64,
    pub(super) off: DebugOffsets,
    pub(super) interp: u64,
}

impl<'a> Target<'a> {
    pub(super) fn open(proc: &'a Process, py: &PythonProcess) -> Result<Target<'a>, Pep768Error> {
        let (runtime, off) = read_offsets(proc, py)?;
        let mem = Remote { proc };
        let interp = find_main_interp(&mem, runtime, &off)?;
        Ok(Target {
            mem,
            runtime,
            off,
            interp,
        })
    }

    fn pid(&self) -> u32 {
        self.mem.pid()
    }

    pub(super) fn enabled(&self) -> Result<bool, Pep768Error> {
        Ok(self
            .mem
            .read_i32(self.interp + self.off.remote_debugging_enabled)?
            == 1)
    }

    /// `threads_main`, checked to be a thread state of this interpreter
    /// (0 when there is none).
    pub(super) fn main_tstate(&self) -> Result<u64, Pep768Error> {
        let t = self.mem.read_u64(self.interp + self.off.threads_main)?;
        if t != 0 {
            self.pointer(t, "interpreter_state.threads_main")?;
            self.belongs(t, self.mem.read_u64(t + self.off.tstate_interp)?)?;
        }
        Ok(t)
    }

    /// The round trip `tstate->interp == interp` (what py-spy and pystack
    /// check before trusting a candidate).
    fn belongs(&self, tstate: u64, its_interp: u64) -> Result<(), Pep768Error> {
        if its_interp != self.interp {
            return Err(Pep768Error::Corrupt {
                pid: self.pid(),
                reason: format!(
                    "thread state {tstate:#x} names interpreter {its_interp:#x}, not {:#x}",
                    self.interp
                ),
            });
        }
        Ok(())
    }

    fn pointer(&self, p: u64, what: &str) -> Result<(), Pep768Error> {
        check_pointer(p, self.off.tstate_size.max(8)).map_err(|why| Pep768Error::Corrupt {
            pid: self.pid(),
            reason: format!("{what} is {p:#x}: {why}"),
        })
    }

    pub(super) fn threads(&self) -> Result<Vec<RemoteThread>, Pep768Error> {
        let main = self.main_tstate()?;
        let locked = self.mem.read_i32(self.interp + self.off.gil_locked)?;
        let holder = self.mem.read_u64(self.interp + self.off.gil_holder)?;
        let span = self.off.tstate_span() as usize;
        let mut buf = vec![0u8; span];
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut t = self.mem.read_u64(self.interp + self.off.threads_head)?;
        while t != 0 {
            self.pointer(t, "a thread_state.next")?;
            if !seen.insert(t) || out.len() >= MAX_THREADS {
                return Err(Pep768Error::Corrupt {
                    pid: self.pid(),
                    reason: format!("the thread list loops or exceeds {MAX_THREADS} entries"),
                });
            }
            self.mem.read(t, &mut buf)?;
            let field = |o: u64| u64_at(&buf, o as usize).unwrap_or(0);
            self.belongs(t, field(self.off.tstate_interp))?;
            out.push(RemoteThread {
                native_tid: field(self.off.native_thread_id),
                tstate_addr: t,
                has_frame: field(self.off.current_frame) != 0,
                holds_gil: locked != 0 && holder == t,
                is_main: t == main,
            });
            t = field(self.off.tstate_next);
        }
        Ok(out)
    }
}

/// Pointers read from the target: non-null, 8-aligned, in user space with
/// room for the structure.
fn check_pointer(p: u64, size: u64) -> Result<(), &'static str> {
    if p == 0 {
        return Err("null");
    }
    if !p.is_multiple_of(8) {
        return Err("misaligned");
    }
    if p.checked_add(size).is_none_or(|end| end > MAX_USER_ADDR) {
        return Err("outside user space");
    }
    Ok(())
}

/// Finds and validates the target's `_Py_DebugOffsets`. Returns the address
/// of `_PyRuntime` (= the table) and the offsets.
pub fn read_offsets(
    proc: &Process,
    py: &PythonProcess,
) -> Result<(u64, DebugOffsets), Pep768Error> {
    let pid = proc.pid;
    let unsupported = |reason: String| Pep768Error::Unsupported { pid, reason };
    if let Some(v) = py.version
        && (v.major, v.minor) < (3, 14)
    {
        let why = if (v.major, v.minor) == (3, 13) {
            "it has a debug-offsets table but no remote-debugging support"
        } else {
            "it has no debug-offsets table"
        };
        return Err(unsupported(format!(
            "it runs Python {v}, and {why} (PEP 768 needs 3.14 or later)"
        )));
    }
    if let Some(elf) = py.elf() {
        if !elf.is_64 {
            return Err(unsupported(
                "it is a 32-bit process, which memsleuth does not drive".into(),
            ));
        }
        if elf.little_endian != cfg!(target_endian = "little") {
            return Err(unsupported(
                "its byte order differs from memsleuth's".into(),
            ));
        }
    }
    // Candidates: the section (the note's §1 rule), else the symbol.
    let mut cands: Vec<(u64, Option<u64>)> = Vec::new();
    if let Some((addr, size)) = py
        .section_address(".PyRuntime")
        .filter(|&(a, s)| a != 0 && s != 0)
    {
        cands.push((addr, Some(size)));
    }
    if let Some(addr) = py.symbol_address("_PyRuntime").filter(|&a| a != 0)
        && cands.iter().all(|c| c.0 != addr)
    {
        cands.push((addr, None));
    }
    if cands.is_empty() {
        return Err(unsupported(format!(
            "{} has neither a .PyRuntime section nor a _PyRuntime symbol",
            py.binary.display()
        )));
    }
    let mem = Remote { proc };
    let max_table = LAYOUTS.iter().map(|l| l.table_size).max().unwrap_or(0);
    let mut first_err = None;
    for (addr, section_size) in cands {
        let mut header = [0u8; pos::HEADER];
        mem.read(addr, &mut header)?;
        // Read what the claimed version's layout needs (capped), then parse.
        let len = LAYOUTS
            .iter()
            .find(|l| {
                u64_at(&header, pos::VERSION)
                    .and_then(|v| u32::try_from(v).ok())
                    .and_then(PythonVersion::from_hex)
                    .is_some_and(|v| v.major == 3 && v.minor == l.minor)
            })
            .map_or(pos::HEADER, |l| l.table_size)
            .min(max_table);
        let mut bytes = vec![0u8; len];
        bytes[..pos::HEADER].copy_from_slice(&header);
        if len > pos::HEADER {
            mem.read(addr + pos::HEADER as u64, &mut bytes[pos::HEADER..])?;
        }
        let result = DebugOffsets::parse(&bytes, py.version).and_then(|o| match section_size {
            Some(size) if o.runtime_size > size => Err(TableError::Malformed(format!(
                "runtime_state.size {} exceeds the {size}-byte .PyRuntime section",
                o.runtime_size
            ))),
            _ => Ok(o),
        });
        match result {
            Ok(o) => return Ok((addr, o)),
            Err(e) => {
                first_err.get_or_insert(match e {
                    TableError::Unsupported(reason) => Pep768Error::Unsupported { pid, reason },
                    TableError::Malformed(reason) => Pep768Error::BadTable { pid, addr, reason },
                });
            }
        }
    }
    Err(first_err.unwrap_or_else(|| unsupported("no table found".into())))
}

/// `interpreters_head` → `next` to the interpreter with id 0.
pub(super) fn find_main_interp(
    mem: &Remote,
    runtime: u64,
    off: &DebugOffsets,
) -> Result<u64, Pep768Error> {
    let pid = mem.pid();
    let bad = |reason: String| Pep768Error::Corrupt { pid, reason };
    let mut interp = mem.read_u64(runtime + off.interpreters_head)?;
    if interp == 0 {
        return Err(Pep768Error::NoInterpreter {
            pid,
            reason: "interpreters.head is NULL".into(),
        });
    }
    let mut seen = HashSet::new();
    while interp != 0 {
        check_pointer(interp, off.interp_size)
            .map_err(|why| bad(format!("an interpreter pointer is {interp:#x}: {why}")))?;
        if !seen.insert(interp) || seen.len() > MAX_INTERPRETERS {
            return Err(bad(format!(
                "the interpreter list loops or exceeds {MAX_INTERPRETERS} entries"
            )));
        }
        if mem.read_u64(interp + off.interp_id)? == 0 {
            return Ok(interp);
        }
        interp = mem.read_u64(interp + off.interp_next)?;
    }
    Err(Pep768Error::NoInterpreter {
        pid,
        reason: "no interpreter with id 0 in the list".into(),
    })
}
