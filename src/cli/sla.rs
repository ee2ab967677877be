//! `sla report`: the SLA report, read from the database.

use referral_gateway::domain::Timestamp;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use referral_gateway::api::reports::report_period_at;
use referral_gateway::sla::report::{sla_report, to_csv, to_table};
use referral_gateway::store::Store;

use super::load_config;

#[derive(Subcommand)]
pub enum SlaCommand {
    /// Per agency, service type and priority: referrals, clocks met within SLA, breaches,
    /// median and 90th-percentile times, not-attended rate.
    Report {
        /// Start of the period (YYYY-MM-DD or RFC 3339), by referral receipt time; by
        /// default 30 days before now, as the API.
        #[arg(long)]
        from: Option<String>,
        /// End of the period (a date counts to its end); by default now.
        #[arg(long)]
        to: Option<String>,
        /// Only referrals this agency sent or received.
        #[arg(long)]
        agency: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

pub fn run(config_path: &Path, command: SlaCommand) -> anyhow::Result<ExitCode> {
    let SlaCommand::Report {
        from,
        to,
        agency,
        format,
    } = command;
    // The same period rules as `GET /v1/reports/sla`: one implementation.
    let now = Timestamp::from(time::OffsetDateTime::now_utc());
    let (from, to) = report_period_at(now, from.as_deref(), to.as_deref())
        .map_err(|e| anyhow::anyhow!("--from/--to: {}", e.detail))?;
    let config = load_config(config_path)?;
    if let Some(a) = &agency
        && config.registry.get(a).is_none()
    {
        anyhow::bail!("--agency: no agency '{a}' is configured");
    }
    let rows = actix_web::rt::System::new().block_on(async move {
        // With the payload keys: first contacts' outcomes are read from sealed events.
        let store = Store::open(&config).await?;
        let rows = sla_report(&store, from, to, agency.as_deref(), now).await?;
        anyhow::Ok(rows)
    })?;
    match format {
        ReportFormat::Table => print!("{}", to_table(&rows)),
        ReportFormat::Csv => print!("{}", to_csv(&rows)),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
    }
    Ok(ExitCode::SUCCESS)
}
