//! Referral-level domain types: destination, priority, lifecycle status, and the
//! `ValidatedReferral` that only the schema registry can build.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the sender wants the referral to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An explicit receiving agency, by registry id.
    Agency(String),
    /// Whichever agency provides this service type in this area.
    Service { service_type: String, area: String },
}

impl Destination {
    /// Reads `/destination` from a (not yet validated) document. `None` when it is absent
    /// or malformed (each part must be a slug, as the schema says); schema validation then
    /// reports exactly what is wrong. So nothing that echoes a destination (routing
    /// errors, the audit log) ever holds free text.
    pub fn from_document(document: &Value) -> Option<Self> {
        let dest = document.get("destination")?.as_object()?;
        if let Some(id) = dest.get("agency_id") {
            let id = id.as_str()?;
            super::AgencyId::parse(id).ok()?;
            return Some(Self::Agency(id.to_owned()));
        }
        let service_type = dest.get("service_type")?.as_str()?;
        let area = dest.get("area")?.as_str()?;
        super::ServiceType::parse(service_type).ok()?;
        super::Area::parse(area).ok()?;
        Some(Self::Service {
            service_type: service_type.to_owned(),
            area: area.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Emergency,
    Urgent,
    Routine,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emergency => "emergency",
            Self::Urgent => "urgent",
            Self::Routine => "routine",
        }
    }
}

impl FromStr for Priority {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "emergency" => Ok(Self::Emergency),
            "urgent" => Ok(Self::Urgent),
            "routine" => Ok(Self::Routine),
            _ => Err(UnknownValue),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown value")]
pub struct UnknownValue;

/// Where a referral is in its life. Stored as the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    /// Accepted by the gateway, stored, waiting in the outbox.
    Received,
    /// Confirmed by the broker onto the recipient's queue.
    Queued,
    Delivered,
    Acknowledged,
    Accepted,
    Declined,
    Redirected,
    FirstContact,
    Closed,
    Withdrawn,
    Undelivered,
}

impl ReferralStatus {
    pub const ALL: [Self; 11] = [
        Self::Received,
        Self::Queued,
        Self::Delivered,
        Self::Acknowledged,
        Self::Accepted,
        Self::Declined,
        Self::Redirected,
        Self::FirstContact,
        Self::Closed,
        Self::Withdrawn,
        Self::Undelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Acknowledged => "acknowledged",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Redirected => "redirected",
            Self::FirstContact => "first_contact",
            Self::Closed => "closed",
            Self::Withdrawn => "withdrawn",
            Self::Undelivered => "undelivered",
        }
    }
}

impl FromStr for ReferralStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(UnknownValue)
    }
}

impl fmt::Display for ReferralStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A referral document that passed its JSON Schema (common schema plus the overlay of
/// its destination's service type). Only `schema::SchemaRegistry` builds one.
#[derive(Clone)]
pub struct ValidatedReferral {
    document: Value,
    priority: Priority,
    schema_id: String,
}

impl ValidatedReferral {
    /// Called by the schema registry after a successful validation, and nowhere else.
    pub(crate) fn after_schema_check(
        document: Value,
        schema_id: String,
    ) -> Result<Self, UnknownValue> {
        let priority = document
            .get("priority")
            .and_then(Value::as_str)
            .ok_or(UnknownValue)?
            .parse()?;
        Ok(Self {
            document,
            priority,
            schema_id,
        })
    }

    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The document, to be minimised (and so no longer the validated one): with the
    /// priority and schema id it was validated with.
    pub fn into_parts(self) -> (Value, Priority, String) {
        (self.document, self.priority, self.schema_id)
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The `$id` of the schema (overlay) the document was checked against.
    pub fn schema_id(&self) -> &str {
        &self.schema_id
    }
}

/// The document holds personal data: never print it.
impl fmt::Debug for ValidatedReferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedReferral")
            .field("priority", &self.priority)
            .field("schema_id", &self.schema_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn destination_from_document() {
        assert_eq!(
            Destination::from_document(&json!({"destination": {"agency_id": "x"}})),
            Some(Destination::Agency("x".into()))
        );
        assert_eq!(
            Destination::from_document(
                &json!({"destination": {"service_type": "cmht", "area": "coventry"}})
            ),
            Some(Destination::Service {
                service_type: "cmht".into(),
                area: "coventry".into()
            })
        );
        assert_eq!(
            Destination::from_document(&json!({"destination": {"service_type": "cmht"}})),
            None
        );
        assert_eq!(Destination::from_document(&json!([])), None);
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["received", "queued", "first_contact", "undelivered"] {
            assert_eq!(s.parse::<ReferralStatus>().unwrap().as_str(), s);
        }
        assert!("lost".parse::<ReferralStatus>().is_err());
    }
}
