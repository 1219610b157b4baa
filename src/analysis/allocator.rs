//! `memsleuth native`: the allocators' own view of the heap, and the
//! three-point probe.
//!
//! - glibc `mallinfo2()` (or `mallinfo()`, whose int fields wrap at 4 GiB),
//!   read by the agent through ctypes.
//! - pymalloc's `sys._debugmallocstats()` text, parsed here. It comes from
//!   inside the target, so it is untrusted: bounded, no panics, unknown lines
//!   ignored.
//! - The probe: RSS as-is → after `gc.collect()` → after `malloc_trim(0)`,
//!   which separates memory held by garbage cycles, memory the allocator
//!   keeps after it was freed, and memory that is really in use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units;

/// `struct mallinfo2` (glibc 2.33+), or `struct mallinfo` widened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Mallinfo {
    /// "mallinfo2" or "mallinfo" (fields modulo 4 GiB).
    pub source: String,
    /// Bytes obtained from the system with sbrk/brk (main arena) plus the
    /// other arenas' heaps.
    pub arena: u64,
    /// Free chunks.
    pub ordblks: u64,
    /// Free fastbin chunks.
    pub smblks: u64,
    /// Chunks allocated with mmap.
    pub hblks: u64,
    /// Bytes in chunks allocated with mmap.
    pub hblkhd: u64,
    pub usmblks: u64,
    /// Bytes in free fastbin chunks.
    pub fsmblks: u64,
    /// Bytes in use in the arenas (not counting mmapped chunks).
    pub uordblks: u64,
    /// Bytes free in the arenas (kept by malloc).
    pub fordblks: u64,
    /// Top-most releasable bytes (what a plain trim at the top could give).
    pub keepcost: u64,
}

impl Mallinfo {
    /// `mallinfo()` counters are C ints: past 4 GiB they wrap.
    pub fn may_wrap(&self) -> bool {
        self.source == "mallinfo"
    }
}

/// One row of the size-class table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SizeClass {
    pub class: u32,
    pub size: u64,
    pub pools: u64,
    pub blocks_in_use: u64,
    pub avail_blocks: u64,
}

/// What `sys._debugmallocstats()` says about pymalloc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PymallocStats {
    pub size_classes: Vec<SizeClass>,
    pub arenas_allocated_total: Option<u64>,
    pub arenas_reclaimed: Option<u64>,
    pub arenas_highwater: Option<u64>,
    pub arenas_current: Option<u64>,
    /// Bytes per arena (256 KiB before 3.10, 1 MiB after on 64-bit).
    pub arena_size: Option<u64>,
    /// arenas_current × arena_size.
    pub arena_bytes: Option<u64>,
    /// Bytes in blocks handed out (live small objects).
    pub allocated_blocks_bytes: Option<u64>,
    /// Bytes in free blocks of partly used pools.
    pub available_blocks_bytes: Option<u64>,
    pub unused_pools: Option<u64>,
    pub pool_size: Option<u64>,
    pub unused_pools_bytes: Option<u64>,
    pub pool_headers_bytes: Option<u64>,
    pub quantization_bytes: Option<u64>,
    pub arena_alignment_bytes: Option<u64>,
    /// The first `Total` line (the arenas' bytes).
    pub total: Option<u64>,
    /// Objects and bytes parked in the per-type free lists.
    pub free_list_objects: u64,
    pub free_list_bytes: u64,
}

impl PymallocStats {
    /// Share of the arenas' bytes that live blocks use (None when unknown).
    pub fn live_fraction(&self) -> Option<f64> {
        let total = self.arena_bytes.or(self.total)?;
        let live = self.allocated_blocks_bytes?;
        (total > 0).then(|| live as f64 / total as f64)
    }

    /// Arena bytes not holding live blocks: free blocks, empty pools,
    /// overheads. Freed small objects stay here until a whole arena is empty.
    pub fn idle_bytes(&self) -> Option<u64> {
        let total = self.arena_bytes.or(self.total)?;
        Some(total.saturating_sub(self.allocated_blocks_bytes?))
    }
}

/// Largest text looked at, and lines considered.
const MAX_TEXT: usize = 1 << 20;
const MAX_LINES: usize = 20_000;

/// "25,165,824" → 25165824.
fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 40 {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?,
            b',' => {}
            _ => return None,
        }
    }
    Some(v)
}

/// Parses `sys._debugmallocstats()` output. None when it has no pymalloc
/// section (PYTHONMALLOC=malloc, debug hooks, another allocator).
pub fn parse_debugmallocstats(text: &str) -> Option<PymallocStats> {
    let mut text = text;
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
    }
    let mut st = PymallocStats::default();
    let mut seen_pymalloc = false;
    let mut totals = 0;
    for line in text.lines().take(MAX_LINES) {
        let line = line.trim();
        if line.starts_with("Small block threshold") {
            seen_pymalloc = true;
            continue;
        }
        let Some((left, right)) = line.split_once('=') else {
            // The size-class table: five plain numbers.
            let cols: Vec<&str> = line.split_whitespace().collect();
            if seen_pymalloc
                && cols.len() == 5
                && let [Some(c), Some(size), Some(pools), Some(used), Some(avail)] =
                    [0, 1, 2, 3, 4].map(|i| number(cols[i]))
                && st.size_classes.len() < 1024
            {
                st.size_classes.push(SizeClass {
                    class: u32::try_from(c).unwrap_or(u32::MAX),
                    size,
                    pools,
                    blocks_in_use: used,
                    avail_blocks: avail,
                });
            }
            continue;
        };
        let value = number(right);
        let left = left.trim();
        if let Some(key) = left.strip_prefix('#') {
            let key = key.trim();
            let slot = match key {
                "arenas allocated total" => &mut st.arenas_allocated_total,
                "arenas reclaimed" => &mut st.arenas_reclaimed,
                "arenas highwater mark" => &mut st.arenas_highwater,
                "arenas allocated current" => &mut st.arenas_current,
                "bytes in allocated blocks" => &mut st.allocated_blocks_bytes,
                "bytes in available blocks" => &mut st.available_blocks_bytes,
                "bytes lost to pool headers" => &mut st.pool_headers_bytes,
                "bytes lost to quantization" => &mut st.quantization_bytes,
                "bytes lost to arena alignment" => &mut st.arena_alignment_bytes,
                _ => continue,
            };
            seen_pymalloc = true;
            if slot.is_none() {
                *slot = value;
            }
        } else if left == "Total" {
            totals += 1;
            if totals == 1 && seen_pymalloc {
                st.total = value;
            }
        } else if let Some((count, rest)) = left.split_once(" arenas * ") {
            // "24 arenas * 1048576 bytes/arena"
            seen_pymalloc = true;
            st.arena_size = rest.split_whitespace().next().and_then(number);
            st.arena_bytes = value;
            if st.arenas_current.is_none() {
                st.arenas_current = number(count);
            }
        } else if let Some((count, rest)) = left.split_once(" unused pools * ") {
            st.unused_pools = number(count);
            st.pool_size = rest.split_whitespace().next().and_then(number);
            st.unused_pools_bytes = value;
        } else if left.contains(" free ") && left.ends_with("bytes each") {
            // "9 free PyDictObjects * 48 bytes each"
            if let Some(n) = left.split_whitespace().next().and_then(number) {
                st.free_list_objects = st.free_list_objects.saturating_add(n);
            }
            if let Some(v) = value {
                st.free_list_bytes = st.free_list_bytes.saturating_add(v);
            }
        }
    }
    seen_pymalloc.then_some(st)
}

/// /proc/PID/status memory at one moment (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RssNow {
    pub vm_rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub vm_hwm: u64,
}

/// One point of the probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStep {
    /// "as-is", "gc.collect()", "malloc_trim(0)".
    pub step: String,
    pub rss: u64,
    pub rss_anon: u64,
    /// RSS given back by this step (positive = returned to the OS).
    pub returned: i64,
    /// How long the step ran in the target.
    pub seconds: f64,
}

/// What `native_trim` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrimRaw {
    pub available: bool,
    pub released: Option<bool>,
    pub seconds: f64,
    pub mallinfo: Option<Mallinfo>,
}

/// The probe's three points and what they mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub steps: Vec<ProbeStep>,
    /// Unreachable objects gc.collect() found.
    pub gc_collected: i64,
    /// RSS returned by gc.collect() (cycles whose memory went straight back).
    pub returned_by_gc: i64,
    /// RSS returned by malloc_trim(0) (freed memory malloc was keeping).
    pub returned_by_trim: i64,
    /// RSS after both steps: memory really in use (plus what no allocator
    /// can give back: partly used pages and arenas).
    pub remaining: u64,
    pub malloc_trim_available: bool,
    /// malloc_trim's return value (true: it released memory).
    pub trim_released: Option<bool>,
    pub mallinfo_after: Option<Mallinfo>,
    /// The explanation, one sentence per entry.
    pub verdict: Vec<String>,
}

/// Below this a step's effect is called "nothing much": max(1 MiB, 2% of RSS).
pub fn significant(rss: u64) -> i64 {
    (rss / 50).max(1 << 20) as i64
}

/// Puts the three points together and says what they mean.
pub fn probe_report(
    steps: Vec<ProbeStep>,
    gc_collected: i64,
    trim: &TrimRaw,
    before: Option<&Mallinfo>,
    pymalloc: Option<&PymallocStats>,
) -> ProbeReport {
    let get = |i: usize| steps.get(i).map(|s| s.returned).unwrap_or(0);
    let returned_by_gc = get(1);
    let returned_by_trim = get(2);
    let first_rss = steps.first().map(|s| s.rss).unwrap_or(0);
    let remaining = steps.last().map(|s| s.rss).unwrap_or(0);
    let sig = significant(first_rss);
    let b = |n: i64| units::bytes(n.unsigned_abs());
    let mut verdict = Vec::new();
    if returned_by_gc >= sig {
        verdict.push(format!(
            "gc.collect() found {gc_collected} unreachable objects and RSS fell by {}: that \
             memory was held only by reference cycles waiting for the collector (is it disabled \
             or starved? see `memsleuth gc`).",
            b(returned_by_gc)
        ));
    } else {
        verdict.push(format!(
            "gc.collect() found {gc_collected} unreachable objects; RSS changed by {}: garbage \
             cycles are not what holds this memory{}.",
            units::bytes_delta(-returned_by_gc),
            if gc_collected > 10_000 {
                " (what they freed went back to the allocators, see the next step)"
            } else {
                ""
            }
        ));
    }
    if !trim.available {
        verdict.push(
            "malloc_trim is not available (not glibc malloc): the allocator-retention step was \
             skipped."
                .into(),
        );
    } else if returned_by_trim >= sig {
        verdict.push(format!(
            "malloc_trim(0) gave back {}: glibc malloc had already freed that memory but kept it \
             in its heaps (fragmentation: free chunks between live ones keep brk from shrinking). \
             Not a leak, but the process will not return it by itself; periodic malloc_trim, \
             MALLOC_TRIM_THRESHOLD_, MALLOC_ARENA_MAX=2 or jemalloc help.",
            b(returned_by_trim)
        ));
    } else {
        verdict.push(format!(
            "malloc_trim(0) changed RSS by {}: glibc malloc is not sitting on much freed memory.",
            units::bytes_delta(-returned_by_trim)
        ));
    }
    let remaining_anon = steps.last().map(|s| s.rss_anon).unwrap_or(0);
    let mut live = format!(
        "What is left, {} ({} of it anonymous memory), is not reclaimable this way",
        units::bytes(remaining),
        units::bytes(remaining_anon)
    );
    let after = trim.mallinfo.as_ref().or(before);
    let mut parts = Vec::new();
    if let Some(mi) = after {
        parts.push(format!(
            "malloc has {} in use in its heaps and {} in mmapped blocks",
            units::bytes(mi.uordblks),
            units::bytes(mi.hblkhd)
        ));
    }
    if let Some(p) = pymalloc
        && let (Some(n), Some(live_b)) = (p.arenas_current, p.allocated_blocks_bytes)
    {
        parts.push(format!(
            "pymalloc has {n} arenas holding {} of live objects",
            units::bytes(live_b)
        ));
    }
    if !parts.is_empty() {
        live.push_str(&format!(": {}", parts.join("; ")));
    }
    live.push_str(
        ". That is live data (objects, caches, buffers), the interpreter's own memory and \
         stacks, or freed memory no allocator can return (partly used pages, pymalloc arenas \
         with a few live blocks). `memsleuth growth` / `types` show which Python objects, \
         `memsleuth tracemalloc` where they were allocated.",
    );
    verdict.push(live);
    if let Some(p) = pymalloc
        && let (Some(frac), Some(idle)) = (p.live_fraction(), p.idle_bytes())
        && frac < 0.5
        && idle >= (16 << 20)
    {
        verdict.push(format!(
            "pymalloc arenas are only {:.0}% used: {} of them is free space inside arenas that \
             cannot be returned while any object in them lives (small objects kept here and \
             there pin whole arenas).",
            frac * 100.0,
            units::bytes(idle)
        ));
    }
    ProbeReport {
        steps,
        gc_collected,
        returned_by_gc,
        returned_by_trim,
        remaining,
        malloc_trim_available: trim.available,
        trim_released: trim.released,
        mallinfo_after: trim.mallinfo.clone(),
        verdict,
    }
}

/// Everything `memsleuth native --json` prints (schema 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NativeReport {
    pub schema: u32,
    pub pid: u32,
    pub python: String,
    pub attach_s: f64,
    pub gil_s: f64,
    pub rss: RssNow,
    pub glibc_version: Option<String>,
    pub mallinfo: Option<Mallinfo>,
    /// Why there is no mallinfo (not glibc, ctypes missing...).
    pub mallinfo_note: Option<String>,
    pub malloc_trim_available: bool,
    /// An allocator other than glibc's mapped in the process (jemalloc,
    /// tcmalloc, mimalloc): then mallinfo describes glibc's unused heap.
    pub other_allocator: Option<String>,
    pub pymalloc: Option<PymallocStats>,
    /// Why there are no pymalloc statistics.
    pub pymalloc_note: Option<String>,
    /// `sys.getallocatedblocks()` (3.4+).
    pub allocated_blocks: Option<u64>,
    /// Allocator-related environment variables that are set.
    pub env: BTreeMap<String, String>,
    /// memsleuth loaded ctypes into the target (to call mallinfo2 and
    /// malloc_trim): its C parts (_ctypes, libffi) stay loaded after detach.
    #[serde(default)]
    pub ctypes_loaded_now: bool,
    pub probe: Option<ProbeReport>,
}

/// The agent's `native_state` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NativeRaw {
    pub mallinfo: Option<Mallinfo>,
    pub glibc_version: Option<String>,
    #[serde(default)]
    pub malloc_trim: bool,
    pub libc_error: Option<String>,
    pub debugmallocstats: Option<String>,
    pub debugmallocstats_error: Option<String>,
    pub allocated_blocks: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `_ctypes` was not loaded in the target before this call.
    #[serde(default)]
    pub ctypes_loaded_now: bool,
}

/// Shared libraries that replace malloc, by the file names they map.
pub fn other_allocator(maps_text: &str) -> Option<String> {
    const KNOWN: &[(&str, &str)] = &[
        ("libjemalloc", "jemalloc"),
        ("libtcmalloc", "tcmalloc"),
        ("libmimalloc", "mimalloc"),
        ("libhoard", "Hoard"),
    ];
    for line in maps_text.lines().take(200_000) {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        for (needle, label) in KNOWN {
            if name.starts_with(needle) {
                return Some((*label).to_string());
            }
        }
    }
    None
}

/// Where the pymalloc statistics went, when they are missing.
pub fn pymalloc_note(raw: &NativeRaw, python: (u32, u32)) -> Option<String> {
    if let Some(e) = &raw.debugmallocstats_error {
        return Some(format!(
            "sys._debugmallocstats() could not be captured: {e}"
        ));
    }
    match &raw.debugmallocstats {
        None if python < (3, 3) => Some(format!(
            "Python {}.{} has no sys._debugmallocstats(); pymalloc arenas cannot be read",
            python.0, python.1
        )),
        None => Some("sys._debugmallocstats() is not available".into()),
        Some(text) if parse_debugmallocstats(text).is_none() => Some(
            "pymalloc is not in use (PYTHONMALLOC=malloc, debug hooks or another allocator): \
             small objects come from malloc directly"
                .into(),
        ),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
