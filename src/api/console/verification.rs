//! "Verify now" on the audit page: the whole chain is re-hashed and every checkpoint
//! checked ([`crate::governance::verify`], as `referral-gateway audit verify` does), which
//! takes seconds to minutes on a long log. So the page starts it in the background (one
//! at a time per gateway process) and shows its progress and, once it ends, its outcome:
//! pages stay fast and a second click does not start a second run.

use std::sync::{Arc, Mutex};

use crate::domain::Timestamp;
use crate::governance::verify::{VerifyPolicy, VerifyProgress, verify_reporting};
use crate::security::signing::PublicKey;
use crate::store::Store;

/// The newest run: running, or ended with its outcome.
#[derive(Debug)]
struct Run {
    started_at: Timestamp,
    /// The staff member who started it (their subject, as in the audit log).
    started_by: String,
    progress: Arc<VerifyProgress>,
    ended: Option<Ended>,
}

#[derive(Debug, Clone)]
struct Ended {
    at: Timestamp,
    verified: bool,
    outcome: String,
}

/// The console's verification runs (shared by every worker of the staff listener).
#[derive(Debug, Default)]
pub struct Verifications {
    newest: Mutex<Option<Run>>,
}

/// What the audit page shows of the newest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    None,
    Running {
        started_at: Timestamp,
        started_by: String,
        checked: u64,
        head_seq: i64,
    },
    Ended {
        started_by: String,
        ended_at: Timestamp,
        verified: bool,
        outcome: String,
    },
}

impl Verifications {
    /// Starts a run unless one is running; `false` when one already was.
    pub fn start(
        self: &Arc<Self>,
        store: Store,
        keys: Vec<PublicKey>,
        policy: VerifyPolicy,
        started_by: &str,
        clock: Arc<dyn crate::clock::TimeSource>,
    ) -> bool {
        let now = Timestamp::from(clock.now());
        let progress = Arc::new(VerifyProgress::default());
        {
            let Ok(mut newest) = self.newest.lock() else {
                return false;
            };
            if newest.as_ref().is_some_and(|run| run.ended.is_none()) {
                return false;
            }
            *newest = Some(Run {
                started_at: now,
                started_by: started_by.to_owned(),
                progress: progress.clone(),
                ended: None,
            });
        }
        let this = self.clone();
        actix_web::rt::spawn(async move {
            let result = verify_reporting(&store, &keys, &policy, &progress).await;
            let (verified, outcome) = match result {
                Ok(v) => (
                    true,
                    format!(
                        "The chain verifies: {} entries and {} signed checkpoints, up to entry {}; {} entries after the newest checkpoint.",
                        v.entries, v.checkpoints, v.head_seq, v.uncovered
                    ),
                ),
                Err(e) => {
                    tracing::warn!(first_bad_entry = ?e.first_bad_entry(), "the console's chain verification failed");
                    (false, format!("The chain does NOT verify: {e}"))
                }
            };
            let ended = Ended {
                at: Timestamp::from(clock.now()),
                verified,
                outcome,
            };
            if let Ok(mut newest) = this.newest.lock()
                && let Some(run) = newest.as_mut()
                && Arc::ptr_eq(&run.progress, &progress)
            {
                run.ended = Some(ended);
            }
        });
        true
    }

    pub fn state(&self) -> RunState {
        use std::sync::atomic::Ordering;
        let Ok(newest) = self.newest.lock() else {
            return RunState::None;
        };
        match newest.as_ref() {
            None => RunState::None,
            Some(run) => match &run.ended {
                None => RunState::Running {
                    started_at: run.started_at,
                    started_by: run.started_by.clone(),
                    checked: run.progress.entries.load(Ordering::Relaxed),
                    head_seq: run.progress.head_seq.load(Ordering::Relaxed),
                },
                Some(ended) => RunState::Ended {
                    started_by: run.started_by.clone(),
                    ended_at: ended.at,
                    verified: ended.verified,
                    outcome: ended.outcome.clone(),
                },
            },
        }
    }
}
