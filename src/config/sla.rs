//! `[sla]`: the working calendar, targets and the scanner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{FileChecks, Problems};
use crate::domain::calendar::WorkingCalendar;
use crate::domain::sla::{SlaPolicy, Target, TargetRule};
use crate::domain::{AgencyRegistry, Priority, ServiceType};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSla {
    enabled: Option<bool>,
    calendar: Option<PathBuf>,
    working_day_starts: Option<String>,
    working_day_ends: Option<String>,
    warn_at: Option<f64>,
    undelivered_after: Option<String>,
    scan_interval_secs: Option<u64>,
    #[serde(default)]
    targets: Vec<RawTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    agency: Option<String>,
    service_type: Option<String>,
    priority: Option<String>,
    acknowledge: Option<String>,
    decision: Option<String>,
    first_contact: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCalendarFile {
    #[allow(dead_code)]
    region: Option<String>,
    dates: BTreeMap<String, Vec<String>>,
}

/// SLA clocks and the breach scanner.
#[derive(Debug, Clone)]
pub struct SlaConfig {
    /// Whether this instance runs the scanner (clocks are always recorded).
    pub scanner_enabled: bool,
    pub scan_interval: std::time::Duration,
    pub policy: SlaPolicy,
}

pub(super) fn parse_time(text: &str, key: &str, problems: &mut Problems) -> Option<time::Time> {
    let format = time::macros::format_description!("[hour]:[minute]");
    time::Time::parse(text, &format)
        .map_err(|_| problems.push(key, format!("'{text}' is not a time such as 09:00")))
        .ok()
}

pub(super) fn load_calendar(
    path: &Path,
    starts: time::Time,
    ends: time::Time,
) -> Result<WorkingCalendar, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let raw: RawCalendarFile =
        toml::from_str(&text).map_err(|e| format!("'{}' is not valid: {e}", path.display()))?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let mut holidays = std::collections::BTreeSet::new();
    let mut last_year = None;
    for (year, dates) in &raw.dates {
        let year: i32 = year
            .parse()
            .map_err(|_| format!("'{}': '{year}' is not a year", path.display()))?;
        last_year = last_year.max(Some(year));
        for date in dates {
            let d = time::Date::parse(date, &format).map_err(|_| {
                format!("'{}': '{date}' is not a date (YYYY-MM-DD)", path.display())
            })?;
            if d.year() != year {
                return Err(format!(
                    "'{}': {date} is listed under {year}",
                    path.display()
                ));
            }
            holidays.insert(d);
        }
    }
    let last_year = last_year.ok_or_else(|| format!("'{}' lists no dates", path.display()))?;
    let covered_until = time::Date::from_calendar_date(last_year, time::Month::December, 31)
        .map_err(|e| e.to_string())?;
    Ok(WorkingCalendar {
        day_starts: starts,
        day_ends: ends,
        holidays,
        covered_until,
    })
}

pub(super) fn build_sla(
    raw: RawSla,
    registry: &AgencyRegistry,
    checks: FileChecks,
    problems: &mut Problems,
) -> SlaConfig {
    let starts = parse_time(
        raw.working_day_starts.as_deref().unwrap_or("09:00"),
        "sla.working_day_starts",
        problems,
    );
    let ends = parse_time(
        raw.working_day_ends.as_deref().unwrap_or("17:00"),
        "sla.working_day_ends",
        problems,
    );
    if let (Some(s), Some(e)) = (starts, ends)
        && s >= e
    {
        problems.push(
            "sla.working_day_ends",
            "must be later than sla.working_day_starts on the same day (00:00 is the start of a day)",
        );
    }
    let starts = starts.unwrap_or(time::Time::MIDNIGHT);
    let ends = ends.unwrap_or(time::Time::MIDNIGHT);
    let calendar_path = raw
        .calendar
        .unwrap_or_else(|| PathBuf::from("config/bank-holidays-england-and-wales.toml"));
    let calendar = match load_calendar(&calendar_path, starts, ends) {
        Ok(calendar) => calendar,
        Err(message) => {
            if checks == FileChecks::Required {
                problems.push("sla.calendar", message);
            }
            WorkingCalendar {
                day_starts: starts,
                day_ends: ends,
                holidays: Default::default(),
                covered_until: time::Date::MAX,
            }
        }
    };
    let warn_fraction = raw.warn_at.unwrap_or(0.8);
    if !(warn_fraction > 0.0 && warn_fraction < 1.0) {
        problems.push(
            "sla.warn_at",
            "must be a fraction between 0 and 1, e.g. 0.8",
        );
    }
    let target = |text: &str, key: &str, problems: &mut Problems| {
        Target::parse(text, &calendar)
            .map_err(|e| problems.push(key, e))
            .ok()
    };
    let undelivered_after = target(
        raw.undelivered_after.as_deref().unwrap_or("5 working days"),
        "sla.undelivered_after",
        problems,
    )
    .unwrap_or(Target::Calendar(time::Duration::days(7)));
    let mut rules = SlaPolicy::default_rules(&calendar);
    for (i, t) in raw.targets.into_iter().enumerate() {
        let key = format!("sla.targets[{i}]");
        if let Some(agency) = &t.agency
            && registry.get(agency).is_none_or(|a| !a.role.receives())
        {
            problems.push(
                &format!("{key}.agency"),
                format!("no receiving agency '{agency}' is configured"),
            );
        }
        let priority = match t.priority.as_deref() {
            None | Some("*") => None,
            Some(p) => match p.parse::<Priority>() {
                Ok(p) => Some(p),
                Err(_) => {
                    problems.push(
                        &format!("{key}.priority"),
                        "must be emergency, urgent or routine",
                    );
                    None
                }
            },
        };
        let service_type = t.service_type.filter(|s| s != "*");
        if let Some(st) = &service_type
            && ServiceType::parse(st.clone()).is_err()
        {
            problems.push(
                &format!("{key}.service_type"),
                format!("'{st}' is not a service type"),
            );
        }
        // Whether the rule names any clock at all (one that does not parse is reported on
        // its own, not also as missing).
        let names_a_clock =
            t.acknowledge.is_some() || t.decision.is_some() || t.first_contact.is_some();
        let mut clock = |value: Option<String>, name: &str| {
            value.and_then(|v| target(&v, &format!("{key}.{name}"), problems))
        };
        let rule = TargetRule {
            agency: t.agency,
            service_type,
            priority,
            acknowledge: clock(t.acknowledge, "acknowledge"),
            decision: clock(t.decision, "decision"),
            first_contact: clock(t.first_contact, "first_contact"),
        };
        if !names_a_clock {
            problems.push(&key, "sets none of acknowledge, decision, first_contact");
        }
        rules.push(rule);
    }
    SlaConfig {
        scanner_enabled: raw.enabled.unwrap_or(true),
        scan_interval: std::time::Duration::from_secs(raw.scan_interval_secs.unwrap_or(60).max(1)),
        policy: SlaPolicy {
            calendar,
            warn_fraction,
            undelivered_after,
            rules,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoEnv;
    use crate::config::testing::{base, load};

    #[test]
    fn sla_targets_are_checked() {
        let text = base()
            + r#"
[[sla.targets]]
agency = "nobody"
priority = "whenever"
first_contact = "a fortnight"
"#;
        let err = load(
            &text.replace(
                "[sla]",
                "[sla]\nwarn_at = 1.5\nworking_day_ends = \"00:00\"",
            ),
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "sla.warn_at: must be a fraction",
            "sla.working_day_ends: must be later than sla.working_day_starts",
            "sla.targets[0].agency: no receiving agency 'nobody'",
            "sla.targets[0].priority: must be emergency, urgent or routine",
            "sla.targets[0].first_contact: 'a fortnight' is not a duration",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let ok = base()
            + r#"
[[sla.targets]]
agency = "cmht"
priority = "routine"
first_contact = "14 days"
"#;
        let config = load(&ok, &NoEnv).unwrap();
        assert_eq!(
            config.sla.policy.target(
                crate::domain::sla::Clock::FirstContact,
                "cmht",
                "cmht",
                Priority::Routine
            ),
            Some(Target::Calendar(time::Duration::days(14)))
        );
        assert!(config.sla.policy.calendar.holidays.len() >= 32);
    }
}
