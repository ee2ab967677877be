//! The write path's committer: concurrent submissions written once each, a failing write
//! failing alone in its batch, SIGKILL while batches commit, two instances on one
//! PostgreSQL database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Row;

use crate::common::cli::{self, free_port, spawn_serve, wait_ready};
use crate::common::*;

/// One request of a concurrent run.
#[derive(Debug, Clone)]
struct Job {
    body: String,
    key: Option<String>,
    /// Which body of its key group (0 or 1); 0 for requests without a key.
    variant: usize,
    /// The service type the body is for (a referral queue to count on); `None` for an
    /// invalid body.
    service_type: Option<&'static str>,
}

#[derive(Debug)]
struct Answer {
    job: Job,
    status: u16,
    referral_id: Option<String>,
    replayed: bool,
}

fn fresh(i: usize) -> Job {
    let (service_type, _) = SERVICE_TYPES[i % SERVICE_TYPES.len()];
    Job {
        body: example_text(service_type),
        key: None,
        variant: 0,
        service_type: Some(service_type),
    }
}

/// A key group's request: variant 0 is one service type's example, variant 1 the next's
/// (a different body under the same key).
fn keyed(group: usize, variant: usize) -> Job {
    let (service_type, _) = SERVICE_TYPES[(group + variant) % SERVICE_TYPES.len()];
    Job {
        body: example_text(service_type),
        key: Some(format!("group-{group}")),
        variant,
        service_type: Some(service_type),
    }
}

fn invalid() -> Job {
    Job {
        body: "{\"not\": \"a referral\"}".to_owned(),
        key: None,
        variant: 0,
        service_type: None,
    }
}

/// A fixed interleaving, so that repeats of a key arrive close together.
fn shuffled(mut jobs: Vec<Job>) -> Vec<Job> {
    let n = jobs.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| (i * 7919 + 13) % n.max(1));
    let mut out = Vec::with_capacity(n);
    for i in order {
        out.push(std::mem::replace(&mut jobs[i], invalid()));
    }
    out
}

/// Runs `jobs` from `clients` concurrent clients (each its own connection), the client
/// `c` sending to `bases[c % bases.len()]`.
async fn run_jobs(bases: &[String], jobs: Vec<Job>, clients: usize) -> Vec<Answer> {
    let queue = Arc::new(Mutex::new(jobs));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let queue = queue.clone();
            let url = format!("{}/v1/referrals", bases[c % bases.len()]);
            tokio::spawn(async move {
                let client = agency_client("coventry-liaison");
                let mut answers = Vec::new();
                loop {
                    let Some(job) = queue.lock().unwrap().pop() else {
                        return answers;
                    };
                    let mut request = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(job.body.clone());
                    if let Some(key) = &job.key {
                        request = request.header("idempotency-key", key);
                    }
                    let response = request.send().await.expect("request reaches the gateway");
                    let status = response.status().as_u16();
                    let replayed = response.headers().contains_key("idempotent-replayed");
                    let body: Value = response.json().await.expect("JSON answer");
                    answers.push(Answer {
                        referral_id: body["referral_id"].as_str().map(str::to_owned),
                        job,
                        status,
                        replayed,
                    });
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    answers
}

/// Checks each key group's answers: one body won (all its requests 202 with one
/// referral, exactly one of them not a replay), the other body's requests 409. Returns
/// the winning referral per key.
fn check_key_groups(answers: &[Answer]) -> BTreeMap<String, String> {
    let mut groups: BTreeMap<String, Vec<&Answer>> = BTreeMap::new();
    for a in answers {
        if let Some(key) = &a.job.key {
            groups.entry(key.clone()).or_default().push(a);
        }
    }
    let mut winners = BTreeMap::new();
    for (key, group) in groups {
        let accepted: Vec<&&Answer> = group.iter().filter(|a| a.status == 202).collect();
        assert!(!accepted.is_empty(), "{key}: nothing accepted: {group:?}");
        let ids: BTreeSet<&str> = accepted
            .iter()
            .filter_map(|a| a.referral_id.as_deref())
            .collect();
        assert_eq!(ids.len(), 1, "{key}: one referral per key: {group:?}");
        let variants: BTreeSet<usize> = accepted.iter().map(|a| a.job.variant).collect();
        assert_eq!(variants.len(), 1, "{key}: one body wins: {group:?}");
        assert_eq!(
            accepted.iter().filter(|a| !a.replayed).count(),
            1,
            "{key}: exactly one original answer: {group:?}"
        );
        for a in &group {
            if a.status != 202 {
                assert_eq!(a.status, 409, "{key}: {group:?}");
                assert!(!variants.contains(&a.job.variant), "{key}: {group:?}");
            }
        }
        winners.insert(key, ids.into_iter().next().unwrap_or_default().to_owned());
    }
    winners
}

async fn scalar(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

/// The audit chain is one sequence 1..=n without gaps or repeats, and `audit verify`
/// accepts it.
async fn assert_one_chain(pool: &sqlx::AnyPool, url: &str) {
    let count = scalar(pool, "SELECT COUNT(*) FROM audit_log").await;
    let distinct = scalar(pool, "SELECT COUNT(DISTINCT seq) FROM audit_log").await;
    let max = scalar(pool, "SELECT MAX(seq) FROM audit_log").await;
    let head = scalar(pool, "SELECT seq FROM audit_head WHERE id = 1").await;
    assert_eq!(
        (distinct, max, head),
        (count, count, count),
        "no gaps, no repeats"
    );
    let (code, out) = cli::run(url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
}

/// A metric's value in the text exposition (`name` including any labels).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// 500 submissions from 32 concurrent clients: fresh referrals, key groups repeating a
/// key with the same body (replays) and with another (conflicts), and invalid bodies.
/// Every valid referral is stored once and reaches its queue; every key group comes to one
/// referral; the chain verifies.
async fn concurrent_submissions_are_each_written_once(backend: Backend) {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(backend, AMQP_URL, &namespace).await;
    let mut jobs: Vec<Job> = (0..300).map(fresh).collect();
    for group in 0..40 {
        jobs.extend([
            keyed(group, 0),
            keyed(group, 0),
            keyed(group, 0),
            keyed(group, 1),
        ]);
    }
    jobs.extend((0..40).map(|_| invalid()));
    assert_eq!(jobs.len(), 500);
    let answers = run_jobs(std::slice::from_ref(&app.base), shuffled(jobs), 32).await;
    assert_eq!(answers.len(), 500);

    let winners = check_key_groups(&answers);
    assert_eq!(winners.len(), 40);
    let mut accepted: BTreeMap<String, &'static str> = BTreeMap::new();
    for a in &answers {
        match (&a.job.key, a.job.service_type) {
            (_, None) => assert_eq!(a.status, 422, "{a:?}"),
            (None, Some(service_type)) => {
                assert_eq!(a.status, 202, "{a:?}");
                assert!(!a.replayed);
                let id = a.referral_id.clone().unwrap();
                assert!(
                    accepted.insert(id, service_type).is_none(),
                    "fresh ids differ"
                );
            }
            (Some(_), Some(service_type)) if a.status == 202 => {
                accepted.insert(a.referral_id.clone().unwrap(), service_type);
            }
            (Some(_), Some(_)) => {}
        }
    }
    assert_eq!(accepted.len(), 340);
    let conflicts = answers.iter().filter(|a| a.status == 409).count() as i64;

    let pool = app.store.pool().clone();
    assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM referrals").await, 340);
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM idempotency_keys").await,
        40
    );
    assert_eq!(
        scalar(&pool, "SELECT COUNT(DISTINCT referral_id) FROM outbox").await,
        340
    );
    assert_eq!(app.count_action("referral.submitted").await, 340);
    assert_eq!(app.count_action("referral.refused").await, 40 + conflicts);

    // Every accepted referral on its recipient's queue, once.
    app.wait_until_drained(Duration::from_secs(60)).await;
    let mut delivered = BTreeSet::new();
    for (service_type, agency) in SERVICE_TYPES {
        let expected = accepted.values().filter(|s| **s == service_type).count();
        let queue = broker.topology.referral_queue(agency);
        let messages = broker.take(&queue, expected, Duration::from_secs(30)).await;
        for m in &messages {
            delivered.insert(m.properties.message_id().as_ref().unwrap().to_string());
        }
    }
    let accepted_ids: BTreeSet<String> = accepted.keys().cloned().collect();
    assert_eq!(delivered, accepted_ids, "every referral reaches its queue");

    assert_one_chain(&pool, &app.db.url).await;
    let db = app.shutdown().await;
    broker.cleanup().await;
    drop(db);
}

on_both_backends!(concurrent_submissions_are_each_written_once);

/// Holds the audit chain head from outside the gateway, so that the committer's batch
/// waits: on SQLite the write lock, on PostgreSQL the head row.
async fn hold_chain(app: &TestApp, backend: Backend) -> sqlx::pool::PoolConnection<sqlx::Any> {
    let mut conn = app.store.pool().acquire().await.unwrap();
    match backend {
        Backend::Sqlite => {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
            sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        }
    }
    conn
}

/// A write that fails in the middle of a batch (a trigger refuses one referral's row)
/// fails that request alone; the others of the same batch are accepted.
async fn a_failing_write_fails_alone_in_its_batch(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let poison = match backend {
        Backend::Sqlite => vec![
            "CREATE TRIGGER poison BEFORE INSERT ON referrals WHEN NEW.correlation_id = 'poison-pill' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        ],
        Backend::Postgres => vec![
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.correlation_id = 'poison-pill' THEN RAISE EXCEPTION 'poisoned'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER poison BEFORE INSERT ON referrals FOR EACH ROW EXECUTE FUNCTION poison()",
        ],
    };
    for sql in poison {
        sqlx::query(sql).execute(app.store.pool()).await.unwrap();
    }
    let send = |correlation: String| {
        let url = app.url("/v1/referrals");
        async move {
            let response = agency_client("coventry-liaison")
                .post(url)
                .header("content-type", "application/json")
                .header("x-correlation-id", correlation)
                .body(example_text("cmht"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // The committer takes a first referral (on PostgreSQL, where two batches are in
    // flight at once, a second in the other transaction) and waits for the chain; eight
    // more queue up behind them and become the next batch, one of them poisoned.
    let lock = hold_chain(&app, backend).await;
    let mut plugs = Vec::new();
    for i in 0..match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    } {
        plugs.push(tokio::spawn(send(format!("plug-{i}"))));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each plug is in a transaction of its own, none waiting in the queue.
    assert_eq!(
        metric(&app.ops_text("/metrics").await, "refgw_commit_queue_depth"),
        0.0
    );
    let batch: Vec<_> = (0..8)
        .map(|i| {
            let correlation = if i == 3 {
                "poison-pill".to_owned()
            } else {
                format!("neighbour-{i}")
            };
            tokio::spawn(send(correlation))
        })
        .collect();
    let started = Instant::now();
    while metric(&app.ops_text("/metrics").await, "refgw_commit_queue_depth") < 8.0 {
        assert!(started.elapsed() < Duration::from_secs(5), "requests queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lock = lock;
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);

    for plug in plugs {
        assert_eq!(plug.await.unwrap().0, 202);
    }
    let mut accepted = 0;
    for (i, answer) in batch.into_iter().enumerate() {
        let (status, body) = answer.await.unwrap();
        if i == 3 {
            assert_eq!(status, 500, "{body}");
            assert_eq!(body["type"], "urn:referral-gateway:problem:internal");
        } else {
            assert_eq!(status, 202, "{body}");
            accepted += 1;
        }
    }
    assert_eq!(accepted, 7);

    // They were one batch of eight (the only batch of more than four), which failed and
    // was written again item by item.
    let metrics = app.ops_text("/metrics").await;
    assert_eq!(metric(&metrics, "refgw_commit_batches_split_total"), 1.0);
    let size = |le: &str| {
        metric(
            &metrics,
            &format!("refgw_commit_batch_size_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(size("8.0") - size("4.0"), 1.0, "{metrics}");

    let pool = app.store.pool().clone();
    // The plugs and the seven neighbours.
    let plugs = match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    };
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM referrals").await,
        7 + plugs
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM referrals WHERE correlation_id = 'poison-pill'"
        )
        .await,
        0
    );
    assert_eq!(app.count_action("referral.submitted").await, 7 + plugs);
    // The poisoned one is recorded as refused for a storage failure (on PostgreSQL its
    // entry may land before the neighbours written after it, in the other transaction).
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'referral.refused' AND detail = 'store-failure'"
        )
        .await,
        1
    );
    assert_eq!(app.count_action("referral.refused").await, 1);
    assert_one_chain(&pool, &app.db.url).await;
    app.stop().await;
}

on_both_backends!(a_failing_write_fails_alone_in_its_batch);

/// SIGKILL of the real binary while 32 clients submit: every referral answered 202 is
/// stored, and the chain verifies, then and after a restart.
async fn sigkill_while_committing_loses_no_accepted_referral(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    // No broker: the relay retries in the background and writes nothing.
    let proxy = CuttableProxy::start("127.0.0.1:5672", false).await;
    let (port, ops) = (free_port(), free_port());
    let namespace = unique_namespace();
    // Removes the namespace's queues and exchanges afterwards (also when the test fails).
    let broker = Broker::new(&namespace).await;
    let mut first = spawn_serve(port, ops, &db.url, &proxy.url(), &namespace);
    wait_ready(ops).await;

    let url = format!("https://localhost:{port}/v1/referrals");
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (url, accepted) = (url.clone(), accepted.clone());
            tokio::spawn(async move {
                let client = agency_client("coventry-liaison");
                loop {
                    let Ok(response) = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(example_text("housing"))
                        .send()
                        .await
                    else {
                        return;
                    };
                    if response.status() != 202 {
                        return;
                    }
                    let Ok(body) = response.json::<Value>().await else {
                        return;
                    };
                    let id = body["referral_id"].as_str().unwrap().to_owned();
                    accepted.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    let started = Instant::now();
    while accepted.lock().unwrap().len() < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "submissions flow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    let _ = first.wait();
    for client in clients {
        client.await.unwrap();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();

    let store =
        referral_gateway::store::Store::connect(&referral_gateway::config::DatabaseConfig {
            url: db.url.clone(),
            max_connections: 1,
            commit_batch_max: 1,
            commit_queue_depth: 1,
            commit_transactions: 1,
        })
        .await
        .unwrap();
    let stored: BTreeSet<String> = sqlx::query("SELECT id FROM referrals")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("id"))
        .collect();
    for id in &accepted {
        assert!(
            stored.contains(id),
            "referral {id} was answered 202 but is not stored"
        );
    }
    println!(
        "SIGKILL: {} answered 202, {} stored",
        accepted.len(),
        stored.len()
    );
    assert_one_chain(store.pool(), &db.url).await;

    // Restarted, it goes on with the same chain.
    let second = spawn_serve(port, ops, &db.url, &proxy.url(), &namespace);
    wait_ready(ops).await;
    let r = agency_client("coventry-liaison")
        .post(&url)
        .header("content-type", "application/json")
        .body(example_text("cmht"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    let _ = tokio::task::spawn_blocking(move || second.wait_with_output()).await;
    assert_one_chain(store.pool(), &db.url).await;
    store.close().await;
    broker.cleanup().await;
}

on_both_backends!(sigkill_while_committing_loses_no_accepted_referral);

/// Two gateways on one PostgreSQL database, submitting concurrently (key groups sent to
/// both): one chain without gaps or repeats that verifies, each referral once.
#[tokio::test]
async fn two_instances_share_one_chain_on_postgres() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let second_db = db.share();
    let url = db.url.clone();
    let first = TestApp::start(test_config(&shipped_config_text(), &url), db).await;
    let second = TestApp::start(test_config(&shipped_config_text(), &url), second_db).await;

    let mut jobs: Vec<Job> = (0..320).map(fresh).collect();
    for group in 0..20 {
        jobs.extend((0..4).map(|_| keyed(group, 0)));
    }
    let answers = run_jobs(
        &[first.base.clone(), second.base.clone()],
        shuffled(jobs),
        32,
    )
    .await;
    assert_eq!(answers.len(), 400);
    assert!(answers.iter().all(|a| a.status == 202), "{answers:?}");
    let winners = check_key_groups(&answers);
    assert_eq!(winners.len(), 20);
    let ids: BTreeSet<&str> = answers
        .iter()
        .filter_map(|a| a.referral_id.as_deref())
        .collect();
    assert_eq!(ids.len(), 340);

    let pool = first.store.pool().clone();
    assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM referrals").await, 340);
    assert_eq!(first.count_action("referral.submitted").await, 340);
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM (SELECT referral_id FROM audit_log WHERE action = 'referral.submitted' \
             GROUP BY referral_id HAVING COUNT(*) > 1) repeated"
        )
        .await,
        0
    );
    // Both instances wrote batches.
    for app in [&first, &second] {
        let metrics = app.ops_text("/metrics").await;
        assert!(
            metric(&metrics, "refgw_commit_batch_size_count") > 0.0,
            "{metrics}"
        );
    }
    assert_one_chain(&pool, &url).await;
    second.stop().await;
    first.stop().await;
}

/// Every PostgreSQL connection commits durably, whatever the database's default: a
/// database set to `synchronous_commit = off` would answer 202 before the WAL is on disk.
#[tokio::test]
async fn postgres_commits_are_synchronous_whatever_the_default() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin =
        <sqlx::postgres::PgConnection as sqlx::Connection>::connect(&postgres_admin_url())
            .await
            .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let app = TestApp::start(test_config(&shipped_config_text(), &db.url), db).await;
    app.submit(example_text("cmht")).await;
    for _ in 0..3 {
        let setting: String = sqlx::query("SHOW synchronous_commit")
            .fetch_one(app.store.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(setting, "on");
    }
    app.stop().await;
}
