//! Lifecycle events: recorded with the status change and their outbox messages in one
//! transaction, with the referral row locked so concurrent events are serialised (the
//! writing itself is in `batch`).

use sqlx::Row;

use super::batch::{NewEvent, Write, Written};
use super::{Store, StoreError, from_micros};
use crate::domain::messages::OutboxMessage;
use crate::domain::{AgencyId, EventType, IllegalTransition, ReferralId, ReferralStatus};

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_id: String,
    pub actor_agency: AgencyId,
    pub event_type: EventType,
    pub status_after: ReferralStatus,
    /// The stored event record (JSON), as returned to clients and published.
    pub body: String,
    pub occurred_at: time::OffsetDateTime,
    pub recorded_at: time::OffsetDateTime,
}

#[derive(Debug)]
pub enum EventOutcome {
    Recorded(StoredEvent),
    /// The same event id from the same agency with the same body: the original.
    Replayed(StoredEvent),
    /// The same event id with a different body.
    Conflict,
    Illegal(IllegalTransition),
    NoSuchReferral,
    /// The posting agency already has [`MAX_EVENTS_PER_REFERRAL`] events on the referral.
    TooMany,
}

/// The most events one agency may post on one referral (its timeline is read and
/// returned whole); each of the two agencies has its own allowance.
pub const MAX_EVENTS_PER_REFERRAL: i64 = 200;

/// What an event record's seal is bound to: its record id, in a namespace of its own (a
/// sealed record cannot pass for a message's payload or a referral's).
pub fn event_binding(record_id: &str) -> String {
    format!("event:{record_id}")
}

impl Store {
    /// The record of an event row (`id`, `body`, `body_key_id`): `(record id, record)`,
    /// opened with the payload keys when it was sealed ([`event_binding`]), as stored when
    /// it was written before migration `0010`.
    pub(crate) fn open_event_record(
        &self,
        row: &sqlx::any::AnyRow,
    ) -> Result<(String, String), StoreError> {
        let record_id: String = row.try_get("id")?;
        let key_id: Option<String> = row.try_get("body_key_id")?;
        let record = self.open_payload(
            row.try_get("body")?,
            key_id.as_deref(),
            &event_binding(&record_id),
        )?;
        Ok((record_id, record))
    }
}

/// What an outbox message's own payload's seal is bound to: its message id.
pub fn message_binding(message_id: &str) -> String {
    format!("outbox:{message_id}")
}

impl StoredEvent {
    /// An event from its row (with `id` and `body_key_id`), its record opened with
    /// `store`'s payload keys when it was sealed.
    pub(crate) fn from_row(row: &sqlx::any::AnyRow, store: &Store) -> Result<Self, StoreError> {
        let (_, body) = store.open_event_record(row)?;
        let status: String = row.try_get("status_after")?;
        let actor: String = row.try_get("actor_agency")?;
        let event_type: String = row.try_get("event_type")?;
        Ok(Self {
            event_id: row.try_get("event_id")?,
            actor_agency: AgencyId::parse(actor.clone())
                .map_err(|_| StoreError::Corrupt(format!("agency id '{actor}'")))?,
            event_type: event_type
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("event type '{event_type}'")))?,
            status_after: status
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("status '{status}'")))?,
            body,
            occurred_at: from_micros(row.try_get("occurred_at")?)?,
            recorded_at: from_micros(row.try_get("recorded_at")?)?,
        })
    }
}

impl Store {
    /// Records an event (through the committer, with others): `decide` gets the current
    /// status and returns the new one (or refuses); `render` builds the stored record and
    /// the outbox messages from it. The status change, the event, its messages, its clock
    /// effects and its audit entry are one transaction, with the referral's row locked.
    pub async fn record_event(&self, new: NewEvent) -> Result<EventOutcome, StoreError> {
        match self.write(Write::Event(Box::new(new))).await? {
            Written::Event(outcome) => Ok(outcome),
            other => Err(StoreError::Corrupt(format!(
                "an event write came back as {other:?}"
            ))),
        }
    }

    /// A referral's events, oldest first.
    pub async fn events(&self, id: ReferralId) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, actor_agency, event_type, status_after, body, body_key_id, occurred_at, recorded_at \
             FROM referral_events WHERE referral_id = $1 ORDER BY recorded_at, id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| StoredEvent::from_row(row, self))
            .collect()
    }
}

/// Writes one outbox row, due at once (`next_attempt_at = 0`): the relay's retry times
/// are its own business, independent of the clock that stamped the row. With `sealer`,
/// the message's own payload is sealed with its payload key, bound to the message's id
/// (an event's messages carry the agencies' free text); SLA notices, which hold ids and
/// times only, are written without.
pub(crate) async fn insert_outbox(
    conn: &mut sqlx::AnyConnection,
    referral_id: &str,
    message: &OutboxMessage,
    at: i64,
    sealer: Option<&Store>,
) -> Result<(), StoreError> {
    let (payload, key_id) = match (message.payload(), sealer) {
        (Some(plain), Some(store)) => {
            let bound_to = message_binding(message.message_id().unwrap_or(referral_id));
            let (sealed, key_id) = store.seal_payload(plain, &bound_to)?;
            (Some(sealed), key_id)
        }
        (payload, _) => (payload.map(str::to_owned), None),
    };
    sqlx::query(
        "INSERT INTO outbox (referral_id, message_type, exchange, routing_key, created_at, next_attempt_at, payload, message_id, payload_key_id) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8)",
    )
    .bind(referral_id)
    .bind(message.message_type().as_str())
    .bind(message.exchange().as_str())
    .bind(message.routing_key())
    .bind(at)
    .bind(payload)
    .bind(message.message_id())
    .bind(key_id)
    .execute(conn)
    .await?;
    Ok(())
}
