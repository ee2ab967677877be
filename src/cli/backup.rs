//! `backup --to FILE`: an online copy of a SQLite database (`VACUUM INTO`: a consistent
//! snapshot while the gateway runs), written beside FILE and renamed into place once
//! complete and on disk. PostgreSQL is backed up with its own tools (`pg_dump -Fc`;
//! docs/deployment.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use referral_gateway::store::{Backend, Store};
use sqlx::{ConnectOptions, Connection, Row};

use super::load_config;

pub fn run(config_path: &Path, to: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    if Backend::of_url(&config.database.url) != Backend::Sqlite {
        bail!(
            "backup copies a SQLite database; back up PostgreSQL with pg_dump -Fc (docs/deployment.md, \"Backup and restore\")"
        );
    }
    if to.exists() {
        bail!("{} exists: choose a new file name", to.display());
    }
    let name = to
        .file_name()
        .with_context(|| format!("--to {}: not a file name", to.display()))?;
    let dir = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "directory {} does not exist: create it first (e.g. install -d -m 0700 {})",
            dir.display(),
            dir.display()
        );
    }
    let partial = dir.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let partial_text = partial
        .to_str()
        .context("the backup path must be valid UTF-8")?
        .to_owned();
    // Created empty first, readable by its owner only (the copy holds the audit log and
    // the referrals' metadata): SQLite would create it with mode 0644. `VACUUM INTO`
    // accepts an empty file.
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
    }
    let database = config.database.clone();
    let result = actix_web::rt::System::new().block_on(async move {
        let store = Store::connect(&database).await?;
        sqlx::query("VACUUM INTO $1")
            .bind(&partial_text)
            .execute(store.pool())
            .await
            .context("VACUUM INTO")?;
        store.close().await;
        // The copy on its own: intact, and what it holds.
        let mut copy = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&partial_text)
            .read_only(true)
            .connect()
            .await?;
        let check: String = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&mut copy)
            .await?
            .try_get(0)?;
        if check != "ok" {
            bail!("the copy failed its integrity check: {check}");
        }
        let mut counts = [0i64; 2];
        for (n, sql) in counts.iter_mut().zip([
            "SELECT COUNT(*) FROM referrals",
            "SELECT COUNT(*) FROM audit_log",
        ]) {
            *n = sqlx::query(sql).fetch_one(&mut copy).await?.try_get(0)?;
        }
        copy.close().await?;
        let [referrals, entries] = counts;
        anyhow::Ok((referrals, entries))
    });
    let finished = result.and_then(|counts| {
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, to).with_context(|| format!("writing {}", to.display()))?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(counts)
    });
    match finished {
        Ok((referrals, entries)) => {
            println!(
                "backed up to {}: {referrals} referrals, {entries} audit entries (integrity check ok)",
                to.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
