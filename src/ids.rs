//! Random identifiers that several parts hand out (push hints, test-push Call-IDs,
//! CallKit call UUIDs). A leaf module: it depends on nothing in the crate, so the
//! proxy and the admin API can both use it without depending on each other.

/// Random lower-case hex of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // the OS random source does not fail on the systems sipwake runs on; were it to,
    // the identifier would still be unique enough for a hint, just not secret
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// A random (version 4) UUID in upper case, as CallKit shows call UUIDs.
pub fn uuid_v4() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_upper(&mut buf)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_upper_case() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "A" | "B"), "{u}");
        assert_eq!(u, u.to_ascii_uppercase());
        assert_ne!(u, uuid_v4());
    }

    #[test]
    fn random_hex_has_two_digits_a_byte() {
        let h = random_hex(16);
        assert_eq!(h.len(), 32);
        assert!(h
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(h, random_hex(16));
    }
}
