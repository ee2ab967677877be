//! Information sharing agreements: refusals with their reasons and audit entries, and
//! minimisation.

use crate::common::*;
use serde_json::{Value, json};

async fn refusals(backend: Backend) {
    // No agreement covers CMHT referrals (only the housing one is configured).
    let text = shipped_config_text();
    let start = text
        .find("[[sharing_agreements]]\nid = \"coventry-ld-health-2026\"")
        .unwrap();
    let end = text
        .find("[[sharing_agreements]]\nid = \"coventry-ld-housing")
        .unwrap();
    let housing_only = format!("{}{}", &text[..start], &text[end..]);
    let app = TestApp::spawn_with(backend, &housing_only).await;
    let body = app
        .submit_as("coventry-liaison", example_text("cmht"), 403)
        .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:sharing-refused");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no information sharing agreement"),
        "{body}"
    );
    // The audit entry holds a fixed reason code.
    let (action, detail) = app.last_audit().await;
    assert_eq!(action, "referral.refused");
    assert_eq!(detail, "sharing-refused:no-agreement");
    app.stop().await;

    // The agreement has expired.
    let expired = shipped_config_text().replacen(
        "effective_to = \"2027-12-31\"",
        "effective_to = \"2026-06-30\"",
        1,
    );
    let app = TestApp::spawn_with(backend, &expired).await;
    let body = app
        .submit_as("coventry-liaison", example_text("iapt"), 403)
        .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("ended on 2026-06-30"),
        "{body}"
    );
    assert_eq!(
        app.last_audit().await.1,
        "sharing-refused:agreement-expired"
    );
    // The refusal names the recipient and the agreement, so it is found by either.
    {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT recipient, isa_id FROM audit_log WHERE action = 'referral.refused' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        assert_eq!(
            row.get::<Option<String>, _>("recipient").as_deref(),
            Some("coventry-iapt")
        );
        assert_eq!(
            row.get::<Option<String>, _>("isa_id").as_deref(),
            Some("coventry-ld-health-2026")
        );
    }
    app.stop().await;

    let app = TestApp::spawn(backend).await;
    // No consent, with a justification the agreement does not permit.
    let mut doc = example("cmht");
    doc["consent"] = json!({
        "given": false,
        "recorded_by": "J. Practitioner",
        "recorded_at": "2026-11-23T10:15:00Z",
        "sharing_without_consent": {"justification": "legal_duty", "lawful_basis": "x", "authorised_by": "y"}
    });
    let body = app
        .submit_as("coventry-liaison", doc.to_string(), 403)
        .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("does not permit sharing without consent for 'legal_duty'"),
        "{body}"
    );
    assert_eq!(
        app.last_audit().await.1,
        "sharing-refused:justification-not-permitted"
    );

    // A recorded objection, with consent otherwise given: blocked.
    let mut doc = example("cmht");
    doc["consent"]["objection"] =
        json!({"recorded_at": "2026-11-20T09:00:00Z", "recorded_by": "Custody nurse"});
    let body = app
        .submit_as("coventry-liaison", doc.to_string(), 403)
        .await;
    assert!(
        body["detail"].as_str().unwrap().contains("objection"),
        "{body}"
    );
    assert_eq!(app.last_audit().await.1, "sharing-refused:objection");

    // The objection overridden for safeguarding, which the agreement permits: accepted,
    // and the audit entry says so.
    let mut doc = example("cmht");
    doc["consent"] = json!({
        "given": false,
        "recorded_by": "J. Practitioner",
        "recorded_at": "2026-11-23T10:15:00Z",
        "objection": {"recorded_at": "2026-11-20T09:00:00Z"},
        "sharing_without_consent": {"justification": "safeguarding", "lawful_basis": "DPA 2018 Sch. 1 para 18", "authorised_by": "Duty senior"}
    });
    app.submit_as("coventry-liaison", doc.to_string(), 202)
        .await;
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT action, isa_id, lawful_basis, consent FROM audit_log ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("action"), "referral.submitted");
    assert_eq!(
        row.get::<Option<String>, _>("isa_id").as_deref(),
        Some("coventry-ld-health-2026")
    );
    assert!(
        row.get::<Option<String>, _>("lawful_basis")
            .unwrap()
            .contains("Art. 9(2)(h)")
    );
    assert_eq!(
        row.get::<Option<String>, _>("consent").as_deref(),
        Some("not_given:safeguarding+objection_overridden")
    );

    // Housing without consent: the duty to refer needs it (schema) and the audit says why.
    let mut doc = example("housing");
    doc["consent"]["given"] = json!(false);
    let body = app
        .submit_as("coventry-liaison", doc.to_string(), 422)
        .await;
    assert!(pointers(&body).contains(&"/consent/given".to_owned()));
    assert!(app.last_audit().await.1.contains("/consent/given"));
    app.stop().await;
}

on_both_backends!(refusals);

/// Minimisation: withheld fields never reach the store or the recipient; an agreement
/// that says `on_excess = "reject"` refuses instead, listing the pointers.
#[tokio::test]
async fn minimisation_withholds_or_rejects() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let receipt = app
        .submit_as("coventry-liaison", example_text("housing"), 202)
        .await;
    assert_eq!(receipt["withheld"], json!(["/person/gp"]));
    let id = referral_gateway::domain::ReferralId::parse(receipt["referral_id"].as_str().unwrap())
        .unwrap();
    let stored: Value =
        serde_json::from_str(&app.store.referral_payload(id).await.unwrap().unwrap()).unwrap();
    assert!(stored["person"].get("gp").is_none());
    assert_eq!(
        stored["needs"][0]["type"], "housing",
        "housing needs are housing data"
    );
    assert_eq!(stored["person"]["name"]["family"], "Example");
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT withheld, categories FROM audit_log WHERE action = 'referral.submitted'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("withheld"), r#"["/person/gp"]"#);
    // The entry names the field categories the housing authority received: no health.
    let categories: Vec<String> =
        serde_json::from_str(&row.get::<String, _>("categories")).unwrap();
    assert!(
        categories.contains(&"identity".to_owned()),
        "{categories:?}"
    );
    assert!(categories.contains(&"housing".to_owned()), "{categories:?}");
    assert!(!categories.contains(&"health".to_owned()), "{categories:?}");
    app.stop().await;

    // The housing agreement switched to on_excess = "reject".
    let rejecting = {
        let text = shipped_config_text();
        let housing = text.find("id = \"coventry-ld-housing").unwrap();
        let (head, tail) = text.split_at(housing);
        format!(
            "{head}{}",
            tail.replacen("on_excess = \"remove\"", "on_excess = \"reject\"", 1)
        )
    };
    let app = TestApp::spawn_with(Backend::Sqlite, &rejecting).await;
    let body = app
        .submit_as("coventry-liaison", example_text("housing"), 422)
        .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:excess-data");
    assert_eq!(pointers(&body), ["/person/gp"]);
    // A health need among housing ones is excess too, named by its index.
    let mut doc = example("housing");
    doc["needs"] = json!([{"type": "housing"}, {"type": "mental_health", "summary": "Low mood."}]);
    let body = app
        .submit_as("coventry-liaison", doc.to_string(), 422)
        .await;
    assert_eq!(pointers(&body), ["/needs/1", "/person/gp"]);
    // Without the excess fields it goes through, with nothing withheld.
    let mut doc = example("housing");
    doc["person"].as_object_mut().unwrap().remove("gp");
    let receipt = app
        .submit_as("coventry-liaison", doc.to_string(), 202)
        .await;
    assert_eq!(receipt["withheld"], json!([]));
    app.stop().await;
}

/// The shipped config (Coventry) plus a second area: Warwickshire's liaison team (holding
/// the CA-signed "unregistered" example certificate), Warwickshire's CMHT and their own
/// agreement. Coventry's permission and agreements name only Coventry.
fn two_area_config() -> String {
    let pin = unregistered_pin();
    shipped_config_text()
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

fn cmht_referral(destination: Value) -> String {
    let mut doc = example("cmht");
    doc["destination"] = destination;
    doc.to_string()
}

async fn last_isa(app: &TestApp) -> Option<String> {
    use sqlx::Row;
    sqlx::query("SELECT isa_id FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get("isa_id")
}

/// Agreements and permissions name service types within areas: onboarding a second area
/// does not let the first area's teams refer into it.
async fn areas_bound_agreements_and_permissions(backend: Backend) {
    // The Warwickshire liaison team holds the "unregistered" example certificate.
    let warwickshire = unregistered_client();
    let by_area = json!({"service_type": "cmht", "area": "warwickshire"});
    let by_id = json!({"agency_id": "warwickshire-cmht"});

    let app = TestApp::spawn_with(backend, &two_area_config()).await;
    // Coventry's permission names Coventry: refused before any agreement is consulted,
    // whether the destination is an area or an agency id.
    for destination in [&by_area, &by_id] {
        let body = app
            .submit_as("coventry-liaison", cmht_referral(destination.clone()), 403)
            .await;
        assert_eq!(body["type"], "urn:referral-gateway:problem:not-permitted");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("'cmht'") && detail.contains("'warwickshire'"),
            "{body}"
        );
        let (action, detail) = app.last_audit().await;
        assert_eq!(action, "referral.refused");
        assert_eq!(detail, "not-permitted:cmht");
    }
    // Warwickshire's own team, under its own agreement.
    for destination in [&by_area, &by_id] {
        let r = post_referral(&warwickshire, &app, cmht_referral(destination.clone())).await;
        assert_eq!(r.status(), 202);
        assert_eq!(
            r.json::<Value>().await.unwrap()["isa_id"],
            "warwickshire-ld-health-2026"
        );
    }
    // Warwickshire's team may not refer into Coventry either.
    let body = problem(
        post_referral(&warwickshire, &app, example_text("cmht")).await,
        403,
    )
    .await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:not-permitted");
    // Coventry to Coventry still works, under the Coventry agreement.
    app.submit_as("coventry-liaison", example_text("cmht"), 202)
        .await;
    assert_eq!(
        last_isa(&app).await.as_deref(),
        Some("coventry-ld-health-2026")
    );
    app.stop().await;

    // With Coventry's permission widened to Warwickshire, the agreements still say no:
    // the Coventry agreement covers CMHTs in Coventry only, and Warwickshire's names
    // Warwickshire's team as its only sender.
    let widened = two_area_config().replacen(
        "service_types = [\"cmht\", \"iapt\", \"housing\", \"substance_misuse\"]\nareas = [\"coventry\"]",
        "service_types = [\"cmht\", \"iapt\", \"housing\", \"substance_misuse\"]\nareas = [\"coventry\", \"warwickshire\"]",
        1,
    );
    assert_ne!(widened, two_area_config());
    let app = TestApp::spawn_with(backend, &widened).await;
    for destination in [&by_area, &by_id] {
        let body = app
            .submit_as("coventry-liaison", cmht_referral(destination.clone()), 403)
            .await;
        assert_eq!(
            body["type"], "urn:referral-gateway:problem:sharing-refused",
            "{body}"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("no information sharing agreement covers sharing from 'coventry-liaison' with 'warwickshire-cmht'"),
            "{body}"
        );
        let (action, _) = app.last_audit().await;
        assert_eq!(action, "referral.refused");
    }
    app.submit_as("coventry-liaison", example_text("cmht"), 202)
        .await;
    app.stop().await;
}

on_both_backends!(areas_bound_agreements_and_permissions);
