//! Operator commands that inspect and repair delivery: the outbox and dead-letter queues.
//! They print identifiers and counts only, never a referral's content.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::{Channel, Confirmation};

use crate::delivery::topology::{Topology, connect_confirming};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("agency '{0}' is not a receiving agency in the config")]
    NotAReceiver(String),
    #[error(
        "the broker did not confirm the replayed message {0}; it stays in the dead-letter queue"
    )]
    NotConfirmed(String),
}

/// `outbox status`: backlog and rows that keep failing.
pub async fn outbox_status(store: &Store) -> Result<String, OpsError> {
    let backlog = store.outbox_backlog().await?;
    let mut out = format!("pending: {}\n", backlog.pending);
    if let Some(age) = backlog.oldest_age_seconds(time::OffsetDateTime::now_utc()) {
        out.push_str(&format!("oldest pending: {age:.1} s old\n"));
    }
    let failing = store.failing_outbox(50).await?;
    if !failing.is_empty() {
        out.push_str(
            "failing rows (referral id, routing key, attempts, next attempt, last error):\n",
        );
        for row in failing {
            let next = row
                .next_attempt_at
                .to_offset_date_time()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  {}  {}  {}  {}  {}\n",
                row.referral_id,
                row.routing_key,
                row.attempts,
                next,
                row.last_error.unwrap_or_default()
            ));
        }
    }
    Ok(out)
}

fn dead_queue(topology: &Topology, receivers: &[String], agency: &str) -> Result<String, OpsError> {
    if receivers.iter().any(|r| r == agency) {
        Ok(topology.dead_letter_queue(agency))
    } else {
        Err(OpsError::NotAReceiver(agency.to_owned()))
    }
}

async fn take(
    channel: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::Delivery>, OpsError> {
    Ok(channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await?
        .map(|m| m.delivery))
}

/// `dlq list`: the dead-lettered messages of one agency, left in place.
pub async fn dlq_list(
    url: &str,
    topology: &Topology,
    receivers: &[String],
    agency: &str,
) -> Result<String, OpsError> {
    let queue = dead_queue(topology, receivers, agency)?;
    let (connection, channel) = connect_confirming(url).await?;
    let mut out = String::new();
    let mut held = Vec::new();
    while let Some(delivery) = take(&channel, &queue).await? {
        let p = &delivery.properties;
        out.push_str(&format!(
            "{}  {}  {}  correlation {}  dead-lettered: {}\n",
            p.message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            p.kind()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            delivery.routing_key,
            p.correlation_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            death_reason(p),
        ));
        held.push(delivery);
    }
    // Unacknowledged until here, so nothing was counted twice; now put them all back,
    // in one call up to the last, so that they keep their order in the queue.
    if let Some(last) = held.last() {
        last.acker
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await?;
    }
    let _ = connection.close(200, "dlq list done".into()).await;
    out.push_str(&format!(
        "{} dead-lettered message(s) in {queue}\n",
        held.len()
    ));
    Ok(out)
}

/// Why the broker dead-lettered a message: the newest `x-death` entry's `reason`
/// (`rejected` by the consumer, `delivery_limit` after too many redeliveries, `expired`,
/// `maxlen`), or `-`.
fn death_reason(properties: &lapin::BasicProperties) -> String {
    use lapin::types::AMQPValue;
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-death"))
        .and_then(|deaths| match deaths {
            AMQPValue::FieldArray(deaths) => deaths.as_slice().first(),
            _ => None,
        })
        .and_then(|death| match death {
            AMQPValue::FieldTable(death) => death.inner().get("reason"),
            _ => None,
        })
        .and_then(|reason| match reason {
            AMQPValue::LongString(reason) => Some(reason.to_string()),
            AMQPValue::ShortString(reason) => Some(reason.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// `dlq replay`: republish one agency's dead-lettered messages to the referrals exchange
/// (same routing key, properties and body); each is removed from the dead-letter queue
/// only after the broker confirms the replay.
pub async fn dlq_replay(
    url: &str,
    topology: &Topology,
    receivers: &[String],
    agency: &str,
    limit: usize,
) -> Result<usize, OpsError> {
    let queue = dead_queue(topology, receivers, agency)?;
    let (connection, channel) = connect_confirming(url).await?;
    let mut replayed = 0;
    while replayed < limit {
        let Some(delivery) = take(&channel, &queue).await? else {
            break;
        };
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let confirm = channel
            .basic_publish(
                topology.referrals_exchange().into(),
                delivery.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &delivery.data,
                delivery.properties.clone(),
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
            return Err(OpsError::NotConfirmed(id));
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        tracing::info!(referral_id = %id, "replayed from the dead-letter queue");
        replayed += 1;
    }
    let _ = connection.close(200, "dlq replay done".into()).await;
    Ok(replayed)
}
