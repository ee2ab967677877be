//! referral-gateway: a secure inter-agency referral messaging gateway for liaison and
//! diversion services. See docs/architecture.md for how the pieces fit.

pub mod amqp;
pub mod api;
pub mod audit;
pub mod certs;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod export;
pub mod intake;
pub mod jwks;
pub mod metrics;
pub mod ops;
pub mod published;
pub mod relay;
pub mod report;
pub mod schema;
pub mod sealing;
pub mod signing;
pub mod sla;
pub mod staff;
pub mod startup;
pub mod store;
pub mod strict_json;
pub mod telemetry;
pub mod tls;
