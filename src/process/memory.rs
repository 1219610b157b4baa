//! Reading and writing another process's memory: the one place that calls
//! `process_vm_readv`/`writev` or opens `/proc/PID/mem`.
//!
//! `process_vm_readv` is the fast path (one syscall, no open, up to 1024
//! ranges at once). Kernels built without CONFIG_CROSS_MEMORY_ATTACH return
//! ENOSYS; from then on every call goes to `/proc/PID/mem` (sticky, process
//! wide). Both need the same permission (ptrace attach rights over the
//! target), so the fallback never widens what we can do.
//!
//! Measured behaviour the batch reader relies on: more than 1024 iovecs is
//! EINVAL; an unmapped first remote byte is EFAULT; otherwise the count
//! stops short at the first unmapped page, even inside one iovec.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The kernel's limit on iovecs per call (`IOV_MAX`).
pub const MAX_IOVECS: usize = 1024;

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

/// Whether calls go to `/proc/PID/mem` (no cross-memory syscalls, or forced).
pub fn uses_proc_mem() -> bool {
    NO_VM_RW.load(Ordering::Relaxed) || FORCE_PROC_MEM.with(|f| f.get())
}

fn note(e: &io::Error) {
    if e.raw_os_error() == Some(libc::ENOSYS) {
        NO_VM_RW.store(true, Ordering::Relaxed);
    }
}

/// Reads exactly `buf.len()` bytes at `addr`: `process_vm_readv`, or
/// `/proc/PID/mem` where that syscall does not exist.
pub fn read(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    if !uses_proc_mem() {
        match vm_read(pid, addr, buf) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => note(&e),
            other => return other,
        }
    }
    proc_mem_read(pid, addr, buf)
}

/// Writes all of `buf` at `addr`: `process_vm_writev`, or `/proc/PID/mem`
/// where that syscall does not exist. Note that `/proc/PID/mem` also
/// writes read-only pages; callers check writability first if it matters.
pub fn write(pid: u32, addr: u64, buf: &[u8]) -> io::Result<()> {
    if !uses_proc_mem() {
        match vm_write(pid, addr, buf) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => note(&e),
            other => return other,
        }
    }
    proc_mem_write(pid, addr, buf)
}

/// `process_vm_readv` only, looping over short counts; EFAULT when a page
/// is missing.
pub fn vm_read(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = addr
            .checked_add(done as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        let rest = &mut buf[done..];
        let local = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
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

/// `process_vm_writev` only, looping over short counts.
pub fn vm_write(pid: u32, addr: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = addr
            .checked_add(done as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        let rest = &buf[done..];
        let local = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
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

fn mem_path(pid: u32) -> String {
    format!("/proc/{pid}/mem")
}

/// Reads through `/proc/PID/mem` (EIO where a page is unmapped).
pub fn proc_mem_read(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    File::open(mem_path(pid))?.read_exact_at(buf, addr)
}

/// Writes through `/proc/PID/mem`, which also writes read-only pages.
pub fn proc_mem_write(pid: u32, addr: u64, buf: &[u8]) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(mem_path(pid))?
        .write_all_at(buf, addr)
}

/// One range of a batched read: `buf.len()` bytes wanted at `addr`.
pub struct Chunk<'a> {
    pub addr: u64,
    pub buf: &'a mut [u8],
    /// Bytes filled from the start of `buf` (a short read stops at the
    /// first page that could not be read).
    pub filled: usize,
}

impl<'a> Chunk<'a> {
    pub fn new(addr: u64, buf: &'a mut [u8]) -> Chunk<'a> {
        Chunk {
            addr,
            buf,
            filled: 0,
        }
    }
}

/// Reads many ranges with as few syscalls as possible: up to
/// [`MAX_IOVECS`] ranges per `process_vm_readv`, resuming after the range
/// where a short count stopped. A range whose pages vanished keeps what was
/// read before the hole (`filled`). Errors only when nothing can be read at
/// all for a reason other than a missing page (the process is gone, no
/// permission): then it returns that error.
pub fn read_chunks(pid: u32, chunks: &mut [Chunk]) -> io::Result<u64> {
    for c in chunks.iter_mut() {
        c.filled = 0;
    }
    if uses_proc_mem() {
        return proc_mem_read_chunks(pid, chunks);
    }
    let mut total = 0u64;
    let mut i = 0usize;
    while i < chunks.len() {
        let end = (i + MAX_IOVECS).min(chunks.len());
        let mut local = Vec::with_capacity(end - i);
        let mut remote = Vec::with_capacity(end - i);
        for c in &mut chunks[i..end] {
            local.push(libc::iovec {
                iov_base: c.buf.as_mut_ptr().cast(),
                iov_len: c.buf.len(),
            });
            remote.push(libc::iovec {
                iov_base: c.addr as *mut libc::c_void,
                iov_len: c.buf.len(),
            });
        }
        // SAFETY: every local iovec is a distinct buffer we own for its
        // length; the remote ones are only dereferenced by the kernel.
        let n = unsafe {
            libc::process_vm_readv(
                pid as libc::pid_t,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The first range is unmapped: skip it, go on with the next.
                Some(libc::EFAULT) => {
                    i += 1;
                    continue;
                }
                Some(libc::ENOSYS) => {
                    note(&e);
                    return proc_mem_read_chunks(pid, chunks);
                }
                _ => return Err(e),
            }
        }
        let mut left = n as usize;
        total += left as u64;
        let mut j = i;
        while j < end && left >= chunks[j].buf.len() {
            chunks[j].filled = chunks[j].buf.len();
            left -= chunks[j].buf.len();
            j += 1;
        }
        if j == end {
            i = end;
            continue;
        }
        // Stopped inside range j: keep its head, retry its tail past the
        // hole page by page would be costly; the rest of j is lost, and
        // the next call starts with range j + 1.
        chunks[j].filled = left;
        i = j + 1;
    }
    Ok(total)
}

/// Pieces of a parallel read are at most this big, so that one large
/// mapping (a big `[heap]`) is shared out too.
const PIECE: usize = 8 << 20;

/// Below this many bytes a parallel read is not worth its threads.
const PARALLEL_MIN: usize = 16 << 20;

/// [`read_chunks`] on up to `threads` threads: most of a bulk copy's time
/// is the kernel walking the target's page tables and copying, which
/// scales with cores while the target is paused. Chunks are cut into
/// pieces of at most 8 MiB and dealt out in runs of about equal bytes; a
/// chunk's `filled` stops at its first short piece, as a single read
/// stops at the first hole. Any thread's error is the result.
pub fn read_chunks_parallel(pid: u32, chunks: &mut [Chunk], threads: usize) -> io::Result<u64> {
    let total: usize = chunks.iter().map(|c| c.buf.len()).sum();
    let threads = threads.clamp(1, 16).min(total.div_ceil(PIECE).max(1));
    if threads == 1 || total < PARALLEL_MIN {
        return read_chunks(pid, chunks);
    }
    let forced = FORCE_PROC_MEM.with(|f| f.get());
    // (chunk index, piece) in address order of each chunk.
    let mut owner: Vec<usize> = Vec::new();
    let mut pieces: Vec<Chunk> = Vec::new();
    for (i, c) in chunks.iter_mut().enumerate() {
        c.filled = 0;
        let mut addr = c.addr;
        for buf in c.buf.chunks_mut(PIECE) {
            let len = buf.len() as u64;
            pieces.push(Chunk::new(addr, buf));
            owner.push(i);
            addr = addr.saturating_add(len);
        }
    }
    let share = total.div_ceil(threads);
    let mut runs: Vec<&mut [Chunk]> = Vec::with_capacity(threads);
    let mut rest: &mut [Chunk] = &mut pieces;
    while !rest.is_empty() {
        let mut bytes = 0usize;
        let mut n = 0usize;
        while n < rest.len() && (bytes < share || n == 0) {
            bytes += rest[n].buf.len();
            n += 1;
        }
        let (run, tail) = std::mem::take(&mut rest).split_at_mut(n);
        runs.push(run);
        rest = tail;
    }
    let results: Vec<io::Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| {
                s.spawn(move || {
                    force_proc_mem_on_this_thread(forced);
                    read_chunks(pid, run)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a copy thread panicked")))
            })
            .collect()
    });
    let mut copied = 0u64;
    for r in results {
        copied += r?;
    }
    let filled: Vec<(usize, usize, usize)> = pieces
        .iter()
        .zip(&owner)
        .map(|(p, &i)| (i, p.filled, p.buf.len()))
        .collect();
    drop(pieces);
    let mut stopped = vec![false; chunks.len()];
    for (i, got, len) in filled {
        if stopped[i] {
            continue;
        }
        chunks[i].filled += got;
        stopped[i] = got < len;
    }
    // Bytes read past a hole in the same chunk are not counted as kept.
    let kept: u64 = chunks.iter().map(|c| c.filled as u64).sum();
    Ok(kept.min(copied))
}

fn proc_mem_read_chunks(pid: u32, chunks: &mut [Chunk]) -> io::Result<u64> {
    let f = File::open(mem_path(pid))?;
    let mut total = 0u64;
    for c in chunks.iter_mut() {
        let mut done = 0usize;
        while done < c.buf.len() {
            match f.read_at(&mut c.buf[done..], c.addr + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EFAULT)) => {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        c.filled = done;
        total += done as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> usize {
        // SAFETY: plain libc query.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    /// Three pages with the middle one unmapped.
    fn holey() -> (*mut u8, usize) {
        let p = page();
        // SAFETY: fresh anonymous mapping, then its middle page unmapped.
        unsafe {
            let m = libc::mmap(
                std::ptr::null_mut(),
                3 * p,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert!(!m.is_null());
            std::ptr::write_bytes(m, 7, 3 * p);
            libc::munmap(m.add(p).cast(), p);
            (m, p)
        }
    }

    #[test]
    fn reads_and_writes_ourselves_both_ways() {
        let me = std::process::id();
        let src = *b"memsleuth-memory";
        let mut a = [0u8; 16];
        read(me, src.as_ptr() as u64, &mut a).unwrap();
        assert_eq!(a, src);
        let mut b = [0u8; 16];
        proc_mem_read(me, src.as_ptr() as u64, &mut b).unwrap();
        assert_eq!(b, src);
        let dst: *mut [u8; 8] = Box::into_raw(Box::new([0u8; 8]));
        // SAFETY: `dst` is a live, exclusively owned allocation.
        let now = || unsafe { std::ptr::read_volatile(dst) };
        write(me, dst as u64, b"written!").unwrap();
        assert_eq!(&now(), b"written!");
        force_proc_mem_on_this_thread(true);
        write(me, dst as u64, b"procmem!").unwrap();
        assert_eq!(&now(), b"procmem!");
        force_proc_mem_on_this_thread(false);
        // SAFETY: allocated above by Box::into_raw.
        drop(unsafe { Box::from_raw(dst) });
        assert!(read(me, 8, &mut a).is_err());
    }

    #[test]
    fn batched_reads_survive_holes_in_both_backends() {
        let me = std::process::id();
        let (m, p) = holey();
        for forced in [false, true] {
            force_proc_mem_on_this_thread(forced);
            let (mut a, mut b, mut c) = (vec![0u8; 2 * p], vec![0u8; 100], vec![0u8; 50]);
            let mut chunks = vec![
                Chunk::new(m as u64 + (p as u64) / 2, &mut a), // runs into the hole
                Chunk::new(m as u64 + p as u64, &mut b),       // inside the hole
                Chunk::new(m as u64 + 2 * p as u64, &mut c),   // after it
            ];
            let total = read_chunks(me, &mut chunks).unwrap();
            let filled: Vec<usize> = chunks.iter().map(|c| c.filled).collect();
            assert_eq!(filled, vec![p / 2, 0, 50], "forced={forced}");
            assert_eq!(total, (p / 2 + 50) as u64);
            assert!(a[..p / 2].iter().all(|&x| x == 7));
            assert!(c.iter().all(|&x| x == 7));
        }
        force_proc_mem_on_this_thread(false);
        // SAFETY: unmapping what holey() mapped (the hole is already gone).
        unsafe { libc::munmap(m.cast(), 3 * p) };
    }

    #[test]
    fn batches_past_the_iovec_limit() {
        let me = std::process::id();
        let src: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0u8; 3000];
        let mut chunks: Vec<Chunk> = out
            .chunks_mut(1)
            .enumerate()
            .map(|(i, b)| Chunk::new(src.as_ptr() as u64 + i as u64, b))
            .collect();
        assert_eq!(read_chunks(me, &mut chunks).unwrap(), 3000);
        drop(chunks);
        assert_eq!(out, src);
    }

    #[test]
    fn parallel_reads_equal_one_read_with_a_hole_inside_a_chunk() {
        let me = std::process::id();
        let p = page();
        let len = 40 << 20;
        // SAFETY: a fresh anonymous mapping of our own, filled, then one
        // page at 20 MiB unmapped.
        let m = unsafe {
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert!(!m.is_null());
            for i in 0..len / p {
                std::ptr::write_bytes(m.add(i * p), (i % 251) as u8, p);
            }
            libc::munmap(m.add(20 << 20).cast(), p);
            m
        };
        for forced in [false, true] {
            force_proc_mem_on_this_thread(forced);
            let mut a = vec![0u8; 30 << 20];
            let mut b = vec![0u8; 10 << 20];
            let mut chunks = vec![
                Chunk::new(m as u64, &mut a),
                Chunk::new(m as u64 + (30 << 20), &mut b),
            ];
            let n = read_chunks_parallel(me, &mut chunks, 4).unwrap();
            assert_eq!(chunks[0].filled, 20 << 20, "forced={forced}");
            assert_eq!(chunks[1].filled, 10 << 20);
            assert_eq!(n, 30 << 20);
            drop(chunks);
            for (i, pg) in a[..20 << 20].chunks(p).enumerate() {
                assert!(pg.iter().all(|&x| x == (i % 251) as u8));
            }
            let first = (30 << 20) / p;
            for (i, pg) in b.chunks(p).enumerate() {
                assert!(pg.iter().all(|&x| x == ((first + i) % 251) as u8));
            }
        }
        force_proc_mem_on_this_thread(false);
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(m.cast(), len) };
    }
}
