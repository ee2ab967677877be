//! Audit-log benchmark: appends N entries (signing a checkpoint every 1,000), then times
//! `audit verify` over the whole chain.
//!
//!     cargo run --release --example audit_bench -- --entries 10000 --database sqlite
//!
//! Prints the append rate, the verification time, the time to read the whole log in the
//! export's 1,000-entry pages, and the time of a subject-access query; asserts nothing.

mod bench_support;

use std::sync::Arc;
use std::time::Instant;

use bench_support::{BenchDatabase, root};
use clap::Parser;
use referral_gateway::domain::audit::AuditAction;
use referral_gateway::governance::checkpoints::Checkpointer;
use referral_gateway::security::signing::GatewayKey;
use referral_gateway::store::{AuditQuery, AuditRecord, Store};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    entries: usize,
    #[arg(long, default_value = "sqlite")]
    database: String,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = BenchDatabase::create(&args.database, &args.postgres).await?;
    let config = bench_support::config(&db.url, 1, Vec::new())?;
    let store = Store::connect(&config.database).await?;
    store.migrate().await?;
    let key = Arc::new(GatewayKey::load(
        &root().join("certs-example/gateway-signing.key"),
    )?);
    let checkpointer = Checkpointer::new(
        store.clone(),
        key.clone(),
        1000,
        std::time::Duration::from_secs(300),
    );

    let started = Instant::now();
    for i in 0..args.entries {
        let mut record =
            AuditRecord::new("agency:coventry-liaison", AuditAction::ReferralSubmitted)
                .referral(uuid::Uuid::now_v7())
                .detail("bench");
        record.recipient = Some("coventry-cmht".into());
        record.person_key = Some(format!("{:064x}", i));
        record.categories = vec!["person".into(), "risk".into(), "needs".into()];
        store
            .audit(&record, time::OffsetDateTime::now_utc())
            .await?;
        if (i + 1) % 1000 == 0 {
            checkpointer.checkpoint().await?;
        }
    }
    let appended = started.elapsed();
    println!(
        "appended {} entries in {:.2}s ({:.0}/s, one transaction each)",
        args.entries,
        appended.as_secs_f64(),
        args.entries as f64 / appended.as_secs_f64()
    );
    let started = Instant::now();
    let verified =
        referral_gateway::governance::verify::verify(&store, &[key.public().clone()]).await?;
    println!(
        "audit verify ({}): {} entries, {} checkpoints in {:.3}s",
        args.database,
        verified.entries,
        verified.checkpoints,
        started.elapsed().as_secs_f64()
    );
    if store.backend() == referral_gateway::store::Backend::Postgres {
        // What autovacuum does soon after a bulk load; without statistics the planner
        // takes the fresh table for an empty one.
        sqlx::query("ANALYZE audit_log")
            .execute(store.pool())
            .await?;
    }
    let started = Instant::now();
    let (mut after, mut read) = (0, 0);
    loop {
        let page = store
            .search_audit(&AuditQuery::everything(after, i64::MAX, 1000))
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = last.seq;
        read += page.len();
    }
    println!(
        "export read ({}): {read} entries in 1,000-entry pages in {:.3}s",
        args.database,
        started.elapsed().as_secs_f64()
    );
    let person = format!("{:064x}", args.entries / 2);
    let started = Instant::now();
    let rounds = 100;
    let mut found = 0;
    for _ in 0..rounds {
        found = store
            .audit_about_person(std::slice::from_ref(&person), 0, i64::MAX, 1000)
            .await?
            .len();
    }
    println!(
        "subject access query ({}): {found} entr(y/ies) found among {}, {:.2} ms per query",
        args.database,
        args.entries,
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
    );
    store.close().await;
    db.drop().await
}
