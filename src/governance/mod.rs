//! Governance: who a disclosure was about (`person_keys`), signing the audit chain head
//! (`checkpoints`), proving the log was not altered (`verify`), and exporting it
//! (`export`), and counting repeat referrals (`repeats`). The log's rows are written by
//! `store`, in the transaction of what they record.

pub mod checkpoints;
pub mod export;
pub mod person_keys;
pub mod repeats;
pub mod verify;
