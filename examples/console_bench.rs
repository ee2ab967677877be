//! Console page-timing bench (docs/console.md, "Performance"): a throw-away PostgreSQL
//! database holding a year of referrals and a long audit log, then every console page
//! timed through HTTP as an auditor and a service manager load it.
//!
//!     cargo run --release --example console_bench -- --referrals 100000 --audit-entries 1000000
//!
//! 1. Creates a uniquely named database (dropped at the end unless `--keep`), migrates it
//!    with the gateway's own migrations and seeds it with COPY: referrals over the last 12
//!    months from custody, court, probation and prison senders in two areas to every
//!    service type, their lifecycle events, SLA clocks (deadlines from the gateway's SLA
//!    policy, met, late, stopped and overdue), outbox rows (nearly all published), people
//!    referred repeatedly (person keys from the gateway's keyer), and the audit log: a hash
//!    chain built by `AuditEntry::hash` with a checkpoint signed every 1,000 entries, so
//!    "verify now" and `audit verify` pass.
//! 2. Starts the gateway on it (`Application::build`, development sign-in on), signs in as
//!    an auditor and as a service manager through the real sign-in form, and times every
//!    console page (and the staff API's matching endpoints, for reference): median, 95th
//!    percentile and maximum of `--reps` loads after warm-up (5 for a page over 2 s).
//!
//! Nothing is asserted except that each page answers as it should: the numbers depend on
//! the machine.

mod bench_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench_support::{percentile_ms, root};
use clap::Parser;
use referral_gateway::domain::audit::{AuditAction, AuditEntry, Checkpoint, GENESIS_HASH};
use referral_gateway::domain::messages::{EventRecord, OutboxMessage};
use referral_gateway::domain::sla::{Clock, clock_effects};
use referral_gateway::domain::{
    Agency, AgencyId, EventType, Priority, ReferralId, ReferralStatus, Timestamp, transition,
};
use referral_gateway::governance::person_keys::PersonKeyer;
use referral_gateway::security::signing::GatewayKey;
use referral_gateway::startup::Application;
use serde_json::{Value, json};
use sqlx::Connection;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    referrals: usize,
    /// The audit log's length after seeding (at least the entries the referrals make).
    #[arg(long, default_value_t = 1_000_000)]
    audit_entries: usize,
    /// A PostgreSQL URL whose user may create databases; the bench's database is made
    /// beside the one it names.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Keep the database (its URL is printed); `--reuse URL` times pages on it again.
    #[arg(long)]
    keep: bool,
    /// Time the pages on a database a previous `--keep` run seeded (nothing is seeded).
    #[arg(long)]
    reuse: Option<String>,
    /// Timed loads of each page after warm-up.
    #[arg(long, default_value_t = 20)]
    reps: usize,
}

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

// ------------------------------------------------------------------ the bench's region

/// Senders: (id, name, area, stage, share of referrals).
const SENDERS: [(&str, &str, &str, &str, f64); 7] = [
    (
        "coventry-liaison",
        "Coventry Liaison and Diversion Service",
        "coventry",
        "custody",
        0.22,
    ),
    (
        "coventry-court-liaison",
        "Coventry Magistrates' Court Liaison and Diversion",
        "coventry",
        "court",
        0.11,
    ),
    (
        "coventry-probation",
        "Coventry Probation Delivery Unit",
        "coventry",
        "probation",
        0.14,
    ),
    (
        "warwickshire-liaison",
        "Warwickshire Liaison and Diversion Service",
        "warwickshire",
        "custody",
        0.18,
    ),
    (
        "warwickshire-court-liaison",
        "Warwickshire Justice Centre Court Liaison",
        "warwickshire",
        "court",
        0.09,
    ),
    (
        "warwickshire-probation",
        "Warwickshire Probation Delivery Unit",
        "warwickshire",
        "probation",
        0.11,
    ),
    (
        "hmp-rye-hill",
        "HMP Rye Hill healthcare (release planning)",
        "both",
        "prison",
        0.15,
    ),
];

/// Service types and their share of referrals.
const SERVICE_TYPES: [(&str, f64); 4] = [
    ("cmht", 0.35),
    ("iapt", 0.20),
    ("substance_misuse", 0.30),
    ("housing", 0.15),
];

/// What the bench adds to the shipped configuration: the other senders, the Warwickshire
/// services, their permissions and two agreements covering them.
fn region_toml() -> String {
    let mut text = String::from("\n# ---- console_bench: the rest of the region\n");
    for (id, name, area, _, _) in SENDERS.iter().skip(1) {
        let area = if *area == "both" {
            "warwickshire"
        } else {
            area
        };
        text += &format!(
            "\n[[agencies]]\nid = \"{id}\"\nname = \"{name}\"\nservice_type = \"liaison\"\narea = \"{area}\"\nrole = \"sender\"\ncertificate = {{ san_uri = \"urn:referral-gateway:agency:{id}\" }}\n"
        );
    }
    for (service, name) in [
        ("cmht", "Warwickshire Community Mental Health Team"),
        ("iapt", "Warwickshire NHS Talking Therapies"),
        ("housing", "Warwickshire Housing Options"),
        ("substance_misuse", "Warwickshire Drug and Alcohol Service"),
    ] {
        let id = format!("warwickshire-{}", service.replace('_', "-"));
        text += &format!(
            "\n[[agencies]]\nid = \"{id}\"\nname = \"{name}\"\nservice_type = \"{service}\"\narea = \"warwickshire\"\nrole = \"receiver\"\ncertificate = {{ san_uri = \"urn:referral-gateway:agency:{id}\" }}\n"
        );
    }
    let others: Vec<String> = SENDERS
        .iter()
        .skip(1)
        .map(|(id, ..)| format!("\"{id}\""))
        .collect();
    for (id, ..) in SENDERS.iter().skip(1) {
        text += &format!(
            "\n[[permissions]]\nsender = \"{id}\"\nservice_types = [\"cmht\", \"iapt\", \"housing\", \"substance_misuse\"]\nareas = [\"coventry\", \"warwickshire\"]\n"
        );
    }
    text += &format!(
        r#"
[[sharing_agreements]]
id = "cw-justice-health-2025"
title = "Coventry and Warwickshire courts, probation and prison: referrals to health services"
purpose = "Referral of people in contact with the criminal justice system to mental health, talking therapies and drug and alcohol services"
senders = [{senders}]
recipient_service_types = ["cmht", "iapt", "substance_misuse"]
areas = ["coventry", "warwickshire"]
lawful_basis = "UK GDPR Art. 6(1)(e) public task; Art. 9(2)(h) health or social care"
categories = ["identity", "contact", "health", "risk", "criminal_justice", "substance_use", "housing"]
sharing_without_consent = ["safeguarding", "vital_interests"]
on_excess = "remove"
effective_from = "2025-01-01"
effective_to = "2027-12-31"

[[sharing_agreements]]
id = "cw-justice-housing-2025"
title = "Coventry and Warwickshire courts, probation and prison: duty to refer"
purpose = "Duty to refer (Housing Act 1996 s.213B), with the person's consent"
senders = [{senders}]
recipient_service_types = ["housing"]
areas = ["coventry", "warwickshire"]
lawful_basis = "UK GDPR Art. 6(1)(c) legal obligation (Housing Act 1996 s.213B) with the person's consent"
categories = ["identity", "contact", "housing", "risk", "criminal_justice"]
sharing_without_consent = []
on_excess = "remove"
effective_from = "2025-01-01"
effective_to = "2027-12-31"
"#,
        senders = others.join(", ")
    );
    text
}

// ------------------------------------------------------------------ randomness

/// SplitMix64: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.f() * (hi - lo).max(1) as f64) as i64
    }
    fn pick<T: Copy>(&mut self, weighted: &[(T, f64)]) -> T {
        let total: f64 = weighted.iter().map(|(_, w)| w).sum();
        let mut u = self.f() * total;
        for (v, w) in weighted {
            if u < *w {
                return *v;
            }
            u -= w;
        }
        weighted[weighted.len() - 1].0
    }
}

/// The next valid NHS number of NHS England's test range (999 000 0000 onwards).
fn nhs_number(cursor: &mut u64) -> String {
    loop {
        let base = format!("999{:06}", *cursor);
        *cursor += 1;
        let sum: u32 = base
            .bytes()
            .zip((2..=10u32).rev())
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => continue,
            c => c,
        };
        return format!("{base}{check}");
    }
}

// ------------------------------------------------------------------ the seeded world

struct SeedClock {
    clock: Clock,
    started: i64,
    due: i64,
    warn: i64,
    met: Option<i64>,
    stopped: Option<i64>,
}

struct SeedEvent {
    kind: EventType,
    by_sender: bool,
    occurred: i64,
    recorded: i64,
    status_after: ReferralStatus,
    outcome: Option<&'static str>,
}

struct SeedReferral {
    id: ReferralId,
    sender: usize,
    recipient: Arc<Agency>,
    priority: Priority,
    received: i64,
    person: usize,
    status: ReferralStatus,
    updated: i64,
    events: Vec<SeedEvent>,
    clocks: Vec<SeedClock>,
    /// When the referral's own message was published (`None`: still in the outbox).
    published: Option<i64>,
    isa_id: String,
    lawful_basis: String,
}

/// A planned audit entry, ordered by time: built into an entry once everything is sorted.
#[derive(Clone, Copy)]
struct Planned {
    at: i64,
    kind: u8,
    referral: u32,
    index: u16,
}

const K_SUBMITTED: u8 = 0;
const K_DELIVERED: u8 = 1; // index 0: the referral's message; n > 0: event n-1's message
const K_EVENT: u8 = 2;
const K_FILL: u8 = 3; // index: which filler (see `filler`)

fn micros(t: time::OffsetDateTime) -> i64 {
    referral_gateway::store::to_micros(t)
}

fn odt(us: i64) -> time::OffsetDateTime {
    referral_gateway::store::from_micros(us).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

struct World {
    referrals: Vec<SeedReferral>,
    person_keys: Vec<String>,
    /// NHS numbers of the people referred most (index 0: the most).
    frequent_nhs: Vec<String>,
    now: i64,
}

fn build_world(
    config: &referral_gateway::config::Config,
    n: usize,
    now: i64,
) -> anyhow::Result<World> {
    let mut rng = Rng(0x5EED_2026);
    let registry = &config.registry;
    let policy = &config.sla.policy;
    let mut relaxed = policy.clone();
    relaxed.calendar.covered_until = time::Date::MAX;
    let keyer = PersonKeyer::new(&config.audit.person_key_secret);
    let start = now - 365 * DAY;
    // Referrals arrive mostly in working hours, fewer at weekends.
    let hour_weight = |h: i64| match h {
        0..=6 => 0.15,
        7..=8 => 0.6,
        9..=17 => 1.0,
        18..=21 => 0.5,
        _ => 0.25,
    };
    let mut times: Vec<i64> = Vec::with_capacity(n);
    while times.len() < n {
        let t = rng.between(start, now - 10 * MINUTE);
        let day = (t / DAY + 4) % 7; // 1970-01-01 was a Thursday: 0 = Monday
        let weekend = day >= 5;
        let w = hour_weight((t / HOUR) % 24) * if weekend { 0.4 } else { 1.0 };
        if rng.f() < w {
            times.push(t);
        }
    }
    times.sort_unstable();
    // People: one referred every ~2,500 referrals (the subject access example), a pool
    // of people referred again and again, and everyone else once.
    let pool = (n / 12).max(10);
    let mut nhs_cursor = 0u64;
    let mut nhs: Vec<String> = Vec::new();
    let person_of = |rng: &mut Rng, i: usize| -> usize {
        if i % 2500 == 7 {
            0
        } else if rng.f() < 0.35 {
            1 + (pool as f64 * rng.f() * rng.f()) as usize
        } else {
            1 + pool + i
        }
    };
    let mut persons: BTreeMap<usize, usize> = BTreeMap::new(); // person -> index in nhs
    let mut referrals = Vec::with_capacity(n);
    let stage_weights: Vec<(usize, f64)> =
        SENDERS.iter().enumerate().map(|(i, s)| (i, s.4)).collect();
    for (i, received) in times.into_iter().enumerate() {
        let sender = rng.pick(&stage_weights);
        let area = match SENDERS[sender].2 {
            "both" => {
                if rng.f() < 0.5 {
                    "coventry"
                } else {
                    "warwickshire"
                }
            }
            a => a,
        };
        let service = rng.pick(&SERVICE_TYPES);
        let recipient_id = format!("{area}-{}", service.replace('_', "-"));
        let recipient = registry
            .get(&recipient_id)
            .with_context(|| format!("agency {recipient_id}"))?
            .clone();
        let priority = rng.pick(&[
            (Priority::Emergency, 0.03),
            (Priority::Urgent, 0.22),
            (Priority::Routine, 0.75),
        ]);
        let person = person_of(&mut rng, i);
        let next = persons.len();
        let person = *persons.entry(person).or_insert(next);
        if person == nhs.len() {
            nhs.push(nhs_number(&mut nhs_cursor));
        }
        let deadlines = policy
            .deadlines(
                recipient.id.as_str(),
                recipient.service_type.as_str(),
                priority,
                odt(received),
            )
            .or_else(|_| {
                relaxed.deadlines(
                    recipient.id.as_str(),
                    recipient.service_type.as_str(),
                    priority,
                    odt(received),
                )
            })?;
        let mut clocks: Vec<SeedClock> = deadlines
            .iter()
            .map(|d| SeedClock {
                clock: d.clock,
                started: received,
                due: micros(d.due_at),
                warn: micros(d.warn_at),
                met: None,
                stopped: None,
            })
            .collect();
        let span = |c: Clock| {
            clocks
                .iter()
                .find(|x| x.clock == c)
                .map_or(5 * DAY, |x| x.due - received)
        };
        // When a step happens: mostly within its target, sometimes late.
        let when = |rng: &mut Rng, c: Clock, late: f64, after: i64| {
            let s = span(c) as f64;
            let f = if rng.f() < late {
                1.05 + rng.f() * 2.0
            } else {
                0.05 + rng.f() * 0.9
            };
            (received + (s * f) as i64).max(after + rng.between(MINUTE, 30 * MINUTE))
        };
        let stalled = i + 15 >= n; // the newest few wait in the outbox
        let published = (!stalled).then(|| received + rng.between(300_000, 3_000_000));
        let mut plan: Vec<(EventType, bool, i64, Option<&'static str>)> = Vec::new();
        let u = rng.f();
        if !stalled && u >= 0.01 {
            let ack = when(&mut rng, Clock::Acknowledge, 0.10, received);
            plan.push((EventType::Acknowledged, false, ack, None));
            if u < 0.03 {
                let t = ack + rng.between(HOUR, 5 * DAY);
                plan.push((EventType::Withdrawn, true, t, None));
            } else if u < 0.13 {
                let t = when(&mut rng, Clock::Decision, 0.08, ack);
                plan.push((EventType::Declined, false, t, None));
            } else if u < 0.15 {
                let t = when(&mut rng, Clock::Decision, 0.08, ack);
                plan.push((EventType::Redirected, false, t, None));
            } else {
                let accepted = when(&mut rng, Clock::Decision, 0.08, ack);
                plan.push((EventType::Accepted, false, accepted, None));
                if rng.f() >= 0.03 {
                    let contact = when(&mut rng, Clock::FirstContact, 0.15, accepted);
                    let outcome = rng.pick(&[
                        ("attended", 0.80),
                        ("not_attended", 0.12),
                        ("unable_to_contact", 0.08),
                    ]);
                    plan.push((EventType::FirstContact, false, contact, Some(outcome)));
                    if rng.f() < 0.85 {
                        let t = contact + rng.between(7 * DAY, 90 * DAY);
                        plan.push((EventType::Closed, false, t, None));
                    }
                }
            }
        }
        let mut status = if published.is_some_and(|p| p < now) {
            ReferralStatus::Queued
        } else {
            ReferralStatus::Received
        };
        let mut updated = published.filter(|p| *p < now).unwrap_or(received);
        let mut events = Vec::new();
        for (kind, by_sender, occurred, outcome) in plan {
            let recorded = occurred + rng.between(1_000_000, 120_000_000);
            if recorded >= now - MINUTE {
                break;
            }
            let Ok(after) = transition(status, kind) else {
                break;
            };
            status = after;
            updated = recorded;
            let (meets, stops) = clock_effects(kind);
            for c in clocks.iter_mut() {
                if c.met.is_none() && c.stopped.is_none() {
                    if meets.contains(&c.clock) {
                        c.met = Some(occurred);
                    } else if stops.contains(&c.clock) {
                        c.stopped = Some(occurred);
                    }
                }
            }
            events.push(SeedEvent {
                kind,
                by_sender,
                occurred,
                recorded,
                status_after: after,
                outcome,
            });
        }
        // The scanner marks a referral never acknowledged in time undelivered.
        if events.is_empty()
            && let Some(delivery) = clocks.iter().find(|c| c.clock == Clock::Delivery)
            && delivery.due + 30_000_000 < now
            && matches!(status, ReferralStatus::Received | ReferralStatus::Queued)
        {
            status = ReferralStatus::Undelivered;
            updated = delivery.due + 30_000_000;
        }
        let health = recipient.service_type.as_str() != "housing";
        let (isa_id, lawful_basis) = match (sender, health) {
            (0, true) => (
                "coventry-ld-health-2026",
                "UK GDPR Art. 6(1)(e) public task; Art. 9(2)(h) health or social care; DPA 2018 Sch. 1 Part 1 para 2",
            ),
            (0, false) => (
                "coventry-ld-housing-duty-to-refer-2026",
                "UK GDPR Art. 6(1)(c) legal obligation (Housing Act 1996 s.213B) with the person's consent; no special category data shared",
            ),
            (_, true) => (
                "cw-justice-health-2025",
                "UK GDPR Art. 6(1)(e) public task; Art. 9(2)(h) health or social care",
            ),
            (_, false) => (
                "cw-justice-housing-2025",
                "UK GDPR Art. 6(1)(c) legal obligation (Housing Act 1996 s.213B) with the person's consent",
            ),
        };
        let secs = received.div_euclid(1_000_000);
        let nanos = (received.rem_euclid(1_000_000) * 1000) as u32;
        let id = ReferralId::parse(
            &uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                secs as u64,
                nanos,
            ))
            .to_string(),
        )?;
        referrals.push(SeedReferral {
            id,
            sender,
            recipient,
            priority,
            received,
            person,
            status,
            updated,
            events,
            clocks,
            published,
            isa_id: isa_id.to_owned(),
            lawful_basis: lawful_basis.to_owned(),
        });
    }
    let person_keys = nhs
        .iter()
        .map(|n| {
            keyer
                .key_for(Some(n), None, None, None)
                .context("a valid NHS number")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The most referred people first.
    let mut counts = vec![0usize; nhs.len()];
    for r in &referrals {
        counts[r.person] += 1;
    }
    let mut order: Vec<usize> = (0..nhs.len()).collect();
    order.sort_by_key(|p| std::cmp::Reverse(counts[*p]));
    let frequent_nhs = order.iter().take(3).map(|p| nhs[*p].clone()).collect();
    Ok(World {
        referrals,
        person_keys,
        frequent_nhs,
        now,
    })
}

// ------------------------------------------------------------------ COPY

/// Rows in PostgreSQL's COPY text format.
#[derive(Default)]
struct CopyRows(Vec<u8>);

impl CopyRows {
    fn text(&mut self, value: &str) -> &mut Self {
        for b in value.bytes() {
            match b {
                b'\\' => self.0.extend_from_slice(b"\\\\"),
                b'\t' => self.0.extend_from_slice(b"\\t"),
                b'\n' => self.0.extend_from_slice(b"\\n"),
                b'\r' => self.0.extend_from_slice(b"\\r"),
                _ => self.0.push(b),
            }
        }
        self.0.push(b'\t');
        self
    }
    fn opt(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(v),
            None => {
                self.0.extend_from_slice(b"\\N\t");
                self
            }
        }
    }
    fn int(&mut self, value: i64) -> &mut Self {
        self.0.extend_from_slice(value.to_string().as_bytes());
        self.0.push(b'\t');
        self
    }
    fn opt_int(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.int(v),
            None => self.opt(None),
        }
    }
    fn end(&mut self) {
        if self.0.last() == Some(&b'\t') {
            self.0.pop();
        }
        self.0.push(b'\n');
    }
}

/// Streams rows into `COPY table (columns) FROM STDIN`, `rows` producing a few MB at a time.
async fn copy_in(
    conn: &mut sqlx::PgConnection,
    table: &str,
    columns: &str,
    mut rows: impl FnMut(&mut CopyRows) -> anyhow::Result<bool>,
) -> anyhow::Result<u64> {
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN"))
        .await?;
    loop {
        let mut chunk = CopyRows::default();
        let mut more = true;
        while more && chunk.0.len() < 4 << 20 {
            more = rows(&mut chunk)?;
        }
        if !chunk.0.is_empty() {
            copy.send(chunk.0).await?;
        }
        if !more {
            break;
        }
    }
    Ok(copy.finish().await?)
}

async fn seed(
    url: &str,
    config: &referral_gateway::config::Config,
    world: &World,
    audit_entries: usize,
) -> anyhow::Result<(i64, String)> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let keys = config.storage.payload_keys()?;
    let schemas = referral_gateway::intake::schema::SchemaRegistry::load(&config.schemas_dir)?;
    let examples: BTreeMap<&str, String> = SERVICE_TYPES
        .iter()
        .map(|(s, _)| {
            let text =
                std::fs::read_to_string(root().join(format!("docs/examples/referral-{s}.json")))?;
            let canonical = serde_json::from_str::<Value>(&text)?.to_string();
            Ok((*s, canonical))
        })
        .collect::<anyhow::Result<_>>()?;
    let rs = &world.referrals;

    // Referrals.
    let started = Instant::now();
    let mut i = 0;
    copy_in(
        &mut conn,
        "referrals",
        "id, sender_agency, recipient_agency, service_type, area, priority, status, schema_id, payload, \
         payload_sha256, correlation_id, received_at, updated_at, payload_key_id, isa_id, withheld",
        |out| {
            let Some(r) = rs.get(i) else { return Ok(false) };
            i += 1;
            let id = r.id.to_string();
            let service = r.recipient.service_type.as_str();
            let doc = &examples[service];
            let (key_id, sealed) = keys.seal(doc, &id)?;
            let service_type = referral_gateway::domain::ServiceType::parse(service)?;
            out.text(&id)
                .text(SENDERS[r.sender].0)
                .text(r.recipient.id.as_str())
                .text(service)
                .text(r.recipient.area.as_str())
                .text(r.priority.as_str())
                .text(r.status.as_str())
                .text(schemas.schema_id_for(Some(&service_type)))
                .text(&sealed)
                .text(&referral_gateway::security::digest::sha256_hex(doc.as_bytes()))
                .text(&uuid::Uuid::new_v4().to_string())
                .int(r.received)
                .int(r.updated)
                .text(&key_id)
                .text(&r.isa_id)
                .text("[]")
                .end();
            Ok(true)
        },
    )
    .await?;
    println!(
        "  referrals: {} rows in {:.1}s",
        rs.len(),
        started.elapsed().as_secs_f64()
    );

    // Clocks.
    let started = Instant::now();
    let now = world.now;
    let lag = 30_000_000; // the scanner runs every minute
    let (mut i, mut k) = (0, 0);
    let mut clock_rows = 0;
    copy_in(
        &mut conn,
        "sla_clocks",
        "referral_id, clock, started_at, due_at, warn_at, met_at, met_late, stopped_at, warned_at, breached_at",
        |out| {
            let Some(r) = rs.get(i) else { return Ok(false) };
            let Some(c) = r.clocks.get(k) else {
                i += 1;
                k = 0;
                return Ok(true);
            };
            k += 1;
            clock_rows += 1;
            let end = c.met.or(c.stopped).unwrap_or(now);
            let warned = (c.warn + lag < end).then_some(c.warn + lag);
            let breached = (c.due + lag < end && c.stopped.is_none()).then_some(c.due + lag);
            out.text(&r.id.to_string())
                .text(c.clock.as_str())
                .int(c.started)
                .int(c.due)
                .int(c.warn)
                .opt_int(c.met)
                .opt_int(c.met.map(|m| i64::from(m > c.due)))
                .opt_int(c.stopped)
                .opt_int(warned)
                .opt_int(breached)
                .end();
            Ok(true)
        },
    )
    .await?;
    println!(
        "  sla_clocks: {clock_rows} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Events, then the outbox (the referral's message, and each event's).
    let started = Instant::now();
    let (mut i, mut k) = (0, 0);
    let mut event_rows = 0;
    copy_in(
        &mut conn,
        "referral_events",
        "id, referral_id, event_id, actor_agency, event_type, status_after, body, request_sha256, occurred_at, recorded_at, body_key_id",
        |out| {
            let Some(r) = rs.get(i) else { return Ok(false) };
            let Some(e) = r.events.get(k) else {
                i += 1;
                k = 0;
                return Ok(true);
            };
            k += 1;
            event_rows += 1;
            let event_id = format!("evt-{}-{k}", &r.id.to_string()[..8]);
            let actor = if e.by_sender {
                SENDERS[r.sender].0
            } else {
                r.recipient.id.as_str()
            };
            let body = with_record(r, e, &event_id, |record| record.to_json());
            // Sealed as the gateway stores it (migration 0010).
            let record_id = uuid::Uuid::new_v4().to_string();
            let (key_id, sealed) =
                keys.seal(&body, &referral_gateway::store::event_binding(&record_id))?;
            out.text(&record_id)
                .text(&r.id.to_string())
                .text(&event_id)
                .text(actor)
                .text(e.kind.as_str())
                .text(e.status_after.as_str())
                .text(&sealed)
                .text(&referral_gateway::security::digest::sha256_hex(
                    body.as_bytes(),
                ))
                .int(e.occurred)
                .int(e.recorded)
                .text(&key_id)
                .end();
            Ok(true)
        },
    )
    .await?;
    let (mut i, mut k) = (0, 0);
    let mut outbox_rows = 0;
    copy_in(
        &mut conn,
        "outbox",
        "referral_id, message_type, exchange, routing_key, created_at, attempts, next_attempt_at, published_at, payload, message_id, payload_key_id",
        |out| {
            let Some(r) = rs.get(i) else { return Ok(false) };
            let (message, created, published) = if k == 0 {
                (
                    OutboxMessage::referral(&r.recipient),
                    r.received,
                    r.published.filter(|p| *p < now),
                )
            } else {
                let Some(e) = r.events.get(k - 1) else {
                    i += 1;
                    k = 0;
                    return Ok(true);
                };
                let event_id = format!("evt-{}-{k}", &r.id.to_string()[..8]);
                let sender = AgencyId::parse(SENDERS[r.sender].0)?;
                let message_id = uuid::Uuid::new_v4().to_string();
                // A status message to the sender, or the withdrawal to the recipient.
                let message = with_record(r, e, &event_id, |record| {
                    if e.by_sender {
                        OutboxMessage::withdrawal(
                            message_id,
                            &referral_gateway::domain::RoutingKey::for_agency(&r.recipient),
                            record,
                        )
                    } else {
                        OutboxMessage::event_status(message_id, &sender, record)
                    }
                });
                let published = e.recorded + 1_500_000;
                (
                    message,
                    e.recorded,
                    (published < now - MINUTE).then_some(published),
                )
            };
            k += 1;
            outbox_rows += 1;
            // An event's message payload is sealed as the gateway stores it.
            let sealed = match (message.payload(), message.message_id()) {
                (Some(payload), Some(message_id)) => Some(keys.seal(
                    payload,
                    &referral_gateway::store::message_binding(message_id),
                )?),
                _ => None,
            };
            out.text(&r.id.to_string())
                .text(message.message_type().as_str())
                .text(message.exchange().as_str())
                .text(message.routing_key())
                .int(created)
                .int(i64::from(published.is_some()))
                .int(0)
                .opt_int(published)
                .opt(sealed.as_ref().map(|(_, text)| text.as_str()))
                .opt(message.message_id())
                .opt(sealed.as_ref().map(|(key_id, _)| key_id.as_str()))
                .end();
            Ok(true)
        },
    )
    .await?;
    println!(
        "  referral_events: {event_rows} rows, outbox: {outbox_rows} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The audit log.
    let started = Instant::now();
    let (head, hash) = seed_audit(&mut conn, config, world, audit_entries).await?;
    println!(
        "  audit_log: {head} entries (hash chain, a signed checkpoint every 1,000) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    for table in [
        "referrals",
        "sla_clocks",
        "referral_events",
        "outbox",
        "audit_log",
        "audit_checkpoints",
    ] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(&mut conn)
            .await?;
    }
    println!(
        "  VACUUM ANALYZE (what autovacuum does after a load) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    conn.close().await?;
    Ok((head, hash))
}

/// The event's stored record (the event row's body and its messages' payload), as the
/// gateway's `EventRecord` writes it, handed to `f`.
fn with_record<T>(
    r: &SeedReferral,
    e: &SeedEvent,
    event_id: &str,
    f: impl FnOnce(&EventRecord<'_>) -> T,
) -> T {
    let actor = if e.by_sender {
        AgencyId::parse(SENDERS[r.sender].0).unwrap_or_else(|_| r.recipient.id.clone())
    } else {
        r.recipient.id.clone()
    };
    let contact = e
        .outcome
        .map(|o| json!({"outcome": o, "method": "in_person"}));
    let reason = matches!(e.kind, EventType::Declined).then(|| json!("not_eligible"));
    let redirected = matches!(e.kind, EventType::Redirected)
        .then(|| json!({"service_type": r.recipient.service_type.as_str()}));
    let withdrawal = matches!(e.kind, EventType::Withdrawn).then(|| json!("no_longer_needed"));
    f(&EventRecord {
        actor_agency: &actor,
        contact: contact.as_ref(),
        detail: None,
        event_id,
        occurred_at: odt(e.occurred),
        outcome: None,
        reason_code: reason.as_ref(),
        recorded_at: odt(e.recorded),
        redirected_to: redirected.as_ref(),
        referral_id: r.id,
        status: e.status_after,
        event_type: e.kind,
        withdrawal_reason: withdrawal.as_ref(),
    })
}

/// Staff and agency activity that fills the log to its length: (weight, action).
const FILLERS: [(u16, f64); 8] = [
    (0, 0.45), // an agency reads a referral's status
    (1, 0.12), // a staff member reads a referral
    (2, 0.14), // an agency lists its referrals
    (3, 0.08), // an SLA report
    (4, 0.07), // an audit search
    (5, 0.06), // a console sign-in
    (6, 0.05), // a refused submission (with the person's key)
    (7, 0.03), // a refused token
];

const STAFF: [&str; 5] = [
    "staff:ig.lead@example.org",
    "staff:dpo@example.org",
    "staff:cmht.manager@example.org",
    "staff:iapt.manager@example.org",
    "staff:housing.manager@example.org",
];

async fn seed_audit(
    conn: &mut sqlx::PgConnection,
    config: &referral_gateway::config::Config,
    world: &World,
    target: usize,
) -> anyhow::Result<(i64, String)> {
    let rs = &world.referrals;
    let now = world.now;
    let mut plan: Vec<Planned> = Vec::with_capacity(target);
    for (ri, r) in rs.iter().enumerate() {
        let referral = ri as u32;
        plan.push(Planned {
            at: r.received,
            kind: K_SUBMITTED,
            referral,
            index: 0,
        });
        if let Some(p) = r.published.filter(|p| *p < now) {
            plan.push(Planned {
                at: p,
                kind: K_DELIVERED,
                referral,
                index: 0,
            });
        }
        for (ei, e) in r.events.iter().enumerate() {
            plan.push(Planned {
                at: e.recorded,
                kind: K_EVENT,
                referral,
                index: ei as u16,
            });
            let published = e.recorded + 1_500_000;
            if published < now - MINUTE {
                plan.push(Planned {
                    at: published,
                    kind: K_DELIVERED,
                    referral,
                    index: ei as u16 + 1,
                });
            }
        }
    }
    anyhow::ensure!(
        plan.len() <= target,
        "{} referrals make {} audit entries: ask for at least that many (--audit-entries)",
        rs.len(),
        plan.len()
    );
    let mut rng = Rng(0xA0D1_7000);
    let start = rs.first().map_or(now - 365 * DAY, |r| r.received);
    let weights: Vec<(u16, f64)> = FILLERS.to_vec();
    while plan.len() < target {
        let at = rng.between(start + MINUTE, now - 2 * MINUTE);
        let known = rs.partition_point(|r| r.received < at).max(1);
        plan.push(Planned {
            at,
            kind: K_FILL,
            referral: rng.below(known) as u32,
            index: rng.pick(&weights),
        });
    }
    plan.sort_by_key(|p| (p.at, p.kind, p.referral, p.index));

    let key = GatewayKey::load(&config.audit.signing_key)?;
    let agencies: Vec<String> = config
        .registry
        .agencies()
        .map(|a| a.id.to_string())
        .collect();
    let mut seq = 0i64;
    let mut prev = GENESIS_HASH.to_owned();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut next = 0;
    let mut fill_rng = Rng(0xF111);
    let total = plan.len();
    copy_in(
        conn,
        "audit_log",
        "seq, at, actor, action, referral_id, recipient, isa_id, lawful_basis, consent, categories, withheld, person_key, detail, prev_hash, hash",
        |out| {
            let Some(p) = plan.get(next) else { return Ok(false) };
            next += 1;
            seq += 1;
            let r = &rs[p.referral as usize];
            let entry = entry_for(p, r, world, &agencies, &mut fill_rng, seq, prev.clone());
            let hash = entry.hash();
            out.int(entry.seq)
                .int(entry.at.as_micros())
                .text(&entry.actor)
                .text(&entry.action)
                .opt(entry.referral_id.as_deref())
                .opt(entry.recipient.as_deref())
                .opt(entry.isa_id.as_deref())
                .opt(entry.lawful_basis.as_deref())
                .opt(entry.consent.as_deref())
                .text(&serde_json::to_string(&entry.categories)?)
                .text(&serde_json::to_string(&entry.withheld)?)
                .opt(entry.person_key.as_deref())
                .text(&entry.detail)
                .text(&entry.prev_hash)
                .text(&hash)
                .end();
            if seq % 1000 == 0 || next == total {
                let mut checkpoint = Checkpoint {
                    seq,
                    head_hash: hash.clone(),
                    // The checkpointer polls every second.
                    signed_at: entry.at.as_micros() + 1_000_000,
                    key_id: key.key_id().to_owned(),
                    signature: String::new(),
                };
                checkpoint.signature = key.sign(&checkpoint.message());
                checkpoints.push(checkpoint);
            }
            prev = hash;
            Ok(true)
        },
    )
    .await?;
    let mut c = 0;
    copy_in(
        conn,
        "audit_checkpoints",
        "seq, head_hash, signed_at, key_id, signature",
        |out| {
            let Some(cp) = checkpoints.get(c) else {
                return Ok(false);
            };
            c += 1;
            out.int(cp.seq)
                .text(&cp.head_hash)
                .int(cp.signed_at)
                .text(&cp.key_id)
                .text(&cp.signature)
                .end();
            Ok(true)
        },
    )
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *conn)
        .await?;
    Ok((seq, prev))
}

#[allow(clippy::too_many_arguments)]
fn entry_for(
    p: &Planned,
    r: &SeedReferral,
    world: &World,
    agencies: &[String],
    rng: &mut Rng,
    seq: i64,
    prev_hash: String,
) -> AuditEntry {
    let mut e = AuditEntry {
        seq,
        at: Timestamp::from_micros(p.at),
        actor: String::new(),
        action: String::new(),
        referral_id: None,
        recipient: None,
        isa_id: None,
        lawful_basis: None,
        consent: None,
        categories: Vec::new(),
        withheld: Vec::new(),
        person_key: None,
        detail: String::new(),
        prev_hash,
    };
    let action = |a: AuditAction| a.as_str().to_owned();
    let sender = SENDERS[r.sender].0;
    match p.kind {
        K_SUBMITTED => {
            e.actor = format!("agency:{sender}");
            e.action = action(AuditAction::ReferralSubmitted);
            e.referral_id = Some(r.id.to_string());
            e.recipient = Some(r.recipient.id.to_string());
            e.isa_id = Some(r.isa_id.clone());
            e.lawful_basis = Some(r.lawful_basis.clone());
            e.consent = Some("given".into());
            e.categories = [
                "consent",
                "contact",
                "criminal_justice",
                "health",
                "identity",
                "referral",
                "risk",
                "routing",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            e.person_key = Some(world.person_keys[r.person].clone());
        }
        K_DELIVERED => {
            e.actor = "gateway".into();
            e.action = action(AuditAction::MessageDelivered);
            e.referral_id = Some(r.id.to_string());
            e.recipient = Some(r.recipient.id.to_string());
            let kind = match p.index {
                0 => "referral",
                n => match r.events.get(usize::from(n) - 1) {
                    Some(ev) if ev.by_sender => "withdrawal",
                    _ => "status",
                },
            };
            e.detail = format!("{kind} confirmed by the broker");
        }
        K_EVENT => {
            let ev = &r.events[usize::from(p.index)];
            let by = if ev.by_sender {
                sender.to_owned()
            } else {
                r.recipient.id.to_string()
            };
            e.actor = format!("agency:{by}");
            e.action = action(AuditAction::EventPosted);
            e.referral_id = Some(r.id.to_string());
            e.recipient = Some(r.recipient.id.to_string());
            e.detail = ev.kind.as_str().to_owned();
        }
        _ => {
            let staff = STAFF[rng.below(STAFF.len())];
            let agency = &agencies[rng.below(agencies.len())];
            match p.index {
                0 => {
                    let by = if rng.f() < 0.7 {
                        r.recipient.id.to_string()
                    } else {
                        sender.to_owned()
                    };
                    e.actor = format!("agency:{by}");
                    e.action = action(AuditAction::ReferralRead);
                    e.referral_id = Some(r.id.to_string());
                }
                1 => {
                    e.actor = staff.to_owned();
                    e.action = action(AuditAction::ReferralRead);
                    e.referral_id = Some(r.id.to_string());
                }
                2 => {
                    e.actor = format!("agency:{agency}");
                    e.action = action(AuditAction::ReferralListed);
                    e.recipient = Some(agency.clone());
                    e.detail = format!(
                        "{} referral(s) of {agency}; status= role= overdue=false",
                        rng.below(51)
                    );
                }
                3 => {
                    e.actor = staff.to_owned();
                    e.action = action(AuditAction::ReportSla);
                    e.recipient = Some(agency.clone());
                    e.detail = format!(
                        "{} row(s), {} to {}, agency {agency}",
                        rng.below(4) + 1,
                        Timestamp::from_micros(p.at - 30 * DAY),
                        Timestamp::from_micros(p.at)
                    );
                }
                4 => {
                    e.actor = STAFF[rng.below(2)].to_owned();
                    e.action = action(AuditAction::AuditQueried);
                    e.detail = format!(
                        "{} entries; from= to= agency={agency} action=referral.* referral= after=0 upto={}",
                        rng.below(101),
                        seq - 1
                    );
                }
                5 => {
                    e.actor = staff.to_owned();
                    e.action = action(AuditAction::StaffSignedIn);
                    e.detail = "console sign-in via oidc; roles auditor".into();
                }
                6 => {
                    e.actor = format!("agency:{sender}");
                    e.action = action(AuditAction::ReferralRefused);
                    e.recipient = Some(r.recipient.id.to_string());
                    e.person_key = Some(world.person_keys[r.person].clone());
                    e.detail = "schema-validation: /person/date_of_birth".into();
                }
                _ => {
                    e.actor = "bearer:unverified".into();
                    e.action = action(AuditAction::AuthRefused);
                    e.detail = "the token has expired".into();
                }
            }
        }
    }
    e
}

// ------------------------------------------------------------------ HTTP

/// A browser: a rustls client that keeps the cookies it is given.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
    csrf: String,
    bearer: Option<String>,
}

impl Browser {
    fn new(base: &str) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(root().join("certs-example/ca.crt"))? {
            roots.add(cert?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            client: reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.to_owned(),
            cookies: BTreeMap::new(),
            csrf: String::new(),
            bearer: None,
        })
    }

    /// Sends a request with the kept cookies; keeps the cookies the answer sets.
    async fn send(&mut self, req: &Req) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{}", self.base, req.path);
        let mut builder = match &req.form {
            Some(form) => {
                let body: Vec<String> = form
                    .iter()
                    .map(|(k, v)| {
                        let v = if k == "csrf" { self.csrf.as_str() } else { v };
                        format!("{}={}", enc(k), enc(v))
                    })
                    .collect();
                self.client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.join("&"))
            }
            None => match &req.json {
                Some(body) => self
                    .client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string()),
                None => self.client.get(url),
            },
        };
        if let Some(token) = &self.bearer {
            builder = builder.bearer_auth(token);
        }
        if !self.cookies.is_empty() {
            let cookie: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            builder = builder.header("cookie", cookie.join("; "));
        }
        let res = builder.send().await?;
        for value in res.headers().get_all("set-cookie") {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Ok(res)
    }

    /// Signs in through the development sign-in form.
    async fn sign_in(&mut self, role: &str, agency: &str) -> anyhow::Result<()> {
        let page = self.send(&Req::get("/console/sign-in")).await?;
        anyhow::ensure!(page.status() == 200, "sign-in page: {}", page.status());
        self.csrf = csrf_in(&page.text().await?)?;
        let r = self
            .send(&Req::post(
                "/console/auth/dev",
                &[("csrf", ""), ("role", role), ("agency", agency)],
            ))
            .await?;
        anyhow::ensure!(r.status() == 303, "development sign-in: {}", r.status());
        let home = self.send(&Req::get("/console/")).await?;
        anyhow::ensure!(home.status() == 200, "overview: {}", home.status());
        self.csrf = csrf_in(&home.text().await?)?;
        Ok(())
    }
}

fn csrf_in(html: &str) -> anyhow::Result<String> {
    let at = html
        .find("name=\"csrf\" value=\"")
        .context("a form with a CSRF token")?
        + 19;
    Ok(html[at..].split('"').next().unwrap_or_default().to_owned())
}

#[derive(Clone, Copy)]
enum Count {
    /// Rows of the page's tables.
    HtmlRows,
    /// Lines of a download.
    Lines,
    /// The length of a JSON array member.
    Json(&'static str),
}

#[derive(Clone)]
struct Req {
    path: String,
    form: Option<Vec<(String, String)>>,
    json: Option<Value>,
    count: Count,
}

impl Req {
    fn get(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            form: None,
            json: None,
            count: Count::HtmlRows,
        }
    }
    fn post(path: &str, form: &[(&str, &str)]) -> Self {
        Self {
            form: Some(
                form.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Self::get(path)
        }
    }
    fn count(mut self, count: Count) -> Self {
        self.count = count;
        self
    }
}

/// Loads a page: the rows it shows, the time to its headers, the whole time.
async fn load(b: &mut Browser, req: &Req) -> anyhow::Result<(String, Duration, Duration)> {
    let started = Instant::now();
    let res = b.send(req).await?;
    let first = started.elapsed();
    let status = res.status();
    let text = res.text().await?;
    let total = started.elapsed();
    // "Verify now" starts a background run and sends the auditor back to the audit page.
    let expected = if req.path.starts_with("/console/audit/verify") {
        303
    } else {
        200
    };
    anyhow::ensure!(status == expected, "{} answered {status}", req.path);
    let rows = match req.count {
        Count::HtmlRows => {
            let rows = text.matches("<tr class=\"nhsuk-table__row\"").count();
            let heads = text.matches("<thead").count();
            (rows - heads.min(rows)).to_string()
        }
        Count::Lines => text.lines().count().saturating_sub(1).to_string(),
        Count::Json(member) => serde_json::from_str::<Value>(&text)?[member]
            .as_array()
            .map_or_else(|| "-".to_owned(), |a| a.len().to_string()),
    };
    Ok((rows, first, total))
}

struct Timed {
    page: String,
    params: String,
    rows: String,
    reps: usize,
    median: f64,
    p95: f64,
    max: f64,
    first_byte_median: f64,
}

async fn measure(
    b: &mut Browser,
    page: &str,
    params: &str,
    req: &Req,
    reps: usize,
) -> anyhow::Result<Timed> {
    let (_, _, first) = load(b, req)
        .await
        .with_context(|| format!("{page} ({params})"))?;
    let slow = first > Duration::from_secs(2);
    let reps = if slow { reps.min(5) } else { reps };
    if !slow {
        load(b, req).await?;
    }
    let mut totals = Vec::with_capacity(reps);
    let mut firsts = Vec::with_capacity(reps);
    let mut rows = String::new();
    for _ in 0..reps {
        let (r, first, total) = load(b, req).await?;
        rows = r;
        totals.push(total);
        firsts.push(first);
    }
    totals.sort();
    firsts.sort();
    let timed = Timed {
        page: page.to_owned(),
        params: params.to_owned(),
        rows,
        reps,
        median: percentile_ms(&totals, 0.5),
        p95: percentile_ms(&totals, 0.95),
        max: percentile_ms(&totals, 1.0),
        first_byte_median: percentile_ms(&firsts, 0.5),
    };
    println!(
        "  {:<28} {:<44} {:>6} {:>9.1} {:>9.1} {:>9.1}{}",
        timed.page,
        timed.params,
        timed.rows,
        timed.median,
        timed.p95,
        timed.max,
        if slow { "  (5 loads)" } else { "" }
    );
    Ok(timed)
}

fn date(us: i64) -> String {
    Timestamp::from_micros(us).to_rfc3339()
}

fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn time_pages(
    config: referral_gateway::config::Config,
    reps: usize,
    frequent_nhs: &[String],
) -> anyhow::Result<Vec<Timed>> {
    let staff = config.staff.clone().context("[staff] configured")?;
    let config_key = config.audit.signing_key.clone();
    let app = Application::build(config).await?;
    let store = app.store().clone();
    let base = format!(
        "https://localhost:{}",
        app.staff_addr().context("staff listener")?.port()
    );
    let handles = app.handles();
    // Entries a killed earlier run left unsigned would fail "verify now" (as they should);
    // sign the head now, as the running gateway's checkpointer does within its interval.
    referral_gateway::governance::checkpoints::Checkpointer::new(
        store.clone(),
        std::sync::Arc::new(GatewayKey::load(&config_key)?),
        1000,
        Duration::from_secs(300),
    )
    .checkpoint()
    .await?;
    let running = tokio::spawn(app.run_until_stopped());

    let mut auditor = Browser::new(&base)?;
    auditor.sign_in("auditor", "").await?;
    let mut manager = Browser::new(&base)?;
    manager.sign_in("service_manager", "coventry-cmht").await?;
    let token = |subject: &str,
                 roles: &[referral_gateway::staff_auth::tokens::Role],
                 agency: Option<&str>|
     -> anyhow::Result<String> {
        Ok(referral_gateway::staff_auth::tokens::mint_dev_token(
            &staff.dev_signing_key,
            staff.auth.policy(),
            &referral_gateway::staff_auth::tokens::DevTokenRequest {
                subject,
                roles,
                agency,
                lifetime: time::Duration::hours(2),
            },
        )?)
    };
    let mut api = Browser::new(&base)?;
    api.bearer = Some(token(
        "bench-auditor",
        &[referral_gateway::staff_auth::tokens::Role::Auditor],
        None,
    )?);

    let now = micros(time::OffsetDateTime::now_utc());
    let quarter = date(now - 91 * DAY);
    let year = date(now - 365 * DAY);
    let month_from = date(now - 60 * DAY);
    let month_to = date(now - 30 * DAY);
    let agency = "coventry-cmht";
    // A referral to show: one overdue at the agency (from the overdue list), and one the
    // repeat-referrals drill-down links to.
    let overdue_page = auditor
        .send(&Req::get(&format!("/console/overdue?agency={agency}")))
        .await?
        .text()
        .await?;
    let referral = overdue_page
        .split("/console/referrals/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("an overdue referral")?
        .to_owned();
    // The overdue list's 10th page (or its last), reached by following "Next".
    let mut deep_overdue = format!("/console/overdue?agency={agency}");
    let mut page_number = 1;
    for _ in 1..10 {
        let text = auditor.send(&Req::get(&deep_overdue)).await?.text().await?;
        let Some(next) = text
            .split("class=\"nhsuk-pagination__next\" href=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            break;
        };
        deep_overdue = next.replace("&amp;", "&");
        page_number += 1;
    }
    let (head, _) = store.audit_head().await?;
    let deep_cursor = format!("{}.{head}", head * 9 / 10);
    let audit_search = |fields: &[(&str, &str)]| {
        let mut form = vec![("csrf", "")];
        form.extend_from_slice(fields);
        Req::post("/console/audit", &form)
    };
    let repeats_year = auditor
        .send(&Req::get(&format!("/console/repeats?from={}", enc(&year))))
        .await?
        .text()
        .await?;
    let drill_down = repeats_year
        .split("href=\"/console/referrals/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("a referral in the repeat-referrals drill-down")?
        .to_owned();

    println!(
        "\n  {:<28} {:<44} {:>6} {:>9} {:>9} {:>9}",
        "page", "parameters", "rows", "median", "p95", "max"
    );
    let mut out = Vec::new();
    let overview = |q: &str| Req::get(&format!("/console/{q}"));
    let a = &mut auditor;
    out.push(measure(a, "overview", "30 days, all agencies", &overview(""), reps).await?);
    out.push(
        measure(
            a,
            "overview",
            "quarter, all agencies",
            &overview(&format!("?from={}", enc(&quarter))),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "overview",
            "year, all agencies",
            &overview(&format!("?from={}", enc(&year))),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "overview",
            "year, coventry-cmht",
            &overview(&format!("?from={}&agency={agency}", enc(&year))),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            &mut manager,
            "overview (manager)",
            "30 days, own agency",
            &overview(""),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "overdue",
            "coventry-cmht, page 1",
            &Req::get(&format!("/console/overdue?agency={agency}")),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "overdue",
            &format!("coventry-cmht, page {page_number}"),
            &Req::get(&deep_overdue),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            &mut manager,
            "overdue (manager)",
            "own agency, page 1",
            &Req::get("/console/overdue"),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "referral",
            "an overdue referral",
            &Req::get(&format!("/console/referrals/{referral}")),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit log",
            "form and chain state",
            &Req::get("/console/audit"),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "everything, page 1",
            &audit_search(&[]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "everything, page at 90%",
            &audit_search(&[("cursor", &deep_cursor)]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "a month",
            &audit_search(&[("from", &month_from), ("to", &month_to)]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "agency coventry-cmht",
            &audit_search(&[("agency", agency)]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "agency coventry-cmht, page at 90%",
            &audit_search(&[("agency", agency), ("cursor", &deep_cursor)]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "action family staff.*",
            &audit_search(&[("action", "staff.*")]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "action auth.*, a quarter",
            &audit_search(&[("action", "auth.*"), ("from", &quarter)]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "agency + family referral.*, a month",
            &audit_search(&[
                ("agency", agency),
                ("action", "referral.*"),
                ("from", &month_from),
                ("to", &month_to),
            ]),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "audit search",
            "one referral",
            &audit_search(&[("referral", &referral)]),
            reps,
        )
        .await?,
    );
    for (format, name) in [("csv", "CSV"), ("ndjson", "NDJSON")] {
        let t = measure(
            a,
            &format!("audit export {name}"),
            "a month",
            &Req::post(
                "/console/audit/export",
                &[
                    ("csrf", ""),
                    ("format", format),
                    ("from", &month_from),
                    ("to", &month_to),
                ],
            )
            .count(Count::Lines),
            reps,
        )
        .await?;
        println!(
            "  {:<28} {:<44} {:>6} {:>9.1}",
            format!("audit export {name}"),
            "  first byte (median)",
            "",
            t.first_byte_median
        );
        out.push(t);
    }
    out.push(
        measure(
            a,
            "verify now (starts it)",
            "whole chain, in the background",
            &Req::post("/console/audit/verify", &[("csrf", "")]),
            reps,
        )
        .await?,
    );
    // The background run itself: the audit page is polled until it shows the outcome.
    let started = Instant::now();
    loop {
        let text = a.send(&Req::get("/console/audit")).await?.text().await?;
        if text.contains("data-verified=\"true\"") {
            break;
        }
        if let Some(at) = text.find("data-verified=\"false\"") {
            let outcome: String = text[at..].chars().take(600).collect();
            anyhow::bail!("verify now did not verify: {outcome}");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "verify now did not finish within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "  {:<28} {:<44} {:>6} {:>9.1}",
        "verify now (background run)", "  until the audit page shows the outcome", "", took
    );
    out.push(
        measure(
            a,
            "subject access",
            "form",
            &Req::get("/console/subject-access"),
            reps,
        )
        .await?,
    );
    for (i, nhs) in frequent_nhs.iter().take(1).enumerate() {
        let _ = i;
        out.push(
            measure(
                a,
                "subject access",
                "most-referred person (NHS number)",
                &Req::post(
                    "/console/subject-access",
                    &[("csrf", ""), ("nhs_number", nhs)],
                ),
                reps,
            )
            .await?,
        );
    }
    out.push(
        measure(
            a,
            "agreements",
            "30 days",
            &Req::get("/console/agreements"),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "agreements",
            "year",
            &Req::get(&format!("/console/agreements?from={}", enc(&year))),
            reps,
        )
        .await?,
    );
    out.push(measure(a, "repeats", "30 days", &Req::get("/console/repeats"), reps).await?);
    out.push(
        measure(
            a,
            "repeats",
            "quarter",
            &Req::get(&format!("/console/repeats?from={}", enc(&quarter))),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "repeats",
            "year",
            &Req::get(&format!("/console/repeats?from={}", enc(&year))),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            a,
            "referral",
            "from the repeats drill-down",
            &Req::get(&format!("/console/referrals/{drill_down}")),
            reps,
        )
        .await?,
    );

    println!("\n  The staff API, for reference (bearer token):");
    let j = |path: String, member| Req::get(&path).count(Count::Json(member));
    out.push(
        measure(
            &mut api,
            "GET /v1/reports/sla",
            "30 days",
            &j("/v1/reports/sla".into(), "rows"),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            &mut api,
            "GET /v1/reports/sla",
            "year",
            &j(format!("/v1/reports/sla?from={}", enc(&year)), "rows"),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            &mut api,
            "GET /v1/referrals",
            "overdue, coventry-cmht",
            &j(
                format!("/v1/referrals?agency={agency}&overdue=true"),
                "items",
            ),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            &mut api,
            "GET /v1/referrals/{id}",
            "an overdue referral",
            &Req::get(&format!("/v1/referrals/{referral}")).count(Count::Json("timeline")),
            reps,
        )
        .await?,
    );
    out.push(
        measure(
            &mut api,
            "GET /v1/audit/events",
            "agency coventry-cmht",
            &j(format!("/v1/audit/events?agency={agency}"), "items"),
            reps,
        )
        .await?,
    );
    if let Some(nhs) = frequent_nhs.first() {
        let mut req = Req::get("/v1/audit/disclosures").count(Count::Json("items"));
        req.json = Some(json!({"nhs_number": nhs}));
        out.push(
            measure(
                &mut api,
                "POST /v1/audit/disclosures",
                "most-referred person",
                &req,
                reps,
            )
            .await?,
        );
    }
    out.push(
        measure(
            &mut api,
            "GET /v1/audit/export",
            "a month, NDJSON",
            &Req::get(&format!(
                "/v1/audit/export?format=ndjson&from={}&to={}",
                enc(&month_from),
                enc(&month_to)
            ))
            .count(Count::Lines),
            reps,
        )
        .await?,
    );

    for h in handles {
        h.stop(true).await;
    }
    let _ = running.await;
    store.close().await;
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (url, created) = match &args.reuse {
        Some(url) => (url.clone(), None),
        None => {
            let db = bench_support::BenchDatabase::create("postgres", &args.database_url).await?;
            (db.url.clone(), Some(db))
        }
    };
    let mut config = bench_support::config_with(
        &url,
        2,
        vec![("REFGW_STAFF_LISTEN", "127.0.0.1:0".to_owned())],
        &region_toml(),
    )?;
    // Pages only: no broker, no scanner writing in the background.
    config.relay.enabled = false;
    config.sla.scanner_enabled = false;
    let started = Instant::now();
    let frequent = if args.reuse.is_none() {
        let store = referral_gateway::store::Store::connect(&config.database).await?;
        store.migrate().await?;
        store.close().await;
        let now = micros(time::OffsetDateTime::now_utc());
        println!(
            "seeding {} referrals and {} audit entries into {url}",
            args.referrals, args.audit_entries
        );
        let world = build_world(&config, args.referrals, now)?;
        println!(
            "  generated {} referrals, {} people, in {:.1}s",
            world.referrals.len(),
            world.person_keys.len(),
            started.elapsed().as_secs_f64()
        );
        seed(&url, &config, &world, args.audit_entries).await?;
        println!(
            "seeded in {:.1}s ({:.1} min)",
            started.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64() / 60.0
        );
        let frequent = world.frequent_nhs.clone();
        if args.keep {
            std::fs::write(
                std::env::temp_dir().join("console_bench_frequent.txt"),
                frequent.join("\n"),
            )?;
        }
        frequent
    } else {
        std::fs::read_to_string(std::env::temp_dir().join("console_bench_frequent.txt"))?
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "timing pages ({} loads each after warm-up); load average {}",
        args.reps,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let result = time_pages(config, args.reps, &frequent).await;
    match result {
        Ok(rows) => {
            println!("\n| Page | Parameters | Rows shown | Median ms | p95 ms | Max ms |");
            println!("|---|---|---:|---:|---:|---:|");
            for t in &rows {
                println!(
                    "| {} | {} | {} | {:.0} | {:.0} | {:.0} |",
                    t.page, t.params, t.rows, t.median, t.p95, t.max
                );
                let _ = t.reps;
            }
        }
        Err(e) => eprintln!("timing failed: {e:#}"),
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    match created {
        Some(db) if args.keep => println!("kept the database: {}", db.url),
        Some(db) => db.drop().await?,
        None => {}
    }
    Ok(())
}
