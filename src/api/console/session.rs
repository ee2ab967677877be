//! The console's session: a cookie whose value is AES-256-GCM sealed (encrypted and
//! authenticated) under a key derived with HKDF-SHA256 from `[console] session_key_file`
//! (or a random secret made at start-up). The cookie name is the additional data, so a
//! value cannot be moved from one cookie to another. Nothing in a cookie is trusted unless
//! it opens with this key; the server also keeps the ids of sessions signed out until
//! their absolute expiry, so a copied cookie dies at sign-out.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::staff_auth::tokens::{Role, StaffIdentity};

/// The session cookie: `__Host-` so it is Secure, host-only and for the whole path.
pub const SESSION_COOKIE: &str = "__Host-refgw-console";
/// Holds the OpenID Connect state, nonce and PKCE verifier during a sign-in (Lax: the
/// provider's redirect back is a cross-site navigation).
pub const LOGIN_COOKIE: &str = "__Host-refgw-console-login";
/// Holds the CSRF token of the sign-in page's forms before there is a session.
pub const PRE_COOKIE: &str = "__Host-refgw-console-pre";

/// The longest cookie value opened (a session is a few hundred bytes).
const MAX_SEALED_CHARS: usize = 4096;

/// Seals and opens cookie values.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// The key is HKDF-SHA256(salt = "referral-gateway console", ikm = secret,
    /// info = "session cookie v1").
    pub fn new(secret: &[u8]) -> Result<Self, ring::error::Unspecified> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"referral-gateway console");
        let prk = salt.extract(secret);
        let okm = prk.expand(&[b"session cookie v1"], &AES_256_GCM)?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Ok(Self {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// A sealer with a fresh random secret.
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        let mut secret = [0_u8; 32];
        SystemRandom::new().fill(&mut secret)?;
        Self::new(&secret)
    }

    pub fn random_token(&self) -> String {
        let mut bytes = [0_u8; 32];
        // `fill` fails only if the OS has no randomness; a zero token would then match
        // nothing sealed elsewhere, and sealing itself fails the same way.
        let _ = self.rng.fill(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn seal<T: Serialize>(&self, name: &str, value: &T) -> Option<String> {
        let mut data = serde_json::to_vec(value).ok()?;
        let mut nonce = [0_u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    pub fn open<T: for<'de> Deserialize<'de>>(&self, name: &str, text: &str) -> Option<T> {
        if text.len() > MAX_SEALED_CHARS {
            return None;
        }
        let mut bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN]).ok()?;
        let mut data = bytes.split_off(NONCE_LEN);
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut data)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// What the session cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Random id, for sign-out.
    pub id: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub agency: Option<String>,
    /// Unix seconds.
    pub issued_at: i64,
    pub last_seen: i64,
    /// The CSRF token every form carries.
    pub csrf: String,
    /// "oidc" or "development".
    pub via: String,
}

impl Session {
    pub fn identity(&self) -> StaffIdentity {
        let roles = self
            .roles
            .iter()
            .filter_map(|r| match r.as_str() {
                "auditor" => Some(Role::Auditor),
                "service_manager" => Some(Role::ServiceManager),
                _ => None,
            })
            .collect();
        StaffIdentity {
            subject: self.subject.clone(),
            roles,
            agency: self.agency.clone(),
        }
    }

    pub fn role_names(identity: &StaffIdentity) -> Vec<String> {
        identity
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect()
    }
}

/// What the login cookie holds between the redirect to the provider and the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub started_at: i64,
    /// The console page to go to once signed in (`super::safe_return_path` checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// What the pre-session cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreSession {
    pub csrf: String,
    pub issued_at: i64,
}

/// Sessions signed out before their absolute expiry (id -> expiry, Unix seconds).
#[derive(Debug, Default)]
pub struct SignedOut(Mutex<HashMap<String, i64>>);

impl SignedOut {
    pub fn add(&self, id: &str, expires: i64, now: i64) {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, e| *e > now);
        map.insert(id.to_owned(), expires);
    }

    pub fn contains(&self, id: &str) -> bool {
        let map = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.contains_key(id)
    }
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0_u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(req: &'a actix_web::HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A `Set-Cookie` value. `max_age` `None`: a browser-session cookie; `Some(0)`: removal.
pub fn set_cookie(name: &str, value: &str, same_site: &str, max_age: Option<i64>) -> String {
    let mut text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_key_and_name() {
        let sealer = Sealer::new(&[7; 32]).unwrap();
        let pre = PreSession {
            csrf: "abc".into(),
            issued_at: 5,
        };
        let text = sealer.seal(PRE_COOKIE, &pre).unwrap();
        let back: PreSession = sealer.open(PRE_COOKIE, &text).unwrap();
        assert_eq!(back.csrf, "abc");
        assert!(sealer.open::<PreSession>(SESSION_COOKIE, &text).is_none());
        assert!(
            Sealer::new(&[8; 32])
                .unwrap()
                .open::<PreSession>(PRE_COOKIE, &text)
                .is_none()
        );
        let mut tampered = text.into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(sealer.open::<PreSession>(PRE_COOKIE, &tampered).is_none());
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }
}
