//! One census chunk frame, checked: its header and the word arrays of its
//! segments (see the module docs for the layout): first the two id arrays
//! of every segment, in order, then the sizes (and hashes) of every segment
//! that has them, in order.

use serde_json::Value;

use super::CensusError;

/// Frame format this tool reads (the agent sends `"v": 2`).
pub const VERSION: u64 = 2;
/// At most this many segments per frame, and fingerprinted types.
const MAX_SEGMENTS: usize = 1 << 16;
const MAX_FP_TYPES: usize = 16;

/// The native words of one array in the payload.
#[derive(Debug, Clone, Copy)]
pub struct Words<'a> {
    bytes: &'a [u8],
    w: usize,
}

impl<'a> Words<'a> {
    pub fn len(&self) -> usize {
        self.bytes.len() / self.w
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + 'a {
        let w = self.w;
        self.bytes.chunks_exact(w).map(move |b| {
            if w == 8 {
                u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))
            } else {
                u64::from(u32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
            }
        })
    }
}

/// A segment of a frame.
#[derive(Debug)]
pub enum Segment<'a> {
    /// gc-tracked objects: ids, type ids, sizes.
    Tracked {
        ids: Words<'a>,
        tids: Words<'a>,
        sizes: Words<'a>,
    },
    /// Untracked objects: ids, type ids, sizes, and the value hashes of
    /// those whose type is fingerprinted, in order.
    Untracked {
        ids: Words<'a>,
        tids: Words<'a>,
        sizes: Words<'a>,
        hashes: Words<'a>,
    },
    /// Dicts that are the `__dict__` of an object of the owner type.
    Owners { dicts: Words<'a>, tids: Words<'a> },
}

/// A checked frame.
#[derive(Debug)]
pub struct Frame<'a> {
    pub dict_tid: Option<u64>,
    /// Type ids whose untracked records carry a value hash.
    pub fp_tids: Vec<u64>,
    pub segments: Vec<Segment<'a>>,
}

/// Checks `header` and splits `payload` into its segments.
pub fn parse<'a>(header: &Value, payload: &'a [u8]) -> Result<Frame<'a>, CensusError> {
    match header.get("k").and_then(Value::as_str) {
        Some("census") => {}
        Some(other) => return Err(CensusError::UnknownKind(other.to_string())),
        None => return Err(CensusError::MissingField("k")),
    }
    match header.get("v").and_then(Value::as_u64) {
        Some(VERSION) => {}
        v => return Err(CensusError::Version(v)),
    }
    let w = header
        .get("w")
        .and_then(Value::as_u64)
        .ok_or(CensusError::MissingField("w"))?;
    if w != 4 && w != 8 {
        return Err(CensusError::WordSize(w));
    }
    let le = header.get("le").and_then(Value::as_bool).unwrap_or(true);
    if le != cfg!(target_endian = "little") {
        return Err(CensusError::ByteOrder);
    }
    let w = w as usize;
    let dict_tid = header.get("dt").and_then(Value::as_u64);
    let fp_tids: Vec<u64> = match header.get("fpt") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_FP_TYPES => a
            .iter()
            .map(|v| v.as_u64().ok_or(CensusError::BadSegment("fpt")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(CensusError::BadSegment("fpt")),
    };
    let segs = match header.get("seg") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) if a.len() <= MAX_SEGMENTS => a.as_slice(),
        Some(_) => return Err(CensusError::BadSegment("seg")),
    };
    // Sizes first (in words, without overflow), then the slices.
    let mut shapes = Vec::with_capacity(segs.len());
    let mut total: u128 = 0;
    for s in segs {
        let a = s.as_array().ok_or(CensusError::BadSegment("seg"))?;
        let kind = a.first().and_then(Value::as_str);
        let num = |i: usize| a.get(i).and_then(Value::as_u64);
        let (arrays, n, nf) = match (kind, num(1)) {
            (Some("t"), Some(n)) if a.len() == 2 => (3, n, 0),
            (Some("u"), Some(n)) if a.len() == 3 => {
                (3, n, num(2).ok_or(CensusError::BadSegment("u"))?)
            }
            (Some("o"), Some(n)) if a.len() == 2 => (2, n, 0),
            _ => return Err(CensusError::BadSegment("seg")),
        };
        total += u128::from(n) * arrays + u128::from(nf);
        shapes.push((kind, n, nf));
    }
    let expected = total * w as u128;
    if expected != payload.len() as u128 {
        return Err(CensusError::PayloadSize {
            got: payload.len(),
            expected,
        });
    }
    // First every segment's two id arrays, then the sizes (and hashes).
    let ids_len = shapes
        .iter()
        .map(|(_, n, _)| *n as usize * 2 * w)
        .sum::<usize>();
    let (mut ids, mut tail) = payload.split_at(ids_len);
    let take = |from: &mut &'a [u8], n: u64| {
        let (a, b) = from.split_at(n as usize * w);
        *from = b;
        Words { bytes: a, w }
    };
    let mut segments = Vec::with_capacity(shapes.len());
    for (kind, n, nf) in shapes {
        segments.push(match kind {
            Some("t") => Segment::Tracked {
                ids: take(&mut ids, n),
                tids: take(&mut ids, n),
                sizes: take(&mut tail, n),
            },
            Some("u") => Segment::Untracked {
                ids: take(&mut ids, n),
                tids: take(&mut ids, n),
                sizes: take(&mut tail, n),
                hashes: take(&mut tail, nf),
            },
            _ => Segment::Owners {
                dicts: take(&mut ids, n),
                tids: take(&mut ids, n),
            },
        });
    }
    Ok(Frame {
        dict_tid,
        fp_tids,
        segments,
    })
}
