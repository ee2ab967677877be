//! Who is calling: the agency named by the verified client certificate, never the body.

use std::sync::Arc;

use futures_util::future::LocalBoxFuture;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use super::problem::{ApiError, ProblemKind};
use crate::domain::Agency;
use crate::domain::audit::AuditAction;

/// Stored in the connection's extensions once per TLS connection, after the handshake:
/// what the verified certificate presents. Which agency that is, is decided per request
/// against the request's configuration snapshot (a reload can register or remove it
/// while the connection stays open).
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    pub presented: crate::domain::agency::PresentedIdentity,
    /// SHA-256 of the leaf, `AB:CD:...`; safe to log and to show to the caller.
    pub fingerprint: String,
}

impl PeerCertificate {
    /// The agency the certificate maps to in `registry`, if exactly one does.
    pub fn agency(&self, registry: &crate::domain::AgencyRegistry) -> Option<Arc<Agency>> {
        registry.identify(&self.presented).cloned()
    }
}

/// Extractor for handlers open to registered agencies only. Refuses with 403 when the
/// (CA-verified) certificate maps to no agency.
#[derive(Debug, Clone)]
pub struct CallerAgency(pub Arc<Agency>);

impl CallerAgency {
    /// Agencies see their own data only: an `agency` query parameter may name only the
    /// caller (it is there for staff, who name the agency they look at).
    pub fn own_agency_only(&self, requested: Option<&str>) -> Result<(), ApiError> {
        // An empty `agency=` is no filter, as on the staff listener.
        match requested.filter(|a| !a.is_empty()) {
            Some(a) if a != self.0.id.as_str() => Err(ApiError::bad_request(
                ProblemKind::BadQuery,
                "'agency' can only be your own agency: an agency sees the referrals it sent or received",
            )),
            _ => Ok(()),
        }
    }
}

impl FromRequest for CallerAgency {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let snapshot = crate::runtime::Snapshot::of(req);
        let peer = req.conn_data::<PeerCertificate>();
        let agency = peer
            .zip(snapshot.as_ref())
            .and_then(|(peer, snapshot)| peer.agency(&snapshot.registry));
        let result = match (peer, agency) {
            (Some(_), Some(agency)) => Ok(Self(agency)),
            (Some(peer), None) => Err(ApiError::forbidden(
                ProblemKind::UnknownAgency,
                format!(
                    "The client certificate (SHA-256 {}) is signed by the scheme CA but is not registered to any agency. Ask the scheme operator to register it (docs/onboarding.md).",
                    peer.fingerprint
                ),
            )),
            (None, _) => Err(ApiError::forbidden(
                ProblemKind::NoClientCertificate,
                "This endpoint needs a client certificate registered to an agency.",
            )),
        };
        let state = req
            .app_data::<actix_web::web::Data<super::AppState>>()
            .cloned();
        let fingerprint = req
            .conn_data::<PeerCertificate>()
            .map(|p| p.fingerprint.clone());
        // The route's pattern (`/v1/referrals/{id}`), not the caller's text.
        let path = req
            .match_pattern()
            .unwrap_or_else(|| "(no route)".to_owned());
        Box::pin(async move {
            if result.is_err()
                && let Some(state) = state
            {
                // Authentication failures are audited: who tried, and where.
                let actor = fingerprint
                    .map_or_else(|| "anonymous".to_owned(), |f| format!("certificate:{f}"));
                let record = crate::store::AuditRecord::new(actor, AuditAction::AuthRefused)
                    .detail(format!("unregistered client certificate on {path}"));
                super::record_access(&state, record).await?;
            }
            result
        })
    }
}
