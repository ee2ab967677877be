//! `healthcheck`: one plain HTTP GET on the ops listener, for a container's
//! `HEALTHCHECK` (the runtime image has no curl or shell). Exit 0 on `200`, 1 otherwise.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// The most of the answer read: the status line is all that is needed.
const MAX_ANSWER: u64 = 4096;

pub fn run(url: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let (host, path) = split_url(url)?;
    match status_of(host, path, timeout) {
        Ok(200) => {
            println!("healthy: {url} answered 200");
            Ok(ExitCode::SUCCESS)
        }
        Ok(status) => {
            println!("unhealthy: {url} answered {status}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("unhealthy: {url}: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `http://HOST:PORT/PATH` as `("HOST:PORT", "/PATH")`; anything else is refused.
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must be a plain http:// URL (the ops listener)")?;
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if host.is_empty() || !host.contains(':') {
        anyhow::bail!("--url must name a host and port, such as http://127.0.0.1:9464/readyz");
    }
    if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        anyhow::bail!("--url has a path that cannot be sent");
    }
    Ok((host, path))
}

fn status_of(host: &str, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).context("connecting")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: referral-gateway-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .context("sending the request")?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .context("reading the answer")?;
    parse_status(&answer).context("the answer is not HTTP")
}

/// The status code of an HTTP/1.x status line.
fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_status_lines() {
        assert_eq!(
            split_url("http://127.0.0.1:9464/readyz").unwrap(),
            ("127.0.0.1:9464", "/readyz")
        );
        assert_eq!(
            split_url("http://localhost:9464").unwrap(),
            ("localhost:9464", "/")
        );
        assert!(split_url("https://127.0.0.1:9464/readyz").is_err());
        assert!(split_url("http://127.0.0.1/readyz").is_err());
        assert!(split_url("http://127.0.0.1:1/a b").is_err());
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\nx: y\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
