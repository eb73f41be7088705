//! A minimal HTTP/1.1 client for the API tests: one request per
//! connection, the whole reply read.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The `msg` of an error reply (asserting the error body shape).
    pub fn msg(&self) -> String {
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "error replies are JSON: {:?}",
            self.body
        );
        self.json()["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("no msg in {:?}", self.body))
            .to_string()
    }
}

pub fn request_raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let body = body.unwrap_or("");
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request_raw(addr, raw.as_bytes())
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None)
}

/// Send a request and assert its status; returns the reply.
#[track_caller]
pub fn expect(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
) -> Reply {
    let r = request(addr, method, path, body);
    assert_eq!(
        r.status, status,
        "{method} {path} {body:?}: expected {status}, got {} {:?}",
        r.status, r.body
    );
    r
}

/// A new tenant's id.
pub fn create_tenant(addr: SocketAddr) -> String {
    let r = expect(addr, "POST", "/v1/tenant", Some("{}"), 201);
    r.json()["id"].as_str().unwrap().to_string()
}
