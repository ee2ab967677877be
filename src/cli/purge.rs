//! `purge`: delete delivered payloads past retention.

use std::path::Path;
use std::process::ExitCode;

use referral_gateway::domain::Timestamp;
use referral_gateway::store::Store;

use super::load_config;

pub fn run(config_path: &Path, older_than: Option<u32>) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let days = older_than.unwrap_or(config.storage.retention_days);
    let most = referral_gateway::config::MAX_RETENTION_DAYS;
    if !(1..=most).contains(&days) {
        anyhow::bail!("--older-than must be from 1 to {most} days");
    }
    let now = time::OffsetDateTime::now_utc();
    let cutoff = now
        .checked_sub(time::Duration::days(i64::from(days)))
        .ok_or_else(|| anyhow::anyhow!("--older-than {days} reaches before the year -9999"))?;
    let purged = actix_web::rt::System::new().block_on(async move {
        let store = Store::open(&config).await?;
        store.migrate_if_needed().await?;
        anyhow::Ok(
            store
                .purge_payloads(Timestamp::from(cutoff), Timestamp::from(now))
                .await?,
        )
    })?;
    println!(
        "purged {purged} referral payload(s) received more than {days} day(s) ago, and their events' free text"
    );
    Ok(ExitCode::SUCCESS)
}
