//! The `tls-server-end-point` hash of real and hand-made certificates.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::scram::*;

/// A minimal DER certificate: `SEQUENCE { SEQUENCE {}, SEQUENCE { OID },
/// BIT STRING }`, with the outer length in long form.
fn fake_cert(oid: &[u8]) -> Vec<u8> {
    let mut alg = vec![0x06, oid.len() as u8];
    alg.extend_from_slice(oid);
    let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
    body.extend_from_slice(&alg);
    body.extend_from_slice(&[0x03, 0x01, 0x00]);
    let mut cert = vec![0x30, 0x81, body.len() as u8];
    cert.extend_from_slice(&body);
    cert
}

#[test]
fn tls_server_end_point_hashes_like_the_signature() {
    let sha = |cert: &[u8], len| match len {
        28 => Sha224::digest(cert).to_vec(),
        32 => Sha256::digest(cert).to_vec(),
        48 => Sha384::digest(cert).to_vec(),
        _ => Sha512::digest(cert).to_vec(),
    };
    for (alg, len) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
        (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
        (&rcgen::PKCS_ED25519, 32),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der: &[u8] = cert.der();
        assert_eq!(tls_server_end_point(der), sha(der, len), "{alg:?}");
    }
    let rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    let ecdsa = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    for (oid, len) in [
        ([&rsa[..], &[4]].concat(), 32),  // md5WithRSAEncryption
        ([&rsa[..], &[5]].concat(), 32),  // sha1WithRSAEncryption
        ([&rsa[..], &[10]].concat(), 32), // RSASSA-PSS
        ([&rsa[..], &[11]].concat(), 32),
        ([&rsa[..], &[12]].concat(), 48),
        ([&rsa[..], &[13]].concat(), 64),
        ([&rsa[..], &[14]].concat(), 28),
        ([&ecdsa[..], &[1]].concat(), 28),
        ([&ecdsa[..], &[2]].concat(), 32),
        ([&ecdsa[..], &[3]].concat(), 48),
        ([&ecdsa[..], &[4]].concat(), 64),
        (vec![0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01], 32), // ecdsa-with-SHA1
        (vec![0x2b, 0x65, 0x70], 32),                         // Ed25519
    ] {
        let cert = fake_cert(&oid);
        assert_eq!(tls_server_end_point(&cert), sha(&cert, len), "{oid:x?}");
    }
    // Not a certificate: SHA-256.
    for junk in [&b""[..], b"\x30", b"\x30\x85\xff\xff\xff\xff\xff", b"hello"] {
        assert_eq!(tls_server_end_point(junk), sha(junk, 32));
    }
    let mut truncated = fake_cert(&[&rsa[..], &[13]].concat());
    truncated.truncate(truncated.len() - 4);
    assert_eq!(tls_server_end_point(&truncated), sha(&truncated, 32));
}
