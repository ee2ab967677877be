//! The audit log's hash chain, pure: how an entry is hashed, what a checkpoint signs,
//! and how a chain is verified entry by entry.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every action the gateway records (docs/governance.md lists when each is written).
/// Entries are stored with [`AuditAction::as_str`]; auditors filter by these names, or by
/// a family such as `referral.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuditAction {
    ConfigLoaded,
    /// A configuration reload was applied (what changed: agency and agreement ids only).
    ConfigReloaded,
    AuthRefused,
    ReferralSubmitted,
    ReferralRefused,
    MessageDelivered,
    ReferralRead,
    ReferralReadDenied,
    ReferralListed,
    EventPosted,
    /// A lifecycle event refused (a fixed reason code, never the caller's values).
    EventRefused,
    ReportSla,
    PayloadPurged,
    AuditQueried,
    AuditDisclosures,
    AuditExported,
    StaffSignedIn,
    StaffSignedOut,
}

impl AuditAction {
    pub const ALL: [Self; 18] = [
        Self::ConfigLoaded,
        Self::ConfigReloaded,
        Self::AuthRefused,
        Self::ReferralSubmitted,
        Self::ReferralRefused,
        Self::MessageDelivered,
        Self::ReferralRead,
        Self::ReferralReadDenied,
        Self::ReferralListed,
        Self::EventPosted,
        Self::EventRefused,
        Self::ReportSla,
        Self::PayloadPurged,
        Self::AuditQueried,
        Self::AuditDisclosures,
        Self::AuditExported,
        Self::StaffSignedIn,
        Self::StaffSignedOut,
    ];

    /// The name stored in `audit_log.action` and shown to auditors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigLoaded => "config.loaded",
            Self::ConfigReloaded => "config.reloaded",
            Self::AuthRefused => "auth.refused",
            Self::ReferralSubmitted => "referral.submitted",
            Self::ReferralRefused => "referral.refused",
            Self::MessageDelivered => "message.delivered",
            Self::ReferralRead => "referral.read",
            Self::ReferralReadDenied => "referral.read.denied",
            Self::ReferralListed => "referral.listed",
            Self::EventPosted => "event.posted",
            Self::EventRefused => "event.refused",
            Self::ReportSla => "report.sla",
            Self::PayloadPurged => "payload.purged",
            Self::AuditQueried => "audit.queried",
            Self::AuditDisclosures => "audit.disclosures",
            Self::AuditExported => "audit.exported",
            Self::StaffSignedIn => "staff.signed_in",
            Self::StaffSignedOut => "staff.signed_out",
        }
    }

    /// Whether `prefix` (ending in `.`, such as `referral.` or `referral.read.`) names a
    /// family: some action's name starts with it.
    pub fn is_family(prefix: &str) -> bool {
        prefix.ends_with('.') && Self::ALL.iter().any(|a| a.as_str().starts_with(prefix))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action")]
pub struct UnknownAction;

impl FromStr for AuditAction {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(UnknownAction)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which entries an audit search wants: one action, or a family (`referral.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFilter {
    Exact(AuditAction),
    /// A prefix ending in `.` that [`AuditAction::is_family`] accepts.
    Family(String),
}

impl FromStr for ActionFilter {
    type Err = UnknownAction;
    /// `referral.submitted` (exact) or `referral.*` (a family).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_suffix('*') {
            Some(prefix) if AuditAction::is_family(prefix) => Ok(Self::Family(prefix.to_owned())),
            Some(_) => Err(UnknownAction),
            None => s.parse().map(Self::Exact),
        }
    }
}

/// The hash the first entry points back to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry. Holds no personal data: people appear only as `person_key`, an HMAC
/// of their identifiers under a secret key. The field order is part of the hash: do not
/// reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// When it was written (serialised, and hashed, as microseconds since the Unix epoch).
    pub at: crate::domain::Timestamp,
    /// `agency:<id>`, `staff:<subject>`, `certificate:<sha256>`, `bearer:unverified`,
    /// `operator:<user>` or `gateway`.
    pub actor: String,
    /// The action's name as stored: an [`AuditAction`] name for every entry this gateway
    /// writes. Kept as text because the hash covers exactly what is stored, so an entry
    /// edited to an unknown name is reported by verification as edited (with its seq)
    /// rather than as unreadable; see [`AuditEntry::action`].
    pub action: String,
    pub referral_id: Option<String>,
    pub recipient: Option<String>,
    pub isa_id: Option<String>,
    pub lawful_basis: Option<String>,
    pub consent: Option<String>,
    pub categories: Vec<String>,
    pub withheld: Vec<String>,
    pub person_key: Option<String>,
    /// Free text without personal data (a reason, a count, a query's filters).
    pub detail: String,
    pub prev_hash: String,
}

impl AuditEntry {
    /// The recorded action, or `None` for a name this version does not know (an edited
    /// row, which `audit verify` reports).
    pub fn action(&self) -> Option<AuditAction> {
        self.action.parse().ok()
    }

    /// SHA-256 (hex) of the entry's canonical JSON, which includes `prev_hash`.
    pub fn hash(&self) -> String {
        let mut digest = Digesting(ring::digest::Context::new(&ring::digest::SHA256));
        // Serialising into the digest cannot fail: it writes nothing but to the digest.
        let _ = serde_json::to_writer(&mut digest, self);
        hex::encode(digest.0.finish())
    }
}

/// Bytes written to it go into a digest (the entry is hashed as it is serialised).
struct Digesting(ring::digest::Context);

impl std::io::Write for Digesting {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a version 1 checkpoint's Ed25519 signature covers (checkpoints signed before
/// `signed_at` was signed too; still accepted).
pub fn checkpoint_message(seq: i64, head_hash: &str) -> Vec<u8> {
    format!("referral-gateway audit checkpoint v1\n{seq}\n{head_hash}").into_bytes()
}

/// What a checkpoint's Ed25519 signature covers: the entry, its hash and when it was
/// signed (so the order of checkpoints, and the age of an exported head, can be trusted).
pub fn checkpoint_message_v2(seq: i64, head_hash: &str, signed_at: i64) -> Vec<u8> {
    format!("referral-gateway audit checkpoint v2\n{seq}\n{head_hash}\n{signed_at}").into_bytes()
}

/// How far a checkpoint's `signed_at` may lie before that of the checkpoint of an earlier
/// entry (several instances sign, each with its own clock) before they count as out of
/// order: one minute, in microseconds.
pub const CHECKPOINT_CLOCK_TOLERANCE: i64 = 60_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: String,
    pub signed_at: i64,
    pub key_id: String,
    /// Base64url (no padding) Ed25519 signature of `checkpoint_message_v2` (or, for
    /// checkpoints signed by earlier versions, of `checkpoint_message`).
    pub signature: String,
}

impl Checkpoint {
    /// The message to sign for this checkpoint.
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message_v2(self.seq, &self.head_hash, self.signed_at)
    }

    /// `verify_signature(key_id, message, signature)` as for [`ChainVerifier`]: `None`
    /// for an unknown key. Either message version is accepted.
    pub fn check_signature<F>(&self, verify_signature: &F) -> Option<bool>
    where
        F: Fn(&str, &[u8], &str) -> Option<bool>,
    {
        match verify_signature(&self.key_id, &self.message(), &self.signature)? {
            true => Some(true),
            false => verify_signature(
                &self.key_id,
                &checkpoint_message(self.seq, &self.head_hash),
                &self.signature,
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    #[error(
        "entry {found} follows entry {previous}: entries are missing (deleted) or out of order"
    )]
    Gap { previous: i64, found: i64 },
    #[error("entry {seq} does not point at the entry before it (entries reordered or replaced)")]
    BrokenLink { seq: i64 },
    #[error("entry {seq} does not match its hash (edited)")]
    Edited { seq: i64 },
    #[error("checkpoint at entry {seq} signed another chain head (entries up to it were changed)")]
    CheckpointMismatch { seq: i64 },
    #[error("checkpoint at entry {seq} has an invalid signature")]
    BadSignature { seq: i64 },
    #[error("checkpoint at entry {seq} is signed with unknown key '{key_id}'")]
    UnknownKey { seq: i64, key_id: String },
    #[error(
        "checkpoint at entry {seq} was signed before the checkpoint at entry {previous} (checkpoints out of order)"
    )]
    OutOfOrder { seq: i64, previous: i64 },
    #[error("entry {seq} does not match {what} (entries up to it were changed)")]
    Mismatch { seq: i64, what: &'static str },
    #[error(
        "a checkpoint at entry {seq}, beyond the log's last entry {last}, is not signed by a known key (written outside the gateway)"
    )]
    ForgedCheckpoint { seq: i64, last: i64 },
    #[error(
        "the log ends at entry {last} but {what} says it reached entry {claimed} (entries deleted from the end)"
    )]
    Truncated {
        last: i64,
        claimed: i64,
        what: &'static str,
    },
}

impl ChainFault {
    /// The first entry the fault concerns.
    pub fn first_bad_entry(&self) -> i64 {
        match self {
            Self::Gap { previous, .. } => previous + 1,
            Self::BrokenLink { seq }
            | Self::Edited { seq }
            | Self::CheckpointMismatch { seq }
            | Self::BadSignature { seq }
            | Self::UnknownKey { seq, .. }
            | Self::OutOfOrder { seq, .. }
            | Self::Mismatch { seq, .. } => *seq,
            Self::Truncated { last, .. } | Self::ForgedCheckpoint { last, .. } => last + 1,
        }
    }
}

/// Verifies a chain fed in `seq` order. `verify_signature(key_id, message, signature)`
/// returns `None` for an unknown key, else whether the signature is valid.
pub struct ChainVerifier<F> {
    previous_seq: i64,
    previous_hash: String,
    checkpoints: BTreeMap<i64, Checkpoint>,
    /// Hashes that given entries must have, with what claims them (the recorded head,
    /// a signed head kept outside the database).
    expected: BTreeMap<i64, (String, &'static str)>,
    /// The last checkpoint verified: its seq and `signed_at`.
    last_checkpoint: Option<(i64, i64)>,
    /// The newest checkpoint's seq when verification started (0: none).
    newest_checkpoint: i64,
    /// The first entry after the newest checkpoint: its seq and `at`.
    pub first_uncovered: Option<(i64, crate::domain::Timestamp)>,
    verify_signature: F,
    pub entries: u64,
    pub checkpoints_verified: u64,
}

impl<F> ChainVerifier<F>
where
    F: Fn(&str, &[u8], &str) -> Option<bool>,
{
    pub fn new(checkpoints: Vec<Checkpoint>, verify_signature: F) -> Self {
        let checkpoints: BTreeMap<i64, Checkpoint> =
            checkpoints.into_iter().map(|c| (c.seq, c)).collect();
        Self {
            previous_seq: 0,
            previous_hash: GENESIS_HASH.to_owned(),
            newest_checkpoint: checkpoints.keys().next_back().copied().unwrap_or(0),
            checkpoints,
            expected: BTreeMap::new(),
            last_checkpoint: None,
            first_uncovered: None,
            verify_signature,
            entries: 0,
            checkpoints_verified: 0,
        }
    }

    /// Entry `seq` must exist and have `hash` (`what` names the claim in the fault).
    /// Seq 0 claims nothing.
    pub fn requiring(mut self, seq: i64, hash: &str, what: &'static str) -> Self {
        if seq > 0 {
            self.expected.insert(seq, (hash.to_owned(), what));
        }
        self
    }

    /// The newest checkpoint's seq (0 when there is none).
    pub fn newest_checkpoint(&self) -> i64 {
        self.newest_checkpoint
    }

    /// Checks the next entry and the hash stored beside it.
    pub fn feed(&mut self, entry: &AuditEntry, stored_hash: &str) -> Result<(), ChainFault> {
        if entry.seq != self.previous_seq + 1 {
            return Err(ChainFault::Gap {
                previous: self.previous_seq,
                found: entry.seq,
            });
        }
        if entry.prev_hash != self.previous_hash {
            return Err(ChainFault::BrokenLink { seq: entry.seq });
        }
        if entry.hash() != stored_hash {
            return Err(ChainFault::Edited { seq: entry.seq });
        }
        if let Some((hash, what)) = self.expected.remove(&entry.seq)
            && hash != stored_hash
        {
            return Err(ChainFault::Mismatch {
                seq: entry.seq,
                what,
            });
        }
        if let Some(checkpoint) = self.checkpoints.remove(&entry.seq) {
            // The signature first: a row no known key signed is a forged checkpoint (not
            // evidence that the entries were changed), wherever it lies.
            match checkpoint.check_signature(&self.verify_signature) {
                None => {
                    return Err(ChainFault::UnknownKey {
                        seq: entry.seq,
                        key_id: checkpoint.key_id,
                    });
                }
                Some(false) => return Err(ChainFault::BadSignature { seq: entry.seq }),
                Some(true) => {}
            }
            if checkpoint.head_hash != stored_hash {
                return Err(ChainFault::CheckpointMismatch { seq: entry.seq });
            }
            self.checkpoints_verified += 1;
            if let Some((previous, signed_at)) = self.last_checkpoint
                && checkpoint.signed_at < signed_at.saturating_sub(CHECKPOINT_CLOCK_TOLERANCE)
            {
                return Err(ChainFault::OutOfOrder {
                    seq: entry.seq,
                    previous,
                });
            }
            self.last_checkpoint = Some((entry.seq, checkpoint.signed_at));
        }
        if entry.seq == self.newest_checkpoint + 1 {
            self.first_uncovered = Some((entry.seq, entry.at));
        }
        self.previous_seq = entry.seq;
        self.previous_hash = stored_hash.to_owned();
        self.entries += 1;
        Ok(())
    }

    /// After the last entry: no checkpoint, and not the recorded head, may lie beyond it.
    pub fn finish(self, head_seq: i64) -> Result<(i64, String), ChainFault> {
        // A checkpoint beyond the end: a signed one means entries were deleted from the
        // end; one no trusted key signed was written there by somebody else.
        for (&seq, checkpoint) in &self.checkpoints {
            if checkpoint.check_signature(&self.verify_signature) != Some(true) {
                return Err(ChainFault::ForgedCheckpoint {
                    seq,
                    last: self.previous_seq,
                });
            }
        }
        if let Some((&seq, _)) = self.checkpoints.iter().next_back() {
            return Err(ChainFault::Truncated {
                last: self.previous_seq,
                claimed: seq,
                what: "a signed checkpoint",
            });
        }
        if head_seq > self.previous_seq {
            return Err(ChainFault::Truncated {
                last: self.previous_seq,
                claimed: head_seq,
                what: "the chain head",
            });
        }
        if let Some((&seq, (_, what))) = self.expected.iter().next_back() {
            return Err(ChainFault::Truncated {
                last: self.previous_seq,
                claimed: seq,
                what,
            });
        }
        Ok((self.previous_seq, self.previous_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<(AuditEntry, String)> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = AuditEntry {
                    seq,
                    at: crate::domain::Timestamp::from_micros(seq * 1000),
                    actor: "agency:a".into(),
                    action: AuditAction::ReferralSubmitted.as_str().into(),
                    referral_id: Some(format!("r{seq}")),
                    recipient: None,
                    isa_id: None,
                    lawful_basis: None,
                    consent: None,
                    categories: vec![],
                    withheld: vec![],
                    person_key: None,
                    detail: String::new(),
                    prev_hash: prev.clone(),
                };
                let h = e.hash();
                prev = h.clone();
                (e, h)
            })
            .collect()
    }

    fn verify(
        entries: &[(AuditEntry, String)],
        checkpoints: Vec<Checkpoint>,
        head: i64,
    ) -> Result<(i64, String), ChainFault> {
        let mut v = ChainVerifier::new(checkpoints, |key, _, sig| {
            (key == "k").then(|| sig == "good")
        });
        for (e, h) in entries {
            v.feed(e, h)?;
        }
        v.finish(head)
    }

    #[test]
    fn actions_round_trip_and_form_families() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
        }
        assert!("referal.read".parse::<AuditAction>().is_err());
        assert!(AuditAction::is_family("referral."));
        assert!(AuditAction::is_family("referral.read."));
        assert!(!AuditAction::is_family("referral"));
        assert!(!AuditAction::is_family("nothing."));
        assert_eq!(
            "referral.*".parse::<ActionFilter>(),
            Ok(ActionFilter::Family("referral.".into()))
        );
        assert_eq!(
            "report.sla".parse::<ActionFilter>(),
            Ok(ActionFilter::Exact(AuditAction::ReportSla))
        );
        assert!("*".parse::<ActionFilter>().is_err());
    }

    /// docs/governance.md says when each action is written: it names every one.
    #[test]
    fn governance_docs_list_every_action() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/governance.md"),
        )
        .unwrap();
        for action in AuditAction::ALL {
            assert!(
                docs.contains(&format!("`{action}`")),
                "docs/governance.md does not describe `{action}`"
            );
        }
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let c = chain(5);
        let cp = Checkpoint {
            seq: 3,
            head_hash: c[2].1.clone(),
            signed_at: 0,
            key_id: "k".into(),
            signature: "good".into(),
        };
        assert_eq!(verify(&c, vec![cp], 5).unwrap().0, 5);
    }

    #[test]
    fn edits_deletions_and_reorders_name_the_first_bad_entry() {
        let c = chain(6);
        let mut edited = c.clone();
        edited[3].0.action = AuditAction::ReferralRead.as_str().into();
        assert_eq!(
            verify(&edited, vec![], 6).unwrap_err(),
            ChainFault::Edited { seq: 4 }
        );

        let mut deleted = c.clone();
        deleted.remove(2);
        let fault = verify(&deleted, vec![], 6).unwrap_err();
        assert_eq!(fault.first_bad_entry(), 3);

        let mut reordered = c.clone();
        reordered.swap(1, 2); // rows 2 and 3 swapped, seq values with them
        let fault = verify(&reordered, vec![], 6).unwrap_err();
        assert_eq!(fault.first_bad_entry(), 2);

        let mut renumbered = c.clone(); // contents swapped, seq kept
        let (a, b) = (renumbered[1].clone(), renumbered[2].clone());
        renumbered[1] = (AuditEntry { seq: 2, ..b.0 }, b.1);
        renumbered[2] = (AuditEntry { seq: 3, ..a.0 }, a.1);
        assert_eq!(
            verify(&renumbered, vec![], 6)
                .unwrap_err()
                .first_bad_entry(),
            2
        );

        assert!(matches!(
            verify(&c[..4], vec![], 6).unwrap_err(),
            ChainFault::Truncated {
                last: 4,
                claimed: 6,
                ..
            }
        ));
    }

    #[test]
    fn checkpoints_must_be_in_order_and_heads_must_match() {
        let c = chain(6);
        let cp = |seq: usize, signed_at: i64| Checkpoint {
            seq: seq as i64,
            head_hash: c[seq - 1].1.clone(),
            signed_at,
            key_id: "k".into(),
            signature: "good".into(),
        };
        let minute = CHECKPOINT_CLOCK_TOLERANCE;
        assert!(verify(&c, vec![cp(2, 5 * minute), cp(4, 6 * minute)], 6).is_ok());
        // Within the clock tolerance of another instance: accepted.
        assert!(verify(&c, vec![cp(2, 5 * minute), cp(4, 5 * minute - 1)], 6).is_ok());
        assert_eq!(
            verify(&c, vec![cp(2, 5 * minute), cp(4, 3 * minute)], 6).unwrap_err(),
            ChainFault::OutOfOrder {
                seq: 4,
                previous: 2
            }
        );

        let run = |expected: &[(i64, &str)]| {
            let mut v = ChainVerifier::new(vec![], |_: &str, _: &[u8], _: &str| Some(true));
            for (seq, hash) in expected {
                v = v.requiring(*seq, hash, "the signed head");
            }
            for (e, h) in &c[..5] {
                v.feed(e, h)?;
            }
            v.finish(5)
        };
        assert!(run(&[(5, &c[4].1)]).is_ok());
        assert_eq!(
            run(&[(4, &c[4].1)]).unwrap_err(),
            ChainFault::Mismatch {
                seq: 4,
                what: "the signed head"
            }
        );
        assert_eq!(run(&[(6, &c[5].1)]).unwrap_err().first_bad_entry(), 6);
    }

    #[test]
    fn version_1_signatures_still_verify() {
        let c = Checkpoint {
            seq: 3,
            head_hash: "h".into(),
            signed_at: 7,
            key_id: "k".into(),
            signature: "v1".into(),
        };
        let v1 = checkpoint_message(3, "h");
        let check = |_: &str, message: &[u8], signature: &str| {
            Some(signature == "v1" && message == v1.as_slice())
        };
        assert_eq!(c.check_signature(&check), Some(true));
        let v2 = c.message();
        let only_v2 = |_: &str, message: &[u8], _: &str| Some(message == v2.as_slice());
        assert_eq!(c.check_signature(&only_v2), Some(true));
    }

    #[test]
    fn checkpoints_are_checked() {
        let c = chain(4);
        let cp = |hash: &str, key: &str, sig: &str| Checkpoint {
            seq: 2,
            head_hash: hash.into(),
            signed_at: 0,
            key_id: key.into(),
            signature: sig.into(),
        };
        assert_eq!(
            verify(&c, vec![cp(&c[1].1, "k", "bad")], 4).unwrap_err(),
            ChainFault::BadSignature { seq: 2 }
        );
        assert!(matches!(
            verify(&c, vec![cp(&c[1].1, "x", "good")], 4).unwrap_err(),
            ChainFault::UnknownKey { .. }
        ));
        assert_eq!(
            verify(&c, vec![cp(&c[0].1, "k", "good")], 4).unwrap_err(),
            ChainFault::CheckpointMismatch { seq: 2 }
        );
    }
}
