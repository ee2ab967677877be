//! RabbitMQ topology and connections. Every name can carry a namespace prefix so several
//! deployments (and test runs) can share one broker.
//!
//! - `referrals` (topic): referrals, routed by `<service_type>.<area>.<agency-id>` to one
//!   durable quorum queue per receiving agency, `referrals.<agency-id>`;
//! - `referrals.dlx` (topic): where a receiving agency's rejected or repeatedly
//!   redelivered messages go, into `referrals.<agency-id>.dead`;
//! - `referral-status` (topic): status events for senders, routed by `<agency-id>.<event>`
//!   to `status.<agency-id>`.

use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::domain::messages::Exchange;
use crate::domain::{AgencyRegistry, RoutingKey};

/// A receiving agency's message is dead-lettered after this many redeliveries.
pub const DELIVERY_LIMIT: i64 = 10;

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    receivers: Vec<(String, RoutingKey)>,
    senders: Vec<String>,
}

impl Topology {
    pub fn new(namespace: &str, registry: &AgencyRegistry) -> Self {
        let prefix = if namespace.is_empty() {
            String::new()
        } else {
            format!("{namespace}.")
        };
        Self {
            prefix,
            receivers: registry
                .agencies()
                .filter(|a| a.role.receives())
                .map(|a| (a.id.to_string(), RoutingKey::for_agency(a)))
                .collect(),
            senders: registry
                .agencies()
                .filter(|a| a.role.sends())
                .map(|a| a.id.to_string())
                .collect(),
        }
    }

    /// The broker name of a logical exchange (`referrals`, `referral-status`, ...).
    pub fn exchange(&self, exchange: Exchange) -> String {
        format!("{}{exchange}", self.prefix)
    }

    pub fn referrals_exchange(&self) -> String {
        self.exchange(Exchange::Referrals)
    }

    pub fn dead_letter_exchange(&self) -> String {
        self.exchange(Exchange::DeadLetters)
    }

    pub fn status_exchange(&self) -> String {
        self.exchange(Exchange::Status)
    }

    /// SLA breaches, routed `<recipient-agency>.<clock>`, for service managers.
    pub fn escalations_exchange(&self) -> String {
        self.exchange(Exchange::Escalations)
    }

    /// Every exchange of the topology (what `declare` makes and `delete` removes).
    fn exchanges(&self) -> [String; 4] {
        Exchange::ALL.map(|e| self.exchange(e))
    }

    pub fn escalations_queue(&self) -> String {
        format!("{}escalations", self.prefix)
    }

    pub fn referral_queue(&self, agency_id: &str) -> String {
        format!("{}referrals.{agency_id}", self.prefix)
    }

    pub fn dead_letter_queue(&self, agency_id: &str) -> String {
        format!("{}referrals.{agency_id}.dead", self.prefix)
    }

    pub fn status_queue(&self, agency_id: &str) -> String {
        format!("{}status.{agency_id}", self.prefix)
    }

    fn quorum_args(&self, dead_letter: bool) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), string("quorum"));
        if dead_letter {
            args.insert(
                "x-dead-letter-exchange".into(),
                string(&self.dead_letter_exchange()),
            );
            args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
            args.insert("x-overflow".into(), string("reject-publish"));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
        }
        args
    }

    /// Declares everything; idempotent. Fails if an existing queue was declared with
    /// other arguments (the broker refuses with PRECONDITION_FAILED).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in self.exchanges() {
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await?;
        }
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (agency, key) in &self.receivers {
            let queue = self.referral_queue(agency);
            channel
                .queue_declare(queue.clone().into(), durable_queue, self.quorum_args(true))
                .await?;
            bind(channel, &queue, &self.referrals_exchange(), key.as_str()).await?;
            let dead = self.dead_letter_queue(agency);
            channel
                .queue_declare(dead.clone().into(), durable_queue, self.quorum_args(false))
                .await?;
            bind(channel, &dead, &self.dead_letter_exchange(), key.as_str()).await?;
        }
        let escalations = self.escalations_queue();
        channel
            .queue_declare(
                escalations.clone().into(),
                durable_queue,
                self.quorum_args(false),
            )
            .await?;
        bind(channel, &escalations, &self.escalations_exchange(), "#").await?;
        for agency in &self.senders {
            let queue = self.status_queue(agency);
            channel
                .queue_declare(queue.clone().into(), durable_queue, self.quorum_args(false))
                .await?;
            bind(
                channel,
                &queue,
                &self.status_exchange(),
                &format!("{agency}.#"),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes everything `declare` made (for tests and decommissioning a namespace).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        let mut queues = Vec::new();
        for (agency, _) in &self.receivers {
            queues.push(self.referral_queue(agency));
            queues.push(self.dead_letter_queue(agency));
        }
        queues.extend(self.senders.iter().map(|a| self.status_queue(a)));
        queues.push(self.escalations_queue());
        for queue in queues {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in self.exchanges() {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

pub fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

pub fn short(value: &str) -> ShortString {
    ShortString::from(value)
}

/// Opens a connection (TLS through rustls/ring for `amqps://`) and a channel in
/// publisher-confirm mode.
pub async fn connect_confirming(url: &str) -> lapin::Result<(Connection, Channel)> {
    let connection = Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name("referral-gateway".into()),
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}
