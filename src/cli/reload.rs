//! `reload`: have the running gateway re-read its configuration, without a restart.
//!
//! The configuration is checked here first, with the checks the gateway makes (a
//! broken one is reported and nothing is signalled); then the gateway (its process id
//! from `--pid` or `[server] pid_file`) gets SIGHUP, and, when `[server] ops_listen` is
//! set, its `/metrics` are read until `refgw_config_reloads_total` shows the outcome.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use referral_gateway::reload::FileSource;

use super::config_check::load_and_check;

/// The most of `/metrics` read.
const MAX_METRICS: u64 = 4 * 1024 * 1024;

/// The exit status when the reload was applied but some changed settings wait for a
/// restart (0: applied whole; 1: refused, or no outcome seen; 2: the file does not check).
pub const RESTART_NEEDED: u8 = 3;

pub fn run(config_path: &Path, pid: Option<i32>, wait: Duration) -> anyhow::Result<ExitCode> {
    let source = FileSource {
        path: config_path.to_owned(),
    };
    let checked = match load_and_check(&source) {
        Ok(checked) => checked,
        Err(message) => {
            eprintln!("{message}");
            eprintln!("nothing was reloaded: the gateway keeps the configuration in force");
            return Ok(ExitCode::from(2));
        }
    };
    for warning in &checked.warnings {
        println!("warning: {warning}");
    }
    let server = &checked.config.server;
    let pid = match (pid, &server.pid_file) {
        (Some(pid), _) => pid,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "server.pid_file: cannot read {} (is the gateway running? A pid_file changed in the file takes effect at the next restart: until then give --pid)",
                    file.display()
                )
            })?;
            text.trim().parse().with_context(|| {
                format!("server.pid_file: {} holds no process id", file.display())
            })?
        }
        (None, None) => anyhow::bail!(
            "which gateway? give --pid, or set [server] pid_file in the configuration"
        ),
    };
    same_program(pid)?;
    let ops = server.ops_listen;
    let before = ops.map(reload_counts).transpose().with_context(|| {
        format!(
            "nothing was signalled: the gateway's ops listener did not answer at {} (is the gateway hung? If the file changes [server] ops_listen, the running gateway still listens on its old address until a restart: send SIGHUP yourself, `kill -HUP {pid}`, and read the outcome in its log)",
            ops.map(|a| a.to_string()).unwrap_or_default()
        )
    })?;
    signal_hangup(pid)?;
    let (Some(ops), Some(before)) = (ops, before.as_ref()) else {
        println!(
            "sent SIGHUP to process {pid}; the outcome is in its log (no [server] ops_listen to read it from)"
        );
        return Ok(ExitCode::SUCCESS);
    };
    let started = Instant::now();
    // From here on the gateway has been signalled: a failed read is retried until the
    // wait is over, and never reported as "nothing was signalled".
    let mut last_error = None;
    while started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(100));
        let now = match reload_counts(ops) {
            Ok(now) => now,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        if now.applied > before.applied {
            println!(
                "reloaded: configuration generation {} is in force (process {pid})",
                now.generation
            );
            if !now.restart_needed.is_empty() {
                eprintln!(
                    "not applied: these settings changed in the file but take effect only at the next restart, and the running values are kept: {}",
                    now.restart_needed.join("; ")
                );
                return Ok(ExitCode::from(RESTART_NEEDED));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if now.rejected > before.rejected {
            eprintln!(
                "the gateway (process {pid}) refused the configuration and keeps the one in force; its log lists every problem"
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    eprintln!(
        "sent SIGHUP to process {pid}, but no reload was counted within {} s; it may still be applied: see the gateway's log{}",
        wait.as_secs(),
        last_error
            .map(|e| format!(" (the last read of http://{ops}/metrics failed: {e:#})"))
            .unwrap_or_default()
    );
    Ok(ExitCode::FAILURE)
}

/// Refuses to signal a process that is not this program (Linux: by `/proc/PID/exe`): a
/// stale pid file, or one the service's own user rewrote, must not make `reload` (often
/// run as root) hang up some other process.
fn same_program(pid: i32) -> anyhow::Result<()> {
    // kill(2) reads 0 and negative ids as groups (-1: every process it may signal), and 1
    // is init: never the gateway.
    if pid <= 1 {
        anyhow::bail!(
            "process id {pid} cannot be the gateway's (it must be above 1); nothing was signalled"
        );
    }
    #[cfg(target_os = "linux")]
    {
        if let Err(e) = std::fs::read_link(format!("/proc/{pid}/exe"))
            && e.kind() == std::io::ErrorKind::NotFound
        {
            anyhow::bail!(
                "there is no process {pid} (is the gateway running? is the pid file stale?); nothing was signalled"
            );
        }
        let name = |path: &std::path::Path| {
            path.file_name().map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_owned()
            })
        };
        let ours = std::env::current_exe().ok().and_then(|p| name(&p));
        let theirs = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| name(&p));
        if let (Some(ours), Some(theirs)) = (&ours, &theirs)
            && ours != theirs
        {
            anyhow::bail!(
                "process {pid} runs {theirs}, not {ours}: the pid file is stale or not the gateway's; nothing was signalled"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pid;
    Ok(())
}

#[cfg(unix)]
fn signal_hangup(pid: i32) -> anyhow::Result<()> {
    use rustix::process::{Pid, Signal, kill_process};
    let target = Pid::from_raw(pid).context("the process id must be a positive number")?;
    kill_process(target, Signal::HUP)
        .with_context(|| format!("cannot signal process {pid} (is the gateway running?)"))
}

#[cfg(not(unix))]
fn signal_hangup(_: i32) -> anyhow::Result<()> {
    anyhow::bail!("reload needs SIGHUP, which only Unix has")
}

#[derive(Debug, Default, Clone)]
struct ReloadCounts {
    applied: u64,
    rejected: u64,
    generation: u64,
    /// The settings the last applied reload left for a restart.
    restart_needed: Vec<String>,
}

/// The reload counters and generation from the ops listener's `/metrics`.
fn reload_counts(ops: SocketAddr) -> anyhow::Result<ReloadCounts> {
    let text = get_metrics(ops).with_context(|| format!("reading http://{ops}/metrics"))?;
    let mut counts = ReloadCounts::default();
    for line in text.lines() {
        let value = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v as u64)
        };
        if let Some(v) = value("refgw_config_reloads_total{outcome=\"applied\"} ") {
            counts.applied = v;
        } else if let Some(v) = value("refgw_config_reloads_total{outcome=\"rejected\"} ") {
            counts.rejected = v;
        } else if let Some(v) = value("refgw_config_generation ") {
            counts.generation = v;
        } else if let Some(rest) = line.strip_prefix("refgw_config_restart_needed{setting=\"")
            && let Some((setting, value)) = rest.split_once("\"} ")
            && value.trim() == "1"
        {
            counts.restart_needed.push(setting.to_owned());
        }
    }
    Ok(counts)
}

fn get_metrics(ops: SocketAddr) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&ops, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {ops}\r\nUser-Agent: referral-gateway-reload\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(MAX_METRICS).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("the answer is not HTTP")?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}
