//! `[[sharing_agreements]]`: information sharing agreements, checked against the
//! agency registry.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::Problems;
use crate::domain::AgencyRegistry;
use crate::domain::sharing::{OnExcess, SharingAgreement};
use crate::domain::{Area, ServiceType};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgreement {
    id: String,
    title: String,
    purpose: String,
    senders: Vec<String>,
    #[serde(default)]
    recipient_agencies: Vec<String>,
    #[serde(default)]
    recipient_service_types: Vec<String>,
    /// Where `recipient_service_types` are covered; required with them.
    #[serde(default)]
    areas: Vec<String>,
    lawful_basis: String,
    categories: Vec<String>,
    #[serde(default)]
    sharing_without_consent: Vec<String>,
    on_excess: Option<String>,
    effective_from: String,
    effective_to: Option<String>,
}

/// Justifications the referral schema knows for sharing without consent.
pub(super) const JUSTIFICATIONS: [&str; 5] = [
    "safeguarding",
    "prevention_of_crime",
    "vital_interests",
    "lacks_capacity_best_interests",
    "legal_duty",
];

pub(super) fn build_agreements(
    raw: Vec<RawAgreement>,
    registry: &AgencyRegistry,
    problems: &mut Problems,
) -> Vec<SharingAgreement> {
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let key = format!("sharing_agreements[{i}] ({})", a.id);
        if a.id.trim().is_empty() || !seen.insert(a.id.clone()) {
            problems.push(
                &format!("sharing_agreements[{i}].id"),
                "must be non-empty and unique",
            );
        }
        for (field, value) in [
            ("title", &a.title),
            ("purpose", &a.purpose),
            ("lawful_basis", &a.lawful_basis),
        ] {
            if value.trim().is_empty() {
                problems.push(&format!("{key}.{field}"), "must not be empty");
            }
        }
        if a.senders.is_empty() {
            problems.push(
                &format!("{key}.senders"),
                "must name at least one sending agency",
            );
        }
        for s in &a.senders {
            if registry.get(s).is_none_or(|ag| !ag.role.sends()) {
                problems.push(
                    &format!("{key}.senders"),
                    format!("no sending agency '{s}' is configured"),
                );
            }
        }
        if a.recipient_agencies.is_empty() && a.recipient_service_types.is_empty() {
            problems.push(&key, "set recipient_agencies or recipient_service_types");
        }
        for r in &a.recipient_agencies {
            if registry.get(r).is_none_or(|ag| !ag.role.receives()) {
                problems.push(
                    &format!("{key}.recipient_agencies"),
                    format!("no receiving agency '{r}' is configured"),
                );
            }
        }
        if !a.recipient_service_types.is_empty() && a.areas.is_empty() {
            problems.push(
                &format!("{key}.areas"),
                "must list the areas in which recipient_service_types are covered (e.g. areas = [\"coventry\"]); an agreement for several areas lists them all",
            );
        }
        if a.recipient_service_types.is_empty() && !a.areas.is_empty() {
            problems.push(
                &format!("{key}.areas"),
                "applies to recipient_service_types only (recipient_agencies are covered wherever they are); remove it or add recipient_service_types",
            );
        }
        for (j, area) in a.areas.iter().enumerate() {
            if let Err(e) = Area::parse(area.clone()) {
                problems.push(&format!("{key}.areas[{j}]"), e);
            }
        }
        for st in &a.recipient_service_types {
            if ServiceType::parse(st.clone()).is_err() {
                problems.push(
                    &format!("{key}.recipient_service_types"),
                    format!("'{st}' is not a service type"),
                );
            }
        }
        for c in &a.categories {
            if !crate::domain::sharing::CATEGORIES.contains(&c.as_str()) {
                problems.push(
                    &format!("{key}.categories"),
                    format!(
                        "'{c}' is not a field category; use {}",
                        crate::domain::sharing::CATEGORIES.join(", ")
                    ),
                );
            }
        }
        for j in &a.sharing_without_consent {
            if !JUSTIFICATIONS.contains(&j.as_str()) {
                problems.push(
                    &format!("{key}.sharing_without_consent"),
                    format!(
                        "'{j}' is not a justification; use {}",
                        JUSTIFICATIONS.join(", ")
                    ),
                );
            }
        }
        let on_excess = match a.on_excess.as_deref().unwrap_or("remove") {
            "remove" => OnExcess::Remove,
            "reject" => OnExcess::Reject,
            other => {
                problems.push(
                    &format!("{key}.on_excess"),
                    format!("'{other}' must be remove or reject"),
                );
                OnExcess::Remove
            }
        };
        let date = |text: &str, field: &str, problems: &mut Problems| {
            time::Date::parse(text, &date_format)
                .map_err(|_| {
                    problems.push(
                        &format!("{key}.{field}"),
                        format!("'{text}' is not a date (YYYY-MM-DD)"),
                    )
                })
                .ok()
        };
        let from = date(&a.effective_from, "effective_from", problems);
        let to = a
            .effective_to
            .as_deref()
            .and_then(|t| date(t, "effective_to", problems));
        if let (Some(f), Some(t)) = (from, to)
            && t < f
        {
            problems.push(&format!("{key}.effective_to"), "is before effective_from");
        }
        out.push(SharingAgreement {
            id: a.id,
            title: a.title,
            purpose: a.purpose,
            senders: a.senders.into_iter().collect(),
            recipient_agencies: a.recipient_agencies.into_iter().collect(),
            recipient_service_types: a.recipient_service_types.into_iter().collect(),
            areas: a.areas.into_iter().collect(),
            lawful_basis: a.lawful_basis,
            categories: a.categories.into_iter().collect(),
            without_consent: a.sharing_without_consent.into_iter().collect(),
            on_excess,
            effective_from: from.unwrap_or(time::Date::MIN),
            effective_to: to,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::NoEnv;
    use crate::config::testing::{base, load};

    #[test]
    fn production_needs_an_agreement_where_anybody_sends() {
        let production = base().replace("profile = \"development\"", "profile = \"production\"");
        let err = load(&production, &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains("sharing_agreements: the production profile needs at least one"),
            "{err}"
        );
        // Development allows it, for trying the gateway out.
        let development = load(&base(), &NoEnv);
        assert!(development.is_ok(), "{development:?}");
    }

    #[test]
    fn agreements_and_permissions_name_their_areas() {
        let agreement = |extra: &str| {
            format!(
                r#"
[[sharing_agreements]]
id = "isa"
title = "t"
purpose = "p"
senders = ["liaison"]
lawful_basis = "b"
categories = ["identity"]
effective_from = "2026-01-01"
{extra}
"#
            )
        };
        let no_areas = base().replace("areas = [\"coventry\"]\n", "")
            + &agreement("recipient_service_types = [\"cmht\"]");
        let err = load(&no_areas, &NoEnv).unwrap_err().to_string();
        for needle in [
            "permissions[0].areas: must name at least one area (e.g. areas = [\"coventry\"])",
            "sharing_agreements[0] (isa).areas: must list the areas in which recipient_service_types are covered",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let misused = base()
            + &agreement(
                "recipient_agencies = [\"cmht\"]\nareas = [\"coventry\", \"Not An Area\"]",
            );
        let err = load(&misused, &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains(
                "sharing_agreements[0] (isa).areas: applies to recipient_service_types only"
            ),
            "{err}"
        );
        assert!(
            err.contains("sharing_agreements[0] (isa).areas[1]: area must be"),
            "{err}"
        );
        let fine = base()
            + &agreement(
                "recipient_service_types = [\"cmht\"]\nareas = [\"coventry\", \"warwickshire\"]",
            );
        let c = load(&fine, &NoEnv).unwrap();
        assert_eq!(
            c.sharing_agreements[0].areas,
            ["coventry".to_owned(), "warwickshire".to_owned()].into()
        );
        let liaison = c.registry.get("liaison").unwrap().clone();
        let cmht = c.registry.get("cmht").unwrap().clone();
        assert!(c.registry.may_refer(&liaison, &cmht));
    }
}
