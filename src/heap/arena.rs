//! The copy's buffers: anonymous memory of our own, faulted in before the
//! target is paused, so that the copy during the pause writes into
//! resident pages.
//!
//! Faulting ~100 MB in is mostly the kernel zeroing fresh pages. Huge
//! pages make that cheapest (one fault per 2 MiB), when the kernel has
//! them at hand. On a virtual machine whose host takes free memory back
//! (free page reporting, a balloon), a free 2 MiB block may have been
//! handed to the host, and touching it again is slow: measured here,
//! 5.5 ms per huge page instead of 0.25 ms, which made one read-only
//! census in three take twice as long. Small pages cost ~0.7 ms per 2 MiB
//! here whatever ran before (they come from blocks too small to be
//! reported). The threads therefore fault the buffers in one huge page at
//! a time and, after the first slow one, take the rest in small pages.
//! (Faulting the slow ones in anyway leaves them at hand for a run that
//! follows within seconds: over 27 back-to-back runs here, huge pages only
//! gave a median of 88 ms but a mean of 117 and a worst of 255; this way,
//! 91, 94 and 119. A user runs memsleuth once, so the worst case wins.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;

/// A huge page that takes longer than this to fault in was not at hand
/// (zeroing 2 MiB takes ~0.25 ms; one faulted in from the host ~5 ms).
const SLOW_HUGE_PAGE: Duration = Duration::from_micros(1500);

/// Anonymous memory of our own, 2 MiB-aligned, unmapped on drop.
pub(super) struct Arena {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the arena is plain memory owned by this value; shared access is
// read-only once the copy is done.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    /// `len` bytes, faulted in (see the module's doc).
    pub(super) fn new(len: usize) -> std::io::Result<Arena> {
        if len == 0 {
            return Ok(Arena {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        let ptr = map_aligned(len)?;
        // SAFETY: advice on our own mapping.
        unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
        let arena = Arena { ptr, len };
        arena.populate();
        Ok(arena)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Faults every page in, on a few threads (zeroing scales with cores).
    fn populate(&self) {
        let threads = super::threads().min(self.len.div_ceil(16 << 20)).max(1);
        let faults = Faults::new(self.ptr as usize, self.len, SLOW_HUGE_PAGE);
        // The threads start faulting together: a thread's first allocation
        // maps its malloc arena, and an mmap waits for (and then blocks)
        // every fault in progress on the same address space.
        let ready = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(|| {
                    ready.wait();
                    faults.run();
                });
            }
            ready.wait();
            faults.run();
        });
    }

    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` bytes for our lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping the mapping made in `new`.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// A private anonymous mapping of `len` bytes starting on a 2 MiB boundary
/// (so that every 2 MiB of it can be a huge page): mapped 2 MiB larger,
/// then trimmed.
fn map_aligned(len: usize) -> std::io::Result<*mut u8> {
    let over = len
        .checked_add(HUGE)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
    // SAFETY: a fresh private anonymous mapping; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let start = p as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = start + over;
    // SAFETY: unmapping the unaligned head and the tail past `len`, both
    // inside the mapping just made.
    unsafe {
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        if end > aligned + len {
            libc::munmap((aligned + len) as *mut libc::c_void, end - aligned - len);
        }
    }
    Ok(aligned as *mut u8)
}

/// Faulting a range of our own mapping in, shared by threads: each takes
/// the next huge page in turn until one proves slower than `slow_page`;
/// from then on the rest is advised out of huge pages and taken in pieces
/// of small pages. (Sharing the pages, rather than giving each thread a
/// share, keeps the threads busy to the end when one of them meets the
/// slow pages; and the slow pages at hand run out for all threads at once,
/// so one slow page is enough for all.)
struct Faults {
    start: usize,
    len: usize,
    slow_page: Duration,
    /// Offset of the next piece no thread has taken.
    next: AtomicUsize,
    small: AtomicBool,
}

/// A piece of small pages taken at a time.
const SMALL_PIECE: usize = 8 << 20;

impl Faults {
    fn new(start: usize, len: usize, slow_page: Duration) -> Faults {
        Faults {
            start,
            len,
            slow_page,
            next: AtomicUsize::new(0),
            small: AtomicBool::new(false),
        }
    }

    fn run(&self) {
        loop {
            let small = self.small.load(Ordering::Acquire);
            let piece = if small { SMALL_PIECE } else { HUGE };
            let at = self.next.fetch_add(piece, Ordering::AcqRel);
            if at >= self.len {
                return;
            }
            let end = (at + piece).min(self.len);
            let started = thread_cpu_time();
            populate_write(self.start + at, end - at);
            let slow = thread_cpu_time().saturating_sub(started) > self.slow_page;
            if slow && !small && !self.small.swap(true, Ordering::AcqRel) {
                // Whatever no thread has taken yet. (A huge page another
                // thread is faulting in meanwhile stays one.)
                let from = self.next.load(Ordering::Acquire);
                if from < self.len {
                    // SAFETY: advice on part of our own mapping.
                    unsafe {
                        libc::madvise(
                            (self.start + from) as *mut libc::c_void,
                            self.len - from,
                            libc::MADV_NOHUGEPAGE,
                        )
                    };
                }
            }
        }
    }
}

/// This thread's CPU time: unlike the wall clock, it does not count the
/// time another of our threads ran on this CPU (on 2 CPUs, the populate
/// threads share them with the main thread), but it does count the time
/// a fault spends in the host, which the guest cannot tell from running.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the current thread's CPU time into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// MADV_POPULATE_WRITE (Linux 5.14) faults a range in at once; older
/// kernels get the pages touched one by one.
fn populate_write(at: usize, len: usize) {
    // SAFETY: `[at, at + len)` lies inside our own live mapping; the
    // threads touch disjoint ranges.
    unsafe {
        if libc::madvise(at as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) != 0 {
            let p = at as *mut u8;
            let mut off = 0;
            while off < len {
                p.add(off).write_volatile(0);
                off += PAGE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of our mapping holding `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_string();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn aligned_zeroed_and_writable() {
        let len = 5 * HUGE + 3 * PAGE;
        let mut a = Arena::new(len).unwrap();
        assert_eq!(a.ptr as usize % HUGE, 0);
        assert_eq!(a.len(), len);
        assert!(a.bytes().iter().all(|&b| b == 0));
        a.bytes_mut()[len - 1] = 7;
        assert_eq!(a.bytes()[len - 1], 7);
        assert!(Arena::new(0).unwrap().bytes().is_empty());
    }

    #[test]
    fn after_a_slow_huge_page_the_rest_is_small_pages() {
        let len = 6 * HUGE;
        let p = map_aligned(len).unwrap() as usize;
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(p as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        // Every huge page counts as slow: the first is faulted in as a huge
        // page, the other five after MADV_NOHUGEPAGE.
        Faults::new(p, len, Duration::ZERO).run();
        assert!(vm_flags(p).split(' ').any(|f| f == "hg"), "{}", vm_flags(p));
        let rest = vm_flags(p + HUGE);
        assert!(rest.split(' ').any(|f| f == "nh"), "{rest}");
        // SAFETY: unmapping it.
        unsafe { libc::munmap(p as *mut libc::c_void, len) };
    }
}
