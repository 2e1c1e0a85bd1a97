//! Provider API keys at rest: AES-256-GCM under the master key, with associated data that binds
//! a ciphertext to its owner and provider (a key copied to another row does not decrypt).
//! Stored form: `v1:` + base64(12-byte random nonce ‖ ciphertext and tag).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A 256-bit master key.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

/// Why a key could not be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The master key is not 32 bytes of base64 or hex.
    #[error("the master key must be 32 bytes, as 64 hex characters or base64")]
    BadMasterKey,
    /// Randomness unavailable.
    #[error("no randomness available")]
    NoRandomness,
    /// Wrong key, wrong owner, or tampered data.
    #[error("the stored secret does not decrypt with this master key")]
    Undecryptable,
}

impl MasterKey {
    /// Parses 32 bytes given as 64 hex characters or as base64.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        let s = s.trim();
        let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| CryptoError::BadMasterKey)?
        } else {
            STANDARD.decode(s).map_err(|_| CryptoError::BadMasterKey)?
        };
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self(cipher))
    }

    /// Encrypts `plaintext` bound to `aad`.
    pub fn seal(&self, aad: &str, plaintext: &str) -> Result<String, CryptoError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::NoRandomness)?;
        let ct = self
            .0
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| CryptoError::Undecryptable)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("v1:{}", STANDARD.encode(out)))
    }

    /// Decrypts what [`MasterKey::seal`] produced for the same `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<String, CryptoError> {
        let raw = sealed.strip_prefix("v1:").ok_or(CryptoError::Undecryptable)?;
        let bytes = STANDARD.decode(raw).map_err(|_| CryptoError::Undecryptable)?;
        if bytes.len() < 12 + 16 {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, ct) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Undecryptable)?;
        let pt = self
            .0
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: aad.as_bytes() })
            .map_err(|_| CryptoError::Undecryptable)?;
        String::from_utf8(pt).map_err(|_| CryptoError::Undecryptable)
    }
}

/// The associated data of a user provider's key.
pub fn provider_key_aad(user_id: i64, provider_id: &str) -> String {
    format!("switchyard/provider-key/v1/{user_id}/{provider_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seals_and_opens_only_with_the_same_key_and_binding() {
        let k = MasterKey::parse(HEX).unwrap();
        let aad = provider_key_aad(7, "openai");
        let sealed = k.seal(&aad, "sk-secret-value").unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("sk-secret"));
        assert_ne!(sealed, k.seal(&aad, "sk-secret-value").unwrap(), "a fresh nonce each time");
        assert_eq!(k.open(&aad, &sealed).unwrap(), "sk-secret-value");
        // Another owner or provider, another key, or a flipped bit: nothing.
        assert_eq!(k.open(&provider_key_aad(8, "openai"), &sealed), Err(CryptoError::Undecryptable));
        assert_eq!(k.open(&provider_key_aad(7, "other"), &sealed), Err(CryptoError::Undecryptable));
        let other = MasterKey::parse(&STANDARD.encode([9u8; 32])).unwrap();
        assert_eq!(other.open(&aad, &sealed), Err(CryptoError::Undecryptable));
        let mut bytes = STANDARD.decode(&sealed[3..]).unwrap();
        bytes[20] ^= 1;
        assert_eq!(k.open(&aad, &format!("v1:{}", STANDARD.encode(bytes))), Err(CryptoError::Undecryptable));
        assert_eq!(k.open(&aad, "v1:AAAA"), Err(CryptoError::Undecryptable));
        assert_eq!(k.open(&aad, "plain"), Err(CryptoError::Undecryptable));
    }

    #[test]
    fn master_keys_must_be_32_bytes() {
        assert!(MasterKey::parse(HEX).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([1u8; 32])).is_ok());
        for bad in ["", "abc", &HEX[..62], &STANDARD.encode([1u8; 16])] {
            assert_eq!(MasterKey::parse(bad).err(), Some(CryptoError::BadMasterKey), "{bad}");
        }
    }
}
