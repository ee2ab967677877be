//! `[staff]`: the staff listener and bearer tokens (issuer, audience, keys, roles).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{Env, FileChecks, Problems, socket_addr};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStaff {
    listen: Option<String>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_ca: Option<PathBuf>,
    jwks_refresh_secs: Option<u64>,
    issuer: Option<String>,
    audience: Option<String>,
    algorithms: Option<Vec<String>>,
    leeway_secs: Option<u64>,
    roles_claim: Option<String>,
    agency_claim: Option<String>,
    auditor_role: Option<String>,
    service_manager_role: Option<String>,
    dev_tokens: Option<bool>,
    dev_signing_key: Option<PathBuf>,
}

/// Staff (auditors, service managers) calling with JWT bearer tokens.
#[derive(Debug, Clone)]
pub struct StaffConfig {
    /// The staff listener: TLS with the server certificate, no client certificate, bearer
    /// tokens. `None`: no staff listener (tokens can still be minted for tests).
    pub listen: Option<SocketAddr>,
    pub auth: Arc<crate::staff_auth::tokens::StaffAuth>,
    /// Where to fetch (and refresh) the identity provider's keys, if anywhere.
    pub jwks_url: Option<JwksUrl>,
    /// Whether `referral-gateway dev-token` may mint tokens (and the JWKS may trust the
    /// development key). Development only.
    pub dev_tokens: bool,
    pub dev_signing_key: PathBuf,
}

/// The identity provider's JWKS endpoint.
#[derive(Debug, Clone)]
pub struct JwksUrl {
    pub url: String,
    /// An extra CA to trust for it (a private identity provider), besides the system's.
    pub ca: Option<PathBuf>,
    pub refresh: std::time::Duration,
}

/// `https://`, or plain `http://` to this machine only (a local test provider); no
/// credentials in the URL.
pub(super) fn check_jwks_url(text: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(text).map_err(|_| "is not a URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password");
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be an https:// URL (plain http only to localhost)"),
    }
}

pub(super) fn build_staff(
    raw: RawStaff,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> Option<StaffConfig> {
    let listen = match env.var("REFGW_STAFF_LISTEN").or(raw.listen) {
        Some(v) if v == "off" => None,
        Some(v) => socket_addr(&v, "staff.listen", problems),
        None => None,
    };
    let mut required = |value: Option<String>, key: &str, example: &str| match value
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => v,
        None => {
            problems.push(key, format!("is required in [staff] (e.g. {example})"));
            String::new()
        }
    };
    let issuer = required(raw.issuer, "staff.issuer", "\"https://login.example.org\"");
    let audience = required(raw.audience, "staff.audience", "\"referral-gateway\"");
    let mut algorithms = Vec::new();
    for name in raw
        .algorithms
        .unwrap_or_else(|| vec!["ES256".into(), "RS256".into(), "EdDSA".into()])
    {
        match crate::staff_auth::tokens::parse_algorithm(&name) {
            Ok(alg) => algorithms.push(alg),
            Err(e) => problems.push("staff.algorithms", e),
        }
    }
    if algorithms.is_empty() {
        problems.push("staff.algorithms", "must allow at least one algorithm");
    }
    let leeway_secs = raw.leeway_secs.unwrap_or(30);
    if leeway_secs > 300 {
        problems.push(
            "staff.leeway_secs",
            "must be at most 300 (clock skew, not token lifetime)",
        );
    }
    let policy = crate::staff_auth::tokens::TokenPolicy {
        issuer,
        audience,
        algorithms,
        leeway_secs,
        roles_claim: raw.roles_claim.unwrap_or_else(|| "roles".into()),
        agency_claim: raw.agency_claim.unwrap_or_else(|| "agency".into()),
        auditor_role: raw.auditor_role.unwrap_or_else(|| "auditor".into()),
        service_manager_role: raw
            .service_manager_role
            .unwrap_or_else(|| "service_manager".into()),
    };
    let dev_tokens = raw.dev_tokens.unwrap_or(false);
    let dev_signing_key = raw.dev_signing_key.unwrap_or_else(|| {
        if dev_tokens {
            problems.push(
                "staff.dev_signing_key",
                "is required when dev_tokens = true (certs-example/staff-dev.key in development)",
            );
        }
        PathBuf::new()
    });
    if raw.jwks_url.is_none() {
        // Settings of a JWKS URL that is not configured: refused rather than ignored.
        for (key, set) in [
            ("staff.jwks_ca", raw.jwks_ca.is_some()),
            ("staff.jwks_refresh_secs", raw.jwks_refresh_secs.is_some()),
        ] {
            if set {
                problems.push(key, "is used only with staff.jwks_url");
            }
        }
    }
    let jwks_url = raw.jwks_url.map(|url| {
        if let Err(e) = check_jwks_url(&url) {
            problems.push("staff.jwks_url", format!("'{url}' {e}"));
        }
        if let Some(ca) = &raw.jwks_ca
            && checks == FileChecks::Required
        {
            if !ca.is_file() {
                problems.push(
                    "staff.jwks_ca",
                    format!("file '{}' does not exist", ca.display()),
                );
            } else if let Some(problem) = crate::security::tls::check_client_roots(ca) {
                problems.push("staff.jwks_ca", problem);
            }
        }
        let refresh = raw.jwks_refresh_secs.unwrap_or(3600);
        if refresh < 60 {
            problems.push("staff.jwks_refresh_secs", "must be at least 60");
        }
        JwksUrl {
            url,
            ca: raw.jwks_ca.clone(),
            refresh: std::time::Duration::from_secs(refresh),
        }
    });
    let auth = match (raw.jwks_file, &jwks_url) {
        (None, None) => {
            problems.push(
                "staff.jwks_file",
                "[staff] needs the identity provider's signing keys: jwks_file, jwks_url, or both",
            );
            return None;
        }
        (None, Some(_)) => crate::staff_auth::tokens::StaffAuth::awaiting_fetch(policy),
        (Some(jwks_file), _) => {
            let text = match std::fs::read_to_string(&jwks_file) {
                Ok(text) => text,
                Err(e) => {
                    if checks == FileChecks::Required {
                        problems.push(
                            "staff.jwks_file",
                            format!("cannot read '{}': {e}", jwks_file.display()),
                        );
                    }
                    return None;
                }
            };
            match crate::staff_auth::tokens::StaffAuth::from_jwks(&text, policy) {
                Ok(auth) => auth,
                Err(e) => {
                    problems.push("staff.jwks_file", format!("'{}': {e}", jwks_file.display()));
                    return None;
                }
            }
        }
    };
    if auth.trusts_dev_key() && !dev_tokens {
        problems.push(
            "staff.jwks_file",
            "trusts the published development staff-token key (whatever its kid); set staff.dev_tokens = true in development only, never in production",
        );
    }
    Some(StaffConfig {
        listen,
        auth: Arc::new(auth),
        jwks_url,
        dev_tokens,
        dev_signing_key,
    })
}

/// `[staff] issuer` as configured (the console's OpenID provider by default).
pub(super) fn issuer(raw: &RawStaff) -> Option<String> {
    raw.issuer.clone()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::NoEnv;
    use crate::config::testing::{base, load};

    #[test]
    fn staff_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        // The published development key, under another kid: recognised by its material.
        let jwks = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-example/staff-jwks.json"),
        )
        .unwrap()
        .replace(crate::staff_auth::tokens::DEV_KEY_ID, "idp-signing-2026");
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks).unwrap();
        let staff = |extra: &str| {
            format!(
                "[staff]\nlisten = \"127.0.0.1:0\"\njwks_file = \"{}\"\n{extra}\n",
                jwks_path.display()
            )
        };
        let err = load(
            &(base() + &staff("algorithms = [\"HS256\", \"none\"]\nleeway_secs = 3600")),
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "staff.issuer: is required",
            "staff.audience: is required",
            "staff.algorithms: 'HS256' is not allowed",
            "staff.algorithms: 'none' is not allowed",
            "staff.leeway_secs",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        let complete = staff("issuer = \"https://idp\"\naudience = \"gw\"");
        let err = load(&(base() + &complete), &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains("staff.jwks_file: trusts the published development"),
            "{err}"
        );
        let dev = "dev_tokens = true\ndev_signing_key = \"certs-example/staff-dev.key\"\n";
        let config = load(&(base() + &complete + dev), &NoEnv).unwrap();
        let staff = config.staff.unwrap();
        assert!(staff.dev_tokens && staff.auth.trusts_dev_key());
        assert_eq!(staff.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert!(load(&base(), &NoEnv).unwrap().staff.is_none());

        let by_url = |url: &str| {
            format!(
                "[staff]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"{url}\"\njwks_refresh_secs = 5\njwks_ca = \"/nonexistent/ca.pem\"\n"
            )
        };
        let err = [
            "http://idp.example/jwks",
            "http://127.0.0.1@idp.example/jwks",
            "http://localhost.idp.example/jwks",
        ]
        .iter()
        .map(|u| {
            load(&(base() + &by_url(u)), &NoEnv)
                .unwrap_err()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
        for needle in [
            "staff.jwks_url: 'http://idp.example/jwks' must be an https:// URL",
            "staff.jwks_url: 'http://127.0.0.1@idp.example/jwks' must not hold a user name",
            "staff.jwks_url: 'http://localhost.idp.example/jwks' must be an https:// URL",
            "staff.jwks_refresh_secs: must be at least 60",
            "staff.jwks_ca: file '/nonexistent/ca.pem' does not exist",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        // A file that exists but holds no certificate: refused by the check, not first
        // by `serve` after the migrations.
        let not_pem = "[staff]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"https://idp.example/jwks\"\njwks_ca = \"Cargo.toml\"\n";
        let err = load(&(base() + not_pem), &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains("staff.jwks_ca: Cargo.toml holds no CERTIFICATE block"),
            "{err}"
        );
        // Settings of a JWKS URL that is not there are refused, not ignored.
        let orphan = format!(
            "{}jwks_ca = \"certs-example/ca.crt\"\njwks_refresh_secs = 600\n",
            complete
        );
        let err = load(&(base() + &orphan), &NoEnv).unwrap_err().to_string();
        for key in ["staff.jwks_ca", "staff.jwks_refresh_secs"] {
            assert!(
                err.contains(&format!("{key}: is used only with staff.jwks_url")),
                "{err}"
            );
        }
        let neither = "[staff]\nissuer = \"i\"\naudience = \"a\"\n";
        let err = load(&(base() + neither), &NoEnv).unwrap_err().to_string();
        assert!(err.contains("jwks_file, jwks_url, or both"), "{err}");
        let fine =
            "[staff]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"https://idp.example/jwks\"\n";
        let staff = load(&(base() + fine), &NoEnv).unwrap().staff.unwrap();
        assert_eq!(staff.jwks_url.unwrap().refresh.as_secs(), 3600);
        assert!(!staff.auth.trusts_dev_key());
    }
}
