//! Typed configuration: a TOML file plus `REFGW_*` environment overrides, checked as a
//! whole at start-up. Every problem names the key it is about; all problems are reported
//! together so an operator fixes them in one pass.
//!
//! One file per section, each raw (TOML) struct next to its builder and the typed
//! section it builds; this module holds the whole (`Config`), loading and parsing, the
//! list of problems, and the order in which sections are built.

mod agencies;
mod amqp;
mod audit;
pub mod console;
mod credentials;
mod database;
mod profile;
mod relay;
mod schemas;
mod server;
mod sharing;
mod sla;
mod staff;
mod storage;
#[cfg(test)]
mod testing;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::domain::AgencyRegistry;
use crate::domain::sharing::SharingAgreement;

pub use agencies::parse_fingerprint;
pub use amqp::AmqpConfig;
pub use audit::{AuditConfig, check_head_file_writable};
pub use database::DatabaseConfig;
pub use relay::RelayConfig;
pub use server::{BodyTimeouts, ServerConfig};
pub use sla::SlaConfig;
pub use staff::{JwksUrl, StaffConfig};
pub use storage::MAX_RETENTION_DAYS;
pub use storage::StorageConfig;
pub use tls::TlsConfig;

pub const DEFAULT_CONFIG_PATH: &str = "config/gateway.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/gateway.db";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The I/O error is part of the message, not a `source`: printed as a chain, it
    /// would appear twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
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
    server: server::RawServer,
    #[serde(default)]
    database: database::RawDatabase,
    #[serde(default)]
    amqp: amqp::RawAmqp,
    tls: tls::RawTls,
    #[serde(default)]
    schemas: schemas::RawSchemas,
    #[serde(default)]
    relay: relay::RawRelay,
    #[serde(default)]
    sla: sla::RawSla,
    #[serde(default)]
    audit: audit::RawAudit,
    #[serde(default)]
    storage: storage::RawStorage,
    staff: Option<staff::RawStaff>,
    console: Option<console::RawConsole>,
    #[serde(default)]
    sharing_agreements: Vec<sharing::RawAgreement>,
    #[serde(default)]
    agencies: Vec<agencies::RawAgency>,
    #[serde(default)]
    permissions: Vec<agencies::RawPermission>,
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

    /// The agency registry alone (`[[agencies]]` and `[[permissions]]`, checked as
    /// `serve` checks them), for `certs issue` and `certs expiring`: they run where the
    /// scheme CA's key is, which need hold none of the gateway's secrets, credentials or
    /// schemas. The rest of the file is not read.
    pub fn load_registry(path: &Path) -> Result<AgencyRegistry, ConfigError> {
        #[derive(Deserialize)]
        struct RegistryOnly {
            #[serde(default)]
            agencies: Vec<agencies::RawAgency>,
            #[serde(default)]
            permissions: Vec<agencies::RawPermission>,
        }
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let raw: RegistryOnly = toml::from_str::<toml::Value>(&text)
            .and_then(|value| {
                let mut table = toml::Table::new();
                if let Some(all) = value.as_table() {
                    for key in ["agencies", "permissions"] {
                        if let Some(v) = all.get(key) {
                            table.insert(key.to_owned(), v.clone());
                        }
                    }
                }
                toml::Value::Table(table).try_into()
            })
            .map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let mut problems = Problems::default();
        let registry = agencies::build_registry(raw.agencies, raw.permissions, &mut problems);
        if problems.0.is_empty() {
            Ok(registry)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: problems.0,
            })
        }
    }

    /// The CRL files of `[tls] crls` alone, for `certs expiring`, which runs where the
    /// gateway's secrets need not be. The rest of the file is not read.
    pub fn load_crl_paths(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let value = toml::from_str::<toml::Value>(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let crls = value
            .get("tls")
            .and_then(|tls| tls.get("crls"))
            .cloned()
            .map(|crls| crls.try_into::<Vec<PathBuf>>())
            .transpose()
            .map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: format!("tls.crls: {e}"),
            })?;
        Ok(crls.unwrap_or_default())
    }

    fn load_checked(path: &Path, env: &dyn Env, checks: FileChecks) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
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
        let invalid = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let mut problems = Problems::default();
        // `credential:NAME` values become paths in $CREDENTIALS_DIRECTORY first (a file
        // without any is read directly, so parse errors keep their line numbers).
        let raw: RawConfig = if text.contains(credentials::PREFIX) {
            let mut value: toml::Value = toml::from_str(text).map_err(invalid)?;
            credentials::resolve(&mut value, env, &mut problems);
            value.try_into().map_err(|e| {
                // The value has no positions: the text read directly (its `credential:`
                // strings are still strings) gives the same error with its line.
                invalid(toml::from_str::<RawConfig>(text).err().unwrap_or(e))
            })?
        } else {
            toml::from_str(text).map_err(invalid)?
        };
        let unresolved = problems.0.len();
        let config = build(raw, env, checks, &mut problems);
        if unresolved > 0 {
            // A `credential:` value that could not be resolved is already reported: the
            // file checks' "cannot read 'credential:...'" would only repeat it, and point
            // at the wrong fix.
            let mut i = 0;
            problems.0.retain(|p| {
                i += 1;
                i <= unresolved || !p.contains("credential:")
            });
        }
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

/// `[section] url_file`: the URL read from a file (surrounding whitespace trimmed), so
/// a password in it need not sit in the configuration; exclusive with `url`. When the
/// environment gives the URL (`overridden`), the file is not read: the environment takes
/// precedence, and a new host's file may not hold the URL yet.
fn url_from_file(
    url: Option<&str>,
    url_file: Option<&Path>,
    section: &str,
    overridden: bool,
    problems: &mut Problems,
) -> Option<String> {
    let path = url_file?;
    let key = format!("{section}.url_file");
    if url.is_some() {
        problems.push(
            &key,
            format!("set {section}.url or {section}.url_file, not both"),
        );
        return None;
    }
    if overridden {
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Ok(_) => {
            problems.push(&key, format!("'{}' is empty", path.display()));
            None
        }
        Err(e) => {
            problems.push(&key, format!("cannot read '{}': {e}", path.display()));
            None
        }
    }
}

/// A connection URL for `Debug` output: scheme, host, port and path only. The user
/// information and the query (where a password may be, e.g. `?password=`) are left out,
/// and a URL that does not parse (e.g. a password with an unescaped `/`) is not shown.
pub(crate) fn url_for_debug(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(url) => format!(
            "{}://{}{}{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map(|p| format!(":{p}")).unwrap_or_default(),
            url.path(),
            if url.query().is_some() { "?..." } else { "" }
        ),
        Err(_) => "(a URL that does not parse)".to_owned(),
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

/// Builds every section. The order of the calls is the order in which problems are
/// listed, which `config check` and start-up print.
fn build(
    raw: RawConfig,
    env: &dyn Env,
    checks: FileChecks,
    problems: &mut Problems,
) -> Option<Config> {
    let listeners = server::build_listeners(&raw.server, env, problems);
    let database = database::build_database(raw.database, env, problems);
    let amqp_url = amqp::build_amqp_url(&raw.amqp, env, problems);
    tls::check_tls_files(&raw.tls, checks, problems);
    let amqp = amqp::build_amqp(raw.amqp, amqp_url, env, problems);
    let relay = relay::build_relay(raw.relay, problems);
    let schemas_dir = schemas::build_schemas_dir(raw.schemas, problems);
    let server = server::build_server(raw.server, listeners, problems);
    let profile = profile::build_profile(raw.profile.as_deref(), problems);

    let registry = agencies::build_registry(raw.agencies, raw.permissions, problems);
    let sla = sla::build_sla(raw.sla, &registry, checks, problems);
    let audit = audit::build_audit(raw.audit, env, checks, problems);
    let storage = storage::build_storage(raw.storage, env, checks, problems);
    let staff_issuer = raw.staff.as_ref().and_then(staff::issuer);
    let staff = raw
        .staff
        .and_then(|staff| staff::build_staff(staff, env, checks, problems));
    let console = console::build(raw.console, staff_issuer.as_deref(), env, checks, problems);
    let sharing_agreements = sharing::build_agreements(raw.sharing_agreements, &registry, problems);

    let tls = tls::build_tls(raw.tls);
    if profile == crate::security::published::Profile::Production {
        // Fail closed: without an agreement every referral would be shared whole, under
        // permissions alone (which the development profile allows, for trying it out).
        if sharing_agreements.is_empty() && registry.agencies().any(|a| a.role.sends()) {
            problems.push(
                "sharing_agreements",
                "the production profile needs at least one [[sharing_agreements]] entry: without one, referrals are shared whole under permissions alone (docs/configuration.md; profile = \"development\" allows it for trying the gateway out)",
            );
        }
        profile::refuse_published_material(
            &tls,
            &audit,
            &storage,
            staff.as_ref(),
            checks,
            problems,
        );
    }

    Some(Config {
        profile,
        server: server?,
        database,
        amqp,
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

#[cfg(test)]
mod tests {
    use super::*;
    use testing::{MapEnv, base, load};

    #[test]
    fn debug_output_hides_url_passwords() {
        assert_eq!(
            url_for_debug("postgres://gw:s3cret@db.example:5432/refgw?sslmode=verify-full"),
            "postgres://db.example:5432/refgw?..."
        );
        assert_eq!(
            url_for_debug("amqps://gw:p@ss@mq.example/vh"),
            "amqps://mq.example/vh"
        );
        assert_eq!(
            url_for_debug("postgres://gw@db/refgw?password=s3cret"),
            "postgres://db/refgw?..."
        );
        assert_eq!(
            url_for_debug("postgres://gw:s3/cret@db/refgw"),
            "(a URL that does not parse)"
        );
        assert_eq!(url_for_debug("amqp://mq:5672/%2f"), "amqp://mq:5672/%2f");
        assert_eq!(url_for_debug("sqlite://data/gw.db"), "sqlite://data/gw.db");
        let mut c = load(&base(), &NoEnv).unwrap();
        c.database.url = "postgres://gw:s3cret@db/refgw".into();
        c.amqp.url = "amqp://gw:s3cret@mq/".into();
        let text = format!("{:?} {:?}", c.database, c.amqp);
        assert!(!text.contains("s3cret"), "{text}");
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
    fn urls_with_passwords_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("database-url");
        let amqp = dir.path().join("amqp-url");
        std::fs::write(&db, "postgres://app:s3cret@127.0.0.1:5432/gw\n").unwrap();
        std::fs::write(&amqp, "amqp://gw:s3cret@127.0.0.1:5672/%2f").unwrap();
        let text = format!(
            "{}\n[database]\nurl_file = \"{}\"\n[amqp]\nurl_file = \"{}\"\n",
            base(),
            db.display(),
            amqp.display()
        );
        let c = load(&text, &NoEnv).unwrap();
        assert_eq!(c.database.url, "postgres://app:s3cret@127.0.0.1:5432/gw");
        assert_eq!(c.amqp.url, "amqp://gw:s3cret@127.0.0.1:5672/%2f");
        // The environment still wins.
        let env = MapEnv(vec![("REFGW_DATABASE_URL", "sqlite://x.db")]);
        assert_eq!(load(&text, &env).unwrap().database.url, "sqlite://x.db");
        // ... and then the file is not read: a new host's may still be empty.
        std::fs::write(&db, "").unwrap();
        assert_eq!(load(&text, &env).unwrap().database.url, "sqlite://x.db");
        assert!(load(&text, &NoEnv).is_err());
        std::fs::write(&db, "postgres://app:s3cret@127.0.0.1:5432/gw\n").unwrap();

        let both = text.replace("[database]\n", "[database]\nurl = \"sqlite://y.db\"\n");
        let err = load(&both, &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains("database.url_file: set database.url or database.url_file, not both"),
            "{err}"
        );
        std::fs::remove_file(&amqp).unwrap();
        let err = load(&text, &NoEnv).unwrap_err().to_string();
        assert!(err.contains("amqp.url_file: cannot read"), "{err}");
    }

    #[test]
    fn commit_transactions_default_per_database_and_bounded() {
        let with = |db: &str| format!("{}\n[database]\n{db}\n", base());
        assert_eq!(
            load(&base(), &NoEnv).unwrap().database.commit_transactions,
            1
        );
        let pg = with("url = \"postgres://x@h/db\"");
        assert_eq!(load(&pg, &NoEnv).unwrap().database.commit_transactions, 2);
        let one = with("url = \"postgres://x@h/db\"\nmax_connections = 2");
        assert_eq!(load(&one, &NoEnv).unwrap().database.commit_transactions, 1);
        for (db, problem) in [
            (
                "url = \"sqlite://x.db\"\ncommit_transactions = 2",
                "database.commit_transactions: must be 1 with SQLite",
            ),
            (
                "url = \"postgres://x@h/db\"\ncommit_transactions = 9",
                "database.commit_transactions: must be from 1 to 8",
            ),
            (
                "url = \"postgres://x@h/db\"\nmax_connections = 4\ncommit_transactions = 4",
                "database.commit_transactions: must be less than database.max_connections",
            ),
        ] {
            let err = load(&with(db), &NoEnv).unwrap_err().to_string();
            assert!(err.contains(problem), "missing {problem:?} in {err}");
        }
    }

    #[test]
    fn missing_files_are_named() {
        let text = base().replace("certs-example/ca.crt", "certs-example/nope.crt");
        let err = load(&text, &NoEnv).unwrap_err().to_string();
        assert!(err.contains("tls.ca: file"), "{err}");
    }
}
