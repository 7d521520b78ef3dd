//! The international numbering plan (libphonenumber's metadata, via the `phonenumber` crate):
//! is a number valid, whose country is it, what kind of line.

use phonenumber::{Mode, Type};

/// What the numbering plan says of a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInfo {
    pub valid: bool,
    /// ISO 3166-1 alpha-2 region, when known.
    pub country: Option<String>,
    pub country_code: Option<u16>,
    /// `fixed_line`, `mobile`, `fixed_line_or_mobile`, `toll_free`, … or `unknown`.
    pub kind: &'static str,
    /// The carrier the number was allocated to, when the metadata knows it.
    pub carrier: Option<String>,
    /// `+` and the digits, when the number parses.
    pub e164: Option<String>,
}

fn kind(t: Type) -> &'static str {
    match t {
        Type::FixedLine => "fixed_line",
        Type::Mobile => "mobile",
        Type::FixedLineOrMobile => "fixed_line_or_mobile",
        Type::TollFree => "toll_free",
        Type::PremiumRate => "premium_rate",
        Type::SharedCost => "shared_cost",
        Type::PersonalNumber => "personal_number",
        Type::Voip => "voip",
        Type::Pager => "pager",
        Type::Uan => "uan",
        Type::Emergency => "emergency",
        Type::Voicemail => "voicemail",
        Type::ShortCode => "short_code",
        Type::StandardRate => "standard_rate",
        Type::Carrier => "carrier",
        Type::NoInternational => "no_international",
        Type::Unknown => "unknown",
    }
}

/// Looks up an E.164 number (digits, country code first).
pub fn lookup(digits: &str) -> PlanInfo {
    match phonenumber::parse(None, format!("+{digits}")) {
        Err(_) => PlanInfo {
            valid: false,
            country: None,
            country_code: None,
            kind: "unknown",
            carrier: None,
            e164: None,
        },
        Ok(number) => PlanInfo {
            valid: number.is_valid(),
            country: number.country().id().map(|id| id.as_ref().to_owned()),
            country_code: Some(number.country().code()),
            kind: kind(number.number_type(&phonenumber::metadata::DATABASE)),
            carrier: number.carrier().map(|c| c.to_string()),
            e164: Some(number.format().mode(Mode::E164).to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_and_us_numbers() {
        let uk = lookup("447400123456");
        assert!(uk.valid);
        assert_eq!(
            (uk.country.as_deref(), uk.country_code, uk.kind),
            (Some("GB"), Some(44), "mobile")
        );
        assert_eq!(uk.e164.as_deref(), Some("+447400123456"));
        let us = lookup("12015550123");
        assert_eq!(us.country_code, Some(1));
        let toll_free = lookup("18002345678");
        assert_eq!(toll_free.kind, "toll_free");
        assert!(!lookup("999").valid);
    }
}
