//! `[[agencies]]` and `[[permissions]]`: the agency registry, with each agency's
//! certificate identity and the service types each sender may refer to.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::Problems;
use crate::domain::{
    Agency, AgencyId, AgencyRegistry, AgencyRole, Area, CertificateIdentity, ServiceType,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgency {
    id: String,
    name: String,
    service_type: String,
    area: String,
    role: AgencyRole,
    certificate: RawCertificate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    san_uri: Option<String>,
    san_dns: Option<String>,
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPermission {
    sender: String,
    service_types: Vec<String>,
    /// Where the service types may be referred to; required.
    #[serde(default)]
    areas: Vec<String>,
}

pub(super) fn build_registry(
    raw_agencies: Vec<RawAgency>,
    raw_permissions: Vec<RawPermission>,
    problems: &mut Problems,
) -> AgencyRegistry {
    if raw_agencies.is_empty() {
        problems.push("agencies", "at least one agency must be configured");
    }
    let mut agencies = Vec::new();
    let mut seen_ids = BTreeSet::new();
    let mut seen_identities: BTreeMap<CertificateIdentity, String> = BTreeMap::new();
    for (i, raw) in raw_agencies.into_iter().enumerate() {
        let key = format!("agencies[{i}]");
        let id = AgencyId::parse(raw.id.clone())
            .map_err(|e| problems.push(&format!("{key}.id"), e))
            .ok();
        if !seen_ids.insert(raw.id.clone()) {
            problems.push(
                &format!("{key}.id"),
                format!("'{}' is defined more than once", raw.id),
            );
        }
        // Broker user names are the agency ids: these are the gateway's own users.
        if crate::delivery::definitions::RESERVED_USERS.contains(&raw.id.as_str()) {
            problems.push(
                &format!("{key}.id"),
                format!(
                    "'{}' is reserved (one of the gateway's own broker users); choose another id",
                    raw.id
                ),
            );
        }
        let key = format!("agencies[{i}] ({})", raw.id);
        if raw.name.trim().is_empty() {
            problems.push(&format!("{key}.name"), "must not be empty");
        }
        let service_type = ServiceType::parse(raw.service_type)
            .map_err(|e| problems.push(&format!("{key}.service_type"), e))
            .ok();
        let area = Area::parse(raw.area)
            .map_err(|e| problems.push(&format!("{key}.area"), e))
            .ok();
        let certificate = certificate_identity(&raw.certificate)
            .map_err(|e| problems.push(&format!("{key}.certificate"), e))
            .ok();
        if let Some(identity) = &certificate
            && let Some(other) = seen_identities.insert(identity.clone(), raw.id.clone())
        {
            problems.push(
                &format!("{key}.certificate"),
                format!("the same certificate identity is already used by agency '{other}'"),
            );
        }
        if let (Some(id), Some(service_type), Some(area), Some(certificate)) =
            (id, service_type, area, certificate)
        {
            agencies.push(Agency {
                id,
                name: raw.name,
                service_type,
                area,
                role: raw.role,
                certificate,
            });
        }
    }

    let mut permissions = Vec::new();
    for (i, raw) in raw_permissions.into_iter().enumerate() {
        let key = format!("permissions[{i}]");
        match agencies.iter().find(|a| a.id.as_str() == raw.sender) {
            None => problems.push(
                &format!("{key}.sender"),
                format!("no agency '{}' is configured", raw.sender),
            ),
            Some(agency) if !agency.role.sends() => problems.push(
                &format!("{key}.sender"),
                format!(
                    "agency '{}' has role receiver; give it role sender or both",
                    raw.sender
                ),
            ),
            Some(agency) => {
                if raw.service_types.is_empty() {
                    problems.push(&format!("{key}.service_types"), "must not be empty");
                }
                if raw.areas.is_empty() {
                    problems.push(
                        &format!("{key}.areas"),
                        format!(
                            "must name at least one area (e.g. areas = [\"{}\"]): a permission covers its service types in the areas it lists only",
                            agency.area
                        ),
                    );
                }
                let mut areas = Vec::new();
                for (j, area) in raw.areas.into_iter().enumerate() {
                    match Area::parse(area) {
                        Ok(area) => areas.push(area),
                        Err(e) => problems.push(&format!("{key}.areas[{j}]"), e),
                    }
                }
                for (j, st) in raw.service_types.into_iter().enumerate() {
                    match ServiceType::parse(st) {
                        Ok(st) => permissions.extend(
                            areas
                                .iter()
                                .map(|area| (agency.id.clone(), st.clone(), area.clone())),
                        ),
                        Err(e) => problems.push(&format!("{key}.service_types[{j}]"), e),
                    }
                }
            }
        }
    }
    AgencyRegistry::new(agencies, permissions)
}

pub(super) fn certificate_identity(raw: &RawCertificate) -> Result<CertificateIdentity, String> {
    match (&raw.san_uri, &raw.san_dns, &raw.sha256) {
        (Some(uri), None, None) if !uri.trim().is_empty() => {
            Ok(CertificateIdentity::SanUri(uri.clone()))
        }
        (None, Some(dns), None) if !dns.trim().is_empty() => {
            Ok(CertificateIdentity::SanDns(dns.to_ascii_lowercase()))
        }
        (None, None, Some(fp)) => parse_fingerprint(fp).map(CertificateIdentity::Sha256),
        _ => Err("set exactly one non-empty value of san_uri, san_dns or sha256".to_owned()),
    }
}

/// Accepts `AB:CD:...`, `ab cd ...` or plain hex, as printed by common tools.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex_digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bytes = hex::decode(&hex_digits)
        .map_err(|_| "sha256 must be 64 hexadecimal digits, optionally separated by ':'")?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "sha256 must be 32 bytes (64 hex digits); got {} bytes",
            b.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoEnv;
    use crate::config::testing::{base, load};

    #[test]
    fn duplicate_ids_and_identities_are_refused() {
        let text = base().replace("id = \"cmht\"", "id = \"liaison\"").replace(
            &format!("sha256 = \"{}\"", "AB:".repeat(31) + "AB"),
            "san_uri = \"urn:x:liaison\"",
        );
        let err = load(&text, &NoEnv).unwrap_err().to_string();
        assert!(err.contains("'liaison' is defined more than once"), "{err}");
        assert!(err.contains("already used by agency 'liaison'"), "{err}");
    }

    #[test]
    fn the_gateways_own_broker_user_names_are_refused_as_agency_ids() {
        for reserved in ["referral-gateway", "referral-escalations"] {
            let text = base().replace("id = \"cmht\"", &format!("id = \"{reserved}\""));
            let err = load(&text, &NoEnv).unwrap_err().to_string();
            assert!(
                err.contains(&format!("'{reserved}' is reserved")),
                "{reserved}: {err}"
            );
        }
    }

    #[test]
    fn fingerprints_parse_in_common_spellings() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex64).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&"AB:".repeat(31).add_last("AB")).unwrap(),
            [0xab; 32]
        );
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint("zz").is_err());
    }

    trait AddLast {
        fn add_last(self, s: &str) -> String;
    }
    impl AddLast for String {
        fn add_last(mut self, s: &str) -> String {
            self.push_str(s);
            self
        }
    }
}
