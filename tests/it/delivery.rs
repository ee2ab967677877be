//! Delivery through the outbox relay to real RabbitMQ, each test in its own namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::cli;
use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn each_referral_arrives_once_on_its_agencys_queue() {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(Backend::Sqlite, AMQP_URL, &namespace).await;
    let mut sent = BTreeMap::new();
    for (service_type, agency) in SERVICE_TYPES {
        let id = app.submit(example_text(service_type)).await;
        sent.insert(agency, (id, service_type));
    }
    for (agency, (id, service_type)) in &sent {
        let queue = broker.topology.referral_queue(agency);
        let messages = broker.take(&queue, 1, Duration::from_secs(20)).await;
        assert_eq!(messages.len(), 1, "{agency} got exactly one message");
        let m = &messages[0];
        let p = &m.properties;
        assert_eq!(
            p.message_id().as_ref().map(|s| s.to_string()),
            Some(id.clone())
        );
        assert_eq!(
            p.content_type().as_ref().map(|s| s.to_string()).as_deref(),
            Some("application/json")
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert!(p.timestamp().is_some());
        assert_eq!(
            m.routing_key.as_str(),
            format!("{service_type}.coventry.{agency}")
        );
        assert_eq!(
            header(m, "sender_agency").as_deref(),
            Some("coventry-liaison")
        );
        assert_eq!(header(m, "service_type").as_deref(), Some(*service_type));
        assert_eq!(header(m, "schema_version").as_deref(), Some("1"));
        assert!(header(m, "schema_id").unwrap().ends_with(".v1.json"));
        assert!(header(m, "priority").is_some());
        if *service_type == "housing" {
            // The housing agreement covers no health data: those fields are withheld.
            let body: Value = serde_json::from_slice(&m.data).unwrap();
            assert!(body["person"].get("gp").is_none());
            assert_eq!(
                body["needs"][0]["type"], "housing",
                "housing needs are housing data"
            );
            assert!(body["person"]["name"].is_object() && body["service_details"].is_object());
        } else {
            // The document as checked, in its canonical serialisation.
            assert_eq!(
                m.data,
                example(service_type).to_string().into_bytes(),
                "body as submitted"
            );
        }
        // No personal data in the routing metadata.
        let meta = format!("{:?} {}", p.headers(), m.routing_key);
        for personal in ["Alex", "Example", "1991", "943"] {
            assert!(!meta.contains(personal), "{personal} in AMQP metadata");
        }
        // The sender sees the referral as queued.
        let view = app.view_as("coventry-liaison", id, 200).await;
        assert_eq!(view["status"], "queued");
    }
    app.wait_until_drained(Duration::from_secs(5)).await;
    let ready = app.ops_get("/readyz").await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["broker"], "ok");
    assert_eq!(ready["outbox"]["pending"], 0);
    let metrics = app.ops_text("/metrics").await;
    for line in [
        "refgw_publish_confirms_total{outcome=\"ack\"} 4",
        "refgw_http_requests_total{route=\"/v1/referrals\",method=\"POST\",status=\"202\"} 4",
        "refgw_broker_connected 1",
        "refgw_outbox_pending 0",
        "refgw_publish_latency_seconds_count",
    ] {
        assert!(metrics.contains(line), "{line} not in /metrics:\n{metrics}");
    }
    app.stop().await;
    broker.cleanup().await;
}

async fn referrals_wait_out_a_broker_outage(backend: Backend) {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let proxy = CuttableProxy::start("127.0.0.1:5672", false).await;
    let app = TestApp::spawn_delivering(backend, &proxy.url(), &namespace).await;

    let mut ids = BTreeSet::new();
    for _ in 0..25 {
        ids.insert(app.submit(example_text("cmht")).await);
    }
    let ready = app.ops_get("/readyz").await;
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["checks"]["broker"], "unreachable");
    assert_eq!(ready["outbox"]["pending"], 25);
    assert!(ready["outbox"]["oldest_age_seconds"].as_f64().unwrap() >= 0.0);
    let queue = broker.topology.referral_queue("coventry-cmht");
    assert!(
        broker
            .take(&queue, 0, Duration::from_millis(100))
            .await
            .is_empty()
    );

    proxy.set_up(true);
    let messages = broker.take(&queue, 25, Duration::from_secs(30)).await;
    let received: Vec<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<String> = received.iter().cloned().collect();
    assert_eq!(distinct, ids, "every accepted referral arrived");
    assert_eq!(received.len(), ids.len(), "none arrived twice");

    app.wait_until_drained(Duration::from_secs(5)).await;
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT COUNT(*) AS rows, COUNT(published_at) AS published, COUNT(DISTINCT referral_id) AS referrals FROM outbox",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>("rows"), 25);
    assert_eq!(row.get::<i64, _>("published"), 25);
    assert_eq!(row.get::<i64, _>("referrals"), 25);
    // Written while the relay had no broker: nothing was handed to it, every row waited
    // unclaimed in the outbox and was claimed from there.
    let metrics = app.ops_text("/metrics").await;
    assert!(
        metrics.contains("refgw_relay_rows_total{source=\"claimed\"} 25"),
        "{metrics}"
    );
    assert!(!metrics.contains("source=\"handed_over\"} "), "{metrics}");
    app.stop().await;
    broker.cleanup().await;
}

on_both_backends!(referrals_wait_out_a_broker_outage);

/// While the relay holds a broker connection, the committer writes each batch's referral
/// outbox rows claimed for it and hands the messages over in memory once committed: they
/// arrive without a claim of the outbox, exactly once, as stored, and their rows end
/// published after one attempt, the referrals `queued`, a `message.delivered` entry each.
async fn committed_referrals_are_handed_to_the_relay(backend: Backend) {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(backend, AMQP_URL, &namespace).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.ops_get("/readyz").await["checks"]["broker"] != "ok" {
        assert!(
            std::time::Instant::now() < deadline,
            "relay never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids = BTreeSet::new();
    let queue = broker.topology.referral_queue("coventry-iapt");
    let mut messages = Vec::new();
    for round in 0..6 {
        // One, then several at once (batches of several); each round delivered before
        // the next, so that the hand-over never fills up (it holds 8 batches).
        let bodies: Vec<_> = (0..=round).map(|_| example_text("iapt")).collect();
        let futures = bodies.into_iter().map(|b| app.submit(b));
        ids.extend(futures_util::future::join_all(futures).await);
        messages.extend(
            broker
                .take(&queue, round + 1, Duration::from_secs(30))
                .await,
        );
    }
    assert_eq!(ids.len(), 21);
    let received: Vec<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(received.len(), 21, "none arrived twice");
    assert_eq!(received.iter().cloned().collect::<BTreeSet<_>>(), ids);
    for m in &messages {
        assert_eq!(
            m.data,
            example("iapt").to_string().into_bytes(),
            "body as stored"
        );
    }
    app.wait_until_drained(Duration::from_secs(5)).await;

    let metrics = app.ops_text("/metrics").await;
    assert!(
        metrics.contains("refgw_relay_rows_total{source=\"handed_over\"} 21"),
        "every referral handed over:\n{metrics}"
    );
    assert!(!metrics.contains("source=\"claimed\"} "), "{metrics}");
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT COUNT(*) AS rows, COUNT(published_at) AS published, MAX(attempts) AS most, MIN(attempts) AS least \
         FROM outbox",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>("rows"), 21);
    assert_eq!(row.get::<i64, _>("published"), 21);
    assert_eq!(
        (row.get::<i64, _>("least"), row.get::<i64, _>("most")),
        (1, 1)
    );
    let queued = sqlx::query("SELECT COUNT(*) AS n FROM referrals WHERE status = 'queued'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(queued.get::<i64, _>("n"), 21);
    let delivered =
        sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'message.delivered'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(delivered.get::<i64, _>("n"), 21);
    app.stop().await;
    broker.cleanup().await;
}

on_both_backends!(committed_referrals_are_handed_to_the_relay);

/// `/readyz` and the relay read the gateway's injected clock, never the system clock:
/// the backlog's age is counted by it, and rows are claimed and marked published at its
/// time.
#[tokio::test]
async fn readyz_and_the_relay_read_the_injected_clock() {
    use referral_gateway::clock::ManualClock;
    use std::sync::Arc;
    // Well away from the system clock, so a system-clock reading could not pass.
    let t0 = time::macros::datetime!(2026-03-03 09:00 UTC);
    let clock = Arc::new(ManualClock::new(t0));

    // Relay off: the referral waits in the outbox, its age read from the clock.
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = TestApp::start_with_clock(
        test_config(&shipped_config_text(), &db.url),
        db,
        clock.clone(),
    )
    .await;
    app.submit(example_text("cmht")).await;
    clock.advance(time::Duration::minutes(90));
    let ready = app.ops_get("/readyz").await;
    assert_eq!(ready["checks"]["broker"], "relay_disabled");
    assert_eq!(ready["outbox"]["pending"], 1);
    assert_eq!(ready["outbox"]["oldest_age_seconds"].as_f64(), Some(5400.0));
    app.stop().await;

    // Relay on: the row is published at the clock's time.
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let clock = Arc::new(ManualClock::new(t0));
    let db = TestDatabase::create(Backend::Sqlite).await;
    let config = delivering_config(&shipped_config_text(), &db.url, AMQP_URL, &namespace);
    let app = TestApp::start_with_clock(config, db, clock.clone()).await;
    let id = app.submit(example_text("cmht")).await;
    let queue = broker.topology.referral_queue("coventry-cmht");
    assert_eq!(
        broker.take(&queue, 1, Duration::from_secs(20)).await.len(),
        1
    );
    app.wait_until_drained(Duration::from_secs(5)).await;
    use sqlx::Row;
    let row = sqlx::query("SELECT published_at FROM outbox WHERE referral_id = $1")
        .bind(&id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        row.get::<i64, _>("published_at"),
        referral_gateway::store::to_micros(t0)
    );
    app.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_connection_cut_mid_stream_loses_nothing() {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let proxy = CuttableProxy::start("127.0.0.1:5672", true).await;
    let app = TestApp::spawn_delivering(Backend::Sqlite, &proxy.url(), &namespace).await;
    let mut ids = BTreeSet::new();
    for i in 0..60 {
        if i == 20 {
            proxy.set_up(false);
        }
        if i == 40 {
            proxy.set_up(true);
        }
        ids.insert(app.submit(example_text("iapt")).await);
    }
    let queue = broker.topology.referral_queue("coventry-iapt");
    let messages = broker.take(&queue, 60, Duration::from_secs(30)).await;
    let distinct: BTreeSet<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(distinct, ids, "every accepted referral arrived");
    println!(
        "connection cut: {} messages for {} referrals ({} duplicates, same message_id)",
        messages.len(),
        ids.len(),
        messages.len() - ids.len()
    );
    app.stop().await;
    broker.cleanup().await;
}

/// Two relays (separate connection pools, as two processes would have) drain one
/// PostgreSQL outbox: every row is published by exactly one of them.
#[tokio::test]
async fn two_relays_on_postgres_never_publish_a_row_twice() {
    use referral_gateway::delivery::relay::Relay;
    use referral_gateway::store::Store;

    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn(Backend::Postgres).await; // relay off: fill the outbox first
    let mut ids = BTreeSet::new();
    let bodies: Vec<_> = (0..300).map(|_| example_text("substance_misuse")).collect();
    for chunk in bodies.chunks(20) {
        let futures = chunk.iter().map(|b| app.submit(b.clone()));
        ids.extend(futures_util::future::join_all(futures).await);
    }
    assert_eq!(ids.len(), 300);

    let config = delivering_config(&shipped_config_text(), &app.db.url, AMQP_URL, &namespace);
    let mut relays = Vec::new();
    for _ in 0..2 {
        let store = Store::open(&config).await.unwrap();
        let mut relay_config = config.relay.clone();
        relay_config.batch_size = 10;
        let relay = Relay::new(
            store,
            referral_gateway::delivery::topology::Topology::new(&namespace, &config.registry),
            AMQP_URL.to_owned(),
            relay_config,
            std::sync::Arc::new(tokio::sync::Notify::new()),
        );
        let instance = relay.instance().to_owned();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        relays.push((instance, stop, tokio::spawn(relay.run(stopped))));
    }
    let queue = broker.topology.referral_queue("coventry-substance-misuse");
    let messages = broker.take(&queue, 300, Duration::from_secs(60)).await;
    for (_, stop, task) in relays {
        let _ = stop.send(true);
        let _ = task.await;
    }
    let received: Vec<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<String> = received.iter().cloned().collect();
    assert_eq!(distinct, ids, "every referral published");
    assert_eq!(received.len(), 300, "none published twice");

    use sqlx::Row;
    let rows = sqlx::query("SELECT claimed_by FROM outbox WHERE published_at IS NOT NULL")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 300);
    let mut by_instance: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let claimed: String = row.get("claimed_by");
        let instance = claimed.split(':').next().unwrap().to_owned();
        *by_instance.entry(instance).or_default() += 1;
    }
    println!("rows published per relay instance: {by_instance:?}");
    assert!(by_instance.len() <= 2);
    app.stop().await;
    broker.cleanup().await;
}

/// One round's batch holds a message nothing is bound to: the broker returns it (mandatory
/// publish), so only that row is released with the reason and retried, while the rest of
/// the batch is confirmed and marked published together (one token, referrals `queued`,
/// one `message.delivered` entry each).
async fn an_unroutable_message_leaves_the_rest_of_its_batch_published(backend: Backend) {
    use referral_gateway::delivery::relay::Relay;
    use referral_gateway::metrics::Metrics;
    use referral_gateway::store::Store;
    use sqlx::Row;
    use std::sync::Arc;

    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn(backend).await; // relay off: the batch is in the outbox first
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(app.submit(example_text("cmht")).await);
    }
    let stray = ids.remove(2);
    // As if the recipient's queue had gone: no binding matches this routing key.
    sqlx::query(
        "UPDATE outbox SET routing_key = 'cmht.coventry.nobody-bound' WHERE referral_id = $1",
    )
    .bind(&stray)
    .execute(app.store.pool())
    .await
    .unwrap();

    let config = delivering_config(&shipped_config_text(), &app.db.url, AMQP_URL, &namespace);
    let metrics = Arc::new(Metrics::new());
    let relay = Relay::new(
        Store::open(&config).await.unwrap(),
        referral_gateway::delivery::topology::Topology::new(&namespace, &config.registry),
        AMQP_URL.to_owned(),
        config.relay.clone(),
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_metrics(metrics.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));

    let queue = broker.topology.referral_queue("coventry-cmht");
    let messages = broker.take(&queue, 5, Duration::from_secs(20)).await;
    let received: BTreeSet<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(received, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(messages.len(), 5, "each once; the stray one nowhere");
    // The relay marks the batch after its confirms: wait for that commit.
    let started = std::time::Instant::now();
    while app.store.outbox_backlog().await.unwrap().pending > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "batch never marked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    running.await.unwrap();

    let rows = sqlx::query(
        "SELECT referral_id, claimed_by, published_at, attempts, last_error FROM outbox ORDER BY id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    let mut tokens = BTreeSet::new();
    for row in &rows {
        let referral: String = row.get("referral_id");
        let published: Option<i64> = row.get("published_at");
        let error: Option<String> = row.get("last_error");
        if referral == stray {
            assert_eq!(
                published, None,
                "an unconfirmed row is never marked published"
            );
            assert!(row.get::<i64, _>("attempts") >= 1);
            let error = error.expect("the reason is kept for operators");
            assert!(
                error.starts_with("returned by the broker: 312 NO_ROUTE"),
                "{error}"
            );
            let view = app.view_as("coventry-liaison", &stray, 200).await;
            assert_eq!(view["status"], "received");
        } else {
            assert!(published.is_some() && error.is_none());
            tokens.insert(row.get::<Option<String>, _>("claimed_by").unwrap());
            let view = app.view_as("coventry-liaison", &referral, 200).await;
            assert_eq!(view["status"], "queued");
        }
    }
    assert_eq!(tokens.len(), 1, "the five were one round: {tokens:?}");
    assert_eq!(app.count_action("message.delivered").await, 5);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'message.delivered' AND referral_id = $1",
            &stray
        )
        .await,
        0
    );
    let text = metrics.render();
    for line in [
        "refgw_publish_confirms_total{outcome=\"ack\"} 5",
        "refgw_relay_batch_size_count",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert!(text.contains("refgw_publish_confirms_total{outcome=\"returned\"}"));
    // The first round held all six (later rounds retry the stray row alone): exactly one
    // round falls in the (4, 8] bucket.
    let bucket = |le: &str| -> u64 {
        let prefix = format!("refgw_relay_batch_size_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no bucket {le} in:\n{text}"))
    };
    assert_eq!(bucket("8.0") - bucket("4.0"), 1, "{text}");
    app.stop().await;
    broker.cleanup().await;
}

on_both_backends!(an_unroutable_message_leaves_the_rest_of_its_batch_published);

/// An operator command against `database_url`, in the test's broker `namespace`: whether
/// it succeeded, and what it wrote.
fn gateway_cli(namespace: &str, database_url: &str, args: &[&str]) -> (bool, String) {
    let (code, out) = cli::output(
        cli::gateway()
            .env("REFGW_AMQP_NAMESPACE", namespace)
            .env("REFGW_DATABASE_URL", database_url)
            .env("REFGW_LOG", "warn")
            .args(args),
    );
    (code == Some(0), out)
}

/// A consumer rejects a referral: it is dead-lettered, listed and replayed by the
/// operator commands; `outbox status` reports the drained outbox.
#[tokio::test]
async fn rejected_messages_are_dead_lettered_listed_and_replayed() {
    use lapin::options::{BasicGetOptions, BasicRejectOptions};
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(Backend::Sqlite, AMQP_URL, &namespace).await;
    let id = app.submit(example_text("cmht")).await;
    let queue = broker.topology.referral_queue("coventry-cmht");
    let started = std::time::Instant::now();
    let message = loop {
        if let Some(m) = broker
            .channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    message
        .delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let dead = broker.topology.dead_letter_queue("coventry-cmht");
    // Wait until the broker has moved it.
    let started = std::time::Instant::now();
    loop {
        let q = broker
            .channel
            .queue_declare(
                dead.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        if q.message_count() == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (ok, out) = gateway_cli(
        &namespace,
        &app.db.url,
        &["dlq", "list", "--agency", "coventry-cmht"],
    );
    assert!(ok, "{out}");
    assert!(out.contains(&id), "{out}");
    assert!(out.contains("1 dead-lettered message(s)"), "{out}");
    assert!(
        out.contains("  referral  ") && out.contains("dead-lettered: rejected"),
        "{out}"
    );
    assert!(!out.contains("Alex"), "no content is printed");
    let (ok, out) = gateway_cli(
        &namespace,
        &app.db.url,
        &["dlq", "list", "--agency", "coventry-liaison"],
    );
    assert!(!ok && out.contains("not a receiving agency"), "{out}");

    let (ok, out) = gateway_cli(
        &namespace,
        &app.db.url,
        &["dlq", "replay", "--agency", "coventry-cmht"],
    );
    assert!(ok && out.contains("replayed 1 message(s)"), "{out}");
    let back = broker.take(&queue, 1, Duration::from_secs(10)).await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0]
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string(),
        id
    );
    assert_eq!(back[0].data, example("cmht").to_string().into_bytes());
    assert!(
        broker
            .take(&dead, 0, Duration::from_millis(200))
            .await
            .is_empty()
    );

    let (ok, out) = gateway_cli(&namespace, &app.db.url, &["outbox", "status"]);
    assert!(ok, "{out}");
    assert!(out.contains("pending: 0"), "{out}");
    app.stop().await;
    broker.cleanup().await;
}

pub(crate) fn example_binary(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/it-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    if !path.exists() {
        // `cargo test` builds examples; `cargo test --test it` does not.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(ROOT)
            .args(["build", "--example", name])
            .status()
            .unwrap();
        assert!(status.success(), "building example {name}");
    }
    path
}

pub(crate) fn python_has_pika() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import pika"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The documented consumers (Rust and Python) receive every referral once, as files
/// named by referral id, and treat a duplicate publish as already handled.
#[tokio::test]
async fn the_example_consumers_receive_referrals() {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(Backend::Sqlite, AMQP_URL, &namespace).await;
    let mut consumers: Vec<(&str, std::process::Command)> = Vec::new();
    let rust = std::process::Command::new(example_binary("consumer"));
    consumers.push(("rust", rust));
    if python_has_pika() {
        let mut python = std::process::Command::new("python3");
        python.arg(root().join("examples/consumer.py"));
        consumers.push(("python", python));
    } else if std::env::var("REFGW_REQUIRE_PYTHON_CONSUMER").is_ok() {
        panic!("python3 with pika is required (pip install pika)");
    } else {
        eprintln!("NOTE: python3 -c 'import pika' failed; the Python consumer was not run");
    }

    for (name, mut command) in consumers {
        let mut ids = BTreeSet::new();
        for _ in 0..5 {
            ids.insert(app.submit(example_text("iapt")).await);
        }
        // A follow-up note from the sender about one of them: a `follow_up` message.
        let noted = ids.iter().next().unwrap().clone();
        let note = json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "follow_up", "detail": "GP details supplied."});
        app.post_event_as("coventry-liaison", &noted, &note, 201)
            .await;
        app.wait_until_drained(Duration::from_secs(10)).await;
        // A duplicate publish of one of them (as after a relay crash): same message_id.
        let duplicate_of = ids.iter().next().unwrap().clone();
        broker
            .channel
            .basic_publish(
                broker.topology.referrals_exchange().into(),
                "iapt.coventry.coventry-iapt".into(),
                lapin::options::BasicPublishOptions::default(),
                example_text("iapt").as_bytes(),
                lapin::BasicProperties::default()
                    .with_message_id(duplicate_of.as_str().into())
                    .with_content_type("application/json".into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        command
            .args([
                "--agency",
                "coventry-iapt",
                "--namespace",
                &namespace,
                "--idle-exit",
                "2",
                "--out",
            ])
            .arg(out.path());
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let logs = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{name}: {logs}");
        let files: BTreeSet<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".json"))
            .map(|f| f.trim_end_matches(".json").to_owned())
            .collect();
        assert_eq!(files, ids, "{name}: one file per referral");
        let updates = std::fs::read_dir(out.path().join("updates"))
            .unwrap()
            .count();
        assert_eq!(
            updates, 1,
            "{name}: the follow-up is kept, not dead-lettered"
        );
        assert!(
            broker
                .take(
                    &broker.topology.dead_letter_queue("coventry-iapt"),
                    0,
                    Duration::from_millis(300)
                )
                .await
                .is_empty(),
            "{name}: nothing dead-lettered"
        );
        assert!(
            logs.contains(&format!("duplicate {duplicate_of}")),
            "{name}: {logs}"
        );
        assert!(
            logs.contains(&format!(
                "reading queue {namespace}.referrals.coventry-iapt"
            )),
            "{name}: prints the queue it reads: {logs}"
        );
        let queue = broker.topology.referral_queue("coventry-iapt");
        assert!(
            broker
                .take(&queue, 0, Duration::from_millis(300))
                .await
                .is_empty(),
            "{name}: everything acknowledged"
        );
    }
    app.stop().await;
    broker.cleanup().await;
}

/// The relay's marking names the rows the broker confirmed and the claim it published
/// them under: a row whose lease ran out and was claimed again is left to its new claim,
/// a row already published is not marked twice, and only the rows named are marked.
async fn marks_name_their_rows_and_claim(backend: Backend) {
    use referral_gateway::domain::Timestamp;
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.submit(example_text("cmht")).await);
    }
    let now = Timestamp::from(time::OffsetDateTime::now_utc());
    let micros = |t: Timestamp, d: i64| Timestamp::from_micros(t.as_micros() + d);
    // Claimed under `old` with a lease that runs out at once, then again under `new`.
    let old = app
        .store
        .claim_outbox("test-old", now, micros(now, 1), 10)
        .await
        .unwrap();
    assert_eq!(old.len(), 3);
    let new = app
        .store
        .claim_outbox("test-new", micros(now, 2), micros(now, 60_000_000), 10)
        .await
        .unwrap();
    assert_eq!(new.len(), 3);
    let rows: Vec<i64> = old.iter().map(|m| m.outbox_id).collect();
    let mark = |token: &str, ids: Vec<i64>| {
        let (store, token) = (app.store.clone(), token.to_owned());
        async move {
            store
                .mark_claimed_published(vec![token], ids, now)
                .await
                .unwrap()
        }
    };

    assert_eq!(
        mark("test-old", rows).await,
        0,
        "the old claim's marking leaves the new claim's rows"
    );
    let first = new
        .iter()
        .find(|m| m.referral_id.to_string() == ids[0])
        .unwrap();
    assert_eq!(
        mark("test-new", vec![first.outbox_id]).await,
        1,
        "only the row named"
    );
    assert_eq!(
        mark("test-new", vec![first.outbox_id]).await,
        0,
        "a published row is not marked twice"
    );

    let status = |id: &str| {
        let id = id.to_owned();
        let pool = app.store.pool().clone();
        async move {
            use sqlx::Row;
            sqlx::query("SELECT status FROM referrals WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<String, _>("status")
        }
    };
    assert_eq!(status(&ids[0]).await, "queued");
    assert_eq!(status(&ids[1]).await, "received");
    assert_eq!(status(&ids[2]).await, "received");
    assert_eq!(app.count_action("message.delivered").await, 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'message.delivered' AND referral_id = $1",
            &ids[0],
        )
        .await,
        1
    );
    app.stop().await;
}

on_both_backends!(marks_name_their_rows_and_claim);
