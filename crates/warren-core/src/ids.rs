//! Random identifiers and secrets.
//!
//! Sandbox ids end up in URL paths unescaped (Python SDK) and in host names
//! (`49983-<id>.<domain>`), so they are 20 characters of `[a-z0-9]`.

use rand::Rng as _;
use rand::distributions::Alphanumeric;

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A new sandbox id: 20 characters of `[a-z0-9]`.
pub fn sandbox_id() -> String {
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| char::from(ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())]))
        .collect()
}

/// A random alphanumeric secret (about 5.95 bits per character).
pub fn secret(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill(bytes.as_mut_slice());
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn sandbox_ids_are_dns_safe_and_distinct() {
        let a = super::sandbox_id();
        let b = super::sandbox_id();
        assert_eq!(a.len(), 20);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, b);
    }
}
