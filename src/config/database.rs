//! `[database]`: where the store lives.

use serde::Deserialize;

use super::{DEFAULT_DATABASE_URL, Env, Problems, setting};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    url: Option<String>,
    /// A file holding the URL (with its password): e.g. `credential:database-url`.
    url_file: Option<std::path::PathBuf>,
    max_connections: Option<u32>,
    commit_batch_max: Option<usize>,
    commit_queue_depth: Option<usize>,
    commit_transactions: Option<usize>,
}

/// `Debug` leaves out the URL's password ([`super::url_for_debug`]).
#[derive(Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    /// The most writes the committer puts in one transaction.
    pub commit_batch_max: usize,
    /// The most writes waiting for the committer; beyond it requests are answered 503.
    pub commit_queue_depth: usize,
    /// The most batches committing at once: on PostgreSQL the next batch writes its rows
    /// while the one before waits for its commit (the audit chain's head lock orders
    /// them); SQLite has one writer, so 1.
    pub commit_transactions: usize,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &super::url_for_debug(&self.url))
            .field("max_connections", &self.max_connections)
            .field("commit_batch_max", &self.commit_batch_max)
            .field("commit_queue_depth", &self.commit_queue_depth)
            .field("commit_transactions", &self.commit_transactions)
            .finish()
    }
}

/// Bounds of `commit_batch_max`: multi-row statements stay within the databases' limits
/// on bound values.
pub const COMMIT_BATCH_RANGE: std::ops::RangeInclusive<usize> = 1..=1000;

pub(super) fn build_database(
    raw: RawDatabase,
    env: &dyn Env,
    problems: &mut Problems,
) -> DatabaseConfig {
    let file_url = super::url_from_file(
        raw.url.as_deref(),
        raw.url_file.as_deref(),
        "database",
        env.var("REFGW_DATABASE_URL").is_some(),
        problems,
    );
    let (db_url, db_key) = setting(
        env,
        "REFGW_DATABASE_URL",
        "database.url",
        file_url.or(raw.url),
        DEFAULT_DATABASE_URL,
    );
    if !(db_url.starts_with("sqlite:")
        || db_url.starts_with("postgres://")
        || db_url.starts_with("postgresql://"))
    {
        problems.push(
            &db_key,
            "must start with sqlite:, postgres:// or postgresql://",
        );
    }
    let max_connections = raw.max_connections.unwrap_or(10);
    if max_connections == 0 {
        problems.push("database.max_connections", "must be at least 1");
    }
    let commit_batch_max = raw.commit_batch_max.unwrap_or(256);
    if !COMMIT_BATCH_RANGE.contains(&commit_batch_max) {
        problems.push("database.commit_batch_max", "must be from 1 to 1000");
    }
    let commit_queue_depth = raw.commit_queue_depth.unwrap_or(1024);
    if !(1..=100_000).contains(&commit_queue_depth) {
        problems.push("database.commit_queue_depth", "must be from 1 to 100000");
    }
    let sqlite = db_url.starts_with("sqlite:");
    let commit_transactions = raw
        .commit_transactions
        .unwrap_or(if sqlite || max_connections <= 2 { 1 } else { 2 });
    if sqlite && commit_transactions != 1 {
        problems.push(
            "database.commit_transactions",
            "must be 1 with SQLite (one writer)",
        );
    } else if !(1..=8).contains(&commit_transactions) {
        problems.push("database.commit_transactions", "must be from 1 to 8");
    } else if u32::try_from(commit_transactions).is_ok_and(|n| n >= max_connections) {
        problems.push(
            "database.commit_transactions",
            "must be less than database.max_connections (reads need connections too)",
        );
    }
    DatabaseConfig {
        url: db_url,
        max_connections,
        commit_batch_max,
        commit_queue_depth,
        commit_transactions,
    }
}
