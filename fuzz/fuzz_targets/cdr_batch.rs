//! CDR batches as `cdr/add` reads them: a JSON array or a CSV body.
#![no_main]

use edgerate_api::vars::Vars;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let vars = runtime.block_on(Vars::parse(
        None,
        Some("text/csv"),
        bytes::Bytes::copy_from_slice(data),
    ));
    if let Ok(vars) = vars {
        if let Ok(cdrs) = edgerate_api::cdr::read_batch(&vars, 1_700_000_000) {
            for cdr in cdrs {
                cdr.validate(1_700_000_000).expect("what parses is in bounds");
            }
        }
    }
});
