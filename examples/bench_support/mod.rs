//! Shared by the bench examples: a gateway config on a throw-away database, and an mTLS
//! client holding the liaison team's example certificate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use referral_gateway::config::{Config, Env};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Overrides(Vec<(&'static str, String)>);

impl Env for Overrides {
    fn var(&self, name: &str) -> Option<String> {
        // The last setting wins: `extra` overrides the defaults.
        self.0
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

/// A throw-away database: a SQLite file in a temporary directory, or a PostgreSQL
/// database created through `postgres_admin` and dropped by `drop`.
pub struct BenchDatabase {
    pub url: String,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl BenchDatabase {
    pub async fn create(kind: &str, postgres_admin: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        match kind {
            "sqlite" => Ok(Self {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                _dir: dir,
                pg: None,
            }),
            "postgres" => {
                use sqlx::Connection;
                let name = format!("refgw_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(postgres_admin).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await?;
                let (base, _) = postgres_admin
                    .rsplit_once('/')
                    .ok_or_else(|| anyhow::anyhow!("--postgres needs a database name"))?;
                Ok(Self {
                    url: format!("{base}/{name}"),
                    _dir: dir,
                    pg: Some((postgres_admin.to_owned(), name)),
                })
            }
            other => anyhow::bail!("--database must be sqlite or postgres, not {other}"),
        }
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        if let Some((admin, name)) = self.pg {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// The shipped config's text with every relative path made absolute (so it works from
/// any directory).
pub fn config_text() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(root().join("config/gateway.toml"))?
        .replace(
            "\"certs-example/",
            &format!("\"{}/certs-example/", root().display()),
        )
        .replace("\"config/", &format!("\"{}/config/", root().display()))
        .replace(
            "dir = \"schemas\"",
            &format!("dir = \"{}/schemas\"", root().display()),
        ))
}

/// The shipped config with absolute paths, port 0, no ops listener, and `extra` overrides.
pub fn config(
    database_url: &str,
    workers: usize,
    extra: Vec<(&'static str, String)>,
) -> anyhow::Result<Config> {
    config_with(database_url, workers, extra, "")
}

/// As [`config`], with `toml` appended to the shipped file (more agencies, say).
pub fn config_with(
    database_url: &str,
    workers: usize,
    extra: Vec<(&'static str, String)>,
    toml: &str,
) -> anyhow::Result<Config> {
    let text = config_text()? + toml;
    let mut vars = vec![
        ("REFGW_LISTEN", "127.0.0.1:0".to_owned()),
        ("REFGW_OPS_LISTEN", "off".to_owned()),
        ("REFGW_STAFF_LISTEN", "off".to_owned()),
        ("REFGW_DATABASE_URL", database_url.to_owned()),
    ];
    vars.extend(extra);
    let mut config = Config::from_toml(&text, Path::new("gateway.toml"), &Overrides(vars))?;
    config.server.workers = Some(workers);
    Ok(config)
}

pub fn liaison_client() -> reqwest::Client {
    let certs: PathBuf = root().join("certs-example");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.crt")).expect("ca") {
        roots.add(c.expect("ca pem")).expect("ca cert");
    }
    let chain = CertificateDer::pem_file_iter(certs.join("agencies/coventry-liaison.crt"))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert pem");
    let key =
        PrivateKeyDer::from_pem_file(certs.join("agencies/coventry-liaison.key")).expect("key");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(1)
        .build()
        .expect("client")
}

/// Latency percentile in milliseconds from sorted durations.
pub fn percentile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}
