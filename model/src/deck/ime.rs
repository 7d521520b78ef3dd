//! IME ("Interconnect Made Easy") 1.x decks: reading one card of a document, checking its
//! `metadata.checksum`, and writing a card as a document with its checksum.
//!
//! Reading keeps the document as raw text borrowed from the upload: only the small parts of a
//! card (`fields`, `rate`, `charge`, `currency`) become JSON values; its `rates` are split into
//! rows and each row becomes a rule before the next is read.

use super::jcs::{self, Members};
use super::{
    has_terms, parse_money, parse_seconds, Collector, Column, Deck, DeckError, Defaults, Place,
};
use crate::rule::Rule;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

/// A raw value read as `T`, or `None` when it is something else.
fn decode<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    serde_json::from_str(raw.get()).ok()
}

/// Reads an IME 1.x document. `card` names the card to read when the document holds several.
pub fn parse_ime(bytes: &[u8], card: Option<&str>) -> Result<Deck, DeckError> {
    let doc: &RawValue = serde_json::from_slice(bytes).map_err(|e| {
        DeckError::Malformed(format!(
            "not a JSON document (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let root: Members = decode(doc)
        .ok_or_else(|| DeckError::Malformed("an IME document is a JSON object".into()))?;
    let schema = root
        .get("schema_version")
        .and_then(|v| decode::<String>(v))
        .unwrap_or_default();
    if !schema.starts_with("1.") {
        return Err(DeckError::Malformed(format!(
            "schema_version '{schema}' is not 1.x"
        )));
    }
    verify_checksum(&root)?;
    let cards: Members = root
        .get("cards")
        .and_then(|v| decode(v))
        .filter(|c: &Members| !c.is_empty())
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
    let card_obj: Members = decode(card_value)
        .ok_or_else(|| DeckError::Malformed(format!("card '{card_key}' is not an object")))?;
    let small = |key: &str| card_obj.get(key).and_then(|v| decode::<Value>(v));
    let fields: Vec<Option<Column>> = small("fields")
        .as_ref()
        .and_then(Value::as_array)
        .ok_or_else(|| DeckError::Malformed(format!("card '{card_key}' has no 'fields' list")))?
        .iter()
        .map(|f| {
            f.get("name")
                .and_then(Value::as_str)
                .and_then(Column::from_header)
        })
        .collect();
    let rate_settings: Members = card_obj
        .get("rate")
        .and_then(|v| decode(v))
        .unwrap_or_default();
    let setting = |key: &str| rate_settings.get(key).and_then(|v| raw_text(v));
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
    // Where each column is in a row (its first field of that name), worked out once.
    let mut position: HashMap<Column, usize> = HashMap::new();
    for (i, field) in fields.iter().enumerate() {
        if let Some(col) = field {
            position.entry(*col).or_insert(i);
        }
    }
    let rows: Vec<&RawValue> = card_obj
        .get("rates")
        .and_then(|v| decode(v))
        .ok_or_else(|| DeckError::Malformed(format!("card '{card_key}' has no 'rates' list")))?;
    let mut out = Collector::new(has_terms(fields.iter().flatten().copied()));
    for (i, row) in rows.into_iter().enumerate() {
        let Some(cells) = decode::<Vec<&RawValue>>(row) else {
            out.problem(format!("{}: a row is a list of values", Place::Row(i)));
            continue;
        };
        let texts: Vec<Option<Cow<str>>> = cells.into_iter().map(raw_text).collect();
        let cell = |c: Column| {
            position
                .get(&c)
                .and_then(|&i| texts.get(i))
                .and_then(|t| t.as_deref())
        };
        out.read(Place::Row(i), cell, &defaults);
    }
    let charge = small("charge");
    let charge = |key: &str| charge.as_ref().and_then(|c| c.get(key));
    Ok(Deck {
        currency: small("currency")
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned),
        precision: charge("precision")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok()),
        rounding: charge("rounding")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..out.finish()?
    })
}

/// A cell or a `rate` setting as text: strings trimmed, numbers in their exact source form; null, empty, lists and
/// objects → `None`.
fn raw_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get().trim();
    match text.as_bytes().first()? {
        b'"' => decode::<Cow<str>>(raw)
            .map(|s| match s {
                Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
                Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
            })
            .filter(|s| !s.is_empty()),
        b'n' | b'[' | b'{' => None,
        _ => Some(Cow::Borrowed(text)),
    }
}

/// Checks `metadata.checksum` when present: lowercase hex SHA-256 of the RFC 8785 canonical
/// form of the document without `metadata.checksum`/`metadata.signature` (and without
/// `metadata` if that leaves it empty).
fn verify_checksum(root: &Members) -> Result<(), DeckError> {
    let Some(declared) = root
        .get("metadata")
        .and_then(|m| decode::<Members>(m))
        .and_then(|m| m.get("checksum").and_then(|c| decode::<String>(c)))
    else {
        return Ok(());
    };
    let actual = checksum(root).map_err(DeckError::Malformed)?;
    if actual.eq_ignore_ascii_case(declared.trim()) {
        Ok(())
    } else {
        Err(DeckError::Checksum { declared, actual })
    }
}

/// The IME checksum of a document given as its top-level members.
fn checksum(root: &Members) -> Result<String, String> {
    let metadata = match root.get("metadata") {
        None => None,
        Some(meta) => match decode::<Members>(meta) {
            None => Some(Cow::Borrowed(*meta)),
            Some(mut meta) => {
                meta.remove("checksum");
                meta.remove("signature");
                (!meta.is_empty())
                    .then(|| serde_json::value::to_raw_value(&meta).map(Cow::Owned))
                    .transpose()
                    .map_err(|e| e.to_string())?
            }
        },
    };
    let mut members: Vec<(&str, &RawValue)> = root
        .iter()
        .filter(|(key, _)| *key != "metadata")
        .map(|(key, v)| (key.as_str(), *v))
        .collect();
    if let Some(meta) = &metadata {
        members.push(("metadata", meta));
    }
    let mut hash = Sha256::new();
    jcs::object(members, &mut hash, 0)?;
    Ok(hex::encode(hash.finalize()))
}

/// The IME checksum of a document (whatever its `metadata.checksum` holds).
pub fn ime_checksum(doc: &Value) -> Result<String, String> {
    let text = serde_json::to_string(doc).map_err(|e| e.to_string())?;
    let root: Members =
        serde_json::from_str(&text).map_err(|_| "an IME document is a JSON object".to_owned())?;
    checksum(&root)
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
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../tests/data/ime-example.json");

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

    #[test]
    fn deep_or_odd_documents_are_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        for doc in [
            format!(r#"{{"schema_version":"1.0","x":{deep}"#),
            format!(
                r#"{{"schema_version":"1.0","metadata":{{"checksum":"00"}},"x":{}{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ),
        ] {
            assert!(matches!(
                parse_ime(doc.as_bytes(), None),
                Err(DeckError::Malformed(_))
            ));
        }
    }

    #[test]
    fn card_rate_settings_fill_cells_a_row_leaves_out() {
        let doc = r#"{"schema_version":"1.0","cards":{"c":{
            "fields":[{"name":"prefix"},{"name":"rate"}],
            "rate":{"default_initial":"30","default_pulse":6,"connection":0.01},
            "rates":[["441",0.02],["442","0.03"]]}}}"#;
        let deck = parse_ime(doc.as_bytes(), None).unwrap();
        let rule = &deck.rules[1].1;
        assert_eq!((rule.mcd, rule.pulse), (30, 6));
        assert_eq!(rule.connect_fee.to_string(), "0.01");
        assert_eq!(rule.rate.to_string(), "0.03");
    }
}
