//! End-to-end benchmark: the release gateway as a separate process, this process as the
//! load generator and the consumer, and the broker's own confirmed-publish rate beside it.
//!
//!     cargo build --release --bin referral-gateway --example e2e_bench
//!     target/release/examples/e2e_bench --clients 8 --duration 20 --database sqlite
//!     target/release/examples/e2e_bench --clients 32 --count 20000 --database postgres --json
//!     target/release/examples/e2e_bench --matrix --duration 20 --svg docs/performance/e2e.svg
//!
//! One run:
//! 1. Writes a config (the shipped one, absolute paths) to a temporary directory, makes a
//!    fresh SQLite file or PostgreSQL database and a unique broker namespace, and starts
//!    `target/release/referral-gateway serve` on free ports; waits for `/readyz`.
//! 2. Measures the broker alone: confirmed persistent publishes of the same payload to a
//!    temporary quorum queue, 32 in flight, for a few seconds.
//! 3. Warms up (one referral per client), then for `--duration` seconds (or until
//!    `--count` referrals) N keep-alive mTLS clients post the example CMHT referral while a
//!    consumer on the CMHT queue times each referral from its 202 to its arrival. The
//!    measured interval ends when every accepted referral is on the queue.
//! 4. Measures the broker alone again, stops the gateway (SIGTERM) and removes the
//!    database, namespace and directory.
//!
//! CPU figures are read from `/proc/<pid>/stat` (user + system time) of the gateway and of
//! the broker's `beam.smp` over the measured interval; peak RSS is the gateway's `VmHWM`.
//! The broker is shared: anything else using it at the time is counted too. Nothing is
//! asserted: the numbers depend on the machine (docs/performance.md).

mod bench_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench_support::{BenchDatabase, liaison_client, percentile_ms, root};
use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use referral_gateway::delivery::topology::{Topology, connect_confirming, string};
use serde::Serialize;

#[derive(Parser, Clone)]
struct Args {
    /// Concurrent clients, each on its own keep-alive connection (1 to 64).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    clients: u16,
    /// Seconds of submitting (the measured interval also covers the drain after it).
    #[arg(long, default_value_t = 20, conflicts_with = "count")]
    duration: u64,
    /// Submit this many referrals instead of running for a duration.
    #[arg(long)]
    count: Option<usize>,
    /// sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// Admin URL for creating (and dropping) the PostgreSQL bench database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// The gateway binary to run.
    #[arg(long, default_value = "target/release/referral-gateway")]
    binary: PathBuf,
    /// `server.workers` for the gateway (default: its own, one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// `database.commit_transactions` for the gateway (PostgreSQL only; default: its own).
    #[arg(long)]
    commit_transactions: Option<usize>,
    /// Seconds of each broker-alone measurement (before and after the run).
    #[arg(long, default_value_t = 3)]
    broker_secs: u64,
    /// Confirms in flight in the broker-alone measurement.
    #[arg(long, default_value_t = 32)]
    broker_window: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run 1, 8, 32 and 64 clients on SQLite and on PostgreSQL (ignores --clients and
    /// --database).
    #[arg(long)]
    matrix: bool,
    /// Write a chart (throughput and 202 -> queue p99 against clients) as SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Record a CPU profile of the gateway over the measured interval
    /// (`perf record -g -p <pid> -o FILE`; needs perf).
    #[arg(long)]
    perf: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
struct Report {
    database: String,
    clients: u16,
    /// `/proc/loadavg`'s 1-minute figure when the run started (the machine is shared).
    load_before: f64,
    accepted: usize,
    errors: usize,
    delivered: usize,
    submit_secs: f64,
    accepted_per_sec: f64,
    /// From the first submission to the last arrival on the queue.
    end_to_end_per_sec: f64,
    queue_p50_ms: f64,
    queue_p99_ms: f64,
    submit_p50_ms: f64,
    submit_p99_ms: f64,
    gateway_cpu_us_per_referral: f64,
    broker_cpu_us_per_message: f64,
    gateway_peak_rss_mib: f64,
    /// This process's own CPU (the TLS clients and the queue consumer) per referral.
    bench_cpu_us_per_referral: f64,
    /// How busy the whole machine was over the interval (100 = every core busy): above
    /// about 90 the run measures the machine, not the gateway.
    machine_busy_pct: f64,
    /// Mean outbox rows per relay round over the interval (from /metrics).
    relay_mean_batch: f64,
    broker_alone_before_per_sec: f64,
    broker_alone_after_per_sec: f64,
    broker_alone_cpu_us_per_message: f64,
    /// accepted/s divided by the mean broker-alone rate.
    ratio_to_broker: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.binary.exists() {
        bail!(
            "{} not found: run `cargo build --release --bin referral-gateway` first (from the repository root)",
            args.binary.display()
        );
    }
    let runs: Vec<(String, u16)> = if args.matrix {
        ["sqlite", "postgres"]
            .iter()
            .flat_map(|db| [1, 8, 32, 64].map(|c| (db.to_string(), c)))
            .collect()
    } else {
        vec![(args.database.clone(), args.clients)]
    };
    let mut reports = Vec::new();
    for (database, clients) in runs {
        eprintln!(
            "running: {database}, {clients} clients (load {:.2})",
            load_average()
        );
        let report = run_once(&args, &database, clients)
            .await
            .with_context(|| format!("{database}, {clients} clients"))?;
        reports.push(report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print_table(&reports);
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, chart(&reports))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// The gateway process and what it needs cleaned up.
struct Gateway {
    child: Child,
    port: u16,
    ops: u16,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(args: &Args, database_url: &str, namespace: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut text = bench_support::config_text()?;
        if let Some(workers) = args.workers {
            text = text.replacen("[server]\n", &format!("[server]\nworkers = {workers}\n"), 1);
        }
        if let Some(n) = args.commit_transactions {
            text = text.replacen(
                "[database]\n",
                &format!("[database]\ncommit_transactions = {n}\n"),
                1,
            );
        }
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text)?;
        let (port, ops) = (free_port()?, free_port()?);
        let binary = std::fs::canonicalize(&args.binary)?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .current_dir(dir.path())
            .env("REFGW_LISTEN", format!("127.0.0.1:{port}"))
            .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{ops}"))
            .env("REFGW_STAFF_LISTEN", "off")
            .env("REFGW_DATABASE_URL", database_url)
            .env("REFGW_AMQP_URL", &args.amqp)
            .env("REFGW_AMQP_NAMESPACE", namespace)
            .env("REFGW_LOG", "warn")
            .env_remove("REFGW_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("gateway.log"))?)
            .spawn()
            .context("starting the gateway")?;
        Ok(Self {
            child,
            port,
            ops,
            dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Waits until `/readyz` says ready (broker connected), up to 60 s.
    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the gateway exited ({status}):\n{}", self.log());
            }
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{}/readyz", self.ops))
                .send()
                .await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["status"] == "ready"
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the gateway was not ready after 60 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped after 30 s.
    fn stop(mut self) -> anyhow::Result<()> {
        signal(self.pid(), "TERM");
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU time of `pid` so far, in microseconds.
fn cpu_micros(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).context("utime")?.parse::<f64>()?
        + fields.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks * 1e6 / clock_ticks())
}

/// The whole machine's busy and total CPU time so far (all cores, `/proc/stat`), in ticks:
/// busy is everything but idle and I/O wait.
fn machine_ticks() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    Ok((total - idle, total))
}

/// `VmHWM` of `pid` in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The `beam.smp` process listening on the broker's port (of several brokers, the one the
/// bench talks to), or else the oldest `beam.smp`.
fn broker_pid(amqp_url: &str) -> Option<u32> {
    let port: u16 = amqp_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .unwrap_or(5672);
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A");
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if listening
                && local_port == Some(port)
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let mut beams = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "beam.smp")
        {
            continue;
        }
        let listens = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|link| inodes.iter().any(|i| Path::new(i) == link));
        if listens {
            return Some(pid);
        }
        beams.push(pid);
    }
    beams.into_iter().min()
}

/// Sum and count of `refgw_relay_batch_size` in a /metrics text.
fn batch_sum_count(metrics: &str) -> (f64, f64) {
    let read = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        read("refgw_relay_batch_size_sum "),
        read("refgw_relay_batch_size_count "),
    )
}

/// The broker alone: confirmed persistent publishes of `body` to a temporary quorum queue
/// with `window` in flight, for `secs`. Returns (messages per second, broker CPU µs per
/// message).
async fn broker_alone(
    args: &Args,
    namespace: &str,
    body: &[u8],
    beam: Option<u32>,
) -> anyhow::Result<(f64, f64)> {
    let (connection, channel) = connect_confirming(&args.amqp).await?;
    let queue = format!("{namespace}.broker-alone.{}", uuid::Uuid::new_v4().simple());
    let mut qargs = FieldTable::default();
    qargs.insert("x-queue-type".into(), string("quorum"));
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            qargs,
        )
        .await?;
    let props = lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let cpu_before = beam.map(cpu_micros).transpose()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.broker_secs);
    let mut in_flight = FuturesUnordered::new();
    let mut confirmed = 0usize;
    let mut refused = 0usize;
    loop {
        let sending = Instant::now() < until;
        if sending && in_flight.len() < args.broker_window.max(1) {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone(),
                )
                .await?;
            in_flight.push(confirm);
            continue;
        }
        match in_flight.next().await {
            Some(outcome) => {
                if outcome?.is_ack() {
                    confirmed += 1;
                } else {
                    refused += 1;
                }
            }
            None => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (beam, cpu_before) {
        (Some(pid), Some(before)) => (cpu_micros(pid)? - before) / confirmed.max(1) as f64,
        _ => f64::NAN,
    };
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "bench done".into()).await;
    if refused > 0 {
        eprintln!("broker alone: {refused} publishes refused");
    }
    Ok((confirmed as f64 / elapsed, cpu))
}

async fn run_once(args: &Args, database: &str, clients: u16) -> anyhow::Result<Report> {
    let load_before = load_average();
    let namespace = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let db = BenchDatabase::create(database, &args.postgres).await?;
    let result = measure(args, database, clients, &db.url, &namespace, load_before).await;
    // Clean up whatever happened (the database first: nothing below may skip it).
    db.drop().await?;
    let registry = bench_support::config("sqlite::memory:", 1, Vec::new())?.registry;
    if let Ok((connection, channel)) = connect_confirming(&args.amqp).await {
        let _ = Topology::new(&namespace, &registry).delete(&channel).await;
        let _ = connection.close(200, "bench done".into()).await;
    }
    result
}

async fn measure(
    args: &Args,
    database: &str,
    clients: u16,
    database_url: &str,
    namespace: &str,
    load_before: f64,
) -> anyhow::Result<Report> {
    let body = std::fs::read_to_string(root().join("docs/examples/referral-cmht.json"))?;
    // Plain HTTP to the ops listener (any client will do; this one has a TLS provider).
    let http = liaison_client();
    let mut gateway = Gateway::start(args, database_url, namespace)?;
    if let Err(e) = gateway.wait_ready(&http).await {
        let _ = gateway.stop();
        return Err(e);
    }
    let result = drive(args, database, clients, &gateway, &http, &body, namespace).await;
    let log = gateway.log();
    gateway.stop()?;
    let mut report = result.with_context(|| format!("gateway log:\n{log}"))?;
    report.load_before = load_before;
    Ok(report)
}

async fn drive(
    args: &Args,
    database: &str,
    clients: u16,
    gateway: &Gateway,
    http: &reqwest::Client,
    body: &str,
    namespace: &str,
) -> anyhow::Result<Report> {
    let pid = gateway.pid();
    let beam = broker_pid(&args.amqp);
    if beam.is_none() {
        eprintln!("no beam.smp process found: broker CPU is not measured");
    }
    let (before_rate, _) = broker_alone(args, namespace, body.as_bytes(), beam).await?;

    // The consumer: arrival time per message id on the CMHT queue.
    let registry = bench_support::config("sqlite::memory:", 1, Vec::new())?.registry;
    let topology = Topology::new(namespace, &registry);
    let (consumer_conn, consumer_channel) = connect_confirming(&args.amqp).await?;
    let mut consumer = consumer_channel
        .basic_consume(
            topology.referral_queue("coventry-cmht").as_str().into(),
            "e2e-bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrived = Arc::new(AtomicUsize::new(0));
    let consuming = {
        let (arrivals, arrived) = (arrivals.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let at = Instant::now();
                let id = d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                if let Ok(mut seen) = arrivals.lock()
                    && seen.insert(id, at).is_none()
                {
                    arrived.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let url = format!("https://localhost:{}/v1/referrals", gateway.port);
    let posters: Vec<reqwest::Client> = (0..clients).map(|_| liaison_client()).collect();
    // Warm-up: one referral per client (handshakes, caches), all delivered before timing.
    for c in &posters {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        if r.status() != 202 {
            bail!("warm-up referral answered {}", r.status());
        }
    }
    wait_for(&arrived, usize::from(clients), Duration::from_secs(60)).await;
    let warm = arrived.load(Ordering::Relaxed);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", gateway.ops);
    let batches_before = batch_sum_count(&http.get(&metrics_url).send().await?.text().await?);

    let perf = match &args.perf {
        Some(out) => Some(
            Command::new("perf")
                .args(["record", "-g", "-p", &pid.to_string(), "-o"])
                .arg(out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf (apt-get install linux-perf)")?,
        ),
        None => None,
    };
    let gw_cpu_before = cpu_micros(pid)?;
    let beam_cpu_before = beam.map(cpu_micros).transpose()?;
    let own_cpu_before = cpu_micros(std::process::id())?;
    let machine_before = machine_ticks()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let budget = Arc::new(AtomicUsize::new(args.count.unwrap_or(usize::MAX)));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let tasks: Vec<_> = posters
        .into_iter()
        .map(|c| {
            let (url, body, accepted) = (url.clone(), body.to_owned(), accepted.clone());
            let (budget, stop) = (budget.clone(), stop.clone());
            let timed = args.count.is_none();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                loop {
                    if stop.load(Ordering::Relaxed) || (timed && Instant::now() >= deadline) {
                        break;
                    }
                    if budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_err()
                    {
                        break;
                    }
                    let t = Instant::now();
                    let sent = c
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let Ok(r) = sent else {
                        errors += 1;
                        continue;
                    };
                    if r.status() != 202 {
                        errors += 1;
                        let _ = r.bytes().await;
                        continue;
                    }
                    let receipt: serde_json::Value = match r.json().await {
                        Ok(v) => v,
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    };
                    let at = Instant::now();
                    latencies.push(at - t);
                    if let (Some(id), Ok(mut accepted)) =
                        (receipt["referral_id"].as_str(), accepted.lock())
                    {
                        accepted.insert(id.to_owned(), at);
                    }
                    if errors > 100 {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut submit_latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        submit_latencies.extend(l);
        errors += e;
    }
    let submit_secs = started.elapsed().as_secs_f64();
    let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    let drained = wait_for(&arrived, warm + accepted.len(), Duration::from_secs(300)).await;
    let interval = started.elapsed().as_secs_f64();
    let gw_cpu = cpu_micros(pid)? - gw_cpu_before;
    let own_cpu = cpu_micros(std::process::id())? - own_cpu_before;
    let machine_after = machine_ticks()?;
    let machine_busy_pct = 100.0 * (machine_after.0 - machine_before.0)
        / (machine_after.1 - machine_before.1).max(1.0);
    let beam_cpu = match (beam, beam_cpu_before) {
        (Some(b), Some(before)) => Some(cpu_micros(b)? - before),
        _ => None,
    };
    if let Some(mut perf) = perf {
        signal(perf.id(), "INT");
        let _ = perf.wait();
    }
    if !drained {
        eprintln!(
            "warning: only {} of {} accepted referrals reached the queue",
            arrived.load(Ordering::Relaxed) - warm,
            accepted.len()
        );
    }
    let batches_after = batch_sum_count(&http.get(&metrics_url).send().await?.text().await?);
    let peak_rss = peak_rss_mib(pid);
    consuming.abort();
    let _ = consumer_conn.close(200, "bench done".into()).await;

    let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut queue_latencies: Vec<Duration> = accepted
        .iter()
        .filter_map(|(id, at)| arrivals.get(id).map(|a| a.saturating_duration_since(*at)))
        .collect();
    queue_latencies.sort();
    submit_latencies.sort();
    let delivered = queue_latencies.len();
    let (after_rate, broker_alone_cpu) =
        broker_alone(args, namespace, body.as_bytes(), beam).await?;
    let accepted_per_sec = accepted.len() as f64 / submit_secs;
    let broker_mean = (before_rate + after_rate) / 2.0;
    let rounds = batches_after.1 - batches_before.1;
    Ok(Report {
        database: database.to_owned(),
        clients,
        load_before: f64::NAN,
        accepted: accepted.len(),
        errors,
        delivered,
        submit_secs,
        accepted_per_sec,
        end_to_end_per_sec: delivered as f64 / interval,
        queue_p50_ms: percentile_ms(&queue_latencies, 0.50),
        queue_p99_ms: percentile_ms(&queue_latencies, 0.99),
        submit_p50_ms: percentile_ms(&submit_latencies, 0.50),
        submit_p99_ms: percentile_ms(&submit_latencies, 0.99),
        gateway_cpu_us_per_referral: gw_cpu / accepted.len().max(1) as f64,
        broker_cpu_us_per_message: beam_cpu.map_or(f64::NAN, |c| c / delivered.max(1) as f64),
        gateway_peak_rss_mib: peak_rss,
        bench_cpu_us_per_referral: own_cpu / accepted.len().max(1) as f64,
        machine_busy_pct,
        relay_mean_batch: if rounds > 0.0 {
            (batches_after.0 - batches_before.0) / rounds
        } else {
            f64::NAN
        },
        broker_alone_before_per_sec: before_rate,
        broker_alone_after_per_sec: after_rate,
        broker_alone_cpu_us_per_message: broker_alone_cpu,
        ratio_to_broker: accepted_per_sec / broker_mean,
    })
}

/// Waits until `counter` reaches `target` (true) or `timeout` passes (false).
async fn wait_for(counter: &AtomicUsize, target: usize, timeout: Duration) -> bool {
    let started = Instant::now();
    while counter.load(Ordering::Relaxed) < target {
        if started.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

fn print_table(reports: &[Report]) {
    println!(
        "{:<9} {:>7} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>8} {:>6}",
        "database",
        "clients",
        "load",
        "accepted",
        "accept/s",
        "queue p50",
        "queue p99",
        "submit50",
        "submit99",
        "gw µs/ref",
        "mq µs/msg",
        "RSS MiB",
        "bench µs",
        "busy %",
        "batch",
        "broker/s<",
        "broker/s>",
        "mq alone",
        "ratio"
    );
    for r in reports {
        println!(
            "{:<9} {:>7} {:>5.2} {:>8} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.0} {:>8.0} {:>8.1} {:>8.0} {:>6.0} {:>6.1} {:>9.0} {:>9.0} {:>8.0} {:>6.2}",
            r.database,
            r.clients,
            r.load_before,
            r.accepted,
            r.accepted_per_sec,
            r.queue_p50_ms,
            r.queue_p99_ms,
            r.submit_p50_ms,
            r.submit_p99_ms,
            r.gateway_cpu_us_per_referral,
            r.broker_cpu_us_per_message,
            r.gateway_peak_rss_mib,
            r.bench_cpu_us_per_referral,
            r.machine_busy_pct,
            r.relay_mean_batch,
            r.broker_alone_before_per_sec,
            r.broker_alone_after_per_sec,
            r.broker_alone_cpu_us_per_message,
            r.ratio_to_broker,
        );
        if r.errors > 0 || r.delivered < r.accepted {
            println!(
                "          {} errors; {} of {} accepted referrals reached the queue",
                r.errors, r.delivered, r.accepted
            );
        }
    }
    println!(
        "(latencies in ms; broker/s< and broker/s> = the broker alone before and after, mq alone = its CPU µs per message after; bench µs = the load generator's own CPU per referral; busy % = the whole machine, all cores; ratio = accept/s over their mean)"
    );
}

/// Two panels against clients (log scale): accepted/s, and 202 -> queue p99 in ms; one
/// line per database.
fn chart(reports: &[Report]) -> String {
    let (w, h, pad) = (420.0, 300.0, 55.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w,
        h + 30.0
    );
    let clients: Vec<u16> = {
        let mut c: Vec<u16> = reports.iter().map(|r| r.clients).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let max_log = clients
        .iter()
        .map(|c| f64::from(*c).log2())
        .fold(1.0, f64::max);
    type Panel = (&'static str, fn(&Report) -> f64);
    let panels: [Panel; 2] = [
        ("accepted referrals per second", |r| r.accepted_per_sec),
        ("202 → queue p99 (ms)", |r| r.queue_p99_ms),
    ];
    for (i, (title, value)) in panels.iter().enumerate() {
        let x0 = i as f64 * w;
        let top = reports
            .iter()
            .map(value)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            * 1.1;
        let top = nice_ceiling(top.max(1.0));
        let px = |c: u16| x0 + pad + f64::from(c).log2() / max_log * (w - 2.0 * pad);
        let py = |v: f64| h - pad + 20.0 - v / top * (h - 2.0 * pad);
        svg += &format!(
            "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">{title}</text>\n",
            x0 + w / 2.0
        );
        svg += &format!(
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{3}\" stroke=\"black\"/>\n",
            x0 + pad,
            py(0.0),
            x0 + w - pad,
            py(top)
        );
        for k in 0..=4 {
            let v = top * f64::from(k) / 4.0;
            let y = py(v);
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\n",
                x0 + pad - 5.0,
                y + 4.0,
                format_tick(v),
                x0 + pad,
                x0 + w - pad,
            );
        }
        for c in &clients {
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{c}</text>\n",
                px(*c),
                py(0.0) + 16.0
            );
        }
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">clients</text>\n",
            x0 + w / 2.0,
            py(0.0) + 32.0
        );
        for (db, colour) in [("sqlite", "#1f77b4"), ("postgres", "#d62728")] {
            let points: Vec<String> = reports
                .iter()
                .filter(|r| r.database == db && value(r).is_finite())
                .map(|r| format!("{:.1},{:.1}", px(r.clients), py(value(r))))
                .collect();
            if points.is_empty() {
                continue;
            }
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
                points.join(" ")
            );
            for p in &points {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                svg += &format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>\n");
            }
        }
    }
    for (k, (db, colour)) in [("SQLite", "#1f77b4"), ("PostgreSQL", "#d62728")]
        .iter()
        .enumerate()
    {
        let x = w - 90.0 + k as f64 * 110.0;
        svg += &format!(
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{db}</text>\n",
            x + 20.0,
            x + 25.0,
            h + 19.0,
            y = h + 15.0
        );
    }
    svg + "</svg>\n"
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn format_tick(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
