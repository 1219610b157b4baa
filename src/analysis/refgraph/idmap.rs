//! The id -> node index map the graph is built on.

/// Object id -> node index: open addressing with Fibonacci hashing (ids
/// are addresses, so the low bits carry little; the multiply spreads them).
/// Id 0 is never stored (it separates records).
#[derive(Debug, Clone, Default)]
pub(crate) struct IdMap {
    keys: Vec<u64>,
    vals: Vec<u32>,
    len: usize,
    shift: u32,
}

impl IdMap {
    pub(crate) fn with_capacity(n: usize) -> IdMap {
        let slots = (n.max(8) * 2).next_power_of_two();
        IdMap {
            keys: vec![0; slots],
            vals: vec![0; slots],
            len: 0,
            shift: 64 - slots.trailing_zeros(),
        }
    }

    fn slot(&self, k: u64) -> usize {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    pub(crate) fn get(&self, k: u64) -> Option<u32> {
        if k == 0 || self.keys.is_empty() {
            return None;
        }
        let mask = self.keys.len() - 1;
        let mut i = self.slot(k);
        loop {
            match self.keys[i] {
                0 => return None,
                x if x == k => return Some(self.vals[i]),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The index of `k`, inserting `next` if it is new. `k` must not be 0.
    pub(crate) fn intern(&mut self, k: u64, next: u32) -> (u32, bool) {
        if (self.len + 1) * 2 > self.keys.len() {
            self.grow();
        }
        let mask = self.keys.len() - 1;
        let mut i = self.slot(k);
        loop {
            match self.keys[i] {
                0 => {
                    self.keys[i] = k;
                    self.vals[i] = next;
                    self.len += 1;
                    return (next, true);
                }
                x if x == k => return (self.vals[i], false),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let mut bigger = IdMap::with_capacity(self.keys.len());
        for (&k, &v) in self.keys.iter().zip(&self.vals) {
            if k != 0 {
                bigger.intern(k, v);
            }
        }
        *self = bigger;
    }
}
