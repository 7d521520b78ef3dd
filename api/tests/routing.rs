//! `routing/lcr` and route quality through the router (API.md §3 "routing").

mod common;

use common::*;
use serde_json::{json, Value};

async fn provider(api: &Api, name: &str, csv: &str) {
    let id = api.card_with(name, csv).await;
    let r = api
        .post(
            "/api/ratecard/update.json",
            &format!("card={id}&kind=provider"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

const HEAD: &str = "prefix,name,rate,connect_fee,mcd,pulse,status\n";

async fn setup(api: &Api) {
    provider(
        api,
        "cheap",
        &format!("{HEAD}44,UK,0.010,0.02,60,60,Active\n447,UK Mobile,0.050,0,60,60,Active\n"),
    )
    .await;
    provider(
        api,
        "mid",
        &format!("{HEAD}44,UK,0.015,0,1,1,Active\n4471,UK Mobile,0.020,0,1,1,Active\n"),
    )
    .await;
    provider(
        api,
        "dear",
        &format!("{HEAD}44,UK,0.030,0,60,60,Active\n447,UK Mobile,0.5,0,60,60,Blocked\n"),
    )
    .await;
    api.card_with("retail", &format!("{HEAD}44,UK,0.025,0,60,60,Active\n"))
        .await;
}

fn cards(v: &Value) -> Vec<&str> {
    v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["card"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn routes_by_cost_with_sell_price_margin_and_exclusions() {
    let api = Api::new();
    setup(&api).await;
    let r = api
        .get("/api/routing/lcr.json?number=441234567&duration=30")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    // 30 s: cheap bills 60 s at 0.01 + 0.02 fee = 0.03; mid 30 s at 0.015 = 0.0075; dear 0.03.
    assert_eq!(cards(&v), ["mid", "cheap", "dear"], "{v}");
    assert_eq!(v["routes"][0]["cost"], json!(0.0075));
    assert_eq!(v["routes"][1]["cost"], json!(0.03));
    assert_eq!(v["sell"], Value::Null);
    assert_eq!(v["routes"][0]["margin"], Value::Null);

    // With the customer card: its price sells the call; dearer routes are left out.
    let v = api
        .get("/api/routing/lcr.json?number=447123&card=retail&duration=60")
        .await
        .json();
    assert_eq!(v["sell"]["cost"], json!(0.025), "{v}");
    assert_eq!(cards(&v), ["mid"], "{v}");
    assert_eq!(v["routes"][0]["margin"], json!(0.005));
    let excluded: Vec<(&str, &str)> = v["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["card"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(excluded, [("cheap", "above_sell"), ("dear", "blocked")]);
    let v = api
        .get("/api/routing/lcr.json?number=447123&card=retail&assure=false&order=margin&limit=1")
        .await
        .json();
    assert_eq!(cards(&v), ["mid"]);
    // Several numbers: keyed by number; `providers` narrows and names routes as given.
    let v = api
        .get("/api/routing/lcr.json?number=441,447&providers=dear,cheap")
        .await
        .json();
    assert_eq!(cards(&v["441"]), ["cheap", "dear"], "{v}");
    assert_eq!(cards(&v["447"]), ["cheap"]);
}

#[tokio::test]
async fn quality_comes_from_cdrs_sent_to_each_provider() {
    let api = Api::new();
    setup(&api).await;
    let now = edgerate_model::time::now();
    let mut batch = Vec::new();
    // cheap: 1 of 4 answered; mid: 3 of 4; dear: none sent.
    for (i, (provider, code)) in [
        ("cheap", 200),
        ("cheap", 486),
        ("cheap", 486),
        ("cheap", 404),
        ("mid", 200),
        ("mid", 200),
        ("mid", 200),
        ("mid", 486),
    ]
    .into_iter()
    .enumerate()
    {
        batch.push(json!({
            "callid": format!("q{i}"), "dt": now - 100, "dest_number": "441234567",
            "duration": if code == 200 { 90 } else { 0 }, "sip_code": code, "provider": provider,
        }));
    }
    let r = api
        .post_body(
            "/api/cdr/add.json",
            "application/json",
            Value::Array(batch).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = api
        .get("/api/routing/lcr.json?number=441999&order=quality")
        .await
        .json();
    assert_eq!(cards(&v), ["mid", "cheap", "dear"], "{v}");
    assert_eq!(v["routes"][0]["asr"], json!(75));
    assert_eq!(v["routes"][0]["acd"], json!(90));
    assert_eq!(v["routes"][2]["asr"], Value::Null);
    let v = api
        .get("/api/routing/lcr.json?number=441999&min_asr=50")
        .await
        .json();
    assert_eq!(
        cards(&v),
        ["mid", "dear"],
        "unknown quality is not below: {v}"
    );
    // A provider that is not a provider card refuses the batch.
    let r = api
        .post(
            "/api/cdr/add.json",
            "callid=x&dest_number=441&sip_code=200&provider=retail",
        )
        .await;
    assert_eq!(error_of(&r).0, 400);
    let list = api
        .get(&format!(
            "/api/cdr/list.json?from={}&to={}",
            now - 200,
            now + 10
        ))
        .await
        .json();
    assert!(
        list.to_string().contains("\"provider_prefix\":\"44\""),
        "{list}"
    );
}

#[tokio::test]
async fn lcr_errors_name_the_variable() {
    let api = Api::new();
    setup(&api).await;
    for (query, needle) in [
        ("number=44&order=best", "order"),
        ("number=44&limit=0", "limit"),
        ("number=44&min_asr=101", "min_asr"),
        ("number=44&providers=retail", "provider"),
        ("number=44&card=nope", "nope"),
        ("number=44&duration=-1", "duration"),
        ("number=44&assure=maybe", "assure"),
    ] {
        let r = api.get(&format!("/api/routing/lcr.json?{query}")).await;
        let (code, reason) = error_of(&r);
        assert!(code == 400 || code == 404, "{query}: {code} {reason}");
        assert!(reason.contains(needle), "{query}: {reason}");
    }
}
