//! CSV rate decks: parsed whole or rejected with a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(deck) = edgerate_model::deck::parse_csv(data) {
        // What was accepted exports and parses back to the same rules.
        let mut out = String::from(edgerate_model::deck::CSV_HEADER);
        out.push('\n');
        for (prefix, rule) in &deck.rules {
            edgerate_model::deck::write_csv_row(&mut out, prefix, rule);
        }
        let again = edgerate_model::deck::parse_csv(out.as_bytes()).expect("an export parses");
        assert_eq!(again.rules.len(), deck.rules.len());
    }
});
