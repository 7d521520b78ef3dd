//! Decimals as exact JSON numbers (API.md §1: amounts are exact, never floats): the shortest
//! text of the value (`0.0072`, `12`, `-0.5`), written straight into an answer without a
//! string allocated or parsed back, as the hot paths (`ratecard/query`, `routing/lcr`) need.

use rust_decimal::Decimal;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Number, Value};
use std::str::FromStr;

/// The name under which `serde_json` (built with `arbitrary_precision`, as this workspace is)
/// takes a one-field struct's string as a number's text, written as is: the protocol of its own
/// `Number`, which the serialiser to bytes and the one to a `Value` both follow.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Longest text: a sign, 29 digits (a 96-bit mantissa), `0.` and no more (scale ≤ 28).
const MAX_TEXT: usize = 40;

/// A decimal that serialises as an exact JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exact(pub Decimal);

impl Exact {
    /// The number's text, as `Decimal::normalize().to_string()` writes it, into `buf`.
    fn text(self, buf: &mut [u8; MAX_TEXT]) -> &str {
        let mut digits = [0u8; MAX_TEXT];
        let mut scale = self.0.scale() as usize;
        let mut mantissa = self.0.mantissa().unsigned_abs();
        if mantissa == 0 {
            return "0";
        }
        while scale > 0 && mantissa.is_multiple_of(10) {
            mantissa /= 10;
            scale -= 1;
        }
        // Digits from the right; in u64 once the mantissa fits (u128 division is slow).
        let mut start = MAX_TEXT;
        while mantissa > u128::from(u64::MAX) {
            start -= 1;
            digits[start] = b'0' + (mantissa % 10) as u8;
            mantissa /= 10;
        }
        let mut small = mantissa as u64;
        while small > 0 {
            start -= 1;
            digits[start] = b'0' + (small % 10) as u8;
            small /= 10;
        }
        let digits = &digits[start..];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        if self.0.is_sign_negative() {
            put(b"-");
        }
        if scale == 0 {
            put(digits);
        } else if scale >= digits.len() {
            put(b"0.");
            for _ in digits.len()..scale {
                put(b"0");
            }
            put(digits);
        } else {
            let (whole, fraction) = digits.split_at(digits.len() - scale);
            put(whole);
            put(b".");
            put(fraction);
        }
        std::str::from_utf8(&buf[..len]).expect("ASCII digits")
    }
}

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; MAX_TEXT];
        let mut number = serializer.serialize_struct(NUMBER_TOKEN, 1)?;
        number.serialize_field(NUMBER_TOKEN, self.text(&mut buf))?;
        number.end()
    }
}

impl From<Exact> for Number {
    fn from(d: Exact) -> Self {
        let mut buf = [0u8; MAX_TEXT];
        Number::from_str(d.text(&mut buf)).expect("a decimal's text is a JSON number")
    }
}

impl From<Exact> for Value {
    fn from(d: Exact) -> Self {
        Value::Number(d.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(d: Decimal) -> String {
        serde_json::to_string(&Exact(d)).unwrap()
    }

    #[test]
    fn writes_the_shortest_exact_text() {
        for (d, text) in [
            ("0", "0"),
            ("-0.000", "0"),
            ("0.0072", "0.0072"),
            ("0.007200", "0.0072"),
            ("12.000", "12"),
            ("120", "120"),
            ("-0.5", "-0.5"),
            (
                "0.0000000000000000000000000001",
                "0.0000000000000000000000000001",
            ),
            (
                "79228162514264337593543950335",
                "79228162514264337593543950335",
            ),
            (
                "-7922816251426433759354395033.5",
                "-7922816251426433759354395033.5",
            ),
        ] {
            assert_eq!(json(Decimal::from_str(d).unwrap()), text, "{d}");
        }
    }

    #[test]
    fn is_a_number_in_a_value_too() {
        let value = serde_json::to_value(Exact(Decimal::new(-72, 4))).unwrap();
        assert_eq!(value, serde_json::json!(-0.0072));
        assert_eq!(Value::from(Exact(Decimal::new(1200, 2))).to_string(), "12");
    }

    proptest! {
        #[test]
        fn matches_the_normalised_decimal(lo: u32, mid: u32, hi: u32, negative: bool, scale in 0u32..=28) {
            let d = Decimal::from_parts(lo, mid, hi, negative, scale);
            prop_assert_eq!(json(d), d.normalize().to_string());
        }
    }
}
