//! Unguessable identifiers: 128 random bits from a CSPRNG seeded by the operating system, written in
//! lowercase Crockford base32 (26 characters, no padding, no look-alike letters).

use rand::RngCore;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Length of every id this module makes.
pub const ID_LEN: usize = 26;

/// A new random id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // ThreadRng is a CSPRNG seeded from the operating system and reseeded periodically.
    rand::rng().fill_bytes(&mut bytes);
    encode(u128::from_be_bytes(bytes))
}

/// A stable id derived from `seed`, for demo data that must keep its ids across re-seeding.
/// Not secret: whoever knows the seed knows the id.
pub fn derived_id(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    encode(u128::from_be_bytes(bytes))
}

fn encode(mut value: u128) -> String {
    // 26 base32 digits hold 130 bits; the top digit only ever carries the 128-bit value's
    // highest 3 bits.
    let mut out = [0u8; ID_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Whether `text` could be an id this module made (cheap rejection of junk before a lookup).
pub fn is_valid(text: &str) -> bool {
    text.len() == ID_LEN && text.bytes().all(in_alphabet)
}

/// Whether `b` is a digit of [`ALPHABET`]: every request for a product asks, so this is
/// arithmetic rather than a search of the alphabet.
fn in_alphabet(b: u8) -> bool {
    b.is_ascii_digit() || (b.is_ascii_lowercase() && !matches!(b, b'i' | b'l' | b'o' | b'u'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_test_agrees_with_the_alphabet() {
        for b in 0..=u8::MAX {
            assert_eq!(in_alphabet(b), ALPHABET.contains(&b), "byte {b}");
        }
    }

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert!(is_valid(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn derived_ids_are_stable() {
        assert_eq!(derived_id("SKU-1"), derived_id("SKU-1"));
        assert_ne!(derived_id("SKU-1"), derived_id("SKU-2"));
        assert!(is_valid(&derived_id("x")));
    }

    #[test]
    fn junk_is_not_an_id() {
        assert!(!is_valid("../etc/passwd"));
        assert!(!is_valid(&"u".repeat(ID_LEN)));
        assert!(!is_valid(""));
    }
}
