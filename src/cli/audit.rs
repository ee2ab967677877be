//! `audit verify` and `audit export`.

use referral_gateway::domain::Timestamp;
use referral_gateway::domain::audit::AuditAction;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use referral_gateway::api::query::parse_instant;
use referral_gateway::governance::checkpoints::SignedHead;
use referral_gateway::governance::export::{Export, ExportFormat};
use referral_gateway::governance::verify::VerifyPolicy;
use referral_gateway::store::{AuditRecord, Store};

use super::{load_config, verification_keys};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain and every signed checkpoint; name the first bad entry.
    /// Fails too when the newest entries are not covered by a signed checkpoint beyond a
    /// bound (by default twice audit.checkpoint_every entries or twice
    /// audit.checkpoint_interval_secs).
    Verify {
        /// A signed head kept outside the database (audit.head_file, or an
        /// `audit_checkpoint` JSON log line or log): the log must still hold it.
        #[arg(long, value_name = "FILE")]
        head: Option<PathBuf>,
        /// At most this many entries after the newest signed checkpoint.
        #[arg(long, value_name = "N")]
        max_uncovered_entries: Option<u64>,
        /// The oldest entry after the newest signed checkpoint at most this many seconds old.
        #[arg(long, value_name = "SECONDS")]
        max_uncovered_secs: Option<u64>,
    },
    /// Write the log (or a period of it) as NDJSON or CSV, with each entry's hashes;
    /// recorded in the log as `audit.exported` by `operator:<$USER>`.
    Export {
        /// Start (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// End (a date counts to its end).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value = "ndjson")]
        format: ExportFormatArg,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormatArg {
    Ndjson,
    Csv,
}

pub fn run(config_path: &Path, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            head,
            max_uncovered_entries,
            max_uncovered_secs,
        } => verify(config_path, head, max_uncovered_entries, max_uncovered_secs),
        AuditCommand::Export {
            from,
            to,
            format,
            out,
        } => export(config_path, from, to, format, out),
    }
}

fn verify(
    config_path: &Path,
    head: Option<PathBuf>,
    max_uncovered_entries: Option<u64>,
    max_uncovered_secs: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let keys = verification_keys(&config)?;
    let started = std::time::Instant::now();
    let mut policy = VerifyPolicy::from_config(&config.audit, time::OffsetDateTime::now_utc());
    let bound = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
    if let Some(n) = max_uncovered_entries {
        policy.max_uncovered_entries = Some(bound(n));
    }
    if let Some(s) = max_uncovered_secs {
        policy.max_uncovered_secs = Some(bound(s));
    }
    if let Some(path) = &head {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let signed = SignedHead::parse(&text)
            .map_err(|e| anyhow::anyhow!("--head {}: {e}", path.display()))?;
        if let Err(e) = signed.verify(&keys) {
            println!(
                "audit log FAILED verification: --head {}: {e}",
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        policy.head = Some(signed);
    }
    let result = actix_web::rt::System::new().block_on({
        let policy = policy.clone();
        async move {
            let store = Store::connect(&config.database).await?;
            anyhow::Ok(
                referral_gateway::governance::verify::verify_with(&store, &keys, &policy).await,
            )
        }
    })?;
    match result {
        Ok(v) => {
            println!(
                "audit log verified: {} entries, {} signed checkpoints, head {} ({}), {} entries after the newest checkpoint, in {:.2}s",
                v.entries,
                v.checkpoints,
                v.head_seq,
                v.head_hash,
                v.uncovered,
                started.elapsed().as_secs_f64()
            );
            if let Some(head) = &policy.head {
                println!(
                    "the log holds the signed head {} ({}) kept outside the database",
                    head.seq, head.hash
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            match e.first_bad_entry() {
                Some(seq) => println!("audit log FAILED verification at entry {seq}: {e}"),
                None => println!("audit log could not be verified: {e}"),
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn export(
    config_path: &Path,
    from: Option<String>,
    to: Option<String>,
    format: ExportFormatArg,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let format = match format {
        ExportFormatArg::Ndjson => ExportFormat::Ndjson,
        ExportFormatArg::Csv => ExportFormat::Csv,
    };
    let instant = |text: &Option<String>, end: bool, name: &str, default: Timestamp| match text {
        None => Ok(default),
        Some(t) => parse_instant(t, end).map(Timestamp::from).with_context(|| {
            format!("--{name} must be a date (YYYY-MM-DD) or an RFC 3339 date-time")
        }),
    };
    let from_at = instant(&from, false, "from", Timestamp::MIN)?;
    let to_at = instant(&to, true, "to", Timestamp::MAX)?;
    if to_at <= from_at {
        anyhow::bail!("--to must be after --from");
    }
    // Self-asserted (the environment's login name), and kept to what a staff subject may
    // hold: the log takes no free text.
    let operator = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .filter(|u| u.len() <= 64 && referral_gateway::staff_auth::tokens::is_acceptable_subject(u))
        .unwrap_or_else(|| "unknown".into());
    let export = |sink: &mut dyn Write| {
        actix_web::rt::System::new().block_on(async {
            let store = Store::connect(&config.database).await?;
            let export = Export::begin(&store, format, from_at, to_at).await?;
            let detail = export.detail(from_at, to_at);
            store
                .audit(
                    &AuditRecord::new(format!("operator:{operator}"), AuditAction::AuditExported)
                        .detail(format!("command line; {detail}")),
                    time::OffsetDateTime::now_utc(),
                )
                .await?;
            let written = export.write_to(sink).await?;
            store.close().await;
            anyhow::Ok(written)
        })
    };
    let written = match &out {
        Some(path) => write_atomically(path, export)?,
        None => export(&mut std::io::BufWriter::new(std::io::stdout().lock()))?,
    };
    eprintln!("exported {written} audit entries");
    Ok(ExitCode::SUCCESS)
}

/// Writes `path` through a temporary file in the same directory, renamed over `path` only
/// once `write` has succeeded: a failed export leaves no file behind, neither an empty
/// nor a partial one (and an earlier file of that name untouched).
fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let creating = || format!("creating {}", path.display());
    let name = path.file_name().with_context(creating)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .with_context(creating)?;
    let written = (|| {
        let mut sink = std::io::BufWriter::new(file);
        let value = write(&mut sink)?;
        let file = sink.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))?;
        anyhow::Ok(value)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}
