//! Referral lifecycle events over mTLS, with status messages on the sender's queue.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

async fn full_lifecycle(backend: Backend) {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(backend, AMQP_URL, &namespace).await;
    let id = app.submit(example_text("cmht")).await;
    let delivered = broker
        .take(
            &broker.topology.referral_queue("coventry-cmht"),
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(delivered.len(), 1);

    let today = time::OffsetDateTime::now_utc().date().to_string();
    let steps = [
        (event("acknowledged", json!({})), "acknowledged"),
        (
            event(
                "accepted",
                json!({"detail": "Allocated to the duty worker."}),
            ),
            "accepted",
        ),
        (
            event(
                "first_contact",
                json!({"contact": {"outcome": "not_attended", "date": today}}),
            ),
            "first_contact",
        ),
        (
            event(
                "first_contact",
                json!({"contact": {"outcome": "attended", "date": today}}),
            ),
            "first_contact",
        ),
        (
            event("closed", json!({"outcome": "treatment_completed"})),
            "closed",
        ),
    ];
    for (e, status) in &steps {
        let record = app.post_event_as("coventry-cmht", &id, e, 201).await;
        assert_eq!(record["status"], *status);
        assert_eq!(record["referral_id"], id.as_str());
        assert_eq!(record["event_id"], e["event_id"]);
        assert_eq!(record["actor_agency"], "coventry-cmht");
    }

    // The sender's status queue has one message per event, in order.
    let status_queue = broker.topology.status_queue("coventry-liaison");
    let messages = broker.take(&status_queue, 5, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 5);
    let types: Vec<String> = messages
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.data).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "acknowledged",
            "accepted",
            "first_contact",
            "first_contact",
            "closed"
        ]
    );
    let first: Value = serde_json::from_slice(&messages[0].data).unwrap();
    assert_eq!(first["referral_id"], id.as_str());
    let ids: std::collections::BTreeSet<_> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "each status message has its own message_id");
    assert_eq!(
        messages[0].properties.kind().as_ref().unwrap().as_str(),
        "status"
    );
    assert_eq!(
        header(&messages[0], "referral_id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(messages[4].routing_key.as_str(), "coventry-liaison.closed");

    // The timeline, for sender and recipient alike.
    for agency in ["coventry-liaison", "coventry-cmht"] {
        let view = app.view_as(agency, &id, 200).await;
        assert_eq!(view["status"], "closed");
        let timeline = view["timeline"].as_array().unwrap();
        assert_eq!(timeline.len(), 5);
        assert_eq!(timeline[1]["detail"], "Allocated to the duty worker.");
        assert_eq!(timeline[2]["contact"]["outcome"], "not_attended");
    }
    // Nothing after closed.
    let body = app
        .post_event_as("coventry-cmht", &id, &event("acknowledged", json!({})), 409)
        .await;
    assert_eq!(
        body["type"],
        "urn:referral-gateway:problem:illegal-transition"
    );
    app.stop().await;
    broker.cleanup().await;
}

on_both_backends!(full_lifecycle);

async fn refusals_and_retries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.submit(example_text("cmht")).await;

    // first_contact before accepted.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let contact = event(
        "first_contact",
        json!({"contact": {"outcome": "attended", "date": today}}),
    );
    let body = app.post_event_as("coventry-cmht", &id, &contact, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("accept the referral first"),
        "{body}"
    );
    // A contact dated before the referral was received.
    let before = event(
        "first_contact",
        json!({"contact": {"outcome": "attended", "date": "2020-01-01"}}),
    );
    let body = app.post_event_as("coventry-cmht", &id, &before, 422).await;
    assert_eq!(body["errors"][0]["pointer"], "/contact/date", "{body}");
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("before the day the referral was received")),
        "{body}"
    );

    // A third agency cannot tell the referral exists; a bad id is the same 404.
    app.post_event_as("coventry-iapt", &id, &event("acknowledged", json!({})), 404)
        .await;
    app.post_event_as(
        "coventry-cmht",
        &uuid::Uuid::now_v7().to_string(),
        &event("acknowledged", json!({})),
        404,
    )
    .await;
    app.post_event_as(
        "coventry-cmht",
        "nope",
        &event("acknowledged", json!({})),
        404,
    )
    .await;

    // The sender may not accept; the recipient may not withdraw.
    let body = app
        .post_event_as("coventry-liaison", &id, &event("accepted", json!({})), 403)
        .await;
    assert!(body["detail"].as_str().unwrap().contains("recipient"));
    let withdraw = event(
        "withdrawn",
        json!({"withdrawal_reason": "remanded_in_custody"}),
    );
    app.post_event_as("coventry-cmht", &id, &withdraw, 403)
        .await;

    // Schema errors with pointers; occurred_at in the future.
    let bad = json!({"event_id": "x", "type": "declined"});
    let body = app.post_event_as("coventry-cmht", &id, &bad, 422).await;
    assert_eq!(pointers(&body), ["/event_id", "/reason_code"]);
    let future = event(
        "acknowledged",
        json!({"occurred_at": "2999-01-01T00:00:00Z"}),
    );
    let body = app.post_event_as("coventry-cmht", &id, &future, 422).await;
    assert_eq!(pointers(&body), ["/occurred_at"]);

    // Idempotent retry: same event id and body -> the original record, once.
    let ack = event("acknowledged", json!({}));
    let first = app.post_event_as("coventry-cmht", &id, &ack, 201).await;
    let retry = post_event(&app, "coventry-cmht", &id, &ack).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    // Same event id, different body.
    let mut changed = ack.clone();
    changed["detail"] = json!("changed");
    let body = app.post_event_as("coventry-cmht", &id, &changed, 409).await;
    assert_eq!(
        body["type"],
        "urn:referral-gateway:problem:idempotency-conflict"
    );

    // A decline closes the door to everything else, including withdrawal.
    let decline = event(
        "declined",
        json!({"reason_code": "out_of_area", "detail": "Lives in Warwick."}),
    );
    app.post_event_as("coventry-cmht", &id, &decline, 201).await;
    app.post_event_as("coventry-liaison", &id, &withdraw, 409)
        .await;

    let view = app.view_as("coventry-liaison", &id, 200).await;
    assert_eq!(view["status"], "declined");
    let timeline = view["timeline"].as_array().unwrap();
    assert_eq!(
        timeline.len(),
        2,
        "refused and replayed events are not in the timeline"
    );
    assert_eq!(timeline[1]["reason_code"], "out_of_area");

    // Every refusal is in the audit log, with a fixed code and the referral's id (when
    // the path holds one), never the caller's values; replays and accepted events are
    // not refusals.
    use sqlx::Row;
    let refused: Vec<(String, Option<String>, String)> = sqlx::query(
        "SELECT actor, referral_id, detail FROM audit_log WHERE action = 'event.refused' ORDER BY seq",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("actor"), r.get("referral_id"), r.get("detail")))
    .collect();
    let expected = [
        (
            "agency:coventry-cmht",
            true,
            "illegal-transition:received:first_contact",
        ),
        (
            "agency:coventry-cmht",
            true,
            "schema-validation: /contact/date",
        ),
        ("agency:coventry-iapt", true, "not-found"),
        ("agency:coventry-cmht", true, "not-found"),
        ("agency:coventry-cmht", false, "not-found"),
        ("agency:coventry-liaison", true, "wrong-party:accepted"),
        ("agency:coventry-cmht", true, "wrong-party:withdrawn"),
        (
            "agency:coventry-cmht",
            true,
            "schema-validation: /event_id /reason_code",
        ),
        (
            "agency:coventry-cmht",
            true,
            "schema-validation: /occurred_at",
        ),
        ("agency:coventry-cmht", true, "event-id-conflict"),
        (
            "agency:coventry-liaison",
            true,
            "illegal-transition:declined:withdrawn",
        ),
    ];
    assert_eq!(refused.len(), expected.len(), "{refused:?}");
    for ((actor, referral, detail), (want_actor, has_id, want_detail)) in
        refused.iter().zip(expected)
    {
        assert_eq!((actor.as_str(), detail.as_str()), (want_actor, want_detail));
        assert_eq!(referral.is_some(), has_id, "{detail}");
    }
    assert_eq!(refused[0].1.as_deref(), Some(id.as_str()));
    app.stop().await;
}

on_both_backends!(refusals_and_retries);

/// An agency may post at most 200 events on a referral (its timeline is read whole): the
/// 201st is refused with `409 too-many-events`, written nowhere, unless it is the event
/// that ends the referral; a retry of an event already recorded is still answered as its
/// replay; the other agency's allowance is its own, so a sender's follow-ups never stop
/// the recipient's status changes.
async fn events_per_referral_are_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.submit(example_text("cmht")).await;
    let note = event("follow_up", json!({"detail": "Chased by phone."}));
    app.post_event_as("coventry-liaison", &id, &note, 201).await;
    // 199 more, written straight into the table (posting them would only be slower).
    let recorded_at = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    for n in 0..199 {
        sqlx::query(
            "INSERT INTO referral_events (id, referral_id, event_id, actor_agency, event_type, status_after, body, \
             request_sha256, occurred_at, recorded_at) VALUES ($1, $2, $3, 'coventry-liaison', 'follow_up', 'received', '{}', 'x', $4, $4)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&id)
        .bind(format!("filler-{n}"))
        .bind(recorded_at)
        .execute(app.store.pool())
        .await
        .unwrap();
    }
    let more = event("follow_up", json!({"detail": "Chased again."}));
    let body = app.post_event_as("coventry-liaison", &id, &more, 409).await;
    assert_eq!(body["type"], "urn:referral-gateway:problem:too-many-events");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("200 events")),
        "{body}"
    );
    // The first note's retry is still its replay.
    app.post_event_as("coventry-liaison", &id, &note, 200).await;
    // The recipient's allowance is its own.
    app.post_event_as("coventry-cmht", &id, &event("acknowledged", json!({})), 201)
        .await;
    // The event that ends the referral is taken even at the bound (there is only one):
    // a referral must always be able to end.
    let withdraw = event("withdrawn", json!({"withdrawal_reason": "other"}));
    app.post_event_as("coventry-liaison", &id, &withdraw, 201)
        .await;
    let after = app
        .post_event_as(
            "coventry-liaison",
            &id,
            &event("follow_up", json!({"detail": "After the end."})),
            409,
        )
        .await;
    assert_eq!(
        after["type"],
        "urn:referral-gateway:problem:illegal-transition"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM referral_events WHERE referral_id = $1",
            &id
        )
        .await,
        202
    );
    app.stop().await;
}

on_both_backends!(events_per_referral_are_bounded);

/// Follow-ups and withdrawals from the sender reach the recipient's queue.
#[tokio::test]
async fn withdrawal_reaches_the_recipient() {
    let namespace = unique_namespace();
    let broker = Broker::new(&namespace).await;
    let app = TestApp::spawn_delivering(Backend::Sqlite, AMQP_URL, &namespace).await;
    let id = app.submit(example_text("substance_misuse")).await;
    let queue = broker.topology.referral_queue("coventry-substance-misuse");
    assert_eq!(
        broker.take(&queue, 1, Duration::from_secs(20)).await.len(),
        1
    );

    let note = event(
        "follow_up",
        json!({"detail": "Chased by phone; GP details supplied."}),
    );
    app.post_event_as("coventry-liaison", &id, &note, 201).await;
    let withdraw = event(
        "withdrawn",
        json!({"withdrawal_reason": "remanded_in_custody"}),
    );
    let record = app
        .post_event_as("coventry-liaison", &id, &withdraw, 201)
        .await;
    assert_eq!(record["status"], "withdrawn");

    let messages = broker.take(&queue, 2, Duration::from_secs(20)).await;
    let kinds: Vec<String> = messages
        .iter()
        .map(|m| m.properties.kind().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["follow_up", "withdrawal"]);
    let body: Value = serde_json::from_slice(&messages[1].data).unwrap();
    assert_eq!(body["referral_id"], id.as_str());
    assert_eq!(body["withdrawal_reason"], "remanded_in_custody");
    // The sender's status queue hears of the withdrawal (not of its own note).
    let status = broker
        .take(
            &broker.topology.status_queue("coventry-liaison"),
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(status.len(), 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&status[0].data).unwrap()["type"],
        "withdrawn"
    );
    // The recipient got the note's text; the database holds it sealed only (the event
    // records and their messages' payloads, each with its key id), and the parties'
    // timeline opens it.
    let note_message: Value = serde_json::from_slice(&messages[0].data).unwrap();
    assert_eq!(
        note_message["detail"],
        "Chased by phone; GP details supplied."
    );
    use sqlx::Row;
    let stored = sqlx::query(
        "SELECT body AS text, body_key_id AS key_id FROM referral_events WHERE referral_id = $1 \
         UNION ALL SELECT payload AS text, payload_key_id AS key_id FROM outbox WHERE referral_id = $1 AND payload IS NOT NULL",
    )
    .bind(&id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(stored.len(), 2 + 3, "two events, three messages of theirs");
    for row in &stored {
        let text: String = row.get("text");
        let key_id: Option<String> = row.get("key_id");
        assert!(key_id.is_some(), "sealed: {text}");
        assert!(
            !text.contains("Chased") && !text.contains("remanded"),
            "{text}"
        );
    }
    let view = app.view_as("coventry-substance-misuse", &id, 200).await;
    assert_eq!(
        view["timeline"][0]["detail"],
        "Chased by phone; GP details supplied."
    );
    app.stop().await;
    broker.cleanup().await;
}

/// `next_cursor` is given only when another page exists: a page that is exactly full
/// with nothing after it is the last one.
#[tokio::test]
async fn a_full_last_page_has_no_cursor() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(app.submit(example_text("cmht")).await);
    }
    ids.reverse();
    let page = |query: String| {
        let url = app.url(&format!("/v1/referrals{query}"));
        async move {
            let r = agency_client("coventry-liaison")
                .get(url)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let referral_ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["referral_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Exactly as many as the limit: one page, no cursor.
    let all = page("?limit=4".into()).await;
    assert_eq!(referral_ids(&all), ids);
    assert!(all["next_cursor"].is_null(), "{all}");
    // Two full pages: a cursor after the first only.
    let first = page("?limit=2".into()).await;
    assert_eq!(referral_ids(&first), ids[..2]);
    let cursor = first["next_cursor"].as_str().expect("a second page exists");
    let second = page(format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(referral_ids(&second), ids[2..]);
    assert!(second["next_cursor"].is_null(), "{second}");
    // Oldest first: the same referrals the other way round, paged the same way.
    let mut oldest: Vec<String> = ids.iter().rev().cloned().collect();
    let first = page("?limit=3&order=oldest".into()).await;
    assert_eq!(referral_ids(&first), oldest[..3]);
    let cursor = first["next_cursor"].as_str().expect("a second page exists");
    let second = page(format!("?limit=3&order=oldest&cursor={cursor}")).await;
    assert_eq!(referral_ids(&second), oldest[3..]);
    assert!(second["next_cursor"].is_null(), "{second}");
    oldest.reverse();
    assert_eq!(referral_ids(&page("?order=newest".into()).await), oldest);
    // A cursor continues only the order it came from.
    let newest_cursor = page("?limit=2".into()).await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // A cursor that is not one at all says so, in either order; one from the other
    // order says that.
    let not_one = "not one this API gave";
    for (query, says) in [
        ("?order=oldest&cursor=garbage".to_owned(), not_one),
        ("?cursor=oops".to_owned(), not_one),
        ("?order=oldest&cursor=".to_owned(), not_one),
        (
            format!("?order=oldest&cursor={newest_cursor}"),
            "other order",
        ),
        (format!("?cursor={cursor}"), "other order"),
    ] {
        let r = agency_client("coventry-liaison")
            .get(app.url(&format!("/v1/referrals{query}")))
            .send()
            .await
            .unwrap();
        let body = problem(r, 400).await;
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{query}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cmht = Vec::new();
    for _ in 0..2 {
        cmht.push(app.submit(example_text("cmht")).await);
    }
    let mut iapt = Vec::new();
    for _ in 0..3 {
        iapt.push(app.submit(example_text("iapt")).await);
    }
    let ack = event("acknowledged", json!({}));
    app.post_event_as("coventry-iapt", &iapt[0], &ack, 201)
        .await;

    let list = |agency: &'static str, query: &'static str| {
        let app = &app;
        async move {
            app.get_as(agency, &format!("/v1/referrals{query}"), 200)
                .await
        }
    };
    // The sender pages through all five, newest first.
    let mut seen = Vec::new();
    let mut page = list("coventry-liaison", "?limit=2").await;
    loop {
        for item in page["items"].as_array().unwrap() {
            seen.push(item["referral_id"].as_str().unwrap().to_owned());
        }
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        page = app
            .get_as(
                "coventry-liaison",
                &format!("/v1/referrals?limit=2&cursor={cursor}"),
                200,
            )
            .await;
    }
    let mut expected: Vec<String> = cmht.iter().chain(&iapt).cloned().collect();
    expected.reverse();
    assert_eq!(seen, expected);

    // A recipient sees its own only; filters by status and role.
    let items = list("coventry-cmht", "").await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(items, 2);
    let acked = list("coventry-iapt", "?status=acknowledged").await;
    assert_eq!(acked["items"].as_array().unwrap().len(), 1);
    assert_eq!(acked["items"][0]["referral_id"], iapt[0].as_str());
    assert_eq!(
        list("coventry-iapt", "?role=sent").await["items"],
        json!([])
    );
    assert_eq!(
        list("coventry-liaison", "?from=2999-01-01").await["items"],
        json!([])
    );

    for bad in [
        "?status=lost",
        "?overdue=maybe",
        "?limit=0",
        "?cursor=abc",
        "?from=soon",
        "?role=both",
        "?order=sideways",
        "?status=queued&status=received",
    ] {
        app.get_as("coventry-liaison", &format!("/v1/referrals{bad}"), 400)
            .await;
    }
    app.stop().await;
}
