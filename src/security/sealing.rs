//! Referral payloads encrypted at rest: AES-256-GCM (ring) under a key from a file or the
//! environment, the referral id as associated data (a ciphertext cannot be moved to
//! another row), and the key id stored beside each payload so keys can rotate.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a payload key must be 64 hexadecimal digits (32 bytes)")]
    BadKey,
    #[error(
        "no payload key with id '{0}' is configured (add it to storage.previous_payload_key_files)"
    )]
    UnknownKey(String),
    #[error("a stored payload does not decrypt (corrupt, or sealed for another referral)")]
    Corrupt,
    #[error("random number generator failure")]
    Random,
    #[error("no payload key is configured: referral payloads are never stored unencrypted")]
    NoKey,
}

pub struct PayloadKeys {
    current_id: String,
    keys: BTreeMap<String, LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for PayloadKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadKeys")
            .field("current_id", &self.current_id)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn parse_key(hex_text: &str) -> Result<(String, LessSafeKey), SealError> {
    let bytes = hex::decode(hex_text.trim()).map_err(|_| SealError::BadKey)?;
    if bytes.len() != 32 {
        return Err(SealError::BadKey);
    }
    let id = hex::encode(&ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..4]);
    let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
    Ok((id, LessSafeKey::new(key)))
}

impl PayloadKeys {
    /// `current` seals new payloads; `previous` only open old ones. Keys are hex text.
    pub fn new(current: &str, previous: &[String]) -> Result<Self, SealError> {
        let (current_id, key) = parse_key(current)?;
        let mut keys = BTreeMap::new();
        for old in previous {
            let (id, key) = parse_key(old)?;
            keys.insert(id, key);
        }
        keys.insert(current_id.clone(), key);
        Ok(Self {
            current_id,
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// A new random key, as hex text.
    pub fn generate_hex() -> Result<String, SealError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        Ok(hex::encode(bytes))
    }

    pub fn current_id(&self) -> &str {
        &self.current_id
    }

    /// `(key id, base64 of nonce || ciphertext || tag)`.
    pub fn seal(&self, plaintext: &str, referral_id: &str) -> Result<(String, String), SealError> {
        let key = self
            .keys
            .get(&self.current_id)
            .ok_or_else(|| SealError::UnknownKey(self.current_id.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buffer = plaintext.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(referral_id.as_bytes()),
            &mut buffer,
        )
        .map_err(|_| SealError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok((self.current_id.clone(), STANDARD.encode(out)))
    }

    pub fn open(&self, key_id: &str, sealed: &str, referral_id: &str) -> Result<String, SealError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let bytes = STANDARD.decode(sealed).map_err(|_| SealError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
        let mut buffer = rest.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(referral_id.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_rotate_and_bind_to_the_referral() {
        let old = PayloadKeys::generate_hex().unwrap();
        let new = PayloadKeys::generate_hex().unwrap();
        let before = PayloadKeys::new(&old, &[]).unwrap();
        let (old_id, sealed) = before.seal("{\"name\":\"Alex\"}", "r1").unwrap();
        assert!(!sealed.contains("Alex"));
        let after = PayloadKeys::new(&new, std::slice::from_ref(&old)).unwrap();
        assert_eq!(
            after.open(&old_id, &sealed, "r1").unwrap(),
            "{\"name\":\"Alex\"}"
        );
        assert!(matches!(
            after.open(&old_id, &sealed, "r2"),
            Err(SealError::Corrupt)
        ));
        assert!(matches!(
            PayloadKeys::new(&new, &[])
                .unwrap()
                .open(&old_id, &sealed, "r1"),
            Err(SealError::UnknownKey(_))
        ));
        assert_ne!(after.current_id(), old_id);
        assert!(PayloadKeys::new("abcd", &[]).is_err());
    }
}
