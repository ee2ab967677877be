//! Lifecycle events on a referral: receiving services report acknowledged, accepted,
//! declined, redirected, first contact and closed; senders add follow-up notes or
//! withdraw. Each accepted event changes the status (per `domain::lifecycle`), is stored,
//! and is published through the outbox: to the sender's status queue, and for follow-ups
//! and withdrawals to the recipient's queue too.

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::audit::AuditAction;
use crate::domain::messages::{EventRecord, OutboxMessage};
use crate::domain::sla::clock_effects;
use crate::domain::{
    Agency, AgencyRegistry, EventType, IllegalTransition, Party, ReferralId, RoutingKey, Timestamp,
    transition,
};
use crate::intake::schema::{SchemaRegistry, Violation};
use crate::store::{AuditRecord, EventOutcome, NewEvent, Store, StoreError, StoredEvent};

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
    #[error(
        "this agency already has {} events on this referral, the most it may post",
        crate::store::MAX_EVENTS_PER_REFERRAL
    )]
    TooMany,
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

    /// Records an event, or refuses it; a refusal is recorded in the audit log
    /// (`event.refused`, a fixed reason code), except when the store is busy or failing.
    /// A refusal that cannot be recorded becomes a store error (500).
    pub async fn post(
        &self,
        caller: &Agency,
        referral_id: &str,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Posted, EventError> {
        let result = self.record(caller, referral_id, body, now).await;
        if let Err(error) = &result
            && let Some(reason) = self.refusal_reason(error)
        {
            let mut record =
                AuditRecord::new(format!("agency:{}", caller.id), AuditAction::EventRefused)
                    .detail(reason);
            // The id only when it is one (never the caller's text).
            record.referral_id = ReferralId::parse(referral_id).ok().map(|id| id.to_string());
            if let Err(e) = self.store.audit(&record, now).await {
                tracing::error!(error = %e, "cannot record a refused event in the audit log");
                return Err(EventError::Store(e));
            }
        }
        result
    }

    /// The audit detail of a refused event: a fixed code, with JSON Pointers whose
    /// member names the schemas do not declare shown as `*`; `None` when nothing was
    /// looked at (the store is busy: 503) or the store failed (500).
    fn refusal_reason(&self, error: &EventError) -> Option<String> {
        let schemas = &self.schemas;
        Some(match error {
            EventError::NotFound => "not-found".to_owned(),
            // A parse error's pointer follows the caller's shape, not the schemas'.
            EventError::MalformedJson(e) => {
                schemas.audit_detail(&format!("malformed-json:{}", e.code()), e.pointer(), true)
            }
            EventError::Invalid(violations) => schemas.audit_detail(
                "schema-validation",
                violations.iter().map(|v| v.pointer.as_str()),
                false,
            ),
            EventError::WrongParty(_, event) => format!("wrong-party:{}", event.as_str()),
            EventError::Illegal(illegal) => format!(
                "illegal-transition:{}:{}",
                illegal.status.as_str(),
                illegal.event.as_str()
            ),
            EventError::Conflict => "event-id-conflict".to_owned(),
            EventError::TooMany => "too-many-events".to_owned(),
            EventError::Store(_) => return None,
        })
    }

    async fn record(
        &self,
        caller: &Agency,
        referral_id: &str,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Posted, EventError> {
        let id = ReferralId::parse(referral_id).map_err(|_| EventError::NotFound)?;
        let referral = self.store.referral(id).await?.ok_or(EventError::NotFound)?;
        let caller_id = &caller.id;
        let party = if referral.recipient_agency == *caller_id {
            Party::Recipient
        } else if referral.sender_agency == *caller_id {
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
        // A first contact cannot be dated before the day the referral was received (UTC);
        // the schema has already checked it is a date and not in the future.
        if let Some(date) = document
            .pointer("/contact/date")
            .and_then(Value::as_str)
            .and_then(|d| {
                time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()
            })
            && date < referral.received_at.to_offset(time::UtcOffset::UTC).date()
        {
            return Err(invalid(
                "/contact/date",
                "minimum",
                "must not be before the day the referral was received",
            ));
        }

        let record_id = uuid::Uuid::now_v7();
        let (meets, stops) = clock_effects(event_type);
        let event_id = field("event_id").to_owned();
        let sender_agency = referral.sender_agency.clone();
        // The recipient's queue, also when a reload has removed the agency since (its
        // queue stays on the broker): a withdrawal or follow-up is never dropped.
        let recipient = match self.registry.get(referral.recipient_agency.as_str()) {
            Some(agency) => RoutingKey::for_agency(agency),
            None => RoutingKey::of(
                &referral.service_type,
                &referral.area,
                &referral.recipient_agency,
            ),
        };
        let actor = caller_id.clone();
        let render_event_id = event_id.clone();
        // Owned by the write (the committer may run it again if its batch is retried).
        let render = move |status: crate::domain::ReferralStatus| {
            let record = EventRecord {
                actor_agency: &actor,
                contact: document.get("contact"),
                detail: document.get("detail"),
                event_id: &render_event_id,
                occurred_at,
                outcome: document.get("outcome"),
                reason_code: document.get("reason_code"),
                recorded_at: now,
                redirected_to: document.get("redirected_to"),
                referral_id: id,
                status,
                event_type,
                withdrawal_reason: document.get("withdrawal_reason"),
            };
            let mut messages = Vec::new();
            if event_type != EventType::FollowUp {
                messages.push(OutboxMessage::event_status(
                    record_id.to_string(),
                    &sender_agency,
                    &record,
                ));
            }
            if party == Party::Sender {
                let message_id = format!("{record_id}-recipient");
                messages.push(if event_type == EventType::Withdrawn {
                    OutboxMessage::withdrawal(message_id, &recipient, &record)
                } else {
                    OutboxMessage::follow_up(message_id, &recipient, &record)
                });
            }
            (record.to_json(), messages)
        };
        let new = NewEvent {
            id: record_id,
            referral_id: id,
            event_id,
            actor_agency: caller_id.clone(),
            event_type,
            request_sha256: crate::security::digest::sha256_hex(body),
            occurred_at: Timestamp::from(occurred_at),
            recorded_at: Timestamp::from(now),
            meets,
            stops,
            audit: AuditRecord {
                recipient: Some(referral.recipient_agency.to_string()),
                ..AuditRecord::new(format!("agency:{caller_id}"), AuditAction::EventPosted)
                    .referral(id)
                    .detail(event_type.as_str())
            },
            decide: Box::new(move |status| transition(status, event_type)),
            render: Box::new(render),
        };
        let outcome = self.store.record_event(new).await?;
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
            EventOutcome::TooMany => Err(EventError::TooMany),
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
