//! SLA clocks: the scanner's transaction, and reads for views and reports.

use sqlx::Row;

use super::events::insert_outbox;
use super::{Store, StoreError, from_micros};
use crate::domain::messages::OutboxMessage;
use crate::domain::sla::{Clock, ClockState};
use crate::domain::{AgencyId, Priority, ReferralId, ReferralStatus, ServiceType, Timestamp};

/// A clock that reached its warning point or its deadline.
#[derive(Debug, Clone)]
pub struct DueClock {
    pub referral_id: ReferralId,
    pub clock: Clock,
    pub due_at: Timestamp,
    pub sender_agency: AgencyId,
    pub recipient_agency: AgencyId,
    pub service_type: ServiceType,
    pub priority: Priority,
    pub status: ReferralStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Warning,
    Breach,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub warnings: usize,
    pub breaches: usize,
    pub undelivered: usize,
    /// Another instance held the scanner lock (PostgreSQL).
    pub skipped: bool,
}

/// A clock's state, for `GET /v1/referrals/{id}` and reports.
#[derive(Debug, Clone)]
pub struct ClockRow {
    pub referral_id: ReferralId,
    pub clock: Clock,
    pub started_at: Timestamp,
    pub due_at: Timestamp,
    pub met_at: Option<Timestamp>,
    pub met_late: bool,
    pub stopped_at: Option<Timestamp>,
    pub warned_at: Option<Timestamp>,
    pub breached_at: Option<Timestamp>,
}

impl ClockRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            referral_id: referral_id_of(row, "referral_id")?,
            clock: clock_of(row)?,
            started_at: timestamp_of(row, "started_at")?,
            due_at: timestamp_of(row, "due_at")?,
            met_at: optional_timestamp_of(row, "met_at")?,
            met_late: row.try_get::<Option<i64>, _>("met_late")?.unwrap_or(0) == 1,
            stopped_at: optional_timestamp_of(row, "stopped_at")?,
            warned_at: optional_timestamp_of(row, "warned_at")?,
            breached_at: optional_timestamp_of(row, "breached_at")?,
        })
    }

    /// running, met, met_late (also when met after a recorded breach), breached (still
    /// open past its deadline at `now`, µs, as `domain::sla::is_overdue` says, whether or
    /// not the scanner has flagged it yet) or stopped.
    pub fn state(&self, now: Timestamp) -> ClockState {
        ClockState::of(
            self.due_at,
            self.met_at,
            self.met_late,
            self.breached_at.is_some(),
            self.stopped_at,
            now,
        )
    }
}

/// Rows are handled at most this many per kind per scan; the next scan takes the rest.
const SCAN_BATCH: i64 = 500;
/// Identifies the scanner's transaction-scoped advisory lock on PostgreSQL.
const SCANNER_LOCK: i64 = 0x5245_4647_5701;

const DUE_WARNINGS: &str = "SELECT c.referral_id, c.clock, c.due_at, r.sender_agency, r.recipient_agency, r.service_type, r.priority, r.status \
     FROM sla_clocks c JOIN referrals r ON r.id = c.referral_id \
     WHERE c.met_at IS NULL AND c.stopped_at IS NULL AND c.warned_at IS NULL AND c.breached_at IS NULL \
     AND c.warn_at <= $1 AND c.due_at > $1 ORDER BY c.warn_at LIMIT $2";
const DUE_BREACHES: &str = "SELECT c.referral_id, c.clock, c.due_at, r.sender_agency, r.recipient_agency, r.service_type, r.priority, r.status \
     FROM sla_clocks c JOIN referrals r ON r.id = c.referral_id \
     WHERE c.met_at IS NULL AND c.stopped_at IS NULL AND c.breached_at IS NULL \
     AND c.due_at <= $1 ORDER BY c.due_at LIMIT $2";

/// The `clock` column as a `Clock`.
fn clock_of(row: &sqlx::any::AnyRow) -> Result<Clock, StoreError> {
    let clock: String = row.try_get("clock")?;
    clock
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("clock '{clock}'")))
}

fn timestamp_of(row: &sqlx::any::AnyRow, name: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_micros(row.try_get(name)?))
}

fn optional_timestamp_of(
    row: &sqlx::any::AnyRow,
    name: &str,
) -> Result<Option<Timestamp>, StoreError> {
    Ok(row
        .try_get::<Option<i64>, _>(name)?
        .map(Timestamp::from_micros))
}

fn referral_id_of(row: &sqlx::any::AnyRow, name: &str) -> Result<ReferralId, StoreError> {
    let id: String = row.try_get(name)?;
    ReferralId::parse(&id).map_err(|_| StoreError::Corrupt(format!("referral id '{id}'")))
}

fn due_clock(row: &sqlx::any::AnyRow) -> Result<DueClock, StoreError> {
    let text = |name: &str| row.try_get::<String, _>(name);
    let corrupt = |name: &str, value: String| StoreError::Corrupt(format!("{name} '{value}'"));
    let agency = |name: &str| -> Result<AgencyId, StoreError> {
        let value = text(name)?;
        AgencyId::parse(value.clone()).map_err(|_| corrupt(name, value))
    };
    let service_type = text("service_type")?;
    let priority = text("priority")?;
    let status = text("status")?;
    Ok(DueClock {
        referral_id: referral_id_of(row, "referral_id")?,
        clock: clock_of(row)?,
        due_at: timestamp_of(row, "due_at")?,
        sender_agency: agency("sender_agency")?,
        recipient_agency: agency("recipient_agency")?,
        service_type: ServiceType::parse(service_type.clone())
            .map_err(|_| corrupt("service_type", service_type))?,
        priority: priority
            .parse()
            .map_err(|_| corrupt("priority", priority))?,
        status: status.parse().map_err(|_| corrupt("status", status))?,
    })
}

impl Store {
    /// One scan at `now` (µs), in one transaction: flags due warnings and breaches once
    /// each, marks never-acknowledged referrals `undelivered`, and writes the messages
    /// `render` gives for each to the outbox. On PostgreSQL only one instance scans at a
    /// time (a transaction-scoped advisory lock); others skip.
    pub async fn sla_scan(
        &self,
        now: Timestamp,
        render: impl Fn(&DueClock, Due) -> Vec<OutboxMessage>,
    ) -> Result<ScanCounts, StoreError> {
        self.on_write_connection(async |conn| self.sla_scan_on(conn, now.as_micros(), render).await)
            .await
    }

    /// A due clock read by the scan, with its referral's row locked first, as an event's
    /// transaction takes it (then its clocks): the same order, so the two never deadlock
    /// on PostgreSQL. `None` for a row that cannot be read (changed outside the gateway):
    /// it is logged and skipped, not allowed to stop every scan.
    async fn lock_due(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        row: &sqlx::any::AnyRow,
    ) -> Result<Option<(DueClock, String)>, StoreError> {
        let due = match due_clock(row) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "an SLA clock row cannot be read; skipped");
                return Ok(None);
            }
        };
        let referral_id = due.referral_id.to_string();
        sqlx::query(self.backend.lock_referral_sql())
            .bind(&referral_id)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(Some((due, referral_id)))
    }

    async fn sla_scan_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        now: i64,
        render: impl Fn(&DueClock, Due) -> Vec<OutboxMessage>,
    ) -> Result<ScanCounts, StoreError> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        if let Some(lock) = self.backend.scanner_lock_sql() {
            let row = sqlx::query(lock)
                .bind(SCANNER_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !row.try_get::<bool, _>("locked")? {
                return Ok(ScanCounts {
                    skipped: true,
                    ..Default::default()
                });
            }
        }
        let mut counts = ScanCounts::default();
        let warnings = sqlx::query(DUE_WARNINGS)
            .bind(now)
            .bind(SCAN_BATCH)
            .fetch_all(&mut *tx)
            .await?;
        for row in &warnings {
            let Some((due, referral_id)) = self.lock_due(&mut tx, row).await? else {
                continue;
            };
            // Under the same conditions as the read: on PostgreSQL an event's transaction
            // can meet or stop the clock between the two (READ COMMITTED), and then
            // nothing is due any more.
            let warned = sqlx::query(
                "UPDATE sla_clocks SET warned_at = $1 WHERE referral_id = $2 AND clock = $3 \
                 AND met_at IS NULL AND stopped_at IS NULL AND warned_at IS NULL AND breached_at IS NULL",
            )
            .bind(now)
            .bind(&referral_id)
            .bind(due.clock.as_str())
            .execute(&mut *tx)
            .await?;
            if warned.rows_affected() == 0 {
                continue;
            }
            for message in render(&due, Due::Warning) {
                insert_outbox(&mut tx, &referral_id, &message, now, None).await?;
            }
            counts.warnings += 1;
        }
        let breaches = sqlx::query(DUE_BREACHES)
            .bind(now)
            .bind(SCAN_BATCH)
            .fetch_all(&mut *tx)
            .await?;
        for row in &breaches {
            let Some((due, referral_id)) = self.lock_due(&mut tx, row).await? else {
                continue;
            };
            let breached = sqlx::query(
                "UPDATE sla_clocks SET breached_at = $1, warned_at = COALESCE(warned_at, $1) \
                 WHERE referral_id = $2 AND clock = $3 \
                 AND met_at IS NULL AND stopped_at IS NULL AND breached_at IS NULL",
            )
            .bind(now)
            .bind(&referral_id)
            .bind(due.clock.as_str())
            .execute(&mut *tx)
            .await?;
            if breached.rows_affected() == 0 {
                continue;
            }
            if due.clock == Clock::Delivery {
                let changed = sqlx::query(
                    "UPDATE referrals SET status = 'undelivered', updated_at = $1 \
                     WHERE id = $2 AND status IN ('received', 'queued', 'delivered')",
                )
                .bind(now)
                .bind(&referral_id)
                .execute(&mut *tx)
                .await?;
                counts.undelivered += usize::try_from(changed.rows_affected()).unwrap_or(0);
            }
            for message in render(&due, Due::Breach) {
                insert_outbox(&mut tx, &referral_id, &message, now, None).await?;
            }
            counts.breaches += 1;
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// A referral's clocks, by deadline.
    pub async fn clocks(&self, referral_id: ReferralId) -> Result<Vec<ClockRow>, StoreError> {
        self.clocks_of(&[referral_id]).await
    }

    /// The clocks of several referrals (a page of a list) in one read per
    /// [`CLOCKS_PER_READ`] ids, each referral's by deadline.
    pub async fn clocks_of(&self, ids: &[ReferralId]) -> Result<Vec<ClockRow>, StoreError> {
        let mut clocks = Vec::with_capacity(ids.len() * 3);
        for chunk in ids.chunks(CLOCKS_PER_READ) {
            let ids = super::dialect::in_list(chunk);
            let placeholders = self.backend.placeholder_list(1, ids.clone().count());
            let sql = format!(
                "SELECT referral_id, clock, started_at, due_at, met_at, met_late, stopped_at, warned_at, breached_at \
                 FROM sla_clocks WHERE referral_id IN ({placeholders}) ORDER BY referral_id, due_at"
            );
            let mut query = sqlx::query(&sql);
            for id in ids {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                clocks.push(ClockRow::from_row(&row)?);
            }
        }
        Ok(clocks)
    }
}

/// The most ids one read of [`Store::clocks_of`] binds (well under SQLite's 32,766).
const CLOCKS_PER_READ: usize = 512;

/// A clock unfolded: `(clock, started, due, met, stopped, breached)`.
type UnfoldedClock = (Clock, i64, i64, Option<i64>, Option<i64>, Option<i64>);

/// One clock as [`Store::report_facts`] folds it: `clock,started,due,met,stopped,breached`.
fn unfold_clock(text: &str) -> Option<UnfoldedClock> {
    let mut parts = text.split(',');
    let clock = parts.next()?.parse().ok()?;
    let started = parts.next()?.parse().ok()?;
    let due = parts.next()?.parse().ok()?;
    let optional = |part: &str| -> Option<Option<i64>> {
        if part.is_empty() {
            Some(None)
        } else {
            part.parse().ok().map(Some)
        }
    };
    let met = optional(parts.next()?)?;
    let stopped = optional(parts.next()?)?;
    let breached = optional(parts.next()?)?;
    parts
        .next()
        .is_none()
        .then_some((clock, started, due, met, stopped, breached))
}

/// RFC 3339 text of a stored timestamp (empty if out of range).
pub fn rfc3339(micros: i64) -> String {
    from_micros(micros)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Store {
    /// The rows an SLA report aggregates: clocks of referrals received in `[from, to)`,
    /// optionally only those the agency sent or received, and their first-contact outcomes.
    pub async fn report_facts(
        &self,
        from: Timestamp,
        to: Timestamp,
        agency: Option<&str>,
    ) -> Result<
        (
            Vec<crate::sla::report::ClockFact>,
            Vec<crate::sla::report::ContactFact>,
        ),
        StoreError,
    > {
        let agency = agency.unwrap_or("");
        // In no particular order: the aggregation does not depend on it. One row per
        // referral, its clocks folded into one text column
        // (`clock,started,due,met,stopped,breached;...`, the last three empty when unset): a
        // quarter of the rows, and each row decoded through the `Any` driver costs far more
        // than splitting a short text.
        let fold = self.backend.text_aggregate();
        let mut tx = self.filtered_read().await?;
        let rows = sqlx::query(&format!(
            "SELECT r.id, r.received_at, r.recipient_agency, r.service_type, r.priority, \
             {fold}(c.clock || ',' || CAST(c.started_at AS TEXT) || ',' || CAST(c.due_at AS TEXT) || ',' || \
             COALESCE(CAST(c.met_at AS TEXT), '') || ',' || COALESCE(CAST(c.stopped_at AS TEXT), '') || ',' || \
             COALESCE(CAST(c.breached_at AS TEXT), ''), ';') AS clocks \
             FROM referrals r JOIN sla_clocks c ON c.referral_id = r.id \
             WHERE r.received_at >= $1 AND r.received_at < $2 \
             AND ($3 = '' OR r.recipient_agency = $3 OR r.sender_agency = $3) \
             GROUP BY r.id, r.received_at, r.recipient_agency, r.service_type, r.priority"
        ))
        .bind(from.as_micros())
        .bind(to.as_micros())
        .bind(agency)
        .fetch_all(&mut *tx)
        .await?;
        let mut clocks = Vec::with_capacity(rows.len() * 4);
        for row in &rows {
            let referral_id: String = row.try_get("id")?;
            let received_at: i64 = row.try_get("received_at")?;
            let agency: String = row.try_get("recipient_agency")?;
            let service_type: String = row.try_get("service_type")?;
            let priority: String = row.try_get("priority")?;
            let folded: String = row.try_get("clocks")?;
            for clock in folded.split(';') {
                let (clock, started_at, due_at, met_at, stopped_at, breached_at) =
                    unfold_clock(clock).ok_or_else(|| {
                        StoreError::Corrupt(format!("the clocks of referral {referral_id}"))
                    })?;
                clocks.push(crate::sla::report::ClockFact {
                    referral_id: referral_id.clone(),
                    received_at,
                    agency: agency.clone(),
                    service_type: service_type.clone(),
                    priority: priority.clone(),
                    clock,
                    started_at,
                    due_at,
                    met_at,
                    stopped_at,
                    breached_at,
                });
            }
        }
        // On PostgreSQL by an array of the period's referral ids (`dialect.rs`).
        let rows = sqlx::query(self.backend.first_contacts_sql())
            .bind(from.as_micros())
            .bind(to.as_micros())
            .bind(agency)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let contacts = rows
            .iter()
            .map(|row| {
                let (_, body) = self.open_event_record(row)?;
                let outcome = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["contact"]["outcome"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Ok(crate::sla::report::ContactFact {
                    referral_id: row.try_get("referral_id")?,
                    outcome,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((clocks, contacts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_clocks_unfold() {
        assert_eq!(
            unfold_clock("acknowledge,10,20,15,,"),
            Some((Clock::Acknowledge, 10, 20, Some(15), None, None))
        );
        assert_eq!(
            unfold_clock("first_contact,-5,20,,30,25"),
            Some((Clock::FirstContact, -5, 20, None, Some(30), Some(25)))
        );
        for bad in [
            "",
            "acknowledge,10,20,15",
            "acknowledge,10,20,15,",
            "acknowledge,10,20,15,,,",
            "nothing,1,2,,",
            "decision,x,2,,",
            "decision,1,2,y,",
        ] {
            assert_eq!(unfold_clock(bad), None, "{bad}");
        }
    }
}
