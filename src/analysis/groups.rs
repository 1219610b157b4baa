//! Grouping mappings by the object that backs them.
//!
//! `pmap` lists VMAs; a person hunting a leak wants objects: "this SysV
//! segment", "this file", "the thread stacks", "glibc's arenas". Grouping is
//! also what makes a repeated mapping stand out: one 64 KiB segment mapped 412
//! times is one group with 412 mappings and 412× its size in RSS.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::process::maps::{Mapping, MemStats};
use crate::units;

/// glibc's HEAP_MAX_SIZE on 64-bit: each non-main arena heap reserves this
/// much, aligned to it.
pub const ARENA_HEAP_SIZE: u64 = 64 << 20;
/// Thread-stack guards are a page by default; allow a few for custom sizes.
const MAX_GUARD: u64 = 64 << 10;

/// What backs a group of mappings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backing {
    /// A SysV segment: the maps inode is the shmid, the path carries the key.
    Sysv {
        shmid: u64,
        key: u32,
    },
    /// POSIX shared memory under /dev/shm (Python's SharedMemory).
    PosixShm {
        path: String,
        inode: u64,
    },
    Memfd {
        name: String,
        inode: u64,
    },
    /// MAP_SHARED|MAP_ANONYMOUS: "/dev/zero (deleted)"; each mmap is its own object.
    SharedAnon {
        inode: u64,
    },
    File {
        path: String,
        dev: String,
        inode: u64,
    },
    DeletedFile {
        path: String,
        dev: String,
        inode: u64,
    },
    Heap,
    MainStack,
    ThreadStacks,
    GlibcArenas,
    /// `[anon:name]` set with PR_SET_VMA_ANON_NAME.
    NamedAnon {
        name: String,
    },
    /// [vdso], [vvar], [vsyscall].
    Kernel {
        name: String,
    },
    Anonymous,
}

/// Coarse families, for sections of the report and for the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    SharedMemory,
    File,
    DeletedFile,
    Heap,
    Stack,
    ThreadStacks,
    Arenas,
    Anonymous,
    Kernel,
}

impl Backing {
    pub fn category(&self) -> Category {
        match self {
            Backing::Sysv { .. }
            | Backing::PosixShm { .. }
            | Backing::Memfd { .. }
            | Backing::SharedAnon { .. } => Category::SharedMemory,
            Backing::File { .. } => Category::File,
            Backing::DeletedFile { .. } => Category::DeletedFile,
            Backing::Heap => Category::Heap,
            Backing::MainStack => Category::Stack,
            Backing::ThreadStacks => Category::ThreadStacks,
            Backing::GlibcArenas => Category::Arenas,
            Backing::NamedAnon { .. } | Backing::Anonymous => Category::Anonymous,
            Backing::Kernel { .. } => Category::Kernel,
        }
    }

    /// Shared-memory objects: any second mapping of one is a repeat.
    pub fn is_shared_object(&self) -> bool {
        self.category() == Category::SharedMemory
    }

    /// Objects that can be "mapped again": files and shared memory.
    pub fn is_object(&self) -> bool {
        matches!(
            self.category(),
            Category::SharedMemory | Category::File | Category::DeletedFile
        )
    }

    /// The name a person sees, in pmap's style for SysV segments.
    pub fn label(&self) -> String {
        match self {
            Backing::Sysv { shmid, key } => format!("[ shmid=0x{shmid:x} ] key 0x{key:08x}"),
            Backing::PosixShm { path, .. } => path.clone(),
            Backing::Memfd { name, .. } => format!("memfd:{name}"),
            Backing::SharedAnon { inode } => format!("[ shared anon ] inode {inode}"),
            Backing::File { path, .. } => path.clone(),
            Backing::DeletedFile { path, .. } => format!("{path} (deleted)"),
            Backing::Heap => "[heap]".into(),
            Backing::MainStack => "[stack]".into(),
            Backing::ThreadStacks => "[thread stacks]".into(),
            Backing::GlibcArenas => "[glibc arenas]".into(),
            Backing::NamedAnon { name } => format!("[anon:{name}]"),
            Backing::Kernel { name } => name.clone(),
            Backing::Anonymous => "[anon]".into(),
        }
    }

    /// What one of these is called in a sentence.
    pub fn noun(&self) -> String {
        match self {
            Backing::Sysv { shmid, .. } => format!("shmid 0x{shmid:x}"),
            Backing::PosixShm { path, .. } => format!("POSIX shared memory {path}"),
            Backing::Memfd { name, .. } => format!("memfd {name}"),
            Backing::SharedAnon { inode } => format!("shared anonymous object (inode {inode})"),
            Backing::File { path, .. } => format!("file {path}"),
            Backing::DeletedFile { path, .. } => format!("deleted file {path}"),
            other => other.label(),
        }
    }

    fn unit_noun(&self) -> &'static str {
        match self {
            Backing::Sysv { .. } => "segment",
            Backing::File { .. } | Backing::DeletedFile { .. } => "file",
            _ => "object",
        }
    }
}

/// Classifies every mapping. Needs the whole list in address order because
/// thread stacks and arenas are recognised by their neighbours.
pub fn classify(maps: &[Mapping]) -> Vec<Backing> {
    let mut out: Vec<Backing> = maps.iter().map(classify_one).collect();
    for i in 0..maps.len() {
        if out[i] != Backing::Anonymous {
            continue;
        }
        let m = &maps[i];
        // glibc arena heap: 64 MiB-aligned, rw-p head plus a ---p tail that
        // together reserve exactly 64 MiB (the tail shrinks as it is used).
        if m.start.is_multiple_of(ARENA_HEAP_SIZE) && !m.shared() {
            let tail = maps
                .get(i + 1)
                .filter(|n| n.start == m.end && n.is_anonymous() && n.no_access());
            let total = m.size() + tail.map_or(0, |t| t.size());
            if total == ARENA_HEAP_SIZE && (m.writable() || tail.is_some()) {
                out[i] = Backing::GlibcArenas;
                if tail.is_some() {
                    out[i + 1] = Backing::GlibcArenas;
                }
                continue;
            }
        }
        // Thread stack: a small ---p guard directly below an rw-p region.
        if m.writable() && !m.shared() && i > 0 {
            let g = &maps[i - 1];
            if out[i - 1] == Backing::Anonymous
                && g.end == m.start
                && g.no_access()
                && g.size() <= MAX_GUARD
            {
                out[i - 1] = Backing::ThreadStacks;
                out[i] = Backing::ThreadStacks;
            }
        }
    }
    out
}

fn classify_one(m: &Mapping) -> Backing {
    let path = m.path.as_str();
    if path.is_empty() {
        return Backing::Anonymous;
    }
    if let Some(rest) = path.strip_prefix('[') {
        let name = rest.trim_end_matches(']');
        return match name {
            "heap" => Backing::Heap,
            "stack" => Backing::MainStack,
            n if n.starts_with("stack:") => Backing::ThreadStacks,
            n if n.starts_with("anon:") || n.starts_with("anon_shmem:") => Backing::NamedAnon {
                name: n.split_once(':').map_or("", |x| x.1).to_string(),
            },
            _ => Backing::Kernel {
                name: path.to_string(),
            },
        };
    }
    let clean = m.clean_path();
    if m.dev_major == 0 {
        if let Some(key) = sysv_key(clean) {
            return Backing::Sysv {
                shmid: m.inode,
                key,
            };
        }
        if let Some(name) = clean.strip_prefix("/memfd:") {
            return Backing::Memfd {
                name: name.to_string(),
                inode: m.inode,
            };
        }
        if clean == "/dev/zero" && m.shared() {
            return Backing::SharedAnon { inode: m.inode };
        }
    }
    if clean.starts_with("/dev/shm/") {
        return Backing::PosixShm {
            path: clean.to_string(),
            inode: m.inode,
        };
    }
    let dev = format!("{:02x}:{:02x}", m.dev_major, m.dev_minor);
    if m.is_deleted() {
        Backing::DeletedFile {
            path: clean.to_string(),
            dev,
            inode: m.inode,
        }
    } else {
        Backing::File {
            path: path.to_string(),
            dev,
            inode: m.inode,
        }
    }
}

/// `/SYSV0000abcd` → 0xabcd.
fn sysv_key(path: &str) -> Option<u32> {
    let hex = path.strip_prefix("/SYSV")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// The mappings of one object (or family), summed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub backing: Backing,
    pub label: String,
    pub category: Category,
    /// Number of VMAs.
    pub mappings: usize,
    /// Thread stacks or arena heaps counted as units; otherwise equal to `mappings`.
    pub units: usize,
    pub size: u64,
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
    pub dirty: u64,
    /// How many separate times the object is mapped: runs of address-adjacent
    /// mappings whose file offsets move forward. A shared library's segments
    /// (RELRO even maps one page twice) form one run; `mmap(fd, 0)` done
    /// twice forms two, even when the kernel places them side by side.
    pub instances: usize,
    /// How far into the object the mappings reach (its apparent size).
    pub object_extent: u64,
    /// The object's real size when known (SysV size from /proc/sysvipc/shm).
    pub object_size: Option<u64>,
}

impl Group {
    /// Mapped more than once in this process (a file or shared-memory
    /// object with two or more separate instances).
    pub fn is_repeated(&self) -> bool {
        self.backing.is_object() && self.instances > 1
    }

    /// The plain-words flag for a repeated mapping.
    pub fn repeat_message(&self) -> String {
        let obj = self.object_size.unwrap_or(self.object_extent);
        format!(
            "{} is mapped {} times: {} of RSS for one {} {}",
            self.backing.noun(),
            self.instances,
            units::bytes(self.rss),
            units::bytes(obj),
            self.backing.unit_noun(),
        )
    }
}

/// Groups mappings by backing object, biggest RSS first.
pub fn group(maps: &[Mapping]) -> Vec<Group> {
    let kinds = classify(maps);
    // Per group: the previous mapping's end address and end offset.
    let mut by_key: BTreeMap<Backing, (Group, Option<(u64, u64)>)> = BTreeMap::new();
    for (m, backing) in maps.iter().zip(kinds) {
        let (g, prev) = by_key.entry(backing.clone()).or_insert_with(|| {
            (
                Group {
                    label: backing.label(),
                    category: backing.category(),
                    backing,
                    mappings: 0,
                    units: 0,
                    size: 0,
                    rss: 0,
                    pss: 0,
                    swap: 0,
                    dirty: 0,
                    instances: 0,
                    object_extent: 0,
                    object_size: None,
                },
                None,
            )
        });
        g.mappings += 1;
        let is_unit_head = match g.backing {
            // A stack is its guard plus the stack: count the rw part.
            Backing::ThreadStacks => m.writable(),
            // An arena heap is its 64 MiB-aligned head.
            Backing::GlibcArenas => m.start % ARENA_HEAP_SIZE == 0,
            _ => true,
        };
        if is_unit_head {
            g.units += 1;
        }
        g.size = g.size.saturating_add(m.size());
        add_stats(g, &m.stats);
        if starts_instance(*prev, m) {
            g.instances += 1;
        }
        *prev = Some((m.end, m.offset.saturating_add(m.size())));
        g.object_extent = g.object_extent.max(m.offset.saturating_add(m.size()));
    }
    let mut groups: Vec<Group> = by_key.into_values().map(|(g, _)| g).collect();
    groups.sort_by(|a, b| {
        b.rss
            .cmp(&a.rss)
            .then(b.size.cmp(&a.size))
            .then(a.label.cmp(&b.label))
    });
    groups
}

/// Whether `m` begins a new instance of its object rather than continuing the
/// previous mapping of it (see [`Group::instances`]).
fn starts_instance(prev: Option<(u64, u64)>, m: &Mapping) -> bool {
    const PAGE: u64 = 4096;
    match prev {
        None => true,
        Some((prev_end, prev_offset_end)) => {
            m.start != prev_end || m.offset == 0 || m.offset.saturating_add(PAGE) < prev_offset_end
        }
    }
}

fn add_stats(g: &mut Group, s: &MemStats) {
    g.rss = g.rss.saturating_add(s.rss);
    g.pss = g.pss.saturating_add(s.pss);
    g.swap = g.swap.saturating_add(s.swap);
    g.dirty = g.dirty.saturating_add(s.dirty());
}

/// Fills in real SysV segment sizes from /proc/sysvipc/shm.
pub fn attach_sysv_sizes(groups: &mut [Group], segments: &[crate::process::sysvipc::Segment]) {
    for g in groups {
        if let Backing::Sysv { shmid, .. } = g.backing
            && let Some(seg) = segments.iter().find(|s| s.shmid == shmid)
        {
            g.object_size = Some(seg.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::maps::parse_maps;

    fn maps(text: &str) -> Vec<Mapping> {
        parse_maps(text.as_bytes())
    }

    #[test]
    fn recognises_sysv_posix_memfd_and_shared_anon() {
        let m = maps(
            "7f0000000000-7f0000010000 rw-s 00000000 00:01 1789692874 /SYSV6aac8bca (deleted)\n\
             7f0000010000-7f0000020000 rw-s 00000000 00:01 1789692874 /SYSV6aac8bca (deleted)\n\
             7f0000020000-7f0000030000 rw-s 00000000 00:1b 77 /dev/shm/psm_abc\n\
             7f0000030000-7f0000040000 rw-s 00000000 00:01 1025 /memfd:buf (deleted)\n\
             7f0000040000-7f0000050000 rw-s 00000000 00:01 1026 /dev/zero (deleted)\n",
        );
        let kinds = classify(&m);
        assert_eq!(
            kinds[0],
            Backing::Sysv {
                shmid: 1789692874,
                key: 0x6aac8bca
            }
        );
        assert_eq!(
            kinds[2],
            Backing::PosixShm {
                path: "/dev/shm/psm_abc".into(),
                inode: 77
            }
        );
        assert_eq!(
            kinds[3],
            Backing::Memfd {
                name: "buf".into(),
                inode: 1025
            }
        );
        assert_eq!(kinds[4], Backing::SharedAnon { inode: 1026 });
        let groups = group(&m);
        let sysv = groups
            .iter()
            .find(|g| matches!(g.backing, Backing::Sysv { .. }))
            .unwrap();
        assert_eq!(sysv.mappings, 2);
        assert!(sysv.is_repeated());
        assert_eq!(sysv.label, "[ shmid=0x6aac8bca ] key 0x6aac8bca");
        assert!(
            sysv.repeat_message()
                .starts_with("shmid 0x6aac8bca is mapped 2 times")
        );
        assert!(
            !groups
                .iter()
                .find(|g| g.label == "/dev/shm/psm_abc")
                .unwrap()
                .is_repeated()
        );
    }

    #[test]
    fn shared_library_segments_are_not_repeats_but_remapped_file_is() {
        let m = maps(
            "7f0000000000-7f0000001000 r--p 00000000 fe:01 10 /usr/lib/libc.so.6\n\
             7f0000001000-7f0000005000 r-xp 00001000 fe:01 10 /usr/lib/libc.so.6\n\
             7f0000005000-7f0000006000 rw-p 00005000 fe:01 10 /usr/lib/libc.so.6\n\
             7f1000000000-7f1000010000 r--s 00000000 fe:01 20 /data/blob\n\
             7f1000010000-7f1000020000 r--s 00000000 fe:01 20 /data/blob\n\
             7f1000020000-7f1000030000 r--s 00000000 fe:01 20 /data/blob\n",
        );
        let groups = group(&m);
        let libc = groups
            .iter()
            .find(|g| g.label == "/usr/lib/libc.so.6")
            .unwrap();
        assert_eq!(
            (libc.mappings, libc.instances, libc.is_repeated()),
            (3, 1, false)
        );
        let blob = groups.iter().find(|g| g.label == "/data/blob").unwrap();
        assert_eq!(
            (blob.mappings, blob.instances, blob.object_extent),
            (3, 3, 0x10000)
        );
        assert!(blob.is_repeated());
        assert_eq!(
            blob.repeat_message(),
            "file /data/blob is mapped 3 times: 0 B of RSS for one 64.0 KiB file"
        );
    }

    #[test]
    fn relro_page_mapped_twice_is_one_instance() {
        let m = maps(
            "565092d3c000-565092d3d000 r--p 00000000 fe:00 73263 /usr/bin/python3.12\n\
             565092d3d000-565092d3e000 r-xp 00001000 fe:00 73263 /usr/bin/python3.12\n\
             565092d3e000-565092d3f000 r--p 00002000 fe:00 73263 /usr/bin/python3.12\n\
             565092d3f000-565092d40000 r--p 00002000 fe:00 73263 /usr/bin/python3.12\n\
             565092d40000-565092d41000 rw-p 00003000 fe:00 73263 /usr/bin/python3.12\n\
             7f0000000000-7f0000010000 rw-s 00000000 00:01 5 /SYSV00000000 (deleted)\n\
             7f0000010000-7f0000020000 rw-s 00000000 00:01 5 /SYSV00000000 (deleted)\n",
        );
        let groups = group(&m);
        let exe = groups
            .iter()
            .find(|g| g.label == "/usr/bin/python3.12")
            .unwrap();
        assert_eq!(
            (exe.mappings, exe.instances, exe.is_repeated()),
            (5, 1, false)
        );
        // Adjacent attaches of one segment are still separate instances.
        let shm = groups
            .iter()
            .find(|g| matches!(g.backing, Backing::Sysv { .. }))
            .unwrap();
        assert_eq!((shm.instances, shm.is_repeated()), (2, true));
    }

    #[test]
    fn thread_stacks_and_arenas_by_shape() {
        let m = maps(
            "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n\
             7f0000021000-7f0004000000 ---p 00000000 00:00 0 \n\
             7f0010000000-7f0010001000 ---p 00000000 00:00 0 \n\
             7f0010001000-7f0010801000 rw-p 00000000 00:00 0 \n\
             7f0020000000-7f0020100000 rw-p 00000000 00:00 0 \n\
             7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n",
        );
        let kinds = classify(&m);
        assert_eq!(&kinds[..2], &[Backing::GlibcArenas, Backing::GlibcArenas]);
        assert_eq!(
            &kinds[2..4],
            &[Backing::ThreadStacks, Backing::ThreadStacks]
        );
        assert_eq!(kinds[4], Backing::Anonymous);
        assert_eq!(kinds[5], Backing::MainStack);
        let groups = group(&m);
        let stacks = groups
            .iter()
            .find(|g| g.backing == Backing::ThreadStacks)
            .unwrap();
        assert_eq!((stacks.mappings, stacks.units), (2, 1));
        let arenas = groups
            .iter()
            .find(|g| g.backing == Backing::GlibcArenas)
            .unwrap();
        assert_eq!(
            (arenas.mappings, arenas.units, arenas.size),
            (2, 1, ARENA_HEAP_SIZE)
        );
    }

    #[test]
    fn absurd_sizes_saturate_instead_of_overflowing() {
        let m = maps(
            "0-ffffffffffffffff rw-p 00000000 00:00 0 \n0-ffffffffffffffff rw-p 00000000 00:00 0 \n",
        );
        let groups = group(&m);
        assert_eq!(groups[0].size, u64::MAX);
    }

    #[test]
    fn named_and_kernel_mappings() {
        let m = maps(
            "1000-2000 rw-p 00000000 00:00 0 [anon:glibc: malloc]\n\
             2000-3000 r-xp 00000000 00:00 0 [vdso]\n\
             3000-4000 rw-p 00000000 00:00 0 [heap]\n",
        );
        let kinds = classify(&m);
        assert_eq!(
            kinds[0],
            Backing::NamedAnon {
                name: "glibc: malloc".into()
            }
        );
        assert_eq!(
            kinds[1],
            Backing::Kernel {
                name: "[vdso]".into()
            }
        );
        assert_eq!(kinds[2], Backing::Heap);
    }
}
