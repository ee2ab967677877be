//! `profile`: development or production, and in production the refusal of the
//! material published in `certs-example/`.

use std::path::Path;

use super::{AuditConfig, FileChecks, Problems, StaffConfig, StorageConfig, TlsConfig};
use crate::security::published::Profile;

pub(super) fn build_profile(raw: Option<&str>, problems: &mut Problems) -> Profile {
    match raw {
        None => Profile::Production,
        Some(text) => text.parse().unwrap_or_else(|()| {
            problems.push("profile", "must be \"development\" or \"production\"");
            Profile::Production
        }),
    }
}

/// Outside the development profile: no key, secret, certificate or JWKS entry may be
/// one of those published in `certs-example/` (compared by content), and development
/// tokens are off.
pub(super) fn refuse_published_material(
    tls: &TlsConfig,
    audit: &AuditConfig,
    storage: &StorageConfig,
    staff: Option<&StaffConfig>,
    checks: FileChecks,
    problems: &mut Problems,
) {
    use crate::security::published;
    let advice = "published in certs-example/ and never for real data; make your own with `referral-gateway certs init` (or set profile = \"development\")";
    let mut files: Vec<(&str, &Path)> = vec![("audit.signing_key", &audit.signing_key)];
    if checks == FileChecks::Required {
        files.extend([
            ("tls.ca", tls.ca.as_path()),
            ("tls.cert", tls.cert.as_path()),
            ("tls.key", tls.key.as_path()),
        ]);
    }
    for (key, path) in files {
        if let Ok(bytes) = std::fs::read(path)
            && let Some(what) = published::published_pem(&bytes)
        {
            problems.push(key, format!("'{}' holds {what}, {advice}", path.display()));
        }
    }
    if published::is_published_payload_key(&storage.payload_key)
        || storage
            .previous_payload_keys
            .iter()
            .any(|k| published::is_published_payload_key(k))
    {
        problems.push(
            "storage.payload_key_file",
            format!("is the development payload key, {advice}"),
        );
    }
    if published::is_published_person_key_secret(&audit.person_key_secret) {
        problems.push(
            "audit.person_key_secret_file",
            format!("is the development person-key secret, {advice}"),
        );
    }
    if let Some(staff) = staff {
        if staff.dev_tokens {
            problems.push(
                "staff.dev_tokens",
                "must be false outside profile = \"development\": anyone who can read the development key could mint staff tokens",
            );
        }
        if staff.auth.trusts_dev_key() {
            problems.push(
                "staff.jwks_file",
                format!("trusts the development staff-token key, {advice}"),
            );
        }
    }
}
