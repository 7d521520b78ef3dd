//! Operator dataset CSV, for every kind.
#![no_main]

use edgerate_model::dataset::DatasetKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [
        DatasetKind::Range,
        DatasetKind::Lrn,
        DatasetKind::Hlr,
        DatasetKind::Tps,
    ] {
        let _ = edgerate_model::dataset::parse_csv(kind, data);
    }
});
