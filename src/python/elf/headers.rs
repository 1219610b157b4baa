//! Parsing the headers and symbol tables of an ELF file through `object`'s
//! bounds-checked readers, either from memory or from the few parts of the
//! file read into a [`Sparse`].

use std::mem::size_of;
use std::sync::Arc;

use object::elf::{
    ET_DYN, ET_EXEC, PN_XNUM, PT_LOAD, SHF_ALLOC, SHN_XINDEX, SHT_DYNSYM, SHT_SYMTAB, STT_FUNC,
    STT_GNU_IFUNC,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, ReadRef, SectionIndex};

use super::sparse::Sparse;
use super::symbols::{LazySymtab, MAX_NAME, MAX_SYMBOLS, SymIndex, Symbols, table_ranges};
use super::{ElfError, ElfFile, ElfInfo, ElfKind, ExportedFunction, LoadSegment, Section};

/// The first read of a file: the ELF header and, usually, the program headers.
const HEAD: u64 = 4096;

/// What a parse gives before the symbols are put together.
pub(super) struct Parts {
    kind: ElfKind,
    is_64: bool,
    little_endian: bool,
    loads: Vec<LoadSegment>,
    sections: Vec<Section>,
    dynamic: SymIndex,
    /// .symtab, when it was read.
    symtab: Option<SymIndex>,
    has_symtab: bool,
}

impl Parts {
    /// With .symtab as read, else to be read through `lazy` if there is one.
    pub fn info(self, lazy: Option<LazySymtab>) -> ElfInfo {
        let symbols = match (self.symtab, lazy) {
            (Some(symtab), _) => Symbols::eager(self.dynamic, symtab),
            (None, Some(lazy)) if self.has_symtab => Symbols::lazy(self.dynamic, lazy),
            (None, _) => Symbols::eager(self.dynamic, SymIndex::default()),
        };
        ElfInfo {
            kind: self.kind,
            is_64: self.is_64,
            little_endian: self.little_endian,
            loads: self.loads,
            sections: self.sections,
            symbols: Arc::new(symbols),
        }
    }
}

fn bad(e: object::Error) -> ElfError {
    ElfError::Malformed(e.to_string())
}

/// Headers, sections and .dynsym, plus .symtab if `read_symtab` (else it is
/// only checked to be where a later read can find it). Errs wherever
/// `object::File::parse` would.
pub(super) fn parts<'d, H: FileHeader<Endian = Endianness>, R: ReadRef<'d>>(
    data: R,
    read_symtab: bool,
) -> Result<Parts, ElfError> {
    let header = H::parse(data).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let segments = header.program_headers(endian, data).map_err(bad)?;
    let sections = header.sections(endian, data).map_err(bad)?;
    let dynsym = sections.symbols(endian, data, SHT_DYNSYM).map_err(bad)?;
    let symtab_at = sections
        .enumerate()
        .find(|s| s.1.sh_type(endian) == SHT_SYMTAB);
    let symtab = if read_symtab {
        let table = sections.symbols(endian, data, SHT_SYMTAB).map_err(bad)?;
        Some(SymIndex::build(endian, &table, false))
    } else {
        if let Some((_, table)) = symtab_at {
            let file_len = data
                .len()
                .map_err(|()| ElfError::Malformed("unknown file size".into()))?;
            let in_file = table
                .file_range(endian)
                .is_none_or(|(o, s)| o.checked_add(s).is_some_and(|end| end <= file_len));
            if !in_file {
                return Err(ElfError::Malformed("invalid ELF symbol table data".into()));
            }
            sections
                .strings(endian, data, table.link(endian))
                .map_err(bad)?;
        }
        None
    };
    sections
        .relocation_sections(endian, symtab_at.map_or(SectionIndex(0), |s| s.0))
        .map_err(bad)?;
    let kind = match header.e_type(endian) {
        ET_EXEC => ElfKind::Executable,
        ET_DYN => ElfKind::Dynamic,
        other => {
            return Err(ElfError::Malformed(format!(
                "ELF type {other}, not an executable or shared object"
            )));
        }
    };
    let mut loads: Vec<LoadSegment> = segments
        .iter()
        .filter(|p| p.p_type(endian) == PT_LOAD)
        .map(|p| LoadSegment {
            vaddr: p.p_vaddr(endian).into(),
            memsz: p.p_memsz(endian).into(),
            offset: p.p_offset(endian).into(),
            filesz: p.p_filesz(endian).into(),
            flags: p.p_flags(endian),
        })
        .collect();
    loads.sort_by_key(|l| l.vaddr);
    if loads.is_empty() {
        return Err(ElfError::Malformed("no PT_LOAD segments".into()));
    }
    let allocated = sections
        .iter()
        .skip(1) // the null section
        .filter(|s| s.sh_flags(endian).into() & u64::from(SHF_ALLOC) != 0)
        .filter_map(|s| {
            let name = sections.section_name(endian, s).ok()?;
            (name.len() <= MAX_NAME).then(|| Section {
                name: String::from_utf8_lossy(name).into_owned(),
                vaddr: s.sh_addr(endian).into(),
                size: s.sh_size(endian).into(),
                file_range: s.file_range(endian),
            })
        })
        .collect();
    Ok(Parts {
        kind,
        is_64: header.is_class_64(),
        little_endian: header.is_little_endian(),
        loads,
        sections: allocated,
        dynamic: SymIndex::build(endian, &dynsym, true),
        symtab,
        has_symtab: symtab_at.is_some(),
    })
}

fn read(file: &ElfFile, data: &mut Sparse, ranges: &[(u64, u64)]) -> Result<(), ElfError> {
    data.load(&file.file, ranges)
        .map_err(|source| ElfError::Io {
            path: file.path.clone(),
            source,
        })
}

/// [`ElfInfo::load`]: reads the headers, then what they point to, then
/// parses all of it as [`parts`] would the whole file. With `functions`,
/// also lists every function .dynsym defines.
pub(super) fn load(
    file: &ElfFile,
    functions: bool,
) -> Result<(ElfInfo, Vec<ExportedFunction>), ElfError> {
    let mut data = Sparse::new(file.size);
    read(file, &mut data, &[(0, HEAD)])?;
    match object::FileKind::parse(&data) {
        Ok(object::FileKind::Elf32) => {
            load_as::<object::elf::FileHeader32<Endianness>>(file, data, functions)
        }
        Ok(object::FileKind::Elf64) => {
            load_as::<object::elf::FileHeader64<Endianness>>(file, data, functions)
        }
        Ok(_) => Err(ElfError::Malformed("not ELF".into())),
        Err(e) => Err(bad(e)),
    }
}

/// Defined functions (STT_FUNC and GNU ifuncs) of .dynsym, any name, up to
/// the symbol cap, in table order.
fn exported_functions<'d, H: FileHeader<Endian = Endianness>, R: ReadRef<'d>>(
    data: R,
) -> Result<Vec<ExportedFunction>, ElfError> {
    use object::read::elf::Sym;
    let header = H::parse(data).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let sections = header.sections(endian, data).map_err(bad)?;
    let dynsym = sections.symbols(endian, data, SHT_DYNSYM).map_err(bad)?;
    let mut out = Vec::new();
    for sym in dynsym.symbols().iter().skip(1).take(MAX_SYMBOLS) {
        let kind = sym.st_type();
        if !sym.is_definition(endian) || !(kind == STT_FUNC || kind == STT_GNU_IFUNC) {
            continue;
        }
        let Ok(name) = dynsym.symbol_name(endian, sym) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.len() > MAX_NAME {
            continue;
        }
        out.push(ExportedFunction {
            name: name.to_owned(),
            vaddr: sym.st_value(endian).into(),
            size: sym.st_size(endian).into(),
        });
    }
    Ok(out)
}

fn load_as<H: FileHeader<Endian = Endianness>>(
    file: &ElfFile,
    mut data: Sparse,
    functions: bool,
) -> Result<(ElfInfo, Vec<ExportedFunction>), ElfError> {
    // Extended numbering keeps the counts in section 0.
    let section_0 = {
        let header = H::parse(&data).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        let shoff: u64 = header.e_shoff(endian).into();
        let extended = header.e_shnum(endian) == 0
            || header.e_phnum(endian) == PN_XNUM
            || header.e_shstrndx(endian) == SHN_XINDEX;
        (shoff != 0 && extended).then_some((shoff, size_of::<H::SectionHeader>() as u64))
    };
    read(file, &mut data, &Vec::from_iter(section_0))?;
    let header_tables = {
        let header = H::parse(&data).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        let table = |offset: H::Word, count: object::read::Result<usize>, size: usize| {
            let offset: u64 = offset.into();
            let count = count.ok().filter(|_| offset != 0)?;
            Some((offset, (count as u64).saturating_mul(size as u64)))
        };
        [
            table(
                header.e_phoff(endian),
                header.phnum(endian, &data),
                size_of::<H::ProgramHeader>(),
            ),
            table(
                header.e_shoff(endian),
                header.shnum(endian, &data),
                size_of::<H::SectionHeader>(),
            ),
        ]
    };
    read(
        file,
        &mut data,
        &Vec::from_iter(header_tables.into_iter().flatten()),
    )?;
    let tables = {
        let header = H::parse(&data).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        let sections = header.sections(endian, &data).map_err(bad)?;
        let mut ranges = table_ranges(endian, &sections, SHT_DYNSYM);
        if let Ok(names) = header.shstrndx(endian, &data) {
            let names = sections.section(SectionIndex(names as usize));
            ranges.extend(names.ok().and_then(|s| s.file_range(endian)));
        }
        ranges
    };
    read(file, &mut data, &tables)?;
    let parts = parts::<H, _>(&data, false)?;
    let functions = if functions {
        exported_functions::<H, _>(&data)?
    } else {
        Vec::new()
    };
    let lazy = parts.has_symtab.then(|| LazySymtab {
        file: file.file.clone(),
        data,
        is_64: parts.is_64,
    });
    Ok((parts.info(lazy), functions))
}
