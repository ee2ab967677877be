//! The documentation's commands run as written. Every ```sh block of README.md and
//! docs/*.md is run by bash, in order, against a real gateway started from the shipped
//! configuration, unless the line just before the block says why it cannot be:
//! `<!-- not run by the docs test: REASON -->`. So the docs cannot drift from the code.
//!
//! The blocks run in a scratch directory that holds the repository's `certs-example`,
//! `config`, `docs`, `examples` and `schemas` (links), so what a command writes stays
//! there. `referral-gateway` is the binary under test; `cargo run [--release] [-q] -- ARGS`
//! runs it with ARGS. The documented ports (8443 agency, 8444 staff, 9464 ops) are
//! replaced by the ports this run's gateway listens on, so the test runs beside others.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::cli::{self, free_port};
use crate::common::{Broker, ROOT, unique_namespace};

/// The marker that exempts the next block, followed by the reason.
const SKIP: &str = "<!-- not run by the docs test:";

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    text: String,
    skipped: Option<String>,
}

/// The shell blocks of one Markdown file, with the reason each skipped one gives.
fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path
        .strip_prefix(ROOT)
        .unwrap_or(path)
        .display()
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if fence == "```sh" || fence == "```bash" {
            let skipped = i
                .checked_sub(1)
                .map(|p| lines[p].trim())
                .and_then(|prev| prev.strip_prefix(SKIP))
                .map(|reason| reason.trim_end_matches("-->").trim().to_owned());
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim_start() != "```" {
                end += 1;
            }
            out.push(Block {
                file: name.clone(),
                line: start,
                text: lines[start..end].join("\n"),
                skipped,
            });
            i = end;
        }
        i += 1;
    }
    out
}

fn documents() -> Vec<PathBuf> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// bash functions that make the documented commands run the binary under test.
/// curl fails on an HTTP error status, so a documented request that is refused fails the test.
const PRELUDE: &str = r#"
curl() { command curl --fail-with-body --silent --show-error "$@"; }
cargo() {
  if [ "${1:-}" != run ]; then echo "docs test: 'cargo $*' is not run here" >&2; return 97; fi
  for a in "$@"; do
    if [ "$a" = --example ]; then echo "docs test: examples are not run here" >&2; return 97; fi
  done
  while [ $# -gt 0 ] && [ "$1" != -- ]; do shift; done
  [ $# -gt 0 ] && shift
  referral-gateway "$@"
}
"#;

#[tokio::test]
async fn every_documented_command_runs_as_written() {
    let scratch = tempfile::tempdir().unwrap();
    for dir in ["certs-example", "config", "docs", "examples", "schemas"] {
        std::os::unix::fs::symlink(Path::new(ROOT).join(dir), scratch.path().join(dir)).unwrap();
    }
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_referral-gateway"),
        bin.join("referral-gateway"),
    )
    .unwrap();
    std::fs::create_dir(scratch.path().join("data")).unwrap();
    let (agency, staff, ops) = (free_port(), free_port(), free_port());
    let namespace = unique_namespace();
    // Declared (and removed at the end, even on failure) under this run's namespace.
    let broker = Broker::new(&namespace).await;
    let env = [
        ("REFGW_LISTEN".to_owned(), format!("127.0.0.1:{agency}")),
        (
            "REFGW_STAFF_LISTEN".to_owned(),
            format!("127.0.0.1:{staff}"),
        ),
        ("REFGW_OPS_LISTEN".to_owned(), format!("127.0.0.1:{ops}")),
        (
            "REFGW_DATABASE_URL".to_owned(),
            format!("sqlite://{}/data/gateway.db", scratch.path().display()),
        ),
        (
            "REFGW_AMQP_URL".to_owned(),
            "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        ),
        ("REFGW_AMQP_NAMESPACE".to_owned(), namespace.clone()),
        ("REFGW_LOG".to_owned(), "warn".to_owned()),
    ];
    let mut serve = cli::gateway()
        .current_dir(scratch.path())
        .arg("serve")
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cli::wait_ready(ops).await;

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in documents() {
        for block in blocks(&file) {
            if let Some(reason) = &block.skipped {
                assert!(
                    reason.len() >= 10,
                    "{}:{}: a skipped block must say why",
                    block.file,
                    block.line
                );
                continue;
            }
            let script = format!(
                "set -euo pipefail\n{PRELUDE}\n{}",
                block
                    .text
                    .replace(":8443", &format!(":{agency}"))
                    .replace(":8444", &format!(":{staff}"))
                    .replace(":9464", &format!(":{ops}"))
            );
            let out = Command::new("bash")
                .arg("-c")
                .arg(&script)
                .current_dir(scratch.path())
                .envs(env.iter().cloned())
                .env("PATH", &path)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            ran += 1;
            if !out.status.success() {
                failures.push(format!(
                    "{}:{} exited {:?}\n{}\n--- stdout\n{}\n--- stderr\n{}",
                    block.file,
                    block.line,
                    out.status.code(),
                    block.text,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    broker.cleanup().await;
    println!("{ran} documented blocks ran");
    assert!(ran >= 6, "only {ran} blocks ran");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn skip_markers_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("x.md");
    std::fs::write(
        &doc,
        "text\n```sh\necho one\n```\n<!-- not run by the docs test: needs a real agency -->\n```sh\necho two\n```\n",
    )
    .unwrap();
    let found = blocks(&doc);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].text, "echo one");
    assert_eq!(found[0].skipped, None);
    assert_eq!(found[1].skipped.as_deref(), Some("needs a real agency"));
}
