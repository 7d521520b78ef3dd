//! Request variables: a query string, a content type and a body, then every accessor a
//! service uses. Never a panic, whatever the bytes.
#![no_main]

use edgerate_api::vars::Vars;
use libfuzzer_sys::fuzz_target;

/// Splits the input at the first two NUL bytes: query, content type, body.
fn split(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let query = parts.next().unwrap_or_default();
    let content_type = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    (query, content_type, body)
}

fuzz_target!(|data: &[u8]| {
    let (query, content_type, body) = split(data);
    let query = String::from_utf8_lossy(query);
    let content_type = String::from_utf8_lossy(content_type);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let parsed = runtime.block_on(Vars::parse(
        Some(&query),
        Some(&content_type),
        bytes::Bytes::copy_from_slice(body),
    ));
    if let Ok(vars) = parsed {
        let _ = vars.first_unknown(|name| name == "number");
        let _ = vars.numbers("number", 1000);
        let _ = vars.time("at");
        let _ = vars.page(100, 10_000);
        let _ = vars.parse_opt::<u32>("revision", "a number");
        let _ = vars.with_prefix("header_");
        let _ = edgerate_api::cdr::read_batch(&vars, 1_700_000_000);
    }
});
