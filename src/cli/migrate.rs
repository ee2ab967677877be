//! `migrate`: apply the database migrations, and grant a runtime role.

use std::path::Path;
use std::process::ExitCode;

use referral_gateway::store::Store;

use super::load_config;

pub fn run(config_path: &Path, grant_to: Option<String>) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    if grant_to.is_some()
        && !referral_gateway::store::Backend::of_url(&config.database.url).has_roles()
    {
        anyhow::bail!(
            "--grant-to needs PostgreSQL: SQLite has no roles (whoever can write the file can rewrite the log; docs/governance.md)"
        );
    }
    actix_web::rt::System::new().block_on(async move {
            let store = Store::connect(&config.database).await?;
            store.migrate().await?;
            println!("migrations applied ({:?})", store.backend());
            if let Some(role) = grant_to {
                store.grant_runtime_role(&role).await?;
                let powers = store.audit_powers_of(&role).await?;
                if !powers.is_empty() {
                    anyhow::bail!(
                        "role {role} can still alter the audit log ({}): it must not own the tables, be a superuser or be a member of the owner role (e.g. as a superuser: REASSIGN OWNED BY {role} TO <owner role>, then migrate again)",
                        powers.join("; ")
                    );
                }
                println!(
                    "granted {role}: SELECT and INSERT on audit_log and audit_checkpoints, SELECT and UPDATE on audit_head, DML on the other tables"
                );
            }
            store.close().await;
            anyhow::Ok(())
        })?;
    Ok(ExitCode::SUCCESS)
}
