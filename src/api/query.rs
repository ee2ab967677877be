//! Query parameters shared by the handlers: periods (`from`, `to`) and page sizes
//! (`limit`). Handlers never import each other; what they share lives here.

use super::problem::{ApiError, ProblemKind};
use crate::domain::Timestamp;

/// `YYYY-MM-DD` (the start of that day, UTC) or an RFC 3339 instant.
pub fn parse_instant(text: &str, end_of_day: bool) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).ok()?;
    let at = match (end_of_day, date.next_day()) {
        (false, _) => date.midnight(),
        (true, Some(next)) => next.midnight(),
        // The last day there is (9999-12-31): up to its last microsecond.
        (true, None) => date.with_hms_micro(23, 59, 59, 999_999).ok()?,
    };
    Some(at.assume_utc())
}

/// `from` and `to` query values: each a date (`to` counting to the end of that day) or an
/// RFC 3339 instant, defaulting as given; `to` must be after `from`.
pub fn period(
    from: Option<&str>,
    to: Option<&str>,
    default_from: Timestamp,
    default_to: Timestamp,
) -> Result<(Timestamp, Timestamp), ApiError> {
    let instant = |text: Option<&str>, end: bool, name: &str, default| match text {
        None => Ok(default),
        Some(t) => parse_instant(t, end).map(Timestamp::from).ok_or_else(|| {
            ApiError::bad_request(
                ProblemKind::BadQuery,
                format!("'{name}' must be a date (YYYY-MM-DD) or an RFC 3339 date-time"),
            )
        }),
    };
    let from_given = from.is_some();
    let to_given = to.is_some();
    let from = instant(from, false, "from", default_from)?;
    let to = instant(to, true, "to", default_to)?;
    if to <= from {
        let detail = match (from_given, to_given) {
            (true, true) => "'to' must be after 'from'".to_owned(),
            (false, _) => format!("'to' must be after 'from', which defaults to {from}"),
            (true, false) => format!("'from' must be before 'to', which defaults to {to}"),
        };
        return Err(ApiError::bad_request(ProblemKind::BadQuery, detail));
    }
    Ok((from, to))
}

/// A `limit` query value: 1 to `max`, `default` when absent.
pub fn page_limit(text: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match text {
        None => Ok(default),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ProblemKind::BadQuery,
                    format!("'limit' must be between 1 and {max}"),
                )
            }),
    }
}

/// OpenAPI schema of a `from`/`to` value: a date or an RFC 3339 date-time.
pub fn period_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let string = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    AnyOfBuilder::new()
        .item(string(KnownFormat::Date))
        .item(string(KnownFormat::DateTime))
        .description(Some(
            "A date (YYYY-MM-DD; as `to`, up to the end of that day) or an RFC 3339 date-time (UTC offset required).",
        ))
        .build()
        .into()
}

/// OpenAPI schema of a filter that takes one of `values`, or nothing (empty: no filter).
pub fn filter_schema(values: impl IntoIterator<Item = String>) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let mut values: Vec<String> = values.into_iter().collect();
    values.push(String::new());
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_to_the_end_of_the_day_even_the_last_one() {
        let end = parse_instant("2026-11-30", true).unwrap();
        assert_eq!(end, time::macros::datetime!(2026-12-01 00:00 UTC));
        let start = parse_instant("2026-11-30", false).unwrap();
        assert_eq!(start, time::macros::datetime!(2026-11-30 00:00 UTC));
        let last = parse_instant("9999-12-31", true).unwrap();
        assert_eq!(
            last,
            time::macros::datetime!(9999-12-31 23:59:59.999_999 UTC)
        );
        assert!(period(None, Some("9999-12-31"), Timestamp::MIN, Timestamp::MAX).is_ok());
        assert!(parse_instant("2026-02-30", true).is_none());
    }
}
