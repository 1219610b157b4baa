//! Typed reads over an [`AddressSpace`]: little-endian words, bounded byte
//! runs and arrays walked in place (borrowed from a snapshot when it can,
//! else copied through a small stack buffer). Nothing here allocates per
//! call except [`Mem::bytes`].

use super::space::AddressSpace;

/// Largest array (in elements) any decoder walks: a hostile length field
/// cannot make a walk unbounded.
pub const MAX_ITEMS: u64 = 1 << 28;

/// Addresses at or above this are not user-space addresses on x86_64 (47
/// bits; 56 with 5-level paging): rejected, so offsets added to them never
/// overflow.
pub const MAX_ADDR: u64 = 1 << 56;

/// Whether `p` can be an object's address: not NULL, 8-aligned, past the
/// zero page and in user space.
#[inline]
pub fn valid_ptr(p: u64) -> bool {
    (4096..MAX_ADDR).contains(&p) && p.is_multiple_of(8)
}

#[derive(Clone, Copy)]
pub struct Mem<'a> {
    pub space: &'a dyn AddressSpace,
}

impl<'a> Mem<'a> {
    pub fn new(space: &'a dyn AddressSpace) -> Mem<'a> {
        Mem { space }
    }

    #[inline]
    pub fn u64(&self, addr: u64) -> Option<u64> {
        if let Some(s) = self.space.slice(addr, 8) {
            return Some(u64::from_le_bytes(s.try_into().ok()?));
        }
        let mut b = [0u8; 8];
        self.space.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// A pointer field: the word at `addr` when it can be an address in
    /// the target (NULL included), so that adding a field offset to it
    /// cannot overflow. Larger values read as unreadable.
    #[inline]
    pub fn ptr(&self, addr: u64) -> Option<u64> {
        self.u64(addr).filter(|p| *p < MAX_ADDR)
    }

    #[inline]
    pub fn i64(&self, addr: u64) -> Option<i64> {
        self.u64(addr).map(|v| v as i64)
    }

    #[inline]
    pub fn u32(&self, addr: u64) -> Option<u32> {
        if let Some(s) = self.space.slice(addr, 4) {
            return Some(u32::from_le_bytes(s.try_into().ok()?));
        }
        let mut b = [0u8; 4];
        self.space.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }

    #[inline]
    pub fn u8(&self, addr: u64) -> Option<u8> {
        if let Some(s) = self.space.slice(addr, 1) {
            return Some(s[0]);
        }
        let mut b = [0u8; 1];
        self.space.read(addr, &mut b).then_some(b[0])
    }

    /// A copy of `len` bytes (for names and small structs).
    pub fn bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if let Some(s) = self.space.slice(addr, len) {
            return Some(s.to_vec());
        }
        let mut v = vec![0u8; len];
        self.space.read(addr, &mut v).then_some(v)
    }

    /// Fills `buf`, from a slice when available.
    #[inline]
    pub fn fill(&self, addr: u64, buf: &mut [u8]) -> bool {
        if let Some(s) = self.space.slice(addr, buf.len()) {
            buf.copy_from_slice(s);
            return true;
        }
        self.space.read(addr, buf)
    }

    /// Calls `f` with each of `count` records of `stride` bytes at `addr`,
    /// in order; false (after the records read so far) if a part is
    /// unreadable or the count is out of bounds.
    pub fn records(&self, addr: u64, count: u64, stride: usize, f: &mut dyn FnMut(&[u8])) -> bool {
        if count == 0 {
            return true;
        }
        if count > MAX_ITEMS || stride == 0 || stride > 64 {
            return false;
        }
        let Some(total) = count.checked_mul(stride as u64) else {
            return false;
        };
        if addr.checked_add(total).is_none() {
            return false;
        }
        if let Some(s) = self.space.slice(addr, total as usize) {
            for r in s.chunks_exact(stride) {
                f(r);
            }
            return true;
        }
        let mut buf = [0u8; 4096];
        let per = (buf.len() / stride) as u64;
        let mut done = 0u64;
        while done < count {
            let n = per.min(count - done);
            let len = n as usize * stride;
            if !self
                .space
                .read(addr + done * stride as u64, &mut buf[..len])
            {
                return false;
            }
            for r in buf[..len].chunks_exact(stride) {
                f(r);
            }
            done += n;
        }
        true
    }

    /// Calls `f` with each of `count` words at `addr`.
    pub fn words(&self, addr: u64, count: u64, f: &mut dyn FnMut(u64)) -> bool {
        self.records(addr, count, 8, &mut |r| f(word(r, 0)))
    }
}

/// The little-endian word at `at` in `r` (0 if out of range).
#[inline]
pub fn word(r: &[u8], at: usize) -> u64 {
    r.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[inline]
pub fn word32(r: &[u8], at: usize) -> u32 {
    r.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}
