//! SLA policy: the clocks a referral runs, their targets per service type, priority and
//! agency, and the deadlines they give. Pure: the calendar is passed in.

use std::fmt;
use std::str::FromStr;

use time::{Duration, OffsetDateTime};

use super::calendar::{CalendarExhausted, WorkingCalendar};
use super::lifecycle::EventType;
use super::referral::{Priority, UnknownValue};

/// The clocks. `Delivery` is the non-delivery window: a referral never acknowledged
/// within it is marked `undelivered` and the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Clock {
    Acknowledge,
    Decision,
    FirstContact,
    Delivery,
}

impl Clock {
    pub const ALL: [Self; 4] = [
        Self::Acknowledge,
        Self::Decision,
        Self::FirstContact,
        Self::Delivery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Decision => "decision",
            Self::FirstContact => "first_contact",
            Self::Delivery => "delivery",
        }
    }
}

impl FromStr for Clock {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(UnknownValue)
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event does to the clocks: which it meets (stops as met) and which it stops
/// as no longer applicable.
pub fn clock_effects(event: EventType) -> (&'static [Clock], &'static [Clock]) {
    use Clock::*;
    match event {
        EventType::Acknowledged => (&[Acknowledge, Delivery], &[]),
        EventType::Accepted => (&[Acknowledge, Delivery, Decision], &[]),
        EventType::Declined | EventType::Redirected => {
            (&[Acknowledge, Delivery, Decision], &[FirstContact])
        }
        EventType::FirstContact => (&[Acknowledge, Delivery, Decision, FirstContact], &[]),
        EventType::Closed | EventType::Withdrawn => {
            (&[], &[Acknowledge, Delivery, Decision, FirstContact])
        }
        EventType::FollowUp => (&[], &[]),
    }
}

/// Where one SLA clock stands (docs/sla.md), as `GET /v1/referrals/{id}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockState {
    /// Open, its deadline not yet passed.
    Running,
    /// Met by its deadline.
    Met,
    /// Met after its deadline, or after the scanner recorded a breach (an event may carry
    /// an `occurred_at` before the deadline once the breach was notified: a recorded breach
    /// stays one, as the SLA report counts it).
    MetLate,
    /// Open past its deadline (`is_overdue`), whether or not the scanner flagged it yet.
    Breached,
    /// Stopped by the referral's end (declined, withdrawn, closed...) before being met.
    Stopped,
}

impl ClockState {
    /// The state of a clock with these instants at `now` (`breach_recorded`: the scanner
    /// recorded a breach, `breached_at`).
    pub fn of<T: Ord>(
        due_at: T,
        met_at: Option<T>,
        met_late: bool,
        breach_recorded: bool,
        stopped_at: Option<T>,
        now: T,
    ) -> Self {
        match (met_at, stopped_at) {
            (Some(_), _) if met_late || breach_recorded => Self::MetLate,
            (Some(_), _) => Self::Met,
            (None, Some(_)) => Self::Stopped,
            (None, None) if is_overdue(due_at, None, None, now) => Self::Breached,
            (None, None) => Self::Running,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Met => "met",
            Self::MetLate => "met_late",
            Self::Breached => "breached",
            Self::Stopped => "stopped",
        }
    }
}

/// Whether a clock is **overdue** (docs/sla.md: "breached", open past its deadline):
/// neither met nor stopped, and its deadline (µs) passed before `now` (µs), whether or not
/// the scanner has flagged it yet. The one definition behind a clock's `breached` state in
/// `GET /v1/referrals/{id}`, the `overdue=true` filter of `GET /v1/referrals` (its SQL
/// states the same test, `store::referrals`) and the report's still-open breaches.
pub fn is_overdue<T: Ord>(due_at: T, met_at: Option<T>, stopped_at: Option<T>, now: T) -> bool {
    met_at.is_none() && stopped_at.is_none() && due_at < now
}

/// A target: calendar time (runs 24/7) or working time (business hours only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Calendar(Duration),
    Working(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a duration; write e.g. \"4 hours\", \"30 minutes\", \"21 days\", \"6 weeks\", \"8 working hours\" or \"5 working days\""
)]
pub struct BadTarget(pub String);

impl Target {
    /// Parses `"<n> [working] minutes|hours|days|weeks"`. A working day is the
    /// calendar's business-day length; working weeks are refused (say working days).
    pub fn parse(text: &str, calendar: &WorkingCalendar) -> Result<Self, BadTarget> {
        let bad = || BadTarget(text.to_owned());
        let words: Vec<&str> = text.split_whitespace().collect();
        let (n, working, unit) = match words.as_slice() {
            [n, "working", unit] => (n, true, *unit),
            [n, unit] => (n, false, *unit),
            _ => return Err(bad()),
        };
        let n: i64 = n.parse().map_err(|_| bad())?;
        if n <= 0 || n > 10_000 {
            return Err(bad());
        }
        let unit = unit.trim_end_matches('s');
        Ok(match (working, unit) {
            (false, "minute") => Self::Calendar(Duration::minutes(n)),
            (false, "hour") => Self::Calendar(Duration::hours(n)),
            (false, "day") => Self::Calendar(Duration::days(n)),
            (false, "week") => Self::Calendar(Duration::weeks(n)),
            (true, "minute") => Self::Working(Duration::minutes(n)),
            (true, "hour") => Self::Working(Duration::hours(n)),
            (true, "day") => Self::Working(calendar.day_length() * n as i32),
            _ => return Err(bad()),
        })
    }

    /// The deadline, and the moment a warning is due (`warn_fraction` of the way).
    pub fn deadline(
        self,
        start: OffsetDateTime,
        warn_fraction: f64,
        calendar: &WorkingCalendar,
    ) -> Result<(OffsetDateTime, OffsetDateTime), CalendarExhausted> {
        match self {
            Self::Calendar(d) => Ok((start + d, start + d * warn_fraction)),
            Self::Working(d) => Ok((
                calendar.add_working_time(start, d)?,
                calendar.add_working_time(start, d * warn_fraction)?,
            )),
        }
    }
}

/// One row of the target table. `None` in a selector matches anything; a more specific
/// row (agency, then service type, then priority) wins, clock by clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRule {
    pub agency: Option<String>,
    pub service_type: Option<String>,
    pub priority: Option<Priority>,
    pub acknowledge: Option<Target>,
    pub decision: Option<Target>,
    pub first_contact: Option<Target>,
}

impl TargetRule {
    fn matches(&self, agency: &str, service_type: &str, priority: Priority) -> bool {
        self.agency.as_deref().is_none_or(|a| a == agency)
            && self
                .service_type
                .as_deref()
                .is_none_or(|s| s == service_type)
            && self.priority.is_none_or(|p| p == priority)
    }

    fn specificity(&self) -> u8 {
        u8::from(self.agency.is_some()) * 4
            + u8::from(self.service_type.is_some()) * 2
            + u8::from(self.priority.is_some())
    }

    fn target(&self, clock: Clock) -> Option<Target> {
        match clock {
            Clock::Acknowledge => self.acknowledge,
            Clock::Decision => self.decision,
            Clock::FirstContact => self.first_contact,
            Clock::Delivery => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SlaPolicy {
    pub calendar: WorkingCalendar,
    pub warn_fraction: f64,
    pub undelivered_after: Target,
    /// Built-in defaults first, then the configured rules.
    pub rules: Vec<TargetRule>,
}

/// A clock as started for one referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockDeadline {
    pub clock: Clock,
    pub due_at: OffsetDateTime,
    pub warn_at: OffsetDateTime,
}

impl SlaPolicy {
    /// The national-standard defaults (see docs/sla.md for sources).
    pub fn default_rules(calendar: &WorkingCalendar) -> Vec<TargetRule> {
        let t = |s: &str| Target::parse(s, calendar).ok();
        let rule = |service: Option<&str>, priority, ack: &str, decision: &str, contact: &str| {
            TargetRule {
                agency: None,
                service_type: service.map(str::to_owned),
                priority: Some(priority),
                acknowledge: t(ack),
                decision: t(decision),
                first_contact: t(contact),
            }
        };
        vec![
            rule(None, Priority::Emergency, "1 hour", "4 hours", "4 hours"),
            rule(None, Priority::Urgent, "4 hours", "24 hours", "24 hours"),
            rule(
                None,
                Priority::Routine,
                "1 working day",
                "5 working days",
                "28 days",
            ),
            rule(
                Some("iapt"),
                Priority::Routine,
                "1 working day",
                "5 working days",
                "6 weeks",
            ),
            rule(
                Some("substance_misuse"),
                Priority::Routine,
                "1 working day",
                "5 working days",
                "21 days",
            ),
            rule(
                Some("housing"),
                Priority::Routine,
                "1 working day",
                "5 working days",
                "10 working days",
            ),
        ]
    }

    /// The target for one clock of a referral, or `None` if no rule sets it.
    pub fn target(
        &self,
        clock: Clock,
        agency: &str,
        service_type: &str,
        priority: Priority,
    ) -> Option<Target> {
        if clock == Clock::Delivery {
            return Some(self.undelivered_after);
        }
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(agency, service_type, priority))
            .filter_map(|(i, r)| r.target(clock).map(|t| ((r.specificity(), i), t)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, t)| t)
    }

    /// Every clock's deadline for a referral received at `start`.
    pub fn deadlines(
        &self,
        agency: &str,
        service_type: &str,
        priority: Priority,
        start: OffsetDateTime,
    ) -> Result<Vec<ClockDeadline>, CalendarExhausted> {
        Clock::ALL
            .into_iter()
            .filter_map(|clock| {
                self.target(clock, agency, service_type, priority)
                    .map(|t| (clock, t))
            })
            .map(|(clock, target)| {
                let (due_at, warn_at) =
                    target.deadline(start, self.warn_fraction, &self.calendar)?;
                Ok(ClockDeadline {
                    clock,
                    due_at,
                    warn_at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime, time};

    #[test]
    fn overdue_is_open_past_the_deadline() {
        assert!(
            !is_overdue(100, None, None, 100),
            "due now is not yet overdue"
        );
        assert!(is_overdue(100, None, None, 101));
        assert!(!is_overdue(100, Some(150), None, 200), "met, even late");
        assert!(!is_overdue(100, None, Some(90), 200), "stopped");
    }

    #[test]
    fn a_clock_met_after_a_recorded_breach_is_met_late() {
        use ClockState::*;
        // (due, met, met late, breach recorded, stopped, now)
        assert_eq!(ClockState::of(100, None, false, false, None, 50), Running);
        assert_eq!(ClockState::of(100, None, false, false, None, 150), Breached);
        assert_eq!(ClockState::of(100, Some(90), false, false, None, 150), Met);
        assert_eq!(
            ClockState::of(100, Some(120), true, false, None, 150),
            MetLate
        );
        // Met with an occurred_at before the deadline, after the breach was notified.
        assert_eq!(
            ClockState::of(100, Some(90), false, true, None, 150),
            MetLate
        );
        assert_eq!(
            ClockState::of(100, None, false, true, Some(120), 150),
            Stopped
        );
        assert_eq!(MetLate.as_str(), "met_late");
    }

    fn calendar() -> WorkingCalendar {
        WorkingCalendar {
            day_starts: time!(09:00),
            day_ends: time!(17:00),
            holidays: [date!(2026 - 12 - 25), date!(2026 - 12 - 28)]
                .into_iter()
                .collect(),
            covered_until: date!(2027 - 12 - 31),
        }
    }

    fn policy(extra: Vec<TargetRule>) -> SlaPolicy {
        let calendar = calendar();
        let mut rules = SlaPolicy::default_rules(&calendar);
        rules.extend(extra);
        SlaPolicy {
            undelivered_after: Target::parse("5 working days", &calendar).unwrap(),
            calendar,
            warn_fraction: 0.8,
            rules,
        }
    }

    #[test]
    fn targets_parse() {
        let cal = calendar();
        assert_eq!(
            Target::parse("4 hours", &cal),
            Ok(Target::Calendar(Duration::hours(4)))
        );
        assert_eq!(
            Target::parse("1 hour", &cal),
            Ok(Target::Calendar(Duration::hours(1)))
        );
        assert_eq!(
            Target::parse("6 weeks", &cal),
            Ok(Target::Calendar(Duration::weeks(6)))
        );
        assert_eq!(
            Target::parse("5 working days", &cal),
            Ok(Target::Working(Duration::hours(40)))
        );
        assert_eq!(
            Target::parse("8 working hours", &cal),
            Ok(Target::Working(Duration::hours(8)))
        );
        for bad in [
            "",
            "four hours",
            "0 hours",
            "3 fortnights",
            "2 working weeks",
            "-1 days",
        ] {
            assert!(Target::parse(bad, &cal).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_most_specific_rule_wins_clock_by_clock() {
        let cal = calendar();
        let p = policy(vec![TargetRule {
            agency: Some("coventry-iapt".into()),
            service_type: None,
            priority: None,
            acknowledge: Target::parse("2 working hours", &cal).ok(),
            decision: None,
            first_contact: None,
        }]);
        let routine = Priority::Routine;
        assert_eq!(
            p.target(Clock::FirstContact, "coventry-iapt", "iapt", routine),
            Some(Target::Calendar(Duration::weeks(6)))
        );
        assert_eq!(
            p.target(Clock::Acknowledge, "coventry-iapt", "iapt", routine),
            Some(Target::Working(Duration::hours(2)))
        );
        assert_eq!(
            p.target(Clock::Acknowledge, "other-iapt", "iapt", routine),
            Some(Target::Working(Duration::hours(8)))
        );
        assert_eq!(
            p.target(Clock::FirstContact, "x", "cmht", Priority::Emergency),
            Some(Target::Calendar(Duration::hours(4)))
        );
    }

    #[test]
    fn deadlines_and_warnings() {
        let p = policy(vec![]);
        let start = datetime!(2026-11-20 16:55 UTC); // a Friday
        let d = p
            .deadlines("coventry-iapt", "iapt", Priority::Routine, start)
            .unwrap();
        let get = |c| d.iter().find(|x| x.clock == c).copied().unwrap();
        assert_eq!(
            get(Clock::Acknowledge).due_at,
            datetime!(2026-11-23 16:55 UTC)
        );
        // 80% of 8 working hours = 6 h 24 min: 5 min on Friday, 6 h 19 min on Monday.
        assert_eq!(
            get(Clock::Acknowledge).warn_at,
            datetime!(2026-11-23 15:19 UTC)
        );
        assert_eq!(get(Clock::FirstContact).due_at, start + Duration::weeks(6));
        assert_eq!(get(Clock::Delivery).due_at, datetime!(2026-11-27 16:55 UTC));
        let e = p
            .deadlines("x", "cmht", Priority::Emergency, start)
            .unwrap();
        assert_eq!(e[0].due_at, start + Duration::hours(1));
        assert_eq!(e[0].warn_at, start + Duration::minutes(48));
    }

    #[test]
    fn events_meet_and_stop_clocks() {
        let (meet, stop) = clock_effects(EventType::Declined);
        assert!(meet.contains(&Clock::Decision) && stop.contains(&Clock::FirstContact));
        let (meet, stop) = clock_effects(EventType::Withdrawn);
        assert!(meet.is_empty() && stop.len() == 4);
    }
}
