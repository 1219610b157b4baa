//! Reading the ELF file behind a mapping: its symbols, load segments and
//! sections, and where they sit in a process.
//!
//! The file comes from the target's view of the filesystem, and a hostile
//! target can map anything (or swap the file after mapping it), so reads are
//! capped, FIFOs and devices are refused, and all parsing goes through the
//! `object` crate's bounds-checked readers: a malformed file gives an error,
//! never a panic.
//!
//! Detection reads little: [`ElfInfo::load`] preads the headers, .dynsym and
//! .dynstr (about 100 kB of a 30 MB libpython), .symtab only if a name is
//! not exported, and .rodata only when the version is not in `Py_Version`.
//! Nothing is mmap'ed, so a file truncated meanwhile gives errors, not SIGBUS.

mod headers;
mod sparse;
mod symbols;

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::elf::{FileHeader32, FileHeader64, PF_X, SHT_DYNSYM, SHT_SYMTAB};
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, FileKind, ReadCache, ReadRef, SectionIndex};

pub use self::sparse::FileBytes;
use self::symbols::Symbols;
use crate::process::maps::Mapping;

/// Bigger files are refused: libpython is ~30 MB, a static interpreter with
/// debug info ~150 MB.
pub const MAX_ELF_SIZE: u64 = 512 << 20;

/// Names whose definition marks a file as containing the CPython C API. Both
/// exist from 2.7 to 3.15; a launcher or an embedding app only references them.
pub const C_API_SYMBOLS: [&str; 2] = ["Py_Initialize", "PyRun_SimpleString"];

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is {size} bytes, more than the {MAX_ELF_SIZE}-byte limit")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("not a usable ELF executable or shared object: {0}")]
    Malformed(String),
}

/// An opened regular file, ready to be checked cheaply, parsed reading only
/// the parts needed ([`ElfInfo::load`]), or read whole.
#[derive(Debug)]
pub struct ElfFile {
    pub path: PathBuf,
    file: Arc<File>,
    size: u64,
    pub inode: u64,
}

impl ElfFile {
    /// Opens without blocking (a path swapped for a FIFO must not hang us)
    /// and checks it is a regular file.
    pub fn open(path: &Path) -> Result<ElfFile, ElfError> {
        let io = |source| ElfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(ElfError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        Ok(ElfFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            size: meta.len(),
            inode: meta.ino(),
        })
    }

    /// Whether the dynamic or regular string table mentions a C-API name.
    /// Reads only the headers and those tables, so scanning every process on
    /// a host does not read every executable whole. Errs towards true (the
    /// full parse decides) when the file has no section headers.
    pub fn may_define_c_api(&self) -> bool {
        let cache = ReadCache::new(&*self.file);
        let data = &cache;
        match FileKind::parse(data) {
            Ok(FileKind::Elf32) => mentions_c_api::<object::elf::FileHeader32<Endianness>, _>(data),
            Ok(FileKind::Elf64) => mentions_c_api::<object::elf::FileHeader64<Endianness>, _>(data),
            _ => Some(false),
        }
        .unwrap_or(true)
    }

    /// Reads the whole file (up to [`MAX_ELF_SIZE`]).
    pub fn read_all(&self) -> Result<ElfBytes, ElfError> {
        if self.size > MAX_ELF_SIZE {
            return Err(ElfError::TooLarge {
                path: self.path.clone(),
                size: self.size,
            });
        }
        // Positioned reads: the cheap check moved the file position. The file
        // may shrink while we read; keep what was there.
        sparse::read_range(&self.file, 0, self.size as usize).map_err(|source| ElfError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// `None` when the headers cannot tell. Only the first table of each kind is
/// looked at (ELF allows one), so a file with thousands of fake tables cannot
/// make the read cache grow.
fn mentions_c_api<'a, H: FileHeader<Endian = Endianness>, R: ReadRef<'a>>(data: R) -> Option<bool> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let mut saw_table = false;
    for kind in [SHT_DYNSYM, SHT_SYMTAB] {
        let Some(table) = sections.iter().find(|s| s.sh_type(endian) == kind) else {
            continue;
        };
        saw_table = true;
        let Ok(strtab) = sections.section(SectionIndex(table.sh_link(endian) as usize)) else {
            continue;
        };
        if strtab.sh_size(endian).into() > MAX_ELF_SIZE {
            return None;
        }
        let Ok(strings) = strtab.data(endian, data) else {
            continue;
        };
        if C_API_SYMBOLS
            .iter()
            .any(|name| has_string(strings, name.as_bytes()))
        {
            return Some(true);
        }
    }
    saw_table.then_some(false)
}

/// Whether `strings` contains `"\0" name "\0"`. Megabytes of string table
/// (an unstripped Rust binary) hold few NULs followed by the name's first
/// byte, so 64-byte blocks are first tested for one without branching (the
/// compiler vectorises that).
fn has_string(strings: &[u8], name: &[u8]) -> bool {
    const BLOCK: usize = 64;
    let Some(&first) = name.first() else {
        return strings.windows(2).any(|w| w == [0, 0]);
    };
    let matches_at = |i: usize| {
        strings.get(i + 1..i + 1 + name.len()) == Some(name)
            && strings.get(i + 1 + name.len()) == Some(&0)
    };
    let mut lo = 0;
    while lo + 1 < strings.len() {
        let hi = (lo + BLOCK).min(strings.len() - 1);
        let mut any = false;
        for (&nul, &next) in strings[lo..hi].iter().zip(&strings[lo + 1..hi + 1]) {
            any |= (nul == 0) & (next == first);
        }
        if any && (lo..hi).any(|i| strings[i] == 0 && strings[i + 1] == first && matches_at(i)) {
            return true;
        }
        lo = hi;
    }
    false
}

/// File bytes in 8-byte-aligned storage: `object` reads headers in place and
/// (without its `unaligned` feature) rejects misaligned buffers.
pub struct ElfBytes {
    words: Vec<u64>,
    len: usize,
}

impl ElfBytes {
    fn zeroed(len: usize) -> ElfBytes {
        ElfBytes {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }

    pub fn from_slice(bytes: &[u8]) -> ElfBytes {
        let mut buf = ElfBytes::zeroed(bytes.len());
        buf.as_bytes_mut().copy_from_slice(bytes);
        buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes and u8 has
        // no alignment or validity requirements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// ET_EXEC (fixed addresses) or ET_DYN (shared objects and PIE executables,
/// loaded at a bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ElfKind {
    Executable,
    Dynamic,
}

/// A PT_LOAD program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

impl LoadSegment {
    pub fn executable(&self) -> bool {
        self.flags & PF_X != 0
    }
}

/// An allocated section (one that is present in memory at run time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub vaddr: u64,
    pub size: u64,
    /// Where its bytes are in the file; None for .bss-like sections.
    pub file_range: Option<(u64, u64)>,
}

/// A function in a file's .dynsym.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFunction {
    pub name: String,
    /// st_value: a link-time virtual address.
    pub vaddr: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    /// st_value: a link-time virtual address.
    pub vaddr: u64,
    pub size: u64,
    /// From .dynsym (exported) rather than .symtab.
    pub dynamic: bool,
}

/// What we keep of a parsed ELF file (not its bytes: a file parsed with
/// [`ElfInfo::load`] keeps an open handle to read .symtab if a lookup needs it).
#[derive(Clone)]
pub struct ElfInfo {
    pub kind: ElfKind,
    pub is_64: bool,
    pub little_endian: bool,
    /// PT_LOAD headers by ascending address.
    pub loads: Vec<LoadSegment>,
    pub sections: Vec<Section>,
    /// Defined CPython symbols (`Py*`, `_Py*`): .dynsym entries, plus global
    /// .symtab ones not exported. Local symbols are left out because their
    /// names are not unique.
    symbols: Arc<Symbols>,
}

impl std::fmt::Debug for ElfInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfInfo")
            .field("kind", &self.kind)
            .field("is_64", &self.is_64)
            .field("loads", &self.loads)
            .field("sections", &self.sections.len())
            .field("dynamic_symbols", &self.symbols.dynamic_count())
            .finish()
    }
}

impl ElfInfo {
    /// Parses a file held in memory, symbol tables included.
    pub fn parse(data: &[u8]) -> Result<ElfInfo, ElfError> {
        let parts = match FileKind::parse(data) {
            Ok(FileKind::Elf32) => headers::parts::<FileHeader32<Endianness>, _>(data, true)?,
            Ok(FileKind::Elf64) => headers::parts::<FileHeader64<Endianness>, _>(data, true)?,
            Ok(_) => return Err(ElfError::Malformed("not ELF".into())),
            Err(e) => return Err(ElfError::Malformed(e.to_string())),
        };
        Ok(parts.info(None))
    }

    /// Parses a file reading only what most questions need: the ELF,
    /// program and section headers, section names, .dynsym and .dynstr. The
    /// .symtab (megabytes in an unstripped libpython) is read the first time
    /// a name is not found in .dynsym; see [`FileBytes`] for other contents.
    /// Gives the same answers as [`ElfInfo::parse`] on the whole file (only
    /// a .symtab corrupt beyond what its header shows is not caught here:
    /// its names are then missing instead of the parse failing).
    pub fn load(file: &ElfFile) -> Result<ElfInfo, ElfError> {
        if file.size > MAX_ELF_SIZE {
            return Err(ElfError::TooLarge {
                path: file.path.clone(),
                size: file.size,
            });
        }
        headers::load(file, false).map(|(info, _)| info)
    }

    /// [`load`](Self::load), plus every function the file exports (any
    /// name, from .dynsym): what is needed of a C library, read without
    /// reading the library whole (its headers, .dynsym and .dynstr: about
    /// 100 kB of glibc's 2 MB).
    pub fn load_with_functions(
        file: &ElfFile,
    ) -> Result<(ElfInfo, Vec<ExportedFunction>), ElfError> {
        if file.size > MAX_ELF_SIZE {
            return Err(ElfError::TooLarge {
                path: file.path.clone(),
                size: file.size,
            });
        }
        headers::load(file, true)
    }

    /// A defined `Py*`/`_Py*` symbol, preferring the exported definition.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name)
    }

    /// An exported (.dynsym) `Py*`/`_Py*` symbol; never reads .symtab, which
    /// on a debug-info build is tens of MB.
    pub fn exported_symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get_exported(name)
    }

    /// How many `Py*`/`_Py*` names are defined (this reads .symtab).
    pub fn symbol_count(&self) -> usize {
        self.symbols.count()
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Whether the file defines the C API (not just references it).
    pub fn defines_c_api(&self) -> bool {
        C_API_SYMBOLS.iter().any(|n| self.symbols.get(n).is_some())
    }

    /// The file offset of `len` bytes at `vaddr`, if a PT_LOAD holds all of
    /// them in the file (not in its zero-filled tail).
    pub fn file_offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        let end = vaddr.checked_add(len)?;
        self.loads.iter().find_map(|l| {
            let delta = vaddr.checked_sub(l.vaddr)?;
            (end <= l.vaddr.checked_add(l.filesz)?)
                .then(|| l.offset.checked_add(delta))
                .flatten()
        })
    }

    /// The file bytes backing `len` bytes at `vaddr`.
    pub fn read_vaddr<'a>(&self, data: &'a [u8], vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(self.file_offset(vaddr, len)?).ok()?;
        data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }

    /// An unsigned integer of 1..=8 bytes at `vaddr`, in the file's byte order.
    pub fn read_uint(&self, data: &[u8], vaddr: u64, size: u64) -> Option<u64> {
        if !(1..=8).contains(&size) {
            return None;
        }
        Some(self.uint(self.read_vaddr(data, vaddr, size)?))
    }

    /// [`read_uint`](Self::read_uint) on the bytes of a file wherever they are.
    pub fn read_uint_from(&self, bytes: &FileBytes, vaddr: u64, size: u64) -> Option<u64> {
        if !(1..=8).contains(&size) {
            return None;
        }
        let bytes = bytes.get(self.file_offset(vaddr, size)?, size)?;
        Some(self.uint(&bytes))
    }

    fn uint(&self, bytes: &[u8]) -> u64 {
        let fold = |acc: u64, b: &u8| acc << 8 | u64::from(*b);
        if self.little_endian {
            bytes.iter().rev().fold(0, fold)
        } else {
            bytes.iter().fold(0, fold)
        }
    }

    /// [`section_data`](Self::section_data) on the bytes of a file wherever they are.
    pub fn section_bytes<'a>(&self, bytes: &FileBytes<'a>, name: &str) -> Option<Cow<'a, [u8]>> {
        let (offset, size) = self.section(name)?.file_range?;
        bytes.get(offset, size)
    }

    /// The bytes of a section, if it has any in the file.
    pub fn section_data<'a>(&self, data: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let (offset, size) = self.section(name)?.file_range?;
        let start = usize::try_from(offset).ok()?;
        data.get(start..start.checked_add(usize::try_from(size).ok()?)?)
    }

    /// Where this file sits in a process, from the mappings of this one file
    /// (same path and inode).
    ///
    /// The loader maps file offset `o` of segment `L` at `bias + L.vaddr -
    /// L.offset + o`, so a mapping covering the first segment's start gives the
    /// bias without any page-size assumption. Someone else may also have
    /// mmap'ed the file (a profiler reading it), so a candidate is confirmed by
    /// an executable mapping where the text segment must be under the same
    /// bias. ET_EXEC files are never relocated: bias 0.
    pub fn place(&self, maps: &[&Mapping]) -> Option<Placement> {
        let first = self.loads.first()?;
        let covers = |m: &Mapping, l: &LoadSegment| {
            m.offset <= l.offset && l.offset < m.offset.saturating_add(m.size())
        };
        let bias_of = |m: &Mapping, l: &LoadSegment| {
            m.start
                .wrapping_sub(l.vaddr.wrapping_sub(l.offset).wrapping_add(m.offset))
        };
        let mut sorted: Vec<&Mapping> = maps.to_vec();
        sorted.sort_by_key(|m| m.start);
        let confirmed = |bias: u64| {
            let mut text = self.loads.iter().filter(|l| l.executable()).peekable();
            text.peek().is_none()
                || text.any(|l| {
                    sorted
                        .iter()
                        .any(|x| x.executable() && covers(x, l) && bias_of(x, l) == bias)
                })
        };
        let candidates: Vec<u64> = sorted
            .iter()
            .filter(|m| covers(m, first))
            .map(|m| bias_of(m, first))
            .filter(|&b| self.kind == ElfKind::Dynamic || b == 0)
            .collect();
        let bias = candidates
            .iter()
            .copied()
            .find(|&b| confirmed(b))
            .or(candidates.first().copied())?;
        Some(Placement {
            bias,
            load_base: bias.wrapping_add(first.vaddr.wrapping_sub(first.offset)),
        })
    }
}

/// Where a file is loaded in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// Added to link-time addresses (0 for ET_EXEC).
    pub bias: u64,
    /// Where file offset 0 is mapped: the start of the offset-0 mapping.
    pub load_base: u64,
}

impl Placement {
    /// The run-time address of a link-time virtual address.
    pub fn runtime(&self, vaddr: u64) -> u64 {
        vaddr.wrapping_add(self.bias)
    }
}

#[cfg(test)]
mod tests;
