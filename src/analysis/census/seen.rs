//! The set of objects already counted, by identity key.
//!
//! Keys are object addresses (16- or 8-byte aligned, packed into a few
//! hundred MiB of address space) or, for fingerprinted ints and floats,
//! hashes with bit 63 set. Addresses go into a bitmap of 64 KiB pages, one
//! bit per 8-byte granule (1 KiB per page, so at most 1/64 of the heap's
//! span): an insert is a page lookup (usually the page of the previous key)
//! and a bit test, with no hashing of millions of keys and no rehashing.
//! Everything else (fingerprint keys, unaligned values, and pages past a
//! budget that bounds the memory a hostile target can make us spend) goes
//! to a hash set. Whether a key is in the bitmap or the hash set depends
//! only on the key and on pages made before, never unmade, so a key is
//! always looked up where it was inserted.

use super::{IdMap, IdSet};

const PAGE_SHIFT: u32 = 16;
const GRANULE_SHIFT: u32 = 3;
const WORDS: usize = 1 << (PAGE_SHIFT - GRANULE_SHIFT - 6);
/// At most this many pages (64 MiB of bitmap, covering 4 GiB of span).
const MAX_PAGES: usize = 1 << 16;

type Page = [u64; WORDS];

#[derive(Debug, Default)]
pub struct Seen {
    dir: IdMap<u32>,
    pages: Vec<Page>,
    /// (page number, index) of the page used last.
    last: Option<(u64, u32)>,
    other: IdSet,
}

impl Seen {
    /// Adds `key`; whether it was not there yet.
    pub fn insert(&mut self, key: u64) -> bool {
        if key >> 63 != 0 || key & ((1 << GRANULE_SHIFT) - 1) != 0 {
            self.other.insert(key)
        } else {
            match self.page(key >> PAGE_SHIFT) {
                Some(p) => {
                    let slot = ((key >> GRANULE_SHIFT) & ((1 << (PAGE_SHIFT - GRANULE_SHIFT)) - 1))
                        as usize;
                    let word = &mut self.pages[p][slot >> 6];
                    let bit = 1u64 << (slot & 63);
                    let new = *word & bit == 0;
                    *word |= bit;
                    new
                }
                None => self.other.insert(key),
            }
        }
    }

    /// The index of page `n`, made if needed and within budget.
    fn page(&mut self, n: u64) -> Option<usize> {
        if let Some((last, i)) = self.last
            && last == n
        {
            return Some(i as usize);
        }
        let i = match self.dir.get(&n) {
            Some(i) => *i,
            None => {
                if self.pages.len() >= MAX_PAGES {
                    return None;
                }
                let i = self.pages.len() as u32;
                self.pages.push([0; WORDS]);
                self.dir.insert(n, i);
                i
            }
        };
        self.last = Some((n, i));
        Some(i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_once_per_key_across_pages_and_kinds() {
        let mut s = Seen::default();
        let keys = [
            0x7f00_0000_0010u64,
            0x7f00_0000_0018,
            0x7f00_0001_0010,
            0x5555_0000_0000,
            (1 << 63) | 12345,
            0x7f00_0000_0013, // unaligned: the hash set
            0,
        ];
        for k in keys {
            assert!(s.insert(k), "{k:#x}");
        }
        for k in keys {
            assert!(!s.insert(k), "{k:#x} again");
        }
        assert_eq!(s.pages.len(), 4);
    }

    #[test]
    fn past_the_page_budget_keys_go_to_the_hash_set() {
        let mut s = Seen::default();
        // One key per page, far apart: a hostile target's ids.
        for i in 0..(MAX_PAGES as u64 + 100) {
            assert!(s.insert(i << 20));
        }
        assert_eq!(s.pages.len(), MAX_PAGES);
        for i in 0..(MAX_PAGES as u64 + 100) {
            assert!(!s.insert(i << 20));
        }
        // A new key on an existing page still uses the bitmap.
        assert!(s.insert(8));
        assert!(!s.insert(8));
    }
}
