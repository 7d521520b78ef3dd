//! Times: unix seconds, and the `YYYY-MM-DD HH:MM:SS` (UTC) form the API also reads.

/// The latest time read: 9999-12-31 23:59:59 UTC. Times before 1970 or after it are refused,
/// so arithmetic on any two times read can never overflow.
pub const MAX: i64 = 253_402_300_799;

/// Parses unix seconds (an integer) or `YYYY-MM-DD HH:MM:SS` / `YYYY-MM-DDTHH:MM:SSZ` / `YYYY-MM-DD` in UTC,
/// from 1970 to [`MAX`].
pub fn parse(s: &str) -> Option<i64> {
    parse_any(s).filter(|t| (0..=MAX).contains(t))
}

fn parse_any(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, clock) = match s.split_once([' ', 'T']) {
        Some((d, c)) => (d, Some(c)),
        None => (s, None),
    };
    let mut ymd = date.splitn(3, '-');
    let year: i64 = num(ymd.next()?, 4)?;
    let month: i64 = num(ymd.next()?, 2)?;
    let day: i64 = num(ymd.next()?, 2)?;
    let (h, m, sec) = match clock {
        None => (0, 0, 0),
        Some(c) => {
            let mut hms = c.splitn(3, ':');
            (
                num(hms.next()?, 2)?,
                num(hms.next()?, 2)?,
                num(hms.next()?, 2)?,
            )
        }
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || h > 23
        || m > 59
        || sec > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

fn num(s: &str, width: usize) -> Option<i64> {
    (s.len() == width && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DD` of unix seconds.
pub fn format_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM:SS` of unix seconds.
pub fn format_datetime(secs: i64) -> String {
    let rem = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        format_date(secs),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The current unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current unix time in milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(parse("1357907962"), Some(1_357_907_962));
        assert_eq!(parse("2013-01-11 12:39:22"), Some(1_357_907_962));
        assert_eq!(parse("2013-01-11T12:39:22Z"), Some(1_357_907_962));
        assert_eq!(parse("1970-01-01"), Some(0));
        assert_eq!(parse("2024-02-30 00:00:00"), None);
        assert_eq!(parse("2024-13-01 00:00:00"), None);
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("-9223372036854775808"), None);
        assert_eq!(parse("9223372036854775807"), None);
        assert_eq!(parse("9999-12-31 23:59:59"), Some(MAX));
    }

    #[test]
    fn formats_round_trip() {
        for secs in [0, 951_782_400, 1_357_907_962, 4_102_444_799] {
            assert_eq!(parse(&format_datetime(secs)), Some(secs));
        }
        assert_eq!(format_date(1_357_907_962), "2013-01-11");
    }
}
