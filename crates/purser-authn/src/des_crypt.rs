//! Traditional Unix `crypt(3)`: 25 DES encryptions of a zero block, keyed by the first 8
//! password bytes, with the expansion table perturbed by a 12-bit salt. Written bit by bit
//! for clarity: it runs once per login, so speed does not matter, and the format is only
//! accepted so that old htpasswd files keep working (it is reported as weak at load).

use crate::crypt64::{crypt_char_value, to64_msb_first};

/// Initial permutation (FIPS 46-3), 1-based bit numbers.
const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, //
    62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8, //
    57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3, //
    61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];

/// Permutation after the S-boxes.
const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, //
    2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25,
];

/// Permuted choice 1: 56 key bits from the 64-bit key.
const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, //
    10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36, //
    63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, //
    14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];

/// Permuted choice 2: 48 subkey bits from the 56 rotated key bits.
const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, //
    23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2, //
    41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48, //
    44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];

const SHIFTS: [u8; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];

const SBOX: [[u8; 64]; 8] = [
    [
        14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, //
        0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8, //
        4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, //
        15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
    ],
    [
        15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, //
        3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5, //
        0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, //
        13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
    ],
    [
        10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, //
        13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1, //
        13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, //
        1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
    ],
    [
        7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, //
        13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9, //
        10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, //
        3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
    ],
    [
        2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, //
        14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6, //
        4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, //
        11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
    ],
    [
        12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, //
        10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8, //
        9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, //
        4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
    ],
    [
        4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, //
        13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6, //
        1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, //
        6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
    ],
    [
        13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, //
        1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2, //
        7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, //
        2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
    ],
];

/// The standard expansion E: 8 groups of 6 bits, each overlapping its neighbours by one bit.
/// Values are 0-based indexes into the 32-bit right half.
fn expansion() -> [u8; 48] {
    let mut e = [0u8; 48];
    for group in 0..8 {
        for j in 0..6 {
            e[group * 6 + j] = ((group * 4 + j + 31) % 32) as u8;
        }
    }
    e
}

/// 16 subkeys of 48 bits (one bit per byte).
fn key_schedule(key: &[u8; 64]) -> [[u8; 48]; 16] {
    let mut cd = [0u8; 56];
    for (i, &src) in PC1.iter().enumerate() {
        cd[i] = key[usize::from(src) - 1];
    }
    let mut subkeys = [[0u8; 48]; 16];
    for (round, &shift) in SHIFTS.iter().enumerate() {
        for _ in 0..shift {
            cd[..28].rotate_left(1);
            cd[28..].rotate_left(1);
        }
        for (i, &src) in PC2.iter().enumerate() {
            subkeys[round][i] = cd[usize::from(src) - 1];
        }
    }
    subkeys
}

/// One DES encryption of a 64-bit block (one bit per byte), with the given expansion table.
fn des_encrypt(block: &mut [u8; 64], subkeys: &[[u8; 48]; 16], e: &[u8; 48]) {
    let mut lr = [0u8; 64];
    for (i, &src) in IP.iter().enumerate() {
        lr[i] = block[usize::from(src) - 1];
    }
    let (mut l, mut r) = ([0u8; 32], [0u8; 32]);
    l.copy_from_slice(&lr[..32]);
    r.copy_from_slice(&lr[32..]);

    for subkey in subkeys {
        let mut x = [0u8; 48];
        for i in 0..48 {
            x[i] = r[usize::from(e[i])] ^ subkey[i];
        }
        let mut s_out = [0u8; 32];
        for (b, sbox) in SBOX.iter().enumerate() {
            let bits = &x[b * 6..b * 6 + 6];
            let row = (bits[0] << 1) | bits[5];
            let col = (bits[1] << 3) | (bits[2] << 2) | (bits[3] << 1) | bits[4];
            let v = sbox[usize::from(row * 16 + col)];
            for k in 0..4 {
                s_out[b * 4 + k] = (v >> (3 - k)) & 1;
            }
        }
        let mut f = [0u8; 32];
        for (i, &src) in P.iter().enumerate() {
            f[i] = s_out[usize::from(src) - 1];
        }
        let mut new_r = [0u8; 32];
        for i in 0..32 {
            new_r[i] = l[i] ^ f[i];
        }
        l = r;
        r = new_r;
    }

    // The last round's halves are swapped back, then the inverse initial permutation applies.
    let mut pre = [0u8; 64];
    pre[..32].copy_from_slice(&r);
    pre[32..].copy_from_slice(&l);
    for (i, &src) in IP.iter().enumerate() {
        block[usize::from(src) - 1] = pre[i];
    }
}

fn bytes_to_bits(bytes: &[u8; 8]) -> [u8; 64] {
    let mut bits = [0u8; 64];
    for (i, bit) in bits.iter_mut().enumerate() {
        *bit = (bytes[i / 8] >> (7 - i % 8)) & 1;
    }
    bits
}

/// The 13-character `crypt(3)` result for a password and a 2-character salt, `None` when the
/// salt is not in the crypt alphabet.
pub(crate) fn crypt(password: &[u8], salt: [u8; 2]) -> Option<[u8; 13]> {
    let s0 = crypt_char_value(salt[0])?;
    let s1 = crypt_char_value(salt[1])?;

    // Key: 7 bits of each of the first 8 bytes, shifted into the high bits of each key byte
    // (the low bit is DES parity and ignored by PC1). Bytes after the eighth do not count.
    let mut key_bytes = [0u8; 8];
    for (k, &p) in key_bytes.iter_mut().zip(password.iter()) {
        *k = p << 1;
    }
    let subkeys = key_schedule(&bytes_to_bits(&key_bytes));

    let mut e = expansion();
    for (i, s) in [s0, s1].into_iter().enumerate() {
        for j in 0..6 {
            if (s >> j) & 1 == 1 {
                e.swap(6 * i + j, 6 * i + j + 24);
            }
        }
    }

    let mut block = [0u8; 64];
    for _ in 0..25 {
        des_encrypt(&mut block, &subkeys, &e);
    }

    let mut out = Vec::with_capacity(13);
    out.push(salt[0]);
    out.push(salt[1]);
    to64_msb_first(&mut out, &block);
    let mut result = [0u8; 13];
    result.copy_from_slice(&out);
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_bits(hex: &str) -> [u8; 64] {
        let mut bytes = [0u8; 8];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        bytes_to_bits(&bytes)
    }

    #[test]
    fn plain_des_matches_the_textbook_vector() {
        let subkeys = key_schedule(&hex_bits("133457799BBCDFF1"));
        let mut block = hex_bits("0123456789ABCDEF");
        des_encrypt(&mut block, &subkeys, &expansion());
        assert_eq!(block, hex_bits("85E813540F0AB405"));
    }

    #[test]
    fn crypt_matches_htpasswd() {
        // `htpasswd -nbd u password` and `htpasswd -nbd u abcdefghijkl` (truncated to 8).
        assert_eq!(&crypt(b"password", *b"jv").unwrap(), b"jvdW/t1qVzB.g");
        assert_eq!(&crypt(b"abcdefghijkl", *b"ia").unwrap(), b"iaGFH00tQfhZs");
        assert_eq!(&crypt(b"abcdefgh", *b"ia").unwrap(), b"iaGFH00tQfhZs");
        assert!(crypt(b"x", *b"!a").is_none());
    }
}
