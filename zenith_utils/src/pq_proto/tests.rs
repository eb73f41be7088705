//! Tests of the wire-protocol codec: exact byte vectors as PostgreSQL and
//! libpq send them, round trips, and properties over arbitrary input.
mod backend;
mod frontend;
mod properties;
mod startup;

use bytes::BytesMut;

use super::*;

fn buf(bytes: &[u8]) -> BytesMut {
    BytesMut::from(bytes)
}

/// `tag, int32 len, body` with the length computed, for expected values.
fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn be_bytes(msg: BeMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    msg.write(&mut out).unwrap();
    out.to_vec()
}

/// Splits serialized backend messages, checking that each length word
/// frames its message exactly.
fn split_be_messages(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 5, "truncated header");
        let tag = data[0];
        let len = i32::from_be_bytes(data[1..5].try_into().unwrap());
        assert!(len >= 4);
        let end = 1 + len as usize;
        assert!(data.len() >= end, "length {len} runs past the data");
        out.push((tag, data[5..end].to_vec()));
        data = &data[end..];
    }
    out
}
