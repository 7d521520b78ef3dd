//! Peer wire messages: decoded or refused; what decodes encodes back to the same message.
#![no_main]

use edgerate_replication::sync::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let again = Message::decode(&message.encode()).expect("an encoded message decodes");
        assert_eq!(again, message);
    }
});
