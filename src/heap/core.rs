//! An ELF core file as an address space.
//!
//! A core holds the process's written memory in `PT_LOAD` segments; pages
//! that were never written (read-only file data: libpython's `.rodata`
//! where the names of static types live) are left out (`p_filesz` 0) and
//! are read from the binaries on disk that the `NT_FILE` note names, the
//! way pystack does. Both the core and those binaries are memory-mapped,
//! never read whole: cores are often gigabytes.
//!
//! A binary on disk may have been upgraded since the core was written: its
//! first page is compared with the core's copy of it (ELF header, program
//! headers and, usually, the build-id note) when the core has one.
//!
//! Everything in a core is untrusted: offsets are checked against the
//! file's real length (a truncated core is common), so a bad core gives an
//! error or unreadable ranges, never a panic or a SIGBUS.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

use super::space::AddressSpace;
use crate::process::maps::Mapping;

type Endian = object::Endianness;

/// At most this many NT_FILE entries are believed.
const MAX_FILE_ENTRIES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("cannot open core file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable core file: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// A read-only memory map of a whole file, unmapped on drop.
struct Mmap {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a read-only private mapping owned by this value.
unsafe impl Send for Mmap {}
unsafe impl Sync for Mmap {}

impl Mmap {
    fn open(path: &Path) -> std::io::Result<Mmap> {
        use std::os::fd::AsRawFd;
        let f = File::open(path)?;
        let len = f.metadata()?.len() as usize;
        if len == 0 {
            return Ok(Mmap {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: mapping a file we opened read-only; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mmap {
            ptr: ptr as *const u8,
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: valid for `len` bytes while mapped. (A file truncated by
        // someone else after mapping could still fault; cores and binaries
        // are not rewritten in place.)
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping what `open` mapped.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

/// A `PT_LOAD` segment: `filesz` bytes at `offset` of the core (already
/// clipped to the file's length), `memsz` in memory.
#[derive(Debug, Clone, Copy)]
struct Seg {
    vaddr: u64,
    memsz: u64,
    filesz: u64,
    offset: u64,
    flags: u32,
}

/// An `NT_FILE` entry: `[start, end)` maps `path` from `file_offset`.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub path: String,
}

/// What happened to a binary the core names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryState {
    /// Read from disk (at this path).
    Used(PathBuf),
    Missing(PathBuf),
    /// Its first page differs from the core's copy.
    Mismatched(PathBuf),
}

/// An ELF core file read through memory maps.
pub struct CoreFile {
    path: PathBuf,
    core: Mmap,
    segs: Vec<Seg>,
    files: Vec<FileRange>,
    /// Open binaries by the path the core names (None: missing or rejected).
    binaries: HashMap<String, Option<Mmap>>,
    states: Vec<(String, BinaryState)>,
    pub pid: u32,
    pub command: String,
    pub threads: usize,
    /// AT_ENTRY from NT_AUXV: the executable's entry point.
    pub entry: Option<u64>,
    /// Bytes of the core that lie beyond its end (a truncated core).
    pub truncated_bytes: u64,
}

impl CoreFile {
    /// Opens a core; `substitute` maps paths the core names to files to
    /// read instead (e.g. `--exe`).
    pub fn open(path: &Path, substitute: &HashMap<String, PathBuf>) -> Result<CoreFile, CoreError> {
        let core = Mmap::open(path).map_err(|source| CoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |why: String| CoreError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let data = core.bytes();
        let header = elf::FileHeader64::<Endian>::parse(data)
            .map_err(|e| invalid(format!("not a 64-bit ELF file ({e})")))?;
        let endian = header
            .endian()
            .map_err(|e| invalid(format!("unknown byte order ({e})")))?;
        if header.e_type(endian) != elf::ET_CORE {
            return Err(invalid(format!(
                "it is an ELF file of type {} rather than a core dump (type 4)",
                header.e_type(endian)
            )));
        }
        let phdrs = header
            .program_headers(endian, data)
            .map_err(|e| invalid(format!("its program headers are unreadable ({e})")))?;
        let file_len = data.len() as u64;
        let mut segs = Vec::new();
        let mut truncated_bytes = 0u64;
        let mut files = Vec::new();
        let (mut pid, mut command, mut threads, mut entry) = (0u32, String::new(), 0usize, None);
        for ph in phdrs {
            match ph.p_type(endian) {
                elf::PT_LOAD => {
                    let offset = ph.p_offset(endian);
                    let want = ph.p_filesz(endian);
                    let have = want.min(file_len.saturating_sub(offset));
                    truncated_bytes += want - have;
                    segs.push(Seg {
                        vaddr: ph.p_vaddr(endian),
                        memsz: ph.p_memsz(endian),
                        filesz: have,
                        offset,
                        flags: ph.p_flags(endian),
                    });
                }
                elf::PT_NOTE => {
                    let Ok(Some(mut notes)) = ph.notes(endian, data) else {
                        continue;
                    };
                    while let Ok(Some(note)) = notes.next() {
                        let desc = note.desc();
                        match note.n_type(endian) {
                            elf::NT_PRSTATUS => threads += 1,
                            elf::NT_PRPSINFO => {
                                if let Some(p) = desc.get(24..28) {
                                    pid = u32::from_le_bytes(p.try_into().unwrap_or([0; 4]));
                                }
                                if let Some(f) = desc.get(40..56) {
                                    command = cstr(f);
                                }
                            }
                            elf::NT_AUXV => entry = auxv_entry(desc),
                            0x4649_4c45 => files = parse_nt_file(desc),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if segs.is_empty() {
            return Err(invalid("it has no memory segments (PT_LOAD)".into()));
        }
        if segs.iter().all(|s| s.filesz == 0) && truncated_bytes > 0 {
            return Err(invalid(format!(
                "it is truncated: none of its {} MiB of memory data is in the file, which ends at {} bytes",
                truncated_bytes >> 20,
                file_len
            )));
        }
        segs.sort_by_key(|s| s.vaddr);
        files.sort_by_key(|f: &FileRange| f.start);
        let mut c = CoreFile {
            path: path.to_path_buf(),
            core,
            segs,
            files,
            binaries: HashMap::new(),
            states: Vec::new(),
            pid,
            command,
            threads,
            entry,
            truncated_bytes,
        };
        c.open_binaries(substitute);
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `NT_FILE` entries, in address order.
    pub fn file_ranges(&self) -> &[FileRange] {
        &self.files
    }

    /// What became of each binary the core names.
    pub fn binaries(&self) -> &[(String, BinaryState)] {
        &self.states
    }

    /// The executable's path as the core names it: the file mapped where
    /// the entry point is, else the lowest file mapping.
    pub fn exe_path(&self) -> Option<String> {
        self.entry
            .and_then(|e| self.files.iter().find(|f| f.start <= e && e < f.end))
            .or_else(|| self.files.first())
            .map(|f| f.path.clone())
    }

    /// The file mappings as /proc/PID/maps lines would give them
    /// (permissions from the segments), for interpreter detection.
    pub fn mappings(&self) -> Vec<Mapping> {
        self.files
            .iter()
            .map(|f| {
                let flags = self
                    .segs
                    .iter()
                    .find(|s| s.vaddr <= f.start && f.start < s.vaddr + s.memsz)
                    .map_or(elf::PF_R, |s| s.flags);
                let perm = |bit: u32, c: u8| if flags & bit != 0 { c } else { b'-' };
                Mapping {
                    start: f.start,
                    end: f.end,
                    perms: [
                        perm(elf::PF_R, b'r'),
                        perm(elf::PF_W, b'w'),
                        perm(elf::PF_X, b'x'),
                        b'p',
                    ],
                    offset: f.file_offset,
                    dev_major: 0,
                    dev_minor: 0,
                    inode: 0,
                    path: f.path.clone(),
                    stats: Default::default(),
                }
            })
            .collect()
    }

    /// The file to read for a path the core names.
    pub fn resolve(&self, path: &str) -> Option<PathBuf> {
        self.states
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, s)| match s {
                BinaryState::Used(p) => Some(p.clone()),
                _ => None,
            })
    }

    /// One sentence per binary that could not be used, for warnings.
    pub fn binary_warnings(&self) -> Vec<String> {
        self.states
            .iter()
            .filter_map(|(name, s)| match s {
                BinaryState::Used(_) => None,
                BinaryState::Missing(p) => Some(format!(
                    "{name} (named by the core) is not at {}: names and data from its read-only pages are unavailable; copy it there or pass --exe for the executable",
                    p.display()
                )),
                BinaryState::Mismatched(p) => Some(format!(
                    "{} differs from the {name} the core was made with (rebuilt or upgraded since?): it is not used; supply the original binary",
                    p.display()
                )),
            })
            .collect()
    }

    fn open_binaries(&mut self, substitute: &HashMap<String, PathBuf>) {
        let mut names: Vec<String> = self.files.iter().map(|f| f.path.clone()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let disk = substitute
                .get(&name)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(&name));
            let (map, state) = match Mmap::open(&disk) {
                Err(_) => (None, BinaryState::Missing(disk)),
                Ok(m) => {
                    if self.first_page_differs(&name, &m) {
                        (None, BinaryState::Mismatched(disk))
                    } else {
                        (Some(m), BinaryState::Used(disk))
                    }
                }
            };
            self.binaries.insert(name.clone(), map);
            self.states.push((name, state));
        }
    }

    /// Whether the core's copy of the file's first page disagrees with the
    /// file on disk (only checked when the core holds that page). Only the
    /// parts never written at run time are compared: the ELF header, the
    /// program headers and notes (the build-id) that lie in that page; the
    /// rest of it may hold relocated data in small binaries.
    fn first_page_differs(&self, name: &str, disk: &Mmap) -> bool {
        let Some(f) = self
            .files
            .iter()
            .find(|f| f.path == name && f.file_offset == 0)
        else {
            return false;
        };
        let n = 4096.min((f.end - f.start) as usize).min(disk.len);
        let Some(core) = self.core_slice(f.start, n) else {
            return false;
        };
        let disk = &disk.bytes()[..n];
        invariant_ranges(disk)
            .into_iter()
            .any(|(a, b)| core.get(a..b) != disk.get(a..b))
    }

    /// Bytes held in the core itself.
    fn core_slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let i = self.segs.partition_point(|s| s.vaddr <= addr);
        let s = self.segs.get(i.checked_sub(1)?)?;
        let off = addr - s.vaddr;
        let end = off.checked_add(len as u64)?;
        if end > s.filesz {
            return None;
        }
        let start = s.offset.checked_add(off)? as usize;
        self.core.bytes().get(start..start.checked_add(len)?)
    }

    /// Bytes from a binary on disk, for file-backed pages not in the core.
    fn file_slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let i = self.files.partition_point(|f| f.start <= addr);
        let f = self.files.get(i.checked_sub(1)?)?;
        let end = addr.checked_add(len as u64)?;
        if end > f.end {
            return None;
        }
        // Inside a PT_LOAD with file data? Then the core has (or had) it.
        let map = self.binaries.get(&f.path)?.as_ref()?;
        let start = f.file_offset.checked_add(addr - f.start)? as usize;
        map.bytes().get(start..start.checked_add(len)?)
    }

    /// The largest readable piece starting at `addr`, at most `len` long.
    fn piece(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let i = self.segs.partition_point(|s| s.vaddr <= addr);
        if let Some(s) = i.checked_sub(1).and_then(|i| self.segs.get(i)) {
            let off = addr - s.vaddr;
            if off < s.filesz {
                let n = ((s.filesz - off) as usize).min(len);
                return self.core_slice(addr, n);
            }
        }
        let j = self.files.partition_point(|f| f.start <= addr);
        let f = self.files.get(j.checked_sub(1)?)?;
        if addr >= f.end {
            return None;
        }
        let mut n = ((f.end - addr) as usize).min(len);
        // Stop where the next segment with core data begins.
        if let Some(next) = self.segs.get(i)
            && next.vaddr < addr + n as u64
        {
            n = (next.vaddr - addr) as usize;
        }
        self.file_slice(addr, n)
    }
}

impl AddressSpace for CoreFile {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if addr.checked_add(buf.len() as u64).is_none() {
            return false;
        }
        let mut done = 0usize;
        while done < buf.len() {
            let Some(p) = self.piece(addr + done as u64, buf.len() - done) else {
                return false;
            };
            if p.is_empty() {
                return false;
            }
            buf[done..done + p.len()].copy_from_slice(p);
            done += p.len();
        }
        true
    }

    fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.piece(addr, len).filter(|p| p.len() == len)
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        // Writable segments: where objects live.
        self.segs
            .iter()
            .filter(|s| s.flags & elf::PF_W != 0 && s.filesz > 0)
            .map(|s| (s.vaddr, s.vaddr.saturating_add(s.memsz)))
            .collect()
    }
}

/// Byte ranges of an ELF file's first page that loading never changes:
/// the header, the program headers and the notes. A file that is not ELF
/// compares whole.
fn invariant_ranges(page: &[u8]) -> Vec<(usize, usize)> {
    let Ok(h) = elf::FileHeader64::<Endian>::parse(page) else {
        return vec![(0, page.len())];
    };
    let Ok(e) = h.endian() else {
        return vec![(0, page.len())];
    };
    let mut out = vec![(0, std::mem::size_of::<elf::FileHeader64<Endian>>())];
    let phoff = h.e_phoff(e) as usize;
    let phsize = usize::from(h.e_phnum(e)) * usize::from(h.e_phentsize(e));
    if phoff.saturating_add(phsize) <= page.len() {
        out.push((phoff, phoff + phsize));
    }
    if let Ok(phdrs) = h.program_headers(e, page) {
        for ph in phdrs {
            if ph.p_type(e) == elf::PT_NOTE {
                let (o, sz) = (ph.p_offset(e) as usize, ph.p_filesz(e) as usize);
                if o.saturating_add(sz) <= page.len() {
                    out.push((o, o + sz));
                }
            }
        }
    }
    out
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn auxv_entry(desc: &[u8]) -> Option<u64> {
    desc.chunks_exact(16)
        .find_map(|kv| (u64_at(kv, 0)? == libc::AT_ENTRY).then(|| u64_at(kv, 8))?)
}

/// `count`, `page_size`, `count` × {start, end, page offset}, then the
/// NUL-separated paths.
fn parse_nt_file(desc: &[u8]) -> Vec<FileRange> {
    let (Some(count), Some(page)) = (u64_at(desc, 0), u64_at(desc, 8)) else {
        return Vec::new();
    };
    let count = (count as usize).min(MAX_FILE_ENTRIES);
    let Some(names_at) = count.checked_mul(24).and_then(|n| n.checked_add(16)) else {
        return Vec::new();
    };
    let mut names = desc.get(names_at..).unwrap_or(&[]).split(|&c| c == 0);
    let mut out = Vec::with_capacity(count.min(4096));
    for i in 0..count {
        let at = 16 + i * 24;
        let (Some(start), Some(end), Some(pgoff)) = (
            u64_at(desc, at),
            u64_at(desc, at + 8),
            u64_at(desc, at + 16),
        ) else {
            break;
        };
        let Some(name) = names.next() else {
            break;
        };
        if end <= start {
            continue;
        }
        out.push(FileRange {
            start,
            end,
            file_offset: pgoff.saturating_mul(page),
            path: String::from_utf8_lossy(name).into_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_files_are_one_sentence() {
        let dir = std::env::temp_dir().join(format!("memsleuth-core-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk");
        std::fs::write(&junk, b"not an elf file at all").unwrap();
        let e = CoreFile::open(&junk, &HashMap::new()).err().unwrap();
        assert!(e.to_string().contains("is not a usable core file"), "{e}");
        // Our own executable: ELF, but not a core.
        let exe = std::env::current_exe().unwrap();
        let e = CoreFile::open(&exe, &HashMap::new()).err().unwrap();
        assert!(e.to_string().contains("rather than a core dump"), "{e}");
        let e = CoreFile::open(&dir.join("absent"), &HashMap::new())
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("cannot open core file"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn nt_file_parsing_is_bounded() {
        let mut d = Vec::new();
        for v in [2u64, 4096, 0x1000, 0x3000, 0, 0x5000, 0x4000, 1] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(b"/bin/a\0/bin/b\0");
        let f = parse_nt_file(&d);
        assert_eq!(f.len(), 1, "the inverted range is dropped");
        assert_eq!(
            (f[0].start, f[0].end, &f[0].path[..]),
            (0x1000, 0x3000, "/bin/a")
        );
        // A huge count with no data behind it.
        let mut d = Vec::new();
        d.extend_from_slice(&u64::MAX.to_le_bytes());
        d.extend_from_slice(&4096u64.to_le_bytes());
        assert!(parse_nt_file(&d).is_empty());
        assert!(parse_nt_file(&[1, 2, 3]).is_empty());
    }
}
