//! Exporting the audit log, for `GET /v1/audit/export` and `referral-gateway audit
//! export` alike: the paging (`Export`) and the formats, NDJSON (one entry per line) and
//! CSV (RFC 4180, a header row, lists joined with `;`). Values are written exactly as logged, with the
//! hashes, so an export can be checked link by link.

use crate::domain::Timestamp;
use serde::Serialize;

use crate::domain::audit::AuditEntry;
use crate::store::{AuditQuery, Store, StoreError, rfc3339};

/// Entries read per page.
pub const EXPORT_PAGE: i64 = 1000;

/// One export of the log (or of a period of it): the one implementation behind
/// `GET /v1/audit/export` and `referral-gateway audit export`. It covers the entries up to
/// the head when it began, so it never includes its own `audit.exported` entry and ends
/// however many entries are added meanwhile; it is read a page at a time, so memory stays
/// flat however long the log is.
pub struct Export {
    store: Store,
    format: ExportFormat,
    upto: i64,
    /// The last entry the walk reads: the period's last one, at most `upto`.
    walk_upto: i64,
    /// Where the next page starts; `None` once the last page has been read.
    after: Option<i64>,
    header_written: bool,
}

impl Export {
    /// Begins an export of the entries logged in `[from, to)` (µs), up to the current head:
    /// every entry from the period's first to its last, with no gap in the chain.
    pub async fn begin(
        store: &Store,
        format: ExportFormat,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Self, StoreError> {
        let (upto, _) = store.audit_head().await?;
        // Only the sequence range the period's entries lie in is walked.
        let (after, walk_upto) = store.audit_period_bounds(from, to, 0, upto).await?;
        Ok(Self {
            store: store.clone(),
            format,
            upto,
            walk_upto,
            after: Some(after),
            header_written: false,
        })
    }

    pub fn format(&self) -> ExportFormat {
        self.format
    }

    /// The newest entry the export covers.
    pub fn upto(&self) -> i64 {
        self.upto
    }

    /// The detail of the export's `audit.exported` entry: the format, the period asked
    /// for ([`period_bound`]) and the entry it ends at.
    pub fn detail(&self, from: Timestamp, to: Timestamp) -> String {
        format!(
            "format={} from={} to={} up to entry {}",
            self.format.name(),
            period_bound(from),
            period_bound(to),
            self.upto
        )
    }

    /// The next piece of the export and how many entries it holds: first the header with
    /// the first page (the header alone when nothing matches), then a page at a time;
    /// `None` once everything has been given. A page is the last one when it is not
    /// followed by another entry (pages are read one entry longer to tell). After an
    /// error the export is over.
    pub async fn next_chunk(&mut self) -> Result<Option<(String, u64)>, StoreError> {
        let Some(after) = self.after.take() else {
            return Ok(None);
        };
        let mut entries = self
            .store
            // Every entry between the period's first and last (`audit_period_bounds`),
            // not only those whose time is in it: entries are appended in nearly but not
            // strictly increasing time, and an export with a gap in its chain could not be
            // verified on its own.
            .search_audit(&AuditQuery::everything(
                after,
                self.walk_upto,
                EXPORT_PAGE + 1,
            ))
            .await?;
        let more = entries.len() as i64 > EXPORT_PAGE;
        entries.truncate(usize::try_from(EXPORT_PAGE).unwrap_or(usize::MAX));
        self.after = more
            .then(|| entries.last().map(|(entry, _)| entry.seq))
            .flatten();
        let mut text = String::new();
        if !std::mem::replace(&mut self.header_written, true) {
            text.push_str(self.format.header());
        }
        for (entry, hash) in &entries {
            text.push_str(&self.format.line(entry, hash));
        }
        Ok(Some((text, entries.len() as u64)))
    }

    /// The whole export as a stream of text, a page at a time. A store failure ends it
    /// with an error (so a streamed response is cut short, never silently complete).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<String, StoreError>> {
        futures_util::stream::unfold(self, |mut export| async move {
            match export.next_chunk().await {
                Ok(Some((text, _))) => Some((Ok(text), export)),
                Ok(None) => None,
                Err(e) => Some((Err(e), export)),
            }
        })
    }

    /// Writes the whole export to `sink`; returns how many entries were written.
    pub async fn write_to(
        mut self,
        sink: &mut dyn std::io::Write,
    ) -> Result<u64, ExportWriteError> {
        let mut written = 0;
        while let Some((text, entries)) = self.next_chunk().await? {
            sink.write_all(text.as_bytes())?;
            written += entries;
        }
        sink.flush()?;
        Ok(written)
    }
}

/// Why an export could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum ExportWriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

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
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub struct EntryView<'a> {
    seq: i64,
    #[schema(format = DateTime)]
    at: String,
    at_micros: i64,
    #[schema(value_type = String)]
    actor: &'a str,
    #[schema(value_type = String)]
    action: &'a str,
    #[schema(value_type = Option<String>)]
    referral_id: Option<&'a str>,
    #[schema(value_type = Option<String>)]
    recipient: Option<&'a str>,
    #[schema(value_type = Option<String>)]
    isa_id: Option<&'a str>,
    #[schema(value_type = Option<String>)]
    lawful_basis: Option<&'a str>,
    #[schema(value_type = Option<String>)]
    consent: Option<&'a str>,
    #[schema(value_type = Vec<String>)]
    categories: &'a [String],
    #[schema(value_type = Vec<String>)]
    withheld: &'a [String],
    #[schema(value_type = Option<String>)]
    person_key: Option<&'a str>,
    #[schema(value_type = String)]
    detail: &'a str,
    #[schema(value_type = String)]
    prev_hash: &'a str,
    #[schema(value_type = String)]
    hash: &'a str,
}

pub fn view<'a>(entry: &'a AuditEntry, hash: &'a str) -> EntryView<'a> {
    EntryView {
        seq: entry.seq,
        at: rfc3339(entry.at.as_micros()),
        at_micros: entry.at.as_micros(),
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
        rfc3339(entry.at.as_micros()),
        entry.at.as_micros().to_string(),
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

/// A period's bound as audit entries show it: the parsed instant in the gateway's own
/// RFC 3339 form, never the text the caller gave (whose fraction of a second can be any
/// number of digits); empty for an open end (`Timestamp::MIN`, `Timestamp::MAX`).
pub fn period_bound(at: Timestamp) -> String {
    if at == Timestamp::MIN || at == Timestamp::MAX {
        String::new()
    } else {
        at.to_rfc3339()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_bounds_are_shown_in_the_gateways_form_not_the_callers() {
        let given = crate::api::query::period(
            Some("2026-01-01T00:00:00.9434765919Z"),
            None,
            Timestamp::MIN,
            Timestamp::MAX,
        );
        let Ok((from, to)) = given else {
            panic!("a valid period");
        };
        assert_eq!(period_bound(from), "2026-01-01T00:00:00.943476Z");
        assert_eq!(period_bound(to), "");
        assert_eq!(period_bound(Timestamp::MIN), "");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
