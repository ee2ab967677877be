//! Staff access on the staff listener: JWT checks, roles and agency scope, the auditor
//! API (events, subject access, export), each query audited.

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://login.example.org/referral-gateway-dev";
const AUDIENCE: &str = "referral-gateway";
const ES_KID: &str = "test-es256";

/// A stand-in identity provider: the development Ed25519 key and a P-256 key of its own,
/// both published in a JWKS the test gateway trusts.
struct Idp {
    _dir: tempfile::TempDir,
    jwks_path: std::path::PathBuf,
    es_key: EncodingKey,
    dev_public: Vec<u8>,
}

impl Idp {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::KeyPair::generate().unwrap();
        let es_key = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut es_jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&es_key, Algorithm::ES256).unwrap();
        es_jwk.common.key_id = Some(ES_KID.into());
        let dev: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("certs-example/staff-jwks.json")).unwrap(),
        )
        .unwrap();
        let dev_jwk = dev["keys"][0].clone();
        let dev_public = URL_SAFE_NO_PAD
            .decode(dev_jwk["x"].as_str().unwrap())
            .unwrap();
        let jwks = json!({"keys": [dev_jwk, serde_json::to_value(&es_jwk).unwrap()]});
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).unwrap();
        Self {
            _dir: dir,
            jwks_path,
            es_key,
            dev_public,
        }
    }

    /// The shipped config, trusting this provider's JWKS, plus `extra` TOML.
    fn config(&self, extra: &str) -> String {
        shipped_config_text().replace(
            &format!("\"{ROOT}/certs-example/staff-jwks.json\""),
            &format!("\"{}\"", self.jwks_path.display()),
        ) + extra
    }

    fn claims(roles: &[&str], agency: Option<&str>) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "ig.lead@example.org",
            "iat": now, "nbf": now, "exp": now + 600, "roles": roles,
        });
        if let Some(agency) = agency {
            claims["agency"] = json!(agency);
        }
        claims
    }

    fn es256(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(ES_KID.into());
        jsonwebtoken::encode(&header, claims, &self.es_key).unwrap()
    }

    /// An ES256 token over a header of our own making (members the library would not
    /// write, such as `crit: null`).
    fn es256_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.es_key, Algorithm::ES256)
                .unwrap();
        format!("{signing_input}.{signature}")
    }

    fn dev_token(
        &self,
        roles: &[referral_gateway::staff_auth::tokens::Role],
        agency: Option<&str>,
    ) -> String {
        dev_token(&self.config(""), "dev-auditor", roles, agency)
    }
}

async fn jwt_checks(backend: Backend) {
    let idp = Idp::new();
    let app = TestApp::spawn_with(backend, &idp.config("")).await;
    let auditor = Idp::claims(&["auditor"], None);

    // Valid tokens: ES256 from the provider, EdDSA from `dev-token`'s key.
    let page = app
        .staff_get("/v1/audit/events", &idp.es256(&auditor), 200)
        .await;
    assert_eq!(page["items"][0]["action"], "config.loaded");
    let dev = idp.dev_token(&[referral_gateway::staff_auth::tokens::Role::Auditor], None);
    app.staff_get("/v1/audit/events", &dev, 200).await;

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with = |patch: Value| {
        let mut claims = auditor.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": ES_KID, "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(auditor.to_string())
    );
    // HS256 with the trusted Ed25519 public key as the HMAC secret (key confusion).
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(referral_gateway::staff_auth::tokens::DEV_KEY_ID.into());
        jsonwebtoken::encode(
            &header,
            &auditor,
            &EncodingKey::from_secret(&idp.dev_public),
        )
        .unwrap()
    };
    let unknown_kid = {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("somebody-else".into());
        jsonwebtoken::encode(&header, &auditor, &idp.es_key).unwrap()
    };
    let mut without_sub = auditor.clone();
    without_sub.as_object_mut().unwrap().remove("sub");
    let refused = [
        ("alg none", unsigned, "invalid-token"),
        ("HS256 with the public key", confused, "invalid-token"),
        (
            "expired",
            idp.es256(&with(json!({"exp": now - 3600, "nbf": now - 7200}))),
            "invalid-token",
        ),
        (
            "not yet valid",
            idp.es256(&with(json!({"nbf": now + 3600, "exp": now + 7200}))),
            "invalid-token",
        ),
        (
            "wrong issuer",
            idp.es256(&with(json!({"iss": "https://evil.example"}))),
            "invalid-token",
        ),
        (
            "wrong audience",
            idp.es256(&with(json!({"aud": "another-service"}))),
            "invalid-token",
        ),
        ("unknown kid", unknown_kid, "invalid-token"),
        ("no subject", idp.es256(&without_sub), "invalid-token"),
        ("garbage", "not.a.token".to_owned(), "invalid-token"),
    ];
    for (case, token, kind) in &refused {
        let r = staff_response(&app, "/v1/audit/events", Some(token)).await;
        assert_eq!(r.status(), 401, "{case}");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="referral-gateway", error="invalid_token""#,
            "{case}"
        );
        let body = problem(r, 401).await;
        assert_eq!(
            body["type"],
            format!("urn:referral-gateway:problem:{kind}"),
            "{case}"
        );
    }
    // No token at all.
    let r = staff_response(&app, "/v1/audit/events", None).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="referral-gateway""#
    );
    problem(r, 401).await;
    let r = staff_client()
        .get(app.staff_url("/v1/audit/events"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    // A valid token without a gateway role, and a service manager on an auditor route.
    let body = app
        .staff_get(
            "/v1/audit/events",
            &idp.es256(&Idp::claims(&["nurse"], None)),
            403,
        )
        .await;
    assert_eq!(
        body["type"],
        "urn:referral-gateway:problem:insufficient-role"
    );
    let manager = idp.es256(&Idp::claims(&["service_manager"], Some("coventry-cmht")));
    app.staff_get("/v1/audit/export", &manager, 403).await;

    // The refusal of a staff member without the role the route needs is an audit entry
    // of its own; the token with no staff role at all is tallied with the 11 without a
    // verified identity (9 bad tokens, 2 without one), which reach the log as one entry
    // holding counts by reason, none of the tokens' text.
    let refusals = |app: &TestApp| {
        let pool = app.store.pool().clone();
        async move {
            use sqlx::Row;
            sqlx::query(
                "SELECT actor, detail FROM audit_log WHERE action = 'auth.refused' ORDER BY seq",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.get::<String, _>("actor"),
                    r.get::<String, _>("detail")
                )
            })
            .collect::<Vec<String>>()
        }
    };
    let audited = refusals(&app).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited
            .iter()
            .all(|d| d.starts_with("staff:ig.lead@example.org 403")),
        "{audited:?}"
    );
    app.record_refusals().await;
    let audited = refusals(&app).await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    let tally = &audited[1];
    assert!(
        tally.starts_with("bearer:unverified 12 unverified requests refused from "),
        "{tally}"
    );
    for reason in [
        "no-role 1",
        "missing-token 2",
        "expired 1",
        "not-yet-valid 1",
        "wrong-issuer 1",
        "wrong-audience 1",
        "unknown-key 1",
    ] {
        assert!(tally.contains(reason), "{reason}: {tally}");
    }
    assert!(!tally.contains("somebody-else"), "{tally}");
    // Counted in the metrics too, by the same fixed reasons.
    let metrics = app.ops_text("/metrics").await;
    assert!(
        metrics.contains("refgw_auth_refused_unverified_total{reason=\"missing-token\"} 2"),
        "{metrics}"
    );
    // Nothing more to write: no empty entry.
    app.record_refusals().await;
    assert_eq!(app.count_action("auth.refused").await, 2);
    // Staff routes are not on the agency listener, and agency certificates are not
    // staff credentials.
    let r = agency_client("coventry-liaison")
        .get(app.url("/v1/audit/events"))
        .send()
        .await
        .unwrap();
    problem(r, 404).await;
    app.stop().await;
}

on_both_backends!(jwt_checks);

/// Tokens signed by the trusted provider that still must not pass: a `crit` header
/// (RFC 7515 s.4.1.11: we understand no extension, so any `crit` is refused), an `iss` that
/// is not one string (even an array holding the right issuer), and a `sub` that would make
/// a hostile audit actor (CRLF, kilobytes, spaces). Each is a 401 invalid-token with a
/// fixed reason, audited under `bearer:unverified`, and none of the token's text reaches
/// the response or the log.
async fn hostile_headers_and_claims(backend: Backend) {
    let idp = Idp::new();
    let app = TestApp::spawn_with(backend, &idp.config("")).await;
    let auditor = Idp::claims(&["auditor"], None);
    let with = |patch: Value| {
        let mut claims = auditor.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let header = |crit: Value| json!({"alg": "ES256", "typ": "JWT", "kid": ES_KID, "crit": crit});
    // The same header without `crit` is accepted: the refusals below are about `crit`.
    let plain = idp.es256_with_header(
        &json!({"alg": "ES256", "typ": "JWT", "kid": ES_KID}),
        &auditor,
    );
    app.staff_get("/v1/audit/events", &plain, 200).await;
    let hostile_sub = format!("ig.lead@example.org\r\nstaff:admin {}", "A".repeat(3000));
    let cases = [
        (
            "crit naming a claim",
            idp.es256_with_header(&header(json!(["exp"])), &auditor),
            "crit",
        ),
        (
            "crit naming an extension",
            idp.es256_with_header(&header(json!(["b64"])), &auditor),
            "crit",
        ),
        (
            "empty crit",
            idp.es256_with_header(&header(json!([])), &auditor),
            "crit",
        ),
        (
            "null crit",
            idp.es256_with_header(&header(json!(null)), &auditor),
            "crit",
        ),
        (
            "crit as a string",
            idp.es256_with_header(&header(json!("exp")), &auditor),
            "crit",
        ),
        (
            "iss as an array holding the issuer",
            idp.es256(&with(json!({"iss": [ISSUER]}))),
            "iss",
        ),
        (
            "iss as an array of two",
            idp.es256(&with(json!({"iss": [ISSUER, "https://evil.example"]}))),
            "iss",
        ),
        (
            "iss as a number",
            idp.es256(&with(json!({"iss": 7}))),
            "iss",
        ),
        (
            "sub with CRLF and 3 KB",
            idp.es256(&with(json!({"sub": hostile_sub}))),
            "sub",
        ),
        (
            "sub of 3 KB",
            idp.es256(&with(json!({"sub": "a".repeat(3000)}))),
            "sub",
        ),
        (
            "sub with a line feed",
            idp.es256(&with(json!({"sub": "ig.lead\nstaff:someone-else"}))),
            "sub",
        ),
        (
            "sub with a space",
            idp.es256(&with(json!({"sub": "ig lead"}))),
            "sub",
        ),
        ("empty sub", idp.es256(&with(json!({"sub": ""}))), "sub"),
        (
            "sub as a number",
            idp.es256(&with(json!({"sub": 42}))),
            "sub",
        ),
    ];
    for (case, token, reason) in &cases {
        let r = staff_response(&app, "/v1/audit/events", Some(token)).await;
        assert_eq!(r.status(), 401, "{case}");
        let body = problem(r, 401).await;
        assert_eq!(
            body["type"], "urn:referral-gateway:problem:invalid-token",
            "{case}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{case}: {detail}");
        assert!(
            !detail.contains("AAAA") && !detail.contains("admin") && !detail.contains("evil"),
            "{case}: {detail}"
        );
    }
    // Tallied, then written as one entry of counts by reason.
    assert_eq!(app.count_action("auth.refused").await, 0);
    app.record_refusals().await;
    assert_eq!(app.count_action("auth.refused").await, 1);
    use sqlx::Row;
    let rows = sqlx::query("SELECT actor, detail FROM audit_log WHERE action = 'auth.refused'")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    for row in rows {
        let (actor, detail): (String, String) = (row.get("actor"), row.get("detail"));
        assert_eq!(actor, "bearer:unverified");
        assert!(
            detail.len() < 200 && !detail.contains('\r') && !detail.contains('\n'),
            "{detail}"
        );
    }
    // Nothing the hostile tokens carried became an actor anywhere in the log.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE actor LIKE $1",
            "staff:%"
        )
        .await,
        1,
        "only the plain token's caller"
    );
    app.stop().await;
}

on_both_backends!(hostile_headers_and_claims);

async fn service_manager_scope(backend: Backend) {
    let idp = Idp::new();
    let app = TestApp::spawn_with(backend, &idp.config("")).await;
    let to_cmht = app.submit(example_text("cmht")).await;
    let to_iapt = app.submit(example_text("iapt")).await;
    let manager = idp.es256(&Idp::claims(&["service_manager"], Some("coventry-cmht")));

    // Own agency: the referral list holds the CMHT referral only, with no payload.
    let list = app.staff_get("/v1/referrals", &manager, 200).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["referral_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [to_cmht.as_str()]);
    assert!(
        !list.to_string().contains("Example"),
        "no personal data in lists"
    );
    let report = app.staff_get("/v1/reports/sla", &manager, 200).await;
    assert_eq!(report["agency"], "coventry-cmht");
    assert!(
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row.to_string().contains("coventry-cmht")),
        "{report}"
    );

    // Another agency's data: refused, and the refusal audited.
    for path in [
        "/v1/referrals?agency=coventry-iapt",
        "/v1/reports/sla?agency=coventry-iapt",
    ] {
        let body = app.staff_get(path, &manager, 403).await;
        assert_eq!(
            body["type"], "urn:referral-gateway:problem:other-agency",
            "{path}"
        );
    }
    // A manager token naming no agency, or an unregistered one.
    for agency in [None, Some("nowhere")] {
        let token = idp.es256(&Idp::claims(&["service_manager"], agency));
        let body = app.staff_get("/v1/reports/sla", &token, 403).await;
        assert_eq!(body["type"], "urn:referral-gateway:problem:no-agency-claim");
    }
    assert_eq!(app.count_action("auth.refused").await, 4);

    // An auditor names any agency; without one the list asks for it.
    let auditor = idp.es256(&Idp::claims(&["auditor"], None));
    let list = app
        .staff_get("/v1/referrals?agency=coventry-iapt", &auditor, 200)
        .await;
    assert_eq!(list["items"][0]["referral_id"], to_iapt.as_str());
    app.staff_get("/v1/referrals", &auditor, 400).await;
    let all = app.staff_get("/v1/reports/sla", &auditor, 200).await;
    assert_eq!(all["agency"], Value::Null);
    // Each successful staff read is audited under the staff subject.
    use sqlx::Row;
    let actors: Vec<String> = sqlx::query(
        "SELECT actor || ' ' || action AS a FROM audit_log WHERE actor LIKE 'staff:%' AND action <> 'auth.refused' ORDER BY seq",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("a"))
    .collect();
    assert_eq!(
        actors,
        [
            "staff:ig.lead@example.org referral.listed",
            "staff:ig.lead@example.org report.sla",
            "staff:ig.lead@example.org referral.listed",
            "staff:ig.lead@example.org report.sla",
        ]
    );
    // One referral's status and timeline (never its payload, nor the free text the two
    // agencies wrote each other in its events): a manager sees their agency's, and gets
    // 404 for others; an auditor sees any.
    app.post_event_as(
        "coventry-cmht",
        &to_cmht,
        &event(
            "acknowledged",
            json!({"detail": "Seen by the duty worker at the clinic."}),
        ),
        201,
    )
    .await;
    let party = app.view_as("coventry-liaison", &to_cmht, 200).await;
    assert_eq!(
        party["timeline"][0]["detail"],
        "Seen by the duty worker at the clinic."
    );
    let view = app
        .staff_get(&format!("/v1/referrals/{to_cmht}"), &manager, 200)
        .await;
    assert_eq!(view["referral_id"], to_cmht.as_str());
    assert!(view["timeline"].is_array() && view.get("person").is_none());
    assert_eq!(view["timeline"][0]["type"], "acknowledged");
    assert!(view["timeline"][0].get("detail").is_none(), "{view}");
    app.staff_get(&format!("/v1/referrals/{to_iapt}"), &manager, 404)
        .await;
    app.staff_get(&format!("/v1/referrals/{to_iapt}"), &auditor, 200)
        .await;
    assert_eq!(app.count_action("referral.read.denied").await, 1);
    app.stop().await;
}

on_both_backends!(service_manager_scope);

/// The shipped config plus a second sending team (the court liaison team), holding the
/// CA-signed "unregistered" example certificate, in both agreements.
fn two_sender_config(idp: &Idp) -> String {
    let pin = unregistered_pin();
    idp.config(&format!(
        r#"
[[agencies]]
id = "coventry-court-liaison"
name = "Coventry Magistrates' Court Liaison and Diversion"
service_type = "liaison"
area = "coventry"
role = "sender"
certificate = {{ sha256 = "{pin}" }}

[[permissions]]
sender = "coventry-court-liaison"
service_types = ["cmht", "iapt", "housing", "substance_misuse"]
areas = ["coventry"]
"#
    ))
    .replace(
        "senders = [\"coventry-liaison\"]",
        "senders = [\"coventry-liaison\", \"coventry-court-liaison\"]",
    )
}

async fn accepted_id(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["referral_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn disclosures(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    staff_client()
        .post(app.staff_url("/v1/audit/disclosures"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn subject_access(backend: Backend) {
    let idp = Idp::new();
    let app = TestApp::spawn_with(backend, &two_sender_config(&idp)).await;
    // The court liaison team holds the "unregistered" example certificate.
    let court = unregistered_client();

    // Person A: the examples' Alex Example, NHS 943 476 5919.
    let first = app.submit(example_text("cmht")).await;
    let second = accepted_id(post_referral(&court, &app, example_text("iapt")).await).await;
    // The third, from the court team, gives no NHS number: found by name and birth date
    // (written differently: case and spacing do not matter).
    let mut third_doc = example("substance_misuse");
    third_doc["person"]
        .as_object_mut()
        .unwrap()
        .remove("nhs_number");
    let third = accepted_id(post_referral(&court, &app, third_doc.to_string()).await).await;
    // Person B: someone else entirely.
    let mut other = example("cmht");
    other["person"]["nhs_number"] = json!("401 023 2137");
    other["person"]["name"] = json!({"given": "Sam", "family": "Other"});
    other["person"]["date_of_birth"] = json!("1980-03-02");
    let other_id = app.submit(other.to_string()).await;
    // The CMHT reads person A's referral: that access belongs in the answer too.
    assert_eq!(
        app.view_as("coventry-cmht", &first, 200).await["referral_id"],
        first.as_str()
    );

    let auditor = idp.es256(&Idp::claims(&["auditor"], None));
    let r = disclosures(
        &app,
        &auditor,
        json!({
            "nhs_number": "9434765919",
            "name": {"given": "ALEX", "family": "  example "},
            "date_of_birth": "1991-06-14"
        }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let mut referrals: Vec<&str> = answer["referrals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    referrals.sort();
    let mut expected = vec![first.as_str(), second.as_str(), third.as_str()];
    expected.sort();
    assert_eq!(referrals, expected);
    assert_eq!(answer["disclosures"], 3);
    assert_eq!(
        answer["searched_by"],
        json!(["nhs_number", "name_and_date_of_birth"])
    );
    let items = answer["items"].as_array().unwrap();
    let senders: Vec<&str> = items
        .iter()
        .filter(|e| e["action"] == "referral.submitted")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        senders,
        [
            "agency:coventry-liaison",
            "agency:coventry-court-liaison",
            "agency:coventry-court-liaison"
        ]
    );
    assert!(
        items
            .iter()
            .any(|e| e["action"] == "referral.read" && e["referral_id"] == first.as_str()),
        "reads of the person's referrals are disclosures too"
    );
    let text = answer.to_string();
    assert!(!text.contains(&other_id), "nothing about person B");
    assert!(
        !text.contains("Alex") && !text.contains("9434765919"),
        "the log holds no identifiers"
    );

    // By NHS number alone, the referral without one is not found; by the other
    // person's number, only their referral.
    // A member name given twice is refused here too: which NHS number would count?
    let r = staff_client()
        .post(app.staff_url("/v1/audit/disclosures"))
        .bearer_auth(&auditor)
        .header("content-type", "application/json")
        .body(r#"{"nhs_number": "943 476 5919", "nhs_number": "401 023 2137"}"#)
        .send()
        .await
        .unwrap();
    let body = problem(r, 400).await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:malformed-json");
    assert_eq!(pointers(&body), ["/nhs_number"]);
    let by_nhs: Value = disclosures(&app, &auditor, json!({"nhs_number": "943 476 5919"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_nhs["disclosures"], 2);
    assert!(!by_nhs.to_string().contains(&third));
    let b: Value = disclosures(&app, &auditor, json!({"nhs_number": "4010232137"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b["referrals"], json!([other_id]));

    // Incomplete or bad identifiers: 422 with pointers; a person nobody referred: empty.
    let body = problem(
        disclosures(
            &app,
            &auditor,
            json!({"nhs_number": "1234567890", "name": {"given": "A"}}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(pointers(&body), ["/nhs_number", "/name", "/date_of_birth"]);
    let none: Value = disclosures(&app, &auditor, json!({"nhs_number": "450 557 7104"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));
    // Identifiers never go in the URL: there is no GET.
    let r = staff_client()
        .get(app.staff_url("/v1/audit/disclosures?nhs_number=9434765919"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    problem(r, 405).await;
    // Only auditors.
    let manager = idp.es256(&Idp::claims(&["service_manager"], Some("coventry-cmht")));
    problem(
        disclosures(&app, &manager, json!({"nhs_number": "9434765919"})).await,
        403,
    )
    .await;
    // Pages: a walk with limit=2 ends, and gives the same entries as one page; the
    // totals are the whole answer's on every page.
    let mut cursor = Value::Null;
    let mut walked = Vec::new();
    for _ in 0..50 {
        let answer: Value = disclosures(
            &app,
            &auditor,
            json!({"nhs_number": "9434765919", "limit": 2, "cursor": cursor}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(answer["disclosures"], 2);
        walked.extend(
            answer["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].clone()),
        );
        cursor = answer["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert!(cursor.is_null(), "the walk ends");
    let whole: Vec<Value> = by_nhs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].clone())
        .collect();
    assert_eq!(
        walked[..whole.len()],
        whole[..],
        "the same entries, in order"
    );
    let body = problem(
        disclosures(
            &app,
            &auditor,
            json!({"nhs_number": "9434765919", "cursor": "1.999999"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(pointers(&body), ["/cursor"]);
    // A cursor continues only the search it came from, not one for someone else.
    let first_page: Value = disclosures(
        &app,
        &auditor,
        json!({"nhs_number": "9434765919", "limit": 1}),
    )
    .await
    .json()
    .await
    .unwrap();
    let foreign = first_page["next_cursor"].as_str().unwrap().to_owned();
    let body = problem(
        disclosures(
            &app,
            &auditor,
            json!({"nhs_number": "4010232137", "cursor": foreign}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(pointers(&body), ["/cursor"]);
    // Each answered request is an audit entry under each key it searched by: 2 for the
    // first (NHS number and name), 1 for each of the 3 by number and for each page
    // walked; the 422s are not queries.
    let walked_pages = app.count_action("audit.disclosures").await - 6;
    assert!(walked_pages >= 2, "{walked_pages}");
    // A later request by name and birth date alone finds that the first was answered.
    let by_name: Value = disclosures(
        &app,
        &auditor,
        json!({"name": {"given": "Alex", "family": "Example"}, "date_of_birth": "1991-06-14"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        by_name["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "audit.disclosures"),
        "earlier subject access requests are in the answer"
    );
    app.stop().await;
}

on_both_backends!(subject_access);

async fn events_and_export(backend: Backend) {
    let idp = Idp::new();
    let app = TestApp::spawn_with(backend, &idp.config("")).await;
    let ids = [
        app.submit(example_text("cmht")).await,
        app.submit(example_text("iapt")).await,
        app.submit(example_text("cmht")).await,
    ];
    app.view_as("coventry-iapt", &ids[1], 200).await;
    let auditor = idp.es256(&Idp::claims(&["auditor"], None));

    // Filters: action (exact and family), referral, agency; and keyset pages.
    let page = |path: String| {
        let app = &app;
        let auditor = auditor.clone();
        async move { app.staff_get(&path, &auditor, 200).await }
    };
    let actions = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let submitted = page("/v1/audit/events?action=referral.submitted".into()).await;
    assert_eq!(submitted["items"].as_array().unwrap().len(), 3);
    let family = page("/v1/audit/events?action=referral.*".into()).await;
    assert_eq!(
        actions(&family),
        [
            "referral.submitted",
            "referral.submitted",
            "referral.submitted",
            "referral.read"
        ]
    );
    let one = page(format!("/v1/audit/events?referral={}", ids[1])).await;
    assert_eq!(actions(&one), ["referral.submitted", "referral.read"]);
    let iapt = page("/v1/audit/events?agency=coventry-iapt&action=referral.*".into()).await;
    assert_eq!(actions(&iapt), ["referral.submitted", "referral.read"]);
    // The agency filter finds who looked at an agency's data: a staff read of one of its
    // referrals, and a staff report over it.
    app.staff_get(&format!("/v1/referrals/{}", ids[0]), &auditor, 200)
        .await;
    app.staff_get("/v1/reports/sla?agency=coventry-cmht", &auditor, 200)
        .await;
    let cmht = page("/v1/audit/events?agency=coventry-cmht&action=referral.read".into()).await;
    assert_eq!(cmht["items"][0]["actor"], "staff:ig.lead@example.org");
    assert_eq!(cmht["items"][0]["referral_id"], ids[0].as_str());
    let reports = page("/v1/audit/events?agency=coventry-cmht&action=report.sla".into()).await;
    assert_eq!(reports["items"][0]["recipient"], "coventry-cmht");
    // A walk page by page (even one entry at a time, while each page adds an entry of
    // its own) ends, and covers the log as it was when it began.
    let head = app.store.audit_head().await.unwrap().0;
    let walk = |query: String| {
        let page = &page;
        async move {
            let mut entries: Vec<(i64, String)> = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..200 {
                let path = match &cursor {
                    None => format!("/v1/audit/events?limit=1{query}"),
                    Some(c) => format!("/v1/audit/events?limit=1{query}&cursor={c}"),
                };
                let p = page(path).await;
                entries.extend(p["items"].as_array().unwrap().iter().map(|e| {
                    (
                        e["seq"].as_i64().unwrap(),
                        e["at"].as_str().unwrap().to_owned(),
                    )
                }));
                cursor = p["next_cursor"].as_str().map(str::to_owned);
                if cursor.is_none() {
                    return entries;
                }
            }
            panic!("the walk does not end");
        }
    };
    let queried_before_walks = app.count_action("audit.queried").await;
    let entries = walk(String::new()).await;
    let seqs: Vec<i64> = entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    // A period in the middle of the log: exactly the entries logged in it, page by page.
    let parse = |at: &str| {
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let (from, to) = (&entries[1].1, &entries[entries.len() - 2].1);
    let expected: Vec<i64> = entries
        .iter()
        .filter(|(_, at)| parse(from) <= parse(at) && parse(at) < parse(to))
        .map(|(seq, _)| *seq)
        .collect();
    assert!(!expected.is_empty() && expected.len() < entries.len());
    let enc = |t: &str| t.replace(':', "%3A").replace('+', "%2B");
    let within: Vec<i64> = walk(format!("&from={}&to={}", enc(from), enc(to)))
        .await
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(within, expected);
    let walked_pages = app.count_action("audit.queried").await - queried_before_walks;
    let future = page("/v1/audit/events?from=2999-01-01".into()).await;
    assert_eq!(future["items"], json!([]));
    for bad in [
        "action=referral.sent",
        "from=yesterday",
        "from=2026-02-01&to=2026-01-01",
        "limit=0",
        "cursor=abc",
        "cursor=3.999999",
        "referral=not-an-id",
        "agency=nowhere",
    ] {
        let body = app
            .staff_get(&format!("/v1/audit/events?{bad}"), &auditor, 400)
            .await;
        assert_eq!(
            body["type"], "urn:referral-gateway:problem:bad-query",
            "{bad}"
        );
    }

    // NDJSON export: every entry up to the head, a chain whose links hold.
    let head_before = app.store.audit_head().await.unwrap().0;
    let r = staff_response(&app, "/v1/audit/export?format=ndjson", Some(&auditor)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as i64, head_before);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(
            pair[1]["seq"].as_i64().unwrap(),
            pair[0]["seq"].as_i64().unwrap() + 1
        );
    }
    // CSV export with a header row, one line per entry.
    let r = staff_response(&app, "/v1/audit/export?format=csv", Some(&auditor)).await;
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("seq,at,at_micros,actor,action,"));
    assert_eq!(
        csv.lines().count() as i64,
        head_before + 2,
        "header + entries incl. the NDJSON export's"
    );
    app.staff_get("/v1/audit/export?format=xml", &auditor, 400)
        .await;
    // Both exports pass the offline checks docs/governance.md gives, as written.
    governance_checks_pass(&text, &csv);

    // Each query and export is itself in the log, and the whole log still verifies.
    assert_eq!(app.count_action("audit.exported").await, 2);
    assert_eq!(
        app.count_action("audit.queried").await,
        4 + walked_pages + 1 + 2
    );
    // The staff listener answers liveness and keys to anyone, and nothing more.
    assert_eq!(staff_response(&app, "/healthz", None).await.status(), 200);
    assert_eq!(staff_response(&app, "/v1/keys", None).await.status(), 200);
    problem(staff_response(&app, "/readyz", None).await, 404).await;
    let key = signing_key();
    referral_gateway::governance::verify::verify(&app.store, &[key.public().clone()])
        .await
        .expect("chain verifies");
    app.stop().await;
}

on_both_backends!(events_and_export);

/// Runs the Python checks of docs/governance.md ("Checking an export away from the
/// gateway"), the NDJSON one and then the CSV one, on these exports.
fn governance_checks_pass(ndjson: &str, csv: &str) {
    let doc = std::fs::read_to_string(root().join("docs/governance.md")).unwrap();
    let section = doc
        .split("### Checking an export away from the gateway")
        .nth(1)
        .expect("the section");
    let scripts: Vec<&str> = section
        .split("```python\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .take(2)
        .collect();
    assert_eq!(scripts.len(), 2, "an NDJSON and a CSV check");
    let dir = tempfile::tempdir().unwrap();
    for (script, (name, export)) in scripts
        .iter()
        .zip([("export.ndjson", ndjson), ("export.csv", csv)])
    {
        let file = dir.path().join(name);
        std::fs::write(&file, export).unwrap();
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("export chain intact"),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A stand-in identity provider's JWKS endpoint over HTTPS (the development server
/// certificate), serving whatever document the test puts in it.
async fn jwks_endpoint(
    document: std::sync::Arc<std::sync::Mutex<String>>,
) -> (u16, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpResponse, web};
    let (listener, tls) = dev_https_listener();
    let port = listener.local_addr().unwrap().port();
    let handle = serve_https!(listener, tls, move || {
        let document = document.clone();
        App::new().route(
            "/jwks",
            web::get().to(move || {
                let text = document.lock().unwrap().clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(text)
                }
            }),
        )
    });
    (port, handle)
}

async fn status_within(app: &TestApp, token: &str, want: u16, seconds: u64) -> bool {
    let started = std::time::Instant::now();
    loop {
        if staff_response(app, "/v1/audit/events?limit=1", Some(token))
            .await
            .status()
            == want
        {
            return true;
        }
        if started.elapsed() > std::time::Duration::from_secs(seconds) {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn keys_from_a_jwks_url_are_fetched_and_follow_rotation() {
    let (key_a, jwk_a) = es256_key("idp-a");
    let (key_b, jwk_b) = es256_key("idp-b");
    let document = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [jwk_a]}).to_string()));
    let (port, idp_server) = jwks_endpoint(document.clone()).await;
    let config = shipped_config_text().replace(
        &format!("jwks_file = \"{ROOT}/certs-example/staff-jwks.json\""),
        &format!(
            "jwks_url = \"https://localhost:{port}/jwks\"\njwks_ca = \"{ROOT}/certs-example/ca.crt\""
        ),
    );
    assert!(config.contains("jwks_url"));
    let app = TestApp::spawn_with(Backend::Sqlite, &config).await;
    let claims = Idp::claims(&["auditor"], None);
    let token_a = sign_es256(&key_a, "idp-a", &claims);
    let token_b = sign_es256(&key_b, "idp-b", &claims);
    assert!(
        status_within(&app, &token_a, 200, 10).await,
        "fetched at start"
    );

    // The provider rotates to key B: the first B token names an unknown key (401) and
    // makes the gateway fetch again; then B works and A, no longer published, does not.
    *document.lock().unwrap() = json!({"keys": [jwk_b]}).to_string();
    assert_eq!(
        staff_response(&app, "/v1/audit/events", Some(&token_b))
            .await
            .status(),
        401
    );
    assert!(
        status_within(&app, &token_b, 200, 15).await,
        "refetched after an unknown kid"
    );
    assert_eq!(
        staff_response(&app, "/v1/audit/events", Some(&token_a))
            .await
            .status(),
        401
    );
    app.stop().await;
    idp_server.stop(true).await;
}
