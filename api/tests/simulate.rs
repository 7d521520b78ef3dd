//! `ratecard/simulate` through the router: totals checked against an independent sum.

mod common;

use common::*;
use serde_json::{json, Value};

const HEAD: &str = "prefix,name,rate,connect_fee,mcd,pulse\n";

async fn import(api: &Api, query: &str, csv: &str) -> Value {
    let r = api.import_csv(query, csv).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn cdrs(api: &Api, rows: &[(&str, &str, u32, &str)]) {
    let batch: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (number, card, secs, provider))| {
            let mut cdr = json!({
                "callid": format!("s{i}"), "dest_number": number,
                "duration": secs, "sip_code": 200, "card": card,
            });
            if !provider.is_empty() {
                cdr["provider"] = json!(provider);
            }
            cdr
        })
        .collect();
    let r = api
        .post_body(
            "/api/cdr/add.json",
            "application/json",
            Value::Array(batch).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_draft_revision_is_priced_over_the_rated_calls() {
    let api = Api::new();
    api.card_with(
        "sim",
        &format!("{HEAD}44,UK,0.06,0,60,60\n33,FR,0.12,0,60,60\n"),
    )
    .await;
    cdrs(
        &api,
        &[
            ("441", "sim", 60, ""),
            ("442", "sim", 120, ""),
            ("331", "sim", 30, ""),
            ("491", "sim", 60, ""),   // no rule: unrated, not counted
            ("443", "other", 60, ""), // another card's call
        ],
    )
    .await;
    let draft = import(
        &api,
        "card=sim&live_at=draft",
        &format!("{HEAD}44,UK,0.03,0,60,60\n"),
    )
    .await;
    let rev = draft["rev"].as_u64().unwrap();
    let now = edgerate_model::time::now();
    let r = api
        .get(&format!(
            "/api/ratecard/simulate.json?card=sim&revision={rev}&from={}&to={}",
            now - 3600,
            now + 10
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    // Now: 0.06 + 0.12 + 0.12 (30 s billed 60 s at 0.12) = 0.30; new: 0.03 + 0.06 + 0 (no 33).
    assert_eq!(v["totals"]["calls"], 3, "{v}");
    assert_eq!(v["totals"]["revenue_now"], json!(0.3));
    assert_eq!(v["totals"]["revenue_new"], json!(0.09));
    assert_eq!(v["totals"]["delta"], json!(-0.21));
    assert_eq!(v["totals"]["unpriced"], 1);
    assert_eq!(v["totals"]["minutes"], json!(3.5));
    let uk = &v["destinations"][1];
    assert_eq!(
        (uk["prefix"].clone(), uk["calls"].clone()),
        (json!("44"), json!(2))
    );
    // Nothing was written: the live revision still prices as before.
    let q = api
        .get("/api/ratecard/query.json?card=sim&number=441")
        .await
        .json();
    assert_eq!(q["rate"], json!(0.06));
}

#[tokio::test]
async fn a_rebuild_is_priced_with_other_profit_and_the_cheapest_route() {
    let api = Api::new();
    for (name, csv) in [
        ("pa", format!("{HEAD}44,UK,0.010,0,60,60\n")),
        ("pb", format!("{HEAD}44,UK,0.020,0,60,60\n")),
    ] {
        let id = api.card_with(name, &csv).await;
        api.post(
            "/api/ratecard/update.json",
            &format!("card={id}&kind=provider"),
        )
        .await;
    }
    api.post("/api/ratecard/create.json", "name=sell").await;
    let r = api
        .post(
            "/api/ratecard/build.json",
            "card=sell&from=pa,pb&profit_percent=100",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cdrs(
        &api,
        &[("441", "sell", 60, "pa"), ("442", "sell", 60, "pb")],
    )
    .await;
    let now = edgerate_model::time::now();
    let v = api
        .get(&format!(
            "/api/ratecard/simulate.json?card=sell&from={}&to={}&profit_percent=50&providers=pa,pb",
            now - 3600,
            now + 10
        ))
        .await
        .json();
    // Sold at 0.02 (0.01 + 100 %) now; at 0.015 with 50 %; the cheapest route costs 0.01.
    assert_eq!(v["totals"]["revenue_now"], json!(0.04), "{v}");
    assert_eq!(v["totals"]["revenue_new"], json!(0.03));
    assert_eq!(v["totals"]["cost"], json!(0.02));
    assert_eq!(v["totals"]["margin"], json!(0.01));
    assert_eq!(v["recipe"]["profit"][0]["percent"], json!(50));
    let r = api
        .get(&format!(
            "/api/ratecard/simulate.json?card=pa&from={}&to={}",
            now - 3600,
            now
        ))
        .await;
    assert_eq!(error_of(&r).0, 400, "no revision and no recipe");
}

#[tokio::test]
async fn rerating_supersedes_ratings_once_and_shows_everywhere() {
    let api = Api::new();
    api.card_with(
        "rr",
        &format!("{HEAD}44,UK,0.06,0,60,60\n33,FR,0.12,0,60,60\n"),
    )
    .await;
    cdrs(
        &api,
        &[
            ("441", "rr", 60, ""),
            ("442", "rr", 120, ""),
            ("331", "rr", 30, ""),
        ],
    )
    .await;
    let now = edgerate_model::time::now();
    let range = format!("from={}&to={}", now - 3600, now + 10);
    // The deck was wrong: the UK rate is 0.05, fixed in place.
    let r = api
        .post("/api/ratecard/rule/set.json", "card=rr&prefix=44&rate=0.05")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api
        .post("/api/cdr/rerate.json", &format!("card=rr&{range}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["calls"].clone(), v["changed"].clone()),
        (json!(3), json!(2)),
        "{v}"
    );
    assert_eq!(v["cost_delta"], json!(-0.03));
    let stats = api
        .get(&format!("/api/cdr/stats.json?{range}"))
        .await
        .json();
    assert_eq!(stats["cost"], json!(0.27), "{stats}");
    let list = api
        .get(&format!("/api/cdr/list.json?{range}&number=442"))
        .await
        .json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["cdrs"][0]["cost"], json!(0.1), "{list}");
    // Idempotent.
    let v = api
        .post("/api/cdr/rerate.json", &format!("card=rr&{range}"))
        .await
        .json();
    assert_eq!(v["changed"], 0, "{v}");
    // On a named revision: a draft without France leaves those calls unrated.
    let draft = import(
        &api,
        "card=rr&live_at=draft",
        &format!("{HEAD}44,UK,0.04,0,60,60\n"),
    )
    .await;
    let v = api
        .post(
            "/api/cdr/rerate.json",
            &format!("card=rr&revision={}&{range}", draft["rev"]),
        )
        .await
        .json();
    assert_eq!(v["changed"], 3, "{v}");
    let stats = api
        .get(&format!("/api/cdr/stats.json?{range}"))
        .await
        .json();
    assert_eq!(
        stats["cost"],
        json!(0.12),
        "0.04 + 0.08, France unrated: {stats}"
    );
    let export = api
        .get(&format!("/api/cdr/export.json?{range}"))
        .await
        .text();
    assert!(export.contains(",0.08\n"), "{export}");
}
