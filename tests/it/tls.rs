//! The listeners' TLS. On the agency listener client certificates are mandatory and must
//! chain to the scheme CA, revoked ones are refused, and a valid certificate unknown to
//! the registry gets 403. Refused handshakes are counted on the agency and the staff
//! listener.

use std::path::Path;

use crate::common::*;
use referral_gateway::security::certs::{Authority, ClientName};
use serde_json::Value;

fn ca() -> std::path::PathBuf {
    root().join("certs-example/ca.crt")
}

async fn healthz(
    client: &reqwest::Client,
    app: &TestApp,
) -> Result<reqwest::Response, reqwest::Error> {
    client.get(app.url("/healthz")).send().await
}

#[tokio::test]
async fn no_client_certificate_fails_the_handshake() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let client = http_client(client_tls(&ca(), None, versions));
        let result = healthz(&client, &app).await;
        let error = result.expect_err("a request without a client certificate must fail");
        // Refused in the handshake (or as the first read after it, TLS 1.3), not a listener
        // that is not there.
        assert!(!error.is_timeout(), "{error:?}");
        assert!(
            !format!("{error:?}").contains("Connection refused"),
            "{error:?}"
        );
    }
    // The same listener serves a registered agency's certificate.
    let ok = healthz(&agency_client("coventry-liaison"), &app)
        .await
        .expect("a registered agency's certificate is served");
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let rogue = root().join("certs-example/rogue");
    let client = http_client(client_tls(
        &ca(),
        Some((rogue.join("client.crt"), rogue.join("client.key"))),
        rustls::ALL_VERSIONS,
    ));
    assert!(healthz(&client, &app).await.is_err());
    let r = client
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .body(example_text("cmht"))
        .send()
        .await;
    assert!(
        r.is_err(),
        "the rogue certificate carries a real sender's SAN, and still fails"
    );
    // The same listener serves the real sender's certificate.
    let ok = healthz(&agency_client("coventry-liaison"), &app)
        .await
        .expect("a registered agency's certificate is served");
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn unregistered_certificate_gets_403() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = unregistered_client();
    let r = post_referral(&client, &app, example_text("cmht")).await;
    let body = problem(r, 403).await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:unknown-agency");
    assert!(body["detail"].as_str().unwrap().contains("SHA-256"));
    let r = client
        .get(app.url(&format!("/v1/referrals/{}", uuid::Uuid::now_v7())))
        .send()
        .await
        .unwrap();
    problem(r, 403).await;
    app.stop().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_are_both_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = root().join("certs-example/agencies");
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let client = http_client(client_tls(
            &ca(),
            Some((
                dir.join("coventry-liaison.crt"),
                dir.join("coventry-liaison.key"),
            )),
            versions,
        ));
        let r = post_referral(&client, &app, example_text("housing")).await;
        assert_eq!(r.status(), 202);
    }
    app.stop().await;
}

/// The kind of each of two handshakes made with one client config (and so one resumption
/// store) to `port`, each followed by a request whose answer is read to the end (so TLS
/// 1.3 session tickets, sent after the handshake, have arrived).
async fn two_handshakes(port: u16, tls: rustls::ClientConfig) -> Vec<rustls::HandshakeKind> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut stream = connector.connect(name, tcp).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        kinds.push(stream.get_ref().1.handshake_kind().unwrap());
    }
    kinds
}

/// The agency listener resumes no TLS session, so every connection's client certificate
/// is verified in full (a certificate revoked or expired since an earlier connection is
/// not carried on by resumption); the staff listener (bearer tokens, no client
/// certificate) does resume.
#[tokio::test]
async fn agency_listener_never_resumes_a_session() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let port = |base: &str| base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let dir = root().join("certs-example/agencies");
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let agency = client_tls(
            &ca(),
            Some((
                dir.join("coventry-liaison.crt"),
                dir.join("coventry-liaison.key"),
            )),
            versions,
        );
        assert_eq!(
            two_handshakes(port(&app.base), agency).await,
            [rustls::HandshakeKind::Full, rustls::HandshakeKind::Full],
            "agency listener, {versions:?}"
        );
        let staff = client_tls(&ca(), None, versions);
        assert_eq!(
            two_handshakes(port(app.staff_base.as_deref().unwrap()), staff).await,
            [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed],
            "staff listener, {versions:?}"
        );
    }
    app.stop().await;
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A fresh CA with a CRL revoking one of two liaison certificates, and an agency pinned
/// by fingerprint.
#[tokio::test]
async fn revoked_certificates_are_refused_and_pins_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Authority::new("Test CA", 30).unwrap();
    let server = ca.issue_server(&["localhost".into()]).unwrap();
    let uri = ClientName::Uri("urn:referral-gateway:agency:coventry-liaison".into());
    let good = ca.issue_client("good", &uri).unwrap();
    let revoked = ca.issue_client("revoked", &uri).unwrap();
    let pinned = ca
        .issue_client("pinned", &ClientName::Dns("anything.example".into()))
        .unwrap();
    let crl = ca.crl(&[&revoked.serial], time::Duration::days(7)).unwrap();
    write(&d.join("ca.crt"), &ca.cert_pem);
    write(&d.join("server.crt"), &server.cert_pem);
    write(&d.join("server.key"), &server.key_pem);
    write(&d.join("crl.pem"), &crl);
    for (name, issued) in [("good", &good), ("revoked", &revoked), ("pinned", &pinned)] {
        write(&d.join(format!("{name}.crt")), &issued.cert_pem);
        write(&d.join(format!("{name}.key")), &issued.key_pem);
    }
    let fingerprint = referral_gateway::security::digest::fingerprint_hex(&pinned.sha256);
    let config = shipped_config_text()
        .replace(
            &format!("{ROOT}/certs-example/ca.crt"),
            &d.join("ca.crt").display().to_string(),
        )
        .replace(
            &format!("{ROOT}/certs-example/server.crt"),
            &d.join("server.crt").display().to_string(),
        )
        .replace(
            &format!("{ROOT}/certs-example/server.key"),
            &d.join("server.key").display().to_string(),
        )
        .replace(
            "crls = []",
            &format!("crls = [\"{}\"]", d.join("crl.pem").display()),
        )
        .replace(
            "certificate = { san_uri = \"urn:referral-gateway:agency:coventry-cmht\" }",
            &format!("certificate = {{ sha256 = \"{fingerprint}\" }}"),
        );
    let app = TestApp::spawn_with(Backend::Sqlite, &config).await;
    let client = |name: &str| {
        http_client(client_tls(
            &d.join("ca.crt"),
            Some((d.join(format!("{name}.crt")), d.join(format!("{name}.key")))),
            rustls::ALL_VERSIONS,
        ))
    };
    let r = post_referral(&client("good"), &app, example_text("cmht")).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["referral_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        healthz(&client("revoked"), &app).await.is_err(),
        "revoked certificate is refused"
    );
    // The pinned certificate is the CMHT: it can read the referral sent to it.
    let r = client("pinned")
        .get(app.url(&format!("/v1/referrals/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// An HTTP/2 client (ALPN h2) without a client certificate, as anyone on the network
/// reaching the staff listener is.
fn h2_client() -> reqwest::Client {
    let mut tls = client_tls(&ca(), None, rustls::ALL_VERSIONS);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// Before authentication, a caller cannot make the gateway hold large HTTP/2 header
/// lists (h2's default is 16 MiB per stream): past 32 KiB the request gets 431, and the
/// listener goes on serving.
#[tokio::test]
async fn http2_header_lists_are_bounded() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = h2_client();
    let ok = client.get(app.staff_url("/healthz")).send().await.unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);
    let value = "v".repeat(1024);
    for _ in 0..20 {
        let mut request = client.get(app.staff_url("/healthz"));
        for i in 0..300 {
            request = request.header(format!("x-filler-{i}"), value.as_str());
        }
        match request.send().await {
            Ok(response) => assert_eq!(response.status(), 431),
            // A refused stream is as good: nothing was kept.
            Err(e) => assert!(e.is_request(), "{e:?}"),
        }
    }
    // Under the limit, headers are fine; and the listener still serves.
    let ok = client
        .get(app.staff_url("/healthz"))
        .header("x-filler", value.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // HTTP/1.1: a head over 32 KiB (40 headers of 1 KiB: under the 96-header limit) is
    // refused with 431 too; one under it is served.
    let h1 = http_client(client_tls(
        &root().join("certs-example/ca.crt"),
        None,
        &[&rustls::version::TLS13],
    ));
    let mut request = h1.get(app.staff_url("/healthz"));
    for i in 0..40 {
        request = request.header(format!("x-filler-{i}"), value.as_str());
    }
    match request.send().await {
        Ok(response) => {
            assert_eq!(response.version(), reqwest::Version::HTTP_11);
            assert_eq!(response.status(), 431);
        }
        Err(e) => assert!(e.is_request(), "{e:?}"),
    }
    let mut request = h1.get(app.staff_url("/healthz"));
    for i in 0..20 {
        request = request.header(format!("x-filler-{i}"), value.as_str());
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    app.stop().await;
}

/// Request metrics keep a fixed label set: a caller's invented methods all count as
/// `other`, never as a series of their own.
#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = h2_client();
    for method in ["QWERTY1", "QWERTY2", &"M".repeat(4096)] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method, app.staff_url("/v1/anything"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
    let metrics = app.ops_text("/metrics").await;
    assert!(!metrics.contains("QWERTY"), "{metrics}");
    assert!(
        metrics.contains(
            r#"refgw_http_requests_total{route="unmatched",method="other",status="404"} 3"#
        ),
        "{metrics}"
    );
    app.stop().await;
}

/// A body of `declared` bytes (Content-Length) of which one byte arrives every `every`.
fn trickle(declared: u64, every: std::time::Duration) -> reqwest::Body {
    let bytes = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= declared {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(vec![b' ']), sent + 1))
    });
    reqwest::Body::wrap_stream(bytes)
}

/// Slow bodies: a client that trickles its body (or sends none after its headers) is
/// answered within the configured bounds on every listener, and cannot hold a worker.
#[tokio::test]
async fn trickled_bodies_time_out_on_every_listener() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut config = test_config(&shipped_config_text(), &db.url);
    config.server.body_timeouts = referral_gateway::config::BodyTimeouts {
        total: std::time::Duration::from_secs(3),
        idle: std::time::Duration::from_secs(2),
    };
    let app = TestApp::start(config, db).await;
    let every = std::time::Duration::from_millis(500);
    let agency = agency_client("coventry-liaison");
    let cases = [
        (
            "agency, trickled",
            agency
                .post(app.url("/v1/referrals"))
                .body(trickle(100_000, every)),
            408,
        ),
        (
            "agency, stalled",
            agency
                .post(app.url("/v1/referrals"))
                .body(trickle(100_000, std::time::Duration::from_secs(120))),
            408,
        ),
        (
            // No token: refused at once, the trickle drained only briefly.
            "staff",
            staff_client()
                .post(app.staff_url("/v1/audit/disclosures"))
                .body(trickle(100_000, every)),
            401,
        ),
        (
            "ops",
            staff_client()
                .get(format!("{}/healthz", app.ops_base))
                .body(trickle(100_000, every)),
            200,
        ),
    ];
    for (name, request, status) in cases {
        let started = std::time::Instant::now();
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            request
                .header("content-type", "application/json")
                .header("content-length", "100000")
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer within 15 s"))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(response.status(), status, "{name}");
        if status == 408 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["type"], "urn:referral-gateway:problem:body-timeout");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "{name}: {:?}",
            started.elapsed()
        );
    }
    // Still serving.
    assert_eq!(healthz(&agency, &app).await.unwrap().status(), 200);
    app.stop().await;
}

/// The staff listener (no client certificates) counts its refused handshakes too: a
/// client that does not trust the gateway's certificate (`client_alert`) and one that
/// does not speak TLS (`protocol`), under `listener="staff"`; its clients still work.
#[tokio::test]
async fn refused_staff_handshakes_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let untrusting = http_client(client_tls(
        &root().join("certs-example/rogue/ca.crt"),
        None,
        rustls::ALL_VERSIONS,
    ));
    assert!(
        untrusting
            .get(app.staff_url("/healthz"))
            .send()
            .await
            .is_err()
    );
    let staff = app.staff_base.clone().unwrap();
    let port = staff.rsplit(':').next().unwrap();
    let mut plain = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut answer),
    )
    .await;
    // A trusting client is served.
    let ok = staff_client()
        .get(app.staff_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    let counted = |metrics: &str, reason: &str| {
        let prefix = format!(
            "refgw_tls_handshake_failures_total{{listener=\"staff\",reason=\"{reason}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = app.ops_text("/metrics").await;
        if counted(&metrics, "client_alert") >= 1 && counted(&metrics, "protocol") >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counted(&metrics, "client_alert"), 1, "{metrics}");
    assert_eq!(counted(&metrics, "protocol"), 1, "{metrics}");
    assert!(
        !metrics.contains("listener=\"agency\""),
        "nothing was refused on the agency listener: {metrics}"
    );
    app.stop().await;
}

/// Answers of both TLS listeners hold personal data: no cache may keep them, no browser
/// may sniff them, and the staff listener (which browsers use) is HTTPS only.
#[tokio::test]
async fn answers_are_not_cached() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = app.submit(example_text("cmht")).await;
    let agency = agency_client("coventry-liaison")
        .get(app.url(&format!("/v1/referrals/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(agency.status(), 200);
    let problem = agency_client("coventry-liaison")
        .get(app.url("/v1/referrals/not-an-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem.status(), 404);
    for response in [&agency, &problem] {
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(
            response
                .headers()
                .get("strict-transport-security")
                .is_none()
        );
    }
    let staff = staff_client()
        .get(app.staff_url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(staff.headers()["cache-control"], "no-store");
    assert_eq!(
        staff.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    app.stop().await;
}
