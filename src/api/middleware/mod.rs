//! Middleware wrapped around every listener: request bodies (time and size bounds, the
//! drain before early answers) and correlation ids with the request's log span.

pub mod body;
pub mod correlation;
