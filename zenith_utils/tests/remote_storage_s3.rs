//! `remote_storage` against a real S3 HTTP server: moto's `moto_server`
//! (PyPI `moto[server]`, installed into the test venv by `make test`),
//! started on a loopback port with a bucket of its own.
//!
//! The server is `$ZENITH_MOTO_SERVER`, else `<repo>/.venv/bin/moto_server`.
//! `make test` sets the variable; a run without either says so and passes
//! without testing (a plain `cargo test` on a machine without the venv).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zenith_utils::remote_storage::{
    RemoteObject, RemotePath, RemoteStorage, RemoteStorageConfig, RemoteStorageError,
};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ZENITH_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "ZENITH_MOTO_SERVER={} does not exist",
            p.display()
        );
        return Some(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    p.exists().then_some(p)
}

fn start_moto() -> Option<Moto> {
    let Some(bin) = moto_server() else {
        eprintln!("moto_server not found (no $ZENITH_MOTO_SERVER, no .venv): S3 not tested");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, endpoint };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(moto)
}

fn config(moto: &Moto, bucket: &str, prefix: Option<&str>) -> RemoteStorageConfig {
    let mut c = RemoteStorageConfig::s3(bucket);
    c.prefix = prefix.map(str::to_string);
    c.region = Some("us-east-1".into());
    c.endpoint = Some(moto.endpoint.clone());
    c.access_key_id = Some("testing".into());
    c.secret_access_key = Some("testing".into());
    c.timeout = Duration::from_secs(10);
    c.max_retries = 2;
    c
}

/// CreateBucket, signed like any other request (moto checks nothing).
fn create_bucket(moto: &Moto, bucket: &str) {
    let resp = ureq::put(&format!("{}/{bucket}", moto.endpoint))
        .send_empty()
        .expect("creating the bucket");
    assert_eq!(resp.status().as_u16(), 200);
}

fn key(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

#[tokio::test]
async fn objects_in_s3_are_written_once_read_listed_and_deleted() {
    let Some(moto) = start_moto() else { return };
    create_bucket(&moto, "zenith-test");
    for prefix in [None, Some("pageserver-1")] {
        let rs = RemoteStorage::new(&config(&moto, "zenith-test", prefix)).unwrap();
        let a = key("tenants/t1/timelines/tl1/layer-a-00000001");
        let b = key("tenants/t1/timelines/tl1/index_part.json-00000001");
        rs.put_new(&a, Bytes::from(vec![7u8; 100_000]))
            .await
            .unwrap();
        rs.put_new(&b, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(rs.get(&a).await.unwrap().len(), 100_000);
        assert_eq!(
            rs.get_range(&a, 10..20).await.unwrap(),
            Bytes::from(vec![7u8; 10])
        );

        // Write once: the same bytes again pass, other bytes are refused.
        rs.put_new(&b, Bytes::from_static(b"{}")).await.unwrap();
        let err = rs
            .put_new(&b, Bytes::from_static(b"{\"x\":1}"))
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteStorageError::AlreadyExists(_)), "{err}");
        assert_eq!(rs.get(&b).await.unwrap(), Bytes::from_static(b"{}"));

        assert_eq!(
            rs.list(Some(&key("tenants/t1"))).await.unwrap(),
            vec![
                RemoteObject {
                    path: b.clone(),
                    size: 2
                },
                RemoteObject {
                    path: a.clone(),
                    size: 100_000
                },
            ],
            "sorted by key"
        );
        rs.delete_many(&[a.clone(), b.clone(), key("tenants/never")])
            .await
            .unwrap();
        assert!(matches!(
            rs.get(&a).await,
            Err(RemoteStorageError::NotFound(_))
        ));
        assert!(rs.list(None).await.unwrap().is_empty(), "prefix {prefix:?}");
    }
}

#[tokio::test]
async fn a_bucket_that_does_not_exist_is_a_clear_error() {
    let Some(moto) = start_moto() else { return };
    let rs = RemoteStorage::new(&config(&moto, "no-such-bucket", None)).unwrap();
    let err = rs
        .put_new(&key("k"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NoSuchBucket") || text.contains("not found"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stopped_server_is_retried_then_reported() {
    let Some(moto) = start_moto() else { return };
    create_bucket(&moto, "bucket-b");
    let mut conf = config(&moto, "bucket-b", None);
    conf.timeout = Duration::from_secs(2);
    let rs = RemoteStorage::new(&conf).unwrap();
    drop(moto);
    let err = rs.get(&key("k")).await.unwrap_err();
    assert!(
        matches!(
            err,
            RemoteStorageError::Failed { attempts: 3, .. }
                | RemoteStorageError::TimedOut { attempts: 3, .. }
        ),
        "{err}"
    );
}
