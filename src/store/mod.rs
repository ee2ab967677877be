//! The durable store: referrals, idempotency keys and the outbox, on SQLite (embedded
//! default, WAL) or PostgreSQL, chosen by the database URL. One SQL text serves both
//! through sqlx's `Any` driver (`$n` placeholders, integer timestamps, text JSON).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::config::DatabaseConfig;

mod audit;
mod batch;
pub mod committer;
mod dialect;
mod events;
mod outbox;
mod referrals;
mod roles;
mod sla;

pub use crate::domain::messages::OutboxMessage;
use audit::append_audit;
pub use audit::{AuditQuery, AuditRecord, PersonSubmission, PersonSummary};
pub use batch::{Decide, NewEvent, Render};
pub use events::{
    EventOutcome, MAX_EVENTS_PER_REFERRAL, StoredEvent, event_binding, message_binding,
};
pub use outbox::{Backlog, ClaimedMessage, FailingRow};
pub use referrals::{
    IdempotencyRecord, Inserted, ListRole, NewReferral, ReferralFilter, ReferralRecord,
};
pub use roles::{AUDIT_TABLES, valid_role_name};
pub use sla::{ClockRow, Due, DueClock, ScanCounts, rfc3339};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("stored row is inconsistent: {0}")]
    Corrupt(String),
    /// Database roles and grants (`migrate --grant-to`).
    #[error("{0}")]
    Roles(String),
    #[error(transparent)]
    Seal(#[from] crate::security::sealing::SealError),
    /// The committer's queue is full: nothing was written; the caller may retry shortly.
    #[error("too many writes are waiting to be committed")]
    Busy,
    /// The committer stopped before answering: the write's outcome is unknown.
    #[error("the committer stopped before answering")]
    CommitterStopped,
    /// A batch's COMMIT got no answer and the database could not be asked whether it
    /// committed: the writes' outcome is unknown, so they are not written again.
    #[error("the COMMIT got no answer and its outcome could not be read: {0}")]
    CommitUnknown(String),
}

/// How long one write (a batch's transaction, an SLA scan) may wait for the database.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl StoreError {
    /// Whether the write may have been committed although it failed: not a refusal.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::CommitterStopped | Self::CommitUnknown(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time; queueing writers here (FIFO) instead of letting
    /// them poll the database lock keeps tail latency flat under concurrent submissions.
    ///
    /// The mutex also holds, on a SQLite file, the one connection that
    /// [`Self::on_write_connection`] runs every write on (opened when first needed, again
    /// after a write failed), outside the pool. A connection's page cache is emptied
    /// whenever another connection has written since its last transaction, and its
    /// prepared statements are its own: writes taken in turn from the whole pool found
    /// both cold, every batch. A pool of one would do the same but test the connection
    /// with a round trip on every acquire and every release.
    sqlite_writer: Option<Arc<tokio::sync::Mutex<Option<sqlx::AnyConnection>>>>,
    /// How to open that connection: `None` for PostgreSQL and in-memory SQLite (one
    /// database per pool), whose writes take a connection from the pool.
    writer_options: Option<AnyConnectOptions>,
    /// Encrypts referral payloads at rest; a store without keys (tools that never touch
    /// payloads) refuses to store one.
    payload_keys: Option<Arc<crate::security::sealing::PayloadKeys>>,
    /// The process's one writer of referrals, events and audit entries, when it runs
    /// one (the gateway); without it (the tools) each write is its own transaction.
    committer: Option<committer::CommitHandle>,
}

impl Store {
    /// Opens a pool. A SQLite file (and its directory) is created when missing.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(&config.url);
        let url = match backend {
            Backend::Sqlite => sqlite_url_creating_dirs(&config.url)?,
            Backend::Postgres => config.url.clone(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        if backend == Backend::Postgres {
            // One connection first: the pool retries a refused connection until its
            // acquire timeout (30 s) and then reports only that it timed out; this
            // reports the cause (refused, unknown host, authentication, no database).
            use sqlx::Connection;
            let first = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                sqlx::AnyConnection::connect_with(&options),
            )
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer from {} within 30 s",
                        crate::config::url_for_debug(&url)
                    ),
                ))
            })??;
            first.close().await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .after_connect(move |conn, _meta| Box::pin(set_up(conn, backend)))
            .connect_with(options.clone())
            .await?;
        let sqlite_writer = backend
            .single_writer()
            .then(|| Arc::new(tokio::sync::Mutex::new(None)));
        let writer_options =
            (backend == Backend::Sqlite && !sqlite_in_memory(&url)).then_some(options);
        Ok(Self {
            pool,
            backend,
            sqlite_writer,
            writer_options,
            payload_keys: None,
            committer: None,
        })
    }

    /// Connects with the configured payload keys: what the gateway and its tools use.
    pub async fn open(config: &crate::config::Config) -> Result<Self, StoreError> {
        let keys = config.storage.payload_keys()?;
        Ok(Self::connect(&config.database)
            .await?
            .with_payload_keys(keys))
    }

    pub fn with_payload_keys(mut self, keys: crate::security::sealing::PayloadKeys) -> Self {
        self.payload_keys = Some(Arc::new(keys));
        self
    }

    /// Sends referrals, events and audit entries through `committer`.
    pub fn with_committer(mut self, committer: committer::CommitHandle) -> Self {
        self.committer = Some(committer);
        self
    }

    pub(crate) fn without_committer(mut self) -> Self {
        self.committer = None;
        self
    }

    /// Writes waiting for the committer (0 without one).
    pub fn commit_queue_depth(&self) -> usize {
        self.committer
            .as_ref()
            .map_or(0, committer::CommitHandle::waiting)
    }

    /// Writes through the committer, or (without one) in a transaction of its own.
    pub(crate) async fn write(&self, write: batch::Write) -> Result<batch::Written, StoreError> {
        match &self.committer {
            Some(committer) => committer.write(write).await,
            None => committer::write_all(self, std::slice::from_ref(&write), None)
                .await?
                .outcomes
                .pop()
                .unwrap_or_else(|| Err(StoreError::Corrupt("a write has no outcome".into()))),
        }
    }

    /// [`Self::write`] for the gateway's own workers: waits for room in the committer's
    /// queue instead of failing with [`StoreError::Busy`] (a request is refused when the
    /// queue is full; a worker's write must not be dropped).
    pub(crate) async fn write_waiting(
        &self,
        write: batch::Write,
    ) -> Result<batch::Written, StoreError> {
        match &self.committer {
            Some(committer) => committer.write_waiting(write).await,
            None => self.write(write).await,
        }
    }

    /// Seals a payload for storage: `(stored text, key id)`.
    pub(crate) fn seal_payload(
        &self,
        plaintext: &str,
        referral_id: &str,
    ) -> Result<(String, Option<String>), StoreError> {
        match &self.payload_keys {
            Some(keys) => {
                let (id, sealed) = keys.seal(plaintext, referral_id)?;
                Ok((sealed, Some(id)))
            }
            None => Err(StoreError::Seal(crate::security::sealing::SealError::NoKey)),
        }
    }

    /// Opens a stored payload.
    pub(crate) fn open_payload(
        &self,
        stored: String,
        key_id: Option<&str>,
        referral_id: &str,
    ) -> Result<String, StoreError> {
        match key_id {
            None => Ok(stored),
            Some("purged") => Err(StoreError::Corrupt(format!(
                "the payload of referral {referral_id} was purged"
            ))),
            Some(id) => {
                let keys = self.payload_keys.as_ref().ok_or_else(|| {
                    StoreError::Seal(crate::security::sealing::SealError::UnknownKey(
                        id.to_owned(),
                    ))
                })?;
                Ok(keys.open(id, &stored, referral_id)?)
            }
        }
    }

    /// Held for the duration of a write transaction on SQLite; a no-op on PostgreSQL.
    pub(crate) async fn write_turn(
        &self,
    ) -> Option<tokio::sync::MutexGuard<'_, Option<sqlx::AnyConnection>>> {
        match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// Runs a write in the write turn: on a SQLite file on the writer's own connection
    /// (see [`Self::sqlite_writer`]), otherwise on a connection from the pool. A
    /// connection whose write failed is closed (which rolls back whatever it holds), never
    /// used again: SQLite rolls a transaction back by itself on some errors (a full disk,
    /// an I/O error), sqlx's own ROLLBACK then fails, and the connection would be left
    /// believing it is inside a transaction: its next BEGIN becomes a SAVEPOINT that is
    /// never committed, and SQLite's write lock is held for ever ("database is locked"
    /// for every writer; found by the fault suite's disk-full scenario).
    ///
    /// A write that gets no answer within [`WRITE_TIMEOUT`] (a database host gone silent,
    /// which TCP notices only after many minutes) fails with
    /// [`StoreError::CommitUnknown`]: it may have committed, so it is not written again.
    pub(crate) async fn on_write_connection<T, E: From<sqlx::Error> + From<StoreError>>(
        &self,
        write: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.on_write_connection_within(Some(WRITE_TIMEOUT), write)
            .await
    }

    /// [`Self::on_write_connection`] with another bound (`None`: none, for a purge, whose
    /// one transaction over a year of referrals may rightly take longer).
    pub(crate) async fn on_write_connection_within<T, E: From<sqlx::Error> + From<StoreError>>(
        &self,
        limit: Option<std::time::Duration>,
        write: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let bounded = async |conn: &mut sqlx::AnyConnection| -> Result<T, E> {
            let Some(limit) = limit else {
                return write(conn).await;
            };
            match tokio::time::timeout(limit, write(conn)).await {
                Ok(written) => written,
                Err(_) => Err(StoreError::CommitUnknown(format!(
                    "no answer from the database within {} s",
                    limit.as_secs()
                ))
                .into()),
            }
        };
        let mut turn = self.write_turn().await;
        if let (Some(slot), Some(options)) = (turn.as_deref_mut(), &self.writer_options) {
            let conn = match slot {
                Some(conn) => conn,
                None => slot.insert(self.open_writer(options).await?),
            };
            let written = bounded(conn).await;
            if written.is_err() {
                // Dropped: SQLite closes it (rolling back) on the connection's own thread.
                slot.take();
            }
            return written;
        }
        let mut conn = self.pool.acquire().await?;
        let written = bounded(&mut conn).await;
        if written.is_err() {
            conn.close_on_drop();
        }
        written
    }

    /// The SQLite writer's connection, set up as the pool's are.
    async fn open_writer(
        &self,
        options: &AnyConnectOptions,
    ) -> Result<sqlx::AnyConnection, sqlx::Error> {
        use sqlx::ConnectOptions as _;
        let mut conn = options.connect().await?;
        set_up(&mut conn, self.backend).await?;
        Ok(conn)
    }

    /// A read-only transaction for queries with optional filters (`$n = '' OR ...`). On
    /// PostgreSQL it plans each statement with its actual parameters: a cached generic
    /// plan cannot know which filters are off and picks scans that grow with the table.
    pub(crate) async fn filtered_read(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(setup) = self.backend.filtered_read_setup() {
            sqlx::query(setup).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the embedded migrations for this backend. Safe to run repeatedly.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Applies the migrations unless every one is already applied (as the same version
    /// and checksum). `serve` and `purge` use it: on PostgreSQL they run as a runtime role
    /// that may read `_sqlx_migrations` but cannot create anything, so the owner runs
    /// `migrate` and they only check.
    pub async fn migrate_if_needed(&self) -> Result<(), StoreError> {
        let migrator = self.backend.migrator();
        let applied = sqlx::query("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await;
        if let Ok(rows) = applied {
            let applied: Vec<(i64, Vec<u8>)> = rows
                .iter()
                .filter_map(|row| {
                    use sqlx::Row;
                    Some((row.try_get("version").ok()?, row.try_get("checksum").ok()?))
                })
                .collect();
            let all_applied = migrator.iter().all(|m| {
                applied
                    .iter()
                    .any(|(version, checksum)| *version == m.version && **checksum == *m.checksum)
            });
            if all_applied {
                return Ok(());
            }
        }
        self.migrate().await
    }

    pub async fn close(&self) {
        if let Some(conn) = self.write_turn().await.and_then(|mut slot| slot.take()) {
            let _ = sqlx::Connection::close(conn).await;
        }
        self.pool.close().await;
    }
}

/// Runs the backend's per-connection statements ([`Backend::connection_setup`]) on a new
/// connection: the pool's and the SQLite writer's alike.
async fn set_up(conn: &mut sqlx::AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    for statement in backend.connection_setup() {
        conn.execute(*statement).await?;
    }
    Ok(())
}

/// Whether a SQLite URL names an in-memory database (`sqlite::memory:`, or
/// `mode=memory`): one per pool, with no file.
fn sqlite_in_memory(url: &str) -> bool {
    let (path, query) = sqlite_path_and_query(url);
    path == ":memory:" || query.split('&').any(|pair| pair == "mode=memory")
}

/// A SQLite URL's path and query string (empty when it has none).
fn sqlite_path_and_query(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split_once('?').unwrap_or((rest, ""))
}

/// Adds `mode=rwc` (create if missing) and creates the parent directory of a file URL.
fn sqlite_url_creating_dirs(url: &str) -> Result<String, StoreError> {
    let (path, query) = sqlite_path_and_query(url);
    if !sqlite_in_memory(url)
        && let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(if query.contains("mode=") {
        url.to_owned()
    } else if query.is_empty() {
        format!("{url}?mode=rwc")
    } else {
        format!("{url}&mode=rwc")
    })
}

/// Microseconds since the Unix epoch: the stored timestamp format.
pub fn to_micros(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

pub fn from_micros(micros: i64) -> Result<time::OffsetDateTime, StoreError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {micros}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_gain_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nested/deeper/g.db");
        let url = format!("sqlite://{}", file.display());
        assert_eq!(
            sqlite_url_creating_dirs(&url).unwrap(),
            format!("{url}?mode=rwc")
        );
        assert!(file.parent().unwrap().is_dir());
        assert_eq!(
            sqlite_url_creating_dirs("sqlite::memory:").unwrap(),
            "sqlite::memory:?mode=rwc"
        );
        assert_eq!(
            sqlite_url_creating_dirs("sqlite://x.db?mode=ro").unwrap(),
            "sqlite://x.db?mode=ro"
        );
    }

    #[test]
    fn in_memory_sqlite_urls_are_recognised() {
        assert!(sqlite_in_memory("sqlite::memory:"));
        assert!(sqlite_in_memory("sqlite::memory:?mode=rwc"));
        assert!(sqlite_in_memory(
            "sqlite://scratch.db?cache=shared&mode=memory"
        ));
        assert!(!sqlite_in_memory("sqlite://data/gateway.db?mode=rwc"));
        assert!(!sqlite_in_memory("sqlite://data/memory.db"));
    }

    #[test]
    fn micros_round_trip() {
        let t = time::macros::datetime!(2026-11-23 10:15:00.123456 UTC);
        assert_eq!(from_micros(to_micros(t)).unwrap(), t);
    }
}
