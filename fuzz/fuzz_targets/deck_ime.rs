//! Interconnect Made Easy JSON decks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgerate_model::deck::parse_ime(data, None);
});
