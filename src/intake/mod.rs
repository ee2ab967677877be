//! Intake: reading a request body (`json`), checking it against the schemas (`schema`),
//! withholding what an agreement does not cover (`categories`),
//! and accepting a referral (`referrals`) or a lifecycle event on one (`events`).

mod categories;
pub mod events;
pub mod json;
pub mod referrals;
pub mod schema;
