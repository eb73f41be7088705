//! Decompression of PostgreSQL's pglz format (`common/pg_lzcompress.c`),
//! used for full-page images when `wal_compression = pglz`.
//!
//! The stream is a sequence of control bytes, each followed by up to 8 items:
//! a literal byte (control bit 0) or a back-reference (bit 1) of 2 or 3 bytes
//! encoding length 3..=273 and offset 1..=4095. Decoding never reads or writes
//! out of bounds; malformed input is an error.

/// A pglz stream that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PglzError {
    #[error("compressed data is truncated")]
    Truncated,
    #[error("back-reference offset {offset} at output position {pos} points before the start")]
    BadOffset { offset: usize, pos: usize },
    #[error("decompressed data does not fill the output ({got} of {want} bytes)")]
    Short { got: usize, want: usize },
    #[error("{0} bytes of compressed data left over")]
    Trailing(usize),
}

/// Decompress `src` into `dst`, which must be exactly the raw size. Returns
/// the number of bytes written (always `dst.len()` on success).
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<usize, PglzError> {
    let mut sp = 0usize;
    let mut dp = 0usize;
    let dlen = dst.len();
    while sp < src.len() && dp < dlen {
        let ctrl = src[sp];
        sp += 1;
        for bit in 0..8 {
            if sp >= src.len() || dp >= dlen {
                break;
            }
            if ctrl & (1 << bit) != 0 {
                if sp + 1 >= src.len() {
                    return Err(PglzError::Truncated);
                }
                let b0 = src[sp] as usize;
                let b1 = src[sp + 1] as usize;
                sp += 2;
                let mut len = (b0 & 0x0f) + 3;
                let off = ((b0 & 0xf0) << 4) | b1;
                if len == 18 {
                    if sp >= src.len() {
                        return Err(PglzError::Truncated);
                    }
                    len += src[sp] as usize;
                    sp += 1;
                }
                if off == 0 || off > dp {
                    return Err(PglzError::BadOffset {
                        offset: off,
                        pos: dp,
                    });
                }
                let len = len.min(dlen - dp);
                // Copies may overlap (off < len): copy byte by byte.
                for i in 0..len {
                    dst[dp + i] = dst[dp + i - off];
                }
                dp += len;
            } else {
                dst[dp] = src[sp];
                dp += 1;
                sp += 1;
            }
        }
    }
    if dp != dlen {
        return Err(PglzError::Short {
            got: dp,
            want: dlen,
        });
    }
    if sp != src.len() {
        return Err(PglzError::Trailing(src.len() - sp));
    }
    Ok(dp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literals_and_backrefs() {
        // "abcabcabcabc": 3 literals, then a back-reference of length 9, offset 3.
        let src = [0b0000_1000u8, b'a', b'b', b'c', 0x06, 0x03];
        let mut dst = [0u8; 12];
        assert_eq!(decompress(&src, &mut dst), Ok(12));
        assert_eq!(&dst, b"abcabcabcabc");
    }

    #[test]
    fn long_match_uses_extra_byte() {
        // 1 literal then length 18 + 100 = 118, offset 1.
        let src = [0b0000_0010u8, b'x', 0x0f, 0x01, 100];
        let mut dst = [0u8; 119];
        assert_eq!(decompress(&src, &mut dst), Ok(119));
        assert!(dst.iter().all(|&c| c == b'x'));
    }

    #[test]
    fn rejects_bad_input() {
        let mut dst = [0u8; 8];
        assert!(matches!(
            decompress(&[0x01, 0x00, 0x01], &mut dst),
            Err(PglzError::BadOffset { .. })
        ));
        assert_eq!(
            decompress(&[0x01, 0x00], &mut dst),
            Err(PglzError::Truncated)
        );
        assert!(matches!(
            decompress(&[0x00, b'a'], &mut dst),
            Err(PglzError::Short { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(src in proptest::collection::vec(any::<u8>(), 0..300), n in 0usize..600) {
            let mut dst = vec![0u8; n];
            let _ = decompress(&src, &mut dst);
        }
    }
}
