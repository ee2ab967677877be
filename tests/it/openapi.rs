//! The OpenAPI documents: what each listener serves at `/v1/openapi.json` is exactly the
//! committed `docs/openapi/<listener>.json` and what `referral-gateway openapi` prints, and
//! every operation in it is routed (no documented path answers 404, no documented method
//! 405), while the methods a path lacks answer 405 with an `Allow` header.

use serde_json::Value;

use crate::common::*;

/// Regenerate with `cargo run -- openapi --listener <listener> > docs/openapi/<listener>.json`.
fn committed(listener: &str) -> String {
    std::fs::read_to_string(root().join(format!("docs/openapi/{listener}.json")))
        .unwrap_or_else(|e| panic!("docs/openapi/{listener}.json: {e}"))
}

fn assert_same(listener: &str, served: &str) {
    let committed = committed(listener);
    assert!(
        served == committed,
        "docs/openapi/{listener}.json differs from what the {listener} listener serves; \
         regenerate it with `cargo run -- openapi --listener {listener} > docs/openapi/{listener}.json`"
    );
}

#[tokio::test]
async fn served_documents_are_the_committed_ones() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let response = agency_client("coventry-liaison")
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let agency = response.text().await.unwrap();
    assert_same("agency", &agency);

    // Public on the staff listener: no token.
    let response = staff_response(&app, "/v1/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    let staff = response.text().await.unwrap();
    assert_same("staff", &staff);

    // The command prints the same.
    for (listener, served) in [("agency", &agency), ("staff", &staff)] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
            .args(["openapi", "--listener", listener])
            .output()
            .unwrap();
        assert!(output.status.success());
        assert_eq!(&String::from_utf8(output.stdout).unwrap(), served);
    }

    // Every documented operation is routed on its listener, and an undocumented method on
    // a documented path is 405 with the documented methods in `Allow`.
    let agency_doc: Value = serde_json::from_str(&agency).unwrap();
    let client = agency_client("coventry-liaison");
    for (path, item) in agency_doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "01a20885-12a2-706a-823d-d33c06472879");
        let mut documented: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        documented.sort();
        for method in &documented {
            let response = client
                .request(method.parse().unwrap(), app.url(&concrete))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert!(
                status != 405
                    && !(status == 404
                        && body.contains("No such resource")
                        && !path.contains("{id}")),
                "{method} {path}: {status} {body}"
            );
        }
        for method in ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
            let response = client
                .request(method.parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            let allow = response.headers()["allow"].to_str().unwrap().to_owned();
            let mut allowed: Vec<String> = allow.split(", ").map(str::to_owned).collect();
            allowed.sort();
            assert_eq!(allowed, documented, "Allow on {path}");
        }
    }
    app.stop().await;
}

/// What Schemathesis found, fixed: an empty `agency=` is no filter on the agency listener
/// (as on the staff listener) rather than a `400`, and an SLA report given only `to`
/// covers the 30 days up to it rather than refusing a `to` older than 30 days.
#[tokio::test]
async fn contract_findings_stay_fixed() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.submit(example_text("cmht")).await;

    let page = app
        .get_as("coventry-liaison", "/v1/referrals?agency=&status=", 200)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let report = app
        .get_as("coventry-liaison", "/v1/reports/sla?agency=", 200)
        .await;
    assert_eq!(report["agency"], "coventry-liaison");
    assert_eq!(report["rows"][0]["referrals"], 1);
    let other = app
        .get_as(
            "coventry-liaison",
            "/v1/referrals?agency=coventry-cmht",
            400,
        )
        .await;
    assert_eq!(other["type"], "urn:referral-gateway:problem:bad-query");

    let report = app
        .get_as("coventry-liaison", "/v1/reports/sla?to=2000-01-01", 200)
        .await;
    assert_eq!(report["from"], "1999-12-03T00:00:00Z");
    assert_eq!(report["to"], "2000-01-02T00:00:00Z");
    assert_eq!(report["rows"], serde_json::json!([]));
    app.stop().await;
}
