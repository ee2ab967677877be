//! The audit log's export formats, shared by `GET /v1/audit/export` and
//! `referral-gateway audit export`: NDJSON (one entry per line) and CSV (RFC 4180, a
//! header row, lists joined with `;`). Values are written exactly as logged, with the
//! hashes, so an export can be checked link by link.

use serde::Serialize;

use crate::domain::audit::AuditEntry;
use crate::store::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

impl ExportFormat {
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Ndjson => "application/x-ndjson",
        }
    }

    /// What comes before the first entry.
    pub fn header(self) -> &'static str {
        match self {
            ExportFormat::Csv => CSV_HEADER,
            ExportFormat::Ndjson => "",
        }
    }

    /// One entry, with its line ending.
    pub fn line(self, entry: &AuditEntry, hash: &str) -> String {
        match self {
            ExportFormat::Csv => csv_line(entry, hash),
            ExportFormat::Ndjson => {
                serde_json::to_string(&view(entry, hash)).unwrap_or_default() + "\n"
            }
        }
    }
}

/// One entry as auditors see it: `at` as RFC 3339 and as the microseconds the hash
/// covers, and the entry's own hash, so an export can be checked against the chain.
#[derive(Serialize)]
pub struct EntryView<'a> {
    seq: i64,
    at: String,
    at_micros: i64,
    actor: &'a str,
    action: &'a str,
    referral_id: Option<&'a str>,
    recipient: Option<&'a str>,
    isa_id: Option<&'a str>,
    lawful_basis: Option<&'a str>,
    consent: Option<&'a str>,
    categories: &'a [String],
    withheld: &'a [String],
    person_key: Option<&'a str>,
    detail: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
}

pub fn view<'a>(entry: &'a AuditEntry, hash: &'a str) -> EntryView<'a> {
    EntryView {
        seq: entry.seq,
        at: rfc3339(entry.at),
        at_micros: entry.at,
        actor: &entry.actor,
        action: &entry.action,
        referral_id: entry.referral_id.as_deref(),
        recipient: entry.recipient.as_deref(),
        isa_id: entry.isa_id.as_deref(),
        lawful_basis: entry.lawful_basis.as_deref(),
        consent: entry.consent.as_deref(),
        categories: &entry.categories,
        withheld: &entry.withheld,
        person_key: entry.person_key.as_deref(),
        detail: &entry.detail,
        prev_hash: &entry.prev_hash,
        hash,
    }
}

const CSV_HEADER: &str = "seq,at,at_micros,actor,action,referral_id,recipient,isa_id,lawful_basis,consent,categories,withheld,person_key,detail,prev_hash,hash\n";

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted, quotes doubled.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn csv_line(entry: &AuditEntry, hash: &str) -> String {
    let opt = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
    let fields = [
        entry.seq.to_string(),
        rfc3339(entry.at),
        entry.at.to_string(),
        csv_field(&entry.actor),
        csv_field(&entry.action),
        opt(&entry.referral_id),
        opt(&entry.recipient),
        opt(&entry.isa_id),
        opt(&entry.lawful_basis),
        opt(&entry.consent),
        csv_field(&entry.categories.join(";")),
        csv_field(&entry.withheld.join(";")),
        opt(&entry.person_key),
        csv_field(&entry.detail),
        entry.prev_hash.clone(),
        hash.to_owned(),
    ];
    fields.join(",") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
