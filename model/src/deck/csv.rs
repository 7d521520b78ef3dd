//! CSV decks: reading one (header row, aliases, `#` comments) and writing rules back as rows
//! whose cells a spreadsheet will not run as formulas.

use super::{has_terms, Collector, Column, Deck, DeckError, Place, NO_DEFAULTS};
use crate::rule::Rule;
use rust_decimal::Decimal;
use std::collections::HashMap;

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
    let mut out = Collector::new(has_terms(columns.iter().flatten().copied()));
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.problem(format!("{}: {}", Place::Line(line), csv_reason(&e)));
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
        if let Some(c) = short {
            out.push(
                Place::Line(line),
                Err(format!("missing column '{}'", c.as_str())),
            );
            continue;
        }
        let cell = |c: Column| {
            position
                .get(&c)
                .and_then(|&i| record.get(i))
                .filter(|s| !s.is_empty())
        };
        out.read(Place::Line(line), cell, &NO_DEFAULTS);
    }
    out.finish()
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        _ => "unreadable CSV".into(),
    }
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

#[cfg(test)]
mod tests {
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
    fn missing_header_column_is_rejected() {
        let err = parse_csv(b"prefix,name,rate\n1,a,1\n").unwrap_err();
        assert!(err.to_string().contains("connect_fee"), "{err}");
        assert!(matches!(parse_csv(b""), Err(DeckError::Malformed(_))));
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
