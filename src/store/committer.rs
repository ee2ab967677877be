//! One committer per process owns the write path. Request handlers prepare their writes
//! (a referral with its outbox row, clocks, idempotency key and audit entry; an event; an
//! audit entry) and hand them over a bounded channel; the committer takes whatever is
//! waiting (up to `commit_batch_max`, with no delay when idle: the next batch forms while
//! one commits), writes it in one transaction ([`super::batch`]) and answers each waiter
//! once it is committed. A full channel is refused at once ([`StoreError::Busy`]: 503).
//!
//! A write that cannot be committed fails alone: a batch whose idempotency keys were
//! taken meanwhile is written again without those referrals (answered as replays or
//! conflicts), and a batch that fails otherwise is written again item by item.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use super::batch::{BatchFailure, Claim, Committed, PreparedReferral, Write, Written, write_batch};
use super::outbox::ClaimedMessage;
use super::{Inserted, Store, StoreError};
use crate::domain::Timestamp;
use crate::metrics::Metrics;
use crate::worker::StopSignal;

/// How the committer batches, from `[database]`.
#[derive(Debug, Clone, Copy)]
pub struct CommitLimits {
    /// The most writes in one transaction.
    pub batch_max: usize,
    /// The most writes waiting; more are refused with [`StoreError::Busy`].
    pub queue_depth: usize,
    /// The most batches committing at once (each on its own connection; 1 on SQLite).
    pub transactions: usize,
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The handlers' side: hands a write to the committer and waits for its commit.
#[derive(Clone)]
pub struct CommitHandle {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for CommitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitHandle")
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl CommitHandle {
    pub(crate) async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Pending { write, reply })
            .map_err(|_| StoreError::Busy)?;
        answer.await.map_err(|_| StoreError::CommitterStopped)?
    }

    /// [`Self::write`], waiting for room in the queue rather than refusing.
    pub(crate) async fn write_waiting(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { write, reply })
            .await
            .map_err(|_| StoreError::CommitterStopped)?;
        answer.await.map_err(|_| StoreError::CommitterStopped)?
    }

    /// Writes waiting for the committer.
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// Referral messages a committed batch wrote already claimed for this process's relay
/// (see [`Claim`]), handed over in memory: the relay publishes them without claiming
/// and reading them back.
pub struct Handed {
    /// The claim token of the rows, as if the relay had claimed them.
    pub token: String,
    /// The claim's lease: a relay that gets them later leaves them to the next claim.
    pub lease_until: Timestamp,
    pub messages: Vec<ClaimedMessage>,
}

/// How the committer reaches this process's relay.
pub struct RelayLink {
    /// Bounded: when it is full, a batch's outbox rows are written unclaimed and the
    /// relay is woken to claim them.
    pub hand_off: mpsc::Sender<Handed>,
    /// The relay's instance id: the prefix of its claim tokens.
    pub instance: String,
    pub lease: Duration,
    /// Wakes the relay to claim rows from the database.
    pub wake: Arc<Notify>,
    /// Whether the relay holds a broker connection: while it does not, nothing is
    /// handed to it (rows wait in the outbox, claimable by any relay).
    pub connected: Arc<std::sync::atomic::AtomicBool>,
}

/// The committer task: run it with [`crate::worker::Worker`].
pub struct Committer {
    /// A store without a committer: this one writes directly.
    store: Store,
    queue: mpsc::Receiver<Pending>,
    batch_max: usize,
    transactions: usize,
    metrics: Option<Arc<Metrics>>,
    relay: Option<RelayLink>,
}

impl Committer {
    /// A committer writing to `store`, and the handle to give it writes through.
    pub fn new(store: Store, limits: CommitLimits) -> (CommitHandle, Self) {
        let (sender, queue) = mpsc::channel(limits.queue_depth.max(1));
        let committer = Self {
            store: store.without_committer(),
            queue,
            batch_max: limits.batch_max.max(1),
            transactions: limits.transactions.max(1),
            metrics: None,
            relay: None,
        };
        (CommitHandle { queue: sender }, committer)
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Hands committed referrals to the relay (or wakes it), instead of leaving them for
    /// its next poll.
    pub fn with_relay(mut self, relay: RelayLink) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Commits batches until stopped, then refuses new writes and commits those waiting.
    /// Up to `transactions` batches commit at once: a batch forms from what is waiting
    /// as soon as a transaction is free, so the next one writes its rows while the one
    /// before waits for its commit.
    pub async fn run(mut self, mut stop: StopSignal) {
        use futures_util::StreamExt as _;
        // Owned apart from `self`, which the batches committing borrow.
        let (_, closed) = mpsc::channel(1);
        let mut queue = std::mem::replace(&mut self.queue, closed);
        let this = &self;
        let mut committing = futures_util::stream::FuturesUnordered::new();
        let mut stopping = false;
        loop {
            let mut batch = Vec::with_capacity(this.batch_max);
            tokio::select! {
                biased;
                // Stopping: no new writes; those waiting are still committed.
                () = stop.stopped(), if !stopping => {
                    stopping = true;
                    queue.close();
                }
                Some(()) = committing.next(), if !committing.is_empty() => {}
                taken = queue.recv_many(&mut batch, this.batch_max),
                    if committing.len() < this.transactions =>
                {
                    // Closed (stopping, or every handle gone) and empty.
                    if taken == 0 {
                        break;
                    }
                    committing.push(this.commit(batch));
                }
            }
        }
        while committing.next().await.is_some() {}
    }

    async fn commit(&self, batch: Vec<Pending>) {
        let started = Instant::now();
        let size = batch.len();
        let (mut writes, replies): (Vec<Write>, Vec<_>) =
            batch.into_iter().map(|p| (p.write, p.reply)).unzip();
        // Room to hand this batch's referrals to the relay, reserved before writing them
        // claimed, so that no claimed row is left waiting for its lease to pass.
        let latest = writes
            .iter()
            .filter_map(|w| match w {
                Write::Referral(r) => Some(r.at),
                _ => None,
            })
            .max();
        let hand_off = match (&self.relay, latest) {
            (Some(relay), Some(at)) if relay.connected.load(Ordering::Relaxed) => {
                relay.hand_off.try_reserve().ok().map(|permit| {
                    let lease = i64::try_from(relay.lease.as_micros()).unwrap_or(i64::MAX);
                    let claim = Claim {
                        token: format!("{}:{}", relay.instance, uuid::Uuid::new_v4().simple()),
                        until: at.saturating_add(lease),
                    };
                    (permit, claim)
                })
            }
            _ => None,
        };
        let claim = hand_off.as_ref().map(|(_, claim)| claim);
        match write_all(&self.store, &writes, claim).await {
            Ok(Committed { outcomes, claimed }) => {
                let created = writes.iter().zip(&outcomes).any(|(w, o)| {
                    matches!(
                        (w, o),
                        (Write::Referral(_), Ok(Written::Referral(Inserted::Created)))
                    )
                });
                match hand_off {
                    Some((permit, claim)) if !claimed.is_empty() => {
                        let messages = claimed
                            .iter()
                            .filter_map(|(i, outbox_id)| match writes.get_mut(*i) {
                                Some(Write::Referral(r)) => Some(handed_message(r, *outbox_id)),
                                _ => None,
                            })
                            .collect();
                        permit.send(Handed {
                            lease_until: Timestamp::from_micros(claim.until),
                            token: claim.token,
                            messages,
                        });
                    }
                    _ if created => self.wake_relay(),
                    _ => {}
                }
                answer(replies, outcomes);
            }
            Err(e) if writes.len() == 1 => {
                tracing::error!(error = %e, "write failed");
                answer_one(replies.into_iter().next(), Err(e));
            }
            Err(StoreError::CommitUnknown(why)) => {
                // It may have committed: written again, its audit entries could be
                // appended twice. Every waiter is told the outcome is unknown (500): a
                // referral's sender retries with its Idempotency-Key and gets its receipt
                // if it was stored.
                tracing::error!(error = %why, size, "a batch's outcome is unknown");
                for reply in replies {
                    answer_one(Some(reply), Err(StoreError::CommitUnknown(why.clone())));
                }
            }
            Err(e) => {
                // Nothing was written: each write again on its own, so that only the one
                // at fault fails.
                tracing::warn!(error = %e, size, "batch failed; writing its items one by one");
                if let Some(metrics) = &self.metrics {
                    metrics.commit_batches_split.inc();
                }
                let mut created = false;
                for (write, reply) in writes.iter().zip(replies) {
                    let outcome = write_all(&self.store, std::slice::from_ref(write), None)
                        .await
                        .and_then(|mut committed| {
                            committed
                                .outcomes
                                .pop()
                                .unwrap_or_else(|| Err(unanswered()))
                        });
                    match &outcome {
                        Err(e) => tracing::error!(error = %e, "write failed"),
                        Ok(Written::Referral(Inserted::Created)) => created = true,
                        Ok(_) => {}
                    }
                    answer_one(Some(reply), outcome);
                }
                if created {
                    self.wake_relay();
                }
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.commit_batch_size.observe(size as f64);
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Committer {
    fn wake_relay(&self) {
        if let Some(relay) = &self.relay {
            relay.wake.notify_one();
        }
    }
}

/// The message the relay publishes for a referral written claimed as outbox row
/// `outbox_id` (its plaintext payload moves into it).
fn handed_message(r: &mut PreparedReferral, outbox_id: i64) -> ClaimedMessage {
    ClaimedMessage {
        outbox_id,
        referral_id: r.referral_id,
        message_id: r.id.clone(),
        message_type: r.outbox.message_type(),
        exchange: r.outbox.exchange(),
        routing_key: r.outbox.routing_key().to_owned(),
        attempts: 1,
        created_at: Timestamp::from_micros(r.at),
        payload: std::mem::take(&mut r.plaintext),
        priority: r.priority,
        sender_agency: r.sender.clone(),
        recipient_agency: r.recipient.clone(),
        service_type: r.service_type.clone(),
        schema_id: r.schema_id.clone(),
        correlation_id: r.correlation_id.clone(),
    }
}

/// Writes a batch, again without the referrals whose keys turn out to be taken.
pub(crate) async fn write_all(
    store: &Store,
    writes: &[Write],
    claim: Option<&Claim>,
) -> Result<Committed, StoreError> {
    let mut taken = Vec::new();
    loop {
        match write_batch(store, writes, &taken, claim).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(BatchFailure::KeysTaken(more)) if more.iter().any(|i| !taken.contains(i)) => {
                taken.extend(more);
            }
            Err(BatchFailure::KeysTaken(_)) => {
                return Err(StoreError::Corrupt(
                    "an idempotency key was reported taken twice".into(),
                ));
            }
            Err(BatchFailure::Failed(e)) => return Err(e),
        }
    }
}

fn unanswered() -> StoreError {
    StoreError::Corrupt("a write in a committed batch has no outcome".into())
}

fn answer(
    replies: Vec<oneshot::Sender<Result<Written, StoreError>>>,
    outcomes: Vec<Result<Written, StoreError>>,
) {
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "write failed");
        }
        // A waiter that has gone (its client hung up) needs no answer.
        let _ = reply.send(outcome);
    }
}

fn answer_one(
    reply: Option<oneshot::Sender<Result<Written, StoreError>>>,
    outcome: Result<Written, StoreError>,
) {
    if let Some(reply) = reply {
        let _ = reply.send(outcome);
    }
}
