//! Submission benchmark: starts the gateway in-process (shipped config, port 0) on a fresh
//! SQLite file or PostgreSQL database and submits the example CMHT referral over mTLS
//! with N concurrent clients, each on its own keep-alive connection.
//!
//!     cargo run --release --example submit_bench -- --clients 1 --requests 2000 --database sqlite
//!     cargo run --release --example submit_bench -- --clients 8 --requests 4000 --database postgres
//!     cargo run --release --example submit_bench -- --clients 32 --requests 8000 --database postgres --instances 2
//!
//! Prints accepted referrals per second, latency percentiles, the gateway's CPU time per
//! referral (the process's CPU time less that of the client threads, which run on their
//! own runtime), the process's peak RSS (clients included) and the load average. Numbers
//! depend on the machine; nothing here is asserted.

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
    /// Gateways on the one database (PostgreSQL), each with its own pool and committer;
    /// the clients are shared out among them.
    #[arg(long, default_value_t = 1)]
    instances: usize,
}

/// Name of the client runtime's threads, whose CPU time is not the gateway's.
const CLIENT_THREAD: &str = "bench-client";

fn main() -> anyhow::Result<()> {
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()?;
    let gateway = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    gateway.block_on(run(clients.handle().clone()))
}

async fn run(client_runtime: tokio::runtime::Handle) -> anyhow::Result<()> {
    let args = Args::parse();
    let db = BenchDatabase::create(&args.database, &args.postgres).await?;
    let mut urls = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..args.instances.max(1) {
        let mut config = bench_support::config(&db.url, args.workers, Vec::new())?;
        config.relay.enabled = false; // intake only
        let app = Application::build(config).await?;
        urls.push(format!(
            "https://localhost:{}/v1/referrals",
            app.addr().port()
        ));
        handles.extend(app.handles());
        tokio::spawn(app.run_until_stopped());
    }

    let body = std::fs::read_to_string(root().join("docs/examples/referral-cmht.json"))?;
    let per_client = args.requests / args.clients;
    // Warm up each connection (handshake) outside the measurement, on the client runtime, so that the connections' tasks run there.
    let clients: Vec<_> = (0..args.clients).map(|_| liaison_client()).collect();
    for (i, c) in clients.iter().enumerate() {
        let url = &urls[i % urls.len()];
        let (c, health) = (c.clone(), url.replace("/v1/referrals", "/healthz"));
        client_runtime
            .spawn(async move { c.get(health).send().await.map(|_| ()) })
            .await??;
    }
    let started = Instant::now();
    let cpu_before = process_cpu_ticks()?;
    let client_cpu_before = thread_cpu_ticks(CLIENT_THREAD)?;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let url = urls[i % urls.len()].clone();
            let body = body.clone();
            client_runtime.spawn(async move {
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
    let gateway_ticks = (process_cpu_ticks()? - cpu_before)
        - (thread_cpu_ticks(CLIENT_THREAD)? - client_cpu_before);
    latencies.sort();
    println!(
        "database={} instances={} clients={} referrals={} elapsed={:.2}s rate={:.0}/s latency p50={:.2}ms p99={:.2}ms max={:.2}ms",
        args.database,
        urls.len(),
        args.clients,
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        percentile_ms(&latencies, 1.0),
    );
    println!(
        "gateway cpu={:.0}us/referral peak_rss={}MB load={}",
        ticks_to_micros(gateway_ticks) / latencies.len() as f64,
        peak_rss_kb()? / 1024,
        load_average()?,
    );
    for h in handles {
        h.stop(true).await;
    }
    db.drop().await
}

/// utime + stime of this process (clock ticks) from /proc/self/stat.
pub fn process_cpu_ticks() -> anyhow::Result<u64> {
    stat_cpu_ticks(&std::fs::read_to_string("/proc/self/stat")?)
}

/// utime + stime (clock ticks) of this process's threads named `name`.
pub fn thread_cpu_ticks(name: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(name) {
            total += stat_cpu_ticks(&std::fs::read_to_string(dir.join("stat"))?)?;
        }
    }
    Ok(total)
}

/// Fields 14 and 15 (utime, stime) of a `stat` line; the command name may hold spaces.
fn stat_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unreadable stat line"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short stat line"))?
            .parse()?)
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks as microseconds (Linux's USER_HZ is 100).
pub fn ticks_to_micros(ticks: u64) -> f64 {
    ticks as f64 * 10_000.0
}

/// VmHWM of this process, in KiB.
pub fn peak_rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}

/// The 1-minute load average (the machine is shared: say how busy it was).
pub fn load_average() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/loadavg")?
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned())
}
