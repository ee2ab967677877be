//! The fault-injection suite (docs/reliability.md): the real gateway binary under a steady
//! submit load from several clients while something fails: the broker connection is cut,
//! reset, stalled or slowed by a TCP proxy; a private broker node is stopped and started;
//! the PostgreSQL connection is cut; a private PostgreSQL cluster is restarted; the
//! gateway is killed with SIGKILL and restarted; SQLite's file system fills up; consumers
//! crash before acking or reject to the dead-letter queue.
//!
//! Every submission's outcome is recorded (202 with its id, a definite refusal, or unknown:
//! a timeout, a lost connection, a 500), every queue is drained at the end, and the result
//! is checked as Jepsen's total-queue checker does: **lost** (202 but never delivered) and
//! **unexpected** (delivered but never submitted, or submitted and definitely refused)
//! must be 0; **duplicated** (delivered more than once, always with the same
//! `message_id`) and **recovered** (outcome unknown to the client, yet delivered) are
//! allowed and reported. The audit chain must verify after each scenario.
//!
//! Each scenario runs `REFGW_FAULTS_SECONDS` seconds of load (default 8) from
//! `REFGW_FAULTS_CLIENTS` clients (default 4):
//!
//!     REFGW_FAULTS_SECONDS=60 cargo test --test it faults -- --nocapture --test-threads 1

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::cli::{self, free_port};
use crate::common::*;

// ---------------------------------------------------------------------------------------
// Settings

fn load_seconds() -> u64 {
    std::env::var("REFGW_FAULTS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| (2..=3600).contains(s))
        .unwrap_or(8)
}

fn clients() -> usize {
    std::env::var("REFGW_FAULTS_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|c| (1..=64).contains(c))
        .unwrap_or(4)
}

/// How long one request may take before its outcome counts as unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// The TCP fault proxy

/// What the proxy does to the traffic through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Passes bytes both ways.
    Up,
    /// Closes every connection (FIN) and refuses new ones until restored.
    Cut,
    /// Resets every connection (RST) and new ones until restored.
    Reset,
    /// Holds every byte (connections stay open, nothing passes) until restored.
    Stall,
    /// Passes bytes, 40 ms late per chunk.
    Slow,
}

/// A TCP proxy in front of a server, whose [`Mode`] a scenario changes under load.
struct FaultProxy {
    port: u16,
    mode: watch::Sender<Mode>,
}

impl FaultProxy {
    async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, modes) = watch::channel(Mode::Up);
        let to = target.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let current = *modes.borrow();
                match current {
                    Mode::Cut => continue,
                    Mode::Reset => {
                        reset(inbound);
                        continue;
                    }
                    _ => {}
                }
                let (to, modes) = (to.clone(), modes.clone());
                tokio::spawn(async move {
                    match TcpStream::connect(&to).await {
                        Ok(outbound) => pass(inbound, outbound, modes).await,
                        Err(_) => reset(inbound),
                    }
                });
            }
        });
        Self { port, mode }
    }

    fn set(&self, mode: Mode) {
        let _ = self.mode.send(mode);
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Closes `stream` with a TCP reset (linger 0: nothing blocks on drop).
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Passes bytes between `a` and `b` as the mode allows, until a side closes or the mode
/// cuts or resets the connection.
async fn pass(mut a: TcpStream, mut b: TcpStream, mut modes: watch::Receiver<Mode>) {
    let _ = (a.set_nodelay(true), b.set_nodelay(true));
    let (mut buf_a, mut buf_b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let mode = *modes.borrow_and_update();
        match mode {
            Mode::Cut => return,
            Mode::Reset => {
                reset(a);
                reset(b);
                return;
            }
            Mode::Stall => {
                if modes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Up | Mode::Slow => {}
        }
        let forwarded = tokio::select! {
            read = a.read(&mut buf_a) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => forward(&mut b, &buf_a[..n], &mut modes).await,
            },
            read = b.read(&mut buf_b) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => forward(&mut a, &buf_b[..n], &mut modes).await,
            },
            changed = modes.changed() => changed.is_ok(),
        };
        if !forwarded {
            // The loop's top closes or resets as the mode says.
            if matches!(*modes.borrow(), Mode::Up | Mode::Slow | Mode::Stall) {
                return;
            }
        }
    }
}

/// Writes `bytes` to `to` once the mode lets them pass: held while stalled, late when
/// slow. False when the mode cut the connection meanwhile or the write failed.
async fn forward(to: &mut TcpStream, bytes: &[u8], modes: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let mode = *modes.borrow_and_update();
        match mode {
            Mode::Up => break,
            Mode::Slow => {
                tokio::time::sleep(Duration::from_millis(40)).await;
                break;
            }
            Mode::Stall => {
                if modes.changed().await.is_err() {
                    return false;
                }
            }
            Mode::Cut | Mode::Reset => return false,
        }
    }
    to.write_all(bytes).await.is_ok()
}

// ---------------------------------------------------------------------------------------
// Commands

/// Runs a command on a blocking thread: whether it succeeded, and its output.
async fn run(mut command: Command) -> (bool, String) {
    tokio::task::spawn_blocking(move || match command.output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    })
    .await
    .unwrap_or((false, "command thread panicked".into()))
}

/// Whether something accepts TCP connections on `port`.
async fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

// ---------------------------------------------------------------------------------------
// A private RabbitMQ node

/// A RabbitMQ node of the suite's own, in a temporary directory (never the machine's
/// shared broker): stopped and started by the broker scenario.
struct PrivateBroker {
    dir: tempfile::TempDir,
    node: String,
    port: u16,
}

fn rabbit_bin(name: &str) -> PathBuf {
    // Debian's /usr/sbin wrappers switch to the rabbitmq user (and its cookie); the
    // scripts behind them run as the caller, with HOME (and so the cookie) in our dir.
    let debian = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if debian.exists() {
        debian
    } else {
        PathBuf::from(name)
    }
}

impl PrivateBroker {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let node = format!("refgw-faults-{suffix}@localhost");
        let (port, dist) = (free_port(), free_port());
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").expect("env file");
        std::fs::write(dir.path().join("enabled_plugins"), "[].").expect("plugins file");
        let broker = Self { dir, node, port };
        let mut server = broker.command("rabbitmq-server");
        server
            .arg("-detached")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string());
        let (ok, out) = run(server).await;
        assert!(ok, "rabbitmq-server -detached: {out}");
        broker.wait_amqp(Duration::from_secs(90)).await;
        broker
    }

    fn command(&self, program: &str) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new(rabbit_bin(program));
        command
            .current_dir(dir)
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("node.pid"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null());
        command
    }

    async fn ctl(&self, args: &[&str]) -> (bool, String) {
        let mut ctl = self.command("rabbitmqctl");
        ctl.arg("-n").arg(&self.node).args(args);
        run(ctl).await
    }

    /// Waits until the node takes AMQP connections.
    async fn wait_amqp(&self, timeout: Duration) {
        let started = Instant::now();
        loop {
            if listening(self.port).await
                && lapin::Connection::connect(&self.url(), lapin::ConnectionProperties::default())
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "private RabbitMQ node {} did not start",
                self.node
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let mut stop = self.command("rabbitmqctl");
        stop.arg("-n").arg(&self.node).arg("stop");
        let _ = stop.output();
        // If the node did not answer: its pid file.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("node.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

// ---------------------------------------------------------------------------------------
// A private PostgreSQL cluster

/// A PostgreSQL cluster of the suite's own (`initdb` in a temporary directory, as the
/// `postgres` user when run as root): restarted by the PostgreSQL scenario.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|bin| bin.join("initdb").exists())
        .unwrap_or_default()
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl PrivatePostgres {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        if running_as_root() {
            // initdb refuses root: the cluster belongs to the postgres user.
            let (ok, out) = run({
                let mut c = Command::new("chown");
                c.arg("postgres").arg(dir.path());
                c
            })
            .await;
            assert!(ok, "chown postgres: {out}");
        }
        let pg = Self {
            dir,
            bin: postgres_bin(),
            port: free_port(),
        };
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        let (ok, out) = run(initdb).await;
        assert!(ok, "initdb: {out}");
        pg.ctl(&["start"]).await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    /// `pg_ctl ACTION` (start, restart), waiting until it is done.
    async fn ctl(&self, action: &[&str]) {
        let mut ctl = self.command("pg_ctl");
        ctl.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .args(action);
        let (ok, out) = run(ctl).await;
        assert!(ok, "pg_ctl {action:?}: {out}");
    }

    /// A fresh database: its URL on `port` (the cluster's, or a proxy's in front of it).
    async fn database(&self) -> String {
        use sqlx::Connection;
        let name = format!(
            "refgw_faults_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres", self.port))
            .await
            .expect("private PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        name
    }

    fn url(&self, database: &str, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{database}")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}

// ---------------------------------------------------------------------------------------
// The gateway, as a separate process

struct Gateway {
    child: Option<Child>,
    port: u16,
    ops: u16,
    db_url: String,
    amqp_url: String,
    namespace: String,
    dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(db_url: &str, amqp_url: &str, namespace: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Short relay backoff and polling: a restored broker is used within seconds.
        let text =
            shipped_config_text() + "\n[relay]\nmax_backoff_secs = 2\npoll_interval_ms = 100\n";
        std::fs::write(dir.path().join("gateway.toml"), text).expect("config");
        let mut gateway = Self {
            child: None,
            port: free_port(),
            ops: free_port(),
            db_url: db_url.to_owned(),
            amqp_url: amqp_url.to_owned(),
            namespace: namespace.to_owned(),
            dir,
        };
        gateway.spawn().await;
        gateway
    }

    async fn spawn(&mut self) {
        // A fresh ops port at every start: nothing here reads it, and the one of the
        // killed process may meanwhile be another connection's ephemeral port ("Address
        // already in use" on restart, seen in a CI run).
        self.ops = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("gateway.log"))
            .expect("log file");
        let child = cli::gateway()
            .arg("--config")
            .arg(self.dir.path().join("gateway.toml"))
            .arg("serve")
            .env("REFGW_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{}", self.ops))
            .env("REFGW_DATABASE_URL", &self.db_url)
            .env("REFGW_AMQP_URL", &self.amqp_url)
            .env("REFGW_AMQP_NAMESPACE", &self.namespace)
            .env("REFGW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("gateway starts");
        self.child = Some(child);
        let started = Instant::now();
        while !listening(self.port).await {
            if started.elapsed() > Duration::from_secs(60) {
                panic!("gateway did not start:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown of any kind.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// SIGTERM, and waits for the process to finish (it publishes what it can first).
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The load and its record

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 202 with a referral id.
    Accepted,
    /// A definite no: a 4xx or 503 answer, or a request never sent (no connection).
    Refused,
    /// The client cannot know: a timeout, a connection lost with the request sent, a 500.
    Unknown,
}

#[derive(Debug, Clone)]
struct Submission {
    /// Sent as `X-Correlation-Id`; every message of the referral carries it.
    correlation: String,
    outcome: Outcome,
    referral_id: Option<String>,
}

/// `clients` clients submitting the four example referrals in turn until `until`, each
/// submission with a correlation id of its own.
async fn submit_load(base: String, until: Instant) -> Vec<Submission> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let bodies: Arc<Vec<String>> = Arc::new(
        SERVICE_TYPES
            .iter()
            .map(|(service_type, _)| example_text(service_type))
            .collect(),
    );
    let tasks: Vec<_> = (0..clients())
        .map(|c| {
            let (url, bodies, run) = (format!("{base}/v1/referrals"), bodies.clone(), run.clone());
            tokio::spawn(async move {
                let client = agency_client("coventry-liaison");
                let mut record = Vec::new();
                let mut n = 0usize;
                while Instant::now() < until {
                    n += 1;
                    let correlation = format!("faults-{run}-{c}-{n}");
                    let request = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-correlation-id", &correlation)
                        .body(bodies[n % bodies.len()].clone())
                        .send();
                    let (outcome, referral_id) =
                        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                            Err(_) => (Outcome::Unknown, None),
                            Ok(Err(e)) if e.is_connect() => {
                                if std::env::var_os("REFGW_FAULTS_DEBUG").is_some() {
                                    eprintln!("not sent: {e:?}");
                                }
                                (Outcome::Refused, None)
                            }
                            Ok(Err(_)) => (Outcome::Unknown, None),
                            Ok(Ok(response)) => {
                                let status = response.status().as_u16();
                                let body =
                                    tokio::time::timeout(REQUEST_TIMEOUT, response.json::<Value>())
                                        .await;
                                match (status, body) {
                                    (202, Ok(Ok(body))) => match body["referral_id"].as_str() {
                                        Some(id) => (Outcome::Accepted, Some(id.to_owned())),
                                        None => (Outcome::Unknown, None),
                                    },
                                    (202, _) => (Outcome::Unknown, None),
                                    (400..=499 | 503, _) => {
                                        if std::env::var_os("REFGW_FAULTS_DEBUG").is_some() {
                                            eprintln!("refused: {status}");
                                        }
                                        (Outcome::Refused, None)
                                    }
                                    _ => (Outcome::Unknown, None),
                                }
                            }
                        };
                    if outcome != Outcome::Accepted {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    record.push(Submission {
                        correlation,
                        outcome,
                        referral_id,
                    });
                }
                record
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all
}

/// One message as a consumer received (and processed) it.
#[derive(Debug, Clone)]
struct Delivered {
    message_id: String,
    correlation: Option<String>,
}

fn delivered(delivery: &lapin::message::Delivery) -> Delivered {
    Delivered {
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        correlation: delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string()),
    }
}

/// The scenario's namespace on a broker: its queues declared before the load, drained
/// after it, deleted at the end.
struct Queues {
    topology: referral_gateway::delivery::topology::Topology,
    url: String,
}

impl Queues {
    async fn declare(url: &str, namespace: &str) -> Self {
        let config = test_config(&shipped_config_text(), "sqlite::memory:");
        let topology =
            referral_gateway::delivery::topology::Topology::new(namespace, &config.registry);
        let (connection, channel) = referral_gateway::delivery::topology::connect_confirming(url)
            .await
            .expect("broker");
        topology.declare(&channel).await.expect("declare topology");
        let _ = connection.close(200, "declared".into()).await;
        Self {
            topology,
            url: url.to_owned(),
        }
    }

    fn all(&self) -> Vec<String> {
        SERVICE_TYPES
            .iter()
            .flat_map(|(_, agency)| {
                [
                    self.topology.referral_queue(agency),
                    self.topology.dead_letter_queue(agency),
                ]
            })
            .collect()
    }

    /// Takes (and acks) every message from every referral and dead-letter queue, until
    /// every id in `expected` has come and the queues stay empty for a moment (or, short
    /// of them, for a few seconds).
    async fn drain(&self, expected: &BTreeSet<String>) -> Vec<Delivered> {
        let connection =
            lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default())
                .await
                .expect("broker for the drain");
        let channel = connection.create_channel().await.expect("channel");
        let mut taken = Vec::new();
        let mut seen = BTreeSet::new();
        let mut quiet_since = Instant::now();
        let started = Instant::now();
        loop {
            let mut got_any = false;
            for queue in self.all() {
                while let Some(message) = channel
                    .basic_get(queue.as_str().into(), BasicGetOptions::default())
                    .await
                    .expect("basic.get")
                {
                    got_any = true;
                    message
                        .delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .expect("ack");
                    let d = delivered(&message.delivery);
                    seen.insert(d.message_id.clone());
                    taken.push(d);
                }
            }
            if got_any {
                quiet_since = Instant::now();
            }
            let quiet = quiet_since.elapsed();
            let complete = expected.is_subset(&seen);
            if (complete && quiet > Duration::from_millis(500))
                || quiet > Duration::from_secs(5)
                || started.elapsed() > Duration::from_secs(120)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = connection.close(200, "drained".into()).await;
        taken
    }

    async fn delete(self) {
        if let Ok((connection, channel)) =
            referral_gateway::delivery::topology::connect_confirming(&self.url).await
        {
            let _ = self.topology.delete(&channel).await;
            let _ = connection.close(200, "done".into()).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The checker

#[derive(Debug, Default)]
struct Report {
    scenario: &'static str,
    submitted: usize,
    acknowledged: usize,
    refused: usize,
    unknown: usize,
    delivered: usize,
    lost: usize,
    unexpected: usize,
    duplicated: usize,
    recovered: usize,
    chain_verified: bool,
}

impl Report {
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.submitted,
            self.acknowledged,
            self.refused,
            self.unknown,
            self.lost,
            self.unexpected,
            self.duplicated,
            self.recovered,
            if self.chain_verified { "yes" } else { "NO" }
        )
    }
}

/// Jepsen's total-queue checker over the submissions and what the consumers received.
fn check(scenario: &'static str, submissions: &[Submission], deliveries: &[Delivered]) -> Report {
    let by_correlation: BTreeMap<&str, &Submission> = submissions
        .iter()
        .map(|s| (s.correlation.as_str(), s))
        .collect();
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unexpected = BTreeSet::new();
    for d in deliveries {
        *copies.entry(d.message_id.as_str()).or_default() += 1;
        let submission = d.correlation.as_deref().and_then(|c| by_correlation.get(c));
        let expected = match submission {
            // Delivered although the client was told no.
            Some(s) if s.outcome == Outcome::Refused => false,
            // Delivered under another id than its 202 gave.
            Some(s) if s.outcome == Outcome::Accepted => {
                s.referral_id.as_deref() == Some(d.message_id.as_str())
            }
            Some(_) => true,
            None => false,
        };
        if !expected {
            unexpected.insert(d.message_id.as_str());
        }
    }
    let delivered_correlations: BTreeSet<&str> = deliveries
        .iter()
        .filter_map(|d| d.correlation.as_deref())
        .collect();
    let mut report = Report {
        scenario,
        submitted: submissions.len(),
        delivered: copies.len(),
        unexpected: unexpected.len(),
        duplicated: copies.values().filter(|n| **n > 1).count(),
        ..Report::default()
    };
    for s in submissions {
        match s.outcome {
            Outcome::Accepted => {
                report.acknowledged += 1;
                let id = s.referral_id.as_deref().unwrap_or_default();
                if !copies.contains_key(id) {
                    report.lost += 1;
                }
            }
            Outcome::Refused => report.refused += 1,
            Outcome::Unknown => {
                report.unknown += 1;
                if delivered_correlations.contains(s.correlation.as_str()) {
                    report.recovered += 1;
                }
            }
        }
    }
    report
}

const TABLE_HEAD: &str = "| scenario | submitted | acknowledged | refused | unknown | lost | unexpected | duplicated | recovered | chain verifies |\n|---|---|---|---|---|---|---|---|---|---|";

/// Waits until the gateway's outbox holds nothing unpublished (read directly, not
/// through any proxy).
async fn wait_outbox_published(db_url: &str, gateway: &Gateway, timeout: Duration) {
    let store =
        referral_gateway::store::Store::connect(&referral_gateway::config::DatabaseConfig {
            url: db_url.to_owned(),
            max_connections: 1,
            commit_batch_max: 1,
            commit_queue_depth: 1,
            commit_transactions: 1,
        })
        .await
        .expect("the scenario's database");
    let started = Instant::now();
    loop {
        match store.outbox_backlog().await {
            Ok(backlog) if backlog.pending == 0 => break,
            Ok(backlog) => assert!(
                started.elapsed() < timeout,
                "outbox not published after {timeout:?}: {backlog:?}\n{}",
                gateway.log()
            ),
            Err(e) => assert!(started.elapsed() < timeout, "outbox: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;
}

/// What a scenario ran against.
struct Rig {
    gateway: Gateway,
    queues: Queues,
    /// The database, directly (the gateway may reach it through a proxy).
    db_url: String,
}

/// Runs the load for the configured time while `fault` acts (it gets the gateway and the
/// load's end, must leave everything healed, and returns any messages its own consumers
/// processed); then waits for the outbox, stops the gateway, drains the queues, checks and
/// verifies the chain; prints the report's row and asserts lost = unexpected = 0.
async fn scenario<F, Fut>(name: &'static str, rig: Rig, fault: F) -> Report
where
    F: FnOnce(Gateway, Instant) -> Fut,
    Fut: std::future::Future<Output = (Gateway, Vec<Delivered>)>,
{
    let Rig {
        gateway,
        queues,
        db_url,
    } = rig;
    let until = Instant::now() + Duration::from_secs(load_seconds());
    let load = tokio::spawn(submit_load(gateway.base(), until));
    let (mut gateway, mut deliveries) = fault(gateway, until).await;
    let submissions = load.await.expect("load");

    wait_outbox_published(&db_url, &gateway, Duration::from_secs(180)).await;
    gateway.stop().await;
    let accepted: BTreeSet<String> = submissions
        .iter()
        .filter_map(|s| s.referral_id.clone())
        .collect();
    deliveries.extend(queues.drain(&accepted).await);
    let mut report = check(name, &submissions, &deliveries);
    let (code, out) = {
        let url = db_url.clone();
        tokio::task::spawn_blocking(move || cli::run(&url, &["audit", "verify"]))
            .await
            .expect("audit verify")
    };
    report.chain_verified = code == Some(0);
    queues.delete().await;
    println!("{TABLE_HEAD}\n{}", report.row());
    assert!(
        report.acknowledged > 0,
        "nothing was accepted: {report:?}\n{}",
        gateway.log()
    );
    assert_eq!(
        (report.lost, report.unexpected),
        (0, 0),
        "{report:?}\n{}",
        gateway.log()
    );
    assert!(report.chain_verified, "audit verify: {out}");
    report
}

/// A SQLite database in a temporary directory.
fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("gateway.db").display())
}

/// A rig on SQLite, delivering to the shared broker at `amqp_url` (perhaps a proxy in
/// front of it).
async fn sqlite_rig(dir: &Path, amqp_url: &str) -> Rig {
    let namespace = unique_namespace();
    let queues = Queues::declare(AMQP_URL, &namespace).await;
    let db_url = sqlite_url(dir);
    let gateway = Gateway::start(&db_url, amqp_url, &namespace).await;
    Rig {
        gateway,
        queues,
        db_url,
    }
}

/// Sleeps until `at` (or not at all if it has passed).
async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

/// The load's duration split in `parts`: the instant of part `i`'s start.
fn part(until: Instant, i: u32, parts: u32) -> Instant {
    let total = Duration::from_secs(load_seconds());
    until - total + total * i / parts
}

// ---------------------------------------------------------------------------------------
// The scenarios

fn amqp_via(proxy: &FaultProxy) -> String {
    format!("amqp://guest:guest@{}/%2f", proxy.addr())
}

/// The broker connection cut (FIN), reset (RST), stalled and slowed, each for a ninth of
/// the load, with the connection restored between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connection_cut_and_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = FaultProxy::start("127.0.0.1:5672").await;
    let rig = sqlite_rig(dir.path(), &amqp_via(&proxy)).await;
    let proxy = &proxy;
    scenario(
        "broker connection cut/reset/stall/slow",
        rig,
        |gateway, until| async move {
            for (i, mode) in [Mode::Cut, Mode::Reset, Mode::Stall, Mode::Slow]
                .into_iter()
                .enumerate()
            {
                let i = i as u32;
                sleep_until(part(until, 2 * i + 1, 9)).await;
                proxy.set(mode);
                sleep_until(part(until, 2 * i + 2, 9)).await;
                proxy.set(Mode::Up);
            }
            (gateway, Vec::new())
        },
    )
    .await;
}

/// A private broker node stopped (`rabbitmqctl stop_app`) for a third of the load and
/// started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_node_stopped_and_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = PrivateBroker::start().await;
    let namespace = unique_namespace();
    let queues = Queues::declare(&broker.url(), &namespace).await;
    let db_url = sqlite_url(dir.path());
    let gateway = Gateway::start(&db_url, &broker.url(), &namespace).await;
    let rig = Rig {
        gateway,
        queues,
        db_url,
    };
    let broker = &broker;
    scenario(
        "broker node stop_app/start_app",
        rig,
        |gateway, until| async move {
            sleep_until(part(until, 1, 3)).await;
            let (ok, out) = broker.ctl(&["stop_app"]).await;
            assert!(ok, "stop_app: {out}");
            sleep_until(part(until, 2, 3)).await;
            let (ok, out) = broker.ctl(&["start_app"]).await;
            assert!(ok, "start_app: {out}");
            broker.wait_amqp(Duration::from_secs(60)).await;
            (gateway, Vec::new())
        },
    )
    .await;
}

/// The PostgreSQL connection cut, reset and stalled, each for a seventh of the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_cut() {
    let pg = PrivatePostgres::start().await;
    let database = pg.database().await;
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", pg.port)).await;
    let namespace = unique_namespace();
    let queues = Queues::declare(AMQP_URL, &namespace).await;
    let gateway = Gateway::start(&pg.url(&database, proxy.port), AMQP_URL, &namespace).await;
    let rig = Rig {
        gateway,
        queues,
        db_url: pg.url(&database, pg.port),
    };
    let proxy = &proxy;
    scenario(
        "PostgreSQL connection cut/reset/stall",
        rig,
        |gateway, until| async move {
            for (i, mode) in [Mode::Cut, Mode::Reset, Mode::Stall]
                .into_iter()
                .enumerate()
            {
                let i = i as u32;
                sleep_until(part(until, 2 * i + 1, 7)).await;
                proxy.set(mode);
                sleep_until(part(until, 2 * i + 2, 7)).await;
                proxy.set(Mode::Up);
            }
            (gateway, Vec::new())
        },
    )
    .await;
}

/// A private PostgreSQL cluster restarted twice under load: `pg_ctl restart -m fast`,
/// then `-m immediate` (a crash and recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted() {
    let pg = PrivatePostgres::start().await;
    let database = pg.database().await;
    let namespace = unique_namespace();
    let queues = Queues::declare(AMQP_URL, &namespace).await;
    let db_url = pg.url(&database, pg.port);
    let gateway = Gateway::start(&db_url, AMQP_URL, &namespace).await;
    let rig = Rig {
        gateway,
        queues,
        db_url,
    };
    let pg = &pg;
    scenario(
        "PostgreSQL restart (fast, immediate)",
        rig,
        |gateway, until| async move {
            sleep_until(part(until, 1, 3)).await;
            pg.ctl(&["-m", "fast", "restart"]).await;
            sleep_until(part(until, 2, 3)).await;
            pg.ctl(&["-m", "immediate", "restart"]).await;
            (gateway, Vec::new())
        },
    )
    .await;
}

/// The gateway killed with SIGKILL twice under load and restarted at once (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_and_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = sqlite_rig(dir.path(), AMQP_URL).await;
    scenario(
        "gateway SIGKILL and restart",
        rig,
        |mut gateway, until| async move {
            for i in 1..=2 {
                sleep_until(part(until, i, 3)).await;
                gateway.kill().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                gateway.spawn().await;
            }
            (gateway, Vec::new())
        },
    )
    .await;
}

/// A tmpfs mounted for the scenario, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and why) where this process may not mount one.
    async fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut mount = Command::new("mount");
        mount
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path());
        match run(mount).await {
            (true, _) => Ok(Self { dir }),
            (false, out) => Err(out),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system holding `dir` (a file written until ENOSPC): the bytes written.
async fn fill(dir: &Path) -> u64 {
    let path = dir.join("filler");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let Ok(mut file) = std::fs::File::create(&path) else {
            return 0;
        };
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        while let Ok(n) = file.write(&chunk) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        let _ = file.sync_all();
        written
    })
    .await
    .unwrap_or(0)
}

/// SQLite's file system full (a tmpfs filled by another file) for half the load, then
/// freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full() {
    // Room for the whole load once freed (the database grows by some MiB a second under
    // load, its WAL too): what fills the disk is the filler, not the referrals.
    let size = format!("{}m", 64 + 12 * load_seconds());
    let tmpfs = match Tmpfs::mount(&size).await {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            println!(
                "| SQLite disk full | skipped: cannot mount a tmpfs here ({}) |",
                why.trim()
            );
            return;
        }
    };
    let rig = sqlite_rig(tmpfs.path(), AMQP_URL).await;
    let dir = tmpfs.path();
    scenario("SQLite disk full", rig, |gateway, until| async move {
        sleep_until(part(until, 1, 4)).await;
        let filled = fill(dir).await;
        assert!(filled > 0, "the file system was filled");
        sleep_until(part(until, 3, 4)).await;
        std::fs::remove_file(dir.join("filler")).expect("free the space");
        (gateway, Vec::new())
    })
    .await;
    drop(tmpfs);
}

/// A consumer of the CMHT queue that takes up to ten messages at a time and crashes (its
/// connection reset) before acking them, again and again under load: what it took is
/// counted as delivered (it may have acted on it), and comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_crashes_before_acking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = sqlite_rig(dir.path(), AMQP_URL).await;
    let queue = rig.queues.topology.referral_queue("coventry-cmht");
    let proxy = FaultProxy::start("127.0.0.1:5672").await;
    let url = amqp_via(&proxy);
    let proxy = &proxy;
    scenario(
        "consumer crashes before ack",
        rig,
        |gateway, until| async move {
            let mut received = Vec::new();
            let mut crashes = 0;
            while Instant::now() < until {
                let Ok(connection) =
                    lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // A broker that is not ready for us yet (the last crash still closing): again.
                let Ok(channel) = connection.create_channel().await else {
                    continue;
                };
                if channel
                    .basic_qos(10, BasicQosOptions::default())
                    .await
                    .is_err()
                {
                    continue;
                }
                let Ok(mut consumer) = channel
                    .basic_consume(
                        queue.as_str().into(),
                        "crashing-consumer".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                else {
                    continue;
                };
                let mut taken = 0;
                while taken < 10 {
                    match tokio::time::timeout(Duration::from_millis(500), consumer.next()).await {
                        Ok(Some(Ok(delivery))) => {
                            received.push(delivered(&delivery));
                            taken += 1;
                        }
                        _ => break,
                    }
                }
                // The crash: the connection reset under the consumer, nothing acked.
                proxy.set(Mode::Reset);
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(consumer);
                drop(channel);
                drop(connection);
                proxy.set(Mode::Up);
                crashes += 1;
            }
            assert!(crashes > 0, "the consumer crashed");
            assert!(!received.is_empty(), "the consumer received messages");
            (gateway, received)
        },
    )
    .await;
}

/// A consumer of the CMHT queue that rejects every third message (`requeue = false`: to
/// the dead-letter queue) and acks the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_rejects_to_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = sqlite_rig(dir.path(), AMQP_URL).await;
    let queue = rig.queues.topology.referral_queue("coventry-cmht");
    let report = scenario(
        "consumer rejects (dead-lettered)",
        rig,
        |gateway, until| async move {
            let connection =
                lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                    .await
                    .expect("broker");
            let channel = connection.create_channel().await.expect("channel");
            channel
                .basic_qos(10, BasicQosOptions::default())
                .await
                .expect("qos");
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "rejecting-consumer".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let (mut received, mut rejected) = (Vec::new(), 0);
            while Instant::now() < until {
                let Ok(Some(Ok(delivery))) =
                    tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
                else {
                    continue;
                };
                if (received.len() + rejected) % 3 == 0 {
                    delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await
                        .expect("reject");
                    rejected += 1;
                } else {
                    delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .expect("ack");
                    received.push(delivered(&delivery));
                }
            }
            let _ = connection.close(200, "done".into()).await;
            assert!(rejected > 0, "the consumer rejected messages");
            (gateway, received)
        },
    )
    .await;
    assert!(report.delivered > 0);
}
