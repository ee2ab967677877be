//! Lifecycle events: recorded with the status change and their outbox messages in one
//! transaction, with the referral row locked so concurrent events are serialised.

use sqlx::Row;

use super::{AuditRecord, Store, StoreError, append_audit, from_micros};
use crate::domain::messages::OutboxMessage;
use crate::domain::sla::Clock;
use crate::domain::{
    AgencyId, EventType, IllegalTransition, ReferralId, ReferralStatus, Timestamp,
};

pub struct NewEvent<'a> {
    pub id: uuid::Uuid,
    pub referral_id: ReferralId,
    pub event_id: &'a str,
    pub actor_agency: &'a AgencyId,
    pub event_type: EventType,
    pub request_sha256: &'a str,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    /// SLA clocks this event meets (at `occurred_at`) and clocks it makes moot.
    pub meets: &'a [Clock],
    pub stops: &'a [Clock],
    pub audit: &'a AuditRecord,
}

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

pub enum EventOutcome {
    Recorded(StoredEvent),
    /// The same event id from the same agency with the same body: the original.
    Replayed(StoredEvent),
    /// The same event id with a different body.
    Conflict,
    Illegal(IllegalTransition),
    NoSuchReferral,
}

impl StoredEvent {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, StoreError> {
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
            body: row.try_get("body")?,
            occurred_at: from_micros(row.try_get("occurred_at")?)?,
            recorded_at: from_micros(row.try_get("recorded_at")?)?,
        })
    }
}

impl Store {
    /// Records an event. `decide` gets the current status and returns the new one (or
    /// refuses); `render` builds the stored record and the outbox messages from it.
    pub async fn record_event(
        &self,
        new: &NewEvent<'_>,
        decide: impl FnOnce(ReferralStatus) -> Result<ReferralStatus, IllegalTransition>,
        render: impl FnOnce(ReferralStatus) -> (String, Vec<OutboxMessage>),
    ) -> Result<EventOutcome, StoreError> {
        let referral_id = new.referral_id.to_string();
        let (occurred_at, recorded_at) = (new.occurred_at.as_micros(), new.recorded_at.as_micros());
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let lock = self.backend.lock_referral_sql();
        let Some(row) = sqlx::query(lock)
            .bind(&referral_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(EventOutcome::NoSuchReferral);
        };
        let status: String = row.try_get("status")?;
        let status: ReferralStatus = status
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("status '{status}'")))?;

        let previous = sqlx::query(
            "SELECT event_id, actor_agency, event_type, status_after, body, request_sha256, occurred_at, recorded_at \
             FROM referral_events WHERE referral_id = $1 AND actor_agency = $2 AND event_id = $3",
        )
        .bind(&referral_id)
        .bind(new.actor_agency.as_str())
        .bind(new.event_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(previous) = previous {
            let same: String = previous.try_get("request_sha256")?;
            return Ok(if same == new.request_sha256 {
                EventOutcome::Replayed(StoredEvent::from_row(&previous)?)
            } else {
                EventOutcome::Conflict
            });
        }

        let next = match decide(status) {
            Ok(next) => next,
            Err(illegal) => return Ok(EventOutcome::Illegal(illegal)),
        };
        let (body, messages) = render(next);
        sqlx::query(
            "INSERT INTO referral_events (id, referral_id, event_id, actor_agency, event_type, status_after, body, \
             request_sha256, occurred_at, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(new.id.to_string())
        .bind(&referral_id)
        .bind(new.event_id)
        .bind(new.actor_agency.as_str())
        .bind(new.event_type.as_str())
        .bind(next.as_str())
        .bind(&body)
        .bind(new.request_sha256)
        .bind(occurred_at)
        .bind(recorded_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE referrals SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(next.as_str())
            .bind(recorded_at)
            .bind(&referral_id)
            .execute(&mut *tx)
            .await?;
        for message in messages {
            insert_outbox(&mut tx, &referral_id, &message, recorded_at).await?;
        }
        append_audit(&mut tx, self.backend, new.audit, recorded_at).await?;
        for clock in new.meets {
            sqlx::query(
                "UPDATE sla_clocks SET met_at = $1, met_late = CASE WHEN due_at < $1 THEN 1 ELSE 0 END \
                 WHERE referral_id = $2 AND clock = $3 AND met_at IS NULL AND stopped_at IS NULL",
            )
            .bind(occurred_at)
            .bind(&referral_id)
            .bind(clock.as_str())
            .execute(&mut *tx)
            .await?;
        }
        for clock in new.stops {
            sqlx::query(
                "UPDATE sla_clocks SET stopped_at = $1 \
                 WHERE referral_id = $2 AND clock = $3 AND met_at IS NULL AND stopped_at IS NULL",
            )
            .bind(occurred_at)
            .bind(&referral_id)
            .bind(clock.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(EventOutcome::Recorded(StoredEvent {
            event_id: new.event_id.to_owned(),
            actor_agency: new.actor_agency.clone(),
            event_type: new.event_type,
            status_after: next,
            body,
            occurred_at: from_micros(occurred_at)?,
            recorded_at: from_micros(recorded_at)?,
        }))
    }

    /// A referral's events, oldest first.
    pub async fn events(&self, id: ReferralId) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, actor_agency, event_type, status_after, body, occurred_at, recorded_at \
             FROM referral_events WHERE referral_id = $1 ORDER BY recorded_at, id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(StoredEvent::from_row).collect()
    }
}

/// Writes one outbox row, due at once (`next_attempt_at = 0`): the relay's retry times
/// are its own business, independent of the clock that stamped the row.
pub(crate) async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    referral_id: &str,
    message: &OutboxMessage,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (referral_id, message_type, exchange, routing_key, created_at, next_attempt_at, payload, message_id) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
    )
    .bind(referral_id)
    .bind(message.message_type().as_str())
    .bind(message.exchange().as_str())
    .bind(message.routing_key())
    .bind(at)
    .bind(message.payload())
    .bind(message.message_id())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
