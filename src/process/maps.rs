//! Streaming parsers for /proc/PID/maps, smaps and smaps_rollup.
//!
//! Hand-written because they are on the hot path (60k mappings give a 45 MB
//! smaps) and because general-purpose crates got details wrong (octal perms,
//! u16 ids). The parsers skip what they do not understand instead of failing:
//! one odd line must not hide the other 59,999.

use serde::Serialize;

/// The smaps figures of one mapping (or of the rollup), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemStats {
    pub size: u64,
    pub rss: u64,
    pub pss: u64,
    pub pss_anon: u64,
    pub pss_file: u64,
    pub pss_shmem: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    pub anonymous: u64,
    pub lazy_free: u64,
    pub anon_huge: u64,
    pub swap: u64,
    pub swap_pss: u64,
    pub locked: u64,
}

impl MemStats {
    /// pmap's "Dirty" column.
    pub fn dirty(&self) -> u64 {
        self.shared_dirty.saturating_add(self.private_dirty)
    }

    pub fn add(&mut self, o: &MemStats) {
        self.size = self.size.saturating_add(o.size);
        self.rss = self.rss.saturating_add(o.rss);
        self.pss = self.pss.saturating_add(o.pss);
        self.pss_anon = self.pss_anon.saturating_add(o.pss_anon);
        self.pss_file = self.pss_file.saturating_add(o.pss_file);
        self.pss_shmem = self.pss_shmem.saturating_add(o.pss_shmem);
        self.shared_clean = self.shared_clean.saturating_add(o.shared_clean);
        self.shared_dirty = self.shared_dirty.saturating_add(o.shared_dirty);
        self.private_clean = self.private_clean.saturating_add(o.private_clean);
        self.private_dirty = self.private_dirty.saturating_add(o.private_dirty);
        self.anonymous = self.anonymous.saturating_add(o.anonymous);
        self.lazy_free = self.lazy_free.saturating_add(o.lazy_free);
        self.anon_huge = self.anon_huge.saturating_add(o.anon_huge);
        self.swap = self.swap.saturating_add(o.swap);
        self.swap_pss = self.swap_pss.saturating_add(o.swap_pss);
        self.locked = self.locked.saturating_add(o.locked);
    }

    fn set(&mut self, key: &[u8], bytes: u64) {
        match key {
            b"Size" => self.size = bytes,
            b"Rss" => self.rss = bytes,
            b"Pss" => self.pss = bytes,
            b"Pss_Anon" => self.pss_anon = bytes,
            b"Pss_File" => self.pss_file = bytes,
            b"Pss_Shmem" => self.pss_shmem = bytes,
            b"Shared_Clean" => self.shared_clean = bytes,
            b"Shared_Dirty" => self.shared_dirty = bytes,
            b"Private_Clean" => self.private_clean = bytes,
            b"Private_Dirty" => self.private_dirty = bytes,
            b"Anonymous" => self.anonymous = bytes,
            b"LazyFree" => self.lazy_free = bytes,
            b"AnonHugePages" => self.anon_huge = bytes,
            b"Swap" => self.swap = bytes,
            b"SwapPss" => self.swap_pss = bytes,
            b"Locked" => self.locked = bytes,
            _ => {}
        }
    }
}

/// One line of /proc/PID/maps, plus its smaps figures when read from smaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rwxp` / `rw-s` exactly as the kernel prints it.
    #[serde(serialize_with = "ser_perms")]
    pub perms: [u8; 4],
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path column as printed, including a " (deleted)" suffix.
    pub path: String,
    /// Zero unless parsed from smaps.
    pub stats: MemStats,
}

fn ser_perms<S: serde::Serializer>(p: &[u8; 4], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(std::str::from_utf8(p).unwrap_or("????"))
}

impl Mapping {
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn perms_str(&self) -> &str {
        std::str::from_utf8(&self.perms).unwrap_or("????")
    }
    pub fn readable(&self) -> bool {
        self.perms[0] == b'r'
    }
    pub fn writable(&self) -> bool {
        self.perms[1] == b'w'
    }
    pub fn executable(&self) -> bool {
        self.perms[2] == b'x'
    }
    pub fn shared(&self) -> bool {
        self.perms[3] == b's'
    }
    /// No access at all: guard pages and reserved address space.
    pub fn no_access(&self) -> bool {
        &self.perms[..3] == b"---"
    }
    /// Not backed by any file or named kernel object.
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && self.path.is_empty()
    }
    /// The path without the " (deleted)" suffix.
    pub fn clean_path(&self) -> &str {
        self.path.strip_suffix(" (deleted)").unwrap_or(&self.path)
    }
    pub fn is_deleted(&self) -> bool {
        self.path.ends_with(" (deleted)")
    }
}

/// Parses /proc/PID/maps.
pub fn parse_maps(bytes: &[u8]) -> Vec<Mapping> {
    let mut out = Vec::with_capacity(bytes.len() / 90 + 1);
    for line in bytes.split(|&b| b == b'\n') {
        if let Some(m) = parse_header(line) {
            out.push(m);
        }
    }
    out
}

/// Parses /proc/PID/smaps or smaps_rollup: a header line per mapping followed
/// by `Key:   N kB` lines.
pub fn parse_smaps(bytes: &[u8]) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::with_capacity(bytes.len() / 1000 + 1);
    for line in bytes.split(|&b| b == b'\n') {
        let Some(&first) = line.first() else { continue };
        if first.is_ascii_uppercase() {
            if let Some(m) = out.last_mut()
                && let Some((key, bytes)) = parse_field(line)
            {
                m.stats.set(key, bytes);
            }
        } else if let Some(m) = parse_header(line) {
            out.push(m);
        }
    }
    out
}

/// `Rss:                 64 kB` → (b"Rss", 65536).
fn parse_field(line: &[u8]) -> Option<(&[u8], u64)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let key = &line[..colon];
    let mut rest = &line[colon + 1..];
    while let [b' ' | b'\t', tail @ ..] = rest {
        rest = tail;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None; // VmFlags, THPeligible with no unit are fine to skip too
    }
    let value = parse_dec(&rest[..digits])?;
    let unit = &rest[digits..];
    let mult = if unit.starts_with(b" kB") { 1024 } else { 1 };
    Some((key, value.saturating_mul(mult)))
}

/// `start-end perms offset maj:min inode [path]`.
fn parse_header(line: &[u8]) -> Option<Mapping> {
    let mut fields = Fields { rest: line };
    let range = fields.next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = parse_hex(&range[..dash])?;
    let end = parse_hex(&range[dash + 1..])?;
    let perms_raw = fields.next()?;
    if perms_raw.len() != 4 {
        return None;
    }
    let mut perms = [0u8; 4];
    perms.copy_from_slice(perms_raw);
    let offset = parse_hex(fields.next()?)?;
    let dev = fields.next()?;
    let colon = dev.iter().position(|&b| b == b':')?;
    let dev_major = parse_hex(&dev[..colon])? as u32;
    let dev_minor = parse_hex(&dev[colon + 1..])? as u32;
    let inode = parse_dec(fields.next()?)?;
    let path = fields.remainder();
    Some(Mapping {
        start,
        end,
        perms,
        offset,
        dev_major,
        dev_minor,
        inode,
        path: String::from_utf8_lossy(path).into_owned(),
        stats: MemStats {
            size: end.saturating_sub(start),
            ..MemStats::default()
        },
    })
}

/// Whitespace-separated fields, with access to the untouched remainder (paths
/// may contain spaces).
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn skip_ws(&mut self) {
        while let [b' ' | b'\t', tail @ ..] = self.rest {
            self.rest = tail;
        }
    }
    fn next(&mut self) -> Option<&'a [u8]> {
        self.skip_ws();
        if self.rest.is_empty() {
            return None;
        }
        let len = self
            .rest
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(self.rest.len());
        let (field, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some(field)
    }
    fn remainder(&mut self) -> &'a [u8] {
        self.skip_ws();
        self.rest
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234                       /usr/bin/python3.11
Size:                  4 kB
KernelPageSize:        4 kB
Rss:                   4 kB
Pss:                   2 kB
Shared_Clean:          4 kB
Private_Dirty:         0 kB
VmFlags: rd mr mw me dw sd
7efec14fa000-7efec150a000 rw-s 00000000 00:01 8                          /SYSV00001234 (deleted)
Size:                 64 kB
Rss:                  64 kB
Pss:                   0 kB
Shared_Dirty:         64 kB
Swap:                  0 kB
THPeligible:    0
7ffd1e5f0000-7ffd1e611000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  12 kB
";

    #[test]
    fn parses_smaps_headers_and_fields() {
        let maps = parse_smaps(SMAPS.as_bytes());
        assert_eq!(maps.len(), 3);
        let shm = &maps[1];
        assert_eq!(shm.start, 0x7efec14fa000);
        assert_eq!(shm.perms_str(), "rw-s");
        assert_eq!((shm.dev_major, shm.dev_minor, shm.inode), (0, 1, 8));
        assert_eq!(shm.path, "/SYSV00001234 (deleted)");
        assert_eq!(shm.clean_path(), "/SYSV00001234");
        assert_eq!(shm.stats.rss, 64 * 1024);
        assert_eq!(shm.stats.shared_dirty, 64 * 1024);
        assert_eq!(maps[0].stats.pss, 2048);
        assert_eq!(maps[2].path, "[stack]");
    }

    #[test]
    fn maps_paths_keep_spaces() {
        let m = parse_maps(
            b"7f0000000000-7f0000001000 r--s 00001000 08:02 99   /tmp/a file (deleted)\n",
        );
        assert_eq!(m[0].path, "/tmp/a file (deleted)");
        assert_eq!(m[0].offset, 0x1000);
        assert!(m[0].is_deleted());
        assert!(m[0].shared());
    }

    #[test]
    fn anonymous_mapping_has_empty_path() {
        let m = parse_maps(b"7f0000000000-7f0000800000 rw-p 00000000 00:00 0 \n");
        assert!(m[0].is_anonymous());
        assert_eq!(m[0].size(), 0x800000);
    }

    #[test]
    fn rollup_has_pss_split() {
        let r = parse_smaps(b"5555-7fff ---p 00000000 00:00 0    [rollup]\nRss: 100 kB\nPss_Anon: 10 kB\nPss_File: 20 kB\nPss_Shmem: 64 kB\n");
        assert_eq!(r[0].stats.pss_shmem, 64 * 1024);
        assert_eq!(r[0].stats.pss_file, 20 * 1024);
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        let junk: &[u8] = b"zz-yy rw-p 0 0:0 0\n1-2 rwxpq 0 00:00 0\n1-2 rw-p 0 0000 0\n\xff\xff\n\
            ffffffffffffffffff-1 rw-p 0 00:00 0\nRss: 4 kB\n1000-2000 rw-p 0 00:00 99999999999999999999999\n";
        assert!(parse_smaps(junk).is_empty());
        assert!(parse_maps(junk).is_empty());
        // A field line before any header is ignored.
        assert!(parse_smaps(b"Rss: 4 kB\n").is_empty());
    }
}
