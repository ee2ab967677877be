//! Who is calling the staff listener: a staff member named by a verified bearer token
//! (`crate::staff_auth::tokens`). A 403 of a staff member (a caller with a staff role but
//! not the role or agency needed) is an `auth.refused` audit entry of its own; a 401 (no
//! verified identity) and a 403 of a token with no staff role at all are counted in the
//! tally of unverified refusals ([`super::refusals`]), which the audit log receives as
//! one entry a minute.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::AppState;
use super::problem::{ApiError, ProblemKind};
use crate::domain::audit::AuditAction;
use crate::staff_auth::tokens::{Role, StaffIdentity};
use crate::store::AuditRecord;

/// Extractor for staff endpoints: a verified token (401 otherwise). Roles are checked
/// by the handler with [`StaffCaller::require`].
#[derive(Debug, Clone)]
pub struct StaffCaller(pub StaffIdentity);

fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::unauthorized(
            ProblemKind::Unauthorized,
            "This endpoint needs 'Authorization: Bearer <token>' with a token from your identity provider.",
        )
    };
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(missing()),
    }
}

impl FromRequest for StaffCaller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    /// A caller without a verified token is refused (401), and one whose token carries
    /// no staff role 403, both counted by reason in the tally of unverified refusals
    /// ([`super::refusals`]), not audited one by one.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return std::future::ready(Err(ApiError::not_found()));
        };
        let Some(auth) = state.staff_auth.as_ref() else {
            return std::future::ready(Err(ApiError::not_found()));
        };
        let refused = |reason: &'static str| {
            state
                .refusals
                .count(&state.metrics, reason, state.clock.now());
        };
        let result = match bearer_token(req) {
            Err(e) => {
                refused("missing-token");
                Err(e)
            }
            Ok(token) => match auth.verify(token) {
                // A verified token with neither staff role (any account of the provider
                // may get one for this audience) may call nothing: refused here and
                // tallied like a 401, so such tokens neither grow the audit log one
                // entry a request nor compete with referrals for the committer.
                Ok(identity) if identity.roles.is_empty() => {
                    refused("no-role");
                    Err(ApiError::forbidden(
                        ProblemKind::InsufficientRole,
                        "Your token carries neither the auditor nor the service manager role.",
                    ))
                }
                Ok(identity) => Ok(Self(identity)),
                Err(e) => {
                    refused(e.code());
                    Err(ApiError::unauthorized(
                        ProblemKind::InvalidToken,
                        format!("The bearer token was refused: {e}."),
                    ))
                }
            },
        };
        std::future::ready(result)
    }
}

impl StaffCaller {
    /// 403 (audited) unless the caller holds one of `roles`.
    pub async fn require(
        &self,
        state: &AppState,
        roles: &[Role],
        path: &str,
    ) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.0.has(*r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        self.refuse(
            state,
            ApiError::forbidden(
                ProblemKind::InsufficientRole,
                format!("This needs the role {} in your token.", names.join(" or ")),
            ),
            path,
        )
        .await
    }

    /// Records a refused staff request and returns the refusal.
    pub async fn refuse<T>(
        &self,
        state: &AppState,
        error: ApiError,
        path: &str,
    ) -> Result<T, ApiError> {
        let record = AuditRecord::new(self.0.actor(), AuditAction::AuthRefused).detail(format!(
            "{} on {path}: {}",
            error.status.as_u16(),
            error.detail
        ));
        super::record_access(state, record).await?;
        Err(error)
    }

    /// The agency whose data this caller may see: an auditor may name any registered
    /// agency (or none, for all); a service manager only the agency in their token.
    pub async fn agency_scope(
        &self,
        state: &AppState,
        requested: Option<&str>,
        path: &str,
    ) -> Result<Option<String>, ApiError> {
        // An empty `agency=` is no filter, as for the other parameters.
        let requested = requested.filter(|a| !a.is_empty());
        let runtime = state.runtime.load();
        let known = |id: &str| runtime.registry.agencies().any(|a| a.id.as_str() == id);
        if self.0.has(Role::Auditor) {
            return match requested {
                Some(id) if !known(id) => Err(ApiError::bad_request(
                    ProblemKind::BadQuery,
                    format!("'agency' names no registered agency ({id})"),
                )),
                other => Ok(other.map(str::to_owned)),
            };
        }
        if self.0.has(Role::ServiceManager) {
            let Some(own) = self.0.agency.as_deref().filter(|id| known(id)) else {
                return self
                    .refuse(
                        state,
                        ApiError::forbidden(
                            ProblemKind::NoAgencyClaim,
                            "Your token names no registered agency in its agency claim; ask your identity provider administrator.",
                        ),
                        path,
                    )
                    .await;
            };
            return match requested {
                Some(id) if id != own => {
                    self.refuse(
                        state,
                        ApiError::forbidden(
                            ProblemKind::OtherAgency,
                            format!("A service manager sees their own agency's data only ({own})."),
                        ),
                        path,
                    )
                    .await
                }
                _ => Ok(Some(own.to_owned())),
            };
        }
        self.require(state, &[Role::Auditor, Role::ServiceManager], path)
            .await
            .map(|()| None)
    }
}
