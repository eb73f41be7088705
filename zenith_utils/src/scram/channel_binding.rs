//! `tls-server-end-point` channel binding (RFC 5929): the hash of the
//! server's certificate that SCRAM-SHA-256-PLUS binds the exchange to.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// The `tls-server-end-point` channel-binding data of a server certificate
/// (RFC 5929 §4.1): the hash of its DER encoding with the hash function of
/// its signature algorithm, where MD5 and SHA-1 are replaced by SHA-256.
///
/// Recognized signature algorithms: RSA PKCS#1 v1.5 and ECDSA with SHA-224,
/// SHA-256, SHA-384 or SHA-512 (RSA/ECDSA with MD5 or SHA-1 give SHA-256).
/// Anything else (RSASSA-PSS, whose hash is in its parameters; Ed25519,
/// which has none; bytes that are not a certificate) gets SHA-256, which is
/// what certificates are signed with in practice. PostgreSQL (OpenSSL)
/// computes the same for every recognized algorithm.
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    match signature_hash(cert_der) {
        CertHash::Sha224 => Sha224::digest(cert_der).to_vec(),
        CertHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        CertHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        CertHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of the certificate's `signatureAlgorithm` (the second element
/// of `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
/// signatureValue }`), SHA-256 when unknown.
fn signature_hash(cert_der: &[u8]) -> CertHash {
    // 1.2.840.113549.1.1.x: sha{224,256,384,512}WithRSAEncryption are 14,
    // 11, 12, 13.
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    // 1.2.840.10045.4.3.x: ecdsa-with-SHA{224,256,384,512} are 1, 2, 3, 4.
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let oid = (|| {
        let (cert, _) = der_element(cert_der, 0x30)?;
        let (_tbs, rest) = der_element(cert, 0x30)?;
        let (alg, _) = der_element(rest, 0x30)?;
        let (oid, _) = der_element(alg, 0x06)?;
        Some(oid)
    })();
    let Some(oid) = oid else {
        return CertHash::Sha256;
    };
    if let Some(n) = oid.strip_prefix(RSA) {
        match n {
            [14] => CertHash::Sha224,
            [12] => CertHash::Sha384,
            [13] => CertHash::Sha512,
            _ => CertHash::Sha256,
        }
    } else if let Some(n) = oid.strip_prefix(ECDSA) {
        match n {
            [1] => CertHash::Sha224,
            [3] => CertHash::Sha384,
            [4] => CertHash::Sha512,
            _ => CertHash::Sha256,
        }
    } else {
        CertHash::Sha256
    }
}

/// One DER element with tag `tag` at the front of `input`: its contents
/// and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    (len <= rest.len()).then(|| rest.split_at(len))
}
