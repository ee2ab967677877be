//! The write path's transactions: a batch of prepared writes (referrals with their outbox
//! rows, clocks and idempotency keys; lifecycle events; audit entries) in one transaction,
//! with multi-row statements, the audit chain extended in memory under one lock of its
//! head, and one commit. The committer ([`super::committer`]) forms the batches; a store
//! without one (the command-line tools) writes each as a batch of one.

use std::collections::HashMap;

use sqlx::Row;

use super::events::insert_outbox;
use super::{
    AuditRecord, Backend, EventOutcome, IdempotencyRecord, Inserted, Store, StoreError,
    StoredEvent, from_micros,
};
use crate::domain::audit::AuditEntry;
use crate::domain::messages::{MessageType, OutboxMessage};
use crate::domain::sla::Clock;
use crate::domain::{
    AgencyId, Area, EventType, IllegalTransition, Priority, ReferralId, ReferralStatus,
    ServiceType, Timestamp,
};

/// Statements bind at most this many values (SQLite allows 32766, PostgreSQL 65535):
/// longer lists of rows are split.
const MAX_BINDS: usize = 30_000;

/// `rows` as the runs one multi-row statement each writes: lengths that are powers of two,
/// longest first, none binding more than [`MAX_BINDS`] values of `columns` each. A table's
/// insert then has one of a few shapes (a batch of 37 is written as 32 + 4 + 1), so each
/// shape is prepared once per connection and reused: a statement for every batch length
/// seen would overflow the connection's statement cache (100) and be prepared again for
/// nearly every batch.
pub(crate) fn statement_chunks<T>(mut rows: &[T], columns: usize) -> impl Iterator<Item = &[T]> {
    let longest = power_of_two_at_most((MAX_BINDS / columns.max(1)).max(1));
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let (run, rest) = rows.split_at(power_of_two_at_most(rows.len()).min(longest));
        rows = rest;
        Some(run)
    })
}

/// The largest power of two not above `n` (`n` > 0).
fn power_of_two_at_most(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

/// A referral ready to be written: its payload already sealed, every column computed.
pub(crate) struct PreparedReferral {
    pub referral_id: ReferralId,
    /// `referral_id` as text, as bound.
    pub id: String,
    pub sender: AgencyId,
    pub recipient: AgencyId,
    pub service_type: ServiceType,
    pub area: Area,
    pub priority: Priority,
    pub schema_id: String,
    /// The sealed payload, as stored.
    pub payload: String,
    pub payload_key_id: Option<String>,
    /// The payload before sealing: what the relay publishes when the committer hands it
    /// the referral (see [`Claim`]). Holds personal data: never log it.
    pub plaintext: String,
    pub payload_sha256: String,
    pub correlation_id: String,
    pub at: i64,
    /// `(key, sha256 of the request body)`.
    pub idempotency: Option<(String, String)>,
    /// `(clock, due_at, warn_at)`.
    pub clocks: Vec<(&'static str, i64, i64)>,
    pub audit: AuditRecord,
    pub isa_id: Option<String>,
    /// JSON array of the withheld pointers.
    pub withheld: String,
    pub outbox: OutboxMessage,
}

/// A batch's referral outbox rows written already claimed, for the relay of this process
/// to publish from memory once the batch is committed ([`super::committer`]): as if its
/// relay had claimed them under `token` until `until` (µs). Rows the relay never gets to
/// are claimable again once the lease has passed.
pub(crate) struct Claim {
    pub token: String,
    pub until: i64,
}

/// A committed batch: each write's outcome, in order, and the outbox row id of each
/// referral written under the batch's [`Claim`] (by batch index).
pub(crate) struct Committed {
    pub outcomes: Vec<Result<Written, StoreError>>,
    pub claimed: Vec<(usize, i64)>,
}

/// Decides an event's new status from the current one.
pub type Decide =
    Box<dyn Fn(ReferralStatus) -> Result<ReferralStatus, IllegalTransition> + Send + Sync>;
/// Builds the stored event record and its outbox messages for the new status.
pub type Render = Box<dyn Fn(ReferralStatus) -> (String, Vec<OutboxMessage>) + Send + Sync>;

/// A lifecycle event to record (see [`Store::record_event`]). `decide` and `render` may
/// run more than once: a batch that fails is written again item by item.
pub struct NewEvent {
    pub id: uuid::Uuid,
    pub referral_id: ReferralId,
    pub event_id: String,
    pub actor_agency: AgencyId,
    pub event_type: EventType,
    pub request_sha256: String,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    /// SLA clocks this event meets (at `occurred_at`) and clocks it makes moot.
    pub meets: &'static [Clock],
    pub stops: &'static [Clock],
    pub audit: AuditRecord,
    pub decide: Decide,
    pub render: Render,
}

/// One write handed to the committer.
pub(crate) enum Write {
    Referral(Box<PreparedReferral>),
    Event(Box<NewEvent>),
    /// Entries appended in order, all at `at` (µs).
    Audit(Vec<AuditRecord>, i64),
    /// The relay's outbox rows `ids`, claimed under these tokens, were confirmed by the broker
    /// at `at` (µs): marked published, their referrals moved from `received` to
    /// `queued`, a `message.delivered` entry each (see [`Store::mark_claimed_published`]).
    Published {
        tokens: Vec<String>,
        /// The outbox rows confirmed.
        ids: Vec<i64>,
        at: i64,
    },
}

/// What a write came to once committed.
#[derive(Debug)]
pub(crate) enum Written {
    Referral(Inserted),
    Event(EventOutcome),
    /// The seq of the last entry appended (the head's, if none were).
    Audit(i64),
    /// How many outbox rows were marked published.
    Published(u64),
}

/// Why a batch was not committed.
pub(crate) enum BatchFailure {
    /// These referrals' idempotency keys were taken, by a transaction committed after
    /// their handlers looked: nothing was written; the batch is written again without them.
    KeysTaken(Vec<usize>),
    /// Something else failed (a constraint, the connection): nothing was written.
    Failed(StoreError),
}

impl From<sqlx::Error> for BatchFailure {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<StoreError> for BatchFailure {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}

/// A referral's outcome within the batch before commit.
enum Planned {
    Insert,
    /// Same sender and key as the earlier referral at this index in the batch.
    SameKeyAs(usize),
    /// Key taken in the database: answered after rollback by reading the key's record.
    KeyTaken,
}

/// Writes `batch` in one transaction, the referrals at the indexes in `taken` without
/// their rows (their keys are known to be taken): the outcome of each write, in order, or
/// why nothing was written. Once committed, a write can only fail alone (reading the
/// record of a taken key).
pub(crate) async fn write_batch(
    store: &Store,
    batch: &[Write],
    taken: &[usize],
    claim: Option<&Claim>,
) -> Result<Committed, BatchFailure> {
    store
        .on_write_connection(async |conn| write_batch_on(conn, store, batch, taken, claim).await)
        .await
}

async fn write_batch_on(
    conn: &mut sqlx::AnyConnection,
    store: &Store,
    batch: &[Write],
    taken: &[usize],
    claim: Option<&Claim>,
) -> Result<Committed, BatchFailure> {
    let (plans, outcomes, claimed, _) = if store.backend == Backend::Sqlite {
        // BEGIN and COMMIT travel with the batch's first and last statements (see
        // `Bracket`). An error leaves the transaction open: the store then drops the
        // connection, and closing it rolls the transaction back.
        let mut bracket = Bracket::sqlite();
        write_transaction(conn, &mut bracket, store, batch, taken, claim).await?
    } else {
        let mut tx = sqlx::Connection::begin(conn).await?;
        let written =
            write_transaction(&mut tx, &mut Bracket::none(), store, batch, taken, claim).await?;
        if let Err(e) = tx.commit().await {
            // The COMMIT's answer was lost (the connection dropped): the transaction may
            // have committed all the same. Its last audit entry, read on another
            // connection, says which; answering "failed" for a committed batch would
            // have its senders retry into duplicates.
            match committed_after_all(store, written.3.as_ref()).await {
                Some(true) => {
                    tracing::warn!(error = %e, "the batch's COMMIT got no answer, but it committed");
                }
                Some(false) => return Err(BatchFailure::Failed(e.into())),
                // Neither: writing the batch again could append its audit entries twice.
                None => {
                    return Err(BatchFailure::Failed(StoreError::CommitUnknown(
                        e.to_string(),
                    )));
                }
            }
        }
        written
    };

    // Referrals answered from other rows: repeats within the batch, keys taken before it.
    let mut answers = Vec::with_capacity(batch.len());
    for ((write, plan), outcome) in batch.iter().zip(&plans).zip(outcomes) {
        answers.push(match (write, plan, outcome) {
            (_, _, Some(written)) => Ok(written),
            (Write::Referral(_), Some(Planned::SameKeyAs(first)), None) => match &batch[*first] {
                Write::Referral(first) => {
                    Ok(Written::Referral(Inserted::KeyTaken(IdempotencyRecord {
                        request_sha256: first
                            .idempotency
                            .as_ref()
                            .map(|(_, sha)| sha.clone())
                            .unwrap_or_default(),
                        referral_id: first.referral_id,
                    })))
                }
                _ => Err(StoreError::Corrupt(
                    "a repeated key names no referral".into(),
                )),
            },
            (Write::Referral(r), _, None) => taken_key(store, r).await,
            (_, _, None) => Err(StoreError::Corrupt("a write has no outcome".into())),
        });
    }
    Ok(Committed {
        outcomes: answers,
        claimed,
    })
}

/// The transaction a batch's statements run in. SQLite runs on a thread of its own, and
/// each call to it is a crossing there and back: a transaction's `BEGIN` and `COMMIT` go
/// in the same calls as the batch's first and last statements instead of calls of their
/// own. Such a transaction is the batch's alone, and abandoned whole on any error (the
/// connection is dropped), so its statements resolve conflicts with `OR ROLLBACK`: then
/// SQLite opens no statement journal (a copy of every page a multi-row statement touches,
/// kept to undo that statement alone) for those with no foreign key to check, such as the
/// referrals' and the audit entries' inserts. (`PRAGMA defer_foreign_keys` would spare
/// the others too, but setting it expires every prepared statement of the connection.)
/// PostgreSQL takes one statement per call, and its transaction is sqlx's; so is that of
/// the command-line tools' appends ([`Bracket::none`]).
pub(crate) struct Bracket {
    /// `BEGIN` is still to be sent, with the next call.
    begin: bool,
    /// The transaction is the batch's own, on SQLite: it ends with the last call.
    own: bool,
}

impl Bracket {
    fn sqlite() -> Self {
        Self {
            begin: true,
            own: true,
        }
    }

    pub(crate) fn none() -> Self {
        Self {
            begin: false,
            own: false,
        }
    }

    /// What the next call starts with: `BEGIN IMMEDIATE` (the write lock at once, waiting
    /// for another process's writer as long as the busy timeout allows), once.
    fn begin(&mut self) -> &'static str {
        if std::mem::take(&mut self.begin) {
            "BEGIN IMMEDIATE;\n"
        } else {
            ""
        }
    }

    /// How an insert starts.
    fn insert(&self) -> &'static str {
        if self.own {
            "INSERT OR ROLLBACK INTO "
        } else {
            INSERT
        }
    }

    /// What the last call ends with.
    fn commit(&self) -> &'static str {
        if self.own { ";\nCOMMIT" } else { "" }
    }

    /// Sends `BEGIN` on its own, if it has not gone yet: before statements that cannot
    /// carry it.
    async fn begun(&mut self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        let begin = self.begin();
        if !begin.is_empty() {
            sqlx::query(begin).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// How an insert starts in a transaction that is not the batch's own.
const INSERT: &str = "INSERT INTO ";

/// Each write's plan and outcome (`None`: answered after the commit from other rows),
/// and the claimed outbox rows: everything up to the commit, which on SQLite goes with
/// the last statement.
type Transacted = (
    Vec<Option<Planned>>,
    Vec<Option<Written>>,
    Vec<(usize, i64)>,
    // The batch's last audit entry (seq, hash): what shows whether it committed.
    Option<(i64, String)>,
);

/// Writes the batch in the transaction `bracket` describes: on SQLite its own, begun with
/// the first call and committed with the last; on PostgreSQL sqlx's, which the caller
/// begins and commits.
async fn write_transaction(
    conn: &mut sqlx::AnyConnection,
    bracket: &mut Bracket,
    store: &Store,
    batch: &[Write],
    taken: &[usize],
    claim: Option<&Claim>,
) -> Result<Transacted, BatchFailure> {
    // Referrals: in-batch repeats of a (sender, key) answer as replays of the first.
    let mut plans: Vec<Option<Planned>> = Vec::with_capacity(batch.len());
    let mut first_with_key: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, write) in batch.iter().enumerate() {
        plans.push(match write {
            Write::Referral(_) if taken.contains(&i) => Some(Planned::KeyTaken),
            Write::Referral(r) => match &r.idempotency {
                Some((key, _)) => match first_with_key.entry((r.sender.as_str(), key.as_str())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        Some(Planned::SameKeyAs(*first.get()))
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(i);
                        Some(Planned::Insert)
                    }
                },
                None => Some(Planned::Insert),
            },
            _ => None,
        });
    }
    let inserted: Vec<(usize, &PreparedReferral)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match (w, &plans[i]) {
            (Write::Referral(r), Some(Planned::Insert)) => Some((i, &**r)),
            _ => None,
        })
        .collect();
    let mut head = None;
    let (claimed, now_taken) = if store.backend == Backend::Sqlite {
        // With nothing but referrals and entries in the batch, the chain head is read in
        // the same call as the inserts.
        let read_head = batch
            .iter()
            .all(|w| matches!(w, Write::Referral(_) | Write::Audit(..)));
        let written = insert_referrals_sqlite(conn, bracket, &inserted, claim, read_head).await?;
        head = written.head;
        (written.claimed, written.taken)
    } else {
        let claimed = insert_referrals(store.backend, conn, &inserted, claim).await?;
        (claimed, insert_keys(store.backend, conn, &inserted).await?)
    };
    if !now_taken.is_empty() {
        // Nothing is committed: PostgreSQL's transaction is dropped, SQLite's connection too.
        return Err(BatchFailure::KeysTaken(now_taken));
    }

    // Events and publications, in order: each sees the ones before it. On SQLite, with no
    // events in the batch, the chain head is read in the last publication mark's call.
    let head_with_last_mark = match store.backend {
        Backend::Sqlite if !batch.iter().any(|w| matches!(w, Write::Event(_))) => batch
            .iter()
            .rposition(|w| matches!(w, Write::Published { .. })),
        _ => None,
    };
    let mut outcomes: Vec<Option<Written>> = Vec::with_capacity(batch.len());
    let mut delivered: Vec<Vec<AuditRecord>> = Vec::new();
    delivered.resize_with(batch.len(), Vec::new);
    for (i, write) in batch.iter().enumerate() {
        outcomes.push(match write {
            Write::Published { tokens, ids, at } => {
                let read_head = head_with_last_mark == Some(i);
                let marked =
                    mark_published(conn, bracket, store.backend, (tokens, ids, *at), read_head)
                        .await?;
                delivered[i] = marked.records;
                if marked.head.is_some() {
                    head = marked.head;
                }
                Some(Written::Published(marked.count))
            }
            Write::Referral(_) => match plans[i] {
                Some(Planned::Insert) => Some(Written::Referral(Inserted::Created)),
                // Answered after the commit, from the rows that hold their keys.
                _ => None,
            },
            Write::Event(event) => {
                bracket.begun(conn).await?;
                Some(Written::Event(write_event(conn, store, event).await?))
            }
            // The seq is known once the chain is extended.
            Write::Audit(..) => Some(Written::Audit(0)),
        });
    }

    // The chain: its head locked once (late, to hold it briefly), the entries hashed in
    // memory in the batch's order, then one insert.
    let (mut seq, mut prev_hash) = match head {
        Some(head) => head,
        None => {
            let sql = format!("{}{}", bracket.begin(), store.backend.chain_head_sql());
            chain_head(&sqlx::query(&sql).fetch_one(&mut *conn).await?)?
        }
    };
    let mut entries = Vec::with_capacity(batch.len());
    for ((write, outcome), delivered) in batch.iter().zip(outcomes.iter_mut()).zip(&delivered) {
        let records: &[AuditRecord] = match (write, &*outcome) {
            (Write::Published { .. }, _) => delivered,
            (Write::Referral(r), Some(_)) => std::slice::from_ref(&r.audit),
            (Write::Event(e), Some(Written::Event(EventOutcome::Recorded(_)))) => {
                std::slice::from_ref(&e.audit)
            }
            (Write::Audit(records, _), _) => records,
            _ => &[],
        };
        let at = match write {
            Write::Referral(r) => r.at,
            Write::Event(e) => e.recorded_at.as_micros(),
            Write::Audit(_, at) | Write::Published { at, .. } => *at,
        };
        for record in records {
            seq += 1;
            let entry = entry_of(record, seq, at, prev_hash);
            prev_hash = entry.hash();
            entries.push((entry, prev_hash.clone()));
        }
        if let Some(Written::Audit(last)) = outcome {
            *last = seq;
        }
    }
    if entries.is_empty() {
        if bracket.own {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
    } else {
        append_entries(store.backend, conn, &entries, bracket).await?;
    }
    let last = entries
        .last()
        .map(|(entry, hash)| (entry.seq, hash.clone()));
    Ok((plans, outcomes, claimed, last))
}

/// Marks the outbox rows `ids` published at `at` (µs), those still claimed under one of
/// `tokens` and unpublished (a row whose lease ran out and was claimed again is left to
/// its new claim), and their referrals `queued`: the `message.delivered` entries to
/// append, and how many rows were marked. Every statement finds its rows by primary key,
/// so its cost does not grow with the outbox.
async fn mark_published(
    conn: &mut sqlx::AnyConnection,
    bracket: &mut Bracket,
    backend: Backend,
    (tokens, ids, at): (&[String], &[i64], i64),
    read_head: bool,
) -> Result<Marked, StoreError> {
    let mut out = Marked {
        records: Vec::new(),
        count: 0,
        head: None,
    };
    if tokens.is_empty() || ids.is_empty() {
        return Ok(out);
    }
    // `IN (...)` lists padded to a few shapes (see `in_list`).
    let id_count = super::dialect::in_list(ids).count();
    let token_count = super::dialect::in_list(tokens).count();
    // The rows still claimed under the round's tokens and unpublished, from placeholder
    // `first` on (ids, then tokens).
    let still_claimed = |first: usize| {
        format!(
            "o.id IN ({}) AND o.claimed_by IN ({}) AND o.published_at IS NULL",
            backend.placeholder_list(first, id_count),
            backend.placeholder_list(first + id_count, token_count),
        )
    };
    let mut sql = format!(
        // The agency the message went to: the sender for a status message, otherwise the
        // referral's recipient (escalations are about the recipient's clocks).
        "{}SELECT o.id, o.referral_id, o.message_type, \
         CASE WHEN o.message_type = 'status' THEN r.sender_agency ELSE r.recipient_agency END AS recipient_agency \
         FROM outbox o JOIN referrals r ON r.id = o.referral_id \
         WHERE {} ORDER BY o.id",
        bracket.begin(),
        still_claimed(1),
    );
    let sqlite = backend == Backend::Sqlite;
    if sqlite {
        // One writer: the rows just read are the rows marked, so the updates can name
        // them by the same conditions in the same call (the referrals first, while their
        // rows are still unpublished), and the chain head can be read there too.
        sql.push_str(
            ";\nUPDATE OR ROLLBACK referrals SET status = 'queued', updated_at = ? WHERE status = 'received' \
             AND id IN (SELECT o.referral_id FROM outbox o WHERE o.message_type = 'referral' AND ",
        );
        sql.push_str(&still_claimed(0));
        sql.push_str(");\nUPDATE OR ROLLBACK outbox AS o SET published_at = ?, claimed_until = NULL, last_error = NULL WHERE ");
        sql.push_str(&still_claimed(0));
        if read_head {
            sql.push_str(";\n");
            sql.push_str(backend.chain_head_sql());
        }
    }
    let mut query = bind_still_claimed(sqlx::query(&sql), ids, tokens);
    if sqlite {
        query = bind_still_claimed(query.bind(at), ids, tokens);
        query = bind_still_claimed(query.bind(at), ids, tokens);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut marked = Vec::with_capacity(rows.len());
    let mut referrals = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.columns().first().map(sqlx::Column::name) == Some("seq") {
            out.head = Some(chain_head(row)?);
            continue;
        }
        let message_type: MessageType = row
            .try_get::<String, _>("message_type")?
            .parse()
            .map_err(|_| StoreError::Corrupt("outbox row: message_type".to_owned()))?;
        let referral_id: String = row.try_get("referral_id")?;
        let mut record = AuditRecord::new(
            "gateway",
            crate::domain::audit::AuditAction::MessageDelivered,
        )
        .referral(referral_id.clone())
        .detail(message_type.delivered_detail());
        record.recipient = Some(row.try_get("recipient_agency")?);
        out.records.push(record);
        marked.push(row.try_get::<i64, _>("id")?);
        if message_type == MessageType::Referral {
            referrals.push(referral_id);
        }
    }
    if sqlite || marked.is_empty() {
        out.count = marked.len() as u64;
        return Ok(out);
    }
    // PostgreSQL: one statement per call, naming the rows read by primary key.
    if !referrals.is_empty() {
        let sql = format!(
            "UPDATE referrals SET status = 'queued', updated_at = $1 \
             WHERE status = 'received' AND id IN ({})",
            backend.placeholder_list(2, super::dialect::in_list(&referrals).count())
        );
        let list = super::dialect::in_list(&referrals).map(String::as_str);
        bind_at_and(sqlx::query(&sql), at, list)
            .execute(&mut *conn)
            .await?;
    }
    let sql = format!(
        "UPDATE outbox SET published_at = $1, claimed_until = NULL, last_error = NULL WHERE id IN ({})",
        backend.placeholder_list(2, super::dialect::in_list(&marked).count())
    );
    let done = bind_at_and(
        sqlx::query(&sql),
        at,
        super::dialect::in_list(&marked).copied(),
    )
    .execute(&mut *conn)
    .await?;
    out.count = done.rows_affected();
    Ok(out)
}

/// `query` with the (padded) lists of [`mark_published`]'s condition bound: ids, tokens.
fn bind_still_claimed<'q>(query: AnyQuery<'q>, ids: &[i64], tokens: &'q [String]) -> AnyQuery<'q> {
    let query = super::dialect::in_list(ids).fold(query, |q, id| q.bind(*id));
    super::dialect::in_list(tokens).fold(query, |q, token| q.bind(token.as_str()))
}

/// What a publication mark came to: the `message.delivered` entries to append, how many
/// rows were marked, and the chain head when it was read with them.
struct Marked {
    records: Vec<AuditRecord>,
    count: u64,
    head: Option<(i64, String)>,
}

/// `query` with `at`, then `values`, bound.
fn bind_at_and<'q, T>(query: AnyQuery<'q>, at: i64, values: impl Iterator<Item = T>) -> AnyQuery<'q>
where
    T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    values.fold(query.bind(at), |query, value| query.bind(value))
}

/// The answer for a referral whose key another request holds: that request's record.
async fn taken_key(store: &Store, r: &PreparedReferral) -> Result<Written, StoreError> {
    let key = r.idempotency.as_ref().map_or("", |(k, _)| k.as_str());
    let record = store
        .idempotency_record(&r.sender, key)
        .await?
        .ok_or_else(|| StoreError::Corrupt("idempotency key vanished after a conflict".into()))?;
    Ok(Written::Referral(Inserted::KeyTaken(record)))
}

/// `<insert> <into> VALUES (...), (...)` for `rows` rows of `columns` placeholders
/// (the backend's, in order: `$1`, `$2`, ... or `?`), then `tail`.
fn values_sql(
    insert: &str,
    backend: Backend,
    into: &str,
    columns: usize,
    rows: usize,
    tail: &str,
) -> String {
    let mut sql = String::with_capacity(into.len() + tail.len() + rows * columns * 6);
    sql.push_str(insert);
    sql.push_str(into);
    sql.push_str(" VALUES ");
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            n += 1;
            if column > 0 {
                sql.push_str(", ");
            }
            backend.push_placeholder(&mut sql, n);
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

const REFERRAL_COLUMNS: usize = 16;
const REFERRALS_INTO: &str = "referrals (id, sender_agency, recipient_agency, service_type, area, priority, status, \
     schema_id, payload, payload_sha256, correlation_id, received_at, updated_at, payload_key_id, \
     isa_id, withheld)";
const OUTBOX_COLUMNS: usize = 7;
const CLOCK_COLUMNS: usize = 5;
const CLOCKS_INTO: &str = "sla_clocks (referral_id, clock, started_at, due_at, warn_at)";

/// A referral clock row: `(referral id, (clock, due_at, warn_at), started_at)`.
type ClockRow<'a> = (&'a str, &'a (&'static str, i64, i64), i64);

fn bind_referral<'q>(insert: AnyQuery<'q>, r: &'q PreparedReferral) -> AnyQuery<'q> {
    insert
        .bind(&r.id)
        .bind(r.sender.as_str())
        .bind(r.recipient.as_str())
        .bind(r.service_type.as_str())
        .bind(r.area.as_str())
        .bind(r.priority.as_str())
        .bind(ReferralStatus::Received.as_str())
        .bind(&r.schema_id)
        // Borrowed, not cloned into the arguments: PostgreSQL's encoder copies it once
        // into its buffer (SQLite's worker takes its own copy either way).
        .bind(r.payload.as_str())
        .bind(&r.payload_sha256)
        .bind(&r.correlation_id)
        .bind(r.at)
        .bind(r.at)
        .bind(&r.payload_key_id)
        .bind(&r.isa_id)
        .bind(&r.withheld)
}

fn bind_outbox<'q>(
    insert: AnyQuery<'q>,
    r: &'q PreparedReferral,
    claim: Option<&'q Claim>,
) -> AnyQuery<'q> {
    let insert = insert
        .bind(&r.id)
        .bind(r.outbox.message_type().as_str())
        .bind(r.outbox.exchange().as_str())
        .bind(r.outbox.routing_key())
        .bind(r.at);
    match claim {
        Some(claim) => insert.bind(&claim.token).bind(claim.until),
        None => insert,
    }
}

fn bind_clock<'q>(insert: AnyQuery<'q>, clock: &ClockRow<'q>) -> AnyQuery<'q> {
    let (id, (clock, due_at, warn_at), at) = *clock;
    insert
        .bind(id)
        .bind(*clock)
        .bind(at)
        .bind(*due_at)
        .bind(*warn_at)
}

/// Referral rows, their outbox rows and their clocks, a few statements for the batch
/// (PostgreSQL: one call each): with a claim, the outbox rows are written claimed, and
/// their ids returned (by batch index).
async fn insert_referrals(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    referrals: &[(usize, &PreparedReferral)],
    claim: Option<&Claim>,
) -> Result<Vec<(usize, i64)>, StoreError> {
    let clocks = clock_rows(referrals);
    for chunk in statement_chunks(referrals, REFERRAL_COLUMNS) {
        let sql = referrals_sql(INSERT, backend, chunk.len());
        let mut insert = sqlx::query(&sql);
        for (_, r) in chunk {
            insert = bind_referral(insert, r);
        }
        insert.execute(&mut *conn).await?;
    }
    for chunk in statement_chunks(&clocks, CLOCK_COLUMNS) {
        let sql = clocks_sql(INSERT, backend, chunk.len());
        let mut insert = sqlx::query(&sql);
        for clock in chunk {
            insert = bind_clock(insert, clock);
        }
        insert.execute(&mut *conn).await?;
    }
    let mut returned = Vec::new();
    for chunk in statement_chunks(referrals, OUTBOX_COLUMNS) {
        let sql = outbox_sql(INSERT, backend, chunk.len(), claim.is_some());
        let mut insert = sqlx::query(&sql);
        for (_, r) in chunk {
            insert = bind_outbox(insert, r, claim);
        }
        if claim.is_some() {
            returned.extend(insert.fetch_all(&mut *conn).await?);
        } else {
            insert.execute(&mut *conn).await?;
        }
    }
    claimed_rows(referrals, &returned)
}

/// What the SQLite batch's first call wrote and read.
struct SqliteInserts {
    claimed: Vec<(usize, i64)>,
    /// Batch indexes of referrals whose idempotency key was taken.
    taken: Vec<usize>,
    /// The chain head `(seq, hash)`, when asked for.
    head: Option<(i64, String)>,
}

/// SQLite: the batch's referral, clock and outbox rows, its idempotency keys (`ON
/// CONFLICT DO NOTHING`: a key not written back was taken) and, with `read_head`, the
/// chain head, in one call (after the transaction's `BEGIN`, if it has not gone yet).
/// SQLite's `?` placeholders number across the statements; the rows returned are told
/// apart by their first column's name.
async fn insert_referrals_sqlite(
    conn: &mut sqlx::AnyConnection,
    bracket: &mut Bracket,
    referrals: &[(usize, &PreparedReferral)],
    claim: Option<&Claim>,
    read_head: bool,
) -> Result<SqliteInserts, StoreError> {
    let mut written = SqliteInserts {
        claimed: Vec::new(),
        taken: Vec::new(),
        head: None,
    };
    if referrals.is_empty() && !read_head {
        return Ok(written);
    }
    let backend = Backend::Sqlite;
    let clocks = clock_rows(referrals);
    let keyed: Vec<(usize, &PreparedReferral, &(String, String))> = referrals
        .iter()
        .filter_map(|(i, r)| r.idempotency.as_ref().map(|k| (*i, *r, k)))
        .collect();
    let insert = bracket.insert();
    let mut sql = String::from(bracket.begin());
    for chunk in statement_chunks(referrals, REFERRAL_COLUMNS) {
        sql.push_str(&referrals_sql(insert, backend, chunk.len()));
        sql.push_str(";\n");
    }
    for chunk in statement_chunks(&clocks, CLOCK_COLUMNS) {
        sql.push_str(&clocks_sql(insert, backend, chunk.len()));
        sql.push_str(";\n");
    }
    for chunk in statement_chunks(referrals, OUTBOX_COLUMNS) {
        sql.push_str(&outbox_sql(insert, backend, chunk.len(), claim.is_some()));
        sql.push_str(";\n");
    }
    for chunk in statement_chunks(&keyed, KEY_COLUMNS) {
        sql.push_str(&values_sql(
            insert,
            backend,
            KEYS_INTO,
            KEY_COLUMNS,
            chunk.len(),
            KEYS_RETURNING,
        ));
        sql.push_str(";\n");
    }
    if read_head {
        sql.push_str(backend.chain_head_sql());
    }
    let mut query = sqlx::query(&sql);
    for (_, r) in referrals {
        query = bind_referral(query, r);
    }
    for clock in &clocks {
        query = bind_clock(query, clock);
    }
    for (_, r) in referrals {
        query = bind_outbox(query, r, claim);
    }
    for (_, r, key) in &keyed {
        query = bind_key(query, r, key);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut outbox = Vec::new();
    let mut keys_written = Vec::new();
    for row in rows {
        match row.columns().first().map(sqlx::Column::name) {
            Some("id") => outbox.push(row),
            Some(KEYED) => keys_written.push(row.try_get::<String, _>(KEYED)?),
            Some("seq") => written.head = Some(chain_head(&row)?),
            _ => {
                return Err(StoreError::Corrupt(
                    "the batch's insert returned an unexpected row".into(),
                ));
            }
        }
    }
    written.claimed = claimed_rows(referrals, &outbox)?;
    written.taken = keyed
        .iter()
        .filter(|(_, r, _)| !keys_written.contains(&r.id))
        .map(|(i, _, _)| *i)
        .collect();
    Ok(written)
}

/// A multi-row insert of `rows` referrals.
fn referrals_sql(insert: &str, backend: Backend, rows: usize) -> String {
    values_sql(insert, backend, REFERRALS_INTO, REFERRAL_COLUMNS, rows, "")
}

/// A multi-row insert of `rows` clocks.
fn clocks_sql(insert: &str, backend: Backend, rows: usize) -> String {
    values_sql(insert, backend, CLOCKS_INTO, CLOCK_COLUMNS, rows, "")
}

/// The batch's clock rows, referral by referral.
fn clock_rows<'a>(referrals: &[(usize, &'a PreparedReferral)]) -> Vec<ClockRow<'a>> {
    referrals
        .iter()
        .flat_map(|(_, r)| r.clocks.iter().map(|c| (r.id.as_str(), c, r.at)))
        .collect()
}

/// The claimed outbox rows returned (`id`, `referral_id`), by batch index: one referral
/// outbox row per referral, matched to the batch by referral id.
fn claimed_rows(
    referrals: &[(usize, &PreparedReferral)],
    returned: &[sqlx::any::AnyRow],
) -> Result<Vec<(usize, i64)>, StoreError> {
    let by_id: HashMap<&str, usize> = referrals.iter().map(|(i, r)| (r.id.as_str(), *i)).collect();
    let mut claimed = Vec::with_capacity(returned.len());
    for row in returned {
        let referral_id: String = row.try_get("referral_id")?;
        let index = *by_id.get(referral_id.as_str()).ok_or_else(|| {
            StoreError::Corrupt("an outbox row names no referral of its batch".into())
        })?;
        claimed.push((index, row.try_get::<i64, _>("id")?));
    }
    Ok(claimed)
}

/// The referrals' outbox rows: five values each, and `next_attempt_at` 0 (due at once);
/// `claimed`: two more (`claimed_by`, `claimed_until`), one attempt (as a claim counts
/// it), and their ids returned.
fn outbox_sql(insert: &str, backend: Backend, rows: usize, claimed: bool) -> String {
    let mut sql = String::from(insert);
    sql.push_str(
        "outbox (referral_id, message_type, exchange, routing_key, created_at, next_attempt_at",
    );
    sql.push_str(if claimed {
        ", claimed_by, claimed_until, attempts) VALUES "
    } else {
        ") VALUES "
    });
    let values = if claimed { 7 } else { 5 };
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 1..=5 {
            backend.push_placeholder(&mut sql, row * values + column);
            sql.push_str(", ");
        }
        sql.push('0');
        if claimed {
            for column in 6..=7 {
                sql.push_str(", ");
                backend.push_placeholder(&mut sql, row * values + column);
            }
            sql.push_str(", 1");
        }
        sql.push(')');
    }
    if claimed {
        sql.push_str(" RETURNING id, referral_id");
    }
    sql
}

const KEY_COLUMNS: usize = 5;
const KEYS_INTO: &str =
    "idempotency_keys (sender_agency, idempotency_key, request_sha256, referral_id, created_at)";
/// The column naming a key written (by the referral it is for).
const KEYED: &str = "keyed_referral_id";
const KEYS_RETURNING: &str = " ON CONFLICT (sender_agency, idempotency_key) DO NOTHING RETURNING referral_id AS keyed_referral_id";

fn bind_key<'q>(
    insert: AnyQuery<'q>,
    r: &'q PreparedReferral,
    (key, sha): &'q (String, String),
) -> AnyQuery<'q> {
    insert
        .bind(r.sender.as_str())
        .bind(key.as_str())
        .bind(sha.as_str())
        .bind(r.id.as_str())
        .bind(r.at)
}

/// The batch's idempotency keys, `ON CONFLICT DO NOTHING` (PostgreSQL: one call per
/// statement): the batch indexes of the referrals whose key was already taken (by a
/// transaction committed since their handler looked, perhaps another instance's).
async fn insert_keys(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    referrals: &[(usize, &PreparedReferral)],
) -> Result<Vec<usize>, StoreError> {
    let mut keyed: Vec<(usize, &PreparedReferral, &(String, String))> = referrals
        .iter()
        .filter_map(|(i, r)| r.idempotency.as_ref().map(|k| (*i, *r, k)))
        .collect();
    // In one order in every instance, so that two batches waiting on each other's keys
    // cannot deadlock.
    keyed.sort_by(|a, b| (a.1.sender.as_str(), &a.2.0).cmp(&(b.1.sender.as_str(), &b.2.0)));
    let mut taken = Vec::new();
    for chunk in statement_chunks(&keyed, KEY_COLUMNS) {
        let sql = values_sql(
            INSERT,
            backend,
            KEYS_INTO,
            KEY_COLUMNS,
            chunk.len(),
            KEYS_RETURNING,
        );
        let mut insert = sqlx::query(&sql);
        for (_, r, key) in chunk {
            insert = bind_key(insert, r, key);
        }
        let rows = insert.fetch_all(&mut *conn).await?;
        if rows.len() < chunk.len() {
            let written: Vec<String> = rows
                .iter()
                .map(|row| row.try_get::<String, _>(KEYED))
                .collect::<Result<_, _>>()?;
            taken.extend(
                chunk
                    .iter()
                    .filter(|(_, r, _)| !written.contains(&r.id))
                    .map(|(i, _, _)| *i),
            );
        }
    }
    Ok(taken)
}

/// One event in the batch's transaction, with its referral's row locked.
async fn write_event(
    conn: &mut sqlx::AnyConnection,
    store: &Store,
    new: &NewEvent,
) -> Result<EventOutcome, StoreError> {
    let referral_id = new.referral_id.to_string();
    let (occurred_at, recorded_at) = (new.occurred_at.as_micros(), new.recorded_at.as_micros());
    let Some(row) = sqlx::query(store.backend.lock_referral_sql())
        .bind(&referral_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(EventOutcome::NoSuchReferral);
    };
    let status: String = row.try_get("status")?;
    let status: ReferralStatus = status
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("status '{status}'")))?;

    let previous = sqlx::query(
        "SELECT id, event_id, actor_agency, event_type, status_after, body, body_key_id, request_sha256, occurred_at, recorded_at \
         FROM referral_events WHERE referral_id = $1 AND actor_agency = $2 AND event_id = $3",
    )
    .bind(&referral_id)
    .bind(new.actor_agency.as_str())
    .bind(&new.event_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(previous) = previous {
        let same: String = previous.try_get("request_sha256")?;
        return Ok(if same == new.request_sha256 {
            EventOutcome::Replayed(StoredEvent::from_row(&previous, store)?)
        } else {
            EventOutcome::Conflict
        });
    }

    let next = match (new.decide)(status) {
        Ok(next) => next,
        Err(illegal) => return Ok(EventOutcome::Illegal(illegal)),
    };
    // Bounded: a referral's timeline is read whole, and follow-ups (and further first
    // contacts) need no status change. Counted per agency, so that one agency's events
    // never stop the other's. The event that ends the referral (closed, declined,
    // redirected, withdrawn) is always taken: there can be only one, and a referral at its
    // bound must still be able to end.
    if !next.is_final() {
        let recorded: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM referral_events WHERE referral_id = $1 AND actor_agency = $2",
        )
        .bind(&referral_id)
        .bind(new.actor_agency.as_str())
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        if recorded >= super::events::MAX_EVENTS_PER_REFERRAL {
            return Ok(EventOutcome::TooMany);
        }
    }
    let (mut body, messages) = (new.render)(next);
    // A referral whose payload was purged keeps no free text: the event's record is
    // stored without it (its messages still carry it to the other agency, and the next
    // purge run empties them once delivered).
    let key_id: Option<String> = row.try_get("payload_key_id")?;
    if key_id.as_deref() == Some(super::referrals::PURGED) {
        let mut record: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| StoreError::Corrupt(format!("event record {}", new.id)))?;
        crate::domain::messages::strip_free_text(&mut record);
        body = record.to_string();
    }
    // Sealed at rest, bound to the record's id: it holds the agencies' free text.
    let record_id = new.id.to_string();
    let (stored_body, body_key_id) =
        store.seal_payload(&body, &super::events::event_binding(&record_id))?;
    sqlx::query(
        "INSERT INTO referral_events (id, referral_id, event_id, actor_agency, event_type, status_after, body, \
         request_sha256, occurred_at, recorded_at, body_key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&record_id)
    .bind(&referral_id)
    .bind(&new.event_id)
    .bind(new.actor_agency.as_str())
    .bind(new.event_type.as_str())
    .bind(next.as_str())
    .bind(&stored_body)
    .bind(&new.request_sha256)
    .bind(occurred_at)
    .bind(recorded_at)
    .bind(body_key_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE referrals SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(next.as_str())
        .bind(recorded_at)
        .bind(&referral_id)
        .execute(&mut *conn)
        .await?;
    for message in &messages {
        insert_outbox(conn, &referral_id, message, recorded_at, Some(store)).await?;
    }
    for clock in new.meets {
        sqlx::query(
            "UPDATE sla_clocks SET met_at = $1, met_late = CASE WHEN due_at < $1 THEN 1 ELSE 0 END \
             WHERE referral_id = $2 AND clock = $3 AND met_at IS NULL AND stopped_at IS NULL",
        )
        .bind(occurred_at)
        .bind(&referral_id)
        .bind(clock.as_str())
        .execute(&mut *conn)
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
        .execute(&mut *conn)
        .await?;
    }
    Ok(EventOutcome::Recorded(StoredEvent {
        event_id: new.event_id.clone(),
        actor_agency: new.actor_agency.clone(),
        event_type: new.event_type,
        status_after: next,
        body,
        occurred_at: from_micros(occurred_at)?,
        recorded_at: from_micros(recorded_at)?,
    }))
}

/// The audit chain head `(seq, hash)` from a row of [`Backend::chain_head_sql`]. (A batch
/// whose call was to read it and did not is read again on its own, which fails when the
/// head is missing.)
pub(crate) fn chain_head(row: &sqlx::any::AnyRow) -> Result<(i64, String), StoreError> {
    Ok((row.try_get("seq")?, row.try_get("hash")?))
}

/// The entry `record` becomes as entry `seq` after `prev_hash`.
pub(crate) fn entry_of(record: &AuditRecord, seq: i64, at: i64, prev_hash: String) -> AuditEntry {
    AuditEntry {
        seq,
        at: Timestamp::from_micros(at),
        actor: record.actor.clone(),
        action: record.action.as_str().to_owned(),
        referral_id: record.referral_id.clone(),
        recipient: record.recipient.clone(),
        isa_id: record.isa_id.clone(),
        lawful_basis: record.lawful_basis.clone(),
        consent: record.consent.clone(),
        categories: record.categories.clone(),
        withheld: record.withheld.clone(),
        person_key: record.person_key.clone(),
        detail: record.detail.clone(),
        prev_hash,
    }
}

fn bind_entry<'q>(insert: AnyQuery<'q>, (entry, hash): &'q (AuditEntry, String)) -> AnyQuery<'q> {
    insert
        .bind(entry.seq)
        .bind(entry.at.as_micros())
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.referral_id)
        .bind(&entry.recipient)
        .bind(&entry.isa_id)
        .bind(&entry.lawful_basis)
        .bind(&entry.consent)
        .bind(serde_json::to_string(&entry.categories).unwrap_or_default())
        .bind(serde_json::to_string(&entry.withheld).unwrap_or_default())
        .bind(&entry.person_key)
        .bind(&entry.detail)
        .bind(&entry.prev_hash)
        .bind(hash.as_str())
}

/// Whether the batch whose last audit entry is `last` (seq, hash) is in the log: read on a
/// connection of its own, after the batch's connection failed at its COMMIT. `None` when
/// that read fails too (the outcome is unknown); a batch without an entry (there is none)
/// counts as not committed.
async fn committed_after_all(store: &Store, last: Option<&(i64, String)>) -> Option<bool> {
    let Some((seq, hash)) = last else {
        return Some(false);
    };
    match sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
        .bind(*seq)
        .fetch_optional(&store.pool)
        .await
    {
        Ok(Some(row)) => Some(row.try_get::<String, _>("hash").is_ok_and(|h| &h == hash)),
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

/// Appends chained `entries` (each with its hash) to the audit log and moves the chain
/// head to the last of them, in the transaction `bracket` describes (ending it, when it
/// is the batch's own). On SQLite every statement goes in one call; PostgreSQL takes one
/// statement per call.
pub(crate) async fn append_entries(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    entries: &[(AuditEntry, String)],
    bracket: &Bracket,
) -> Result<(), StoreError> {
    const ENTRY_COLUMNS: usize = 15;
    const INTO: &str = "audit_log (seq, at, actor, action, referral_id, recipient, isa_id, lawful_basis, consent, \
         categories, withheld, person_key, detail, prev_hash, hash)";
    let Some((last, last_hash)) = entries.last() else {
        return Ok(());
    };
    let entries_sql =
        |rows: usize| values_sql(bracket.insert(), backend, INTO, ENTRY_COLUMNS, rows, "");
    let mut head_sql = String::from("UPDATE audit_head SET seq = ");
    backend.push_placeholder(&mut head_sql, 1);
    head_sql.push_str(", hash = ");
    backend.push_placeholder(&mut head_sql, 2);
    head_sql.push_str(" WHERE id = 1");
    if backend == Backend::Sqlite {
        let mut sql = String::new();
        for chunk in statement_chunks(entries, ENTRY_COLUMNS) {
            sql.push_str(&entries_sql(chunk.len()));
            sql.push_str(";\n");
        }
        sql.push_str(&head_sql);
        sql.push_str(bracket.commit());
        let mut insert = sqlx::query(&sql);
        for entry in entries {
            insert = bind_entry(insert, entry);
        }
        insert
            .bind(last.seq)
            .bind(last_hash.as_str())
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    for chunk in statement_chunks(entries, ENTRY_COLUMNS) {
        let sql = entries_sql(chunk.len());
        let mut insert = sqlx::query(&sql);
        for entry in chunk {
            insert = bind_entry(insert, entry);
        }
        insert.execute(&mut *conn).await?;
    }
    sqlx::query(&head_sql)
        .bind(last.seq)
        .bind(last_hash.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists_follow_the_backend() {
        assert_eq!(Backend::Postgres.placeholder_list(2, 3), "$2, $3, $4");
        assert_eq!(Backend::Sqlite.placeholder_list(2, 2), "?, ?");
        assert_eq!(Backend::Sqlite.placeholder_list(1, 0), "");
    }

    #[test]
    fn rows_are_written_in_runs_of_a_few_lengths() {
        let rows: Vec<u32> = (0..37).collect();
        let runs: Vec<usize> = statement_chunks(&rows, 16).map(<[u32]>::len).collect();
        assert_eq!(runs, [32, 4, 1]);
        let again: Vec<u32> = statement_chunks(&rows, 16).flatten().copied().collect();
        assert_eq!(again, rows, "every row once, in order");
        // No run binds more than MAX_BINDS values.
        let many: Vec<u32> = (0..5000).collect();
        let runs: Vec<usize> = statement_chunks(&many, 15).map(<[u32]>::len).collect();
        assert_eq!(runs, [1024, 1024, 1024, 1024, 512, 256, 128, 8]);
        assert!(runs.iter().all(|n| n * 15 <= MAX_BINDS));
        assert_eq!(statement_chunks(&[] as &[u32], 5).count(), 0);
    }

    #[test]
    fn in_lists_are_padded_with_their_last_value() {
        use super::super::dialect::in_list;
        assert_eq!(
            in_list(&["a", "b", "c"]).collect::<Vec<_>>(),
            [&"a", &"b", &"c", &"c"]
        );
        assert_eq!(in_list(&["a"]).collect::<Vec<_>>(), [&"a"]);
        assert_eq!(in_list(&[1, 2, 3, 4, 5]).count(), 8);
        assert_eq!(in_list(&[] as &[u8]).count(), 0);
    }

    #[test]
    fn values_are_numbered_row_by_row() {
        assert_eq!(
            values_sql(INSERT, Backend::Postgres, "t (a, b)", 2, 3, " RETURNING a"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING a"
        );
        assert_eq!(
            values_sql(INSERT, Backend::Sqlite, "t (a, b)", 2, 2, ""),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            outbox_sql(INSERT, Backend::Sqlite, 1, false),
            "INSERT INTO outbox (referral_id, message_type, exchange, routing_key, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?, 0)"
        );
        assert_eq!(
            outbox_sql(INSERT, Backend::Postgres, 2, false),
            "INSERT INTO outbox (referral_id, message_type, exchange, routing_key, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, 0), ($6, $7, $8, $9, $10, 0)"
        );
        assert_eq!(
            outbox_sql(INSERT, Backend::Postgres, 2, true),
            "INSERT INTO outbox (referral_id, message_type, exchange, routing_key, created_at, next_attempt_at, \
             claimed_by, claimed_until, attempts) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, 1), ($8, $9, $10, $11, $12, 0, $13, $14, 1) RETURNING id, referral_id"
        );
    }
}
