//! The cryptography of SCRAM-SHA-256: PBKDF2, HMAC and SHA-256 over keys
//! of [`KEY_LEN`] bytes, the AuthMessage, nonces.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Length of StoredKey, ServerKey, ClientKey, proofs and signatures.
pub const KEY_LEN: usize = 32;

/// Random bytes in a nonce (base64: 24 characters), as PostgreSQL.
const RAW_NONCE_LEN: usize = 18;

/// SaltedPassword = PBKDF2-HMAC-SHA-256(Normalize(password), salt, i).
pub(super) fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let normalized = stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password));
    pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LEN>(normalized.as_bytes(), salt, iterations)
}

pub(super) fn hmac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    // HMAC takes keys of any length: this never fails.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(super) fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

pub(super) fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// AuthMessage = client-first-message-bare "," server-first-message ","
/// client-final-message-without-proof.
pub(super) fn auth_message(
    client_first_bare: &[u8],
    server_first: &[u8],
    without_proof: &[u8],
) -> Vec<u8> {
    [client_first_bare, server_first, without_proof].join(&b","[..])
}

/// 18 random bytes in base64, as PostgreSQL's nonces.
pub(super) fn random_nonce() -> String {
    let raw: [u8; RAW_NONCE_LEN] = rand::random();
    BASE64.encode(raw)
}
