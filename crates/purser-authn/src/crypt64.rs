//! The base-64 alphabet of Unix `crypt(3)` (`./0-9A-Za-z`), shared by the `$apr1$` and DES
//! crypt formats. It is not RFC 4648 base 64: the alphabet and the bit order differ.

const CRYPT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `b` is a character of the alphabet.
pub(crate) fn is_crypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// Encodes `n` 6-bit groups of `v`, lowest first (the `$apr1$` order).
pub(crate) fn to64(out: &mut Vec<u8>, mut v: u32, n: usize) {
    for _ in 0..n {
        out.push(CRYPT_ALPHABET[(v & 0x3f) as usize]);
        v >>= 6;
    }
}

/// Encodes 64 bits (one per byte), 6 at a time from the first (the DES crypt order): 11
/// characters, the last padded with two zero bits.
pub(crate) fn to64_msb_first(out: &mut Vec<u8>, bits: &[u8; 64]) {
    for chunk in 0..11 {
        let mut v = 0usize;
        for j in 0..6 {
            let i = chunk * 6 + j;
            v = (v << 1) | usize::from(if i < 64 { bits[i] } else { 0 });
        }
        out.push(CRYPT_ALPHABET[v]);
    }
}

/// The value of a character of the alphabet.
pub(crate) fn crypt_char_value(c: u8) -> Option<u8> {
    CRYPT_ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_character_round_trips() {
        for (i, &c) in CRYPT_ALPHABET.iter().enumerate() {
            assert!(is_crypt_char(c));
            assert_eq!(crypt_char_value(c), Some(i as u8));
            let mut out = Vec::new();
            to64(&mut out, i as u32, 1);
            assert_eq!(out, [c]);
        }
        for c in [b'!', b'$', b'+', b'=', b' '] {
            assert!(!is_crypt_char(c));
            assert_eq!(crypt_char_value(c), None);
        }
    }
}
