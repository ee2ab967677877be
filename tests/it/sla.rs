//! SLA clocks with a clock the test moves: warnings and breaches raised once each, the
//! escalation consumed from its queue, a late acknowledgement recorded as met-late, and
//! never-acknowledged referrals marked undelivered.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::common::cli;
use crate::common::*;
use referral_gateway::clock::ManualClock;
use referral_gateway::sla::scanner::Scanner;
use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;

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
    let metrics = Arc::new(referral_gateway::metrics::Metrics::new());
    let scanner = Scanner::new(
        app.store.clone(),
        clock.clone(),
        StdDuration::from_secs(60),
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_metrics(metrics.clone());

    // An urgent CMHT referral: acknowledge within 4 hours, warn at 80% (3 h 12 min).
    let urgent = app.submit(example_text("cmht")).await;
    let v = app.view_as("coventry-liaison", &urgent, 200).await;
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
    // Counted once, by clock, for the SLA breach alert (docs/monitoring/alerts.yml).
    let exposition = metrics.render();
    assert!(
        exposition.contains("refgw_sla_breaches_total{clock=\"acknowledge\"} 1\n"),
        "{exposition}"
    );
    assert!(!exposition.contains("clock=\"decision\""), "{exposition}");
    assert_eq!(
        clock_state(
            &app.view_as("coventry-liaison", &urgent, 200).await,
            "acknowledge"
        ),
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
    app.post_event_as(
        "coventry-cmht",
        &urgent,
        &event("acknowledged", json!({})),
        201,
    )
    .await;
    let v = app.view_as("coventry-liaison", &urgent, 200).await;
    assert_eq!(clock_state(&v, "acknowledge"), "met_late");
    assert_eq!(clock_state(&v, "delivery"), "met");
    assert_eq!(clock_state(&v, "decision"), "running");

    // A routine referral nobody acknowledges: after 5 working days it is undelivered.
    let routine = app.submit(example_text("iapt")).await;
    clock.set(t0 + Duration::days(10));
    scanner.scan_once().await.unwrap();
    let v = app.view_as("coventry-liaison", &routine, 200).await;
    assert_eq!(v["status"], "undelivered");
    assert_eq!(clock_state(&v, "delivery"), "breached");
    // Other status messages (the urgent referral's acknowledgement) may come first.
    let mut status = Vec::new();
    let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
    while bodies(&status, &routine).is_empty() && std::time::Instant::now() < deadline {
        status.extend(
            broker
                .take(
                    &broker.topology.status_queue("coventry-liaison"),
                    1,
                    StdDuration::from_secs(5),
                )
                .await,
        );
    }
    let types: Vec<_> = bodies(&status, &routine)
        .iter()
        .map(|b| b["type"].clone())
        .collect();
    assert!(types.contains(&json!("undelivered")), "{types:?}");
    // Acknowledging later still works, and is late.
    app.post_event_as(
        "coventry-iapt",
        &routine,
        &event("acknowledged", json!({})),
        201,
    )
    .await;
    assert_eq!(
        clock_state(
            &app.view_as("coventry-liaison", &routine, 200).await,
            "acknowledge"
        ),
        "met_late"
    );
    app.stop().await;
    broker.cleanup().await;
}

on_both_backends!(warnings_breaches_and_late_acknowledgement);

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
        app.submit(example_text("cmht")).await;
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

async fn post_at(
    app: &TestApp,
    clock: &ManualClock,
    at: time::OffsetDateTime,
    agency: &str,
    id: &str,
    event: Value,
) {
    clock.set(at);
    let mut event = event;
    event["event_id"] = json!(uuid::Uuid::new_v4().to_string());
    app.post_event_as(agency, id, &event, 201).await;
}

/// "Overdue" is one thing (docs/sla.md: open past its deadline, flagged by the scanner or
/// not): a clock's `breached` state in the view, the `overdue=true` filter and the
/// report's `breached` count agree, at the deadline and just after it, before any scan.
async fn overdue_means_the_same_everywhere(backend: Backend) {
    let t0 = datetime!(2026-11-25 10:00 UTC);
    let clock = Arc::new(ManualClock::new(t0));
    let db = TestDatabase::create(backend).await;
    // No scanner runs: nothing is flagged.
    let config = test_config(&shipped_config_text(), &db.url);
    let app = TestApp::start_with_clock(config, db, clock.clone()).await;
    // Urgent CMHT: acknowledge within 4 hours (calendar time).
    let id = app.submit(example_text("cmht")).await;
    let overdue_list = || async {
        let r = agency_client("coventry-liaison")
            .get(app.url("/v1/referrals?overdue=true"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["referral_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let breached_in_report = || async {
        let r = agency_client("coventry-liaison")
            .get(app.url("/v1/reports/sla?from=2026-11-25&to=2026-11-25"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let report: Value = r.json().await.unwrap();
        report["rows"][0]["breached"].as_i64().unwrap()
    };

    // At the deadline: not yet overdue anywhere.
    clock.set(t0 + Duration::hours(4));
    let v = app.view_as("coventry-liaison", &id, 200).await;
    assert_eq!(clock_state(&v, "acknowledge"), "running");
    assert!(overdue_list().await.is_empty());
    assert_eq!(breached_in_report().await, 0);

    // A minute later, before any scan: overdue in all three.
    clock.set(t0 + Duration::hours(4) + Duration::minutes(1));
    let v = app.view_as("coventry-liaison", &id, 200).await;
    assert_eq!(clock_state(&v, "acknowledge"), "breached");
    assert_eq!(overdue_list().await, vec![id.clone()]);
    assert_eq!(breached_in_report().await, 1);

    // Acknowledged late: met late, no longer overdue, still a breach in the report.
    let r = post_event(
        &app,
        "coventry-cmht",
        &id,
        &event("acknowledged", json!({})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let v = app.view_as("coventry-liaison", &id, 200).await;
    assert_eq!(clock_state(&v, "acknowledge"), "met_late");
    assert!(overdue_list().await.is_empty());
    assert_eq!(breached_in_report().await, 1);
    app.stop().await;
}

on_both_backends!(overdue_means_the_same_everywhere);

/// Seeded referrals whose report numbers were computed by hand (docs/sla.md defines them).
async fn report_matches_hand_computed_values(backend: Backend) {
    // A Wednesday in the past (contact dates may not be in the real future).
    let t0 = datetime!(2026-11-18 10:00 UTC);
    let h = |n: i64| t0 + Duration::hours(n);
    let clock = Arc::new(ManualClock::new(t0));
    let db = TestDatabase::create(backend).await;
    let db_url = db.url.clone();
    let config = test_config(&shipped_config_text(), &db.url);
    let app = TestApp::start_with_clock(config, db, clock.clone()).await;
    let contact = |outcome: &str, at: time::OffsetDateTime| json!({"type": "first_contact", "contact": {"outcome": outcome, "date": at.date().to_string()}});

    // Three urgent CMHT referrals (acknowledge 4 h, decision 24 h, first contact 24 h).
    let a = app.submit(example_text("cmht")).await;
    let b = app.submit(example_text("cmht")).await;
    let c = app.submit(example_text("cmht")).await;
    // One routine CMHT referral nobody touches (acknowledge due Thursday 10:00).
    let mut routine = example("cmht");
    routine["priority"] = json!("routine");
    let d = app.submit(routine.to_string()).await;
    let cmht = "coventry-cmht";
    post_at(
        &app,
        &clock,
        h(1),
        cmht,
        &a,
        json!({"type": "acknowledged"}),
    )
    .await;
    post_at(&app, &clock, h(2), cmht, &a, json!({"type": "accepted"})).await;
    post_at(
        &app,
        &clock,
        h(2),
        cmht,
        &c,
        json!({"type": "acknowledged"}),
    )
    .await;
    post_at(&app, &clock, h(3), cmht, &c, json!({"type": "accepted"})).await;
    post_at(
        &app,
        &clock,
        h(5),
        cmht,
        &b,
        json!({"type": "acknowledged"}),
    )
    .await;
    post_at(
        &app,
        &clock,
        h(6),
        cmht,
        &b,
        json!({"type": "declined", "reason_code": "threshold_not_met"}),
    )
    .await;
    post_at(
        &app,
        &clock,
        h(10),
        cmht,
        &c,
        contact("not_attended", h(10)),
    )
    .await;
    post_at(&app, &clock, h(30), cmht, &a, contact("attended", h(30))).await;
    clock.set(h(31));

    let report = app
        .get_as(cmht, "/v1/reports/sla?from=2026-11-18&to=2026-11-18", 200)
        .await;
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let urgent = rows.iter().find(|r| r["priority"] == "urgent").unwrap();
    assert_eq!(urgent["agency"], "coventry-cmht");
    assert_eq!(urgent["referrals"], 3);
    assert_eq!(urgent["acknowledged_within_sla"], 2); // a (1 h), c (2 h); b was 5 h
    assert_eq!(urgent["decided_within_sla"], 3); // 2 h, 3 h, 6 h
    assert_eq!(urgent["contacted_within_sla"], 1); // c at 10 h; a at 30 h is late
    assert_eq!(urgent["breached"], 2); // a (contact late), b (acknowledged late)
    assert_eq!(urgent["acknowledge_median_hours"], 2.0); // [1, 2, 5]
    assert_eq!(urgent["acknowledge_p90_hours"], 5.0);
    assert_eq!(urgent["decision_median_hours"], 3.0); // [2, 3, 6]
    assert_eq!(urgent["decision_p90_hours"], 6.0);
    assert_eq!(urgent["first_contact_median_hours"], 10.0); // [10, 30]
    assert_eq!(urgent["first_contact_p90_hours"], 30.0);
    assert_eq!(urgent["not_attended_rate"], 0.5);
    let routine = rows.iter().find(|r| r["priority"] == "routine").unwrap();
    assert_eq!(routine["referrals"], 1);
    assert_eq!(
        routine["breached"], 1,
        "acknowledge overdue at the report's time"
    );
    assert_eq!(routine["acknowledge_median_hours"], Value::Null);

    // Overdue: only the untouched routine referral has an open clock past its deadline.
    let list = app.get_as(cmht, "/v1/referrals?overdue=true", 200).await;
    let overdue: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["referral_id"].clone())
        .collect();
    assert_eq!(overdue, [json!(d)]);

    // Another agency sees only its own referrals: none here.
    let r = app
        .get_as(
            "coventry-iapt",
            "/v1/reports/sla?from=2026-11-18&to=2026-11-18",
            200,
        )
        .await;
    assert_eq!(r["rows"], json!([]));
    app.get_as(cmht, "/v1/reports/sla?from=yesterday", 400)
        .await;
    // A report reads every referral of its period: a year at most.
    app.get_as(cmht, "/v1/reports/sla?from=2025-01-01&to=2025-12-31", 200)
        .await;
    let too_long = app
        .get_as(cmht, "/v1/reports/sla?from=0001-01-01", 400)
        .await;
    assert_eq!(too_long["type"], "urn:referral-gateway:problem:bad-query");
    assert!(
        too_long["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 366 days")),
        "{too_long}"
    );
    let bad_format = app.get_as(cmht, "/v1/reports/sla?format=xml", 400).await;
    assert_eq!(bad_format["detail"], "'format' must be json or csv");
    // `?format=csv`: the same rows, under the JSON members' names.
    let csv_answer = agency_client(cmht)
        .get(app.url("/v1/reports/sla?from=2026-11-18&to=2026-11-18&format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv_answer.status(), 200);
    assert_eq!(
        csv_answer.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let api_csv = csv_answer.text().await.unwrap();
    let header = api_csv.lines().next().unwrap();
    let members: Vec<&str> = urgent
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut columns: Vec<&str> = header.split(',').collect();
    columns.sort_unstable();
    let mut sorted = members.clone();
    sorted.sort_unstable();
    assert_eq!(columns, sorted, "{header}");
    let urgent_line = "coventry-cmht,cmht,urgent,3,2,3,1,2,2.00,5.00,3.00,6.00,10.00,30.00,0.50";
    assert!(api_csv.lines().any(|l| l == urgent_line), "{api_csv}");

    // The CLI computes the same numbers (as of now, so the routine row is breached too).
    let out = cli::gateway()
        .env("REFGW_DATABASE_URL", &db_url)
        .args([
            "sla",
            "report",
            "--from",
            "2026-11-18",
            "--to",
            "2026-11-18",
            "--agency",
            cmht,
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.lines().any(|l| l == urgent_line), "{csv}");
    assert_eq!(csv.lines().next(), Some(header), "one set of column names");
    // Without --from/--to, the command covers the last 30 days as the API does.
    let recent = cli::gateway()
        .env("REFGW_DATABASE_URL", &db_url)
        .args(["sla", "report", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        recent.status.success(),
        "{}",
        String::from_utf8_lossy(&recent.stderr)
    );
    let bad = cli::gateway()
        .env("REFGW_DATABASE_URL", &db_url)
        .args([
            "sla",
            "report",
            "--from",
            "2026-11-18",
            "--to",
            "2026-11-01",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("'to' must be after 'from'"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let table = cli::gateway()
        .env("REFGW_DATABASE_URL", &db_url)
        .args([
            "sla",
            "report",
            "--from",
            "2026-11-18",
            "--to",
            "2026-11-18",
        ])
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&table.stdout));
    app.stop().await;
}

on_both_backends!(report_matches_hand_computed_values);

/// A clock whose referral row cannot be read (changed outside the gateway: here a
/// priority no gateway writes) is skipped with an error logged, and the scan goes on:
/// the other referral's warning is still raised.
#[tokio::test]
async fn an_unreadable_clock_row_does_not_stop_the_scan() {
    let t0 = datetime!(2026-11-25 10:00 UTC);
    let clock = Arc::new(ManualClock::new(t0));
    let db = TestDatabase::create(Backend::Sqlite).await;
    let config = test_config(&shipped_config_text(), &db.url);
    let app = TestApp::start_with_clock(config, db, clock.clone()).await;
    let scanner = Scanner::new(
        app.store.clone(),
        clock.clone(),
        StdDuration::from_secs(60),
        Arc::new(tokio::sync::Notify::new()),
    );
    let bad = app.submit(example_text("cmht")).await;
    let good = app.submit(example_text("cmht")).await;
    sqlx::query("UPDATE referrals SET priority = 'whenever' WHERE id = $1")
        .bind(&bad)
        .execute(app.store.pool())
        .await
        .unwrap();
    // Past the urgent acknowledgement's warning (3 h 12 min), before its deadline.
    clock.set(t0 + Duration::minutes(3 * 60 + 30));
    let counts = scanner.scan_once().await.unwrap();
    assert_eq!((counts.warnings, counts.breaches), (1, 0));
    let v = app.view_as("coventry-liaison", &good, 200).await;
    let ack = v["sla"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clock"] == "acknowledge")
        .unwrap()
        .clone();
    assert!(!ack["warned_at"].is_null(), "{ack}");
    app.stop().await;
}
