//! Every difference between SQLite and PostgreSQL, in one place. The rest of the store
//! runs one SQL text on both (sqlx's `Any` driver, `$n` placeholders, integer times).
//!
//! - Row locks: PostgreSQL takes `FOR UPDATE` (and `SKIP LOCKED` when claiming outbox
//!   rows, so several relays share the work); SQLite has one writer at a time, which the
//!   store serialises itself ([`Backend::single_writer`]).
//! - Migrations: one folder per backend.
//! - Connection set-up: WAL, `synchronous = FULL`, foreign keys and a busy timeout on
//!   SQLite; nothing on PostgreSQL.
//! - One process per database on SQLite: the relay may drop every outbox claim at start
//!   (a crashed predecessor's), and the SLA scanner needs no advisory lock.
//! - Filtered reads plan with their actual parameters on PostgreSQL.
//! - Multi-row inserts: `$n` placeholders on PostgreSQL, anonymous `?` on SQLite (which
//!   treats `$n` as a name and looks each one up in a list: quadratic in a statement's
//!   placeholders, 11% of the gateway's CPU under load before).
//! - Text aggregation: `string_agg` on PostgreSQL, `group_concat` on SQLite.
//! - The SLA report's first contacts: looked up by an array of the period's referral ids
//!   on PostgreSQL (whose planner otherwise scans every event), a join on SQLite.

use sqlx::migrate::Migrator;

use super::Backend;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

impl Backend {
    /// The backend a database URL names: `sqlite:...`, anything else PostgreSQL.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    /// Whether database roles can keep the gateway from rewriting its audit log
    /// (PostgreSQL); on SQLite whoever can write the file can rewrite anything.
    pub const fn has_roles(self) -> bool {
        matches!(self, Self::Postgres)
    }

    /// The versions of the migrations this build embeds for the backend, oldest first
    /// (`migrate-data` requires both databases to be at exactly these).
    pub fn migration_versions(self) -> Vec<i64> {
        self.migrator().iter().map(|m| m.version).collect()
    }

    pub(crate) fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite => &SQLITE_MIGRATIONS,
            Self::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Statements run on every new connection.
    pub(crate) fn connection_setup(self) -> &'static [&'static str] {
        match self {
            // WAL lets readers run beside the writer; FULL makes every commit durable
            // before the 202 is sent; foreign keys are off by default.
            Self::Sqlite => &[
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA busy_timeout = 10000",
            ],
            // On whatever the server, database or role default says (`off` on some
            // tuned or managed servers would answer 202 before the commit is on disk).
            Self::Postgres => &["SET synchronous_commit = on"],
        }
    }

    /// One writer at a time (SQLite): the store queues its writers (FIFO) instead of
    /// letting them poll the database lock, and only one process uses the database, so
    /// outbox claims left at start-up are a crashed predecessor's.
    pub(crate) const fn single_writer(self) -> bool {
        matches!(self, Self::Sqlite)
    }

    /// Reads the audit chain head, locking it until the transaction ends.
    pub(crate) const fn chain_head_sql(self) -> &'static str {
        match self {
            Self::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
            Self::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
        }
    }

    /// Reads a referral's status, locking its row until the transaction ends.
    pub(crate) const fn lock_referral_sql(self) -> &'static str {
        match self {
            Self::Postgres => {
                "SELECT status, payload_key_id FROM referrals WHERE id = $1 FOR UPDATE"
            }
            Self::Sqlite => "SELECT status, payload_key_id FROM referrals WHERE id = $1",
        }
    }

    /// Claims up to `$4` due outbox rows for `$1` until `$2` (now: `$3`); concurrent
    /// relays on PostgreSQL skip each other's rows.
    pub(crate) const fn claim_outbox_sql(self) -> &'static str {
        match self {
            Self::Postgres => {
                "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL AND next_attempt_at <= $3 \
                 AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            }
            Self::Sqlite => {
                "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL AND next_attempt_at <= $3 \
                 AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4)"
            }
        }
    }

    /// Taken first in the SLA scanner's transaction: `Some(sql)` returning a boolean
    /// `locked` (false: another instance is scanning), or `None` when one process owns
    /// the database.
    pub(crate) const fn scanner_lock_sql(self) -> Option<&'static str> {
        match self {
            Self::Postgres => Some("SELECT pg_try_advisory_xact_lock($1) AS locked"),
            Self::Sqlite => None,
        }
    }

    /// Run first in a read-only transaction whose statements have optional filters.
    pub(crate) const fn filtered_read_setup(self) -> Option<&'static str> {
        match self {
            Self::Postgres => Some("SET LOCAL plan_cache_mode = force_custom_plan"),
            Self::Sqlite => None,
        }
    }
    /// Appends the `n`th (1-based) placeholder of a statement whose placeholders appear
    /// once each, in order.
    pub(crate) fn push_placeholder(self, sql: &mut String, n: usize) {
        match self {
            Self::Postgres => {
                sql.push('$');
                sql.push_str(&n.to_string());
            }
            Self::Sqlite => sql.push('?'),
        }
    }

    /// `count` placeholders numbered from `first`, comma-separated: an `IN (...)` list
    /// (of [`in_list`]'s values).
    pub(crate) fn placeholder_list(self, first: usize, count: usize) -> String {
        let mut list = String::new();
        for n in first..first + count {
            if n > first {
                list.push_str(", ");
            }
            self.push_placeholder(&mut list, n);
        }
        list
    }

    /// The aggregate function that joins text values with a separator.
    pub(crate) const fn text_aggregate(self) -> &'static str {
        match self {
            Self::Postgres => "string_agg",
            Self::Sqlite => "group_concat",
        }
    }

    /// The first-contact events (`id`, `referral_id`, `body`, `body_key_id`) of the referrals received in
    /// `[$1, $2)` that agency `$3` sent or received (every agency's when `$3` is empty).
    pub(crate) const fn first_contacts_sql(self) -> &'static str {
        match self {
            Self::Postgres => {
                "SELECT e.id, e.referral_id, e.body, e.body_key_id FROM referral_events e \
                 WHERE e.event_type = 'first_contact' AND e.referral_id = ANY(ARRAY( \
                   SELECT r.id FROM referrals r WHERE r.received_at >= $1 AND r.received_at < $2 \
                   AND ($3 = '' OR r.recipient_agency = $3 OR r.sender_agency = $3)))"
            }
            Self::Sqlite => {
                "SELECT e.id, e.referral_id, e.body, e.body_key_id FROM referral_events e JOIN referrals r ON r.id = e.referral_id \
                 WHERE e.event_type = 'first_contact' AND r.received_at >= $1 AND r.received_at < $2 \
                 AND ($3 = '' OR r.recipient_agency = $3 OR r.sender_agency = $3)"
            }
        }
    }
}

/// The values to bind in an `IN (...)` list of `values`: padded to the next power of two by
/// repeating the last one, which matches nothing more. A statement with such a list then
/// has one of a few shapes, prepared once per connection and reused, rather than one per
/// list length (which would overflow the connection's statement cache).
pub(crate) fn in_list<T>(values: &[T]) -> impl Iterator<Item = &T> + Clone {
    let padding = values.len().next_power_of_two() - values.len();
    values
        .iter()
        .chain(values.last().into_iter().cycle().take(padding))
}
