//! Keys and certificates: TLS for the listeners (`tls`), certificate issuing (`certs`),
//! Ed25519 signing of receipts and checkpoints (`signing`), payload encryption at rest
//! (`sealing`), and the development material that production refuses (`published`).

pub mod certs;
pub mod digest;
pub mod handshake;
pub mod published;
pub mod sealing;
pub mod signing;
pub mod tls;
