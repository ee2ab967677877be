//! Submission benchmark: starts the gateway in-process (shipped config, port 0) on a fresh
//! SQLite file or PostgreSQL database and submits the example CMHT referral over mTLS
//! with N concurrent clients, each on its own keep-alive connection.
//!
//!     cargo run --release --example submit_bench -- --clients 1 --requests 2000 --database sqlite
//!     cargo run --release --example submit_bench -- --clients 8 --requests 4000 --database postgres
//!
//! Prints accepted referrals per second and latency percentiles. Numbers depend on the
//! machine; nothing here is asserted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use referral_gateway::config::{Config, Env};
use referral_gateway::startup::Application;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Parser)]
struct Args {
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Referrals to submit in total.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// Admin URL for creating the PostgreSQL bench database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Gateway worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

struct Overrides(Vec<(&'static str, String)>);
impl Env for Overrides {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

fn client(root: &Path) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root.join("certs-example/ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let dir = root.join("certs-example/agencies");
    let chain = CertificateDer::pem_file_iter(dir.join("coventry-liaison.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("coventry-liaison.key")).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    let (db_url, pg_name) = match args.database.as_str() {
        "sqlite" => (
            format!("sqlite://{}", dir.path().join("bench.db").display()),
            None,
        ),
        "postgres" => {
            use sqlx::Connection;
            let name = format!("refgw_bench_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&args.postgres).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            let (base, _) = args.postgres.rsplit_once('/').unwrap();
            (format!("{base}/{name}"), Some(name))
        }
        other => anyhow::bail!("--database must be sqlite or postgres, not {other}"),
    };
    let text = std::fs::read_to_string(root.join("config/gateway.toml"))?
        .replace(
            "\"certs-example/",
            &format!("\"{}/certs-example/", root.display()),
        )
        .replace(
            "dir = \"schemas\"",
            &format!("dir = \"{}/schemas\"", root.display()),
        );
    let env = Overrides(vec![
        ("REFGW_LISTEN", "127.0.0.1:0".into()),
        ("REFGW_OPS_LISTEN", "off".into()),
        ("REFGW_DATABASE_URL", db_url),
    ]);
    let mut config = Config::from_toml(&text, Path::new("gateway.toml"), &env)?;
    config.server.workers = Some(args.workers);
    let app = Application::build(config).await?;
    let url = format!("https://localhost:{}/v1/referrals", app.addr().port());
    let handles = app.handles();
    tokio::spawn(app.run_until_stopped());

    let body = std::fs::read_to_string(root.join("docs/examples/referral-cmht.json"))?;
    let per_client = args.requests / args.clients;
    // Warm up each connection (handshake) outside the measurement.
    let clients: Vec<_> = (0..args.clients).map(|_| client(root)).collect();
    for c in &clients {
        let _ = c
            .get(url.replace("/v1/referrals", "/healthz"))
            .send()
            .await?;
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let url = url.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    let r = c
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(r.status(), 202);
                    let _ = r.bytes().await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "database={} clients={} referrals={} elapsed={:.2}s rate={:.0}/s latency p50={:.2}ms p99={:.2}ms max={:.2}ms",
        args.database,
        args.clients,
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    for h in handles {
        h.stop(true).await;
    }
    if let Some(name) = pg_name {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&args.postgres).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}
