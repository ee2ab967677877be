//! Refusals of callers who proved no identity (a staff request without a token, or with
//! one that does not verify, or whose token carries no staff role; a console sign-in
//! callback with no sign-in in progress).
//!
//! Anybody who can reach the staff listener can make these, as fast as they like. Each is
//! counted here and in `refgw_auth_refused_unverified_total{reason}`, and the tally goes
//! into the audit log as **one** `auth.refused` entry (actor `bearer:unverified`) per
//! interval ([`TALLY_INTERVAL`]) and when the gateway stops, instead of one entry each:
//! otherwise an anonymous flood would grow the permanent log without limit and fill the
//! committer's queue that referrals wait in. The entry holds counts by fixed reason code
//! and the interval, never what the caller sent. Refusals of staff members (a valid token
//! with a staff role, but not the role or agency the request needs) are still audited
//! one by one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::audit::AuditAction;
use crate::metrics::Metrics;
use crate::store::{AuditRecord, Store, StoreError};
use crate::worker::StopSignal;

/// How often the tally is written to the audit log (when there is one).
pub const TALLY_INTERVAL: Duration = Duration::from_secs(60);

/// The actor of the tally's entries.
pub const UNVERIFIED_ACTOR: &str = "bearer:unverified";

#[derive(Debug, Default)]
struct Counts {
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    by_reason: BTreeMap<&'static str, u64>,
}

/// Refusals of unverified callers not yet in the audit log.
#[derive(Debug, Default)]
pub struct RefusalTally {
    counts: Mutex<Counts>,
}

impl RefusalTally {
    /// Counts one refusal for `reason` (a fixed code, never the caller's text).
    pub fn count(&self, metrics: &Metrics, reason: &'static str, at: OffsetDateTime) {
        metrics.refused_unverified(reason);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.first = Some(counts.first.map_or(at, |f| f.min(at)));
        counts.last = Some(counts.last.map_or(at, |l| l.max(at)));
        *counts.by_reason.entry(reason).or_default() += 1;
    }

    fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts back counts that could not be written, to go with the next entry.
    fn restore(&self, taken: Counts) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.first = match (taken.first, counts.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        counts.last = counts.last.max(taken.last);
        for (reason, n) in taken.by_reason {
            *counts.by_reason.entry(reason).or_default() += n;
        }
    }

    /// Writes what has been counted since the last entry as one audit entry (nothing when
    /// nothing was refused). What cannot be written stays counted for the next attempt.
    pub async fn record(&self, store: &Store, now: OffsetDateTime) -> Result<(), StoreError> {
        let taken = self.take();
        let (Some(first), Some(last)) = (taken.first, taken.last) else {
            return Ok(());
        };
        let total: u64 = taken.by_reason.values().sum();
        let reasons: Vec<String> = taken
            .by_reason
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let record = AuditRecord::new(UNVERIFIED_ACTOR, AuditAction::AuthRefused).detail(format!(
            "{total} unverified requests refused from {} to {}: {}",
            whole_seconds(first),
            whole_seconds(last),
            reasons.join(", ")
        ));
        match store.audit_waiting(&record, now).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.restore(taken);
                Err(e)
            }
        }
    }
}

fn whole_seconds(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The worker that writes the tally every [`TALLY_INTERVAL`], and once more when stopped.
pub struct TallyRecorder {
    pub tally: Arc<RefusalTally>,
    pub store: Store,
    pub clock: Arc<dyn crate::clock::TimeSource>,
}

impl TallyRecorder {
    pub async fn run(self, mut stop: StopSignal) {
        let mut ticks = tokio::time::interval(TALLY_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.stopped() => break,
                _ = ticks.tick() => self.write().await,
            }
        }
        self.write().await;
    }

    async fn write(&self) {
        if let Err(e) = self.tally.record(&self.store, self.clock.now()).await {
            tracing::error!(error = %e, "cannot write the tally of unverified refusals to the audit log; kept for the next attempt");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn counts_by_reason_and_restores_what_was_not_written() {
        let metrics = Metrics::new();
        let tally = RefusalTally::default();
        tally.count(&metrics, "missing-token", at(20));
        tally.count(&metrics, "expired", at(10));
        tally.count(&metrics, "missing-token", at(30));
        let taken = tally.take();
        assert_eq!(taken.by_reason.get("missing-token"), Some(&2));
        assert_eq!(taken.first, Some(at(10)));
        assert_eq!(taken.last, Some(at(30)));
        assert!(tally.take().first.is_none());
        tally.count(&metrics, "expired", at(5));
        tally.restore(taken);
        let merged = tally.take();
        assert_eq!(merged.by_reason.get("expired"), Some(&2));
        assert_eq!(merged.by_reason.get("missing-token"), Some(&2));
        assert_eq!(merged.first, Some(at(5)));
        assert_eq!(merged.last, Some(at(30)));
    }
}
