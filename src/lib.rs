//! referral-gateway: a secure inter-agency referral messaging gateway for liaison and
//! diversion services. The folders follow one referral (docs/architecture.md):
//! `api` receives it, `intake` checks and accepts it, `store` keeps it, `delivery`
//! publishes it, `sla` watches its clocks, `governance` records and proves every
//! disclosure; `security` and `staff_auth` hold the keys and identities all of them use.

pub mod api;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod governance;
pub mod intake;
pub mod metrics;
pub mod reload;
pub mod runtime;
pub mod security;
pub mod sla;
pub mod staff_auth;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
