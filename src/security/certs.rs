//! Certificates made with rcgen (ECDSA P-256, ring): a scheme CA, the gateway's server
//! certificate, one client certificate per agency, and CRLs. Used by `certs init` and by
//! the tests. Development and testing only: a production scheme CA lives elsewhere.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::domain::{AgencyRegistry, CertificateIdentity};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; pass --force to overwrite the certificate set")]
    Exists(PathBuf),
    #[error("'{0}' cannot be put in a certificate name")]
    BadName(String),
}

/// A PEM certificate and its PEM private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: Vec<u8>,
    pub sha256: [u8; 32],
}

/// The name a client certificate carries.
#[derive(Debug, Clone)]
pub enum ClientName {
    Uri(String),
    Dns(String),
}

/// A certificate authority that can issue server and client certificates and CRLs.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    key_pem: String,
    validity_days: i64,
}

fn random_serial() -> Result<Vec<u8>, CertsError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertsError::Rcgen(rcgen::Error::RingUnspecified))?;
    bytes[0] &= 0x7f; // positive INTEGER
    Ok(bytes.to_vec())
}

fn base_params(common_name: &str, validity_days: i64) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Referral gateway (development)");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(validity_days);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl Authority {
    pub fn new(common_name: &str, validity_days: i64) -> Result<Self, CertsError> {
        let mut params = base_params(common_name, validity_days)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.use_authority_key_identifier_extension = false;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            validity_days,
        })
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, CertsError> {
        let mut params = base_params(common_name, self.validity_days)?;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            sha256: crate::security::digest::sha256(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, CertsError> {
        let sans = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| CertsError::BadName(n.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cn = names.first().map_or("referral-gateway", String::as_str);
        self.issue(cn, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate carrying one SAN.
    pub fn issue_client(&self, common_name: &str, name: &ClientName) -> Result<Issued, CertsError> {
        let san = match name {
            ClientName::Uri(u) => SanType::URI(
                u.clone()
                    .try_into()
                    .map_err(|_| CertsError::BadName(u.clone()))?,
            ),
            ClientName::Dns(d) => SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|_| CertsError::BadName(d.clone()))?,
            ),
        };
        self.issue(common_name, vec![san], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A CRL revoking the given serial numbers, valid for `valid_for`.
    pub fn crl(
        &self,
        revoked_serials: &[&[u8]],
        valid_for: Duration,
    ) -> Result<String, CertsError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + valid_for,
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// The SAN that `certs init` writes for an agency: its configured name, or for a pinned
/// agency a URI of the conventional form (the operator then pins the new fingerprint).
pub fn client_name_for(id: &str, identity: &CertificateIdentity) -> ClientName {
    match identity {
        CertificateIdentity::SanUri(u) => ClientName::Uri(u.clone()),
        CertificateIdentity::SanDns(d) => ClientName::Dns(d.clone()),
        CertificateIdentity::Sha256(_) => ClientName::Uri(conventional_uri(id)),
    }
}

pub fn conventional_uri(agency_id: &str) -> String {
    format!("urn:referral-gateway:agency:{agency_id}")
}

/// One line of `certs init`'s report.
pub struct Written {
    pub what: String,
    pub path: PathBuf,
    pub note: Option<String>,
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, contents).map_err(err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

/// Writes a complete development certificate set to `out`:
/// `ca.crt`/`ca.key`, `server.crt`/`server.key`, `agencies/<id>.crt`/`.key` for every
/// agency in the registry, `unregistered/` (CA-signed, maps to no agency) and `rogue/`
/// (signed by a different CA).
pub fn init(
    out: &Path,
    registry: &AgencyRegistry,
    server_names: &[String],
    validity_days: i64,
    force: bool,
) -> Result<Vec<Written>, CertsError> {
    if !force && out.join("ca.crt").exists() {
        return Err(CertsError::Exists(out.join("ca.crt")));
    }
    let mut written = Vec::new();
    let mut put = |what: String, path: PathBuf, contents: &str, private: bool, note| {
        write(&path, contents, private).map(|()| written.push(Written { what, path, note }))
    };

    let ca = Authority::new("Referral gateway development CA", validity_days)?;
    put(
        "scheme CA certificate".into(),
        out.join("ca.crt"),
        &ca.cert_pem,
        false,
        None,
    )?;
    put(
        "scheme CA key".into(),
        out.join("ca.key"),
        ca.key_pem(),
        true,
        None,
    )?;

    let server = ca.issue_server(server_names)?;
    put(
        "server certificate".into(),
        out.join("server.crt"),
        &server.cert_pem,
        false,
        None,
    )?;
    put(
        "server key".into(),
        out.join("server.key"),
        &server.key_pem,
        true,
        None,
    )?;

    for agency in registry.agencies() {
        let name = client_name_for(agency.id.as_str(), &agency.certificate);
        let issued = ca.issue_client(&agency.name, &name)?;
        let note = matches!(agency.certificate, CertificateIdentity::Sha256(_)).then(|| {
            format!(
                "agency is pinned by fingerprint: set its certificate.sha256 = \"{}\"",
                crate::security::digest::fingerprint_hex(&issued.sha256)
            )
        });
        let dir = out.join("agencies");
        put(
            format!("client certificate for {}", agency.id),
            dir.join(format!("{}.crt", agency.id)),
            &issued.cert_pem,
            false,
            note,
        )?;
        put(
            format!("client key for {}", agency.id),
            dir.join(format!("{}.key", agency.id)),
            &issued.key_pem,
            true,
            None,
        )?;
    }

    let unregistered = ca.issue_client(
        "Unregistered agency",
        &ClientName::Uri(conventional_uri("unregistered-example")),
    )?;
    let dir = out.join("unregistered");
    put(
        "CA-signed client certificate mapping to no agency".into(),
        dir.join("client.crt"),
        &unregistered.cert_pem,
        false,
        None,
    )?;
    put(
        "its key".into(),
        dir.join("client.key"),
        &unregistered.key_pem,
        true,
        None,
    )?;

    let signing = crate::security::signing::GatewayKey::generate_pem()
        .map_err(|_| CertsError::Rcgen(rcgen::Error::RingUnspecified))?;
    put(
        "gateway Ed25519 signing key (receipts, audit checkpoints)".into(),
        out.join("gateway-signing.key"),
        &signing,
        true,
        None,
    )?;
    let secret = {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| CertsError::Rcgen(rcgen::Error::RingUnspecified))?;
        hex::encode(bytes) + "\n"
    };
    put(
        "person-key HMAC secret (audit log)".into(),
        out.join("person-key.secret"),
        &secret,
        true,
        None,
    )?;
    let payload_key = crate::security::sealing::PayloadKeys::generate_hex()
        .map_err(|_| CertsError::Rcgen(rcgen::Error::RingUnspecified))?
        + "\n";
    put(
        "AES-256 key for referral payloads at rest".into(),
        out.join("payload.key"),
        &payload_key,
        true,
        None,
    )?;

    let (staff_key, staff_jwks) = crate::staff_auth::tokens::generate_dev_key()
        .map_err(|_| CertsError::Rcgen(rcgen::Error::RingUnspecified))?;
    put(
        "development staff token key (`referral-gateway dev-token`)".into(),
        out.join("staff-dev.key"),
        &staff_key,
        true,
        None,
    )?;
    put(
        "JWKS trusting the development staff key (staff.jwks_file)".into(),
        out.join("staff-jwks.json"),
        &staff_jwks,
        false,
        None,
    )?;

    let rogue_ca = Authority::new("Rogue CA (not trusted by the gateway)", validity_days)?;
    let first_sender = registry
        .agencies()
        .find(|a| a.role.sends())
        .map(|a| client_name_for(a.id.as_str(), &a.certificate))
        .unwrap_or_else(|| ClientName::Uri(conventional_uri("rogue")));
    let rogue = rogue_ca.issue_client("Rogue client", &first_sender)?;
    let dir = out.join("rogue");
    put(
        "rogue CA certificate".into(),
        dir.join("ca.crt"),
        &rogue_ca.cert_pem,
        false,
        None,
    )?;
    put(
        "client certificate from the rogue CA (same SAN as a real sender)".into(),
        dir.join("client.crt"),
        &rogue.cert_pem,
        false,
        None,
    )?;
    put(
        "its key".into(),
        dir.join("client.key"),
        &rogue.key_pem,
        true,
        None,
    )?;
    Ok(written)
}
