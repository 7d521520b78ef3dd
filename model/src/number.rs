//! Number normalisation (API.md §1): every number the API reads becomes bare E.164 digits.

use thiserror::Error;

/// The longest number accepted, in digits (E.164 allows 15; a little slack for tech prefixes).
pub const MAX_DIGITS: usize = 20;

/// Why a string is not a number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NumberError {
    #[error("'{0}' is not a phone number: only digits, '+', spaces, dashes, dots and brackets are allowed")]
    BadCharacter(String),
    #[error("'{0}' is not a phone number: it has no digits")]
    Empty(String),
    #[error("'{0}' is not a phone number: more than {MAX_DIGITS} digits")]
    TooLong(String),
}

/// Strips a leading `+`, spaces, dashes, dots and brackets, then a leading `00` international
/// prefix, and returns the digits. Anything else that is not a digit is an error.
pub fn normalise(input: &str) -> Result<String, NumberError> {
    let trimmed = input.trim();
    let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(body.len());
    for c in body.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(NumberError::BadCharacter(input.to_owned())),
        }
    }
    let digits = match digits.strip_prefix("00") {
        Some(rest) => rest.to_owned(),
        None => digits,
    };
    if digits.is_empty() {
        return Err(NumberError::Empty(input.to_owned()));
    }
    if digits.len() > MAX_DIGITS {
        return Err(NumberError::TooLong(input.to_owned()));
    }
    Ok(digits)
}

/// True when `s` is a non-empty string of ASCII digits no longer than [`MAX_DIGITS`]: the
/// shape of a stored prefix.
pub fn is_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_DIGITS && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_formatting_and_international_prefix() {
        assert_eq!(normalise("+44 (0) 1234-567.890").unwrap(), "4401234567890");
        assert_eq!(normalise("0044 1234 567890").unwrap(), "441234567890");
        assert_eq!(normalise("441234567890").unwrap(), "441234567890");
        assert_eq!(normalise(" +1 (212) 555-0100 ").unwrap(), "12125550100");
    }

    #[test]
    fn rejects_other_characters() {
        assert!(matches!(
            normalise("44abc"),
            Err(NumberError::BadCharacter(_))
        ));
        assert!(matches!(
            normalise("4412*"),
            Err(NumberError::BadCharacter(_))
        ));
        assert!(matches!(
            normalise("++44"),
            Err(NumberError::BadCharacter(_))
        ));
        assert!(matches!(normalise("+ -"), Err(NumberError::Empty(_))));
        assert!(matches!(normalise("00"), Err(NumberError::Empty(_))));
        assert!(matches!(
            normalise(&"1".repeat(21)),
            Err(NumberError::TooLong(_))
        ));
    }
}
