//! Staff identities: bearer tokens from the organisation's identity provider checked
//! against its JWKS, roles and agency claims, development tokens (`tokens`), and the
//! fetching of the provider's keys (`jwks`).

pub mod jwks;
pub mod tokens;
