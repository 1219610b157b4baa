//! CPython version numbers: decoding `PY_VERSION_HEX`, parsing `PY_VERSION`
//! strings, reading a major.minor hint from a file name, and picking the
//! version literal out of a binary's read-only data.
//!
//! Everything here works on plain bytes and strings, so it is unit-tested
//! without any interpreter installed.

use std::fmt;

/// A CPython version, as `sys.version_info` would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PythonVersion {
    pub major: u8,
    pub minor: u8,
    /// Meaningless (0) when `micro_known` is false.
    pub micro: u8,
    /// 'a', 'b', 'c' (rc) or 'f' (final).
    pub level: char,
    pub serial: u8,
    /// False when only major.minor could be found (from a file name): then
    /// micro, level and serial are placeholders and are not displayed.
    pub micro_known: bool,
}

impl PythonVersion {
    /// A final release, e.g. `PythonVersion::new(3, 11, 7)`.
    pub fn new(major: u8, minor: u8, micro: u8) -> PythonVersion {
        PythonVersion {
            major,
            minor,
            micro,
            level: 'f',
            serial: 0,
            micro_known: true,
        }
    }

    /// Only major.minor is known (e.g. from `libpython3.9.so`).
    pub fn major_minor(major: u8, minor: u8) -> PythonVersion {
        PythonVersion {
            micro_known: false,
            ..PythonVersion::new(major, minor, 0)
        }
    }

    /// Decodes `PY_VERSION_HEX` (`0xMMmmppLS`: major, minor, micro, level
    /// nibble 0xA/0xB/0xC/0xF, serial nibble). Rejects values no CPython
    /// release has, so garbage read from a file is not taken for a version.
    pub fn from_hex(hex: u32) -> Option<PythonVersion> {
        let major = (hex >> 24) as u8;
        let minor = (hex >> 16) as u8;
        let micro = (hex >> 8) as u8;
        let level = match (hex >> 4) & 0xF {
            0xA => 'a',
            0xB => 'b',
            0xC => 'c',
            0xF => 'f',
            _ => return None,
        };
        let serial = (hex & 0xF) as u8;
        if !(2..=3).contains(&major) || minor > 99 || micro > 99 || (level == 'f' && serial != 0) {
            return None;
        }
        Some(PythonVersion {
            major,
            minor,
            micro,
            level,
            serial,
            micro_known: true,
        })
    }

    /// The `PY_VERSION_HEX` of this version (placeholders when micro is unknown).
    pub fn to_hex(&self) -> u32 {
        let level = match self.level {
            'a' => 0xA,
            'b' => 0xB,
            'c' => 0xC,
            _ => 0xF,
        };
        (self.major as u32) << 24
            | (self.minor as u32) << 16
            | (self.micro as u32) << 8
            | level << 4
            | (self.serial as u32 & 0xF)
    }

    /// Parses a `PY_VERSION` literal: `2.7.18`, `3.14.0rc1`, `3.13.0a2+`.
    /// The trailing `+` of a development build is accepted and dropped.
    pub fn parse(s: &str) -> Option<PythonVersion> {
        parse_literal(s.as_bytes())
    }

    /// Whether major.minor equal `hint` (always true without a hint).
    pub fn matches(&self, hint: Option<(u8, u8)>) -> bool {
        hint.is_none_or(|(major, minor)| self.major == major && self.minor == minor)
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.micro_known {
            return write!(f, "{}.{}", self.major, self.minor);
        }
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        match self.level {
            'a' | 'b' => write!(f, "{}{}", self.level, self.serial),
            'c' => write!(f, "rc{}", self.serial),
            _ => Ok(()),
        }
    }
}

/// `^[23]\.\d{1,2}\.\d{1,2}((a|b|rc)\d{1,2})?\+?$`, by hand (no regex crate).
fn parse_literal(s: &[u8]) -> Option<PythonVersion> {
    let s = s.strip_suffix(b"+").unwrap_or(s);
    let (major, rest) = number(s, 1)?;
    if !(2..=3).contains(&major) {
        return None;
    }
    let (minor, rest) = number(rest.strip_prefix(b".")?, 2)?;
    let (micro, rest) = number(rest.strip_prefix(b".")?, 2)?;
    let (level, rest) = if let Some(r) = rest.strip_prefix(b"rc") {
        ('c', r)
    } else if let Some(r) = rest.strip_prefix(b"a") {
        ('a', r)
    } else if let Some(r) = rest.strip_prefix(b"b") {
        ('b', r)
    } else {
        ('f', rest)
    };
    let (serial, rest) = if level == 'f' {
        (0, rest)
    } else {
        number(rest, 2)?
    };
    if !rest.is_empty() {
        return None;
    }
    Some(PythonVersion {
        major,
        minor,
        micro,
        level,
        serial,
        micro_known: true,
    })
}

/// 1..=max_digits decimal digits at the start of `s`.
fn number(s: &[u8], max_digits: usize) -> Option<(u8, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > max_digits {
        return None;
    }
    let v = s[..n].iter().fold(0u8, |acc, b| acc * 10 + (b - b'0'));
    Some((v, &s[n..]))
}

/// The major.minor a file name promises: `libpython3.11.so.1.0`,
/// `libpython3.6m.so.1.0`, `libpython3.13t.so`, `python3.11`, `python2.7-dbg`.
/// `python3` or `uwsgi` give none.
pub fn hint_from_name(file_name: &str) -> Option<(u8, u8)> {
    let bytes = file_name.as_bytes();
    let at = file_name.rfind("python")? + "python".len();
    let (major, rest) = number(&bytes[at..], 1)?;
    let (minor, _) = number(rest.strip_prefix(b".")?, 2)?;
    (2..=3).contains(&major).then_some((major, minor))
}

/// Finds the `PY_VERSION` literal in a binary's read-only data.
///
/// What the binaries on disk contain:
/// Debian's and sid's static interpreters hold it as a string of its own
/// (`"\0" "3.11.2" "\0"`), next to `unidata_version`'s `"3.2.0"` (the Unicode
/// 3.2 database kept for IDNA), which is why major.minor must agree with the
/// file name. pyenv's libpython has no separate copy at all: the linker merged
/// the literal into the tail of the installation prefix string
/// `"/root/.pyenv/versions/3.11.7"` (SHF_MERGE string sections share common
/// suffixes). So the rule is: take every NUL-terminated string, and the part
/// of it that matches the grammar and either is the whole string
/// ("standalone") or follows a `/`, `-` or space ("tail" of a path such as
/// `.../3.9.18` or `Python-3.9.18`). A standalone literal beats tails, since a
/// prefix like `/opt/py-3.9.1` can end in a version that is not the
/// interpreter's. Within the winning class the version must be unique, else
/// the answer is None rather than a guess.
pub fn find_in_rodata(data: &[u8], hint: Option<(u8, u8)>) -> Option<PythonVersion> {
    let mut standalone: Vec<PythonVersion> = Vec::new();
    let mut tails: Vec<PythonVersion> = Vec::new();
    literal_candidates(data, |string, at_start| {
        // The longest literal is "3.14.10rc12+" (12 bytes); look no further back.
        let from = string.len().saturating_sub(MAX_LITERAL);
        for start in from..string.len() {
            let boundary = match start {
                0 if at_start => Some(true),
                0 => None, // the string goes on before: not a boundary we can see
                _ => tail_separator(string[start - 1]),
            };
            let Some(whole) = boundary else { continue };
            let Some(v) = parse_literal(&string[start..]) else {
                continue;
            };
            if v.matches(hint) {
                let list = if whole { &mut standalone } else { &mut tails };
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            break; // the longest match at a boundary is the literal
        }
    });
    if hint.is_none() {
        // The Unicode 3.2 tag would otherwise make every static 3.x ambiguous.
        let ucd = PythonVersion::new(3, 2, 0);
        for list in [&mut standalone, &mut tails] {
            if list.len() > 1 {
                list.retain(|v| *v != ucd);
            }
        }
    }
    let winners = if standalone.is_empty() {
        tails
    } else {
        standalone
    };
    match winners.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// "3.14.10rc12+".
const MAX_LITERAL: usize = 12;

/// Calls `f` with the NUL-terminated strings of `data` (and its unterminated
/// tail) that can end in a literal, cut to their last `MAX_LITERAL + 1`
/// bytes (enough to see the byte before a literal), and whether the cut kept
/// the string's start. A literal ends in a digit or `+` and has two dots.
///
/// Megabytes of .rodata hold few such strings, so the scan tests 64-byte
/// blocks for a digit or `+` before a NUL without branching (the compiler
/// vectorises that) and only looks closer at blocks that have one.
fn literal_candidates(data: &[u8], mut f: impl FnMut(&[u8], bool)) {
    const BLOCK: usize = 64;
    fn ends(prev: u8) -> bool {
        prev.is_ascii_digit() | (prev == b'+')
    }
    let mut candidate = |z: usize| {
        // Binary tables end many "strings" in a digit: the byte before it
        // must be a digit, '.', or 'a', 'b' or 'c' of "a1", "b2", "rc1", and
        // a literal has two dots.
        if z < 2 || !matches!(data[z - 2], b'0'..=b'9' | b'.' | b'a' | b'b' | b'c') {
            return;
        }
        let lo = z.saturating_sub(MAX_LITERAL + 1);
        let window = &data[lo..z];
        if window.iter().filter(|&&b| b == b'.').count() < 2 {
            return;
        }
        match window.iter().rposition(|&b| b == 0) {
            Some(nul) => f(&window[nul + 1..], true),
            None => f(window, lo == 0),
        }
    };
    let mut lo = 1;
    while lo < data.len() {
        let hi = (lo + BLOCK).min(data.len());
        let (cur, prev) = (&data[lo..hi], &data[lo - 1..hi - 1]);
        let mut any = false;
        for (&c, &p) in cur.iter().zip(prev) {
            any |= (c == 0) & ends(p);
        }
        if any {
            for z in lo..hi {
                if data[z] == 0 && ends(data[z - 1]) {
                    candidate(z);
                }
            }
        }
        lo = hi;
    }
    if data.last().is_some_and(|&b| ends(b)) {
        candidate(data.len());
    }
}

/// `Some(false)` for bytes after which a merged literal may start.
fn tail_separator(b: u8) -> Option<bool> {
    matches!(b, b'/' | b'-' | b' ').then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hex() {
        assert_eq!(
            PythonVersion::from_hex(0x030B07F0),
            Some(PythonVersion::new(3, 11, 7))
        );
        let rc = PythonVersion::from_hex(0x030E00C1).unwrap();
        assert_eq!(
            (rc.level, rc.serial, rc.to_string()),
            ('c', 1, "3.14.0rc1".to_string())
        );
        assert_eq!(
            PythonVersion::from_hex(0x030F00A2).unwrap().to_string(),
            "3.15.0a2"
        );
        assert_eq!(
            PythonVersion::from_hex(0x030F00B3).unwrap().to_string(),
            "3.15.0b3"
        );
        for v in [0x030B07F0, 0x030E00C1, 0x020712F0] {
            assert_eq!(PythonVersion::from_hex(v).unwrap().to_hex(), v);
        }
    }

    #[test]
    fn rejects_implausible_hex() {
        assert_eq!(PythonVersion::from_hex(0), None);
        assert_eq!(PythonVersion::from_hex(0xFFFF_FFFF), None);
        assert_eq!(PythonVersion::from_hex(0x030B0770), None); // level 7
        assert_eq!(PythonVersion::from_hex(0x040B07F0), None); // Python 4
        assert_eq!(PythonVersion::from_hex(0x030B07F3), None); // final with serial
        assert_eq!(PythonVersion::from_hex(0x03C807F0), None); // minor 200
    }

    #[test]
    fn parses_literals() {
        assert_eq!(
            PythonVersion::parse("2.7.18"),
            Some(PythonVersion::new(2, 7, 18))
        );
        assert_eq!(
            PythonVersion::parse("3.10.13"),
            Some(PythonVersion::new(3, 10, 13))
        );
        assert_eq!(
            PythonVersion::parse("3.14.0rc1").unwrap().to_string(),
            "3.14.0rc1"
        );
        assert_eq!(
            PythonVersion::parse("3.13.0a2+").unwrap().to_string(),
            "3.13.0a2"
        );
        assert_eq!(PythonVersion::parse("3.12.0b4").unwrap().level, 'b');
        for bad in [
            "", "3", "3.11", "3.11.", "3.111.0", "4.0.0", "3.11.2rc", "3.11.2c1", "3.11.2x",
            "v3.11.2", "3.11.2++",
        ] {
            assert_eq!(PythonVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn displays_unknown_micro_as_major_minor() {
        let v = PythonVersion::major_minor(3, 9);
        assert_eq!(v.to_string(), "3.9");
        assert!(!v.micro_known);
        assert!(v.matches(Some((3, 9))) && !v.matches(Some((3, 10))) && v.matches(None));
    }

    #[test]
    fn hints_from_names() {
        assert_eq!(hint_from_name("libpython3.11.so.1.0"), Some((3, 11)));
        assert_eq!(hint_from_name("libpython3.6m.so.1.0"), Some((3, 6)));
        assert_eq!(hint_from_name("libpython2.7.so.1.0"), Some((2, 7)));
        assert_eq!(hint_from_name("libpython3.13t.so.1.0"), Some((3, 13)));
        assert_eq!(hint_from_name("python3.14"), Some((3, 14)));
        assert_eq!(hint_from_name("python3.11-dbg"), Some((3, 11)));
        for none in [
            "python3",
            "python",
            "libpython3.so",
            "uwsgi",
            "python3.",
            "python9.1",
            "",
        ] {
            assert_eq!(hint_from_name(none), None, "{none:?}");
        }
    }

    /// The layouts seen in real binaries (see `find_in_rodata`'s docs).
    #[test]
    fn finds_standalone_literal_next_to_unicode_tag() {
        let debian = b"on: -%c\n\0LC_ALL\0pymalloc\0pymalloc_debug\x003.11.2\0UOnnU\x0014.0.0\0unidata_version\x003.2.0\0";
        assert_eq!(
            find_in_rodata(debian, Some((3, 11))),
            Some(PythonVersion::new(3, 11, 2))
        );
        assert_eq!(
            find_in_rodata(debian, None),
            Some(PythonVersion::new(3, 11, 2))
        );
        assert_eq!(find_in_rodata(debian, Some((3, 12))), None);
    }

    #[test]
    fn finds_literal_merged_into_prefix() {
        let pyenv = b"ode VERSION macro\0/root/.pyenv/versions/3.9.18\0lib/python3.9\0";
        assert_eq!(
            find_in_rodata(pyenv, Some((3, 9))),
            Some(PythonVersion::new(3, 9, 18))
        );
        let source_dir = b"x\0/tmp/build/Python-3.14.0rc1\0";
        assert_eq!(
            find_in_rodata(source_dir, Some((3, 14)))
                .unwrap()
                .to_string(),
            "3.14.0rc1"
        );
    }

    /// The straightforward form of the rule, which `find_in_rodata` must equal.
    fn reference(data: &[u8], hint: Option<(u8, u8)>) -> Option<PythonVersion> {
        let (mut standalone, mut tails) = (Vec::new(), Vec::new());
        for string in data.split(|&b| b == 0) {
            for start in string.len().saturating_sub(12)..string.len() {
                let boundary = if start == 0 {
                    Some(true)
                } else {
                    tail_separator(string[start - 1])
                };
                let Some(whole) = boundary else { continue };
                let Some(v) = parse_literal(&string[start..]) else {
                    continue;
                };
                let list = if whole { &mut standalone } else { &mut tails };
                if v.matches(hint) && !list.contains(&v) {
                    list.push(v);
                }
                break;
            }
        }
        if hint.is_none() {
            for list in [&mut standalone, &mut tails] {
                if list.len() > 1 {
                    list.retain(|v| *v != PythonVersion::new(3, 2, 0));
                }
            }
        }
        let winners = if standalone.is_empty() {
            tails
        } else {
            standalone
        };
        match winners.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Literals at every offset and block edge, in strings of every length.
    #[test]
    fn fast_scan_equals_the_plain_rule() {
        let pieces: [&[u8]; 16] = [
            b"\0",
            b"3.13.0a2",
            b"3.12.0b4",
            b"3.11.2",
            b"3.9.18",
            b"/",
            b"-",
            b" ",
            b"x",
            b"3.2.0",
            b"3.14.10rc12+",
            b"abcdefghijklmnop",
            b"1",
            b"+",
            b".",
            b"3.11.2+",
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut found = 0;
        for round in 0..4000 {
            let mut data = Vec::new();
            for _ in 0..next() % 40 {
                data.extend_from_slice(pieces[next() as usize % pieces.len()]);
            }
            if round % 3 == 0 {
                data.push(0);
            }
            for hint in [None, Some((3, 11)), Some((3, 9)), Some((3, 13))] {
                let want = reference(&data, hint);
                found += usize::from(want.is_some());
                assert_eq!(find_in_rodata(&data, hint), want, "{data:?} {hint:?}");
            }
        }
        assert!(found > 1000, "only {found} finds: the data is too dull");
    }

    #[test]
    fn standalone_beats_tail_and_ambiguity_gives_none() {
        let both = b"/opt/py-3.9.1\0\x003.9.18\0";
        assert_eq!(
            find_in_rodata(both, Some((3, 9))),
            Some(PythonVersion::new(3, 9, 18))
        );
        let two = b"3.9.18\x003.9.17\0";
        assert_eq!(find_in_rodata(two, Some((3, 9))), None);
        // Not at a boundary: part of a bigger number, a symbol version, prose.
        let noise = b"GLIBC_2.2.5\0v3.9.18\0x13.9.18\x003.9.18.1\0since 3.9\0";
        assert_eq!(find_in_rodata(noise, Some((3, 9))), None);
        assert_eq!(find_in_rodata(b"", None), None);
        assert_eq!(find_in_rodata(&[0xff; 64], None), None);
    }
}
