//! NHS numbers: ten digits whose last digit is a modulus-11 check digit.
//!
//! Ten identical digits (`0000000000`, `9999999999`, ...) all pass modulus 11, and
//! systems use them as "unknown" placeholders; they are refused, so that different people
//! recorded with one are never taken for the same person (person keys in the audit log).
//! NHS England's test range (`999 000 0000` to `999 999 9999`, apart from `9999999999`)
//! is accepted: test and training systems use it.

use std::fmt;

/// A ten-digit NHS number that passed the modulus-11 check. Spaces and hyphens in the
/// input (`943 476 5919`, `943-476-5919`) are accepted and dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct NhsNumber(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number has exactly ten digits")]
    WrongLength,
    #[error("the NHS number's check digit does not match (modulus 11)")]
    BadCheckDigit,
    #[error("the NHS number is a placeholder (ten identical digits), not a person's number")]
    Placeholder,
}

impl NhsNumber {
    pub fn parse(input: &str) -> Result<Self, NhsNumberError> {
        let mut digits = Vec::with_capacity(10);
        for c in input.chars() {
            match c {
                '0'..='9' => digits.push(c as u8 - b'0'),
                ' ' | '-' => {}
                _ => return Err(NhsNumberError::WrongLength),
            }
        }
        if digits.len() != 10 {
            return Err(NhsNumberError::WrongLength);
        }
        let weighted: u32 = digits[..9]
            .iter()
            .zip((2..=10u32).rev())
            .map(|(d, w)| u32::from(*d) * w)
            .sum();
        let check = match 11 - weighted % 11 {
            11 => 0,
            10 => return Err(NhsNumberError::BadCheckDigit),
            c => c,
        };
        if check != u32::from(digits[9]) {
            return Err(NhsNumberError::BadCheckDigit);
        }
        if digits.iter().all(|d| *d == digits[0]) {
            return Err(NhsNumberError::Placeholder);
        }
        Ok(Self(digits.iter().map(|d| char::from(b'0' + d)).collect()))
    }

    /// The ten digits with no separators.
    pub fn as_digits(&self) -> &str {
        &self.0
    }
}

/// Never prints the number: NHS numbers are personal data and must not reach logs.
impl fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_numbers_with_or_without_separators() {
        for n in ["9434765919", "943 476 5919", "943-476-5919", "4010232137"] {
            assert!(NhsNumber::parse(n).is_ok(), "{n}");
        }
        assert_eq!(
            NhsNumber::parse("943 476 5919").unwrap().as_digits(),
            "9434765919"
        );
    }

    #[test]
    fn rejects_bad_check_digit_and_length() {
        assert_eq!(
            NhsNumber::parse("9434765918"),
            Err(NhsNumberError::BadCheckDigit)
        );
        assert_eq!(
            NhsNumber::parse("943476591"),
            Err(NhsNumberError::WrongLength)
        );
        assert_eq!(
            NhsNumber::parse("94347659190"),
            Err(NhsNumberError::WrongLength)
        );
        assert_eq!(
            NhsNumber::parse("94347659x9"),
            Err(NhsNumberError::WrongLength)
        );
    }

    #[test]
    fn rejects_numbers_whose_check_would_be_ten() {
        // weights 10..2 over 000000001 give 2; 11 - 2 = 9; find a prefix with remainder 1:
        // 1000000000 prefix "100000000": 1*10 = 10, 11 - 10 = 1 -> valid check 1.
        assert!(NhsNumber::parse("1000000001").is_ok());
        // "000000006": 6*2 = 12, 12 % 11 = 1, 11 - 1 = 10 -> never valid.
        assert_eq!(
            NhsNumber::parse("0000000060"),
            Err(NhsNumberError::BadCheckDigit)
        );
    }

    #[test]
    fn refuses_placeholders_of_one_repeated_digit() {
        // Every number of ten identical digits passes modulus 11 (the weights sum to 54,
        // so the check digit is the digit itself), yet none names a person.
        for d in '0'..='9' {
            let n: String = std::iter::repeat_n(d, 10).collect();
            assert_eq!(
                NhsNumber::parse(&n),
                Err(NhsNumberError::Placeholder),
                "{n}"
            );
        }
        assert_eq!(
            NhsNumber::parse("000 000 0000"),
            Err(NhsNumberError::Placeholder)
        );
        // The 999 test range and the usual example numbers stay valid.
        for n in ["9990000018", "943 476 5919", "450 557 7104"] {
            assert!(NhsNumber::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn debug_never_shows_digits() {
        let n = NhsNumber::parse("9434765919").unwrap();
        assert!(!format!("{n:?}").contains("943"));
    }
}
