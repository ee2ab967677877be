//! Configuration reload without a restart: a reload that registers an agency (and an
//! agreement) lets it submit at once, its new recipient's queue declared and delivered
//! to; a broken configuration is refused whole, every problem reported, the one in
//! force kept; a request in flight finishes under the configuration it started with;
//! each applied reload is audited with what changed, and counted; a setting that needs a
//! restart is reported and kept; a reload whose audit entry cannot be written changes
//! nothing.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use referral_gateway::config::Config;
use referral_gateway::reload::{FileWithEnv, ReloadOutcome};
use serde_json::json;

use crate::common::*;

/// The shipped configuration plus Warwickshire: a liaison team (holding the CA-signed
/// "unregistered" example certificate), its CMHT, a permission and an agreement.
fn with_warwickshire(base: &str) -> String {
    let pin = unregistered_pin();
    base.to_owned()
        + &format!(
            r#"
[[agencies]]
id = "warwickshire-liaison"
name = "Warwickshire Liaison and Diversion Service"
service_type = "liaison"
area = "warwickshire"
role = "sender"
certificate = {{ sha256 = "{pin}" }}

[[agencies]]
id = "warwickshire-cmht"
name = "Warwickshire Community Mental Health Team"
service_type = "cmht"
area = "warwickshire"
role = "receiver"
certificate = {{ san_uri = "urn:referral-gateway:agency:warwickshire-cmht" }}

[[permissions]]
sender = "warwickshire-liaison"
service_types = ["cmht"]
areas = ["warwickshire"]

[[sharing_agreements]]
id = "warwickshire-ld-health-2026"
title = "Warwickshire liaison and diversion: referrals to mental health services"
purpose = "Referral of people in contact with the criminal justice system to community mental health services"
senders = ["warwickshire-liaison"]
recipient_service_types = ["cmht"]
areas = ["warwickshire"]
lawful_basis = "UK GDPR Art. 6(1)(e) public task; Art. 9(2)(h) health or social care"
categories = ["identity", "contact", "health", "risk", "criminal_justice"]
on_excess = "remove"
effective_from = "2026-01-01"
"#
        )
}

fn warwickshire_referral() -> String {
    let mut doc = example("cmht");
    doc["destination"] = json!({"service_type": "cmht", "area": "warwickshire"});
    doc.to_string()
}

/// `refgw_<name>` from the ops listener's metrics.
async fn metric(app: &TestApp, line_prefix: &str) -> f64 {
    let text = app.ops_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map(|v| v.trim().parse::<f64>().unwrap())
        .unwrap_or_else(|| panic!("no {line_prefix} in {text}"))
}

async fn applied(app: &TestApp) -> ReloadOutcome {
    app.reloader.as_ref().expect("reloadable").reload().await
}

async fn adding_an_agency_and_agreement_needs_no_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let shipped = shipped_config_text();
    std::fs::write(&file, &shipped).unwrap();
    let db = TestDatabase::create(backend).await;
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let adjust = {
        let namespace = namespace.clone();
        move |config: &mut Config| {
            adjust_for_test(config);
            adjust_for_delivery(config, AMQP_URL, &namespace);
        }
    };
    let mut config = Config::load(&file, &test_env(&db.url)).unwrap();
    adjust(&mut config);
    let source = FileWithEnv {
        path: file.clone(),
        env: test_env(&db.url),
        adjust: Box::new(adjust),
    };
    let app = TestApp::start_reloadable(config, db, Box::new(source)).await;
    assert_eq!(metric(&app, "refgw_config_generation ").await, 1.0);

    // Not registered yet: the CA-signed certificate is refused with 403.
    let warwickshire = unregistered_client();
    let refused = post_referral(&warwickshire, &app, warwickshire_referral()).await;
    problem(refused, 403).await;

    // The operator registers Warwickshire and reloads.
    std::fs::write(&file, with_warwickshire(&shipped)).unwrap();
    let outcome = applied(&app).await;
    let ReloadOutcome::Applied {
        generation,
        changes,
        restart_needed,
        ..
    } = &outcome
    else {
        panic!("reload refused: {outcome:?}");
    };
    assert_eq!(*generation, 2);
    assert!(restart_needed.is_empty(), "{restart_needed:?}");
    assert_eq!(
        changes.agencies.added,
        ["warwickshire-cmht", "warwickshire-liaison"]
    );
    assert!(changes.agencies.removed.is_empty() && changes.agencies.changed.is_empty());
    assert_eq!(changes.agreements.added, ["warwickshire-ld-health-2026"]);
    assert!(!changes.sla && !changes.crls && !changes.schemas);

    // The same client (a new connection) submits now, under the new agreement, and the
    // referral reaches the new recipient's queue (declared by the relay on reload).
    let receipt = expect_json(
        post_referral(&unregistered_client(), &app, warwickshire_referral()).await,
        202,
    )
    .await;
    assert_eq!(receipt["sender"]["agency_id"], "warwickshire-liaison");
    assert_eq!(receipt["recipient"]["agency_id"], "warwickshire-cmht");
    assert_eq!(receipt["isa_id"], "warwickshire-ld-health-2026");
    app.wait_until_drained(Duration::from_secs(20)).await;
    let delivered = broker
        .take(
            &broker.topology.referral_queue("warwickshire-cmht"),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        header(&delivered[0], "referral_id").as_deref(),
        receipt["referral_id"].as_str()
    );
    assert_eq!(
        header(&delivered[0], "sender_agency").as_deref(),
        Some("warwickshire-liaison")
    );

    // The reload is audited: what changed, ids only.
    assert_eq!(app.count_action("config.reloaded").await, 1);
    let detail = reloaded_details(&app).await.remove(0);
    assert!(
        detail.contains(
            "generation 2; agencies added [warwickshire-cmht, warwickshire-liaison] removed [] changed []; agreements added [warwickshire-ld-health-2026] removed [] changed []"
        ),
        "{detail}"
    );
    assert!(
        detail.contains("sla unchanged; crls unchanged; schemas unchanged"),
        "{detail}"
    );
    assert_eq!(
        metric(&app, "refgw_config_reloads_total{outcome=\"applied\"} ").await,
        1.0
    );
    assert_eq!(metric(&app, "refgw_config_generation ").await, 2.0);

    // A broken configuration: refused whole, every problem listed, nothing swapped.
    let broken = with_warwickshire(&shipped)
        .replace("id = \"warwickshire-cmht\"", "id = \"Warwickshire CMHT\"")
        .replace(
            "senders = [\"warwickshire-liaison\"]",
            "senders = [\"warwickshire-nobody\"]",
        )
        .replace("crls = []", "crls = [\"/nonexistent/revoked.pem\"]");
    std::fs::write(&file, &broken).unwrap();
    let ReloadOutcome::Rejected { problems } = applied(&app).await else {
        panic!("a broken configuration was applied");
    };
    for needle in [
        "agencies[6].id: agency id must be",
        "warwickshire-nobody",
        "tls.crls: file '/nonexistent/revoked.pem' does not exist",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
    // The configuration in force is kept: Warwickshire still submits.
    expect_json(
        post_referral(&unregistered_client(), &app, warwickshire_referral()).await,
        202,
    )
    .await;
    assert_eq!(app.count_action("config.reloaded").await, 1);
    assert_eq!(
        metric(&app, "refgw_config_reloads_total{outcome=\"rejected\"} ").await,
        1.0
    );
    assert_eq!(metric(&app, "refgw_config_generation ").await, 2.0);

    // A request in flight finishes under the configuration it started with: Warwickshire
    // is removed while its submission's body is still arriving.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let body = warwickshire_referral().into_bytes();
    let (first, rest) = body.split_at(body.len() / 2);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]).chain(
        futures_util::stream::once(async move {
            let _ = released.await;
            Ok(rest)
        }),
    );
    let in_flight = tokio::spawn({
        let request = unregistered_client()
            .post(app.url("/v1/referrals"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream));
        async move { request.send().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&file, &shipped).unwrap();
    let ReloadOutcome::Applied { changes, .. } = applied(&app).await else {
        panic!("reload refused");
    };
    assert_eq!(
        changes.agencies.removed,
        ["warwickshire-cmht", "warwickshire-liaison"]
    );
    assert_eq!(changes.agreements.removed, ["warwickshire-ld-health-2026"]);
    let _ = release.send(());
    let response = in_flight.await.unwrap().expect("request completes");
    let receipt = expect_json(response, 202).await;
    assert_eq!(receipt["isa_id"], "warwickshire-ld-health-2026");
    // A new request is under the new configuration.
    problem(
        post_referral(&unregistered_client(), &app, warwickshire_referral()).await,
        403,
    )
    .await;
    let details = reloaded_details(&app).await;
    assert_eq!(details.len(), 2);
    assert!(
        details[1].contains(
            "generation 3; agencies added [] removed [warwickshire-cmht, warwickshire-liaison] changed []; agreements added [] removed [warwickshire-ld-health-2026]"
        ),
        "{details:?}"
    );

    // A setting that is not reloadable: reported as needing a restart, kept as it is,
    // while what is reloadable is applied.
    std::fs::write(
        &file,
        with_warwickshire(&shipped).replace("max_body_bytes = 262144", "max_body_bytes = 1024"),
    )
    .unwrap();
    let outcome = applied(&app).await;
    let ReloadOutcome::Applied {
        generation,
        restart_needed,
        changes,
        ..
    } = &outcome
    else {
        panic!("reload refused: {outcome:?}");
    };
    assert_eq!(
        (*generation, restart_needed.as_slice()),
        (4, ["server"].as_slice())
    );
    assert_eq!(changes.agreements.added, ["warwickshire-ld-health-2026"]);
    // The running body limit is still 256 KiB: a 2 KiB referral is accepted.
    expect_json(
        post_referral(&unregistered_client(), &app, warwickshire_referral()).await,
        202,
    )
    .await;
    let details = reloaded_details(&app).await;
    assert!(
        details[2].ends_with("; needs restart: server"),
        "{details:?}"
    );
    // The ops listener says which settings wait for a restart (what `reload` reports).
    let metrics = app.ops_text("/metrics").await;
    assert!(
        metrics.contains("refgw_config_restart_needed{setting=\"server\"} 1"),
        "{metrics}"
    );

    app.wait_until_drained(Duration::from_secs(20)).await;
    app.stop().await;
    delete_queues(&broker, &namespace).await;
    broker.cleanup().await;
}

on_both_backends!(adding_an_agency_and_agreement_needs_no_restart);

/// The `config.reloaded` entries' details, oldest first.
async fn reloaded_details(app: &TestApp) -> Vec<String> {
    use sqlx::Row;
    sqlx::query("SELECT detail FROM audit_log WHERE action = 'config.reloaded' ORDER BY seq")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

/// Removes the queues the relay declared for Warwickshire.
async fn delete_queues(broker: &Broker, namespace: &str) {
    let config = test_config(
        &with_warwickshire(&shipped_config_text()),
        "sqlite::memory:",
    );
    let topology = referral_gateway::delivery::topology::Topology::new(namespace, &config.registry);
    let _ = topology.delete(&broker.channel).await;
}

/// `config check` and start-up refuse what a reload refuses: the same checks.
#[test]
fn config_check_reports_every_problem_of_a_broken_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let broken = with_warwickshire(&shipped_config_text())
        .replace(
            "senders = [\"warwickshire-liaison\"]",
            "senders = [\"warwickshire-nobody\"]",
        )
        .replace("crls = []", "crls = [\"/nonexistent/revoked.pem\"]")
        .replace(
            &format!("{ROOT}/schemas\""),
            &format!("{}\"", Path::new("/nonexistent/schemas").display()),
        );
    std::fs::write(&file, broken).unwrap();
    let (code, out) = cli::output(
        cli::gateway()
            .arg("--config")
            .arg(&file)
            .args(["config", "check"]),
    );
    assert_eq!(code, Some(2), "{out}");
    for needle in [
        "warwickshire-nobody",
        "tls.crls: file '/nonexistent/revoked.pem' does not exist",
        "schemas.dir",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in {out}");
    }
}

/// Fail closed: when the `config.reloaded` entry cannot be written (here a trigger on
/// the PostgreSQL audit table refuses it), the reload changes nothing.
#[tokio::test]
async fn a_reload_that_cannot_be_audited_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let shipped = shipped_config_text();
    std::fs::write(&file, &shipped).unwrap();
    let db = TestDatabase::create(Backend::Postgres).await;
    let mut config = Config::load(&file, &test_env(&db.url)).unwrap();
    adjust_for_test(&mut config);
    let source = FileWithEnv {
        path: file.clone(),
        env: test_env(&db.url),
        adjust: Box::new(adjust_for_test),
    };
    let app = TestApp::start_reloadable(config, db, Box::new(source)).await;
    for sql in [
        "CREATE FUNCTION refuse_reload_entries() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no reload entries'; END $$",
        "CREATE TRIGGER refuse_reload_entries BEFORE INSERT ON audit_log FOR EACH ROW WHEN (NEW.action = 'config.reloaded') EXECUTE FUNCTION refuse_reload_entries()",
    ] {
        sqlx::query(sql).execute(app.store.pool()).await.unwrap();
    }
    std::fs::write(&file, with_warwickshire(&shipped)).unwrap();
    let ReloadOutcome::Rejected { problems } = applied(&app).await else {
        panic!("applied without its audit entry");
    };
    assert!(
        problems[0].contains("the config.reloaded audit entry cannot be written"),
        "{problems:?}"
    );
    // Still the configuration started with: Warwickshire is not registered.
    problem(
        post_referral(&unregistered_client(), &app, warwickshire_referral()).await,
        403,
    )
    .await;
    assert_eq!(metric(&app, "refgw_config_generation ").await, 1.0);
    assert_eq!(
        metric(&app, "refgw_config_reloads_total{outcome=\"rejected\"} ").await,
        1.0
    );
    // Other entries are still written (the 403 above was audited).
    assert_eq!(app.count_action("auth.refused").await, 1);
    assert_eq!(app.count_action("config.reloaded").await, 0);
    app.stop().await;
}

/// What a reload would otherwise get wrong without a word: another profile is refused
/// whole (the new file's checks were made under it); a new trust anchor (`tls.ca`
/// replaced, even at the same path) and the gateway's certificate replaced at the same
/// path are compared by content, reported as needing a restart and not put in force (the
/// CA the gateway started with still verifies clients, while CRLs still reload).
#[tokio::test]
async fn a_new_profile_is_refused_and_a_new_trust_anchor_or_certificate_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    for name in ["ca.crt", "server.crt", "server.key"] {
        std::fs::copy(root().join("certs-example").join(name), certs.join(name)).unwrap();
    }
    let text = shipped_config_text()
        .replace(
            &format!("{ROOT}/certs-example/ca.crt"),
            &certs.join("ca.crt").display().to_string(),
        )
        .replace(
            &format!("{ROOT}/certs-example/server.crt"),
            &certs.join("server.crt").display().to_string(),
        )
        .replace(
            &format!("{ROOT}/certs-example/server.key"),
            &certs.join("server.key").display().to_string(),
        );
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, &text).unwrap();
    let db = TestDatabase::create(Backend::Sqlite).await;
    // The source's adjustment turns into the production profile on demand (the file
    // itself cannot: the production profile refuses the published example keys).
    let production = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let adjust = {
        let production = production.clone();
        move |config: &mut Config| {
            adjust_for_test(config);
            if production.load(std::sync::atomic::Ordering::SeqCst) {
                config.profile = referral_gateway::security::published::Profile::Production;
            }
        }
    };
    let mut config = Config::load(&file, &test_env(&db.url)).unwrap();
    adjust_for_test(&mut config);
    let source = FileWithEnv {
        path: file.clone(),
        env: test_env(&db.url),
        adjust: Box::new(adjust),
    };
    let app = TestApp::start_reloadable(config, db, Box::new(source)).await;
    let restart = |outcome: ReloadOutcome| match outcome {
        ReloadOutcome::Applied { restart_needed, .. } => restart_needed,
        other => panic!("reload refused: {other:?}"),
    };

    // Another profile: refused, nothing changed.
    production.store(true, std::sync::atomic::Ordering::SeqCst);
    match applied(&app).await {
        ReloadOutcome::Rejected { problems } => assert!(
            problems.iter().any(|p| p.starts_with(
                "profile: the gateway runs the development profile and the file says production"
            )),
            "{problems:?}"
        ),
        other => panic!("another profile was applied: {other:?}"),
    }
    production.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(metric(&app, "refgw_config_generation ").await, 1.0);

    // The same CA rewritten (a comment, other line endings): the same trust anchors.
    let ca = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    std::fs::write(
        certs.join("ca.crt"),
        format!("# the scheme CA\n{}", ca.replace('\n', "\r\n")),
    )
    .unwrap();
    assert!(restart(applied(&app).await).is_empty());

    // Another CA at the same path: reported, and not trusted until a restart: the
    // agencies' certificates (from the CA the gateway started with) still work.
    let other = referral_gateway::security::certs::Authority::new("Another CA", 30).unwrap();
    std::fs::write(certs.join("ca.crt"), &other.cert_pem).unwrap();
    assert_eq!(restart(applied(&app).await), ["tls.ca"]);
    expect_json(
        post_referral(
            &agency_client("coventry-liaison"),
            &app,
            example_text("cmht"),
        )
        .await,
        202,
    )
    .await;
    // ... and at another path.
    std::fs::write(certs.join("ca.crt"), &ca).unwrap();
    let moved = certs.join("ca-2027.crt");
    std::fs::write(&moved, &ca).unwrap();
    std::fs::write(
        &file,
        text.replace(
            &certs.join("ca.crt").display().to_string(),
            &moved.display().to_string(),
        ),
    )
    .unwrap();
    assert_eq!(restart(applied(&app).await), ["tls.ca"]);
    std::fs::write(&file, &text).unwrap();
    assert!(restart(applied(&app).await).is_empty());

    // The gateway's own certificate renewed in place: named as needing a restart, at
    // every reload until then (the running one is still the old one).
    let cert = std::fs::read_to_string(certs.join("server.crt")).unwrap();
    std::fs::write(certs.join("server.crt"), format!("# renewed\n{cert}")).unwrap();
    assert_eq!(restart(applied(&app).await), ["tls.cert", "tls.key"]);
    assert_eq!(restart(applied(&app).await), ["tls.cert", "tls.key"]);
    let details = reloaded_details(&app).await;
    assert!(
        details
            .last()
            .unwrap()
            .ends_with("; needs restart: tls.cert, tls.key"),
        "{details:?}"
    );
    expect_json(
        post_referral(
            &agency_client("coventry-liaison"),
            &app,
            example_text("cmht"),
        )
        .await,
        202,
    )
    .await;
    app.stop().await;
}
