//! Certificates made with rcgen (ECDSA P-256, ring): a scheme CA, the gateway's server
//! certificate, one client certificate per agency, and CRLs. Used by `certs init` and by
//! the tests. Development and testing only: a production scheme CA lives elsewhere.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
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
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; pass --force to overwrite the certificate set")]
    Exists(PathBuf),
    #[error("'{0}' cannot be put in a certificate name")]
    BadName(String),
    #[error("{0}")]
    Refused(String),
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

/// A certificate's parameters; the subject is `CN = common_name`, with `O = organisation`
/// when given (only the development CA of `certs init` has one: an agency's or the
/// server's certificate issued by a scheme's CA must not claim to be for development).
fn base_params(
    common_name: &str,
    organisation: Option<&str>,
    validity_days: i64,
) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(organisation) = organisation {
        dn.push(DnType::OrganizationName, organisation);
    }
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
    /// A development CA (`O = Referral gateway (development)`), for tests and `certs init`
    /// without `--ca-name`.
    pub fn new(common_name: &str, validity_days: i64) -> Result<Self, CertsError> {
        Self::named(
            common_name,
            Some("Referral gateway (development)"),
            validity_days,
        )
    }

    /// A new self-signed CA whose subject is `CN = common_name` (and `O = organisation`).
    pub fn named(
        common_name: &str,
        organisation: Option<&str>,
        validity_days: i64,
    ) -> Result<Self, CertsError> {
        let mut params = base_params(common_name, organisation, validity_days)?;
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

    /// The scheme CA from its certificate and private key (PEM), for `certs issue` and
    /// `certs revoke`; certificates it issues are valid for `validity_days`. Refuses a
    /// key that is not the certificate's.
    pub fn load(cert_pem: &str, key_pem: &str, validity_days: i64) -> Result<Self, CertsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertsError::Refused(format!("--ca-cert: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| CertsError::Refused(format!("--ca-cert: {e}")))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertsError::Refused(
                "--ca-key is not the key of --ca-cert".to_owned(),
            ));
        }
        if !cert.is_ca() {
            return Err(CertsError::Refused(
                "--ca-cert is not a CA certificate (basicConstraints cA)".to_owned(),
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        // The issuer name is rebuilt from the CA's (rcgen keeps one value per attribute
        // type, and its own string types): what it writes must be the CA's subject byte
        // for byte, or nothing issued with it (certificates, CRLs) would chain to the CA.
        let probe_key = KeyPair::generate()?;
        let probe = CertificateParams::default().signed_by(&probe_key, &issuer)?;
        let (_, probe) = x509_parser::parse_x509_certificate(probe.der())
            .map_err(|e| CertsError::Refused(format!("--ca-cert: {e}")))?;
        if probe.issuer().as_raw() != cert.subject().as_raw() {
            return Err(CertsError::Refused(
                "--ca-cert's name cannot be reproduced exactly (it repeats an attribute type, such as two OU or DC values, or uses string types this tool does not keep): what it issued would not chain to the CA; issue with the CA's own tooling".to_owned(),
            ));
        }
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            validity_days,
        })
    }

    /// A client certificate for the public key of a certificate signing request (whose
    /// signature is checked), carrying `name` as its only SAN and the clientAuth EKU;
    /// whatever else the request asks for (names, usages) is ignored. Refuses keys other
    /// than ECDSA P-256/P-384, Ed25519 and RSA of 2048 to 8192 bits.
    pub fn issue_client_for_csr(
        &self,
        common_name: &str,
        name: &ClientName,
        csr_pem: &str,
    ) -> Result<IssuedCert, CertsError> {
        let spki = checked_csr_key(csr_pem)?;
        let public = rcgen::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| CertsError::Refused(format!("the request's key is not supported: {e}")))?;
        let params =
            self.client_params(common_name, name, ExtendedKeyUsagePurpose::ClientAuth, None)?;
        let cert = params.signed_by(&public, &self.issuer)?;
        IssuedCert::of(cert.der())
    }

    /// The parameters of a client certificate (`validity` overrides the usual
    /// yesterday-to-`validity_days` span; tests make expired ones).
    fn client_params(
        &self,
        common_name: &str,
        name: &ClientName,
        usage: ExtendedKeyUsagePurpose,
        validity: Option<(OffsetDateTime, OffsetDateTime)>,
    ) -> Result<CertificateParams, CertsError> {
        let mut params = base_params(common_name, None, self.validity_days)?;
        params.subject_alt_names = vec![san(name)?];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        if let Some((not_before, not_after)) = validity {
            params.not_before = not_before;
            params.not_after = not_after;
        }
        Ok(params)
    }

    /// A client certificate and a new key with any extended key usage and validity: for
    /// tests of refused certificates (expired, not yet valid, server-only).
    pub fn issue_client_with(
        &self,
        common_name: &str,
        name: &ClientName,
        usage: ExtendedKeyUsagePurpose,
        validity: (OffsetDateTime, OffsetDateTime),
    ) -> Result<Issued, CertsError> {
        let params = self.client_params(common_name, name, usage, Some(validity))?;
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

    /// A CRL holding `previous`'s entries (when given: a CRL this CA issued, PEM) and
    /// `serial`, numbered one past `previous`, valid for `valid_for`.
    pub fn crl_adding(
        &self,
        previous: Option<&str>,
        serial: &[u8],
        reason: Option<RevocationReason>,
        valid_for: Duration,
    ) -> Result<(String, usize), CertsError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        let mut number = vec![0u8];
        if let Some(previous) = previous {
            let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(
                previous.as_bytes(),
            )
            .map_err(|e| CertsError::Refused(format!("--crl: {e}")))?;
            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
                .map_err(|e| CertsError::Refused(format!("--crl: {e}")))?;
            let ca_der =
                rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
                    .map_err(|e| CertsError::Refused(format!("--ca-cert: {e}")))?;
            let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref())
                .map_err(|e| CertsError::Refused(format!("--ca-cert: {e}")))?;
            crl.verify_signature(ca.public_key())
                .map_err(|_| CertsError::Refused("--crl was not issued by --ca-cert".to_owned()))?;
            if let Some(n) = crl.crl_number() {
                number = n.to_bytes_be();
            }
            for entry in crl.iter_revoked_certificates() {
                revoked.push(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(trim_serial(entry.raw_serial())),
                    revocation_time: entry.revocation_date.to_datetime(),
                    reason_code: entry.reason_code().and_then(|(_, code)| reason_of(code.0)),
                    invalidity_date: None,
                });
            }
        }
        let serial = trim_serial(serial);
        if !revoked
            .iter()
            .any(|r| trim_serial(r.serial_number.as_ref()) == serial)
        {
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: now,
                reason_code: reason,
                invalidity_date: None,
            });
        }
        let count = revoked.len();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + valid_for,
            crl_number: SerialNumber::from_slice(&increment(&number)),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok((params.signed_by(&self.issuer)?.pem()?, count))
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, CertsError> {
        let mut params = base_params(common_name, None, self.validity_days)?;
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
        self.issue(
            common_name,
            vec![san(name)?],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
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

/// What `certs issue` reports about a certificate it made.
pub struct IssuedCert {
    pub cert_pem: String,
    pub serial: Vec<u8>,
    pub sha256: [u8; 32],
    pub not_after: OffsetDateTime,
}

impl IssuedCert {
    fn of(der: &[u8]) -> Result<Self, CertsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertsError::Refused(format!("issued certificate: {e}")))?;
        Ok(Self {
            cert_pem: pem_block("CERTIFICATE", der),
            serial: cert.raw_serial().to_vec(),
            sha256: crate::security::digest::sha256(der),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn san(name: &ClientName) -> Result<SanType, CertsError> {
    Ok(match name {
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
    })
}

/// The DER SubjectPublicKeyInfo of a CSR whose signature checks and whose key is one
/// the gateway accepts.
fn checked_csr_key(csr_pem: &str) -> Result<Vec<u8>, CertsError> {
    use x509_parser::prelude::FromDer;
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| CertsError::Refused(format!("--csr: {e}")))?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CertsError::Refused(format!("--csr: {e}")))?;
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match (algorithm.as_str(), curve.as_deref()) {
        // id-ecPublicKey on P-256 or P-384
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7" | "1.3.132.0.34")) => {}
        ("1.2.840.10045.2.1", _) => {
            return Err(CertsError::Refused(
                "the request's EC key is not on P-256 or P-384".to_owned(),
            ));
        }
        // Ed25519
        ("1.3.101.112", _) => {}
        // rsaEncryption
        ("1.2.840.113549.1.1.1", _) => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => 0,
            };
            if !(2048..=8192).contains(&bits) {
                return Err(CertsError::Refused(format!(
                    "the request's RSA key has {bits} bits; 2048 to 8192 are accepted"
                )));
            }
        }
        (other, _) => {
            return Err(CertsError::Refused(format!(
                "the request's key type ({other}) is not accepted: use ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits"
            )));
        }
    }
    // The request's signature: proof that its sender holds the key (checked once the key is
    // one we accept: ring refuses to verify with RSA keys under 2048 bits). What else it
    // asks for, names or usages, is not used.
    csr.verify_signature().map_err(|_| {
        CertsError::Refused(
            "the certificate signing request's signature does not verify".to_owned(),
        )
    })?;
    Ok(spki.raw.to_vec())
}

/// A serial number without the sign byte DER may put in front.
fn trim_serial(serial: &[u8]) -> &[u8] {
    let start = serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len().saturating_sub(1));
    &serial[start..]
}

/// A big-endian unsigned number plus one.
fn increment(number: &[u8]) -> Vec<u8> {
    let mut out = number.to_vec();
    for byte in out.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return out;
        }
    }
    out.insert(0, 1);
    out
}

fn reason_of(code: u8) -> Option<RevocationReason> {
    Some(match code {
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => return None,
    })
}

/// A certificate's serial number, SAN names, fingerprint and validity, as `certs
/// revoke` and `certs expiring` read it.
pub struct CertificateFacts {
    pub serial: Vec<u8>,
    pub presented: crate::domain::agency::PresentedIdentity,
    pub not_after: OffsetDateTime,
    pub issuer_matches: bool,
}

/// Reads `der` (a certificate); `issuer_of` is the CA it should come from.
pub fn certificate_facts(
    der: &[u8],
    ca_cert_pem: Option<&str>,
) -> Result<CertificateFacts, CertsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertsError::Refused(format!("not an X.509 certificate: {e}")))?;
    let issuer_matches = match ca_cert_pem {
        None => true,
        Some(pem) => {
            let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| CertsError::Refused(format!("--ca-cert: {e}")))?;
            let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref())
                .map_err(|e| CertsError::Refused(format!("--ca-cert: {e}")))?;
            cert.verify_signature(Some(ca.public_key())).is_ok()
        }
    };
    Ok(CertificateFacts {
        serial: cert.raw_serial().to_vec(),
        presented: crate::security::tls::presented_identity(der),
        not_after: cert.validity().not_after.to_datetime(),
        issuer_matches,
    })
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
    // Written whole beside the target with its final mode from the start (a key is never
    // readable by others, not even for a moment; a certificate or CRL is readable by the
    // gateway's user whatever the umask), then renamed over it.
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let written = (|| {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        let mode = if private { 0o600 } else { 0o644 };
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&partial)?;
        // The mode given at creation is masked by the umask: set it exactly.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(err(e));
    }
    std::fs::rename(&partial, path).map_err(err)
}

/// The files `init` writes at the top of its directory: none may exist already (unless
/// forced), so that a key set in use is never replaced by a run into the wrong directory.
const INIT_FILES: [&str; 9] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "gateway-signing.key",
    "person-key.secret",
    "payload.key",
    "staff-dev.key",
    "staff-jwks.json",
];

/// Writes a complete development certificate set to `out`:
/// `ca.crt`/`ca.key`, `server.crt`/`server.key`, `agencies/<id>.crt`/`.key` for every
/// agency in the registry, `unregistered/` (CA-signed, maps to no agency) and `rogue/`
/// (signed by a different CA).
pub fn init(
    out: &Path,
    registry: &AgencyRegistry,
    server_names: &[String],
    ca_name: Option<&str>,
    validity_days: i64,
    force: bool,
) -> Result<Vec<Written>, CertsError> {
    if !force && let Some(existing) = INIT_FILES.iter().map(|f| out.join(f)).find(|p| p.exists()) {
        return Err(CertsError::Exists(existing));
    }
    let mut written = Vec::new();
    let mut put = |what: String, path: PathBuf, contents: &str, private: bool, note| {
        write(&path, contents, private).map(|()| written.push(Written { what, path, note }))
    };

    // A scheme's CA is named for the scheme; without a name, the development CA.
    let ca = match ca_name {
        Some(name) => Authority::named(name, None, validity_days)?,
        None => Authority::new("Referral gateway development CA", validity_days)?,
    };
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

/// Writes `contents` to `path` (parent directories made), mode 0600 when `private`.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertsError> {
    write(path, contents, private)
}

/// A certificate found in the issued-certificates directory.
pub struct IssuedFile {
    pub path: PathBuf,
    pub serial: Vec<u8>,
    pub not_after: OffsetDateTime,
}

/// At most this many files of the directory are read.
const MAX_ISSUED_FILES: usize = 10_000;

/// The serial numbers (without leading zero bytes) revoked by the CRLs in these PEM
/// files, each of which may hold several CRLs.
pub fn revoked_serials(crls: &[PathBuf]) -> Result<Vec<Vec<u8>>, CertsError> {
    let mut serials = Vec::new();
    for path in crls {
        let text = std::fs::read(path).map_err(|source| CertsError::Read {
            path: path.clone(),
            source,
        })?;
        let mut blocks = 0;
        for der in rustls::pki_types::CertificateRevocationListDer::pem_slice_iter(&text) {
            blocks += 1;
            let der = der.map_err(|e| CertsError::Refused(format!("{}: {e}", path.display())))?;
            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
                .map_err(|e| CertsError::Refused(format!("{}: {e}", path.display())))?;
            serials.extend(
                crl.iter_revoked_certificates()
                    .map(|entry| trim_serial(entry.raw_serial()).to_vec()),
            );
        }
        if blocks == 0 {
            return Err(CertsError::Refused(format!(
                "{}: holds no PEM CRL (-----BEGIN X509 CRL-----)",
                path.display()
            )));
        }
    }
    Ok(serials)
}

/// The certificates (`*.crt`, PEM; the first certificate of each file) in `dir` that
/// belong to a registered agency (by SAN or fingerprint, as the gateway identifies
/// clients), sorted by agency and expiry. Files that are not certificates, certificates
/// of no agency, and those whose serial is in `revoked` ([`revoked_serials`]: a revoked
/// certificate will never be renewed) are skipped.
pub fn issued_certificates(
    dir: &Path,
    registry: &AgencyRegistry,
    revoked: &[Vec<u8>],
) -> Result<Vec<(String, IssuedFile)>, CertsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CertsError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries.take(MAX_ISSUED_FILES).flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let Ok(der) = rustls::pki_types::CertificateDer::from_pem_file(&path) else {
            continue;
        };
        let Ok(facts) = certificate_facts(der.as_ref(), None) else {
            continue;
        };
        let serial = trim_serial(&facts.serial);
        if revoked.iter().any(|r| r.as_slice() == serial) {
            continue;
        }
        if let Some(agency) = registry.identify(&facts.presented) {
            found.push((
                agency.id.to_string(),
                IssuedFile {
                    path,
                    serial: facts.serial,
                    not_after: facts.not_after,
                },
            ));
        }
    }
    found.sort_by(|a, b| (&a.0, a.1.not_after).cmp(&(&b.0, b.1.not_after)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_numbers_count_up_and_serials_lose_their_sign_byte() {
        assert_eq!(increment(&[0]), vec![1]);
        assert_eq!(increment(&[0x01, 0xff]), vec![0x02, 0x00]);
        assert_eq!(increment(&[0xff]), vec![0x01, 0x00]);
        assert_eq!(trim_serial(&[0, 0x80, 1]), &[0x80, 1]);
        assert_eq!(trim_serial(&[0x12]), &[0x12]);
        assert_eq!(trim_serial(&[0]), &[0]);
    }

    /// A CRL made by `crl_adding` keeps earlier entries, adds one serial once, and
    /// counts its number up; a CRL from another CA is refused.
    #[test]
    fn crls_grow_and_belong_to_their_ca() {
        let ca = Authority::new("Test CA", 30).unwrap();
        let week = Duration::days(7);
        let (first, n) = ca.crl_adding(None, &[0x01, 0x02], None, week).unwrap();
        assert_eq!(n, 1);
        let (second, n) = ca
            .crl_adding(Some(&first), &[0x00, 0x03], None, week)
            .unwrap();
        assert_eq!(n, 2);
        let (third, n) = ca.crl_adding(Some(&second), &[0x03], None, week).unwrap();
        assert_eq!(n, 2, "the same serial is listed once");
        let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(third.as_bytes())
            .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).unwrap();
        assert_eq!(
            crl.crl_number().map(|n| n.to_string()).as_deref(),
            Some("3")
        );
        let other = Authority::new("Other CA", 30).unwrap();
        assert!(other.crl_adding(Some(&third), &[0x04], None, week).is_err());
    }
}
