//! The tamper-evident audit log and signed receipts.

use crate::common::cli;
use crate::common::*;
use serde_json::{Value, json};

async fn exec(app: &TestApp, sql: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(sql)
        .execute(app.store.pool())
        .await
        .map(|r| r.rows_affected())
}

async fn seed(app: &TestApp) -> Vec<String> {
    let liaison = agency_client("coventry-liaison");
    let mut ids = Vec::new();
    for (service, _) in SERVICE_TYPES {
        ids.push(app.submit(example_text(service)).await);
    }
    // A refusal is audited too.
    let mut bad = example("cmht");
    bad["person"]["nhs_number"] = json!("1234567890");
    assert_eq!(
        post_referral(&liaison, app, bad.to_string()).await.status(),
        422
    );
    app.post_event_as(
        "coventry-cmht",
        &ids[0],
        &event("acknowledged", json!({})),
        201,
    )
    .await;
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

    let (code, out) = cli::run(&url, &["audit", "verify"]);
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
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 3"), "{out}");
    exec(
        &app,
        "UPDATE audit_log SET recipient = 'coventry-iapt' WHERE seq = 3",
    )
    .await
    .unwrap();
    assert_eq!(cli::run(&url, &["audit", "verify"]).0, Some(0), "restored");

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
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 4"), "{out}");
    exec(&app, "INSERT INTO audit_log SELECT * FROM saved")
        .await
        .unwrap();
    assert_eq!(cli::run(&url, &["audit", "verify"]).0, Some(0), "restored");

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
    let (code, out) = cli::run(&url, &["audit", "verify"]);
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
    assert_eq!(cli::run(&url, &["audit", "verify"]).0, Some(0), "restored");
    exec(&app, "DELETE FROM audit_log WHERE seq = 7")
        .await
        .unwrap();
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 7"), "{out}");
    app.stop().await;
}

on_both_backends!(tampering_is_detected);

/// Signed checkpoints: a forged signature or a rewritten head is caught.
#[tokio::test]
async fn checkpoints_are_signed_and_checked() {
    use referral_gateway::governance::checkpoints::Checkpointer;
    use referral_gateway::security::signing::GatewayKey;
    let app = TestApp::spawn(Backend::Sqlite).await;
    seed(&app).await;
    let key = signing_key();
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
    let verified = referral_gateway::governance::verify::verify(&app.store, &keys)
        .await
        .unwrap();
    assert_eq!((verified.entries, verified.checkpoints), (7, 1));

    // Checkpoints are append-only too: only the file's owner (here, the test) can lift that.
    assert!(
        exec(
            &app,
            "UPDATE audit_checkpoints SET signature = 'AAAA' WHERE seq = 7"
        )
        .await
        .is_err()
    );
    exec(&app, "DROP TRIGGER audit_checkpoints_no_update")
        .await
        .unwrap();
    exec(
        &app,
        "UPDATE audit_checkpoints SET signature = 'AAAA' WHERE seq = 7",
    )
    .await
    .unwrap();
    let err = referral_gateway::governance::verify::verify(&app.store, &keys)
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
    let err = referral_gateway::governance::verify::verify(&app.store, &[other.public().clone()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown key"), "{err}");
    app.stop().await;
}

/// A checkpoint row written beyond the log's end by whoever may insert checkpoints does
/// not stop the gateway's own checkpoints, and `audit verify` names it as forged; when
/// checkpoints the gateway signed are deleted, it signs no further head.
#[tokio::test]
async fn forged_or_deleted_checkpoints_do_not_silence_signing() {
    use referral_gateway::governance::checkpoints::Checkpointer;
    let app = TestApp::spawn(Backend::Sqlite).await;
    seed(&app).await;
    let key = signing_key();
    let checkpointer = Checkpointer::new(
        app.store.clone(),
        key.clone(),
        1000,
        std::time::Duration::from_secs(300),
    );
    assert_eq!(checkpointer.checkpoint().await.unwrap(), Some(7));
    exec(
        &app,
        "INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, signature) \
         VALUES (1000000000000, 'x', 0, 'nobody', 'AAAA')",
    )
    .await
    .unwrap();
    app.submit(example_text("cmht")).await;
    let signed = checkpointer.checkpoint().await.unwrap();
    assert_eq!(signed, Some(8), "the forged row stopped signing");
    let keys = [key.public().clone()];
    let err = referral_gateway::governance::verify::verify(&app.store, &keys)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a checkpoint at entry 1000000000000, beyond the log's last entry 8, is not signed by a known key"),
        "{err}"
    );

    // The owner deletes the checkpoints this process signed: it will not sign again.
    exec(&app, "DROP TRIGGER IF EXISTS audit_checkpoints_no_delete")
        .await
        .unwrap();
    exec(&app, "DELETE FROM audit_checkpoints").await.unwrap();
    app.submit(example_text("cmht")).await;
    assert_eq!(checkpointer.checkpoint().await.unwrap(), None);
    app.submit(example_text("cmht")).await;
    assert_eq!(checkpointer.checkpoint().await.unwrap(), None);
    app.stop().await;
}

/// A checkpoint signed on a clock an hour ahead (another instance's, or this one's before
/// the wall clock was stepped back): the next checkpoint is not dated before it, so the
/// chain still verifies (checkpoints out of order would fail `audit verify` for good).
#[tokio::test]
async fn a_clock_behind_the_last_checkpoint_does_not_break_the_chain() {
    use referral_gateway::domain::audit::Checkpoint;
    use referral_gateway::governance::checkpoints::Checkpointer;
    let app = TestApp::spawn(Backend::Sqlite).await;
    seed(&app).await;
    let key = signing_key();
    let (seq, head_hash) = app.store.audit_head().await.unwrap();
    let ahead = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000 + 3_600_000_000;
    let mut early = Checkpoint {
        seq,
        head_hash,
        signed_at: ahead,
        key_id: key.key_id().to_owned(),
        signature: String::new(),
    };
    early.signature = key.sign(&early.message());
    assert!(app.store.insert_checkpoint(&early).await.unwrap());
    app.submit(example_text("cmht")).await;
    let checkpointer = Checkpointer::new(
        app.store.clone(),
        key.clone(),
        1000,
        std::time::Duration::from_secs(300),
    );
    assert_eq!(checkpointer.checkpoint().await.unwrap(), Some(seq + 1));
    let keys = [key.public().clone()];
    let verified = referral_gateway::governance::verify::verify(&app.store, &keys)
        .await
        .unwrap();
    assert_eq!(verified.checkpoints, 2);
    app.stop().await;
}

#[tokio::test]
async fn receipts_are_signed_and_verifiable() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let body = app
        .submit_as("coventry-liaison", example_text("housing"), 202)
        .await;
    let signed = &body["signed_receipt"];
    assert_eq!(signed["alg"], "EdDSA");
    assert_eq!(signed["receipt"]["referral_id"], body["referral_id"]);
    assert_eq!(signed["receipt"]["recipient"], "coventry-housing");
    assert_eq!(signed["receipt"]["payload_sha256"], body["payload_sha256"]);

    let keys = app.get_as("coventry-housing", "/v1/keys", 200).await;
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
        let out = cli::gateway().args(&args).output().unwrap();
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
    let stranger = unregistered_client();
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
    let mut ids = Vec::new();
    for service in ["cmht", "housing"] {
        let receipt = app
            .submit_as("coventry-liaison", example_text(service), 202)
            .await;
        ids.push(receipt["referral_id"].as_str().unwrap().to_owned());
    }
    // An event with free text, to the sender's status queue.
    let seen = event(
        "acknowledged",
        serde_json::json!({"detail": "Seen by the duty worker."}),
    );
    app.post_event_as("coventry-cmht", &ids[0], &seen, 201)
        .await;
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
        // The raw database files (main file and write-ahead log) hold no plain name. They
        // are read by another process (`cat`): opening and closing the database file in
        // this one, where the gateway runs, would drop SQLite's POSIX locks on it (they
        // belong to the process, and any close releases them), and the next process to
        // close the database (`audit verify` below) would then take itself for the last
        // user and reset the write-ahead log under the gateway (a short read, SQLite's
        // error 522: the test's flake, not the gateway's).
        let file = app.db.url.trim_start_matches("sqlite://").to_owned();
        let read = |path: &str| {
            std::process::Command::new("cat")
                .arg(path)
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| out.stdout)
        };
        let main = read(&file).expect("the database file");
        assert!(!main.is_empty());
        for path in [file.clone(), format!("{file}-wal")] {
            // The log may have been checkpointed away; the main file must be there.
            if let Some(bytes) = read(&path) {
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains("Example Street") && !text.contains("Alex"),
                    "plain text in {path}"
                );
            }
        }
    }

    // Purge: delivered payloads go, the log still verifies and records the purge.
    app.wait_until_drained(std::time::Duration::from_secs(20))
        .await;
    let now = time::OffsetDateTime::now_utc();
    let later = referral_gateway::domain::Timestamp::from(now + time::Duration::seconds(1));
    let purged = app.store.purge_payloads(later, later).await.unwrap();
    assert_eq!(purged, 2);
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM referrals WHERE payload <> ''")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let (code, out) = cli::run(&app.db.url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    let last: String = sqlx::query("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, "payload.purged");
    // Metadata stays readable, and the events without their free text: the record is
    // rewritten (still sealed), the delivered message's own payload emptied.
    app.get_as("coventry-liaison", "/v1/referrals?limit=5", 200)
        .await;
    let view = app.view_as("coventry-liaison", &ids[0], 200).await;
    assert_eq!(view["timeline"][0]["type"], "acknowledged");
    assert!(view["timeline"][0].get("detail").is_none(), "{view}");
    let sealed: Option<String> =
        sqlx::query("SELECT body_key_id FROM referral_events WHERE referral_id = $1")
            .bind(&ids[0])
            .fetch_one(app.store.pool())
            .await
            .unwrap()
            .get(0);
    assert!(sealed.is_some());
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE referral_id = $1 AND payload IS NOT NULL",
            &ids[0]
        )
        .await,
        0
    );
    let detail: String =
        sqlx::query("SELECT detail FROM audit_log WHERE action = 'payload.purged'")
            .fetch_one(app.store.pool())
            .await
            .unwrap()
            .get(0);
    assert!(
        detail.starts_with("2 payload(s) of referrals received before ")
            && detail.ends_with(
                "and the free text of their 1 event(s); 0 delivered message(s) of events posted after an earlier purge emptied"
            ),
        "{detail}"
    );

    // An event posted after the purge: its record is stored without its free text, its
    // message still carries it to the sender, and the next purge run empties that
    // message once delivered.
    let closing = event(
        "accepted",
        serde_json::json!({"detail": "Allocated to the duty worker."}),
    );
    app.post_event_as("coventry-cmht", &ids[0], &closing, 201)
        .await;
    let view = app.view_as("coventry-liaison", &ids[0], 200).await;
    assert_eq!(view["timeline"][1]["type"], "accepted");
    assert!(view["timeline"][1].get("detail").is_none(), "{view}");
    // Whatever else the status queue holds, the accepted event's message arrives.
    let started = std::time::Instant::now();
    let mut told = false;
    while !told && started.elapsed() < std::time::Duration::from_secs(60) {
        told = broker
            .take(
                &broker.topology.status_queue("coventry-liaison"),
                1,
                std::time::Duration::from_secs(2),
            )
            .await
            .iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains("Allocated to the duty worker."));
    }
    assert!(told, "the sender was not told");
    app.wait_until_drained(std::time::Duration::from_secs(20))
        .await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE referral_id = $1 AND payload IS NOT NULL",
            &ids[0]
        )
        .await,
        1
    );
    assert_eq!(app.store.purge_payloads(later, later).await.unwrap(), 0);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE referral_id = $1 AND payload IS NOT NULL",
            &ids[0]
        )
        .await,
        0
    );
    let detail: String = sqlx::query(
        "SELECT detail FROM audit_log WHERE action = 'payload.purged' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap()
    .get(0);
    assert!(
        detail.starts_with("0 payload(s)")
            && detail.ends_with(
                "; 1 delivered message(s) of events posted after an earlier purge emptied"
            ),
        "{detail}"
    );
    // The whole database holds the text nowhere.
    let bodies: Vec<String> = sqlx::query("SELECT body FROM referral_events")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("body"))
        .collect();
    assert!(bodies.iter().all(|b| !b.contains("Allocated")));
    app.stop().await;
    broker.cleanup().await;
}

on_both_backends!(payloads_are_sealed_and_purgeable);

/// After a signing-key rotation, earlier checkpoints and receipts still verify through
/// `audit.previous_public_keys`, and `/v1/keys` publishes both keys.
#[tokio::test]
async fn signing_keys_rotate() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let old_receipt = app
        .submit_as("coventry-liaison", example_text("cmht"), 202)
        .await;
    let old_keys = app.get_as("coventry-cmht", "/v1/keys", 200).await;
    sign_head(&app.store).await;
    let db_url = app.db.url.clone();

    let dir = tempfile::tempdir().unwrap();
    let new_key = dir.path().join("new.key");
    std::fs::write(
        &new_key,
        referral_gateway::security::signing::GatewayKey::generate_pem().unwrap(),
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
        cli::run(&db_url, &with_config)
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

/// Signs the current head as the gateway's checkpointer does.
async fn sign_head(store: &referral_gateway::store::Store) -> Option<i64> {
    referral_gateway::governance::checkpoints::Checkpointer::new(
        store.clone(),
        signing_key(),
        1000,
        std::time::Duration::from_secs(300),
    )
    .checkpoint()
    .await
    .unwrap()
}

/// What someone who owns the database (a superuser, or the owner of the SQLite file)
/// does first: switch off the append-only triggers of both audit tables.
async fn lift_triggers(store: &referral_gateway::store::Store) {
    let statements: &[&str] = match store.backend() {
        referral_gateway::store::Backend::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
            "DROP TRIGGER IF EXISTS audit_checkpoints_no_update",
            "DROP TRIGGER IF EXISTS audit_checkpoints_no_delete",
        ],
        referral_gateway::store::Backend::Postgres => &[
            "ALTER TABLE audit_log DISABLE TRIGGER USER",
            "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
        ],
    };
    for sql in statements {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
}

/// Edits entry `seq` and recomputes the (unkeyed) chain after it and the recorded head,
/// so that every link and hash holds again.
async fn rewrite_entry(store: &referral_gateway::store::Store, seq: i64, recipient: &str) {
    sqlx::query("UPDATE audit_log SET recipient = $1 WHERE seq = $2")
        .bind(recipient.to_owned())
        .bind(seq)
        .execute(store.pool())
        .await
        .unwrap();
    let mut prev = referral_gateway::domain::audit::GENESIS_HASH.to_owned();
    let mut last = 0;
    for (mut entry, _) in store.audit_entries(0, 100_000).await.unwrap() {
        entry.prev_hash = prev;
        prev = entry.hash();
        last = entry.seq;
        sqlx::query("UPDATE audit_log SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(entry.prev_hash.clone())
            .bind(prev.clone())
            .bind(entry.seq)
            .execute(store.pool())
            .await
            .unwrap();
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(last)
        .bind(prev)
        .execute(store.pool())
        .await
        .unwrap();
}

/// The runtime role of a two-role PostgreSQL deployment (`migrate --grant-to`) runs the
/// gateway, and cannot switch off the triggers, rewrite, delete or truncate audit rows.
#[tokio::test]
async fn runtime_role_cannot_rewrite_the_audit_log() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let roles = PgRoles::create(&db).await;
    let (code, out) = cli::run(&roles.owner_url, &["migrate", "--grant-to", &roles.runtime]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&roles.runtime), "{out}");

    // The real gateway, logged in as the runtime role: it starts without migrating,
    // accepts a referral and signs checkpoints.
    let config = test_config(&shipped_config_text(), &roles.runtime_url);
    let app = TestApp::start(config, db).await;
    assert_eq!(
        app.store.audit_protection().await.unwrap(),
        Vec::<String>::new(),
        "the runtime role has no power over the audit tables"
    );
    app.submit(example_text("cmht")).await;
    assert_eq!(sign_head(&app.store).await, Some(2));

    for sql in [
        "ALTER TABLE audit_log DISABLE TRIGGER ALL",
        "ALTER TABLE audit_log DISABLE TRIGGER USER",
        "ALTER TABLE audit_checkpoints DISABLE TRIGGER ALL",
        "UPDATE audit_log SET recipient = 'coventry-housing' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET signature = 'AAAA'",
        "TRUNCATE audit_checkpoints",
        "DELETE FROM audit_head",
        "DROP TABLE audit_checkpoints",
        "CREATE TRIGGER sneak BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    ] {
        let err = exec(&app, sql).await.expect_err(sql).to_string();
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{sql}: {err}"
        );
    }
    // What it needs still works: the rest of the gateway's tables, verify and purge.
    let (code, out) = cli::run(&roles.runtime_url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 signed checkpoints"), "{out}");
    let (code, out) = cli::run(&roles.runtime_url, &["purge", "--older-than", "1"]);
    assert_eq!(code, Some(0), "{out}");

    // The old set-up, where the gateway's own role owns the audit tables, is reported.
    let admin =
        referral_gateway::store::Store::connect(&referral_gateway::config::DatabaseConfig {
            url: app.db.url.clone(),
            max_connections: 1,
            commit_batch_max: 256,
            commit_queue_depth: 1024,
            commit_transactions: 1,
        })
        .await
        .unwrap();
    assert!(
        admin
            .audit_protection()
            .await
            .unwrap()
            .iter()
            .any(|p| p.contains("superuser")),
        "the test's superuser is reported"
    );
    sqlx::query(&format!("ALTER TABLE audit_log OWNER TO {}", roles.runtime))
        .execute(admin.pool())
        .await
        .unwrap();
    let problems = app.store.audit_protection().await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("audit_log") && p.contains("owner")),
        "{problems:?}"
    );
    // And `migrate --grant-to` refuses to leave a runtime role that owns them.
    let (code, out) = cli::run(&roles.owner_url, &["migrate", "--grant-to", &roles.runtime]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("audit_log"), "{out}");
    admin.close().await;
    app.stop().await;
    drop(roles);
}

/// Someone who owns the database rewrites an entry, recomputes the chain and the head
/// and deletes the checkpoints: `audit verify` fails because the log is no longer
/// covered by signed checkpoints. Entries left unsigned beyond the bound fail it too.
async fn rewrites_without_checkpoints_fail_verify(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let url = db.url.clone();
    // Entries written an hour ago (the default bound is 2 x 300 s).
    let clock = std::sync::Arc::new(referral_gateway::clock::ManualClock::new(
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
    ));
    let app = TestApp::start_with_clock(test_config(&shipped_config_text(), &url), db, clock).await;
    seed(&app).await;
    assert_eq!(sign_head(&app.store).await, Some(7));
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");

    // Entries 8 to 13, unsigned for an hour: beyond the bound.
    seed(&app).await;
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 8"), "{out}");
    assert!(out.contains("not covered by a signed checkpoint"), "{out}");
    // The bound can be given: by age, then by count.
    let (code, out) = cli::run(&url, &["audit", "verify", "--max-uncovered-secs", "7200"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli::run(
        &url,
        &[
            "audit",
            "verify",
            "--max-uncovered-secs",
            "7200",
            "--max-uncovered-entries",
            "5",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("6 entries"), "{out}");
    assert_eq!(sign_head(&app.store).await, Some(13));
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 signed checkpoints"), "{out}");

    // The attack: triggers off, entry 3 rewritten, chain and head recomputed.
    lift_triggers(&app.store).await;
    rewrite_entry(&app.store, 3, "coventry-housing").await;
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 7"), "{out}");
    // ... and the checkpoints that give it away deleted.
    exec(&app, "DELETE FROM audit_checkpoints").await.unwrap();
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 1"), "{out}");
    assert!(out.contains("not covered by a signed checkpoint"), "{out}");
    // Deleting only the newest checkpoint leaves entries 8 to 13 unsigned, as above.
    app.stop().await;
}

on_both_backends!(rewrites_without_checkpoints_fail_verify);

/// The checkpointer also writes the newest signed head to `audit.head_file`, outside the
/// database; `audit verify --head FILE` catches a rewrite or a roll-back that the
/// database alone no longer shows, and a head file whose signature does not hold.
async fn a_signed_head_outside_the_database_catches_rollbacks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("audit-head.json");
    let text = shipped_config_text().replace(
        "[audit]\n",
        &format!("[audit]\nhead_file = \"{}\"\n", head.display()),
    );
    assert!(text.contains("head_file"));
    let db = TestDatabase::create(backend).await;
    let app = TestApp::start(test_config(&text, &db.url), db).await;
    seed(&app).await;
    // The checkpoint signed at shutdown is written to the head file.
    let db = app.shutdown().await;
    let url = db.url.clone();
    let signed: Value = serde_json::from_str(&std::fs::read_to_string(&head).unwrap()).unwrap();
    assert_eq!(signed["seq"], 7, "{signed}");
    for field in ["hash", "signed_at", "key_id", "signature"] {
        assert!(!signed[field].is_null(), "{field} in {signed}");
    }
    let head_arg = head.display().to_string();
    let (code, out) = cli::run(&url, &["audit", "verify", "--head", &head_arg]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("signed head 7"), "{out}");

    let store =
        referral_gateway::store::Store::connect(&referral_gateway::config::DatabaseConfig {
            url: url.clone(),
            max_connections: 1,
            commit_batch_max: 256,
            commit_queue_depth: 1024,
            commit_transactions: 1,
        })
        .await
        .unwrap();
    lift_triggers(&store).await;
    // A rewrite, recomputed, with the checkpoints deleted: within the bound the database
    // alone cannot show it; the head kept outside does.
    rewrite_entry(&store, 5, "coventry-housing").await;
    sqlx::query("DELETE FROM audit_checkpoints")
        .execute(store.pool())
        .await
        .unwrap();
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "within the bound: {out}");
    let (code, out) = cli::run(&url, &["audit", "verify", "--head", &head_arg]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("entry 7"), "{out}");
    assert!(out.contains("signed head"), "{out}");

    // Rolled back past the signed head (entry 7 gone, the head moved back).
    sqlx::query("DELETE FROM audit_log WHERE seq = 7")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit_log WHERE seq = 6) WHERE id = 1")
        .execute(store.pool())
        .await
        .unwrap();
    let (code, out) = cli::run(&url, &["audit", "verify", "--head", &head_arg]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("entry 7"), "{out}");

    // A head file whose signature or contents were changed is refused.
    for (field, value) in [
        ("signature", json!("AAAA")),
        ("seq", json!(6)),
        ("signed_at", json!(1)),
    ] {
        let mut forged = signed.clone();
        forged[field] = value;
        std::fs::write(&head, forged.to_string()).unwrap();
        let (code, out) = cli::run(&url, &["audit", "verify", "--head", &head_arg]);
        assert_eq!(code, Some(1), "{field}: {out}");
        assert!(out.contains("signature"), "{field}: {out}");
    }
    store.close().await;
    drop(db);
}

on_both_backends!(a_signed_head_outside_the_database_catches_rollbacks);

/// Checkpoints signed with the gateway's key but out of order, or over another entry's
/// hash, fail `audit verify`.
async fn disordered_or_mismatched_checkpoints_fail_verify(backend: Backend) {
    use referral_gateway::domain::audit::Checkpoint;
    let app = TestApp::spawn(backend).await;
    seed(&app).await;
    let url = app.db.url.clone();
    let key = signing_key();
    let entries = app.store.audit_entries(0, 100).await.unwrap();
    let now = referral_gateway::store::to_micros(time::OffsetDateTime::now_utc());
    let checkpoint = |seq: i64, hash: &str, signed_at: i64| {
        let mut c = Checkpoint {
            seq,
            head_hash: hash.to_owned(),
            signed_at,
            key_id: key.key_id().to_owned(),
            signature: String::new(),
        };
        c.signature = key.sign(&c.message());
        c
    };
    // Entry 6's checkpoint signed ten minutes before entry 3's.
    app.store
        .insert_checkpoint(&checkpoint(3, &entries[2].1, now))
        .await
        .unwrap();
    app.store
        .insert_checkpoint(&checkpoint(6, &entries[5].1, now - 600_000_000))
        .await
        .unwrap();
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 6"), "{out}");
    assert!(out.contains("out of order"), "{out}");

    lift_triggers(&app.store).await;
    exec(&app, "DELETE FROM audit_checkpoints").await.unwrap();
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    // A genuine signature over entry 4's hash, stored as the checkpoint of entry 5.
    app.store
        .insert_checkpoint(&checkpoint(5, &entries[3].1, now))
        .await
        .unwrap();
    let (code, out) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at entry 5"), "{out}");
    assert!(out.contains("signed another chain head"), "{out}");
    app.stop().await;
}

on_both_backends!(disordered_or_mismatched_checkpoints_fail_verify);

/// The one export (API and command line) pages by one rule: a page is the last when no
/// entry follows it. Exactly a page of entries is one piece; one more makes two, and
/// every entry comes out once, in order.
#[tokio::test]
async fn the_export_pages_end_where_the_entries_do() {
    use futures_util::StreamExt;
    use referral_gateway::governance::export::{EXPORT_PAGE, Export, ExportFormat};
    use referral_gateway::store::AuditRecord;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (head, _) = app.store.audit_head().await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    for _ in head..EXPORT_PAGE {
        app.store
            .audit(
                &AuditRecord::new(
                    "test",
                    referral_gateway::domain::audit::AuditAction::ConfigLoaded,
                ),
                now,
            )
            .await
            .unwrap();
    }
    let export = |store: referral_gateway::store::Store| async move {
        let export = Export::begin(
            &store,
            ExportFormat::Ndjson,
            referral_gateway::domain::Timestamp::MIN,
            referral_gateway::domain::Timestamp::MAX,
        )
        .await
        .unwrap();
        let pieces: Vec<String> = export
            .into_stream()
            .map(|piece| piece.unwrap())
            .collect()
            .await;
        let seqs: Vec<i64> = pieces
            .concat()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        (pieces.len(), seqs)
    };
    let (pieces, seqs) = export(app.store.clone()).await;
    assert_eq!(pieces, 1, "a full page with nothing after it is the last");
    assert_eq!(seqs, (1..=EXPORT_PAGE).collect::<Vec<_>>());
    app.store
        .audit(
            &AuditRecord::new(
                "test",
                referral_gateway::domain::audit::AuditAction::ConfigLoaded,
            ),
            now,
        )
        .await
        .unwrap();
    let (pieces, seqs) = export(app.store.clone()).await;
    assert_eq!(pieces, 2);
    assert_eq!(seqs, (1..=EXPORT_PAGE + 1).collect::<Vec<_>>());
    app.stop().await;
}
