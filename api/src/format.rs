//! The three answer formats (API.md §1): JSON as documented; XML with a root named after the
//! service and `<item>` for list items and for keys that are not XML names; a small HTML5 page
//! of escaped `field: value` rows with nested tables.

use crate::error::ApiError;
use serde_json::Value;
use std::fmt::Write;

/// The answer format, from the URL's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
    Xml,
}

impl Format {
    pub fn parse(ext: &str) -> Option<Self> {
        match ext {
            "html" => Some(Self::Html),
            "json" => Some(Self::Json),
            "xml" => Some(Self::Xml),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Html => "text/html; charset=utf-8",
            Self::Json => "application/json",
            Self::Xml => "application/xml; charset=utf-8",
        }
    }
}

/// Renders `value` in `format`; `root` names the XML root element and the HTML page.
pub fn render(format: Format, root: &str, value: &Value) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(value).expect("a JSON value serialises"),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\"?>\n");
            xml_element(&mut out, root, None, value);
            out.into_bytes()
        }
        Format::Html => html_page(root, value).into_bytes(),
    }
}

/// Renders an error in `format`: `{"error":{"code","reason"}}`, `<error>…</error>`, or a page.
pub fn render_error(format: Format, error: &ApiError) -> Vec<u8> {
    let body = serde_json::json!({ "code": error.code.status(), "reason": error.reason });
    match format {
        Format::Xml => render(format, "error", &body),
        _ => render(format, "error", &serde_json::json!({ "error": body })),
    }
}

/// True when `name` can be an XML element name as is.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.to_ascii_lowercase().starts_with("xml")
}

/// Escapes text content (`<`, `>`, `&`); characters XML 1.0 forbids become U+FFFD.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    match xml_chars(text) {
        std::borrow::Cow::Borrowed(t) => quick_xml::escape::partial_escape(t),
        std::borrow::Cow::Owned(t) => {
            std::borrow::Cow::Owned(quick_xml::escape::partial_escape(&t).into_owned())
        }
    }
}

/// Escapes an attribute value (also quotes); forbidden characters become U+FFFD.
fn escape_attr(text: &str) -> std::borrow::Cow<'_, str> {
    match xml_chars(text) {
        std::borrow::Cow::Borrowed(t) => quick_xml::escape::escape(t),
        std::borrow::Cow::Owned(t) => {
            std::borrow::Cow::Owned(quick_xml::escape::escape(&t).into_owned())
        }
    }
}

/// Whether XML 1.0 allows `c` in a document (`Char` production; HTML forbids the same controls).
fn xml_allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `text` with every character XML 1.0 forbids replaced by U+FFFD.
fn xml_chars(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().all(xml_allowed) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(
            text.chars()
                .map(|c| if xml_allowed(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn xml_element(out: &mut String, name: &str, key: Option<&str>, value: &Value) {
    let _ = match key {
        Some(key) => write!(out, "<{name} key=\"{}\">", escape_attr(key)),
        None => write!(out, "<{name}>"),
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if is_xml_name(k) {
                    xml_element(out, k, None, v);
                } else {
                    xml_element(out, "item", Some(k), v);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                xml_element(out, "item", None, item);
            }
        }
        scalar => out.push_str(&escape(&scalar_text(scalar))),
    }
    let _ = write!(out, "</{name}>");
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.2em 0}td{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}\
td.k{font-weight:600;background:#f6f6f6}";

/// A whole HTML5 page for `value`, titled `title`.
pub fn html_page(title: &str, value: &Value) -> String {
    let mut body = String::new();
    html_value(&mut body, value);
    page(title, &body)
}

/// Wraps already-escaped `body` HTML in a page.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>edgerate: {t}</title>\
         <style>{STYLE}</style></head><body><h1>{t}</h1>\n{body}\n</body></html>\n",
        t = escape(title)
    )
}

fn html_value(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            out.push_str("<table>");
            for (k, v) in map {
                let _ = write!(out, "<tr><td class=\"k\">{}</td><td>", escape(k));
                html_value(out, v);
                out.push_str("</td></tr>");
            }
            out.push_str("</table>");
        }
        Value::Array(items) => {
            out.push_str("<table>");
            for (i, v) in items.iter().enumerate() {
                let _ = write!(out, "<tr><td class=\"k\">{i}</td><td>");
                html_value(out, v);
                out.push_str("</td></tr>");
            }
            out.push_str("</table>");
        }
        scalar => out.push_str(&escape(&scalar_text(scalar))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_uses_item_for_numeric_keys_and_lists() {
        let v = json!({"441234567890": {"status": "Unknown"}, "list": [1, "a<b"], "ok": true});
        let xml = String::from_utf8(render(Format::Xml, "smart", &v)).unwrap();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\"?>\n<smart><item key=\"441234567890\"><status>Unknown</status></item>\
             <list><item>1</item><item>a&lt;b</item></list><ok>true</ok></smart>"
        );
        roxmltree::Document::parse(&xml).unwrap();
    }

    #[test]
    fn control_characters_never_reach_xml() {
        let e = ApiError::not_found("card '\u{1}\u{2}' not found");
        let xml = String::from_utf8(render_error(Format::Xml, &e)).unwrap();
        roxmltree::Document::parse(&xml).unwrap();
        assert!(xml.contains("card '\u{FFFD}\u{FFFD}' not found"), "{xml}");
        let v = json!({"k\u{1}": "a\u{0}b\u{FFFE}", "n": "tab\tok"});
        let xml = String::from_utf8(render(Format::Xml, "x", &v)).unwrap();
        roxmltree::Document::parse(&xml).unwrap();
        let html = String::from_utf8(render(Format::Html, "x", &v)).unwrap();
        assert!(!html.contains('\u{1}') && !html.contains('\u{0}'), "{html}");
    }

    #[test]
    fn errors_in_every_format() {
        let e = ApiError::missing("number");
        let json: Value = serde_json::from_slice(&render_error(Format::Json, &e)).unwrap();
        assert_eq!(
            json,
            json!({"error": {"code": 400, "reason": "Missing Required Parameter 'number'"}})
        );
        let xml = String::from_utf8(render_error(Format::Xml, &e)).unwrap();
        assert!(xml.ends_with("<error><code>400</code><reason>Missing Required Parameter 'number'</reason></error>"), "{xml}");
        let html = String::from_utf8(render_error(Format::Html, &e)).unwrap();
        assert!(html.contains("<td class=\"k\">code</td><td>400</td>"));
    }

    #[test]
    fn html_escapes_everything() {
        let html = html_page("x<y", &json!({"<k>": "<script>alert(1)</script>"}));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.starts_with("<!DOCTYPE html>"));
    }
}
