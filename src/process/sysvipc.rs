//! /proc/sysvipc/shm: the SysV shared-memory segments of our IPC namespace.
//!
//! Columns: `key shmid perms size cpid lpid nattch uid gid cuid cgid atime
//! dtime ctime rss swap`. The key is printed as a signed int, perms in octal,
//! sizes in bytes; ids are full u32 (procfs-crate stores uids as u16).

use serde::Serialize;

/// SHM_DEST: the segment was IPC_RMID'ed and goes away at the last detach.
const SHM_DEST: u32 = 0o1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub key: u32,
    pub shmid: u64,
    pub perms: u32,
    pub size: u64,
    pub cpid: u32,
    pub lpid: u32,
    pub nattch: u64,
    pub uid: u32,
    pub gid: u32,
    pub rss: u64,
    pub swap: u64,
}

impl Segment {
    /// Marked for removal (ipcs shows "dest").
    pub fn removed(&self) -> bool {
        self.perms & SHM_DEST != 0
    }
}

pub fn parse(bytes: &[u8]) -> Vec<Segment> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split_whitespace().collect();
    let idx = |name: &str| cols.iter().position(|c| *c == name);
    let (
        Some(ik),
        Some(ii),
        Some(ip),
        Some(isz),
        Some(icp),
        Some(ilp),
        Some(ina),
        Some(iu),
        Some(ig),
    ) = (
        idx("key"),
        idx("shmid"),
        idx("perms"),
        idx("size"),
        idx("cpid"),
        idx("lpid"),
        idx("nattch"),
        idx("uid"),
        idx("gid"),
    )
    else {
        return Vec::new();
    };
    let (irss, iswap) = (idx("rss"), idx("swap"));
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| f.get(i).copied();
        let dec = |i: Option<usize>| i.and_then(get).and_then(|v| v.parse::<u64>().ok());
        let Some(key) = get(ik).and_then(|v| v.parse::<i64>().ok()) else {
            continue;
        };
        let (Some(shmid), Some(perms)) = (
            dec(Some(ii)),
            get(ip).and_then(|v| u32::from_str_radix(v, 8).ok()),
        ) else {
            continue;
        };
        out.push(Segment {
            key: key as u32, // the kernel prints a key_t (int); keep its bits
            shmid,
            perms,
            size: dec(Some(isz)).unwrap_or(0),
            cpid: dec(Some(icp)).unwrap_or(0) as u32,
            lpid: dec(Some(ilp)).unwrap_or(0) as u32,
            nattch: dec(Some(ina)).unwrap_or(0),
            uid: dec(Some(iu)).unwrap_or(0) as u32,
            gid: dec(Some(ig)).unwrap_or(0) as u32,
            rss: dec(irss).unwrap_or(0),
            swap: dec(iswap).unwrap_or(0),
        });
    }
    out
}

/// Reads the segments of our IPC namespace; an unreadable file (hidepid
/// `subset=pid`) gives an empty list, not an error.
pub fn read() -> Vec<Segment> {
    super::read_capped(std::path::Path::new("/proc/sysvipc/shm"))
        .map(|b| parse(&b))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHM: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0          8   600                 65536  1234  1234    200     0     0     0     0 1700000000          0 1700000000                 65536                     0
-559038737     32769  1640                  4096  4321  4322      1 100000 100000 100000 100000 1700000001          0 1700000000                  4096                     0
";

    #[test]
    fn parses_rows_with_octal_perms_and_big_uids() {
        let segs = parse(SHM.as_bytes());
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].shmid, 8);
        assert_eq!(segs[0].perms, 0o600);
        assert_eq!(segs[0].nattch, 200);
        assert!(!segs[0].removed());
        assert_eq!(segs[1].key, 0xdeadbeef);
        assert_eq!(segs[1].uid, 100000);
        assert!(segs[1].removed());
        assert_eq!(segs[1].rss, 4096);
    }

    #[test]
    fn garbage_is_empty() {
        assert!(parse(b"").is_empty());
        assert!(parse(b"key shmid\n1 2\n").is_empty());
        assert_eq!(parse(format!("{}x y z\n", SHM).as_bytes()).len(), 2);
    }
}
