//! The disclosure and audit log around the store: person keys, what each action
//! records, the checkpoint worker that signs the chain head, and `audit verify`.

use std::sync::Arc;

use ring::hmac;
use serde_json::Value;
use tokio::sync::watch;

use crate::domain::NhsNumber;
use crate::domain::audit::{ChainFault, ChainVerifier, Checkpoint, checkpoint_message};
use crate::signing::{GatewayKey, PublicKey};
use crate::store::{AuditRecord, Store, StoreError, to_micros};

/// Every action the gateway records (docs/governance.md lists when each is written).
pub const ACTIONS: [&str; 14] = [
    "config.loaded",
    "auth.refused",
    "referral.submitted",
    "referral.refused",
    "message.delivered",
    "referral.read",
    "referral.read.denied",
    "referral.listed",
    "event.posted",
    "report.sla",
    "payload.purged",
    "audit.queried",
    "audit.disclosures",
    "audit.exported",
];

/// Derives the pseudonymous key under which disclosures about one person are found:
/// HMAC-SHA256 of the normalised NHS number, or (without one) of the normalised name and
/// date of birth, under a secret the log does not hold.
#[derive(Clone)]
pub struct PersonKeyer {
    key: hmac::Key,
}

impl std::fmt::Debug for PersonKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonKeyer(<secret>)")
    }
}

fn normalise_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl PersonKeyer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn mac(&self, text: &str) -> String {
        hex::encode(hmac::sign(&self.key, text.as_bytes()).as_ref())
    }

    /// From identifiers given directly (a subject access request).
    pub fn key_for(
        &self,
        nhs_number: Option<&str>,
        given: Option<&str>,
        family: Option<&str>,
        date_of_birth: Option<&str>,
    ) -> Option<String> {
        // `NhsNumber::parse` refuses placeholders (`0000000000`, ...): a referral or search
        // carrying one falls back to name and date of birth, never a key shared by many.
        if let Some(nhs) = nhs_number.and_then(|n| NhsNumber::parse(n).ok()) {
            return Some(self.mac(&format!("nhs:{}", nhs.as_digits())));
        }
        match (given, family, date_of_birth) {
            (Some(g), Some(f), Some(d)) => Some(self.mac(&format!(
                "name-dob:{}|{}|{}",
                normalise_name(g),
                normalise_name(f),
                d.trim()
            ))),
            _ => None,
        }
    }

    /// From a referral document's `/person`.
    pub fn key_of(&self, document: &Value) -> Option<String> {
        let person = document.get("person")?;
        self.key_for(
            person.get("nhs_number").and_then(Value::as_str),
            person.pointer("/name/given").and_then(Value::as_str),
            person.pointer("/name/family").and_then(Value::as_str),
            person.get("date_of_birth").and_then(Value::as_str),
        )
    }
}

/// The audit entry for an accepted referral: what was shared, on what basis.
pub fn submission_record(
    sender: &str,
    recipient: &str,
    referral_id: &str,
    document: &Value,
    keyer: &PersonKeyer,
) -> AuditRecord {
    let consent = document.get("consent");
    let given = consent
        .and_then(|c| c.get("given"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let without = consent.and_then(|c| c.get("sharing_without_consent"));
    AuditRecord {
        actor: format!("agency:{sender}"),
        action: "referral.submitted".into(),
        referral_id: Some(referral_id.to_owned()),
        recipient: Some(recipient.to_owned()),
        isa_id: None,
        lawful_basis: without
            .and_then(|w| w.get("lawful_basis"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        consent: Some(if given {
            "given".to_owned()
        } else {
            format!(
                "not_given:{}",
                without
                    .and_then(|w| w.get("justification"))
                    .and_then(Value::as_str)
                    .unwrap_or("none")
            )
        }),
        // The caller fills in the field categories shared (from minimisation).
        categories: Vec::new(),
        withheld: Vec::new(),
        person_key: keyer.key_of(document),
        detail: String::new(),
    }
}

/// Signs the chain head every `every` entries or `interval` (whichever first, if there
/// are new entries), and once more at shutdown.
pub struct Checkpointer {
    store: Store,
    key: Arc<GatewayKey>,
    every: i64,
    interval: std::time::Duration,
}

impl Checkpointer {
    pub fn new(
        store: Store,
        key: Arc<GatewayKey>,
        every: i64,
        interval: std::time::Duration,
    ) -> Self {
        Self {
            store,
            key,
            every,
            interval,
        }
    }

    /// Signs the current head if it moved since the last checkpoint. Returns its seq.
    pub async fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let (seq, hash) = self.store.audit_head().await?;
        let last = self.store.last_checkpoint_seq().await?;
        if seq == 0 || seq == last {
            return Ok(None);
        }
        let checkpoint = Checkpoint {
            seq,
            signature: self.key.sign(&checkpoint_message(seq, &hash)),
            head_hash: hash,
            signed_at: to_micros(time::OffsetDateTime::now_utc()),
            key_id: self.key.key_id().to_owned(),
        };
        self.store.insert_checkpoint(&checkpoint).await?;
        Ok(Some(seq))
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let poll = std::time::Duration::from_secs(5).min(self.interval);
        let mut last_signed = std::time::Instant::now();
        while !*shutdown.borrow() {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => break,
            }
            let due = match (
                self.store.audit_head().await,
                self.store.last_checkpoint_seq().await,
            ) {
                (Ok((seq, _)), Ok(last)) => {
                    seq - last >= self.every
                        || (seq > last && last_signed.elapsed() >= self.interval)
                }
                _ => false,
            };
            if due {
                match self.checkpoint().await {
                    Ok(_) => last_signed = std::time::Instant::now(),
                    Err(e) => tracing::error!(error = %e, "cannot write an audit checkpoint"),
                }
            }
        }
        if let Err(e) = self.checkpoint().await {
            tracing::error!(error = %e, "cannot write the final audit checkpoint");
        }
    }
}

/// The outcome of `audit verify`.
#[derive(Debug)]
pub struct Verified {
    pub entries: u64,
    pub checkpoints: u64,
    pub head_seq: i64,
    pub head_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Chain(#[from] ChainFault),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl VerifyError {
    pub fn first_bad_entry(&self) -> Option<i64> {
        match self {
            Self::Chain(fault) => Some(fault.first_bad_entry()),
            Self::Store(_) => None,
        }
    }
}

/// Checks the whole chain and every checkpoint against `keys`.
pub async fn verify(store: &Store, keys: &[PublicKey]) -> Result<Verified, VerifyError> {
    let checkpoints = store.audit_checkpoints().await?;
    let (head_seq, _) = store.audit_head().await?;
    let mut verifier = ChainVerifier::new(
        checkpoints,
        |key_id: &str, message: &[u8], signature: &str| {
            keys.iter()
                .find(|k| k.key_id == key_id)
                .map(|k| k.verify(message, signature))
        },
    );
    let mut after = 0;
    loop {
        let page = store.audit_entries(after, 5000).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.seq;
        for (entry, hash) in &page {
            verifier.feed(entry, hash)?;
        }
    }
    let (entries, checkpoints_verified) = (verifier.entries, verifier.checkpoints_verified);
    let (seq, hash) = verifier.finish(head_seq)?;
    Ok(Verified {
        entries,
        checkpoints: checkpoints_verified,
        head_seq: seq,
        head_hash: hash,
    })
}

#[cfg(test)]
mod tests {

    /// Every action the code writes is in `ACTIONS` (auditors filter by that list).
    #[test]
    fn every_written_action_is_listed() {
        fn sources(dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut texts = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut texts,
        );
        // The first string literal shaped like an action within the call.
        let is_action = |t: &str| {
            t.contains('.')
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        };
        let mut written = Vec::new();
        for text in &texts {
            for marker in ["AuditRecord::new(", "action: \""] {
                for (at, _) in text.match_indices(marker) {
                    let call: String = text[at..].chars().take(160).collect();
                    if let Some(name) = call.split('"').skip(1).step_by(2).find(|t| is_action(t)) {
                        written.push(name.to_owned());
                    }
                }
            }
        }
        written.sort();
        written.dedup();
        assert!(written.len() >= 14, "{written:?}");
        for action in &written {
            assert!(
                ACTIONS.contains(&action.as_str()),
                "{action} is not in ACTIONS"
            );
        }
    }
    use super::*;
    use serde_json::json;

    #[test]
    fn person_keys_normalise_and_prefer_the_nhs_number() {
        let k = PersonKeyer::new(b"secret");
        let a = k.key_of(&json!({"person": {"nhs_number": "943 476 5919", "name": {"given": "A", "family": "B"}, "date_of_birth": "1990-01-01"}}));
        let b = k.key_for(Some("9434765919"), None, None, None);
        assert_eq!(a, b);
        let c = k.key_for(None, Some("  Alex "), Some("EXAMPLE"), Some("1991-06-14"));
        let d = k.key_of(&json!({"person": {"name": {"given": "alex", "family": "Example"}, "date_of_birth": "1991-06-14"}}));
        assert_eq!(c, d);
        assert_ne!(a, c);
        assert_ne!(
            PersonKeyer::new(b"other").key_for(Some("9434765919"), None, None, None),
            b
        );
        assert!(!a.unwrap().contains("943"));
    }

    #[test]
    fn placeholder_nhs_numbers_never_merge_people() {
        // Two different people recorded with the placeholder 0000000000 (or 9999999999)
        // keep the keys of their names and birth dates; the placeholder alone gives none.
        let k = PersonKeyer::new(b"secret");
        let alex = json!({"person": {"nhs_number": "0000000000", "name": {"given": "Alex", "family": "Example"}, "date_of_birth": "1991-06-14"}});
        let sam = json!({"person": {"nhs_number": "0000000000", "name": {"given": "Sam", "family": "Other"}, "date_of_birth": "1980-02-02"}});
        assert_ne!(k.key_of(&alex), k.key_of(&sam));
        assert_eq!(
            k.key_of(&alex),
            k.key_for(None, Some("Alex"), Some("Example"), Some("1991-06-14"))
        );
        for placeholder in ["0000000000", "999 999 9999", "1111111111"] {
            assert_eq!(k.key_for(Some(placeholder), None, None, None), None);
        }
    }
}
