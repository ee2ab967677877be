//! Typed configuration: a TOML file plus `REFGW_*` environment overrides, checked as a
//! whole at start-up. Every problem names the key it is about; all problems are reported
//! together so an operator fixes them in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub mod console;

use crate::domain::calendar::WorkingCalendar;
use crate::domain::sharing::{OnExcess, SharingAgreement};
use crate::domain::sla::{SlaPolicy, Target, TargetRule};
use crate::domain::{
    Agency, AgencyId, AgencyRegistry, AgencyRole, Area, CertificateIdentity, Priority, ServiceType,
};

pub const DEFAULT_CONFIG_PATH: &str = "config/gateway.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/gateway.db";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Upper bound for `server.max_body_bytes`: referrals are small documents.
const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// "development" (the shipped configuration) or "production" (the default).
    profile: Option<String>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    amqp: RawAmqp,
    tls: RawTls,
    #[serde(default)]
    schemas: RawSchemas,
    #[serde(default)]
    relay: RawRelay,
    #[serde(default)]
    sla: RawSla,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    storage: RawStorage,
    staff: Option<RawStaff>,
    console: Option<console::RawConsole>,
    #[serde(default)]
    sharing_agreements: Vec<RawAgreement>,
    #[serde(default)]
    agencies: Vec<RawAgency>,
    #[serde(default)]
    permissions: Vec<RawPermission>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    ops_listen: Option<String>,
    max_body_bytes: Option<usize>,
    shutdown_timeout_secs: Option<u64>,
    workers: Option<usize>,
    body_timeout_secs: Option<u64>,
    body_idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    max_connections: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAmqp {
    url: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    enabled: Option<bool>,
    batch_size: Option<u32>,
    lease_secs: Option<u64>,
    poll_interval_ms: Option<u64>,
    max_backoff_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default)]
    crl_enforce_expiry: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSchemas {
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgreement {
    id: String,
    title: String,
    purpose: String,
    senders: Vec<String>,
    #[serde(default)]
    recipient_agencies: Vec<String>,
    #[serde(default)]
    recipient_service_types: Vec<String>,
    /// Where `recipient_service_types` are covered; required with them.
    #[serde(default)]
    areas: Vec<String>,
    lawful_basis: String,
    categories: Vec<String>,
    #[serde(default)]
    sharing_without_consent: Vec<String>,
    on_excess: Option<String>,
    effective_from: String,
    effective_to: Option<String>,
}

/// Justifications the referral schema knows for sharing without consent.
const JUSTIFICATIONS: [&str; 5] = [
    "safeguarding",
    "prevention_of_crime",
    "vital_interests",
    "lacks_capacity_best_interests",
    "legal_duty",
];

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    payload_key_file: Option<PathBuf>,
    #[serde(default)]
    previous_payload_key_files: Vec<PathBuf>,
    retention_days: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    signing_key: Option<PathBuf>,
    previous_public_keys: Option<PathBuf>,
    person_key_secret_file: Option<PathBuf>,
    checkpoint_every: Option<i64>,
    checkpoint_interval_secs: Option<u64>,
    head_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStaff {
    listen: Option<String>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_ca: Option<PathBuf>,
    jwks_refresh_secs: Option<u64>,
    issuer: Option<String>,
    audience: Option<String>,
    algorithms: Option<Vec<String>>,
    leeway_secs: Option<u64>,
    roles_claim: Option<String>,
    agency_claim: Option<String>,
    auditor_role: Option<String>,
    service_manager_role: Option<String>,
    dev_tokens: Option<bool>,
    dev_signing_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSla {
    enabled: Option<bool>,
    calendar: Option<PathBuf>,
    working_day_starts: Option<String>,
    working_day_ends: Option<String>,
    warn_at: Option<f64>,
    undelivered_after: Option<String>,
    scan_interval_secs: Option<u64>,
    #[serde(default)]
    targets: Vec<RawTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    agency: Option<String>,
    service_type: Option<String>,
    priority: Option<String>,
    acknowledge: Option<String>,
    decision: Option<String>,
    first_contact: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendarFile {
    #[allow(dead_code)]
    region: Option<String>,
    dates: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgency {
    id: String,
    name: String,
    service_type: String,
    area: String,
    role: AgencyRole,
    certificate: RawCertificate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    san_uri: Option<String>,
    san_dns: Option<String>,
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    sender: String,
    service_types: Vec<String>,
    /// Where the service types may be referred to; required.
    #[serde(default)]
    areas: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Plain-HTTP listener for `/healthz`, `/readyz` (and later `/metrics`), for probes
    /// that hold no client certificate. Bind it to loopback or a private network only.
    pub ops_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub shutdown_timeout_secs: u64,
    pub workers: Option<usize>,
    /// How long a request body may take: in all, and between two chunks.
    pub body_timeouts: crate::api::middleware::body::BodyTimeouts,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: String,
    /// Prefix for every exchange and queue name (`<namespace>.referrals`, ...); empty
    /// for none. Lets several deployments or test runs share one broker.
    pub namespace: String,
}

/// The outbox relay (delivery to RabbitMQ).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub enabled: bool,
    /// Rows claimed and published (pipelined, confirms awaited together) per round.
    pub batch_size: u32,
    /// How long a claim lasts; a crashed instance's rows are retried after it.
    pub lease: std::time::Duration,
    /// How often to look for due rows when nothing wakes the relay.
    pub poll_interval: std::time::Duration,
    /// Ceiling of the exponential backoff between attempts (reconnects and retries).
    pub max_backoff: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crls: Vec<PathBuf>,
    pub crl_enforce_expiry: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Development allows the published keys of `certs-example/` and development
    /// tokens; production (the default) refuses them.
    pub profile: crate::security::published::Profile,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub tls: TlsConfig,
    pub schemas_dir: PathBuf,
    pub relay: RelayConfig,
    pub sla: SlaConfig,
    pub audit: AuditConfig,
    pub storage: StorageConfig,
    /// Staff access with bearer tokens; `None` when `[staff]` is not configured.
    pub staff: Option<StaffConfig>,
    /// The staff console (`[console]`, docs/console.md).
    pub console: console::ConsoleConfig,
    /// Information sharing agreements; when none are configured, sharing is governed by
    /// `[[permissions]]` alone and nothing is minimised.
    pub sharing_agreements: Arc<Vec<SharingAgreement>>,
    pub registry: Arc<AgencyRegistry>,
}

/// Staff (auditors, service managers) calling with JWT bearer tokens.
#[derive(Debug, Clone)]
pub struct StaffConfig {
    /// The staff listener: TLS with the server certificate, no client certificate, bearer
    /// tokens. `None`: no staff listener (tokens can still be minted for tests).
    pub listen: Option<SocketAddr>,
    pub auth: Arc<crate::staff_auth::tokens::StaffAuth>,
    /// Where to fetch (and refresh) the identity provider's keys, if anywhere.
    pub jwks_url: Option<JwksUrl>,
    /// Whether `referral-gateway dev-token` may mint tokens (and the JWKS may trust the
    /// development key). Development only.
    pub dev_tokens: bool,
    pub dev_signing_key: PathBuf,
}

/// The identity provider's JWKS endpoint.
#[derive(Debug, Clone)]
pub struct JwksUrl {
    pub url: String,
    /// An extra CA to trust for it (a private identity provider), besides the system's.
    pub ca: Option<PathBuf>,
    pub refresh: std::time::Duration,
}

/// Encryption of referral payloads at rest, and their retention.
#[derive(Clone)]
pub struct StorageConfig {
    /// Hex text of the current AES-256 key, and of earlier keys still needed to read.
    pub payload_key: String,
    pub previous_payload_keys: Vec<String>,
    /// Default for `purge --older-than`.
    pub retention_days: u32,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("payload_key", &"<secret>")
            .field("previous_payload_keys", &self.previous_payload_keys.len())
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

impl StorageConfig {
    pub fn payload_keys(
        &self,
    ) -> Result<crate::security::sealing::PayloadKeys, crate::security::sealing::SealError> {
        crate::security::sealing::PayloadKeys::new(&self.payload_key, &self.previous_payload_keys)
    }
}

/// The disclosure log and the gateway's signing key.
#[derive(Clone)]
pub struct AuditConfig {
    /// Ed25519 PKCS#8 PEM: signs receipts and audit checkpoints.
    pub signing_key: PathBuf,
    /// Public keys of earlier signing keys (a saved `GET /v1/keys` document), so receipts
    /// and checkpoints signed before a rotation still verify.
    pub previous_public_keys: Vec<crate::security::signing::PublicKey>,
    /// HMAC key for person keys (from `REFGW_PERSON_KEY_SECRET` or a file).
    pub person_key_secret: Vec<u8>,
    pub checkpoint_every: i64,
    pub checkpoint_interval: std::time::Duration,
    /// Where the checkpointer also writes the newest signed chain head (JSON), for an
    /// operator to ship off the machine and check with `audit verify --head`.
    pub head_file: Option<PathBuf>,
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("signing_key", &self.signing_key)
            .field("previous_public_keys", &self.previous_public_keys.len())
            .field("person_key_secret", &"<secret>")
            .field("checkpoint_every", &self.checkpoint_every)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("head_file", &self.head_file)
            .finish()
    }
}

/// SLA clocks and the breach scanner.
#[derive(Debug, Clone)]
pub struct SlaConfig {
    /// Whether this instance runs the scanner (clocks are always recorded).
    pub scanner_enabled: bool,
    pub scan_interval: std::time::Duration,
    pub policy: SlaPolicy,
}

/// Reads environment variables; injectable so tests never touch the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// No environment overrides at all.
pub struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

impl Config {
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        Self::load_checked(path, env, FileChecks::Required)
    }

    /// Loads a config whose TLS files may not exist yet (for `certs init`, which makes them).
    pub fn load_before_certificates(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        Self::load_checked(path, env, FileChecks::SkipTls)
    }

    fn load_checked(path: &Path, env: &dyn Env, checks: FileChecks) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, env, checks)
    }

    /// Parses and checks a config. `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        Self::parse(text, path, env, FileChecks::Required)
    }

    fn parse(
        text: &str,
        path: &Path,
        env: &dyn Env,
        checks: FileChecks,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = Problems::default();
        let config = build(raw, env, checks, &mut problems);
        match config {
            Some(config) if problems.0.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: problems.0,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileChecks {
    Required,
    SkipTls,
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, key: &str, message: impl std::fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }
}

fn setting(
    env: &dyn Env,
    var: &str,
    key: &str,
    file: Option<String>,
    default: &str,
) -> (String, String) {
    match env.var(var) {
        Some(v) => (v, format!("{var} (environment)")),
        None => (file.unwrap_or_else(|| default.to_owned()), key.to_owned()),
    }
}

fn socket_addr(value: &str, key: &str, problems: &mut Problems) -> Option<SocketAddr> {
    value
        .parse()
        .map_err(|_| {
            problems.push(
                key,
                format!("'{value}' is not an IP address and port such as 127.0.0.1:8443"),
            )
        })
        .ok()
}

fn build(
    raw: RawConfig,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> Option<Config> {
    let (listen, listen_key) = setting(
        env,
        "REFGW_LISTEN",
        "server.listen",
        raw.server.listen,
        DEFAULT_LISTEN,
    );
    let listen = socket_addr(&listen, &listen_key, problems);
    let ops_listen = match env.var("REFGW_OPS_LISTEN").or(raw.server.ops_listen) {
        Some(v) if v == "off" => None,
        Some(v) => socket_addr(&v, "server.ops_listen", problems),
        None => None,
    };
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(256 * 1024);
    if max_body_bytes == 0 || max_body_bytes > MAX_BODY_LIMIT {
        problems.push(
            "server.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_LIMIT} (got {max_body_bytes})"),
        );
    }
    if raw.server.workers == Some(0) {
        problems.push(
            "server.workers",
            "must be at least 1 (leave it out to use one per CPU)",
        );
    }

    let (db_url, db_key) = setting(
        env,
        "REFGW_DATABASE_URL",
        "database.url",
        raw.database.url,
        DEFAULT_DATABASE_URL,
    );
    if !(db_url.starts_with("sqlite:")
        || db_url.starts_with("postgres://")
        || db_url.starts_with("postgresql://"))
    {
        problems.push(
            &db_key,
            "must start with sqlite:, postgres:// or postgresql://",
        );
    }
    let max_connections = raw.database.max_connections.unwrap_or(10);
    if max_connections == 0 {
        problems.push("database.max_connections", "must be at least 1");
    }

    let (amqp_url, amqp_key) = setting(
        env,
        "REFGW_AMQP_URL",
        "amqp.url",
        raw.amqp.url,
        DEFAULT_AMQP_URL,
    );
    if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
        problems.push(&amqp_key, "must start with amqp:// or amqps://");
    }

    for (key, path) in [
        ("tls.ca", &raw.tls.ca),
        ("tls.cert", &raw.tls.cert),
        ("tls.key", &raw.tls.key),
    ]
    .into_iter()
    .chain(raw.tls.crls.iter().map(|p| ("tls.crls", p)))
    {
        if checks == FileChecks::Required && !path.is_file() {
            problems.push(key, format!("file '{}' does not exist", path.display()));
        }
    }

    let namespace = env
        .var("REFGW_AMQP_NAMESPACE")
        .or(raw.amqp.namespace)
        .unwrap_or_default();
    if !namespace.is_empty()
        && (namespace.len() > 100
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        problems.push(
            "amqp.namespace",
            "must be at most 100 letters, digits, '-' or '_'",
        );
    }
    let relay = RelayConfig {
        enabled: raw.relay.enabled.unwrap_or(true),
        batch_size: raw.relay.batch_size.unwrap_or(200),
        lease: std::time::Duration::from_secs(raw.relay.lease_secs.unwrap_or(30)),
        poll_interval: std::time::Duration::from_millis(raw.relay.poll_interval_ms.unwrap_or(500)),
        max_backoff: std::time::Duration::from_secs(raw.relay.max_backoff_secs.unwrap_or(60)),
    };
    if relay.batch_size == 0 || relay.batch_size > 5000 {
        problems.push("relay.batch_size", "must be between 1 and 5000");
    }
    if relay.lease < std::time::Duration::from_secs(5) {
        problems.push("relay.lease_secs", "must be at least 5");
    }
    if relay.poll_interval.is_zero() {
        problems.push("relay.poll_interval_ms", "must be at least 1");
    }
    if relay.max_backoff.is_zero() {
        problems.push("relay.max_backoff_secs", "must be at least 1");
    }

    let schemas_dir = raw.schemas.dir.unwrap_or_else(|| PathBuf::from("schemas"));
    if !schemas_dir.is_dir() {
        problems.push(
            "schemas.dir",
            format!("directory '{}' does not exist", schemas_dir.display()),
        );
    }

    let body_timeouts = crate::api::middleware::body::BodyTimeouts {
        total: std::time::Duration::from_secs(raw.server.body_timeout_secs.unwrap_or(30)),
        idle: std::time::Duration::from_secs(raw.server.body_idle_timeout_secs.unwrap_or(5)),
    };
    if !(1..=600).contains(&body_timeouts.total.as_secs()) {
        problems.push("server.body_timeout_secs", "must be between 1 and 600");
    }
    if body_timeouts.idle.is_zero() || body_timeouts.idle > body_timeouts.total {
        problems.push(
            "server.body_idle_timeout_secs",
            "must be at least 1 and at most server.body_timeout_secs",
        );
    }

    let profile = match raw.profile.as_deref() {
        None => crate::security::published::Profile::Production,
        Some(text) => text.parse().unwrap_or_else(|()| {
            problems.push("profile", "must be \"development\" or \"production\"");
            crate::security::published::Profile::Production
        }),
    };

    let registry = build_registry(raw.agencies, raw.permissions, problems);
    let sla = build_sla(raw.sla, &registry, checks, problems);
    let audit = build_audit(raw.audit, env, checks, problems);
    let storage = build_storage(raw.storage, env, checks, problems);
    let staff_issuer = raw.staff.as_ref().and_then(|s| s.issuer.clone());
    let staff = raw
        .staff
        .and_then(|staff| build_staff(staff, env, checks, problems));
    let console = console::build(raw.console, staff_issuer.as_deref(), env, problems);
    let sharing_agreements = build_agreements(raw.sharing_agreements, &registry, problems);

    let tls = TlsConfig {
        ca: raw.tls.ca,
        cert: raw.tls.cert,
        key: raw.tls.key,
        crls: raw.tls.crls,
        crl_enforce_expiry: raw.tls.crl_enforce_expiry,
    };
    if profile == crate::security::published::Profile::Production {
        refuse_published_material(&tls, &audit, &storage, staff.as_ref(), checks, problems);
    }

    Some(Config {
        profile,
        server: ServerConfig {
            listen: listen?,
            ops_listen,
            max_body_bytes,
            shutdown_timeout_secs: raw.server.shutdown_timeout_secs.unwrap_or(30),
            workers: raw.server.workers,
            body_timeouts,
        },
        database: DatabaseConfig {
            url: db_url,
            max_connections,
        },
        amqp: AmqpConfig {
            url: amqp_url,
            namespace,
        },
        tls,
        schemas_dir,
        relay,
        sla,
        audit,
        storage,
        staff,
        console,
        sharing_agreements: Arc::new(sharing_agreements),
        registry: Arc::new(registry),
    })
}

/// Outside the development profile: no key, secret, certificate or JWKS entry may be
/// one of those published in `certs-example/` (compared by content), and development
/// tokens are off.
fn refuse_published_material(
    tls: &TlsConfig,
    audit: &AuditConfig,
    storage: &StorageConfig,
    staff: Option<&StaffConfig>,
    checks: FileChecks,
    problems: &mut Problems,
) {
    use crate::security::published;
    let advice = "published in certs-example/ and never for real data; make your own with `referral-gateway certs init` (or set profile = \"development\")";
    let mut files: Vec<(&str, &Path)> = vec![("audit.signing_key", &audit.signing_key)];
    if checks == FileChecks::Required {
        files.extend([
            ("tls.ca", tls.ca.as_path()),
            ("tls.cert", tls.cert.as_path()),
            ("tls.key", tls.key.as_path()),
        ]);
    }
    for (key, path) in files {
        if let Ok(bytes) = std::fs::read(path)
            && let Some(what) = published::published_pem(&bytes)
        {
            problems.push(key, format!("'{}' holds {what}, {advice}", path.display()));
        }
    }
    if published::is_published_payload_key(&storage.payload_key)
        || storage
            .previous_payload_keys
            .iter()
            .any(|k| published::is_published_payload_key(k))
    {
        problems.push(
            "storage.payload_key_file",
            format!("is the development payload key, {advice}"),
        );
    }
    if published::is_published_person_key_secret(&audit.person_key_secret) {
        problems.push(
            "audit.person_key_secret_file",
            format!("is the development person-key secret, {advice}"),
        );
    }
    if let Some(staff) = staff {
        if staff.dev_tokens {
            problems.push(
                "staff.dev_tokens",
                "must be false outside profile = \"development\": anyone who can read the development key could mint staff tokens",
            );
        }
        if staff.auth.trusts_dev_key() {
            problems.push(
                "staff.jwks_file",
                format!("trusts the development staff-token key, {advice}"),
            );
        }
    }
}

fn build_registry(
    raw_agencies: Vec<RawAgency>,
    raw_permissions: Vec<RawPermission>,
    problems: &mut Problems,
) -> AgencyRegistry {
    if raw_agencies.is_empty() {
        problems.push("agencies", "at least one agency must be configured");
    }
    let mut agencies = Vec::new();
    let mut seen_ids = BTreeSet::new();
    let mut seen_identities: BTreeMap<CertificateIdentity, String> = BTreeMap::new();
    for (i, raw) in raw_agencies.into_iter().enumerate() {
        let key = format!("agencies[{i}]");
        let id = AgencyId::parse(raw.id.clone())
            .map_err(|e| problems.push(&format!("{key}.id"), e))
            .ok();
        if !seen_ids.insert(raw.id.clone()) {
            problems.push(
                &format!("{key}.id"),
                format!("'{}' is defined more than once", raw.id),
            );
        }
        let key = format!("agencies[{i}] ({})", raw.id);
        if raw.name.trim().is_empty() {
            problems.push(&format!("{key}.name"), "must not be empty");
        }
        let service_type = ServiceType::parse(raw.service_type)
            .map_err(|e| problems.push(&format!("{key}.service_type"), e))
            .ok();
        let area = Area::parse(raw.area)
            .map_err(|e| problems.push(&format!("{key}.area"), e))
            .ok();
        let certificate = certificate_identity(&raw.certificate)
            .map_err(|e| problems.push(&format!("{key}.certificate"), e))
            .ok();
        if let Some(identity) = &certificate
            && let Some(other) = seen_identities.insert(identity.clone(), raw.id.clone())
        {
            problems.push(
                &format!("{key}.certificate"),
                format!("the same certificate identity is already used by agency '{other}'"),
            );
        }
        if let (Some(id), Some(service_type), Some(area), Some(certificate)) =
            (id, service_type, area, certificate)
        {
            agencies.push(Agency {
                id,
                name: raw.name,
                service_type,
                area,
                role: raw.role,
                certificate,
            });
        }
    }

    let mut permissions = Vec::new();
    for (i, raw) in raw_permissions.into_iter().enumerate() {
        let key = format!("permissions[{i}]");
        match agencies.iter().find(|a| a.id.as_str() == raw.sender) {
            None => problems.push(
                &format!("{key}.sender"),
                format!("no agency '{}' is configured", raw.sender),
            ),
            Some(agency) if !agency.role.sends() => problems.push(
                &format!("{key}.sender"),
                format!(
                    "agency '{}' has role receiver; give it role sender or both",
                    raw.sender
                ),
            ),
            Some(agency) => {
                if raw.service_types.is_empty() {
                    problems.push(&format!("{key}.service_types"), "must not be empty");
                }
                if raw.areas.is_empty() {
                    problems.push(
                        &format!("{key}.areas"),
                        format!(
                            "must name at least one area (e.g. areas = [\"{}\"]): a permission covers its service types in the areas it lists only",
                            agency.area
                        ),
                    );
                }
                let mut areas = Vec::new();
                for (j, area) in raw.areas.into_iter().enumerate() {
                    match Area::parse(area) {
                        Ok(area) => areas.push(area),
                        Err(e) => problems.push(&format!("{key}.areas[{j}]"), e),
                    }
                }
                for (j, st) in raw.service_types.into_iter().enumerate() {
                    match ServiceType::parse(st) {
                        Ok(st) => permissions.extend(
                            areas
                                .iter()
                                .map(|area| (agency.id.clone(), st.clone(), area.clone())),
                        ),
                        Err(e) => problems.push(&format!("{key}.service_types[{j}]"), e),
                    }
                }
            }
        }
    }
    AgencyRegistry::new(agencies, permissions)
}

fn build_agreements(
    raw: Vec<RawAgreement>,
    registry: &AgencyRegistry,
    problems: &mut Problems,
) -> Vec<SharingAgreement> {
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let key = format!("sharing_agreements[{i}] ({})", a.id);
        if a.id.trim().is_empty() || !seen.insert(a.id.clone()) {
            problems.push(
                &format!("sharing_agreements[{i}].id"),
                "must be non-empty and unique",
            );
        }
        for (field, value) in [
            ("title", &a.title),
            ("purpose", &a.purpose),
            ("lawful_basis", &a.lawful_basis),
        ] {
            if value.trim().is_empty() {
                problems.push(&format!("{key}.{field}"), "must not be empty");
            }
        }
        if a.senders.is_empty() {
            problems.push(
                &format!("{key}.senders"),
                "must name at least one sending agency",
            );
        }
        for s in &a.senders {
            if registry.get(s).is_none_or(|ag| !ag.role.sends()) {
                problems.push(
                    &format!("{key}.senders"),
                    format!("no sending agency '{s}' is configured"),
                );
            }
        }
        if a.recipient_agencies.is_empty() && a.recipient_service_types.is_empty() {
            problems.push(&key, "set recipient_agencies or recipient_service_types");
        }
        for r in &a.recipient_agencies {
            if registry.get(r).is_none_or(|ag| !ag.role.receives()) {
                problems.push(
                    &format!("{key}.recipient_agencies"),
                    format!("no receiving agency '{r}' is configured"),
                );
            }
        }
        if !a.recipient_service_types.is_empty() && a.areas.is_empty() {
            problems.push(
                &format!("{key}.areas"),
                "must list the areas in which recipient_service_types are covered (e.g. areas = [\"coventry\"]); an agreement for several areas lists them all",
            );
        }
        if a.recipient_service_types.is_empty() && !a.areas.is_empty() {
            problems.push(
                &format!("{key}.areas"),
                "applies to recipient_service_types only (recipient_agencies are covered wherever they are); remove it or add recipient_service_types",
            );
        }
        for (j, area) in a.areas.iter().enumerate() {
            if let Err(e) = Area::parse(area.clone()) {
                problems.push(&format!("{key}.areas[{j}]"), e);
            }
        }
        for st in &a.recipient_service_types {
            if ServiceType::parse(st.clone()).is_err() {
                problems.push(
                    &format!("{key}.recipient_service_types"),
                    format!("'{st}' is not a service type"),
                );
            }
        }
        for c in &a.categories {
            if !crate::domain::sharing::CATEGORIES.contains(&c.as_str()) {
                problems.push(
                    &format!("{key}.categories"),
                    format!(
                        "'{c}' is not a field category; use {}",
                        crate::domain::sharing::CATEGORIES.join(", ")
                    ),
                );
            }
        }
        for j in &a.sharing_without_consent {
            if !JUSTIFICATIONS.contains(&j.as_str()) {
                problems.push(
                    &format!("{key}.sharing_without_consent"),
                    format!(
                        "'{j}' is not a justification; use {}",
                        JUSTIFICATIONS.join(", ")
                    ),
                );
            }
        }
        let on_excess = match a.on_excess.as_deref().unwrap_or("remove") {
            "remove" => OnExcess::Remove,
            "reject" => OnExcess::Reject,
            other => {
                problems.push(
                    &format!("{key}.on_excess"),
                    format!("'{other}' must be remove or reject"),
                );
                OnExcess::Remove
            }
        };
        let date = |text: &str, field: &str, problems: &mut Problems| {
            time::Date::parse(text, &date_format)
                .map_err(|_| {
                    problems.push(
                        &format!("{key}.{field}"),
                        format!("'{text}' is not a date (YYYY-MM-DD)"),
                    )
                })
                .ok()
        };
        let from = date(&a.effective_from, "effective_from", problems);
        let to = a
            .effective_to
            .as_deref()
            .and_then(|t| date(t, "effective_to", problems));
        if let (Some(f), Some(t)) = (from, to)
            && t < f
        {
            problems.push(&format!("{key}.effective_to"), "is before effective_from");
        }
        out.push(SharingAgreement {
            id: a.id,
            title: a.title,
            purpose: a.purpose,
            senders: a.senders.into_iter().collect(),
            recipient_agencies: a.recipient_agencies.into_iter().collect(),
            recipient_service_types: a.recipient_service_types.into_iter().collect(),
            areas: a.areas.into_iter().collect(),
            lawful_basis: a.lawful_basis,
            categories: a.categories.into_iter().collect(),
            without_consent: a.sharing_without_consent.into_iter().collect(),
            on_excess,
            effective_from: from.unwrap_or(time::Date::MIN),
            effective_to: to,
        });
    }
    out
}

fn build_storage(
    raw: RawStorage,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> StorageConfig {
    let read = |path: &Path, key: &str, problems: &mut Problems| match std::fs::read_to_string(path)
    {
        Ok(text) => text.trim().to_owned(),
        Err(e) => {
            if checks == FileChecks::Required {
                problems.push(key, format!("cannot read '{}': {e}", path.display()));
            }
            String::new()
        }
    };
    let payload_key = match (env.var("REFGW_PAYLOAD_KEY"), raw.payload_key_file) {
        (Some(v), _) => v,
        (None, Some(path)) => read(&path, "storage.payload_key_file", problems),
        (None, None) => {
            problems.push(
                "storage.payload_key_file",
                "is required (64 hex digits in a file; or set REFGW_PAYLOAD_KEY); make one with `referral-gateway certs init`",
            );
            String::new()
        }
    };
    let previous_payload_keys: Vec<String> = raw
        .previous_payload_key_files
        .iter()
        .map(|p| read(p, "storage.previous_payload_key_files", problems))
        .collect();
    let storage = StorageConfig {
        payload_key,
        previous_payload_keys,
        retention_days: raw.retention_days.unwrap_or(365),
    };
    if checks == FileChecks::Required
        && !storage.payload_key.is_empty()
        && let Err(e) = storage.payload_keys()
    {
        problems.push("storage.payload_key_file", e);
    }
    if storage.retention_days == 0 {
        problems.push("storage.retention_days", "must be at least 1");
    }
    storage
}

/// `https://`, or plain `http://` to this machine only (a local test provider); no
/// credentials in the URL.
fn check_jwks_url(text: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(text).map_err(|_| "is not a URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password");
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be an https:// URL (plain http only to localhost)"),
    }
}

fn build_staff(
    raw: RawStaff,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> Option<StaffConfig> {
    let listen = match env.var("REFGW_STAFF_LISTEN").or(raw.listen) {
        Some(v) if v == "off" => None,
        Some(v) => socket_addr(&v, "staff.listen", problems),
        None => None,
    };
    let mut required = |value: Option<String>, key: &str, example: &str| match value
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => v,
        None => {
            problems.push(key, format!("is required in [staff] (e.g. {example})"));
            String::new()
        }
    };
    let issuer = required(raw.issuer, "staff.issuer", "\"https://login.example.org\"");
    let audience = required(raw.audience, "staff.audience", "\"referral-gateway\"");
    let mut algorithms = Vec::new();
    for name in raw
        .algorithms
        .unwrap_or_else(|| vec!["ES256".into(), "RS256".into(), "EdDSA".into()])
    {
        match crate::staff_auth::tokens::parse_algorithm(&name) {
            Ok(alg) => algorithms.push(alg),
            Err(e) => problems.push("staff.algorithms", e),
        }
    }
    if algorithms.is_empty() {
        problems.push("staff.algorithms", "must allow at least one algorithm");
    }
    let leeway_secs = raw.leeway_secs.unwrap_or(30);
    if leeway_secs > 300 {
        problems.push(
            "staff.leeway_secs",
            "must be at most 300 (clock skew, not token lifetime)",
        );
    }
    let policy = crate::staff_auth::tokens::TokenPolicy {
        issuer,
        audience,
        algorithms,
        leeway_secs,
        roles_claim: raw.roles_claim.unwrap_or_else(|| "roles".into()),
        agency_claim: raw.agency_claim.unwrap_or_else(|| "agency".into()),
        auditor_role: raw.auditor_role.unwrap_or_else(|| "auditor".into()),
        service_manager_role: raw
            .service_manager_role
            .unwrap_or_else(|| "service_manager".into()),
    };
    let dev_tokens = raw.dev_tokens.unwrap_or(false);
    let dev_signing_key = raw.dev_signing_key.unwrap_or_else(|| {
        if dev_tokens {
            problems.push(
                "staff.dev_signing_key",
                "is required when dev_tokens = true (certs-example/staff-dev.key in development)",
            );
        }
        PathBuf::new()
    });
    let jwks_url = raw.jwks_url.map(|url| {
        if let Err(e) = check_jwks_url(&url) {
            problems.push("staff.jwks_url", format!("'{url}' {e}"));
        }
        if let Some(ca) = &raw.jwks_ca
            && checks == FileChecks::Required
            && !ca.is_file()
        {
            problems.push(
                "staff.jwks_ca",
                format!("file '{}' does not exist", ca.display()),
            );
        }
        let refresh = raw.jwks_refresh_secs.unwrap_or(3600);
        if refresh < 60 {
            problems.push("staff.jwks_refresh_secs", "must be at least 60");
        }
        JwksUrl {
            url,
            ca: raw.jwks_ca.clone(),
            refresh: std::time::Duration::from_secs(refresh),
        }
    });
    let auth = match (raw.jwks_file, &jwks_url) {
        (None, None) => {
            problems.push(
                "staff.jwks_file",
                "[staff] needs the identity provider's signing keys: jwks_file, jwks_url, or both",
            );
            return None;
        }
        (None, Some(_)) => crate::staff_auth::tokens::StaffAuth::awaiting_fetch(policy),
        (Some(jwks_file), _) => {
            let text = match std::fs::read_to_string(&jwks_file) {
                Ok(text) => text,
                Err(e) => {
                    if checks == FileChecks::Required {
                        problems.push(
                            "staff.jwks_file",
                            format!("cannot read '{}': {e}", jwks_file.display()),
                        );
                    }
                    return None;
                }
            };
            match crate::staff_auth::tokens::StaffAuth::from_jwks(&text, policy) {
                Ok(auth) => auth,
                Err(e) => {
                    problems.push("staff.jwks_file", format!("'{}': {e}", jwks_file.display()));
                    return None;
                }
            }
        }
    };
    if auth.trusts_dev_key() && !dev_tokens {
        problems.push(
            "staff.jwks_file",
            "trusts the published development staff-token key (whatever its kid); set staff.dev_tokens = true in development only, never in production",
        );
    }
    Some(StaffConfig {
        listen,
        auth: Arc::new(auth),
        jwks_url,
        dev_tokens,
        dev_signing_key,
    })
}

fn build_audit(
    raw: RawAudit,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> AuditConfig {
    let signing_key = raw.signing_key.unwrap_or_else(|| {
        problems.push(
            "audit.signing_key",
            "is required (an Ed25519 PKCS#8 PEM file); make one with `referral-gateway certs init`",
        );
        PathBuf::new()
    });
    if checks == FileChecks::Required
        && !signing_key.as_os_str().is_empty()
        && !signing_key.is_file()
    {
        problems.push(
            "audit.signing_key",
            format!(
                "file '{}' does not exist (make one with `referral-gateway certs init`)",
                signing_key.display()
            ),
        );
    }
    let secret = match (
        env.var("REFGW_PERSON_KEY_SECRET"),
        raw.person_key_secret_file,
    ) {
        (Some(v), _) => v.into_bytes(),
        (None, None) => {
            problems.push(
                "audit.person_key_secret_file",
                "is required (at least 32 bytes in a file; or set REFGW_PERSON_KEY_SECRET); make one with `referral-gateway certs init`",
            );
            Vec::new()
        }
        (None, Some(path)) => match std::fs::read(&path) {
            Ok(bytes) => bytes.trim_ascii().to_vec(),
            Err(e) => {
                if checks == FileChecks::Required {
                    problems.push(
                        "audit.person_key_secret_file",
                        format!(
                            "cannot read '{}': {e} (or set REFGW_PERSON_KEY_SECRET)",
                            path.display()
                        ),
                    );
                }
                Vec::new()
            }
        },
    };
    let previous_public_keys = match &raw.previous_public_keys {
        None => Vec::new(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| crate::security::signing::keys_from_jwks(&text))
        {
            Ok(keys) => keys,
            Err(e) => {
                if checks == FileChecks::Required {
                    problems.push(
                        "audit.previous_public_keys",
                        format!("'{}': {e}", path.display()),
                    );
                }
                Vec::new()
            }
        },
    };
    if checks == FileChecks::Required && !secret.is_empty() && secret.len() < 32 {
        problems.push(
            "audit.person_key_secret_file",
            "the person-key secret must be at least 32 bytes (e.g. 64 hex digits)",
        );
    }
    let checkpoint_every = raw.checkpoint_every.unwrap_or(1000);
    if checkpoint_every < 1 {
        problems.push("audit.checkpoint_every", "must be at least 1");
    }
    if checks == FileChecks::Required
        && let Some(parent) = raw
            .head_file
            .as_deref()
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        problems.push(
            "audit.head_file",
            format!("directory '{}' does not exist", parent.display()),
        );
    }
    AuditConfig {
        signing_key,
        previous_public_keys,
        person_key_secret: secret,
        checkpoint_every,
        checkpoint_interval: std::time::Duration::from_secs(
            raw.checkpoint_interval_secs.unwrap_or(300).max(1),
        ),
        head_file: raw.head_file,
    }
}

fn parse_time(text: &str, key: &str, problems: &mut Problems) -> Option<time::Time> {
    let format = time::macros::format_description!("[hour]:[minute]");
    time::Time::parse(text, &format)
        .map_err(|_| problems.push(key, format!("'{text}' is not a time such as 09:00")))
        .ok()
}

fn load_calendar(
    path: &Path,
    starts: time::Time,
    ends: time::Time,
) -> Result<WorkingCalendar, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let raw: RawCalendarFile =
        toml::from_str(&text).map_err(|e| format!("'{}' is not valid: {e}", path.display()))?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let mut holidays = std::collections::BTreeSet::new();
    let mut last_year = None;
    for (year, dates) in &raw.dates {
        let year: i32 = year
            .parse()
            .map_err(|_| format!("'{}': '{year}' is not a year", path.display()))?;
        last_year = last_year.max(Some(year));
        for date in dates {
            let d = time::Date::parse(date, &format).map_err(|_| {
                format!("'{}': '{date}' is not a date (YYYY-MM-DD)", path.display())
            })?;
            if d.year() != year {
                return Err(format!(
                    "'{}': {date} is listed under {year}",
                    path.display()
                ));
            }
            holidays.insert(d);
        }
    }
    let last_year = last_year.ok_or_else(|| format!("'{}' lists no dates", path.display()))?;
    let covered_until = time::Date::from_calendar_date(last_year, time::Month::December, 31)
        .map_err(|e| e.to_string())?;
    Ok(WorkingCalendar {
        day_starts: starts,
        day_ends: ends,
        holidays,
        covered_until,
    })
}

fn build_sla(
    raw: RawSla,
    registry: &AgencyRegistry,
    checks: FileChecks,
    problems: &mut Problems,
) -> SlaConfig {
    let starts = parse_time(
        raw.working_day_starts.as_deref().unwrap_or("09:00"),
        "sla.working_day_starts",
        problems,
    );
    let ends = parse_time(
        raw.working_day_ends.as_deref().unwrap_or("17:00"),
        "sla.working_day_ends",
        problems,
    );
    if let (Some(s), Some(e)) = (starts, ends)
        && s >= e
    {
        problems.push(
            "sla.working_day_ends",
            "must be later than sla.working_day_starts on the same day (00:00 is the start of a day)",
        );
    }
    let starts = starts.unwrap_or(time::Time::MIDNIGHT);
    let ends = ends.unwrap_or(time::Time::MIDNIGHT);
    let calendar_path = raw
        .calendar
        .unwrap_or_else(|| PathBuf::from("config/bank-holidays-england-and-wales.toml"));
    let calendar = match load_calendar(&calendar_path, starts, ends) {
        Ok(calendar) => calendar,
        Err(message) => {
            if checks == FileChecks::Required {
                problems.push("sla.calendar", message);
            }
            WorkingCalendar {
                day_starts: starts,
                day_ends: ends,
                holidays: Default::default(),
                covered_until: time::Date::MAX,
            }
        }
    };
    let warn_fraction = raw.warn_at.unwrap_or(0.8);
    if !(warn_fraction > 0.0 && warn_fraction < 1.0) {
        problems.push(
            "sla.warn_at",
            "must be a fraction between 0 and 1, e.g. 0.8",
        );
    }
    let target = |text: &str, key: &str, problems: &mut Problems| {
        Target::parse(text, &calendar)
            .map_err(|e| problems.push(key, e))
            .ok()
    };
    let undelivered_after = target(
        raw.undelivered_after.as_deref().unwrap_or("5 working days"),
        "sla.undelivered_after",
        problems,
    )
    .unwrap_or(Target::Calendar(time::Duration::days(7)));
    let mut rules = SlaPolicy::default_rules(&calendar);
    for (i, t) in raw.targets.into_iter().enumerate() {
        let key = format!("sla.targets[{i}]");
        if let Some(agency) = &t.agency
            && registry.get(agency).is_none_or(|a| !a.role.receives())
        {
            problems.push(
                &format!("{key}.agency"),
                format!("no receiving agency '{agency}' is configured"),
            );
        }
        let priority = match t.priority.as_deref() {
            None | Some("*") => None,
            Some(p) => match p.parse::<Priority>() {
                Ok(p) => Some(p),
                Err(_) => {
                    problems.push(
                        &format!("{key}.priority"),
                        "must be emergency, urgent or routine",
                    );
                    None
                }
            },
        };
        let service_type = t.service_type.filter(|s| s != "*");
        if let Some(st) = &service_type
            && ServiceType::parse(st.clone()).is_err()
        {
            problems.push(
                &format!("{key}.service_type"),
                format!("'{st}' is not a service type"),
            );
        }
        let mut clock = |value: Option<String>, name: &str| {
            value.and_then(|v| target(&v, &format!("{key}.{name}"), problems))
        };
        let rule = TargetRule {
            agency: t.agency,
            service_type,
            priority,
            acknowledge: clock(t.acknowledge, "acknowledge"),
            decision: clock(t.decision, "decision"),
            first_contact: clock(t.first_contact, "first_contact"),
        };
        if rule.acknowledge.is_none() && rule.decision.is_none() && rule.first_contact.is_none() {
            problems.push(&key, "sets none of acknowledge, decision, first_contact");
        }
        rules.push(rule);
    }
    SlaConfig {
        scanner_enabled: raw.enabled.unwrap_or(true),
        scan_interval: std::time::Duration::from_secs(raw.scan_interval_secs.unwrap_or(60).max(1)),
        policy: SlaPolicy {
            calendar,
            warn_fraction,
            undelivered_after,
            rules,
        },
    }
}

fn certificate_identity(raw: &RawCertificate) -> Result<CertificateIdentity, String> {
    match (&raw.san_uri, &raw.san_dns, &raw.sha256) {
        (Some(uri), None, None) if !uri.trim().is_empty() => {
            Ok(CertificateIdentity::SanUri(uri.clone()))
        }
        (None, Some(dns), None) if !dns.trim().is_empty() => {
            Ok(CertificateIdentity::SanDns(dns.to_ascii_lowercase()))
        }
        (None, None, Some(fp)) => parse_fingerprint(fp).map(CertificateIdentity::Sha256),
        _ => Err("set exactly one non-empty value of san_uri, san_dns or sha256".to_owned()),
    }
}

/// Accepts `AB:CD:...`, `ab cd ...` or plain hex, as printed by common tools.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex_digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bytes = hex::decode(&hex_digits)
        .map_err(|_| "sha256 must be 64 hexadecimal digits, optionally separated by ':'")?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "sha256 must be 32 bytes (64 hex digits); got {} bytes",
            b.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(Vec<(&'static str, &'static str)>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn base() -> String {
        let root = env!("CARGO_MANIFEST_DIR");
        format!(
            r#"
profile = "development"
[tls]
ca = "{root}/certs-example/ca.crt"
cert = "{root}/certs-example/server.crt"
key = "{root}/certs-example/server.key"

[schemas]
dir = "{root}/schemas"

[sla]
calendar = "{root}/config/bank-holidays-england-and-wales.toml"

[audit]
signing_key = "{root}/certs-example/gateway-signing.key"
person_key_secret_file = "{root}/certs-example/person-key.secret"

[storage]
payload_key_file = "{root}/certs-example/payload.key"

[[agencies]]
id = "liaison"
name = "Liaison"
service_type = "liaison"
area = "coventry"
role = "sender"
certificate = {{ san_uri = "urn:x:liaison" }}

[[agencies]]
id = "cmht"
name = "CMHT"
service_type = "cmht"
area = "coventry"
role = "receiver"
certificate = {{ sha256 = "{pin}" }}

[[permissions]]
sender = "liaison"
service_types = ["cmht"]
areas = ["coventry"]
"#,
            pin = "AB:".repeat(31) + "AB"
        )
    }

    fn load(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), env)
    }

    #[test]
    fn defaults_and_env_overrides() {
        let c = load(&base(), &NoEnv).unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(c.amqp.url, DEFAULT_AMQP_URL);
        let env = MapEnv(vec![
            ("REFGW_LISTEN", "0.0.0.0:9000"),
            ("REFGW_DATABASE_URL", "postgres://x@h/db"),
            ("REFGW_AMQP_URL", "amqps://h/v"),
        ]);
        let c = load(&base(), &env).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.database.url, "postgres://x@h/db");
        assert_eq!(c.amqp.url, "amqps://h/v");
        assert!(c.registry.get("cmht").is_some());
    }

    #[test]
    fn the_head_file_needs_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let with = |path: &Path| {
            base().replace(
                "[audit]\n",
                &format!("[audit]\nhead_file = \"{}\"\n", path.display()),
            )
        };
        let good = dir.path().join("head.json");
        let c = load(&with(&good), &NoEnv).unwrap();
        assert_eq!(c.audit.head_file.as_deref(), Some(good.as_path()));
        let err = load(&with(&dir.path().join("missing/head.json")), &NoEnv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("audit.head_file: directory"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = base().replace("[tls]", "[tls]\ncertificate = \"x\"");
        let err = load(&text, &NoEnv).unwrap_err().to_string();
        assert!(err.contains("certificate"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn every_problem_names_its_key() {
        let text = base()
            .replace("id = \"cmht\"", "id = \"CMHT\"")
            .replace("role = \"sender\"", "role = \"receiver\"")
            .replace("urn:x:liaison\" }", "urn:x:liaison\", san_dns = \"x\" }");
        let env = MapEnv(vec![
            ("REFGW_LISTEN", "localhost"),
            ("REFGW_AMQP_URL", "http://x"),
        ]);
        let err = load(&text, &env).unwrap_err().to_string();
        for needle in [
            "REFGW_LISTEN (environment): 'localhost' is not an IP address",
            "REFGW_AMQP_URL (environment): must start with amqp://",
            "agencies[1].id: agency id must be",
            "agencies[0] (liaison).certificate: set exactly one",
            "permissions[0].sender: no agency 'liaison'",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn duplicate_ids_and_identities_are_refused() {
        let text = base().replace("id = \"cmht\"", "id = \"liaison\"").replace(
            &format!("sha256 = \"{}\"", "AB:".repeat(31) + "AB"),
            "san_uri = \"urn:x:liaison\"",
        );
        let err = load(&text, &NoEnv).unwrap_err().to_string();
        assert!(err.contains("'liaison' is defined more than once"), "{err}");
        assert!(err.contains("already used by agency 'liaison'"), "{err}");
    }

    #[test]
    fn agreements_and_permissions_name_their_areas() {
        let agreement = |extra: &str| {
            format!(
                r#"
[[sharing_agreements]]
id = "isa"
title = "t"
purpose = "p"
senders = ["liaison"]
lawful_basis = "b"
categories = ["identity"]
effective_from = "2026-01-01"
{extra}
"#
            )
        };
        let no_areas = base().replace("areas = [\"coventry\"]\n", "")
            + &agreement("recipient_service_types = [\"cmht\"]");
        let err = load(&no_areas, &NoEnv).unwrap_err().to_string();
        for needle in [
            "permissions[0].areas: must name at least one area (e.g. areas = [\"coventry\"])",
            "sharing_agreements[0] (isa).areas: must list the areas in which recipient_service_types are covered",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let misused = base()
            + &agreement(
                "recipient_agencies = [\"cmht\"]\nareas = [\"coventry\", \"Not An Area\"]",
            );
        let err = load(&misused, &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains(
                "sharing_agreements[0] (isa).areas: applies to recipient_service_types only"
            ),
            "{err}"
        );
        assert!(
            err.contains("sharing_agreements[0] (isa).areas[1]: area must be"),
            "{err}"
        );
        let fine = base()
            + &agreement(
                "recipient_service_types = [\"cmht\"]\nareas = [\"coventry\", \"warwickshire\"]",
            );
        let c = load(&fine, &NoEnv).unwrap();
        assert_eq!(
            c.sharing_agreements[0].areas,
            ["coventry".to_owned(), "warwickshire".to_owned()].into()
        );
        let liaison = c.registry.get("liaison").unwrap().clone();
        let cmht = c.registry.get("cmht").unwrap().clone();
        assert!(c.registry.may_refer(&liaison, &cmht));
    }

    #[test]
    fn fingerprints_parse_in_common_spellings() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex64).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&"AB:".repeat(31).add_last("AB")).unwrap(),
            [0xab; 32]
        );
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint("zz").is_err());
    }

    trait AddLast {
        fn add_last(self, s: &str) -> String;
    }
    impl AddLast for String {
        fn add_last(mut self, s: &str) -> String {
            self.push_str(s);
            self
        }
    }

    #[test]
    fn sla_targets_are_checked() {
        let text = base()
            + r#"
[[sla.targets]]
agency = "nobody"
priority = "whenever"
first_contact = "a fortnight"
"#;
        let err = load(
            &text.replace(
                "[sla]",
                "[sla]\nwarn_at = 1.5\nworking_day_ends = \"00:00\"",
            ),
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "sla.warn_at: must be a fraction",
            "sla.working_day_ends: must be later than sla.working_day_starts",
            "sla.targets[0].agency: no receiving agency 'nobody'",
            "sla.targets[0].priority: must be emergency, urgent or routine",
            "sla.targets[0].first_contact: 'a fortnight' is not a duration",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let ok = base()
            + r#"
[[sla.targets]]
agency = "cmht"
priority = "routine"
first_contact = "14 days"
"#;
        let config = load(&ok, &NoEnv).unwrap();
        assert_eq!(
            config.sla.policy.target(
                crate::domain::sla::Clock::FirstContact,
                "cmht",
                "cmht",
                Priority::Routine
            ),
            Some(Target::Calendar(time::Duration::days(14)))
        );
        assert!(config.sla.policy.calendar.holidays.len() >= 32);
    }

    #[test]
    fn missing_files_are_named() {
        let text = base().replace("certs-example/ca.crt", "certs-example/nope.crt");
        let err = load(&text, &NoEnv).unwrap_err().to_string();
        assert!(err.contains("tls.ca: file"), "{err}");
    }

    #[test]
    fn staff_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        // The published development key, under another kid: recognised by its material.
        let jwks = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-example/staff-jwks.json"),
        )
        .unwrap()
        .replace(crate::staff_auth::tokens::DEV_KEY_ID, "idp-signing-2026");
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks).unwrap();
        let staff = |extra: &str| {
            format!(
                "[staff]\nlisten = \"127.0.0.1:0\"\njwks_file = \"{}\"\n{extra}\n",
                jwks_path.display()
            )
        };
        let err = load(
            &(base() + &staff("algorithms = [\"HS256\", \"none\"]\nleeway_secs = 3600")),
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "staff.issuer: is required",
            "staff.audience: is required",
            "staff.algorithms: 'HS256' is not allowed",
            "staff.algorithms: 'none' is not allowed",
            "staff.leeway_secs",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        let complete = staff("issuer = \"https://idp\"\naudience = \"gw\"");
        let err = load(&(base() + &complete), &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains("staff.jwks_file: trusts the published development"),
            "{err}"
        );
        let dev = "dev_tokens = true\ndev_signing_key = \"certs-example/staff-dev.key\"\n";
        let config = load(&(base() + &complete + dev), &NoEnv).unwrap();
        let staff = config.staff.unwrap();
        assert!(staff.dev_tokens && staff.auth.trusts_dev_key());
        assert_eq!(staff.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert!(load(&base(), &NoEnv).unwrap().staff.is_none());

        let by_url = |url: &str| {
            format!(
                "[staff]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"{url}\"\njwks_refresh_secs = 5\njwks_ca = \"/nonexistent/ca.pem\"\n"
            )
        };
        let err = [
            "http://idp.example/jwks",
            "http://127.0.0.1@idp.example/jwks",
            "http://localhost.idp.example/jwks",
        ]
        .iter()
        .map(|u| {
            load(&(base() + &by_url(u)), &NoEnv)
                .unwrap_err()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
        for needle in [
            "staff.jwks_url: 'http://idp.example/jwks' must be an https:// URL",
            "staff.jwks_url: 'http://127.0.0.1@idp.example/jwks' must not hold a user name",
            "staff.jwks_url: 'http://localhost.idp.example/jwks' must be an https:// URL",
            "staff.jwks_refresh_secs: must be at least 60",
            "staff.jwks_ca: file '/nonexistent/ca.pem' does not exist",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        let neither = "[staff]\nissuer = \"i\"\naudience = \"a\"\n";
        let err = load(&(base() + neither), &NoEnv).unwrap_err().to_string();
        assert!(err.contains("jwks_file, jwks_url, or both"), "{err}");
        let fine =
            "[staff]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"https://idp.example/jwks\"\n";
        let staff = load(&(base() + fine), &NoEnv).unwrap().staff.unwrap();
        assert_eq!(staff.jwks_url.unwrap().refresh.as_secs(), 3600);
        assert!(!staff.auth.trusts_dev_key());
    }
}
