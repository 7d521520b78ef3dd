//! Card kinds, caps, notice and `ratecard/build` through the router (API.md §3 "Building").

mod common;

use axum::body::Body;
use common::*;
use serde_json::{json, Value};

/// Creates a card of `kind` holding `csv`, live now.
async fn card(api: &Api, name: &str, kind: &str, csv: &str) -> String {
    let id = api.card_with(name, csv).await;
    let r = api
        .post(
            "/api/ratecard/update.json",
            &format!("card={id}&kind={kind}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    id
}

async fn rate(api: &Api, card: &str, number: &str) -> Value {
    let r = api
        .get(&format!(
            "/api/ratecard/query.json?card={card}&number={number}"
        ))
        .await;
    if r.status == 404 {
        return Value::Null;
    }
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["rate"].clone()
}

const A: &str = "prefix,name,rate,connect_fee,mcd,pulse,status\n\
    44,UK,0.020,0,60,60,Active\n\
    447,UK Mobile,0.030,0.01,30,6,Active\n\
    33,France,0.05,0,60,60,Blocked\n";
const B: &str = "prefix,name,rate,connect_fee,mcd,pulse\n\
    44,UK,0.018,0,1,1\n\
    4477,UK Mobile EE,0.040,0,60,60\n\
    33,France,0.07,0,1,1\n";

#[tokio::test]
async fn a_customer_card_is_built_from_provider_cards() {
    let api = Api::new();
    card(&api, "prov-a", "provider", A).await;
    card(&api, "prov-b", "provider", B).await;
    let sell = api
        .post(
            "/api/ratecard/create.json",
            "name=retail&precision=4&rounding=up",
        )
        .await;
    assert_eq!(sell.json()["kind"], "customer");
    let r = api
        .post(
            "/api/ratecard/build.json",
            "card=retail&from=prov-a,prov-b&mix=min&profit_percent=10&min_margin=0.003",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["rules"], 4, "{out}");
    assert_eq!(out["skipped"], 0);
    assert_eq!(out["state"], "live");
    assert_eq!(out["from"].as_array().unwrap().len(), 2);
    // 44: min(0.020, 0.018) = 0.018 × 1.1 = 0.0198; the margin 0.003 wins: 0.021.
    assert_eq!(rate(&api, "retail", "4420").await, json!(0.021));
    // 447: a's 0.030, b's longest match for 447 is its 44 (0.018): 0.018 → 0.021.
    assert_eq!(rate(&api, "retail", "4471").await, json!(0.021));
    // 4477: a offers its 447 (0.03), b its 4477 (0.04): 0.03 × 1.1 = 0.033.
    assert_eq!(rate(&api, "retail", "44770").await, json!(0.033));
    // 33: a blocks it, so b's 0.07 → 0.077.
    assert_eq!(rate(&api, "retail", "3312").await, json!(0.077));
    let got = api.get("/api/ratecard/get.json?card=retail").await.json();
    assert_eq!(got["stale"], false);
    assert_eq!(got["built_from"]["mix"], "min");
    assert_eq!(got["built_from"]["from"][0]["name"], "prov-a");
    assert_eq!(got["built_from"]["rebuild"], "manual");

    // A provider edit makes it stale; a rebuild with only `card` repeats the recipe.
    let r = api
        .post(
            "/api/ratecard/rule/set.json",
            "card=prov-b&prefix=44&rate=0.010",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        api.get("/api/ratecard/get.json?card=retail").await.json()["stale"],
        true
    );
    assert_eq!(
        rate(&api, "retail", "4420").await,
        json!(0.021),
        "not rebuilt by itself"
    );
    let r = api.post("/api/ratecard/build.json", "card=retail").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rate(&api, "retail", "4420").await, json!(0.013));
    assert_eq!(
        api.get("/api/ratecard/get.json?card=retail").await.json()["stale"],
        false
    );
    let revisions = api
        .get("/api/ratecard/revisions.json?card=retail")
        .await
        .json();
    let last = revisions["revisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["source"].as_str().unwrap().starts_with("build:min:"),
        "{last}"
    );
}

#[tokio::test]
async fn every_mix_and_the_profit_list() {
    let api = Api::new();
    card(&api, "a", "provider", A).await;
    card(&api, "b", "provider", B).await;
    api.post("/api/ratecard/create.json", "name=s&precision=5")
        .await;
    let build = |form: &'static str| {
        let api = &api;
        async move {
            let r = api.post("/api/ratecard/build.json", form).await;
            assert_eq!(r.status, 200, "{form}: {}", r.text());
        }
    };
    build("card=s&from=a,b&mix=max").await;
    assert_eq!(rate(&api, "s", "4420").await, json!(0.02));
    build("card=s&from=a,b&mix=avg").await;
    assert_eq!(rate(&api, "s", "4420").await, json!(0.019));
    // The mcd of an average is the largest of those mixed.
    let q = api
        .get("/api/ratecard/query.json?card=s&number=4420")
        .await
        .json();
    assert_eq!(
        (q["mcd"].clone(), q["pulse"].clone()),
        (json!(60), json!(60))
    );
    build("card=s&from=b,a&mix=first").await;
    assert_eq!(rate(&api, "s", "4420").await, json!(0.018));
    let q = api
        .get("/api/ratecard/query.json?card=s&number=4420")
        .await
        .json();
    assert_eq!(q["mcd"], 1, "increments come from the chosen provider");

    // The JSON form: the most specific match wins, `*` is the default.
    let body = json!({
        "card": "s", "from": ["a", "b"], "mix": "min",
        "profit": [
            {"match": "*", "percent": 50},
            {"match": "^447,^33", "absolute": 0.002, "apply_to": "rate"},
            {"match": "^4477", "percent": 0, "min_margin": 0.01}
        ]
    });
    let r = api
        .post_body(
            "/api/ratecard/build.json",
            "application/json",
            Body::from(body.to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rate(&api, "s", "4420").await, json!(0.027));
    assert_eq!(rate(&api, "s", "4471").await, json!(0.02));
    assert_eq!(rate(&api, "s", "44770").await, json!(0.04));
    assert_eq!(rate(&api, "s", "331").await, json!(0.072));
    let got = api.get("/api/ratecard/get.json?card=s").await.json();
    assert_eq!(got["built_from"]["profit"][1]["match"], "^447,^33");
}

#[tokio::test]
async fn a_cap_blocks_rules_above_it() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let r = api
        .post("/api/ratecard/update.json", "card=c&cap=0.02")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cap"], json!(0.02));
    let q = api
        .get("/api/ratecard/query.json?card=c&number=447700&duration=60")
        .await
        .json();
    assert_eq!(
        (q["status"].clone(), q["reason"].clone()),
        (json!("Blocked"), json!("capped"))
    );
    assert!(q.get("cost").is_none(), "{q}");
    let q = api
        .get("/api/ratecard/query.json?card=c&number=441&duration=60")
        .await
        .json();
    assert_eq!(
        (q["status"].clone(), q.get("reason")),
        (json!("Active"), None)
    );
    // A plain blocked rule keeps its answer.
    let q = api
        .get("/api/ratecard/query.json?card=c&number=44701")
        .await
        .json();
    assert_eq!(
        (q["status"].clone(), q.get("reason")),
        (json!("Blocked"), None)
    );
    // Cleared by an empty value.
    api.post("/api/ratecard/update.json", "card=c&cap=").await;
    let q = api
        .get("/api/ratecard/query.json?card=c&number=447700")
        .await
        .json();
    assert_eq!(q["status"], "Active");
}

#[tokio::test]
async fn notice_days_hold_increases_back() {
    let api = Api::new();
    api.card_with(
        "n",
        "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.02,0,60,60\n33,FR,0.05,0,60,60\n",
    )
    .await;
    api.post("/api/ratecard/update.json", "card=n&notice_days=7")
        .await;
    let r = api.import_csv("card=n", "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.03,0,60,60\n33,FR,0.04,0,60,60\n49,DE,0.01,0,60,60\n").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["state"], "live");
    assert_eq!(out["increases"]["rules"], 1, "{out}");
    let later = out["increases"]["live_at"].as_i64().unwrap();
    let now = edgerate_model::time::now();
    assert!((later - now - 7 * 86_400).abs() < 5, "{later}");
    assert_eq!(
        rate(&api, "n", "441").await,
        json!(0.02),
        "the increase waits"
    );
    assert_eq!(
        rate(&api, "n", "331").await,
        json!(0.04),
        "a decrease goes at once"
    );
    assert_eq!(
        rate(&api, "n", "491").await,
        json!(0.01),
        "a new row goes at once"
    );
    let q = api
        .get(&format!(
            "/api/ratecard/query.json?card=n&number=441&at={}",
            later
        ))
        .await
        .json();
    assert_eq!(q["rate"], json!(0.03));
    // A newer deck supersedes the increase still held back: it does not come back later.
    let r = api
        .import_csv(
            "card=n",
            "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.019,0,60,60\n",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("increases").is_none());
    let q = api
        .get(&format!(
            "/api/ratecard/query.json?card=n&number=441&at={}",
            later
        ))
        .await
        .json();
    assert_eq!(q["rate"], json!(0.019));
}

#[tokio::test]
async fn automatic_rebuilds_follow_provider_changes() {
    let api = Api::new();
    card(&api, "a", "provider", A).await;
    card(&api, "b", "provider", B).await;
    api.post("/api/ratecard/create.json", "name=auto").await;
    let r = api
        .post(
            "/api/ratecard/build.json",
            "card=auto&from=a,b&rebuild=auto",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let revision = r.json()["revision"].clone();
    // A rule edit is carried into the live revision in place, only where it matters.
    api.post(
        "/api/ratecard/rule/set.json",
        "card=b&prefix=447&rate=0.001",
    )
    .await;
    assert_eq!(rate(&api, "auto", "4471").await, json!(0.001));
    assert_eq!(
        rate(&api, "auto", "44770").await,
        json!(0.03),
        "b's own 4477 still matches there"
    );
    assert_eq!(rate(&api, "auto", "4420").await, json!(0.018));
    let got = api.get("/api/ratecard/get.json?card=auto").await.json();
    assert_eq!(
        (got["revision"].clone(), got["stale"].clone()),
        (revision.clone(), json!(false))
    );
    // Removing the only offer removes the prefix.
    api.post("/api/ratecard/rule/delete.json", "card=b&prefix=33")
        .await;
    assert_eq!(rate(&api, "auto", "331").await, Value::Null);
    // A new provider revision: a new built revision.
    let r = api
        .import_csv(
            "card=a",
            "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.001,0,60,60\n",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rate(&api, "auto", "4420").await, json!(0.001));
    let got = api.get("/api/ratecard/get.json?card=auto").await.json();
    assert_ne!(got["revision"], revision);
    assert_eq!(got["stale"], false);
}

#[tokio::test]
async fn build_errors_name_the_variable() {
    let api = Api::new();
    card(&api, "a", "provider", A).await;
    api.card_with("plain", DECK).await;
    api.post("/api/ratecard/create.json", "name=s").await;
    for (form, code, needle) in [
        ("card=s", 400, "'from'"),
        ("card=s&mix=min", 400, "'mix'"),
        ("card=s&from=plain", 400, "not a provider"),
        ("card=s&from=nope", 404, "nope"),
        ("card=a&from=a", 400, "provider card"),
        ("card=s&from=a&mix=median", 400, "'mix'"),
        ("card=s&from=a&profit_percent=-1", 400, "profit_percent"),
        ("card=s&from=a&profit_percent=20000", 400, "percent"),
        ("card=s&from=a&rebuild=sometimes", 400, "rebuild"),
        ("card=s&from=a&profit=[{\"match\":\"^4x\"}]", 400, "match"),
        ("card=s&from=a&profit={\"bogus\":1}", 400, "bogus"),
        ("card=s&from=a&profit=nonsense", 400, "profit"),
        ("card=s&from=a&profit=[]&min_margin=1", 400, "min_margin"),
        ("card=s&from=a&live_at=2000-01-01", 400, "live_at"),
    ] {
        let r = api.post("/api/ratecard/build.json", form).await;
        let (got, reason) = error_of(&r);
        assert_eq!(got, code, "{form}: {reason}");
        assert!(reason.contains(needle), "{form}: {reason}");
    }
    for form in [
        "card=s&kind=reseller",
        "card=s&cap=-1",
        "card=s&notice_days=999",
    ] {
        let r = api.post("/api/ratecard/update.json", form).await;
        assert_eq!(r.status, 400, "{form}: {}", r.text());
    }
}

#[tokio::test]
async fn effective_dated_rows_become_scheduled_revisions() {
    let api = Api::new();
    api.card_with(
        "d",
        "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.02,0,60,60\n",
    )
    .await;
    let now = edgerate_model::time::now();
    let (day1, day2) = (now + 86_400, now + 2 * 86_400);
    let csv = format!(
        "prefix,name,rate,connect_fee,mcd,pulse,effective_date,end_date\n\
         44,UK,0.03,0,60,60,,{day2}\n\
         33,FR,0.05,0,60,60,{day1},\n\
         49,DE,0.01,0,60,60,,\n"
    );
    let r = api.import_csv("card=d", &csv).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["state"], "live");
    assert_eq!(out["rules"], 2, "44 and 49 now; 33 from day 1: {out}");
    let scheduled = out["scheduled"].as_array().unwrap();
    assert_eq!(scheduled.len(), 2, "{out}");
    assert_eq!(
        (
            scheduled[0]["live_at"].clone(),
            scheduled[0]["rules"].clone()
        ),
        (json!(day1), json!(3))
    );
    assert_eq!(
        (
            scheduled[1]["live_at"].clone(),
            scheduled[1]["rules"].clone()
        ),
        (json!(day2), json!(2)),
        "44 ends on day 2"
    );
    let at = |t: i64, number: &'static str| {
        let api = &api;
        async move {
            let r = api
                .get(&format!(
                    "/api/ratecard/query.json?card=d&number={number}&at={t}"
                ))
                .await;
            (r.status == 200).then(|| r.json()["rate"].clone())
        }
    };
    assert_eq!(at(now, "331").await, None);
    assert_eq!(at(day1, "331").await, Some(json!(0.05)));
    assert_eq!(at(day1, "441").await, Some(json!(0.03)));
    assert_eq!(at(day2, "441").await, None);
    let revisions = api.get("/api/ratecard/revisions.json?card=d").await.json();
    let states: Vec<&str> = revisions["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["archived", "archived", "live", "scheduled", "scheduled"]
    );
    let r = api.import_csv("card=d&live_at=draft", &csv).await;
    assert_eq!(error_of(&r).0, 400, "a self-scheduling deck is not a draft");
}

#[tokio::test]
async fn a_delta_deck_changes_the_live_revision_and_checks_its_codes() {
    let api = Api::new();
    api.card_with(
        "v",
        "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.02,0,60,60\n33,FR,0.05,0,60,60\n1,US,0.001,0,6,6\n",
    )
    .await;
    let csv = "prefix,name,rate,connect_fee,mcd,pulse,change\n\
               44,UK,0.03,0,60,60,increase\n\
               33,,,,,,closed\n\
               49,DE,0.01,0,60,60,new\n\
               1,US,0.002,0,6,6,decrease\n";
    let r = api.import_csv("card=v&mode=delta", csv).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["rules"], 3, "{out}");
    let warnings = out["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("prefix 1: marked decrease"),
        "{out}"
    );
    assert_eq!(rate(&api, "v", "441").await, json!(0.03));
    assert_eq!(rate(&api, "v", "331").await, Value::Null, "closed");
    assert_eq!(rate(&api, "v", "491").await, json!(0.01));
    assert_eq!(rate(&api, "v", "1212").await, json!(0.002));
    let r = api.import_csv("card=v&mode=partial", csv).await;
    assert_eq!(error_of(&r).0, 400);
    // A delta that names nothing new keeps every rule: an empty change is a no-op revision.
    let r = api
        .import_csv(
            "card=v&mode=delta",
            "prefix,name,rate,connect_fee,mcd,pulse,change\n44,UK,0.03,0,60,60,unchanged\n",
        )
        .await;
    assert_eq!(r.json()["rules"], 3);
    assert_eq!(r.json()["warnings"], json!([]));
}

#[tokio::test]
async fn notice_holds_increases_through_a_dated_chain() {
    let api = Api::new();
    api.card_with(
        "nd",
        "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.02,0,60,60\n",
    )
    .await;
    api.post("/api/ratecard/update.json", "card=nd&notice_days=7")
        .await;
    let now = edgerate_model::time::now();
    let day1 = now + 86_400;
    let csv = format!(
        "prefix,name,rate,connect_fee,mcd,pulse,effective_date\n\
         44,UK,0.05,0,60,60,\n\
         33,FR,0.04,0,60,60,{day1}\n"
    );
    let r = api.import_csv("card=nd", &csv).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["increases_held"], 1, "{out}");
    let scheduled = out["scheduled"].as_array().unwrap();
    assert_eq!(scheduled.len(), 2, "day 1 and the end of the notice: {out}");
    let at = |t: i64, number: &'static str| {
        let api = &api;
        async move {
            let r = api
                .get(&format!(
                    "/api/ratecard/query.json?card=nd&number={number}&at={t}"
                ))
                .await;
            (r.status == 200).then(|| r.json()["rate"].clone())
        }
    };
    assert_eq!(at(now, "441").await, Some(json!(0.02)), "held");
    assert_eq!(
        at(day1, "441").await,
        Some(json!(0.02)),
        "still held on day 1"
    );
    assert_eq!(at(day1, "331").await, Some(json!(0.04)), "day 1's new row");
    let later = scheduled[1]["live_at"].as_i64().unwrap();
    assert!((later - now - 7 * 86_400).abs() < 5);
    assert_eq!(at(later, "441").await, Some(json!(0.05)));
    assert_eq!(at(later, "331").await, Some(json!(0.04)));
}
