//! Staff access: bearer tokens (JWT) from the organisation's identity provider, checked
//! with `jsonwebtoken` against a trusted JWKS.
//!
//! The algorithm is taken from the trusted key (RSA -> RS256, P-256 -> ES256, Ed25519 ->
//! EdDSA, or the key's own `alg`), never from the token, and must be one the config
//! allows; symmetric (`oct`) keys are refused when the JWKS is loaded, so a token signed
//! with HMAC over a public key, or with `alg: none`, can never verify.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

/// The key id of the development staff key that `certs init` makes and
/// `referral-gateway dev-token` signs with. A JWKS that trusts it needs
/// `staff.dev_tokens = true`.
pub const DEV_KEY_ID: &str = "referral-gateway-dev";

/// Algorithms a config may allow. HMAC is not among them.
pub const SUPPORTED_ALGORITHMS: [&str; 7] = [
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA",
];

/// The longest `sub` accepted (OpenID Connect Core s.2: at most 255 ASCII characters).
pub const MAX_SUBJECT_LEN: usize = 255;

/// The longest encoded JOSE header read (real ones are a few hundred characters; an
/// `x5c` chain a few thousand).
const MAX_HEADER_CHARS: usize = 8192;

/// Whether `sub` can name a caller in the audit log (`staff:<sub>`): 1 to 255 printable
/// ASCII characters, no spaces or control characters, so an actor is always one short,
/// plain token that cannot forge a line or another actor.
pub fn is_acceptable_subject(sub: &str) -> bool {
    (1..=MAX_SUBJECT_LEN).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_graphic())
}

/// What a staff member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every audit query and export, SLA reports and referral lists for any agency.
    Auditor,
    /// SLA reports and referral lists for the agency named in the token.
    ServiceManager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::ServiceManager => "service_manager",
        }
    }
}

/// A verified staff caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffIdentity {
    /// The token's `sub`.
    pub subject: String,
    pub roles: Vec<Role>,
    /// The agency named in the agency claim (service managers), as given.
    pub agency: Option<String>,
}

impl StaffIdentity {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("staff:{}", self.subject)
    }
}

/// Why a token was refused. The text is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT ({0})")]
    Malformed(&'static str),
    #[error("the token header has no 'kid'")]
    NoKeyId,
    #[error("no trusted key has kid '{0}'")]
    UnknownKey(String),
    #[error("the token's algorithm is not the one its key is trusted for")]
    AlgorithmNotAllowed,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token has no '{0}' claim")]
    MissingClaim(String),
    #[error("the token header has a 'crit' member; no JWS extension is supported")]
    CriticalHeader,
    #[error("the token's 'iss' claim is not a single string")]
    IssuerNotAString,
    #[error("the token's 'sub' claim is not 1 to 255 printable ASCII characters without spaces")]
    BadSubject,
}

impl TokenError {
    /// A fixed code for the reason, for counts and the audit log (the message can hold
    /// text from the token, such as its `kid`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::NoKeyId => "no-kid",
            Self::UnknownKey(_) => "unknown-key",
            Self::AlgorithmNotAllowed => "algorithm-not-allowed",
            Self::BadSignature => "bad-signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::WrongIssuer => "wrong-issuer",
            Self::WrongAudience => "wrong-audience",
            Self::MissingClaim(_) => "missing-claim",
            Self::CriticalHeader => "crit-header",
            Self::IssuerNotAString => "iss-not-a-string",
            Self::BadSubject => "bad-sub",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::AlgorithmNotAllowed
            }
            // Claim names come from our own list, never from the token.
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            // Fixed texts: the parser's messages would repeat what the caller sent.
            ErrorKind::InvalidToken => TokenError::Malformed("not three dot-separated parts"),
            ErrorKind::Base64(_) => TokenError::Malformed("a part is not base64url"),
            ErrorKind::Json(_) => TokenError::Malformed(
                "the header or claims are not the JSON expected (an unknown 'alg' such as 'none' is refused here)",
            ),
            ErrorKind::Utf8(_) => TokenError::Malformed("a part is not UTF-8"),
            ErrorKind::InvalidClaimFormat(_) => TokenError::Malformed("a claim has the wrong type"),
            _ => TokenError::Malformed("it cannot be read"),
        }
    }
}

/// Settings for checking tokens, from `[staff]`.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    /// Algorithms allowed, e.g. `["ES256", "RS256", "EdDSA"]`.
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Where the roles are: a claim name or a dotted path (`realm_access.roles`).
    pub roles_claim: String,
    /// The claim naming a service manager's agency.
    pub agency_claim: String,
    /// The role names the identity provider uses.
    pub auditor_role: String,
    pub service_manager_role: String,
}

#[derive(Clone)]
struct TrustedKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

type KeySet = HashMap<String, TrustedKey>;

/// The trusted keys and the checks every token must pass. Keys come from a JWKS file
/// (fixed at start-up) and, when a JWKS URL is configured, from the identity provider
/// (replaced at each refresh by `crate::staff_auth::jwks`).
pub struct StaffAuth {
    file_keys: KeySet,
    /// Whether the JWKS file holds the published development key (under any kid).
    file_trusts_dev_key: bool,
    /// SHA-256 of the JWKS file's text: a key replaced under the same kid changes it,
    /// so a reload reports `staff` as needing a restart.
    file_digest: Option<[u8; 32]>,
    fetched_keys: std::sync::RwLock<std::sync::Arc<KeySet>>,
    policy: TokenPolicy,
    /// Woken when a token names a key nobody knows: the provider may have rotated.
    pub(crate) unknown_key_seen: tokio::sync::Notify,
}

impl std::fmt::Debug for StaffAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.file_keys.keys().collect();
        kids.sort();
        f.debug_struct("StaffAuth")
            .field("file_kids", &kids)
            .field("file_digest", &self.file_digest.map(hex::encode))
            .field("policy", &self.policy)
            .finish()
    }
}

/// Parses an algorithm name from the config; HMAC and unknown names are refused.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if !SUPPORTED_ALGORITHMS.contains(&name) {
        return Err(format!(
            "'{name}' is not allowed (choose from {})",
            SUPPORTED_ALGORITHMS.join(", ")
        ));
    }
    name.parse::<Algorithm>()
        .map_err(|_| format!("'{name}' is not an algorithm"))
}

/// The algorithm a JWK is trusted for: its own `alg` if it names one of its family,
/// otherwise the usual one for its key type.
fn key_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Algorithm, String> {
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(
            Algorithm::try_from(alg)
                .map_err(|_| format!("its alg {alg:?} is not a signature algorithm"))?,
        ),
    };
    let default = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err("its curve is not supported (use P-256 or P-384)".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "it is a symmetric (oct) key; staff tokens must be signed with a private key"
                    .into(),
            );
        }
        _ => return Err("its key type is not supported".into()),
    };
    match declared {
        Some(alg) if alg.family() == default.family() => Ok(alg),
        Some(alg) => Err(format!("its alg {alg:?} does not match its key type")),
        None => Ok(default),
    }
}

/// How to treat a key in a JWKS that cannot be trusted (no `kid`, a symmetric key, an
/// unsupported type): an error naming it (the operator's own file), or left out with a
/// note (the provider's document, which may carry keys for other uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unusable {
    Refuse,
    Skip,
}

/// Reads a JWKS document. Keys marked for encryption (`use: enc`) and keys whose
/// algorithm the policy does not allow are left out; at least one key must remain.
/// Returns the keys and notes on those skipped.
/// What [`parse_jwks`] read from a JWKS document.
struct ParsedJwks {
    keys: KeySet,
    /// Notes on keys left out (a provider's document only).
    skipped: Vec<String>,
    /// Whether any entry is the published development key, under any kid.
    has_dev_key: bool,
}

fn parse_jwks(text: &str, policy: &TokenPolicy, unusable: Unusable) -> Result<ParsedJwks, String> {
    // Each key is read on its own, so one key of a kind this library does not know
    // does not hide the others.
    let doc: Value = serde_json::from_str(text).map_err(|_| "not a JSON document".to_owned())?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "not a JWKS document (no \"keys\" array)".to_owned())?;
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    let has_dev_key = entries
        .iter()
        .any(crate::security::published::is_development_jwk);
    for (index, entry) in entries.iter().enumerate() {
        let read = || -> Result<Option<(String, TrustedKey)>, String> {
            // The provider never publishes the development key: leave it out (the
            // operator's own file may hold it, in development; the config decides).
            if unusable == Unusable::Skip && crate::security::published::is_development_jwk(entry) {
                return Err(format!("key {index} is the published development key"));
            }
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(entry.clone())
                .map_err(|_| format!("key {index} is not a JWK of a supported type"))?;
            let name = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| format!("key {index} has no 'kid'"))?;
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                return Ok(None);
            }
            let algorithm = key_algorithm(&jwk).map_err(|e| format!("key '{name}': {e}"))?;
            if !policy.algorithms.contains(&algorithm) {
                return Ok(None);
            }
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key '{name}': {e}"))?;
            Ok(Some((name, TrustedKey { algorithm, key })))
        };
        match read() {
            Ok(Some((name, key))) => {
                if keys.insert(name.clone(), key).is_some() {
                    return Err(format!("kid '{name}' appears twice"));
                }
            }
            Ok(None) => {}
            Err(e) if unusable == Unusable::Skip => skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    if keys.is_empty() {
        return Err("no key in it is usable with the allowed algorithms".into());
    }
    Ok(ParsedJwks {
        keys,
        skipped,
        has_dev_key,
    })
}

impl StaffAuth {
    /// Trusts the keys of a JWKS document (the `jwks_file`).
    pub fn from_jwks(text: &str, policy: TokenPolicy) -> Result<Self, String> {
        let parsed = parse_jwks(text, &policy, Unusable::Refuse)?;
        let mut auth = Self::with_file_keys(parsed.keys, policy);
        auth.file_trusts_dev_key = parsed.has_dev_key;
        auth.file_digest = Some(crate::security::digest::sha256(text.as_bytes()));
        Ok(auth)
    }

    /// Trusts no key until [`StaffAuth::replace_fetched_keys`] (a JWKS URL only).
    pub fn awaiting_fetch(policy: TokenPolicy) -> Self {
        Self::with_file_keys(HashMap::new(), policy)
    }

    fn with_file_keys(file_keys: KeySet, policy: TokenPolicy) -> Self {
        Self {
            file_keys,
            file_trusts_dev_key: false,
            file_digest: None,
            fetched_keys: std::sync::RwLock::new(std::sync::Arc::new(HashMap::new())),
            policy,
            unknown_key_seen: tokio::sync::Notify::new(),
        }
    }

    /// Replaces the keys fetched from the identity provider with those of `text` (a
    /// JWKS document). Returns the key ids now trusted from it and notes on keys left
    /// out; fails, keeping the previous keys, when none is usable.
    pub fn replace_fetched_keys(&self, text: &str) -> Result<(Vec<String>, Vec<String>), String> {
        let ParsedJwks { keys, skipped, .. } = parse_jwks(text, &self.policy, Unusable::Skip)?;
        let mut kids: Vec<String> = keys.keys().cloned().collect();
        kids.sort();
        match self.fetched_keys.write() {
            Ok(mut guard) => *guard = std::sync::Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = std::sync::Arc::new(keys),
        }
        Ok((kids, skipped))
    }

    fn key(&self, kid: &str) -> Option<TrustedKey> {
        if let Some(key) = self.file_keys.get(kid) {
            return Some(key.clone());
        }
        let fetched = match self.fetched_keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        fetched.get(kid).cloned()
    }

    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// Whether the published development key is among the keys from the JWKS file,
    /// under any key id (compared by key material).
    pub fn trusts_dev_key(&self) -> bool {
        self.file_trusts_dev_key
    }

    /// Checks the header has no `crit`, then signature, algorithm, `iss` (one string),
    /// `aud`, `exp`, `nbf` and `sub` (see [`is_acceptable_subject`]), then reads roles and
    /// agency.
    pub fn verify(&self, token: &str) -> Result<StaffIdentity, TokenError> {
        refuse_critical_header(token)?;
        // `alg: none` and other unknown algorithms fail here, as malformed.
        let header = jsonwebtoken::decode_header(token)?;
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let Some(trusted) = self.key(&kid) else {
            self.unknown_key_seen.notify_one();
            // The kid is the caller's text: keep what is echoed and logged short and plain.
            let shown: String = kid
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(TokenError::UnknownKey(shown));
        };
        if header.alg != trusted.algorithm {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let mut validation = Validation::new(trusted.algorithm);
        validation.set_issuer(&[&self.policy.issuer]);
        validation.set_audience(&[&self.policy.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.policy.leeway_secs;
        let data = jsonwebtoken::decode::<Value>(token, &trusted.key, &validation)?;
        let claims = data.claims;
        // The library accepts an array of issuers if all are allowed: ours is one string.
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.policy.issuer => {}
            Some(Value::String(_)) => return Err(TokenError::WrongIssuer),
            _ => return Err(TokenError::IssuerNotAString),
        }
        self.identity_from_claims(&claims)
    }

    /// The caller named by verified claims: `sub`, the roles at `roles_claim` and the
    /// agency at `agency_claim` (staff API tokens and console ID tokens alike).
    pub fn identity_from_claims(&self, claims: &Value) -> Result<StaffIdentity, TokenError> {
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if is_acceptable_subject(sub) => sub.clone(),
            Some(Value::String(_)) => return Err(TokenError::BadSubject),
            _ => return Err(TokenError::MissingClaim("sub".into())),
        };
        let mut roles = Vec::new();
        for name in role_names(claims, &self.policy.roles_claim) {
            let role = if name == self.policy.auditor_role {
                Role::Auditor
            } else if name == self.policy.service_manager_role {
                Role::ServiceManager
            } else {
                continue;
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let agency = claims
            .get(&self.policy.agency_claim)
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(StaffIdentity {
            subject,
            roles,
            agency,
        })
    }
}

/// Refuses a token whose JOSE header has a `crit` member, whatever its value (RFC 7515
/// s.4.1.11: a recipient must refuse extensions it does not understand, and this gateway
/// understands none). `jsonwebtoken` reads `crit` but does not act on it, and drops a
/// `null` one, so the header is read here. Errors are fixed texts.
fn refuse_critical_header(token: &str) -> Result<(), TokenError> {
    let encoded = token.split_once('.').map_or(token, |(header, _)| header);
    if encoded.len() > MAX_HEADER_CHARS {
        return Err(TokenError::Malformed("the header is too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed("a part is not base64url"))?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("the header is not a JSON object"))?;
    if header.contains_key("crit") {
        return Err(TokenError::CriticalHeader);
    }
    Ok(())
}

/// The role names at `path` (dotted): an array of strings, or one string of
/// space-separated names (as in an OAuth `scope`).
fn role_names(claims: &Value, path: &str) -> Vec<String> {
    let mut value = claims;
    for part in path.split('.') {
        match value.get(part) {
            Some(v) => value = v,
            None => return Vec::new(),
        }
    }
    match value {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    #[error("key generation failed")]
    Generate,
    #[error("cannot read the development staff key {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot sign the token: {0}")]
    Sign(String),
    #[error("the subject must be 1 to 255 printable ASCII characters without spaces")]
    Subject,
}

/// PKCS#8 v1 prefix for an Ed25519 private key (the form `jsonwebtoken`'s rust_crypto
/// backend reads; ring writes v2).
const PKCS8_V1_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new development staff key: (PKCS#8 v1 PEM private key, JWKS with its public key).
pub fn generate_dev_key() -> Result<(String, String), DevKeyError> {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let v2 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| DevKeyError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(v2.as_ref()).map_err(|_| DevKeyError::Generate)?;
    // In ring's PKCS#8 v2 document the 32-byte seed follows the same 16-byte prefix
    // (with version 1 and length 0x53): bytes 16..48.
    let seed = v2.as_ref().get(16..48).ok_or(DevKeyError::Generate)?;
    let mut v1 = PKCS8_V1_ED25519_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    let pem = crate::security::signing::pem("PRIVATE KEY", &v1);
    let jwks = serde_json::json!({
        "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": DEV_KEY_ID,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }]
    });
    Ok((pem, format!("{jwks:#}\n")))
}

/// What `dev-token` puts in a token.
#[derive(Debug, Clone)]
pub struct DevTokenRequest<'a> {
    pub subject: &'a str,
    pub roles: &'a [Role],
    pub agency: Option<&'a str>,
    pub lifetime: time::Duration,
}

/// Mints a token signed with the development staff key, for the policy's issuer and
/// audience. The caller checks that the config enables development tokens.
pub fn mint_dev_token(
    key_path: &Path,
    policy: &TokenPolicy,
    request: &DevTokenRequest<'_>,
) -> Result<String, DevKeyError> {
    if !is_acceptable_subject(request.subject) {
        return Err(DevKeyError::Subject);
    }
    let pem = std::fs::read(key_path).map_err(|e| DevKeyError::Read {
        path: key_path.display().to_string(),
        message: e.to_string(),
    })?;
    let key = EncodingKey::from_ed_pem(&pem).map_err(|e| DevKeyError::Read {
        path: key_path.display().to_string(),
        message: format!("not an Ed25519 PKCS#8 v1 key ({e})"),
    })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let roles: Vec<&str> = request
        .roles
        .iter()
        .map(|r| match r {
            Role::Auditor => policy.auditor_role.as_str(),
            Role::ServiceManager => policy.service_manager_role.as_str(),
        })
        .collect();
    let mut claims = serde_json::json!({
        "iss": policy.issuer,
        "aud": policy.audience,
        "sub": request.subject,
        "iat": now,
        "nbf": now,
        "exp": now + request.lifetime.whole_seconds(),
    });
    // The roles claim may be a dotted path: build the nesting it names.
    let mut parts = policy.roles_claim.rsplit('.');
    let mut roles_value = serde_json::json!(roles);
    let mut top = parts.next().unwrap_or("roles");
    for parent in parts {
        roles_value = serde_json::json!({ top: roles_value });
        top = parent;
    }
    claims[top] = roles_value;
    if let Some(agency) = request.agency {
        claims[policy.agency_claim.as_str()] = Value::String(agency.to_owned());
    }
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(DEV_KEY_ID.to_owned());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| DevKeyError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            issuer: "https://idp.test".into(),
            audience: "referral-gateway".into(),
            algorithms: vec![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA],
            leeway_secs: 30,
            roles_claim: "realm_access.roles".into(),
            agency_claim: "agency".into(),
            auditor_role: "auditor".into(),
            service_manager_role: "service_manager".into(),
        }
    }

    fn dev_pair() -> (tempfile::TempDir, std::path::PathBuf, StaffAuth) {
        let dir = tempfile::tempdir().unwrap();
        let (pem, jwks) = generate_dev_key().unwrap();
        let path = dir.path().join("dev.key");
        std::fs::write(&path, pem).unwrap();
        let auth = StaffAuth::from_jwks(&jwks, policy()).unwrap();
        (dir, path, auth)
    }

    #[test]
    fn dev_tokens_round_trip_with_nested_roles() {
        let (_dir, path, auth) = dev_pair();
        // A freshly made key is not the published development key (compared by key
        // material, not kid); the published JWKS is.
        assert!(!auth.trusts_dev_key());
        let published = include_str!("../../certs-example/staff-jwks.json");
        assert!(
            StaffAuth::from_jwks(published, policy())
                .unwrap()
                .trusts_dev_key()
        );
        let token = mint_dev_token(
            &path,
            &policy(),
            &DevTokenRequest {
                subject: "ig-lead",
                roles: &[Role::ServiceManager, Role::Auditor],
                agency: Some("coventry-cmht"),
                lifetime: time::Duration::minutes(5),
            },
        )
        .unwrap();
        let who = auth.verify(&token).unwrap();
        assert_eq!(who.subject, "ig-lead");
        assert_eq!(who.roles, vec![Role::ServiceManager, Role::Auditor]);
        assert_eq!(who.agency.as_deref(), Some("coventry-cmht"));
        assert_eq!(who.actor(), "staff:ig-lead");
    }

    #[test]
    fn symmetric_keys_and_unallowed_algorithms_are_not_trusted() {
        let oct = r#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}"#;
        let err = StaffAuth::from_jwks(oct, policy()).unwrap_err();
        assert!(err.contains("symmetric"), "{err}");
        let (_, jwks) = generate_dev_key().unwrap();
        let mut only_rs = policy();
        only_rs.algorithms = vec![Algorithm::RS256];
        let err = StaffAuth::from_jwks(&jwks, only_rs).unwrap_err();
        assert!(err.contains("no key"), "{err}");
        assert!(parse_algorithm("HS256").is_err());
        assert!(parse_algorithm("none").is_err());
        assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
    }

    #[test]
    fn a_providers_document_may_carry_keys_for_other_uses() {
        let (_, jwks) = generate_dev_key().unwrap();
        let mut doc: Value = serde_json::from_str(&jwks).unwrap();
        let keys = doc["keys"].as_array_mut().unwrap();
        keys.push(serde_json::json!({"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}));
        keys.push(serde_json::json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA"}));
        keys.push(
            serde_json::json!({"kty": "RSA", "use": "enc", "kid": "e", "n": "AQAB", "e": "AQAB"}),
        );
        let text = doc.to_string();
        // In the operator's own file, an unusable key is an error naming it...
        assert!(
            StaffAuth::from_jwks(&text, policy())
                .unwrap_err()
                .contains("shared")
        );
        // ...fetched from the provider, it is left out with a note.
        let auth = StaffAuth::awaiting_fetch(policy());
        let (kids, skipped) = auth.replace_fetched_keys(&text).unwrap();
        assert_eq!(kids, vec![DEV_KEY_ID.to_owned()]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            !auth.trusts_dev_key(),
            "only the file's keys count as trusted by config"
        );
        // A document with nothing usable leaves the previous keys in place.
        assert!(auth.replace_fetched_keys(r#"{"keys": []}"#).is_err());
        assert!(auth.key(DEV_KEY_ID).is_some());
    }

    #[test]
    fn role_names_read_arrays_strings_and_paths() {
        let claims = serde_json::json!({
            "roles": ["auditor", "x"],
            "scope": "openid auditor",
            "realm_access": {"roles": ["service_manager"]}
        });
        assert_eq!(role_names(&claims, "roles"), vec!["auditor", "x"]);
        assert_eq!(role_names(&claims, "scope"), vec!["openid", "auditor"]);
        assert_eq!(
            role_names(&claims, "realm_access.roles"),
            vec!["service_manager"]
        );
        assert!(role_names(&claims, "missing.path").is_empty());
    }

    #[test]
    fn subjects_are_short_plain_ascii() {
        for ok in ["ig-lead", "auth0|5f1c", "a@b.example", &"x".repeat(255)] {
            assert!(is_acceptable_subject(ok), "{ok}");
        }
        for bad in [
            "",
            "ig lead",
            "a\r\nb",
            "tab\there",
            "caf\u{e9}",
            "\u{7f}",
            &"x".repeat(256),
        ] {
            assert!(!is_acceptable_subject(bad), "{bad:?}");
        }
        let (_dir, path, _auth) = dev_pair();
        let request = DevTokenRequest {
            subject: "two words",
            roles: &[Role::Auditor],
            agency: None,
            lifetime: time::Duration::minutes(5),
        };
        assert!(matches!(
            mint_dev_token(&path, &policy(), &request),
            Err(DevKeyError::Subject)
        ));
    }

    #[test]
    fn any_crit_member_is_refused_before_anything_else() {
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        for crit in [r#"["exp"]"#, "[]", "null", r#""b64""#, "{}"] {
            let header = URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"EdDSA","kid":"referral-gateway-dev","crit":{crit}}}"#
            ));
            assert_eq!(
                refuse_critical_header(&format!("{header}.{body}.sig")),
                Err(TokenError::CriticalHeader),
                "{crit}"
            );
        }
        let plain = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"k"}"#);
        assert_eq!(
            refuse_critical_header(&format!("{plain}.{body}.sig")),
            Ok(())
        );
        let long = "A".repeat(MAX_HEADER_CHARS + 4);
        assert!(matches!(
            refuse_critical_header(&format!("{long}.{body}.sig")),
            Err(TokenError::Malformed(_))
        ));
        let array = URL_SAFE_NO_PAD.encode(b"[1]");
        assert!(matches!(
            refuse_critical_header(&format!("{array}.{body}.sig")),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_and_unsigned_tokens_are_malformed() {
        let (_dir, _path, auth) = dev_pair();
        assert!(matches!(
            auth.verify("not-a-token"),
            Err(TokenError::Malformed(_))
        ));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"referral-gateway-dev"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert!(auth.verify(&format!("{header}.{body}.")).is_err());
    }
}
