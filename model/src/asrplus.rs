//! ASR Plus (API.md §2): per destination number, the latest final SIP outcome that says
//! something about the number — a code of the "bad" set (Invalid) or 200 (Valid) — remembered
//! for 30 days. Other outcomes (busy, no answer, server errors) say nothing about whether the
//! number exists and are not remembered.
//!
//! The state is a pure function of the set of observed outcomes: the latest `dt` wins (ties:
//! the higher code, so every node that saw the same outcomes agrees), which makes it a view over
//! the grow-only event log that any node can rebuild in any order.

/// How long an outcome is remembered, seconds.
pub const WINDOW_SECS: i64 = 30 * 86_400;

/// The default "bad" codes: the number does not exist.
pub const DEFAULT_BAD_CODES: [u16; 4] = [404, 410, 484, 604];

/// A remembered outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Unix seconds.
    pub dt: i64,
    pub code: u16,
}

/// What ASR Plus says of a number at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unknown,
    Valid(Outcome),
    Invalid(Outcome),
}

impl Verdict {
    pub fn status(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Valid(_) => "Valid",
            Self::Invalid(_) => "Invalid",
        }
    }
}

/// The in-memory ASR Plus state.
#[derive(Debug, Clone)]
pub struct AsrPlus {
    /// Sorted.
    bad: Vec<u16>,
    /// Numbers of up to [`PACKED_DIGITS`] digits, packed ([`pack`]): no allocation a number,
    /// and 24 bytes an entry where a boxed string took 32 plus its own allocation (10M numbers
    /// read at start: their allocations and the table's regrowth were most of it). Keyed by
    /// foldhash, seeded at random per table: SipHash (the standard one) was a third of reading
    /// the log's 10M outcomes at start.
    latest: hashbrown::HashMap<u64, Outcome, foldhash::fast::RandomState>,
    /// Any other number (longer, or not only digits), as text. hashbrown's for its entry by
    /// reference: one probe a number, its key copied only the first time it is seen.
    other: hashbrown::HashMap<Box<str>, Outcome, foldhash::fast::RandomState>,
}

/// The longest number [`pack`] packs: E.164's longest.
const PACKED_DIGITS: usize = 15;

/// `number` as one integer when it is 1 to [`PACKED_DIGITS`] ASCII digits: its value, with
/// its length above it (bit 56 up), so numbers differing only in leading zeros differ.
fn pack(number: &str) -> Option<u64> {
    if number.is_empty() || number.len() > PACKED_DIGITS {
        return None;
    }
    let mut value = 0u64;
    for b in number.bytes() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value | (number.len() as u64) << 56)
}

impl AsrPlus {
    pub fn new(bad: impl IntoIterator<Item = u16>) -> Self {
        let mut bad: Vec<u16> = bad.into_iter().collect();
        bad.sort_unstable();
        bad.dedup();
        Self {
            bad,
            latest: hashbrown::HashMap::default(),
            other: hashbrown::HashMap::default(),
        }
    }

    /// Numbers remembered (including expired ones not yet pruned).
    pub fn len(&self) -> usize {
        self.latest.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty() && self.other.is_empty()
    }

    /// Takes in one final outcome. Order of observation does not matter.
    pub fn observe(&mut self, number: &str, dt: i64, code: u16) {
        if code != 200 && self.bad.binary_search(&code).is_err() {
            return;
        }
        let outcome = Outcome { dt, code };
        let newer = |current: &mut Outcome| {
            if (dt, code) > (current.dt, current.code) {
                *current = outcome;
            }
        };
        match pack(number) {
            Some(key) => {
                self.latest.entry(key).and_modify(newer).or_insert(outcome);
            }
            None => {
                self.other
                    .entry_ref(number)
                    .and_modify(newer)
                    .or_insert(outcome);
            }
        }
    }

    /// The verdict on `number` at `now`: unknown when never seen or last seen over 30 days ago.
    pub fn verdict(&self, number: &str, now: i64) -> Verdict {
        let latest = match pack(number) {
            Some(key) => self.latest.get(&key),
            None => self.other.get(number),
        };
        match latest {
            Some(o) if now - o.dt <= WINDOW_SECS => {
                if o.code == 200 {
                    Verdict::Valid(*o)
                } else {
                    Verdict::Invalid(*o)
                }
            }
            _ => Verdict::Unknown,
        }
    }

    /// Forgets outcomes that have expired at `now`.
    pub fn prune(&mut self, now: i64) {
        self.latest.retain(|_, o| now - o.dt <= WINDOW_SECS);
        self.other.retain(|_, o| now - o.dt <= WINDOW_SECS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_codes_invalidate_and_200_validates() {
        let mut a = AsrPlus::new(DEFAULT_BAD_CODES);
        a.observe("44", 100, 404);
        assert_eq!(
            a.verdict("44", 200),
            Verdict::Invalid(Outcome { dt: 100, code: 404 })
        );
        a.observe("44", 150, 200);
        assert_eq!(a.verdict("44", 200).status(), "Valid", "good after bad");
        a.observe("44", 120, 410);
        assert_eq!(
            a.verdict("44", 200).status(),
            "Valid",
            "an older outcome does not win"
        );
        a.observe("44", 300, 486);
        assert_eq!(a.verdict("44", 400).status(), "Valid", "busy says nothing");
        assert_eq!(a.verdict("45", 400), Verdict::Unknown);
    }

    #[test]
    fn expires_after_exactly_thirty_days() {
        let mut a = AsrPlus::new(DEFAULT_BAD_CODES);
        a.observe("44", 1000, 604);
        assert_eq!(a.verdict("44", 1000 + WINDOW_SECS).status(), "Invalid");
        assert_eq!(a.verdict("44", 1000 + WINDOW_SECS + 1), Verdict::Unknown);
        a.prune(1000 + WINDOW_SECS + 1);
        assert!(a.is_empty());
    }

    #[test]
    fn numbers_differing_in_leading_zeros_or_length_are_apart_and_any_text_is_kept() {
        let mut a = AsrPlus::new(DEFAULT_BAD_CODES);
        let long = "1234567890123456"; // 16 digits: kept as text
        for (i, number) in ["7", "07", "007", "70", "999999999999999", long, "12a4", ""]
            .iter()
            .enumerate()
        {
            a.observe(number, 100 + i as i64, if i % 2 == 0 { 200 } else { 404 });
        }
        assert_eq!(a.len(), 8);
        assert_eq!(a.verdict("7", 200).status(), "Valid");
        assert_eq!(a.verdict("07", 200).status(), "Invalid");
        assert_eq!(a.verdict("007", 200).status(), "Valid");
        assert_eq!(a.verdict("70", 200).status(), "Invalid");
        assert_eq!(a.verdict("999999999999999", 200).status(), "Valid");
        assert_eq!(a.verdict(long, 200).status(), "Invalid");
        assert_eq!(a.verdict("12a4", 200).status(), "Valid");
        assert_eq!(a.verdict("", 200).status(), "Invalid");
        assert_eq!(a.verdict("0007", 200), Verdict::Unknown);
        a.prune(104 + WINDOW_SECS + 1);
        assert_eq!(a.len(), 3, "outcomes at 105, 106, 107 are left");
        assert_eq!(
            a.verdict(long, 107),
            Verdict::Invalid(Outcome { dt: 105, code: 404 })
        );
    }

    proptest! {
        #[test]
        fn order_of_observation_does_not_matter(events in proptest::collection::vec((0u8..4, 0i64..1000, prop::sample::select(vec![200u16, 404, 410, 486, 503, 604])), 0..60), seed in any::<u64>()) {
            let mut forward = AsrPlus::new(DEFAULT_BAD_CODES);
            for (n, dt, code) in &events {
                forward.observe(&n.to_string(), *dt, *code);
            }
            let mut shuffled = events.clone();
            let len = shuffled.len();
            for i in (1..len).rev() {
                shuffled.swap(i, (seed as usize).wrapping_mul(i + 7) % (i + 1));
            }
            let mut backward = AsrPlus::new(DEFAULT_BAD_CODES);
            for (n, dt, code) in shuffled.iter().rev() {
                backward.observe(&n.to_string(), *dt, *code);
            }
            for n in 0u8..4 {
                prop_assert_eq!(forward.verdict(&n.to_string(), 500), backward.verdict(&n.to_string(), 500));
            }
        }
    }
}
