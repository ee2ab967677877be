//! The real binary, run as an operator would: one way to build its command line, with the
//! environment cleaned of anything the test runner's shell may have set.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ROOT, staff_client};

/// `referral-gateway` in the repository root, with no listener, database, broker or
/// config override from the environment (and no staff listener unless a test asks).
pub fn gateway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_referral-gateway"));
    cmd.current_dir(ROOT)
        .env_remove("REFGW_LISTEN")
        .env_remove("REFGW_OPS_LISTEN")
        .env("REFGW_STAFF_LISTEN", "off")
        .env_remove("REFGW_DATABASE_URL")
        .env_remove("REFGW_AMQP_URL")
        .env_remove("REFGW_CONFIG");
    cmd
}

/// Runs `command`: its exit code, and its standard output followed by its standard error.
pub fn output(command: &mut Command) -> (Option<i32>, String) {
    let out = command.output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `referral-gateway ARGS` against `database_url`, logging warnings only.
pub fn run(database_url: &str, args: &[&str]) -> (Option<i32>, String) {
    output(
        gateway()
            .env("REFGW_DATABASE_URL", database_url)
            .env("REFGW_LOG", "warn")
            .args(args),
    )
}

/// A port free a moment ago, for a child `serve` to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve` on `port` (agency) and `ops`, against `db_url`, delivering to `amqp_url` under
/// `namespace`; output discarded.
pub fn spawn_serve(
    port: u16,
    ops: u16,
    db_url: &str,
    amqp_url: &str,
    namespace: &str,
) -> std::process::Child {
    gateway()
        .arg("serve")
        .env("REFGW_LISTEN", format!("127.0.0.1:{port}"))
        .env("REFGW_OPS_LISTEN", format!("127.0.0.1:{ops}"))
        .env("REFGW_DATABASE_URL", db_url)
        .env("REFGW_AMQP_URL", amqp_url)
        .env("REFGW_AMQP_NAMESPACE", namespace)
        .env("REFGW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The ops listener's `/readyz` document on `ops`, once it answers with one.
pub async fn readyz(ops: u16) -> Option<Value> {
    let r = staff_client()
        .get(format!("http://127.0.0.1:{ops}/readyz"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Waits (up to 30 s) until the ops listener on `ops` answers `/readyz`.
pub async fn wait_ready(ops: u16) {
    let started = Instant::now();
    while readyz(ops).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
