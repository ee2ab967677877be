//! Governance: the hash-chained disclosure log with its person keys, signed checkpoints
//! and verification (`audit_log`), and its export formats (`export`).

pub mod audit_log;
pub mod export;
