//! Accepting a referral: who sends it, where it goes, whether the sender may send it
//! there, whether it is valid, and writing it durably (referral + outbox row) before the
//! receipt is given. Pure orchestration; HTTP lives in `api`, SQL in `store`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::audit::AuditAction;
use crate::domain::messages::OutboxMessage;
use crate::domain::sla::{ClockDeadline, SlaPolicy};
use crate::domain::{
    Agency, AgencyId, AgencyRegistry, Destination, ReferralId, ReferralStatus, RoutingError,
    ServiceType,
};
use crate::governance::person_keys::PersonKeyer;
use crate::governance::person_keys::submission_record;
use crate::intake::schema::{SchemaRegistry, Violation};
use crate::store::{AuditRecord, Inserted, NewReferral, ReferralRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("agency '{0}' is not registered as a sender")]
    NotASender(AgencyId),
    #[error("the body is not acceptable JSON: {0}")]
    MalformedJson(#[from] crate::intake::json::JsonError),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("agency '{sender}' may not refer to service type '{service_type}' in area '{area}'")]
    NotPermitted {
        sender: AgencyId,
        service_type: ServiceType,
        area: crate::domain::Area,
    },
    #[error("the referral does not match its schema ({} problem(s))", .0.len())]
    Invalid(Vec<Violation>),
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyConflict,
    #[error(transparent)]
    Sharing(#[from] crate::domain::sharing::SharingRefusal),
    #[error("agreement '{isa_id}' does not cover {} field(s) in this referral", .pointers.len())]
    Excess {
        isa_id: String,
        pointers: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the sender gets back: enough to prove what was accepted, and where it goes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Receipt {
    /// The referral's id, a UUID (version 7).
    #[schema(value_type = uuid::Uuid)]
    pub referral_id: ReferralId,
    pub status: ReferralStatus,
    /// UTC, RFC 3339, up to microsecond precision.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: OffsetDateTime,
    pub sender: AgencyRef,
    pub recipient: AgencyRef,
    pub priority: crate::domain::Priority,
    /// The `$id` of the schema (overlay, or the common schema) the document was checked against.
    pub schema_id: String,
    /// SHA-256 (hex) of the stored and delivered payload: the canonical serialisation of
    /// the validated (and, where an agreement says so, minimised) document, never the
    /// request's own bytes.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub payload_sha256: String,
    pub correlation_id: String,
    /// The information sharing agreement the referral was shared under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isa_id: Option<String>,
    /// JSON Pointers of the fields withheld from the recipient (minimisation).
    pub withheld: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AgencyRef {
    pub agency_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Created(Receipt),
    /// A retry with an Idempotency-Key already used for the same body.
    Replayed(Receipt),
}

#[derive(Clone)]
pub struct Intake {
    registry: Arc<AgencyRegistry>,
    schemas: Arc<SchemaRegistry>,
    store: Store,
    sla: Arc<SlaPolicy>,
    keyer: Arc<PersonKeyer>,
    agreements: Arc<Vec<crate::domain::sharing::SharingAgreement>>,
}

impl Intake {
    pub fn new(
        registry: Arc<AgencyRegistry>,
        schemas: Arc<SchemaRegistry>,
        store: Store,
        sla: Arc<SlaPolicy>,
        keyer: Arc<PersonKeyer>,
        agreements: Arc<Vec<crate::domain::sharing::SharingAgreement>>,
    ) -> Self {
        Self {
            registry,
            schemas,
            store,
            sla,
            keyer,
            agreements,
        }
    }

    /// Accepts a referral, or refuses it; either way the audit log records it. A refusal
    /// that cannot be recorded becomes a store error (500): nothing passes unrecorded.
    pub async fn submit(
        &self,
        sender: &Agency,
        body: &[u8],
        idempotency_key: Option<&str>,
        correlation_id: &str,
        now: OffsetDateTime,
    ) -> Result<Submitted, IntakeError> {
        // Read once, strictly (duplicate member names and NUL refused); every later step
        // works on this document.
        let document = crate::intake::json::parse(body);
        let person_key = document.as_ref().ok().and_then(|d| self.keyer.key_of(d));
        let destination = document.as_ref().ok().and_then(Destination::from_document);
        let result = self
            .accept(
                sender,
                body,
                document,
                destination.as_ref(),
                person_key.clone(),
                idempotency_key,
                correlation_id,
                now,
            )
            .await;
        // A write refused because the committer's queue is full was never looked at: it
        // is answered 503 (retry) and not recorded, which would only add to the queue. A
        // write whose outcome is unknown may have been stored: it is no refusal.
        if let Err(error) = &result
            && !matches!(error, IntakeError::Store(e) if matches!(e, StoreError::Busy) || e.outcome_unknown())
        {
            // Fixed reason codes and (redacted) pointers only: never the caller's values.
            let mut record = AuditRecord::new(
                format!("agency:{}", sender.id),
                AuditAction::ReferralRefused,
            )
            .detail(self.refusal_reason(error));
            record.person_key = person_key;
            // Whom it would have gone to, and under which agreement, when known: so the
            // refusal is found by the recipient's agency too.
            record.recipient = destination
                .as_ref()
                .and_then(|d| self.registry.resolve(d).ok())
                .map(|a| a.id.to_string());
            record.isa_id = match error {
                IntakeError::Sharing(refusal) => refusal.isa_id().map(str::to_owned),
                IntakeError::Excess { isa_id, .. } => Some(isa_id.clone()),
                _ => None,
            };
            if let Err(e) = self.store.audit(&record, now).await {
                tracing::error!(error = %e, "cannot record a refused referral in the audit log");
                return Err(IntakeError::Store(e));
            }
        }
        result
    }

    /// The audit detail of a refusal: a fixed code, then JSON Pointers whose member
    /// names are the schemas' own (others shown as `*`; `SchemaRegistry::audit_detail`).
    fn refusal_reason(&self, error: &IntakeError) -> String {
        let schemas = &self.schemas;
        match error {
            IntakeError::NotASender(_) => "not-a-sender".to_owned(),
            // A parse error's pointer follows the caller's shape, not the schemas'.
            IntakeError::MalformedJson(e) => {
                schemas.audit_detail(&format!("malformed-json:{}", e.code()), e.pointer(), true)
            }
            IntakeError::Routing(e) => format!("unroutable:{}", e.code()),
            IntakeError::NotPermitted { service_type, .. } => {
                format!("not-permitted:{service_type}")
            }
            IntakeError::Invalid(violations) => schemas.audit_detail(
                "schema-validation",
                violations.iter().map(|v| v.pointer.as_str()),
                false,
            ),
            IntakeError::IdempotencyConflict => "idempotency-conflict".to_owned(),
            IntakeError::Sharing(refusal) => format!("sharing-refused:{}", refusal.code()),
            IntakeError::Excess { pointers, .. } => {
                schemas.audit_detail("excess-data", pointers.iter().map(String::as_str), false)
            }
            IntakeError::Store(_) => "store-failure".to_owned(),
        }
    }

    /// The keyer whose person keys the audit log holds (for subject access requests).
    pub fn person_keyer(&self) -> &PersonKeyer {
        &self.keyer
    }

    pub fn registry(&self) -> &AgencyRegistry {
        &self.registry
    }

    /// The information sharing agreements in the configuration.
    pub fn agreements(&self) -> &[crate::domain::sharing::SharingAgreement] {
        &self.agreements
    }

    #[allow(clippy::too_many_arguments)]
    async fn accept(
        &self,
        sender: &Agency,
        body: &[u8],
        document: Result<Value, crate::intake::json::JsonError>,
        destination: Option<&Destination>,
        person_key: Option<String>,
        idempotency_key: Option<&str>,
        correlation_id: &str,
        now: OffsetDateTime,
    ) -> Result<Submitted, IntakeError> {
        if !sender.role.sends() {
            return Err(IntakeError::NotASender(sender.id.clone()));
        }
        let body_sha256 = crate::security::digest::sha256_hex(body);
        if let Some(key) = idempotency_key
            && let Some(previous) = self.store.idempotency_record(&sender.id, key).await?
        {
            return self
                .replay(previous.request_sha256 == body_sha256, previous.referral_id)
                .await;
        }
        let document = document?;

        let Some(destination) = destination else {
            // No usable destination: the common schema says exactly what is wrong.
            return Err(match self.schemas.validate_referral(None, document) {
                Err(violations) => IntakeError::Invalid(violations),
                Ok(_) => IntakeError::Invalid(vec![Violation {
                    pointer: "/destination".into(),
                    keyword: "required".into(),
                    detail: "a destination is required".into(),
                }]),
            });
        };
        let recipient = self.registry.resolve(destination)?.clone();
        if recipient.id == sender.id {
            return Err(RoutingError::ToItself(sender.id.clone()).into());
        }
        if !self.registry.may_refer(sender, &recipient) {
            return Err(IntakeError::NotPermitted {
                sender: sender.id.clone(),
                service_type: recipient.service_type.clone(),
                area: recipient.area.clone(),
            });
        }
        let agreement = if self.agreements.is_empty() {
            None
        } else {
            let today = crate::domain::calendar::to_london(now).date();
            Some(crate::domain::sharing::select(
                &self.agreements,
                sender,
                &recipient,
                today,
            )?)
        };
        let referral = self
            .schemas
            .validate_referral(Some(&recipient.service_type), document)
            .map_err(IntakeError::Invalid)?;
        let basis = agreement
            .map(|a| crate::domain::sharing::check_consent(a, referral.document()))
            .transpose()?;
        // Minimisation: only the categories the agreement lets this recipient receive
        // (all of them without agreements). The categories kept are what the audit entry
        // records as shared.
        let (mut shared, priority, schema_id) = referral.into_parts();
        let kept = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let withheld =
            self.schemas
                .minimise(Some(&recipient.service_type), &mut shared, &|category| {
                    let allowed = agreement.is_none_or(|a| a.allows(category));
                    if allowed && !kept.borrow().contains(category) {
                        kept.borrow_mut().insert(category.to_owned());
                    }
                    allowed
                });
        let shared_categories: Vec<String> = kept.into_inner().into_iter().collect();
        if let Some(a) = agreement
            && a.on_excess == crate::domain::sharing::OnExcess::Reject
            && !withheld.is_empty()
        {
            return Err(IntakeError::Excess {
                isa_id: a.id.clone(),
                pointers: withheld,
            });
        }
        // What is stored, signed for and delivered: the canonical serialisation of the
        // checked (and minimised) document, never the caller's bytes, so that a recipient
        // reads exactly what was validated.
        // Written straight into room for the request's size (it is rarely larger): no
        // regrowth, and not through `Display`, whose `fmt::Write` adapter made it half as
        // costly again (3.3% of the workers' time under load, against 2.2%).
        let stored_text = canonical_text(&shared, body.len())?;
        let payload_sha256 = crate::security::digest::sha256_hex(stored_text.as_bytes());

        let id = ReferralId::new();
        // Stored timestamps have microsecond precision: use the stored value everywhere.
        let received_at = crate::store::from_micros(crate::store::to_micros(now))?;
        let clocks = self.sla_deadlines(&recipient, priority, received_at);
        // The person key comes from the full document (identity may be withheld).
        let mut audit = submission_record(
            sender.id.as_str(),
            recipient.id.as_str(),
            &id.to_string(),
            &shared,
            person_key,
        );
        if let Some(basis) = &basis {
            audit.isa_id = Some(basis.isa_id.clone());
            audit.lawful_basis = Some(basis.lawful_basis.clone());
            audit.consent = Some(basis.consent.clone());
        }
        audit.withheld = withheld.clone();
        audit.categories = shared_categories;
        let receipt = Receipt {
            referral_id: id,
            status: ReferralStatus::Received,
            received_at,
            sender: AgencyRef::id_only(&sender.id),
            recipient: AgencyRef::full(&recipient),
            priority,
            schema_id,
            payload_sha256,
            correlation_id: correlation_id.to_owned(),
            isa_id: basis.map(|b| b.isa_id),
            withheld,
        };
        let new = NewReferral {
            id,
            sender: sender.id.clone(),
            outbox: OutboxMessage::referral(&recipient),
            recipient: recipient.id.clone(),
            service_type: recipient.service_type.clone(),
            area: recipient.area.clone(),
            priority: receipt.priority,
            schema_id: receipt.schema_id.clone(),
            payload: stored_text,
            payload_sha256: receipt.payload_sha256.clone(),
            correlation_id: receipt.correlation_id.clone(),
            received_at,
            idempotency: idempotency_key.map(|k| (k.to_owned(), body_sha256.clone())),
            clocks,
            audit,
            isa_id: receipt.isa_id.clone(),
            withheld: receipt.withheld.clone(),
        };
        match self.store.insert_referral(new).await? {
            Inserted::Created => {
                // The committer hands it to the relay (or wakes the relay to claim it).
                tracing::info!(referral_id = %id, recipient = %receipt.recipient.agency_id, priority = receipt.priority.as_str(), "referral accepted");
                Ok(Submitted::Created(receipt))
            }
            Inserted::KeyTaken(previous) => {
                self.replay(previous.request_sha256 == body_sha256, previous.referral_id)
                    .await
            }
        }
    }

    /// The SLA clocks for a new referral. If the bank-holiday calendar has run out, the
    /// working-time clocks are computed without holidays past its end (and an error is
    /// logged): a referral is never refused for an operator's stale calendar.
    fn sla_deadlines(
        &self,
        recipient: &Agency,
        priority: crate::domain::Priority,
        received_at: OffsetDateTime,
    ) -> Vec<ClockDeadline> {
        let (agency, service) = (recipient.id.as_str(), recipient.service_type.as_str());
        match self.sla.deadlines(agency, service, priority, received_at) {
            Ok(clocks) => clocks,
            Err(e) => {
                tracing::error!(error = %e, "SLA calendar exhausted; computing deadlines without later bank holidays");
                let mut relaxed = SlaPolicy::clone(&self.sla);
                relaxed.calendar.covered_until = time::Date::MAX;
                relaxed
                    .deadlines(agency, service, priority, received_at)
                    .unwrap_or_default()
            }
        }
    }

    async fn replay(&self, same_body: bool, id: ReferralId) -> Result<Submitted, IntakeError> {
        if !same_body {
            return Err(IntakeError::IdempotencyConflict);
        }
        let record = self.store.referral(id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("idempotency key points at missing referral {id}"))
        })?;
        tracing::info!(referral_id = %id, "idempotent retry answered with the original receipt");
        Ok(Submitted::Replayed(self.receipt(&record)))
    }

    /// The receipt for a stored referral, as the sender was first given it (with the
    /// current status).
    pub fn receipt(&self, record: &ReferralRecord) -> Receipt {
        let recipient = match self.registry.get(record.recipient_agency.as_str()) {
            Some(agency) => AgencyRef::full(agency),
            None => AgencyRef {
                agency_id: record.recipient_agency.to_string(),
                name: None,
                service_type: Some(record.service_type.to_string()),
                area: Some(record.area.to_string()),
            },
        };
        Receipt {
            referral_id: record.id,
            status: record.status,
            received_at: record.received_at,
            sender: AgencyRef {
                agency_id: record.sender_agency.to_string(),
                name: None,
                service_type: None,
                area: None,
            },
            recipient,
            priority: record.priority,
            schema_id: record.schema_id.clone(),
            payload_sha256: record.payload_sha256.clone(),
            correlation_id: record.correlation_id.clone(),
            isa_id: record.isa_id.clone(),
            withheld: record.withheld.clone(),
        }
    }
}

impl AgencyRef {
    fn id_only(id: &AgencyId) -> Self {
        Self {
            agency_id: id.to_string(),
            name: None,
            service_type: None,
            area: None,
        }
    }

    fn full(agency: &Agency) -> Self {
        Self {
            agency_id: agency.id.to_string(),
            name: Some(agency.name.clone()),
            service_type: Some(agency.service_type.to_string()),
            area: Some(agency.area.to_string()),
        }
    }
}

/// The stored, signed-for and delivered text of a checked document: compact JSON,
/// serialised into a buffer with `room` bytes reserved.
fn canonical_text(document: &Value, room: usize) -> Result<String, IntakeError> {
    let unserialisable = || {
        IntakeError::Store(StoreError::Corrupt(
            "the checked document did not serialise".into(),
        ))
    };
    let mut bytes = Vec::with_capacity(room);
    // Neither fails for a `Value` (its keys are strings, and serde_json writes UTF-8).
    serde_json::to_writer(&mut bytes, document).map_err(|_| unserialisable())?;
    String::from_utf8(bytes).map_err(|_| unserialisable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_is_compact_json_as_display_writes_it() {
        let document = serde_json::json!({"b": [1, "two", null], "a": {"ü": "\"q\"\n"}});
        let text = canonical_text(&document, 4).unwrap();
        assert_eq!(text, document.to_string());
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), document);
    }
}
