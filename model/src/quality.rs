//! Route quality (API.md §3 "routing"): ASR and ACD of the calls sent through each provider card
//! to each of its destinations (the prefix of its rule that priced the call), over the last
//! `days` UTC days, kept incrementally as CDRs arrive so that routing never scans the log.
//!
//! As in `cdr/stats`, a call is connected when its SIP code is 200; ASR is connected / attempts
//! in percent, ACD the mean duration of connected calls in seconds, both to 2 places. Like the
//! log it is a view of, it is the same on every node once they hold the same CDRs, whatever
//! order they came in.

use crate::routing::Quality;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Keyed by text and looked up by `&str`; hashbrown's for its entry by reference: a key is
/// copied only the first time it is seen (this runs for every routed CDR, and for each of the
/// window's at start).
type ByName<V> = hashbrown::HashMap<String, V, std::hash::RandomState>;

/// The default window, days (`[routing] quality_days`).
pub const DEFAULT_DAYS: u32 = 7;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    attempts: u64,
    connected: u64,
    seconds: Decimal,
}

impl Counts {
    fn add(&mut self, sip_code: u16, seconds: Decimal) {
        self.attempts += 1;
        if sip_code == 200 {
            self.connected += 1;
            self.seconds += seconds;
        }
    }
}

/// Calls per provider card and destination, per UTC day.
#[derive(Debug, Clone, Default)]
pub struct RouteQuality {
    days: u32,
    /// Provider card id → prefix → day → counts.
    routes: ByName<ByName<BTreeMap<i64, Counts>>>,
}

impl RouteQuality {
    pub fn new(days: u32) -> Self {
        Self {
            days: days.max(1),
            routes: ByName::default(),
        }
    }

    /// The first day inside the window at `now`.
    fn first_day(&self, now: i64) -> i64 {
        now.div_euclid(86_400) - i64::from(self.days) + 1
    }

    /// Counts one call through `provider` to its destination `prefix` at `dt` (ignored when it
    /// is already outside the window at `now`).
    pub fn observe(
        &mut self,
        provider: &str,
        prefix: &str,
        dt: i64,
        sip_code: u16,
        seconds: Decimal,
        now: i64,
    ) {
        let day = dt.div_euclid(86_400);
        if day < self.first_day(now) || prefix.is_empty() {
            return;
        }
        self.routes
            .entry_ref(provider)
            .or_default()
            .entry_ref(prefix)
            .or_default()
            .entry(day)
            .or_default()
            .add(sip_code, seconds);
    }

    /// The quality of `provider`'s destination `prefix` over the window at `now`; `None`s
    /// without calls (ACD: without connected calls).
    pub fn of(&self, provider: &str, prefix: &str, now: i64) -> Quality {
        let Some(days) = self.routes.get(provider).and_then(|p| p.get(prefix)) else {
            return Quality::default();
        };
        let mut sum = Counts::default();
        for counts in days.range(self.first_day(now)..).map(|(_, c)| c) {
            sum.attempts += counts.attempts;
            sum.connected += counts.connected;
            sum.seconds += counts.seconds;
        }
        let ratio =
            |num: Decimal, den: u64| (den > 0).then(|| (num / Decimal::from(den)).round_dp(2));
        Quality {
            asr: ratio(
                Decimal::from(sum.connected) * Decimal::ONE_HUNDRED,
                sum.attempts,
            ),
            acd: ratio(sum.seconds, sum.connected),
        }
    }

    /// Forgets the days that left the window at `now`.
    pub fn prune(&mut self, now: i64) {
        let first = self.first_day(now);
        self.routes.retain(|_, prefixes| {
            prefixes.retain(|_, days| {
                days.retain(|day, _| *day >= first);
                !days.is_empty()
            });
            !prefixes.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asr_and_acd_over_the_window() {
        let day = 86_400;
        let now = 100 * day;
        let mut q = RouteQuality::new(7);
        q.observe("p", "44", now, 200, Decimal::from(60), now);
        q.observe("p", "44", now - 2 * day, 200, Decimal::from(30), now);
        q.observe("p", "44", now - 3 * day, 486, Decimal::ZERO, now);
        q.observe("p", "44", now - 8 * day, 200, Decimal::from(999), now);
        q.observe("p", "33", now, 404, Decimal::ZERO, now);
        let uk = q.of("p", "44", now);
        assert_eq!(uk.asr, Some(Decimal::new(6667, 2)));
        assert_eq!(uk.acd, Some(Decimal::from(45)));
        assert_eq!(q.of("p", "33", now).acd, None);
        assert_eq!(q.of("p", "33", now).asr, Some(Decimal::ZERO));
        assert_eq!(q.of("q", "44", now), Quality::default());
        // Six days on, only the newest call is in the window.
        q.prune(now + 6 * day);
        assert_eq!(
            q.of("p", "44", now + 6 * day).asr,
            Some(Decimal::ONE_HUNDRED)
        );
    }
}
