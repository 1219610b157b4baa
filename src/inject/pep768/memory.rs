//! Memory access for the PEP 768 path: [`crate::process::memory`] with
//! errors mapped to [`Pep768Error`], and the check that a range is writable
//! before anything is written.

use std::io;

use super::{MAX_USER_ADDR, Pep768Error};
use crate::process::Process;
use crate::process::memory;

pub use memory::force_proc_mem_on_this_thread;
#[cfg(test)]
pub(super) use memory::{proc_mem_read, proc_mem_write, vm_read, vm_write};

/// Reading and writing the target's memory: `process_vm_readv`/`writev`,
/// or `/proc/PID/mem` where those do not exist (ENOSYS).
pub(super) struct Remote<'a> {
    pub(super) proc: &'a Process,
}

impl Remote<'_> {
    pub(super) fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub(super) fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Pep768Error> {
        self.checked(addr, buf.len() as u64, "read")?;
        memory::read(self.pid(), addr, buf)
            .map_err(|e| self.error(e, "read", addr, buf.len() as u64))
    }

    pub(super) fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Pep768Error> {
        self.checked(addr, buf.len() as u64, "write")?;
        memory::write(self.pid(), addr, buf)
            .map_err(|e| self.error(e, "write", addr, buf.len() as u64))
    }

    fn checked(&self, addr: u64, len: u64, op: &'static str) -> Result<(), Pep768Error> {
        if addr == 0 || addr.checked_add(len).is_none_or(|end| end > MAX_USER_ADDR) {
            return Err(Pep768Error::Memory {
                pid: self.pid(),
                op,
                addr,
                len,
                source: io::Error::new(io::ErrorKind::InvalidInput, "address outside user space"),
            });
        }
        Ok(())
    }

    fn error(&self, e: io::Error, op: &'static str, addr: u64, len: u64) -> Pep768Error {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ESRCH) => {
                self.proc.diagnose(self.proc.path("mem"), e).into()
            }
            _ => Pep768Error::Memory {
                pid: self.pid(),
                op,
                addr,
                len,
                source: e,
            },
        }
    }

    pub(super) fn read_u64(&self, addr: u64) -> Result<u64, Pep768Error> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    pub(super) fn read_i32(&self, addr: u64) -> Result<i32, Pep768Error> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(i32::from_ne_bytes(b))
    }
}

/// Whether `[addr, addr+len)` lies in writable mappings (contiguous ones may
/// share the range). `/proc/PID/mem` writes even read-only pages, so every
/// write is checked against maps first.
pub(super) fn writable(maps: &[crate::process::maps::Mapping], addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let mut at = addr;
    while at < end {
        match maps
            .iter()
            .find(|m| m.start <= at && at < m.end && m.writable() && !m.shared())
        {
            Some(m) => at = m.end,
            None => return false,
        }
    }
    true
}
