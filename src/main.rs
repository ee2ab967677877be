//! The `referral-gateway` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use referral_gateway::api::reports::parse_instant;
use referral_gateway::config::{self, Config, ProcessEnv};
use referral_gateway::delivery::inspect as ops;
use referral_gateway::delivery::topology::Topology;
use referral_gateway::domain::Timestamp;
use referral_gateway::domain::{Destination, ServiceType};
use referral_gateway::governance::audit_log::{SignedHead, VerifyPolicy};
use referral_gateway::governance::export::ExportFormat;
use referral_gateway::intake::schema::SchemaRegistry;
use referral_gateway::security::signing::{GatewayKey, SignedReceipt, keys_from_jwks};
use referral_gateway::security::{certs, tls};
use referral_gateway::staff_auth::tokens::{DevTokenRequest, Role, mint_dev_token};
use referral_gateway::startup::Application;
use referral_gateway::store::{AuditQuery, AuditRecord, Store, to_micros};
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
    /// Run the gateway until SIGTERM or SIGINT.
    Serve,
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
    /// Certificate helpers for development and testing.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
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
    DevToken {
        /// Role(s) in the token; repeat for both.
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<StaffRole>,
        /// The agency a service manager manages (an agency id from the config).
        #[arg(long)]
        agency: Option<String>,
        /// The token's subject (`sub`), as the audit log will name the caller (default:
        /// dev-auditor@example.org or dev-service-manager@example.org).
        #[arg(long)]
        subject: Option<String>,
        /// Lifetime in minutes.
        #[arg(long, default_value_t = 60)]
        minutes: i64,
    },
    /// Check a referral file against the schemas, offline, and print every problem.
    Validate {
        /// The referral (JSON) to check.
        file: PathBuf,
        /// Check against this service type's overlay instead of the one its destination implies.
        #[arg(long)]
        service_type: Option<String>,
        /// Schema directory (default: the config's schemas.dir, else ./schemas).
        #[arg(long)]
        schemas: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Run every start-up check on the configuration (keys, certificates, agencies,
    /// agreements, schemas) offline: exit 0 when the gateway would start (printing any
    /// warnings), 2 with every problem otherwise. Touches no database or broker.
    Check,
}

#[derive(Subcommand)]
enum AuditCommand {
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
enum ExportFormatArg {
    Ndjson,
    Csv,
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Check a receipt's signature. FILE holds the 202 response or its `signed_receipt`.
    Verify {
        file: PathBuf,
        /// Public keys as served at GET /v1/keys (default: the configured signing key's).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SlaCommand {
    /// Per agency, service type and priority: referrals, clocks met within SLA, breaches,
    /// median and 90th-percentile times, not-attended rate.
    Report {
        /// Start of the period (YYYY-MM-DD or RFC 3339), by referral receipt time.
        #[arg(long)]
        from: String,
        /// End of the period (a date counts to its end).
        #[arg(long)]
        to: String,
        /// Only referrals this agency sent or received.
        #[arg(long)]
        agency: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StaffRole {
    Auditor,
    #[value(alias = "service_manager")]
    ServiceManager,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Backlog size, age of the oldest row, and rows that keep failing.
    Status,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List (without removing) the agency's dead-lettered messages: ids and routing keys only.
    List {
        #[arg(long)]
        agency: String,
    },
    /// Put the agency's dead-lettered messages back on its queue.
    Replay {
        #[arg(long)]
        agency: String,
        /// Replay at most this many.
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a fresh CA, a server certificate and a client certificate per configured agency.
    Init {
        /// Directory to write the set to.
        #[arg(long)]
        out: PathBuf,
        /// Names for the server certificate (DNS names or IP addresses).
        #[arg(long = "server-name", default_values = ["localhost", "127.0.0.1", "::1"])]
        server_names: Vec<String>,
        /// Validity of every certificate, in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Overwrite an existing set in --out.
        #[arg(long)]
        force: bool,
    },
    /// Print the SHA-256 fingerprint of a certificate, for `certificate.sha256` in the config.
    Fingerprint { file: PathBuf },
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

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path, &ProcessEnv)?)
}

/// The public keys receipts and checkpoints are checked against: the current signing
/// key's and those of earlier keys (`audit.previous_public_keys`).
fn verification_keys(
    config: &Config,
) -> anyhow::Result<Vec<referral_gateway::security::signing::PublicKey>> {
    let key = GatewayKey::load(&config.audit.signing_key).context("audit.signing_key")?;
    let mut keys = vec![key.public().clone()];
    keys.extend(config.audit.previous_public_keys.iter().cloned());
    Ok(keys)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            let config = load_config(&cli.config)?;
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(config).await?;
                app.run_until_signalled().await.context("server failed")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DevToken {
            roles,
            agency,
            subject,
            minutes,
        } => {
            let config = load_config(&cli.config)?;
            let staff = config
                .staff
                .as_ref()
                .context("the config has no [staff] section, so no staff tokens are accepted")?;
            if !staff.dev_tokens {
                anyhow::bail!(
                    "development tokens are disabled: set [staff] dev_tokens = true (development only)"
                );
            }
            if !(1..=24 * 60).contains(&minutes) {
                anyhow::bail!("--minutes must be between 1 and 1440");
            }
            let roles: Vec<Role> = roles
                .into_iter()
                .map(|r| match r {
                    StaffRole::Auditor => Role::Auditor,
                    StaffRole::ServiceManager => Role::ServiceManager,
                })
                .collect();
            if roles.contains(&Role::ServiceManager) {
                let id = agency
                    .as_deref()
                    .context("a service manager token needs --agency <agency-id>")?;
                if !config.registry.agencies().any(|a| a.id.as_str() == id) {
                    anyhow::bail!("--agency {id} is not an agency in the config");
                }
            }
            let subject = subject.unwrap_or_else(|| {
                if roles.contains(&Role::Auditor) {
                    "dev-auditor@example.org".into()
                } else {
                    "dev-service-manager@example.org".into()
                }
            });
            let token = mint_dev_token(
                &staff.dev_signing_key,
                staff.auth.policy(),
                &DevTokenRequest {
                    subject: &subject,
                    roles: &roles,
                    agency: agency.as_deref(),
                    lifetime: time::Duration::minutes(minutes),
                },
            )?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { grant_to } => {
            let config = load_config(&cli.config)?;
            if grant_to.is_some() && config.database.url.starts_with("sqlite:") {
                anyhow::bail!(
                    "--grant-to needs PostgreSQL: SQLite has no roles (whoever can write the file can rewrite the log; docs/governance.md)"
                );
            }
            actix_web::rt::System::new().block_on(async move {
                let store = Store::connect(&config.database).await?;
                store.migrate().await?;
                println!("migrations applied ({:?})", store.backend());
                if let Some(role) = grant_to {
                    store.grant_runtime_role(&role).await?;
                    let powers = store.audit_powers_of(&role).await?;
                    if !powers.is_empty() {
                        anyhow::bail!(
                            "role {role} can still alter the audit log ({}): it must not own the tables, be a superuser or be a member of the owner role (e.g. as a superuser: REASSIGN OWNED BY {role} TO <owner role>, then migrate again)",
                            powers.join("; ")
                        );
                    }
                    println!(
                        "granted {role}: SELECT and INSERT on audit_log and audit_checkpoints, SELECT and UPDATE on audit_head, DML on the other tables"
                    );
                }
                store.close().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            command:
                CertsCommand::Init {
                    out,
                    server_names,
                    days,
                    force,
                },
        } => {
            if !(1..=3650).contains(&days) {
                anyhow::bail!("--days must be between 1 and 3650");
            }
            let config = Config::load_before_certificates(&cli.config, &ProcessEnv)?;
            let written = certs::init(&out, &config.registry, &server_names, days, force)?;
            for w in written {
                println!("{:<60} {}", w.what, w.path.display());
                if let Some(note) = w.note {
                    println!("    note: {note}");
                }
            }
            println!("\nDevelopment use only: keep ca.key offline in any real scheme.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            command: CertsCommand::Fingerprint { file },
        } => {
            for cert in tls::load_certs("file", &file)? {
                println!("{}", tls::fingerprint_hex(&tls::sha256(cert.as_ref())));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            file,
            service_type,
            schemas,
        } => validate(&cli.config, &file, service_type, schemas),
        Command::Sla {
            command:
                SlaCommand::Report {
                    from,
                    to,
                    agency,
                    format,
                },
        } => {
            let parse = |text: &str, end: bool, name: &str| {
                referral_gateway::api::reports::parse_instant(text, end).ok_or_else(|| {
                    anyhow::anyhow!("--{name} must be a date (YYYY-MM-DD) or an RFC 3339 date-time")
                })
            };
            let (from, to) = (parse(&from, false, "from")?, parse(&to, true, "to")?);
            if to <= from {
                anyhow::bail!("--to must be after --from");
            }
            let config = load_config(&cli.config)?;
            if let Some(a) = &agency
                && config.registry.get(a).is_none()
            {
                anyhow::bail!("--agency: no agency '{a}' is configured");
            }
            let rows = actix_web::rt::System::new().block_on(async move {
                let store = Store::connect(&config.database).await?;
                let (clocks, contacts) = store
                    .report_facts(from.into(), to.into(), agency.as_deref())
                    .await?;
                let now = to_micros(time::OffsetDateTime::now_utc());
                anyhow::Ok(referral_gateway::sla::report::aggregate(
                    &clocks, &contacts, now,
                ))
            })?;
            match format {
                ReportFormat::Table => print!("{}", referral_gateway::sla::report::to_table(&rows)),
                ReportFormat::Csv => print!("{}", referral_gateway::sla::report::to_csv(&rows)),
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = load_config(&cli.config)?;
            let schemas =
                referral_gateway::intake::schema::SchemaRegistry::load(&config.schemas_dir)
                    .with_context(|| {
                        format!("loading schemas from {}", config.schemas_dir.display())
                    })?;
            referral_gateway::security::tls::server_config(&config.tls)
                .context("building the TLS configuration")?;
            GatewayKey::load(&config.audit.signing_key).context("audit.signing_key")?;
            let warnings = referral_gateway::startup::configuration_warnings(&config, &schemas);
            for warning in &warnings {
                println!("warning: {warning}");
            }
            println!(
                "{}: the configuration is valid ({} agencies, {} sharing agreements, profile {:?}; {} warning(s))",
                cli.config.display(),
                config.registry.agencies().count(),
                config.sharing_agreements.len(),
                config.profile,
                warnings.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { older_than } => {
            let config = load_config(&cli.config)?;
            let days = older_than.unwrap_or(config.storage.retention_days);
            if days == 0 {
                anyhow::bail!("--older-than must be at least 1 day");
            }
            let now = time::OffsetDateTime::now_utc();
            let cutoff = now - time::Duration::days(i64::from(days));
            let purged = actix_web::rt::System::new().block_on(async move {
                let store = Store::open(&config).await?;
                store.migrate_if_needed().await?;
                anyhow::Ok(
                    store
                        .purge_payloads(to_micros(cutoff), to_micros(now))
                        .await?,
                )
            })?;
            println!("purged {purged} referral payload(s) received more than {days} day(s) ago");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    head,
                    max_uncovered_entries,
                    max_uncovered_secs,
                },
        } => {
            let config = load_config(&cli.config)?;
            let keys = verification_keys(&config)?;
            let started = std::time::Instant::now();
            let mut policy =
                VerifyPolicy::from_config(&config.audit, time::OffsetDateTime::now_utc());
            let bound = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
            if let Some(n) = max_uncovered_entries {
                policy.max_uncovered_entries = Some(bound(n));
            }
            if let Some(s) = max_uncovered_secs {
                policy.max_uncovered_secs = Some(bound(s));
            }
            if let Some(path) = &head {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
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
                        referral_gateway::governance::audit_log::verify_with(
                            &store, &keys, &policy,
                        )
                        .await,
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
        Command::Audit {
            command:
                AuditCommand::Export {
                    from,
                    to,
                    format,
                    out,
                },
        } => {
            let config = load_config(&cli.config)?;
            let format = match format {
                ExportFormatArg::Ndjson => ExportFormat::Ndjson,
                ExportFormatArg::Csv => ExportFormat::Csv,
            };
            let instant = |text: &Option<String>, end: bool, name: &str, default| match text {
                None => Ok(default),
                Some(t) => parse_instant(t, end).map(Timestamp::from).with_context(|| {
                    format!("--{name} must be a date (YYYY-MM-DD) or an RFC 3339 date-time")
                }),
            };
            let from_micros = instant(&from, false, "from", Timestamp::MIN)?;
            let to_micros_ = instant(&to, true, "to", Timestamp::MAX)?;
            if to_micros_ <= from_micros {
                anyhow::bail!("--to must be after --from");
            }
            let operator = ["USER", "LOGNAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| "unknown".into());
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let written = actix_web::rt::System::new().block_on(async move {
                let store = Store::connect(&config.database).await?;
                let (upto, _) = store.audit_head().await?;
                store
                    .audit(
                        &AuditRecord::new(
                            format!("operator:{operator}"),
                            referral_gateway::domain::audit::AuditAction::AuditExported,
                        )
                        .detail(format!(
                            "command line; format={} from={} to={} up to entry {upto}",
                            format.name(),
                            from.as_deref().unwrap_or(""),
                            to.as_deref().unwrap_or(""),
                        )),
                        time::OffsetDateTime::now_utc(),
                    )
                    .await?;
                sink.write_all(format.header().as_bytes())?;
                let (mut after, mut written) = (0, 0_u64);
                loop {
                    let page = store
                        .search_audit(&AuditQuery {
                            from: from_micros,
                            to: to_micros_,
                            ..AuditQuery::everything(after, upto, 1000)
                        })
                        .await?;
                    let Some((last, _)) = page.last() else { break };
                    after = last.seq;
                    for (entry, hash) in &page {
                        sink.write_all(format.line(entry, hash).as_bytes())?;
                        written += 1;
                    }
                }
                sink.flush()?;
                store.close().await;
                anyhow::Ok(written)
            })?;
            eprintln!("exported {written} audit entries");
            Ok(ExitCode::SUCCESS)
        }
        Command::Receipt {
            command: ReceiptCommand::Verify { file, keys },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).context("the receipt file is not JSON")?;
            let signed = value.get("signed_receipt").cloned().unwrap_or(value);
            let signed: SignedReceipt = serde_json::from_value(signed)
                .context("no signed receipt (receipt, alg, key_id, signature) in the file")?;
            let keys = match keys {
                Some(path) => keys_from_jwks(&std::fs::read_to_string(&path)?)
                    .map_err(|e| anyhow::anyhow!("--keys: {e}"))?,
                None => verification_keys(&load_config(&cli.config)?)?,
            };
            match signed.verify(&keys) {
                Ok(()) => {
                    println!(
                        "receipt valid: referral {} from {} to {}, received {}, payload sha256 {} (key {})",
                        signed.receipt.referral_id,
                        signed.receipt.sender,
                        signed.receipt.recipient,
                        signed.receipt.received_at,
                        signed.receipt.payload_sha256,
                        signed.key_id
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("receipt INVALID: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Outbox {
            command: OutboxCommand::Status,
        } => {
            let config = load_config(&cli.config)?;
            let report = actix_web::rt::System::new().block_on(async move {
                let store = Store::connect(&config.database).await?;
                anyhow::Ok(ops::outbox_status(&store).await?)
            })?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            let config = load_config(&cli.config)?;
            let topology = Topology::new(&config.amqp.namespace, &config.registry);
            let receivers: Vec<String> = config
                .registry
                .agencies()
                .filter(|a| a.role.receives())
                .map(|a| a.id.to_string())
                .collect();
            let url = config.amqp.url.clone();
            actix_web::rt::System::new().block_on(async move {
                match command {
                    DlqCommand::List { agency } => {
                        print!(
                            "{}",
                            ops::dlq_list(&url, &topology, &receivers, &agency).await?
                        );
                    }
                    DlqCommand::Replay { agency, limit } => {
                        let n =
                            ops::dlq_replay(&url, &topology, &receivers, &agency, limit).await?;
                        println!("replayed {n} message(s) to the {agency} queue");
                    }
                }
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(
    config_path: &Path,
    file: &Path,
    service_type: Option<String>,
    schemas: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    // The config is optional here: it is only needed to resolve destination.agency_id.
    let config = load_config(config_path).ok();
    let dir = schemas
        .or_else(|| config.as_ref().map(|c| c.schemas_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("schemas"));
    let registry = SchemaRegistry::load(&dir)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let document: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            println!("{}: not valid JSON: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let service_type = match service_type {
        Some(t) => Some(ServiceType::parse(t).context("--service-type")?),
        None => match Destination::from_document(&document) {
            Some(Destination::Service { service_type, .. }) => {
                ServiceType::parse(service_type).ok()
            }
            Some(Destination::Agency(id)) => config
                .as_ref()
                .and_then(|c| c.registry.get(&id).map(|a| a.service_type.clone())),
            None => None,
        },
    };
    match registry.validate_referral(service_type.as_ref(), document) {
        Ok(referral) => {
            println!(
                "{}: valid ({}; schema {})",
                file.display(),
                service_type
                    .as_ref()
                    .map_or("common schema only", ServiceType::as_str),
                referral.schema_id()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(violations) => {
            println!("{}: {} problem(s)", file.display(), violations.len());
            for v in violations {
                let pointer = if v.pointer.is_empty() {
                    "(document)"
                } else {
                    &v.pointer
                };
                println!("  {pointer}  [{}] {}", v.keyword, v.detail);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
