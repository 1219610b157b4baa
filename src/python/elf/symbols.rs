//! The CPython symbols of a file: .dynsym read up front (it is small and
//! answers nearly every lookup), .symtab only when a name is not exported.
//!
//! Names are copied into one buffer per table and looked up by binary
//! search, rather than one `String` per symbol in a hash map.

use std::fs::File;
use std::sync::{Arc, OnceLock};

use object::elf::{FileHeader32, FileHeader64, SHT_SYMTAB};
use object::read::elf::{FileHeader, Sym, SymbolTable};
use object::{Endianness, ReadRef};

use super::Symbol;
use super::sparse::Sparse;

/// Caps on what a (possibly hostile) symbol table can make us store.
pub(super) const MAX_SYMBOLS: usize = 200_000;
pub(super) const MAX_NAME: usize = 256;

/// Defined `Py*`/`_Py*` symbols of one table; the first definition of a
/// name wins.
#[derive(Default)]
pub(super) struct SymIndex {
    names: Vec<u8>,
    /// (start in `names`, length, symbol), sorted by name.
    entries: Vec<(u32, u32, Symbol)>,
}

impl SymIndex {
    /// `dynamic`: every definition counts (.dynsym); otherwise only global
    /// ones (.symtab locals are not unique).
    pub fn build<'d, H: FileHeader, R: ReadRef<'d>>(
        endian: H::Endian,
        table: &SymbolTable<'d, H, R>,
        dynamic: bool,
    ) -> SymIndex {
        let mut index = SymIndex::default();
        // Index 0 is the null symbol.
        for sym in table.symbols().iter().skip(1).take(MAX_SYMBOLS) {
            // .symtab locals are not unique.
            if !sym.is_definition(endian) || (!dynamic && sym.is_local()) {
                continue;
            }
            let Ok(name) = table.symbol_name(endian, sym) else {
                continue;
            };
            if name.len() > MAX_NAME
                || !(name.starts_with(b"Py") || name.starts_with(b"_Py"))
                || std::str::from_utf8(name).is_err()
            {
                continue;
            }
            let Ok(start) = u32::try_from(index.names.len()) else {
                break;
            };
            index.names.extend_from_slice(name);
            index.entries.push((
                start,
                name.len() as u32,
                Symbol {
                    vaddr: sym.st_value(endian).into(),
                    size: sym.st_size(endian).into(),
                    dynamic,
                },
            ));
        }
        let names = &index.names;
        let name = |e: &(u32, u32, Symbol)| &names[e.0 as usize..(e.0 + e.1) as usize];
        // Stable: among equal names the first in the table stays first...
        index.entries.sort_by(|a, b| name(a).cmp(name(b)));
        // ...and dedup keeps the first of a run.
        index
            .entries
            .dedup_by(|later, earlier| name(later) == name(earlier));
        index
    }

    pub fn get(&self, name: &str) -> Option<Symbol> {
        let at = self
            .entries
            .binary_search_by(|e| self.name(e).cmp(name.as_bytes()))
            .ok()?;
        Some(self.entries[at].2)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn name(&self, e: &(u32, u32, Symbol)) -> &[u8] {
        &self.names[e.0 as usize..(e.0 + e.1) as usize]
    }

    fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| self.name(e))
    }
}

/// .dynsym entries first, then .symtab globals (read when first needed).
pub(super) struct Symbols {
    dynamic: SymIndex,
    regular: OnceLock<SymIndex>,
    /// How to read .symtab later; None when it was read up front or is absent.
    lazy: Option<LazySymtab>,
}

/// A .symtab left in the file.
pub(super) struct LazySymtab {
    pub file: Arc<File>,
    /// The headers and tables already read (header, section headers...).
    pub data: Sparse,
    pub is_64: bool,
}

impl Symbols {
    pub fn eager(dynamic: SymIndex, regular: SymIndex) -> Symbols {
        Symbols {
            dynamic,
            regular: OnceLock::from(regular),
            lazy: None,
        }
    }

    pub fn lazy(dynamic: SymIndex, symtab: LazySymtab) -> Symbols {
        Symbols {
            dynamic,
            regular: OnceLock::new(),
            lazy: Some(symtab),
        }
    }

    pub fn get(&self, name: &str) -> Option<Symbol> {
        // Every kept name has a CPython prefix: others need no .symtab read.
        if name.len() > MAX_NAME || !(name.starts_with("Py") || name.starts_with("_Py")) {
            return None;
        }
        self.dynamic.get(name).or_else(|| self.regular().get(name))
    }

    /// Only what .dynsym exports (never reads .symtab).
    pub fn get_exported(&self, name: &str) -> Option<Symbol> {
        self.dynamic.get(name)
    }

    /// How many distinct names both tables define.
    pub fn count(&self) -> usize {
        let regular = self.regular();
        self.dynamic.len()
            + regular
                .names()
                .filter(|n| std::str::from_utf8(n).is_ok_and(|n| self.dynamic.get(n).is_none()))
                .count()
    }

    /// What .dynsym holds, without reading .symtab.
    pub fn dynamic_count(&self) -> usize {
        self.dynamic.len()
    }

    fn regular(&self) -> &SymIndex {
        self.regular.get_or_init(|| {
            self.lazy
                .as_ref()
                .and_then(|l| {
                    if l.is_64 {
                        l.read::<FileHeader64<Endianness>>()
                    } else {
                        l.read::<FileHeader32<Endianness>>()
                    }
                })
                .unwrap_or_default()
        })
    }
}

impl LazySymtab {
    /// Reads .symtab and its string table (through `object`, as if the whole
    /// file were there); None if the file no longer allows it.
    fn read<H: FileHeader<Endian = Endianness>>(&self) -> Option<SymIndex> {
        let mut data = self.data.clone();
        let ranges = {
            let header = H::parse(&data).ok()?;
            let endian = header.endian().ok()?;
            let sections = header.sections(endian, &data).ok()?;
            table_ranges(endian, &sections, SHT_SYMTAB)
        };
        data.load(&self.file, &ranges).ok()?;
        let header = H::parse(&data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, &data).ok()?;
        let table = sections.symbols(endian, &data, SHT_SYMTAB).ok()?;
        Some(SymIndex::build(endian, &table, false))
    }
}

/// The file ranges `object` reads to parse the first symbol table of type
/// `sh_type`: the table, its string table and any extended index tables.
pub(super) fn table_ranges<'d, H: FileHeader, R: ReadRef<'d>>(
    endian: H::Endian,
    sections: &object::read::elf::SectionTable<'d, H, R>,
    sh_type: u32,
) -> Vec<(u64, u64)> {
    use object::read::elf::SectionHeader;
    let Some((index, table)) = sections
        .enumerate()
        .find(|s| s.1.sh_type(endian) == sh_type)
    else {
        return Vec::new();
    };
    let mut ranges: Vec<(u64, u64)> = table.file_range(endian).into_iter().collect();
    if let Ok(strings) = sections.section(table.link(endian)) {
        ranges.extend(strings.file_range(endian));
    }
    ranges.extend(
        sections
            .iter()
            .filter(|s| {
                s.sh_type(endian) == object::elf::SHT_SYMTAB_SHNDX && s.link(endian) == index
            })
            .filter_map(|s| s.file_range(endian)),
    );
    ranges
}
