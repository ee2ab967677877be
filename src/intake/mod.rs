//! Intake: reading a request body (`json`), checking it against the schemas (`schema`),
//! and accepting a referral (`referrals`) or a lifecycle event on one (`events`).

pub mod events;
pub mod json;
pub mod referrals;
pub mod schema;
