//! Working time in Europe/London: business hours on weekdays that are not bank holidays,
//! with British Summer Time (UTC+1 from 01:00 UTC on the last Sunday of March to 01:00
//! UTC on the last Sunday of October) handled exactly. Pure functions, no I/O.

use std::collections::BTreeSet;

use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

/// The last Sunday of a month.
fn last_sunday(year: i32, month: Month) -> Date {
    let mut day = Date::from_calendar_date(year, month, time::util::days_in_month(month, year))
        .unwrap_or(Date::MIN);
    while day.weekday() != Weekday::Sunday {
        day = day.previous_day().unwrap_or(Date::MIN);
    }
    day
}

/// The UK's UTC offset at an instant: +1 hour during British Summer Time.
pub fn london_offset(at: OffsetDateTime) -> UtcOffset {
    let utc = at.to_offset(UtcOffset::UTC);
    let year = utc.year();
    let one_am = Time::from_hms(1, 0, 0).unwrap_or(Time::MIDNIGHT);
    let starts = PrimitiveDateTime::new(last_sunday(year, Month::March), one_am).assume_utc();
    let ends = PrimitiveDateTime::new(last_sunday(year, Month::October), one_am).assume_utc();
    if utc >= starts && utc < ends {
        UtcOffset::from_hms(1, 0, 0).unwrap_or(UtcOffset::UTC)
    } else {
        UtcOffset::UTC
    }
}

/// Wall-clock time in London.
pub fn to_london(at: OffsetDateTime) -> PrimitiveDateTime {
    let local = at.to_offset(london_offset(at));
    PrimitiveDateTime::new(local.date(), local.time())
}

/// The instant of a London wall-clock time. Business hours never fall in the hour that
/// is skipped (March) or repeated (October), so the offset in force at that time of day
/// is unambiguous for every use here.
pub fn from_london(local: PrimitiveDateTime) -> OffsetDateTime {
    let guess = local.assume_utc();
    let offset = london_offset(guess - Duration::hours(1));
    local.assume_offset(offset).to_offset(UtcOffset::UTC)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCalendar {
    pub day_starts: Time,
    pub day_ends: Time,
    pub holidays: BTreeSet<Date>,
    /// The last date the holiday list covers; working-time arithmetic past it refuses.
    pub covered_until: Date,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the bank-holiday calendar ends on {covered_until}; a deadline would fall after it (update the calendar file)"
)]
pub struct CalendarExhausted {
    pub covered_until: Date,
}

impl WorkingCalendar {
    pub fn is_working_day(&self, date: Date) -> bool {
        !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
            && !self.holidays.contains(&date)
    }

    /// Length of a working day.
    pub fn day_length(&self) -> Duration {
        self.day_ends - self.day_starts
    }

    /// The instant `amount` of working time after `start`. Time outside business hours
    /// does not count: a clock started on a Saturday starts at 09:00 on the next working
    /// day.
    pub fn add_working_time(
        &self,
        start: OffsetDateTime,
        amount: Duration,
    ) -> Result<OffsetDateTime, CalendarExhausted> {
        let mut remaining = amount;
        let mut local = to_london(start);
        loop {
            let date = local.date();
            if date > self.covered_until {
                return Err(CalendarExhausted {
                    covered_until: self.covered_until,
                });
            }
            if self.is_working_day(date) && local.time() < self.day_ends {
                let from = local.time().max(self.day_starts);
                let available = self.day_ends - from;
                if remaining <= available {
                    return Ok(from_london(PrimitiveDateTime::new(date, from) + remaining));
                }
                remaining -= available;
            }
            let next = date.next_day().ok_or(CalendarExhausted {
                covered_until: self.covered_until,
            })?;
            local = PrimitiveDateTime::new(next, self.day_starts);
        }
    }

    /// Working time elapsed between two instants (zero if `to` is before `from`).
    pub fn working_time_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> Duration {
        if to <= from {
            return Duration::ZERO;
        }
        let (a, b) = (to_london(from), to_london(to));
        let mut total = Duration::ZERO;
        let mut date = a.date();
        while date <= b.date() {
            if self.is_working_day(date) {
                let start = if date == a.date() {
                    a.time().max(self.day_starts)
                } else {
                    self.day_starts
                };
                let end = if date == b.date() {
                    b.time().min(self.day_ends)
                } else {
                    self.day_ends
                };
                if end > start {
                    total += end - start;
                }
            }
            match date.next_day() {
                Some(d) => date = d,
                None => break,
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime, time};

    fn calendar() -> WorkingCalendar {
        WorkingCalendar {
            day_starts: time!(09:00),
            day_ends: time!(17:00),
            holidays: [
                date!(2026 - 04 - 03),
                date!(2026 - 04 - 06),
                date!(2026 - 05 - 04),
                date!(2026 - 05 - 25),
                date!(2026 - 08 - 31),
                date!(2026 - 12 - 25),
                date!(2026 - 12 - 28),
                date!(2027 - 01 - 01),
            ]
            .into_iter()
            .collect(),
            covered_until: date!(2027 - 12 - 31),
        }
    }

    #[test]
    fn bst_starts_and_ends_on_the_last_sundays_at_one_utc() {
        // 2026: BST from Sunday 29 March 01:00 UTC to Sunday 25 October 01:00 UTC.
        assert_eq!(
            london_offset(datetime!(2026-03-29 00:59 UTC)),
            UtcOffset::UTC
        );
        assert_eq!(
            london_offset(datetime!(2026-03-29 01:00 UTC)).whole_hours(),
            1
        );
        assert_eq!(
            london_offset(datetime!(2026-10-25 00:59 UTC)).whole_hours(),
            1
        );
        assert_eq!(
            london_offset(datetime!(2026-10-25 01:00 UTC)),
            UtcOffset::UTC
        );
        assert_eq!(
            to_london(datetime!(2026-07-01 08:00 UTC)),
            datetime!(2026-07-01 09:00)
        );
        assert_eq!(
            from_london(datetime!(2026-07-01 09:00)),
            datetime!(2026-07-01 08:00 UTC)
        );
        assert_eq!(
            from_london(datetime!(2026-12-01 09:00)),
            datetime!(2026-12-01 09:00 UTC)
        );
    }

    #[test]
    fn working_hours_across_the_march_clock_change() {
        // Friday 27 March 2026 16:00 GMT + 2 working hours: 1 h on Friday, 1 h on Monday
        // 30 March, which is in BST: 10:00 London = 09:00 UTC.
        let due = calendar()
            .add_working_time(datetime!(2026-03-27 16:00 UTC), Duration::hours(2))
            .unwrap();
        assert_eq!(due, datetime!(2026-03-30 09:00 UTC));
    }

    #[test]
    fn working_hours_across_the_october_clock_change() {
        // Friday 23 October 2026 16:30 BST (15:30 UTC) + 1 working hour: 30 min on Friday,
        // 30 min on Monday 26 October, now GMT: 09:30 London = 09:30 UTC.
        let due = calendar()
            .add_working_time(datetime!(2026-10-23 15:30 UTC), Duration::hours(1))
            .unwrap();
        assert_eq!(due, datetime!(2026-10-26 09:30 UTC));
    }

    #[test]
    fn friday_1655_with_one_working_day() {
        // Friday 20 November 2026 16:55 GMT, 1 working day (8 h): Monday 23rd 16:55.
        let cal = calendar();
        let due = cal
            .add_working_time(datetime!(2026-11-20 16:55 UTC), cal.day_length())
            .unwrap();
        assert_eq!(due, datetime!(2026-11-23 16:55 UTC));
    }

    #[test]
    fn a_bank_holiday_monday_is_skipped() {
        // Friday 22 May 2026 12:00 BST + 1 working day; Monday 25 May is a bank holiday.
        let cal = calendar();
        let due = cal
            .add_working_time(datetime!(2026-05-22 11:00 UTC), cal.day_length())
            .unwrap();
        assert_eq!(due, datetime!(2026-05-26 11:00 UTC));
    }

    #[test]
    fn easter_and_christmas() {
        let cal = calendar();
        // Thursday 2 April 2026 17:00 BST (end of day) + 1 working hour: Good Friday and
        // Easter Monday are holidays, so Tuesday 7 April 10:00 BST.
        let due = cal
            .add_working_time(datetime!(2026-04-02 16:00 UTC), Duration::hours(1))
            .unwrap();
        assert_eq!(due, datetime!(2026-04-07 09:00 UTC));
        // Thursday 24 December 2026 15:00 + 3 working days: 2 h Thursday, then Tuesday 29
        // (8 h), Wednesday 30 (8 h), 6 h on Thursday 31 -> 15:00 on 31 December.
        let due = cal
            .add_working_time(datetime!(2026-12-24 15:00 UTC), cal.day_length() * 3)
            .unwrap();
        assert_eq!(due, datetime!(2026-12-31 15:00 UTC));
    }

    #[test]
    fn a_clock_started_outside_business_hours_starts_at_the_next_opening() {
        let cal = calendar();
        // Saturday 21 November 2026 10:00 + 1 working hour: Monday 10:00.
        let due = cal
            .add_working_time(datetime!(2026-11-21 10:00 UTC), Duration::hours(1))
            .unwrap();
        assert_eq!(due, datetime!(2026-11-23 10:00 UTC));
        // Tuesday 06:30 + 30 working minutes: 09:30 the same day.
        let due = cal
            .add_working_time(datetime!(2026-11-24 06:30 UTC), Duration::minutes(30))
            .unwrap();
        assert_eq!(due, datetime!(2026-11-24 09:30 UTC));
        // Tuesday 18:00 + 1 working day: Wednesday 17:00.
        let due = cal
            .add_working_time(datetime!(2026-11-24 18:00 UTC), cal.day_length())
            .unwrap();
        assert_eq!(due, datetime!(2026-11-25 17:00 UTC));
    }

    #[test]
    fn elapsed_working_time() {
        let cal = calendar();
        assert_eq!(
            cal.working_time_between(
                datetime!(2026-11-20 16:55 UTC),
                datetime!(2026-11-23 16:55 UTC)
            ),
            Duration::hours(8)
        );
        assert_eq!(
            cal.working_time_between(
                datetime!(2026-11-23 12:00 UTC),
                datetime!(2026-11-23 11:00 UTC)
            ),
            Duration::ZERO
        );
    }

    #[test]
    fn running_past_the_calendar_is_an_error() {
        let mut cal = calendar();
        cal.covered_until = date!(2026 - 12 - 31);
        assert!(
            cal.add_working_time(datetime!(2026-12-31 16:00 UTC), Duration::hours(2))
                .is_err()
        );
    }
}
