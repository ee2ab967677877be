//! The real binary: `validate`, `certs init`, `migrate`, start-up errors, and `serve`
//! with a graceful stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::cli::{free_port, gateway, readyz, spawn_serve, wait_ready};
use crate::common::*;

#[test]
fn validate_accepts_every_example_and_lists_every_problem() {
    for (service_type, _) in SERVICE_TYPES {
        let out = gateway()
            .args([
                "validate",
                &format!("docs/examples/referral-{service_type}.json"),
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{service_type}: {stdout}");
        assert!(stdout.contains(": valid ("), "{stdout}");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut doc = example("housing");
    doc["consent"]["given"] = serde_json::json!(false);
    doc["person"]["nhs_number"] = serde_json::json!("1234567890");
    let file = dir.path().join("bad.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = gateway().arg("validate").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for pointer in [
        "/consent/given",
        "/consent/sharing_without_consent",
        "/person/nhs_number",
    ] {
        assert!(stdout.contains(pointer), "{pointer} missing from {stdout}");
    }

    // --service-type applies another overlay: the housing example is not a CMHT referral.
    let out = gateway()
        .args([
            "validate",
            "docs/examples/referral-housing.json",
            "--service-type",
            "cmht",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("/service_details/"), "{stdout}");

    // A member named twice is refused as the gateway refuses it (`400 malformed-json`):
    // otherwise a file `validate` passes would be refused at the gateway.
    let text = std::fs::read_to_string("docs/examples/referral-cmht.json").unwrap();
    let twice = text.replacen('{', "{\"priority\": \"routine\",", 1);
    assert_ne!(twice, text);
    std::fs::write(&file, twice).unwrap();
    let out = gateway().arg("validate").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("member name appears more than once in its object at /priority"),
        "{stdout}"
    );
}

#[test]
fn certs_init_makes_a_complete_set_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("set");
    let run = |force: bool| {
        let mut cmd = gateway();
        cmd.args(["certs", "init", "--out"]).arg(&out);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let first = run(false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for file in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "agencies/coventry-liaison.crt",
        "agencies/coventry-liaison.key",
        "agencies/coventry-substance-misuse.crt",
        "unregistered/client.crt",
        "rogue/ca.crt",
        "rogue/client.key",
        "staff-dev.key",
        "staff-jwks.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let again = run(false);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    // Keys are readable by their owner only; certificates by everybody.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        for key in [
            "ca.key",
            "server.key",
            "payload.key",
            "person-key.secret",
            "gateway-signing.key",
        ] {
            assert_eq!(mode(key), 0o600, "{key}");
        }
        assert_eq!(mode("ca.crt"), 0o644);
    }
    // A directory holding a key set in use (no ca.crt: a credentials directory) is not
    // overwritten either, and nothing in it changes.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("payload.key"), "in use\n").unwrap();
    let into_credentials = gateway()
        .args(["certs", "init", "--out"])
        .arg(&credentials)
        .output()
        .unwrap();
    assert_eq!(into_credentials.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&into_credentials.stderr).contains("payload.key already exists"),
        "{}",
        String::from_utf8_lossy(&into_credentials.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(credentials.join("payload.key")).unwrap(),
        "in use\n"
    );
    assert_eq!(std::fs::read_dir(&credentials).unwrap().count(), 1);
    assert!(run(true).status.success());

    // A new scheme's keys come first: without a configuration file there are no
    // agencies, so no client certificates, and the server name is the one given.
    let fresh = dir.path().join("fresh");
    let alone = gateway()
        .args([
            "--config",
            "/nonexistent/gateway.toml",
            "certs",
            "init",
            "--out",
        ])
        .arg(&fresh)
        .args(["--server-name", "gateway.example.org"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&alone.stdout);
    assert!(
        alone.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&alone.stderr)
    );
    assert!(stdout.contains("no agency certificates made"), "{stdout}");
    for file in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "payload.key",
    ] {
        assert!(fresh.join(file).exists(), "{file}");
    }
    assert!(!fresh.join("agencies/coventry-liaison.crt").exists());
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let text = shipped_config_text()
        .replace("listen = \"127.0.0.1:8443\"", "listen = \"everywhere\"")
        .replace("role = \"sender\"", "role = \"sometimes\"");
    std::fs::write(&file, &text).unwrap();
    let out = gateway()
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("role"), "{stderr}");
    assert!(stderr.contains("sometimes"), "{stderr}");

    std::fs::write(
        &file,
        text.replace("role = \"sometimes\"", "role = \"sender\""),
    )
    .unwrap();
    let out = gateway()
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("server.listen: 'everywhere' is not an IP address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dev_tokens_only_when_enabled_and_accepted_by_the_staff_listener() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mint = |config: Option<&std::path::Path>, extra: &[&str]| {
        let mut cmd = gateway();
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(["dev-token", "--role", "auditor"]).args(extra);
        cmd.output().unwrap()
    };

    // Disabled: refused, with the reason.
    let (_, other_jwks) = referral_gateway::staff_auth::tokens::generate_dev_key().unwrap();
    let other_jwks = other_jwks.replace(
        referral_gateway::staff_auth::tokens::DEV_KEY_ID,
        "idp-key-1",
    );
    let jwks = config_file("idp-jwks.json", &other_jwks);
    let shipped = shipped_config_text();
    let disabled = config_file(
        "disabled.toml",
        &shipped
            .replace("dev_tokens = true", "dev_tokens = false")
            .replace(
                &format!("\"{ROOT}/certs-example/staff-jwks.json\""),
                &format!("\"{}\"", jwks.display()),
            ),
    );
    let out = mint(Some(&disabled), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("development tokens are disabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Trusting the development key without enabling development tokens: no start.
    let trusting = config_file(
        "trusting.toml",
        &shipped.replace("dev_tokens = true", "dev_tokens = false"),
    );
    let out = mint(Some(&trusting), &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trusts the published development"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A service manager token needs an agency from the config.
    let out = mint(None, &["--role", "service-manager"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agency"));

    // Enabled (the shipped config): the token opens the real binary's staff listener.
    let out = mint(None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let (port, ops, staff) = (free_port(), free_port(), free_port());
    let mut child = gateway()
        .arg("serve")
        .env("REFGW_LISTEN", format!("127.0.0.1:{port}"))
        .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{ops}"))
        .env("REFGW_STAFF_LISTEN", format!("127.0.0.1:{staff}"))
        .env("REFGW_DATABASE_URL", &db.url)
        .env("REFGW_AMQP_NAMESPACE", &namespace)
        .env("REFGW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(ops).await;
    let r = staff_client()
        .get(format!(
            "https://localhost:{staff}/v1/audit/events?action=config.loaded"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["items"][0]["actor"], "gateway");
    // The staff listener asks for no client certificate, and the agency listener still
    // insists on one.
    let r = staff_client()
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await;
    assert!(r.is_err(), "agency listener without a client certificate");
    let _ = child.kill();
    let _ = child.wait();
    broker.cleanup().await;
}

#[tokio::test]
async fn audit_export_writes_the_log_and_records_itself() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let run = |args: &[&str]| {
        gateway()
            .args(args)
            .env("REFGW_DATABASE_URL", &db.url)
            .env("USER", "ops-tester")
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    // The first export finds an empty log, and records itself.
    let first = run(&["audit", "export"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(first.stdout.is_empty());
    let second = run(&["audit", "export", "--format", "csv"]);
    let csv = String::from_utf8(second.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("seq,at,at_micros,actor,action,"));
    assert!(
        lines[1].contains(",operator:ops-tester,audit.exported,"),
        "{csv}"
    );
    // To a file, as NDJSON, whose hash links hold.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.ndjson");
    assert!(
        run(&["audit", "export", "--out", file.to_str().unwrap()])
            .status
            .success()
    );
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["prev_hash"], entries[0]["hash"]);
    let bad = run(&[
        "audit",
        "export",
        "--from",
        "2026-02-01",
        "--to",
        "2026-01-01",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--to must be after --from"));
    let verify = run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// `audit export --out FILE` writes through a temporary file renamed on success: when the
/// export fails (here the database holds no audit log), there is no empty or partial
/// FILE, an earlier FILE is left as it was, and no temporary file stays behind.
#[tokio::test]
async fn audit_export_to_a_file_leaves_nothing_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let unmigrated = format!("sqlite://{}/empty.db", dir.path().display());
    let run = |database_url: &str, out: &std::path::Path| {
        gateway()
            .args(["audit", "export", "--out", out.to_str().unwrap()])
            .env("REFGW_DATABASE_URL", database_url)
            .env("USER", "ops-tester")
            .output()
            .unwrap()
    };
    let fresh = dir.path().join("fresh.ndjson");
    let failed = run(&unmigrated, &fresh);
    assert_eq!(failed.status.code(), Some(2));
    assert!(!fresh.exists(), "no file left by a failed export");
    let earlier = dir.path().join("earlier.ndjson");
    std::fs::write(&earlier, "kept\n").unwrap();
    assert_eq!(run(&unmigrated, &earlier).status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&earlier).unwrap(), "kept\n");
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("empty.db"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(dir.path()), ["earlier.ndjson"]);

    // On success the file appears whole, and nothing else is left beside it.
    let db = TestDatabase::create(Backend::Sqlite).await;
    assert!(
        gateway()
            .arg("migrate")
            .env("REFGW_DATABASE_URL", &db.url)
            .status()
            .unwrap()
            .success()
    );
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("log.ndjson");
    let done = run(&db.url, &file);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(names(out.path()), ["log.ndjson"]);
    // The log held nothing before this export's own entry: a complete, empty export.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
    assert!(run(&db.url, &file).status.success());
    assert_eq!(names(out.path()), ["log.ndjson"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
}

#[tokio::test]
async fn serve_accepts_a_referral_and_stops_gracefully_on_sigterm() {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let migrate = gateway()
        .arg("migrate")
        .env("REFGW_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let (port, ops) = (free_port(), free_port());
    let child = gateway()
        .args(["--log-format", "json", "serve"])
        .env("REFGW_LISTEN", format!("127.0.0.1:{port}"))
        .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{ops}"))
        .env("REFGW_DATABASE_URL", &db.url)
        .env("REFGW_AMQP_NAMESPACE", &namespace)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let plain = staff_client();
    let started = Instant::now();
    loop {
        if let Ok(r) = plain
            .get(format!("http://127.0.0.1:{ops}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gateway did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = example_text("cmht");
    let r = agency_client("coventry-liaison")
        .post(format!("https://localhost:{port}/v1/referrals"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["referral_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "graceful stop exits 0");
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains(&id), "the referral id is logged");
    assert!(
        logs.lines().all(|l| l.starts_with('{')),
        "--log-format json gives JSON lines"
    );
    // The test's role is a superuser: the gateway says it could rewrite the audit log.
    assert!(
        logs.lines()
            .any(|l| l.contains("\"WARN\"") && l.contains("can alter the audit log")),
        "{logs}"
    );
    // Each signed checkpoint is logged as a line an operator can ship elsewhere, and
    // `audit verify --head` takes that line as it is.
    let checkpoint = logs
        .lines()
        .rfind(|l| l.contains("\"target\":\"audit_checkpoint\""))
        .expect("a checkpoint line at shutdown");
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("checkpoint.json");
    std::fs::write(&head, checkpoint).unwrap();
    let verify = gateway()
        .args(["audit", "verify", "--head"])
        .arg(&head)
        .env("REFGW_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{stdout}");
    assert!(stdout.contains("signed head "), "{stdout}");
    // No personal data from the example reaches the logs.
    for personal in [
        "Alex",
        "Example Street",
        "1991-06-14",
        "943 476 5919",
        "9434765919",
        "07700",
    ] {
        // (Checkpoint lines carry hashes and signatures, which can hold any digits.)
        let leaked = logs
            .lines()
            .filter(|l| !l.contains("\"target\":\"audit_checkpoint\""))
            .find(|l| l.contains(personal));
        assert!(leaked.is_none(), "{personal} leaked into logs: {leaked:?}");
    }
    let delivered = broker
        .take(
            &broker.topology.referral_queue("coventry-cmht"),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        delivered.len(),
        1,
        "accepted before the stop, delivered before exit"
    );
    broker.cleanup().await;
}

/// SIGKILL while the relay drains a backlog of 300 referrals; after a restart every
/// accepted referral is on its queue, and any duplicate carries the same message_id.
#[tokio::test]
async fn sigkill_while_publishing_loses_nothing() {
    use lapin::options::QueueDeclareOptions;
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let proxy = CuttableProxy::start("127.0.0.1:5672", false).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gw.db").display());
    let (port, ops) = (free_port(), free_port());
    let mut first = spawn_serve(port, ops, &db_url, &proxy.url(), &namespace);
    wait_ready(ops).await;

    let client = agency_client("coventry-liaison");
    let url = format!("https://localhost:{port}/v1/referrals");
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..15 {
        let batch = (0..20).map(|_| {
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(example_text("housing"))
                .send()
        });
        for r in futures_util::future::join_all(batch).await {
            let r = r.unwrap();
            assert_eq!(r.status(), 202);
            ids.insert(
                r.json::<serde_json::Value>().await.unwrap()["referral_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert_eq!(ids.len(), 300);

    // Let the broker in, and kill the gateway as soon as the first messages land.
    let queue = broker.topology.referral_queue("coventry-housing");
    proxy.set_up(true);
    let started = Instant::now();
    let on_queue_at_kill = loop {
        let q = broker
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        if q.message_count() > 0 {
            first.kill().unwrap();
            break q.message_count();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "relay never published"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = first.wait();

    // A fresh ops port: the killed process's may meanwhile be a client's ephemeral port.
    let ops = free_port();
    let second = spawn_serve(port, ops, &db_url, &proxy.url(), &namespace);
    wait_ready(ops).await;
    let messages = broker.take(&queue, 300, Duration::from_secs(60)).await;
    let received: Vec<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    let distinct: std::collections::BTreeSet<String> = received.iter().cloned().collect();
    assert_eq!(distinct, ids, "every accepted referral is on its queue");
    println!(
        "SIGKILL with {on_queue_at_kill} of 300 on the queue: {} messages after restart, {} duplicates (same message_id)",
        received.len(),
        received.len() - distinct.len()
    );
    let ready = readyz(ops).await.unwrap();
    assert_eq!(ready["outbox"]["pending"], 0);
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    let _ = tokio::task::spawn_blocking(move || second.wait_with_output()).await;
    broker.cleanup().await;
}

/// Keys fail closed: outside `profile = "development"` the published keys of
/// certs-example/ are refused (by content, under any file name or kid), every secret must
/// be configured, development tokens are off; with fresh keys from `certs init` the
/// gateway starts.
#[tokio::test]
async fn production_profile_refuses_published_keys_and_starts_with_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |text: &str| {
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, text).unwrap();
        let out = gateway()
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let shipped = shipped_config_text();
    assert!(shipped.contains("profile = \"development\"\n"));
    let production = shipped.replace("profile = \"development\"\n", "");

    // The shipped keys under the production profile: every one named.
    let (code, stderr) = serve(&production);
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "tls.ca",
        "tls.cert",
        "tls.key",
        "audit.signing_key",
        "storage.payload_key_file",
        "audit.person_key_secret_file",
        "staff.dev_tokens",
        "staff.jwks_file",
    ] {
        assert!(
            stderr.contains(&format!("{key}: ")),
            "{key} not in {stderr}"
        );
    }

    // A copy of the signing key under another name is the same key.
    let copy = dir.path().join("my-signing.pem");
    std::fs::copy(root().join("certs-example/gateway-signing.key"), &copy).unwrap();
    let (_, stderr) = serve(&production.replace(
        &format!("{ROOT}/certs-example/gateway-signing.key"),
        &copy.display().to_string(),
    ));
    assert!(
        stderr.contains("audit.signing_key: ") && stderr.contains("development signing key"),
        "{stderr}"
    );

    // No secret falls back to a default.
    let without: String = production
        .lines()
        .filter(|l| {
            !l.starts_with("signing_key")
                && !l.starts_with("person_key_secret_file")
                && !l.starts_with("payload_key_file")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (code, stderr) = serve(&without);
    assert_eq!(code, Some(2));
    for key in [
        "audit.signing_key",
        "audit.person_key_secret_file",
        "storage.payload_key_file",
    ] {
        assert!(
            stderr.contains(&format!("{key}: is required")),
            "{key} not in {stderr}"
        );
    }

    // The development staff key under another kid, dev tokens off: refused, whatever
    // the profile.
    let jwks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("certs-example/staff-jwks.json")).unwrap(),
    )
    .unwrap();
    let renamed = jwks.to_string().replace(
        referral_gateway::staff_auth::tokens::DEV_KEY_ID,
        "idp-signing-2026",
    );
    let renamed_file = dir.path().join("idp-jwks.json");
    std::fs::write(&renamed_file, renamed).unwrap();
    let (code, stderr) = serve(
        &shipped
            .replace("dev_tokens = true", "dev_tokens = false")
            .replace(
                &format!("{ROOT}/certs-example/staff-jwks.json"),
                &renamed_file.display().to_string(),
            ),
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("staff.jwks_file: trusts the published development"),
        "{stderr}"
    );

    // Fresh keys from `certs init`: the production profile starts.
    let fresh = dir.path().join("fresh");
    let out = gateway()
        .args(["certs", "init", "--out"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, idp_jwks) = referral_gateway::staff_auth::tokens::generate_dev_key().unwrap();
    let idp_file = dir.path().join("fresh-idp-jwks.json");
    std::fs::write(
        &idp_file,
        idp_jwks.replace(
            referral_gateway::staff_auth::tokens::DEV_KEY_ID,
            "idp-key-1",
        ),
    )
    .unwrap();
    let mut text = production
        .replace("dev_tokens = true", "dev_tokens = false")
        .replace(
            &format!("{ROOT}/certs-example/staff-jwks.json"),
            &idp_file.display().to_string(),
        )
        .replace(
            &format!("{ROOT}/certs-example/"),
            &format!("{}/", fresh.display()),
        );
    text = text.replace(
        &format!("dev_signing_key = \"{}/staff-dev.key\"\n", fresh.display()),
        "",
    );
    let file = dir.path().join("production.toml");
    std::fs::write(&file, &text).unwrap();
    let db = TestDatabase::create(Backend::Sqlite).await;
    // The gateway declares its topology in this namespace: removed afterwards (also if
    // the test fails), after the gateway has stopped, so that nothing declares it again.
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let (port, ops) = (free_port(), free_port());
    let mut child = gateway()
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .env("REFGW_LISTEN", format!("127.0.0.1:{port}"))
        .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{ops}"))
        .env("REFGW_DATABASE_URL", &db.url)
        .env("REFGW_AMQP_NAMESPACE", &namespace)
        .env("REFGW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(ops).await;
    let _ = child.kill();
    let _ = child.wait();
    broker.cleanup().await;
}

/// `config check` runs the start-up checks offline: every problem (exit 2), or valid
/// with the warnings an operator should read (agreements wider than their recipients).
#[test]
fn config_check_reports_problems_and_warnings_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, text).unwrap();
        let out = gateway()
            .arg("--config")
            .arg(&file)
            .args(["config", "check"])
            .env("REFGW_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let shipped = shipped_config_text();
    let (code, stdout, _) = check(&shipped);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("the configuration is valid (5 agencies, 2 sharing agreements"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning:"), "{stdout}");

    let wide = shipped.replace(
        "areas = [\"coventry\"]",
        "areas = [\"coventry\", \"warwickshire\"]",
    );
    let (code, stdout, _) = check(&wide);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "warning: sharing agreement 'coventry-ld-health-2026' covers service type(s) cmht, iapt, substance_misuse in area 'warwickshire'"
        ),
        "{stdout}"
    );

    let (code, _, stderr) = check(&shipped.replace("profile = \"development\"\n", ""));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tls.ca: "), "{stderr}");
}

/// `reload` signals only a gateway: a pid (file) naming another program is refused, and
/// that program is left running.
#[test]
fn reload_refuses_a_pid_that_is_not_a_gateway() {
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let out = gateway()
        .arg("--config")
        .arg(root().join("config/gateway.toml"))
        .args(["reload", "--pid", &other.id().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("runs sleep, not referral-gateway")
            && stderr.contains("nothing was signalled"),
        "{stderr}"
    );
    assert!(other.try_wait().unwrap().is_none(), "sleep was signalled");
    // Group ids and init are never signalled (kill(-1) would reach every process).
    for pid in ["--pid=-1", "--pid=0", "--pid=1"] {
        let out = gateway()
            .arg("--config")
            .arg(root().join("config/gateway.toml"))
            .args(["reload", pid])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{pid}: {stderr}");
        assert!(
            stderr.contains("cannot be the gateway's"),
            "{pid}: {stderr}"
        );
    }
    let _ = other.kill();
    let _ = other.wait();
}

/// `certs issue` and `certs expiring` need only the agency registry: they run where the
/// scheme CA's key is, with the production configuration (whose secrets are systemd
/// credentials) and none of the gateway's credentials present.
#[test]
fn certs_issue_runs_without_the_gateways_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("issued");
    let output = gateway()
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("--config")
        .arg(root().join("deploy/gateway.production.toml"))
        .args(["certs", "issue", "--ca-cert"])
        .arg(root().join("certs-example/ca.crt"))
        .arg("--ca-key")
        .arg(root().join("certs-example/ca.key"))
        .args(["--agency", "coventry-cmht", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.join("coventry-cmht.crt").is_file());
    let expiring = gateway()
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("--config")
        .arg(root().join("deploy/gateway.production.toml"))
        .args(["certs", "expiring", "--dir"])
        .arg(&out)
        .args(["--days", "3650"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&expiring.stdout);
    assert!(stdout.contains("coventry-cmht  expires"), "{stdout}");
}
