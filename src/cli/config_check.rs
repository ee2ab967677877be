//! `config check`: every start-up check on the configuration, offline.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use referral_gateway::reload::{Checked, FileSource};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Run every start-up check on the configuration (keys, certificates, CRLs,
    /// agencies, agreements, schemas) offline: the checks `serve` and every reload make.
    /// Exit 0 when the gateway would start (printing any warnings), 2 with every problem
    /// otherwise. Touches no database or broker.
    Check,
}

pub fn run(config_path: &Path, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check => check(config_path),
    }
}

fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let source = FileSource {
        path: config_path.to_owned(),
    };
    let checked = match load_and_check(&source) {
        Ok(checked) => checked,
        Err(message) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };
    for warning in &checked.warnings {
        println!("warning: {warning}");
    }
    let config = &checked.config;
    println!(
        "{}: the configuration is valid ({} agencies, {} sharing agreements, profile {:?}; {} warning(s))",
        config_path.display(),
        config.registry.agencies().count(),
        config.sharing_agreements.len(),
        config.profile,
        checked.warnings.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The configuration from `source`, checked as start-up and a reload check it; or the
/// message listing every problem (as `serve` prints it when it cannot start).
pub fn load_and_check(source: &FileSource) -> Result<Checked, String> {
    use referral_gateway::reload::ConfigSource;
    let config = source.load().map_err(|e| format!("error: {e}"))?;
    referral_gateway::reload::check(config).map_err(|problems| {
        format!(
            "error: config file {} has {} problem(s):\n  - {}",
            source.path.display(),
            problems.len(),
            problems.join("\n  - ")
        )
    })
}
