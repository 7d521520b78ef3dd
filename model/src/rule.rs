//! A rate-card rule: the price of every number that starts with its prefix.

use crate::billing::RuleBilling;
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;
use thiserror::Error;

/// Whether calls to a rule's prefix may be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleStatus {
    #[default]
    Active,
    /// Calls are refused; a query answers with the status and no cost.
    Blocked,
}

impl RuleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Blocked => "Blocked",
        }
    }

    /// Parses `Active`/`Blocked`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("active") {
            Some(Self::Active)
        } else if s.eq_ignore_ascii_case("blocked") {
            Some(Self::Blocked)
        } else {
            None
        }
    }
}

/// One rule. The prefix is the key it is stored under and is not repeated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The destination's name (e.g. "UK Landline"); shared between rules with the same name.
    pub name: Arc<str>,
    /// Per minute, non-negative.
    pub rate: Decimal,
    /// Charged once per billed call, non-negative.
    pub connect_fee: Decimal,
    /// Minimum charged duration, seconds.
    pub mcd: u32,
    /// Billing increment, seconds, ≥ 1.
    pub pulse: u32,
    /// Calls this short or shorter are free, seconds.
    pub grace: u32,
    /// US interstate rate, when the rule has one.
    pub rate_inter: Option<Decimal>,
    /// US intrastate rate, when the rule has one.
    pub rate_intra: Option<Decimal>,
    pub status: RuleStatus,
}

impl Rule {
    /// The default increment of a new rule, seconds (`mcd` and `pulse`).
    pub const DEFAULT_INCREMENT: u32 = 60;

    /// An active rule at `rate` per minute, billed 60/60, no fee, no grace, no US rates.
    pub fn new(name: Arc<str>, rate: Decimal) -> Self {
        Self {
            name,
            rate,
            connect_fee: Decimal::ZERO,
            mcd: Self::DEFAULT_INCREMENT,
            pulse: Self::DEFAULT_INCREMENT,
            grace: 0,
            rate_inter: None,
            rate_intra: None,
            status: RuleStatus::Active,
        }
    }

    /// The billing parameters at `rate` (the rule's own, or its inter/intra rate).
    pub fn billing(&self, rate: Decimal) -> RuleBilling {
        RuleBilling {
            rate,
            connect_fee: self.connect_fee,
            mcd: self.mcd,
            pulse: self.pulse,
            grace: self.grace,
        }
    }

    /// True when two rules price calls identically (names aside).
    pub fn same_price(&self, other: &Rule) -> bool {
        self.rate == other.rate
            && self.connect_fee == other.connect_fee
            && self.mcd == other.mcd
            && self.pulse == other.pulse
            && self.grace == other.grace
            && self.rate_inter == other.rate_inter
            && self.rate_intra == other.rate_intra
            && self.status == other.status
    }

    /// The compact scalar a rule is stored as in a shard document: a version tag, then the
    /// fields separated by the ASCII unit separator (names may not contain control characters).
    /// Version 1: `r1 name rate connect_fee mcd pulse grace rate_inter rate_intra status`.
    pub fn encode(&self) -> String {
        let opt = |d: Option<Decimal>| d.map(|v| v.to_string()).unwrap_or_default();
        [
            ENCODING_V1,
            &self.name,
            &self.rate.to_string(),
            &self.connect_fee.to_string(),
            &self.mcd.to_string(),
            &self.pulse.to_string(),
            &self.grace.to_string(),
            &opt(self.rate_inter),
            &opt(self.rate_intra),
            self.status.as_str(),
        ]
        .join(SEP)
    }

    /// Reads what [`Rule::encode`] wrote.
    pub fn decode(encoded: &str) -> Result<Rule, DecodeError> {
        let mut fields = encoded.split(SEP);
        let mut next = || fields.next().ok_or(DecodeError::Truncated);
        if next()? != ENCODING_V1 {
            return Err(DecodeError::UnknownVersion);
        }
        let name: Arc<str> = Arc::from(next()?);
        let decimal = |s: &str| Decimal::from_str(s).map_err(|_| DecodeError::BadField);
        let opt_decimal = |s: &str| {
            if s.is_empty() {
                Ok(None)
            } else {
                decimal(s).map(Some)
            }
        };
        let int = |s: &str| s.parse::<u32>().map_err(|_| DecodeError::BadField);
        let rule = Rule {
            name,
            rate: decimal(next()?)?,
            connect_fee: decimal(next()?)?,
            mcd: int(next()?)?,
            pulse: int(next()?)?,
            grace: int(next()?)?,
            rate_inter: opt_decimal(next()?)?,
            rate_intra: opt_decimal(next()?)?,
            status: RuleStatus::parse(next()?).ok_or(DecodeError::BadField)?,
        };
        rule.check().map_err(|_| DecodeError::OutOfBounds)?;
        Ok(rule)
    }

    /// The bounds every stored rule keeps, whoever wrote it (a deck, an edit, a peer): money
    /// 0–[`MAX_MONEY`](crate::deck::MAX_MONEY) with at most
    /// [`MAX_MONEY_SCALE`](crate::deck::MAX_MONEY_SCALE) places, so billing can never overflow;
    /// durations 0–86400 s and a pulse of at least 1; a printable name.
    pub fn check(&self) -> Result<(), String> {
        let money = |v: Decimal| {
            !v.is_sign_negative()
                && v <= Decimal::from(crate::deck::MAX_MONEY)
                && v.scale() <= crate::deck::MAX_MONEY_SCALE
        };
        let moneys = [
            Some(self.rate),
            Some(self.connect_fee),
            self.rate_inter,
            self.rate_intra,
        ];
        if !moneys.into_iter().flatten().all(money) {
            return Err("a rate or fee is out of range".into());
        }
        if self.pulse == 0
            || [self.mcd, self.pulse, self.grace]
                .iter()
                .any(|s| *s > 86_400)
        {
            return Err("mcd, pulse or grace out of range".into());
        }
        crate::deck::check_name(&self.name)
    }
}

const ENCODING_V1: &str = "r1";
const SEP: &str = "\u{1f}";

/// A stored rule that cannot be read back (corrupt or from a newer version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("stored rule is truncated")]
    Truncated,
    #[error("stored rule has an unknown encoding version")]
    UnknownVersion,
    #[error("stored rule is out of the bounds every rule keeps")]
    OutOfBounds,
    #[error("stored rule has a malformed field")]
    BadField,
}

#[cfg(test)]
pub(crate) fn sample(name: &str, rate: &str) -> Rule {
    Rule::new(Arc::from(name), Decimal::from_str(rate).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let mut rule = sample("UK | Landline", "0.0120");
        rule.rate_intra = Some(Decimal::from_str("0.001").unwrap());
        rule.status = RuleStatus::Blocked;
        let back = Rule::decode(&rule.encode()).unwrap();
        assert_eq!(back, rule);
        assert_eq!(back.rate.to_string(), "0.0120", "scale is kept");
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(Rule::decode(""), Err(DecodeError::UnknownVersion));
        assert_eq!(Rule::decode("r1\u{1f}x"), Err(DecodeError::Truncated));
        assert_eq!(Rule::decode("r9\u{1f}x"), Err(DecodeError::UnknownVersion));
    }

    #[test]
    fn decode_refuses_a_peers_rule_out_of_bounds() {
        for (rate, pulse) in [
            ("79228162514264337593543950335", 60),
            ("0.01", 0),
            ("-1", 60),
        ] {
            let mut rule = sample("x", "0.01");
            rule.pulse = pulse;
            let encoded = rule.encode().replace("0.01", rate);
            assert_eq!(
                Rule::decode(&encoded),
                Err(DecodeError::OutOfBounds),
                "{rate} {pulse}"
            );
        }
    }
}
