//! The set of addresses the census has already looked at: one bit per
//! 8-byte granule in 1 KiB pages (one per 64 KiB of target memory), found
//! through a direct-mapped table of recent pages before the page
//! directory, so that most lookups cost no hashing. Pages past a budget
//! (a hostile target spraying addresses) go to a hash set: memory stays
//! bounded by 64 MiB of bitmap.

use crate::analysis::census::{IdMap, IdSet};

const PAGE_SHIFT: u32 = 16;
const GRANULE_SHIFT: u32 = 3;
const WORDS: usize = 1 << (PAGE_SHIFT - GRANULE_SHIFT - 6);
const MAX_PAGES: usize = 1 << 16;
const RECENT: usize = 1024;

type Page = [u64; WORDS];

#[derive(Debug)]
pub struct Visited {
    /// (page number + 1, index) by page number bits; 0 = empty.
    recent: Box<[(u64, u32)]>,
    dir: IdMap<u32>,
    pages: Vec<Page>,
    other: IdSet,
}

impl Default for Visited {
    fn default() -> Visited {
        Visited {
            recent: vec![(0, 0); RECENT].into_boxed_slice(),
            dir: IdMap::default(),
            pages: Vec::new(),
            other: IdSet::default(),
        }
    }
}

impl Visited {
    /// Adds `addr`; whether it was not there yet.
    #[inline]
    pub fn insert(&mut self, addr: u64) -> bool {
        if addr & ((1 << GRANULE_SHIFT) - 1) != 0 {
            return self.other.insert(addr);
        }
        let n = addr >> PAGE_SHIFT;
        let slot = n as usize & (RECENT - 1);
        let (tag, i) = self.recent[slot];
        let page = if tag == n + 1 {
            i as usize
        } else {
            match self.page(n) {
                Some(i) => {
                    self.recent[slot] = (n + 1, i as u32);
                    i
                }
                None => return self.other.insert(addr),
            }
        };
        let g = ((addr >> GRANULE_SHIFT) & ((1 << (PAGE_SHIFT - GRANULE_SHIFT)) - 1)) as usize;
        let word = &mut self.pages[page][g >> 6];
        let bit = 1u64 << (g & 63);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }

    fn page(&mut self, n: u64) -> Option<usize> {
        if let Some(&i) = self.dir.get(&n) {
            return Some(i as usize);
        }
        if self.pages.len() >= MAX_PAGES {
            return None;
        }
        let i = self.pages.len();
        self.pages.push([0; WORDS]);
        self.dir.insert(n, i as u32);
        Some(i)
    }
}

/// Most bitmap bytes [`SharedVisited`] maps (covering 64 GiB of target
/// memory); ranges beyond go to its locked fallback.
const MAX_BITMAP_BYTES: u64 = 1 << 30;

/// The visited set shared by the census's threads: one bit per 8-byte
/// granule of the ranges the address space holds in memory (a snapshot's
/// copied regions, a core's segments), set with an atomic OR so that two
/// threads reaching the same object agree on who counts it. The bitmap is
/// a lazily faulted anonymous mapping (1/64 of the ranges' size, mostly
/// never touched); addresses outside the ranges go to a locked
/// [`Visited`].
pub struct SharedVisited {
    /// (start, end, first word), sorted by start.
    ranges: Vec<(u64, u64, usize)>,
    bits: *const std::sync::atomic::AtomicU64,
    words: usize,
    other: std::sync::Mutex<Visited>,
}

// SAFETY: `bits` points into a mapping owned by this value and is only
// accessed through atomics.
unsafe impl Send for SharedVisited {}
unsafe impl Sync for SharedVisited {}

impl SharedVisited {
    /// A set covering `ranges` (`(start, end)`, any order, non-overlapping)
    /// with the bitmap.
    pub fn new(ranges: &[(u64, u64)]) -> SharedVisited {
        let mut sorted: Vec<(u64, u64)> = ranges
            .iter()
            .copied()
            .filter(|(a, b)| a < b && a % 8 == 0)
            .collect();
        sorted.sort_unstable();
        let mut out = Vec::with_capacity(sorted.len());
        let mut words = 0usize;
        let mut last_end = 0u64;
        for (a, b) in sorted {
            if a < last_end {
                continue; // overlapping: left to the fallback
            }
            let n = (b - a).div_ceil(8 * 64);
            if (words as u64 + n) * 8 > MAX_BITMAP_BYTES {
                break;
            }
            out.push((a, b, words));
            words += n as usize;
            last_end = b;
        }
        let bits = if words == 0 {
            std::ptr::NonNull::<std::sync::atomic::AtomicU64>::dangling().as_ptr()
        } else {
            // SAFETY: a fresh private anonymous mapping; zero pages until
            // written, so its untouched parts cost nothing.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    words * 8,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                out.clear();
                words = 0;
                std::ptr::NonNull::<std::sync::atomic::AtomicU64>::dangling().as_ptr()
            } else {
                p.cast()
            }
        };
        SharedVisited {
            ranges: out,
            bits,
            words,
            other: std::sync::Mutex::new(Visited::default()),
        }
    }

    /// Faults the bitmap in for writing, when it is at most `max_bytes`,
    /// before several threads share it. Left lazy, each of its pages is
    /// first read as the zero page and then copied on the first write, and
    /// that copy flushes the TLB of every CPU running one of our threads:
    /// an interrupt per page, which on a virtual machine cost two census
    /// threads a third of their time.
    pub fn prefault(&self, max_bytes: usize) {
        let len = self.words * 8;
        if len == 0 || len > max_bytes {
            return;
        }
        // SAFETY: advice on the bitmap mapping made in `new`, all of it.
        // (A kernel without MADV_POPULATE_WRITE, 5.14, leaves it lazy. No
        // huge pages: see `heap::arena` for what they can cost.)
        unsafe {
            libc::madvise(
                self.bits as *mut libc::c_void,
                len,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }

    /// Adds `addr`; whether it was not there yet. `cache` is the calling
    /// thread's own (see [`RangeCache`]).
    #[inline]
    pub fn insert(&self, addr: u64, cache: &mut RangeCache) -> bool {
        if addr.is_multiple_of(8)
            && let Some((start, first)) = self.range_of(addr, cache)
        {
            let g = (addr - start) >> 3;
            let word = first + (g >> 6) as usize;
            debug_assert!(word < self.words);
            let bit = 1u64 << (g & 63);
            // SAFETY: `word` lies inside the bitmap: `g` is within this
            // range, which was given `(end - start) / 512` words.
            let w = unsafe { &*self.bits.add(word) };
            // (A plain load first: most repeated visits then skip the
            // locked instruction.)
            if w.load(std::sync::atomic::Ordering::Relaxed) & bit != 0 {
                return false;
            }
            return w.fetch_or(bit, std::sync::atomic::Ordering::Relaxed) & bit == 0;
        }
        match self.other.lock() {
            Ok(mut v) => v.insert(addr),
            Err(p) => p.into_inner().insert(addr),
        }
    }

    /// The range holding `addr`: (its start, its first word).
    #[inline]
    fn range_of(&self, addr: u64, cache: &mut RangeCache) -> Option<(u64, usize)> {
        let mb = addr >> 20;
        let slot = &mut cache.slots[mb as usize & (CACHE_SLOTS - 1)];
        let mut i = if slot.0 == mb + 1 {
            slot.1 as usize
        } else {
            // The first range ending past this MiB's start.
            let i = self.ranges.partition_point(|r| r.1 <= mb << 20);
            *slot = (mb + 1, i as u32);
            i
        };
        // A MiB may hold the end of one range and the start of others.
        while let Some(&(a, b, w)) = self.ranges.get(i) {
            if addr < a {
                return None;
            }
            if addr < b {
                return Some((a, w));
            }
            i += 1;
        }
        None
    }
}

/// Slots of a [`RangeCache`].
const CACHE_SLOTS: usize = 1024;

/// A thread's cache of which range each recently seen MiB of addresses
/// starts in, so that most visited-set lookups need no search.
pub struct RangeCache {
    slots: Box<[(u64, u32)]>,
}

impl Default for RangeCache {
    fn default() -> RangeCache {
        RangeCache {
            slots: vec![(0, 0); CACHE_SLOTS].into_boxed_slice(),
        }
    }
}

impl Drop for SharedVisited {
    fn drop(&mut self) {
        if self.words > 0 {
            // SAFETY: unmapping the bitmap mapped in `new`.
            unsafe { libc::munmap(self.bits as *mut libc::c_void, self.words * 8) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_address_across_pages_and_past_the_budget() {
        let mut v = Visited::default();
        let keys = [
            0x7f00_0000_0010u64,
            0x7f00_0000_0018,
            0x7f00_0001_0010,
            0x13,
            0,
        ];
        for k in keys {
            assert!(v.insert(k), "{k:#x}");
        }
        for k in keys {
            assert!(!v.insert(k), "{k:#x} again");
        }
        for i in 0..(MAX_PAGES as u64 + 100) {
            assert!(v.insert(i << 20 | 8));
        }
        assert!(!v.insert(((MAX_PAGES as u64 + 50) << 20) | 8));
        assert_eq!(v.pages.len(), MAX_PAGES);
    }

    #[test]
    fn shared_once_per_address_in_and_out_of_the_ranges_across_threads() {
        let v = SharedVisited::new(&[
            (0x10_0000, 0x20_0000),
            (0x40_0000, 0x40_1000),
            (0x60_0200, 0x60_0300),
            (0x60_0000, 0x60_0100),
        ]);
        let mut hint = RangeCache::default();
        for a in [
            0x10_0000u64,
            0x1f_fff8,
            0x40_0ff8,
            0x50_0000,
            0x10_0003,
            0x60_0008,
            0x60_0150,
            0x60_02f8,
            0x60_0300,
        ] {
            assert!(v.insert(a, &mut hint), "{a:#x}");
            assert!(!v.insert(a, &mut hint), "{a:#x} again");
        }
        // Two threads inserting the same addresses: each address is new
        // for exactly one of them.
        let v = SharedVisited::new(&[(0x10_0000, 0x90_0000)]);
        let wins: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut hint = RangeCache::default();
                        (0x10_0000u64..0x30_0000)
                            .step_by(8)
                            .filter(|&a| v.insert(a, &mut hint))
                            .count() as u64
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wins.iter().sum::<u64>(), 0x20_0000 / 8);
    }
}
