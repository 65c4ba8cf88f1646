//! Envelope encryption: every value gets a fresh random 256-bit data key (DEK) and is sealed
//! with AES-256-GCM under it; the DEK itself is sealed (wrapped) by a key-encryption key (KEK),
//! also AES-256-GCM. Only wrapped DEKs depend on the master key, so rotating it re-wraps DEKs
//! and never touches ciphertexts.
//!
//! Associated data binds both the value and its wrapped DEK to where they belong (the caller
//! passes, say, the tenant and the secret's name through [`aad`]): a row copied to another
//! tenant or name fails to open. Nonces are 96-bit random values. 96 bits is GCM's native
//! nonce size: the counter block is the nonce plus a 32-bit counter, whereas any other length
//! (a 128-bit "IV" as CBC habits suggest) is first hashed with GHASH, which loses that
//! structure and makes collisions harder to reason about. Each DEK encrypts exactly one value,
//! so its nonce can never repeat; a KEK wraps one DEK per value and NIST SP 800-38D's bound
//! for random 96-bit nonces (2^32 messages per key) is far above any key's lifetime here.
//!
//! Key material lives in [`Zeroizing`] buffers and is wiped when dropped. [`KeyEncryptionKey`]
//! is a trait so a cloud KMS can stand beside the local key ([`LocalKek`]).

use std::sync::Arc;

use aes::cipher::BlockEncrypt;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;

/// The algorithm stored with every sealed value.
pub const ALGORITHM: &str = "AES-256-GCM";
/// The stored format's version.
pub const FORMAT_VERSION: i32 = 1;
const NONCE_LEN: usize = 12;

/// A 256-bit key, wiped on drop.
pub type Key = Zeroizing<[u8; 32]>;

/// Associated data from parts, each length-prefixed so `("ab", "c")` and `("a", "bc")` differ.
pub fn aad(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// One AES-256-GCM output, the tag kept apart from the ciphertext as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// 96-bit nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The ciphertext without its tag.
    pub ciphertext: Vec<u8>,
    /// The 128-bit tag.
    pub tag: [u8; 16],
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

fn seal_with(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error> {
    let nonce = random::<NONCE_LEN>();
    let mut ciphertext = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut ciphertext)
        .map_err(|_| Error::Decrypt("encryption failed"))?;
    Ok(Sealed {
        nonce,
        ciphertext,
        tag: tag.into(),
    })
}

fn open_with(cipher: &Aes256Gcm, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut plain = Zeroizing::new(sealed.ciphertext.clone());
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&sealed.nonce),
            aad,
            &mut plain,
            (&sealed.tag).into(),
        )
        .map_err(|_| Error::Decrypt("the data, its key or its context does not match"))?;
    Ok(plain)
}

/// Wraps and unwraps data keys. The local master key is one implementation; a KMS is another.
pub trait KeyEncryptionKey: Send + Sync {
    /// A short id derived from the key, stored with every DEK it wraps.
    fn id(&self) -> &str;
    /// Seals `dek` bound to `aad`.
    fn wrap(&self, dek: &[u8; 32], aad: &[u8]) -> Result<Sealed, Error>;
    /// Opens a wrapped DEK.
    fn unwrap(&self, wrapped: &Sealed, aad: &[u8]) -> Result<Key, Error>;
}

/// A master key held in this process (its expanded AES key schedule too, wiped on drop).
pub struct LocalKek {
    id: String,
    key: Key,
    cipher: Aes256Gcm,
}

impl LocalKek {
    /// A key from 64 hex characters. Refuses other lengths, non-hex and keys of one repeated
    /// byte (all zeros, a placeholder).
    pub fn from_hex(hex_key: &str) -> Result<LocalKek, Error> {
        let hex_key = hex_key.trim();
        if hex_key.len() != 64 {
            return Err(Error::MasterKey(format!(
                "must be 64 hex characters (256 bits), not {}",
                hex_key.len()
            )));
        }
        let mut key: Key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key, key.as_mut_slice())
            .map_err(|_| Error::MasterKey("must be hex (0-9, a-f)".into()))?;
        if key.iter().all(|&b| b == key[0]) {
            return Err(Error::MasterKey(
                "is one byte repeated: not a real key".into(),
            ));
        }
        Ok(LocalKek::from_key(key))
    }

    /// A fresh random key (development only) and its hex form, for writing to a file.
    pub fn generate() -> (LocalKek, Zeroizing<String>) {
        let key: Key = Zeroizing::new(random::<32>());
        let hex_key = Zeroizing::new(hex::encode(key.as_slice()));
        (LocalKek::from_key(key), hex_key)
    }

    fn from_key(key: Key) -> LocalKek {
        let mut hasher = Sha256::new();
        hasher.update(b"mamba kek id v1");
        hasher.update(key.as_slice());
        let id = hex::encode(&hasher.finalize()[..6]);
        let cipher = cipher(&key);
        LocalKek { id, key, cipher }
    }

    /// The key check value: the first 6 bytes of AES-256 of a zero block under the key, in
    /// hex. Stored beside the id, it tells a wrong key from a right one without any data.
    pub fn check_value(&self) -> String {
        let cipher = aes::Aes256::new_from_slice(self.key.as_slice()).expect("32-byte key");
        let mut block = aes::Block::default();
        cipher.encrypt_block(&mut block);
        hex::encode(&block[..6])
    }
}

impl KeyEncryptionKey for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, dek: &[u8; 32], aad: &[u8]) -> Result<Sealed, Error> {
        seal_with(&self.cipher, dek, aad)
    }

    fn unwrap(&self, wrapped: &Sealed, aad: &[u8]) -> Result<Key, Error> {
        let opened = open_with(&self.cipher, wrapped, aad)?;
        let mut dek: Key = Zeroizing::new([0u8; 32]);
        if opened.len() != 32 {
            return Err(Error::Decrypt("a wrapped key of the wrong length"));
        }
        dek.copy_from_slice(&opened);
        Ok(dek)
    }
}

/// A value sealed under its own DEK, with that DEK wrapped: everything stored per value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// [`FORMAT_VERSION`].
    pub version: i32,
    /// [`ALGORITHM`].
    pub algorithm: String,
    /// The id of the KEK that wrapped the DEK.
    pub kek_id: String,
    /// The value.
    pub data: Sealed,
    /// The DEK, wrapped.
    pub dek: Sealed,
}

/// The active KEK, which seals new values, and retired ones, which still open old values.
#[derive(Clone)]
pub struct KeyRing {
    active: Arc<dyn KeyEncryptionKey>,
    retired: Vec<Arc<dyn KeyEncryptionKey>>,
}

impl KeyRing {
    /// A ring; `retired` keys only open.
    pub fn new(
        active: Arc<dyn KeyEncryptionKey>,
        retired: Vec<Arc<dyn KeyEncryptionKey>>,
    ) -> KeyRing {
        KeyRing { active, retired }
    }

    /// The active key's id.
    pub fn active_id(&self) -> &str {
        self.active.id()
    }

    /// Whether a key with `id` is in the ring.
    pub fn has(&self, id: &str) -> bool {
        self.key(id).is_some()
    }

    fn key(&self, id: &str) -> Option<&Arc<dyn KeyEncryptionKey>> {
        std::iter::once(&self.active)
            .chain(&self.retired)
            .find(|k| k.id() == id)
    }

    /// Seals `plaintext` under a fresh DEK wrapped by the active key, both bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Envelope, Error> {
        let dek: Key = Zeroizing::new(random::<32>());
        Ok(Envelope {
            version: FORMAT_VERSION,
            algorithm: ALGORITHM.to_owned(),
            kek_id: self.active.id().to_owned(),
            data: seal_with(&cipher(&dek), plaintext, aad)?,
            dek: self.active.wrap(&dek, aad)?,
        })
    }

    /// Opens an envelope sealed with `aad`. Any change to any stored part, or another `aad`,
    /// is an error.
    pub fn open(&self, envelope: &Envelope, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if envelope.version != FORMAT_VERSION || envelope.algorithm != ALGORITHM {
            return Err(Error::Decrypt("an unknown format or algorithm"));
        }
        let kek = self.key(&envelope.kek_id).ok_or(Error::Decrypt(
            "sealed under a master key that is not configured",
        ))?;
        let dek = kek.unwrap(&envelope.dek, aad)?;
        open_with(&cipher(&dek), &envelope.data, aad)
    }

    /// The envelope with its DEK re-wrapped under the active key (the ciphertext unchanged),
    /// or `None` when it already is.
    pub fn rewrap(&self, envelope: &Envelope, aad: &[u8]) -> Result<Option<Envelope>, Error> {
        if envelope.kek_id == self.active.id() {
            return Ok(None);
        }
        let kek = self.key(&envelope.kek_id).ok_or(Error::Decrypt(
            "sealed under a master key that is not configured",
        ))?;
        let dek = kek.unwrap(&envelope.dek, aad)?;
        Ok(Some(Envelope {
            kek_id: self.active.id().to_owned(),
            dek: self.active.wrap(&dek, aad)?,
            ..envelope.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (KeyRing, Arc<LocalKek>) {
        let (kek, _) = LocalKek::generate();
        let kek = Arc::new(kek);
        (KeyRing::new(kek.clone(), vec![]), kek)
    }

    #[test]
    fn round_trip_and_fresh_keys_per_value() {
        let (ring, _) = ring();
        let ad = aad(&["tenant-a", "db_password"]);
        let one = ring.seal(b"hunter2", &ad).unwrap();
        let two = ring.seal(b"hunter2", &ad).unwrap();
        assert_ne!(one.data, two.data, "a fresh DEK and nonce per value");
        assert_eq!(ring.open(&one, &ad).unwrap().as_slice(), b"hunter2");
        assert_eq!(
            ring.open(&ring.seal(b"", &ad).unwrap(), &ad).unwrap().len(),
            0
        );
    }

    #[test]
    fn any_tampering_fails() {
        let (ring, _) = ring();
        let ad = aad(&["tenant-a", "db_password"]);
        let good = ring.seal(b"the value", &ad).unwrap();
        let mut cases: Vec<(&str, Envelope)> = Vec::new();
        let mut e = good.clone();
        e.data.ciphertext[0] ^= 1;
        cases.push(("ciphertext", e));
        let mut e = good.clone();
        e.data.tag[3] ^= 0x80;
        cases.push(("tag", e));
        let mut e = good.clone();
        e.data.nonce[11] ^= 1;
        cases.push(("nonce", e));
        let mut e = good.clone();
        e.dek.ciphertext[5] ^= 1;
        cases.push(("wrapped DEK", e));
        let mut e = good.clone();
        e.dek.tag[0] ^= 1;
        cases.push(("DEK tag", e));
        let mut e = good.clone();
        e.dek.nonce[0] ^= 1;
        cases.push(("DEK nonce", e));
        let mut e = good.clone();
        e.kek_id = "000000000000".into();
        cases.push(("KEK id", e));
        let mut e = good.clone();
        e.version = 2;
        cases.push(("version", e));
        for (what, envelope) in cases {
            assert!(
                matches!(ring.open(&envelope, &ad), Err(Error::Decrypt(_))),
                "tampered {what} must fail"
            );
        }
        for other in [
            aad(&["tenant-b", "db_password"]),
            aad(&["tenant-a", "other"]),
            aad(&["tenant-adb", "_password"]),
        ] {
            assert!(ring.open(&good, &other).is_err(), "another AAD must fail");
        }
    }

    #[test]
    fn rotation_rewraps_without_touching_the_ciphertext() {
        let (old_ring, old) = ring();
        let ad = aad(&["t", "n"]);
        let sealed = old_ring.seal(b"v", &ad).unwrap();
        let (new, _) = LocalKek::generate();
        let new = Arc::new(new);
        let ring = KeyRing::new(new.clone(), vec![old.clone()]);
        let rewrapped = ring.rewrap(&sealed, &ad).unwrap().unwrap();
        assert_eq!(
            rewrapped.data, sealed.data,
            "the value's ciphertext is unchanged"
        );
        assert_eq!(rewrapped.kek_id, new.id());
        assert!(ring.rewrap(&rewrapped, &ad).unwrap().is_none());
        assert_eq!(ring.open(&rewrapped, &ad).unwrap().as_slice(), b"v");
        assert_eq!(
            ring.open(&sealed, &ad).unwrap().as_slice(),
            b"v",
            "old still opens"
        );
        let only_new = KeyRing::new(new, vec![]);
        assert!(
            only_new.open(&sealed, &ad).is_err(),
            "the old key is needed for old values"
        );
    }

    #[test]
    fn master_keys_are_checked() {
        assert!(LocalKek::from_hex(&"ab".repeat(31)).is_err(), "short");
        assert!(LocalKek::from_hex(&"zz".repeat(32)).is_err(), "not hex");
        assert!(LocalKek::from_hex(&"00".repeat(32)).is_err(), "all zeros");
        assert!(
            LocalKek::from_hex(&"7f".repeat(32)).is_err(),
            "one byte repeated"
        );
        let hex_key = "0123456789abcdef".repeat(4);
        let a = LocalKek::from_hex(&hex_key).unwrap();
        let b = LocalKek::from_hex(&hex_key).unwrap();
        assert_eq!(a.id(), b.id(), "the id follows from the key");
        assert_eq!(a.check_value(), b.check_value());
        let (c, _) = LocalKek::generate();
        assert_ne!(a.id(), c.id());
        assert_ne!(a.check_value(), c.check_value());
    }
}
