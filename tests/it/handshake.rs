//! The agency certificate lifecycle, run as an operator would with the real binary:
//! `certs issue` from a CSR, a real mTLS submission, `certs revoke`, and after
//! `referral-gateway reload` (no restart) the gateway refusing the revoked certificate;
//! every refused handshake logged (WARN, peer address, fixed reason, fingerprint) and
//! counted in /metrics; `certs expiring` and the expiry metric; a reload with a CRL
//! that cannot be read refused, the CRL in force kept.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use referral_gateway::security::certs::{Authority, ClientName};
use referral_gateway::security::digest::{fingerprint_hex, sha256};

use crate::common::cli::{free_port, gateway, output, wait_ready};
use crate::common::*;

const LIAISON_URI: &str = "urn:referral-gateway:agency:coventry-liaison";

struct Served {
    child: Child,
    port: u16,
    ops: u16,
    log: PathBuf,
}

impl Served {
    async fn start(config: &Path, dir: &Path, name: &str) -> Self {
        let (port, ops) = (free_port(), free_port());
        let log = dir.join(format!("{name}.log"));
        let child = gateway()
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .arg("serve")
            .env("REFGW_LISTEN", format!("127.0.0.1:{port}"))
            .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{ops}"))
            .env("REFGW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_ready(ops).await;
        Self {
            child,
            port,
            ops,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    async fn metrics(&self) -> String {
        staff_client()
            .get(format!("http://127.0.0.1:{}/metrics", self.ops))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The WARN lines about refused clients (waiting a moment for them to be written).
    async fn refusals(&self, expected: usize) -> Vec<serde_json::Value> {
        for _ in 0..50 {
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&self.log)
                .unwrap()
                .lines()
                .filter(|l| l.contains("client refused"))
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() >= expected {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "fewer than {expected} refusals logged: {}",
            std::fs::read_to_string(&self.log).unwrap()
        );
    }

    /// `referral-gateway reload` as an operator runs it (with the gateway's environment).
    fn reload(&self, config: &Path) -> (Option<i32>, String) {
        output(
            gateway()
                .arg("--config")
                .arg(config)
                .arg("reload")
                .env("REFGW_LISTEN", format!("127.0.0.1:{}", self.port))
                .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{}", self.ops)),
        )
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn client(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> reqwest::Client {
    http_client(client_tls(ca, identity, rustls::ALL_VERSIONS))
}

async fn submit(client: &reqwest::Client, served: &Served) -> Result<u16, reqwest::Error> {
    client
        .post(served.url("/v1/referrals"))
        .header("content-type", "application/json")
        .body(example_text("cmht"))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

fn pem_fingerprint(path: &Path) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(path).unwrap();
    fingerprint_hex(&sha256(der.as_ref()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A line of `/metrics` for a reason.
fn failures(metrics: &str, reason: &str) -> u64 {
    let prefix =
        format!("refgw_tls_handshake_failures_total{{listener=\"agency\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn issued_certificates_work_revoked_ones_fail_and_refusals_are_visible() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The scheme's certificates, as an operator makes them for development.
    let set = d.join("set");
    let (code, out) = output(gateway().args(["certs", "init", "--out"]).arg(&set));
    assert_eq!(code, Some(0), "{out}");
    let ca_cert = set.join("ca.crt");
    let ca_key = set.join("ca.key");
    let issued = d.join("issued");
    std::fs::create_dir_all(&issued).unwrap();

    // The agency's side: a key pair and a CSR (rcgen here; docs/onboarding.md shows the
    // gateway's command and openssl).
    let agency_key = rcgen::KeyPair::generate().unwrap();
    write(&d.join("liaison.key"), &agency_key.serialize_pem());
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&agency_key)
        .unwrap();
    write(&d.join("liaison.csr"), &csr.pem().unwrap());

    let issue = |agency: &str, csr: &Path| {
        output(
            gateway()
                .args(["certs", "issue", "--ca-cert"])
                .arg(&ca_cert)
                .arg("--ca-key")
                .arg(&ca_key)
                .args(["--agency", agency, "--csr"])
                .arg(csr),
        )
    };
    // Unknown agencies and weak keys are refused.
    let (code, out) = issue("nobody", &d.join("liaison.csr"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no agency 'nobody'"), "{out}");
    let fixtures = root().join("tests/it/fixtures");
    let (code, out) = issue("coventry-liaison", &fixtures.join("rsa-1024.csr"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("1024 bits"), "{out}");
    let (code, out) = issue("coventry-liaison", &fixtures.join("rsa-2048.csr"));
    assert_eq!(code, Some(0), "an RSA-2048 request is accepted: {out}");
    // The documented openssl request (P-256, asking for another SAN): the certificate
    // carries the registered agency's SAN, whatever the request asked for.
    let (code, out) = issue(
        "coventry-liaison",
        &fixtures.join("openssl-p256-with-extensions.csr"),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("SAN URI {LIAISON_URI}")), "{out}");
    assert!(!out.contains("warwickshire"), "{out}");

    let out = gateway()
        .args(["certs", "issue", "--ca-cert"])
        .arg(&ca_cert)
        .arg("--ca-key")
        .arg(&ca_key)
        .args(["--agency", "coventry-liaison", "--csr"])
        .arg(d.join("liaison.csr"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let liaison_crt = issued.join("coventry-liaison.crt");
    std::fs::write(&liaison_crt, &out.stdout).unwrap();
    let facts = referral_gateway::security::certs::certificate_facts(
        rustls::pki_types::pem::PemObject::from_pem_file(&liaison_crt)
            .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
            .unwrap()
            .as_slice(),
        None,
    )
    .unwrap();
    assert_eq!(facts.presented.san_uris, vec![LIAISON_URI.to_owned()]);
    let liaison_fp = pem_fingerprint(&liaison_crt);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&liaison_fp));

    // Certificates that must be refused, from the same CA.
    let ca = Authority::load(
        &std::fs::read_to_string(&ca_cert).unwrap(),
        &std::fs::read_to_string(&ca_key).unwrap(),
        30,
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let uri = ClientName::Uri(LIAISON_URI.into());
    let refused = [
        (
            "expired",
            ca.issue_client_with(
                "expired",
                &uri,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                (
                    now - time::Duration::days(30),
                    now - time::Duration::days(1),
                ),
            )
            .unwrap(),
        ),
        (
            "bad_eku",
            ca.issue_client_with(
                "server only",
                &uri,
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                (
                    now - time::Duration::days(1),
                    now + time::Duration::days(30),
                ),
            )
            .unwrap(),
        ),
    ];
    for (name, cert) in &refused {
        write(&d.join(format!("{name}.crt")), &cert.cert_pem);
        write(&d.join(format!("{name}.key")), &cert.key_pem);
    }

    let config_text = shipped_config_text()
        .replace(
            &format!("{ROOT}/certs-example/ca.crt"),
            &ca_cert.display().to_string(),
        )
        .replace(
            &format!("{ROOT}/certs-example/server.crt"),
            &set.join("server.crt").display().to_string(),
        )
        .replace(
            &format!("{ROOT}/certs-example/server.key"),
            &set.join("server.key").display().to_string(),
        )
        .replace(
            "crl_enforce_expiry = false",
            &format!(
                "crl_enforce_expiry = false\nissued_dir = \"{}\"",
                issued.display()
            ),
        )
        .replace(
            "url = \"sqlite://data/gateway.db\"",
            &format!("url = \"sqlite://{}\"", d.join("gateway.db").display()),
        )
        .replace(
            "[server]\n",
            &format!(
                "[server]\npid_file = \"{}\"\n",
                d.join("gateway.pid").display()
            ),
        )
        + "\n[relay]\nenabled = false\n";
    let config = d.join("gateway.toml");
    write(&config, &config_text);

    let served = Served::start(&config, d, "first").await;
    // The issued certificate completes a real mTLS submission.
    let liaison = client(&ca_cert, Some((liaison_crt.clone(), d.join("liaison.key"))));
    assert_eq!(submit(&liaison, &served).await.unwrap(), 202);

    // Each refused client fails the handshake (or, unregistered, gets 403).
    assert!(submit(&client(&ca_cert, None), &served).await.is_err());
    let rogue = set.join("rogue");
    let rogue_client = client(
        &ca_cert,
        Some((rogue.join("client.crt"), rogue.join("client.key"))),
    );
    assert!(submit(&rogue_client, &served).await.is_err());
    for (name, _) in &refused {
        let c = client(
            &ca_cert,
            Some((d.join(format!("{name}.crt")), d.join(format!("{name}.key")))),
        );
        assert!(submit(&c, &served).await.is_err(), "{name}");
    }
    let unregistered = set.join("unregistered");
    let c = client(
        &ca_cert,
        Some((
            unregistered.join("client.crt"),
            unregistered.join("client.key"),
        )),
    );
    assert_eq!(submit(&c, &served).await.unwrap(), 403);

    let expected = [
        ("no_certificate", None),
        (
            "unknown_ca",
            Some(pem_fingerprint(&rogue.join("client.crt"))),
        ),
        ("expired", Some(pem_fingerprint(&d.join("expired.crt")))),
        ("bad_eku", Some(pem_fingerprint(&d.join("bad_eku.crt")))),
        (
            "unknown_agency",
            Some(pem_fingerprint(&unregistered.join("client.crt"))),
        ),
    ];
    let lines = served.refusals(expected.len()).await;
    let metrics = served.metrics().await;
    for (reason, fingerprint) in &expected {
        let line = lines
            .iter()
            .find(|l| l["reason"] == *reason)
            .unwrap_or_else(|| panic!("no WARN line for {reason}: {lines:?}"));
        assert_eq!(line["level"], "WARN");
        assert!(
            line["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert_eq!(
            line["fingerprint"].as_str().unwrap(),
            fingerprint.as_deref().unwrap_or("none"),
            "{reason}"
        );
        assert!(failures(&metrics, reason) >= 1, "{reason}: {metrics}");
    }
    // The issued certificate's days to expiry (issued for 365 days).
    let days = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("refgw_agency_certificate_expiry_days{agency=\"coventry-liaison\"} ")
        })
        .map(|v| v.trim().parse::<f64>().unwrap())
        .unwrap_or_else(|| panic!("no expiry metric: {metrics}"));
    assert!((363.0..=366.0).contains(&days), "{days}");

    // certs expiring: within 400 days yes, within 30 no.
    let expiring = |days: &str| {
        output(
            gateway()
                .args(["certs", "expiring", "--dir"])
                .arg(&issued)
                .args(["--days", days]),
        )
    };
    let (code, out) = expiring("400");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("coventry-liaison"), "{out}");
    let (code, out) = expiring("30");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 checked"), "{out}");

    // Revoke it; the gateway, restarted with the CRL, refuses it.
    let crl = d.join("crl.pem");
    let revoke = |cert: &Path| {
        output(
            gateway()
                .args(["certs", "revoke", "--ca-cert"])
                .arg(&ca_cert)
                .arg("--ca-key")
                .arg(&ca_key)
                .arg("--crl")
                .arg(&crl)
                .arg(cert),
        )
    };
    let (code, out) = revoke(&d.join("bad_eku.crt"));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = revoke(&liaison_crt);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("lists 2 certificate(s)"), "{out}");
    let (code, out) = revoke(&rogue.join("client.crt"));
    assert_eq!(code, Some(2), "not ours: {out}");
    {
        use rustls::pki_types::CertificateRevocationListDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateRevocationListDer::from_pem_file(&crl).unwrap();
        let (_, parsed) = x509_parser::parse_x509_crl(der.as_ref()).unwrap();
        assert_eq!(parsed.iter_revoked_certificates().count(), 2);
        assert_eq!(
            parsed.crl_number().map(|n| n.to_string()),
            Some("2".to_owned())
        );
    }
    // Revoked, but the gateway has not re-read its configuration: still accepted.
    let liaison = client(&ca_cert, Some((liaison_crt.clone(), d.join("liaison.key"))));
    assert_eq!(submit(&liaison, &served).await.unwrap(), 202);

    // The operator lists the CRL and reloads: no restart.
    write(
        &config,
        &config_text.replace("crls = []", &format!("crls = [\"{}\"]", crl.display())),
    );
    let (code, out) = served.reload(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("reloaded: configuration generation 2 is in force"),
        "{out}"
    );
    let liaison = client(&ca_cert, Some((liaison_crt.clone(), d.join("liaison.key"))));
    assert!(submit(&liaison, &served).await.is_err(), "revoked");
    let lines = served.refusals(expected.len() + 1).await;
    let revoked: Vec<_> = lines.iter().filter(|l| l["reason"] == "revoked").collect();
    assert_eq!(revoked.len(), 1, "{lines:?}");
    assert_eq!(revoked[0]["level"], "WARN");
    assert_eq!(revoked[0]["fingerprint"], liaison_fp.as_str());
    let metrics = served.metrics().await;
    assert_eq!(failures(&metrics, "revoked"), 1);
    assert!(
        metrics.contains("refgw_config_reloads_total{outcome=\"applied\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("refgw_config_generation 2\n"), "{metrics}");
    // A revoked certificate will not be renewed: it leaves the expiry metric, and
    // `certs expiring` given the CRL leaves it out too.
    assert!(
        !metrics.contains("refgw_agency_certificate_expiry_days{agency=\"coventry-liaison\"}"),
        "{metrics}"
    );
    let (code, out) = output(
        gateway()
            .args(["certs", "expiring", "--dir"])
            .arg(&issued)
            .args(["--days", "400", "--crl"])
            .arg(&crl),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 checked"), "{out}");
    // Nothing but the fixed fields: no certificate subject or SAN in the log.
    let log = std::fs::read_to_string(&served.log).unwrap();
    assert!(!log.contains(LIAISON_URI), "{log}");
    // A certificate the CRL does not list still completes its handshake.
    assert_eq!(submit(&c, &served).await.unwrap(), 403);

    // A CRL that cannot be read: `reload` reports it and signals nothing; SIGHUP
    // itself (as systemd's ExecReload or `kill -HUP` sends it) is refused by the
    // gateway, which keeps the CRL in force.
    write(
        &config,
        &config_text.replace("crls = []", "crls = [\"/nonexistent/crl.pem\"]"),
    );
    let (code, out) = served.reload(&config);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("tls.crls: file '/nonexistent/crl.pem' does not exist"),
        "{out}"
    );
    assert!(out.contains("nothing was reloaded"), "{out}");
    let status = Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rejected = false;
    for _ in 0..50 {
        if served
            .metrics()
            .await
            .contains("refgw_config_reloads_total{outcome=\"rejected\"} 1\n")
        {
            rejected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rejected, "{}", served.metrics().await);
    let log = std::fs::read_to_string(&served.log).unwrap();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(log.contains("/nonexistent/crl.pem"), "{log}");
    let liaison = client(&ca_cert, Some((liaison_crt, d.join("liaison.key"))));
    assert!(submit(&liaison, &served).await.is_err(), "still revoked");

    // The reload is in the audit log, with what changed.
    let details = reload_audit(&d.join("gateway.db")).await;
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(
        details[0].starts_with("generation 2; agencies added [] removed [] changed []"),
        "{details:?}"
    );
    assert!(details[0].contains("crls changed"), "{details:?}");

    // A setting that needs a restart: applied otherwise, named, exit 3.
    write(
        &config,
        &config_text
            .replace("crls = []", &format!("crls = [\"{}\"]", crl.display()))
            .replace("max_body_bytes = 262144", "max_body_bytes = 131072"),
    );
    let (code, out) = served.reload(&config);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("reloaded: configuration generation 3 is in force")
            && out.contains("take effect only at the next restart")
            && out.contains(": server"),
        "{out}"
    );
    served.stop();
}

/// The `config.reloaded` entries' details in the SQLite database at `path`.
async fn reload_audit(path: &Path) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows =
        sqlx::query("SELECT detail FROM audit_log WHERE action = 'config.reloaded' ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    rows.iter().map(|r| r.get::<String, _>("detail")).collect()
}
