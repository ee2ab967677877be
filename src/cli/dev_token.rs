//! `dev-token`: a development staff bearer token.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use referral_gateway::staff_auth::tokens::{DevTokenRequest, Role, mint_dev_token};

use super::load_config;

#[derive(clap::Args)]
pub struct DevTokenArgs {
    /// Role(s) in the token; repeat for both.
    #[arg(long = "role", value_enum, required = true)]
    pub roles: Vec<StaffRole>,
    /// The agency a service manager manages (an agency id from the config).
    #[arg(long)]
    pub agency: Option<String>,
    /// The token's subject (`sub`), as the audit log will name the caller (default:
    /// dev-auditor@example.org or dev-service-manager@example.org).
    #[arg(long)]
    pub subject: Option<String>,
    /// Lifetime in minutes.
    #[arg(long, default_value_t = 60)]
    pub minutes: i64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StaffRole {
    Auditor,
    #[value(alias = "service_manager")]
    ServiceManager,
}

pub fn run(config_path: &Path, args: DevTokenArgs) -> anyhow::Result<ExitCode> {
    let DevTokenArgs {
        roles,
        agency,
        subject,
        minutes,
    } = args;
    let config = load_config(config_path)?;
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
