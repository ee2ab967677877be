//! Information sharing agreements (ISAs): which sender may share what categories of
//! information with which recipients, on what lawful basis, and when sharing without
//! consent is allowed. Pure: the intake step asks, this module answers.

use std::collections::BTreeSet;

use serde_json::Value;
use time::Date;

use super::agency::{Agency, AgencyRegistry};

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
    /// Recipients named by agency id: covered wherever they are.
    pub recipient_agencies: BTreeSet<String>,
    /// Recipients named by service type: covered only in `areas`.
    pub recipient_service_types: BTreeSet<String>,
    /// The areas in which `recipient_service_types` are covered. Onboarding another area
    /// widens no agreement: one meant for several areas lists them all.
    pub areas: BTreeSet<String>,
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
    /// Whether the agreement covers sharing from `sender` with `recipient`: the sender is
    /// one of its senders, and the recipient is named by id, or provides one of its
    /// service types in one of its areas.
    pub fn covers(&self, sender: &Agency, recipient: &Agency) -> bool {
        self.senders.contains(sender.id.as_str())
            && (self.recipient_agencies.contains(recipient.id.as_str())
                || (self
                    .recipient_service_types
                    .contains(recipient.service_type.as_str())
                    && self.areas.contains(recipient.area.as_str())))
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

/// Agreements whose wording is wider than the recipients they were written for: an area
/// listed where no receiving agency provides one of its service types (an agency
/// onboarded there later would be covered at once, unread by anyone who signed), or where
/// none of its senders is (sharing across areas: legitimate, e.g. a housing authority
/// the person chooses, but worth a second look). For start-up logs; registry ids only.
pub fn wording_warnings(agreements: &[SharingAgreement], registry: &AgencyRegistry) -> Vec<String> {
    let mut warnings = Vec::new();
    for agreement in agreements {
        for area in &agreement.areas {
            let missing: Vec<&str> = agreement
                .recipient_service_types
                .iter()
                .filter(|st| {
                    !registry.agencies().any(|a| {
                        a.role.receives()
                            && a.area.as_str() == area
                            && a.service_type.as_str() == st.as_str()
                    })
                })
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                warnings.push(format!(
                    "sharing agreement '{}' covers service type(s) {} in area '{area}', where no receiving agency of them is registered: one onboarded there later would be covered without review; list only the areas the agreement was made for",
                    agreement.id,
                    missing.join(", ")
                ));
            }
            let sender_here = agreement
                .senders
                .iter()
                .filter_map(|id| registry.get(id))
                .any(|s| s.area.as_str() == area);
            if !sender_here {
                warnings.push(format!(
                    "sharing agreement '{}' covers recipients in area '{area}', where none of its senders is: check that the agreement was made with that area's services",
                    agreement.id
                ));
            }
        }
    }
    warnings
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
        in_area(id, st, "coventry")
    }

    fn in_area(id: &str, st: &str, area: &str) -> Agency {
        Agency {
            id: AgencyId::parse(id).unwrap(),
            name: id.into(),
            service_type: ServiceType::parse(st).unwrap(),
            area: Area::parse(area).unwrap(),
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
            areas: ["coventry".to_owned()].into(),
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
    fn service_types_are_covered_in_the_listed_areas_only() {
        let (ld, cmht) = (agency("ld", "liaison"), agency("c", "cmht"));
        let other_cmht = in_area("w", "cmht", "warwickshire");
        let coventry_only = isa("cov", None, &[]);
        assert!(coventry_only.covers(&ld, &cmht));
        assert!(!coventry_only.covers(&ld, &other_cmht));
        let day = date!(2026 - 11 - 23);
        assert!(matches!(
            select(std::slice::from_ref(&coventry_only), &ld, &other_cmht, day),
            Err(SharingRefusal::NoAgreement { .. })
        ));
        // An agreement meant for both areas says so.
        let mut both = isa("both", None, &[]);
        both.areas.insert("warwickshire".into());
        assert!(both.covers(&ld, &other_cmht));
        // A recipient named by id is covered wherever it is.
        let mut named = isa("named", None, &[]);
        named.recipient_service_types.clear();
        named.areas.clear();
        named.recipient_agencies.insert("w".into());
        assert!(named.covers(&ld, &other_cmht));
        assert!(!named.covers(&ld, &cmht));
    }

    #[test]
    fn wording_wider_than_the_recipients_is_warned_about() {
        use crate::domain::agency::AgencyRegistry;
        let registry = AgencyRegistry::new(
            [
                agency("ld", "liaison"),
                agency("c", "cmht"),
                in_area("w", "cmht", "warwickshire"),
            ],
            [],
        );
        // Coventry's CMHT is registered; nothing to say.
        assert!(wording_warnings(&[isa("cov", None, &[])], &registry).is_empty());
        // An area with no recipient of its service types, and an area none of its
        // senders is in.
        let mut wide = isa("wide", None, &[]);
        wide.recipient_service_types.insert("iapt".into());
        wide.areas.insert("warwickshire".into());
        wide.areas.insert("solihull".into());
        let warnings = wording_warnings(&[wide], &registry);
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        let about = |area: &str| -> Vec<&String> {
            warnings
                .iter()
                .filter(|w| w.contains(&format!("'{area}'")))
                .collect()
        };
        assert_eq!(about("coventry").len(), 1, "{warnings:?}");
        assert!(about("coventry")[0].contains("iapt"), "{warnings:?}");
        assert_eq!(about("warwickshire").len(), 2, "{warnings:?}");
        assert_eq!(about("solihull").len(), 2, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.contains("'wide'")));
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
