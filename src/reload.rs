//! Checking a configuration, and reloading it into a running gateway.
//!
//! [`check`] is the one implementation of "is this configuration good": `config check`
//! runs it offline, `serve` at start-up and a reload (SIGHUP, `referral-gateway reload`)
//! before anything is swapped. It gathers every problem (the file's own, the schemas,
//! the TLS certificate, key, CA and CRLs, the signing key) instead of stopping at the
//! first.
//!
//! A [`Reloader`] re-reads the file, checks it whole, and either swaps in the reloadable
//! parts (agencies and permissions, sharing agreements, SLA targets and calendar,
//! schemas, CRLs) at once, or keeps the configuration in force and reports every
//! problem. What cannot change while running (listeners, database, broker, keys and
//! secrets, staff sign-in, relay and scanner settings) is compared: a difference is
//! reported as "needs a restart" and left as it is, and the reloadable parts are still
//! applied when they check out. Each applied reload is an audit entry
//! (`config.reloaded`), written before the swap: if it cannot be written, nothing is
//! swapped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::TimeSource;
use crate::config::{Config, ConfigError, Env, ProcessEnv};
use crate::delivery::topology::Topology;
use crate::domain::audit::AuditAction;
use crate::intake::schema::SchemaRegistry;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, RuntimeCell, Shared};
use crate::security::handshake::ReloadableVerifier;
use crate::security::signing::GatewayKey;
use crate::security::tls::{self, AgencyTls};
use crate::store::{AuditRecord, Store};

/// How many ids of each kind an audit entry lists (the counts are always complete).
const AUDITED_IDS: usize = 50;

/// Where a configuration comes from: the file `serve` was started with, read again at
/// each reload.
pub trait ConfigSource: Send + Sync {
    fn load(&self) -> Result<Config, ConfigError>;
    /// What to call it in messages (the file's path).
    fn name(&self) -> String;
}

/// A TOML file with the process environment's `REFGW_*` overrides.
pub struct FileSource {
    pub path: PathBuf,
}

impl ConfigSource for FileSource {
    fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.path, &ProcessEnv)
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// A file read with environment overrides from `env` (tests).
pub struct FileWithEnv<E> {
    pub path: PathBuf,
    pub env: E,
    /// Applied to each loaded config (a test's fixed settings).
    pub adjust: Box<dyn Fn(&mut Config) + Send + Sync>,
}

impl<E: Env + Send + Sync> ConfigSource for FileWithEnv<E> {
    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path, &self.env)?;
        (self.adjust)(&mut config);
        Ok(config)
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// A configuration that passed [`check`], with what the checks built from it.
pub struct Checked {
    pub config: Config,
    pub schemas: Arc<SchemaRegistry>,
    pub agency_tls: AgencyTls,
    pub staff_tls: Option<rustls::ServerConfig>,
    pub signing_key: GatewayKey,
    /// SHA-256 over the CRLs' contents, so a reload sees a CRL file that changed.
    pub crl_digest: [u8; 32],
    /// What the gateway's trust and identity are read from, by content.
    pub material: Material,
    /// What is allowed but probably not meant (ids only).
    pub warnings: Vec<String>,
}

/// The problems of a configuration that could not be loaded, one per line.
pub fn problems_of(error: ConfigError) -> Vec<String> {
    match error {
        ConfigError::Invalid { problems, .. } => problems,
        other => vec![other.to_string()],
    }
}

/// Loads from `source` and [`check`]s.
pub fn load_and_check(source: &dyn ConfigSource) -> Result<Checked, Vec<String>> {
    check(source.load().map_err(problems_of)?)
}

/// Every check `serve` makes on a configuration before it starts, offline: the schemas,
/// the agency and staff listeners' TLS (certificate, key, CA, CRLs) and the signing key.
/// Every problem is reported, each naming its key.
pub fn check(config: Config) -> Result<Checked, Vec<String>> {
    let mut problems = Vec::new();
    let schemas = SchemaRegistry::load(&config.schemas_dir)
        .map_err(|e| {
            problems.push(format!(
                "schemas.dir: loading schemas from {}: {e}",
                config.schemas_dir.display()
            ))
        })
        .ok();
    let agency_tls = tls::server_config(&config.tls)
        .map_err(|e| problems.push(format!("tls: {e}")))
        .ok();
    let staff_tls = match config.staff.as_ref().and_then(|s| s.listen) {
        Some(_) => tls::staff_server_config(&config.tls)
            .map(Some)
            .map_err(|e| problems.push(format!("tls (staff listener): {e}")))
            .ok(),
        None => Some(None),
    };
    let signing_key = GatewayKey::load(&config.audit.signing_key)
        .map_err(|e| problems.push(format!("audit.signing_key: {e}")))
        .ok();
    let crl_digest = crl_digest(&config.tls.crls)
        .map_err(|e| problems.push(format!("tls.crls: {e}")))
        .ok();
    let material = signing_key.as_ref().and_then(|key| {
        Material::read(&config, key)
            .map_err(|e| problems.push(format!("tls: {e}")))
            .ok()
    });
    match (
        schemas,
        agency_tls,
        staff_tls,
        signing_key,
        crl_digest,
        material,
    ) {
        (
            Some(schemas),
            Some(agency_tls),
            Some(staff_tls),
            Some(signing_key),
            Some(crl_digest),
            Some(material),
        ) if problems.is_empty() => {
            let warnings = crate::startup::configuration_warnings(&config, &schemas);
            Ok(Checked {
                config,
                schemas: Arc::new(schemas),
                agency_tls,
                staff_tls,
                signing_key,
                crl_digest,
                material,
                warnings,
            })
        }
        _ => Err(problems),
    }
}

/// SHA-256 of the files the gateway's trust anchor and identity are read from, so that
/// a reload notices a file replaced at the same path (a renewed certificate, a new CA
/// bundle, a new signing key), not only a path that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// `tls.ca`: the trust anchors for agencies' client certificates, by the
    /// certificates it holds (not the file's bytes: comments and line endings aside).
    pub tls_ca: [u8; 32],
    /// `tls.cert` and `tls.key`: the gateway's own certificate.
    pub tls_identity: [u8; 32],
    /// `audit.signing_key`, by its public key id.
    pub signing_key: String,
}

impl Material {
    fn read(config: &Config, signing_key: &GatewayKey) -> std::io::Result<Self> {
        Ok(Self {
            tls_ca: certificates_digest(&config.tls.ca)?,
            tls_identity: crl_digest(&[config.tls.cert.clone(), config.tls.key.clone()])?,
            signing_key: signing_key.key_id().to_string(),
        })
    }
}

/// SHA-256 over the DER certificates of a PEM file, in order.
fn certificates_digest(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let certs = tls::load_certs("tls.ca", path).map_err(std::io::Error::other)?;
    let mut all = Vec::new();
    for cert in &certs {
        all.extend_from_slice(&(cert.len() as u64).to_be_bytes());
        all.extend_from_slice(cert);
    }
    Ok(crate::security::digest::sha256(&all))
}

fn crl_digest(paths: &[PathBuf]) -> std::io::Result<[u8; 32]> {
    let mut all = Vec::new();
    for path in paths {
        all.extend(std::fs::read(path)?);
        all.push(0);
    }
    Ok(crate::security::digest::sha256(&all))
}

/// The parts of `new` that differ from `old` and are not reloadable: each needs a
/// restart to take effect (named as the configuration's sections and keys).
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut needed = Vec::new();
    let mut note = |changed: bool, name: &'static str| {
        if changed {
            needed.push(name);
        }
    };
    note(old.profile != new.profile, "profile");
    note(differs(&old.server, &new.server), "server");
    note(differs(&old.database, &new.database), "database");
    note(differs(&old.amqp, &new.amqp), "amqp");
    note(old.tls.ca != new.tls.ca, "tls.ca");
    note(old.tls.cert != new.tls.cert, "tls.cert");
    note(old.tls.key != new.tls.key, "tls.key");
    note(differs(&old.relay, &new.relay), "relay");
    note(
        old.sla.scanner_enabled != new.sla.scanner_enabled,
        "sla.enabled",
    );
    note(
        old.sla.scan_interval != new.sla.scan_interval,
        "sla.scan_interval_secs",
    );
    // The Debug forms leave the secrets out: compare those themselves.
    note(
        differs(&old.audit, &new.audit)
            || old.audit.person_key_secret != new.audit.person_key_secret,
        "audit",
    );
    note(
        differs(&old.storage, &new.storage)
            || old.storage.payload_key != new.storage.payload_key
            || old.storage.previous_payload_keys != new.storage.previous_payload_keys,
        "storage",
    );
    note(differs(&old.staff, &new.staff), "staff");
    note(
        differs(&old.console, &new.console)
            || old.console.session_secret != new.console.session_secret,
        "console",
    );
    needed
}

/// Changes a reload refuses outright rather than leave for a restart: another
/// `profile`, because the new file's checks were made under it (the production
/// profile's, such as "at least one sharing agreement", would have been judged by the
/// development profile's rules). Nothing is changed.
fn refused_changes(running: &Config, new: &Checked) -> Vec<String> {
    let mut refused = Vec::new();
    if running.profile != new.config.profile {
        refused.push(format!(
            "profile: the gateway runs the {} profile and the file says {}; the profile changes only with a restart (nothing was changed)",
            running.profile.as_str(),
            new.config.profile.as_str()
        ));
    }
    refused
}

/// Files replaced at the same path that need a restart to take effect.
fn material_restart_needed(running: &Material, new: &Material) -> Vec<&'static str> {
    let mut needed = Vec::new();
    if running.tls_ca != new.tls_ca {
        needed.push("tls.ca");
    }
    if running.tls_identity != new.tls_identity {
        // The pair is read as one identity: either file may have changed.
        needed.extend(["tls.cert", "tls.key"]);
    }
    if running.signing_key != new.signing_key {
        needed.push("audit");
    }
    needed
}

/// Ids added, removed and changed between two keyed sets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl IdChanges {
    fn between(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Self {
        let mut changes = Self::default();
        for (id, form) in new {
            match old.get(id) {
                None => changes.added.push(id.clone()),
                Some(before) if before != form => changes.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .keys()
            .filter(|id| !new.contains_key(*id))
            .cloned()
            .collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// `added [a, b]; removed []; changed [c]`, each list at most [`AUDITED_IDS`] ids.
    fn describe(&self) -> String {
        fn list(ids: &[String]) -> String {
            let shown: Vec<&str> = ids.iter().take(AUDITED_IDS).map(String::as_str).collect();
            let more = ids.len().saturating_sub(AUDITED_IDS);
            if more > 0 {
                format!("[{}, and {more} more]", shown.join(", "))
            } else {
                format!("[{}]", shown.join(", "))
            }
        }
        format!(
            "added {} removed {} changed {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed)
        )
    }
}

/// What a reload changes in the reloadable parts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// An agency is changed when its registration or its permissions are.
    pub agencies: IdChanges,
    pub agreements: IdChanges,
    pub sla: bool,
    pub crls: bool,
    pub schemas: bool,
}

impl Changes {
    fn between(old: &Loaded, new: &Loaded) -> Self {
        Self {
            agencies: IdChanges::between(&old.agencies, &new.agencies),
            agreements: IdChanges::between(&old.agreements, &new.agreements),
            sla: old.sla != new.sla,
            crls: old.crl_digest != new.crl_digest,
            schemas: old.schemas != new.schemas,
        }
    }

    /// The audit entry's detail: ids and counts only.
    fn describe(&self, generation: u64, restart: &[&str]) -> String {
        let flag = |b: bool| if b { "changed" } else { "unchanged" };
        let mut detail = format!(
            "generation {generation}; agencies {}; agreements {}; sla {}; crls {}; schemas {}",
            self.agencies.describe(),
            self.agreements.describe(),
            flag(self.sla),
            flag(self.crls),
            flag(self.schemas),
        );
        if !restart.is_empty() {
            detail.push_str(&format!("; needs restart: {}", restart.join(", ")));
        }
        detail
    }
}

/// The comparable form of a configuration's reloadable parts.
#[derive(Default)]
struct Loaded {
    agencies: BTreeMap<String, String>,
    agreements: BTreeMap<String, String>,
    sla: String,
    crl_digest: [u8; 32],
    schemas: String,
    /// Not reloadable: a reload leaves the running one in place.
    material: Option<Material>,
}

impl Loaded {
    fn of(checked: &Checked) -> Self {
        let config = &checked.config;
        let registry = &config.registry;
        Self {
            agencies: registry
                .agencies()
                .map(|a| {
                    (
                        a.id.to_string(),
                        format!("{a:?} {:?}", registry.permissions_of(&a.id)),
                    )
                })
                .collect(),
            agreements: config
                .sharing_agreements
                .iter()
                .map(|a| (a.id.clone(), format!("{a:?}")))
                .collect(),
            sla: format!("{:?}", config.sla.policy),
            crl_digest: checked.crl_digest,
            schemas: format!("{:?}", checked.schemas.fingerprint()),
            material: Some(checked.material.clone()),
        }
    }
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration is in force.
    Applied {
        generation: u64,
        changes: Changes,
        /// Changed settings that are not reloadable (left as they were).
        restart_needed: Vec<&'static str>,
        warnings: Vec<String>,
    },
    /// The configuration in force is kept; every problem found.
    Rejected { problems: Vec<String> },
}

/// What the reloader swaps, and what it needs to do so.
pub struct Reloader {
    source: Box<dyn ConfigSource>,
    cell: Arc<RuntimeCell>,
    verifier: Arc<ReloadableVerifier>,
    shared: Shared,
    store: Store,
    metrics: Arc<Metrics>,
    clock: Arc<dyn TimeSource>,
    /// The relay's topology (new agencies' queues are declared when it changes).
    topology: Option<tokio::sync::watch::Sender<Topology>>,
    /// The trust anchors the gateway started with (`tls.ca`).
    roots: Arc<rustls::RootCertStore>,
    /// The configuration in force: the one started with, with the reloadable parts of
    /// each applied reload.
    state: tokio::sync::Mutex<(Config, Loaded)>,
}

pub(crate) struct ReloaderParts {
    pub source: Box<dyn ConfigSource>,
    pub cell: Arc<RuntimeCell>,
    pub verifier: Arc<ReloadableVerifier>,
    pub shared: Shared,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn TimeSource>,
    pub topology: Option<tokio::sync::watch::Sender<Topology>>,
}

/// The configuration in force, as a reload compares against it.
pub struct InForce {
    config: Config,
    loaded: Loaded,
    roots: Arc<rustls::RootCertStore>,
}

impl InForce {
    pub fn of(checked: &Checked) -> Self {
        Self {
            config: checked.config.clone(),
            loaded: Loaded::of(checked),
            roots: checked.agency_tls.roots.clone(),
        }
    }
}

impl Reloader {
    pub(crate) fn new(parts: ReloaderParts, started: InForce) -> Self {
        parts.metrics.config_loaded(1, parts.clock.now());
        Self {
            store: parts.shared.store.clone(),
            source: parts.source,
            cell: parts.cell,
            verifier: parts.verifier,
            shared: parts.shared,
            metrics: parts.metrics,
            clock: parts.clock,
            topology: parts.topology,
            roots: started.roots,
            state: tokio::sync::Mutex::new((started.config, started.loaded)),
        }
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.cell.load().generation
    }

    /// Re-reads the configuration, checks it whole, and applies it or keeps the one in
    /// force (see the module's documentation). Reloads run one at a time.
    pub async fn reload(&self) -> ReloadOutcome {
        let mut state = self.state.lock().await;
        let outcome = self.try_reload(&mut state).await;
        match &outcome {
            ReloadOutcome::Applied {
                generation,
                changes,
                restart_needed,
                warnings,
            } => {
                // The settings first: `reload` reads them once the counter moves.
                self.metrics.config_restart_needed(restart_needed);
                self.metrics.config_reload("applied");
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                for part in restart_needed {
                    tracing::warn!(
                        settings = part,
                        "configuration reload: these settings changed but need a restart; the running values are kept"
                    );
                }
                tracing::info!(
                    generation,
                    agencies_added = changes.agencies.added.len(),
                    agencies_removed = changes.agencies.removed.len(),
                    agencies_changed = changes.agencies.changed.len(),
                    agreements_added = changes.agreements.added.len(),
                    agreements_removed = changes.agreements.removed.len(),
                    agreements_changed = changes.agreements.changed.len(),
                    sla = changes.sla,
                    crls = changes.crls,
                    schemas = changes.schemas,
                    "configuration reloaded"
                );
            }
            ReloadOutcome::Rejected { problems } => {
                self.metrics.config_reload("rejected");
                for problem in problems {
                    tracing::error!(%problem, "configuration reload refused");
                }
                tracing::error!(
                    problems = problems.len(),
                    source = %self.source.name(),
                    "configuration reload refused: the configuration in force is kept"
                );
            }
        }
        outcome
    }

    async fn try_reload(&self, state: &mut (Config, Loaded)) -> ReloadOutcome {
        let checked = match load_and_check(self.source.as_ref()) {
            Ok(checked) => checked,
            Err(problems) => return ReloadOutcome::Rejected { problems },
        };
        let (running, loaded) = state;
        let refusals = refused_changes(running, &checked);
        if !refusals.is_empty() {
            return ReloadOutcome::Rejected { problems: refusals };
        }
        let mut restart = restart_needed(running, &checked.config);
        if let Some(material) = &loaded.material {
            for part in material_restart_needed(material, &checked.material) {
                if !restart.contains(&part) {
                    restart.push(part);
                }
            }
        }
        let mut new_loaded = Loaded::of(&checked);
        new_loaded.material = loaded.material.clone();
        // The new CRLs, with the trust anchors the gateway started with: a new `tls.ca`
        // is trusted only after a restart (reported above), never by a reload.
        let verifier = match tls::client_verifier_with(self.roots.clone(), &checked.config.tls) {
            Ok(verifier) => verifier,
            Err(e) => {
                return ReloadOutcome::Rejected {
                    problems: vec![format!("tls: {e}")],
                };
            }
        };
        let changes = Changes::between(loaded, &new_loaded);
        let generation = self.cell.load().generation + 1;
        let now = self.clock.now();
        // Written before the swap: an agreement added is a governance event, and nothing
        // is swapped that the audit log does not show.
        let record = AuditRecord::new("gateway", AuditAction::ConfigReloaded)
            .detail(changes.describe(generation, &restart));
        if let Err(e) = self.store.audit(&record, now).await {
            tracing::error!(error = %e, "cannot write the audit log");
            return ReloadOutcome::Rejected {
                problems: vec![format!(
                    "the config.reloaded audit entry cannot be written ({e}); nothing was changed"
                )],
            };
        }
        let Checked {
            config,
            schemas,
            warnings,
            ..
        } = checked;
        self.verifier.swap(verifier);
        self.cell.store(Runtime::new(
            generation,
            now,
            &config,
            schemas,
            &self.shared,
        ));
        if let Some(topology) = &self.topology {
            let namespace = running.amqp.namespace.clone();
            topology.send_replace(Topology::new(&namespace, &config.registry));
            self.shared.relay_wake.notify_one();
        }
        if let Some(dir) = &config.tls.issued_dir {
            match crate::startup::certificate_expiries(dir, &config.registry, &config.tls.crls) {
                Ok(expiries) => self.metrics.set_certificate_expiries(expiries),
                Err(e) => tracing::warn!(error = %e, "cannot read tls.issued_dir"),
            }
        } else {
            self.metrics.set_certificate_expiries(Vec::new());
        }
        self.metrics.config_loaded(generation, now);
        // The configuration in force: the reloadable parts are the new ones.
        running.registry = config.registry.clone();
        running.sharing_agreements = config.sharing_agreements.clone();
        running.sla.policy = config.sla.policy.clone();
        running.tls.crls = config.tls.crls.clone();
        running.tls.crl_enforce_expiry = config.tls.crl_enforce_expiry;
        running.tls.issued_dir = config.tls.issued_dir.clone();
        running.schemas_dir = config.schemas_dir.clone();
        *loaded = new_loaded;
        ReloadOutcome::Applied {
            generation,
            changes,
            restart_needed: restart,
            warnings,
        }
    }
}

/// Reloads on each SIGHUP until the process ends (Unix).
pub fn reload_on_sighup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!("SIGHUP received: reloading the configuration");
                        reloader.reload().await;
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: reload needs a restart")
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn id_changes_name_what_was_added_removed_and_changed() {
        let old = map(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = map(&[("b", "1"), ("c", "2"), ("d", "1")]);
        let changes = IdChanges::between(&old, &new);
        assert_eq!(changes.added, ["d"]);
        assert_eq!(changes.removed, ["a"]);
        assert_eq!(changes.changed, ["c"]);
        assert_eq!(changes.describe(), "added [d] removed [a] changed [c]");
        assert!(IdChanges::between(&old, &old).is_empty());
    }

    #[test]
    fn audited_id_lists_are_bounded() {
        let new: BTreeMap<String, String> = (0..AUDITED_IDS + 3)
            .map(|i| (format!("agency-{i:03}"), String::new()))
            .collect();
        let described = IdChanges::between(&BTreeMap::new(), &new).describe();
        assert!(described.contains("and 3 more]"), "{described}");
        assert_eq!(described.matches("agency-").count(), AUDITED_IDS);
    }
}
