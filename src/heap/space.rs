//! Where the heap reader's bytes come from: one trait over a live process
//! and a core file, so the decoder never knows which it reads.

/// A read-only view of a target's address space. Implementations must
/// never panic on any address or length: an unmapped or unavailable range
/// is `false` / `None`.
pub trait AddressSpace {
    /// Fills `buf` with the bytes at `addr`; false if any of them cannot be
    /// read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    /// The bytes at `[addr, addr + len)` without a copy, where the
    /// implementation holds them in one piece (a snapshot, a mapped core).
    fn slice(&self, _addr: u64, _len: usize) -> Option<&[u8]> {
        None
    }

    /// The `(start, end)` ranges held in memory, where objects live (the
    /// census keeps its visited bitmap over them); none for lazy reads.
    fn ranges(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

    fn read_u64(&self, addr: u64) -> Option<u64> {
        if let Some(s) = self.slice(addr, 8) {
            return Some(u64::from_le_bytes(s.try_into().ok()?));
        }
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    fn read_u32(&self, addr: u64) -> Option<u32> {
        if let Some(s) = self.slice(addr, 4) {
            return Some(u32::from_le_bytes(s.try_into().ok()?));
        }
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }
}

/// A live process read one `process_vm_readv` at a time: no copy up front,
/// ~0.6 µs a call, so for a few reads (type names, the roots) or for tests.
pub struct LiveLazy {
    pub pid: u32,
}

impl AddressSpace for LiveLazy {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if buf.is_empty() {
            return true;
        }
        if addr.checked_add(buf.len() as u64).is_none() {
            return false;
        }
        crate::process::memory::read(self.pid, addr, buf).is_ok()
    }
}

/// Regions copied out of a live process, `(start, bytes)`, with reads that
/// fall outside them (type names in read-only data, a mapping that
/// appeared since) going to the live process.
pub struct CopiedRegions {
    regions: Vec<(u64, Vec<u8>)>,
    lazy: LiveLazy,
}

impl CopiedRegions {
    pub fn new(pid: u32, mut regions: Vec<(u64, Vec<u8>)>) -> CopiedRegions {
        regions.sort_by_key(|r| r.0);
        CopiedRegions {
            regions,
            lazy: LiveLazy { pid },
        }
    }

    #[inline]
    fn find(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let i = self.regions.partition_point(|r| r.0 <= addr);
        let (start, data) = self.regions.get(i.checked_sub(1)?)?;
        let off = usize::try_from(addr - start).ok()?;
        data.get(off..off.checked_add(len)?)
    }
}

impl AddressSpace for CopiedRegions {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if let Some(s) = self.find(addr, buf.len()) {
            buf.copy_from_slice(s);
            return true;
        }
        self.lazy.read(addr, buf)
    }

    fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.find(addr, len)
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .map(|(a, d)| (*a, a + d.len() as u64))
            .collect()
    }
}
