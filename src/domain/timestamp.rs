//! An instant as the gateway stores it: UTC, to the microsecond.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant, UTC, to the microsecond. Ordered; serialised as its microseconds since the
/// Unix epoch (the audit chain hashes it so). The integer itself is the store's business
/// (and the wire form of a list cursor); elsewhere convert to and from `OffsetDateTime`.
/// `Default` is the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Before every instant (an unbounded `from`).
    pub const MIN: Self = Self(i64::MIN);
    /// After every instant (an unbounded `to`).
    pub const MAX: Self = Self(i64::MAX);

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// `None` when out of `OffsetDateTime`'s range (`MIN`, `MAX`).
    pub fn to_offset_date_time(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000).ok()
    }

    /// RFC 3339 text (empty if out of range).
    pub fn to_rfc3339(self) -> String {
        self.to_offset_date_time()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    }

    /// The next whole second at or after `self`.
    pub fn ceil_to_second(self) -> Self {
        const SECOND: i64 = 1_000_000;
        match self.0.rem_euclid(SECOND) {
            0 => self,
            part => Self(self.0.saturating_add(SECOND - part)),
        }
    }

    /// Microseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn micros_since(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn saturating_add(self, duration: time::Duration) -> Self {
        let micros = i64::try_from(duration.whole_microseconds()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    pub fn saturating_sub(self, duration: time::Duration) -> Self {
        let micros = i64::try_from(duration.whole_microseconds()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(micros))
    }
}

/// Truncated to the microsecond (saturating far outside the store's range).
impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        Self(i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn ceil_to_second_rounds_up_a_fraction_only() {
        assert_eq!(Timestamp(2_000_000).ceil_to_second(), Timestamp(2_000_000));
        assert_eq!(Timestamp(2_000_001).ceil_to_second(), Timestamp(3_000_000));
        assert_eq!(Timestamp(-1).ceil_to_second(), Timestamp(0));
        assert_eq!(Timestamp(i64::MAX).ceil_to_second(), Timestamp(i64::MAX));
    }

    use super::*;

    #[test]
    fn timestamps_round_trip_order_and_format() {
        let t = time::macros::datetime!(2024-05-01 12:30:00.123456 UTC);
        let stamp = Timestamp::from(t);
        assert_eq!(stamp.to_offset_date_time(), Some(t));
        assert_eq!(stamp.to_rfc3339(), "2024-05-01T12:30:00.123456Z");
        assert!(Timestamp::MIN < stamp && stamp < Timestamp::MAX);
        assert_eq!(Timestamp::MAX.to_rfc3339(), "");
        let later = stamp.saturating_add(time::Duration::seconds(1));
        assert_eq!(later.micros_since(stamp), 1_000_000);
        assert_eq!(
            serde_json::to_string(&stamp).unwrap(),
            stamp.as_micros().to_string()
        );
    }
}
