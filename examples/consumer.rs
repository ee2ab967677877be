//! A receiving service's consumer, the safe way (see docs/consuming.md):
//! manual acknowledgements, a bounded prefetch, deduplication by `message_id` (the
//! referral id), and ack only after the referral is safely handed over. Here "handed
//! over" means written to `--out DIR/<referral-id>.json`; a real service writes to its
//! case system instead. A message that cannot be handled is rejected without requeue,
//! so the broker moves it to the agency's dead-letter queue.
//!
//!     cargo run --example consumer -- \
//!         --amqp-url 'amqps://prod.coventry-cmht:PASSWORD@broker.example:5671/%2f' \
//!         --namespace prod --agency coventry-cmht --queue referrals --out received/
//!
//! `--queue status` reads a sending agency's `status.<agency>` queue instead (status
//! events, written to `OUT/status/<message-id>.json`). With `--max N` it stops after N
//! new messages, with `--idle-exit S` after S quiet seconds.

use std::path::PathBuf;

use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

#[derive(Parser)]
struct Args {
    /// Broker URL (amqps:// in production, with the agency's own broker user).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Namespace prefix of the gateway's queues, if the gateway uses one.
    #[arg(long, default_value = "")]
    namespace: String,
    /// This service's agency id: the queue is `referrals.<agency>` (or `status.<agency>`).
    #[arg(long)]
    agency: String,
    /// Which of the agency's queues: `referrals` (a receiving service) or `status` (a
    /// sending service's status events).
    #[arg(long, value_enum, default_value = "referrals")]
    queue: Queue,
    /// Where referrals are handed over (one file per referral id).
    #[arg(long)]
    out: PathBuf,
    /// Stop after this many new referrals.
    #[arg(long)]
    max: Option<usize>,
    /// Stop when no message has arrived for this many seconds.
    #[arg(long)]
    idle_exit: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Queue {
    Referrals,
    Status,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let prefix = if args.namespace.is_empty() {
        String::new()
    } else {
        format!("{}.", args.namespace)
    };
    let kind = match args.queue {
        Queue::Referrals => "referrals",
        Queue::Status => "status",
    };
    let queue = format!("{prefix}{kind}.{}", args.agency);

    let connection = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    // At most 10 unacknowledged referrals in hand at once.
    channel.basic_qos(10, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "example-consumer".into(),
            BasicConsumeOptions::default(), // no_ack = false: we acknowledge explicitly
            FieldTable::default(),
        )
        .await?;
    eprintln!("reading queue {queue}");

    let mut handled = 0;
    loop {
        let next = match args.idle_exit {
            Some(secs) => {
                match tokio::time::timeout(std::time::Duration::from_secs(secs), consumer.next())
                    .await
                {
                    Ok(next) => next,
                    Err(_) => break, // idle
                }
            }
            None => consumer.next().await,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let is_json = delivery
            .properties
            .content_type()
            .as_ref()
            .is_some_and(|t| t.as_str() == "application/json");
        // `type`: `referral`, or `follow_up` / `withdrawal` from the sender about one
        // (their `referral_id` header names it). Each kind has its own file.
        let kind = delivery
            .properties
            .kind()
            .as_ref()
            .map_or_else(|| "referral".to_owned(), |k| k.to_string());
        let valid_id = match (args.queue, kind.as_str()) {
            (Queue::Referrals, "referral") => uuid::Uuid::parse_str(&id).is_ok(),
            (Queue::Referrals, "follow_up" | "withdrawal") | (Queue::Status, "status") => {
                !id.is_empty() && !id.contains('/')
            }
            _ => false,
        };
        if !is_json
            || !valid_id
            || serde_json::from_slice::<serde_json::Value>(&delivery.data).is_err()
        {
            eprintln!(
                "rejecting message {id:?} ({kind}): not understood; it goes to the dead-letter queue"
            );
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            continue;
        }
        if args.queue == Queue::Status {
            let target = args.out.join("status").join(format!("{id}.json"));
            std::fs::create_dir_all(args.out.join("status"))?;
            if !target.exists() {
                std::fs::write(&target, &delivery.data)?;
                eprintln!("received status {id}");
                handled += 1;
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
            if args.max.is_some_and(|max| handled >= max) {
                break;
            }
            continue;
        }
        if kind != "referral" {
            let target = args.out.join("updates").join(format!("{id}.{kind}.json"));
            std::fs::create_dir_all(args.out.join("updates"))?;
            let new = !target.exists();
            if new {
                std::fs::write(&target, &delivery.data)?;
                eprintln!("received {kind} {id}");
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
            // A new follow-up or withdrawal counts towards --max as a referral does.
            if new {
                handled += 1;
                if args.max.is_some_and(|max| handled >= max) {
                    break;
                }
            }
            continue;
        }
        let target = args.out.join(format!("{id}.json"));
        if target.exists() {
            // A redelivery (or a duplicate publish): already handed over, just ack.
            eprintln!("duplicate {id}: already handed over");
            delivery.acker.ack(BasicAckOptions::default()).await?;
            continue;
        }
        // Write then rename, so a crash never leaves a half-written referral behind.
        let partial = args.out.join(format!("{id}.partial"));
        std::fs::write(&partial, &delivery.data)?;
        std::fs::rename(&partial, &target)?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        eprintln!("received referral {id}");
        handled += 1;
        if args.max.is_some_and(|max| handled >= max) {
            break;
        }
    }
    connection.close(200, "consumer done".into()).await?;
    Ok(())
}
