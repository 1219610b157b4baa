//! Reading `str` objects (names, module names) out of the target.

use super::mem::Mem;
use super::roots::Interpreter;

/// Longest name read.
const MAX_NAME: u64 = 4096;

/// The text of the 3.x `str` (or 2.7 `str`/`unicode`) at `s`, if it is one.
pub fn read(mem: &Mem, it: &Interpreter, s: u64) -> Option<String> {
    if !super::mem::valid_ptr(s) {
        return None;
    }
    let ty = mem.u64(s + 8)?;
    let lay = &it.layout;
    if lay.major == 2 {
        if ty == it.builtins.bytes {
            let n = mem.u64(s + 16)?;
            if n > MAX_NAME {
                return None;
            }
            let b = mem.bytes(s + 36, n as usize)?;
            return Some(String::from_utf8_lossy(&b).into_owned());
        }
        if ty == it.builtins.unicode {
            let n = mem.u64(s + 16)?;
            let data = mem.ptr(s + 24)?;
            if n > MAX_NAME {
                return None;
            }
            let w = it.builtins.py2_ucs as usize;
            let b = mem.bytes(data, n as usize * w)?;
            return Some(decode_wide(&b, n as usize, w));
        }
        return None;
    }
    if ty != it.builtins.unicode {
        return None;
    }
    let n = mem.u64(s + 16)?;
    let state = mem.u32(s + 32)?;
    if n > MAX_NAME {
        return None;
    }
    let kind = (state >> 2) & 7;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    let data = if compact && ascii {
        s + lay.str_ascii
    } else if compact {
        s + lay.str_compact
    } else {
        mem.ptr(s + lay.str_data)?
    };
    let n = n as usize;
    match kind {
        1 => {
            let b = mem.bytes(data, n)?;
            Some(b.iter().map(|&c| c as char).collect())
        }
        2 => {
            let b = mem.bytes(data, n * 2)?;
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        4 => {
            let b = mem.bytes(data, n * 4)?;
            Some(decode_wide(&b, n, 4))
        }
        _ => None,
    }
}

fn decode_wide(b: &[u8], n: usize, width: usize) -> String {
    if width == 4 {
        b.chunks_exact(4)
            .take(n)
            .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
            .collect()
    } else {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .take(n)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    }
}

/// A NUL-terminated C string (a static type's `tp_name`).
pub fn cstr(mem: &Mem, addr: u64) -> Option<String> {
    let mut out = Vec::new();
    if addr >= super::mem::MAX_ADDR {
        return None;
    }
    let mut a = addr;
    while out.len() < MAX_NAME as usize {
        // Read up to the end of the page, so a short string near an
        // unmapped page still reads.
        let room = (4096 - (a % 4096)).min(256) as usize;
        let chunk = mem.bytes(a, room)?;
        if let Some(z) = chunk.iter().position(|&c| c == 0) {
            out.extend_from_slice(&chunk[..z]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk);
        a += room as u64;
    }
    None
}
