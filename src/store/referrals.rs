//! Referral rows, their idempotency keys and outbox rows.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::batch::{PreparedReferral, Write, Written};
use super::{AuditRecord, Store, StoreError, append_audit, from_micros, to_micros};
use crate::domain::audit::AuditAction;
use crate::domain::messages::OutboxMessage;
use crate::domain::sla::ClockDeadline;
use crate::domain::{AgencyId, Area, Priority, ReferralId, ReferralStatus, ServiceType, Timestamp};

/// `payload_key_id` of a referral whose payload was purged.
pub(crate) const PURGED: &str = "purged";

/// Everything the intake step writes for one accepted referral.
pub struct NewReferral {
    pub id: ReferralId,
    pub sender: AgencyId,
    pub recipient: AgencyId,
    pub service_type: ServiceType,
    pub area: Area,
    /// To the recipient's queue ([`OutboxMessage::referral`]).
    pub outbox: OutboxMessage,
    pub priority: Priority,
    pub schema_id: String,
    /// The canonical checked document (its SHA-256 is `payload_sha256`); sealed before
    /// it is handed to the committer.
    pub payload: String,
    pub payload_sha256: String,
    pub correlation_id: String,
    pub received_at: OffsetDateTime,
    /// `(key, sha256 of the request body)` when the sender sent an `Idempotency-Key`.
    pub idempotency: Option<(String, String)>,
    /// The SLA clocks started with the referral.
    pub clocks: Vec<ClockDeadline>,
    /// The disclosure, recorded in the same transaction.
    pub audit: AuditRecord,
    pub isa_id: Option<String>,
    /// JSON Pointers withheld from the recipient.
    pub withheld: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_sha256: String,
    pub referral_id: ReferralId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// The idempotency key was already used (perhaps by a concurrent request);
    /// nothing was written.
    KeyTaken(IdempotencyRecord),
}

/// A stored referral's metadata (the payload is read separately, only where needed).
#[derive(Debug, Clone)]
pub struct ReferralRecord {
    pub id: ReferralId,
    pub sender_agency: AgencyId,
    pub recipient_agency: AgencyId,
    pub service_type: ServiceType,
    pub area: Area,
    pub priority: Priority,
    pub status: ReferralStatus,
    pub schema_id: String,
    pub payload_sha256: String,
    pub correlation_id: String,
    pub received_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub isa_id: Option<String>,
    pub withheld: Vec<String>,
}

impl ReferralRecord {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let id: String = row.try_get("id")?;
        let priority: String = row.try_get("priority")?;
        let status: String = row.try_get("status")?;
        let text = |name: &str| row.try_get::<String, _>(name);
        let corrupt = |name: &str, value: &str| StoreError::Corrupt(format!("{name} '{value}'"));
        let agency = |name: &str| -> Result<AgencyId, StoreError> {
            let value = text(name)?;
            AgencyId::parse(value.as_str()).map_err(|_| corrupt(name, &value))
        };
        let service_type = text("service_type")?;
        let area = text("area")?;
        Ok(Self {
            id: ReferralId::parse(&id)
                .map_err(|_| StoreError::Corrupt(format!("referral id '{id}'")))?,
            sender_agency: agency("sender_agency")?,
            recipient_agency: agency("recipient_agency")?,
            service_type: ServiceType::parse(service_type.as_str())
                .map_err(|_| corrupt("service_type", &service_type))?,
            area: Area::parse(area.as_str()).map_err(|_| corrupt("area", &area))?,
            priority: priority
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("priority '{priority}'")))?,
            status: status
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("status '{status}'")))?,
            schema_id: row.try_get("schema_id")?,
            payload_sha256: row.try_get("payload_sha256")?,
            correlation_id: row.try_get("correlation_id")?,
            received_at: from_micros(row.try_get("received_at")?)?,
            updated_at: from_micros(row.try_get("updated_at")?)?,
            isa_id: row.try_get("isa_id")?,
            withheld: serde_json::from_str(&row.try_get::<String, _>("withheld")?)
                .map_err(|_| StoreError::Corrupt("withheld pointers".into()))?,
        })
    }
}

impl Store {
    /// Writes the referral, its outbox row, clocks, idempotency key (if any) and audit
    /// entry in one transaction (through the committer, with others). The payload is
    /// sealed here, by the caller's task. On `Inserted::KeyTaken` nothing is written.
    pub async fn insert_referral(&self, new: NewReferral) -> Result<Inserted, StoreError> {
        let id = new.id.to_string();
        let (payload, payload_key_id) = self.seal_payload(&new.payload, &id)?;
        let prepared = PreparedReferral {
            referral_id: new.id,
            sender: new.sender,
            recipient: new.recipient,
            service_type: new.service_type,
            area: new.area,
            priority: new.priority,
            schema_id: new.schema_id,
            payload,
            payload_key_id,
            plaintext: new.payload,
            payload_sha256: new.payload_sha256,
            correlation_id: new.correlation_id,
            at: to_micros(new.received_at),
            idempotency: new.idempotency,
            clocks: new
                .clocks
                .iter()
                .map(|c| (c.clock.as_str(), to_micros(c.due_at), to_micros(c.warn_at)))
                .collect(),
            audit: new.audit,
            isa_id: new.isa_id,
            withheld: serde_json::to_string(&new.withheld).unwrap_or_else(|_| "[]".into()),
            outbox: new.outbox,
            id,
        };
        match self.write(Write::Referral(Box::new(prepared))).await? {
            Written::Referral(inserted) => Ok(inserted),
            other => Err(StoreError::Corrupt(format!(
                "a referral write came back as {other:?}"
            ))),
        }
    }

    pub async fn idempotency_record(
        &self,
        sender: &AgencyId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT request_sha256, referral_id FROM idempotency_keys \
             WHERE sender_agency = $1 AND idempotency_key = $2",
        )
        .bind(sender.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let referral_id: String = row.try_get("referral_id")?;
            Ok(IdempotencyRecord {
                request_sha256: row.try_get("request_sha256")?,
                referral_id: ReferralId::parse(&referral_id)
                    .map_err(|_| StoreError::Corrupt(format!("referral id '{referral_id}'")))?,
            })
        })
        .transpose()
    }

    pub async fn referral(&self, id: ReferralId) -> Result<Option<ReferralRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, sender_agency, recipient_agency, service_type, area, priority, status, \
             schema_id, payload_sha256, correlation_id, received_at, updated_at, isa_id, withheld \
             FROM referrals WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ReferralRecord::from_row).transpose()
    }

    /// The document as received, for delivery. Holds personal data: never log it.
    pub async fn referral_payload(&self, id: ReferralId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT payload, payload_key_id FROM referrals WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let key_id: Option<String> = r.try_get("payload_key_id")?;
            self.open_payload(r.try_get("payload")?, key_id.as_deref(), &id.to_string())
        })
        .transpose()
    }

    /// Removes the payloads of referrals received before `cutoff` (µs) whose messages
    /// have all been delivered, and the free text of their events, and records it in the
    /// audit log. Metadata, events (without their free text), clocks and the audit log
    /// stay. Returns how many payloads were removed.
    pub async fn purge_payloads(
        &self,
        cutoff: Timestamp,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        self.on_write_connection_within(None, async |conn| {
            self.purge_payloads_on(conn, cutoff.as_micros(), at.as_micros())
                .await
        })
        .await
    }

    async fn purge_payloads_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        cutoff: i64,
        at: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        let purged = sqlx::query(
            "UPDATE referrals SET payload = '', payload_key_id = 'purged' \
             WHERE received_at < $1 AND (payload_key_id IS NULL OR payload_key_id <> 'purged') \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.referral_id = referrals.id AND o.published_at IS NULL) \
             RETURNING id",
        )
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = 0u64;
        for row in &purged {
            let referral_id: String = row.try_get("id")?;
            events += self.purge_event_text(&mut tx, &referral_id).await?;
        }
        // Messages of events posted after an earlier purge, delivered since: their
        // records were stored without free text, their payloads go now.
        let late = sqlx::query(
            "UPDATE outbox SET payload = NULL, payload_key_id = NULL \
             WHERE payload IS NOT NULL AND published_at IS NOT NULL \
             AND referral_id IN (SELECT id FROM referrals WHERE payload_key_id = 'purged')",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let count = purged.len() as u64;
        let record = AuditRecord::new("gateway", AuditAction::PayloadPurged).detail(format!(
            "{count} payload(s) of referrals received before {}, and the free text of their {events} event(s); {late} delivered message(s) of events posted after an earlier purge emptied",
            super::rfc3339(cutoff)
        ));
        append_audit(&mut tx, self.backend, &record, at).await?;
        tx.commit().await?;
        Ok(count)
    }

    /// With a referral's payload, the free text its events hold goes too
    /// ([`crate::domain::messages::strip_free_text`]): each event record is opened, written
    /// again without it (sealed, also when it was stored in plain text before migration
    /// `0010`), and the delivered messages' own payloads are emptied. Returns how many
    /// event records were rewritten.
    async fn purge_event_text(
        &self,
        tx: &mut sqlx::AnyConnection,
        referral_id: &str,
    ) -> Result<u64, StoreError> {
        let rows =
            sqlx::query("SELECT id, body, body_key_id FROM referral_events WHERE referral_id = $1")
                .bind(referral_id)
                .fetch_all(&mut *tx)
                .await?;
        for row in &rows {
            let (record_id, plain) = self.open_event_record(row)?;
            let mut record: serde_json::Value = serde_json::from_str(&plain)
                .map_err(|_| StoreError::Corrupt(format!("event record {record_id}")))?;
            crate::domain::messages::strip_free_text(&mut record);
            let (sealed, key_id) = self.seal_payload(
                &record.to_string(),
                &super::events::event_binding(&record_id),
            )?;
            sqlx::query("UPDATE referral_events SET body = $1, body_key_id = $2 WHERE id = $3")
                .bind(sealed)
                .bind(key_id)
                .bind(&record_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE outbox SET payload = NULL, payload_key_id = NULL \
             WHERE referral_id = $1 AND payload IS NOT NULL AND published_at IS NOT NULL",
        )
        .bind(referral_id)
        .execute(&mut *tx)
        .await?;
        Ok(rows.len() as u64)
    }
}

/// Which side of its referrals an agency lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListRole {
    /// Sent or received.
    Either,
    Sent,
    Received,
}

impl ListRole {
    /// The `role` query value (`sent`, `received`, or empty for both).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Either => "",
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// Filters for listing an agency's referrals, newest (or oldest) first, keyset-paginated.
#[derive(Debug, Clone)]
pub struct ReferralFilter<'a> {
    pub agency: &'a str,
    pub role: ListRole,
    /// `None` for any status.
    pub status: Option<ReferralStatus>,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Only referrals with an SLA clock overdue at `now` (`domain::sla::is_overdue`).
    pub overdue: bool,
    pub now: Timestamp,
    /// Oldest first (the longest waiting at the top) instead of newest first.
    pub oldest_first: bool,
    /// Continue after this `(received_at, id)`, in the list's order.
    pub after: Option<(Timestamp, ReferralId)>,
    pub limit: i64,
}

/// `list_referrals`' statement up to its order. `$6`: the overdue filter,
/// `domain::sla::is_overdue` in SQL (met_at and stopped_at unset, due_at before now).
macro_rules! list_referrals_sql {
    ($after:literal, $order:literal) => {
        concat!(
            "SELECT id, sender_agency, recipient_agency, service_type, area, priority, status, \
             schema_id, payload_sha256, correlation_id, received_at, updated_at, isa_id, withheld FROM referrals r \
             WHERE (r.sender_agency = $1 OR r.recipient_agency = $1) \
             AND ($2 = '' OR ($2 = 'sent' AND r.sender_agency = $1) OR ($2 = 'received' AND r.recipient_agency = $1)) \
             AND ($3 = '' OR r.status = $3) \
             AND r.received_at >= $4 AND r.received_at < $5 \
             AND ($6 = 0 OR EXISTS (SELECT 1 FROM sla_clocks c WHERE c.referral_id = r.id \
                  AND c.met_at IS NULL AND c.stopped_at IS NULL AND c.due_at < $7)) ",
            $after,
            $order
        )
    };
}

const LIST_NEWEST_FIRST: &str = list_referrals_sql!(
    "AND (r.received_at < $8 OR (r.received_at = $8 AND r.id < $9)) ",
    "ORDER BY r.received_at DESC, r.id DESC LIMIT $10"
);
const LIST_OLDEST_FIRST: &str = list_referrals_sql!(
    "AND (r.received_at > $8 OR (r.received_at = $8 AND r.id > $9)) ",
    "ORDER BY r.received_at ASC, r.id ASC LIMIT $10"
);

impl Store {
    /// How many referrals were received in `[from, to)` under each information sharing
    /// agreement (by `isa_id`; referrals without one are not counted). No personal data.
    pub async fn referrals_per_agreement(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT isa_id, COUNT(*) AS n FROM referrals \
             WHERE received_at >= $1 AND received_at < $2 AND isa_id IS NOT NULL \
             GROUP BY isa_id",
        )
        .bind(from.as_micros())
        .bind(to.as_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("isa_id")?,
                    row.try_get::<i64, _>("n")?,
                ))
            })
            .collect()
    }

    pub async fn list_referrals(
        &self,
        filter: &ReferralFilter<'_>,
    ) -> Result<Vec<ReferralRecord>, StoreError> {
        // Before the first page: past the end the list starts from (an id sorts after "").
        let (after_at, after_id) = match filter.after {
            Some((at, id)) => (at.as_micros(), id.to_string()),
            None if filter.oldest_first => (i64::MIN, String::new()),
            None => (i64::MAX, String::new()),
        };
        let mut tx = self.filtered_read().await?;
        let sql = if filter.oldest_first {
            LIST_OLDEST_FIRST
        } else {
            LIST_NEWEST_FIRST
        };
        let rows = sqlx::query(sql)
            .bind(filter.agency)
            .bind(filter.role.as_str())
            .bind(filter.status.map_or("", ReferralStatus::as_str))
            .bind(filter.from.as_micros())
            .bind(filter.to.as_micros())
            .bind(i64::from(filter.overdue))
            .bind(filter.now.as_micros())
            .bind(after_at)
            .bind(after_id)
            .bind(filter.limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(ReferralRecord::from_row).collect()
    }
}
