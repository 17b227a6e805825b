//! Sealing and opening one message body under a data key.
//!
//! Envelope v1, the bytes stored in place of a body:
//!
//! ```text
//! [0x01] [data key id: u64 BE] [nonce: 12 random bytes] [AES-256-GCM ciphertext] [tag: 16 bytes]
//! ```
//!
//! The associated data binds the ciphertext to its row and to its own header:
//!
//! ```text
//! [0x01] [data key id: u64 BE] [conversation length: u64 BE] [conversation: UTF-8]
//! [seq: u64 BE] [sender: u64 BE] [msg_id: u64 BE]
//! ```
//!
//! Every field has a fixed width or a length prefix, so two different rows never encode to the
//! same bytes. This layout is a storage format: changing it makes every stored body unreadable,
//! so a different one needs a new version byte (and `open` keeping v1).
//!
//! Why a random nonce is safe here: a data key is rotated every `KEY_ROTATION_DAYS`, and the
//! birthday bound for 96-bit random nonces (2^32 messages per key for a 2^-32 collision chance)
//! is far above what one key seals between rotations at this service's rates.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::Bytes;
use rand::RngCore;
use zeroize::Zeroizing;

/// The first byte of every v1 envelope.
const VERSION_1: u8 = 0x01;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Version, key id, nonce: everything before the ciphertext.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// The shortest well-formed envelope: an empty body's.
pub const MIN_SEALED_LEN: usize = HEADER_LEN + TAG_LEN;
/// What sealing adds to a body's length.
pub const OVERHEAD: usize = MIN_SEALED_LEN;

/// A plaintext data key (AES-256), only in memory.
///
/// It holds the expanded AES key schedule, not the 32 bytes it was made from (those are wiped
/// when [`DataKey::new`] returns); the schedule and the GHASH key are wiped when it is dropped.
/// `Debug` prints the id only.
pub struct DataKey {
    id: u64,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// The key with this id (the `data_keys` row it was unwrapped from).
    pub fn new(id: u64, key: Zeroizing<[u8; 32]>) -> Self {
        // generic-array's `From<&[u8; N]>`: no copy of the key (and its `from_slice` is deprecated).
        let cipher = Aes256Gcm::new((&*key).into());
        Self { id, cipher }
    }

    /// The id that sealed bodies name, to find this key again.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What a body's ciphertext is bound to: moving it to another row fails to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyAad<'a> {
    pub conversation: &'a str,
    pub seq: u64,
    pub sender: u64,
    pub msg_id: u64,
}

impl BodyAad<'_> {
    /// The associated data for an envelope with this header (see the module docs).
    fn encode(&self, key_id: u64) -> Vec<u8> {
        let conversation = self.conversation.as_bytes();
        let mut aad = Vec::with_capacity(1 + KEY_ID_LEN + 8 + conversation.len() + 3 * 8);
        aad.push(VERSION_1);
        aad.extend_from_slice(&key_id.to_be_bytes());
        aad.extend_from_slice(&(conversation.len() as u64).to_be_bytes());
        aad.extend_from_slice(conversation);
        aad.extend_from_slice(&self.seq.to_be_bytes());
        aad.extend_from_slice(&self.sender.to_be_bytes());
        aad.extend_from_slice(&self.msg_id.to_be_bytes());
        aad
    }
}

/// Why a sealed body did not open. The messages never contain key material or body bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Not a v1 envelope: too short, or an unknown version byte.
    #[error("sealed body is malformed: too short or an unknown envelope version")]
    Malformed,
    /// Authentication failed: the body was changed, moved to another row, or this is not the key
    /// that sealed it.
    #[error("sealed body failed authentication: tampered, moved from another row, or the wrong data key")]
    Tampered,
}

/// Encrypts `plaintext` under `key`, bound to the row `aad` names (envelope v1, a fresh random nonce).
pub fn seal(key: &DataKey, aad: &BodyAad<'_>, plaintext: &[u8]) -> Bytes {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);

    let mut sealed = Vec::with_capacity(OVERHEAD + plaintext.len());
    sealed.push(VERSION_1);
    sealed.extend_from_slice(&key.id.to_be_bytes());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(plaintext);
    let tag = key
        .cipher
        .encrypt_in_place_detached((&nonce).into(), &aad.encode(key.id), &mut sealed[HEADER_LEN..])
        // aes-gcm refuses only plaintexts over 64 GiB; bodies are limited to far less.
        .expect("a message body is within AES-GCM's length limit");
    sealed.extend_from_slice(&tag);
    Bytes::from(sealed)
}

/// Decrypts a body sealed by [`seal`] under `key` for the row `aad` names.
pub fn open(key: &DataKey, aad: &BodyAad<'_>, sealed: &[u8]) -> Result<Bytes, CryptoError> {
    let envelope = Envelope::parse(sealed)?;
    if envelope.key_id != key.id {
        // A flipped bit in the key id lands here too: the header is authenticated as a whole.
        return Err(CryptoError::Tampered);
    }
    let mut plaintext = envelope.ciphertext.to_vec();
    key.cipher
        .decrypt_in_place_detached(
            (&envelope.nonce).into(),
            &aad.encode(key.id),
            &mut plaintext,
            (&envelope.tag).into(),
        )
        // aes-gcm checks the tag before decrypting: on failure `plaintext` still holds ciphertext.
        .map_err(|_| CryptoError::Tampered)?;
    Ok(Bytes::from(plaintext))
}

/// The data key id a sealed body names (to find the key before opening).
pub fn sealed_key_id(sealed: &[u8]) -> Result<u64, CryptoError> {
    Envelope::parse(sealed).map(|envelope| envelope.key_id)
}

/// A v1 envelope's parts, borrowed from the stored bytes.
struct Envelope<'a> {
    key_id: u64,
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    tag: [u8; TAG_LEN],
}

impl<'a> Envelope<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self, CryptoError> {
        if sealed.len() < MIN_SEALED_LEN || sealed[0] != VERSION_1 {
            return Err(CryptoError::Malformed);
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let key_id = u64::from_be_bytes(header[1..1 + KEY_ID_LEN].try_into().expect("8 bytes"));
        let nonce = header[1 + KEY_ID_LEN..].try_into().expect("12 bytes");
        let tag = tag.try_into().expect("16 bytes");
        Ok(Self { key_id, nonce, ciphertext, tag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, byte: u8) -> DataKey {
        DataKey::new(id, Zeroizing::new([byte; 32]))
    }

    const ROW: BodyAad<'static> = BodyAad { conversation: "p:1:2", seq: 7, sender: 1, msg_id: 99 };

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_empty_small_and_large_bodies() {
        let key = key(3, 0x42);
        for len in [0, 100, 10_000] {
            let plaintext = body(len);
            let sealed = seal(&key, &ROW, &plaintext);
            assert_eq!(sealed.len(), len + OVERHEAD);
            assert_eq!(sealed[0], VERSION_1);
            assert_eq!(open(&key, &ROW, &sealed).unwrap(), plaintext, "{len} bytes");
        }
    }

    #[test]
    fn the_ciphertext_does_not_contain_the_body() {
        let key = key(3, 0x42);
        let plaintext = b"a body that must not be stored in clear";
        let sealed = seal(&key, &ROW, plaintext);
        assert!(!sealed.windows(8).any(|w| plaintext.windows(8).any(|p| p == w)));
    }

    #[test]
    fn another_rows_aad_is_tampered() {
        let key = key(3, 0x42);
        let sealed = seal(&key, &ROW, b"hello");
        let others = [
            BodyAad { conversation: "p:1:3", ..ROW },
            BodyAad { conversation: "", ..ROW },
            BodyAad { seq: 8, ..ROW },
            BodyAad { sender: 2, ..ROW },
            BodyAad { msg_id: 100, ..ROW },
        ];
        for other in others {
            assert_eq!(open(&key, &other, &sealed), Err(CryptoError::Tampered), "{other:?}");
        }
    }

    #[test]
    fn the_aad_encoding_is_unambiguous() {
        // The conversation's length prefix keeps a longer conversation from absorbing the seq.
        let a = BodyAad { conversation: "g:1", seq: 0x3100_0000_0000_0000, sender: 5, msg_id: 6 };
        let b = BodyAad { conversation: "g:11", seq: 0, sender: 5, msg_id: 6 };
        assert_ne!(a.encode(1), b.encode(1));
        let key = key(1, 0x42);
        assert_eq!(open(&key, &b, &seal(&key, &a, b"x")), Err(CryptoError::Tampered));
    }

    #[test]
    fn another_key_is_tampered() {
        let sealed = seal(&key(3, 0x42), &ROW, b"hello");
        // Same id, other material (a corrupted unwrap, or a key from another deployment).
        assert_eq!(open(&key(3, 0x43), &ROW, &sealed), Err(CryptoError::Tampered));
        // Another id.
        assert_eq!(open(&key(4, 0x42), &ROW, &sealed), Err(CryptoError::Tampered));
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let key = key(3, 0x42);
        for len in [0, 100] {
            let sealed = seal(&key, &ROW, &body(len)).to_vec();
            for bit in 0..sealed.len() * 8 {
                let mut flipped = sealed.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let expected = if bit < 8 { CryptoError::Malformed } else { CryptoError::Tampered };
                assert_eq!(open(&key, &ROW, &flipped), Err(expected), "{len}-byte body, bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_or_unknown_versions_are_malformed() {
        let key = key(3, 0x42);
        let sealed = seal(&key, &ROW, b"hello");
        for len in 0..MIN_SEALED_LEN {
            assert_eq!(open(&key, &ROW, &sealed[..len]), Err(CryptoError::Malformed), "{len} bytes");
            assert_eq!(sealed_key_id(&sealed[..len]), Err(CryptoError::Malformed));
        }
        // Longer than the minimum but cut short: the tag is wrong.
        assert_eq!(open(&key, &ROW, &sealed[..sealed.len() - 1]), Err(CryptoError::Tampered));
        for version in [0x00, 0x02, 0xff] {
            let mut other = sealed.to_vec();
            other[0] = version;
            assert_eq!(open(&key, &ROW, &other), Err(CryptoError::Malformed));
            assert_eq!(sealed_key_id(&other), Err(CryptoError::Malformed));
        }
    }

    #[test]
    fn two_seals_of_one_body_differ() {
        let key = key(3, 0x42);
        let a = seal(&key, &ROW, b"same body");
        let b = seal(&key, &ROW, b"same body");
        assert_ne!(a, b);
        assert_ne!(a[1 + KEY_ID_LEN..HEADER_LEN], b[1 + KEY_ID_LEN..HEADER_LEN], "nonces");
    }

    #[test]
    fn sealed_key_id_names_the_sealing_key() {
        let sealed = seal(&key(0x0102_0304_0506_0708, 0x42), &ROW, b"hello");
        assert_eq!(sealed_key_id(&sealed), Ok(0x0102_0304_0506_0708));
        assert_eq!(sealed[1..9], [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn debug_shows_the_id_only() {
        let key = key(3, 0x42);
        assert_eq!(format!("{key:?}"), "DataKey { id: 3, .. }");
    }
}
