//! The gateway's Ed25519 signing key (ring): it signs receipts and audit checkpoints.
//! Keys are PKCS#8 PEM files; a key id (the first 16 hex digits of the SHA-256 of the
//! public key) lets receivers pick the right key across rotations.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} is not an Ed25519 PKCS#8 private key")]
    NotEd25519 { path: String },
    #[error("key generation failed")]
    Generate,
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A public key that verifies receipts and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl PublicKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            key_id: key_id(&bytes),
            bytes,
        }
    }

    /// Whether `signature` (base64url, no padding) signs `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        URL_SAFE_NO_PAD.decode(signature).is_ok_and(|sig| {
            UnparsedPublicKey::new(&ED25519, &self.bytes)
                .verify(message, &sig)
                .is_ok()
        })
    }

    pub fn base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.bytes)
    }
}

pub struct GatewayKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

fn key_id(public: &[u8]) -> String {
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..8])
}

impl GatewayKey {
    pub fn from_pkcs8(der: &[u8], path: &str) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyError::NotEd25519 {
                path: path.to_owned(),
            })?;
        let public = PublicKey::from_bytes(pair.public_key().as_ref().to_vec());
        Ok(Self { pair, public })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        use rustls::pki_types::pem::PemObject;
        let shown = path.display().to_string();
        let der = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| KeyError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Self::from_pkcs8(der.secret_pkcs8_der(), &shown)
    }

    /// A new key as PKCS#8 PEM.
    pub fn generate_pem() -> Result<String, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        Ok(pem("PRIVATE KEY", der.as_ref()))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn key_id(&self) -> &str {
        &self.public.key_id
    }

    /// Base64url (no padding) Ed25519 signature.
    pub fn sign(&self, message: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.sign(message).as_ref())
    }
}

/// PEM text (64-column base64) of a DER document.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// What a receipt signature covers. Field order is part of the signed bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptClaims {
    pub referral_id: String,
    pub sender: String,
    pub recipient: String,
    pub received_at: String,
    pub payload_sha256: String,
    /// Always present, `null` when the referral was shared under no agreement: it is
    /// part of the signed bytes.
    #[schema(required = true)]
    pub isa_id: Option<String>,
}

/// Reads the `{"keys": [{"kid", "x", ...}]}` document served at `GET /v1/keys`.
pub fn keys_from_jwks(text: &str) -> Result<Vec<PublicKey>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc["keys"].as_array().ok_or("no \"keys\" array")?;
    keys.iter()
        .map(|k| {
            let x = k["x"].as_str().ok_or("a key has no \"x\"")?;
            let bytes = URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|_| "a key's \"x\" is not base64url".to_owned())?;
            let key = PublicKey::from_bytes(bytes);
            match k["kid"].as_str() {
                Some(kid) if kid != key.key_id => {
                    Err(format!("key id {kid} does not match its key"))
                }
                _ => Ok(key),
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SignedReceipt {
    pub receipt: ReceiptClaims,
    /// Always `EdDSA` (Ed25519).
    pub alg: String,
    pub key_id: String,
    /// Base64url (no padding) signature of the receipt's canonical JSON.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("unsupported algorithm '{0}' (expected EdDSA)")]
    Algorithm(String),
    #[error("no known key has id '{0}'")]
    UnknownKey(String),
    #[error("the signature does not match the receipt")]
    BadSignature,
}

fn canonical(claims: &ReceiptClaims) -> Vec<u8> {
    serde_json::to_vec(claims).unwrap_or_default()
}

impl GatewayKey {
    pub fn sign_receipt(&self, receipt: ReceiptClaims) -> SignedReceipt {
        SignedReceipt {
            signature: self.sign(&canonical(&receipt)),
            receipt,
            alg: "EdDSA".into(),
            key_id: self.key_id().to_owned(),
        }
    }
}

impl SignedReceipt {
    pub fn verify(&self, keys: &[PublicKey]) -> Result<(), ReceiptError> {
        if self.alg != "EdDSA" {
            return Err(ReceiptError::Algorithm(self.alg.clone()));
        }
        let key = keys
            .iter()
            .find(|k| k.key_id == self.key_id)
            .ok_or_else(|| ReceiptError::UnknownKey(self.key_id.clone()))?;
        if key.verify(&canonical(&self.receipt), &self.signature) {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let pem = GatewayKey::generate_pem().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, pem).unwrap();
        let key = GatewayKey::load(&path).unwrap();
        let sig = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellO", &sig));
        assert!(!key.public().verify(b"hello", "not base64!"));
        assert_eq!(key.key_id().len(), 16);
        let signed = key.sign_receipt(ReceiptClaims {
            referral_id: "r".into(),
            sender: "s".into(),
            recipient: "t".into(),
            received_at: "2026-11-23T10:00:00Z".into(),
            payload_sha256: "00".into(),
            isa_id: None,
        });
        let keys = [key.public().clone()];
        assert_eq!(signed.verify(&keys), Ok(()));
        let mut forged = signed.clone();
        forged.receipt.recipient = "elsewhere".into();
        assert_eq!(forged.verify(&keys), Err(ReceiptError::BadSignature));
        assert!(matches!(
            signed.verify(&[]),
            Err(ReceiptError::UnknownKey(_))
        ));
    }
}
