//! `[tls]`: the scheme CA, the server certificate and key, and CRLs.

use std::path::PathBuf;

use serde::Deserialize;

use super::{FileChecks, Problems};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default)]
    crl_enforce_expiry: bool,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crls: Vec<PathBuf>,
    pub crl_enforce_expiry: bool,
}

pub(super) fn check_tls_files(raw: &RawTls, checks: FileChecks, problems: &mut Problems) {
    for (key, path) in [
        ("tls.ca", &raw.ca),
        ("tls.cert", &raw.cert),
        ("tls.key", &raw.key),
    ]
    .into_iter()
    .chain(raw.crls.iter().map(|p| ("tls.crls", p)))
    {
        if checks == FileChecks::Required && !path.is_file() {
            problems.push(key, format!("file '{}' does not exist", path.display()));
        }
    }
}

pub(super) fn build_tls(raw: RawTls) -> TlsConfig {
    TlsConfig {
        ca: raw.ca,
        cert: raw.cert,
        key: raw.key,
        crls: raw.crls,
        crl_enforce_expiry: raw.crl_enforce_expiry,
    }
}
