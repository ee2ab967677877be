//! The schema registry: every JSON Schema in `schemas/`, compiled once at start-up.
//!
//! `referral.v1.json` is the common referral schema. A service type's overlay is any file
//! whose top level carries `"x-service-type": "<type>"`; a referral to that service type
//! must satisfy both (`allOf`). Service types without an overlay use the common schema
//! alone, so adding a service type is a schema file and a config entry, not code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jsonschema::{Draft, ValidationError, Validator, error::ValidationErrorKind};
use serde::Serialize;
use serde_json::{Value, json};
use time::{Date, OffsetDateTime, format_description::well_known::Iso8601};

use crate::domain::{NhsNumber, ServiceType, ValidatedReferral};
use crate::intake::categories::Categories;

pub const COMMON_SCHEMA_FILE: &str = "referral.v1.json";
pub const EVENT_SCHEMA_FILE: &str = "event.v1.json";
const OVERLAY_KEYWORD: &str = "x-service-type";

#[derive(Debug, thiserror::Error)]
pub enum SchemaLoadError {
    #[error("cannot read schema directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read schema {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema {path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("schema {path} has no string \"$id\"")]
    MissingId { path: PathBuf },
    #[error("schema {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the schema {0} is missing")]
    MissingCommon(PathBuf),
    #[error("service type '{service_type}' has two overlays: {first} and {second}")]
    DuplicateOverlay {
        service_type: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// How many JSON Pointers a refusal's audit entry lists (the problem document lists more).
pub const AUDITED_POINTERS: usize = 20;

/// One reason a document failed its schema. `pointer` is an RFC 6901 JSON Pointer to the
/// offending value (for a missing property: to where it should be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Violation {
    pub pointer: String,
    pub keyword: String,
    pub detail: String,
}

struct Compiled {
    schema_id: String,
    validator: Validator,
    /// Its `x-category` annotations, for minimisation.
    categories: Categories,
}

pub struct SchemaRegistry {
    common: Compiled,
    overlays: BTreeMap<String, Compiled>,
    event: Compiled,
    /// The raw schemas by `$id`, for reading `x-category` annotations.
    documents: BTreeMap<String, Value>,
    /// Every property name the schemas declare: the member names an audit entry may
    /// repeat (a caller's own names could hold personal data).
    known_names: std::collections::BTreeSet<String>,
    /// Of those, the ones the schemas declare as arrays (`type: array` or `items`): only
    /// after one of these is a number an index rather than a caller's member name.
    array_names: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("common", &self.common.schema_id)
            .field("overlays", &self.overlays.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SchemaRegistry {
    pub fn load(dir: &Path) -> Result<Self, SchemaLoadError> {
        let read_dir = std::fs::read_dir(dir).map_err(|source| SchemaLoadError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut files: Vec<PathBuf> = read_dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();

        let mut documents = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| SchemaLoadError::Read {
                path: path.clone(),
                source,
            })?;
            let value: Value =
                serde_json::from_str(&text).map_err(|source| SchemaLoadError::Json {
                    path: path.clone(),
                    source,
                })?;
            let id = value
                .get("$id")
                .and_then(Value::as_str)
                .ok_or_else(|| SchemaLoadError::MissingId { path: path.clone() })?
                .to_owned();
            documents.push((path, id, value));
        }

        let registry = jsonschema::Registry::new()
            .extend(
                documents
                    .iter()
                    .map(|(_, id, value)| (id.as_str(), value.clone())),
            )
            .and_then(|b| b.prepare())
            .map_err(|e| SchemaLoadError::Invalid {
                path: dir.to_owned(),
                message: e.to_string(),
            })?;

        let common_path = dir.join(COMMON_SCHEMA_FILE);
        let common_id = documents
            .iter()
            .find(|(p, _, _)| *p == common_path)
            .map(|(_, id, _)| id.clone())
            .ok_or_else(|| SchemaLoadError::MissingCommon(common_path.clone()))?;
        let common = compile(&registry, &common_path, &common_id, None, &documents)?;
        let event_path = dir.join(EVENT_SCHEMA_FILE);
        let event_id = documents
            .iter()
            .find(|(p, _, _)| *p == event_path)
            .map(|(_, id, _)| id.clone())
            .ok_or_else(|| SchemaLoadError::MissingCommon(event_path.clone()))?;
        let event = compile(&registry, &event_path, &event_id, None, &[])?;

        let mut overlays: BTreeMap<String, (PathBuf, Compiled)> = BTreeMap::new();
        for (path, id, value) in &documents {
            let Some(service_type) = value.get(OVERLAY_KEYWORD) else {
                continue;
            };
            let service_type = service_type
                .as_str()
                .and_then(|s| ServiceType::parse(s).ok())
                .ok_or_else(|| SchemaLoadError::Invalid {
                    path: path.clone(),
                    message: format!(
                        "\"{OVERLAY_KEYWORD}\" must be a service type such as \"cmht\""
                    ),
                })?;
            let compiled = compile(&registry, path, &common_id, Some(id), &documents)?;
            if let Some((first, _)) = overlays.get(service_type.as_str()) {
                return Err(SchemaLoadError::DuplicateOverlay {
                    service_type: service_type.to_string(),
                    first: first.clone(),
                    second: path.clone(),
                });
            }
            overlays.insert(service_type.to_string(), (path.clone(), compiled));
        }
        let mut known_names = std::collections::BTreeSet::new();
        let mut array_names = std::collections::BTreeSet::new();
        for (_, _, value) in &documents {
            collect_property_names(value, &mut known_names, &mut array_names);
        }
        Ok(Self {
            known_names,
            array_names,
            common,
            overlays: overlays.into_iter().map(|(k, (_, c))| (k, c)).collect(),
            event,
            documents: documents
                .into_iter()
                .map(|(_, id, value)| (id, value))
                .collect(),
        })
    }

    /// Service types that have an overlay schema.
    /// SHA-256 over every schema document: whether a reload changed the schemas.
    pub fn fingerprint(&self) -> [u8; 32] {
        let text = serde_json::to_string(&self.documents).unwrap_or_default();
        crate::security::digest::sha256(text.as_bytes())
    }

    pub fn overlay_service_types(&self) -> impl Iterator<Item = &str> {
        self.overlays.keys().map(String::as_str)
    }

    /// The `$id` a referral to this service type is checked against.
    pub fn schema_id_for(&self, service_type: Option<&ServiceType>) -> &str {
        &self.compiled_for(service_type).schema_id
    }

    fn compiled_for(&self, service_type: Option<&ServiceType>) -> &Compiled {
        service_type
            .and_then(|t| self.overlays.get(t.as_str()))
            .unwrap_or(&self.common)
    }

    /// Removes every property whose `x-category` (declared on it or inherited from an
    /// enclosing property) `allowed` refuses, and returns their JSON Pointers in document
    /// order. Properties without a category are kept.
    pub fn minimise(
        &self,
        service_type: Option<&ServiceType>,
        document: &mut Value,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        self.compiled_for(service_type)
            .categories
            .withhold(document, allowed)
    }

    /// `pointer` with every member name the schemas do not declare replaced by `*` (array
    /// indexes are kept where the schemas declare an array: elsewhere a number is the
    /// caller's own member name), at most 256 characters: safe to write to the audit log.
    pub fn redact_pointer(&self, pointer: &str) -> String {
        self.redact(pointer, true)
    }

    /// A refusal's audit detail: the fixed `code`, then at most [`AUDITED_POINTERS`] of
    /// `pointers` redacted as [`Self::redact_pointer`] does, except that when `unchecked`
    /// (pointers into a document that was not read whole: a duplicate member, a NUL) its
    /// shape is the caller's, so no number is taken for an array index; then how many more
    /// there were. What refused referrals and refused events both write.
    pub fn audit_detail<'a>(
        &self,
        code: &str,
        pointers: impl IntoIterator<Item = &'a str>,
        unchecked: bool,
    ) -> String {
        let mut out = code.to_owned();
        let mut count = 0;
        for pointer in pointers {
            if count < AUDITED_POINTERS {
                out.push_str(if count == 0 { ": " } else { " " });
                out.push_str(&self.redact(pointer, !unchecked));
            }
            count += 1;
        }
        if count > AUDITED_POINTERS {
            out.push_str(&format!(" (+{} more)", count - AUDITED_POINTERS));
        }
        out
    }

    fn redact(&self, pointer: &str, indexes: bool) -> String {
        let mut out = String::new();
        let mut previous: Option<&str> = None;
        for token in pointer.split('/').skip(1) {
            out.push('/');
            let index = indexes
                && previous.is_some_and(|p| self.array_names.contains(p))
                && !token.is_empty()
                && token.len() <= 6
                && token.bytes().all(|b| b.is_ascii_digit());
            previous = Some(token);
            if index || self.known_names.contains(token) {
                out.push_str(token);
            } else {
                out.push('*');
            }
            if out.len() > 256 {
                out.truncate(256);
                break;
            }
        }
        out
    }

    /// Checks a lifecycle event document against `event.v1.json`.
    pub fn validate_event(&self, document: &Value) -> Result<(), Vec<Violation>> {
        let mut violations: Vec<Violation> = self
            .event
            .validator
            .iter_errors(document)
            .flat_map(|e| violations_of(&e))
            .collect();
        if violations.is_empty() {
            return Ok(());
        }
        violations.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        violations.dedup();
        Err(violations)
    }

    /// Checks a referral document against the common schema and the overlay of
    /// `service_type` (the common schema alone when there is none, or when the
    /// destination is not known). Returns every violation, in document order.
    pub fn validate_referral(
        &self,
        service_type: Option<&ServiceType>,
        document: Value,
    ) -> Result<ValidatedReferral, Vec<Violation>> {
        let compiled = self.compiled_for(service_type);
        // Most documents are valid: the short-circuiting check, which builds no error and
        // tracks no location, first; the full walk only to say what is wrong.
        if !compiled.validator.is_valid(&document) {
            let mut violations: Vec<Violation> = compiled
                .validator
                .iter_errors(&document)
                .flat_map(|e| violations_of(&e))
                .collect();
            if !violations.is_empty() {
                violations.sort_by(|a, b| a.pointer.cmp(&b.pointer));
                violations.dedup();
                return Err(violations);
            }
        }
        ValidatedReferral::after_schema_check(document, compiled.schema_id.clone()).map_err(|_| {
            vec![Violation {
                pointer: "/priority".into(),
                keyword: "enum".into(),
                detail: "must be one of emergency, urgent, routine".into(),
            }]
        })
    }
}

/// Compiles `common_id` alone, or `common_id` and `overlay_id` together (`allOf`).
fn compile(
    registry: &jsonschema::Registry<'_>,
    path: &Path,
    common_id: &str,
    overlay_id: Option<&str>,
    documents: &[(PathBuf, String, Value)],
) -> Result<Compiled, SchemaLoadError> {
    // The common schema first: its annotation wins where both annotate a property.
    let roots: Vec<&Value> = [Some(common_id), overlay_id]
        .into_iter()
        .flatten()
        .filter_map(|id| documents.iter().find(|(_, i, _)| i == id))
        .map(|(_, _, value)| value)
        .collect();
    let categories = Categories::compile(&roots);
    let (schema, schema_id) = match overlay_id {
        None => (json!({ "$ref": common_id }), common_id.to_owned()),
        Some(overlay) => (
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "allOf": [{ "$ref": common_id }, { "$ref": overlay }]
            }),
            overlay.to_owned(),
        ),
    };
    let validator = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_registry(registry)
        .should_validate_formats(true)
        .with_format("nhs-number", |s: &str| NhsNumber::parse(s).is_ok())
        .with_format("past-date", is_past_or_present_date)
        .build(&schema)
        .map_err(|e| SchemaLoadError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    Ok(Compiled {
        schema_id,
        validator,
        categories,
    })
}

/// A full date (`YYYY-MM-DD`) that is not after today in the UK. "Today" is taken one
/// hour ahead of UTC so that a date of birth entered just after midnight during British
/// Summer Time is not refused.
fn is_past_or_present_date(value: &str) -> bool {
    let Ok(date) = Date::parse(value, &Iso8601::DATE) else {
        return false;
    };
    let uk_today = (OffsetDateTime::now_utc() + time::Duration::hours(1)).date();
    value.len() == 10 && date <= uk_today
}

use crate::intake::json::escape_pointer_token;

/// Adds the names of every `properties` member found anywhere in `schema`.
fn collect_property_names(
    schema: &Value,
    names: &mut std::collections::BTreeSet<String>,
    arrays: &mut std::collections::BTreeSet<String>,
) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                for (name, property) in properties {
                    let token = escape_pointer_token(name);
                    let array = property.get("type").and_then(Value::as_str) == Some("array")
                        || property.get("items").is_some();
                    if array {
                        arrays.insert(token.clone());
                    }
                    names.insert(token);
                }
            }
            for value in map.values() {
                collect_property_names(value, names, arrays);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_property_names(item, names, arrays);
            }
        }
        _ => {}
    }
}

fn violations_of(error: &ValidationError<'_>) -> Vec<Violation> {
    let at = error.instance_path().as_str().to_owned();
    let keyword = error.kind().keyword().to_owned();
    let one = |pointer: String, detail: String| Violation {
        pointer,
        keyword: keyword.clone(),
        detail,
    };
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![one(
                format!("{at}/{}", escape_pointer_token(name)),
                format!("'{name}' is required"),
            )]
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                one(
                    format!("{at}/{}", escape_pointer_token(name)),
                    format!("'{name}' is not a known property here"),
                )
            })
            .collect(),
        ValidationErrorKind::FalseSchema => {
            vec![one(at, "this property is not allowed here".into())]
        }
        ValidationErrorKind::Format { format } => {
            let detail = match format.as_str() {
                "nhs-number" => {
                    "is not a valid NHS number (ten digits whose last is a modulus-11 check digit, and not a placeholder such as 0000000000)"
                        .to_owned()
                }
                "past-date" => "must be a date (YYYY-MM-DD) that is not in the future".to_owned(),
                "date" => "must be a date (YYYY-MM-DD)".to_owned(),
                "date-time" => {
                    "must be an RFC 3339 date-time such as 2026-11-23T14:05:00Z".to_owned()
                }
                "uuid" => "must be a UUID".to_owned(),
                other => format!("is not a valid '{other}'"),
            };
            vec![one(at, detail)]
        }
        ValidationErrorKind::Constant { expected_value } => {
            vec![one(at, format!("must be {expected_value}"))]
        }
        ValidationErrorKind::Enum { options } => {
            vec![one(at, format!("must be one of {options}"))]
        }
        _ => vec![one(at, error.masked().to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> SchemaRegistry {
        SchemaRegistry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    fn example(service: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/examples")
            .join(format!("referral-{service}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn st(s: &str) -> ServiceType {
        ServiceType::parse(s).unwrap()
    }

    fn pointers(r: Result<ValidatedReferral, Vec<Violation>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|v| v.pointer).collect()
    }

    #[test]
    fn every_shipped_example_passes_its_overlay() {
        let reg = registry();
        for service in ["cmht", "iapt", "housing", "substance_misuse"] {
            let doc = example(service);
            let validated = reg.validate_referral(Some(&st(service)), doc);
            assert!(validated.is_ok(), "{service}: {:?}", validated.err());
        }
        let overlays: Vec<_> = reg.overlay_service_types().collect();
        assert_eq!(overlays, ["cmht", "housing", "iapt", "substance_misuse"]);
    }

    #[test]
    fn redacted_pointers_keep_only_schema_names_and_array_indexes() {
        let reg = registry();
        // An index inside an array the schemas declare is kept.
        assert_eq!(reg.redact_pointer("/needs/3/type"), "/needs/3/type");
        // A caller's own member names go, numeric ones too (a date of birth, a part of
        // an NHS number), and so does a number at the top or under an object.
        assert_eq!(reg.redact_pointer("/person/010180"), "/person/*");
        assert_eq!(reg.redact_pointer("/943476/x"), "/*/*");
        assert_eq!(reg.redact_pointer("/person/Alex Smith"), "/person/*");
        assert_eq!(reg.redact_pointer("/needs/1234567"), "/needs/*");
        assert_eq!(reg.redact_pointer(""), "");
        // Where the document's shape is the caller's (a parse error), no number is kept.
        assert_eq!(
            reg.audit_detail("malformed-json:duplicate-member", ["/needs/010180"], true),
            "malformed-json:duplicate-member: /needs/*"
        );
        assert_eq!(
            reg.audit_detail("malformed-json:nul", ["/needs/3/type"], true),
            "malformed-json:nul: /needs/*/type"
        );
        assert!(reg.redact_pointer(&"/needs".repeat(100)).len() <= 256);
        // At most AUDITED_POINTERS listed, and how many more.
        let many: Vec<String> = (0..25).map(|i| format!("/needs/{i}")).collect();
        let detail = reg.audit_detail("excess-data", many.iter().map(String::as_str), false);
        assert!(
            detail.starts_with("excess-data: /needs/0 /needs/1 "),
            "{detail}"
        );
        assert!(detail.ends_with("/needs/19 (+5 more)"), "{detail}");
    }

    #[test]
    fn missing_field_and_unknown_property_have_pointers() {
        let reg = registry();
        let mut doc = example("cmht");
        doc["person"]
            .as_object_mut()
            .unwrap()
            .remove("date_of_birth");
        doc["person"]["shoe_size"] = json!(9);
        doc["surprise"] = json!(true);
        let ptrs = pointers(reg.validate_referral(Some(&st("cmht")), doc));
        for p in ["/person/date_of_birth", "/person/shoe_size", "/surprise"] {
            assert!(ptrs.contains(&p.to_owned()), "{p} not in {ptrs:?}");
        }
    }

    #[test]
    fn bad_nhs_number_and_future_birth_date() {
        let reg = registry();
        let mut doc = example("cmht");
        doc["person"]["nhs_number"] = json!("9434765918");
        doc["person"]["date_of_birth"] = json!("2999-01-01");
        let errors = reg.validate_referral(Some(&st("cmht")), doc).unwrap_err();
        let ptrs: Vec<_> = errors.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(ptrs, ["/person/date_of_birth", "/person/nhs_number"]);
        assert!(errors.iter().all(|v| v.keyword == "format"));
        // The offending values are never echoed back.
        assert!(errors.iter().all(|v| !v.detail.contains("9434765918")));
    }

    #[test]
    fn placeholder_nhs_numbers_are_refused() {
        let reg = registry();
        for placeholder in ["0000000000", "999 999 9999"] {
            let mut doc = example("cmht");
            doc["person"]["nhs_number"] = json!(placeholder);
            let errors = reg.validate_referral(Some(&st("cmht")), doc).unwrap_err();
            let ptrs: Vec<_> = errors.iter().map(|v| v.pointer.as_str()).collect();
            assert_eq!(ptrs, ["/person/nhs_number"]);
            assert!(errors[0].detail.contains("placeholder"), "{:?}", errors[0]);
        }
    }

    #[test]
    fn housing_needs_consent_and_chosen_authority() {
        let reg = registry();
        let mut doc = example("housing");
        doc["consent"] = json!({
            "given": false,
            "sharing_without_consent": {
                "justification": "safeguarding",
                "lawful_basis": "UK GDPR Art. 6(1)(e); Art. 9(2)(g); DPA 2018 Sch. 1 para 18",
                "authorised_by": "Duty senior practitioner"
            }
        });
        doc["service_details"]
            .as_object_mut()
            .unwrap()
            .remove("local_housing_authority");
        let ptrs = pointers(reg.validate_referral(Some(&st("housing")), doc));
        assert!(ptrs.contains(&"/consent/given".to_owned()), "{ptrs:?}");
        assert!(
            ptrs.contains(&"/service_details/local_housing_authority".to_owned()),
            "{ptrs:?}"
        );
    }

    #[test]
    fn iapt_scores_are_range_checked() {
        let reg = registry();
        let mut doc = example("iapt");
        doc["service_details"]["phq9_score"] = json!(28);
        doc["service_details"]["gad7_score"] = json!(-1);
        let ptrs = pointers(reg.validate_referral(Some(&st("iapt")), doc));
        assert_eq!(
            ptrs,
            ["/service_details/gad7_score", "/service_details/phq9_score"]
        );
    }

    #[test]
    fn no_consent_needs_a_justification() {
        let reg = registry();
        let mut doc = example("cmht");
        doc["consent"] = json!({
            "given": false,
            "recorded_by": "J. Practitioner",
            "recorded_at": "2026-11-23T10:15:00Z"
        });
        let ptrs = pointers(reg.validate_referral(Some(&st("cmht")), doc));
        assert_eq!(ptrs, ["/consent/sharing_without_consent"]);
    }

    #[test]
    fn destination_shapes() {
        let reg = registry();
        let mut doc = example("cmht");
        doc["destination"] = json!({"agency_id": "coventry-cmht", "area": "coventry"});
        let ptrs = pointers(reg.validate_referral(Some(&st("cmht")), doc.clone()));
        assert_eq!(ptrs, ["/destination/area"]);
        doc["destination"] = json!({"service_type": "cmht"});
        let ptrs = pointers(reg.validate_referral(None, doc));
        assert_eq!(ptrs, ["/destination/area"]);
    }

    #[test]
    fn events_are_checked_per_type() {
        let reg = registry();
        let id = "0192f7a4-3c4e-7d1e-9b0a-2f4c5d6e7f80";
        assert!(
            reg.validate_event(&json!({"event_id": id, "type": "acknowledged"}))
                .is_ok()
        );
        let errs = reg
            .validate_event(&json!({"event_id": "nope", "type": "declined", "outcome": "other"}))
            .unwrap_err();
        let ptrs: Vec<_> = errs.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(ptrs, ["/event_id", "/outcome", "/reason_code"]);
        assert!(
            reg.validate_event(&json!({"event_id": id, "type": "first_contact",
                "contact": {"outcome": "attended", "date": "2026-11-20"}}))
                .is_ok()
        );
        // `redirected_to`: an agency, or a service type with its area, and/or a description.
        let redirected = |to: Value| {
            reg.validate_event(&json!({"event_id": id, "type": "redirected", "redirected_to": to}))
        };
        for good in [
            json!({"agency_id": "coventry-iapt"}),
            json!({"service_type": "iapt", "area": "coventry"}),
            json!({"description": "The crisis team."}),
            json!({"agency_id": "coventry-iapt", "description": "Self-referral first."}),
        ] {
            assert!(redirected(good.clone()).is_ok(), "{good}");
        }
        for bad in [
            json!({}),
            json!({"area": "coventry"}),
            json!({"service_type": "iapt"}),
            json!({"agency_id": "coventry-iapt", "service_type": "iapt", "area": "coventry"}),
            json!({"agency_id": "coventry-iapt", "area": "coventry"}),
        ] {
            let errs = redirected(bad.clone()).unwrap_err();
            assert!(
                errs.iter().all(|v| v.pointer.starts_with("/redirected_to")),
                "{bad}: {errs:?}"
            );
        }
        // With an agency, the service's members are refused, not asked for.
        let errs =
            redirected(json!({"agency_id": "coventry-iapt", "area": "coventry"})).unwrap_err();
        let pointers: Vec<&str> = errs.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/redirected_to/area"], "{errs:?}");
    }

    #[test]
    fn minimisation_withholds_categories() {
        let reg = registry();
        let mut doc = example("housing");
        let allowed = |c: &str| {
            [
                "routing",
                "referral",
                "consent",
                "identity",
                "contact",
                "housing",
                "risk",
                "criminal_justice",
            ]
            .contains(&c)
        };
        let withheld = reg.minimise(Some(&st("housing")), &mut doc, &allowed);
        // The housing example's only need is a housing need: it stays.
        assert_eq!(withheld, ["/person/gp"]);
        assert_eq!(doc["needs"][0]["type"], "housing");
        // Health needs among housing ones are withheld item by item (pointers as sent).
        let mut doc = example("housing");
        doc["needs"] = json!([{"type": "mental_health"}, {"type": "housing"}, {"type": "learning_disability"}]);
        let withheld = reg.minimise(Some(&st("housing")), &mut doc, &allowed);
        assert_eq!(withheld, ["/needs/0", "/needs/2", "/person/gp"]);
        assert_eq!(doc["needs"], json!([{"type": "housing"}]));
        // All of them health: the array goes as a whole.
        let mut doc = example("housing");
        doc["needs"] = json!([{"type": "mental_health"}]);
        let withheld = reg.minimise(Some(&st("housing")), &mut doc, &allowed);
        assert_eq!(withheld, ["/needs", "/person/gp"]);
        assert!(doc.get("needs").is_none());
        assert!(doc["person"].get("gp").is_none());
        assert!(doc["person"].get("name").is_some());
        assert!(doc.get("service_details").is_some());
        // Everything allowed: nothing changes.
        let mut doc = example("cmht");
        let before = doc.clone();
        assert!(
            reg.minimise(Some(&st("cmht")), &mut doc, &|_| true)
                .is_empty()
        );
        assert_eq!(doc, before);
        // The overlay's own category applies to service_details.
        let mut doc = example("cmht");
        let withheld = reg.minimise(Some(&st("cmht")), &mut doc, &|c| c != "health");
        assert_eq!(withheld, ["/needs", "/person/gp", "/service_details"]);
    }

    #[test]
    fn every_property_has_a_category() {
        let reg = registry();
        for service in ["cmht", "iapt", "housing", "substance_misuse"] {
            let mut doc = example(service);
            // Refusing every category except the three always shared withholds all the rest.
            let withheld = reg.minimise(Some(&st(service)), &mut doc, &|c| {
                ["routing", "referral", "consent"].contains(&c)
            });
            let left: Vec<_> = doc.as_object().unwrap().keys().cloned().collect();
            assert_eq!(
                left,
                [
                    "consent",
                    "destination",
                    "priority",
                    "reason",
                    "referrer",
                    "requested_action"
                ],
                "{service}: {withheld:?}"
            );
        }
    }

    #[test]
    fn past_dates() {
        assert!(is_past_or_present_date("1990-02-28"));
        assert!(!is_past_or_present_date("1990-02-30"));
        assert!(!is_past_or_present_date("2999-01-01"));
        assert!(!is_past_or_present_date("1990-2-3"));
    }
}
