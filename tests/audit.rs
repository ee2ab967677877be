//! The tamper-evident audit log and signed receipts.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn gateway(db_url: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .current_dir(ROOT)
        .env("REFGW_DATABASE_URL", db_url)
        .env("REFGW_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn exec(app: &TestApp, sql: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(sql)
        .execute(app.store.pool())
        .await
        .map(|r| r.rows_affected())
}

async fn seed(app: &TestApp) -> Vec<String> {
    let liaison = agency_client("coventry-liaison");
    let mut ids = Vec::new();
    for service in ["cmht", "iapt", "housing", "substance_misuse"] {
        let r = post_referral(&liaison, app, example_text(service)).await;
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["referral_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // A refusal is audited too.
    let mut bad = example("cmht");
    bad["person"]["nhs_number"] = json!("1234567890");
    assert_eq!(
        post_referral(&liaison, app, bad.to_string()).await.status(),
        422
    );
    let r = post_event(
        app,
        "coventry-cmht",
        &ids[0],
        &event("acknowledged", json!({})),
    )
    .await;
    assert_eq!(r.status(), 201);
    ids
}

async fn tampering_is_detected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ids = seed(&app).await;
    let url = app.db.url.clone();

    // What the log holds: the disclosures, with a person key and no identifiers.
    use sqlx::Row;
    let rows = sqlx::query("SELECT seq, actor, action, referral_id, recipient, consent, categories, person_key, detail FROM audit_log ORDER BY seq")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get::<String, _>("action")).collect();
    assert_eq!(
        actions,
        [
            "config.loaded",
            "referral.submitted",
            "referral.submitted",
            "referral.submitted",
            "referral.submitted",
            "referral.refused",
            "event.posted"
        ]
    );
    let first = &rows[1];
    assert_eq!(first.get::<String, _>("actor"), "agency:coventry-liaison");
    assert_eq!(
        first.get::<Option<String>, _>("referral_id").as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(
        first.get::<Option<String>, _>("recipient").as_deref(),
        Some("coventry-cmht")
    );
    assert_eq!(
        first.get::<Option<String>, _>("consent").as_deref(),
        Some("given")
    );
    // The field categories shared with the CMHT (x-category), not field names.
    let categories: Vec<String> =
        serde_json::from_str(&first.get::<String, _>("categories")).unwrap();
    for category in ["identity", "health", "risk"] {
        assert!(categories.contains(&category.to_owned()), "{categories:?}");
    }
    assert!(!categories.contains(&"person".to_owned()), "{categories:?}");
    let person_keys: std::collections::BTreeSet<Option<String>> =
        rows[1..5].iter().map(|r| r.get("person_key")).collect();
    assert_eq!(person_keys.len(), 1, "one person, one key");
    assert_eq!(
        rows[5].get::<String, _>("detail"),
        "schema-validation: /person/nhs_number"
    );
    let everything = format!(
        "{:?}",
        rows.iter()
            .map(|r| (
                r.get::<String, _>("detail"),
                r.get::<Option<String>, _>("person_key"),
                r.get::<String, _>("categories")
            ))
            .collect::<Vec<_>>()
    );
    for personal in ["Alex", "Example", "1991-06-14", "943", "CV1"] {
        assert!(
            !everything.contains(personal),
            "{personal} in the audit log"
        );
    }

    // Append-only: the database itself refuses changes.
    assert!(
        exec(&app, "UPDATE audit_log SET action = 'x' WHERE seq = 2")
            .await
            .is_err()
    );
    assert!(
        exec(&app, "DELETE FROM audit_log WHERE seq = 2")
            .await
            .is_err()
    );

    let (code, out) = gateway(&url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("7 entries"), "{out}");

    // An attacker with database superuser rights switches the protection off.
    match backend {
        Backend::Sqlite => {
            exec(&app, "DROP TRIGGER audit_log_no_update")
                .await
                .unwrap();
            exec(&app, "DROP TRIGGER audit_log_no_delete")
                .await
                .unwrap();
        }
        Backend::Postgres => {
            exec(&app, "ALTER TABLE audit_log DISABLE TRIGGER USER")
                .await
                .unwrap();
        }
    }
    // 1. Change one row.
    exec(
        &app,
        "UPDATE audit_log SET recipient = 'coventry-housing' WHERE seq = 3",
    )
    .await
    .unwrap();
    let (code, out) = gateway(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 3"), "{out}");
    exec(
        &app,
        "UPDATE audit_log SET recipient = 'coventry-iapt' WHERE seq = 3",
    )
    .await
    .unwrap();
    assert_eq!(gateway(&url, &["audit", "verify"]).0, Some(0), "restored");

    // 2. Delete one row.
    exec(
        &app,
        "CREATE TABLE saved AS SELECT * FROM audit_log WHERE seq = 4",
    )
    .await
    .unwrap();
    exec(&app, "DELETE FROM audit_log WHERE seq = 4")
        .await
        .unwrap();
    let (code, out) = gateway(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 4"), "{out}");
    exec(&app, "INSERT INTO audit_log SELECT * FROM saved")
        .await
        .unwrap();
    assert_eq!(gateway(&url, &["audit", "verify"]).0, Some(0), "restored");

    // 3. Reorder two rows (swap their contents, keep their numbers).
    exec(&app, "UPDATE audit_log SET seq = -5 WHERE seq = 5")
        .await
        .unwrap();
    exec(&app, "UPDATE audit_log SET seq = 5 WHERE seq = 6")
        .await
        .unwrap();
    exec(&app, "UPDATE audit_log SET seq = 6 WHERE seq = -5")
        .await
        .unwrap();
    let (code, out) = gateway(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 5"), "{out}");

    // 4. Delete the newest entry: the recorded head gives it away.
    exec(&app, "UPDATE audit_log SET seq = -6 WHERE seq = 5")
        .await
        .unwrap();
    exec(&app, "UPDATE audit_log SET seq = 5 WHERE seq = 6")
        .await
        .unwrap();
    exec(&app, "UPDATE audit_log SET seq = 6 WHERE seq = -6")
        .await
        .unwrap();
    assert_eq!(gateway(&url, &["audit", "verify"]).0, Some(0), "restored");
    exec(&app, "DELETE FROM audit_log WHERE seq = 7")
        .await
        .unwrap();
    let (code, out) = gateway(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 7"), "{out}");
    app.stop().await;
}

on_both_backends!(tampering_is_detected);

/// Signed checkpoints: a forged signature or a rewritten head is caught.
#[tokio::test]
async fn checkpoints_are_signed_and_checked() {
    use referral_gateway::audit::Checkpointer;
    use referral_gateway::signing::GatewayKey;
    let app = TestApp::spawn(Backend::Sqlite).await;
    seed(&app).await;
    let key = std::sync::Arc::new(
        GatewayKey::load(&root().join("certs-example/gateway-signing.key")).unwrap(),
    );
    let checkpointer = Checkpointer::new(
        app.store.clone(),
        key.clone(),
        1000,
        std::time::Duration::from_secs(300),
    );
    assert_eq!(checkpointer.checkpoint().await.unwrap(), Some(7));
    assert_eq!(
        checkpointer.checkpoint().await.unwrap(),
        None,
        "nothing new to sign"
    );
    let keys = [key.public().clone()];
    let verified = referral_gateway::audit::verify(&app.store, &keys)
        .await
        .unwrap();
    assert_eq!((verified.entries, verified.checkpoints), (7, 1));

    exec(
        &app,
        "UPDATE audit_checkpoints SET signature = 'AAAA' WHERE seq = 7",
    )
    .await
    .unwrap();
    let err = referral_gateway::audit::verify(&app.store, &keys)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid signature"), "{err}");
    // An unknown key is refused too.
    let other = GatewayKey::from_pkcs8(
        &{
            use ring::signature::Ed25519KeyPair;
            Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap()
                .as_ref()
                .to_vec()
        },
        "other",
    )
    .unwrap();
    let err = referral_gateway::audit::verify(&app.store, &[other.public().clone()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown key"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn receipts_are_signed_and_verifiable() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = post_referral(
        &agency_client("coventry-liaison"),
        &app,
        example_text("housing"),
    )
    .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    let signed = &body["signed_receipt"];
    assert_eq!(signed["alg"], "EdDSA");
    assert_eq!(signed["receipt"]["referral_id"], body["referral_id"]);
    assert_eq!(signed["receipt"]["recipient"], "coventry-housing");
    assert_eq!(signed["receipt"]["payload_sha256"], body["payload_sha256"]);

    let keys: Value = agency_client("coventry-housing")
        .get(app.url("/v1/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["kid"], signed["key_id"]);
    assert_eq!(keys["keys"][0]["crv"], "Ed25519");

    let dir = tempfile::tempdir().unwrap();
    let receipt_file = dir.path().join("receipt.json");
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&receipt_file, body.to_string()).unwrap();
    std::fs::write(&keys_file, keys.to_string()).unwrap();
    let verify = |file: &std::path::Path, with_keys: bool| {
        let mut args = vec![
            "receipt".to_owned(),
            "verify".to_owned(),
            file.display().to_string(),
        ];
        if with_keys {
            args.extend(["--keys".to_owned(), keys_file.display().to_string()]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
            .current_dir(ROOT)
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = verify(&receipt_file, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("receipt valid"), "{out}");
    assert_eq!(
        verify(&receipt_file, false).0,
        Some(0),
        "the configured key verifies too"
    );

    let mut forged = body.clone();
    forged["signed_receipt"]["receipt"]["recipient"] = json!("coventry-cmht");
    std::fs::write(&receipt_file, forged.to_string()).unwrap();
    let (code, out) = verify(&receipt_file, true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("INVALID"), "{out}");
    app.stop().await;
}

/// Reads, refused reads, listings, reports and unregistered certificates are all logged.
#[tokio::test]
async fn reads_and_refusals_are_audited() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ids = seed(&app).await;
    let path = format!("/v1/referrals/{}", ids[0]);
    assert_eq!(
        agency_client("coventry-cmht")
            .get(app.url(&path))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        agency_client("coventry-iapt")
            .get(app.url(&path))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        agency_client("coventry-liaison")
            .get(app.url("/v1/referrals?status=queued"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        agency_client("coventry-cmht")
            .get(app.url("/v1/reports/sla"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let dir = root().join("certs-example/unregistered");
    let stranger = http_client(client_tls(
        &root().join("certs-example/ca.crt"),
        Some((dir.join("client.crt"), dir.join("client.key"))),
        rustls::ALL_VERSIONS,
    ));
    assert_eq!(
        stranger.get(app.url(&path)).send().await.unwrap().status(),
        403
    );

    use sqlx::Row;
    let rows =
        sqlx::query("SELECT actor, action, referral_id FROM audit_log WHERE seq > 7 ORDER BY seq")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    let got: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get("actor"), r.get("action"), r.get("referral_id")))
        .collect();
    assert_eq!(
        got[0],
        (
            "agency:coventry-cmht".into(),
            "referral.read".into(),
            Some(ids[0].clone())
        )
    );
    assert_eq!(
        got[1],
        (
            "agency:coventry-iapt".into(),
            "referral.read.denied".into(),
            Some(ids[0].clone())
        )
    );
    assert_eq!(got[2].1, "referral.listed");
    assert_eq!(got[3].1, "report.sla");
    assert!(got[4].0.starts_with("certificate:"), "{:?}", got[4]);
    assert_eq!(got[4].1, "auth.refused");
    assert_eq!(got.len(), 5);
    app.stop().await;
}

/// Payloads are not readable in the database files, and purging delivered ones keeps the
/// audit chain intact.
async fn payloads_are_sealed_and_purgeable(backend: Backend) {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(backend, AMQP_URL, &namespace).await;
    let liaison = agency_client("coventry-liaison");
    for service in ["cmht", "housing"] {
        assert_eq!(
            post_referral(&liaison, &app, example_text(service))
                .await
                .status(),
            202
        );
    }
    // Delivered in clear text to the recipient, all the same.
    let delivered = broker
        .take(
            &broker.topology.referral_queue("coventry-housing"),
            1,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert!(String::from_utf8_lossy(&delivered[0].data).contains("Example Street"));

    use sqlx::Row;
    let payloads: Vec<String> = sqlx::query("SELECT payload FROM referrals")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("payload"))
        .collect();
    assert_eq!(payloads.len(), 2);
    for p in &payloads {
        for personal in ["Alex", "Example Street", "1991-06-14", "943 476 5919"] {
            assert!(!p.contains(personal), "{personal} readable in the database");
        }
    }
    if backend == Backend::Sqlite {
        // The raw database files (main file and write-ahead log) hold no plain name.
        let file = app.db.url.trim_start_matches("sqlite://").to_owned();
        for path in [file.clone(), format!("{file}-wal")] {
            if let Ok(bytes) = std::fs::read(&path) {
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains("Example Street") && !text.contains("Alex"),
                    "plain text in {path}"
                );
            }
        }
    }

    // Purge: delivered payloads go, the log still verifies and records the purge.
    let wait = std::time::Instant::now();
    while app.store.outbox_backlog().await.unwrap().pending > 0 {
        assert!(wait.elapsed() < std::time::Duration::from_secs(20));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let now = time::OffsetDateTime::now_utc();
    let later = referral_gateway::store::to_micros(now + time::Duration::seconds(1));
    let purged = app.store.purge_payloads(later, later).await.unwrap();
    assert_eq!(purged, 2);
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM referrals WHERE payload <> ''")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let (code, out) = gateway(&app.db.url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    let last: String = sqlx::query("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, "payload.purged");
    // Metadata stays readable.
    let view = liaison
        .get(app.url("/v1/referrals?limit=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 200);
    app.stop().await;
    broker.cleanup().await;
}

on_both_backends!(payloads_are_sealed_and_purgeable);

/// After a signing-key rotation, earlier checkpoints and receipts still verify through
/// `audit.previous_public_keys`, and `/v1/keys` publishes both keys.
#[tokio::test]
async fn signing_keys_rotate() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = post_referral(
        &agency_client("coventry-liaison"),
        &app,
        example_text("cmht"),
    )
    .await;
    let old_receipt: Value = r.json().await.unwrap();
    let old_keys: Value = agency_client("coventry-cmht")
        .get(app.url("/v1/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old_key = std::sync::Arc::new(
        referral_gateway::signing::GatewayKey::load(
            &root().join("certs-example/gateway-signing.key"),
        )
        .unwrap(),
    );
    referral_gateway::audit::Checkpointer::new(
        app.store.clone(),
        old_key,
        1000,
        std::time::Duration::from_secs(300),
    )
    .checkpoint()
    .await
    .unwrap();
    let db_url = app.db.url.clone();

    let dir = tempfile::tempdir().unwrap();
    let new_key = dir.path().join("new.key");
    std::fs::write(
        &new_key,
        referral_gateway::signing::GatewayKey::generate_pem().unwrap(),
    )
    .unwrap();
    let keys_file = dir.path().join("old-keys.json");
    std::fs::write(&keys_file, old_keys.to_string()).unwrap();
    let config_file = dir.path().join("rotated.toml");
    let rotated = shipped_config_text().replace(
        &format!("signing_key = \"{ROOT}/certs-example/gateway-signing.key\""),
        &format!(
            "signing_key = \"{}\"\nprevious_public_keys = \"{}\"",
            new_key.display(),
            keys_file.display()
        ),
    );
    assert!(rotated.contains("previous_public_keys"));
    std::fs::write(&config_file, &rotated).unwrap();
    let config_arg = config_file.display().to_string();
    let run = |args: &[&str]| {
        let mut with_config = vec!["--config", config_arg.as_str()];
        with_config.extend_from_slice(args);
        gateway(&db_url, &with_config)
    };
    let (code, out) = run(&["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 signed checkpoints"), "{out}");
    let receipt_file = dir.path().join("receipt.json");
    std::fs::write(&receipt_file, old_receipt.to_string()).unwrap();
    let (code, out) = run(&["receipt", "verify", receipt_file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");

    // Without the previous keys, the old checkpoint no longer verifies.
    let bare = rotated.replace(
        &format!("\nprevious_public_keys = \"{}\"", keys_file.display()),
        "",
    );
    std::fs::write(&config_file, bare).unwrap();
    let (code, out) = run(&["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("unknown key"), "{out}");
    app.stop().await;
}
