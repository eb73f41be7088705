//! The pagestream codec against byte layouts built by hand, and its
//! properties.

use super::*;
use proptest::prelude::*;
use PagestreamError as E;
use PagestreamRequest as Req;
use PagestreamResponse as Resp;

const REL: RelTag = RelTag {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16384,
    forknum: 2,
};
const REL_BYTES: [u8; 13] = [0, 0, 6, 127, 0, 0, 0, 5, 0, 0, 64, 0, 2];

fn req(body: PagestreamRequestBody) -> PagestreamRequest {
    let (request_lsn, not_modified_since) = (Lsn(0x1_0000_0028), Lsn(0x1_0000_0010));
    PagestreamRequest {
        reqid: 0x0102030405060708,
        request_lsn,
        not_modified_since,
        body,
    }
}

/// `req()`'s header with `tag`, then `payload`.
fn req_bytes(tag: u8, payload: &[u8]) -> Vec<u8> {
    let header = [
        tag, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 0x28, 0, 0, 0, 1, 0, 0, 0, 0x10,
    ];
    [&header[..], payload].concat()
}

fn resp(body: PagestreamResponseBody) -> PagestreamResponse {
    PagestreamResponse { reqid: 7, body }
}

/// `resp()`'s header with `tag`, then `payload`.
fn resp_bytes(tag: u8, payload: &[u8]) -> Vec<u8> {
    [&[tag, 0, 0, 0, 0, 0, 0, 0, 7][..], payload].concat()
}

fn ser_req(r: &PagestreamRequest) -> Vec<u8> {
    let mut buf = BytesMut::new();
    r.serialize(&mut buf).map(|()| buf.to_vec()).unwrap()
}

fn ser_resp(r: &PagestreamResponse) -> Vec<u8> {
    let mut buf = BytesMut::new();
    r.serialize(&mut buf).map(|()| buf.to_vec()).unwrap()
}

/// Every request kind with its exact encoding.
fn request_vectors() -> Vec<(PagestreamRequest, Vec<u8>)> {
    use PagestreamRequestBody::*;
    let kind = SlruKind::MultiXactMembers;
    vec![
        (req(Exists { rel: REL }), req_bytes(0, &REL_BYTES)),
        (req(Nblocks { rel: REL }), req_bytes(1, &REL_BYTES)),
        (
            req(GetPage {
                rel: REL,
                blkno: 0x0A0B0C0D,
            }),
            req_bytes(2, &[&REL_BYTES[..], &[10, 11, 12, 13]].concat()),
        ),
        (
            req(DbSize { dbnode: 16385 }),
            req_bytes(3, &[0, 0, 0x40, 0x01]),
        ),
        (
            req(GetSlruSegment { kind, segno: 0x1F }),
            req_bytes(4, &[2, 0, 0, 0, 0x1F]),
        ),
    ]
}

/// Every response kind with its exact encoding.
fn response_vectors() -> Vec<(PagestreamResponse, Vec<u8>)> {
    use PagestreamResponseBody::*;
    let two_pages = [vec![0xAA; PAGE_SIZE], vec![0xBB; PAGE_SIZE]].concat();
    vec![
        (resp(Exists(false)), resp_bytes(100, &[0])),
        (resp(Exists(true)), resp_bytes(100, &[1])),
        (resp(Nblocks(0x01020304)), resp_bytes(101, &[1, 2, 3, 4])),
        (
            resp(GetPage(Bytes::from(vec![0x5A; PAGE_SIZE]))),
            resp_bytes(102, &[0x5A; PAGE_SIZE]),
        ),
        (
            resp(Error("no such rel".into())),
            resp_bytes(103, b"no such rel\0"),
        ),
        (resp(Error(String::new())), resp_bytes(103, &[0])),
        (
            resp(DbSize(-2)),
            resp_bytes(104, &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]),
        ),
        (
            resp(DbSize(8192)),
            resp_bytes(104, &[0, 0, 0, 0, 0, 0, 0x20, 0]),
        ),
        (
            resp(GetSlruSegment(Bytes::from(two_pages.clone()))),
            resp_bytes(105, &[&[0, 0, 0, 2][..], &two_pages].concat()),
        ),
        (
            resp(GetSlruSegment(Bytes::new())),
            resp_bytes(105, &[0, 0, 0, 0]),
        ),
    ]
}

#[test]
fn requests_have_the_documented_encoding() {
    let sizes = [38, 38, 42, 29, 30];
    for ((r, bytes), size) in request_vectors().into_iter().zip(sizes) {
        assert_eq!(bytes.len(), size, "{r:?}");
        // serialize appends.
        let mut buf = BytesMut::from(&b"xy"[..]);
        r.serialize(&mut buf).unwrap();
        assert_eq!(buf[..], [&b"xy"[..], &bytes].concat()[..], "{r:?}");
        assert_eq!(Req::parse(&bytes), Ok(r));
    }
}

#[test]
fn responses_have_the_documented_encoding_and_error_tag_is_unique() {
    for (r, bytes) in response_vectors() {
        assert_eq!(ser_resp(&r), bytes, "{r:?}");
        assert_eq!(
            bytes[0] == 103,
            matches!(r.body, PagestreamResponseBody::Error(_))
        );
        assert_eq!(Resp::parse(&bytes), Ok(r));
    }
}

#[test]
fn every_truncation_or_extension_is_an_error() {
    let truncated = |len: usize, r: Result<(), E>| match r.unwrap_err() {
        E::Truncated { needed, got } => assert!(got == len && needed > len),
        err => assert_eq!(err, E::MessageNotTerminated, "len {len}"),
    };
    for (_, bytes) in request_vectors() {
        for len in 0..bytes.len() {
            truncated(len, Req::parse(&bytes[..len]).map(drop));
        }
    }
    for (_, bytes) in response_vectors() {
        for len in 0..bytes.len() {
            truncated(len, Resp::parse(&bytes[..len]).map(drop));
        }
    }
    // A request's fixed header is checked field by field.
    let r = Req::parse(&[2, 0, 0, 0]);
    assert_eq!(r, Err(E::Truncated { needed: 9, got: 4 }));
    assert_eq!(Resp::parse(&[]), Err(E::Truncated { needed: 1, got: 0 }));

    // Trailing bytes are rejected too.
    for (_, mut bytes) in request_vectors() {
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(Req::parse(&bytes), Err(E::TrailingBytes(2)));
    }
    for (_, mut bytes) in response_vectors() {
        bytes.push(0);
        assert_eq!(Resp::parse(&bytes), Err(E::TrailingBytes(1)));
    }
    let bytes = resp_bytes(103, b"a\0bc");
    assert_eq!(Resp::parse(&bytes), Err(E::TrailingBytes(2)));
}

#[test]
fn bad_field_values_are_rejected() {
    let bytes = req_bytes(2, &[&REL_BYTES[..12], &[4, 0, 0, 0, 0]].concat());
    assert_eq!(Req::parse(&bytes), Err(E::InvalidFork(4)));
    let bytes = req_bytes(4, &[3, 0, 0, 0, 0]);
    assert_eq!(Req::parse(&bytes), Err(E::UnknownSlruKind(3)));
    for tag in [5, 99, 100, 255] {
        assert_eq!(Req::parse(&req_bytes(tag, &[])), Err(E::UnknownTag(tag)));
    }
    for tag in [0, 4, 99, 106, 203, 255] {
        assert_eq!(Resp::parse(&resp_bytes(tag, &[])), Err(E::UnknownTag(tag)));
    }
    let cases = [
        (resp_bytes(100, &[2]), E::InvalidBool(2)),
        (resp_bytes(103, &[0xC3, 0x28, 0]), E::MessageNotUtf8),
        (resp_bytes(103, b"abc"), E::MessageNotTerminated),
    ];
    for (bytes, err) in cases {
        assert_eq!(Resp::parse(&bytes), Err(err));
    }
    // A huge page count is reported, never allocated.
    let err = Resp::parse(&resp_bytes(105, &[0xFF; 4])).unwrap_err();
    assert!(
        matches!(err, E::Truncated { got: 13, .. } | E::TooManyPages(_)),
        "{err:?}"
    );
}

#[test]
fn serialize_refuses_what_parse_would_reject() {
    use PagestreamResponseBody::*;
    let mut buf = BytesMut::new();
    let rel = RelTag { forknum: 4, ..REL };
    let r = req(PagestreamRequestBody::GetPage { rel, blkno: 0 });
    assert_eq!(r.serialize(&mut buf), Err(E::InvalidFork(4)));
    let cases = [
        (GetPage(Bytes::from(vec![0; 100])), E::BadPageSize(100)),
        (GetPage(Bytes::new()), E::BadPageSize(0)),
        (
            GetSlruSegment(Bytes::from(vec![0; PAGE_SIZE + 1])),
            E::BadPageSize(PAGE_SIZE + 1),
        ),
        (Error("a\0b".into()), E::MessageContainsNul),
    ];
    for (body, err) in cases {
        assert_eq!(resp(body).serialize(&mut buf), Err(err));
    }
    assert!(buf.is_empty());

    // The error constructor makes any message serializable.
    let r = Resp::error(9, "bad\0rel");
    assert_eq!(r.body, Error("bad\u{FFFD}rel".into()));
    assert_eq!(Resp::parse(&ser_resp(&r)), Ok(r));
}

#[test]
fn validate_rejects_invalid_and_inverted_lsns() {
    let mut r = req(PagestreamRequestBody::DbSize { dbnode: 1 });
    assert_eq!(r.validate(), Ok(()));

    (r.request_lsn, r.not_modified_since) = (Lsn(0), Lsn(0));
    let err = r.validate().unwrap_err();
    assert_eq!(err, RequestLsnError::InvalidRequestLsn);
    assert_eq!(err.to_string(), "invalid request LSN 0/0");

    (r.request_lsn, r.not_modified_since) = (Lsn(0x1_0000_0010), Lsn(0x1_0000_0020));
    let err = r.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "request LSN 1/10 is before not_modified_since 1/20"
    );

    // Equal LSNs, latest, and an unknown not_modified_since are fine.
    r.not_modified_since = r.request_lsn;
    assert_eq!(r.validate(), Ok(()));
    r.request_lsn = Lsn::MAX;
    assert_eq!(r.validate(), Ok(()));
    r.not_modified_since = Lsn::INVALID;
    assert_eq!(r.validate(), Ok(()));
}

fn arb_rel() -> impl Strategy<Value = RelTag> {
    (any::<[u32; 3]>(), 0..=INIT_FORKNUM).prop_map(|([spcnode, dbnode, relnode], forknum)| RelTag {
        spcnode,
        dbnode,
        relnode,
        forknum,
    })
}

fn arb_request() -> impl Strategy<Value = PagestreamRequest> {
    use PagestreamRequestBody::*;
    let body = prop_oneof![
        arb_rel().prop_map(|rel| Exists { rel }),
        arb_rel().prop_map(|rel| Nblocks { rel }),
        (arb_rel(), any::<u32>()).prop_map(|(rel, blkno)| GetPage { rel, blkno }),
        any::<u32>().prop_map(|dbnode| DbSize { dbnode }),
        (0..3u8, any::<u32>()).prop_map(|(k, segno)| {
            GetSlruSegment {
                kind: SlruKind::from_u8(k).unwrap(),
                segno,
            }
        }),
    ];
    (any::<[u64; 3]>(), body).prop_map(|([reqid, lsn, nms], body)| PagestreamRequest {
        reqid,
        request_lsn: Lsn(lsn),
        not_modified_since: Lsn(nms),
        body,
    })
}

/// `n` pages with contents derived from `seed`.
fn pages(n: usize, seed: u8) -> Bytes {
    (0..n * PAGE_SIZE)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

fn arb_response() -> impl Strategy<Value = PagestreamResponse> {
    use PagestreamResponseBody::*;
    let body = prop_oneof![
        any::<bool>().prop_map(Exists),
        any::<u32>().prop_map(Nblocks),
        any::<u8>().prop_map(|s| GetPage(pages(1, s))),
        any::<i64>().prop_map(DbSize),
        (0..4usize, any::<u8>()).prop_map(|(n, s)| GetSlruSegment(pages(n, s))),
        "[^\0]{0,40}".prop_map(Error),
    ];
    (any::<u64>(), body).prop_map(|(reqid, body)| PagestreamResponse { reqid, body })
}

proptest! {
    #[test]
    fn request_round_trips(r in arb_request()) {
        prop_assert_eq!(Req::parse(&ser_req(&r)), Ok(r));
    }

    #[test]
    fn response_round_trips(r in arb_response()) {
        prop_assert_eq!(Resp::parse(&ser_resp(&r)), Ok(r));
    }

    /// Also: whatever parses re-serializes to the same bytes.
    #[test]
    fn arbitrary_bytes_never_panic(tag in any::<u8>(), rest in prop::collection::vec(any::<u8>(), 0..64)) {
        let bytes = [vec![tag], rest].concat();
        if let Ok(r) = Req::parse(&bytes) {
            prop_assert_eq!(ser_req(&r), bytes.clone());
        }
        if let Ok(r) = Resp::parse(&bytes) {
            prop_assert_eq!(ser_resp(&r), bytes);
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        r in arb_request(),
        s in arb_response(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        for mut bytes in [ser_req(&r), ser_resp(&s)] {
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            if let Ok(parsed) = Req::parse(&bytes) {
                prop_assert_eq!(ser_req(&parsed), bytes.clone());
            }
            if let Ok(parsed) = Resp::parse(&bytes) {
                prop_assert_eq!(ser_resp(&parsed), bytes);
            }
        }
    }
}
