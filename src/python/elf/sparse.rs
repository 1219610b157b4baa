//! Reading only the parts of a file that are needed.
//!
//! A 30 MB libpython with a full .symtab needs its headers, .dynsym and
//! .dynstr (about 100 kB) to answer nearly every question, so those are read
//! with positioned reads (pread) into 8-byte-aligned chunks, and [`Sparse`]
//! serves them to `object`'s bounds-checked readers as if the whole file were
//! in memory: a read outside the chunks fails like a read past the end.
//! Nothing is mmap'ed, so a file truncated under us cannot raise SIGBUS; it
//! gives short chunks and errors.

use std::borrow::Cow;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use object::ReadRef;

use super::{ElfBytes, ElfFile, MAX_ELF_SIZE};

/// Ranges closer than this are read with one pread.
const MERGE_GAP: u64 = 16 << 10;

/// Fills `buf` from `offset`, stopping early at the end of the file (it may
/// have shrunk since we looked at its size). Returns how much was read.
pub(super) fn fill(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let at = offset
            .checked_add(filled as u64)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        match file.read_at(&mut buf[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `len` bytes at `offset` in aligned storage; shorter at the end of the file.
pub(super) fn read_range(file: &File, offset: u64, len: usize) -> std::io::Result<ElfBytes> {
    let mut buf = ElfBytes::zeroed(len);
    buf.len = fill(file, offset, buf.as_bytes_mut())?;
    Ok(buf)
}

/// Some byte ranges of a file of `len` bytes.
#[derive(Clone)]
pub(super) struct Sparse {
    len: u64,
    /// (file offset, bytes), in the order read; few enough to search linearly.
    chunks: Vec<(u64, Arc<ElfBytes>)>,
    /// Bytes held, kept under [`MAX_ELF_SIZE`] whatever the headers claim.
    held: u64,
}

impl Sparse {
    pub fn new(len: u64) -> Sparse {
        Sparse {
            len,
            chunks: Vec::new(),
            held: 0,
        }
    }

    /// Reads the given (offset, size) ranges that are not held yet, nearby
    /// ones together. Parts past the end of the file are not read (reading
    /// them then fails, as it would with the whole file in memory), nor
    /// anything beyond the memory budget.
    pub fn load(&mut self, file: &File, ranges: &[(u64, u64)]) -> std::io::Result<()> {
        let mut wanted: Vec<(u64, u64)> = ranges
            .iter()
            .filter_map(|&(offset, size)| {
                let end = offset.saturating_add(size).min(self.len);
                // Chunks start 8-aligned so that in-memory alignment matches
                // the file's, as `object` expects of headers and tables.
                let start = offset & !7;
                (size > 0 && start < end && self.get(offset, end).is_none()).then_some((start, end))
            })
            .collect();
        wanted.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in wanted {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(MERGE_GAP) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        for (start, end) in merged {
            let size = end - start;
            if self.held.saturating_add(size) > MAX_ELF_SIZE {
                continue;
            }
            let bytes = read_range(file, start, size as usize)?;
            self.held += size;
            self.chunks.push((start, Arc::new(bytes)));
        }
        Ok(())
    }

    /// The bytes of [start, end) if one chunk holds them all.
    fn get(&self, start: u64, end: u64) -> Option<&[u8]> {
        self.chunks.iter().find_map(|(at, bytes)| {
            let from = usize::try_from(start.checked_sub(*at)?).ok()?;
            let to = usize::try_from(end.checked_sub(*at)?).ok()?;
            bytes.as_bytes().get(from..to)
        })
    }

    /// The chunk holding `offset`, from there on.
    fn tail(&self, offset: u64) -> Option<&[u8]> {
        self.chunks.iter().find_map(|(at, bytes)| {
            let from = usize::try_from(offset.checked_sub(*at)?).ok()?;
            let bytes = bytes.as_bytes();
            (from < bytes.len()).then(|| &bytes[from..])
        })
    }
}

impl<'a> ReadRef<'a> for &'a Sparse {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        let end = offset.checked_add(size).ok_or(())?;
        if size == 0 {
            return (offset <= self.len).then_some(&[][..]).ok_or(());
        }
        self.get(offset, end).ok_or(())
    }

    /// Like the in-memory reader: the delimiter must come before `range.end`,
    /// which must be inside the file.
    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        if range.start > range.end || range.end > self.len {
            return Err(());
        }
        let max = usize::try_from(range.end - range.start).map_err(|_| ())?;
        let bytes = self.tail(range.start).ok_or(())?;
        let bytes = &bytes[..bytes.len().min(max)];
        let n = bytes.iter().position(|&b| b == delimiter).ok_or(())?;
        Ok(&bytes[..n])
    }
}

/// Where the bytes of a parsed file are: all in memory, or still in the
/// file (then read on request, only the parts asked for).
#[derive(Clone, Copy)]
pub enum FileBytes<'a> {
    Memory(&'a [u8]),
    File(&'a ElfFile),
}

impl<'a> FileBytes<'a> {
    /// `len` bytes at file offset `offset`; None if the file does not hold
    /// them all (or they are more than [`MAX_ELF_SIZE`]).
    pub fn get(&self, offset: u64, len: u64) -> Option<Cow<'a, [u8]>> {
        let end = offset.checked_add(len)?;
        match *self {
            FileBytes::Memory(data) => data
                .get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
                .map(Cow::Borrowed),
            FileBytes::File(file) => {
                if end > file.size || len > MAX_ELF_SIZE {
                    return None;
                }
                let mut buf = vec![0; usize::try_from(len).ok()?];
                let n = fill(&file.file, offset, &mut buf).ok()?;
                (n == buf.len()).then_some(Cow::Owned(buf))
            }
        }
    }
}
