//! Operator datasets for smart lookup (API.md §4, §8): the UK number-range (`range`), US LRN
//! (`lrn`), HLR (`hlr`) and do-not-call (`tps`) tables, read from CSV.

use crate::number::{is_prefix, normalise};
use std::collections::HashMap;

/// Which dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    Range,
    Lrn,
    Hlr,
    Tps,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 4] = [Self::Range, Self::Lrn, Self::Hlr, Self::Tps];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::Lrn => "lrn",
            Self::Hlr => "hlr",
            Self::Tps => "tps",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The key column: a prefix (longest-prefix match) or a whole number (exact match).
    pub fn key(self) -> &'static str {
        match self {
            Self::Range | Self::Hlr => "prefix",
            Self::Lrn => "tn",
            Self::Tps => "number",
        }
    }

    /// True when keys are prefixes matched longest-first; else whole numbers matched exactly.
    pub fn by_prefix(self) -> bool {
        matches!(self, Self::Range | Self::Hlr)
    }

    /// The fields a row may carry besides its key.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Range => &["area_code", "de", "fg", "status", "date_modified"],
            Self::Lrn => &[
                "lrn",
                "ocn",
                "lata",
                "city",
                "state",
                "jurisdiction",
                "lec",
                "local",
            ],
            Self::Hlr => &[
                "mcc",
                "mnc",
                "country",
                "brand",
                "operator",
                "status",
                "bank",
                "notes",
                "mcc_country",
                "imsi",
            ],
            Self::Tps => &[],
        }
    }
}

/// A parsed dataset: the fields present (in file order) and each key's values in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetRows {
    pub fields: Vec<String>,
    pub rows: Vec<(String, Vec<String>)>,
}

/// Reads a dataset CSV: a header naming the key column and any of the kind's fields; every row
/// a key (digits after normalisation) and values. Any bad row rejects the whole file, with the
/// first problems listed by line.
pub fn parse_csv(kind: DatasetKind, bytes: &[u8]) -> Result<DatasetRows, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|_| "line 1: unreadable CSV header".to_owned())?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let key_at = header
        .iter()
        .position(|h| h == kind.key())
        .ok_or_else(|| format!("header lacks the key column '{}'", kind.key()))?;
    if let Some(unknown) = header
        .iter()
        .find(|h| *h != kind.key() && !kind.fields().contains(&h.as_str()))
    {
        return Err(format!(
            "header names '{unknown}', which is not a field of {} (fields: {})",
            kind.as_str(),
            kind.fields().join(", ")
        ));
    }
    let fields: Vec<String> = header
        .iter()
        .filter(|h| *h != kind.key())
        .cloned()
        .collect();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!(
                    "line {}: unreadable CSV",
                    e.position().map_or(0, |p| p.line())
                ));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != header.len() {
            problems.push(format!(
                "line {line}: {} fields where the header names {}",
                record.len(),
                header.len()
            ));
        } else {
            let raw = &record[key_at];
            let key = if kind.by_prefix() {
                Some(raw.to_owned())
                    .filter(|k| is_prefix(k))
                    .ok_or_else(|| format!("line {line}: prefix '{raw}' is not 1-20 digits"))
            } else {
                normalise(raw).map_err(|e| format!("line {line}: {e}"))
            };
            match key {
                Err(e) => problems.push(e),
                Ok(key) => match seen.insert(key.clone(), line) {
                    Some(first) => problems.push(format!(
                        "line {line}: duplicate key '{key}' (first at line {first})"
                    )),
                    None => {
                        let values = record
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| *i != key_at)
                            .map(|(_, v)| v.to_owned())
                            .collect();
                        rows.push((key, values));
                    }
                },
            }
        }
        if problems.len() >= 10 {
            break;
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if rows.is_empty() {
        return Err("the file has no rows".into());
    }
    Ok(DatasetRows { fields, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind() {
        let lrn = parse_csv(
            DatasetKind::Lrn,
            b"tn,lrn,state\n+1 212 555 0100,2125550000,NY\n13105550100,3105550000,CA\n",
        )
        .unwrap();
        assert_eq!(lrn.fields, ["lrn", "state"]);
        assert_eq!(
            lrn.rows[0],
            (
                "12125550100".to_owned(),
                vec!["2125550000".to_owned(), "NY".to_owned()]
            )
        );
        let tps = parse_csv(DatasetKind::Tps, b"number\n441234567890\n").unwrap();
        assert!(tps.fields.is_empty());
    }

    #[test]
    fn bad_files_are_rejected_whole() {
        assert!(parse_csv(DatasetKind::Range, b"area_code\n1\n")
            .unwrap_err()
            .contains("key column 'prefix'"));
        assert!(parse_csv(DatasetKind::Range, b"prefix,colour\n1,red\n")
            .unwrap_err()
            .contains("colour"));
        let err = parse_csv(
            DatasetKind::Hlr,
            b"prefix,mcc\n447,234\n44x,234\n447,235\n448\n",
        )
        .unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("line 4: duplicate") && err.contains("line 5"),
            "{err}"
        );
        assert!(parse_csv(DatasetKind::Tps, b"number\n")
            .unwrap_err()
            .contains("no rows"));
    }
}
