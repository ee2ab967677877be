//! Audit log rows: appended inside the transaction of what they record, numbered without
//! gaps under a lock on the chain head.

use sqlx::Row;

use super::batch::{Bracket, Write, Written, append_entries, chain_head, entry_of};
use super::{Backend, Store, StoreError, to_micros};
use crate::domain::Timestamp;
use crate::domain::audit::{ActionFilter, AuditAction, AuditEntry, Checkpoint};

/// An entry before it is numbered and linked.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub actor: String,
    pub action: AuditAction,
    pub referral_id: Option<String>,
    pub recipient: Option<String>,
    pub isa_id: Option<String>,
    pub lawful_basis: Option<String>,
    pub consent: Option<String>,
    pub categories: Vec<String>,
    pub withheld: Vec<String>,
    pub person_key: Option<String>,
    pub detail: String,
}

impl AuditRecord {
    pub fn new(actor: impl Into<String>, action: AuditAction) -> Self {
        Self {
            actor: actor.into(),
            action,
            referral_id: None,
            recipient: None,
            isa_id: None,
            lawful_basis: None,
            consent: None,
            categories: Vec::new(),
            withheld: Vec::new(),
            person_key: None,
            detail: String::new(),
        }
    }

    pub fn referral(mut self, id: impl ToString) -> Self {
        self.referral_id = Some(id.to_string());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// Appends one entry in `tx`. The caller holds the SQLite write turn, if any.
pub(crate) async fn append_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    record: &AuditRecord,
    at: i64,
) -> Result<i64, StoreError> {
    append_audit_many(tx, backend, std::slice::from_ref(record), at).await
}

/// Appends entries in order in `tx`, locking and moving the head once. Returns the last seq.
pub(crate) async fn append_audit_many(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    records: &[AuditRecord],
    at: i64,
) -> Result<i64, StoreError> {
    let head = sqlx::query(backend.chain_head_sql())
        .fetch_one(&mut **tx)
        .await?;
    let (mut seq, mut prev_hash) = chain_head(&head)?;
    if records.is_empty() {
        return Ok(seq);
    }
    let mut entries = Vec::with_capacity(records.len());
    for record in records {
        seq += 1;
        let entry = entry_of(record, seq, at, prev_hash);
        prev_hash = entry.hash();
        entries.push((entry, prev_hash.clone()));
    }
    append_entries(backend, tx, &entries, &Bracket::none()).await?;
    Ok(seq)
}

fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<(AuditEntry, String), StoreError> {
    let list = |name: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.try_get(name)?;
        serde_json::from_str(&text).map_err(|_| StoreError::Corrupt(format!("audit {name}")))
    };
    Ok((
        AuditEntry {
            seq: row.try_get("seq")?,
            at: Timestamp::from_micros(row.try_get("at")?),
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            referral_id: row.try_get("referral_id")?,
            recipient: row.try_get("recipient")?,
            isa_id: row.try_get("isa_id")?,
            lawful_basis: row.try_get("lawful_basis")?,
            consent: row.try_get("consent")?,
            categories: list("categories")?,
            withheld: list("withheld")?,
            person_key: row.try_get("person_key")?,
            detail: row.try_get("detail")?,
            prev_hash: row.try_get("prev_hash")?,
        },
        row.try_get("hash")?,
    ))
}

/// The sequence number of the last entry an audit write appended.
fn audit_seq(written: Written) -> Result<i64, StoreError> {
    match written {
        Written::Audit(seq) => Ok(seq),
        other => Err(StoreError::Corrupt(format!(
            "an audit write came back as {other:?}"
        ))),
    }
}

impl Store {
    /// Appends one entry (through the committer, when the process has one).
    pub async fn audit(
        &self,
        record: &AuditRecord,
        at: time::OffsetDateTime,
    ) -> Result<i64, StoreError> {
        self.audit_all(std::slice::from_ref(record), at).await
    }

    /// [`Self::audit`] for a worker: waits for room in the committer's queue rather than
    /// being refused while requests fill it (a worker's write must not be dropped).
    pub async fn audit_waiting(
        &self,
        record: &AuditRecord,
        at: time::OffsetDateTime,
    ) -> Result<i64, StoreError> {
        audit_seq(
            self.write_waiting(Write::Audit(vec![record.clone()], to_micros(at)))
                .await?,
        )
    }

    /// Appends entries in order, in one transaction.
    pub async fn audit_all(
        &self,
        records: &[AuditRecord],
        at: time::OffsetDateTime,
    ) -> Result<i64, StoreError> {
        audit_seq(
            self.write(Write::Audit(records.to_vec(), to_micros(at)))
                .await?,
        )
    }

    /// Entries after `after_seq`, in `seq` order, with their stored hashes. A row whose
    /// columns cannot be read is reported as corrupt.
    pub async fn audit_entries(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(AuditEntry, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, referral_id, recipient, isa_id, lawful_basis, consent, categories, \
             withheld, person_key, detail, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        chain_head(&row)
    }

    pub async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, head_hash, signed_at, key_id, signature FROM audit_checkpoints ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Checkpoint {
                    seq: row.try_get("seq")?,
                    head_hash: row.try_get("head_hash")?,
                    signed_at: row.try_get("signed_at")?,
                    key_id: row.try_get("key_id")?,
                    signature: row.try_get("signature")?,
                })
            })
            .collect()
    }

    /// The newest checkpoint, if any (the console's chain state: one row, not all of them).
    pub async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, head_hash, signed_at, key_id, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Checkpoint {
                seq: row.try_get("seq")?,
                head_hash: row.try_get("head_hash")?,
                signed_at: row.try_get("signed_at")?,
                key_id: row.try_get("key_id")?,
                signature: row.try_get("signature")?,
            })
        })
        .transpose()
    }

    /// The seq of the latest checkpoint up to `head` (0 if none), whether any lies
    /// beyond `head`, and the latest `signed_at` of those up to it (0 if none).
    pub async fn last_checkpoint_seq(&self, head: i64) -> Result<(i64, bool, i64), StoreError> {
        let row = sqlx::query(
            "SELECT MAX(CASE WHEN seq <= $1 THEN seq END) AS seq, \
             COUNT(CASE WHEN seq > $1 THEN 1 END) AS beyond, \
             MAX(CASE WHEN seq <= $1 THEN signed_at END) AS signed_at FROM audit_checkpoints",
        )
        .bind(head)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.try_get::<Option<i64>, _>("seq")?.unwrap_or(0),
            row.try_get::<i64, _>("beyond")? > 0,
            row.try_get::<Option<i64>, _>("signed_at")?.unwrap_or(0),
        ))
    }

    /// Records a signed checkpoint of the head (`ON CONFLICT DO NOTHING`: one per seq).
    /// Returns whether it was written (not, when a row for that seq was already there).
    pub async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let written = sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(checkpoint.seq)
        .bind(&checkpoint.head_hash)
        .bind(checkpoint.signed_at)
        .bind(&checkpoint.key_id)
        .bind(&checkpoint.signature)
        .execute(&self.pool)
        .await?;
        Ok(written.rows_affected() == 1)
    }
}

/// Filters for reading the audit log (auditors' queries and exports), oldest first.
#[derive(Debug, Clone)]
pub struct AuditQuery<'a> {
    /// Entries whose actor is `agency:<id>`, whose recipient is the agency, or about a
    /// referral it sent or received; empty for all.
    pub agency: &'a str,
    /// One action or a family of them; `None` for all.
    pub action: Option<ActionFilter>,
    /// One referral's entries; empty for all.
    pub referral: &'a str,
    /// `at` in `[from, to)`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Entries with `after_seq < seq <= upto_seq`.
    pub after_seq: i64,
    pub upto_seq: i64,
    pub limit: i64,
}

impl AuditQuery<'static> {
    /// Every entry in `(after_seq, upto_seq]`, at most `limit`: a page of an export.
    pub fn everything(after_seq: i64, upto_seq: i64, limit: i64) -> Self {
        Self {
            agency: "",
            action: None,
            referral: "",
            from: Timestamp::MIN,
            to: Timestamp::MAX,
            after_seq,
            upto_seq,
            limit,
        }
    }
}

impl Store {
    pub async fn search_audit(
        &self,
        q: &AuditQuery<'_>,
    ) -> Result<Vec<(AuditEntry, String)>, StoreError> {
        // An action name, or a prefix such as `referral.` for a family; empty for all.
        let (action, action_prefix) = match &q.action {
            None => ("", false),
            Some(ActionFilter::Exact(action)) => (action.as_str(), false),
            Some(ActionFilter::Family(prefix)) => (prefix.as_str(), true),
        };
        let mut tx = self.filtered_read().await?;
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, referral_id, recipient, isa_id, lawful_basis, consent, categories, \
             withheld, person_key, detail, prev_hash, hash FROM audit_log \
             WHERE seq > $1 AND seq <= $2 AND at >= $3 AND at < $4 \
             AND ($5 = '' OR actor = $6 OR recipient = $5 OR referral_id IN \
                  (SELECT id FROM referrals WHERE sender_agency = $5 OR recipient_agency = $5)) \
             AND ($7 = '' OR ($8 = 0 AND action = $7) OR ($8 = 1 AND action LIKE $9)) \
             AND ($10 = '' OR referral_id = $10) \
             ORDER BY seq LIMIT $11",
        )
        .bind(q.after_seq)
        .bind(q.upto_seq)
        .bind(q.from.as_micros())
        .bind(q.to.as_micros())
        .bind(q.agency)
        .bind(format!("agency:{}", q.agency))
        .bind(action)
        .bind(i64::from(action_prefix))
        .bind(format!("{action}%"))
        .bind(q.referral)
        .bind(q.limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Where a walk through the entries logged in `[from, to)` starts and ends: the
    /// `(after, upto)` sequence bounds that hold them all, within `(after, upto)` as given,
    /// so that a search or an export over a period reads the log from the period's first
    /// entry rather than from the log's (and stops at its last). An empty range
    /// (`after == upto`) when nothing was logged in the period; the bounds as given when
    /// the period is unbounded. The walk still filters on `at`: entries are appended in
    /// nearly but not strictly increasing `at`, which is why the bounds are the MIN and MAX
    /// of `seq` over the period (an index-only scan of `(at, seq)`), not a guess.
    pub async fn audit_period_bounds(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: i64,
        upto: i64,
    ) -> Result<(i64, i64), StoreError> {
        if from == Timestamp::MIN && to == Timestamp::MAX {
            return Ok((after, upto));
        }
        // `seq + 0` keeps the planner from turning MIN/MAX into a walk of the primary key
        // (what this avoids); it reads the `(at, seq)` index alone instead.
        let row = sqlx::query(
            "SELECT MIN(seq + 0) AS first, MAX(seq + 0) AS last FROM audit_log WHERE at >= $1 AND at < $2",
        )
        .bind(from.as_micros())
        .bind(to.as_micros())
        .fetch_one(&self.pool)
        .await?;
        Ok(
            match (
                row.try_get::<Option<i64>, _>("first")?,
                row.try_get::<Option<i64>, _>("last")?,
            ) {
                (Some(first), Some(last)) => {
                    let upto = upto.min(last);
                    (after.max(first - 1).min(upto), upto)
                }
                _ => (upto, upto),
            },
        )
    }

    /// Every entry about a person (a subject access request): entries carrying one of
    /// the person keys, and every entry of the referrals those entries name.
    pub async fn audit_about_person(
        &self,
        keys: &[String],
        after_seq: i64,
        upto_seq: i64,
        limit: i64,
    ) -> Result<Vec<(AuditEntry, String)>, StoreError> {
        let (first, second) = two_keys(keys);
        // Two indexed lookups joined by UNION (an OR over a subquery scans the table):
        // entries under the person's keys, and every entry of the referrals they name.
        let mut tx = self.filtered_read().await?;
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, referral_id, recipient, isa_id, lawful_basis, consent, categories, \
             withheld, person_key, detail, prev_hash, hash FROM ( \
               SELECT * FROM audit_log WHERE person_key = $1 OR person_key = $2 \
               UNION \
               SELECT a.* FROM audit_log a JOIN (SELECT DISTINCT referral_id FROM audit_log \
                 WHERE (person_key = $1 OR person_key = $2) AND referral_id IS NOT NULL) r \
               ON a.referral_id = r.referral_id \
             ) about WHERE seq > $3 AND seq <= $4 ORDER BY seq LIMIT $5",
        )
        .bind(first)
        .bind(second)
        .bind(after_seq)
        .bind(upto_seq)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// For a subject access request, over the whole log up to `upto_seq`: the referrals
    /// about the person (in the order they were first logged), how many were shared
    /// (`referral.submitted`) and how many attempts were refused (`referral.refused`).
    pub async fn person_summary(
        &self,
        keys: &[String],
        upto_seq: i64,
    ) -> Result<PersonSummary, StoreError> {
        let (first, second) = two_keys(keys);
        let rows = sqlx::query(
            "SELECT referral_id, action FROM audit_log \
             WHERE (person_key = $1 OR person_key = $2) AND seq <= $3 ORDER BY seq",
        )
        .bind(first)
        .bind(second)
        .bind(upto_seq)
        .fetch_all(&self.pool)
        .await?;
        let mut summary = PersonSummary::default();
        for row in &rows {
            let action: String = row.try_get("action")?;
            match action.parse() {
                Ok(AuditAction::ReferralSubmitted) => summary.shared += 1,
                Ok(AuditAction::ReferralRefused) => summary.refused += 1,
                _ => {}
            }
            if let Some(id) = row.try_get::<Option<String>, _>("referral_id")?
                && !summary.referrals.contains(&id)
            {
                summary.referrals.push(id);
            }
        }
        Ok(summary)
    }
}

/// A person has one or two keys (NHS number; name and date of birth): the queries take
/// two, repeating the first when there is one.
fn two_keys(keys: &[String]) -> (String, String) {
    let first = keys.first().cloned().unwrap_or_default();
    let second = keys.get(1).cloned().unwrap_or_else(|| first.clone());
    (first, second)
}

/// See [`Store::person_summary`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonSummary {
    pub referrals: Vec<String>,
    pub shared: i64,
    pub refused: i64,
}

/// One `referral.submitted` entry carrying a person key: who (the pseudonymous key, never
/// a name), which referral, to which agency, and when.
pub type PersonSubmission = (String, String, String, Timestamp);

impl Store {
    /// The `referral.submitted` entries carrying a person key with `from <= at < to`, by
    /// person key then time: what the repeat-referrals page counts.
    pub async fn submissions_by_person(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<PersonSubmission>, StoreError> {
        let rows = sqlx::query(
            "SELECT person_key, referral_id, recipient, at FROM audit_log \
             WHERE action = $1 AND person_key IS NOT NULL AND referral_id IS NOT NULL \
             AND recipient IS NOT NULL AND at >= $2 AND at < $3 \
             ORDER BY person_key, at, seq",
        )
        .bind(AuditAction::ReferralSubmitted.as_str())
        .bind(from.as_micros())
        .bind(to.as_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("person_key")?,
                    row.try_get::<String, _>("referral_id")?,
                    row.try_get::<String, _>("recipient")?,
                    Timestamp::from_micros(row.try_get::<i64, _>("at")?),
                ))
            })
            .collect()
    }

    /// The referrals declined (an `event.posted` entry whose detail is the event type
    /// `declined`) in `[from, to)`, with when each decline was posted. What the repeat
    /// referrals of a period need: a referral submitted in the period can only have been
    /// declined after `from`, and only the period's referrals are compared
    /// (`governance::repeats`). Read through the `(action, at)` index.
    pub async fn declined_referrals(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let rows = sqlx::query(
            "SELECT referral_id, at FROM audit_log \
             WHERE action = $1 AND at >= $2 AND at < $3 AND detail = $4 AND referral_id IS NOT NULL \
             ORDER BY at, seq",
        )
        .bind(AuditAction::EventPosted.as_str())
        .bind(from.as_micros())
        .bind(to.as_micros())
        .bind("declined")
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("referral_id")?,
                    Timestamp::from_micros(row.try_get::<i64, _>("at")?),
                ))
            })
            .collect()
    }
}
