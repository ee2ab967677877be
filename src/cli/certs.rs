//! `certs init` and `certs fingerprint`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use referral_gateway::config::{Config, ProcessEnv};
use referral_gateway::security::{certs, digest, tls};

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Make a fresh CA, a server certificate and a client certificate per configured agency.
    Init {
        /// Directory to write the set to.
        #[arg(long)]
        out: PathBuf,
        /// Names for the server certificate (DNS names or IP addresses).
        #[arg(long = "server-name", default_values = ["localhost", "127.0.0.1", "::1"])]
        server_names: Vec<String>,
        /// Validity of every certificate, in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Overwrite an existing set in --out.
        #[arg(long)]
        force: bool,
    },
    /// Print the SHA-256 fingerprint of a certificate, for `certificate.sha256` in the config.
    Fingerprint { file: PathBuf },
}

pub fn run(config_path: &Path, command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Init {
            out,
            server_names,
            days,
            force,
        } => {
            if !(1..=3650).contains(&days) {
                anyhow::bail!("--days must be between 1 and 3650");
            }
            let config = Config::load_before_certificates(config_path, &ProcessEnv)?;
            let written = certs::init(&out, &config.registry, &server_names, days, force)?;
            for w in written {
                println!("{:<60} {}", w.what, w.path.display());
                if let Some(note) = w.note {
                    println!("    note: {note}");
                }
            }
            println!("\nDevelopment use only: keep ca.key offline in any real scheme.");
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Fingerprint { file } => {
            for cert in tls::load_certs("file", &file)? {
                println!(
                    "{}",
                    digest::fingerprint_hex(&digest::sha256(cert.as_ref()))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
