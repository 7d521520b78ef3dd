//! SIP datagrams as the user agent receives them from a trunk.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgerate_sip::message::parse(data);
});
