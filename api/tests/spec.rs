//! The OpenAPI document states what the node enforces: for every operation, every variable the
//! document gives an enum or a range is refused outside it, with a 400 naming it. The bounds
//! live in two places (the document and the service's parsing); this test keeps them equal.

mod common;

use common::{error_of, Api, DECK};
use serde_json::Value;

/// A valid value for a required variable of `service`, so the one under test is reached.
fn valid(service: &str, name: &str, card: &str, now: i64) -> String {
    match (service, name) {
        ("ratecard/diff", "from") => "1".into(),
        ("ratecard/diff", "to") => "2".into(),
        (_, "from") => (now - 3600).to_string(),
        (_, "to") => now.to_string(),
        ("admin/dataset/import", "name") => "hlr".into(),
        (_, "name") => format!("n{}", rand_suffix()),
        (_, "card") => card.into(),
        (_, "number" | "dest_number" | "cli") => "441234567890".into(),
        (_, "prefix") => "44".into(),
        (_, "callid") => "c1".into(),
        (_, "sip_code") => "200".into(),
        (_, "revision") => "1".into(),
        (_, "account") => "acme".into(),
        (_, "type") => "plan".into(),
        _ => "1".into(),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Values outside what `schema` allows, if it states an enum or a range.
fn outside(schema: &Value) -> Vec<String> {
    let schema = if schema["type"] == "array" {
        &schema["items"]
    } else {
        schema
    };
    let mut out = Vec::new();
    if schema["enum"].is_array() {
        out.push("zz-not-one".to_owned());
    }
    if schema["type"] == "integer" {
        if let Some(max) = schema["maximum"].as_i64() {
            out.push((max + 1).to_string());
        }
        if let Some(min) = schema["minimum"].as_i64() {
            out.push((min - 1).to_string());
        }
        out.push("1.5".to_owned());
    }
    out
}

fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test]
async fn every_enum_and_range_in_the_document_is_enforced() {
    let api = Api::new();
    let card = api.card_with("c", DECK).await;
    let spec = api.get("/openapi.json").await.json();
    let now = edgerate_model::time::now();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        let Some(service) = path
            .strip_prefix("/api/")
            .and_then(|p| p.strip_suffix(".{ext}"))
        else {
            continue;
        };
        let op = &ops["get"];
        let operator = !op["security"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.get("basic").is_some());
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .collect();
        for param in &params {
            let name = param["name"].as_str().unwrap();
            for bad in outside(&param["schema"]) {
                let mut pairs: Vec<(String, String)> = params
                    .iter()
                    .filter(|p| p["required"] == true && p["name"] != name)
                    .map(|p| {
                        let n = p["name"].as_str().unwrap();
                        (n.to_owned(), valid(service, n, &card, now))
                    })
                    .collect();
                if service == "ratecard/import" {
                    pairs.push(("file".into(), "prefix,rate\n44,0.1\n".into()));
                }
                pairs.push((name.to_owned(), bad.clone()));
                let uri = format!("/api/{service}.json");
                let reply = if operator {
                    api.operator(&uri, &encode(&pairs)).await
                } else {
                    api.post(&uri, &encode(&pairs)).await
                };
                checked += 1;
                let named =
                    reply.status == 400 && error_of(&reply).1.contains(&format!("'{name}'"));
                if !named {
                    wrong.push(format!(
                        "{service} {name}={bad}: {} {}",
                        reply.status,
                        reply.text()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} values tried");
    assert!(
        wrong.is_empty(),
        "{} of {checked} out-of-bounds values not refused by name:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
