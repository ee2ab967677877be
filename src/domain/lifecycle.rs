//! The referral state machine: which event may follow which status, and who may post it.
//!
//! ```text
//! received -> queued -> acknowledged -> accepted -> first_contact* -> closed
//!                    \-> accepted | declined | redirected   (a decision implies receipt)
//! any open status -> withdrawn (by the sender)
//! received | queued (never acknowledged in time) -> undelivered (by the SLA scanner)
//! ```
//! `declined`, `redirected`, `closed` and `withdrawn` are final. `follow_up` notes change
//! nothing and are allowed until the referral is final.

use std::fmt;
use std::str::FromStr;

use super::referral::{ReferralStatus, UnknownValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Acknowledged,
    Accepted,
    Declined,
    Redirected,
    FirstContact,
    Closed,
    FollowUp,
    Withdrawn,
}

/// Who may post an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Sender,
    Recipient,
}

impl EventType {
    pub const ALL: [Self; 8] = [
        Self::Acknowledged,
        Self::Accepted,
        Self::Declined,
        Self::Redirected,
        Self::FirstContact,
        Self::Closed,
        Self::FollowUp,
        Self::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledged => "acknowledged",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Redirected => "redirected",
            Self::FirstContact => "first_contact",
            Self::Closed => "closed",
            Self::FollowUp => "follow_up",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn posted_by(self) -> Party {
        match self {
            Self::FollowUp | Self::Withdrawn => Party::Sender,
            _ => Party::Recipient,
        }
    }
}

impl FromStr for EventType {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownValue)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a '{event}' event cannot follow status '{status}'{hint}")]
pub struct IllegalTransition {
    pub status: ReferralStatus,
    pub event: EventType,
    pub hint: &'static str,
}

impl ReferralStatus {
    /// Final statuses accept no further events.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Declined | Self::Redirected | Self::Closed | Self::Withdrawn
        )
    }

    fn awaiting_receipt(self) -> bool {
        matches!(
            self,
            Self::Received | Self::Queued | Self::Delivered | Self::Undelivered
        )
    }
}

/// The status after `event`, or why it may not happen now.
pub fn transition(
    status: ReferralStatus,
    event: EventType,
) -> Result<ReferralStatus, IllegalTransition> {
    use EventType as E;
    use ReferralStatus as S;
    let illegal = |hint| {
        Err(IllegalTransition {
            status,
            event,
            hint,
        })
    };
    if status.is_final() {
        return illegal(" (the referral is already final)");
    }
    match event {
        E::Acknowledged if status.awaiting_receipt() => Ok(S::Acknowledged),
        E::Acknowledged => illegal(" (it was already acknowledged)"),
        E::Accepted | E::Declined | E::Redirected
            if status.awaiting_receipt() || status == S::Acknowledged =>
        {
            Ok(match event {
                E::Accepted => S::Accepted,
                E::Declined => S::Declined,
                _ => S::Redirected,
            })
        }
        E::Accepted | E::Declined | E::Redirected => illegal(" (a decision was already made)"),
        E::FirstContact if matches!(status, S::Accepted | S::FirstContact) => Ok(S::FirstContact),
        E::FirstContact => illegal(" (accept the referral first)"),
        E::Closed if matches!(status, S::Accepted | S::FirstContact) => Ok(S::Closed),
        E::Closed => illegal(" (only an accepted referral can be closed; decline it instead)"),
        E::FollowUp => Ok(status),
        E::Withdrawn => Ok(S::Withdrawn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType as E;
    use ReferralStatus as S;

    #[test]
    fn the_happy_path() {
        let mut s = S::Queued;
        for (e, expect) in [
            (E::Acknowledged, S::Acknowledged),
            (E::FollowUp, S::Acknowledged),
            (E::Accepted, S::Accepted),
            (E::FirstContact, S::FirstContact),
            (E::FirstContact, S::FirstContact),
            (E::Closed, S::Closed),
        ] {
            s = transition(s, e).unwrap();
            assert_eq!(s, expect);
        }
    }

    #[test]
    fn illegal_transitions() {
        assert!(transition(S::Acknowledged, E::FirstContact).is_err());
        assert!(transition(S::Queued, E::Closed).is_err());
        assert!(transition(S::Acknowledged, E::Acknowledged).is_err());
        assert!(transition(S::Accepted, E::Declined).is_err());
        for final_status in [S::Closed, S::Declined, S::Redirected, S::Withdrawn] {
            for e in EventType::ALL {
                assert!(
                    transition(final_status, e).is_err(),
                    "{e} after {final_status}"
                );
            }
        }
    }

    #[test]
    fn decisions_imply_receipt_and_late_acknowledgement_is_allowed() {
        assert_eq!(transition(S::Queued, E::Accepted).unwrap(), S::Accepted);
        assert_eq!(transition(S::Received, E::Declined).unwrap(), S::Declined);
        assert_eq!(
            transition(S::Undelivered, E::Acknowledged).unwrap(),
            S::Acknowledged
        );
    }

    #[test]
    fn withdrawal_until_final() {
        assert_eq!(
            transition(S::FirstContact, E::Withdrawn).unwrap(),
            S::Withdrawn
        );
        assert!(transition(S::Closed, E::Withdrawn).is_err());
    }

    #[test]
    fn who_posts_what() {
        assert_eq!(E::Withdrawn.posted_by(), Party::Sender);
        assert_eq!(E::FollowUp.posted_by(), Party::Sender);
        assert_eq!(E::Accepted.posted_by(), Party::Recipient);
    }
}
