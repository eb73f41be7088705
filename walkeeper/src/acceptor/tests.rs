use super::mem_store::MemStore;
use super::*;
use bytes::Bytes;

fn acceptor() -> Acceptor<MemStore> {
    let st = AcceptorState::new(
        TenantId::from_array([1; 16]),
        TimelineId::from_array([2; 16]),
    );
    Acceptor::new(st, MemStore::default(), 7)
}

fn greeting() -> ProposerGreeting {
    ProposerGreeting {
        protocol_version: PROTOCOL_VERSION,
        pg_version: 150002,
        proposer_id: [9; 16],
        system_id: 42,
        timeline_id: TimelineId::from_array([2; 16]),
        tenant_id: TenantId::from_array([1; 16]),
        tli: 1,
        wal_seg_size: 16 << 20,
    }
}

fn hist(v: &[(u64, u64)]) -> TermHistory {
    TermHistory(
        v.iter()
            .map(|&(term, lsn)| TermSwitch {
                term,
                lsn: Lsn(lsn),
            })
            .collect(),
    )
}

fn append(term: u64, begin: u64, data: &[u8], commit: u64) -> ProposerMessage {
    ProposerMessage::Append(AppendRequest {
        term,
        epoch_start_lsn: Lsn(0x100),
        begin_lsn: Lsn(begin),
        end_lsn: Lsn(begin + data.len() as u64),
        commit_lsn: Lsn(commit),
        truncate_lsn: Lsn(0),
        proposer_id: [9; 16],
        wal_data: Bytes::copy_from_slice(data),
    })
}

fn vote(a: &mut Acceptor<MemStore>, term: u64) -> VoteResponse {
    match a
        .process(&ProposerMessage::VoteRequest(VoteRequest {
            term,
            proposer_id: [9; 16],
        }))
        .unwrap()
    {
        Some(AcceptorMessage::VoteResponse(v)) => v,
        other => panic!("{other:?}"),
    }
}

fn elected(term: u64, start: u64, h: &[(u64, u64)]) -> ProposerMessage {
    ProposerMessage::Elected(ProposerElected {
        term,
        start_streaming_at: Lsn(start),
        term_history: hist(h),
        timeline_start_lsn: Lsn(0x100),
    })
}

#[test]
fn greeting_is_validated_and_adopted() {
    let mut a = acceptor();
    let r = a.process(&ProposerMessage::Greeting(greeting())).unwrap();
    assert_eq!(
        r,
        Some(AcceptorMessage::Greeting(AcceptorGreeting {
            term: 0,
            node_id: 7
        }))
    );
    assert_eq!(a.store.persisted.as_ref().unwrap().server.system_id, 42);
    let mut g = greeting();
    g.protocol_version = 99;
    assert!(matches!(
        a.process(&ProposerMessage::Greeting(g)),
        Err(AcceptorError::ProtocolVersion { got: 99 })
    ));
    let mut g = greeting();
    g.tenant_id = TenantId::from_array([3; 16]);
    assert!(matches!(
        a.process(&ProposerMessage::Greeting(g)),
        Err(AcceptorError::WrongTimeline { .. })
    ));
    let mut g = greeting();
    g.pg_version = 140005;
    assert!(matches!(
        a.process(&ProposerMessage::Greeting(g)),
        Err(AcceptorError::PgVersion { .. })
    ));
    let mut g = greeting();
    g.wal_seg_size = 1 << 20;
    assert!(a.process(&ProposerMessage::Greeting(g)).is_err());
}

#[test]
fn a_vote_is_persisted_before_the_reply_and_given_once_per_term() {
    let mut a = acceptor();
    let v = vote(&mut a, 3);
    assert!(v.vote_given);
    assert_eq!(a.store.persisted.as_ref().unwrap().term, 3);
    assert!(!vote(&mut a, 3).vote_given);
    assert!(!vote(&mut a, 2).vote_given);
    assert!(vote(&mut a, 4).vote_given);
}

#[test]
fn elected_appends_commit_and_fencing() {
    let mut a = acceptor();
    vote(&mut a, 1);
    // Appends before the election are refused.
    assert!(a.process(&append(1, 0x100, b"abc", 0)).is_err());
    a.process(&elected(1, 0x100, &[(1, 0x100)])).unwrap();
    assert_eq!(a.flush_lsn(), Lsn(0x100));
    let r = a.process(&append(1, 0x100, b"abcdef", 0x103)).unwrap();
    let Some(AcceptorMessage::AppendResponse(r)) = r else {
        panic!()
    };
    assert_eq!(
        (r.term, r.flush_lsn, r.commit_lsn),
        (1, Lsn(0x106), Lsn(0x103))
    );
    // A duplicate is harmless; a gap is refused.
    a.process(&append(1, 0x100, b"abcdef", 0x103)).unwrap();
    assert_eq!(a.flush_lsn(), Lsn(0x106));
    assert!(a.process(&append(1, 0x200, b"x", 0)).is_err());
    // Commit never passes the acceptor's own WAL.
    a.process(&append(1, 0x106, b"g", 0x500)).unwrap();
    assert_eq!(a.state.commit_lsn, Lsn(0x107));
    // A new term: the old proposer learns it is deposed.
    assert!(vote(&mut a, 2).vote_given);
    let r = a.process(&append(1, 0x107, b"h", 0)).unwrap();
    let Some(AcceptorMessage::AppendResponse(r)) = r else {
        panic!()
    };
    assert_eq!(r.term, 2);
    assert_eq!(a.flush_lsn(), Lsn(0x107));
}

#[test]
fn elected_truncates_divergent_wal_but_never_committed_wal() {
    let mut a = acceptor();
    vote(&mut a, 1);
    a.process(&elected(1, 0x100, &[(1, 0x100)])).unwrap();
    a.process(&append(1, 0x100, &[1; 32], 0x110)).unwrap();
    vote(&mut a, 2);
    // Truncating below the commit LSN is refused.
    assert!(a
        .process(&elected(2, 0x108, &[(1, 0x100), (2, 0x108)]))
        .is_err());
    a.process(&elected(2, 0x118, &[(1, 0x100), (2, 0x118)]))
        .unwrap();
    assert_eq!(a.flush_lsn(), Lsn(0x118));
    assert_eq!(a.state.history(), hist(&[(1, 0x100), (2, 0x118)]));
    // An election of an older term is refused; a malformed history too.
    assert!(a.process(&elected(1, 0x118, &[(1, 0x100)])).is_err());
    vote(&mut a, 3);
    assert!(a
        .process(&elected(3, 0x118, &[(1, 0x100), (2, 0x118)]))
        .is_err());
}

#[test]
fn a_repeated_proposer_elected_does_not_truncate_its_own_terms_wal() {
    // Found by the model checker: a duplicated (or delayed) ProposerElected
    // arriving after the proposer's WAL truncated it again, removing WAL
    // that a quorum had already acknowledged.
    let mut a = acceptor();
    a.process(&ProposerMessage::Greeting(greeting())).unwrap();
    vote(&mut a, 1);
    a.process(&elected(1, 0x100, &[(1, 0x100)])).unwrap();
    a.process(&append(1, 0x100, b"committed", 0x100)).unwrap();
    let flush = a.flush_lsn();
    assert_eq!(flush, Lsn(0x100 + 9));
    a.process(&elected(1, 0x100, &[(1, 0x100)])).unwrap();
    assert_eq!(
        a.flush_lsn(),
        flush,
        "the same term's election was applied twice"
    );
    assert_eq!(a.store.wal, b"committed");
}
