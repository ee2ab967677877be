//! Audit-log benchmark: appends N entries (signing a checkpoint every 1,000), then times
//! `audit verify` over the whole chain.
//!
//!     cargo run --release --example audit_bench -- --entries 10000 --database sqlite
//!
//! Prints the append rate and the verification time; asserts nothing.

mod bench_support;

use std::sync::Arc;
use std::time::Instant;

use bench_support::{BenchDatabase, root};
use clap::Parser;
use referral_gateway::audit::Checkpointer;
use referral_gateway::signing::GatewayKey;
use referral_gateway::store::{AuditRecord, Store};

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
        let mut record = AuditRecord::new("agency:coventry-liaison", "referral.submitted")
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
    let verified = referral_gateway::audit::verify(&store, &[key.public().clone()]).await?;
    println!(
        "audit verify ({}): {} entries, {} checkpoints in {:.3}s",
        args.database,
        verified.entries,
        verified.checkpoints,
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    db.drop().await
}
