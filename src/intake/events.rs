//! Lifecycle events on a referral: receiving services report acknowledged, accepted,
//! declined, redirected, first contact and closed; senders add follow-up notes or
//! withdraw. Each accepted event changes the status (per `domain::lifecycle`), is stored,
//! and is published through the outbox: to the sender's status queue, and for follow-ups
//! and withdrawals to the recipient's queue too.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::audit::AuditAction;
use crate::domain::sla::clock_effects;
use crate::domain::{
    Agency, AgencyRegistry, EventType, IllegalTransition, Party, ReferralId, RoutingKey, transition,
};
use crate::intake::schema::{SchemaRegistry, Violation};
use crate::store::{
    AuditRecord, EventOutcome, NewEvent, OutboxMessage, Store, StoreError, StoredEvent, to_micros,
};

/// How far in the future a client's `occurred_at` may be (clock skew).
const FUTURE_TOLERANCE: time::Duration = time::Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not found")]
    NotFound,
    #[error("the body is not acceptable JSON: {0}")]
    MalformedJson(#[from] crate::intake::json::JsonError),
    #[error("the event does not match its schema")]
    Invalid(Vec<Violation>),
    #[error("only the referral's {0} may post a '{1}' event")]
    WrongParty(&'static str, EventType),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("this event_id was already used for a different event on this referral")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub enum Posted {
    Created(StoredEvent),
    Replayed(StoredEvent),
}

#[derive(Clone)]
pub struct Events {
    registry: Arc<AgencyRegistry>,
    schemas: Arc<SchemaRegistry>,
    store: Store,
    relay_wake: Arc<tokio::sync::Notify>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Events {
    pub fn new(
        registry: Arc<AgencyRegistry>,
        schemas: Arc<SchemaRegistry>,
        store: Store,
        relay_wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            registry,
            schemas,
            store,
            relay_wake,
        }
    }

    pub async fn post(
        &self,
        caller: &Agency,
        referral_id: &str,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Posted, EventError> {
        let id = ReferralId::parse(referral_id).map_err(|_| EventError::NotFound)?;
        let referral = self.store.referral(id).await?.ok_or(EventError::NotFound)?;
        let caller_id = caller.id.as_str();
        let party = if referral.recipient_agency == caller_id {
            Party::Recipient
        } else if referral.sender_agency == caller_id {
            Party::Sender
        } else {
            return Err(EventError::NotFound);
        };

        let document = crate::intake::json::parse(body)?;
        self.schemas
            .validate_event(&document)
            .map_err(EventError::Invalid)?;
        let field = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let event_type: EventType = field("type").parse().map_err(|_| {
            EventError::Invalid(vec![Violation {
                pointer: "/type".into(),
                keyword: "enum".into(),
                detail: "unknown event type".into(),
            }])
        })?;
        if event_type.posted_by() != party {
            let who = match event_type.posted_by() {
                Party::Sender => "sender",
                Party::Recipient => "recipient",
            };
            return Err(EventError::WrongParty(who, event_type));
        }
        let occurred_at = match document.get("occurred_at").and_then(Value::as_str) {
            Some(text) => {
                let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                    invalid("/occurred_at", "format", "must be an RFC 3339 date-time")
                })?;
                if t > now + FUTURE_TOLERANCE {
                    return Err(invalid(
                        "/occurred_at",
                        "maximum",
                        "must not be in the future",
                    ));
                }
                if t < referral.received_at {
                    return Err(invalid(
                        "/occurred_at",
                        "minimum",
                        "must not be before the referral was received",
                    ));
                }
                t
            }
            None => now,
        };

        let record_id = uuid::Uuid::now_v7();
        let effects = clock_effects(event_type);
        let request_sha256 = crate::security::tls::sha256_hex(body);
        let new = NewEvent {
            id: record_id,
            referral_id: id,
            event_id: field("event_id"),
            actor_agency: caller_id,
            event_type: event_type.as_str(),
            request_sha256: &request_sha256,
            occurred_at: to_micros(occurred_at),
            recorded_at: to_micros(now),
            meets: effects.0,
            stops: effects.1,
            audit: &AuditRecord {
                recipient: Some(referral.recipient_agency.clone()),
                ..AuditRecord::new(format!("agency:{caller_id}"), AuditAction::EventPosted)
                    .referral(id)
                    .detail(event_type.as_str())
            },
        };
        let recipient_key = self
            .registry
            .get(&referral.recipient_agency)
            .map(|a| RoutingKey::for_agency(a).as_str().to_owned());
        let render = |status: crate::domain::ReferralStatus| {
            let mut record = Map::new();
            record.insert("referral_id".into(), json!(id));
            record.insert("event_id".into(), json!(field("event_id")));
            record.insert("type".into(), json!(event_type.as_str()));
            record.insert("status".into(), json!(status.as_str()));
            record.insert("actor_agency".into(), json!(caller_id));
            record.insert("occurred_at".into(), json!(rfc3339(occurred_at)));
            record.insert("recorded_at".into(), json!(rfc3339(now)));
            for key in [
                "reason_code",
                "redirected_to",
                "contact",
                "outcome",
                "withdrawal_reason",
                "detail",
            ] {
                if let Some(v) = document.get(key) {
                    record.insert(key.into(), v.clone());
                }
            }
            let body = Value::Object(record).to_string();
            let mut messages = Vec::new();
            if event_type != EventType::FollowUp {
                messages.push(OutboxMessage {
                    message_id: record_id.to_string(),
                    message_type: "status",
                    exchange: "referral-status",
                    routing_key: format!("{}.{}", referral.sender_agency, event_type),
                    payload: body.clone(),
                });
            }
            if party == Party::Sender
                && let Some(key) = &recipient_key
            {
                messages.push(OutboxMessage {
                    message_id: format!("{record_id}-recipient"),
                    message_type: if event_type == EventType::Withdrawn {
                        "withdrawal"
                    } else {
                        "follow_up"
                    },
                    exchange: "referrals",
                    routing_key: key.clone(),
                    payload: body.clone(),
                });
            }
            (body, messages)
        };
        let outcome = self
            .store
            .record_event(&new, |status| transition(status, event_type), render)
            .await?;
        match outcome {
            EventOutcome::Recorded(event) => {
                self.relay_wake.notify_one();
                tracing::info!(referral_id = %id, event = event_type.as_str(), status = event.status_after.as_str(), "event recorded");
                Ok(Posted::Created(event))
            }
            EventOutcome::Replayed(event) => Ok(Posted::Replayed(event)),
            EventOutcome::Conflict => Err(EventError::Conflict),
            EventOutcome::Illegal(illegal) => Err(EventError::Illegal(illegal)),
            EventOutcome::NoSuchReferral => Err(EventError::NotFound),
        }
    }
}

fn invalid(pointer: &str, keyword: &str, detail: &str) -> EventError {
    EventError::Invalid(vec![Violation {
        pointer: pointer.into(),
        keyword: keyword.into(),
        detail: detail.into(),
    }])
}
