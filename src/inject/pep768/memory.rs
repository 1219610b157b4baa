//! Memory access: reading and writing the target's memory through
//! `process_vm_readv`/`writev`, or `/proc/PID/mem` where those do not exist,
//! and the check that a range is writable before anything is written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{MAX_USER_ADDR, Pep768Error};
use crate::process::Process;

/// Set after the first ENOSYS: the kernel lacks CONFIG_CROSS_MEMORY_ATTACH.
static NO_VM_RW: AtomicBool = AtomicBool::new(false);

thread_local! {
    static FORCE_PROC_MEM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests only: make this thread use `/proc/PID/mem` as if
/// `process_vm_readv`/`writev` returned ENOSYS.
#[doc(hidden)]
pub fn force_proc_mem_on_this_thread(on: bool) {
    FORCE_PROC_MEM.with(|f| f.set(on));
}

fn use_proc_mem() -> bool {
    NO_VM_RW.load(Ordering::Relaxed) || FORCE_PROC_MEM.with(|f| f.get())
}

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
        let res = if use_proc_mem() {
            proc_mem_read(self.proc, addr, buf)
        } else {
            match vm_read(self.pid(), addr, buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_VM_RW.store(true, Ordering::Relaxed);
                    proc_mem_read(self.proc, addr, buf)
                }
                other => other,
            }
        };
        res.map_err(|e| self.error(e, "read", addr, buf.len() as u64))
    }

    pub(super) fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Pep768Error> {
        self.checked(addr, buf.len() as u64, "write")?;
        let res = if use_proc_mem() {
            proc_mem_write(self.proc, addr, buf)
        } else {
            match vm_write(self.pid(), addr, buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_VM_RW.store(true, Ordering::Relaxed);
                    proc_mem_write(self.proc, addr, buf)
                }
                other => other,
            }
        };
        res.map_err(|e| self.error(e, "write", addr, buf.len() as u64))
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

pub(super) fn vm_read(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let local = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: (addr + done as u64) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: `local` describes memory we own exclusively for its length;
        // the remote range is only dereferenced by the kernel in the target.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        done += n as usize;
    }
    Ok(())
}

pub(super) fn vm_write(pid: u32, addr: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &buf[done..];
        let local = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: (addr + done as u64) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: the kernel only reads `local`, which we own for its length.
        let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        done += n as usize;
    }
    Ok(())
}

pub(super) fn proc_mem_read(proc: &Process, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    File::open(proc.path("mem"))?.read_exact_at(buf, addr)
}

pub(super) fn proc_mem_write(proc: &Process, addr: u64, buf: &[u8]) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(proc.path("mem"))?
        .write_all_at(buf, addr)
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
