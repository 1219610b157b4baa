//! What a growing type costs in memory, not in `sys.getsizeof` bytes.
//!
//! RSS grows by what the allocators hand out, and that differs from the
//! census's getsizeof sums in three ways, all estimated here per type:
//!
//! - **Rounding.** pymalloc serves requests up to 512 bytes (256 on 2.7)
//!   in blocks rounded up to 8 bytes (16 from 3.8); larger ones go to
//!   malloc, whose chunks carry an 8-byte header and are 16-byte aligned.
//! - **Storage getsizeof does not see.** From 3.11 an instance's
//!   attributes live in managed dict storage, not in a dict object: a
//!   separately allocated values array on 3.11 and 3.12 (16 bytes + 8 per
//!   value), values inline after the object from 3.13 (24 bytes + 8 per
//!   value). Neither is counted by getsizeof nor by any census row.
//!   Measured with tracemalloc on every interpreter here.
//! - **What gc-only censuses miss.** The untracked str, bytes, int, ...
//!   that new instances hold alone (sampled by the agent).
//!
//! The per-value counts and the untracked payload come from sampled new
//! instances ([`super::Payload`]); the rounding from the type's mean size.
//! Pool and arena headers (about 1%) are left out.

use super::Payload;

/// pymalloc's rules for one interpreter version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allocator {
    /// Block granularity of small requests.
    align: f64,
    /// Largest request pymalloc serves itself.
    small_max: f64,
}

impl Allocator {
    pub fn for_version(v: (u32, u32, u32)) -> Allocator {
        let (major, minor) = (v.0, v.1);
        Allocator {
            align: if (major, minor) >= (3, 8) { 16.0 } else { 8.0 },
            small_max: if major < 3 { 256.0 } else { 512.0 },
        }
    }

    /// Bytes one request of `size` bytes takes.
    pub fn block(&self, size: f64) -> f64 {
        if size.is_nan() || size <= 0.0 || size.is_infinite() {
            return 0.0;
        }
        if size <= self.small_max {
            (size / self.align).ceil() * self.align
        } else {
            // glibc: 8-byte chunk header, 16-byte alignment, 32 at least.
            (((size + 8.0) / 16.0).ceil() * 16.0).max(32.0)
        }
    }
}

/// Managed dict storage of an instance with `values` attribute values:
/// (bytes added to the object's own allocation, bytes of a separate one).
pub fn managed_values(v: (u32, u32, u32), values: f64) -> (f64, f64) {
    let n = values.max(0.0);
    match (v.0, v.1) {
        (3, 11) | (3, 12) => (0.0, 16.0 + 8.0 * n),
        (3, m) if m >= 13 => (24.0 + 8.0 * n, 0.0),
        (major, _) if major > 3 => (24.0 + 8.0 * n, 0.0),
        _ => (0.0, 0.0),
    }
}

/// A growing type's cost, bytes over the census span.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// Storage the new instances own that getsizeof does not count.
    pub hidden: f64,
    /// Untracked objects the new instances hold alone (getsizeof bytes;
    /// 0 unless the censuses were gc-only).
    pub payload: f64,
    /// All of it as the allocators hand it out: the rate's figure.
    pub footprint: f64,
}

/// The cost of a type whose getsizeof bytes rose by `bytes_delta` and
/// count by `count_delta`, `mean` bytes per instance, with what sampled
/// new instances hold (`payload`; its untracked part only counts when
/// `gc_only`: complete censuses counted those objects in their own rows).
pub fn cost(
    alloc: &Allocator,
    version: (u32, u32, u32),
    mean: f64,
    bytes_delta: i64,
    count_delta: i64,
    payload: Option<&Payload>,
    gc_only: bool,
) -> Cost {
    let bytes = bytes_delta.max(0) as f64;
    let born = count_delta.max(0) as f64;
    let factor = if mean > 0.0 {
        (alloc.block(mean) / mean).max(1.0)
    } else {
        1.0
    };
    let mut c = Cost {
        footprint: bytes * factor,
        ..Cost::default()
    };
    let Some(p) = payload else {
        return c;
    };
    if let Some(values) = p.managed_values {
        let (inline, separate) = managed_values(version, values);
        let inline_cost = if inline > 0.0 && mean > 0.0 {
            alloc.block(mean + inline) - alloc.block(mean)
        } else {
            inline
        };
        c.hidden = born * (inline + separate);
        c.footprint += born * (inline_cost.max(0.0) + alloc.block(separate));
    }
    if gc_only && p.per_object > 0.0 {
        let objects = p.objects_per_object.max(1.0);
        c.payload = born * p.per_object;
        c.footprint += born * objects * alloc.block(p.per_object / objects);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const V39: (u32, u32, u32) = (3, 9, 18);
    const V311: (u32, u32, u32) = (3, 11, 7);
    const V313: (u32, u32, u32) = (3, 13, 0);

    fn pay(per_object: f64, objects: f64, values: Option<f64>) -> Payload {
        Payload {
            type_name: "x".into(),
            per_object,
            objects_per_object: objects,
            managed_values: values,
            sampled: 10,
        }
    }

    #[test]
    fn pymalloc_rounds_small_and_malloc_large() {
        let a = Allocator::for_version(V39);
        assert_eq!(a.block(48.0), 48.0);
        assert_eq!(a.block(56.0), 64.0);
        assert_eq!(a.block(513.0), 528.0);
        assert_eq!(a.block(0.0), 0.0);
        assert_eq!(a.block(f64::NAN), 0.0);
        let old = Allocator::for_version((3, 7, 0));
        assert_eq!(old.block(56.0), 56.0);
        let py2 = Allocator::for_version((2, 7, 18));
        assert_eq!(py2.block(280.0), 288.0);
    }

    // Figures measured here (RSS per instance of a two-object cycle class
    // with one attribute, collector off, 200k instances): 3.9 163.6 B
    // (instance 48 + dict 104), 3.11 96.4 B (56), 3.13 81.3 B (48).
    #[test]
    fn a_one_attribute_instance_costs_what_rss_shows() {
        let a = Allocator::for_version(V39);
        let inst = cost(&a, V39, 48.0, 48, 1, None, true).footprint;
        let dict = cost(&a, V39, 104.0, 104, 1, None, true).footprint;
        assert!((inst + dict - 160.0).abs() < 1.0, "{}", inst + dict);

        let a = Allocator::for_version(V311);
        let c = cost(&a, V311, 56.0, 56, 1, Some(&pay(0.0, 0.0, Some(1.0))), true);
        assert_eq!(c.hidden, 24.0);
        assert!((c.footprint - 96.0).abs() < 1.0, "{c:?}");

        let a = Allocator::for_version(V313);
        let c = cost(&a, V313, 48.0, 48, 1, Some(&pay(0.0, 0.0, Some(1.0))), true);
        assert_eq!(c.hidden, 32.0);
        assert!((c.footprint - 80.0).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn payload_counts_only_for_gc_only_censuses() {
        let a = Allocator::for_version(V311);
        // A frame holding one 16 KiB bytearray.
        let p = pay(16441.0, 1.0, None);
        let gc_only = cost(&a, V311, 400.0, 4000, 10, Some(&p), true);
        assert_eq!(gc_only.payload, 164410.0);
        assert!(gc_only.footprint > 4000.0 + 164410.0);
        let complete = cost(&a, V311, 400.0, 4000, 10, Some(&p), false);
        assert_eq!(complete.payload, 0.0);
        assert!((complete.footprint - 4000.0).abs() < 1.0);
    }

    #[test]
    fn shrinking_types_cost_nothing() {
        let a = Allocator::for_version(V311);
        let c = cost(
            &a,
            V311,
            64.0,
            -640,
            -10,
            Some(&pay(100.0, 1.0, Some(3.0))),
            true,
        );
        assert_eq!(c, Cost::default());
    }
}
