//! `migrate-data --from sqlite://... --to postgres://...`: moves a trial's SQLite database
//! onto an empty, migrated PostgreSQL database, every table and every row as stored (the
//! audit chain byte for byte, payloads still sealed with the same keys), in one
//! transaction on the target; then checks the row counts and verifies the audit chain on
//! the target against the source's head.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use referral_gateway::config::DatabaseConfig;
use referral_gateway::governance::verify::{VerifyPolicy, verify_with};
use referral_gateway::store::{Backend, Store};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{load_config, verification_keys};

/// PostgreSQL takes at most 65 535 parameters in one statement.
const MAX_PARAMETERS: usize = 30_000;

/// Tables the migrations themselves fill: the one-row audit chain head, `seq = 0` on a
/// database no entry was ever written to. Replaced by the source's row.
const SEEDED: &str = "audit_head";

pub fn run(
    config_path: &Path,
    from: &str,
    to: &str,
    batch_rows: usize,
) -> anyhow::Result<ExitCode> {
    if Backend::of_url(from) != Backend::Sqlite {
        bail!("--from must be a SQLite database URL (sqlite://PATH)");
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to must be a PostgreSQL database URL (postgres://...)");
    }
    if batch_rows == 0 {
        bail!("--batch-rows must be at least 1");
    }
    if !Path::new(sqlite_path(from)).is_file() {
        bail!("--from: no SQLite database at {}", sqlite_path(from));
    }
    let config = load_config(config_path)?;
    let keys = verification_keys(&config)?;
    let connect = |url: &str| DatabaseConfig {
        url: url.to_owned(),
        max_connections: 2,
        ..config.database.clone()
    };
    let (from, to) = (connect(from), connect(to));
    actix_web::rt::System::new().block_on(async move {
        let source = Store::connect(&from).await.context("--from")?;
        let target = Store::connect(&to).await.context("--to")?;
        let outcome = copy_and_verify(&source, &target, &keys, batch_rows).await;
        source.close().await;
        target.close().await;
        outcome
    })
}

/// `sqlite://PATH?query` as PATH.
fn sqlite_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split_once('?').map_or(rest, |(path, _)| path)
}

async fn copy_and_verify(
    source: &Store,
    target: &Store,
    keys: &[referral_gateway::security::signing::PublicKey],
    batch_rows: usize,
) -> anyhow::Result<ExitCode> {
    // The same schema on both sides: every migration of this build, no other.
    for (store, side) in [(source, "--from"), (target, "--to")] {
        let applied = applied_versions(store).await.with_context(|| {
            format!("{side}: reading its migrations (run `referral-gateway migrate` on it first)")
        })?;
        let expected = store.backend().migration_versions();
        if applied != expected {
            bail!(
                "{side} is at schema versions {applied:?}, this build at {expected:?}: run `referral-gateway migrate` on it (with this build) first"
            );
        }
    }
    // The source's chain must verify before anything is copied.
    let before = verify_with(source, keys, &VerifyPolicy::default())
        .await
        .map_err(|e| anyhow::anyhow!("the source's audit log does not verify: {e}"))?;

    let tables = source_tables(source).await?;
    let target_columns = target_columns(target).await?;
    let names: BTreeSet<&String> = tables.iter().map(|t| &t.name).collect();
    let target_names: BTreeSet<&String> = target_columns.keys().collect();
    if names != target_names {
        bail!("the databases have different tables: source {names:?}, target {target_names:?}");
    }

    let mut tx = target.pool().begin().await?;
    // Refuse a target that holds anything.
    for table in &tables {
        let sql = if table.name == SEEDED {
            format!("SELECT COUNT(*) FROM {} WHERE seq <> 0", table.name)
        } else {
            format!("SELECT COUNT(*) FROM {}", table.name)
        };
        let rows: i64 = sqlx::query(&sql).fetch_one(&mut *tx).await?.try_get(0)?;
        if rows > 0 {
            bail!(
                "the target is not empty ({} holds {rows} rows): migrate-data only fills a freshly migrated database",
                table.name
            );
        }
    }
    sqlx::query(&format!("DELETE FROM {SEEDED}"))
        .execute(&mut *tx)
        .await?;

    // A consistent snapshot of the source for the whole copy.
    let mut read = source.pool().begin().await?;
    let mut copied = Vec::new();
    for table in &tables {
        let types = &target_columns[&table.name];
        let mut columns = Vec::new();
        for column in &table.columns {
            let ty = types
                .get(column)
                .with_context(|| format!("{}.{column} is missing from the target", table.name))?;
            columns.push((column.as_str(), ColumnType::of(ty, &table.name, column)?));
        }
        if columns.len() != types.len() {
            bail!("{} has other columns on the target", table.name);
        }
        let rows = copy_table(&mut read, &mut tx, &table.name, &columns, batch_rows).await?;
        copied.push((table.name.clone(), rows));
    }
    read.rollback().await?;

    // Sequences and identities continue after the copied values.
    let serials = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = current_schema() AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &serials {
        let (table, column): (String, String) = (row.try_get("t")?, row.try_get("c")?);
        let (table, column) = (identifier(&table)?, identifier(&column)?);
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
             GREATEST(COALESCE(MAX({column}), 0), 1), COALESCE(MAX({column}), 0) > 0) FROM {table}"
        ))
        .execute(&mut *tx)
        .await?;
    }

    // Row counts, inside the transaction: the source's against what the target now holds.
    for (table, rows) in &copied {
        let held: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if u64::try_from(held).ok() != Some(*rows) {
            bail!("{table}: copied {rows} rows but the target holds {held}; nothing was committed");
        }
    }
    tx.commit().await?;

    for (table, rows) in &copied {
        println!("{table}: {rows} rows");
    }
    match verify_with(target, keys, &VerifyPolicy::default()).await {
        Ok(after) if after.head_seq == before.head_seq && after.head_hash == before.head_hash => {
            println!(
                "audit log verified on the target: {} entries, {} signed checkpoints, head {} ({}), the same as the source's",
                after.entries, after.checkpoints, after.head_seq, after.head_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(after) => {
            println!(
                "audit log on the target ends at {} ({}), the source's at {} ({}): drop the target database and run migrate-data again",
                after.head_seq, after.head_hash, before.head_seq, before.head_hash
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!(
                "audit log FAILED verification on the target: {e}; drop the target database and run migrate-data again"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn applied_versions(store: &Store) -> anyhow::Result<Vec<i64>> {
    let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(store.pool())
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<i64, _>("version"))
        .collect::<Result<_, _>>()?)
}

struct Table {
    name: String,
    columns: Vec<String>,
}

/// The source's tables, each after the tables its foreign keys refer to.
async fn source_tables(source: &Store) -> anyhow::Result<Vec<Table>> {
    let names: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(source.pool())
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>("name"))
    .collect::<Result<_, _>>()?;
    let mut pending = Vec::new();
    for name in names {
        identifier(&name)?;
        let columns: Vec<String> =
            sqlx::query("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(&name)
                .fetch_all(source.pool())
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("name"))
                .collect::<Result<_, _>>()?;
        for column in &columns {
            identifier(column)?;
        }
        let refers: BTreeSet<String> =
            sqlx::query("SELECT \"table\" AS t FROM pragma_foreign_key_list($1)")
                .bind(&name)
                .fetch_all(source.pool())
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("t"))
                .collect::<Result<_, _>>()?;
        pending.push((Table { name, columns }, refers));
    }
    let mut ordered: Vec<Table> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|(table, refers)| {
            refers
                .iter()
                .all(|r| *r == table.name || ordered.iter().any(|t| t.name == *r))
        });
        match ready {
            Some(i) => ordered.push(pending.remove(i).0),
            None => bail!("the source's foreign keys form a cycle"),
        }
    }
    Ok(ordered)
}

/// The target's columns and their types, per table.
async fn target_columns(
    target: &Store,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let rows = sqlx::query(
        "SELECT c.table_name::text AS t, c.column_name::text AS c, c.data_type::text AS ty \
         FROM information_schema.columns c JOIN information_schema.tables s \
         ON s.table_schema = c.table_schema AND s.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND s.table_type = 'BASE TABLE' \
         AND c.table_name <> '_sqlx_migrations'",
    )
    .fetch_all(target.pool())
    .await?;
    let mut tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for row in &rows {
        tables
            .entry(row.try_get("t")?)
            .or_default()
            .insert(row.try_get("c")?, row.try_get("ty")?);
    }
    Ok(tables)
}

#[derive(Clone, Copy)]
enum ColumnType {
    Text,
    BigInt,
    Int,
}

impl ColumnType {
    fn of(data_type: &str, table: &str, column: &str) -> anyhow::Result<Self> {
        match data_type {
            "text" => Ok(Self::Text),
            "bigint" => Ok(Self::BigInt),
            "integer" => Ok(Self::Int),
            other => bail!("{table}.{column}: migrate-data cannot copy a column of type {other}"),
        }
    }
}

/// One value read from the source, as the target column takes it.
enum Value {
    Text(Option<String>),
    BigInt(Option<i64>),
    Int(Option<i32>),
}

fn value(
    row: &AnyRow,
    index: usize,
    ty: ColumnType,
    table: &str,
    column: &str,
) -> anyhow::Result<Value> {
    let context = || format!("{table}.{column}");
    Ok(match ty {
        ColumnType::Text => Value::Text(row.try_get(index).with_context(context)?),
        ColumnType::BigInt => Value::BigInt(row.try_get(index).with_context(context)?),
        ColumnType::Int => {
            let wide: Option<i64> = row.try_get(index).with_context(context)?;
            Value::Int(
                wide.map(i32::try_from)
                    .transpose()
                    .with_context(|| format!("{table}.{column}: out of range for integer"))?,
            )
        }
    })
}

/// Copies one table in batches of multi-row inserts, in rowid order; the number copied.
async fn copy_table(
    read: &mut sqlx::Transaction<'static, sqlx::Any>,
    write: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    columns: &[(&str, ColumnType)],
    batch_rows: usize,
) -> anyhow::Result<u64> {
    let list = columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ");
    let batch = batch_rows.min(MAX_PARAMETERS / columns.len().max(1)).max(1);
    let select = format!(
        "SELECT rowid AS refgw_rowid, {list} FROM {table} WHERE rowid > $1 ORDER BY rowid LIMIT $2"
    );
    let mut after = i64::MIN;
    let mut copied = 0u64;
    loop {
        let rows = sqlx::query(&select)
            .bind(after)
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
            .fetch_all(&mut **read)
            .await
            .with_context(|| format!("reading {table}"))?;
        let Some(last) = rows.last() else {
            return Ok(copied);
        };
        after = last.try_get("refgw_rowid")?;
        let mut values = Vec::with_capacity(rows.len() * columns.len());
        let mut tuples = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut placeholders = Vec::with_capacity(columns.len());
            for (i, (column, ty)) in columns.iter().enumerate() {
                values.push(value(row, i + 1, *ty, table, column)?);
                placeholders.push(format!("${}", values.len()));
            }
            tuples.push(format!("({})", placeholders.join(", ")));
        }
        let sql = format!("INSERT INTO {table} ({list}) VALUES {}", tuples.join(", "));
        let mut insert = sqlx::query(&sql);
        for v in values {
            insert = match v {
                Value::Text(v) => insert.bind(v),
                Value::BigInt(v) => insert.bind(v),
                Value::Int(v) => insert.bind(v),
            };
        }
        insert
            .execute(&mut **write)
            .await
            .with_context(|| format!("writing {table}"))?;
        copied += rows.len() as u64;
    }
}

/// A table or column name as the migrations write them; anything else is refused rather
/// than quoted.
fn identifier(name: &str) -> anyhow::Result<&str> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name)
    } else {
        bail!("unexpected table or column name {name:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_paths() {
        assert!(identifier("audit_log").is_ok());
        assert!(identifier("a; DROP TABLE x").is_err());
        assert!(identifier("").is_err());
        assert_eq!(
            sqlite_path("sqlite://data/gateway.db?mode=rwc"),
            "data/gateway.db"
        );
        assert_eq!(sqlite_path("sqlite:/var/lib/x.db"), "/var/lib/x.db");
    }
}
