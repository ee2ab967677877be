//! The command groups of `referral-gateway`, one module each; `main.rs` parses the
//! command line and dispatches here.

pub mod audit;
pub mod backup;
pub mod broker;
pub mod certs;
pub mod config_check;
pub mod dev_token;
pub mod healthcheck;
pub mod migrate;
pub mod migrate_data;
pub mod outbox;
pub mod purge;
pub mod receipt;
pub mod reload;
pub mod serve;
pub mod sla;
pub mod validate;

use std::path::Path;

use anyhow::Context;
use referral_gateway::config::{Config, ProcessEnv};
use referral_gateway::security::signing::GatewayKey;

pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path, &ProcessEnv)?)
}

/// The public keys receipts and checkpoints are checked against: the current signing
/// key's and those of earlier keys (`audit.previous_public_keys`).
pub fn verification_keys(
    config: &Config,
) -> anyhow::Result<Vec<referral_gateway::security::signing::PublicKey>> {
    let key = GatewayKey::load(&config.audit.signing_key).context("audit.signing_key")?;
    let mut keys = vec![key.public().clone()];
    keys.extend(config.audit.previous_public_keys.iter().cloned());
    Ok(keys)
}
