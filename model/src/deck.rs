//! Rate decks: whole rule sets read from CSV or from the open "Interconnect Made Easy" (IME)
//! JSON format, and written back in either form.
//!
//! A deck is all or nothing: any bad row rejects the whole deck, with the first problems
//! listed by line (CSV) or row (IME), so nothing of a bad deck is ever applied.

use crate::number::is_prefix;
use crate::rule::{Rule, RuleStatus};
use rust_decimal::Decimal;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
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
    pub currency: Option<String>,
    pub precision: Option<u32>,
    pub rounding: Option<String>,
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

/// Collects rows, rejecting duplicates, stopping the report at [`MAX_PROBLEMS`].
struct Collector {
    rules: Vec<(String, Rule)>,
    seen: HashMap<String, String>,
    problems: Vec<String>,
    names: HashMap<String, Arc<str>>,
}

impl Collector {
    fn new() -> Self {
        Self {
            rules: Vec::new(),
            seen: HashMap::new(),
            problems: Vec::new(),
            names: HashMap::new(),
        }
    }

    fn push(&mut self, place: String, row: Result<(String, Rule), String>) {
        match row {
            Err(why) => self.problem(format!("{place}: {why}")),
            Ok((prefix, rule)) => {
                if let Some(first) = self.seen.get(&prefix) {
                    let msg = format!("{place}: duplicate prefix '{prefix}' (first at {first})");
                    self.problem(msg);
                } else {
                    self.seen.insert(prefix.clone(), place);
                    self.rules.push((prefix, rule));
                }
            }
        }
    }

    fn problem(&mut self, msg: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(msg);
        }
    }

    fn finish(self) -> Result<Vec<(String, Rule)>, DeckError> {
        if self.problems.is_empty() {
            Ok(self.rules)
        } else {
            Err(DeckError::Rows(self.problems))
        }
    }
}

/// Reads a CSV deck: a header row, then one rule a row; lines starting with `#` are comments.
pub fn parse_csv(bytes: &[u8]) -> Result<Deck, DeckError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(DeckError::Malformed(
                "deck is empty: a header row is required".into(),
            ))
        }
        Some(Err(e)) => return Err(DeckError::Malformed(format!("line 1: {}", csv_reason(&e)))),
        Some(Ok(h)) => h,
    };
    let columns: Vec<Option<Column>> = header.iter().map(Column::from_header).collect();
    let missing: Vec<&str> = Column::REQUIRED
        .iter()
        .filter(|c| !columns.contains(&Some(**c)))
        .map(|c| c.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(DeckError::Malformed(format!(
            "line {}: header lacks column(s) {}",
            header.position().map_or(1, |p| p.line()),
            missing.join(", ")
        )));
    }
    let mut position: HashMap<Column, usize> = HashMap::new();
    for (i, col) in columns.iter().enumerate() {
        if let Some(col) = col {
            if position.insert(*col, i).is_some() {
                return Err(DeckError::Malformed(format!(
                    "header names column '{}' twice",
                    col.as_str()
                )));
            }
        }
    }
    let mut out = Collector::new();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.problem(format!("line {line}: {}", csv_reason(&e)));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let short = Column::REQUIRED
            .iter()
            .find(|c| position[c] >= record.len());
        let row = match short {
            Some(c) => Err(format!("missing column '{}'", c.as_str())),
            None => {
                let cell = |c: Column| {
                    position
                        .get(&c)
                        .and_then(|&i| record.get(i))
                        .filter(|s| !s.is_empty())
                };
                build_rule(cell, &NO_DEFAULTS, &mut out.names)
            }
        };
        out.push(format!("line {line}"), row);
    }
    Ok(Deck {
        rules: out.finish()?,
        ..Deck::default()
    })
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        _ => "unreadable CSV".into(),
    }
}

/// Reads an IME 1.x document. `card` names the card to read when the document holds several.
pub fn parse_ime(bytes: &[u8], card: Option<&str>) -> Result<Deck, DeckError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
        DeckError::Malformed(format!(
            "not a JSON document (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let root = doc
        .as_object()
        .ok_or_else(|| DeckError::Malformed("an IME document is a JSON object".into()))?;
    let schema = root
        .get("schema_version")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !schema.starts_with("1.") {
        return Err(DeckError::Malformed(format!(
            "schema_version '{schema}' is not 1.x"
        )));
    }
    verify_checksum(&doc)?;
    let cards = root
        .get("cards")
        .and_then(Value::as_object)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            DeckError::Malformed("'cards' must be an object with at least one card".into())
        })?;
    let (card_key, card_value) = match card {
        Some(name) => cards
            .get_key_value(name)
            .ok_or_else(|| DeckError::Malformed(format!("document has no card '{name}'")))?,
        None if cards.len() == 1 => cards.iter().next().expect("one card"),
        None => {
            let names: Vec<&str> = cards.keys().map(String::as_str).collect();
            return Err(DeckError::Malformed(format!(
                "document holds {} cards ({}); name one with 'ime_card'",
                names.len(),
                names.join(", ")
            )));
        }
    };
    let card_obj = card_value
        .as_object()
        .ok_or_else(|| DeckError::Malformed(format!("card '{card_key}' is not an object")))?;
    let fields: Vec<Option<Column>> = card_obj
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| DeckError::Malformed(format!("card '{card_key}' has no 'fields' list")))?
        .iter()
        .map(|f| {
            f.get("name")
                .and_then(Value::as_str)
                .and_then(Column::from_header)
        })
        .collect();
    let rate_settings = card_obj.get("rate").and_then(Value::as_object);
    let setting = |key: &str| rate_settings.and_then(|r| r.get(key)).and_then(scalar_text);
    let defaults = Defaults {
        connect_fee: setting("connection")
            .map(|s| parse_money("rate.connection", &s))
            .transpose()
            .map_err(DeckError::Malformed)?,
        mcd: setting("default_initial")
            .map(|s| parse_seconds("rate.default_initial", &s))
            .transpose()
            .map_err(DeckError::Malformed)?,
        pulse: setting("default_pulse")
            .map(|s| parse_seconds("rate.default_pulse", &s))
            .transpose()
            .map_err(DeckError::Malformed)?,
    };
    for required in [Column::Prefix, Column::Rate] {
        if !fields.contains(&Some(required)) {
            return Err(DeckError::Malformed(format!(
                "card '{card_key}' fields lack '{}'",
                required.as_str()
            )));
        }
    }
    let rows = card_obj
        .get("rates")
        .and_then(Value::as_array)
        .ok_or_else(|| DeckError::Malformed(format!("card '{card_key}' has no 'rates' list")))?;
    let mut out = Collector::new();
    for (i, row) in rows.iter().enumerate() {
        let place = format!("rates[{i}]");
        let Some(cells) = row.as_array() else {
            out.problem(format!("{place}: a row is a list of values"));
            continue;
        };
        let texts: Vec<Option<String>> = cells.iter().map(scalar_text).collect();
        let cell = |c: Column| {
            fields
                .iter()
                .position(|f| *f == Some(c))
                .and_then(|i| texts.get(i))
                .and_then(|t| t.as_deref())
        };
        let row = build_rule(cell, &defaults, &mut out.names);
        out.push(place, row);
    }
    let rounding = card_obj
        .get("charge")
        .and_then(|c| c.get("rounding"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let precision = card_obj
        .get("charge")
        .and_then(|c| c.get("precision"))
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok());
    Ok(Deck {
        rules: out.finish()?,
        currency: card_obj
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_owned),
        precision,
        rounding,
    })
}

/// A cell as text: strings as they are, numbers in their exact source form; null and empty → `None`.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks `metadata.checksum` when present: lowercase hex SHA-256 of the RFC 8785 canonical
/// form of the document without `metadata.checksum`/`metadata.signature` (and without
/// `metadata` if that leaves it empty).
fn verify_checksum(doc: &Value) -> Result<(), DeckError> {
    let Some(declared) = doc
        .get("metadata")
        .and_then(|m| m.get("checksum"))
        .and_then(Value::as_str)
    else {
        return Ok(());
    };
    let actual = ime_checksum(doc).map_err(DeckError::Malformed)?;
    if actual.eq_ignore_ascii_case(declared.trim()) {
        Ok(())
    } else {
        Err(DeckError::Checksum {
            declared: declared.to_owned(),
            actual,
        })
    }
}

/// The IME checksum of a document (whatever its `metadata.checksum` holds).
pub fn ime_checksum(doc: &Value) -> Result<String, String> {
    let mut stripped = doc.clone();
    if let Some(root) = stripped.as_object_mut() {
        let empty = match root.get_mut("metadata").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.remove("checksum");
                meta.remove("signature");
                meta.is_empty()
            }
            None => false,
        };
        if empty {
            root.remove("metadata");
        }
    }
    let mut canonical = String::new();
    jcs(&stripped, &mut canonical)?;
    Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// RFC 8785 JSON Canonicalization: sorted keys (UTF-16 order), ECMAScript number form.
fn jcs(v: &Value, out: &mut String) -> Result<(), String> {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.push_str(&serde_json::to_string(v).map_err(|e| e.to_string())?);
        }
        Value::Number(n) => {
            let f: f64 = n
                .to_string()
                .parse()
                .map_err(|_| format!("number {n} is out of range"))?;
            if !f.is_finite() {
                return Err(format!("number {n} is out of range"));
            }
            out.push_str(ryu_js::Buffer::new().format_finite(f));
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).map_err(|e| e.to_string())?);
                out.push(':');
                jcs(&map[key], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// The CSV header edgerate writes.
pub const CSV_HEADER: &str =
    "prefix,name,rate,connect_fee,mcd,pulse,grace,rate_inter,rate_intra,status";

/// Appends one CSV field, quoted when it holds a separator, a quote or a line break, or starts
/// with the comment mark `#`.
///
/// A cell a spreadsheet would run as a formula (starting `=`, `+`, `-`, `@`, a tab or a CR) is
/// written with a leading `'`, which spreadsheets show as text; a deck import takes the `'` off
/// again ([`unneutralise`]), so an exported deck imports as it was.
pub fn push_csv_field(out: &mut String, field: &str) {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if field.contains([',', '"', '\n', '\r']) || field.starts_with('#') {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        if formula {
            out.push('\'');
        }
        out.push_str(field);
    }
}

/// A text cell as read back: the `'` that [`push_csv_field`] put before a formula-like cell
/// taken off.
pub fn unneutralise(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

/// Appends one rule as a CSV row (the header is [`CSV_HEADER`]).
pub fn write_csv_row(out: &mut String, prefix: &str, rule: &Rule) {
    use std::fmt::Write;
    let opt = |d: Option<Decimal>| d.map(|v| v.normalize().to_string()).unwrap_or_default();
    let _ = write!(out, "{prefix},");
    push_csv_field(out, &rule.name);
    let _ = writeln!(
        out,
        ",{},{},{},{},{},{},{},{}",
        rule.rate.normalize(),
        rule.connect_fee.normalize(),
        rule.mcd,
        rule.pulse,
        rule.grace,
        opt(rule.rate_inter),
        opt(rule.rate_intra),
        rule.status.as_str()
    );
}

/// What an IME export says about the card.
#[derive(Debug, Clone)]
pub struct ImeCard<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub direction: &'a str,
    pub currency: &'a str,
    pub tech_prefix: &'a str,
    pub precision: u32,
    pub rounding: &'a str,
    pub revision: u32,
    /// Unix seconds the document is dated.
    pub date: i64,
}

/// Writes an IME 1.0 document with its checksum.
pub fn write_ime<'r>(card: &ImeCard<'_>, rules: impl Iterator<Item = (String, &'r Rule)>) -> Value {
    let num = |d: Decimal| {
        Value::Number(
            Number::from_str(&d.normalize().to_string()).expect("a decimal is a JSON number"),
        )
    };
    let opt = |d: Option<Decimal>| d.map(num).unwrap_or(Value::Null);
    let rates: Vec<Value> = rules
        .map(|(prefix, r)| {
            Value::Array(vec![
                Value::String(prefix),
                Value::String(r.name.to_string()),
                num(r.rate),
                num(r.connect_fee),
                Value::from(r.mcd),
                Value::from(r.pulse),
                Value::from(r.grace),
                opt(r.rate_inter),
                opt(r.rate_intra),
                Value::String(r.status.as_str().to_owned()),
            ])
        })
        .collect();
    let fields: Vec<Value> = [
        "prefix",
        "name",
        "rate",
        "connection_fee",
        "initial_interval",
        "billing_interval",
        "grace",
        "rate_inter",
        "rate_intra",
        "status",
    ]
    .iter()
    .map(|f| serde_json::json!({ "name": f }))
    .collect();
    let mut card_obj = Map::new();
    card_obj.insert("name".into(), card.name.into());
    card_obj.insert("type".into(), card.direction.into());
    card_obj.insert("currency".into(), card.currency.into());
    card_obj.insert("endpoint".into(), "default".into());
    if !card.tech_prefix.is_empty() {
        card_obj.insert("tech_prefix".into(), card.tech_prefix.into());
    }
    card_obj.insert("fields".into(), Value::Array(fields));
    card_obj.insert(
        "charge".into(),
        serde_json::json!({ "precision": card.precision, "rounding": card.rounding }),
    );
    card_obj.insert("rates".into(), Value::Array(rates));
    let mut cards = Map::new();
    cards.insert(card.id.into(), Value::Object(card_obj));
    let date = crate::time::format_date(card.date);
    let mut doc = serde_json::json!({
        "name": card.name,
        "schema_version": "1.0.0",
        "version": format!("{}.0", card.revision),
        "date": date,
        "cards": Value::Object(cards),
    });
    let checksum = ime_checksum(&doc).expect("an exported document has finite numbers");
    doc["metadata"] = serde_json::json!({ "checksum": checksum });
    doc
}

#[cfg(test)]
mod csv_cell_tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_read_back() {
        for (cell, written) in [
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("UK, Mobile", "\"UK, Mobile\""),
            ("plain", "plain"),
        ] {
            let mut out = String::new();
            push_csv_field(&mut out, cell);
            assert_eq!(out, written);
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(out.as_bytes());
            let record = reader.records().next().unwrap().unwrap();
            assert_eq!(unneutralise(&record[0]), cell);
        }
        assert_eq!(unneutralise("'quoted"), "'quoted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../tests/data/ime-example.json");

    #[test]
    fn reads_csv_with_aliases_and_comments() {
        let csv = "# a comment\nprefix,name,cost,connection_fee,initial_interval,billing_interval,extra\n\
                   441,UK Landline,0.012,0,60,60,x\n\"447\",\"UK, Mobile\",0.028,0.01,30,6,y\n";
        let deck = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(deck.rules.len(), 2);
        assert_eq!(deck.rules[1].0, "447");
        assert_eq!(&*deck.rules[1].1.name, "UK, Mobile");
        assert_eq!(deck.rules[1].1.pulse, 6);
        assert_eq!(deck.rules[1].1.connect_fee.to_string(), "0.01");
    }

    #[test]
    fn bad_rows_reject_the_deck_with_line_numbers() {
        let csv = "prefix,name,rate,connect_fee,mcd,pulse\n\
                   441,a,0.01,0,60,60\n44x,b,0.01,0,60,60\n442,c,-1,0,60,60\n441,d,0.01,0,60,60\n443,e,0.01,0,60,0\n444,f\n";
        let Err(DeckError::Rows(problems)) = parse_csv(csv.as_bytes()) else {
            panic!("deck accepted")
        };
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems[0].starts_with("line 3:") && problems[0].contains("44x"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("line 4:") && problems[1].contains("negative"));
        assert!(problems[2].starts_with("line 5:") && problems[2].contains("duplicate"));
        assert!(problems[3].starts_with("line 6:") && problems[3].contains("pulse"));
        assert!(problems[4].starts_with("line 7:") && problems[4].contains("missing column"));
    }

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

    #[test]
    fn missing_header_column_is_rejected() {
        let err = parse_csv(b"prefix,name,rate\n1,a,1\n").unwrap_err();
        assert!(err.to_string().contains("connect_fee"), "{err}");
        assert!(matches!(parse_csv(b""), Err(DeckError::Malformed(_))));
    }

    #[test]
    fn reads_the_ime_example() {
        let deck = parse_ime(EXAMPLE.as_bytes(), None).unwrap();
        assert_eq!(deck.rules.len(), 3);
        assert_eq!(deck.rules[0].0, "441");
        assert_eq!(deck.rules[0].1.rate.to_string(), "0.012");
        assert_eq!(deck.currency.as_deref(), Some("USD"));
        assert_eq!(deck.precision, Some(4));
    }

    #[test]
    fn ime_checksum_is_verified() {
        let mut doc: Value = serde_json::from_str(EXAMPLE).unwrap();
        let sum = ime_checksum(&doc).unwrap();
        doc["metadata"]["checksum"] = Value::String(sum);
        let good = serde_json::to_vec(&doc).unwrap();
        assert!(parse_ime(&good, None).is_ok());
        doc["cards"]["default"]["rates"][0][2] = serde_json::json!(0.013);
        let tampered = serde_json::to_vec(&doc).unwrap();
        assert!(matches!(
            parse_ime(&tampered, None),
            Err(DeckError::Checksum { .. })
        ));
    }

    #[test]
    fn jcs_matches_rfc8785_number_and_key_rules() {
        let v: Value = serde_json::from_str(
            r#"{"b":1.0E2,"a":[0.000001,1e21,-0,"\u00e9\n"],"\u20ac":1,"1":true}"#,
        )
        .unwrap();
        let mut out = String::new();
        jcs(&v, &mut out).unwrap();
        assert_eq!(
            out,
            "{\"1\":true,\"a\":[0.000001,1e+21,0,\"é\\n\"],\"b\":100,\"€\":1}"
        );
    }

    #[test]
    fn ime_export_round_trips() {
        let deck = parse_ime(EXAMPLE.as_bytes(), None).unwrap();
        let card = ImeCard {
            id: "c1",
            name: "Retail",
            direction: "termination",
            currency: "USD",
            tech_prefix: "",
            precision: 4,
            rounding: "up",
            revision: 2,
            date: 0,
        };
        let doc = write_ime(&card, deck.rules.iter().map(|(p, r)| (p.clone(), r)));
        let bytes = serde_json::to_vec(&doc).unwrap();
        let back = parse_ime(&bytes, None).unwrap();
        assert_eq!(back.rules, deck.rules);
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

    #[test]
    fn csv_export_round_trips() {
        let csv = "prefix,name,rate,connect_fee,mcd,pulse,grace,rate_inter,rate_intra,status\n\
                   1201,\"Quoted \"\"name\"\", here\",0.01,0.5,6,6,2,0.011,0.009,Blocked\n";
        let deck = parse_csv(csv.as_bytes()).unwrap();
        let mut out = format!("{CSV_HEADER}\n");
        for (p, r) in &deck.rules {
            write_csv_row(&mut out, p, r);
        }
        assert_eq!(parse_csv(out.as_bytes()).unwrap().rules, deck.rules);
    }
}
