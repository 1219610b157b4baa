//! A copy of a live target's writable memory, taken while it is paused.
//!
//! Lazy reads cost ~0.6 µs a syscall and a census needs 5–10 reads per
//! object, so the heap is copied in bulk instead: every readable and
//! writable mapping (the heap, pymalloc arenas, thread stacks, libpython's
//! `.data`/`.bss`, home of the static objects) in a few `process_vm_readv`
//! calls, at a few GB/s. The decoder then reads local memory.
//!
//! To keep the pause short, the buffers are allocated and faulted in
//! *before* the pause ([`Prepared`]); while paused only the maps are read
//! again (new or resized mappings get fresh buffers) and copied. What lies
//! outside the copy (type names in `.rodata`) is read lazily from the
//! running process afterwards and cached: read-only data does not change.

use std::collections::HashMap;
use std::sync::Mutex;

use super::arena::Arena;
use super::space::AddressSpace;
use crate::process::maps::Mapping;
use crate::process::memory::{self, Chunk};
use crate::process::{ProcError, Process};

const PAGE: u64 = 4096;

/// Cached lazy pages at most (4 KiB each): 64 MiB.
const MAX_LAZY_PAGES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(
        "copying process {pid}'s writable memory needs {need_mib} MiB but only {avail_mib} MiB are available on this machine; free memory, or use --inject to census it from inside"
    )]
    TooBig {
        pid: u32,
        need_mib: u64,
        avail_mib: u64,
    },
    #[error("process {pid} exited while memsleuth was copying its memory; nothing left to read")]
    Exited { pid: u32 },
    #[error("cannot read process {pid}'s memory: {detail}")]
    Denied { pid: u32, detail: String },
    #[error("cannot read process {pid}'s memory: {source}")]
    Io { pid: u32, source: std::io::Error },
}

/// Whether a mapping is copied: readable and writable, not the kernel's
/// `[vvar]`/`[vsyscall]`, and not a shared mapping of a device.
pub fn wanted(m: &Mapping) -> bool {
    if !m.readable() || !m.writable() || m.size() == 0 {
        return false;
    }
    let path = m.path.as_str();
    if matches!(path, "[vvar]" | "[vvar_vclock]" | "[vsyscall]" | "[vdso]") {
        return false;
    }
    let device = path.starts_with("/dev/")
        && !path.starts_with("/dev/shm/")
        && !path.starts_with("/dev/zero");
    !(m.shared() && device)
}

/// One copied mapping: `len` bytes (what was read) at `start`, stored at
/// `offset` of arena `arena`.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    len: u64,
    arena: usize,
    offset: usize,
}

/// Buffers allocated for the mappings seen before the pause.
pub struct Prepared {
    pid: u32,
    ranges: Vec<(u64, u64)>,
    arena: Arena,
}

impl Prepared {
    /// Reads the maps, checks the size against available memory, and
    /// allocates (and faults in) the buffers. Does not touch the target.
    pub fn new(pid: u32) -> Result<Prepared, SnapshotError> {
        let maps = Process::open(pid)?.maps()?;
        Prepared::with_maps(pid, &maps)
    }

    /// [`Prepared::new`] with the maps already read.
    pub fn with_maps(pid: u32, maps: &[Mapping]) -> Result<Prepared, SnapshotError> {
        let ranges: Vec<(u64, u64)> = maps
            .iter()
            .filter(|m| wanted(m))
            .map(|m| (m.start, m.end))
            .collect();
        let need: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        check_budget(pid, need)?;
        let arena =
            Arena::new(need as usize).map_err(|source| SnapshotError::Io { pid, source })?;
        Ok(Prepared { pid, ranges, arena })
    }

    /// Bytes the copy will take.
    pub fn bytes(&self) -> u64 {
        self.arena.len() as u64
    }

    /// Copies the memory; call while the target is paused. The maps are
    /// read again: a mapping that appeared or changed since [`Prepared::new`]
    /// gets a buffer of its own.
    pub fn copy(self) -> Result<Snapshot, SnapshotError> {
        let pid = self.pid;
        let proc = Process::unchecked(pid);
        let maps = proc.maps().map_err(|e| {
            if e.is_gone() {
                SnapshotError::Exited { pid }
            } else {
                e.into()
            }
        })?;
        let mut prepared_at: HashMap<(u64, u64), usize> = HashMap::new();
        let mut off = 0usize;
        for &(a, b) in &self.ranges {
            prepared_at.insert((a, b), off);
            off += (b - a) as usize;
        }
        let now: Vec<(u64, u64)> = maps
            .iter()
            .filter(|m| wanted(m))
            .map(|m| (m.start, m.end))
            .collect();
        let extra_len: u64 = now
            .iter()
            .filter(|r| !prepared_at.contains_key(r))
            .map(|(a, b)| b - a)
            .sum();
        if extra_len > 0 {
            check_budget(pid, self.arena.len() as u64 + extra_len)?;
        }
        let mut extra =
            Arena::new(extra_len as usize).map_err(|source| SnapshotError::Io { pid, source })?;
        let mut arenas = vec![self.arena];
        let mut regions = Vec::with_capacity(now.len());
        let mut extra_off = 0usize;
        for &(a, b) in &now {
            let len = (b - a) as usize;
            match prepared_at.get(&(a, b)) {
                Some(&o) => regions.push(Region {
                    start: a,
                    len: len as u64,
                    arena: 0,
                    offset: o,
                }),
                None => {
                    regions.push(Region {
                        start: a,
                        len: len as u64,
                        arena: 1,
                        offset: extra_off,
                    });
                    extra_off += len;
                }
            }
        }
        // Split the arenas into one buffer per region, then read them all.
        let copied;
        {
            let mut bufs0 = carve(arenas[0].bytes_mut(), &regions, 0);
            let mut bufs1 = carve(extra.bytes_mut(), &regions, 1);
            let mut chunks: Vec<Chunk> = Vec::with_capacity(regions.len());
            let mut order: Vec<usize> = Vec::with_capacity(regions.len());
            for (i, r) in regions.iter().enumerate() {
                let buf = if r.arena == 0 {
                    bufs0.remove(&i)
                } else {
                    bufs1.remove(&i)
                };
                if let Some(buf) = buf {
                    chunks.push(Chunk::new(r.start, buf));
                    order.push(i);
                }
            }
            match memory::read_chunks_parallel(pid, &mut chunks, super::threads()) {
                Ok(n) => copied = n,
                Err(e) => return Err(io_error(pid, e)),
            }
            for (c, &i) in chunks.iter().zip(&order) {
                regions[i].len = c.filled as u64;
            }
        }
        if copied == 0 && !now.is_empty() {
            // Nothing at all: the process died between the maps and the read.
            if Process::unchecked(pid).stat().is_err() {
                return Err(SnapshotError::Exited { pid });
            }
        }
        arenas.push(extra);
        regions.retain(|r| r.len > 0);
        regions.sort_by_key(|r| r.start);
        Ok(Snapshot {
            pid,
            regions,
            arenas,
            copied,
            lazy: Mutex::new(HashMap::new()),
        })
    }
}

/// Cuts `bytes` into the buffers of the regions stored in arena `which`.
fn carve<'a>(
    mut bytes: &'a mut [u8],
    regions: &[Region],
    which: usize,
) -> HashMap<usize, &'a mut [u8]> {
    let mut out = HashMap::new();
    let mut mine: Vec<(usize, &Region)> = regions
        .iter()
        .enumerate()
        .filter(|(_, r)| r.arena == which)
        .collect();
    mine.sort_by_key(|(_, r)| r.offset);
    let mut at = 0usize;
    for (i, r) in mine {
        let skip = r.offset - at;
        let (_, rest) = std::mem::take(&mut bytes).split_at_mut(skip);
        let (buf, rest) = rest.split_at_mut(r.len as usize);
        out.insert(i, buf);
        bytes = rest;
        at = r.offset + r.len as usize;
    }
    out
}

fn io_error(pid: u32, e: std::io::Error) -> SnapshotError {
    match e.raw_os_error() {
        Some(libc::ESRCH) => SnapshotError::Exited { pid },
        Some(libc::EPERM) | Some(libc::EACCES) => SnapshotError::Denied {
            pid,
            detail: Process::unchecked(pid)
                .diagnose(Process::unchecked(pid).path("mem"), e)
                .to_string(),
        },
        _ => SnapshotError::Io { pid, source: e },
    }
}

/// Refuses a copy larger than three quarters of the available memory.
fn check_budget(pid: u32, need: u64) -> Result<(), SnapshotError> {
    budget(pid, need, mem_available().unwrap_or(u64::MAX))
}

fn budget(pid: u32, need: u64, avail: u64) -> Result<(), SnapshotError> {
    if need > avail / 4 * 3 {
        return Err(SnapshotError::TooBig {
            pid,
            need_mib: need >> 20,
            avail_mib: avail >> 20,
        });
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, in bytes (`MEMSLEUTH_MEM_AVAILABLE`
/// overrides it, for tests).
fn mem_available() -> Option<u64> {
    if let Ok(v) = std::env::var("MEMSLEUTH_MEM_AVAILABLE") {
        return v.trim().parse().ok();
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The copied memory, with lazy reads of the running process for the rest.
pub struct Snapshot {
    pid: u32,
    regions: Vec<Region>,
    arenas: Vec<Arena>,
    copied: u64,
    /// Pages read lazily (None: unreadable), by page address.
    lazy: Mutex<HashMap<u64, Option<Box<[u8]>>>>,
}

impl Snapshot {
    /// Copies without pausing (the caller pauses around [`Prepared::copy`]
    /// for a consistent copy).
    pub fn take(pid: u32) -> Result<Snapshot, SnapshotError> {
        Prepared::new(pid)?.copy()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Bytes copied from the target.
    pub fn copied_bytes(&self) -> u64 {
        self.copied
    }

    /// The copied ranges, `(start, len)`, in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.regions.iter().map(|r| (r.start, r.len))
    }

    fn region(&self, addr: u64) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.start <= addr);
        let r = self.regions.get(i.checked_sub(1)?)?;
        (addr - r.start < r.len).then_some(r)
    }

    fn copied_slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let r = self.region(addr)?;
        let off = (addr - r.start) as usize;
        let end = off.checked_add(len)?;
        if end as u64 > r.len {
            return None;
        }
        self.arenas[r.arena]
            .bytes()
            .get(r.offset + off..r.offset + end)
    }

    /// One byte range from the lazily read pages.
    fn lazy_read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let page = addr & !(PAGE - 1);
        let off = (addr - page) as usize;
        let Ok(mut cache) = self.lazy.lock() else {
            return false;
        };
        if !cache.contains_key(&page) {
            if cache.len() >= MAX_LAZY_PAGES {
                cache.clear();
            }
            let mut p = vec![0u8; PAGE as usize].into_boxed_slice();
            let ok = memory::read(self.pid, page, &mut p).is_ok();
            cache.insert(page, ok.then_some(p));
        }
        match cache.get(&page) {
            Some(Some(p)) => {
                buf.copy_from_slice(&p[off..off + buf.len()]);
                true
            }
            _ => false,
        }
    }
}

impl AddressSpace for Snapshot {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        let mut at = addr;
        while at < end {
            let done = (at - addr) as usize;
            if let Some(r) = self.region(at) {
                let n = (r.start + r.len - at).min(end - at) as usize;
                let Some(s) = self.copied_slice(at, n) else {
                    return false;
                };
                buf[done..done + n].copy_from_slice(s);
                at += n as u64;
            } else {
                let page_end = (at & !(PAGE - 1)) + PAGE;
                let n = (page_end.min(end) - at) as usize;
                if !self.lazy_read(at, &mut buf[done..done + n]) {
                    return false;
                }
                at += n as u64;
            }
        }
        true
    }

    fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.copied_slice(addr, len)
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .map(|r| (r.start, r.start + r.len))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_our_own_memory_and_reads_across_the_boundary() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let snap = Snapshot::take(std::process::id()).unwrap();
        assert!(snap.copied_bytes() > 100_000);
        let mut out = vec![0u8; data.len()];
        assert!(snap.read(data.as_ptr() as u64, &mut out));
        assert_eq!(out, data);
        assert!(snap.slice(data.as_ptr() as u64, 16).is_some());
        // Read-only data comes lazily.
        static TEXT: &[u8] = b"a string in .rodata, outside the copy";
        let mut t = vec![0u8; TEXT.len()];
        assert!(snap.read(TEXT.as_ptr() as u64, &mut t));
        assert_eq!(t, TEXT);
        assert!(!snap.read(8, &mut t));
        assert!(!snap.read(u64::MAX - 2, &mut t));
        assert_eq!(snap.read_u64(0), None);
    }

    #[test]
    fn refuses_above_the_budget() {
        let err = budget(1, 800 << 20, 1000 << 20).err().unwrap();
        assert_eq!(
            err.to_string(),
            "copying process 1's writable memory needs 800 MiB but only 1000 MiB are available on this machine; free memory, or use --inject to census it from inside"
        );
        assert!(budget(1, 700 << 20, 1000 << 20).is_ok());
    }
}
