//! `audit verify`: the whole hash chain, every signed checkpoint, the bound on unsigned
//! entries after the newest one, and (optionally) a signed head kept elsewhere.

use super::checkpoints::SignedHead;
use crate::domain::Timestamp;
use crate::domain::audit::{ChainFault, ChainVerifier};
use crate::security::signing::PublicKey;
use crate::store::{Store, StoreError};

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
    pub now: Timestamp,
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
            now: Timestamp::from(now),
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
    verify_reporting(store, keys, policy, &VerifyProgress::default()).await
}

/// How far a verification has gone: what the console shows while one runs.
#[derive(Debug, Default)]
pub struct VerifyProgress {
    /// The head the verification runs up to (known once it has started).
    pub head_seq: std::sync::atomic::AtomicI64,
    /// Entries checked so far.
    pub entries: std::sync::atomic::AtomicU64,
}

/// [`verify_with`], recording its progress in `progress` as it goes.
pub async fn verify_reporting(
    store: &Store,
    keys: &[PublicKey],
    policy: &VerifyPolicy,
    progress: &VerifyProgress,
) -> Result<Verified, VerifyError> {
    use std::sync::atomic::Ordering;
    // The head first: entries appended while the chain is read are checked but do not
    // count as unsigned.
    let (head_seq, head_hash) = store.audit_head().await?;
    progress.head_seq.store(head_seq, Ordering::Relaxed);
    let checkpoints = store.audit_checkpoints().await?;
    let mut verifier = ChainVerifier::new(
        checkpoints,
        |key_id: &str, message: &[u8], signature: &str| {
            keys.iter()
                .find(|k| k.key_id == key_id)
                .map(|k| k.verify(message, signature))
        },
    )
    .requiring(head_seq, &head_hash, "the recorded chain head (audit_head)");
    if let Some(head) = &policy.head {
        verifier = verifier.requiring(
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
        progress.entries.store(verifier.entries, Ordering::Relaxed);
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
        let age_secs = policy.now.micros_since(at).max(0) / 1_000_000;
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
