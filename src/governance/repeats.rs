//! Repeat referrals: how many people were referred to the same service type more than
//! once in a period, and how many referrals were made again after an earlier one was
//! declined. Counted from the `referral.submitted` audit entries, which carry the
//! person's key (an HMAC pseudonym, never a name); the result holds no person key: each
//! person is a row number in the order of their first referral.
//!
//! People are counted per service type (a person referred twice to CMHT and twice to
//! IAPT counts in both) into three buckets by their referrals in the period: exactly
//! 2, 3 to 4, and 5 or more ([`BUCKETS`]). A referral is *re-made after a decline* when
//! the same person had an earlier referral to the same service type (in the period)
//! that was declined before this one was submitted.

use std::collections::{BTreeMap, HashMap};

use crate::domain::Timestamp;
use crate::store::PersonSubmission;

/// The buckets' labels: people with exactly 2 referrals, 3 or 4, and 5 or more.
pub const BUCKETS: [&str; 3] = ["2", "3–4", "5+"];

/// The bucket (index into [`BUCKETS`]) of a person with `n` referrals; none below 2.
pub fn bucket(n: usize) -> Option<usize> {
    match n {
        0 | 1 => None,
        2 => Some(0),
        3 | 4 => Some(1),
        _ => Some(2),
    }
}

/// The counts of one service type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRepeats {
    pub service_type: String,
    /// People per bucket of [`BUCKETS`].
    pub people: [usize; 3],
    /// Referrals submitted after an earlier referral of the same person to the same
    /// service type was declined.
    pub remade_after_decline: usize,
}

/// One referral of a repeat-referred person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatReferral {
    pub referral_id: String,
    pub at: Timestamp,
    pub declined: bool,
    pub remade_after_decline: bool,
}

/// A person referred more than once to one service type: anonymous, their referrals in
/// submission order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatPerson {
    /// 1-based, in the order of the people's first referrals.
    pub number: usize,
    pub service_type: String,
    pub referrals: Vec<RepeatReferral>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repeats {
    /// By service type, only those with a repeat-referred person.
    pub by_service: Vec<ServiceRepeats>,
    pub people: Vec<RepeatPerson>,
}

/// Counts `submissions` (any order) given when referrals were `declined` and the
/// service type of each recipient agency (`None`: no longer in the registry, counted
/// under `unknown`).
pub fn repeats(
    submissions: &[PersonSubmission],
    declined: &HashMap<String, Timestamp>,
    service_type_of: impl Fn(&str) -> Option<String>,
) -> Repeats {
    // (service type, person key) -> referrals
    let mut groups: BTreeMap<(String, &str), Vec<(&str, Timestamp)>> = BTreeMap::new();
    for (person, referral, recipient, at) in submissions {
        let service = service_type_of(recipient).unwrap_or_else(|| "unknown".to_owned());
        groups
            .entry((service, person.as_str()))
            .or_default()
            .push((referral.as_str(), *at));
    }
    let mut by_service: BTreeMap<String, ServiceRepeats> = BTreeMap::new();
    let mut people = Vec::new();
    for ((service, _person), mut referrals) in groups {
        let Some(b) = bucket(referrals.len()) else {
            continue;
        };
        referrals.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        let counts = by_service
            .entry(service.clone())
            .or_insert_with(|| ServiceRepeats {
                service_type: service.clone(),
                ..ServiceRepeats::default()
            });
        counts.people[b] += 1;
        let mut listed = Vec::with_capacity(referrals.len());
        for (i, (id, at)) in referrals.iter().enumerate() {
            let remade = referrals[..i]
                .iter()
                .any(|(earlier, _)| declined.get(*earlier).is_some_and(|d| *d < *at));
            if remade {
                counts.remade_after_decline += 1;
            }
            listed.push(RepeatReferral {
                referral_id: (*id).to_owned(),
                at: *at,
                declined: declined.contains_key(*id),
                remade_after_decline: remade,
            });
        }
        people.push(RepeatPerson {
            number: 0,
            service_type: service,
            referrals: listed,
        });
    }
    // Numbered by service type then first referral: nothing of the key's order shows.
    people.sort_by(|a, b| {
        (
            &a.service_type,
            a.referrals[0].at,
            &a.referrals[0].referral_id,
        )
            .cmp(&(
                &b.service_type,
                b.referrals[0].at,
                &b.referrals[0].referral_id,
            ))
    });
    for (i, p) in people.iter_mut().enumerate() {
        p.number = i + 1;
    }
    Repeats {
        by_service: by_service.into_values().collect(),
        people,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(person: &str, referral: &str, recipient: &str, at: i64) -> PersonSubmission {
        (
            person.to_owned(),
            referral.to_owned(),
            recipient.to_owned(),
            Timestamp::from_micros(at),
        )
    }

    fn service_of(recipient: &str) -> Option<String> {
        match recipient {
            "coventry-cmht" | "warwick-cmht" => Some("cmht".to_owned()),
            "coventry-iapt" => Some("iapt".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn buckets_are_two_three_to_four_and_five_or_more() {
        let got: Vec<_> = (0..8).map(bucket).collect();
        assert_eq!(
            got,
            [
                None,
                None,
                Some(0),
                Some(1),
                Some(1),
                Some(2),
                Some(2),
                Some(2)
            ]
        );
    }

    #[test]
    fn people_are_counted_per_service_type_and_remade_referrals_follow_a_decline() {
        let mut subs = vec![
            // a: three CMHT referrals (two agencies), the first declined between the
            // second and third: only the third is re-made after a decline.
            sub("key-a", "r1", "coventry-cmht", 10),
            sub("key-a", "r2", "warwick-cmht", 20),
            sub("key-a", "r3", "coventry-cmht", 40),
            // b: twice to CMHT, once to IAPT (not a repeat there).
            sub("key-b", "r4", "coventry-cmht", 5),
            sub("key-b", "r5", "coventry-cmht", 50),
            sub("key-b", "r6", "coventry-iapt", 60),
            // c: five to an agency no longer in the registry.
            sub("key-c", "r7", "gone", 1),
            sub("key-c", "r8", "gone", 2),
            sub("key-c", "r9", "gone", 3),
            sub("key-c", "r10", "gone", 4),
            sub("key-c", "r11", "gone", 5),
            // d: once only.
            sub("key-d", "r12", "coventry-cmht", 7),
        ];
        subs.reverse();
        let declined = HashMap::from([
            ("r1".to_owned(), Timestamp::from_micros(30)),
            // Declined after the person's later referral: not a re-made referral.
            ("r6".to_owned(), Timestamp::from_micros(70)),
        ]);
        let got = repeats(&subs, &declined, service_of);
        assert_eq!(
            got.by_service,
            vec![
                ServiceRepeats {
                    service_type: "cmht".into(),
                    people: [1, 1, 0],
                    remade_after_decline: 1,
                },
                ServiceRepeats {
                    service_type: "unknown".into(),
                    people: [0, 0, 1],
                    remade_after_decline: 0,
                },
            ]
        );
        let rows: Vec<_> = got
            .people
            .iter()
            .map(|p| {
                (
                    p.number,
                    p.service_type.as_str(),
                    p.referrals
                        .iter()
                        .map(|r| (r.referral_id.as_str(), r.declined, r.remade_after_decline))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (1, "cmht", vec![("r4", false, false), ("r5", false, false)]),
                (
                    2,
                    "cmht",
                    vec![
                        ("r1", true, false),
                        ("r2", false, false),
                        ("r3", false, true)
                    ]
                ),
                (
                    3,
                    "unknown",
                    vec![
                        ("r7", false, false),
                        ("r8", false, false),
                        ("r9", false, false),
                        ("r10", false, false),
                        ("r11", false, false)
                    ]
                ),
            ]
        );
    }

    #[test]
    fn a_decline_in_another_service_type_does_not_count() {
        let subs = vec![
            sub("key-a", "r1", "coventry-iapt", 10),
            sub("key-a", "r2", "coventry-cmht", 20),
            sub("key-a", "r3", "coventry-cmht", 40),
        ];
        let declined = HashMap::from([("r1".to_owned(), Timestamp::from_micros(15))]);
        let got = repeats(&subs, &declined, service_of);
        assert_eq!(got.by_service[0].remade_after_decline, 0);
        assert_eq!(got.by_service.len(), 1);
    }
}
