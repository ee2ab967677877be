//! `serve`: run the gateway until SIGTERM or SIGINT; SIGHUP reloads the configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use referral_gateway::clock::SystemClock;
use referral_gateway::reload::FileSource;
use referral_gateway::startup::Application;

use super::load_config;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let pid_file = config.server.pid_file.clone();
    let source = FileSource {
        path: config_path.to_owned(),
    };
    actix_web::rt::System::new().block_on(async move {
        // SIGHUP's default action ends the process: from here on it is caught (one that
        // arrives before the gateway is up is ignored; later ones reload).
        #[cfg(unix)]
        let _hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let app =
            Application::build_reloadable(config, Arc::new(SystemClock), Some(Box::new(source)))
                .await?;
        let _pid = match pid_file {
            Some(path) => Some(PidFile::write(path)?),
            None => None,
        };
        app.run_until_signalled().await.context("server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `[server] pid_file`: this process's id, written once every listener is bound (written
/// whole: to a temporary file, then renamed) and removed when the gateway stops.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> anyhow::Result<Self> {
        let temporary = path.with_extension("pid.tmp");
        std::fs::write(&temporary, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&temporary, &path))
            .with_context(|| format!("server.pid_file: cannot write {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
