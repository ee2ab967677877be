//! `serve`: run the gateway until SIGTERM or SIGINT.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use referral_gateway::startup::Application;

use super::load_config;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        app.run_until_signalled().await.context("server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
