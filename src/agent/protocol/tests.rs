use super::*;
use proptest::prelude::*;
use serde_json::json;
use std::io::Cursor;

fn raw(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn round_trip_simple() {
    let f = Frame::with_payload(json!({"op": "ping", "id": 1}), b"\x00\n\xff".to_vec());
    let bytes = encode_frame(&f).unwrap();
    let back = read_frame(&mut Cursor::new(bytes), Caps::FROM_TARGET).unwrap();
    assert_eq!(back, f);
}

#[test]
fn two_frames_back_to_back() {
    let a = Frame::new(json!({"a": 1}));
    let b = Frame::with_payload(json!({"b": "x\ny"}), vec![1, 2, 3]);
    let mut bytes = encode_frame(&a).unwrap();
    bytes.extend(encode_frame(&b).unwrap());
    let mut c = Cursor::new(bytes);
    assert_eq!(read_frame(&mut c, Caps::FROM_TARGET).unwrap(), a);
    assert_eq!(read_frame(&mut c, Caps::FROM_TARGET).unwrap(), b);
    assert!(matches!(
        read_frame(&mut c, Caps::FROM_TARGET),
        Err(ProtocolError::Closed)
    ));
}

#[test]
fn empty_stream_is_closed() {
    assert!(matches!(
        read_frame(&mut Cursor::new(Vec::new()), Caps::FROM_TARGET),
        Err(ProtocolError::Closed)
    ));
}

#[test]
fn short_length_is_truncated() {
    assert!(matches!(
        read_frame(&mut Cursor::new(vec![0, 0]), Caps::FROM_TARGET),
        Err(ProtocolError::Truncated { got: 2, .. })
    ));
}

/// A reader that fails the test if more than `limit` bytes are pulled.
struct Counting<R> {
    inner: R,
    read: usize,
    limit: usize,
}
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        assert!(self.read <= self.limit, "read past the length prefix");
        Ok(n)
    }
}

#[test]
fn oversized_frame_rejected_before_reading_body() {
    let caps = Caps {
        max_frame: 1000,
        max_header: 100,
    };
    let mut r = Counting {
        inner: Cursor::new(raw(1001, &[b'{'; 2000])),
        read: 0,
        limit: 4,
    };
    assert!(matches!(
        read_frame(&mut r, caps),
        Err(ProtocolError::FrameTooLarge {
            len: 1001,
            cap: 1000
        })
    ));
    // The real cap: a u32::MAX length from the target.
    assert!(matches!(
        read_frame(&mut Cursor::new(raw(u32::MAX, b"")), Caps::FROM_TARGET),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
}

#[test]
fn lying_length_allocates_nothing_big() {
    // 256 MiB announced, 10 bytes sent: Truncated, and no 256 MiB buffer
    // (the chunked reader grows only with the data).
    let r = read_frame(
        &mut Cursor::new(raw(256 << 20, b"{\"a\":1}\nxx")),
        Caps::FROM_TARGET,
    );
    assert!(matches!(r, Err(ProtocolError::Truncated { .. })), "{r:?}");
}

#[test]
fn header_cap() {
    let caps = Caps {
        max_frame: 1000,
        max_header: 10,
    };
    let body = b"{\"abcdefghij\":1}\n";
    let mut r = Counting {
        inner: Cursor::new(raw(body.len() as u32, body)),
        read: 0,
        limit: 4 + 11,
    };
    assert!(matches!(
        read_frame(&mut r, caps),
        Err(ProtocolError::HeaderTooLarge { cap: 10 })
    ));
    // Exactly at the cap is fine.
    let body = b"{\"abc\":12}\n";
    assert_eq!(body.len(), 11);
    let f = read_frame(&mut Cursor::new(raw(11, body)), caps).unwrap();
    assert_eq!(f.header, json!({"abc": 12}));
}

#[test]
fn malformed_headers() {
    let c = Caps::FROM_TARGET;
    assert!(matches!(
        read_frame(&mut Cursor::new(raw(3, b"{}}")), c),
        Err(ProtocolError::MissingTerminator)
    ));
    assert!(matches!(
        read_frame(&mut Cursor::new(raw(0, b"")), c),
        Err(ProtocolError::MissingTerminator)
    ));
    assert!(matches!(
        read_frame(&mut Cursor::new(raw(3, b"[1\n")), c),
        Err(ProtocolError::BadJson(_))
    ));
    assert!(matches!(
        read_frame(&mut Cursor::new(raw(3, b"12\n")), c),
        Err(ProtocolError::NotAnObject)
    ));
    assert!(matches!(
        read_frame(&mut Cursor::new(raw(4, b"{\xff}\n")), c),
        Err(ProtocolError::BadJson(_))
    ));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut body = vec![b'['; 100_000];
    body.push(b'\n');
    let r = read_frame(
        &mut Cursor::new(raw(body.len() as u32, &body)),
        Caps::FROM_TARGET,
    );
    assert!(matches!(r, Err(ProtocolError::BadJson(_))));
}

#[test]
fn request_wire_format() {
    let r = RequestFrame {
        id: 7,
        request: Request::Exec {
            code: "print(1)".into(),
            mode: ExecMode::Single,
        },
    };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        json!({"id": 7, "op": "exec", "code": "print(1)", "mode": "single"})
    );
    assert_eq!(serde_json::from_value::<RequestFrame>(v).unwrap(), r);
    let v = serde_json::to_value(RequestFrame {
        id: 1,
        request: Request::CompileCheck {
            source: "if x:".into(),
        },
    })
    .unwrap();
    assert_eq!(
        v,
        json!({"id": 1, "op": "compile_check", "source": "if x:"})
    );
    let v = serde_json::to_value(RequestFrame {
        id: 2,
        request: Request::Ping,
    })
    .unwrap();
    assert_eq!(v, json!({"id": 2, "op": "ping"}));
}

#[test]
fn response_parsing() {
    let f = Frame::new(json!({
        "id": 3, "ok": false, "gil_s": 0.5,
        "error": {"type": "NameError", "message": "name 'x' is not defined", "traceback": "T"}
    }));
    let r = Response::from_frame(f).unwrap();
    assert!(!r.ok);
    assert_eq!(r.id, 3);
    let e = r.error.unwrap();
    assert_eq!(e.type_name, "NameError");
    assert_eq!(e.to_string(), "NameError: name 'x' is not defined");
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1_000_000i32..1_000_000).prop_map(|n| json!(f64::from(n) / 8.0)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let caps = Caps { max_frame: 300, max_header: 100 };
        let mut c = Cursor::new(bytes);
        // Read frames until an error; none of this may panic.
        for _ in 0..64 {
            if read_frame(&mut c, caps).is_err() {
                break;
            }
        }
    }

    #[test]
    fn arbitrary_body_with_valid_length_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let bytes = raw(body.len() as u32, &body);
        let _ = read_frame(&mut Cursor::new(bytes), Caps::FROM_TARGET);
    }

    #[test]
    fn round_trip(
        fields in prop::collection::btree_map(".*", arb_json(), 0..6),
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let header = Value::Object(fields.into_iter().collect());
        let f = Frame::with_payload(header, payload);
        let bytes = encode_frame(&f).unwrap();
        let back = read_frame(&mut Cursor::new(&bytes), Caps::FROM_TARGET).unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn truncated_round_trip_is_an_error(
        fields in prop::collection::btree_map("[a-z]{0,8}", arb_json(), 0..4),
        payload in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let f = Frame::with_payload(Value::Object(fields.into_iter().collect()), payload);
        let bytes = encode_frame(&f).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(read_frame(&mut Cursor::new(&bytes[..cut]), Caps::FROM_TARGET).is_err());
    }
}
