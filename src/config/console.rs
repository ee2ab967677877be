//! `[console]`: the staff console on the staff listener (docs/console.md). Optional: without
//! the section the console still serves its development sign-in when
//! `[staff] dev_tokens = true`, and offers OpenID Connect sign-in only once `client_id` and
//! `redirect_url` are set.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    enabled: Option<bool>,
    issuer_url: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    redirect_url: Option<String>,
    scopes: Option<Vec<String>>,
    provider_name: Option<String>,
    oidc_ca: Option<PathBuf>,
    session_key_file: Option<PathBuf>,
    idle_timeout_mins: Option<u64>,
    absolute_timeout_hours: Option<u64>,
}

/// OpenID Connect sign-in settings (authorization code + PKCE). `Debug` leaves out the
/// client secret.
#[derive(Clone)]
pub struct OidcSettings {
    /// Where discovery starts (`<issuer>/.well-known/openid-configuration`); by default
    /// `staff.issuer`, so ID tokens come from the provider that issues staff tokens.
    pub issuer_url: String,
    pub client_id: String,
    /// `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    /// `https://<staff listener>/console/auth/callback`, registered at the provider.
    pub redirect_url: String,
    /// Scopes besides `openid`.
    pub scopes: Vec<String>,
    /// Shown on the sign-in button ("Sign in with ...").
    pub provider_name: String,
    /// Extra CA for the provider's HTTPS endpoints (besides the system roots).
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "(secret)"),
            )
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("provider_name", &self.provider_name)
            .field("ca", &self.ca)
            .finish()
    }
}

/// What `[console]` configures. `Debug` leaves out the session secret.
#[derive(Clone)]
pub struct ConsoleConfig {
    pub enabled: bool,
    pub oidc: Option<OidcSettings>,
    /// At least 32 bytes of secret from which the session cookie key is derived (HKDF);
    /// `None`: a random key made at start-up (sessions end at restart and are not
    /// shared between instances).
    pub session_secret: Option<Vec<u8>>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("enabled", &self.enabled)
            .field("oidc", &self.oidc)
            .field(
                "session_secret",
                &self.session_secret.as_ref().map(|_| "(secret)"),
            )
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .finish()
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            oidc: None,
            session_secret: None,
            idle_timeout: Duration::from_secs(15 * 60),
            absolute_timeout: Duration::from_secs(8 * 3600),
        }
    }
}

/// Reads a secret file: 64 or more hex digits (whitespace ignored).
fn read_hex_secret(path: &PathBuf, key: &str, problems: &mut super::Problems) -> Option<Vec<u8>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(key, format!("cannot read '{}': {e}", path.display()));
            return None;
        }
    };
    let digits: String = text.split_whitespace().collect();
    match hex::decode(&digits) {
        Ok(bytes) if bytes.len() >= 32 => Some(bytes),
        _ => {
            problems.push(
                key,
                format!(
                    "'{}' must hold at least 64 hex digits (e.g. `openssl rand -hex 32`)",
                    path.display()
                ),
            );
            None
        }
    }
}

pub(super) fn build(
    raw: Option<RawConsole>,
    staff_issuer: Option<&str>,
    env: &dyn super::Env,
    checks: super::FileChecks,
    problems: &mut super::Problems,
) -> ConsoleConfig {
    let raw = raw.unwrap_or_default();
    let idle = raw.idle_timeout_mins.unwrap_or(15);
    if !(1..=240).contains(&idle) {
        problems.push("console.idle_timeout_mins", "must be from 1 to 240");
    }
    let absolute = raw.absolute_timeout_hours.unwrap_or(8);
    if !(1..=24).contains(&absolute) {
        problems.push("console.absolute_timeout_hours", "must be from 1 to 24");
    }
    let session_secret = raw
        .session_key_file
        .as_ref()
        .and_then(|path| read_hex_secret(path, "console.session_key_file", problems));
    let client_secret = match env.var("REFGW_CONSOLE_CLIENT_SECRET") {
        Some(secret) => Some(secret.trim().to_owned()),
        None => {
            raw.client_secret_file
                .as_ref()
                .and_then(|path| match std::fs::read_to_string(path) {
                    Ok(text) => Some(text.trim().to_owned()),
                    Err(e) => {
                        problems.push(
                            "console.client_secret_file",
                            format!("cannot read '{}': {e}", path.display()),
                        );
                        None
                    }
                })
        }
    };
    let oidc = match (raw.client_id, raw.redirect_url) {
        (None, None) => {
            // Settings of a sign-in that is not configured: refused rather than ignored.
            let unused = [
                ("console.issuer_url", raw.issuer_url.is_some()),
                (
                    "console.client_secret_file",
                    raw.client_secret_file.is_some(),
                ),
                ("console.scopes", raw.scopes.is_some()),
                ("console.provider_name", raw.provider_name.is_some()),
                ("console.oidc_ca", raw.oidc_ca.is_some()),
            ];
            for (key, _) in unused.iter().filter(|(_, set)| *set) {
                problems.push(
                    key,
                    "is used only for OpenID Connect sign-in, which needs console.client_id and console.redirect_url",
                );
            }
            None
        }
        (Some(client_id), Some(redirect_url)) => {
            if !redirect_url.starts_with("https://")
                || !redirect_url.ends_with("/console/auth/callback")
            {
                problems.push(
                    "console.redirect_url",
                    "must be https://<staff listener host:port>/console/auth/callback",
                );
            }
            let issuer_url = raw
                .issuer_url
                .or_else(|| staff_issuer.map(str::to_owned))
                .unwrap_or_default();
            if issuer_url.is_empty() {
                problems.push(
                    "console.issuer_url",
                    "is required ([staff] issuer is not set)",
                );
            } else if !issuer_url.starts_with("https://") {
                problems.push("console.issuer_url", "must be an https:// URL");
            }
            if let Some(ca) = &raw.oidc_ca
                && checks == super::FileChecks::Required
                && let Some(problem) = crate::security::tls::check_client_roots(ca)
            {
                problems.push("console.oidc_ca", problem);
            }
            Some(OidcSettings {
                issuer_url,
                client_id,
                client_secret: client_secret.filter(|s| !s.is_empty()),
                redirect_url,
                scopes: raw.scopes.unwrap_or_default(),
                provider_name: raw
                    .provider_name
                    .unwrap_or_else(|| "your organisation's account".to_owned()),
                ca: raw.oidc_ca,
            })
        }
        _ => {
            problems.push(
                "console.client_id",
                "client_id and redirect_url are needed together for OpenID Connect sign-in",
            );
            None
        }
    };
    ConsoleConfig {
        enabled: raw.enabled.unwrap_or(true),
        oidc,
        session_secret,
        idle_timeout: Duration::from_secs(idle.clamp(1, 240) * 60),
        absolute_timeout: Duration::from_secs(absolute.clamp(1, 24) * 3600),
    }
}
