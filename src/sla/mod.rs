//! SLA clocks after acceptance: the scanner that warns, breaches and escalates
//! (`scanner`), and the compliance report (`report`). The rules themselves are pure, in
//! `domain::sla`.

pub mod report;
pub mod scanner;
