//! The one billing formula (API.md §3), in exact decimal arithmetic.
//!
//! A call's `duration` (seconds, fractional allowed) is first rounded to whole seconds with the
//! card's duration rounding, then billed in increments: nothing at or under `grace`, `mcd`
//! (minimum charged duration) up to `mcd`, then `pulse`-second steps. The cost is the connect fee
//! (only when something is billed) plus `billed / 60 × rate`, rounded once, at the end, to the
//! card's precision with its rounding method.

use rust_decimal::{Decimal, RoundingStrategy};

/// How a decimal is rounded to a fixed number of places (or to whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Away from zero: any remainder rounds up (the default).
    #[default]
    Up,
    /// Towards zero: the remainder is dropped.
    Down,
    /// To nearest, a tie away from zero.
    HalfUp,
    /// To nearest, a tie towards zero.
    HalfDown,
}

impl Rounding {
    pub const ALL: [Rounding; 4] = [Self::Up, Self::Down, Self::HalfUp, Self::HalfDown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::HalfUp => "half_up",
            Self::HalfDown => "half_down",
        }
    }

    /// Parses the API spelling; IME's `nearest` is read as `half_up`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Self::Up),
            "down" => Some(Self::Down),
            "half_up" | "nearest" => Some(Self::HalfUp),
            "half_down" => Some(Self::HalfDown),
            _ => None,
        }
    }

    fn strategy(self) -> RoundingStrategy {
        match self {
            Self::Up => RoundingStrategy::AwayFromZero,
            Self::Down => RoundingStrategy::ToZero,
            Self::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Self::HalfDown => RoundingStrategy::MidpointTowardZero,
        }
    }

    /// Rounds `value` to `places` decimal places.
    pub fn round(self, value: Decimal, places: u32) -> Decimal {
        value.round_dp_with_strategy(places, self.strategy())
    }
}

/// The largest `precision` a card may have.
pub const MAX_PRECISION: u32 = 10;

/// The card-level settings the formula needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardBilling {
    /// Decimal places of a cost, 0..=[`MAX_PRECISION`].
    pub precision: u32,
    /// How a cost is rounded to `precision`.
    pub rounding: Rounding,
    /// How fractional seconds are rounded to whole seconds.
    pub duration_rounding: Rounding,
}

impl Default for CardBilling {
    fn default() -> Self {
        Self {
            precision: 4,
            rounding: Rounding::Up,
            duration_rounding: Rounding::Up,
        }
    }
}

/// The rule-level settings the formula needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleBilling {
    /// Price per minute.
    pub rate: Decimal,
    /// Charged once when anything is billed.
    pub connect_fee: Decimal,
    /// Minimum charged duration, seconds.
    pub mcd: u32,
    /// Billing increment after `mcd`, seconds, ≥ 1.
    pub pulse: u32,
    /// Calls of this many seconds or fewer are free.
    pub grace: u32,
}

/// What one call costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// The duration after rounding to whole seconds.
    pub duration: u64,
    /// Seconds billed.
    pub billed_duration: u64,
    /// Connect fee plus billed minutes × rate, rounded to the card's precision.
    pub cost: Decimal,
}

/// Rounds a non-negative duration to whole seconds.
pub fn whole_seconds(duration: Decimal, rounding: Rounding) -> u64 {
    debug_assert!(duration >= Decimal::ZERO);
    u64::try_from(rounding.round(duration, 0).mantissa()).unwrap_or(u64::MAX)
}

/// Billed seconds for a call of `duration` whole seconds.
pub fn billed_duration(duration: u64, mcd: u32, pulse: u32, grace: u32) -> u64 {
    debug_assert!(pulse >= 1, "pulse is validated to be at least 1");
    let mcd = u64::from(mcd);
    let pulse = u64::from(pulse.max(1));
    if duration == 0 || duration <= u64::from(grace) {
        0
    } else if duration <= mcd {
        mcd
    } else {
        let over = duration - mcd;
        mcd + over.div_ceil(pulse) * pulse
    }
}

/// The whole formula: `duration` in seconds (non-negative, fractional allowed).
pub fn charge(duration: Decimal, rule: &RuleBilling, card: &CardBilling) -> Charge {
    let seconds = whole_seconds(duration, card.duration_rounding);
    let billed = billed_duration(seconds, rule.mcd, rule.pulse, rule.grace);
    let cost = if billed == 0 {
        Decimal::ZERO
    } else {
        rule.connect_fee + Decimal::from(billed) * rule.rate / Decimal::from(60)
    };
    let cost = card.rounding.round(cost, card.precision).normalize();
    Charge {
        duration: seconds,
        billed_duration: billed,
        cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn billed_duration_examples_from_the_contract() {
        for (dur, want) in [(1, 30), (30, 30), (31, 36), (37, 42)] {
            assert_eq!(billed_duration(dur, 30, 6, 0), want, "30/6 at {dur}");
        }
        for (dur, want) in [(10, 60), (61, 66), (67, 72)] {
            assert_eq!(billed_duration(dur, 60, 6, 0), want, "60/6 at {dur}");
        }
        assert_eq!(billed_duration(0, 60, 60, 0), 0);
        assert_eq!(billed_duration(61, 60, 60, 0), 120);
    }

    #[test]
    fn grace_makes_short_calls_free() {
        assert_eq!(billed_duration(5, 60, 60, 5), 0);
        assert_eq!(billed_duration(6, 60, 60, 5), 60);
    }

    #[test]
    fn cost_example_from_the_contract() {
        let rule = RuleBilling {
            rate: d("0.005"),
            connect_fee: d("0"),
            mcd: 1,
            pulse: 1,
            grace: 0,
        };
        let c = charge(d("9"), &rule, &CardBilling::default());
        assert_eq!(c.billed_duration, 9);
        assert_eq!(c.cost.to_string(), "0.0008");
        let down = CardBilling {
            rounding: Rounding::Down,
            ..CardBilling::default()
        };
        assert_eq!(charge(d("9"), &rule, &down).cost.to_string(), "0.0007");
    }

    #[test]
    fn uk_example_from_the_contract() {
        let rule = RuleBilling {
            rate: d("0.012"),
            connect_fee: d("0"),
            mcd: 60,
            pulse: 60,
            grace: 0,
        };
        let c = charge(d("61"), &rule, &CardBilling::default());
        assert_eq!((c.duration, c.billed_duration), (61, 120));
        assert_eq!(c.cost.to_string(), "0.024");
    }

    #[test]
    fn connect_fee_only_when_billed() {
        let rule = RuleBilling {
            rate: d("0.01"),
            connect_fee: d("0.05"),
            mcd: 60,
            pulse: 60,
            grace: 3,
        };
        assert_eq!(
            charge(d("3"), &rule, &CardBilling::default()).cost,
            Decimal::ZERO
        );
        assert_eq!(
            charge(d("4"), &rule, &CardBilling::default())
                .cost
                .to_string(),
            "0.06"
        );
    }

    #[test]
    fn the_largest_inputs_do_not_overflow() {
        let rule = RuleBilling {
            rate: d("999999.999999999999"),
            connect_fee: d("1000000"),
            mcd: 86_400,
            pulse: 86_400,
            grace: 0,
        };
        let card = CardBilling {
            precision: 10,
            ..CardBilling::default()
        };
        let c = charge(d("10000000.999"), &rule, &card);
        assert!(c.cost > Decimal::ZERO);
    }

    #[test]
    fn duration_rounding_methods() {
        assert_eq!(whole_seconds(d("61.2"), Rounding::Up), 62);
        assert_eq!(whole_seconds(d("61.8"), Rounding::Down), 61);
        assert_eq!(whole_seconds(d("61.5"), Rounding::HalfUp), 62);
        assert_eq!(whole_seconds(d("61.5"), Rounding::HalfDown), 61);
        assert_eq!(whole_seconds(d("61.51"), Rounding::HalfDown), 62);
        assert_eq!(whole_seconds(d("0.2"), Rounding::Down), 0);
    }

    #[test]
    fn cost_rounding_methods() {
        // 0.00075 exactly: a tie at 4 dp.
        let rule = RuleBilling {
            rate: d("0.005"),
            connect_fee: d("0"),
            mcd: 1,
            pulse: 1,
            grace: 0,
        };
        let at = |rounding| {
            charge(
                d("9"),
                &rule,
                &CardBilling {
                    rounding,
                    ..CardBilling::default()
                },
            )
            .cost
            .to_string()
        };
        assert_eq!(at(Rounding::Up), "0.0008");
        assert_eq!(at(Rounding::Down), "0.0007");
        assert_eq!(at(Rounding::HalfUp), "0.0008");
        assert_eq!(at(Rounding::HalfDown), "0.0007");
        let zero_dp = CardBilling {
            precision: 0,
            ..CardBilling::default()
        };
        assert_eq!(charge(d("9"), &rule, &zero_dp).cost.to_string(), "1");
    }

    fn rule_strategy() -> impl Strategy<Value = RuleBilling> {
        (
            0u32..1_000_000,
            0u32..100_000,
            0u32..600,
            1u32..600,
            0u32..30,
        )
            .prop_map(|(rate, fee, mcd, pulse, grace)| RuleBilling {
                rate: Decimal::new(rate.into(), 5),
                connect_fee: Decimal::new(fee.into(), 4),
                mcd,
                pulse,
                grace,
            })
    }

    fn card_strategy() -> impl Strategy<Value = CardBilling> {
        (0u32..=MAX_PRECISION, 0usize..4, 0usize..4).prop_map(|(precision, r, dr)| CardBilling {
            precision,
            rounding: Rounding::ALL[r],
            duration_rounding: Rounding::ALL[dr],
        })
    }

    proptest! {
        #[test]
        fn cost_is_never_negative(rule in rule_strategy(), card in card_strategy(), millis in 0u64..10_000_000) {
            let c = charge(Decimal::new(millis as i64, 3), &rule, &card);
            prop_assert!(c.cost >= Decimal::ZERO);
        }

        #[test]
        fn cost_is_monotone_in_duration(rule in rule_strategy(), card in card_strategy(), a in 0u64..10_000_000, b in 0u64..10_000_000) {
            let (short, long) = (a.min(b), a.max(b));
            let c1 = charge(Decimal::new(short as i64, 3), &rule, &card);
            let c2 = charge(Decimal::new(long as i64, 3), &rule, &card);
            prop_assert!(c1.billed_duration <= c2.billed_duration);
            prop_assert!(c1.cost <= c2.cost);
        }

        #[test]
        fn billed_is_mcd_plus_whole_pulses(dur in 0u64..1_000_000, mcd in 0u32..600, pulse in 1u32..600, grace in 0u32..30) {
            let billed = billed_duration(dur, mcd, pulse, grace);
            if billed > 0 {
                prop_assert!(billed >= dur);
                prop_assert!(billed >= u64::from(mcd));
                prop_assert_eq!((billed - u64::from(mcd)) % u64::from(pulse), 0);
                prop_assert!(billed - dur < u64::from(pulse).max(u64::from(mcd)) + 1);
            } else {
                prop_assert!(dur == 0 || dur <= u64::from(grace));
            }
        }
    }
}
