//! The runtime configuration snapshot: what a reload can replace while the gateway runs
//! (the agency registry with its permissions, the sharing agreements, the SLA targets
//! and calendar) and what is built from it (intake and events). One [`Runtime`] is in
//! force at a time, behind [`RuntimeCell`]; a request takes one snapshot ([`Snapshot`])
//! when its handler's arguments are extracted and uses it to the end, so a request in
//! flight during a reload finishes under the configuration it started with.
//!
//! The client certificate verifier (CRLs) is swapped by the reload too, in the agency
//! listener's [`ReloadableVerifier`](crate::security::handshake::ReloadableVerifier):
//! a handshake is checked by the verifier in force when it happens.

use std::sync::{Arc, RwLock};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use time::OffsetDateTime;

use crate::config::Config;
use crate::domain::AgencyRegistry;
use crate::domain::sharing::SharingAgreement;
use crate::domain::sla::SlaPolicy;
use crate::governance::person_keys::PersonKeyer;
use crate::intake::events::Events;
use crate::intake::referrals::Intake;
use crate::intake::schema::SchemaRegistry;
use crate::store::Store;

/// One generation of the reloadable configuration.
pub struct Runtime {
    /// 1 at start-up, one more at each applied reload.
    pub generation: u64,
    /// When this generation was loaded.
    pub loaded_at: OffsetDateTime,
    pub registry: Arc<AgencyRegistry>,
    pub agreements: Arc<Vec<SharingAgreement>>,
    pub sla: Arc<SlaPolicy>,
    pub schemas: Arc<SchemaRegistry>,
    pub intake: Intake,
    pub events: Events,
}

/// What every generation shares (not reloadable).
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub relay_wake: Arc<tokio::sync::Notify>,
    pub keyer: Arc<PersonKeyer>,
}

impl Runtime {
    /// The snapshot of `config`'s reloadable parts.
    pub fn new(
        generation: u64,
        loaded_at: OffsetDateTime,
        config: &Config,
        schemas: Arc<SchemaRegistry>,
        shared: &Shared,
    ) -> Self {
        let sla = Arc::new(config.sla.policy.clone());
        Self {
            generation,
            loaded_at,
            registry: config.registry.clone(),
            agreements: config.sharing_agreements.clone(),
            sla: sla.clone(),
            schemas: schemas.clone(),
            intake: Intake::new(
                config.registry.clone(),
                schemas.clone(),
                shared.store.clone(),
                sla,
                shared.keyer.clone(),
                config.sharing_agreements.clone(),
            ),
            events: Events::new(
                config.registry.clone(),
                schemas.clone(),
                shared.store.clone(),
                shared.relay_wake.clone(),
            ),
        }
    }
}

/// The snapshot in force; replaced whole by a reload.
pub struct RuntimeCell {
    current: RwLock<Arc<Runtime>>,
}

impl RuntimeCell {
    pub fn new(runtime: Runtime) -> Self {
        Self {
            current: RwLock::new(Arc::new(runtime)),
        }
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Runtime> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `runtime` the snapshot of every request from now on.
    pub fn store(&self, runtime: Runtime) {
        let runtime = Arc::new(runtime);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = runtime;
    }
}

/// Extractor: the request's snapshot. The first extractor that asks (this one, or
/// [`CallerAgency`](crate::api::identity::CallerAgency)) takes it from the cell and
/// pins it in the request's extensions; every later ask in the same request gets the
/// same one.
#[derive(Clone)]
pub struct Snapshot(pub Arc<Runtime>);

impl std::ops::Deref for Snapshot {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.0
    }
}

impl Snapshot {
    /// The snapshot pinned to `req` (pinning the current one if none is yet); `None`
    /// when the app has no [`AppState`](crate::api::AppState).
    pub fn of(req: &HttpRequest) -> Option<Self> {
        if let Some(pinned) = req.extensions().get::<Snapshot>() {
            return Some(pinned.clone());
        }
        let state = req.app_data::<web::Data<crate::api::AppState>>()?;
        let snapshot = Snapshot(state.runtime.load());
        req.extensions_mut().insert(snapshot.clone());
        Some(snapshot)
    }
}

impl FromRequest for Snapshot {
    type Error = crate::api::problem::ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Self::of(req).ok_or_else(crate::api::problem::ApiError::internal))
    }
}
