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
}
