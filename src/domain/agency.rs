//! The agency registry: who the gateway knows, how their certificates map to them,
//! who may refer to whom, and how a destination resolves to one receiving agency.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ids::{AgencyId, Area, ServiceType};
use super::referral::Destination;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgencyRole {
    Sender,
    Receiver,
    Both,
}

impl AgencyRole {
    pub fn sends(self) -> bool {
        matches!(self, Self::Sender | Self::Both)
    }
    pub fn receives(self) -> bool {
        matches!(self, Self::Receiver | Self::Both)
    }
}

/// How a client certificate is recognised as an agency's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertificateIdentity {
    /// A SAN of type URI, e.g. `urn:referral-gateway:agency:coventry-cmht`.
    SanUri(String),
    /// A SAN of type DNS name, compared case-insensitively.
    SanDns(String),
    /// The SHA-256 of the certificate's DER encoding, pinned.
    Sha256([u8; 32]),
}

#[derive(Debug, Clone)]
pub struct Agency {
    pub id: AgencyId,
    pub name: String,
    pub service_type: ServiceType,
    pub area: Area,
    pub role: AgencyRole,
    pub certificate: CertificateIdentity,
}

/// `<service_type>.<area>.<agency-id>`: how a referral to an agency is routed. Built only
/// from registry identifiers, so it can never carry personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKey(String);

impl RoutingKey {
    pub fn for_agency(agency: &Agency) -> Self {
        Self::of(&agency.service_type, &agency.area, &agency.id)
    }

    /// The key of an agency by its parts (as a referral row records its recipient, which
    /// a reload may have removed from the registry since).
    pub fn of(service_type: &ServiceType, area: &Area, id: &AgencyId) -> Self {
        Self(format!("{service_type}.{area}.{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a client certificate presents, extracted once per TLS connection.
#[derive(Debug, Clone, Default)]
pub struct PresentedIdentity {
    pub sha256: [u8; 32],
    pub san_uris: Vec<String>,
    pub san_dns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("no agency with id '{0}' is registered")]
    UnknownAgency(String),
    #[error("agency '{0}' does not receive referrals")]
    NotAReceiver(AgencyId),
    /// Sender and recipient are one agency: the lifecycle needs two parties (a sender
    /// withdraws and follows up, a recipient answers), and the gateway is for sharing
    /// between agencies.
    #[error("agency '{0}' cannot send a referral to itself")]
    ToItself(AgencyId),
    #[error("no receiving agency provides service type '{service_type}' in area '{area}'")]
    NoAgency { service_type: String, area: String },
    #[error(
        "{count} agencies provide service type '{service_type}' in area '{area}' ({candidates}); name one with destination.agency_id"
    )]
    Ambiguous {
        service_type: String,
        area: String,
        count: usize,
        candidates: String,
    },
}

impl RoutingError {
    /// A fixed code for the audit log (the message may hold the caller's values).
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownAgency(_) => "unknown-agency",
            Self::NotAReceiver(_) => "not-a-receiver",
            Self::ToItself(_) => "to-itself",
            Self::NoAgency { .. } => "no-agency",
            Self::Ambiguous { .. } => "ambiguous",
        }
    }
}

#[derive(Debug, Default)]
pub struct AgencyRegistry {
    by_id: BTreeMap<String, Arc<Agency>>,
    /// sender -> the service types it may refer to, each in an area.
    permissions: BTreeMap<AgencyId, BTreeSet<(ServiceType, Area)>>,
}

impl AgencyRegistry {
    /// Builds the registry. Uniqueness of ids and identities is the config loader's job;
    /// here a later duplicate simply replaces an earlier one. A permission lets a sender
    /// refer to a service type in one area.
    pub fn new(
        agencies: impl IntoIterator<Item = Agency>,
        permissions: impl IntoIterator<Item = (AgencyId, ServiceType, Area)>,
    ) -> Self {
        let by_id = agencies
            .into_iter()
            .map(|a| (a.id.as_str().to_owned(), Arc::new(a)))
            .collect();
        let mut perms: BTreeMap<AgencyId, BTreeSet<(ServiceType, Area)>> = BTreeMap::new();
        for (sender, service_type, area) in permissions {
            perms
                .entry(sender)
                .or_default()
                .insert((service_type, area));
        }
        Self {
            by_id,
            permissions: perms,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Agency>> {
        self.by_id.get(id)
    }

    pub fn agencies(&self) -> impl Iterator<Item = &Arc<Agency>> {
        self.by_id.values()
    }

    /// The agency a client certificate belongs to, if exactly one matches.
    /// A pinned fingerprint wins over SAN names; a certificate whose names match
    /// several agencies maps to none (it is refused, never guessed).
    pub fn identify(&self, presented: &PresentedIdentity) -> Option<&Arc<Agency>> {
        let mut by_pin = None;
        let mut by_name: Vec<&Arc<Agency>> = Vec::new();
        for agency in self.by_id.values() {
            match &agency.certificate {
                CertificateIdentity::Sha256(pin) if *pin == presented.sha256 => {
                    by_pin = Some(agency)
                }
                CertificateIdentity::SanUri(uri) if presented.san_uris.iter().any(|u| u == uri) => {
                    by_name.push(agency)
                }
                CertificateIdentity::SanDns(dns)
                    if presented
                        .san_dns
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(dns)) =>
                {
                    by_name.push(agency)
                }
                _ => {}
            }
        }
        by_pin.or(match by_name.as_slice() {
            [only] => Some(*only),
            _ => None,
        })
    }

    /// Whether `sender` may refer to `recipient`: it sends, and holds a permission for the
    /// recipient's service type in the recipient's area.
    pub fn may_refer(&self, sender: &Agency, recipient: &Agency) -> bool {
        sender.role.sends()
            && self.permissions.get(&sender.id).is_some_and(|grants| {
                grants.contains(&(recipient.service_type.clone(), recipient.area.clone()))
            })
    }

    /// Permissions wider than their recipients: an area granted for service types no
    /// receiving agency provides there (one onboarded later would be open to the sender
    /// at once). For start-up logs; registry ids only.
    /// The (service type, area) pairs `sender` may refer to.
    pub fn permissions_of(&self, sender: &AgencyId) -> Option<&BTreeSet<(ServiceType, Area)>> {
        self.permissions.get(sender)
    }

    pub fn permission_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (sender, grants) in &self.permissions {
            let mut by_area: BTreeMap<&Area, Vec<&str>> = BTreeMap::new();
            for (service_type, area) in grants {
                let provided = self.by_id.values().any(|a| {
                    a.role.receives() && a.area == *area && a.service_type == *service_type
                });
                if !provided {
                    by_area.entry(area).or_default().push(service_type.as_str());
                }
            }
            for (area, types) in by_area {
                warnings.push(format!(
                    "permission for '{sender}' covers service type(s) {} in area '{area}', where no receiving agency of them is registered: one onboarded there later would be open to it without review",
                    types.join(", ")
                ));
            }
        }
        warnings
    }

    /// Resolves a referral's destination to exactly one receiving agency.
    pub fn resolve(&self, destination: &Destination) -> Result<&Arc<Agency>, RoutingError> {
        match destination {
            Destination::Agency(id) => {
                let agency = self
                    .get(id)
                    .ok_or_else(|| RoutingError::UnknownAgency(id.clone()))?;
                if agency.role.receives() {
                    Ok(agency)
                } else {
                    Err(RoutingError::NotAReceiver(agency.id.clone()))
                }
            }
            Destination::Service { service_type, area } => {
                let matches: Vec<_> = self
                    .by_id
                    .values()
                    .filter(|a| {
                        a.role.receives()
                            && a.service_type.as_str() == service_type
                            && a.area.as_str() == area
                    })
                    .collect();
                match matches.as_slice() {
                    [only] => Ok(*only),
                    [] => Err(RoutingError::NoAgency {
                        service_type: service_type.clone(),
                        area: area.clone(),
                    }),
                    many => Err(RoutingError::Ambiguous {
                        service_type: service_type.clone(),
                        area: area.clone(),
                        count: many.len(),
                        candidates: many
                            .iter()
                            .map(|a| a.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(id: &str, st: &str, role: AgencyRole, cert: CertificateIdentity) -> Agency {
        in_area(id, st, "coventry", role, cert)
    }

    fn in_area(
        id: &str,
        st: &str,
        area: &str,
        role: AgencyRole,
        cert: CertificateIdentity,
    ) -> Agency {
        Agency {
            id: AgencyId::parse(id).unwrap(),
            name: id.to_owned(),
            service_type: ServiceType::parse(st).unwrap(),
            area: Area::parse(area).unwrap(),
            role,
            certificate: cert,
        }
    }

    fn grant(sender: &str, st: &str, area: &str) -> (AgencyId, ServiceType, Area) {
        (
            AgencyId::parse(sender).unwrap(),
            ServiceType::parse(st).unwrap(),
            Area::parse(area).unwrap(),
        )
    }

    fn registry() -> AgencyRegistry {
        AgencyRegistry::new(
            [
                agency(
                    "liaison",
                    "liaison",
                    AgencyRole::Sender,
                    CertificateIdentity::SanUri("urn:x:liaison".into()),
                ),
                agency(
                    "cmht",
                    "cmht",
                    AgencyRole::Receiver,
                    CertificateIdentity::SanDns("cmht.example".into()),
                ),
                agency(
                    "pinned",
                    "iapt",
                    AgencyRole::Receiver,
                    CertificateIdentity::Sha256([7; 32]),
                ),
                agency(
                    "housing-a",
                    "housing",
                    AgencyRole::Receiver,
                    CertificateIdentity::SanUri("urn:x:ha".into()),
                ),
                agency(
                    "housing-b",
                    "housing",
                    AgencyRole::Receiver,
                    CertificateIdentity::SanUri("urn:x:hb".into()),
                ),
            ],
            [grant("liaison", "cmht", "coventry")],
        )
    }

    #[test]
    fn identifies_by_uri_dns_and_pin() {
        let r = registry();
        let by_uri = PresentedIdentity {
            san_uris: vec!["urn:x:liaison".into()],
            ..Default::default()
        };
        assert_eq!(r.identify(&by_uri).unwrap().id.as_str(), "liaison");
        let by_dns = PresentedIdentity {
            san_dns: vec!["CMHT.example".into()],
            ..Default::default()
        };
        assert_eq!(r.identify(&by_dns).unwrap().id.as_str(), "cmht");
        let by_pin = PresentedIdentity {
            sha256: [7; 32],
            ..Default::default()
        };
        assert_eq!(r.identify(&by_pin).unwrap().id.as_str(), "pinned");
        assert!(r.identify(&PresentedIdentity::default()).is_none());
    }

    #[test]
    fn a_certificate_naming_two_agencies_maps_to_none() {
        let both = PresentedIdentity {
            san_uris: vec!["urn:x:ha".into(), "urn:x:hb".into()],
            ..Default::default()
        };
        assert!(registry().identify(&both).is_none());
    }

    #[test]
    fn permissions_need_a_sending_role_and_a_grant() {
        let r = registry();
        let liaison = r.get("liaison").unwrap().clone();
        let cmht = r.get("cmht").unwrap().clone();
        let iapt = r.get("pinned").unwrap().clone();
        assert!(r.may_refer(&liaison, &cmht));
        assert!(!r.may_refer(&liaison, &iapt));
        assert!(!r.may_refer(&cmht, &cmht));
    }

    #[test]
    fn permissions_cover_their_areas_only() {
        let uri = |u: &str| CertificateIdentity::SanUri(u.into());
        let r = AgencyRegistry::new(
            [
                agency("cov-liaison", "liaison", AgencyRole::Sender, uri("a")),
                in_area(
                    "war-liaison",
                    "liaison",
                    "warwickshire",
                    AgencyRole::Sender,
                    uri("b"),
                ),
                agency("cov-cmht", "cmht", AgencyRole::Receiver, uri("c")),
                in_area(
                    "war-cmht",
                    "cmht",
                    "warwickshire",
                    AgencyRole::Receiver,
                    uri("d"),
                ),
            ],
            [
                grant("cov-liaison", "cmht", "coventry"),
                grant("war-liaison", "cmht", "warwickshire"),
            ],
        );
        let get = |id: &str| r.get(id).unwrap().clone();
        assert!(r.may_refer(&get("cov-liaison"), &get("cov-cmht")));
        assert!(!r.may_refer(&get("cov-liaison"), &get("war-cmht")));
        assert!(r.may_refer(&get("war-liaison"), &get("war-cmht")));
        assert!(!r.may_refer(&get("war-liaison"), &get("cov-cmht")));
        // A permission listing an area where none of its service types is registered is
        // wider than its recipients: warned about, naming ids only.
        let r = AgencyRegistry::new(
            [
                agency("cov-liaison", "liaison", AgencyRole::Sender, uri("a")),
                agency("cov-cmht", "cmht", AgencyRole::Receiver, uri("c")),
            ],
            [
                grant("cov-liaison", "cmht", "coventry"),
                grant("cov-liaison", "iapt", "coventry"),
                grant("cov-liaison", "cmht", "warwickshire"),
            ],
        );
        let warnings = r.permission_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("'cov-liaison'")
                && warnings[0].contains("'coventry'")
                && warnings[0].contains("iapt"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("'warwickshire'") && warnings[1].contains("cmht"),
            "{warnings:?}"
        );
    }

    #[test]
    fn resolves_destinations() {
        let r = registry();
        let svc = |t: &str| Destination::Service {
            service_type: t.into(),
            area: "coventry".into(),
        };
        assert_eq!(r.resolve(&svc("cmht")).unwrap().id.as_str(), "cmht");
        assert!(matches!(
            r.resolve(&svc("crisis")),
            Err(RoutingError::NoAgency { .. })
        ));
        assert!(matches!(
            r.resolve(&svc("housing")),
            Err(RoutingError::Ambiguous { count: 2, .. })
        ));
        assert_eq!(
            r.resolve(&Destination::Agency("housing-b".into()))
                .unwrap()
                .id
                .as_str(),
            "housing-b"
        );
        assert!(matches!(
            r.resolve(&Destination::Agency("liaison".into())),
            Err(RoutingError::NotAReceiver(_))
        ));
        assert!(matches!(
            r.resolve(&Destination::Agency("nobody".into())),
            Err(RoutingError::UnknownAgency(_))
        ));
    }
}
