//! A rule's rate packed into four bytes, so the trie can hold it beside the slot that names
//! the rule ("the price inline in the last node"): a lookup that needs only the price reads
//! nothing past the node it already holds.
//!
//! A rate whose mantissa fits 27 bits and whose scale fits 4 — every rate of a real card:
//! `0.012345` is 12345 at scale 6 — is its own code. Any other packs to [`WIDE`], and is read
//! from the rule.

use rust_decimal::Decimal;

/// The code of a rate that does not pack.
pub(super) const WIDE: u32 = u32::MAX;
const SCALE_SHIFT: u32 = 27;
const MANTISSA: u32 = (1 << SCALE_SHIFT) - 1;

pub(super) fn pack(rate: Decimal) -> u32 {
    match u32::try_from(rate.mantissa()) {
        // Not -0, whose mantissa is 0: it would unpack as +0.
        Ok(mantissa) if mantissa <= MANTISSA && rate.scale() < 16 && !rate.is_sign_negative() => {
            rate.scale() << SCALE_SHIFT | mantissa
        }
        _ => WIDE,
    }
}

/// The rate `code` packs; `None` for [`WIDE`].
pub(super) fn unpack(code: u32) -> Option<Decimal> {
    (code != WIDE).then(|| Decimal::new(i64::from(code & MANTISSA), code >> SCALE_SHIFT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_rate_unpacks_to_itself_or_is_wide(
            mantissa in prop_oneof![
                0..=i64::from(MANTISSA),
                Just(i64::from(MANTISSA) + 1),
                any::<i64>(),
            ],
            scale in 0u32..=28,
            negative_zero in any::<bool>(),
        ) {
            let rate = if negative_zero && mantissa == 0 {
                -Decimal::new(0, scale)
            } else {
                Decimal::new(mantissa, scale)
            };
            match unpack(pack(rate)) {
                Some(back) => prop_assert_eq!(
                    (back, back.scale(), back.is_sign_negative()),
                    (rate, rate.scale(), rate.is_sign_negative())
                ),
                None => prop_assert!(
                    mantissa < 0 || mantissa > i64::from(MANTISSA) || scale >= 16 || rate.is_sign_negative()
                ),
            }
        }

        #[test]
        fn every_small_rate_packs(mantissa in 0..=i64::from(MANTISSA), scale in 0u32..16) {
            prop_assert_ne!(pack(Decimal::new(mantissa, scale)), WIDE);
        }
    }
}
