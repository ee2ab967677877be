//! `broker definitions`: a RabbitMQ definitions document (for `rabbitmqctl
//! import_definitions` or the management API) holding the topology exactly as
//! [`Topology::plan`] declares it, one broker user per agency and one for the gateway,
//! and permissions that let each user touch only what is its own.
//!
//! - A receiving agency reads `referrals.<id>` and `referrals.<id>.dead`; a sending agency
//!   reads `status.<id>` (an agency with role `both` both). Agencies configure and write
//!   nothing (`^$`): they consume, they never declare or publish.
//! - The escalations user (`referral-escalations`) reads the `escalations` queue, for
//!   service managers' or the scheme's monitoring tooling; it too configures and writes
//!   nothing.
//! - The gateway's user configures (declares) its exchanges and queues at start-up, as
//!   `Topology::declare` does; writes to its exchanges (publishing) and to its queues
//!   (`queue.bind` needs write on the queue); reads its exchanges (`queue.bind` needs read
//!   on the exchange) and the dead-letter queues (`dlq list` and `dlq replay`).
//!
//! The document holds password hashes only (`rabbit_password_hashing_sha256`); the
//! passwords are in files of their own, one per user.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::delivery::topology::{ArgValue, Topology};

/// The gateway's own user, before the namespace prefix.
pub const GATEWAY_USER: &str = "referral-gateway";

/// The user that reads the `escalations` queue (service managers' or the scheme's
/// monitoring tooling), before the namespace prefix.
pub const ESCALATIONS_USER: &str = "referral-escalations";

/// Broker user names that are not agencies: no agency may take one as its id.
pub const RESERVED_USERS: [&str; 2] = [GATEWAY_USER, ESCALATIONS_USER];

#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the password file is empty")]
    EmptyPassword(PathBuf),
    #[error("{0}: the password file is longer than 1024 bytes")]
    LongPassword(PathBuf),
    #[error("no system randomness for a salt or password")]
    Random,
}

/// A broker user: its name, the file its password is in, and what it may touch.
#[derive(Debug, Clone)]
pub struct BrokerUser {
    pub name: String,
    pub password_file: PathBuf,
    /// Regular expressions over resource names (queues and exchanges), RabbitMQ's
    /// configure/write/read permissions in the vhost.
    pub configure: String,
    pub write: String,
    pub read: String,
    /// What the user is, for the report (`agency coventry-cmht: reads ...`).
    pub role: String,
}

impl BrokerUser {
    /// A user that reads `queues` and configures and writes nothing: an agency, or the
    /// escalation tooling. Named `<namespace>.<id>`, its password in `passwords/<id>`.
    fn reader(
        topology: &Topology,
        id: &str,
        passwords: &Path,
        what: &str,
        queues: &[String],
    ) -> Self {
        Self {
            name: topology.prefixed(id),
            password_file: passwords.join(id),
            configure: "^$".to_owned(),
            write: "^$".to_owned(),
            role: format!("{what}: reads {}", queues.join(", ")),
            read: exactly(queues),
        }
    }
}

/// `^(a|b|c)$` over the exact names (regex-escaped); `^$` (nothing) for none.
pub fn exactly(names: &[String]) -> String {
    if names.is_empty() {
        return "^$".to_owned();
    }
    let alternatives: Vec<String> = names.iter().map(|n| regex_escape(n)).collect();
    format!("^({})$", alternatives.join("|"))
}

fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The users for `topology`: one per agency (named `<namespace>.<agency-id>`, or the
/// agency id without a namespace), then the escalations reader's and the gateway's. Each
/// password is in `passwords/<agency-id>` (`passwords/referral-escalations`,
/// `passwords/referral-gateway`).
pub fn users(topology: &Topology, agencies: &[String], passwords: &Path) -> Vec<BrokerUser> {
    let mut users = Vec::new();
    let receivers: Vec<&str> = topology.receivers().collect();
    let senders: Vec<&str> = topology.senders().collect();
    for agency in agencies {
        let mut reads = Vec::new();
        if receivers.contains(&agency.as_str()) {
            reads.push(topology.referral_queue(agency));
            reads.push(topology.dead_letter_queue(agency));
        }
        if senders.contains(&agency.as_str()) {
            reads.push(topology.status_queue(agency));
        }
        users.push(BrokerUser::reader(
            topology,
            agency,
            passwords,
            &format!("agency {agency}"),
            &reads,
        ));
    }
    let plan = topology.plan();
    let queues: Vec<String> = plan.queues.iter().map(|q| q.name.clone()).collect();
    let all: Vec<String> = plan.exchanges.iter().cloned().chain(queues).collect();
    let dead: Vec<String> = receivers
        .iter()
        .map(|a| topology.dead_letter_queue(a))
        .collect();
    let reads: Vec<String> = plan.exchanges.iter().cloned().chain(dead).collect();
    users.push(BrokerUser::reader(
        topology,
        ESCALATIONS_USER,
        passwords,
        "escalation tooling",
        &[topology.escalations_queue()],
    ));
    users.push(BrokerUser {
        name: topology.prefixed(GATEWAY_USER),
        password_file: passwords.join(GATEWAY_USER),
        configure: exactly(&all),
        write: exactly(&all),
        read: exactly(&reads),
        role: "the gateway: declares its topology, publishes to its exchanges, reads dead letters"
            .to_owned(),
    });
    users
}

/// The user's password from its file, or a new random one written there (mode 0600)
/// when the file does not exist. Returns the password and whether it was made now.
pub fn password(file: &Path) -> Result<(String, bool), DefinitionsError> {
    let io = |source| DefinitionsError::Io {
        path: file.to_owned(),
        source,
    };
    match std::fs::read(file) {
        Ok(bytes) => {
            if bytes.len() > 1024 {
                return Err(DefinitionsError::LongPassword(file.to_owned()));
            }
            let text = String::from_utf8_lossy(&bytes);
            let password = text.trim_end_matches(['\n', '\r']).to_owned();
            if password.is_empty() {
                return Err(DefinitionsError::EmptyPassword(file.to_owned()));
            }
            Ok((password, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use base64::Engine;
            let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<24>()?);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            write_private(file, &format!("{password}\n")).map_err(io)?;
            Ok((password, true))
        }
        Err(e) => Err(io(e)),
    }
}

fn write_private(file: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(file)?.write_all(contents.as_bytes())
}

fn random<const N: usize>() -> Result<[u8; N], DefinitionsError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| DefinitionsError::Random)?;
    Ok(bytes)
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ++ SHA-256(salt ++ password)),
/// with a 4-byte salt.
pub fn password_hash(salt: [u8; 4], password: &str) -> String {
    use base64::Engine;
    let mut salted = salt.to_vec();
    salted.extend_from_slice(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&crate::security::digest::sha256(&salted));
    base64::engine::general_purpose::STANDARD.encode(out)
}

fn argument_json(value: &ArgValue) -> Value {
    match value {
        ArgValue::Str(s) => Value::String(s.clone()),
        ArgValue::Int(i) => json!(i),
    }
}

/// The definitions document for `vhost`: the vhost, the users (with their passwords'
/// hashes), their permissions, and the topology.
pub fn document(
    topology: &Topology,
    vhost: &str,
    users: &[(BrokerUser, String)],
) -> Result<Value, DefinitionsError> {
    let plan = topology.plan();
    let mut user_docs = Vec::new();
    let mut permissions = Vec::new();
    for (user, password) in users {
        user_docs.push(json!({
            "name": user.name,
            "password_hash": password_hash(random::<4>()?, password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [],
            "limits": {},
        }));
        permissions.push(json!({
            "user": user.name,
            "vhost": vhost,
            "configure": user.configure,
            "write": user.write,
            "read": user.read,
        }));
    }
    let exchanges: Vec<Value> = plan
        .exchanges
        .iter()
        .map(|name| {
            json!({
                "name": name, "vhost": vhost, "type": "topic", "durable": true,
                "auto_delete": false, "internal": false, "arguments": {},
            })
        })
        .collect();
    let queues: Vec<Value> = plan
        .queues
        .iter()
        .map(|q| {
            let arguments: serde_json::Map<String, Value> = q
                .arguments
                .iter()
                .map(|(k, v)| ((*k).to_owned(), argument_json(v)))
                .collect();
            json!({
                "name": q.name, "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": arguments,
            })
        })
        .collect();
    let bindings: Vec<Value> = plan
        .bindings
        .iter()
        .map(|b| {
            json!({
                "source": b.exchange, "vhost": vhost, "destination": b.queue,
                "destination_type": "queue", "routing_key": b.key, "arguments": {},
            })
        })
        .collect();
    Ok(json!({
        "vhosts": [{"name": vhost}],
        "users": user_docs,
        "permissions": permissions,
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
    }))
}

/// The vhost an `amqp://` or `amqps://` URL names: its path, percent-decoded; `/` when
/// it has none.
pub fn vhost_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    match rest.split_once('/') {
        Some((_, path)) if !path.is_empty() => percent_decode(path),
        _ => "/".to_owned(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme's definition, checked against a hash RabbitMQ itself produced
    /// (`rabbitmqctl hash_password` is salted; this recomputes one with a known salt).
    #[test]
    fn password_hash_is_salt_then_sha256_of_salt_and_password() {
        use base64::Engine;
        let hash = password_hash([1, 2, 3, 4], "secret");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&hash)
            .unwrap();
        assert_eq!(&bytes[..4], &[1, 2, 3, 4]);
        let mut salted = vec![1u8, 2, 3, 4];
        salted.extend_from_slice(b"secret");
        assert_eq!(&bytes[4..], &crate::security::digest::sha256(&salted));
        assert_eq!(bytes.len(), 36);
    }

    #[test]
    fn exact_name_patterns_escape_dots() {
        assert_eq!(
            exactly(&["ns.referrals.a".into(), "ns.referrals.a.dead".into()]),
            r"^(ns\.referrals\.a|ns\.referrals\.a\.dead)$"
        );
        assert_eq!(exactly(&[]), "^$");
    }

    #[test]
    fn vhosts_come_from_the_url_path() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqps://u:p@broker:5671/referrals"), "referrals");
        assert_eq!(vhost_of("amqp://127.0.0.1"), "/");
        assert_eq!(vhost_of("amqp://127.0.0.1/"), "/");
        assert_eq!(vhost_of("amqp://h/a%2Fb?heartbeat=10"), "a/b");
    }
}
