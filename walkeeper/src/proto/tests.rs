use super::*;
use proptest::prelude::*;

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn history() -> impl Strategy<Value = TermHistory> {
    proptest::collection::vec((any::<u64>(), lsn()), 0..5).prop_map(|v| {
        TermHistory(
            v.into_iter()
                .map(|(term, lsn)| TermSwitch { term, lsn })
                .collect(),
        )
    })
}

fn proposer_message() -> impl Strategy<Value = ProposerMessage> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(v, pg, p, sys, tl, tn, tli, seg)| ProposerMessage::Greeting(ProposerGreeting {
                    protocol_version: v,
                    pg_version: pg,
                    proposer_id: p,
                    system_id: sys,
                    timeline_id: TimelineId::from_array(tl),
                    tenant_id: TenantId::from_array(tn),
                    tli,
                    wal_seg_size: seg,
                })
            ),
        (any::<u64>(), any::<[u8; 16]>()).prop_map(|(term, p)| ProposerMessage::VoteRequest(
            VoteRequest {
                term,
                proposer_id: p
            }
        )),
        (any::<u64>(), lsn(), history(), lsn()).prop_map(|(term, s, h, t)| {
            ProposerMessage::Elected(ProposerElected {
                term,
                start_streaming_at: s,
                term_history: h,
                timeline_start_lsn: t,
            })
        }),
        (
            any::<u64>(),
            lsn(),
            0u64..1 << 40,
            proptest::collection::vec(any::<u8>(), 0..300),
            lsn(),
            lsn(),
            any::<[u8; 16]>()
        )
            .prop_map(|(term, e, begin, data, c, t, p)| ProposerMessage::Append(
                AppendRequest {
                    term,
                    epoch_start_lsn: e,
                    begin_lsn: Lsn(begin),
                    end_lsn: Lsn(begin + data.len() as u64),
                    commit_lsn: c,
                    truncate_lsn: t,
                    proposer_id: p,
                    wal_data: Bytes::from(data),
                }
            )),
    ]
}

fn feedback() -> impl Strategy<Value = Option<PageserverFeedback>> {
    proptest::option::of((any::<u64>(), lsn(), lsn(), lsn(), any::<i64>()).prop_map(
        |(s, w, f, a, t)| PageserverFeedback {
            current_timeline_size: s,
            ps_writelsn: w,
            ps_flushlsn: f,
            ps_applylsn: a,
            ps_replytime: t,
        },
    ))
}

fn acceptor_message() -> impl Strategy<Value = AcceptorMessage> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(term, node_id)| AcceptorMessage::Greeting(
            AcceptorGreeting { term, node_id }
        )),
        (any::<u64>(), any::<bool>(), lsn(), lsn(), history(), lsn()).prop_map(
            |(term, g, f, t, h, s)| {
                AcceptorMessage::VoteResponse(VoteResponse {
                    term,
                    vote_given: g,
                    flush_lsn: f,
                    truncate_lsn: t,
                    term_history: h,
                    timeline_start_lsn: s,
                })
            }
        ),
        (
            any::<u64>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<u64>(),
            any::<u64>(),
            feedback()
        )
            .prop_map(|(term, f, c, ts, x, cx, fb)| {
                AcceptorMessage::AppendResponse(AppendResponse {
                    term,
                    flush_lsn: f,
                    commit_lsn: c,
                    hs_ts: ts,
                    hs_xmin: x,
                    hs_catalog_xmin: cx,
                    pageserver_feedback: fb,
                })
            }),
    ]
}

proptest! {
    #[test]
    fn proposer_messages_round_trip(m in proposer_message()) {
        let b = m.to_bytes();
        prop_assert_eq!(ProposerMessage::parse(&b).unwrap(), m);
        // Every proper prefix is an error, not a panic or a different message.
        for cut in 0..b.len() {
            prop_assert!(ProposerMessage::parse(&b[..cut]).is_err());
        }
        let mut longer = b.to_vec();
        longer.push(0);
        prop_assert!(ProposerMessage::parse(&longer).is_err());
    }

    #[test]
    fn acceptor_messages_round_trip(m in acceptor_message()) {
        let b = m.to_bytes();
        prop_assert_eq!(AcceptorMessage::parse(&b).unwrap(), m.clone());
        // Without feedback the message ends exactly; with it, a cut inside
        // the feedback is an error too.
        for cut in 0..b.len() {
            if let Ok(p) = AcceptorMessage::parse(&b[..cut]) {
                // Only a cut exactly before the feedback parses (as the same
                // message without it).
                let AcceptorMessage::AppendResponse(a) = &m else { panic!("{p:?}") };
                prop_assert!(a.pageserver_feedback.is_some());
                prop_assert_eq!(cut, 8 + 6 * 8);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = ProposerMessage::parse(&b);
        let _ = AcceptorMessage::parse(&b);
    }

    #[test]
    fn corrupted_messages_never_panic(m in proposer_message(), at in any::<usize>(), x in any::<u8>()) {
        let mut b = m.to_bytes().to_vec();
        let i = at % b.len();
        b[i] ^= x | 1;
        let _ = ProposerMessage::parse(&b);
    }
}

#[test]
fn vote_request_bytes() {
    let m = ProposerMessage::VoteRequest(VoteRequest {
        term: 0x0102,
        proposer_id: [7; 16],
    });
    let mut want = vec![b'v', 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(&[7; 16]);
    assert_eq!(m.to_bytes().to_vec(), want);
}

#[test]
fn acceptor_greeting_bytes() {
    let m = AcceptorMessage::Greeting(AcceptorGreeting {
        term: 3,
        node_id: 2,
    });
    assert_eq!(
        m.to_bytes().to_vec(),
        [b'g', 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn feedback_bytes_and_unknown_keys() {
    let f = PageserverFeedback {
        current_timeline_size: 1,
        ps_writelsn: Lsn(2),
        ps_flushlsn: Lsn(3),
        ps_applylsn: Lsn(4),
        ps_replytime: 5,
    };
    let mut b = BytesMut::new();
    f.write(&mut b);
    assert_eq!(b[0], 5);
    assert_eq!(&b[1..23], b"current_timeline_size\0");
    assert_eq!(&b[23..27], &8i32.to_be_bytes());
    assert_eq!(&b[27..35], &1u64.to_be_bytes());
    // An extra key from a newer pageserver is skipped.
    let mut with_extra = BytesMut::new();
    with_extra.put_u8(6);
    with_extra.extend_from_slice(&b[1..]);
    with_extra.put_slice(b"future_key\0");
    with_extra.put_i32(2);
    with_extra.put_u16(7);
    let (parsed, used) = PageserverFeedback::parse(&with_extra).unwrap();
    assert_eq!(parsed, f);
    assert_eq!(used, with_extra.len());
}

#[test]
fn oversized_and_reversed_appends_are_refused() {
    let mut m = AppendRequest {
        term: 1,
        epoch_start_lsn: Lsn(0),
        begin_lsn: Lsn(100),
        end_lsn: Lsn(50),
        commit_lsn: Lsn(0),
        truncate_lsn: Lsn(0),
        proposer_id: [0; 16],
        wal_data: Bytes::new(),
    };
    let b = ProposerMessage::Append(m.clone()).to_bytes();
    assert!(matches!(
        ProposerMessage::parse(&b),
        Err(ProtoError::Invalid { .. })
    ));
    m.end_lsn = Lsn(100 + MAX_SEND_SIZE as u64 + 1);
    let b = ProposerMessage::Append(m).to_bytes();
    assert!(matches!(
        ProposerMessage::parse(&b),
        Err(ProtoError::Invalid { .. })
    ));
    // A history longer than the message is refused before allocating.
    let mut b = BytesMut::new();
    b.put_u64_le(u64::from(b'e'));
    b.put_u64_le(1);
    b.put_u64_le(0);
    b.put_u32_le(u32::MAX);
    assert!(matches!(
        ProposerMessage::parse(&b),
        Err(ProtoError::Invalid { .. })
    ));
    assert!(matches!(
        ProposerMessage::parse(&[]),
        Err(ProtoError::Empty)
    ));
    assert!(matches!(
        ProposerMessage::parse(&[b'x', 0, 0, 0, 0, 0, 0, 0]),
        Err(ProtoError::UnknownTag(0x78))
    ));
}
