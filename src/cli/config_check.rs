//! `config check`: every start-up check on the configuration, offline.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use referral_gateway::reload::FileSource;

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
    let checked = match referral_gateway::reload::load_and_check(&source) {
        Ok(checked) => checked,
        Err(problems) => {
            eprintln!("{}", describe_problems(config_path, &problems));
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

/// Every problem, one a line, as start-up and a refused reload list them.
pub fn describe_problems(config_path: &Path, problems: &[String]) -> String {
    format!(
        "error: config file {} has {} problem(s):\n  - {}",
        config_path.display(),
        problems.len(),
        problems.join("\n  - ")
    )
}
