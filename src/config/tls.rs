//! `[tls]`: the scheme CA, the server certificate and key, CRLs, and the directory of
//! issued agency certificates.

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
    #[serde(default)]
    issued_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crls: Vec<PathBuf>,
    pub crl_enforce_expiry: bool,
    /// Where `certs issue` output is kept: the agencies' certificates whose days to
    /// expiry `refgw_agency_certificate_expiry_days` reports.
    pub issued_dir: Option<PathBuf>,
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
    if let Some(dir) = &raw.issued_dir
        && checks == FileChecks::Required
        && !dir.is_dir()
    {
        problems.push(
            "tls.issued_dir",
            format!("directory '{}' does not exist", dir.display()),
        );
    }
}

pub(super) fn build_tls(raw: RawTls) -> TlsConfig {
    TlsConfig {
        ca: raw.ca,
        cert: raw.cert,
        key: raw.key,
        crls: raw.crls,
        crl_enforce_expiry: raw.crl_enforce_expiry,
        issued_dir: raw.issued_dir,
    }
}
