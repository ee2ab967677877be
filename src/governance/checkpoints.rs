//! Signed checkpoints: the worker that signs the audit chain head every so many entries
//! or seconds, and the signed head an operator keeps outside the database.

use std::sync::Arc;

use serde_json::Value;

use crate::domain::audit::Checkpoint;
use crate::security::signing::{GatewayKey, PublicKey};
use crate::store::{Store, StoreError, to_micros};

/// How far ahead of this clock a stored checkpoint's time is followed (an hour).
const MAX_CLOCK_AHEAD_MICROS: i64 = 3_600_000_000;

/// Signs the chain head every `every` entries or `interval` (whichever first, if there
/// are new entries), and once more at shutdown. Each signed head also leaves the
/// database: as an `audit_checkpoint` log line and, when configured, in a head file.
pub struct Checkpointer {
    store: Store,
    key: Arc<GatewayKey>,
    every: i64,
    interval: std::time::Duration,
    head_file: Option<std::path::PathBuf>,
    /// The newest entry this process signed a checkpoint of: the stored checkpoints
    /// never fall below it unless somebody deleted them (and then, likely, rewrote the
    /// entries they covered), which this process will not sign over.
    signed_up_to: std::sync::atomic::AtomicI64,
    refused: std::sync::atomic::AtomicBool,
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
            signed_up_to: std::sync::atomic::AtomicI64::new(0),
            refused: std::sync::atomic::AtomicBool::new(false),
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
        let (last, _, last_signed_at) = self.store.last_checkpoint_seq(seq).await?;
        let signed_up_to = self.signed_up_to.load(std::sync::atomic::Ordering::SeqCst);
        if last < signed_up_to {
            // Checkpoints this process wrote are gone: signing the head now would vouch
            // for whatever replaced the entries they covered.
            if !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                tracing::error!(
                    signed_up_to,
                    newest_stored = last,
                    "checkpoints this gateway signed are missing from the database (deleted outside the gateway): no further checkpoint is signed until a restart; run `audit verify --head` against a shipped head"
                );
            }
            return Ok(None);
        }
        if seq == 0 || seq == last {
            return Ok(None);
        }
        // Never before the last checkpoint's time: after the wall clock stepped back (or
        // on an instance whose clock is behind another's), `audit verify` would otherwise
        // find checkpoints out of order for good. That time is taken at most an hour
        // ahead of this clock: a row dated far ahead (which whoever may insert checkpoints
        // could plant) does not date every later checkpoint.
        let now = to_micros(time::OffsetDateTime::now_utc());
        let signed_at = now.max(last_signed_at.min(now.saturating_add(MAX_CLOCK_AHEAD_MICROS)));
        let mut checkpoint = Checkpoint {
            seq,
            head_hash: hash,
            signed_at,
            key_id: self.key.key_id().to_owned(),
            signature: String::new(),
        };
        checkpoint.signature = self.key.sign(&checkpoint.message());
        let written = self.store.insert_checkpoint(&checkpoint).await?;
        // Stored either way (ours, or one for the same entry a moment before).
        self.signed_up_to
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        if !written {
            // Another instance signed the same head a moment before (PostgreSQL), or a
            // row was written there outside the gateway (which `audit verify` reports).
            tracing::warn!(
                seq,
                "a checkpoint for this entry was already stored; this one was not written"
            );
        }
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
        let mut warned_beyond = false;
        while !shutdown.is_stopped() {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = shutdown.stopped() => break,
            }
            let due = match self.store.audit_head().await {
                Ok((seq, _)) => match self.store.last_checkpoint_seq(seq).await {
                    Ok((last, beyond, _)) => {
                        // A checkpoint beyond the head was not written by a gateway: it
                        // would otherwise stop every later checkpoint being due.
                        if beyond && !warned_beyond {
                            warned_beyond = true;
                            tracing::error!(
                                head = seq,
                                "the checkpoints table holds a checkpoint beyond the log's head, written outside the gateway; checkpoints go on, and `audit verify` reports it"
                            );
                        }
                        seq - last >= self.every
                            || (seq > last && last_signed.elapsed() >= self.interval)
                    }
                    Err(_) => false,
                },
                Err(_) => false,
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
