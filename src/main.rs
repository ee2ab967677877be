//! The `referral-gateway` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::audit::AuditCommand;
use cli::broker::BrokerCommand;
use cli::certs::CertsCommand;
use cli::config_check::ConfigCommand;
use cli::dev_token::DevTokenArgs;
use cli::outbox::{DlqCommand, OutboxCommand};
use cli::receipt::ReceiptCommand;
use cli::sla::SlaCommand;
use cli::validate::ValidateArgs;
use referral_gateway::config;

/// jemalloc instead of glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use referral_gateway::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "referral-gateway",
    version,
    about = "Secure inter-agency referral gateway for liaison and diversion services"
)]
struct Cli {
    /// Configuration file (TOML). REFGW_* environment variables override parts of it
    /// (docs/configuration.md, "Environment").
    #[arg(long, global = true, env = "REFGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "REFGW_LOG_FORMAT",
        default_value = "human"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT; SIGHUP reloads the configuration.
    Serve,
    /// Have the running gateway reload its configuration (agencies, permissions,
    /// sharing agreements, SLA targets and calendar, schemas, CRLs) without a restart:
    /// check it here first, then send the gateway SIGHUP and wait for the outcome on its
    /// ops listener. Exit 0 when applied, 3 when applied but some changed settings take
    /// effect only at the next restart (named), 1 when the gateway refused it or no
    /// outcome was seen in time, 2 when nothing was signalled (the configuration has
    /// problems, or the gateway cannot be found or read).
    Reload {
        /// The gateway's process id (default: read from `[server] pid_file`).
        #[arg(long)]
        pid: Option<i32>,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
    },
    /// Check the configuration without starting anything.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Apply the database migrations and exit. On PostgreSQL, run it as the owner role.
    Migrate {
        /// PostgreSQL: then grant this runtime role what `serve` needs, and on the audit
        /// tables only SELECT and INSERT (and UPDATE of the one-row chain head); fails if
        /// the role could still alter the audit log (e.g. it owns the tables).
        #[arg(long, value_name = "ROLE")]
        grant_to: Option<String>,
    },
    /// Certificates: development sets, issuing and revoking agency certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The broker's users and permissions.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
    /// Inspect the outbox (referrals accepted but not yet confirmed by the broker).
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Inspect and replay a receiving agency's dead-lettered messages.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// SLA reports.
    Sla {
        #[command(subcommand)]
        command: SlaCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Signed receipts.
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// Delete referral payloads past retention (delivered ones only); metadata, events,
    /// clocks and the audit log stay, and the audit chain still verifies.
    Purge {
        /// Payloads of referrals received more than this many days ago (default:
        /// storage.retention_days).
        #[arg(long)]
        older_than: Option<u32>,
    },
    /// Development only: print a staff bearer token signed with the development key
    /// (refused unless the config sets `[staff] dev_tokens = true`).
    DevToken(DevTokenArgs),
    /// Check a referral file against the schemas, offline, and print every problem.
    Validate(ValidateArgs),
    /// Print a listener's OpenAPI 3.1 document (what it serves at /v1/openapi.json, and
    /// docs/openapi/<listener>.json). Reads no configuration.
    Openapi {
        #[arg(long, value_parser = ["agency", "staff"])]
        listener: String,
    },
    /// Probe the ops listener with one plain HTTP GET (a container's HEALTHCHECK):
    /// exit 0 on 200, 1 otherwise. Reads no configuration.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9464/readyz")]
        url: String,
        /// Give up after this many seconds (connect, send and read each).
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// SQLite: an online, consistent copy of the database to a new file (VACUUM INTO),
    /// integrity-checked. PostgreSQL: use pg_dump (docs/deployment.md).
    Backup {
        /// The new file (refused if it exists).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Move a SQLite database onto an empty, migrated PostgreSQL database: every row as
    /// stored, in one transaction; then compare row counts and verify the audit chain
    /// on the target (same head as the source). Stop the gateway first.
    MigrateData {
        /// The SQLite database (sqlite://PATH).
        #[arg(long, value_name = "URL")]
        from: String,
        /// The PostgreSQL database (postgres://...), migrated and empty.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Rows per INSERT statement.
        #[arg(long, default_value_t = 500)]
        batch_rows: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.as_path();
    match cli.command {
        Command::Serve => cli::serve::run(config_path),
        Command::Reload { pid, wait_secs } => cli::reload::run(
            config_path,
            pid,
            std::time::Duration::from_secs(wait_secs.max(1)),
        ),
        Command::Config { command } => cli::config_check::run(config_path, command),
        Command::Migrate { grant_to } => cli::migrate::run(config_path, grant_to),
        Command::Certs { command } => cli::certs::run(config_path, command),
        Command::Broker { command } => cli::broker::run(config_path, command),
        Command::Outbox { command } => cli::outbox::run_outbox(config_path, command),
        Command::Dlq { command } => cli::outbox::run_dlq(config_path, command),
        Command::Sla { command } => cli::sla::run(config_path, command),
        Command::Audit { command } => cli::audit::run(config_path, command),
        Command::Receipt { command } => cli::receipt::run(config_path, command),
        Command::Purge { older_than } => cli::purge::run(config_path, older_than),
        Command::DevToken(args) => cli::dev_token::run(config_path, args),
        Command::Validate(args) => cli::validate::run(config_path, args),
        Command::Openapi { listener } => {
            let listener = listener
                .parse::<referral_gateway::api::openapi::Listener>()
                .map_err(anyhow::Error::msg)?;
            print!(
                "{}",
                referral_gateway::api::openapi::document_text(listener)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url, timeout_secs } => {
            cli::healthcheck::run(&url, std::time::Duration::from_secs(timeout_secs.max(1)))
        }
        Command::Backup { to } => cli::backup::run(config_path, &to),
        Command::MigrateData {
            from,
            to,
            batch_rows,
        } => cli::migrate_data::run(config_path, &from, &to, batch_rows),
    }
}
