//! RFC 8785 JSON canonicalisation — members sorted by key in UTF-16 order, numbers in their
//! ECMAScript form — read from raw JSON text as it goes: an object is split into its members
//! and an array into its items, each written in turn, so no tree of the document is built.

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// An object's members, each still raw text borrowed from the document.
pub(super) type Members<'a> = BTreeMap<String, &'a RawValue>;

/// Nesting deeper than this is refused (an IME document nests five deep): splitting a level
/// scans the text below it once, so the depth bounds the work per byte of input.
pub(super) const MAX_DEPTH: usize = 16;

/// Where canonical text goes: a string, or a hash that never holds it whole.
pub(super) trait Sink {
    fn put(&mut self, text: &str);
}

impl Sink for String {
    fn put(&mut self, text: &str) {
        self.push_str(text);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, text: &str) {
        self.update(text.as_bytes());
    }
}

/// Writes the canonical form of an object given as its members.
pub(super) fn object(
    mut members: Vec<(&str, &RawValue)>,
    out: &mut impl Sink,
    depth: usize,
) -> Result<(), String> {
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.put("{");
    for (i, (key, member)) in members.into_iter().enumerate() {
        if i > 0 {
            out.put(",");
        }
        out.put(&serde_json::to_string(key).map_err(|e| e.to_string())?);
        out.put(":");
        value(member, out, depth + 1)?;
    }
    out.put("}");
    Ok(())
}

/// Writes the canonical form of one JSON value (already known to be well-formed).
pub(super) fn value(raw: &RawValue, out: &mut impl Sink, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("the document nests deeper than {MAX_DEPTH} levels"));
    }
    let text = raw.get().trim();
    let unreadable = |e: serde_json::Error| e.to_string();
    match text.as_bytes().first() {
        Some(b'{') => {
            let members: Members = serde_json::from_str(text).map_err(unreadable)?;
            let members = members.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            object(members, out, depth)?;
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(unreadable)?;
            out.put("[");
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.put(",");
                }
                value(item, out, depth + 1)?;
            }
            out.put("]");
        }
        Some(b'"') => {
            let s: String = serde_json::from_str(text).map_err(unreadable)?;
            out.put(&serde_json::to_string(&s).map_err(unreadable)?);
        }
        Some(b't' | b'f' | b'n') => out.put(text),
        _ => {
            let f: f64 = text
                .parse()
                .ok()
                .filter(|f: &f64| f.is_finite())
                .ok_or_else(|| format!("number {text} is out of range"))?;
            out.put(ryu_js::Buffer::new().format_finite(f));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Result<String, String> {
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        let mut out = String::new();
        value(raw, &mut out, 0).map(|()| out)
    }

    #[test]
    fn matches_rfc8785_number_and_key_rules() {
        let text = r#"{"b":1.0E2,"a":[0.000001,1e21,-0,"\u00e9\n"],"\u20ac":1,"1":true}"#;
        assert_eq!(
            canonical(text).unwrap(),
            "{\"1\":true,\"a\":[0.000001,1e+21,0,\"é\\n\"],\"b\":100,\"€\":1}"
        );
        // UTF-16 order puts U+1F600 (a surrogate pair) before U+FB01, unlike UTF-8 order.
        assert_eq!(
            canonical("{\"\u{fb01}\":1,\"\u{1f600}\":2}").unwrap(),
            "{\"\u{1f600}\":2,\"\u{fb01}\":1}"
        );
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_refused() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(canonical(&deep).unwrap_err().contains("deeper"));
        assert!(canonical("[1e400]").unwrap_err().contains("out of range"));
    }
}
