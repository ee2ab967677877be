//! SLA reports: per receiving agency, service type and priority, over referrals received
//! in a period. The aggregation is a pure function of stored rows, so it is tested with
//! hand-computed numbers; the store supplies the rows.
//!
//! Definitions (docs/sla.md):
//! - *within SLA*: the clock was met at or before its deadline;
//! - *breached*: a referral with at least one of the acknowledge, decision and
//!   first-contact clocks met late, overdue at `as_of` (`domain::sla::is_overdue`), or
//!   stopped after its deadline;
//! - *times*: from the referral's receipt to the clock being met, in hours, over met
//!   clocks; median and 90th percentile by the nearest-rank method;
//! - *not attended rate*: first-contact events with outcome `not_attended`, over those
//!   with `attended` or `not_attended` (`unable_to_contact` is left out).

use crate::domain::Timestamp;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::domain::sla::{Clock, is_overdue};
use crate::store::{Store, StoreError};

/// The SLA report over the referrals received in `[from, to)` (µs) that `agency` sent or
/// received (every agency's when `None`), with clocks still open judged at `as_of`. The
/// one implementation behind `GET /v1/reports/sla` and `referral-gateway sla report`.
pub async fn sla_report(
    store: &Store,
    from: Timestamp,
    to: Timestamp,
    agency: Option<&str>,
    as_of: Timestamp,
) -> Result<Vec<ReportRow>, StoreError> {
    let (clocks, contacts) = store.report_facts(from, to, agency).await?;
    Ok(aggregate(&clocks, &contacts, as_of.as_micros()))
}

/// What the console's overview shows, from one read of the facts: the report
/// ([`sla_report`]), the time to first contact per service type ([`contact_distribution`])
/// and the weekly trend ([`trend`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SlaOverview {
    pub rows: Vec<ReportRow>,
    pub contact_times: Vec<ContactDistribution>,
    pub trend: Vec<(Timestamp, Vec<ReportRow>)>,
}

/// [`SlaOverview`] over the referrals received in `[from, to)` that `agency` sent or
/// received (every agency's when `None`), open clocks judged at `as_of`; the trend in
/// periods of `step`, at most `max_steps` of them.
pub async fn sla_overview(
    store: &Store,
    from: Timestamp,
    to: Timestamp,
    agency: Option<&str>,
    as_of: Timestamp,
    step: time::Duration,
    max_steps: usize,
) -> Result<SlaOverview, StoreError> {
    let (clocks, contacts) = store.report_facts(from, to, agency).await?;
    let as_of = as_of.as_micros();
    Ok(SlaOverview {
        rows: aggregate(&clocks, &contacts, as_of),
        contact_times: contact_distribution(&clocks, as_of),
        // No weeks after now: nothing can have been received in them yet.
        trend: trend(
            &clocks,
            &contacts,
            from,
            to.min(Timestamp::from_micros(as_of).ceil_to_second()),
            as_of,
            step,
            max_steps,
        ),
    })
}

/// The same report period by period: for each `step` from `from`, the start of the
/// period and [`aggregate`] over the facts (the last `max_steps` periods, the last one
/// ending at `to`: a longer report's trend shows its most recent steps), over the facts
/// of the referrals received in it (`facts` cover the whole of `[from, to)`, so each
/// period's rows are what [`sla_report`] gives for that period). The console's weekly trend.
pub fn trend(
    clocks: &[ClockFact],
    contacts: &[ContactFact],
    from: Timestamp,
    to: Timestamp,
    as_of: i64,
    step: time::Duration,
    max_steps: usize,
) -> Vec<(Timestamp, Vec<ReportRow>)> {
    let mut periods = Vec::new();
    let step_micros = i64::try_from(step.whole_microseconds())
        .unwrap_or(i64::MAX)
        .max(1);
    let span = to.micros_since(from).max(0);
    let steps = span / step_micros + i64::from(span % step_micros != 0);
    let skipped = steps
        .saturating_sub(i64::try_from(max_steps).unwrap_or(i64::MAX))
        .max(0);
    let mut start = from.saturating_add(time::Duration::microseconds(
        skipped.saturating_mul(step_micros),
    ));
    while start < to && periods.len() < max_steps {
        let end = start.saturating_add(step).min(to);
        periods.push((start.as_micros(), end.as_micros()));
        start = end;
    }
    let mut facts: Vec<Vec<&ClockFact>> = vec![Vec::new(); periods.len()];
    for fact in clocks {
        // Periods are contiguous and in order: the first one ending after the receipt.
        let i = periods.partition_point(|(_, end)| *end <= fact.received_at);
        if periods
            .get(i)
            .is_some_and(|(start, end)| *start <= fact.received_at && fact.received_at < *end)
        {
            facts[i].push(fact);
        }
    }
    periods
        .iter()
        .zip(facts)
        .map(|((start, _), facts)| {
            (
                Timestamp::from_micros(*start),
                aggregate(facts, contacts, as_of),
            )
        })
        .collect()
}

/// Time to first contact, bucketed, for one service type: what the console draws against
/// the national standard for that service type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactDistribution {
    pub service_type: String,
    /// Referrals whose first contact was met, per bucket of [`CONTACT_BUCKETS`].
    pub counts: Vec<usize>,
    /// Referrals in the period still waiting for a first contact (the clock open).
    pub waiting: usize,
    /// Referrals that ended without a first contact (declined, withdrawn, redirected or
    /// closed first: the clock stopped).
    pub ended_without_contact: usize,
    /// The national standard for the service type, in words, and the share that met it
    /// (over the referrals it applies to that were contacted, or are still waiting past
    /// the standard's time), when there is one.
    pub standard: Option<(&'static str, String)>,
}

/// Upper bounds (days, exclusive) and labels of the first-contact buckets; the last is open.
pub const CONTACT_BUCKETS: [(i64, &str); 7] = [
    (1, "within 1 day"),
    (7, "1 day to 1 week"),
    (21, "1 to 3 weeks"),
    (42, "3 to 6 weeks"),
    (56, "6 to 8 weeks"),
    (126, "8 to 18 weeks"),
    (i64::MAX, "over 18 weeks"),
];

/// The national standards the console compares with (docs/sla.md): the words, the
/// number of days within which first contact counts as meeting it, and the priority it
/// applies to (`None`: every priority). Housing has none: the duty to refer sets no
/// national contact time.
fn national_standard(service_type: &str) -> Option<(&'static str, i64, Option<&'static str>)> {
    match service_type {
        "iapt" => Some(("75% start within 6 weeks (NHS Talking Therapies)", 42, None)),
        "substance_misuse" => Some(("treatment starts within 3 weeks", 21, None)),
        "cmht" => Some((
            "urgent referrals: contact within 24 hours",
            1,
            Some("urgent"),
        )),
        _ => None,
    }
}

/// Time from receipt to first contact, per service type, over the first-contact clocks in
/// `clocks` (the same facts as [`sla_report`]), open clocks judged at `as_of` (µs).
pub fn contact_distribution(clocks: &[ClockFact], as_of: i64) -> Vec<ContactDistribution> {
    let day = 86_400_000_000_i64;
    // Per service type: the buckets, the referrals still waiting and those that ended
    // without contact, and for the national standard the referrals it applies to that met
    // it and that count: contacted, or still waiting past the standard's time (one still
    // within it has neither met nor missed it yet; a clock stopped by a withdrawal or a
    // decline counts neither way).
    #[derive(Default)]
    struct Tally {
        counts: Vec<usize>,
        waiting: usize,
        ended: usize,
        within: usize,
        counted: usize,
    }
    let mut by_type: BTreeMap<&str, Tally> = BTreeMap::new();
    for fact in clocks.iter().filter(|c| c.clock == Clock::FirstContact) {
        let Tally {
            counts,
            waiting,
            ended,
            within,
            counted,
        } = by_type
            .entry(fact.service_type.as_str())
            .or_insert_with(|| Tally {
                counts: vec![0; CONTACT_BUCKETS.len()],
                ..Tally::default()
            });
        let standard = national_standard(&fact.service_type)
            .filter(|(_, _, priority)| priority.is_none_or(|p| p == fact.priority));
        match fact.met_at {
            Some(met) => {
                let days = (met - fact.started_at).max(0) / day;
                let bucket = CONTACT_BUCKETS
                    .iter()
                    .position(|(bound, _)| days < *bound)
                    .unwrap_or(CONTACT_BUCKETS.len() - 1);
                counts[bucket] += 1;
                if let Some((_, limit, _)) = standard {
                    *counted += 1;
                    if days < limit {
                        *within += 1;
                    }
                }
            }
            None if fact.stopped_at.is_some() => *ended += 1,
            None => {
                *waiting += 1;
                if let Some((_, limit, _)) = standard
                    && as_of - fact.started_at >= limit * day
                {
                    *counted += 1;
                }
            }
        }
    }
    by_type
        .into_iter()
        .map(|(service_type, tally)| ContactDistribution {
            service_type: service_type.to_owned(),
            standard: national_standard(service_type).map(|(words, _, _)| {
                let share = if tally.counted == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.0}%", tally.within as f64 * 100.0 / tally.counted as f64)
                };
                (words, share)
            }),
            counts: tally.counts,
            waiting: tally.waiting,
            ended_without_contact: tally.ended,
        })
        .collect()
}

/// One clock of one referral, as stored.
#[derive(Debug, Clone)]
pub struct ClockFact {
    pub referral_id: String,
    /// When the referral was received (what a report's period selects on).
    pub received_at: i64,
    pub agency: String,
    pub service_type: String,
    pub priority: String,
    pub clock: Clock,
    pub started_at: i64,
    pub due_at: i64,
    pub met_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// When the SLA scanner recorded the breach (and told the sender): it stays a breach
    /// whatever time a later event claims for meeting or stopping the clock.
    pub breached_at: Option<i64>,
}

/// A first-contact event's outcome for a referral.
#[derive(Debug, Clone)]
pub struct ContactFact {
    pub referral_id: String,
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReportRow {
    pub agency: String,
    pub service_type: String,
    pub priority: String,
    pub referrals: usize,
    pub acknowledged_within_sla: usize,
    pub decided_within_sla: usize,
    pub contacted_within_sla: usize,
    pub breached: usize,
    pub acknowledge_median_hours: Option<f64>,
    pub acknowledge_p90_hours: Option<f64>,
    pub decision_median_hours: Option<f64>,
    pub decision_p90_hours: Option<f64>,
    pub first_contact_median_hours: Option<f64>,
    pub first_contact_p90_hours: Option<f64>,
    pub not_attended_rate: Option<f64>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied()
}

fn hours(micros: i64) -> f64 {
    (micros as f64 / 3.6e9 * 1000.0).round() / 1000.0
}

/// The report's rows over `clocks` (one referral's clocks share its agency, service type
/// and priority) and the first-contact outcomes in `contacts` (those of referrals without
/// clocks here are ignored), with clocks still open judged at `as_of`.
pub fn aggregate<'a>(
    clocks: impl IntoIterator<Item = &'a ClockFact>,
    contacts: &[ContactFact],
    as_of: i64,
) -> Vec<ReportRow> {
    type Key<'a> = (&'a str, &'a str, &'a str);
    #[derive(Default)]
    struct Acc<'a> {
        referrals: HashMap<&'a str, bool>, // referral -> breached
        within: BTreeMap<Clock, usize>,
        times: BTreeMap<Clock, Vec<f64>>,
    }
    let mut groups: BTreeMap<Key<'a>, Acc<'a>> = BTreeMap::new();
    let mut group_of: HashMap<&'a str, Key<'a>> = HashMap::new();
    for fact in clocks {
        let key = (
            fact.agency.as_str(),
            fact.service_type.as_str(),
            fact.priority.as_str(),
        );
        group_of.insert(&fact.referral_id, key);
        let acc = groups.entry(key).or_default();
        let breached = acc.referrals.entry(&fact.referral_id).or_insert(false);
        if fact.clock == Clock::Delivery {
            continue;
        }
        // A breach the scanner recorded (and notified) stays one: an event posted later
        // with an `occurred_at` before the deadline does not make it "within target".
        let recorded_breach = fact.breached_at.is_some();
        match fact.met_at {
            Some(met) => {
                if met <= fact.due_at && !recorded_breach {
                    *acc.within.entry(fact.clock).or_default() += 1;
                } else {
                    *breached = true;
                }
                acc.times
                    .entry(fact.clock)
                    .or_default()
                    .push(hours(met - fact.started_at));
            }
            // Overdue now, or stopped (a withdrawal, a decline) only after its deadline
            // had passed: the breach happened, and was notified, before the stop.
            None if recorded_breach
                || is_overdue(fact.due_at, fact.met_at, fact.stopped_at, as_of)
                || fact.stopped_at.is_some_and(|stopped| stopped > fact.due_at) =>
            {
                *breached = true
            }
            None => {}
        }
    }
    let mut attended: BTreeMap<Key, (usize, usize)> = BTreeMap::new();
    for contact in contacts {
        if let Some(key) = group_of.get(contact.referral_id.as_str()) {
            let entry = attended.entry(*key).or_default();
            match contact.outcome.as_str() {
                "attended" => entry.0 += 1,
                "not_attended" => entry.1 += 1,
                _ => {}
            }
        }
    }
    groups
        .into_iter()
        .map(|(key, mut acc)| {
            for times in acc.times.values_mut() {
                times.sort_by(f64::total_cmp);
            }
            let stat = |clock: Clock, p: f64| acc.times.get(&clock).and_then(|t| percentile(t, p));
            let within = |clock: Clock| acc.within.get(&clock).copied().unwrap_or(0);
            let (yes, no) = attended.get(&key).copied().unwrap_or_default();
            ReportRow {
                referrals: acc.referrals.len(),
                acknowledged_within_sla: within(Clock::Acknowledge),
                decided_within_sla: within(Clock::Decision),
                contacted_within_sla: within(Clock::FirstContact),
                breached: acc.referrals.values().filter(|b| **b).count(),
                acknowledge_median_hours: stat(Clock::Acknowledge, 0.5),
                acknowledge_p90_hours: stat(Clock::Acknowledge, 0.9),
                decision_median_hours: stat(Clock::Decision, 0.5),
                decision_p90_hours: stat(Clock::Decision, 0.9),
                first_contact_median_hours: stat(Clock::FirstContact, 0.5),
                first_contact_p90_hours: stat(Clock::FirstContact, 0.9),
                not_attended_rate: (yes + no > 0).then(|| no as f64 / (yes + no) as f64),
                agency: key.0.to_owned(),
                service_type: key.1.to_owned(),
                priority: key.2.to_owned(),
            }
        })
        .collect()
}

/// The report's columns, in order: the CSV header, the table header and the JSON members
/// of each row are the same names (a unit test holds them to [`ReportRow`]'s serde names).
pub const COLUMNS: [&str; 15] = [
    "agency",
    "service_type",
    "priority",
    "referrals",
    "acknowledged_within_sla",
    "decided_within_sla",
    "contacted_within_sla",
    "breached",
    "acknowledge_median_hours",
    "acknowledge_p90_hours",
    "decision_median_hours",
    "decision_p90_hours",
    "first_contact_median_hours",
    "first_contact_p90_hours",
    "not_attended_rate",
];

/// How many days a report covers when no `from` is given: the API, the console and the
/// command line default to the same period, the 30 days up to now.
pub const DEFAULT_PERIOD_DAYS: i64 = 30;

/// The longest period a report (or a console page built on one) may cover: a year, leap
/// or not.
pub const MAX_PERIOD_DAYS: i64 = 366;

fn cells(row: &ReportRow) -> Vec<String> {
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    vec![
        row.agency.clone(),
        row.service_type.clone(),
        row.priority.clone(),
        row.referrals.to_string(),
        row.acknowledged_within_sla.to_string(),
        row.decided_within_sla.to_string(),
        row.contacted_within_sla.to_string(),
        row.breached.to_string(),
        num(row.acknowledge_median_hours),
        num(row.acknowledge_p90_hours),
        num(row.decision_median_hours),
        num(row.decision_p90_hours),
        num(row.first_contact_median_hours),
        num(row.first_contact_p90_hours),
        num(row.not_attended_rate),
    ]
}

pub fn to_table(rows: &[ReportRow]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].len())
                .chain([COLUMNS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(COLUMNS.to_vec()) + "\n";
    for r in &body {
        out += &line(r.iter().map(String::as_str).collect());
        out += "\n";
    }
    out
}

pub fn to_csv(rows: &[ReportRow]) -> String {
    let mut out = COLUMNS.join(",") + "\n";
    for row in rows {
        // Identifiers are registry slugs: no commas or quotes to escape.
        out += &cells(row)
            .into_iter()
            .map(|c| if c == "-" { String::new() } else { c })
            .collect::<Vec<_>>()
            .join(",");
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_periods_trend_shows_its_most_recent_weeks() {
        let week = time::Duration::weeks(1);
        let from = Timestamp::from_micros(0);
        // 52 weeks and a day: 53 periods, the last one a day long.
        let to = from.saturating_add(time::Duration::days(52 * 7 + 1));
        let long = trend(&[], &[], from, to, 0, week, 26);
        assert_eq!(long.len(), 26);
        let starts: Vec<i64> = long.iter().map(|(t, _)| t.as_micros()).collect();
        assert_eq!(starts[0], from.saturating_add(week * 27).as_micros());
        assert_eq!(starts[25], from.saturating_add(week * 52).as_micros());
        // A short period: every week, from `from`.
        let short = trend(&[], &[], from, from.saturating_add(week * 3), 0, week, 26);
        assert_eq!(short.len(), 3);
        assert_eq!(short[0].0, from);
    }

    #[test]
    fn csv_and_table_columns_are_the_json_member_names() {
        let row = ReportRow {
            agency: "a".into(),
            service_type: "cmht".into(),
            priority: "urgent".into(),
            referrals: 1,
            acknowledged_within_sla: 1,
            decided_within_sla: 0,
            contacted_within_sla: 0,
            breached: 0,
            acknowledge_median_hours: Some(1.0),
            acknowledge_p90_hours: None,
            decision_median_hours: None,
            decision_p90_hours: None,
            first_contact_median_hours: None,
            first_contact_p90_hours: None,
            not_attended_rate: None,
        };
        let json = serde_json::to_value(&row).unwrap();
        let names: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = COLUMNS.to_vec();
        columns.sort_unstable();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, columns);
        assert_eq!(cells(&row).len(), COLUMNS.len());
        assert!(to_csv(std::slice::from_ref(&row)).starts_with(&COLUMNS.join(",")));
        assert!(to_table(&[row]).starts_with("agency  service_type"));
    }

    const H: i64 = 3_600_000_000;

    fn fact(id: &str, clock: Clock, due_h: i64, met_h: Option<i64>) -> ClockFact {
        ClockFact {
            referral_id: id.into(),
            received_at: 0,
            agency: "a".into(),
            service_type: "cmht".into(),
            priority: "urgent".into(),
            clock,
            started_at: 0,
            due_at: due_h * H,
            met_at: met_h.map(|h| h * H),
            stopped_at: None,
            breached_at: None,
        }
    }

    #[test]
    fn first_contact_is_bucketed_against_the_standard() {
        let iapt = |id: &str, met_days: Option<i64>| ClockFact {
            service_type: "iapt".into(),
            ..fact(id, Clock::FirstContact, 42 * 24, met_days.map(|d| d * 24))
        };
        let clocks = vec![
            iapt("A", Some(0)),
            iapt("B", Some(10)),
            iapt("C", Some(41)),
            iapt("D", Some(43)),
            iapt("E", Some(200)),
            iapt("F", None),
            // Other clocks and service types do not mix in.
            fact("G", Clock::Acknowledge, 4, Some(1)),
        ];
        // Judged a year on: F has waited past the 6 weeks.
        let rows = contact_distribution(&clocks, 365 * 24 * H);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.service_type, "iapt");
        assert_eq!(row.counts, vec![1, 0, 1, 1, 1, 0, 1]);
        assert_eq!((row.waiting, row.ended_without_contact), (1, 0));
        // 3 of 6 (A, B, C) within 6 weeks.
        assert_eq!(
            row.standard,
            Some((
                "75% start within 6 weeks (NHS Talking Therapies)",
                "50%".to_owned()
            ))
        );
    }

    #[test]
    fn a_standard_counts_only_the_referrals_it_applies_to() {
        let cmht = |id: &str, priority: &str, met_days: Option<i64>| ClockFact {
            priority: priority.into(),
            ..fact(id, Clock::FirstContact, 24, met_days.map(|d| d * 24))
        };
        let clocks = vec![
            cmht("A", "urgent", Some(0)),
            cmht("B", "urgent", Some(3)),
            // Routine: not held to the urgent 24 hours.
            cmht("C", "routine", Some(20)),
            // Withdrawn before contact: neither met nor missed.
            ClockFact {
                stopped_at: Some(H),
                ..cmht("D", "urgent", None)
            },
            // Still waiting past the 24 hours: missed.
            cmht("E", "urgent", None),
        ];
        let rows = contact_distribution(&clocks, 48 * H);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].waiting, rows[0].ended_without_contact), (1, 1));
        // A of A, B and E.
        assert_eq!(
            rows[0].standard,
            Some((
                "urgent referrals: contact within 24 hours",
                "33%".to_owned()
            ))
        );
        // Judged 2 hours after receipt, E is still within its 24 hours: neither met nor
        // missed, so A of A and B.
        let early = contact_distribution(&clocks, 2 * H);
        assert_eq!(
            early[0].standard,
            Some((
                "urgent referrals: contact within 24 hours",
                "50%".to_owned()
            ))
        );
        // Housing has no national contact standard.
        let housing = ClockFact {
            service_type: "housing".into(),
            ..fact("H", Clock::FirstContact, 24, Some(1))
        };
        assert_eq!(contact_distribution(&[housing], 48 * H)[0].standard, None);
    }

    #[test]
    fn hand_computed() {
        use Clock::*;
        let clocks = vec![
            fact("A", Acknowledge, 4, Some(1)),
            fact("A", Decision, 24, Some(2)),
            fact("A", FirstContact, 24, Some(30)),
            fact("B", Acknowledge, 4, Some(5)),
            fact("B", Decision, 24, Some(6)),
            ClockFact {
                stopped_at: Some(6 * H),
                ..fact("B", FirstContact, 24, None)
            },
            fact("C", Acknowledge, 4, Some(2)),
            fact("C", Decision, 24, Some(3)),
            fact("C", FirstContact, 24, Some(10)),
        ];
        let contacts = vec![
            ContactFact {
                referral_id: "A".into(),
                outcome: "attended".into(),
            },
            ContactFact {
                referral_id: "C".into(),
                outcome: "not_attended".into(),
            },
        ];
        let rows = aggregate(&clocks, &contacts, 31 * H);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.referrals, 3);
        assert_eq!(r.acknowledged_within_sla, 2);
        assert_eq!(r.decided_within_sla, 3);
        assert_eq!(r.contacted_within_sla, 1);
        assert_eq!(r.breached, 2);
        // A clock stopped after its deadline was breached before the stop; one stopped
        // in time (B's first contact, at 6 h of 24) was not.
        let mut late_stop = clocks.clone();
        late_stop.push(ClockFact {
            stopped_at: Some(9 * H),
            ..fact("D", Acknowledge, 4, None)
        });
        assert_eq!(aggregate(&late_stop, &contacts, 31 * H)[0].breached, 3);
        // A breach the scanner recorded stays one when a later event claims a time
        // before the deadline (E's acknowledgement backdated to 3 h of 4).
        let mut backdated = clocks.clone();
        backdated.push(ClockFact {
            breached_at: Some(4 * H),
            ..fact("E", Acknowledge, 4, Some(3))
        });
        let rows_backdated = aggregate(&backdated, &contacts, 31 * H);
        assert_eq!(rows_backdated[0].breached, 3);
        assert_eq!(rows_backdated[0].acknowledged_within_sla, 2);
        assert_eq!(r.acknowledge_median_hours, Some(2.0));
        assert_eq!(r.acknowledge_p90_hours, Some(5.0));
        assert_eq!(r.decision_median_hours, Some(3.0));
        assert_eq!(r.decision_p90_hours, Some(6.0));
        assert_eq!(r.first_contact_median_hours, Some(10.0));
        assert_eq!(r.first_contact_p90_hours, Some(30.0));
        assert_eq!(r.not_attended_rate, Some(0.5));
        let table = to_table(&rows);
        assert!(table.lines().count() == 2 && table.contains("cmht"));
        assert!(to_csv(&rows).starts_with("agency,service_type,priority,referrals"));
    }

    #[test]
    fn open_clocks_past_due_count_as_breached() {
        let clocks = vec![fact("D", Clock::Acknowledge, 8, None)];
        assert_eq!(aggregate(&clocks, &[], 7 * H)[0].breached, 0);
        assert_eq!(aggregate(&clocks, &[], 9 * H)[0].breached, 1);
    }

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[1.0], 0.9), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.9), Some(4.0));
    }
}
