//! Delivery: the RabbitMQ topology (`topology`), the outbox relay that publishes with
//! publisher confirms (`relay`), and the operator's view of the backlog and dead letters
//! (`inspect`).

pub mod definitions;
pub mod inspect;
pub mod relay;
pub mod topology;
