//! Plain-words one-liners for signals.

use super::{Change, Signal, Window};
use crate::analysis::groups::Backing;
use crate::units;

impl Signal {
    /// One line in plain words.
    pub fn summary(&self) -> String {
        let w = self.window();
        let when = during(w);
        let mut s = match self {
            Signal::RepeatedSharedMapping {
                object,
                rss,
                rss_shmem,
                pss_shmem,
                ..
            } => {
                let pss = match pss_shmem {
                    Some(p) if p.delta.unsigned_abs() <= flat_margin(rss_shmem) => {
                        format!(" while Pss_Shmem stayed at {}", units::bytes(p.after))
                    }
                    Some(p) => format!(", Pss_Shmem {}", units::bytes_delta(p.delta)),
                    None => format!(", RssShmem {}", units::bytes_delta(rss_shmem.delta)),
                };
                format!(
                    "{} gained {} mappings {when} ({}): RSS {}{pss} — {}",
                    object.backing.noun(),
                    object.instances.delta,
                    count_rate(object.instances.rate_per_s),
                    units::bytes_delta(rss.delta),
                    shared_hint(&object.backing),
                )
            }
            Signal::RepeatedFileMapping {
                object,
                rss_file,
                pss_file,
                ..
            } => {
                let pss = match pss_file {
                    Some(p) if p.delta.unsigned_abs() <= flat_margin(rss_file) => {
                        format!(" while Pss_File stayed at {}", units::bytes(p.after))
                    }
                    Some(p) => format!(", Pss_File {}", units::bytes_delta(p.delta)),
                    None => String::new(),
                };
                format!(
                    "{} is mapped {} times, +{} {when} ({}): RssFile {}{pss} — mmap of the same file kept open \
                     (mmap.mmap / numpy.memmap never closed)?",
                    object.backing.noun(),
                    object.instances.after,
                    object.instances.delta,
                    count_rate(object.instances.rate_per_s),
                    units::bytes_delta(rss_file.delta),
                )
            }
            Signal::AnonGrowth {
                rss_anon,
                heap_size,
                anon_mmap_size,
                ..
            } => {
                let split = match (heap_size, anon_mmap_size) {
                    (Some(h), Some(a)) => format!(
                        "; mapped: [heap] {}, anonymous mmaps {}{}",
                        units::bytes_delta(h.delta),
                        units::bytes_delta(a.delta),
                        if h.delta > a.delta.max(0) {
                            " — mostly brk heap: small malloc chunks (C extensions, objects > 512 B)"
                        } else if a.delta > h.delta.max(0) {
                            " — mostly anonymous mmaps: pymalloc arenas or large malloc/numpy buffers"
                        } else {
                            ""
                        }
                    ),
                    _ => String::new(),
                };
                format!(
                    "anonymous memory (RssAnon) grew {} {when} ({}), from {} to {}{split}",
                    units::bytes_delta(rss_anon.delta),
                    units::rate(rss_anon.rate_per_s),
                    units::bytes(rss_anon.before),
                    units::bytes(rss_anon.after),
                )
            }
            Signal::ArenaGrowth {
                arenas,
                size,
                vm_rss,
                ..
            } => format!(
                "glibc malloc arenas went from {} to {} {when} ({}): {} of address space but VmRSS {} — each new \
                 thread that mallocs gets an arena (cap with MALLOC_ARENA_MAX)",
                arenas.before,
                arenas.after,
                count_rate(arenas.rate_per_s),
                units::bytes_delta(size.delta),
                units::bytes_delta(vm_rss.delta),
            ),
            Signal::ThreadGrowth {
                threads,
                stacks,
                stack_size,
                ..
            } => {
                let st = match (stacks, stack_size) {
                    (Some(n), Some(sz)) if n.rose() => {
                        format!(
                            "; +{} thread stacks ({} of address space)",
                            n.delta,
                            units::bytes_delta(sz.delta)
                        )
                    }
                    _ => String::new(),
                };
                format!(
                    "threads went from {} to {} {when} ({}){st} — threads started that never finish?",
                    threads.before,
                    threads.after,
                    count_rate(threads.rate_per_s),
                )
            }
            Signal::FdGrowth { fds, by_kind, .. } => {
                let kinds = by_kind
                    .iter()
                    .flatten()
                    .map(|(k, d)| format!("{d:+} {}", k.name()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let kinds = if kinds.is_empty() {
                    kinds
                } else {
                    format!(": {kinds}")
                };
                format!(
                    "open fds went from {} to {} {when} ({}){kinds} — files, pipes or sockets never closed?",
                    fds.before,
                    fds.after,
                    count_rate(fds.rate_per_s),
                )
            }
            Signal::VirtualOnly {
                unexplained,
                vm_rss,
                largest,
                ..
            } => format!(
                "virtual size grew {} {when} ({}) while RSS moved {}{} — address space reserved but not touched, \
                 not a RAM problem",
                units::bytes_delta(unexplained.delta),
                units::rate(unexplained.rate_per_s),
                units::bytes_delta(vm_rss.delta),
                largest
                    .as_ref()
                    .map(|g| format!(", mostly in {}", g.label))
                    .unwrap_or_default(),
            ),
            Signal::SwapInsteadOfFree {
                vm_rss, vm_swap, ..
            } => format!(
                "RSS fell {} while swap rose {} {when} ({}) — memory is being pushed to swap, not freed",
                units::bytes(vm_rss.delta.unsigned_abs()),
                units::bytes_delta(vm_swap.delta),
                units::rate(vm_swap.rate_per_s),
            ),
        };
        if w.samples >= 3 && !w.steady {
            s.push_str(" (irregular rise)");
        }
        s
    }
}

fn during(w: &Window) -> String {
    if w.seconds > 0.0 {
        format!("in {:.1} s", w.seconds)
    } else {
        format!("over {} samples", w.samples)
    }
}

fn count_rate(r: f64) -> String {
    if r.abs() >= 10.0 {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

/// PSS counts as flat when it moved by at most 1/8 of the RSS rise (≥ 64 KiB).
fn flat_margin(rss: &Change) -> u64 {
    (rss.delta.max(0) as u64 / 8).max(64 << 10)
}

fn shared_hint(b: &Backing) -> &'static str {
    match b {
        Backing::Sysv { .. } => "shmat without shmdt?",
        Backing::PosixShm { .. } => {
            "SharedMemory (or shm_open + mmap) opened again without close()/munmap?"
        }
        Backing::Memfd { .. } => "the memfd mmapped again without munmap / mmap.close()?",
        _ => "mapped again without munmap?",
    }
}
