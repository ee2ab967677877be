//! The development keys and certificates published in `certs-example/`, built into the
//! binary so that a configuration using any of them outside the development profile is
//! refused, whatever the files are called or wherever they were copied to. Comparisons
//! are by key material (DER of each PEM block, key bytes, JWK parameters), never by file
//! name or key id.

use serde_json::Value;

/// Which kind of deployment a configuration describes (`profile` at the top of the
/// configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The shipped configuration: the published keys of `certs-example/` and
    /// development tokens are allowed. Never for real data.
    Development,
    /// Anything else (the default): every published key is refused.
    #[default]
    Production,
}

impl Profile {
    /// The name the configuration's `profile` key gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            _ => Err(()),
        }
    }
}

const CA_CERT: &[u8] = include_bytes!("../../certs-example/ca.crt");
const SERVER_CERT: &[u8] = include_bytes!("../../certs-example/server.crt");
const SERVER_KEY: &[u8] = include_bytes!("../../certs-example/server.key");
const SIGNING_KEY: &[u8] = include_bytes!("../../certs-example/gateway-signing.key");
const STAFF_DEV_KEY: &[u8] = include_bytes!("../../certs-example/staff-dev.key");
const PAYLOAD_KEY: &str = include_str!("../../certs-example/payload.key");
const PERSON_KEY_SECRET: &[u8] = include_bytes!("../../certs-example/person-key.secret");
const STAFF_JWKS: &str = include_str!("../../certs-example/staff-jwks.json");

/// The published PEM files, by what they are.
const PUBLISHED_PEM: [(&str, &[u8]); 5] = [
    (
        "the development CA certificate (its private key is public)",
        CA_CERT,
    ),
    ("the development server certificate", SERVER_CERT),
    ("the development server key", SERVER_KEY),
    ("the development signing key", SIGNING_KEY),
    ("the development staff-token key", STAFF_DEV_KEY),
];

/// The DER contents of every PEM block in `text` (certificates, keys), in order.
fn pem_blocks(text: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(text);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        } else if line.starts_with("-----END ") {
            if let Some(b64) = current.take()
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64)
            {
                blocks.push(der);
            }
        } else if let Some(b64) = current.as_mut() {
            b64.push_str(line);
        }
    }
    blocks
}

/// What published item `configured` (a PEM file's contents) holds, if any: a
/// certificate or key that is byte for byte one of `certs-example/`'s.
pub fn published_pem(configured: &[u8]) -> Option<&'static str> {
    let blocks = pem_blocks(configured);
    PUBLISHED_PEM.iter().find_map(|(what, published)| {
        pem_blocks(published)
            .iter()
            .any(|p| blocks.contains(p))
            .then_some(*what)
    })
}

/// Whether `hex` (a payload key as configured) is the published payload key.
pub fn is_published_payload_key(hex: &str) -> bool {
    hex.trim().eq_ignore_ascii_case(PAYLOAD_KEY.trim())
}

/// Whether `secret` is the published person-key secret.
pub fn is_published_person_key_secret(secret: &[u8]) -> bool {
    secret.trim_ascii() == PERSON_KEY_SECRET.trim_ascii()
}

/// The parameters that make a JWK's public key, whatever its `kid`, `alg` or `use`.
fn jwk_material(jwk: &Value) -> Vec<String> {
    ["kty", "crv", "x", "y", "n", "e"]
        .iter()
        .map(|name| {
            jwk.get(*name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Whether `jwk` (one entry of a JWKS) is the public half of the published development
/// staff-token key, under any key id.
pub fn is_development_jwk(jwk: &Value) -> bool {
    /// The public parameters of every key in the published JWKS, read once.
    static PUBLISHED: std::sync::LazyLock<Vec<Vec<String>>> = std::sync::LazyLock::new(|| {
        serde_json::from_str::<Value>(STAFF_JWKS)
            .ok()
            .and_then(|doc| doc.get("keys").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .map(jwk_material)
            .collect()
    });
    PUBLISHED.contains(&jwk_material(jwk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_published_material_by_content_not_name() {
        assert!(published_pem(CA_CERT).is_some());
        // The same key with other line breaks and a label.
        let rewrapped = String::from_utf8_lossy(SIGNING_KEY)
            .replace('\n', "\r\n")
            .replace("-----BEGIN", "label\n-----BEGIN");
        assert_eq!(
            published_pem(rewrapped.as_bytes()),
            Some("the development signing key")
        );
        let agency = include_bytes!("../../certs-example/agencies/coventry-liaison.crt").as_slice();
        assert_eq!(published_pem(agency), None);
        assert!(is_published_payload_key(&PAYLOAD_KEY.to_uppercase()));
        assert!(!is_published_payload_key(&"0".repeat(64)));
        assert!(is_published_person_key_secret(PERSON_KEY_SECRET));
    }

    #[test]
    fn recognises_the_development_jwk_under_any_kid() {
        let doc: Value = serde_json::from_str(STAFF_JWKS).unwrap();
        let mut jwk = doc["keys"][0].clone();
        assert!(is_development_jwk(&jwk));
        jwk["kid"] = "idp-signing-2026".into();
        jwk.as_object_mut().unwrap().remove("alg");
        assert!(is_development_jwk(&jwk));
        jwk["x"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
        assert!(!is_development_jwk(&jwk));
    }
}
