//! Person keys: the pseudonym under which the disclosures about one person are found
//! (HMAC of the NHS number, or of name and date of birth), and what a submission's
//! audit entry records.

use ring::hmac;
use serde_json::Value;

use crate::domain::NhsNumber;
use crate::domain::audit::AuditAction;
use crate::store::AuditRecord;

/// Derives the pseudonymous key under which disclosures about one person are found:
/// HMAC-SHA256 of the normalised NHS number, or (without one) of the normalised name and
/// date of birth, under a secret the log does not hold.
#[derive(Clone)]
pub struct PersonKeyer {
    key: hmac::Key,
}

impl std::fmt::Debug for PersonKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonKeyer(<secret>)")
    }
}

fn normalise_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl PersonKeyer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn mac(&self, text: &str) -> String {
        hex::encode(hmac::sign(&self.key, text.as_bytes()).as_ref())
    }

    /// A short fingerprint of the secret (an HMAC of a fixed text, 16 hex digits): which
    /// secret made the person keys, without revealing it. Recorded at start-up: a change
    /// of secret leaves every earlier person key unfindable by subject access.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.mac("referral-gateway person-key secret fingerprint");
        mac.truncate(16);
        mac
    }

    /// From identifiers given directly (a subject access request).
    pub fn key_for(
        &self,
        nhs_number: Option<&str>,
        given: Option<&str>,
        family: Option<&str>,
        date_of_birth: Option<&str>,
    ) -> Option<String> {
        // `NhsNumber::parse` refuses placeholders (`0000000000`, ...): a referral or search
        // carrying one falls back to name and date of birth, never a key shared by many.
        if let Some(nhs) = nhs_number.and_then(|n| NhsNumber::parse(n).ok()) {
            return Some(self.mac(&format!("nhs:{}", nhs.as_digits())));
        }
        match (given, family, date_of_birth) {
            (Some(g), Some(f), Some(d)) => Some(self.mac(&format!(
                "name-dob:{}|{}|{}",
                normalise_name(g),
                normalise_name(f),
                d.trim()
            ))),
            _ => None,
        }
    }

    /// From a referral document's `/person`.
    pub fn key_of(&self, document: &Value) -> Option<String> {
        let person = document.get("person")?;
        self.key_for(
            person.get("nhs_number").and_then(Value::as_str),
            person.pointer("/name/given").and_then(Value::as_str),
            person.pointer("/name/family").and_then(Value::as_str),
            person.get("date_of_birth").and_then(Value::as_str),
        )
    }
}

/// The audit entry for an accepted referral: what was shared, on what basis, about the
/// person with `person_key` (from the full document: identity may have been withheld from
/// what was shared, so the caller keys the person once, before minimisation).
pub fn submission_record(
    sender: &str,
    recipient: &str,
    referral_id: &str,
    document: &Value,
    person_key: Option<String>,
) -> AuditRecord {
    let consent = document.get("consent");
    let given = consent
        .and_then(|c| c.get("given"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let without = consent.and_then(|c| c.get("sharing_without_consent"));
    AuditRecord {
        actor: format!("agency:{sender}"),
        action: AuditAction::ReferralSubmitted,
        referral_id: Some(referral_id.to_owned()),
        recipient: Some(recipient.to_owned()),
        isa_id: None,
        // Only ever the agreement's own text (set by the caller when one applies): the
        // sender's `sharing_without_consent.lawful_basis` is free text of its own, and
        // free text never goes into the log. The consent entry keeps its fixed code.
        lawful_basis: None,
        consent: Some(if given {
            "given".to_owned()
        } else {
            format!(
                "not_given:{}",
                without
                    .and_then(|w| w.get("justification"))
                    .and_then(Value::as_str)
                    .unwrap_or("none")
            )
        }),
        // The caller fills in the field categories shared (from minimisation).
        categories: Vec::new(),
        withheld: Vec::new(),
        person_key,
        detail: String::new(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use serde_json::json;

    #[test]
    fn person_keys_normalise_and_prefer_the_nhs_number() {
        let k = PersonKeyer::new(b"secret");
        let a = k.key_of(&json!({"person": {"nhs_number": "943 476 5919", "name": {"given": "A", "family": "B"}, "date_of_birth": "1990-01-01"}}));
        let b = k.key_for(Some("9434765919"), None, None, None);
        assert_eq!(a, b);
        let c = k.key_for(None, Some("  Alex "), Some("EXAMPLE"), Some("1991-06-14"));
        let d = k.key_of(&json!({"person": {"name": {"given": "alex", "family": "Example"}, "date_of_birth": "1991-06-14"}}));
        assert_eq!(c, d);
        assert_ne!(a, c);
        assert_ne!(
            PersonKeyer::new(b"other").key_for(Some("9434765919"), None, None, None),
            b
        );
        assert!(!a.unwrap().contains("943"));
    }

    #[test]
    fn placeholder_nhs_numbers_never_merge_people() {
        // Two different people recorded with the placeholder 0000000000 (or 9999999999)
        // keep the keys of their names and birth dates; the placeholder alone gives none.
        let k = PersonKeyer::new(b"secret");
        let alex = json!({"person": {"nhs_number": "0000000000", "name": {"given": "Alex", "family": "Example"}, "date_of_birth": "1991-06-14"}});
        let sam = json!({"person": {"nhs_number": "0000000000", "name": {"given": "Sam", "family": "Other"}, "date_of_birth": "1980-02-02"}});
        assert_ne!(k.key_of(&alex), k.key_of(&sam));
        assert_eq!(
            k.key_of(&alex),
            k.key_for(None, Some("Alex"), Some("Example"), Some("1991-06-14"))
        );
        for placeholder in ["0000000000", "999 999 9999", "1111111111"] {
            assert_eq!(k.key_for(Some(placeholder), None, None, None), None);
        }
    }
}
