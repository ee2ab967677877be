//! `[server]`: the agency and ops listeners, body limits and timeouts.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{DEFAULT_LISTEN, Env, Problems, setting, socket_addr};

/// Upper bound for `server.max_body_bytes`: referrals are small documents.
const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The most workers actix-server allows per listener (it panics beyond).
const MAX_WORKERS: usize = 512;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<String>,
    ops_listen: Option<String>,
    max_body_bytes: Option<usize>,
    shutdown_timeout_secs: Option<u64>,
    workers: Option<usize>,
    body_timeout_secs: Option<u64>,
    body_idle_timeout_secs: Option<u64>,
    pid_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Plain-HTTP listener for `/healthz`, `/readyz` (and later `/metrics`), for probes
    /// that hold no client certificate. Bind it to loopback or a private network only.
    pub ops_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub shutdown_timeout_secs: u64,
    pub workers: Option<usize>,
    /// How long a request body may take: in all, and between two chunks.
    pub body_timeouts: crate::config::BodyTimeouts,
    /// Where `serve` writes its process id (removed when it stops), for
    /// `referral-gateway reload` to signal it.
    pub pid_file: Option<std::path::PathBuf>,
}

/// The listeners and the body size limit; checked before the other sections, the body
/// timeouts after them (the order problems have always been listed in).
pub(super) struct Listeners {
    listen: Option<SocketAddr>,
    ops_listen: Option<SocketAddr>,
    max_body_bytes: usize,
}

pub(super) fn build_listeners(
    raw: &RawServer,
    env: &dyn Env,
    problems: &mut Problems,
) -> Listeners {
    let (listen, listen_key) = setting(
        env,
        "REFGW_LISTEN",
        "server.listen",
        raw.listen.clone(),
        DEFAULT_LISTEN,
    );
    let listen = socket_addr(&listen, &listen_key, problems);
    let ops_listen = match env.var("REFGW_OPS_LISTEN").or(raw.ops_listen.clone()) {
        Some(v) if v == "off" => None,
        Some(v) => socket_addr(&v, "server.ops_listen", problems),
        None => None,
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(256 * 1024);
    if max_body_bytes == 0 || max_body_bytes > MAX_BODY_LIMIT {
        problems.push(
            "server.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_LIMIT} (got {max_body_bytes})"),
        );
    }
    if let Some(workers) = raw.workers
        && !(1..=MAX_WORKERS).contains(&workers)
    {
        problems.push(
            "server.workers",
            format!(
                "must be between 1 and {MAX_WORKERS} (leave it out to use one per CPU; got {workers})"
            ),
        );
    }
    Listeners {
        listen,
        ops_listen,
        max_body_bytes,
    }
}

pub(super) fn build_server(
    raw: RawServer,
    listeners: Listeners,
    problems: &mut Problems,
) -> Option<ServerConfig> {
    let body_timeouts = crate::config::BodyTimeouts {
        total: std::time::Duration::from_secs(raw.body_timeout_secs.unwrap_or(30)),
        idle: std::time::Duration::from_secs(raw.body_idle_timeout_secs.unwrap_or(5)),
    };
    if !(1..=600).contains(&body_timeouts.total.as_secs()) {
        problems.push("server.body_timeout_secs", "must be between 1 and 600");
    }
    if body_timeouts.idle.is_zero() || body_timeouts.idle > body_timeouts.total {
        problems.push(
            "server.body_idle_timeout_secs",
            "must be at least 1 and at most server.body_timeout_secs",
        );
    }
    Some(ServerConfig {
        listen: listeners.listen?,
        ops_listen: listeners.ops_listen,
        max_body_bytes: listeners.max_body_bytes,
        shutdown_timeout_secs: raw.shutdown_timeout_secs.unwrap_or(30),
        workers: raw.workers,
        body_timeouts,
        pid_file: raw.pid_file,
    })
}

/// How long a request body may take: `total` from the end of the headers, and `idle`
/// between two chunks (`[server] body_timeout_secs`, `body_idle_timeout_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeouts {
    pub total: std::time::Duration,
    pub idle: std::time::Duration,
}

impl Default for BodyTimeouts {
    fn default() -> Self {
        Self {
            total: std::time::Duration::from_secs(30),
            idle: std::time::Duration::from_secs(5),
        }
    }
}
