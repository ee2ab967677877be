//! NHS numbers: ten digits whose last digit is a modulus-11 check digit.

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
    fn debug_never_shows_digits() {
        let n = NhsNumber::parse("9434765919").unwrap();
        assert!(!format!("{n:?}").contains("943"));
    }
}
