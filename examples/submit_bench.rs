//! Submission benchmark: starts the gateway in-process (shipped config, port 0) on a fresh
//! SQLite file or PostgreSQL database and submits the example CMHT referral over mTLS
//! with N concurrent clients, each on its own keep-alive connection.
//!
//!     cargo run --release --example submit_bench -- --clients 1 --requests 2000 --database sqlite
//!     cargo run --release --example submit_bench -- --clients 8 --requests 4000 --database postgres
//!
//! Prints accepted referrals per second and latency percentiles. Numbers depend on the
//! machine; nothing here is asserted.

mod bench_support;

use std::time::{Duration, Instant};

use bench_support::{BenchDatabase, liaison_client, percentile_ms, root};
use clap::Parser;
use referral_gateway::startup::Application;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = BenchDatabase::create(&args.database, &args.postgres).await?;
    let mut config = bench_support::config(&db.url, args.workers, Vec::new())?;
    config.relay.enabled = false; // intake only
    let app = Application::build(config).await?;
    let url = format!("https://localhost:{}/v1/referrals", app.addr().port());
    let handles = app.handles();
    tokio::spawn(app.run_until_stopped());

    let body = std::fs::read_to_string(root().join("docs/examples/referral-cmht.json"))?;
    let per_client = args.requests / args.clients;
    // Warm up each connection (handshake) outside the measurement.
    let clients: Vec<_> = (0..args.clients).map(|_| liaison_client()).collect();
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
                let mut latencies: Vec<Duration> = Vec::with_capacity(per_client);
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
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        percentile_ms(&latencies, 1.0),
    );
    for h in handles {
        h.stop(true).await;
    }
    db.drop().await
}
