//! Call detail records (API.md §7): what a switch reports about one call, validated, and the
//! rating added on ingest.

use crate::number::normalise;
use rust_decimal::Decimal;
use std::str::FromStr;

/// The longest `callid`, card reference or reason accepted, in bytes.
pub const MAX_TEXT: usize = 256;
/// How far ahead of the receiving node's clock a call may start, seconds: a CDR dated later
/// would decide ASR Plus for its number until that date.
pub const MAX_AHEAD: i64 = 86_400;
/// The longest call, seconds.
pub const MAX_DURATION: i64 = 10_000_000;

/// One call as reported, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CdrInput {
    /// Unique per account: re-sending a CDR with a known `callid` changes nothing.
    pub callid: String,
    /// Unix seconds (UTC) the call started.
    pub dt: i64,
    pub source_cli: String,
    pub dest_number: String,
    /// Seconds, non-negative.
    pub duration: Decimal,
    /// The final SIP response code, 100–699.
    pub sip_code: u16,
    pub sip_reason: String,
    /// The card to rate it on (id or name), when given.
    pub card: Option<String>,
    /// The provider card the call was sent to (id or name), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// Where a CDR's call went: the provider card (its id) and the prefix of its rule that priced
/// the call (empty when none did), which route quality is kept by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Leg {
    pub card: String,
    pub prefix: String,
}

/// The rating of a CDR on its card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rating {
    pub dest_code: String,
    pub dest_name: String,
    pub rate: Decimal,
    pub billed_duration: u64,
    pub cost: Decimal,
}

/// A stored CDR.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cdr {
    pub input: CdrInput,
    pub rating: Option<Rating>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<Leg>,
}

fn text(field: &str, value: Option<&str>, required: bool) -> Result<Option<String>, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None if required => Err(format!("missing '{field}'")),
        None => Ok(None),
        Some(v) if v.len() > MAX_TEXT || v.chars().any(char::is_control) => Err(format!(
            "'{field}' must be at most {MAX_TEXT} printable characters"
        )),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// Validates one CDR whose fields `get` returns by name. `now` is used when `dt` is absent.
pub fn parse_cdr<'a>(get: impl Fn(&str) -> Option<&'a str>, now: i64) -> Result<CdrInput, String> {
    let callid = text("callid", get("callid"), true)?.unwrap_or_default();
    let dest_number = get("dest_number")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or("missing 'dest_number'")?;
    let dest_number = normalise(dest_number).map_err(|e| format!("'dest_number': {e}"))?;
    let source_cli = match get("source_cli").map(str::trim).filter(|v| !v.is_empty()) {
        Some(cli) => normalise(cli).map_err(|e| format!("'source_cli': {e}"))?,
        None => String::new(),
    };
    let code = get("sip_code")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or("missing 'sip_code'")?;
    let sip_code = match code.parse::<u16>() {
        Ok(c) if (100..=699).contains(&c) => c,
        _ => {
            return Err(format!(
                "'sip_code' {code} is not a SIP response code (100-699)"
            ))
        }
    };
    let dt = match get("dt").map(str::trim).filter(|v| !v.is_empty()) {
        None => now,
        Some(t) => crate::time::parse(t)
            .ok_or_else(|| format!("'dt' {t} is not unix seconds or 'YYYY-MM-DD HH:MM:SS'"))?,
    };
    let duration = match get("duration").map(str::trim).filter(|v| !v.is_empty()) {
        None => Decimal::ZERO,
        Some(d) => match Decimal::from_str(d) {
            Ok(v) if v.is_sign_negative() && !v.is_zero() => {
                return Err(format!("'duration' {d} is negative"))
            }
            Ok(v) if v > Decimal::from(MAX_DURATION) => {
                return Err(format!("'duration' {d} is over {MAX_DURATION} seconds"))
            }
            Ok(v) => v.abs(),
            Err(_) => return Err(format!("'duration' {d} is not a number of seconds")),
        },
    };
    let sip_reason = text("sip_reason", get("sip_reason"), false)?
        .unwrap_or_else(|| reason_phrase(sip_code).to_owned());
    let card = text("card", get("card"), false)?;
    let provider = text("provider", get("provider"), false)?;
    let cdr = CdrInput {
        callid,
        dt,
        source_cli,
        dest_number,
        duration,
        sip_code,
        sip_reason,
        card,
        provider,
    };
    cdr.validate(now)?;
    Ok(cdr)
}

impl Leg {
    /// The bounds of a leg this node would have made: a card id and a prefix of digits.
    pub fn validate(&self) -> Result<(), String> {
        let id = !self.card.is_empty()
            && self.card.len() <= MAX_TEXT
            && !self.card.chars().any(char::is_control);
        let prefix = self.prefix.is_empty() || crate::number::is_prefix(&self.prefix);
        if id && prefix {
            Ok(())
        } else {
            Err("leg: bad provider card or prefix".into())
        }
    }
}

impl Rating {
    /// The bounds of a rating this node would have made: money non-negative and within what a
    /// rate of at most 1,000,000 a minute over the longest call can cost.
    pub fn validate(&self) -> Result<(), String> {
        let ceiling = Decimal::from(1_000_000_000_000_000i64);
        let money = |v: Decimal| !v.is_sign_negative() && v <= ceiling;
        if !money(self.rate) || !money(self.cost) {
            return Err("rating: rate or cost out of range".into());
        }
        if self.billed_duration > 2 * MAX_DURATION as u64 {
            return Err("rating: billed duration out of range".into());
        }
        if !crate::number::is_prefix(&self.dest_code)
            || self.dest_name.len() > crate::deck::MAX_NAME_LEN
            || self.dest_name.chars().any(char::is_control)
        {
            return Err("rating: bad destination".into());
        }
        Ok(())
    }
}

impl CdrInput {
    /// The bounds every stored CDR keeps, whether it came from a client or from a peer: `now`
    /// is the checking node's clock.
    pub fn validate(&self, now: i64) -> Result<(), String> {
        let printable = |field: &str, v: &str, required: bool| {
            if (required && v.is_empty()) || v.len() > MAX_TEXT || v.chars().any(char::is_control) {
                Err(format!(
                    "'{field}' must be 1-{MAX_TEXT} printable characters"
                ))
            } else {
                Ok(())
            }
        };
        printable("callid", &self.callid, true)?;
        printable("sip_reason", &self.sip_reason, false)?;
        printable("card", self.card.as_deref().unwrap_or(""), false)?;
        printable("provider", self.provider.as_deref().unwrap_or(""), false)?;
        let digits = |field: &str, v: &str, required: bool| {
            let ok = (v.is_empty() && !required)
                || (v.len() <= crate::number::MAX_DIGITS && crate::number::is_prefix(v));
            if ok {
                Ok(())
            } else {
                Err(format!("'{field}' {v:?} is not E.164 digits"))
            }
        };
        digits("dest_number", &self.dest_number, true)?;
        digits("source_cli", &self.source_cli, false)?;
        if !(100..=699).contains(&self.sip_code) {
            return Err(format!(
                "'sip_code' {} is not a SIP response code (100-699)",
                self.sip_code
            ));
        }
        if !(0..=crate::time::MAX).contains(&self.dt) {
            return Err(format!("'dt' {} is out of range", self.dt));
        }
        if self.dt > now.saturating_add(MAX_AHEAD) {
            return Err(format!(
                "'dt' {} is more than a day ahead of this node's clock ({now})",
                self.dt
            ));
        }
        if self.duration.is_sign_negative() && !self.duration.is_zero()
            || self.duration > Decimal::from(MAX_DURATION)
        {
            return Err(format!(
                "'duration' {} is not 0-{MAX_DURATION} seconds",
                self.duration
            ));
        }
        Ok(())
    }
}

/// The standard reason phrase of a SIP response code (RFC 3261 and successors).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<CdrInput, String> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        parse_cdr(|k| map.get(k).copied(), 2_000_000_000)
    }

    #[test]
    fn a_full_cdr() {
        let cdr = parse(&[
            ("callid", "c1"),
            ("dt", "2013-01-11 12:39:22"),
            ("source_cli", "+1 212 555 0100"),
            ("dest_number", "0044 1234 567890"),
            ("duration", "61.5"),
            ("sip_code", "200"),
            ("card", "uk"),
        ])
        .unwrap();
        assert_eq!(
            (cdr.dt, cdr.dest_number.as_str(), cdr.source_cli.as_str()),
            (1_357_907_962, "441234567890", "12125550100")
        );
        assert_eq!(
            (cdr.sip_reason.as_str(), cdr.card.as_deref()),
            ("OK", Some("uk"))
        );
    }

    #[test]
    fn bad_cdrs_name_the_first_problem() {
        let base = [("callid", "c1"), ("dest_number", "44"), ("sip_code", "404")];
        assert!(parse(&base).is_ok());
        for (drop, needle) in [
            ("callid", "callid"),
            ("dest_number", "dest_number"),
            ("sip_code", "sip_code"),
        ] {
            let rest: Vec<_> = base.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert!(parse(&rest).unwrap_err().contains(needle));
        }
        for (k, v, needle) in [
            ("duration", "-1", "negative"),
            ("dt", "yesterday", "dt"),
            ("sip_code", "99", "sip_code"),
            ("sip_code", "abc", "sip_code"),
            ("dest_number", "44x", "dest_number"),
            ("duration", "x", "duration"),
            ("dt", "2100-01-01 00:00:00", "ahead"),
            ("dt", "-9223372036854775808", "dt"),
        ] {
            let mut row: Vec<_> = base.iter().copied().filter(|(key, _)| *key != k).collect();
            row.push((k, v));
            assert!(parse(&row).unwrap_err().contains(needle), "{k}={v}");
        }
    }
}
