//! The SCRAM messages: mechanism names, GS2 headers, and the parsers of
//! the four messages of an exchange. Messages are split at ',' into
//! `<letter>=<value>` attributes; values cannot contain ','.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::crypto::KEY_LEN;
use super::error::ScramError;

/// The SASL mechanism without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The SASL mechanism with channel binding (`tls-server-end-point`).
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

const CHANNEL_BINDING_TYPE: &[u8] = b"tls-server-end-point";
pub(super) const GS2_NONE: &[u8] = b"n,,";
pub(super) const GS2_UNUSED: &[u8] = b"y,,";
pub(super) const GS2_TLS_SERVER_END_POINT: &[u8] = b"p=tls-server-end-point,,";
/// Longest server `e=` value kept in [`ScramError::ServerError`].
const MAX_SERVER_ERROR_LEN: usize = 64;

/// The gs2-cbind-flag of a client-first-message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    N,
    /// `y`: the client supports it but thinks the server does not.
    Y,
    /// `p=tls-server-end-point`: the client binds.
    P,
}

pub(super) struct ClientFirst<'a> {
    pub(super) flag: Gs2Flag,
    /// The client-first-message-bare (after the gs2 header).
    pub(super) bare: &'a [u8],
    pub(super) nonce: &'a [u8],
}

pub(super) struct ClientFinal<'a> {
    /// The base64 value of `c=`.
    pub(super) channel_binding: &'a [u8],
    pub(super) nonce: &'a [u8],
    pub(super) proof: [u8; KEY_LEN],
    pub(super) without_proof: &'a [u8],
}

pub(super) enum ServerFinal {
    Verifier([u8; KEY_LEN]),
    Error(String),
}

/// Rejects what PostgreSQL rejects before parsing: empty messages and NUL
/// bytes (the server reads them as C strings).
fn check_message(data: &[u8]) -> Result<(), ScramError> {
    if data.is_empty() {
        return Err(ScramError::Malformed("the message is empty"));
    }
    if data.contains(&0) {
        return Err(ScramError::Malformed("the message contains a NUL byte"));
    }
    Ok(())
}

/// The value of attribute `name` (`<name>=<value>`).
fn attr<'a>(
    part: Option<&'a [u8]>,
    name: u8,
    missing: &'static str,
) -> Result<&'a [u8], ScramError> {
    match part {
        Some([n, b'=', value @ ..]) if *n == name => Ok(value),
        _ => Err(ScramError::Malformed(missing)),
    }
}

/// Any attribute (an extension): a letter, `=`, the value.
fn any_attr(part: &[u8]) -> Result<(u8, &[u8]), ScramError> {
    match part {
        [n, b'=', value @ ..] if n.is_ascii_alphabetic() => Ok((*n, value)),
        [] => Err(ScramError::Malformed(
            "an attribute was expected, but the message ends",
        )),
        _ => Err(ScramError::Malformed(
            "an attribute is not of the form x=value",
        )),
    }
}

/// RFC 5802 `printable`: ASCII 0x21-0x7e except ','.
fn is_printable(s: &[u8]) -> bool {
    s.iter().all(|&c| (0x21..=0x7e).contains(&c) && c != b',')
}

/// A positive decimal number that fits in `u32`, digits only.
pub(super) fn parse_positive(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok().filter(|&n| n > 0)
}

/// `gs2-header client-first-message-bare`: `n,,n=<user>,r=<nonce>[,ext]`.
pub(super) fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    check_message(data)?;
    let mut header = data.splitn(3, |&c| c == b',');
    let flag = match header.next().unwrap_or_default() {
        b"n" => Gs2Flag::N,
        b"y" => Gs2Flag::Y,
        [b'p', b'=', name @ ..] if name == CHANNEL_BINDING_TYPE => Gs2Flag::P,
        [b'p', b'=', ..] => return Err(ScramError::UnsupportedChannelBinding),
        _ => return Err(ScramError::Malformed("unexpected channel-binding flag")),
    };
    match header.next() {
        Some([]) => {}
        Some([b'a', b'=', ..]) => {
            return Err(ScramError::Unsupported(
                "client uses authorization identity, but it is not supported",
            ))
        }
        Some(_) => {
            return Err(ScramError::Malformed(
                "unexpected attribute in the GS2 header",
            ))
        }
        None => return Err(ScramError::Malformed("the GS2 header is incomplete")),
    }
    let bare = header
        .next()
        .ok_or(ScramError::Malformed("the GS2 header is incomplete"))?;
    if bare.starts_with(b"m=") {
        return Err(ScramError::Unsupported(
            "client requires an unsupported SCRAM extension",
        ));
    }
    let mut parts = bare.split(|&c| c == b',');
    // The user name is ignored, as in PostgreSQL.
    attr(parts.next(), b'n', "expected the user name attribute \"n\"")?;
    let nonce = attr(parts.next(), b'r', "expected the nonce attribute \"r\"")?;
    if nonce.is_empty() || !is_printable(nonce) {
        return Err(ScramError::Malformed(
            "the nonce is empty or has non-printable characters",
        ));
    }
    for part in parts {
        any_attr(part)?;
    }
    Ok(ClientFirst { flag, bare, nonce })
}

/// `c=<cbind>,r=<nonce>[,ext...],p=<proof>`.
pub(super) fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, ScramError> {
    check_message(data)?;
    let mut parts = data.split(|&c| c == b',');
    let channel_binding = attr(
        parts.next(),
        b'c',
        "expected the channel-binding attribute \"c\"",
    )?;
    let nonce = attr(parts.next(), b'r', "expected the nonce attribute \"r\"")?;
    // Extensions up to the proof, which must be last.
    let proof = loop {
        let part = parts.next().ok_or(ScramError::Malformed(
            "the client-final-message has no proof",
        ))?;
        if let (b'p', proof) = any_attr(part)? {
            break proof;
        }
    };
    if parts.next().is_some() {
        return Err(ScramError::Malformed(
            "garbage found after the proof in the client-final-message",
        ));
    }
    let without_proof = &data[..data.len() - proof.len() - ",p=".len()];
    let proof = BASE64
        .decode(proof)
        .ok()
        .and_then(|p| <[u8; KEY_LEN]>::try_from(p).ok())
        .ok_or(ScramError::Malformed(
            "the proof in the client-final-message is not 32 bytes of base64",
        ))?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof,
    })
}

/// `r=<nonce>,s=<salt>,i=<iterations>[,ext]`; returns the nonce.
pub(super) fn parse_server_first(data: &[u8]) -> Result<&[u8], ScramError> {
    check_message(data)?;
    if data.starts_with(b"m=") {
        return Err(ScramError::Unsupported(
            "the server requires an unsupported SCRAM extension",
        ));
    }
    let mut parts = data.split(|&c| c == b',');
    let nonce = attr(parts.next(), b'r', "expected the nonce attribute \"r\"")?;
    if !is_printable(nonce) {
        return Err(ScramError::Malformed(
            "the nonce has non-printable characters",
        ));
    }
    let salt = attr(parts.next(), b's', "expected the salt attribute \"s\"")?;
    if BASE64.decode(salt).map_or(true, |s| s.is_empty()) {
        return Err(ScramError::Malformed("the salt is not valid base64"));
    }
    let iterations = attr(parts.next(), b'i', "expected the iteration count \"i\"")?;
    if parse_positive(iterations).is_none() {
        return Err(ScramError::Malformed(
            "the iteration count is not a positive number",
        ));
    }
    for part in parts {
        any_attr(part)?;
    }
    Ok(nonce)
}

/// `v=<signature>[,ext]` or `e=<error>[,ext]`.
pub(super) fn parse_server_final(data: &[u8]) -> Result<ServerFinal, ScramError> {
    check_message(data)?;
    let mut parts = data.split(|&c| c == b',');
    let result = match parts.next().map(any_attr).transpose()? {
        Some((b'v', v)) => BASE64
            .decode(v)
            .ok()
            .and_then(|v| <[u8; KEY_LEN]>::try_from(v).ok())
            .map(ServerFinal::Verifier)
            .ok_or(ScramError::Malformed(
                "the server signature is not 32 bytes of base64",
            ))?,
        Some((b'e', e)) => ServerFinal::Error(sanitize(e)),
        _ => {
            return Err(ScramError::Malformed(
                "expected the server signature \"v\" or an error \"e\"",
            ))
        }
    };
    for part in parts {
        any_attr(part)?;
    }
    Ok(result)
}

/// A peer's string for an error message: printable ASCII only (others
/// become '?'), at most [`MAX_SERVER_ERROR_LEN`] characters.
fn sanitize(s: &[u8]) -> String {
    s.iter()
        .take(MAX_SERVER_ERROR_LEN)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}
