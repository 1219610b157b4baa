//! Reading the ELF file behind a mapping: its symbols, load segments and
//! sections, and where they sit in a process.
//!
//! The file comes from the target's view of the filesystem, and a hostile
//! target can map anything (or swap the file after mapping it), so reads are
//! capped, FIFOs and devices are refused, and all parsing goes through the
//! `object` crate's bounds-checked readers: a malformed file gives an error,
//! never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use object::elf::{PF_X, SHF_ALLOC, SHT_DYNSYM, SHT_SYMTAB};
use object::read::elf::{FileHeader, SectionHeader};
use object::{
    Endianness, FileKind, Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol,
    ReadCache, ReadRef, SectionFlags, SectionIndex, SegmentFlags,
};

use crate::process::maps::Mapping;

/// Bigger files are refused: libpython is ~30 MB, a static interpreter with
/// debug info ~150 MB.
pub const MAX_ELF_SIZE: u64 = 512 << 20;
/// Caps on what a (possibly hostile) symbol table can make us store.
const MAX_SYMBOLS: usize = 200_000;
const MAX_NAME: usize = 256;

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

/// An opened regular file, ready to be checked cheaply or read whole.
#[derive(Debug)]
pub struct ElfFile {
    pub path: PathBuf,
    file: File,
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
            file,
            size: meta.len(),
            inode: meta.ino(),
        })
    }

    /// Whether the dynamic or regular string table mentions a C-API name.
    /// Reads only the headers and those tables, so scanning every process on
    /// a host does not read every executable whole. Errs towards true (the
    /// full parse decides) when the file has no section headers.
    pub fn may_define_c_api(&self) -> bool {
        let cache = ReadCache::new(&self.file);
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
        let mut buf = ElfBytes::zeroed(self.size as usize);
        let mut filled = 0;
        // Positioned reads: the cheap check moved the file position. The file
        // may shrink while we read; keep what was there.
        while filled < buf.len {
            match self
                .file
                .read_at(&mut buf.as_bytes_mut()[filled..], filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ElfError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        buf.len = filled;
        Ok(buf)
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
        for name in C_API_SYMBOLS {
            let needle = [b"\0", name.as_bytes(), b"\0"].concat();
            if strings.windows(needle.len()).any(|w| w == needle) {
                return Some(true);
            }
        }
    }
    saw_table.then_some(false)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    /// st_value: a link-time virtual address.
    pub vaddr: u64,
    pub size: u64,
    /// From .dynsym (exported) rather than .symtab.
    pub dynamic: bool,
}

/// What we keep of a parsed ELF file (the bytes themselves are dropped).
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
    symbols: HashMap<String, Symbol>,
}

impl std::fmt::Debug for ElfInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfInfo")
            .field("kind", &self.kind)
            .field("is_64", &self.is_64)
            .field("loads", &self.loads)
            .field("sections", &self.sections.len())
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

impl ElfInfo {
    pub fn parse(data: &[u8]) -> Result<ElfInfo, ElfError> {
        let bad = |e: object::Error| ElfError::Malformed(e.to_string());
        let file = object::File::parse(data).map_err(bad)?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(ElfError::Malformed("not ELF".into()));
        }
        let kind = match file.kind() {
            ObjectKind::Executable => ElfKind::Executable,
            ObjectKind::Dynamic => ElfKind::Dynamic,
            other => {
                return Err(ElfError::Malformed(format!(
                    "{other:?} file, not an executable or shared object"
                )));
            }
        };
        let mut loads: Vec<LoadSegment> = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let flags = match s.flags() {
                    SegmentFlags::Elf { p_flags } => p_flags,
                    _ => 0,
                };
                LoadSegment {
                    vaddr: s.address(),
                    memsz: s.size(),
                    offset,
                    filesz,
                    flags,
                }
            })
            .collect();
        loads.sort_by_key(|l| l.vaddr);
        if loads.is_empty() {
            return Err(ElfError::Malformed("no PT_LOAD segments".into()));
        }
        let sections = file
            .sections()
            .filter(|s| matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(SHF_ALLOC) != 0))
            .filter_map(|s| {
                let name = s.name_bytes().ok()?;
                (name.len() <= MAX_NAME).then(|| Section {
                    name: String::from_utf8_lossy(name).into_owned(),
                    vaddr: s.address(),
                    size: s.size(),
                    file_range: s.file_range(),
                })
            })
            .collect();
        let mut symbols = HashMap::new();
        for (table, dynamic) in [(file.dynamic_symbols(), true), (file.symbols(), false)] {
            for sym in table.take(MAX_SYMBOLS) {
                if !sym.is_definition() || !(dynamic || sym.is_global()) {
                    continue;
                }
                let Ok(name) = sym.name_bytes() else { continue };
                if name.len() > MAX_NAME || !(name.starts_with(b"Py") || name.starts_with(b"_Py")) {
                    continue;
                }
                let Ok(name) = std::str::from_utf8(name) else {
                    continue;
                };
                symbols.entry(name.to_owned()).or_insert(Symbol {
                    vaddr: sym.address(),
                    size: sym.size(),
                    dynamic,
                });
            }
        }
        Ok(ElfInfo {
            kind,
            is_64: file.is_64(),
            little_endian: file.is_little_endian(),
            loads,
            sections,
            symbols,
        })
    }

    /// A defined `Py*`/`_Py*` symbol, preferring the exported definition.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).copied()
    }

    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Whether the file defines the C API (not just references it).
    pub fn defines_c_api(&self) -> bool {
        C_API_SYMBOLS.iter().any(|n| self.symbols.contains_key(*n))
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
        let bytes = self.read_vaddr(data, vaddr, size)?;
        let fold = |acc: u64, b: &u8| acc << 8 | u64::from(*b);
        Some(if self.little_endian {
            bytes.iter().rev().fold(0, fold)
        } else {
            bytes.iter().fold(0, fold)
        })
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
