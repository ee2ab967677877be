//! Information sharing agreements (ISAs): which sender may share what categories of
//! information with which recipients, on what lawful basis, and when sharing without
//! consent is allowed. Pure: the intake step asks, this module answers.

use std::collections::BTreeSet;

use serde_json::Value;
use time::Date;

use super::agency::Agency;

/// Categories every referral carries whatever the agreement: where it goes, what is
/// asked, and the consent or justification for sharing.
pub const ALWAYS_SHARED: [&str; 3] = ["routing", "referral", "consent"];

/// The field categories used in `x-category` in the schemas.
pub const CATEGORIES: [&str; 10] = [
    "routing",
    "referral",
    "consent",
    "identity",
    "contact",
    "health",
    "risk",
    "criminal_justice",
    "substance_use",
    "housing",
];

/// What to do with fields the agreement does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExcess {
    /// Remove them before storing and delivering; the receipt lists them.
    Remove,
    /// Refuse the referral (422) listing them.
    Reject,
}

#[derive(Debug, Clone)]
pub struct SharingAgreement {
    pub id: String,
    pub title: String,
    pub purpose: String,
    pub senders: BTreeSet<String>,
    pub recipient_agencies: BTreeSet<String>,
    pub recipient_service_types: BTreeSet<String>,
    pub lawful_basis: String,
    pub categories: BTreeSet<String>,
    /// Justifications under which sharing without consent is permitted.
    pub without_consent: BTreeSet<String>,
    pub on_excess: OnExcess,
    pub effective_from: Date,
    pub effective_to: Option<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingRefusal {
    #[error("no information sharing agreement covers sharing from '{sender}' with '{recipient}'")]
    NoAgreement { sender: String, recipient: String },
    #[error("information sharing agreement '{id}' ended on {ended}")]
    Expired { id: String, ended: Date },
    #[error("information sharing agreement '{id}' is not in force until {starts}")]
    NotYetInForce { id: String, starts: Date },
    #[error(
        "the person has not consented, and agreement '{id}' does not permit sharing without consent for '{justification}'"
    )]
    JustificationNotPermitted { id: String, justification: String },
    #[error(
        "the person's recorded objection blocks sharing; agreement '{id}' permits an override only for: {permitted}"
    )]
    Objection { id: String, permitted: String },
}

impl SharingRefusal {
    /// A fixed code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            SharingRefusal::NoAgreement { .. } => "no-agreement",
            SharingRefusal::Expired { .. } => "agreement-expired",
            SharingRefusal::NotYetInForce { .. } => "agreement-not-in-force",
            SharingRefusal::JustificationNotPermitted { .. } => "justification-not-permitted",
            SharingRefusal::Objection { .. } => "objection",
        }
    }

    /// The agreement the refusal is about, if one was found.
    pub fn isa_id(&self) -> Option<&str> {
        match self {
            SharingRefusal::NoAgreement { .. } => None,
            SharingRefusal::Expired { id, .. }
            | SharingRefusal::NotYetInForce { id, .. }
            | SharingRefusal::JustificationNotPermitted { id, .. }
            | SharingRefusal::Objection { id, .. } => Some(id),
        }
    }
}

/// The basis on which one referral is shared, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharingBasis {
    pub isa_id: String,
    pub lawful_basis: String,
    /// `given`, or `not_given:<justification>`, with `+objection_overridden` if so.
    pub consent: String,
}

impl SharingAgreement {
    pub fn covers(&self, sender: &Agency, recipient: &Agency) -> bool {
        self.senders.contains(sender.id.as_str())
            && (self.recipient_agencies.contains(recipient.id.as_str())
                || self
                    .recipient_service_types
                    .contains(recipient.service_type.as_str()))
    }

    pub fn allows(&self, category: &str) -> bool {
        ALWAYS_SHARED.contains(&category) || self.categories.contains(category)
    }
}

/// The agreement in force on `date` that covers sender and recipient. When only lapsed
/// or future agreements cover them, says so.
pub fn select<'a>(
    agreements: &'a [SharingAgreement],
    sender: &Agency,
    recipient: &Agency,
    date: Date,
) -> Result<&'a SharingAgreement, SharingRefusal> {
    let covering: Vec<_> = agreements
        .iter()
        .filter(|a| a.covers(sender, recipient))
        .collect();
    if let Some(active) = covering
        .iter()
        .find(|a| a.effective_from <= date && a.effective_to.is_none_or(|end| date <= end))
    {
        return Ok(active);
    }
    if let Some(lapsed) = covering
        .iter()
        .filter_map(|a| a.effective_to.filter(|end| *end < date).map(|end| (a, end)))
        .max_by_key(|(_, end)| *end)
    {
        return Err(SharingRefusal::Expired {
            id: lapsed.0.id.clone(),
            ended: lapsed.1,
        });
    }
    if let Some(future) = covering.iter().min_by_key(|a| a.effective_from) {
        return Err(SharingRefusal::NotYetInForce {
            id: future.id.clone(),
            starts: future.effective_from,
        });
    }
    Err(SharingRefusal::NoAgreement {
        sender: sender.id.to_string(),
        recipient: recipient.id.to_string(),
    })
}

/// Consent rules: without consent, or over a recorded objection, the referral's
/// justification must be one the agreement permits.
pub fn check_consent(
    agreement: &SharingAgreement,
    document: &Value,
) -> Result<SharingBasis, SharingRefusal> {
    let consent = document.get("consent");
    let given = consent
        .and_then(|c| c.get("given"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let objection = consent.and_then(|c| c.get("objection")).is_some();
    let justification = consent
        .and_then(|c| c.pointer("/sharing_without_consent/justification"))
        .and_then(Value::as_str);
    let permitted = |j: &str| agreement.without_consent.contains(j);
    if objection {
        match justification {
            Some(j) if permitted(j) => {}
            _ => {
                return Err(SharingRefusal::Objection {
                    id: agreement.id.clone(),
                    permitted: if agreement.without_consent.is_empty() {
                        "nothing".to_owned()
                    } else {
                        agreement
                            .without_consent
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                });
            }
        }
    }
    let consent = if given && !objection {
        "given".to_owned()
    } else {
        let j = justification.unwrap_or("none");
        if !permitted(j) {
            return Err(SharingRefusal::JustificationNotPermitted {
                id: agreement.id.clone(),
                justification: j.to_owned(),
            });
        }
        if objection {
            format!("not_given:{j}+objection_overridden")
        } else {
            format!("not_given:{j}")
        }
    };
    Ok(SharingBasis {
        isa_id: agreement.id.clone(),
        lawful_basis: agreement.lawful_basis.clone(),
        consent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::agency::{AgencyRole, CertificateIdentity};
    use crate::domain::ids::{AgencyId, Area, ServiceType};
    use serde_json::json;
    use time::macros::date;

    fn agency(id: &str, st: &str) -> Agency {
        Agency {
            id: AgencyId::parse(id).unwrap(),
            name: id.into(),
            service_type: ServiceType::parse(st).unwrap(),
            area: Area::parse("coventry").unwrap(),
            role: AgencyRole::Both,
            certificate: CertificateIdentity::SanUri(id.into()),
        }
    }

    fn isa(id: &str, to: Option<Date>, without: &[&str]) -> SharingAgreement {
        SharingAgreement {
            id: id.into(),
            title: String::new(),
            purpose: String::new(),
            senders: ["ld".to_owned()].into(),
            recipient_agencies: BTreeSet::new(),
            recipient_service_types: ["cmht".to_owned()].into(),
            lawful_basis: "Art. 6(1)(e)".into(),
            categories: ["identity".to_owned()].into(),
            without_consent: without.iter().map(|s| (*s).to_owned()).collect(),
            on_excess: OnExcess::Remove,
            effective_from: date!(2026 - 01 - 01),
            effective_to: to,
        }
    }

    #[test]
    fn selection_explains_itself() {
        let (ld, cmht, iapt) = (
            agency("ld", "liaison"),
            agency("c", "cmht"),
            agency("i", "iapt"),
        );
        let day = date!(2026 - 11 - 23);
        let isas = [isa("old", Some(date!(2026 - 06 - 30)), &[])];
        assert_eq!(
            select(&isas, &ld, &cmht, day).unwrap_err(),
            SharingRefusal::Expired {
                id: "old".into(),
                ended: date!(2026 - 06 - 30)
            }
        );
        assert!(matches!(
            select(&isas, &ld, &iapt, day),
            Err(SharingRefusal::NoAgreement { .. })
        ));
        let isas = [
            isa("old", Some(date!(2026 - 06 - 30)), &[]),
            isa("new", None, &[]),
        ];
        assert_eq!(select(&isas, &ld, &cmht, day).unwrap().id, "new");
        assert!(matches!(
            select(&isas, &ld, &cmht, date!(2025 - 12 - 31)),
            Err(SharingRefusal::NotYetInForce { .. })
        ));
    }

    #[test]
    fn consent_rules() {
        let strict = isa("s", None, &[]);
        let lenient = isa("l", None, &["safeguarding"]);
        let given = json!({"consent": {"given": true}});
        assert_eq!(check_consent(&strict, &given).unwrap().consent, "given");
        let without = json!({"consent": {"given": false, "sharing_without_consent": {"justification": "safeguarding"}}});
        assert!(matches!(
            check_consent(&strict, &without),
            Err(SharingRefusal::JustificationNotPermitted { .. })
        ));
        assert_eq!(
            check_consent(&lenient, &without).unwrap().consent,
            "not_given:safeguarding"
        );
        let objected = json!({"consent": {"given": true, "objection": {"recorded_at": "2026-11-01T10:00:00Z"}}});
        assert!(matches!(
            check_consent(&lenient, &objected),
            Err(SharingRefusal::Objection { .. })
        ));
        let overridden = json!({"consent": {"given": false, "objection": {"recorded_at": "x"}, "sharing_without_consent": {"justification": "safeguarding"}}});
        assert_eq!(
            check_consent(&lenient, &overridden).unwrap().consent,
            "not_given:safeguarding+objection_overridden"
        );
    }
}
