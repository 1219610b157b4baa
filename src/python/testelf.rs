//! A tiny ELF64 little-endian writer for unit tests: a file shaped like a
//! libpython or a static interpreter (two PT_LOADs, .dynsym, .rodata, .text,
//! .PyRuntime), small enough to mutate exhaustively.
//!
//! Layout (file offset = vaddr - base everywhere):
//! 0x000 ELF header, 0x040 program headers, 0x100 .dynstr, 0x200 .dynsym,
//! 0x400 .rodata, 0x800 .shstrtab, 0x900 section headers, 0x1000 .text,
//! 0x1080 .PyRuntime; first PT_LOAD `r--` [0, 0xa00), second `r-x`
//! [0x1000, 0x1100). With `symtab`, a non-allocated .symtab at 0x1100 and
//! its .strtab at 0x1200 follow (see [`SYMTAB`]).

pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
pub const RODATA: u64 = 0x400;
pub const TEXT: u64 = 0x1000;
pub const PYRUNTIME: u64 = 0x1080;
/// The .symtab of `Spec::symtab`: (name, value relative to base, st_info,
/// shndx). Only `_PyOnlyInSymtab` and the first `_PyTwice` should be kept:
/// a local, an undefined symbol, a non-CPython name, a second definition,
/// and a name .dynsym already defines are not.
pub const SYMTAB: [(&str, u64, u8, u16); 7] = [
    ("Py_LocalThing", TEXT + 0x40, 0x02, 4),
    ("_PyOnlyInSymtab", PYRUNTIME + 8, 0x11, 7),
    ("Py_Initialize", TEXT + 0x30, 0x12, 4),
    ("_PyTwice", TEXT + 0x50, 0x12, 4),
    ("_PyTwice", TEXT + 0x60, 0x12, 4),
    ("PyUndef", 0, 0x12, 0),
    ("main", TEXT + 0x20, 0x12, 4),
];

pub struct Spec<'a> {
    pub e_type: u16,
    /// Link-time address of file offset 0 (0 for ET_DYN, 0x400000 for ET_EXEC).
    pub base: u64,
    /// Whether Py_Initialize and PyRun_SimpleString are defined (else they
    /// are only referenced, like in a launcher).
    pub defines_api: bool,
    /// A `Py_Version` object at the start of .rodata holding this value.
    pub py_version: Option<u64>,
    /// Strings placed in .rodata after the first 8 bytes.
    pub rodata: &'a [u8],
    /// Whether to add the .symtab and .strtab of [`SYMTAB`].
    pub symtab: bool,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            e_type: ET_DYN,
            base: 0,
            defines_api: true,
            py_version: Some(0x030B07F0),
            rodata: b"\0",
            symtab: false,
        }
    }
}

fn put(buf: &mut [u8], at: u64, bytes: &[u8]) {
    buf[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
}

pub fn build(spec: &Spec) -> Vec<u8> {
    let mut f = vec![0u8; if spec.symtab { 0x1300 } else { 0x1100 }];
    let b = spec.base;
    // Symbols: (name, value, size, st_info, shndx)
    let (text_ndx, def) = if spec.defines_api {
        (4u16, true)
    } else {
        (0u16, false)
    };
    let mut syms: Vec<(&str, u64, u64, u8, u16)> = vec![
        (
            "Py_Initialize",
            if def { b + TEXT } else { 0 },
            16,
            0x12,
            text_ndx,
        ),
        (
            "PyRun_SimpleString",
            if def { b + TEXT + 0x10 } else { 0 },
            16,
            0x12,
            text_ndx,
        ),
        ("main", b + TEXT + 0x20, 16, 0x12, 4),
        ("_PyRuntime", b + PYRUNTIME, 0x40, 0x11, 7),
    ];
    if let Some(v) = spec.py_version {
        syms.push(("Py_Version", b + RODATA, 8, 0x11, 3));
        put(&mut f, RODATA, &v.to_le_bytes());
    }
    put(&mut f, RODATA + 8, spec.rodata);
    let (dynstr, dynsym) = table(&syms);
    put(&mut f, 0x100, &dynstr);
    put(&mut f, 0x200, &dynsym);
    let symtab: Vec<_> = SYMTAB
        .iter()
        .map(|&(name, value, info, shndx)| {
            (name, if shndx == 0 { 0 } else { b + value }, 8, info, shndx)
        })
        .collect();
    let (strtab, symtab) = table(&symtab);
    if spec.symtab {
        put(&mut f, 0x1100, &symtab);
        put(&mut f, 0x1200, &strtab);
    }
    f[TEXT as usize..0x1080].fill(0xc3);

    let mut ehdr = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ehdr.extend_from_slice(&spec.e_type.to_le_bytes());
    ehdr.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    ehdr.extend_from_slice(&1u32.to_le_bytes());
    ehdr.extend_from_slice(&(b + TEXT).to_le_bytes()); // entry
    ehdr.extend_from_slice(&0x40u64.to_le_bytes()); // phoff
    ehdr.extend_from_slice(&0x900u64.to_le_bytes()); // shoff
    ehdr.extend_from_slice(&0u32.to_le_bytes());
    let shnum = if spec.symtab { 10 } else { 8 };
    for v in [64u16, 56, 2, 64, shnum, 5] {
        ehdr.extend_from_slice(&v.to_le_bytes()); // ehsize phentsize phnum shentsize shnum shstrndx
    }
    put(&mut f, 0, &ehdr);

    let phdr = |flags: u32, off: u64, size: u64| {
        let mut p = Vec::new();
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        for v in [off, b + off, b + off, size, size, 0x1000] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    };
    put(&mut f, 0x40, &phdr(4, 0, 0xa00));
    put(&mut f, 0x40 + 56, &phdr(5, TEXT, 0x100));

    let shstrtab =
        b"\0.dynstr\0.dynsym\0.rodata\0.text\0.shstrtab\0.data\0.PyRuntime\0.symtab\0.strtab\0";
    put(&mut f, 0x800, shstrtab);
    let name = |s: &str| {
        shstrtab
            .windows(s.len() + 1)
            .position(|w| &w[1..] == s.as_bytes() && w[0] == 0)
            .unwrap() as u32
            + 1
    };
    // (name, type, flags, offset, size, link, info, entsize); ALLOC=2, EXEC=4, WRITE=1
    type Shdr = (u32, u32, u64, u64, u64, u32, u32, u64);
    let shdrs: [Shdr; 10] = [
        (0, 0, 0, 0, 0, 0, 0, 0),
        (name(".dynstr"), 3, 2, 0x100, dynstr.len() as u64, 0, 0, 0),
        (name(".dynsym"), 11, 2, 0x200, dynsym.len() as u64, 1, 1, 24),
        (name(".rodata"), 1, 2, RODATA, 0x400, 0, 0, 0),
        (name(".text"), 1, 6, TEXT, 0x80, 0, 0, 0),
        (
            name(".shstrtab"),
            3,
            0,
            0x800,
            shstrtab.len() as u64,
            0,
            0,
            0,
        ),
        (name(".data"), 8, 3, 0xa00, 0x10, 0, 0, 0), // NOBITS
        (name(".PyRuntime"), 1, 3, PYRUNTIME, 0x40, 0, 0, 0),
        (name(".symtab"), 2, 0, 0x1100, symtab.len() as u64, 9, 2, 24),
        (name(".strtab"), 3, 0, 0x1200, strtab.len() as u64, 0, 0, 0),
    ];
    for (i, (n, t, fl, off, size, link, info, ent)) in
        shdrs.into_iter().take(shnum as usize).enumerate()
    {
        let mut s = Vec::new();
        s.extend_from_slice(&n.to_le_bytes());
        s.extend_from_slice(&t.to_le_bytes());
        let addr = if fl & 2 != 0 { b + off } else { 0 };
        for v in [fl, addr, off, size] {
            s.extend_from_slice(&v.to_le_bytes());
        }
        s.extend_from_slice(&link.to_le_bytes());
        s.extend_from_slice(&info.to_le_bytes());
        s.extend_from_slice(&8u64.to_le_bytes());
        s.extend_from_slice(&ent.to_le_bytes());
        put(&mut f, 0x900 + 64 * i as u64, &s);
    }
    f
}

/// A string table and a symbol table (null symbol first) of `syms`:
/// (name, value, size, st_info, shndx).
fn table(syms: &[(&str, u64, u64, u8, u16)]) -> (Vec<u8>, Vec<u8>) {
    let mut strings = vec![0u8];
    let mut symbols = vec![0u8; 24];
    for &(name, value, size, info, shndx) in syms {
        let st_name = strings.len() as u32;
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
        symbols.extend_from_slice(&st_name.to_le_bytes());
        symbols.extend_from_slice(&[info, 0]);
        symbols.extend_from_slice(&shndx.to_le_bytes());
        symbols.extend_from_slice(&value.to_le_bytes());
        symbols.extend_from_slice(&size.to_le_bytes());
    }
    (strings, symbols)
}
