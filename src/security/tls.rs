//! TLS for the agency listener: rustls with the ring provider only, TLS 1.2 and 1.3,
//! client certificates mandatory and verified against the scheme CA (and CRLs when
//! configured), plus reading what a verified client certificate says about its holder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::extensions::GeneralName;

use crate::config::TlsConfig;
use crate::domain::agency::PresentedIdentity;
use crate::security::handshake::{ReloadableVerifier, ReportingVerifier};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read PEM from {path}: {message}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{key}: {path} holds no {what}")]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("tls.ca: certificate in {path} cannot be used as a trust anchor: {message}")]
    BadCa { path: PathBuf, message: String },
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("server certificate and key: {0}")]
    ServerCert(String),
}

/// The ring provider. Every rustls config in the gateway is built from this, so no
/// other provider (aws-lc) can be picked up by accident.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(key: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        key,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.to_owned(),
            what: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// Whether `path` holds certificates usable as trust anchors for the gateway's own HTTPS
/// calls (the identity provider's JWKS and OpenID Connect endpoints): the problem, for
/// the configuration check (which names the key itself), or nothing.
pub fn check_client_roots(path: &Path) -> Option<String> {
    let certs = match load_certs("", path) {
        Ok(certs) => certs,
        Err(TlsError::Pem { path, message, .. }) => {
            return Some(format!(
                "cannot read PEM from {}: {message}",
                path.display()
            ));
        }
        Err(TlsError::Empty { path, what, .. }) => {
            return Some(format!("{} holds no {what}", path.display()));
        }
        Err(other) => return Some(other.to_string()),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        if let Err(e) = roots.add(cert) {
            return Some(format!(
                "a certificate in {} cannot be used as a trust anchor: {e}",
                path.display()
            ));
        }
    }
    None
}

pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(key, path, e))
}

pub fn load_crls(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut crls = Vec::new();
    for path in paths {
        let before = crls.len();
        for crl in CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| pem_error("tls.crls", path, e))?
        {
            crls.push(crl.map_err(|e| pem_error("tls.crls", path, e))?);
        }
        if crls.len() == before {
            return Err(TlsError::Empty {
                key: "tls.crls",
                path: path.clone(),
                what: "X509 CRL block",
            });
        }
    }
    Ok(crls)
}

/// The client certificate verifier `[tls]` describes: certificates must chain to `tls.ca`
/// and, when `tls.crls` lists CRLs, must not be revoked. With CRLs configured, a
/// certificate whose revocation status no CRL gives (its issuer has none) is refused
/// (`allow_unknown_revocation_status` is not set: fail closed). Built anew from the
/// config, so a reload can make a fresh one and swap it into the running listener's
/// [`ReloadableVerifier`].
pub fn client_verifier(tls: &TlsConfig) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    client_verifier_with(trust_anchors(tls)?, tls)
}

/// The trust anchors of `tls.ca`.
pub fn trust_anchors(tls: &TlsConfig) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certs("tls.ca", &tls.ca)? {
        roots.add(ca).map_err(|e| TlsError::BadCa {
            path: tls.ca.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A client certificate verifier for `roots` with `tls`'s CRLs: what a reload builds,
/// with the trust anchors the gateway started with.
pub fn client_verifier_with(
    roots: Arc<RootCertStore>,
    tls: &TlsConfig,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .with_crls(load_crls(&tls.crls)?);
    if tls.crl_enforce_expiry {
        verifier = verifier.enforce_revocation_expiration();
    }
    verifier
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// The agency listener's TLS: its server config, whose client certificate verifier
/// reports refusals ([`ReportingVerifier`]) and can be replaced while running
/// (`verifier`).
pub struct AgencyTls {
    pub config: ServerConfig,
    pub verifier: Arc<ReloadableVerifier>,
    /// The trust anchors it was built with (`tls.ca`).
    pub roots: Arc<RootCertStore>,
}

/// The server config for the agency (mTLS) listener.
///
/// No session resumption (no session cache, no TLS 1.3 tickets; rustls makes no TLS 1.2
/// tickets unless given a ticketer): a resumed session keeps the client certificate
/// verified when the session began, so a certificate revoked (by a CRL the verifier
/// reloads) or expired since would go on being accepted for as long as the session
/// could be resumed (a day). Every connection is verified in full instead; agencies
/// keep their connections open, so the cost is one handshake per connection.
pub fn server_config(tls: &TlsConfig) -> Result<AgencyTls, TlsError> {
    let roots = trust_anchors(tls)?;
    let verifier = Arc::new(ReloadableVerifier::new(client_verifier_with(
        roots.clone(),
        tls,
    )?));
    let reporting = Arc::new(ReportingVerifier::new(verifier.clone()));
    let builder = versions(provider())?.with_client_cert_verifier(reporting);
    let mut config = with_server_cert(builder, tls)?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(AgencyTls {
        config,
        verifier,
        roots,
    })
}

/// TLS 1.3 and 1.2 only.
fn versions(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError> {
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::ServerCert(e.to_string()))
}

/// The gateway's certificate and key (`tls.cert`, `tls.key`), offering HTTP/2 and 1.1.
fn with_server_cert(
    builder: rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>,
    tls: &TlsConfig,
) -> Result<ServerConfig, TlsError> {
    let mut config = builder
        .with_single_cert(
            load_certs("tls.cert", &tls.cert)?,
            load_key("tls.key", &tls.key)?,
        )
        .map_err(|e| TlsError::ServerCert(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The staff listener's configuration: the same server certificate and protocol versions
/// (TLS 1.2 and 1.3), but no client certificate; staff authenticate with bearer tokens.
pub fn staff_server_config(tls: &TlsConfig) -> Result<ServerConfig, TlsError> {
    with_server_cert(versions(provider())?.with_no_client_auth(), tls)
}

/// What a (verified) client leaf certificate presents: its SHA-256 and SAN names.
/// A certificate that cannot be parsed presents only its fingerprint.
pub fn presented_identity(leaf_der: &[u8]) -> PresentedIdentity {
    let mut presented = PresentedIdentity {
        sha256: super::digest::sha256(leaf_der),
        ..Default::default()
    };
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf_der)
        && let Ok(Some(san)) = cert.subject_alternative_name()
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => presented.san_uris.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => presented.san_dns.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    presented
}
