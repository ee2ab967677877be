//! The disclosure and audit log around the store: person keys, what each action
//! records, the checkpoint worker that signs the chain head, and `audit verify`.

use std::sync::Arc;

use ring::hmac;
use serde_json::Value;

use crate::domain::NhsNumber;
use crate::domain::audit::{AuditAction, ChainFault, ChainVerifier, Checkpoint};
use crate::security::signing::{GatewayKey, PublicKey};
use crate::store::{AuditRecord, Store, StoreError, to_micros};

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
        action: AuditAction::ReferralSubmitted,
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
/// are new entries), and once more at shutdown. Each signed head also leaves the
/// database: as an `audit_checkpoint` log line and, when configured, in a head file.
pub struct Checkpointer {
    store: Store,
    key: Arc<GatewayKey>,
    every: i64,
    interval: std::time::Duration,
    head_file: Option<std::path::PathBuf>,
}

/// A signed chain head as it is kept outside the database: the `audit.head_file`
/// document, or the fields of an `audit_checkpoint` log line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedHead {
    pub seq: i64,
    pub hash: String,
    /// Microseconds since the Unix epoch.
    pub signed_at: i64,
    pub key_id: String,
    pub signature: String,
}

impl SignedHead {
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            seq: self.seq,
            head_hash: self.hash.clone(),
            signed_at: self.signed_at,
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
        }
    }

    /// Reads a head file: the JSON document the checkpointer writes, or `audit_checkpoint`
    /// log lines in JSON (one, or a whole log: the newest head in it is taken).
    pub fn parse(text: &str) -> Result<Self, String> {
        let from_value = |value: &Value| -> Option<Self> {
            let fields = value.get("fields").unwrap_or(value);
            serde_json::from_value(fields.clone()).ok()
        };
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            return from_value(&value).ok_or_else(|| {
                "the file holds no signed head (seq, hash, signed_at, key_id, signature)".to_owned()
            });
        }
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|value| from_value(&value))
            .max_by_key(|head| head.seq)
            .ok_or_else(|| {
                "the file holds no JSON document or audit_checkpoint log line with a signed head"
                    .to_owned()
            })
    }

    /// Checks the signature against `keys` (the gateway's current and earlier keys).
    pub fn verify(&self, keys: &[PublicKey]) -> Result<(), String> {
        match self
            .checkpoint()
            .check_signature(&|key_id: &str, message: &[u8], signature: &str| {
                keys.iter()
                    .find(|k| k.key_id == key_id)
                    .map(|k| k.verify(message, signature))
            }) {
            Some(true) => Ok(()),
            Some(false) => Err(format!(
                "the signed head (entry {}) has an invalid signature",
                self.seq
            )),
            None => Err(format!(
                "the signed head (entry {}) is signed with unknown key '{}'",
                self.seq, self.key_id
            )),
        }
    }
}

/// Replaces `path` with `head` (written beside it, then renamed: readers never see half).
fn write_head_file(path: &std::path::Path, head: &SignedHead) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(head).map_err(std::io::Error::other)?;
    text.push('\n');
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
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
            head_file: None,
        }
    }

    /// Also writes each signed head to `path` (`audit.head_file`).
    pub fn with_head_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.head_file = path;
        self
    }

    /// Signs the current head if it moved since the last checkpoint. Returns its seq.
    pub async fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let (seq, hash) = self.store.audit_head().await?;
        let last = self.store.last_checkpoint_seq().await?;
        if seq == 0 || seq == last {
            return Ok(None);
        }
        let mut checkpoint = Checkpoint {
            seq,
            head_hash: hash,
            signed_at: to_micros(time::OffsetDateTime::now_utc()),
            key_id: self.key.key_id().to_owned(),
            signature: String::new(),
        };
        checkpoint.signature = self.key.sign(&checkpoint.message());
        self.store.insert_checkpoint(&checkpoint).await?;
        self.publish(SignedHead {
            seq,
            hash: checkpoint.head_hash,
            signed_at: checkpoint.signed_at,
            key_id: checkpoint.key_id,
            signature: checkpoint.signature,
        });
        Ok(Some(seq))
    }

    /// The signed head leaves the database: a log line (target `audit_checkpoint`) and
    /// the head file. Neither holds personal data.
    fn publish(&self, head: SignedHead) {
        tracing::info!(
            target: "audit_checkpoint",
            seq = head.seq,
            hash = %head.hash,
            signed_at = head.signed_at,
            key_id = %head.key_id,
            signature = %head.signature,
            "audit checkpoint signed"
        );
        if let Some(path) = &self.head_file
            && let Err(e) = write_head_file(path, &head)
        {
            tracing::error!(error = %e, path = %path.display(), "cannot write audit.head_file");
        }
    }

    /// Signs checkpoints until it is asked to stop (or the stop signal's sender is gone),
    /// then signs a last one.
    pub async fn run(self, shutdown: impl Into<crate::worker::StopSignal>) {
        let mut shutdown = shutdown.into();
        // Cheap (two single-row reads), and keeps the unsigned tail short under load.
        let poll = std::time::Duration::from_secs(1).min(self.interval);
        let mut last_signed = std::time::Instant::now();
        while !shutdown.is_stopped() {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = shutdown.stopped() => break,
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
    /// Entries (up to the head read when verification started) after the newest checkpoint.
    pub uncovered: i64,
}

/// How much of the log may be left without a signed checkpoint, and the signed head kept
/// outside the database, if any.
#[derive(Debug, Clone, Default)]
pub struct VerifyPolicy {
    /// At most this many entries after the newest checkpoint (`None`: any number).
    pub max_uncovered_entries: Option<i64>,
    /// The oldest entry after the newest checkpoint at most this many seconds old
    /// (`None`: any age).
    pub max_uncovered_secs: Option<i64>,
    /// "Now" for the age bound, microseconds.
    pub now: i64,
    /// A signed head from outside the database (`--head FILE`), already checked against
    /// the keys: the log must hold it, and a checkpoint at or after it.
    pub head: Option<SignedHead>,
}

impl VerifyPolicy {
    /// The bounds `audit verify` applies by default: twice what a running checkpointer
    /// leaves unsigned (`checkpoint_every` entries, `checkpoint_interval_secs`).
    pub fn from_config(audit: &crate::config::AuditConfig, now: time::OffsetDateTime) -> Self {
        Self {
            max_uncovered_entries: Some(audit.checkpoint_every.saturating_mul(2)),
            max_uncovered_secs: Some(
                i64::try_from(audit.checkpoint_interval.as_secs())
                    .unwrap_or(i64::MAX)
                    .saturating_mul(2),
            ),
            now: to_micros(now),
            head: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Chain(#[from] ChainFault),
    #[error(
        "entries {first} to {last} are not covered by a signed checkpoint ({count} entries, the oldest {age_secs} s old; at most {max_entries} entries or {max_secs} s are allowed): checkpoints were deleted, or the gateway stopped without signing its last entries (it signs them within audit.checkpoint_interval_secs of starting again)"
    )]
    Uncovered {
        first: i64,
        last: i64,
        count: i64,
        age_secs: i64,
        max_entries: String,
        max_secs: String,
    },
    #[error(
        "the newest checkpoint in the database (entry {newest}) is older than the signed head (entry {head}): checkpoints were deleted or the database was restored from an older copy"
    )]
    CheckpointsBehindHead { newest: i64, head: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl VerifyError {
    pub fn first_bad_entry(&self) -> Option<i64> {
        match self {
            Self::Chain(fault) => Some(fault.first_bad_entry()),
            Self::Uncovered { first, .. } => Some(*first),
            Self::CheckpointsBehindHead { newest, .. } => Some(newest + 1),
            Self::Store(_) => None,
        }
    }
}

/// Checks the whole chain and every checkpoint against `keys`, with no bound on the
/// entries left unsigned.
pub async fn verify(store: &Store, keys: &[PublicKey]) -> Result<Verified, VerifyError> {
    verify_with(store, keys, &VerifyPolicy::default()).await
}

/// Checks the whole chain and every checkpoint against `keys`, then the bounds and the
/// signed head of `policy`.
pub async fn verify_with(
    store: &Store,
    keys: &[PublicKey],
    policy: &VerifyPolicy,
) -> Result<Verified, VerifyError> {
    // The head first: entries appended while the chain is read are checked but do not
    // count as unsigned.
    let (head_seq, head_hash) = store.audit_head().await?;
    let checkpoints = store.audit_checkpoints().await?;
    let mut verifier = ChainVerifier::new(
        checkpoints,
        |key_id: &str, message: &[u8], signature: &str| {
            keys.iter()
                .find(|k| k.key_id == key_id)
                .map(|k| k.verify(message, signature))
        },
    )
    .expect(head_seq, &head_hash, "the recorded chain head (audit_head)");
    if let Some(head) = &policy.head {
        verifier = verifier.expect(
            head.seq,
            &head.hash,
            "the signed head kept outside the database",
        );
    }
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
    let newest = verifier.newest_checkpoint();
    let first_uncovered = verifier.first_uncovered;
    let (seq, hash) = verifier.finish(head_seq)?;
    if let Some(head) = &policy.head
        && newest < head.seq
    {
        return Err(VerifyError::CheckpointsBehindHead {
            newest,
            head: head.seq,
        });
    }
    let uncovered = (head_seq - newest).max(0);
    if let Some((first, at)) = first_uncovered.filter(|_| uncovered > 0) {
        let age_secs = (policy.now - at).max(0) / 1_000_000;
        let too_many = policy
            .max_uncovered_entries
            .is_some_and(|max| uncovered > max);
        let too_old = policy.max_uncovered_secs.is_some_and(|max| age_secs > max);
        if too_many || too_old {
            let bound = |b: Option<i64>| b.map_or_else(|| "any".to_owned(), |b| b.to_string());
            return Err(VerifyError::Uncovered {
                first,
                last: head_seq,
                count: uncovered,
                age_secs,
                max_entries: bound(policy.max_uncovered_entries),
                max_secs: bound(policy.max_uncovered_secs),
            });
        }
    }
    Ok(Verified {
        entries,
        checkpoints: checkpoints_verified,
        head_seq: seq,
        head_hash: hash,
        uncovered,
    })
}

#[cfg(test)]
mod tests {

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
