//! Operations as docs/deployment.md describes them, run for real: the container health
//! probe against a running gateway, `backup` and a restore drill on SQLite, `pg_dump` /
//! `pg_restore` on PostgreSQL, `migrate-data` from SQLite onto PostgreSQL, and the
//! production configuration template with systemd credentials.

use std::path::Path;
use std::time::Duration;

use crate::common::cli;
use crate::common::*;
use referral_gateway::domain::ReferralId;
use serde_json::json;
use sqlx::Row;

/// A gateway's worth of data: a referral of each service type, a refusal, an event, a
/// signed checkpoint, and a referral after it (entries the checkpoint does not cover).
/// The referrals stay in the outbox (the test gateway's relay is off).
async fn seed(app: &TestApp) -> Vec<String> {
    use referral_gateway::governance::checkpoints::Checkpointer;
    let mut ids = Vec::new();
    for (service, _) in SERVICE_TYPES {
        ids.push(app.submit(example_text(service)).await);
    }
    let mut bad = example("cmht");
    bad["person"]["nhs_number"] = json!("1234567890");
    app.submit_as("coventry-liaison", bad.to_string(), 422)
        .await;
    app.post_event_as(
        "coventry-cmht",
        &ids[0],
        &event("acknowledged", json!({})),
        201,
    )
    .await;
    let checkpointer = Checkpointer::new(
        app.store.clone(),
        signing_key(),
        1000,
        Duration::from_secs(300),
    );
    assert!(checkpointer.checkpoint().await.unwrap().is_some());
    ids.push(app.submit(example_text("cmht")).await);
    ids
}

/// Each referral's payload, opened with the payload key.
async fn payloads(app: &TestApp, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let id = ReferralId::parse(id).unwrap();
        out.push(app.store.referral_payload(id).await.unwrap().unwrap());
    }
    out
}

/// `head N (HASH)` from `audit verify`'s output.
fn head_of(verify_output: &str) -> String {
    let start = verify_output.find("head ").expect("a head in the output");
    let end = verify_output[start..].find(')').expect("head hash") + start;
    verify_output[start..=end].to_owned()
}

/// Every audit entry's sequence number and hashes, and every checkpoint, as stored.
async fn chain(url: &str) -> (Vec<(i64, String, String)>, Vec<(i64, String, String)>) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let entries = sqlx::query("SELECT seq, prev_hash, hash FROM audit_log ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("seq"), r.get("prev_hash"), r.get("hash")))
        .collect();
    let checkpoints =
        sqlx::query("SELECT seq, head_hash, signature FROM audit_checkpoints ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("seq"), r.get("head_hash"), r.get("signature")))
            .collect();
    pool.close().await;
    (entries, checkpoints)
}

/// Each referral reads back through the agency API as its sender, and the store opens
/// its payload to exactly what was stored before.
async fn readable(app: &TestApp, ids: &[String], before: &[String]) {
    for id in ids {
        let view = app.view_as("coventry-liaison", id, 200).await;
        assert_eq!(view["referral_id"], id.as_str(), "{view}");
    }
    assert_eq!(payloads(app, ids).await, before);
}

fn sqlite_file(url: &str) -> &Path {
    Path::new(url.strip_prefix("sqlite://").unwrap())
}

#[tokio::test]
async fn healthcheck_probes_the_ops_listener() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let probe = |url: String| {
        tokio::task::spawn_blocking(move || {
            cli::output(cli::gateway().args(["healthcheck", "--url", &url]))
        })
    };
    let (code, out) = probe(format!("{}/readyz", app.ops_base)).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("answered 200"), "{out}");

    let (code, out) = probe(format!("{}/no-such-page", app.ops_base))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("answered 404"), "{out}");

    // Nothing listening.
    let port = cli::free_port();
    let (code, out) = probe(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("unhealthy"), "{out}");
    app.stop().await;
}

#[tokio::test]
async fn sqlite_backup_and_restore_drill() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ids = seed(&app).await;
    let before = payloads(&app, &ids).await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("gateway-backup.db");
    let backup_arg = backup.to_str().unwrap();

    // Online: the gateway is running.
    let url = app.db.url.clone();
    let (code, out) = tokio::task::spawn_blocking({
        let (url, backup_arg) = (url.clone(), backup_arg.to_owned());
        move || cli::run(&url, &["backup", "--to", &backup_arg])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("5 referrals") && out.contains("integrity check ok"),
        "{out}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(backup_arg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy is readable by its owner only");
    }
    let (code, out) = cli::run(&url, &["backup", "--to", backup_arg]);
    assert_eq!(
        code,
        Some(2),
        "an existing file is never overwritten: {out}"
    );
    let (code, verified) = cli::run(&url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{verified}");
    let entries_at_backup = chain(&url).await.0.len();
    let db = app.shutdown().await;

    // Destroy: the database and its WAL are gone.
    let file = sqlite_file(&db.url).to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    assert!(!file.exists());

    // Restore: the copy put back in place (docs/deployment.md).
    std::fs::copy(&backup, &file).unwrap();
    let (code, out) = cli::run(&db.url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("{entries_at_backup} entries")),
        "{out}"
    );
    let app = TestApp::start(test_config(&shipped_config_text(), &db.url), db).await;
    readable(&app, &ids, &before).await;
    app.stop().await;

    // A PostgreSQL database is backed up with pg_dump instead.
    let pg = TestDatabase::create(Backend::Postgres).await;
    let (code, out) = cli::run(&pg.url, &["backup", "--to", "x.db"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("pg_dump"), "{out}");
}

/// The database `url` names, with `role` logging in.
fn as_role(role_url: &str, database_url: &str) -> String {
    let (base, _) = role_url.rsplit_once('/').unwrap();
    let (_, name) = database_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// As docs/deployment.md does it: owner and runtime roles, `pg_dump -Fc` as the owner,
/// the database dropped, `pg_restore` into a new database owned by the owner, `audit
/// verify`, `migrate --grant-to`, and the gateway back on it as the runtime role.
#[tokio::test]
async fn postgres_pg_dump_and_restore_drill() {
    if std::process::Command::new("pg_dump")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("pg_dump is not installed: the PostgreSQL drill is skipped");
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let roles = PgRoles::create(&db).await;
    let (code, out) = cli::run(&roles.owner_url, &["migrate", "--grant-to", &roles.runtime]);
    assert_eq!(code, Some(0), "{out}");
    let app = TestApp::start(test_config(&shipped_config_text(), &roles.runtime_url), db).await;
    let ids = seed(&app).await;
    let before = payloads(&app, &ids).await;
    let db = app.shutdown().await;
    let (code, verified) = cli::run(&roles.runtime_url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{verified}");

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("refgw.dump");
    let (code, out) = cli::output(
        std::process::Command::new("pg_dump")
            .args(["-Fc", "-f"])
            .arg(&dump)
            .arg(format!("--dbname={}", roles.owner_url)),
    );
    assert_eq!(code, Some(0), "{out}");

    // Destroy.
    let (admin_base, name) = db.url.rsplit_once('/').unwrap();
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&format!("{admin_base}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (code, out) = cli::run(&roles.runtime_url, &["audit", "verify"]);
    assert_ne!(code, Some(0), "the database is gone: {out}");

    // Restore into a new database owned by the owner role (`createdb -O refgw_owner`).
    let restored = TestDatabase::create(Backend::Postgres).await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&format!("{admin_base}/postgres"))
            .await
            .unwrap();
        let (_, restored_name) = restored.url.rsplit_once('/').unwrap();
        sqlx::query(&format!(
            "ALTER DATABASE {restored_name} OWNER TO {}",
            roles.owner
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let owner_url = as_role(&roles.owner_url, &restored.url);
    let runtime_url = as_role(&roles.runtime_url, &restored.url);
    let (code, out) = cli::output(
        std::process::Command::new("pg_restore")
            .args(["--exit-on-error", "--single-transaction"])
            .arg(format!("--dbname={owner_url}"))
            .arg(&dump),
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli::run(&owner_url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(head_of(&out), head_of(&verified));
    let (code, out) = cli::run(&owner_url, &["migrate", "--grant-to", &roles.runtime]);
    assert_eq!(code, Some(0), "{out}");

    let app = TestApp::start(test_config(&shipped_config_text(), &runtime_url), restored).await;
    readable(&app, &ids, &before).await;
    // The append-only triggers came back with the schema, and the runtime role still
    // has no power over the log.
    assert_eq!(
        app.store.audit_protection().await.unwrap(),
        Vec::<String>::new()
    );
    let (code, out) = cli::run(&owner_url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    app.submit(example_text("iapt")).await;
    app.stop().await;
    drop(db);
}

#[tokio::test]
async fn migrate_data_moves_a_sqlite_trial_onto_postgres() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ids = seed(&app).await;
    let before = payloads(&app, &ids).await;
    let sqlite = app.shutdown().await;
    let (code, source_verified) = cli::run(&sqlite.url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{source_verified}");

    // As docs/deployment.md does it: the owner role migrates and fills the database,
    // the runtime role serves it.
    let pg = TestDatabase::create(Backend::Postgres).await;
    let roles = PgRoles::create(&pg).await;
    let migrate_data = |batch: &str| {
        cli::run(
            &pg.url,
            &[
                "migrate-data",
                "--from",
                &sqlite.url,
                "--to",
                &roles.owner_url,
                "--batch-rows",
                batch,
            ],
        )
    };
    // The target must be migrated first.
    let (code, out) = migrate_data("3");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("referral-gateway migrate"), "{out}");
    let (code, out) = cli::run(&roles.owner_url, &["migrate", "--grant-to", &roles.runtime]);
    assert_eq!(code, Some(0), "{out}");

    // Batches of 3 rows: several statements per table.
    let (code, out) = migrate_data("3");
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "referrals: 5 rows",
        "outbox: ",
        "sla_clocks: ",
        "referral_events: 1 rows",
        "audit log verified on the target",
        "the same as the source's",
    ] {
        assert!(out.contains(line), "{line} missing from {out}");
    }
    let (code, verified) = cli::run(&roles.runtime_url, &["audit", "verify"]);
    assert_eq!(code, Some(0), "{verified}");
    assert_eq!(head_of(&verified), head_of(&source_verified));
    // Byte for byte: every hash and every checkpoint signature.
    let (entries, checkpoints) = chain(&pg.url).await;
    assert_eq!(
        (entries.clone(), checkpoints.clone()),
        chain(&sqlite.url).await
    );
    assert!(entries.len() >= 7 && !checkpoints.is_empty());

    // A target that holds anything is refused, and left as it was.
    let (code, out) = migrate_data("500");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not empty"), "{out}");
    assert_eq!(chain(&pg.url).await.0, entries);

    // The gateway runs on the target: referrals read, payloads open, the outbox rows
    // the trial had not delivered go out, and new referrals are numbered after the
    // copied ones.
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let config = delivering_config(
        &shipped_config_text(),
        &roles.runtime_url,
        AMQP_URL,
        &namespace,
    );
    let app = TestApp::start(config, pg).await;
    readable(&app, &ids, &before).await;
    let queue = broker.topology.referral_queue("coventry-cmht");
    let messages = broker.take(&queue, 2, Duration::from_secs(20)).await;
    let delivered: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            (
                m.properties.message_id().as_ref().unwrap().to_string(),
                String::from_utf8(m.data.clone()).unwrap(),
            )
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        if [0, 4].contains(&i) {
            assert!(
                delivered.contains(&(id.clone(), before[i].clone())),
                "{id} not delivered as stored"
            );
        }
    }
    let new = app.submit(example_text("housing")).await;
    app.wait_until_drained(Duration::from_secs(20)).await;
    assert_eq!(
        app.view_as("coventry-liaison", &new, 200).await["status"],
        "queued"
    );
    app.stop().await;
    broker.cleanup().await;
}

#[test]
fn the_production_template_starts_with_systemd_credentials() {
    // A fresh key set (the production profile refuses the published development keys),
    // named as deploy/referral-gateway.service passes them with LoadCredential=.
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let (code, out) = cli::output(
        cli::gateway()
            .args(["certs", "init", "--ca-name", "Test scheme CA", "--out"])
            .arg(&set),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Move ca.key off this host"), "{out}");
    // The scheme's CA is named for the scheme, not for development.
    let pem = std::fs::read_to_string(set.join("ca.crt")).unwrap();
    let der = {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    let has = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"Test scheme CA") && !has(b"development"));
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    for (credential, file) in [
        ("server.key", "server.key"),
        ("gateway-signing.key", "gateway-signing.key"),
        ("person-key.secret", "person-key.secret"),
        ("payload.key", "payload.key"),
    ] {
        std::fs::copy(set.join(file), credentials.join(credential)).unwrap();
    }
    let database = format!("sqlite://{}/gateway.db", dir.path().display());
    std::fs::write(credentials.join("database-url"), &database).unwrap();
    std::fs::write(credentials.join("amqp-url"), AMQP_URL).unwrap();
    let text = std::fs::read_to_string(root().join("deploy/gateway.production.toml"))
        .unwrap()
        .replace("/etc/referral-gateway/tls/", &format!("{}/", set.display()))
        .replace("/usr/share/referral-gateway/", &format!("{ROOT}/"));
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, &text).unwrap();
    let check = |credentials_dir: Option<&Path>| {
        let mut cmd = cli::gateway();
        cmd.arg("--config").arg(&config).args(["config", "check"]);
        match credentials_dir {
            Some(d) => cmd.env("CREDENTIALS_DIRECTORY", d),
            None => cmd.env_remove("CREDENTIALS_DIRECTORY"),
        };
        cli::output(&mut cmd)
    };
    let (code, out) = check(Some(&credentials));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("profile Production"), "{out}");
    // Without systemd's credentials it does not start.
    let (code, out) = check(None);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("needs $CREDENTIALS_DIRECTORY"), "{out}");
}
