//! The outbox relay: publishes stored outbox rows to RabbitMQ with publisher confirms.
//!
//! A row is marked published only after the broker's ack; a nack, an unroutable return or
//! a lost connection leaves it to be retried with capped exponential backoff and jitter.
//! A whole batch is published before its confirms are awaited (pipelining). The relay
//! reconnects by itself (its own supervisor loop: lapin does not reconnect on its own),
//! and redeclares the topology on every connection. Delivery is at least once: after a
//! crash between publish and commit a message can be sent twice, always with the same
//! `message_id` (the referral id), which consumers use to deduplicate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Notify;

use crate::clock::{SystemClock, TimeSource};
use crate::config::RelayConfig;
use crate::delivery::topology::{self, Topology, short, string};
use crate::domain::Timestamp;
use crate::metrics::Metrics;
use crate::store::committer::{Handed, RelayLink};
use crate::store::{ClaimedMessage, Store, StoreError};
use crate::worker::StopSignal;

/// Shared with `/readyz`: whether the relay holds a working broker connection.
#[derive(Debug, Default)]
pub struct RelayStatus {
    connected: AtomicBool,
}

impl RelayStatus {
    pub fn broker_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// How long a stopping relay goes on publishing the outbox (see `pump`); the workers'
/// stop timeout is 30 s.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the broker closed the channel")]
    ChannelClosed,
    #[error("no publisher confirm before the claims' lease ran out")]
    ConfirmTimeout,
}

pub struct Relay {
    store: Store,
    topology: Topology,
    url: String,
    config: RelayConfig,
    instance: String,
    wake: Arc<Notify>,
    status: Arc<RelayStatus>,
    metrics: Arc<Metrics>,
    /// Claims, leases and retry times are read from it.
    clock: Arc<dyn TimeSource>,
    /// A reloaded registry's topology (new agencies' queues), declared on the open
    /// channel before the next batch and on every later connection.
    updates: Option<tokio::sync::watch::Receiver<Topology>>,
    /// Referrals the committer wrote claimed for this relay and hands over once
    /// committed: published without a claim or a read (see [`Relay::hand_off`]).
    hand_off: Option<tokio::sync::mpsc::Receiver<Handed>>,
    /// Told to the committer: whether to hand referrals over (only while connected).
    accepting: Arc<AtomicBool>,
    /// The last round's confirmed rows being marked published (see `publish_round`).
    /// With the time from which a claim waits for it: half a lease before the earliest
    /// lease of its rows ends (after which they could be claimed again).
    marking: std::sync::Mutex<Option<(Marking, Timestamp)>>,
}

/// A round's confirmed rows being marked published: how many were.
type Marking = tokio::task::JoinHandle<Result<u64, StoreError>>;

/// What woke the relay while it waited.
enum Waited {
    Handed(Handed),
    /// The committer is gone: nothing more will be handed over.
    HandOffClosed,
    Poll,
    Other,
}

/// A random factor in [0.5, 1.0): "equal jitter", so retries of many rows spread out.
fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0
}

/// Delay before attempt `n + 1` after `n` failures: 500 ms doubling, capped, jittered.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base =
        Duration::from_millis(500).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    base.min(cap).mul_f64(jitter())
}

/// `1` from `https://.../cmht.v1.json`.
fn schema_version(schema_id: &str) -> &str {
    schema_id
        .rsplit('/')
        .next()
        .and_then(|file| file.split('.').find(|p| p.starts_with('v')))
        .map_or("", |v| &v[1..])
}

fn properties(msg: &ClaimedMessage) -> BasicProperties {
    let mut headers = FieldTable::default();
    let referral_id = msg.referral_id.to_string();
    for (key, value) in [
        ("referral_id", referral_id.as_str()),
        ("schema_id", msg.schema_id.as_str()),
        ("schema_version", schema_version(&msg.schema_id)),
        ("priority", msg.priority.as_str()),
        ("sender_agency", msg.sender_agency.as_str()),
        ("recipient_agency", msg.recipient_agency.as_str()),
        ("service_type", msg.service_type.as_str()),
    ] {
        headers.insert(key.into(), string(value));
    }
    BasicProperties::default()
        .with_message_id(short(&msg.message_id))
        .with_content_type(short("application/json"))
        .with_delivery_mode(2)
        .with_timestamp(
            msg.created_at
                .to_offset_date_time()
                .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
                .unwrap_or_default(),
        )
        .with_correlation_id(short(&msg.correlation_id))
        .with_type(short(msg.message_type.as_str()))
        .with_app_id(short("referral-gateway"))
        .with_headers(headers)
}

impl Relay {
    pub fn new(
        store: Store,
        topology: Topology,
        url: String,
        config: RelayConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let instance = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            store,
            topology,
            url,
            config,
            instance,
            wake,
            status: Arc::new(RelayStatus::default()),
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(SystemClock),
            updates: None,
            hand_off: None,
            accepting: Arc::new(AtomicBool::new(false)),
            marking: std::sync::Mutex::new(None),
        }
    }

    /// The committer's side of this relay: committed referrals are handed over through
    /// it (at most `depth` batches waiting; beyond that the committer writes them
    /// unclaimed and wakes the relay to claim them).
    pub fn hand_off(&mut self, depth: usize) -> RelayLink {
        let (sender, receiver) = tokio::sync::mpsc::channel(depth.max(1));
        self.hand_off = Some(receiver);
        RelayLink {
            hand_off: sender,
            instance: self.instance.clone(),
            lease: self.config.lease,
            wake: self.wake.clone(),
            connected: self.accepting.clone(),
        }
    }

    /// Declares each topology sent on `updates` (a configuration reload's). Names never
    /// change (the namespace is not reloadable): only queues and bindings are added;
    /// nothing is deleted.
    pub fn with_topology_updates(
        mut self,
        updates: tokio::sync::watch::Receiver<Topology>,
    ) -> Self {
        self.updates = Some(updates);
        self
    }

    /// Reads "now" (claims, leases, retry times) from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn TimeSource>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> Timestamp {
        Timestamp::from(self.clock.now())
    }

    /// Reports confirms, latency and connection state into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn status(&self) -> Arc<RelayStatus> {
        self.status.clone()
    }

    /// This relay's instance id (the prefix of `outbox.claimed_by` for rows it publishes).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs until it is asked to stop (or the stop signal's sender is gone); finishes the
    /// batch in flight first, then publishes what was committed before the stop.
    pub async fn run(mut self, shutdown: impl Into<StopSignal>) {
        let mut shutdown = shutdown.into();
        let mut updates = self.updates.take();
        let mut hand_off = self.hand_off.take();
        if self.store.backend().single_writer() {
            match self.store.release_stale_claims(&self.instance).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    rows = n,
                    "released outbox claims left by a previous process"
                ),
                Err(e) => tracing::error!(error = %e, "cannot release stale outbox claims"),
            }
        }
        let mut failures = 0u32;
        while !shutdown.is_stopped() {
            if let Some(updates) = updates.as_mut() {
                // The newest topology is declared on this connection.
                updates.mark_unchanged();
                self.topology = updates.borrow().clone();
            }
            match topology::connect_confirming(&self.url).await {
                Ok((connection, channel)) => match self.topology.declare(&channel).await {
                    Ok(()) => {
                        failures = 0;
                        self.status.connected.store(true, Ordering::Relaxed);
                        self.accepting.store(true, Ordering::Relaxed);
                        self.metrics.broker_connected.set(1);
                        tracing::info!(instance = %self.instance, "relay connected to the broker");
                        let mut result = self
                            .pump(&channel, &mut shutdown, &mut updates, &mut hand_off)
                            .await;
                        if let Err(e) = self.marked().await {
                            result = result.and(Err(e.into()));
                        }
                        self.accepting.store(false, Ordering::Relaxed);
                        self.status.connected.store(false, Ordering::Relaxed);
                        self.metrics.broker_connected.set(0);
                        // What was handed over meanwhile goes back to the outbox, for
                        // whichever relay connects first.
                        while let Some(handed) = hand_off.as_mut().and_then(|h| h.try_recv().ok()) {
                            self.release_handed(&handed).await;
                        }
                        if let Err(e) = result {
                            tracing::warn!(error = %e, "relay lost the broker; reconnecting");
                        }
                        // Bounded: a broker blocking publishers takes no frame, not even
                        // this close, until its alarm clears.
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            connection.close(200, "relay stopping".into()),
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot declare the broker topology (an ACCESS_REFUSED means the gateway's broker user may not declare a queue: import `broker definitions` again after registering an agency, docs/onboarding.md)");
                        let _ = connection.close(200, "topology failed".into()).await;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "broker unreachable; referrals wait in the outbox")
                }
            }
            if shutdown.is_stopped() {
                break;
            }
            failures = failures.saturating_add(1);
            let delay = backoff(failures, self.config.max_backoff);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.stopped() => {}
            }
        }
        tracing::info!("relay stopped");
    }

    async fn pump(
        &self,
        channel: &Channel,
        shutdown: &mut StopSignal,
        updates: &mut Option<tokio::sync::watch::Receiver<Topology>>,
        hand_off: &mut Option<tokio::sync::mpsc::Receiver<Handed>>,
    ) -> Result<(), RelayError> {
        // The outbox is read when woken (rows written unclaimed, retries due), on every
        // `poll_interval`, and again at once after a read that found rows.
        let mut poll_due = true;
        let mut next_poll = tokio::time::Instant::now();
        while !shutdown.is_stopped() {
            if !channel.status().connected() {
                return Err(RelayError::ChannelClosed);
            }
            if let Some(updates) = updates.as_mut()
                && updates.has_changed().unwrap_or(false)
            {
                let topology = updates.borrow_and_update().clone();
                topology.declare(channel).await?;
                tracing::info!("relay declared the reloaded configuration's queues");
            }
            // Hand-overs and the outbox take turns, so that neither waits on the other.
            let mut worked = false;
            if let Some(handed) = hand_off.as_mut().and_then(|h| h.try_recv().ok()) {
                self.publish_handed(channel, handed, hand_off).await?;
                worked = true;
            }
            if futures_util::FutureExt::now_or_never(self.wake.notified()).is_some() {
                poll_due = true;
            }
            if poll_due || tokio::time::Instant::now() >= next_poll {
                poll_due = false;
                next_poll = tokio::time::Instant::now() + self.config.poll_interval;
                match self.claim().await {
                    Ok((token, batch, until)) if !batch.is_empty() => {
                        self.metrics.relay_rows("claimed", batch.len());
                        self.publish_batch(channel, &token, &batch, until).await?;
                        poll_due = true;
                        worked = true;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "relay cannot read the outbox"),
                }
            }
            if worked {
                continue;
            }
            let waited = tokio::select! {
                handed = next_handed(hand_off) => match handed {
                    Some(handed) => Waited::Handed(handed),
                    None => Waited::HandOffClosed,
                },
                () = self.wake.notified() => Waited::Poll,
                () = tokio::time::sleep_until(next_poll) => Waited::Other,
                () = shutdown.stopped() => Waited::Other,
            };
            match waited {
                Waited::Handed(handed) => self.publish_handed(channel, handed, hand_off).await?,
                Waited::HandOffClosed => *hand_off = None,
                Waited::Poll => poll_due = true,
                Waited::Other => {}
            }
        }
        // Stopping: publish what was committed before the stop (every referral answered
        // 202 by now) while the broker is there, for at most DRAIN_TIME: the rest waits in
        // the outbox for the next start. Well within the worker's stop timeout, so that
        // the last round is marked published while the committer still runs (rows
        // confirmed but left claimed would be published again after the restart).
        let drain_until = tokio::time::Instant::now() + DRAIN_TIME;
        while channel.status().connected() && tokio::time::Instant::now() < drain_until {
            if let Some(handed) = hand_off.as_mut().and_then(|h| h.try_recv().ok()) {
                self.publish_handed(channel, handed, hand_off).await?;
                continue;
            }
            let (token, batch, until) = self.claim().await?;
            if batch.is_empty() {
                break;
            }
            self.metrics.relay_rows("claimed", batch.len());
            self.publish_batch(channel, &token, &batch, until).await?;
        }
        Ok(self.marked().await?)
    }

    /// Publishes referrals the committer handed over, with every further hand-over
    /// already waiting (up to the relay's batch size in all) in the same round, except
    /// those whose claim's lease is (nearly) over: a claim of the outbox may take them, so
    /// they go back to it.
    async fn publish_handed(
        &self,
        channel: &Channel,
        first: Handed,
        hand_off: &mut Option<tokio::sync::mpsc::Receiver<Handed>>,
    ) -> Result<(), RelayError> {
        let limit = usize::try_from(self.config.batch_size).unwrap_or(usize::MAX);
        let mut round = vec![first];
        let mut size = round[0].messages.len();
        while size < limit
            && let Some(next) = hand_off.as_mut().and_then(|h| h.try_recv().ok())
        {
            size += next.messages.len();
            round.push(next);
        }
        let margin = self.half_lease();
        let now = self.now();
        let mut groups = Vec::with_capacity(round.len());
        let mut until: Option<Timestamp> = None;
        for handed in &round {
            if now.saturating_add(margin) >= handed.lease_until {
                tracing::info!(
                    rows = handed.messages.len(),
                    "handed-over referrals reached the relay late; back to the outbox"
                );
                self.release_handed(handed).await;
            } else {
                self.metrics
                    .relay_rows("handed_over", handed.messages.len());
                groups.push((handed.token.as_str(), handed.messages.as_slice()));
                until = Some(until.map_or(handed.lease_until, |u| u.min(handed.lease_until)));
            }
        }
        match until {
            Some(until) => self.publish_round(channel, &groups, until).await,
            None => Ok(()),
        }
    }

    /// Gives up a hand-over's claim: its rows are claimable again at once (if this fails,
    /// once the lease has passed).
    async fn release_handed(&self, handed: &Handed) {
        if let Err(e) = self.store.release_claim(&handed.token).await {
            tracing::warn!(error = %e, "cannot release handed-over outbox rows; they wait for their lease");
        }
    }

    /// Claims the next batch of due outbox rows under a fresh claim token. A row being
    /// marked must not be claimed and published again: once its lease may have passed
    /// (a slow marking, or a clock moved on), the marking is awaited first.
    /// Returns the claim's token, its rows and its lease.
    async fn claim(&self) -> Result<(String, Vec<ClaimedMessage>, Timestamp), StoreError> {
        let safe_until = self
            .marking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, until)| *until);
        if safe_until.is_some_and(|until| self.now() >= until) {
            self.marked().await?;
        }
        let lease = time::Duration::try_from(self.config.lease).unwrap_or(time::Duration::MAX);
        let token = format!("{}:{}", self.instance, uuid::Uuid::new_v4().simple());
        let now = self.now();
        let until = now.saturating_add(lease);
        let batch = self
            .store
            .claim_outbox(&token, now, until, i64::from(self.config.batch_size))
            .await?;
        Ok((token, batch, until))
    }

    async fn publish_batch(
        &self,
        channel: &Channel,
        token: &str,
        batch: &[ClaimedMessage],
        until: Timestamp,
    ) -> Result<(), RelayError> {
        self.publish_round(channel, &[(token, batch)], until).await
    }

    /// Publishes groups of rows, each claimed under its token (the earliest of their
    /// leases ending at `until`), as one pipelined round: every message sent before any
    /// confirm is awaited, then the failed ones released and the rest marked published in
    /// one write.
    async fn publish_round(
        &self,
        channel: &Channel,
        groups: &[(&str, &[ClaimedMessage])],
        until: Timestamp,
    ) -> Result<(), RelayError> {
        let started = std::time::Instant::now();
        let batch: Vec<(&str, &ClaimedMessage)> = groups
            .iter()
            .flat_map(|(token, messages)| messages.iter().map(move |m| (*token, m)))
            .collect();
        self.metrics.relay_batch_size.observe(batch.len() as f64);
        // Publishing and confirms are awaited only while the rows' lease lasts (less a
        // margin): after it, another relay may claim and publish them, so a stalled broker
        // (which lapin notices only after two heartbeats), or one blocking publishers for
        // a resource alarm (lapin then holds back every frame), must not keep this round
        // waiting. What is not sent or confirmed by then is released and the connection
        // dropped.
        let left = until.micros_since(self.now()).max(0);
        let margin = (left / 10).min(2_000_000);
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_micros(u64::try_from(left - margin).unwrap_or(0));
        let mut in_flight = Vec::with_capacity(batch.len());
        let mut lost: Option<RelayError> = None;
        let mut not_sent = "not sent: broker connection lost";
        for &(token, msg) in &batch {
            let publish = channel.basic_publish(
                self.topology.exchange(msg.exchange).into(),
                msg.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                msg.payload.as_bytes(),
                properties(msg),
            );
            match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => in_flight.push(((token, msg), confirm)),
                Ok(Err(e)) => {
                    lost = Some(e.into());
                    break;
                }
                Err(_) => {
                    not_sent = "perhaps not sent before the lease ran out (is the broker blocking publishers?)";
                    lost = Some(RelayError::ConfirmTimeout);
                    break;
                }
            }
        }
        let mut failed: Vec<((&str, &ClaimedMessage), String)> = batch[in_flight.len()..]
            .iter()
            .map(|m| (*m, not_sent.to_owned()))
            .collect();
        for (msg, confirm) in in_flight {
            let Ok(outcome) = tokio::time::timeout_at(deadline, confirm).await else {
                self.metrics.confirm("lost");
                failed.push((msg, "no confirm before the lease ran out".into()));
                lost.get_or_insert(RelayError::ConfirmTimeout);
                continue;
            };
            self.metrics
                .publish_latency_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.confirm(match &outcome {
                Ok(Confirmation::Ack(None)) => "ack",
                Ok(Confirmation::Ack(Some(_))) => "returned",
                Ok(Confirmation::Nack(_) | Confirmation::NotRequested) => "nack",
                Err(_) => "lost",
            });
            match outcome {
                Ok(Confirmation::Ack(None)) => {}
                Ok(Confirmation::Ack(Some(returned))) => failed.push((
                    msg,
                    format!(
                        "returned by the broker: {} {} (no queue bound for this routing key)",
                        returned.reply_code, returned.reply_text
                    ),
                )),
                Ok(Confirmation::Nack(_)) => failed.push((msg, "nacked by the broker".into())),
                Ok(Confirmation::NotRequested) => {
                    failed.push((msg, "channel is not in confirm mode".into()))
                }
                Err(e) => {
                    failed.push((msg, format!("no confirm: {e}")));
                    lost.get_or_insert(e.into());
                }
            }
        }
        let now = self.now();
        for ((token, msg), error) in &failed {
            let failures = u32::try_from(msg.attempts).unwrap_or(u32::MAX);
            let delay = backoff(failures, self.config.max_backoff);
            let at =
                now.saturating_add(time::Duration::try_from(delay).unwrap_or(time::Duration::MAX));
            tracing::warn!(referral_id = %msg.referral_id, attempts = msg.attempts, error = %error, "publish failed; will retry");
            // A database fault is no reason to drop the broker connection, nor this
            // round's confirmed rows: the row stays claimed and is published again once
            // its lease has passed.
            if let Err(e) = self
                .store
                .release_outbox(msg.outbox_id, token, at, error)
                .await
            {
                tracing::error!(error = %e, referral_id = %msg.referral_id, "cannot release a row whose publish failed; it is retried after its lease");
            }
        }
        let tokens: Vec<String> = groups
            .iter()
            .map(|(token, _)| (*token).to_owned())
            .collect();
        let failed_ids: std::collections::HashSet<i64> =
            failed.iter().map(|((_, msg), _)| msg.outbox_id).collect();
        let confirmed: Vec<i64> = batch
            .iter()
            .map(|(_, msg)| msg.outbox_id)
            .filter(|id| !failed_ids.contains(id))
            .collect();
        // Marked while the next round publishes: the round before's marking is awaited
        // first, so that at most one is in flight. Should it fail, its rows stay claimed
        // and are published again once their lease has passed (at least once); this
        // round's marking starts all the same.
        if let Err(e) = self.marked().await {
            tracing::error!(error = %e, "marking the previous round published failed; its rows are published again after their lease");
        }
        if !confirmed.is_empty() {
            let store = self.store.clone();
            let marking =
                tokio::spawn(
                    async move { store.mark_claimed_published(tokens, confirmed, now).await },
                );
            // Claimable again once the earliest lease has passed: awaited by a claim from
            // half a lease before (see `claim`).
            *self.marking.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((marking, until.saturating_add(-self.half_lease())));
        }
        match lost {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Half the claims' lease: a hand-over with less left goes back to the outbox, and a
    /// claim waits for a marking whose rows have less left.
    fn half_lease(&self) -> time::Duration {
        time::Duration::try_from(self.config.lease / 2).unwrap_or(time::Duration::ZERO)
    }

    /// Waits for the marking of the last round published, if one is in flight.
    async fn marked(&self) -> Result<(), StoreError> {
        let marking = self
            .marking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((marking, _)) = marking {
            let published = marking
                .await
                .map_err(|e| StoreError::Corrupt(format!("marking published rows: {e}")))??;
            tracing::debug!(published, "batch confirmed by the broker");
        }
        Ok(())
    }
}

/// The next hand-over, or never without a hand-off channel.
async fn next_handed(hand_off: &mut Option<tokio::sync::mpsc::Receiver<Handed>>) -> Option<Handed> {
    match hand_off {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cap = Duration::from_secs(60);
        let first = backoff(1, cap);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        let fifth = backoff(5, cap);
        assert!(fifth >= Duration::from_secs(4) && fifth <= Duration::from_secs(8));
        for n in [20, 100, u32::MAX] {
            let d = backoff(n, cap);
            assert!(d >= Duration::from_secs(30) && d <= cap, "{d:?}");
        }
    }

    #[test]
    fn schema_versions_come_from_schema_ids() {
        assert_eq!(schema_version("https://x/schemas/cmht.v1.json"), "1");
        assert_eq!(
            schema_version("https://x/schemas/substance-misuse.v12.json"),
            "12"
        );
        assert_eq!(schema_version("nothing"), "");
    }
}
