//! `receipt verify`: check a signed receipt.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use referral_gateway::security::signing::{SignedReceipt, keys_from_jwks};

use super::{load_config, verification_keys};

#[derive(Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature. FILE holds the 202 response or its `signed_receipt`.
    Verify {
        file: PathBuf,
        /// Public keys as served at GET /v1/keys (default: the configured signing key's).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

pub fn run(config_path: &Path, command: ReceiptCommand) -> anyhow::Result<ExitCode> {
    let ReceiptCommand::Verify { file, keys } = command;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).context("the receipt file is not JSON")?;
    let signed = value.get("signed_receipt").cloned().unwrap_or(value);
    let signed: SignedReceipt = serde_json::from_value(signed)
        .context("no signed receipt (receipt, alg, key_id, signature) in the file")?;
    let keys = match keys {
        Some(path) => keys_from_jwks(&std::fs::read_to_string(&path)?)
            .map_err(|e| anyhow::anyhow!("--keys: {e}"))?,
        None => verification_keys(&load_config(config_path)?)?,
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
