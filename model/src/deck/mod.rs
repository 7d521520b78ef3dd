//! Rate decks: whole rule sets read from CSV or from the open "Interconnect Made Easy" (IME)
//! JSON format, and written back in either form.
//!
//! A deck is all or nothing: any bad row rejects the whole deck, with the first problems
//! listed by line (CSV) or row (IME), so nothing of a bad deck is ever applied.
//!
//! A deck is read as it streams past: rows become rules one at a time and no tree of the whole
//! file is built, so reading one costs a small multiple of the rules it holds, not of its text.

mod csv;
mod ime;
mod jcs;

pub use self::csv::{parse_csv, push_csv_field, unneutralise, write_csv_row, CSV_HEADER};
pub use self::ime::{ime_checksum, parse_ime, write_ime, ImeCard};

use crate::number::is_prefix;
use crate::rule::{Rule, RuleStatus};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use thiserror::Error;

/// At most this many problems are reported for a rejected deck.
pub const MAX_PROBLEMS: usize = 10;
/// The longest rule name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// A parsed deck: rules in file order, and card-level settings an IME file may carry.
#[derive(Debug, Clone, Default)]
pub struct Deck {
    pub rules: Vec<(String, Rule)>,
    /// Each rule's dates and change code, in the same order, when the deck has any of those
    /// columns (`effective_date`, `end_date`, `change`); else empty.
    pub terms: Vec<Terms>,
    pub currency: Option<String>,
    pub precision: Option<u32>,
    pub rounding: Option<String>,
}

/// How a row of a delta deck changes its prefix (the `change` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    New,
    Increase,
    Decrease,
    Unchanged,
    /// The prefix is removed (the row's other cells are not read).
    Closed,
}

impl Change {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "new" => Self::New,
            "increase" => Self::Increase,
            "decrease" => Self::Decrease,
            "unchanged" => Self::Unchanged,
            "closed" => Self::Closed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Increase => "increase",
            Self::Decrease => "decrease",
            Self::Unchanged => "unchanged",
            Self::Closed => "closed",
        }
    }
}

/// When a row applies and how it changes its prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terms {
    /// From when (unix seconds); `None`: from the revision's `live_at`.
    pub effective: Option<i64>,
    /// Until when: the row is gone from this time on.
    pub end: Option<i64>,
    pub change: Option<Change>,
}

/// Why a deck was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeckError {
    /// The file as a whole is unreadable (not CSV, not JSON, no header, …).
    #[error("{0}")]
    Malformed(String),
    /// Rows are wrong; each problem names its line (CSV) or row (IME).
    #[error("deck rejected, nothing applied: {}", .0.join("; "))]
    Rows(Vec<String>),
    /// An IME `metadata.checksum` that does not match the document.
    #[error(
        "checksum mismatch: metadata.checksum is {declared} but the document hashes to {actual}"
    )]
    Checksum { declared: String, actual: String },
}

/// The columns of a deck, after aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Column {
    Prefix,
    Name,
    Rate,
    ConnectFee,
    Mcd,
    Pulse,
    Grace,
    RateInter,
    RateIntra,
    Status,
    EffectiveDate,
    EndDate,
    Change,
}

impl Column {
    const REQUIRED: [Column; 6] = [
        Self::Prefix,
        Self::Name,
        Self::Rate,
        Self::ConnectFee,
        Self::Mcd,
        Self::Pulse,
    ];

    fn from_header(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "prefix" => Self::Prefix,
            "name" => Self::Name,
            "rate" | "cost" => Self::Rate,
            "connect_fee" | "connection_fee" => Self::ConnectFee,
            "mcd" | "initial_interval" => Self::Mcd,
            "pulse" | "billing_interval" => Self::Pulse,
            "grace" => Self::Grace,
            "rate_inter" => Self::RateInter,
            "rate_intra" => Self::RateIntra,
            "status" => Self::Status,
            "effective_date" | "effective" => Self::EffectiveDate,
            "end_date" => Self::EndDate,
            "change" => Self::Change,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Name => "name",
            Self::Rate => "rate",
            Self::ConnectFee => "connect_fee",
            Self::Mcd => "mcd",
            Self::Pulse => "pulse",
            Self::Grace => "grace",
            Self::RateInter => "rate_inter",
            Self::RateIntra => "rate_intra",
            Self::Status => "status",
            Self::EffectiveDate => "effective_date",
            Self::EndDate => "end_date",
            Self::Change => "change",
        }
    }
}

/// Defaults for cells a deck leaves out (IME card-level `rate` settings).
#[derive(Debug, Clone)]
struct Defaults {
    connect_fee: Option<Decimal>,
    mcd: Option<u32>,
    pulse: Option<u32>,
}

const NO_DEFAULTS: Defaults = Defaults {
    connect_fee: None,
    mcd: None,
    pulse: None,
};

/// Builds one rule from its cells, looked up by column; `cell` returns `None` for an absent or
/// empty cell.
fn build_rule<'a>(
    cell: impl Fn(Column) -> Option<&'a str>,
    defaults: &Defaults,
    names: &mut HashMap<String, Arc<str>>,
) -> Result<(String, Rule), String> {
    let prefix = cell(Column::Prefix).ok_or("prefix is empty")?;
    if !is_prefix(prefix) {
        return Err(format!("prefix '{prefix}' is not 1-20 digits"));
    }
    let name = unneutralise(cell(Column::Name).unwrap_or(""));
    check_name(name)?;
    let name = match names.get(name) {
        Some(shared) => shared.clone(),
        None => {
            let shared: Arc<str> = Arc::from(name);
            names.insert(name.to_owned(), shared.clone());
            shared
        }
    };
    if cell(Column::Change).and_then(Change::parse) == Some(Change::Closed) {
        // A closed row removes its prefix: nothing else of it is read.
        return Ok((prefix.to_owned(), Rule::new(name, Decimal::ZERO)));
    }
    let rate = money(Column::Rate, cell(Column::Rate))?.ok_or("rate is empty")?;
    let connect_fee = money(Column::ConnectFee, cell(Column::ConnectFee))?
        .or(defaults.connect_fee)
        .unwrap_or(Decimal::ZERO);
    let mcd = seconds(Column::Mcd, cell(Column::Mcd))?
        .or(defaults.mcd)
        .ok_or("mcd is empty")?;
    let pulse = seconds(Column::Pulse, cell(Column::Pulse))?
        .or(defaults.pulse)
        .ok_or("pulse is empty")?;
    if pulse == 0 {
        return Err("pulse must be at least 1".into());
    }
    let grace = seconds(Column::Grace, cell(Column::Grace))?.unwrap_or(0);
    let status = match cell(Column::Status) {
        None => RuleStatus::Active,
        Some(s) => {
            RuleStatus::parse(s).ok_or_else(|| format!("status '{s}' is not Active or Blocked"))?
        }
    };
    let rule = Rule {
        name,
        rate,
        connect_fee,
        mcd,
        pulse,
        grace,
        rate_inter: money(Column::RateInter, cell(Column::RateInter))?,
        rate_intra: money(Column::RateIntra, cell(Column::RateIntra))?,
        status,
    };
    Ok((prefix.to_owned(), rule))
}

/// The dates and change code of a row.
fn build_terms<'a>(cell: impl Fn(Column) -> Option<&'a str>) -> Result<Terms, String> {
    let date = |c: Column| -> Result<Option<i64>, String> {
        cell(c)
            .map(|s| {
                crate::time::parse(s).ok_or_else(|| {
                    format!(
                        "{} '{s}' is not a date (YYYY-MM-DD, YYYY-MM-DD HH:MM:SS UTC or unix seconds)",
                        c.as_str()
                    )
                })
            })
            .transpose()
    };
    let terms = Terms {
        effective: date(Column::EffectiveDate)?,
        end: date(Column::EndDate)?,
        change: cell(Column::Change)
            .map(|s| {
                Change::parse(s).ok_or_else(|| {
                    format!("change '{s}' is not new, increase, decrease, unchanged or closed")
                })
            })
            .transpose()?,
    };
    if let (Some(from), Some(end)) = (terms.effective, terms.end) {
        if end <= from {
            return Err("end_date is not after effective_date".into());
        }
    }
    Ok(terms)
}

/// Whether a deck with these columns has terms ([`Deck::terms`]).
fn has_terms(columns: impl IntoIterator<Item = Column>) -> bool {
    columns
        .into_iter()
        .any(|c| matches!(c, Column::EffectiveDate | Column::EndDate | Column::Change))
}

/// A rule name: printable, at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("name contains a control character".into());
    }
    Ok(())
}

/// The largest rate or fee accepted: keeps every cost the formula computes far inside the
/// exact range of the decimal type (so billing can never overflow).
pub const MAX_MONEY: u32 = 1_000_000;
/// The most decimal places of a rate or fee.
pub const MAX_MONEY_SCALE: u32 = 12;

/// A non-negative exact decimal, at most [`MAX_MONEY`] with at most [`MAX_MONEY_SCALE`] places.
pub fn parse_money(what: &str, s: &str) -> Result<Decimal, String> {
    let value = Decimal::from_str_exact(s.trim())
        .map_err(|_| format!("{what} '{s}' is not a decimal number"))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{what} '{s}' is negative"));
    }
    if value > Decimal::from(MAX_MONEY) {
        return Err(format!("{what} '{s}' is over {MAX_MONEY}"));
    }
    if value.scale() > MAX_MONEY_SCALE {
        return Err(format!(
            "{what} '{s}' has more than {MAX_MONEY_SCALE} decimal places"
        ));
    }
    Ok(value.abs())
}

fn money(col: Column, s: Option<&str>) -> Result<Option<Decimal>, String> {
    s.map(|s| parse_money(col.as_str(), s)).transpose()
}

/// A whole number of seconds, 0..=86400.
pub fn parse_seconds(what: &str, s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(v) if v <= 86_400 => Ok(v),
        _ => Err(format!(
            "{what} '{s}' is not a whole number of seconds (0-86400)"
        )),
    }
}

fn seconds(col: Column, s: Option<&str>) -> Result<Option<u32>, String> {
    s.map(|s| parse_seconds(col.as_str(), s)).transpose()
}

/// Where a row is in its deck, for problems: a CSV line or an IME `rates` entry.
#[derive(Debug, Clone, Copy)]
enum Place {
    Line(u64),
    Row(usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Row(i) => write!(f, "rates[{i}]"),
        }
    }
}

/// Collects rows, rejecting duplicates, stopping the report at [`MAX_PROBLEMS`].
struct Collector {
    rules: Vec<(String, Rule)>,
    /// `None` when the deck has no terms columns.
    terms: Option<Vec<Terms>>,
    seen: HashMap<String, Place>,
    problems: Vec<String>,
    names: HashMap<String, Arc<str>>,
}

impl Collector {
    fn new(with_terms: bool) -> Self {
        Self {
            rules: Vec::new(),
            terms: with_terms.then(Vec::new),
            seen: HashMap::new(),
            problems: Vec::new(),
            names: HashMap::new(),
        }
    }

    /// Adds a row read by `cell` (its rule and, when the deck has them, its terms).
    fn read<'a>(
        &mut self,
        place: Place,
        cell: impl Fn(Column) -> Option<&'a str>,
        defaults: &Defaults,
    ) {
        let rule = build_rule(&cell, defaults, &mut self.names);
        let row = match (rule, self.terms.is_some()) {
            (Ok(rule), true) => build_terms(&cell).map(|t| (rule, Some(t))),
            (Ok(rule), false) => Ok((rule, None)),
            (Err(e), _) => Err(e),
        };
        self.push(place, row);
    }

    fn push(&mut self, place: Place, row: Result<((String, Rule), Option<Terms>), String>) {
        match row {
            Err(why) => self.problem(format!("{place}: {why}")),
            Ok(((prefix, rule), terms)) => {
                if let Some(first) = self.seen.get(&prefix) {
                    let msg = format!("{place}: duplicate prefix '{prefix}' (first at {first})");
                    self.problem(msg);
                } else {
                    self.seen.insert(prefix.clone(), place);
                    self.rules.push((prefix, rule));
                    if let (Some(all), Some(t)) = (&mut self.terms, terms) {
                        all.push(t);
                    }
                }
            }
        }
    }

    fn problem(&mut self, msg: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(msg);
        }
    }

    /// The deck of the rules and their terms (none when it has no terms columns).
    fn finish(self) -> Result<Deck, DeckError> {
        if self.problems.is_empty() {
            Ok(Deck {
                rules: self.rules,
                terms: self.terms.unwrap_or_default(),
                ..Deck::default()
            })
        } else {
            Err(DeckError::Rows(self.problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_bounded() {
        assert!(parse_money("rate", "1000000").is_ok());
        assert!(parse_money("rate", "1000000.01")
            .unwrap_err()
            .contains("over"));
        assert!(parse_money("rate", "99999999999999999999999999")
            .unwrap_err()
            .contains("over"));
        assert!(parse_money("rate", "0.0000000000001")
            .unwrap_err()
            .contains("decimal places"));
        assert!(parse_money("rate", "1e5").is_err());
    }

    proptest::proptest! {
        /// Decks come from outside: any bytes give a deck or an error, never a panic.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), text in "[0-9a-z,\"#\n{}\\[\\]:._-]{0,300}") {
            let _ = parse_csv(&bytes);
            let _ = parse_ime(&bytes, None);
            let _ = parse_csv(text.as_bytes());
            let _ = parse_ime(text.as_bytes(), Some("x"));
            let _ = parse_csv(format!("prefix,name,rate,connect_fee,mcd,pulse\n{text}").as_bytes());
        }
    }
}
