//! `config check`: every start-up check on the configuration, offline.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use referral_gateway::security::signing::GatewayKey;

use super::load_config;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Run every start-up check on the configuration (keys, certificates, agencies,
    /// agreements, schemas) offline: exit 0 when the gateway would start (printing any
    /// warnings), 2 with every problem otherwise. Touches no database or broker.
    Check,
}

pub fn run(config_path: &Path, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check => check(config_path),
    }
}

fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let schemas = referral_gateway::intake::schema::SchemaRegistry::load(&config.schemas_dir)
        .with_context(|| format!("loading schemas from {}", config.schemas_dir.display()))?;
    referral_gateway::security::tls::server_config(&config.tls)
        .context("building the TLS configuration")?;
    GatewayKey::load(&config.audit.signing_key).context("audit.signing_key")?;
    let warnings = referral_gateway::startup::configuration_warnings(&config, &schemas);
    for warning in &warnings {
        println!("warning: {warning}");
    }
    println!(
        "{}: the configuration is valid ({} agencies, {} sharing agreements, profile {:?}; {} warning(s))",
        config_path.display(),
        config.registry.agencies().count(),
        config.sharing_agreements.len(),
        config.profile,
        warnings.len()
    );
    Ok(ExitCode::SUCCESS)
}
