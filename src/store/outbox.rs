//! The transactional outbox: rows written with each referral, claimed by a relay with a
//! lease, marked published only after the broker's confirm.

use sqlx::Row;

use super::batch::{Write, Written};
use super::{Store, StoreError};
use crate::domain::messages::{Exchange, MessageType};
use crate::domain::{AgencyId, Priority, ReferralId, ServiceType, Timestamp};

/// One claimed outbox row with what the relay needs to publish it.
#[derive(Clone)]
pub struct ClaimedMessage {
    pub outbox_id: i64,
    pub referral_id: ReferralId,
    /// The referral id for a referral; the event's own id for status and withdrawal messages.
    pub message_id: String,
    pub message_type: MessageType,
    pub exchange: Exchange,
    pub routing_key: String,
    pub attempts: i64,
    pub created_at: Timestamp,
    /// Holds personal data: never log it.
    pub payload: String,
    pub priority: Priority,
    pub sender_agency: AgencyId,
    pub recipient_agency: AgencyId,
    pub service_type: ServiceType,
    pub schema_id: String,
    pub correlation_id: String,
}

impl std::fmt::Debug for ClaimedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedMessage")
            .field("outbox_id", &self.outbox_id)
            .field("referral_id", &self.referral_id)
            .field("routing_key", &self.routing_key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: i64,
    /// `created_at` of the oldest unpublished row.
    pub oldest_created_at: Option<Timestamp>,
}

impl Backlog {
    /// Seconds since the oldest unpublished row was written (never negative).
    pub fn oldest_age_seconds(&self, now: time::OffsetDateTime) -> Option<f64> {
        let now = Timestamp::from(now);
        self.oldest_created_at
            .map(|t| now.micros_since(t).max(0) as f64 / 1e6)
    }
}

/// The typed columns of a claimed row.
struct Typed {
    message_type: MessageType,
    exchange: Exchange,
    priority: Priority,
    sender_agency: AgencyId,
    recipient_agency: AgencyId,
    service_type: ServiceType,
    payload: String,
}

impl Store {
    /// Claims up to `limit` due rows for `token` until `lease_until` (µs). Rows claimed by
    /// a crashed relay become claimable again once their lease has passed. On PostgreSQL
    /// concurrent relays skip each other's rows (`FOR UPDATE SKIP LOCKED`).
    pub async fn claim_outbox(
        &self,
        token: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let (now, lease_until) = (now.as_micros(), lease_until.as_micros());
        let claim = self.backend.claim_outbox_sql();
        {
            let _turn = self.write_turn().await;
            sqlx::query(claim)
                .bind(token)
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .execute(&self.pool)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT o.id, o.referral_id, COALESCE(o.message_id, o.referral_id) AS message_id, o.message_type, o.exchange, o.routing_key, o.attempts, o.created_at, \
             o.payload AS own_payload, o.payload_key_id AS own_key_id, r.payload AS referral_payload, r.payload_key_id, r.priority, r.sender_agency, r.recipient_agency, r.service_type, r.schema_id, r.correlation_id \
             FROM outbox o JOIN referrals r ON r.id = o.referral_id \
             WHERE o.claimed_by = $1 AND o.published_at IS NULL ORDER BY o.id",
        )
        .bind(token)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let referral_id: String = row.try_get("referral_id")?;
            let payload = match row.try_get::<Option<String>, _>("own_payload")? {
                Some(own) => {
                    let key_id: Option<String> = row.try_get("own_key_id")?;
                    let message_id: String = row.try_get("message_id")?;
                    self.open_payload(
                        own,
                        key_id.as_deref(),
                        &super::events::message_binding(&message_id),
                    )
                }
                None => {
                    let key_id: Option<String> = row.try_get("payload_key_id")?;
                    self.open_payload(
                        row.try_get("referral_payload")?,
                        key_id.as_deref(),
                        &referral_id,
                    )
                }
            };
            // A row naming no known exchange or type (or with unreadable referral columns)
            // cannot be published either.
            let payload = payload.and_then(|payload| {
                let corrupt = |what: &str| StoreError::Corrupt(format!("outbox row: {what}"));
                let message_type: String = row.try_get("message_type")?;
                let exchange: String = row.try_get("exchange")?;
                let priority: String = row.try_get("priority")?;
                let id = |name: &str| -> Result<AgencyId, StoreError> {
                    AgencyId::parse(row.try_get::<String, _>(name)?).map_err(|_| corrupt(name))
                };
                Ok(Typed {
                    message_type: message_type.parse().map_err(|_| corrupt("message_type"))?,
                    exchange: exchange.parse().map_err(|_| corrupt("exchange"))?,
                    priority: priority.parse().map_err(|_| corrupt("priority"))?,
                    sender_agency: id("sender_agency")?,
                    recipient_agency: id("recipient_agency")?,
                    service_type: ServiceType::parse(row.try_get::<String, _>("service_type")?)
                        .map_err(|_| corrupt("service_type"))?,
                    payload,
                })
            });
            let typed = match payload {
                Ok(typed) => typed,
                Err(e) => {
                    // One unreadable payload (a missing key, a purged row) must not stop
                    // the rest: set it aside for an hour with the reason, for operators.
                    tracing::error!(referral_id = %referral_id, error = %e, "outbox row cannot be published");
                    let outbox_id: i64 = row.try_get("id")?;
                    let retry_at = now.saturating_add(3_600_000_000);
                    self.release_outbox(
                        outbox_id,
                        token,
                        Timestamp::from_micros(retry_at),
                        &e.to_string(),
                    )
                    .await?;
                    continue;
                }
            };
            claimed.push(ClaimedMessage {
                outbox_id: row.try_get("id")?,
                referral_id: ReferralId::parse(&referral_id)
                    .map_err(|_| StoreError::Corrupt(format!("referral id '{referral_id}'")))?,
                message_id: row.try_get("message_id")?,
                message_type: typed.message_type,
                exchange: typed.exchange,
                routing_key: row.try_get("routing_key")?,
                attempts: row.try_get("attempts")?,
                created_at: Timestamp::from_micros(row.try_get("created_at")?),
                payload: typed.payload,
                priority: typed.priority,
                sender_agency: typed.sender_agency,
                recipient_agency: typed.recipient_agency,
                service_type: typed.service_type,
                schema_id: row.try_get("schema_id")?,
                correlation_id: row.try_get("correlation_id")?,
            });
        }
        Ok(claimed)
    }

    /// Drops every claim but those of relay `instance` (this process's, whose committer
    /// may already have written rows claimed for it) at once. Only for SQLite, where one
    /// process owns the relay: the claims left by a crashed predecessor need not wait for
    /// their lease to run out.
    pub async fn release_stale_claims(&self, instance: &str) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL \
             WHERE published_at IS NULL AND claimed_by IS NOT NULL AND claimed_by NOT LIKE $1",
        )
        // Instance ids are digits, `-` and hex: nothing LIKE would read as a wildcard.
        .bind(format!("{instance}:%"))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives up every row still claimed by `token`, unpublished: claimable again at once.
    pub async fn release_claim(&self, token: &str) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL \
             WHERE claimed_by = $1 AND published_at IS NULL",
        )
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Releases a claimed row for a later retry.
    pub async fn release_outbox(
        &self,
        outbox_id: i64,
        token: &str,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<(), StoreError> {
        let next_attempt_at = next_attempt_at.as_micros();
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL, next_attempt_at = $1, last_error = $2 \
             WHERE id = $3 AND claimed_by = $4 AND published_at IS NULL",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(outbox_id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks the rows `ids` still claimed by one of `tokens` as published (the rows the
    /// broker confirmed), and moves their referrals from `received` to
    /// `queued`, with a `message.delivered` entry each: through the committer, in the same
    /// batches as the intake's writes (one writer of the chain). Returns how many rows
    /// were marked.
    pub async fn mark_claimed_published(
        &self,
        tokens: Vec<String>,
        ids: Vec<i64>,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        let write = Write::Published {
            tokens,
            ids,
            at: at.as_micros(),
        };
        match self.write_waiting(write).await? {
            Written::Published(marked) => Ok(marked),
            other => Err(StoreError::Corrupt(format!(
                "a publication came back as {other:?}"
            ))),
        }
    }

    pub async fn outbox_backlog(&self) -> Result<Backlog, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            pending: row.try_get("pending")?,
            oldest_created_at: row
                .try_get::<Option<i64>, _>("oldest")?
                .map(Timestamp::from_micros),
        })
    }

    /// Unpublished rows that have failed at least once, oldest first (for operators).
    pub async fn failing_outbox(&self, limit: i64) -> Result<Vec<FailingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, referral_id, routing_key, attempts, next_attempt_at, last_error FROM outbox \
             WHERE published_at IS NULL AND last_error IS NOT NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FailingRow {
                    outbox_id: row.try_get("id")?,
                    referral_id: row.try_get("referral_id")?,
                    routing_key: row.try_get("routing_key")?,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: Timestamp::from_micros(row.try_get("next_attempt_at")?),
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct FailingRow {
    pub outbox_id: i64,
    pub referral_id: String,
    pub routing_key: String,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
}
