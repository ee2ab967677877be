//! `certs init`, `certs fingerprint`, and the agency certificate lifecycle: `certs
//! issue`, `certs revoke` and `certs expiring` (docs/onboarding.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use referral_gateway::config::Config;
use referral_gateway::domain::CertificateIdentity;
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
        /// The scheme CA's name (its subject's CN), e.g. "Warwickshire liaison and
        /// diversion referral scheme CA". Without it the CA is the development CA.
        #[arg(long)]
        ca_name: Option<String>,
        /// Overwrite an existing set in --out.
        #[arg(long)]
        force: bool,
    },
    /// Print the SHA-256 fingerprint of a certificate, for `certificate.sha256` in the config.
    Fingerprint { file: PathBuf },
    /// Issue a client certificate to a registered agency, from its certificate signing
    /// request (--csr; the certificate goes to standard output) or with a new key pair
    /// (--out DIR: DIR/<agency-id>.crt and .key).
    Issue {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        /// The agency's id in the registry.
        #[arg(long)]
        agency: String,
        #[arg(long, conflicts_with = "out", required_unless_present = "out")]
        csr: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Add a certificate's serial number to a CRL (made if missing, earlier entries kept,
    /// CRL number bumped); list the CRL in tls.crls for the gateway to refuse it.
    Revoke {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        #[arg(long)]
        crl: PathBuf,
        /// Days until the CRL's nextUpdate (issue a new one before then).
        #[arg(long, default_value_t = 30)]
        next_update_days: i64,
        /// The certificate to revoke (PEM).
        cert: PathBuf,
    },
    /// List registered agencies' certificates in --dir that expire within --days; exits
    /// 1 when there is any.
    Expiring {
        /// Directory of issued certificates (*.crt, PEM), matched to agencies by SAN or
        /// fingerprint.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// A CRL file (PEM; repeat for several): certificates it revokes are not listed.
        /// Default: the configuration's `tls.crls`.
        #[arg(long = "crl")]
        crls: Vec<PathBuf>,
    },
}

pub fn run(config_path: &Path, command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Init {
            out,
            server_names,
            days,
            ca_name,
            force,
        } => {
            if !(1..=3650).contains(&days) {
                anyhow::bail!("--days must be between 1 and 3650");
            }
            if let Some(name) = &ca_name
                && (name.trim().is_empty()
                    || name.chars().count() > 64
                    || name.chars().any(char::is_control))
            {
                anyhow::bail!("--ca-name must be 1 to 64 characters, without control characters");
            }
            // Only the registry is read (a client certificate per registered agency): a
            // scheme's keys are made before its secrets and database exist. Without a
            // configuration file there are no agencies, and no client certificates.
            let registry = match Config::load_registry(config_path) {
                Ok(registry) => registry,
                Err(referral_gateway::config::ConfigError::Read { error, .. })
                    if error.kind() == std::io::ErrorKind::NotFound =>
                {
                    println!(
                        "no configuration at {}: no agency certificates made (issue them with `certs issue` once agencies are registered)\n",
                        config_path.display()
                    );
                    referral_gateway::domain::AgencyRegistry::default()
                }
                Err(e) => return Err(e.into()),
            };
            let written = certs::init(
                &out,
                &registry,
                &server_names,
                ca_name.as_deref(),
                days,
                force,
            )?;
            for w in written {
                println!("{:<60} {}", w.what, w.path.display());
                if let Some(note) = w.note {
                    println!("    note: {note}");
                }
            }
            if ca_name.is_some() {
                println!(
                    "\nMove ca.key off this host now (it signs agency certificates: run `certs issue` where it is kept), and delete the test material (agencies/, rogue/, unregistered/, staff-dev.key, staff-jwks.json)."
                );
            } else {
                println!(
                    "\nDevelopment CA: for a real scheme give --ca-name, and keep ca.key offline."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Issue {
            ca_cert,
            ca_key,
            agency,
            csr,
            out,
            days,
        } => issue(config_path, &ca_cert, &ca_key, &agency, csr, out, days),
        CertsCommand::Revoke {
            ca_cert,
            ca_key,
            crl,
            next_update_days,
            cert,
        } => revoke(&ca_cert, &ca_key, &crl, next_update_days, &cert),
        CertsCommand::Expiring { dir, days, crls } => expiring(config_path, &dir, days, &crls),
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

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn issue(
    config_path: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    agency_id: &str,
    csr: Option<PathBuf>,
    out: Option<PathBuf>,
    days: i64,
) -> anyhow::Result<ExitCode> {
    if !(1..=825).contains(&days) {
        anyhow::bail!("--days must be between 1 and 825");
    }
    // The registry alone: this runs where the CA's key is, without the gateway's secrets.
    let registry = Config::load_registry(config_path)?;
    let Some(agency) = registry.agencies().find(|a| a.id.as_str() == agency_id) else {
        anyhow::bail!("no agency '{agency_id}' is registered in the config: register it first");
    };
    let ca = certs::Authority::load(&read(ca_cert)?, &read(ca_key)?, days)?;
    let name = certs::client_name_for(agency.id.as_str(), &agency.certificate);
    let (serial, sha256, not_after) = match (csr, out) {
        (Some(csr), _) => {
            let issued = ca.issue_client_for_csr(&agency.name, &name, &read(&csr)?)?;
            print!("{}", issued.cert_pem);
            (issued.serial, issued.sha256, issued.not_after)
        }
        (None, Some(dir)) => {
            let issued = ca.issue_client(&agency.name, &name)?;
            let cert = dir.join(format!("{agency_id}.crt"));
            let key = dir.join(format!("{agency_id}.key"));
            // A certificate and key in use are never replaced by a second run.
            for existing in [&cert, &key] {
                if existing.exists() {
                    anyhow::bail!(
                        "{} already exists: move it away first (nothing was written)",
                        existing.display()
                    );
                }
            }
            certs::write_file(&cert, &issued.cert_pem, false)?;
            certs::write_file(&key, &issued.key_pem, true)?;
            eprintln!("wrote {} and {} (mode 0600)", cert.display(), key.display());
            let facts =
                certs::certificate_facts(tls::load_certs("certificate", &cert)?[0].as_ref(), None)?;
            (issued.serial, issued.sha256, facts.not_after)
        }
        (None, None) => anyhow::bail!("give --csr FILE or --out DIR"),
    };
    let subject = match &name {
        certs::ClientName::Uri(u) => format!("SAN URI {u}"),
        certs::ClientName::Dns(d) => format!("SAN DNS {d}"),
    };
    eprintln!(
        "issued to {agency_id}: {subject}, EKU clientAuth, serial {}, expires {}",
        hex::encode(&serial),
        not_after.date()
    );
    let fingerprint = digest::fingerprint_hex(&sha256);
    match agency.certificate {
        CertificateIdentity::Sha256(_) => eprintln!(
            "agency {agency_id} is registered by fingerprint: set its certificate = {{ sha256 = \"{fingerprint}\" }} and reload the gateway (referral-gateway reload)"
        ),
        _ => eprintln!("SHA-256 fingerprint {fingerprint}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(
    ca_cert: &Path,
    ca_key: &Path,
    crl: &Path,
    next_update_days: i64,
    cert: &Path,
) -> anyhow::Result<ExitCode> {
    if !(1..=366).contains(&next_update_days) {
        anyhow::bail!("--next-update-days must be between 1 and 366");
    }
    let ca_pem = read(ca_cert)?;
    let ca = certs::Authority::load(&ca_pem, &read(ca_key)?, 1)?;
    let der = tls::load_certs("certificate", cert)?;
    let facts = certs::certificate_facts(der[0].as_ref(), Some(&ca_pem))?;
    if !facts.issuer_matches {
        anyhow::bail!("{} was not issued by --ca-cert", cert.display());
    }
    let previous = match std::fs::read_to_string(crl) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", crl.display())),
    };
    // One CA's CRL a file: the others in a shared file would be dropped by the rewrite
    // (and the gateway, failing closed, would then refuse their CAs' clients).
    if previous
        .as_deref()
        .is_some_and(|text| text.matches("-----BEGIN X509 CRL-----").count() > 1)
    {
        anyhow::bail!(
            "{} holds more than one CRL: keep each CA's CRL in a file of its own (list them all in tls.crls); nothing was written",
            crl.display()
        );
    }
    let (pem, count) = ca.crl_adding(
        previous.as_deref(),
        &facts.serial,
        None,
        time::Duration::days(next_update_days),
    )?;
    // Written next to the old one (mode 0644: the gateway's user reads it, whatever the
    // umask) and renamed over it: a reader never sees half a CRL.
    certs::write_file(crl, &pem, false)?;
    eprintln!(
        "revoked serial {} ({}); {} now lists {count} certificate(s). Restart the gateway (or reload it) to apply.",
        hex::encode(&facts.serial),
        digest::fingerprint_hex(&facts.presented.sha256),
        crl.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn expiring(
    config_path: &Path,
    dir: &Path,
    days: i64,
    crls: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let registry = Config::load_registry(config_path)?;
    let now = time::OffsetDateTime::now_utc();
    // The gateway's own CRLs unless others are given.
    let configured;
    let crls = if crls.is_empty() {
        configured = Config::load_crl_paths(config_path)?;
        &configured
    } else {
        crls
    };
    let revoked = certs::revoked_serials(crls)?;
    let found = certs::issued_certificates(dir, &registry, &revoked)?;
    let mut any = false;
    for (agency, cert) in &found {
        let left = (cert.not_after - now).whole_days();
        if left <= days {
            any = true;
            println!(
                "{agency}  expires {}  ({left} days)  serial {}  {}",
                cert.not_after.date(),
                hex::encode(&cert.serial),
                cert.path.display()
            );
        }
    }
    if !any {
        println!(
            "no registered agency's certificate in {} expires within {days} days ({} checked)",
            dir.display(),
            found.len()
        );
    }
    Ok(if any {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
