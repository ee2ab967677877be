//! What the gateway publishes: the exchanges, the message types, the bodies it builds,
//! and outbox rows that can only be made routable. Shared by the outbox writers (intake,
//! events, the SLA scanner), the store and the broker topology (docs/consuming.md).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::referral::UnknownValue;
use super::sla::Clock;
use super::{Agency, AgencyId, EventType, Priority, ReferralId, ReferralStatus, RoutingKey};
use super::{ServiceType, Timestamp};

/// A logical exchange of the topology; the broker name adds the namespace prefix
/// (`Topology::exchange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exchange {
    /// Referrals, follow-ups and withdrawals for receiving agencies, routed
    /// `<service_type>.<area>.<agency-id>`.
    Referrals,
    /// Where a receiving agency's rejected or repeatedly redelivered messages go.
    DeadLetters,
    /// Status messages for senders, routed `<agency-id>.<event>`.
    Status,
    /// SLA breaches for service managers, routed `<recipient-agency>.<clock>`.
    Escalations,
}

impl Exchange {
    pub const ALL: [Self; 4] = [
        Self::Referrals,
        Self::DeadLetters,
        Self::Status,
        Self::Escalations,
    ];

    /// The logical name, as stored in `outbox.exchange`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrals => "referrals",
            Self::DeadLetters => "referrals.dlx",
            Self::Status => "referral-status",
            Self::Escalations => "escalations",
        }
    }
}

impl FromStr for Exchange {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or(UnknownValue)
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a published message is: the outbox's `message_type` and the AMQP `type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Referral,
    FollowUp,
    Withdrawal,
    Status,
    Escalation,
}

impl MessageType {
    pub const ALL: [Self; 5] = [
        Self::Referral,
        Self::FollowUp,
        Self::Withdrawal,
        Self::Status,
        Self::Escalation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::FollowUp => "follow_up",
            Self::Withdrawal => "withdrawal",
            Self::Status => "status",
            Self::Escalation => "escalation",
        }
    }

    /// The one exchange whose bindings route this type.
    pub fn exchange(self) -> Exchange {
        match self {
            Self::Referral | Self::FollowUp | Self::Withdrawal => Exchange::Referrals,
            Self::Status => Exchange::Status,
            Self::Escalation => Exchange::Escalations,
        }
    }
}

impl MessageType {
    /// The detail of a `message.delivered` audit entry for a message of this type (hashed
    /// into the chain: its wording must not change).
    pub fn delivered_detail(self) -> String {
        format!("{} confirmed by the broker", self.as_str())
    }

    /// The type of message a `message.delivered` entry's detail names.
    pub fn of_delivered_detail(detail: &str) -> Option<Self> {
        detail
            .strip_suffix(" confirmed by the broker")
            .and_then(|t| t.parse().ok())
    }
}

impl FromStr for MessageType {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownValue)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's stored record: the answer to its `POST`, its entry in the referral's
/// `timeline`, and the body of its status, follow-up and withdrawal messages.
/// Members are declared in name order, as the record has always been written.
/// The members copied from the posted event have the event schema's shape
/// (`#/components/schemas/Event.<member>` in the OpenAPI documents).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = EventRecord)]
pub struct EventRecord<'a> {
    #[schema(value_type = String)]
    pub actor_agency: &'a AgencyId,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = event_member::<Contact>)]
    pub contact: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = event_member::<Detail>)]
    pub detail: Option<&'a Value>,
    #[schema(value_type = String)]
    pub event_id: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = event_member::<Outcome>)]
    pub outcome: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = event_member::<ReasonCode>)]
    pub reason_code: Option<&'a Value>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = event_member::<RedirectedTo>)]
    pub redirected_to: Option<&'a Value>,
    #[schema(value_type = uuid::Uuid)]
    pub referral_id: ReferralId,
    pub status: ReferralStatus,
    #[serde(rename = "type", serialize_with = "event_name")]
    #[schema(schema_with = event_member::<Type>)]
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = event_member::<WithdrawalReason>)]
    pub withdrawal_reason: Option<&'a Value>,
}

/// The event schema's members an [`EventRecord`] copies, by name.
trait EventMember {
    const NAME: &'static str;
}
macro_rules! event_members {
    ($($ty:ident = $name:literal),*) => {$(
        struct $ty;
        impl EventMember for $ty {
            const NAME: &'static str = $name;
        }
    )*};
}
event_members!(
    Contact = "contact",
    Detail = "detail",
    Outcome = "outcome",
    ReasonCode = "reason_code",
    RedirectedTo = "redirected_to",
    Type = "type",
    WithdrawalReason = "withdrawal_reason"
);

/// A reference to the event schema's own definition of member `M`.
fn event_member<M: EventMember>() -> utoipa::openapi::Ref {
    utoipa::openapi::Ref::new(format!("#/components/schemas/Event.{}", M::NAME))
}

fn event_name<S: serde::Serializer>(event: &EventType, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(event.as_str())
}

impl EventRecord<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Removes from a stored event record (JSON) the free text the two agencies wrote each
/// other, `detail` and `redirected_to.description`, which can hold personal data; the
/// rest (type, status, times, codes) stays. What staff see of an event, and what is left
/// of it once its referral's payload is purged.
pub fn strip_free_text(record: &mut Value) {
    if let Some(members) = record.as_object_mut() {
        members.remove("detail");
        if let Some(redirected) = members
            .get_mut("redirected_to")
            .and_then(Value::as_object_mut)
        {
            redirected.remove("description");
        }
    }
}

/// What an SLA notice says happened to a clock (its status message's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaEvent {
    Warning,
    Breach,
    /// The delivery clock's breach: the referral is now `undelivered`.
    Undelivered,
}

impl SlaEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "sla_warning",
            Self::Breach => "sla_breach",
            Self::Undelivered => "undelivered",
        }
    }
}

impl Serialize for SlaEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn clock_name<S: serde::Serializer>(clock: &Clock, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(clock.as_str())
}

fn rfc3339<S: serde::Serializer>(t: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&t.to_rfc3339())
}

/// The body of an SLA warning, breach or undelivered status message, and of the
/// escalation that goes with a breach. Members in name order, as always written.
#[derive(Debug, Clone, Serialize)]
pub struct SlaNotice<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    #[serde(serialize_with = "clock_name")]
    pub clock: Clock,
    #[serde(serialize_with = "rfc3339")]
    pub due_at: Timestamp,
    pub priority: Priority,
    pub recipient_agency: &'a AgencyId,
    pub referral_id: ReferralId,
    pub sender_agency: &'a AgencyId,
    pub service_type: &'a ServiceType,
    #[serde(rename = "type")]
    pub event: SlaEvent,
}

impl SlaNotice<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One outbox row to write. Each constructor picks the message type, and with it the
/// exchange, and builds the routing key from registry ids, so no row can name an
/// exchange that does not route its type.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    message_id: Option<String>,
    message_type: MessageType,
    routing_key: String,
    /// `None` for a referral, whose body is the stored (encrypted) document.
    payload: Option<String>,
}

impl OutboxMessage {
    /// A new referral to its recipient's queue; the relay sends the stored document, with
    /// the referral id as `message_id`.
    pub fn referral(recipient: &Agency) -> Self {
        Self {
            message_id: None,
            message_type: MessageType::Referral,
            routing_key: RoutingKey::for_agency(recipient).as_str().to_owned(),
            payload: None,
        }
    }

    /// A sender's follow-up, to the recipient's queue.
    pub fn follow_up(message_id: String, recipient: &RoutingKey, record: &EventRecord<'_>) -> Self {
        Self::to_recipient(MessageType::FollowUp, message_id, recipient, record)
    }

    /// A sender's withdrawal, to the recipient's queue.
    pub fn withdrawal(
        message_id: String,
        recipient: &RoutingKey,
        record: &EventRecord<'_>,
    ) -> Self {
        Self::to_recipient(MessageType::Withdrawal, message_id, recipient, record)
    }

    fn to_recipient(
        message_type: MessageType,
        message_id: String,
        recipient: &RoutingKey,
        record: &EventRecord<'_>,
    ) -> Self {
        Self {
            message_id: Some(message_id),
            message_type,
            routing_key: recipient.as_str().to_owned(),
            payload: Some(record.to_json()),
        }
    }

    /// An event's status message, to the sender's status queue (`<sender>.<event type>`).
    pub fn event_status(message_id: String, sender: &AgencyId, record: &EventRecord<'_>) -> Self {
        Self {
            message_id: Some(message_id),
            message_type: MessageType::Status,
            routing_key: format!("{sender}.{}", record.event_type.as_str()),
            payload: Some(record.to_json()),
        }
    }

    /// An SLA notice's status message, to the sender's status queue (`<sender>.<event>`).
    pub fn sla_status(message_id: String, notice: &SlaNotice<'_>) -> Self {
        Self {
            message_id: Some(message_id),
            message_type: MessageType::Status,
            routing_key: format!("{}.{}", notice.sender_agency, notice.event.as_str()),
            payload: Some(notice.to_json()),
        }
    }

    /// An SLA breach's escalation (`<recipient>.<clock>`).
    pub fn escalation(message_id: String, notice: &SlaNotice<'_>) -> Self {
        Self {
            message_id: Some(message_id),
            message_type: MessageType::Escalation,
            routing_key: format!("{}.{}", notice.recipient_agency, notice.clock.as_str()),
            payload: Some(notice.to_json()),
        }
    }

    /// The AMQP `message_id` consumers deduplicate on (`None`: the referral id).
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    pub fn exchange(&self) -> Exchange {
        self.message_type.exchange()
    }

    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    pub fn payload(&self) -> Option<&str> {
        self.payload.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_types_have_one_exchange() {
        for exchange in Exchange::ALL {
            assert_eq!(exchange.as_str().parse::<Exchange>(), Ok(exchange));
        }
        for message_type in MessageType::ALL {
            assert_eq!(
                message_type.as_str().parse::<MessageType>(),
                Ok(message_type)
            );
            assert_ne!(message_type.exchange(), Exchange::DeadLetters);
        }
        assert_eq!(MessageType::FollowUp.exchange(), Exchange::Referrals);
        assert!("referal".parse::<MessageType>().is_err());
    }

    /// Bodies keep the member order (by name) and shape they have always had.
    #[test]
    fn bodies_are_written_in_name_order() {
        let agency = AgencyId::parse("coventry-liaison").unwrap();
        let recipient = AgencyId::parse("coventry-cmht").unwrap();
        let service = ServiceType::parse("cmht").unwrap();
        let id = ReferralId::new();
        let t = time::macros::datetime!(2024-05-01 12:00:00 UTC);
        let notice = SlaNotice {
            at: Timestamp::from(t),
            clock: Clock::FirstContact,
            due_at: Timestamp::from(t),
            priority: Priority::Urgent,
            recipient_agency: &recipient,
            referral_id: id,
            sender_agency: &agency,
            service_type: &service,
            event: SlaEvent::Breach,
        };
        let expected = serde_json::json!({
            "referral_id": id,
            "type": "sla_breach",
            "clock": "first_contact",
            "due_at": "2024-05-01T12:00:00Z",
            "at": "2024-05-01T12:00:00Z",
            "sender_agency": "coventry-liaison",
            "recipient_agency": "coventry-cmht",
            "service_type": "cmht",
            "priority": "urgent",
        });
        assert_eq!(notice.to_json(), expected.to_string());
        let escalation = OutboxMessage::escalation("m".into(), &notice);
        assert_eq!(escalation.exchange(), Exchange::Escalations);
        assert_eq!(escalation.routing_key(), "coventry-cmht.first_contact");

        let detail = serde_json::json!("Allocated.");
        let record = EventRecord {
            actor_agency: &recipient,
            contact: None,
            detail: Some(&detail),
            event_id: "e1",
            occurred_at: t,
            outcome: None,
            reason_code: None,
            recorded_at: t,
            redirected_to: None,
            referral_id: id,
            status: ReferralStatus::Accepted,
            event_type: EventType::Accepted,
            withdrawal_reason: None,
        };
        let mut expected = serde_json::Map::new();
        expected.insert("referral_id".into(), serde_json::json!(id));
        expected.insert("event_id".into(), serde_json::json!("e1"));
        expected.insert("type".into(), serde_json::json!("accepted"));
        expected.insert("status".into(), serde_json::json!("accepted"));
        expected.insert("actor_agency".into(), serde_json::json!("coventry-cmht"));
        expected.insert(
            "occurred_at".into(),
            serde_json::json!("2024-05-01T12:00:00Z"),
        );
        expected.insert(
            "recorded_at".into(),
            serde_json::json!("2024-05-01T12:00:00Z"),
        );
        expected.insert("detail".into(), detail.clone());
        assert_eq!(record.to_json(), Value::Object(expected).to_string());
        let status = OutboxMessage::event_status("m".into(), &agency, &record);
        assert_eq!(status.exchange(), Exchange::Status);
        assert_eq!(status.routing_key(), "coventry-liaison.accepted");
    }
}
