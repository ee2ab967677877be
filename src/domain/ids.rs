//! Identifier newtypes. Each is parsed once, at the edge, and is valid from then on.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "{kind} must be 1-{max} characters of lowercase letters, digits and '{sep}', starting with a letter or digit (got {len} characters)"
    )]
    Malformed {
        kind: &'static str,
        max: usize,
        sep: char,
        len: usize,
    },
    #[error("referral id must be a UUID")]
    NotUuid,
}

fn check_slug(value: &str, kind: &'static str, max: usize, sep: char) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == sep as u8);
    if ok {
        Ok(())
    } else {
        Err(IdError::Malformed {
            kind,
            max,
            sep,
            len: value.chars().count(),
        })
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $sep:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_slug(&value, $kind, 63, $sep)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

slug_id!(
    /// An agency's identifier in the registry, e.g. `coventry-cmht`. Safe in routing keys and logs.
    AgencyId,
    "agency id",
    '-'
);
slug_id!(
    /// A service type such as `cmht` or `substance_misuse`. Configured, not hard-coded.
    ServiceType,
    "service type",
    '_'
);
slug_id!(
    /// A geographical area served by agencies, e.g. `coventry` or `west-midlands`.
    Area,
    "area",
    '-'
);

impl ServiceType {
    /// The file-name stem used for this service type's schema overlay (`substance_misuse` -> `substance-misuse`).
    pub fn schema_stem(&self) -> String {
        self.0.replace('_', "-")
    }
}

/// A referral's identifier: a UUID (v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReferralId(Uuid);

impl ReferralId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(value: &str) -> Result<Self, IdError> {
        Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| IdError::NotUuid)
    }
}

impl Default for ReferralId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ReferralId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agency_ids_are_lowercase_slugs() {
        assert!(AgencyId::parse("coventry-cmht").is_ok());
        assert!(AgencyId::parse("Coventry").is_err());
        assert!(AgencyId::parse("").is_err());
        assert!(AgencyId::parse("-leading").is_err());
        assert!(AgencyId::parse("a.b").is_err());
        assert!(AgencyId::parse("x".repeat(64)).is_err());
    }

    #[test]
    fn service_types_use_underscores_and_map_to_schema_stems() {
        let t = ServiceType::parse("substance_misuse").unwrap();
        assert_eq!(t.schema_stem(), "substance-misuse");
        assert!(ServiceType::parse("substance-misuse").is_err());
    }

    #[test]
    fn referral_ids_are_uuids() {
        let id = ReferralId::new();
        assert_eq!(ReferralId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(ReferralId::parse("42"), Err(IdError::NotUuid));
    }
}
