//! The detectors: one per signal, each reading the series it needs from the
//! samples and skipping itself when that input was not collected.

use std::collections::{BTreeMap, BTreeSet};

use super::trend::{self, Change};
use super::{
    GroupGrowth, MIN_ANON_BYTES, MIN_ANON_PERCENT, MIN_ARENAS, MIN_FDS, MIN_FILE_INSTANCES,
    MIN_SHARED_INSTANCES, MIN_SWAP_BYTES, MIN_THREADS, MIN_VIRTUAL_BYTES, MIN_VIRTUAL_PERCENT,
    MappedObject, Signal,
};
use crate::analysis::groups::{self, Backing, Category, Group};
use crate::process::fds::FdKind;
use crate::process::maps::MemStats;
use crate::process::sample::Sample;

type Points = Vec<(f64, u64)>;

pub(super) struct Ctx<'a> {
    samples: &'a [Sample],
    /// (index into samples, groups by backing) for samples that have maps.
    maps: Vec<(usize, BTreeMap<Backing, Group>)>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(samples: &'a [Sample]) -> Ctx<'a> {
        let maps = samples
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let m = s.mappings.as_ref()?;
                Some((
                    i,
                    groups::group(m)
                        .into_iter()
                        .map(|g| (g.backing.clone(), g))
                        .collect(),
                ))
            })
            .collect();
        Ctx { samples, maps }
    }

    fn series(&self, f: impl Fn(&Sample) -> Option<u64>) -> Points {
        self.samples
            .iter()
            .filter_map(|s| Some((s.t, f(s)?)))
            .collect()
    }

    /// A group figure over the samples with maps; 0 where the group is absent.
    fn group_series(&self, backing: &Backing, f: impl Fn(&Group) -> u64) -> Points {
        self.maps
            .iter()
            .map(|(i, g)| (self.samples[*i].t, g.get(backing).map_or(0, &f)))
            .collect()
    }

    /// A status/rollup figure between two samples.
    fn between(&self, a: usize, b: usize, f: impl Fn(&Sample) -> u64) -> Change {
        let (sa, sb) = (&self.samples[a], &self.samples[b]);
        Change::new(f(sa), f(sb), trend::span(sa.t, sb.t))
    }

    fn rollup_between(&self, a: usize, b: usize, f: impl Fn(&MemStats) -> u64) -> Option<Change> {
        let (sa, sb) = (&self.samples[a], &self.samples[b]);
        Some(Change::new(
            f(sa.rollup.as_ref()?),
            f(sb.rollup.as_ref()?),
            trend::span(sa.t, sb.t),
        ))
    }

    fn map_ends(&self) -> Option<(usize, usize)> {
        Some((self.maps.first()?.0, self.maps.last()?.0))
    }

    pub(super) fn repeated_mappings(&self) -> Vec<Signal> {
        let (Some((a, b)), Some((_, last))) = (self.map_ends(), self.maps.last()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (backing, g) in last {
            if !backing.is_object() {
                continue;
            }
            if !g.is_repeated() {
                continue;
            }
            let shared = backing.is_shared_object();
            let min = if shared {
                MIN_SHARED_INSTANCES
            } else {
                MIN_FILE_INSTANCES
            };
            let Some((instances, window)) =
                trend::rising(&self.group_series(backing, |g| g.instances as u64), min)
            else {
                continue;
            };
            let (Some(mappings), Some(size)) = (
                Change::of(&self.group_series(backing, |g| g.mappings as u64)),
                Change::of(&self.group_series(backing, |g| g.size)),
            ) else {
                continue;
            };
            let object = MappedObject {
                backing: backing.clone(),
                label: g.label.clone(),
                mappings,
                instances,
                size,
            };
            out.push(if shared {
                let rss_shmem = self.between(a, b, |s| s.status.rss_shmem);
                Signal::RepeatedSharedMapping {
                    rate_per_s: rss_shmem.rate_per_s,
                    window,
                    object,
                    rss: self.between(a, b, |s| s.status.vm_rss),
                    shr: self.between(a, b, |s| {
                        s.status.rss_file.saturating_add(s.status.rss_shmem)
                    }),
                    rss_shmem,
                    pss_shmem: self.rollup_between(a, b, |r| r.pss_shmem),
                }
            } else {
                let rss_file = self.between(a, b, |s| s.status.rss_file);
                Signal::RepeatedFileMapping {
                    rate_per_s: rss_file.rate_per_s,
                    window,
                    object,
                    rss_file,
                    pss_file: self.rollup_between(a, b, |r| r.pss_file),
                }
            });
        }
        out
    }

    pub(super) fn anon(&self) -> Option<Signal> {
        let points = self.series(|s| Some(s.status.rss_anon));
        let floor = MIN_ANON_BYTES.max(points.first()?.1 / 100 * MIN_ANON_PERCENT);
        let (rss_anon, window) = trend::rising(&points, floor)?;
        let sum_sizes = |cat: Category| {
            let per: Points = self
                .maps
                .iter()
                .map(|(i, g)| {
                    let sum = g
                        .values()
                        .filter(|g| g.category == cat)
                        .fold(0u64, |acc, g| acc.saturating_add(g.size));
                    (self.samples[*i].t, sum)
                })
                .collect();
            Change::of(&per)
        };
        Some(Signal::AnonGrowth {
            rate_per_s: rss_anon.rate_per_s,
            window,
            rss_anon,
            pss_anon: Change::of(&self.series(|s| s.rollup.map(|r| r.pss_anon))),
            heap_size: sum_sizes(Category::Heap),
            anon_mmap_size: sum_sizes(Category::Anonymous),
        })
    }

    pub(super) fn arenas(&self) -> Option<Signal> {
        let (a, b) = self.map_ends()?;
        let (arenas, window) = trend::rising(
            &self.group_series(&Backing::GlibcArenas, |g| g.units as u64),
            MIN_ARENAS,
        )?;
        Some(Signal::ArenaGrowth {
            rate_per_s: arenas.rate_per_s,
            window,
            arenas,
            size: Change::of(&self.group_series(&Backing::GlibcArenas, |g| g.size))?,
            vm_rss: self.between(a, b, |s| s.status.vm_rss),
        })
    }

    pub(super) fn threads(&self) -> Option<Signal> {
        let (threads, window) =
            trend::rising(&self.series(|s| Some(s.threads as u64)), MIN_THREADS)?;
        Some(Signal::ThreadGrowth {
            rate_per_s: threads.rate_per_s,
            window,
            threads,
            stacks: Change::of(&self.group_series(&Backing::ThreadStacks, |g| g.units as u64)),
            stack_size: Change::of(&self.group_series(&Backing::ThreadStacks, |g| g.size)),
        })
    }

    pub(super) fn fds(&self) -> Option<Signal> {
        let (fds, window) = trend::rising(&self.series(|s| s.fd_count), MIN_FDS)?;
        let with_kinds: Vec<_> = self.samples.iter().filter_map(|s| s.fds.as_ref()).collect();
        let by_kind = match (with_kinds.first(), with_kinds.last()) {
            (Some(first), Some(last)) if with_kinds.len() >= 2 => {
                let kinds: BTreeSet<FdKind> = first
                    .by_kind
                    .keys()
                    .chain(last.by_kind.keys())
                    .copied()
                    .collect();
                Some(
                    kinds
                        .into_iter()
                        .filter_map(|k| {
                            let d = Change::new(first.count(k), last.count(k), 0.0).delta;
                            (d != 0).then_some((k, d))
                        })
                        .collect(),
                )
            }
            _ => None,
        };
        Some(Signal::FdGrowth {
            rate_per_s: fds.rate_per_s,
            window,
            fds,
            by_kind,
        })
    }

    pub(super) fn virtual_only(&self, explained: &BTreeSet<Backing>) -> Option<Signal> {
        let all_maps = self.maps.len() == self.samples.len();
        let points: Points = if all_maps {
            self.maps
                .iter()
                .map(|(i, g)| {
                    let s = &self.samples[*i];
                    let known = explained
                        .iter()
                        .filter_map(|b| g.get(b))
                        .fold(0u64, |acc, g| acc.saturating_add(g.size));
                    (s.t, s.status.vm_size.saturating_sub(known))
                })
                .collect()
        } else {
            self.series(|s| Some(s.status.vm_size))
        };
        let floor = MIN_VIRTUAL_BYTES.max(points.first()?.1 / 100 * MIN_VIRTUAL_PERCENT);
        let (unexplained, window) = trend::rising(&points, floor)?;
        let last = self.samples.len() - 1;
        let vm_rss = self.between(0, last, |s| s.status.vm_rss);
        if vm_rss.delta as i128 * 8 > unexplained.delta as i128 {
            return None;
        }
        let largest = match (self.maps.first(), self.maps.last()) {
            (Some((a, first)), Some((b, lastg))) if a != b => lastg
                .iter()
                .filter(|(k, _)| !explained.contains(k))
                .map(|(k, g)| {
                    let before = first.get(k).map_or(0, |g| g.size);
                    let size = Change::new(
                        before,
                        g.size,
                        trend::span(self.samples[*a].t, self.samples[*b].t),
                    );
                    GroupGrowth {
                        backing: k.clone(),
                        label: g.label.clone(),
                        size,
                    }
                })
                .filter(|g| g.size.rose())
                .max_by_key(|g| g.size.delta),
            _ => None,
        };
        Some(Signal::VirtualOnly {
            rate_per_s: unexplained.rate_per_s,
            window,
            vm_size: self.between(0, last, |s| s.status.vm_size),
            unexplained,
            vm_rss,
            largest,
        })
    }

    pub(super) fn swap(&self) -> Option<Signal> {
        let (vm_swap, window) =
            trend::rising(&self.series(|s| Some(s.status.vm_swap)), MIN_SWAP_BYTES)?;
        let vm_rss = self.between(0, self.samples.len() - 1, |s| s.status.vm_rss);
        (vm_rss.delta < 0).then_some(Signal::SwapInsteadOfFree {
            rate_per_s: vm_swap.rate_per_s,
            window,
            vm_rss,
            vm_swap,
        })
    }
}
