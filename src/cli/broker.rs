//! `broker definitions`: the broker's topology, users and permissions as a RabbitMQ
//! definitions document (docs/consuming.md, "Broker users").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use referral_gateway::config::{Config, ProcessEnv};
use referral_gateway::delivery::definitions;
use referral_gateway::delivery::topology::Topology;

#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Write a definitions document (for `rabbitmqctl import_definitions`) with the
    /// topology, one user per agency, one for the escalation tooling and one for the
    /// gateway, and their permissions.
    Definitions {
        /// Directory of password files, one per user (`<agency-id>`, `referral-escalations`, `referral-gateway`);
        /// a missing one is generated (mode 0600). The document holds hashes only.
        #[arg(long)]
        passwords: PathBuf,
        /// Write the document here (mode 0600) instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The vhost (default: the one amqp.url names, `/` if none).
        #[arg(long)]
        vhost: Option<String>,
    },
}

pub fn run(config_path: &Path, command: BrokerCommand) -> anyhow::Result<ExitCode> {
    let BrokerCommand::Definitions {
        passwords,
        out,
        vhost,
    } = command;
    let config = Config::load_before_certificates(config_path, &ProcessEnv)?;
    let topology = Topology::new(&config.amqp.namespace, &config.registry);
    let vhost = vhost.unwrap_or_else(|| definitions::vhost_of(&config.amqp.url));
    let agencies: Vec<String> = config
        .registry
        .agencies()
        .map(|a| a.id.to_string())
        .collect();
    let mut users = Vec::new();
    for user in definitions::users(&topology, &agencies, &passwords) {
        let (password, made) = definitions::password(&user.password_file)?;
        eprintln!(
            "{:<40} {} ({}{})",
            user.name,
            user.role,
            user.password_file.display(),
            if made { ", new password" } else { "" }
        );
        users.push((user, password));
    }
    let document = definitions::document(&topology, &vhost, &users)?;
    let text = serde_json::to_string_pretty(&document)? + "\n";
    match out {
        None => print!("{text}"),
        Some(file) => {
            write_private(&file, &text).with_context(|| format!("writing {}", file.display()))?;
            eprintln!(
                "definitions for vhost '{vhost}' written to {}",
                file.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The document names users and their permissions: readable by its owner only.
fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(file, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
