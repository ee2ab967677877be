//! Who is calling: the agency named by the verified client certificate, never the body.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use super::problem::ApiError;
use crate::domain::Agency;

/// Stored in the connection's extensions once per TLS connection, after the handshake.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    /// The agency the certificate maps to, if exactly one does.
    pub agency: Option<Arc<Agency>>,
    /// SHA-256 of the leaf, `AB:CD:...`; safe to log and to show to the caller.
    pub fingerprint: String,
}

/// Extractor for handlers open to registered agencies only. Refuses with 403 when the
/// (CA-verified) certificate maps to no agency.
#[derive(Debug, Clone)]
pub struct CallerAgency(pub Arc<Agency>);

impl FromRequest for CallerAgency {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.conn_data::<PeerCertificate>() {
            Some(PeerCertificate {
                agency: Some(agency),
                ..
            }) => Ok(Self(agency.clone())),
            Some(peer) => Err(ApiError::forbidden(
                "unknown-agency",
                format!(
                    "The client certificate (SHA-256 {}) is signed by the scheme CA but is not registered to any agency. Ask the scheme operator to register it (docs/onboarding.md).",
                    peer.fingerprint
                ),
            )),
            None => Err(ApiError::forbidden(
                "no-client-certificate",
                "This endpoint needs a client certificate registered to an agency.",
            )),
        })
    }
}
