//! `[audit]`: the signing key, earlier public keys, the person-key secret and
//! checkpoints.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Env, FileChecks, Problems};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    signing_key: Option<PathBuf>,
    previous_public_keys: Option<PathBuf>,
    person_key_secret_file: Option<PathBuf>,
    checkpoint_every: Option<i64>,
    checkpoint_interval_secs: Option<u64>,
    head_file: Option<PathBuf>,
}

/// The disclosure log and the gateway's signing key.
#[derive(Clone)]
pub struct AuditConfig {
    /// Ed25519 PKCS#8 PEM: signs receipts and audit checkpoints.
    pub signing_key: PathBuf,
    /// Public keys of earlier signing keys (a saved `GET /v1/keys` document), so receipts
    /// and checkpoints signed before a rotation still verify.
    pub previous_public_keys: Vec<crate::security::signing::PublicKey>,
    /// HMAC key for person keys (from `REFGW_PERSON_KEY_SECRET` or a file).
    pub person_key_secret: Vec<u8>,
    pub checkpoint_every: i64,
    pub checkpoint_interval: std::time::Duration,
    /// Where the checkpointer also writes the newest signed chain head (JSON), for an
    /// operator to ship off the machine and check with `audit verify --head`.
    pub head_file: Option<PathBuf>,
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("signing_key", &self.signing_key)
            .field(
                "previous_public_keys",
                &self
                    .previous_public_keys
                    .iter()
                    .map(|k| k.key_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("person_key_secret", &"<secret>")
            .field("checkpoint_every", &self.checkpoint_every)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("head_file", &self.head_file)
            .finish()
    }
}

pub(super) fn build_audit(
    raw: RawAudit,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> AuditConfig {
    let signing_key = raw.signing_key.unwrap_or_else(|| {
        problems.push(
            "audit.signing_key",
            "is required (an Ed25519 PKCS#8 PEM file); make one with `referral-gateway certs init`",
        );
        PathBuf::new()
    });
    if checks == FileChecks::Required
        && !signing_key.as_os_str().is_empty()
        && !signing_key.is_file()
    {
        problems.push(
            "audit.signing_key",
            format!(
                "file '{}' does not exist (make one with `referral-gateway certs init`)",
                signing_key.display()
            ),
        );
    }
    let mut obtained = false;
    let secret = match (
        env.var("REFGW_PERSON_KEY_SECRET"),
        raw.person_key_secret_file,
    ) {
        (Some(v), _) => {
            obtained = true;
            v.into_bytes()
        }
        (None, None) => {
            problems.push(
                "audit.person_key_secret_file",
                "is required (at least 32 bytes in a file; or set REFGW_PERSON_KEY_SECRET); make one with `referral-gateway certs init`",
            );
            Vec::new()
        }
        (None, Some(path)) => match std::fs::read(&path) {
            Ok(bytes) => {
                obtained = true;
                bytes.trim_ascii().to_vec()
            }
            Err(e) => {
                if checks == FileChecks::Required {
                    problems.push(
                        "audit.person_key_secret_file",
                        format!(
                            "cannot read '{}': {e} (or set REFGW_PERSON_KEY_SECRET)",
                            path.display()
                        ),
                    );
                }
                Vec::new()
            }
        },
    };
    let previous_public_keys = match &raw.previous_public_keys {
        None => Vec::new(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| crate::security::signing::keys_from_jwks(&text))
        {
            Ok(keys) => keys,
            Err(e) => {
                if checks == FileChecks::Required {
                    problems.push(
                        "audit.previous_public_keys",
                        format!("'{}': {e}", path.display()),
                    );
                }
                Vec::new()
            }
        },
    };
    // Read but empty or short (an empty file, a variable set to nothing): refused, as
    // a missing one is; an HMAC under an empty key would let anyone compute person keys.
    if checks == FileChecks::Required && obtained && secret.len() < 32 {
        problems.push(
            "audit.person_key_secret_file",
            "the person-key secret must be at least 32 bytes (e.g. 64 hex digits); it is empty or shorter",
        );
    }
    let checkpoint_every = raw.checkpoint_every.unwrap_or(1000);
    if checkpoint_every < 1 {
        problems.push("audit.checkpoint_every", "must be at least 1");
    }
    if checks == FileChecks::Required
        && let Some(parent) = raw
            .head_file
            .as_deref()
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        problems.push(
            "audit.head_file",
            format!("directory '{}' does not exist", parent.display()),
        );
    }
    AuditConfig {
        signing_key,
        previous_public_keys,
        person_key_secret: secret,
        checkpoint_every,
        checkpoint_interval: std::time::Duration::from_secs(
            raw.checkpoint_interval_secs.unwrap_or(300).max(1),
        ),
        head_file: raw.head_file,
    }
}

/// Whether the gateway may write `audit.head_file` where it is configured: a file of a
/// random name is created beside it and removed. Checked when `serve` starts (not by the
/// other commands, which never write the head, nor by `config check`, which may run as
/// another user): otherwise every write of the head would fail at run time, only
/// logged (e.g. under a systemd unit with `ProtectSystem=strict` and no
/// `ReadWritePaths=`).
pub fn check_head_file_writable(head_file: &Path) -> Result<(), String> {
    let Some(dir) = head_file.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let probe = dir.join(format!(
        ".refgw-head-probe-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            format!(
                "audit.head_file: cannot write in directory '{}': {e}",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoEnv;
    use crate::config::testing::{base, load};

    #[test]
    fn the_head_file_needs_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let with = |path: &Path| {
            base().replace(
                "[audit]\n",
                &format!("[audit]\nhead_file = \"{}\"\n", path.display()),
            )
        };
        let good = dir.path().join("head.json");
        let c = load(&with(&good), &NoEnv).unwrap();
        assert_eq!(c.audit.head_file.as_deref(), Some(good.as_path()));
        let err = load(&with(&dir.path().join("missing/head.json")), &NoEnv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("audit.head_file: directory"), "{err}");
    }

    #[test]
    fn an_empty_or_short_person_key_secret_stops_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = format!(
            "person_key_secret_file = \"{}/certs-example/person-key.secret\"",
            env!("CARGO_MANIFEST_DIR")
        );
        assert!(base().contains(&shipped));
        for (name, contents) in [("empty", ""), ("newline", "\n"), ("short", "0123456789\n")] {
            let file = dir.path().join(name);
            std::fs::write(&file, contents).unwrap();
            let text = base().replace(
                &shipped,
                &format!("person_key_secret_file = \"{}\"", file.display()),
            );
            let err = load(&text, &NoEnv).unwrap_err().to_string();
            assert!(
                err.contains(
                    "audit.person_key_secret_file: the person-key secret must be at least 32 bytes"
                ),
                "{name}: {err}"
            );
        }
    }
}
