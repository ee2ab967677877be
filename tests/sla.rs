//! SLA clocks with a clock the test moves: warnings and breaches raised once each, the
//! escalation consumed from its queue, a late acknowledgement recorded as met-late, and
//! never-acknowledged referrals marked undelivered.

mod common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::*;
use referral_gateway::clock::ManualClock;
use referral_gateway::sla::Scanner;
use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;

async fn submit(app: &TestApp, body: String) -> String {
    let r = post_referral(&agency_client("coventry-liaison"), app, body).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["referral_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn view(app: &TestApp, id: &str) -> Value {
    agency_client("coventry-liaison")
        .get(app.url(&format!("/v1/referrals/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn clock_state(view: &Value, clock: &str) -> String {
    view["sla"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clock"] == clock)
        .map(|c| c["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn bodies(messages: &[lapin::message::Delivery], referral: &str) -> Vec<Value> {
    messages
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.data).unwrap())
        .filter(|b| b["referral_id"] == referral)
        .collect()
}

async fn warnings_breaches_and_late_acknowledgement(backend: Backend) {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    // Wednesday 25 November 2026, 10:00 GMT.
    let t0 = datetime!(2026-11-25 10:00 UTC);
    let clock = Arc::new(ManualClock::new(t0));
    let db = TestDatabase::create(backend).await;
    let config = delivering_config(&shipped_config_text(), &db.url, AMQP_URL, &namespace);
    let app = TestApp::start_with_clock(config, db, clock.clone()).await;
    let scanner = Scanner::new(
        app.store.clone(),
        clock.clone(),
        StdDuration::from_secs(60),
        Arc::new(tokio::sync::Notify::new()),
    );

    // An urgent CMHT referral: acknowledge within 4 hours, warn at 80% (3 h 12 min).
    let urgent = submit(&app, example_text("cmht")).await;
    let v = view(&app, &urgent).await;
    assert_eq!(clock_state(&v, "acknowledge"), "running");
    let ack = v["sla"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clock"] == "acknowledge")
        .unwrap()
        .clone();
    assert_eq!(ack["due_at"], "2026-11-25T14:00:00Z");

    clock.set(t0 + Duration::hours(3));
    let counts = scanner.scan_once().await.unwrap();
    assert_eq!((counts.warnings, counts.breaches), (0, 0));

    clock.set(t0 + Duration::minutes(3 * 60 + 30));
    let counts = scanner.scan_once().await.unwrap();
    assert_eq!(
        (counts.warnings, counts.breaches),
        (1, 0),
        "acknowledge warning"
    );
    assert_eq!(
        scanner.scan_once().await.unwrap().warnings,
        0,
        "a warning is raised once"
    );

    clock.set(t0 + Duration::minutes(4 * 60 + 10));
    let counts = scanner.scan_once().await.unwrap();
    assert_eq!(
        (counts.warnings, counts.breaches),
        (0, 1),
        "acknowledge breach"
    );
    assert_eq!(
        scanner.scan_once().await.unwrap().breaches,
        0,
        "a breach is raised once"
    );
    assert_eq!(
        clock_state(&view(&app, &urgent).await, "acknowledge"),
        "breached"
    );

    // The sender hears of both; the service manager's escalation queue gets the breach.
    let status = broker
        .take(
            &broker.topology.status_queue("coventry-liaison"),
            2,
            StdDuration::from_secs(20),
        )
        .await;
    let status = bodies(&status, &urgent);
    let kinds: Vec<_> = status
        .iter()
        .map(|b| (b["type"].clone(), b["clock"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (json!("sla_warning"), json!("acknowledge")),
            (json!("sla_breach"), json!("acknowledge"))
        ]
    );
    let escalations = broker
        .take(
            &broker.topology.escalations_queue(),
            1,
            StdDuration::from_secs(20),
        )
        .await;
    assert_eq!(escalations.len(), 1);
    assert_eq!(
        escalations[0].routing_key.as_str(),
        "coventry-cmht.acknowledge"
    );
    let escalation: Value = serde_json::from_slice(&escalations[0].data).unwrap();
    assert_eq!(escalation["referral_id"], urgent.as_str());
    assert_eq!(escalation["due_at"], "2026-11-25T14:00:00Z");
    assert_eq!(escalation["priority"], "urgent");

    // A late acknowledgement stops the clock as met-late.
    clock.set(t0 + Duration::minutes(4 * 60 + 15));
    let r = agency_client("coventry-cmht")
        .post(app.url(&format!("/v1/referrals/{urgent}/events")))
        .header("content-type", "application/json")
        .body(
            json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "acknowledged"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = view(&app, &urgent).await;
    assert_eq!(clock_state(&v, "acknowledge"), "met_late");
    assert_eq!(clock_state(&v, "delivery"), "met");
    assert_eq!(clock_state(&v, "decision"), "running");

    // A routine referral nobody acknowledges: after 5 working days it is undelivered.
    let routine = submit(&app, example_text("iapt")).await;
    clock.set(t0 + Duration::days(10));
    scanner.scan_once().await.unwrap();
    let v = view(&app, &routine).await;
    assert_eq!(v["status"], "undelivered");
    assert_eq!(clock_state(&v, "delivery"), "breached");
    let status = broker
        .take(
            &broker.topology.status_queue("coventry-liaison"),
            1,
            StdDuration::from_secs(20),
        )
        .await;
    let types: Vec<_> = bodies(&status, &routine)
        .iter()
        .map(|b| b["type"].clone())
        .collect();
    assert!(types.contains(&json!("undelivered")), "{types:?}");
    // Acknowledging later still works, and is late.
    let r = agency_client("coventry-iapt")
        .post(app.url(&format!("/v1/referrals/{routine}/events")))
        .header("content-type", "application/json")
        .body(
            json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "acknowledged"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        clock_state(&view(&app, &routine).await, "acknowledge"),
        "met_late"
    );
    app.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn warnings_breaches_and_late_acknowledgement_sqlite() {
    warnings_breaches_and_late_acknowledgement(Backend::Sqlite).await;
}

#[tokio::test]
async fn warnings_breaches_and_late_acknowledgement_postgres() {
    warnings_breaches_and_late_acknowledgement(Backend::Postgres).await;
}

/// Two scanners on one PostgreSQL database at the same moment: one scans, the other
/// skips, and each breach is flagged once.
#[tokio::test]
async fn only_one_scanner_flags_on_postgres() {
    let t0 = datetime!(2026-11-25 10:00 UTC);
    let clock = Arc::new(ManualClock::new(t0));
    let db = TestDatabase::create(Backend::Postgres).await;
    let config = test_config(&shipped_config_text(), &db.url);
    let app = TestApp::start_with_clock(config.clone(), db, clock.clone()).await;
    for _ in 0..20 {
        submit(&app, example_text("cmht")).await;
    }
    clock.set(t0 + Duration::days(30));
    let mut scanners = Vec::new();
    for _ in 0..3 {
        let store = referral_gateway::store::Store::connect(&config.database)
            .await
            .unwrap();
        scanners.push(Scanner::new(
            store,
            clock.clone(),
            StdDuration::from_secs(60),
            Arc::new(tokio::sync::Notify::new()),
        ));
    }
    let results = futures_util::future::join_all(scanners.iter().map(|s| s.scan_once())).await;
    let total: usize = results.iter().map(|r| r.as_ref().unwrap().breaches).sum();
    // 20 referrals x 4 clocks, all past due.
    assert_eq!(total, 80, "each breach flagged exactly once: {results:?}");
    use sqlx::Row;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE message_type = 'escalation'")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 80);
    app.stop().await;
}
