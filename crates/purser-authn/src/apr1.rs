//! Apache's `$apr1$` hash: the MD5-based crypt of FreeBSD with Apache's own magic string.

use md5::{Digest, Md5};

use crate::crypt64::to64;

const MAGIC: &[u8] = b"$apr1$";

/// The 22-character digest part of `$apr1$salt$digest` (salt: at most 8 bytes, as stored).
pub(crate) fn digest(password: &[u8], salt: &[u8]) -> [u8; 22] {
    let salt = &salt[..salt.len().min(8)];

    let alternate: [u8; 16] = {
        let mut h = Md5::new();
        h.update(password);
        h.update(salt);
        h.update(password);
        h.finalize().into()
    };

    let mut h = Md5::new();
    h.update(password);
    h.update(MAGIC);
    h.update(salt);
    let mut remaining = password.len();
    while remaining > 0 {
        let n = remaining.min(16);
        h.update(&alternate[..n]);
        remaining -= n;
    }
    // The historical algorithm mixes in a zero byte or the first password byte per bit of the
    // length; it is kept as is because stored hashes depend on it.
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            h.update([0u8]);
        } else {
            h.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut current: [u8; 16] = h.finalize().into();

    for round in 0..1000 {
        let mut h = Md5::new();
        if round % 2 == 1 {
            h.update(password);
        } else {
            h.update(current);
        }
        if round % 3 != 0 {
            h.update(salt);
        }
        if round % 7 != 0 {
            h.update(password);
        }
        if round % 2 == 1 {
            h.update(current);
        } else {
            h.update(password);
        }
        current = h.finalize().into();
    }

    let f = current;
    let mut out = Vec::with_capacity(22);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        let v = (u32::from(f[a]) << 16) | (u32::from(f[b]) << 8) | u32::from(f[c]);
        to64(&mut out, v, 4);
    }
    to64(&mut out, u32::from(f[11]), 2);
    let mut digest = [0u8; 22];
    digest.copy_from_slice(&out);
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_known_vector() {
        // `openssl passwd -apr1 -salt saltsalt password`
        let d = digest(b"password", b"saltsalt");
        assert_eq!(std::str::from_utf8(&d).unwrap(), "yAAkm4libquA.ZWLHbSBq/");
    }

    #[test]
    fn empty_password_does_not_panic() {
        let _ = digest(b"", b"x");
        let _ = digest(b"", b"");
    }
}
