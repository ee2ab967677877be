//! Failed TLS handshakes on the agency and staff listeners, made visible: one `WARN`
//! line with the listener, the peer address, a fixed reason and (when a certificate was
//! sent) its SHA-256 fingerprint, and `refgw_tls_handshake_failures_total{listener,reason}`.
//!
//! The reason and fingerprint come from [`ReportingVerifier`], which wraps the agency
//! listener's client certificate verifier; the address from the connection, which the
//! verifier never sees: both TLS listeners (`startup::tls_server`) run each connection
//! inside [`observe`], a task-local scope the
//! verifier writes into (it runs synchronously inside the handshake, on the
//! connection's task). A handshake that fails before any certificate is checked (no
//! certificate, a client alert, a protocol error, a timeout) is classified from the
//! handshake's own error.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::metrics::Metrics;

/// Why a client was refused: a fixed set (metric labels and log fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The client sent no certificate.
    NoCertificate,
    /// The certificate does not chain to the scheme CA.
    UnknownCa,
    Expired,
    NotYetValid,
    /// Listed on a configured CRL.
    Revoked,
    /// CRLs are configured but none covers the certificate's issuer, or one is past its
    /// next update while `crl_enforce_expiry` is on.
    RevocationUnknown,
    /// Its extended key usage does not allow client authentication.
    BadEku,
    /// Any other certificate problem (bad signature or encoding, unsupported algorithm,
    /// unknown critical extension).
    BadCertificate,
    /// A valid certificate that maps to no registered agency (the handshake completes;
    /// every request gets 403).
    UnknownAgency,
    /// The client ended the handshake with an alert (typically: it does not trust the
    /// gateway's server certificate).
    ClientAlert,
    /// Any other TLS failure (no common protocol version or cipher suite, not TLS).
    Protocol,
    /// The handshake did not finish in time.
    Timeout,
}

impl FailureReason {
    pub const ALL: [Self; 12] = [
        Self::NoCertificate,
        Self::UnknownCa,
        Self::Expired,
        Self::NotYetValid,
        Self::Revoked,
        Self::RevocationUnknown,
        Self::BadEku,
        Self::BadCertificate,
        Self::UnknownAgency,
        Self::ClientAlert,
        Self::Protocol,
        Self::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::RevocationUnknown => "revocation_unknown",
            Self::BadEku => "bad_eku",
            Self::BadCertificate => "bad_certificate",
            Self::UnknownAgency => "unknown_agency",
            Self::ClientAlert => "client_alert",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
        }
    }

    /// The reason a rustls error stands for.
    pub fn of(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::NoCertificatesPresented => Self::NoCertificate,
            rustls::Error::InvalidCertificate(e) => Self::of_certificate(e),
            rustls::Error::AlertReceived(_) => Self::ClientAlert,
            _ => Self::Protocol,
        }
    }

    fn of_certificate(error: &CertificateError) -> Self {
        match error {
            CertificateError::UnknownIssuer => Self::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid
            }
            CertificateError::Revoked => Self::Revoked,
            CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Self::RevocationUnknown,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Self::BadEku
            }
            _ => Self::BadCertificate,
        }
    }
}

/// What the verifier saw on this connection.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub reason: FailureReason,
    pub fingerprint: [u8; 32],
}

tokio::task_local! {
    static REFUSAL: RefCell<Option<Refusal>>;
}

/// Runs `connection` (a whole TLS connection: handshake and what follows) in a scope the
/// [`ReportingVerifier`] records its refusal in; returns the output and that refusal.
pub async fn observe<F: Future>(connection: F) -> (F::Output, Option<Refusal>) {
    REFUSAL
        .scope(RefCell::new(None), async move {
            let output = connection.await;
            let refusal = REFUSAL.with(|r| r.borrow_mut().take());
            (output, refusal)
        })
        .await
}

/// Logs and counts one refused client: the address, the fixed reason and the
/// certificate's fingerprint; nothing else from the client.
pub fn report(
    metrics: &Metrics,
    listener: &'static str,
    peer: Option<SocketAddr>,
    reason: FailureReason,
    fingerprint: Option<&[u8; 32]>,
) {
    metrics.handshake_failure(listener, reason);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some(left_out) = LOG_BUDGET
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(now)
    else {
        return;
    };
    let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    let fingerprint = fingerprint.map_or_else(|| "none".to_owned(), super::digest::fingerprint_hex);
    tracing::warn!(
        listener,
        %peer,
        reason = reason.as_str(),
        %fingerprint,
        left_out,
        "client refused: TLS client certificate not accepted"
    );
}

/// At most this many refused clients are logged a second (the metric counts every one):
/// anybody can open connections without a certificate as fast as they like.
const LOGGED_PER_SECOND: u32 = 20;

static LOG_BUDGET: std::sync::Mutex<LogBudget> = std::sync::Mutex::new(LogBudget {
    second: 0,
    used: 0,
    left_out: 0,
});

/// How many refusals have been logged in the current second, and how many were left out
/// since the last line logged.
struct LogBudget {
    second: u64,
    used: u32,
    left_out: u64,
}

impl LogBudget {
    /// Whether a refusal at `second` may be logged: `Some(n)` with the number left out
    /// before it (which its line reports), or `None` (it is left out).
    fn admit(&mut self, second: u64) -> Option<u64> {
        if second != self.second {
            self.second = second;
            self.used = 0;
        }
        if self.used >= LOGGED_PER_SECOND {
            self.left_out = self.left_out.saturating_add(1);
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.left_out))
    }
}

/// The handshake error of a failed connection, classified; `None` when the connection
/// failed after its handshake (an HTTP-level error), which is not a refusal.
pub fn classify<E>(
    error: &actix_tls::accept::TlsError<std::io::Error, E>,
    refusal: Option<Refusal>,
) -> Option<(FailureReason, Option<[u8; 32]>)> {
    use actix_tls::accept::TlsError;
    if let Some(refusal) = refusal {
        return Some((refusal.reason, Some(refusal.fingerprint)));
    }
    match error {
        TlsError::Timeout => Some((FailureReason::Timeout, None)),
        // Without a rustls error, the peer closed or reset the connection: a port probe
        // or a client giving up, not a refusal.
        TlsError::Tls(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(|error| (FailureReason::of(error), None)),
        TlsError::Service(_) => None,
    }
}

/// A client certificate verifier that delegates to an inner one and records, on the
/// connection's [`observe`] scope, why it refused and what it refused.
#[derive(Debug)]
pub struct ReportingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ReportingVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for ReportingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                let refusal = Refusal {
                    reason: FailureReason::of(e),
                    fingerprint: super::digest::sha256(end_entity.as_ref()),
                };
                // Outside a connection's scope (a unit test) there is nowhere to record.
                let _ = REFUSAL.try_with(|r| *r.borrow_mut() = Some(refusal));
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client certificate verifier whose inner verifier can be replaced while the
/// listener runs (a CRL reload builds a new one with `tls::client_verifier` and
/// [`swap`](Self::swap)s it in; connections already verified are unaffected).
///
/// The CA names offered to clients as hints are those of the verifier it was made
/// with: a new scheme CA needs a restart.
#[derive(Debug)]
pub struct ReloadableVerifier {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
}

impl ReloadableVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self {
            hints: inner.root_hint_subjects().to_vec(),
            current: RwLock::new(inner),
        }
    }

    /// Makes `inner` the verifier of every handshake from now on.
    pub fn swap(&self, inner: Arc<dyn ClientCertVerifier>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = inner;
    }

    /// The verifier it delegates to now.
    pub fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for ReloadableVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_logged_are_bounded_per_second_and_the_rest_reported() {
        let mut budget = LogBudget {
            second: 0,
            used: 0,
            left_out: 0,
        };
        for _ in 0..LOGGED_PER_SECOND {
            assert_eq!(budget.admit(7), Some(0));
        }
        assert_eq!(budget.admit(7), None);
        assert_eq!(budget.admit(7), None);
        // The next second's first line says how many were left out.
        assert_eq!(budget.admit(8), Some(2));
        assert_eq!(budget.admit(8), Some(0));
    }

    #[test]
    fn reasons_are_distinct_and_map_from_rustls_errors() {
        let names: std::collections::BTreeSet<&str> =
            FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), FailureReason::ALL.len());
        let cases = [
            (rustls::Error::NoCertificatesPresented, "no_certificate"),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown_ca",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Revoked),
                "revoked",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "expired",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose),
                "bad_eku",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::BadSignature),
                "bad_certificate",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "client_alert",
            ),
            (rustls::Error::HandshakeNotComplete, "protocol"),
        ];
        for (error, reason) in cases {
            assert_eq!(FailureReason::of(&error).as_str(), reason, "{error:?}");
        }
    }
}
