//! Submitting and reading referrals over real mTLS, on SQLite and on PostgreSQL.

use crate::common::*;
use serde_json::{Value, json};

async fn each_service_type_is_accepted_and_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = agency_client("coventry-liaison");
    for (service_type, recipient) in SERVICE_TYPES {
        let body = example_text(service_type);
        let response = client
            .post(app.url("/v1/referrals"))
            .header("content-type", "application/json")
            .header("x-correlation-id", format!("test-{service_type}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{service_type}");
        assert_eq!(
            response.headers()["x-correlation-id"],
            format!("test-{service_type}").as_str()
        );
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let receipt: Value = response.json().await.unwrap();
        let id = receipt["referral_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok());
        assert_eq!(location, format!("/v1/referrals/{id}"));
        assert_eq!(receipt["status"], "received");
        assert_eq!(receipt["sender"]["agency_id"], "coventry-liaison");
        assert_eq!(receipt["recipient"]["agency_id"], recipient);
        assert_eq!(receipt["recipient"]["service_type"], service_type);
        assert_eq!(receipt["correlation_id"], format!("test-{service_type}"));
        assert!(
            time::OffsetDateTime::parse(
                receipt["received_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
        // What is stored and delivered: the canonical serialisation of the checked
        // document (never the caller's bytes), and for housing without the health fields
        // the housing agreement does not cover.
        let mut doc: Value = serde_json::from_str(&body).unwrap();
        if service_type == "housing" {
            assert_eq!(receipt["withheld"], serde_json::json!(["/person/gp"]));
            assert_eq!(receipt["isa_id"], "coventry-ld-housing-duty-to-refer-2026");
            doc["person"].as_object_mut().unwrap().remove("gp");
        } else {
            assert_eq!(receipt["withheld"], serde_json::json!([]));
            assert_eq!(receipt["isa_id"], "coventry-ld-health-2026");
        }
        let delivered = doc.to_string();
        assert_ne!(
            delivered, body,
            "the example is pretty-printed; the payload is not"
        );
        let expected_sha = hex::encode(referral_gateway::security::digest::sha256(
            delivered.as_bytes(),
        ));
        assert_eq!(receipt["payload_sha256"], expected_sha.as_str());
        assert_eq!(
            receipt["signed_receipt"]["receipt"]["isa_id"],
            receipt["isa_id"]
        );

        // Durable: the referral row (payload byte for byte) and its pending outbox row.
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT payload, payload_sha256, status, recipient_agency, correlation_id FROM referrals WHERE id = $1",
        )
        .bind(id.to_owned())
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        // Encrypted at rest; the store opens it again byte for byte.
        let stored: String = row.get("payload");
        assert_ne!(stored, body);
        assert!(!stored.contains("Example Street") && !stored.contains("Alex"));
        let id_typed = referral_gateway::domain::ReferralId::parse(id).unwrap();
        assert_eq!(
            app.store
                .referral_payload(id_typed)
                .await
                .unwrap()
                .as_deref(),
            Some(delivered.as_str())
        );
        assert_eq!(row.get::<String, _>("payload_sha256"), expected_sha);
        assert_eq!(row.get::<String, _>("status"), "received");
        assert_eq!(row.get::<String, _>("recipient_agency"), recipient);
        assert_eq!(
            row.get::<String, _>("correlation_id"),
            format!("test-{service_type}")
        );
        let outbox = sqlx::query(
            "SELECT routing_key, exchange, message_type, published_at FROM outbox WHERE referral_id = $1",
        )
        .bind(id.to_owned())
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            outbox[0].get::<String, _>("routing_key"),
            format!("{service_type}.coventry.{recipient}")
        );
        assert_eq!(outbox[0].get::<String, _>("exchange"), "referrals");
        assert_eq!(outbox[0].get::<String, _>("message_type"), "referral");
        assert!(outbox[0].get::<Option<i64>, _>("published_at").is_none());
    }
    app.stop().await;
}

on_both_backends!(each_service_type_is_accepted_and_stored);

async fn schema_failures_name_their_pointers(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let mut missing = example("cmht");
    missing["person"]
        .as_object_mut()
        .unwrap()
        .remove("date_of_birth");
    missing.as_object_mut().unwrap().remove("reason");
    let body = app
        .submit_as("coventry-liaison", missing.to_string(), 422)
        .await;
    assert_eq!(
        body["type"],
        "urn:referral-gateway:problem:schema-validation"
    );
    assert_eq!(pointers(&body), ["/person/date_of_birth", "/reason"]);
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["keyword"] == "required")
    );

    let mut bad_nhs = example("iapt");
    bad_nhs["person"]["nhs_number"] = json!("943 476 5918");
    let body = app
        .submit_as("coventry-liaison", bad_nhs.to_string(), 422)
        .await;
    assert_eq!(pointers(&body), ["/person/nhs_number"]);
    assert!(
        !body.to_string().contains("5918"),
        "the value is not echoed"
    );

    // A placeholder passes modulus 11 but names nobody: refused like a wrong number, so
    // it can never merge different people under one person key.
    let mut placeholder = example("iapt");
    placeholder["person"]["nhs_number"] = json!("000 000 0000");
    let body = app
        .submit_as("coventry-liaison", placeholder.to_string(), 422)
        .await;
    assert_eq!(pointers(&body), ["/person/nhs_number"]);
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("placeholder"))
    );

    let mut no_consent = example("housing");
    no_consent["consent"] = json!({
        "given": false,
        "recorded_by": "J. Practitioner",
        "recorded_at": "2026-11-23T10:15:00Z",
        "sharing_without_consent": {
            "justification": "prevention_of_crime",
            "lawful_basis": "DPA 2018 Sch. 1 para 10",
            "authorised_by": "Duty inspector"
        }
    });
    let body = app
        .submit_as("coventry-liaison", no_consent.to_string(), 422)
        .await;
    assert_eq!(pointers(&body), ["/consent/given"]);

    let mut unknown = example("substance_misuse");
    unknown["favourite_colour"] = json!("blue");
    unknown["person"]["name"]["nickname"] = json!("Al");
    unknown["service_details"]["shoe_size"] = json!(9);
    let body = app
        .submit_as("coventry-liaison", unknown.to_string(), 422)
        .await;
    assert_eq!(
        pointers(&body),
        [
            "/favourite_colour",
            "/person/name/nickname",
            "/service_details/shoe_size"
        ]
    );

    // Nothing refused was stored.
    use sqlx::Row;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM referrals")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    app.stop().await;
}

on_both_backends!(schema_failures_name_their_pointers);

async fn idempotent_retries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = agency_client("coventry-liaison");
    let body = example_text("cmht");
    let send = |body: String, key: &'static str| {
        client
            .post(app.url("/v1/referrals"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let first = send(body.clone(), "key-1").await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let retry = send(body.clone(), "key-1").await.unwrap();
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first, "a retry returns the original receipt");

    let mut other = example("cmht");
    other["priority"] = json!("emergency");
    let conflict = problem(send(other.to_string(), "key-1").await.unwrap(), 409).await;
    assert_eq!(
        conflict["type"],
        "urn:referral-gateway:problem:idempotency-conflict"
    );

    // Many concurrent retries with one new key: exactly one referral.
    let results = futures_util::future::join_all((0..8).map(|_| send(body.clone(), "key-2"))).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in results {
        let r = r.unwrap();
        assert_eq!(r.status(), 202);
        ids.insert(
            r.json::<Value>().await.unwrap()["referral_id"]
                .clone()
                .to_string(),
        );
    }
    assert_eq!(ids.len(), 1, "concurrent retries share one referral");

    use sqlx::Row;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM referrals")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM outbox")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // The same key from another sender is another key (none here may send; the scope is per sender).
    let cmht = agency_client("coventry-cmht");
    let r = cmht
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .header("idempotency-key", "key-1")
        .body(body)
        .send()
        .await
        .unwrap();
    let refused = problem(r, 403).await;
    assert_eq!(
        refused["type"],
        "urn:referral-gateway:problem:not-permitted"
    );
    app.stop().await;
}

on_both_backends!(idempotent_retries);

async fn visibility(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receipt = app
        .submit_as("coventry-liaison", example_text("cmht"), 202)
        .await;
    let id = receipt["referral_id"].as_str().unwrap();

    for agency in ["coventry-liaison", "coventry-cmht"] {
        let view = app.view_as(agency, id, 200).await;
        assert_eq!(view["referral_id"], id);
        assert_eq!(view["status"], "received");
        assert_eq!(view["recipient"]["agency_id"], "coventry-cmht");
        assert_eq!(view["payload_sha256"], receipt["payload_sha256"]);
        assert!(
            view.get("person").is_none(),
            "status carries no personal data"
        );
    }
    let third = app.view_as("coventry-iapt", id, 404).await;
    let missing = app
        .view_as("coventry-liaison", &uuid::Uuid::now_v7().to_string(), 404)
        .await;
    assert_eq!(
        third, missing,
        "a third agency cannot tell that the referral exists"
    );
    app.view_as("coventry-liaison", "not-a-uuid", 404).await;
    app.stop().await;
}

on_both_backends!(visibility);

#[tokio::test]
async fn body_limits_media_types_and_malformed_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = agency_client("coventry-liaison");

    let huge = format!("{{\"reason\": \"{}\"}}", "x".repeat(300 * 1024));
    let body = app.submit_as("coventry-liaison", huge, 413).await;
    assert_eq!(
        body["type"],
        "urn:referral-gateway:problem:payload-too-large"
    );

    // Chunked (no Content-Length) is cut off at the limit too.
    let stream =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 8 * 1024])));
    let r = client
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    problem(r, 413).await;

    for content_type in [
        Some("text/plain"),
        Some("application/xml"),
        Some("application/json; charset=latin1"),
        None,
    ] {
        let mut req = client
            .post(app.url("/v1/referrals"))
            .body(example_text("cmht"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let body = problem(req.send().await.unwrap(), 415).await;
        assert_eq!(
            body["type"],
            "urn:referral-gateway:problem:unsupported-media-type"
        );
    }
    let ok = client
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json; charset=UTF-8")
        .body(example_text("cmht"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);

    let body = app
        .submit_as("coventry-liaison", "{\"priority\": ", 400)
        .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:malformed-json");
    let body = app.submit_as("coventry-liaison", "[1, 2]", 422).await;
    assert_eq!(pointers(&body), [""]);

    let r = client
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .header("idempotency-key", "")
        .body(example_text("cmht"))
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    let r = client
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .header("x-correlation-id", "has spaces in it")
        .body(example_text("cmht"))
        .send()
        .await
        .unwrap();
    let body = problem(r, 400).await;
    assert_eq!(
        body["type"],
        "urn:referral-gateway:problem:bad-correlation-id"
    );
    // Counted under its route, though refused before the router ran.
    let r = client
        .get(app.url(&format!("/v1/referrals/{}", uuid::Uuid::now_v7())))
        .header("x-correlation-id", "has spaces in it")
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    let metrics = app.ops_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"refgw_http_requests_total{route="/v1/referrals/{id}",method="GET",status="400"} 1"#
        ),
        "{metrics}"
    );

    let r = client
        .delete(app.url("/v1/referrals"))
        .send()
        .await
        .unwrap();
    problem(r, 405).await;
    let r = client.get(app.url("/v2/nothing")).send().await.unwrap();
    problem(r, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn routing_and_permissions() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let mut nowhere = example("cmht");
    nowhere["destination"] = json!({"service_type": "cmht", "area": "atlantis"});
    let body = app
        .submit_as("coventry-liaison", nowhere.to_string(), 422)
        .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:unroutable");
    assert!(body["detail"].as_str().unwrap().contains("'atlantis'"));

    let mut unknown_agency = example("cmht");
    unknown_agency["destination"] = json!({"agency_id": "nobody-here"});
    let body = app
        .submit_as("coventry-liaison", unknown_agency.to_string(), 422)
        .await;
    assert!(body["detail"].as_str().unwrap().contains("nobody-here"));

    let mut to_sender = example("cmht");
    to_sender["destination"] = json!({"agency_id": "coventry-liaison"});
    app.submit_as("coventry-liaison", to_sender.to_string(), 422)
        .await;

    // An explicit agency id picks that agency's overlay.
    let mut explicit = example("iapt");
    explicit["destination"] = json!({"agency_id": "coventry-iapt"});
    let receipt = app
        .submit_as("coventry-liaison", explicit.to_string(), 202)
        .await;
    assert_eq!(
        receipt["schema_id"],
        "https://referral-gateway.example/schemas/iapt.v1.json"
    );

    // Missing destination: schema errors, not a routing guess.
    let mut no_dest = example("cmht");
    no_dest.as_object_mut().unwrap().remove("destination");
    let body = app
        .submit_as("coventry-liaison", no_dest.to_string(), 422)
        .await;
    assert_eq!(pointers(&body), ["/destination"]);

    // A receiver is not a sender.
    let body = app
        .submit_as("coventry-cmht", example_text("cmht"), 403)
        .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not registered as a sender")
    );
    app.stop().await;

    // A sender limited to CMHT may not refer to IAPT.
    let limited = shipped_config_text().replace(
        "service_types = [\"cmht\", \"iapt\", \"housing\", \"substance_misuse\"]",
        "service_types = [\"cmht\"]",
    );
    let app = TestApp::spawn_with(Backend::Sqlite, &limited).await;
    let body = app
        .submit_as("coventry-liaison", example_text("iapt"), 403)
        .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:not-permitted");
    assert!(body["detail"].as_str().unwrap().contains("'iapt'"));
    app.submit_as("coventry-liaison", example_text("cmht"), 202)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let plain = staff_client();
    let r = plain
        .get(format!("{}/healthz", app.ops_base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = plain
        .get(format!("{}/readyz", app.ops_base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["checks"]["database"], "ok");
    // The ops listener serves no referral routes.
    let r = plain
        .post(format!("{}/v1/referrals", app.ops_base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The agency listener answers probes too, to any scheme certificate.
    let r = agency_client("coventry-iapt")
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-correlation-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "a correlation id is generated when missing"
    );
    app.stop().await;
}

/// Early answers (404, 405, 413, 415, a bad header) reach HTTP/2 clients that are still
/// sending the body: curl, a real third-party client, sees the problem document every
/// time rather than a stream reset.
#[tokio::test]
async fn early_refusals_reach_http2_clients() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, "a".repeat(300_000)).unwrap();
    let big_arg = format!("@{}", big.display());
    let agencies = root().join("certs-example/agencies");
    let cases: Vec<(u16, Vec<&str>, String)> = vec![
        (
            415,
            vec!["-H", "Content-Type: text/plain", "-d", "{}"],
            app.url("/v1/referrals"),
        ),
        (
            405,
            vec![
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/json",
                "-d",
                "{}",
            ],
            app.url("/v1/referrals"),
        ),
        (
            404,
            vec!["-H", "Content-Type: application/json", "-d", "{}"],
            app.url("/v1/nothing-here"),
        ),
        (
            413,
            vec![
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &big_arg,
            ],
            app.url("/v1/referrals"),
        ),
        (
            400,
            vec![
                "-H",
                "Content-Type: application/json",
                "-H",
                "Idempotency-Key: a b",
                "-d",
                "{}",
            ],
            app.url("/v1/referrals"),
        ),
        (
            400,
            vec![
                "-H",
                "X-Correlation-ID: no spaces allowed",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &big_arg,
            ],
            app.url("/v1/referrals"),
        ),
        // The staff listener: no token, refused before the body is read.
        (
            401,
            vec![
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &big_arg,
            ],
            app.staff_url("/v1/audit/disclosures"),
        ),
    ];
    for (status, args, url) in &cases {
        for attempt in 0..10 {
            let mut curl = std::process::Command::new("curl");
            curl.args([
                "-s",
                "--http2",
                "--max-time",
                "20",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
            ])
            .arg("--cacert")
            .arg(root().join("certs-example/ca.crt"))
            .arg("--cert")
            .arg(agencies.join("coventry-liaison.crt"))
            .arg("--key")
            .arg(agencies.join("coventry-liaison.key"))
            .args(args)
            .arg(url);
            // Off the runtime thread: the gateway under test runs on it.
            let out = tokio::task::spawn_blocking(move || curl.output())
                .await
                .unwrap()
                .expect("curl is installed (used as a real third-party HTTP/2 client)");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.ends_with(&status.to_string())
                    && text.contains("urn:referral-gateway:problem:"),
                "{url} attempt {attempt}: expected {status} with a problem document, got {text:?} (curl exit {:?})",
                out.status.code()
            );
        }
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Hostile bodies (security review): duplicate member names, NUL, caller text in the log.

/// A housing referral whose `person` and `needs` appear twice: the first copies carry a
/// GP, a mental-health need and an unknown property (what the housing agreement
/// withholds), the second copies are clean. serde_json alone would keep the clean copies
/// for checking while the raw bytes went to the housing authority.
fn smuggling_body() -> String {
    let clean = example("housing");
    let mut dirty_person = clean["person"].clone();
    dirty_person["gp"] = json!({"practice": "Example Surgery", "ods_code": "A12345"});
    dirty_person["extra"] = json!("not in the schema");
    let mut clean_person = clean["person"].clone();
    clean_person.as_object_mut().unwrap().remove("gp");
    let dirty_needs = json!([{"type": "mental_health", "summary": "Psychosis."}]);
    let mut members: Vec<String> = Vec::new();
    for (name, value) in clean.as_object().unwrap() {
        match name.as_str() {
            "person" => members.push(format!("\"person\": {dirty_person}")),
            "needs" => members.push(format!("\"needs\": {dirty_needs}")),
            _ => members.push(format!("{}: {value}", Value::String(name.clone()))),
        }
    }
    members.push(format!("\"person\": {clean_person}"));
    members.push(format!("\"needs\": {}", clean["needs"]));
    format!("{{{}}}", members.join(", "))
}

async fn duplicate_members_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // serde_json on its own accepts the smuggling body (keeping the clean copies).
    let lenient: Value = serde_json::from_str(&smuggling_body()).unwrap();
    assert!(lenient["person"].get("gp").is_none());

    let body = app
        .submit_as("coventry-liaison", smuggling_body(), 400)
        .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:malformed-json");
    assert_eq!(body["errors"][0]["pointer"], "/person");
    assert_eq!(body["errors"][0]["keyword"], "duplicate-member");
    let (action, detail) = app.last_audit().await;
    assert_eq!(action, "referral.refused");
    assert_eq!(detail, "malformed-json:duplicate-member: /person");

    // At any depth, named by its pointer; a caller's own member name is never audited.
    let mut doc = example("cmht");
    doc["person"]["name"] = json!({"given": "Alex", "family": "Example"});
    let text = doc.to_string().replace(
        "\"family\":\"Example\"",
        "\"family\":\"Example\",\"family\":\"Other\"",
    );
    let body = app.submit_as("coventry-liaison", text, 400).await;
    assert_eq!(pointers(&body), ["/person/name/family"]);
    let text = doc.to_string().replace(
        "\"family\":\"Example\"",
        "\"family\":\"Example\",\"Alex 9434765919\":1,\"Alex 9434765919\":2",
    );
    let body = app.submit_as("coventry-liaison", text, 400).await;
    assert_eq!(pointers(&body), ["/person/name/Alex 9434765919"]);
    let (_, detail) = app.last_audit().await;
    assert_eq!(detail, "malformed-json:duplicate-member: /person/name/*");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM referrals WHERE id <> $1", "")
            .await,
        0
    );

    // Events too.
    let id = app.submit(example_text("cmht")).await;
    let response = agency_client("coventry-cmht")
        .post(app.url(&format!("/v1/referrals/{id}/events")))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"event_id": "{}", "type": "acknowledged", "type": "declined"}}"#,
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    let body = problem(response, 400).await;
    assert_eq!(pointers(&body), ["/type"]);
    app.stop().await;
}
on_both_backends!(duplicate_members_are_refused);

async fn stored_payload_is_the_checked_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Members in another order, other whitespace, escapes: the stored, hashed and
    // delivered payload is the canonical serialisation of what was checked.
    let doc = example("cmht");
    let mut members: Vec<(String, Value)> = doc
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    members.reverse();
    let text = format!(
        "{{\n  {} }}",
        members
            .iter()
            .map(|(k, v)| format!("\"{k}\" :\t{}", serde_json::to_string_pretty(v).unwrap()))
            .collect::<Vec<_>>()
            .join(",\n  ")
    )
    .replace("Example", "\\u0045xample");
    let receipt = app.submit_as("coventry-liaison", text, 202).await;
    let canonical = doc.to_string();
    assert_eq!(
        receipt["payload_sha256"],
        hex::encode(referral_gateway::security::digest::sha256(
            canonical.as_bytes()
        ))
    );
    let id = referral_gateway::domain::ReferralId::parse(receipt["referral_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        app.store.referral_payload(id).await.unwrap().as_deref(),
        Some(canonical.as_str())
    );
    app.stop().await;
}
on_both_backends!(stored_payload_is_the_checked_document);

async fn nul_characters_are_refused_and_the_refusal_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let text = example("cmht")
        .to_string()
        .replacen("\"Alex\"", "\"Al\\u0000ex\"", 1);
    assert!(text.contains("\\u0000"));
    let body = app.submit_as("coventry-liaison", text, 400).await;
    assert_eq!(body["errors"][0]["keyword"], "nul-character");
    assert_eq!(pointers(&body), ["/person/name/given"]);
    // On PostgreSQL a NUL used to make this audit write fail, unrecorded.
    let (action, detail) = app.last_audit().await;
    assert_eq!(action, "referral.refused");
    assert_eq!(detail, "malformed-json:nul-character: /person/name/given");
    app.stop().await;
}
on_both_backends!(nul_characters_are_refused_and_the_refusal_recorded);

async fn refusals_record_codes_never_caller_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let liaison = agency_client("coventry-liaison");
    // Free text where an area should be: refused by the schema before routing echoes it.
    let mut doc = example("cmht");
    doc["destination"] = json!({"service_type": "cmht", "area": "Alex Example 943 476 5919"});
    let body = app
        .submit_as("coventry-liaison", doc.to_string(), 422)
        .await;
    assert_eq!(pointers(&body), ["/destination/area"]);
    let (action, detail) = app.last_audit().await;
    assert_eq!(action, "referral.refused");
    assert_eq!(detail, "schema-validation: /destination/area");
    // A well-formed but unknown area: a fixed code, not the area.
    doc["destination"] = json!({"service_type": "cmht", "area": "alex-example-9434765919"});
    app.submit_as("coventry-liaison", doc.to_string(), 422)
        .await;
    let (_, detail) = app.last_audit().await;
    assert_eq!(detail, "unroutable:no-agency");

    // Thousands of unknown members within the size limit: the answer lists the first 100
    // problems, the audit entry 20 pointers, with the callers' names redacted.
    let mut doc = example("cmht");
    let person = doc["person"].as_object_mut().unwrap();
    for i in 0..18_000 {
        person.insert(format!("Alex{i}"), json!(1));
    }
    let text = doc.to_string();
    assert!(text.len() < 262_144, "{}", text.len());
    let response = post_referral(&liaison, &app, text).await;
    let bytes = response.content_length();
    let body = problem(response, 422).await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 100);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("18000 problem(s)")
    );
    assert!(bytes.unwrap_or(0) < 32 * 1024, "{bytes:?}");
    let (_, detail) = app.last_audit().await;
    assert!(detail.len() < 600, "{}", detail.len());
    assert!(!detail.contains("Alex"), "{detail}");
    assert!(detail.ends_with("(+17980 more)"), "{detail}");
    app.stop().await;
}
on_both_backends!(refusals_record_codes_never_caller_text);

#[tokio::test]
async fn repeated_idempotency_and_correlation_headers_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let liaison = agency_client("coventry-liaison");
    for (name, a, b) in [
        ("idempotency-key", "key-one", "key-two"),
        ("x-correlation-id", "corr-one", "corr-two"),
    ] {
        let response = liaison
            .post(app.url("/v1/referrals"))
            .header("content-type", "application/json")
            .header(name, a)
            .header(name, b)
            .body(example_text("cmht"))
            .send()
            .await
            .unwrap();
        let body = problem(response, 400).await;
        assert_eq!(
            body["type"],
            "urn:referral-gateway:problem:duplicate-header"
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM referrals WHERE id <> $1", "")
            .await,
        0
    );
    app.stop().await;
}

/// Fail closed: a refusal that cannot be written to the audit log is not answered as a
/// refusal (the caller retries; nothing goes unrecorded).
#[tokio::test]
async fn an_unwritable_refusal_entry_fails_the_request() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    let body = app
        .submit_as("coventry-liaison", "{\"not\": \"a referral\"}", 500)
        .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:internal");
    app.stop().await;
}

/// An agency that both sends and receives cannot refer to itself (the lifecycle needs
/// two parties): `422 unroutable`, audited with a fixed code, nothing stored or queued.
#[tokio::test]
async fn an_agency_cannot_refer_to_itself() {
    let text = shipped_config_text()
        .replace(
            "id = \"coventry-cmht\"\nname = \"Coventry Community Mental Health Team\"\nservice_type = \"cmht\"\narea = \"coventry\"\nrole = \"receiver\"",
            "id = \"coventry-cmht\"\nname = \"Coventry Community Mental Health Team\"\nservice_type = \"cmht\"\narea = \"coventry\"\nrole = \"both\"",
        )
        .replace(
            "[[permissions]]\nsender = \"coventry-liaison\"",
            "[[permissions]]\nsender = \"coventry-cmht\"\nservice_types = [\"cmht\"]\nareas = [\"coventry\"]\n\n[[permissions]]\nsender = \"coventry-liaison\"",
        );
    assert!(text.contains("sender = \"coventry-cmht\"") && text.contains("role = \"both\""));
    let app = TestApp::spawn_with(Backend::Sqlite, &text).await;
    for destination in [
        json!({"service_type": "cmht", "area": "coventry"}),
        json!({"agency_id": "coventry-cmht"}),
    ] {
        let mut doc = example("cmht");
        doc["destination"] = destination;
        let body = app.submit_as("coventry-cmht", doc.to_string(), 422).await;
        assert_eq!(
            body["type"], "urn:referral-gateway:problem:unroutable",
            "{body}"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("cannot send a referral to itself"),
            "{body}"
        );
        let (action, detail) = app.last_audit().await;
        assert_eq!(
            (action.as_str(), detail.as_str()),
            ("referral.refused", "unroutable:to-itself")
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM referrals WHERE id <> $1", "")
            .await,
        0
    );
    app.stop().await;
}

/// Headers are judged before the body is read, in the documented order: a compressed
/// body is refused with 415 (nothing is decompressed), a bad Idempotency-Key with 400
/// even when the body would also be too large.
#[tokio::test]
async fn header_checks_come_before_the_body() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let liaison = agency_client("coventry-liaison");
    for coding in ["gzip", "br", "identity, gzip"] {
        let response = liaison
            .post(app.url("/v1/referrals"))
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(example_text("cmht"))
            .send()
            .await
            .unwrap();
        let body = problem(response, 415).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("Content-Encoding"),
            "{body}"
        );
    }
    // `identity` is no coding at all.
    let response = liaison
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .body(example_text("cmht"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // A bad key and a body far over the limit: the key's 400.
    let response = liaison
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .header("idempotency-key", "a b")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    problem(response, 400).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM referrals WHERE id <> $1", "")
            .await,
        1
    );
    app.stop().await;
}
