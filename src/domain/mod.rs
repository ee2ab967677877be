//! Pure domain types: identifiers, agencies, referral status. No I/O here.

pub mod agency;
pub mod audit;
pub mod calendar;
pub mod ids;
pub mod lifecycle;
pub mod messages;
pub mod nhs_number;
pub mod referral;
pub mod sharing;
pub mod sla;
pub mod timestamp;

pub use agency::{
    Agency, AgencyRegistry, AgencyRole, CertificateIdentity, RoutingError, RoutingKey,
};
pub use ids::{AgencyId, Area, IdError, ReferralId, ServiceType};
pub use lifecycle::{EventType, IllegalTransition, Party, transition};
pub use nhs_number::NhsNumber;
pub use referral::{Destination, Priority, ReferralStatus, ValidatedReferral};
pub use timestamp::Timestamp;
