//! `[storage]`: the payload encryption keys and retention.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Env, FileChecks, Problems};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    payload_key_file: Option<PathBuf>,
    #[serde(default)]
    previous_payload_key_files: Vec<PathBuf>,
    retention_days: Option<u32>,
}

/// Encryption of referral payloads at rest, and their retention.
#[derive(Clone)]
pub struct StorageConfig {
    /// Hex text of the current AES-256 key, and of earlier keys still needed to read.
    pub payload_key: String,
    pub previous_payload_keys: Vec<String>,
    /// Default for `purge --older-than`.
    pub retention_days: u32,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("payload_key", &"<secret>")
            .field("previous_payload_keys", &self.previous_payload_keys.len())
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

impl StorageConfig {
    pub fn payload_keys(
        &self,
    ) -> Result<crate::security::sealing::PayloadKeys, crate::security::sealing::SealError> {
        crate::security::sealing::PayloadKeys::new(&self.payload_key, &self.previous_payload_keys)
    }
}

pub(super) fn build_storage(
    raw: RawStorage,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> StorageConfig {
    let read = |path: &Path, key: &str, problems: &mut Problems| match std::fs::read_to_string(path)
    {
        Ok(text) => text.trim().to_owned(),
        Err(e) => {
            if checks == FileChecks::Required {
                problems.push(key, format!("cannot read '{}': {e}", path.display()));
            }
            String::new()
        }
    };
    let payload_key = match (env.var("REFGW_PAYLOAD_KEY"), raw.payload_key_file) {
        (Some(v), _) => v,
        (None, Some(path)) => read(&path, "storage.payload_key_file", problems),
        (None, None) => {
            problems.push(
                "storage.payload_key_file",
                "is required (64 hex digits in a file; or set REFGW_PAYLOAD_KEY); make one with `referral-gateway certs init`",
            );
            String::new()
        }
    };
    let previous_payload_keys: Vec<String> = raw
        .previous_payload_key_files
        .iter()
        .map(|p| read(p, "storage.previous_payload_key_files", problems))
        .collect();
    let storage = StorageConfig {
        payload_key,
        previous_payload_keys,
        retention_days: raw.retention_days.unwrap_or(365),
    };
    if checks == FileChecks::Required
        && !storage.payload_key.is_empty()
        && let Err(e) = storage.payload_keys()
    {
        problems.push("storage.payload_key_file", e);
    }
    if !(1..=MAX_RETENTION_DAYS).contains(&storage.retention_days) {
        problems.push(
            "storage.retention_days",
            format!("must be from 1 to {MAX_RETENTION_DAYS} (100 years)"),
        );
    }
    storage
}

/// The longest retention a purge accepts (`storage.retention_days`, `purge --older-than`).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
