//! End-to-end delivery benchmark, and the broker's own rate for comparison.
//!
//!     cargo run --release --example e2e_bench -- --clients 8 --requests 4000 --database sqlite
//!
//! 1. Starts the gateway in-process (shipped config, port 0, relay on, a throw-away broker
//!    namespace), submits the example CMHT referral with N concurrent mTLS clients and
//!    consumes the CMHT queue, timing each referral from its 202 to its arrival.
//! 2. Publishes the same payload straight to a quorum queue with confirms (persistent,
//!    pipelined in windows of the relay's batch size): the broker's ceiling on this machine.
//!
//! Prints both. Nothing is asserted: the numbers depend on the machine.

mod bench_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_support::{BenchDatabase, liaison_client, percentile_ms, root};
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use referral_gateway::delivery::topology::{Topology, connect_confirming};
use referral_gateway::startup::Application;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// sqlite or postgres
    #[arg(long, default_value = "sqlite")]
    database: String,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let namespace = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let db = BenchDatabase::create(&args.database, &args.postgres).await?;
    let config = bench_support::config(
        &db.url,
        args.workers,
        vec![
            ("REFGW_AMQP_URL", args.amqp.clone()),
            ("REFGW_AMQP_NAMESPACE", namespace.clone()),
        ],
    )?;
    let batch = config.relay.batch_size as usize;
    let topology = Topology::new(&namespace, &config.registry);
    let (admin_conn, admin) = connect_confirming(&args.amqp).await?;
    topology.declare(&admin).await?;

    // Consumer: arrival time per referral id.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer_channel = admin_conn.create_channel().await?;
    let mut consumer = consumer_channel
        .basic_consume(
            topology.referral_queue("coventry-cmht").into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let seen = arrivals.clone();
    let expected = args.requests / args.clients * args.clients;
    let consuming = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let mut seen = seen.lock().unwrap();
            seen.entry(id).or_insert_with(Instant::now);
            if seen.len() >= expected {
                break;
            }
        }
    });

    let app = Application::build(config).await?;
    let url = format!("https://localhost:{}/v1/referrals", app.addr().port());
    let handles = app.handles();
    tokio::spawn(app.run_until_stopped());
    let body = std::fs::read_to_string(root().join("docs/examples/referral-cmht.json"))?;
    let clients: Vec<_> = (0..args.clients).map(|_| liaison_client()).collect();
    for c in &clients {
        let _ = c
            .get(url.replace("/v1/referrals", "/healthz"))
            .send()
            .await?;
    }
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let per_client = args.requests / args.clients;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let (url, body, accepted) = (url.clone(), body.clone(), accepted.clone());
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let r = c
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("request");
                    let at = Instant::now();
                    assert_eq!(r.status(), 202);
                    let v: serde_json::Value = r.json().await.expect("receipt");
                    let id = v["referral_id"].as_str().unwrap_or_default().to_owned();
                    accepted.lock().unwrap().insert(id, at);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let submit_elapsed = started.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(120), consuming).await;
    let all_delivered = started.elapsed();
    let accepted = accepted.lock().unwrap().clone();
    let arrivals = arrivals.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = accepted
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|arr| arr.saturating_duration_since(*at))
        })
        .collect();
    latencies.sort();
    println!(
        "gateway ({}, {} clients): {} referrals accepted in {:.2}s = {:.0}/s; all on the queue after {:.2}s = {:.0}/s end to end; 202 -> queue p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} arrived)",
        args.database,
        args.clients,
        accepted.len(),
        submit_elapsed.as_secs_f64(),
        accepted.len() as f64 / submit_elapsed.as_secs_f64(),
        all_delivered.as_secs_f64(),
        arrivals.len() as f64 / all_delivered.as_secs_f64(),
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
        percentile_ms(&latencies, 1.0),
        latencies.len(),
        accepted.len(),
    );
    for h in handles {
        h.stop(true).await;
    }

    // Baseline: the broker alone, same payload, persistent, confirmed, quorum queue.
    let raw_queue = format!("{namespace}.raw");
    let mut qargs = FieldTable::default();
    qargs.insert(
        "x-queue-type".into(),
        referral_gateway::delivery::topology::string("quorum"),
    );
    admin
        .queue_declare(
            raw_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            qargs,
        )
        .await?;
    let props = lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.requests {
        let n = batch.min(args.requests - sent);
        let mut confirms = Vec::with_capacity(n);
        for _ in 0..n {
            confirms.push(
                admin
                    .basic_publish(
                        "".into(),
                        raw_queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        props.clone(),
                    )
                    .await?,
            );
        }
        for c in confirms {
            assert!(c.await?.is_ack());
        }
        sent += n;
    }
    let raw = started.elapsed();
    println!(
        "broker alone: {} confirmed persistent publishes to a quorum queue in {:.2}s = {:.0}/s (windows of {batch})",
        sent,
        raw.as_secs_f64(),
        sent as f64 / raw.as_secs_f64()
    );
    admin
        .queue_delete(raw_queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    topology.delete(&admin).await?;
    let _ = admin_conn.close(200, "bench done".into()).await;
    db.drop().await?;
    Ok(())
}
