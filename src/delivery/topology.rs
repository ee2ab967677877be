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

    /// `name` under the namespace (`<namespace>.<name>`, or `name` without one).
    pub fn prefixed(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
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

    /// A queue's arguments: every queue is a durable quorum queue; a receiving agency's
    /// referral queue also dead-letters (at least once) after [`DELIVERY_LIMIT`]
    /// redeliveries and refuses publishes when full.
    fn quorum_args(&self, dead_letter: bool) -> Vec<(&'static str, ArgValue)> {
        let mut args = vec![("x-queue-type", ArgValue::Str("quorum".into()))];
        if dead_letter {
            args.extend([
                (
                    "x-dead-letter-exchange",
                    ArgValue::Str(self.dead_letter_exchange()),
                ),
                (
                    "x-dead-letter-strategy",
                    ArgValue::Str("at-least-once".into()),
                ),
                ("x-overflow", ArgValue::Str("reject-publish".into())),
                ("x-delivery-limit", ArgValue::Int(DELIVERY_LIMIT)),
            ]);
        }
        args
    }

    /// Everything the topology holds, in declaration order: what `declare` makes and
    /// what `broker definitions` writes for the broker to import.
    pub fn plan(&self) -> Plan {
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        let mut add = |name: String, dead_letter: bool, exchange: String, key: String| {
            bindings.push(BindingSpec {
                exchange,
                queue: name.clone(),
                key,
            });
            queues.push(QueueSpec {
                arguments: self.quorum_args(dead_letter),
                name,
            });
        };
        for (agency, key) in &self.receivers {
            add(
                self.referral_queue(agency),
                true,
                self.referrals_exchange(),
                key.as_str().to_owned(),
            );
            add(
                self.dead_letter_queue(agency),
                false,
                self.dead_letter_exchange(),
                key.as_str().to_owned(),
            );
        }
        add(
            self.escalations_queue(),
            false,
            self.escalations_exchange(),
            "#".to_owned(),
        );
        for agency in &self.senders {
            add(
                self.status_queue(agency),
                false,
                self.status_exchange(),
                format!("{agency}.#"),
            );
        }
        Plan {
            exchanges: self.exchanges().to_vec(),
            queues,
            bindings,
        }
    }

    /// The receiving agencies' ids (each has a referral and a dead-letter queue).
    pub fn receivers(&self) -> impl Iterator<Item = &str> {
        self.receivers.iter().map(|(a, _)| a.as_str())
    }

    /// The sending agencies' ids (each has a status queue).
    pub fn senders(&self) -> impl Iterator<Item = &str> {
        self.senders.iter().map(String::as_str)
    }

    /// Declares everything; idempotent. Fails if an existing queue was declared with
    /// other arguments (the broker refuses with PRECONDITION_FAILED).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let plan = self.plan();
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in plan.exchanges {
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
        for queue in plan.queues {
            channel
                .queue_declare(
                    queue.name.into(),
                    durable_queue,
                    field_table(&queue.arguments),
                )
                .await?;
        }
        for binding in plan.bindings {
            bind(channel, &binding.queue, &binding.exchange, &binding.key).await?;
        }
        Ok(())
    }

    /// Deletes everything `declare` made (for tests and decommissioning a namespace).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        let plan = self.plan();
        for queue in plan.queues {
            channel
                .queue_delete(queue.name.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in plan.exchanges {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// A queue argument's value (the two kinds the topology uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    Str(String),
    Int(i64),
}

/// A durable quorum queue and its arguments.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub arguments: Vec<(&'static str, ArgValue)>,
}

/// A queue bound to a (topic) exchange with a routing key pattern.
#[derive(Debug, Clone)]
pub struct BindingSpec {
    pub exchange: String,
    pub queue: String,
    pub key: String,
}

/// The whole topology: durable topic exchanges, durable quorum queues and bindings.
#[derive(Debug, Clone)]
pub struct Plan {
    pub exchanges: Vec<String>,
    pub queues: Vec<QueueSpec>,
    pub bindings: Vec<BindingSpec>,
}

fn field_table(arguments: &[(&'static str, ArgValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in arguments {
        let value = match value {
            ArgValue::Str(s) => string(s),
            ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
        };
        table.insert((*name).into(), value);
    }
    table
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
