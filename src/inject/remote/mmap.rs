//! Fresh memory in the target, mapped and unmapped by calling its own libc.

use std::time::Duration;

use super::Tracee;
use crate::inject::ptrace::{PtraceError, Result};

/// `PROT_READ | PROT_WRITE`, `MAP_PRIVATE | MAP_ANONYMOUS`.
const MMAP_PROT: u64 = (libc::PROT_READ | libc::PROT_WRITE) as u64;
const MMAP_FLAGS: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;

/// Maps `len` bytes of fresh read-write memory in the target by calling its
/// libc `mmap` (no locks taken, unlike malloc).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn remote_mmap(t: &mut Tracee, mmap_addr: u64, len: usize, timeout: Duration) -> Result<u64> {
    let r = t.call(
        mmap_addr,
        &[
            0,
            len as u64,
            MMAP_PROT,
            MMAP_FLAGS,
            u64::MAX, /* fd -1 */
            0,
        ],
        timeout,
    )?;
    // MAP_FAILED is (void *)-1; a raw-syscall style -errno is also refused.
    if r == u64::MAX || r >= (-4095i64) as u64 || r == 0 || r % 4096 != 0 {
        return Err(PtraceError::RemoteCallFailed {
            function: "mmap",
            detail: format!("returned {:#x}", r),
        });
    }
    Ok(r)
}

/// Unmaps what [`remote_mmap`] mapped.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn remote_munmap(
    t: &mut Tracee,
    munmap_addr: u64,
    addr: u64,
    len: usize,
    timeout: Duration,
) -> Result<()> {
    let r = t.call(munmap_addr, &[addr, len as u64], timeout)? as u32 as i32;
    if r != 0 {
        return Err(PtraceError::RemoteCallFailed {
            function: "munmap",
            detail: format!("returned {r}"),
        });
    }
    Ok(())
}
