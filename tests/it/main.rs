//! The integration tests, in one binary: each module was once a test binary of its own,
//! and every one of them linked actix, sqlx, lapin and reqwest (linking was most of a
//! test build). Run one area with `cargo test --test it referrals::`.

#[macro_use]
mod common;

mod audit;
mod broker_users;
mod cli;
mod commit;
mod console;
mod corpus;
mod delivery;
mod deploy;
mod docs;
mod faults;
mod handshake;
mod lifecycle;
mod openapi;
mod referrals;
mod reload;
mod sharing;
mod sla;
mod staff;
mod tls;
