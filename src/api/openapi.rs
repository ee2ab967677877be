//! The OpenAPI 3.1 documents of the agency and the staff listener, served at
//! `GET /v1/openapi.json` on each and committed as `docs/openapi/{agency,staff}.json`.
//!
//! One implementation: the operations come from the handlers' `#[utoipa::path]`
//! annotations, the response bodies from their types' `ToSchema` derives, the request
//! bodies of referrals and events from `schemas/*.json` (embedded at build time, with their
//! `x-category` annotations), and every problem response from [`ProblemKind`] and each
//! operation's list of the kinds it answers with. `referral-gateway openapi --listener
//! agency|staff` prints a document; a test fails when a committed one differs.

use std::borrow::Cow;
use std::sync::OnceLock;

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::problem::{self, ProblemKind};

/// The listeners that have a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Agency,
    Staff,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Self::Agency => "agency",
            Self::Staff => "staff",
        }
    }
}

impl std::str::FromStr for Listener {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agency" => Ok(Self::Agency),
            "staff" => Ok(Self::Staff),
            other => Err(format!("no listener '{other}' (agency or staff)")),
        }
    }
}

/// The shipped schemas, embedded: (file name, text).
const SCHEMAS: &[(&str, &str)] = &[
    (
        "referral.v1.json",
        include_str!("../../schemas/referral.v1.json"),
    ),
    ("event.v1.json", include_str!("../../schemas/event.v1.json")),
    ("cmht.v1.json", include_str!("../../schemas/cmht.v1.json")),
    (
        "housing.v1.json",
        include_str!("../../schemas/housing.v1.json"),
    ),
    ("iapt.v1.json", include_str!("../../schemas/iapt.v1.json")),
    (
        "substance-misuse.v1.json",
        include_str!("../../schemas/substance-misuse.v1.json"),
    ),
];

/// The example referrals (docs/examples/), one per service type, as request examples.
const REFERRAL_EXAMPLES: &[(&str, &str)] = &[
    (
        "cmht",
        include_str!("../../docs/examples/referral-cmht.json"),
    ),
    (
        "iapt",
        include_str!("../../docs/examples/referral-iapt.json"),
    ),
    (
        "housing",
        include_str!("../../docs/examples/referral-housing.json"),
    ),
    (
        "substance_misuse",
        include_str!("../../docs/examples/referral-substance_misuse.json"),
    ),
];

const CORRELATION_ID_PATTERN: &str = r"^[A-Za-z0-9_.:/+=@-]{1,128}$";
const AGENCY_SCHEME: &str = "agencyCertificate";
const STAFF_SCHEME: &str = "staffBearer";

/// `POST /v1/referrals`'s body: the common referral schema and, for a destination named
/// by service type, that service type's overlay (`schemas/`). Stands for a schema the
/// document builds from the embedded files.
pub struct ReferralSubmission;

impl utoipa::PartialSchema for ReferralSubmission {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::Object::new().into()
    }
}

impl utoipa::ToSchema for ReferralSubmission {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ReferralSubmission")
    }
}

/// `POST /v1/referrals/{id}/events`'s body: `schemas/event.v1.json`.
pub struct EventDocument;

impl utoipa::PartialSchema for EventDocument {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::Object::new().into()
    }
}

impl utoipa::ToSchema for EventDocument {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Event")
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "referral-gateway: agency API",
        description = "The agency listener: registered agencies' case systems submit referrals, follow them and post lifecycle events, over mutual TLS with a certificate issued by the scheme CA (docs/api.md). Errors are RFC 9457 problem documents whose `type` is `urn:referral-gateway:problem:<kind>`; each response lists its kinds."
    ),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::health::keys,
        agency_openapi,
        super::referrals::submit,
        super::referrals::list,
        super::referrals::status,
        super::events::post_event,
        super::reports::sla_report,
    ),
    components(schemas(problem::ProblemBody))
)]
struct AgencyApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "referral-gateway: staff API",
        description = "The staff listener: auditors and service managers, with bearer tokens from the scheme's identity provider (docs/governance.md). TLS without client certificates. The console (`/console/`) is served here too and is not part of this document. Errors are RFC 9457 problem documents whose `type` is `urn:referral-gateway:problem:<kind>`; each response lists its kinds."
    ),
    paths(
        super::health::healthz,
        super::health::keys,
        staff_openapi,
        super::auditor::events,
        super::auditor::disclosures,
        super::auditor::export,
        super::reports::staff_sla_report,
        super::referrals::staff_list,
        super::referrals::staff_status,
    ),
    components(schemas(problem::ProblemBody))
)]
struct StaffApi;

/// Public operations on the staff listener: no token needed.
const STAFF_PUBLIC: &[&str] = &["getLiveness", "getKeys", "getOpenApi"];

/// The problems an operation answers with, besides those of every operation on its
/// listener ([`common_problems`]).
fn operation_problems(listener: Listener, operation_id: &str) -> Option<&'static [ProblemKind]> {
    use ProblemKind as K;
    Some(match (listener, operation_id) {
        (_, "getLiveness" | "getKeys" | "getOpenApi" | "getReadiness") => &[],
        (Listener::Agency, "submitReferral") => super::referrals::SUBMIT_PROBLEMS,
        (Listener::Agency, "listReferrals") => super::referrals::LIST_PROBLEMS,
        (Listener::Agency, "getReferral") => super::referrals::STATUS_PROBLEMS,
        (Listener::Agency, "postReferralEvent") => super::events::PROBLEMS,
        (Listener::Agency, "getSlaReport") => super::reports::PROBLEMS,
        (Listener::Staff, "searchAuditLog" | "exportAuditLog") => super::auditor::QUERY_PROBLEMS,
        (Listener::Staff, "subjectAccess") => super::auditor::DISCLOSURE_PROBLEMS,
        (Listener::Staff, "getSlaReport" | "listReferrals") => &[
            K::BadQuery,
            K::InsufficientRole,
            K::NoAgencyClaim,
            K::OtherAgency,
        ],
        (Listener::Staff, "getReferral") => &[K::NotFound, K::InsufficientRole, K::NoAgencyClaim],
        _ => return None,
    })
}

/// Problems every operation of the listener can answer with: a bad `X-Correlation-ID`,
/// and on the staff listener's protected operations a missing or refused token (whose
/// refusal is audited, so also 500 and 503 when the audit log cannot be written).
fn common_problems(listener: Listener, operation_id: &str) -> Vec<ProblemKind> {
    use ProblemKind as K;
    let mut kinds = vec![K::BadCorrelationId, K::DuplicateHeader];
    if listener == Listener::Staff && !STAFF_PUBLIC.contains(&operation_id) {
        kinds.extend([K::Unauthorized, K::InvalidToken, K::Internal, K::Overloaded]);
    }
    kinds
}

/// This listener's OpenAPI document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document.", body = Object))
)]
pub(crate) async fn agency_openapi() -> HttpResponse {
    serve(Listener::Agency)
}

/// This listener's OpenAPI document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document.", body = Object))
)]
pub(crate) async fn staff_openapi() -> HttpResponse {
    serve(Listener::Staff)
}

fn serve(listener: Listener) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_text(listener))
}

pub fn configure_agency(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/openapi.json")
            .route(web::get().to(agency_openapi))
            .default_service(problem::method_not_allowed("GET")),
    );
}

pub fn configure_staff(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/openapi.json")
            .route(web::get().to(staff_openapi))
            .default_service(problem::method_not_allowed("GET")),
    );
}

/// The listener's document as served and committed: pretty JSON and a final newline.
pub fn document_text(listener: Listener) -> &'static str {
    static AGENCY: OnceLock<String> = OnceLock::new();
    static STAFF: OnceLock<String> = OnceLock::new();
    let cell = match listener {
        Listener::Agency => &AGENCY,
        Listener::Staff => &STAFF,
    };
    cell.get_or_init(|| {
        let mut text =
            serde_json::to_string_pretty(&document(listener)).unwrap_or_else(|_| "{}".to_owned());
        text.push('\n');
        text
    })
}

/// The listener's document.
pub fn document(listener: Listener) -> Value {
    let api = match listener {
        Listener::Agency => AgencyApi::openapi(),
        Listener::Staff => StaffApi::openapi(),
    };
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    embed_schemas(&mut doc, listener);
    add_security(&mut doc, listener);
    for_each_operation(&mut doc, |path, method, op| {
        let id = op["operationId"].as_str().unwrap_or_default().to_owned();
        parameters_are_never_null(op);
        add_correlation_header(op);
        add_problems(listener, &id, op)
            .unwrap_or_else(|| panic!("{} {method} {path}: no problem list", listener.name()));
        add_response_headers(op);
        if listener == Listener::Staff && STAFF_PUBLIC.contains(&id.as_str()) {
            op["security"] = json!([]);
        } else if let Some(map) = op.as_object_mut() {
            map.remove("security");
        }
    });
    add_links(&mut doc, listener);
    add_request_examples(&mut doc);
    restrict_subject_access_request(&mut doc);
    doc
}

fn for_each_operation(doc: &mut Value, mut f: impl FnMut(&str, &str, &mut Value)) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            f(path, method, op);
        }
    }
}

fn operation_mut<'a>(doc: &'a mut Value, path: &str, method: &str) -> Option<&'a mut Value> {
    doc.get_mut("paths")?.get_mut(path)?.get_mut(method)
}

/// The schemas in `schemas/` as components: `Referral` (the common schema), `Event`,
/// `Overlay.<service type>` for each overlay, and `ReferralSubmission`, the common schema
/// with the overlay of the destination's service type. Each keeps its annotations
/// (`x-category`); its `$id` becomes `x-schema-id` and its references point into the
/// document. The staff document, which takes no referrals, has only `Event` (the shape of a
/// referral's timeline).
fn embed_schemas(doc: &mut Value, listener: Listener) {
    let mut parsed: Vec<(String, Value)> = Vec::new();
    let mut ids: Vec<(String, String)> = Vec::new();
    let mut overlays: Vec<(String, String)> = Vec::new();
    for (file, text) in SCHEMAS {
        let schema: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("schemas/{file} is not JSON: {e}"));
        let name = match (*file, schema.get("x-service-type").and_then(Value::as_str)) {
            (crate::intake::schema::COMMON_SCHEMA_FILE, _) => "Referral".to_owned(),
            (crate::intake::schema::EVENT_SCHEMA_FILE, _) => "Event".to_owned(),
            (_, Some(service_type)) => {
                overlays.push((service_type.to_owned(), format!("Overlay.{service_type}")));
                format!("Overlay.{service_type}")
            }
            (file, None) => panic!("schemas/{file} is neither common, event nor an overlay"),
        };
        if let Some(id) = schema.get("$id").and_then(Value::as_str) {
            ids.push((id.to_owned(), name.clone()));
        }
        parsed.push((name, schema));
    }
    let mut components = Map::new();
    if listener == Listener::Staff {
        parsed.retain(|(name, _)| name == "Event");
        overlays.clear();
    }
    for (name, mut schema) in parsed {
        let mut defs = Map::new();
        if let Some(map) = schema.as_object_mut() {
            map.remove("$schema");
            if let Some(id) = map.remove("$id") {
                map.insert("x-schema-id".to_owned(), id);
            }
            if let Some(Value::Object(found)) = map.remove("$defs") {
                defs = found;
            }
        }
        rewrite_refs(&mut schema, &name, &ids);
        boolean_consts_as_enums(&mut schema);
        if name == "Event" {
            // Each member a component of its own, which an `EventRecord` refers to.
            if let Some(Value::Object(properties)) = schema.get_mut("properties") {
                for (member, member_schema) in properties.iter_mut() {
                    let component = format!("Event.{member}");
                    let hoisted = std::mem::replace(
                        member_schema,
                        json!({"$ref": format!("#/components/schemas/{component}")}),
                    );
                    components.insert(component, hoisted);
                }
            }
        }
        for (def, mut def_schema) in defs {
            boolean_consts_as_enums(&mut def_schema);
            rewrite_refs(&mut def_schema, &name, &ids);
            components.insert(format!("{name}.{def}"), def_schema);
        }
        components.insert(name, schema);
    }
    if listener == Listener::Staff {
        insert_components(doc, components);
        return;
    }
    let conditions: Vec<Value> = overlays
        .iter()
        .map(|(service_type, name)| {
            json!({
                "if": {
                    "required": ["destination"],
                    "properties": {"destination": {
                        "required": ["service_type"],
                        "properties": {"service_type": {"const": service_type}}
                    }}
                },
                "then": {"$ref": format!("#/components/schemas/{name}")}
            })
        })
        .collect();
    let mut all_of = vec![json!({"$ref": "#/components/schemas/Referral"})];
    all_of.extend(conditions);
    components.insert(
        "ReferralSubmission".to_owned(),
        json!({
            "description": "A referral: the common schema (`Referral`) and the overlay of the recipient's service type (`Overlay.<service type>`). When the destination names an agency id rather than a service type, the overlay is that agency's service type's, which depends on the gateway's configuration.",
            "allOf": all_of
        }),
    );
    insert_components(doc, components);
}

/// `{"const": true}` as the equivalent `{"type": "boolean", "enum": [true]}`, which code
/// generators handle (openapi-python-client 0.29 writes invalid Python for a boolean
/// `const`).
fn boolean_consts_as_enums(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Bool(b)) = map.get("const").cloned() {
                map.remove("const");
                map.insert("type".to_owned(), json!("boolean"));
                map.insert("enum".to_owned(), json!([b]));
            }
            for child in map.values_mut() {
                boolean_consts_as_enums(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(boolean_consts_as_enums),
        _ => {}
    }
}

fn insert_components(doc: &mut Value, components: Map<String, Value>) {
    let schemas = &mut doc["components"]["schemas"];
    if !schemas.is_object() {
        *schemas = json!({});
    }
    if let Some(schemas) = schemas.as_object_mut() {
        for (name, schema) in components {
            schemas.insert(name, schema);
        }
        schemas.sort_keys();
    }
}

/// Points `$ref`s in the schema component `name` into the document: `#/$defs/x` at the
/// component `name.x` (each definition is a component of its own, which code generators
/// understand), other local ones into the component, and ones naming another schema's
/// `$id` at that schema's component.
fn rewrite_refs(value: &mut Value, name: &str, ids: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                let (base, fragment) = target.split_once('#').unwrap_or((target.as_str(), ""));
                let component = if base.is_empty() {
                    Some(name.to_owned())
                } else {
                    ids.iter()
                        .find(|(id, _)| id == base)
                        .map(|(_, n)| n.clone())
                };
                if let Some(component) = component {
                    *target = match fragment.strip_prefix("/$defs/") {
                        Some(def) if !def.contains('/') => {
                            format!("#/components/schemas/{component}.{def}")
                        }
                        _ => format!("#/components/schemas/{component}{fragment}"),
                    };
                }
            }
            for child in map.values_mut() {
                rewrite_refs(child, name, ids);
            }
        }
        Value::Array(items) => {
            for child in items {
                rewrite_refs(child, name, ids);
            }
        }
        _ => {}
    }
}

fn add_security(doc: &mut Value, listener: Listener) {
    let (name, scheme) = match listener {
        Listener::Agency => (
            AGENCY_SCHEME,
            json!({
                "type": "mutualTLS",
                "description": "A client certificate issued by the scheme CA and registered to an agency (docs/onboarding.md). Without one the TLS handshake fails; a CA-signed certificate registered to no agency gets `403 unknown-agency` from every operation that names the caller."
            }),
        ),
        Listener::Staff => (
            STAFF_SCHEME,
            json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A token from the scheme's identity provider (keys from its JWKS), with the role `auditor` or `service_manager` (and, for a service manager, the `agency` claim); docs/governance.md."
            }),
        ),
    };
    doc["components"]["securitySchemes"] = json!({ name: scheme });
    doc["security"] = json!([{ name: [] }]);
}

/// An optional parameter is absent, never null: `Option<T>` says `required: false`, and
/// the `"null"` utoipa adds to its type goes.
fn parameters_are_never_null(op: &mut Value) {
    let Some(parameters) = op["parameters"].as_array_mut() else {
        return;
    };
    for parameter in parameters {
        if let Some(types) = parameter["schema"]["type"].as_array() {
            let types: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            parameter["schema"]["type"] = match types.as_slice() {
                [one] => one.clone(),
                _ => Value::Array(types),
            };
        }
    }
}

/// `X-Correlation-ID` on every operation.
fn add_correlation_header(op: &mut Value) {
    let parameter = json!({
        "name": "X-Correlation-ID",
        "in": "header",
        "required": false,
        "description": "Carried into the logs, stored with a referral and echoed on the response; generated when absent.",
        "schema": {"type": "string", "pattern": CORRELATION_ID_PATTERN}
    });
    match op["parameters"].as_array_mut() {
        Some(parameters) => parameters.push(parameter),
        None => op["parameters"] = json!([parameter]),
    }
}

/// The problem responses of the operation, one per status, each listing its kinds.
fn add_problems(listener: Listener, operation_id: &str, op: &mut Value) -> Option<()> {
    let mut kinds = common_problems(listener, operation_id);
    kinds.extend(operation_problems(listener, operation_id)?);
    let mut statuses: Vec<u16> = kinds.iter().map(|k| k.status().as_u16()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let responses = &mut op["responses"];
    for status in statuses {
        let mut of_status: Vec<ProblemKind> = kinds
            .iter()
            .copied()
            .filter(|k| k.status().as_u16() == status)
            .collect();
        of_status.dedup();
        let listed: Vec<String> = of_status
            .iter()
            .map(|k| format!("`{}` ({})", k.slug(), k.title()))
            .collect();
        let uris: Vec<String> = of_status.iter().map(|k| problem::type_uri(*k)).collect();
        responses[status.to_string()] = json!({
            "description": format!("A problem: {}.", listed.join(", ")),
            "content": {
                problem::PROBLEM_JSON: {
                    "schema": {
                        "allOf": [
                            {"$ref": "#/components/schemas/Problem"},
                            {"properties": {"type": {"enum": uris}}}
                        ]
                    }
                }
            }
        });
    }
    Some(())
}

/// Headers every response carries (`X-Correlation-ID`, except when it was the problem),
/// and those of 401s (`WWW-Authenticate`), 503 `overloaded` (`Retry-After`) and 202s
/// (`Location`, required).
fn add_response_headers(op: &mut Value) {
    let Some(responses) = op["responses"].as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        let problem = response["content"].get(problem::PROBLEM_JSON).is_some();
        let headers = &mut response["headers"];
        if !headers.is_object() {
            *headers = json!({});
        }
        headers["X-Correlation-ID"] = json!({
            "description": "The request's correlation id, or the one generated for it.",
            "required": status != "400",
            "schema": {"type": "string", "pattern": CORRELATION_ID_PATTERN}
        });
        match status.as_str() {
            "401" => {
                headers["WWW-Authenticate"] = json!({
                    "description": "`Bearer realm=\"referral-gateway\"`, with `error=\"invalid_token\"` when a token was refused.",
                    "required": true,
                    "schema": {"type": "string"}
                });
            }
            "503" if problem => {
                headers["Retry-After"] = json!({
                    "description": "Seconds to wait before retrying.",
                    "required": true,
                    "schema": {"type": "integer", "minimum": 0}
                });
            }
            "202" => {
                headers["Location"]["required"] = json!(true);
            }
            _ => {}
        }
    }
}

/// Links that let a client (and stateful testing) follow a new referral to its status and
/// its events, and a list to its items.
fn add_links(doc: &mut Value, listener: Listener) {
    match listener {
        Listener::Agency => {
            if let Some(op) = operation_mut(doc, "/v1/referrals", "post") {
                op["responses"]["202"]["links"] = json!({
                    "GetReferral": {
                        "operationId": "getReferral",
                        "parameters": {"id": "$response.body#/referral_id"},
                        "description": "The referral's status."
                    },
                    "PostReferralEvent": {
                        "operationId": "postReferralEvent",
                        "parameters": {"id": "$response.body#/referral_id"},
                        "description": "An event on the referral (its recipient or, for follow-up and withdrawal, its sender)."
                    }
                });
            }
            if let Some(op) = operation_mut(doc, "/v1/referrals/{id}/events", "post") {
                op["responses"]["201"]["links"] = json!({
                    "GetReferral": {
                        "operationId": "getReferral",
                        "parameters": {"id": "$response.body#/referral_id"},
                        "description": "The referral, with this event in its timeline."
                    }
                });
            }
        }
        Listener::Staff => {}
    }
    if let Some(op) = operation_mut(doc, "/v1/referrals", "get") {
        op["responses"]["200"]["links"] = json!({
            "GetFirstReferral": {
                "operationId": "getReferral",
                "parameters": {"id": "$response.body#/items/0/referral_id"},
                "description": "The first referral of the page."
            }
        });
    }
}

/// Example bodies: the example referrals, two events and two subject access requests.
fn add_request_examples(doc: &mut Value) {
    if let Some(op) = operation_mut(doc, "/v1/audit/disclosures", "post") {
        op["requestBody"]["content"]["application/json"]["examples"] = json!({
            "nhs_number": {
                "summary": "By NHS number (the example referrals' person)",
                "value": {"nhs_number": "943 476 5919"}
            },
            "name_and_date_of_birth": {
                "summary": "By name and date of birth",
                "value": {"name": {"given": "Alex", "family": "Example"}, "date_of_birth": "1991-06-14"}
            }
        });
    }
    if let Some(op) = operation_mut(doc, "/v1/referrals", "post") {
        let examples: Map<String, Value> = REFERRAL_EXAMPLES
            .iter()
            .map(|(service_type, text)| {
                let value: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("docs/examples/referral-{service_type}.json: {e}"));
                (
                    (*service_type).to_owned(),
                    json!({
                        "summary": format!("A referral to a {service_type} service (docs/examples/)"),
                        "value": value
                    }),
                )
            })
            .collect();
        op["requestBody"]["content"]["application/json"]["examples"] = Value::Object(examples);
    }
    if let Some(op) = operation_mut(doc, "/v1/referrals/{id}/events", "post") {
        op["requestBody"]["content"]["application/json"]["examples"] = json!({
            "follow_up": {
                "summary": "The sender adds information",
                "value": {
                    "event_id": "0193a3c2-5f1e-7a55-9d1e-3b2f6c1d8e90",
                    "type": "follow_up",
                    "detail": "The person has asked to be contacted in the afternoons."
                }
            },
            "acknowledged": {
                "summary": "The recipient acknowledges the referral",
                "value": {
                    "event_id": "0193a3c2-5f1e-7a55-9d1e-3b2f6c1d8e91",
                    "type": "acknowledged"
                }
            }
        });
    }
}

/// What the subject access request's derive cannot say: at least one identifier, and a
/// name goes with a date of birth.
fn restrict_subject_access_request(doc: &mut Value) {
    let Some(schema) = doc["components"]["schemas"].get_mut("SubjectAccessRequest") else {
        return;
    };
    schema["anyOf"] = json!([
        {"required": ["nhs_number"]},
        {"required": ["name"]},
        {"required": ["date_of_birth"]}
    ]);
    schema["dependentRequired"] = json!({
        "name": ["date_of_birth"],
        "date_of_birth": ["name"]
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem kind the agency and staff operations name is documented with its
    /// status, and every operation has a list.
    #[test]
    fn every_operation_documents_its_problems() {
        for listener in [Listener::Agency, Listener::Staff] {
            let doc = document(listener);
            assert_eq!(doc["openapi"], "3.1.0");
            let mut operations = 0;
            for (_, item) in doc["paths"].as_object().unwrap() {
                for (_, op) in item.as_object().unwrap() {
                    operations += 1;
                    let id = op["operationId"].as_str().unwrap();
                    let responses = op["responses"].as_object().unwrap();
                    for kind in common_problems(listener, id)
                        .iter()
                        .chain(operation_problems(listener, id).unwrap())
                    {
                        let status = kind.status().as_u16().to_string();
                        let schema =
                            &responses[&status]["content"][problem::PROBLEM_JSON]["schema"];
                        let uris = schema["allOf"][1]["properties"]["type"]["enum"]
                            .as_array()
                            .unwrap();
                        assert!(
                            uris.contains(&json!(problem::type_uri(*kind))),
                            "{id}: {kind} not under {status}"
                        );
                    }
                }
            }
            assert!(operations >= 7);
        }
    }

    #[test]
    fn schemas_are_embedded_with_their_annotations() {
        let doc = document(Listener::Agency);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["Referral"]["properties"]["destination"]["$ref"],
            "#/components/schemas/Referral.destination"
        );
        assert_eq!(
            schemas["Referral.destination"]["properties"]["area"]["$ref"],
            "#/components/schemas/Referral.slug"
        );
        assert_eq!(
            schemas["Referral"]["properties"]["risk"]["x-category"],
            "risk"
        );
        assert!(schemas["Overlay.cmht"].is_object());
        assert_eq!(
            schemas["Event"]["properties"]["event_id"]["$ref"],
            "#/components/schemas/Event.event_id"
        );
        assert_eq!(schemas["Event.event_id"]["format"], "uuid");
        let text = document_text(Listener::Agency);
        assert!(!text.contains("\"#/$defs"), "a reference left unresolved");
        assert!(!text.contains("\"$id\""));
    }
}
