//! The API over the local directory backend, the retry policy, and keys.

use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;

use super::*;

fn local(dir: &std::path::Path) -> RemoteStorage {
    RemoteStorage::new(&RemoteStorageConfig::local(dir.join("remote"))).unwrap()
}

fn key(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

#[tokio::test]
async fn objects_are_written_once_read_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let rs = local(dir.path());
    let a = key("tenants/t1/timelines/tl1/layer-a");
    let b = key("tenants/t1/timelines/tl1/index_part.json-00000001");
    rs.put_new(&a, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    rs.put_new(&b, Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(rs.get(&a).await.unwrap(), Bytes::from_static(b"0123456789"));
    assert_eq!(
        rs.get_range(&a, 2..5).await.unwrap(),
        Bytes::from_static(b"234")
    );

    // The same bytes again: a success; other bytes: refused, the object kept.
    rs.put_new(&a, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let err = rs
        .put_new(&a, Bytes::from_static(b"other"))
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteStorageError::AlreadyExists(_)), "{err}");
    assert_eq!(rs.get(&a).await.unwrap(), Bytes::from_static(b"0123456789"));

    let listed = rs.list(Some(&key("tenants/t1"))).await.unwrap();
    assert_eq!(
        listed,
        vec![
            RemoteObject {
                path: b.clone(),
                size: 2
            },
            RemoteObject {
                path: a.clone(),
                size: 10
            },
        ],
        "sorted by key"
    );
    // Prefixes match whole segments.
    assert!(rs.list(Some(&key("tenants/t"))).await.unwrap().is_empty());
    assert_eq!(rs.list(None).await.unwrap().len(), 2);

    rs.delete_many(&[a.clone(), key("tenants/never-written")])
        .await
        .unwrap();
    assert!(matches!(
        rs.get(&a).await,
        Err(RemoteStorageError::NotFound(_))
    ));
    assert_eq!(
        rs.list(None).await.unwrap(),
        vec![RemoteObject { path: b, size: 2 }]
    );
}

#[tokio::test]
async fn a_missing_object_is_not_found_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    let rs = local(dir.path());
    let started = Instant::now();
    let err = rs.get(&key("nothing-here")).await.unwrap_err();
    assert!(matches!(err, RemoteStorageError::NotFound(_)), "{err}");
    assert!(started.elapsed() < BASE_BACKOFF, "not retried");
}

fn generic(msg: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "test",
        source: msg.to_string().into(),
    }
}

fn quick(dir: &std::path::Path, max_retries: u32, timeout: Duration) -> RemoteStorage {
    let mut conf = RemoteStorageConfig::local(dir.join("remote"));
    conf.max_retries = max_retries;
    conf.timeout = timeout;
    RemoteStorage::new(&conf).unwrap()
}

#[tokio::test]
async fn errors_that_may_pass_are_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rs = quick(dir.path(), 3, Duration::from_secs(5));
    // Fails twice, then succeeds.
    let calls = AtomicU32::new(0);
    let v = rs
        .retry(Operation::Get, "get", "k", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(generic("503 Slow Down"))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
    assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 3));
    // Always fails: 1 + max_retries attempts, then the last error.
    let calls = AtomicU32::new(0);
    let err = rs
        .retry(Operation::Get, "get", "k", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(generic("connection reset"))
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(
        matches!(err, RemoteStorageError::Failed { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("connection reset"), "{err}");
}

#[tokio::test]
async fn refusals_fail_at_once_and_stalls_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let rs = quick(dir.path(), 2, Duration::from_millis(50));
    let calls = AtomicU32::new(0);
    let err = rs
        .retry(Operation::Put, "put", "k", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(object_store::Error::PermissionDenied {
                path: "k".into(),
                source: "403 Forbidden".to_string().into(),
            })
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(err, RemoteStorageError::Refused { .. }), "{err}");

    let calls = AtomicU32::new(0);
    let err = rs
        .retry(Operation::Get, "get", "k", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), object_store::Error>>().await
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(
        matches!(err, RemoteStorageError::TimedOut { attempts: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn requests_in_flight_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = RemoteStorageConfig::local(dir.path().join("remote"));
    conf.max_concurrency = 2;
    let rs = RemoteStorage::new(&conf).unwrap();
    let in_flight = AtomicU32::new(0);
    let peak = AtomicU32::new(0);
    let one = || {
        rs.retry(Operation::Get, "get", "k", || async {
            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, object_store::Error>(())
        })
    };
    futures_util::future::join_all((0..6).map(|_| one())).await;
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[test]
fn backoff_grows_with_jitter_and_is_capped() {
    for attempt in 1..40 {
        let cap = BASE_BACKOFF
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(MAX_BACKOFF);
        let b = backoff(attempt);
        assert!(
            b >= cap / 2 && b <= cap,
            "attempt {attempt}: {b:?} vs {cap:?}"
        );
    }
}

#[test]
fn keys_outside_the_character_set_or_shape_are_refused() {
    for bad in [
        "", "/a", "a/", "a//b", "a/../b", ".", "a b", "a\\b", "é", "a?b", "a%2Fb",
    ] {
        assert!(RemotePath::new(bad).is_err(), "{bad:?}");
    }
    let long = "a".repeat(MAX_KEY_LEN + 1);
    assert!(RemotePath::new(long).is_err());
    let k = key("tenants/0a1b/timelines/2c3d/000-FFF__0000-1000-00000002");
    assert_eq!(k.file_name(), "000-FFF__0000-1000-00000002");
    assert_eq!(k.join("x/y").unwrap().as_str(), format!("{k}/x/y"));
}

proptest! {
    /// Any string: an accepted key or an error, never a panic; an accepted
    /// key maps to the same object path and back, with or without a prefix.
    #[test]
    fn keys_round_trip_through_object_paths(s in "[a-zA-Z0-9._=/ -]{0,40}|\\PC{0,20}") {
        if let Ok(k) = RemotePath::new(s.clone()) {
            let dir = tempfile::tempdir().unwrap();
            let mut rs = local(dir.path());
            prop_assert_eq!(rs.remote_path(&rs.object_path(&k)), Some(k.clone()));
            rs.prefix = Some(ObjectPath::from("some/prefix"));
            prop_assert_eq!(rs.remote_path(&rs.object_path(&k)), Some(k.clone()));
            if !s.starts_with("some/prefix/") {
                prop_assert_eq!(rs.remote_path(&ObjectPath::from(s.as_str())), None);
            }
        }
    }
}
