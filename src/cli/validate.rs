//! `validate`: check a referral file against the schemas, offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use referral_gateway::domain::{Destination, ServiceType};
use referral_gateway::intake::schema::SchemaRegistry;

use super::load_config;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The referral (JSON) to check.
    pub file: PathBuf,
    /// Check against this service type's overlay instead of the one its destination implies.
    #[arg(long)]
    pub service_type: Option<String>,
    /// Schema directory (default: the config's schemas.dir, else ./schemas).
    #[arg(long)]
    pub schemas: Option<PathBuf>,
}

pub fn run(config_path: &Path, args: ValidateArgs) -> anyhow::Result<ExitCode> {
    validate(config_path, &args.file, args.service_type, args.schemas)
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
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // The gateway's own reader: a duplicate member name or a NUL is refused here as the
    // gateway refuses it (`400 malformed-json`).
    let document = match referral_gateway::intake::json::parse(&bytes) {
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
