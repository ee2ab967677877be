//! `outbox status`, `dlq list` and `dlq replay`: the delivery backlog and a receiving
//! agency's dead-lettered messages.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use referral_gateway::delivery::inspect as ops;
use referral_gateway::delivery::topology::Topology;
use referral_gateway::store::Store;

use super::load_config;

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Backlog size, age of the oldest row, and rows that keep failing.
    Status,
}

#[derive(Subcommand)]
pub enum DlqCommand {
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

pub fn run_outbox(config_path: &Path, command: OutboxCommand) -> anyhow::Result<ExitCode> {
    let OutboxCommand::Status = command;
    let config = load_config(config_path)?;
    let report = actix_web::rt::System::new().block_on(async move {
        let store = Store::connect(&config.database).await?;
        anyhow::Ok(ops::outbox_status(&store).await?)
    })?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

pub fn run_dlq(config_path: &Path, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
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
                let n = ops::dlq_replay(&url, &topology, &receivers, &agency, limit).await?;
                println!("replayed {n} message(s) to the {agency} queue");
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
