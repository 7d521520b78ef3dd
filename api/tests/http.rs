//! Every service, error path and format through the router, without sockets.

mod common;

use axum::body::Body;
use axum::http::header;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn query_answers_the_contract_example() {
    let api = Api::new();
    api.card_with("uk-retail", DECK).await;
    let r = api
        .get("/api/ratecard/query.json?card=uk-retail&number=%2B44%201234%20567890&duration=61")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"card":"uk-retail","revision":2,"number":"441234567890","prefix":"441","name":"UK Landline",
               "rate":0.012,"connect_fee":0,"mcd":60,"pulse":60,"currency":"USD","status":"Active",
               "duration":61,"billed_duration":120,"cost":0.024})
    );
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert!(
        r.headers.contains_key("x-ratelimit-limit")
            && r.headers.contains_key("x-ratelimit-remaining")
    );
    let no_duration = api
        .get("/api/ratecard/query.json?card=uk-retail&number=441234567890")
        .await
        .json();
    assert!(no_duration.get("cost").is_none() && no_duration.get("billed_duration").is_none());
}

#[tokio::test]
async fn query_billing_cases() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let cost = |number: &'static str, duration: &'static str| {
        let api = &api;
        async move {
            let v = api
                .get(&format!(
                    "/api/ratecard/query.json?card=c&number={number}&duration={duration}"
                ))
                .await
                .json();
            (v["billed_duration"].clone(), v["cost"].clone())
        }
    };
    // 30/6 with a connect fee: 31 s → 36 s; 0.01 + 36/60 × 0.028 = 0.0268.
    assert_eq!(cost("447700", "31").await, (json!(36), json!(0.0268)));
    // fractional seconds round up by default: 30.2 → 31 → 36.
    assert_eq!(cost("447700", "30.2").await, (json!(36), json!(0.0268)));
    // zero duration bills nothing and charges no connect fee.
    assert_eq!(cost("447700", "0").await, (json!(0), json!(0)));
    // 1/1 at 0.005: 9 s → 0.00075 → 0.0008 (4 dp, up).
    assert_eq!(cost("12125550100", "9").await, (json!(9), json!(0.0008)));
    // Blocked rule: status and no cost.
    let blocked = api
        .get("/api/ratecard/query.json?card=c&number=447012345&duration=60")
        .await;
    assert_eq!(blocked.status, 200);
    assert_eq!(blocked.json()["status"], "Blocked");
    assert!(blocked.json().get("cost").is_none());
    // Card precision and rounding apply.
    let r = api
        .post(
            "/api/ratecard/update.json",
            "card=c&precision=2&rounding=down",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(cost("447700", "31").await, (json!(36), json!(0.02)));
}

#[tokio::test]
async fn query_several_numbers_and_misses() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let r = api
        .get("/api/ratecard/query.json?card=c&number[]=441234&number[]=33123&number[]=1212")
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["441234"]["prefix"], "441");
    assert_eq!(v["1212"]["prefix"], "1");
    assert_eq!(v["33123"]["error"]["code"], 404);
    let miss = api
        .get("/api/ratecard/query.json?card=c&number=33123")
        .await;
    assert_eq!(miss.status, 404);
    let xml = api
        .get("/api/ratecard/query.xml?card=c&number=441234,33123")
        .await;
    let doc = roxmltree::Document::parse(std::str::from_utf8(&xml.body).unwrap()).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "query");
    let keys: Vec<_> = doc
        .root_element()
        .children()
        .filter_map(|n| n.attribute("key"))
        .collect();
    assert_eq!(keys, ["441234", "33123"]);
}

#[tokio::test]
async fn query_errors() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    for (uri, code, needle) in [
        (
            "/api/ratecard/query.json?card=c",
            400,
            "Missing Required Parameter 'number'",
        ),
        (
            "/api/ratecard/query.json?number=44",
            400,
            "Missing Required Parameter 'card'",
        ),
        (
            "/api/ratecard/query.json?card=c&number=44abc",
            400,
            "'number'",
        ),
        (
            "/api/ratecard/query.json?card=c&number=44&duration=-1",
            400,
            "'duration'",
        ),
        (
            "/api/ratecard/query.json?card=c&number=44&duration=abc",
            400,
            "'duration'",
        ),
        (
            "/api/ratecard/query.json?card=c&number=44&at=yesterday",
            400,
            "'at'",
        ),
        (
            "/api/ratecard/query.json?card=nope&number=44",
            404,
            "card 'nope' not found",
        ),
        (
            "/api/ratecard/query.json?card=c&number=44&at=5",
            404,
            "no revision live",
        ),
    ] {
        let r = api.get(uri).await;
        let (c, reason) = error_of(&r);
        assert_eq!((r.status, c), (code, u64::from(code)), "{uri}: {reason}");
        assert!(reason.contains(needle), "{uri}: {reason}");
    }
}

#[tokio::test]
async fn errors_in_every_format() {
    let api = Api::new();
    let json = api.get("/api/ratecard/query.json").await;
    assert_eq!(json.status, 400);
    assert_eq!(
        json.json(),
        json!({"error":{"code":400,"reason":"Missing Required Parameter 'card'"}})
    );
    let xml = api.get("/api/ratecard/query.xml").await;
    assert_eq!(xml.status, 400);
    let text = xml.text();
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "error");
    assert!(text.contains(
        "<error><code>400</code><reason>Missing Required Parameter 'card'</reason></error>"
    ));
    for uri in ["/api/ratecard/query.html", "/api/ratecard/query"] {
        let html = api.get(uri).await;
        assert_eq!(html.status, 400);
        assert!(html.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(
            html.text()
                .contains("Missing Required Parameter &#39;card&#39;")
                || html.text().contains("Missing Required Parameter 'card'")
        );
    }
}

#[tokio::test]
async fn html_pages_escape_values() {
    let api = Api::new();
    let r = api
        .post(
            "/api/ratecard/create.html",
            "name=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"));
}

#[tokio::test]
async fn every_body_kind_carries_variables() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let auth = Some(basic("acme", &format!("{KEY}-acme")));
    let form = api
        .request(
            "POST",
            "/api/ratecard/query.json?card=zzz",
            auth.clone(),
            Some("application/x-www-form-urlencoded"),
            "card=c&number=441",
        )
        .await;
    assert_eq!(form.status, 200, "body wins: {}", form.text());
    let json_body = api
        .request(
            "POST",
            "/api/ratecard/query.json",
            auth.clone(),
            Some("application/json"),
            r#"{"card":"c","number":["441","447"],"duration":10}"#,
        )
        .await;
    assert_eq!(json_body.json()["447"]["cost"], json!(0.0240));
    let multipart = "--b\r\nContent-Disposition: form-data; name=\"card\"\r\n\r\nc\r\n--b\r\nContent-Disposition: form-data; name=\"number\"\r\n\r\n441\r\n--b--\r\n";
    let mp = api
        .request(
            "POST",
            "/api/ratecard/query.json",
            auth.clone(),
            Some("multipart/form-data; boundary=b"),
            multipart,
        )
        .await;
    assert_eq!(mp.json()["prefix"], "441");
    let broken = api
        .request(
            "POST",
            "/api/ratecard/query.json",
            auth,
            Some("application/json"),
            "{\"card\":",
        )
        .await;
    assert_eq!(broken.status, 400);
}

#[tokio::test]
async fn authentication_forms_and_failures() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let uri = "/api/ratecard/list.json";
    let ok = |r: &Reply| r.status == 200;
    assert!(ok(&api
        .request(
            "GET",
            uri,
            Some(basic("acme", &format!("{KEY}-acme"))),
            None,
            Body::empty()
        )
        .await));
    assert!(ok(&api
        .request(
            "GET",
            uri,
            Some(format!("Bearer {KEY}-acme")),
            None,
            Body::empty()
        )
        .await));
    assert!(ok(&api
        .request(
            "GET",
            &format!("{uri}?api_key={KEY}-acme"),
            None,
            None,
            Body::empty()
        )
        .await));
    assert!(ok(&api
        .request(
            "GET",
            &format!("{uri}?api_key=acme:{KEY}-acme"),
            None,
            None,
            Body::empty()
        )
        .await));
    // The text a header verified is not a key when given as `api_key` (where it reads whole).
    let r = api
        .request(
            "GET",
            &format!("{uri}?api_key=Bearer%20{KEY}-acme"),
            None,
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, 401);
    for auth in [
        None,
        Some(basic("acme", "wrong")),
        Some(basic("nobody", "x")),
        Some("Bearer wrong".into()),
        Some(basic("rival", &format!("{KEY}-acme"))),
    ] {
        let r = api
            .request("GET", uri, auth.clone(), None, Body::empty())
            .await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(error_of(&r).0, 401);
    }
    // Customer keys do not open operator services, and the operator key is not an account key.
    let r = api
        .request(
            "GET",
            "/api/admin/account/list.json",
            Some(format!("Bearer {KEY}-acme")),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = api
        .request(
            "GET",
            uri,
            Some(format!("Bearer {OPERATOR_KEY}")),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn another_accounts_card_is_not_found() {
    let api = Api::new();
    let id = api.card_with("mine", DECK).await;
    let rival = Some(basic("rival", &format!("{KEY}-rival")));
    for uri in [
        format!("/api/ratecard/query.json?card={id}&number=44"),
        format!("/api/ratecard/get.json?card={id}"),
        "/api/ratecard/get.json?card=mine".to_owned(),
        format!("/api/ratecard/rules.json?card={id}"),
        format!("/api/ratecard/export.json?card={id}"),
        format!("/api/ratecard/delete.json?card={id}"),
    ] {
        let r = api
            .request("POST", &uri, rival.clone(), None, Body::empty())
            .await;
        assert_eq!(r.status, 404, "{uri}");
    }
    let list = api
        .request("GET", "/api/ratecard/list.json", rival, None, Body::empty())
        .await;
    assert_eq!(list.json()["cards"], json!([]));
    assert_eq!(
        api.get(&format!("/api/ratecard/get.json?card={id}"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn throughput_limit_answers_429_with_retry_after() {
    let api = Api::new();
    let auth = Some(basic("slow", &format!("{KEY}-slow")));
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let r = api
            .request(
                "GET",
                "/api/ratecard/list.json",
                auth.clone(),
                None,
                Body::empty(),
            )
            .await;
        statuses.push(r.status);
        last = Some(r);
    }
    assert_eq!(&statuses[..2], &[200, 200]);
    assert!(statuses[2..].iter().all(|s| *s == 429), "{statuses:?}");
    let last = last.unwrap();
    assert_eq!(last.headers[header::RETRY_AFTER], "1");
    assert_eq!(error_of(&last).0, 429);
    assert!(last.headers.contains_key("x-ratelimit-remaining"));
}

#[tokio::test]
async fn daily_limit_answers_429_until_midnight() {
    let api = Api::new();
    let auth = Some(basic("small", &format!("{KEY}-small")));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = api
            .request(
                "GET",
                "/api/ratecard/list.json",
                auth.clone(),
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-ratelimit-limit"], "3");
        remaining.push(
            r.headers["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = api
        .request("GET", "/api/ratecard/list.json", auth, None, Body::empty())
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
}

#[tokio::test]
async fn card_lifecycle() {
    let api = Api::new();
    let created = api.post("/api/ratecard/create.json", "name=wholesale&currency=EUR&direction=origination&precision=6&rounding=half_up&duration_rounding=down&tech_prefix=99%23").await;
    assert_eq!(created.status, 200, "{}", created.text());
    let card = created.json();
    assert_eq!(
        (
            card["currency"].as_str(),
            card["direction"].as_str(),
            card["precision"].as_u64()
        ),
        (Some("EUR"), Some("origination"), Some(6))
    );
    assert_eq!(
        (card["revision"].as_u64(), card["rules"].as_u64()),
        (Some(1), Some(0))
    );
    let id = card["id"].as_str().unwrap();
    assert_eq!(
        api.post("/api/ratecard/create.json", "name=wholesale")
            .await
            .status,
        409
    );
    for bad in [
        "name=x&currency=euro",
        "name=x&direction=sideways",
        "name=x&precision=11",
        "name=x&rounding=sideways",
        "name=x&tech_prefix=ab",
        "currency=USD",
    ] {
        let r = api.post("/api/ratecard/create.json", bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let list = api.get("/api/ratecard/list.json").await.json();
    assert_eq!(list["cards"][0]["id"], id);
    let updated = api
        .post(
            "/api/ratecard/update.json",
            &format!("card={id}&name=renamed"),
        )
        .await
        .json();
    assert_eq!(updated["name"], "renamed");
    assert_eq!(
        api.get("/api/ratecard/get.json?card=renamed").await.json()["id"],
        id
    );
    let deleted = api.post("/api/ratecard/delete.json", "card=renamed").await;
    assert_eq!(deleted.json(), json!({"card": id, "deleted": true}));
    assert_eq!(
        api.get(&format!("/api/ratecard/get.json?card={id}"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn rules_paging_and_prefix_filter() {
    let api = Api::new();
    let mut deck = String::from("prefix,name,rate,connect_fee,mcd,pulse\n");
    for i in 0..250 {
        deck.push_str(&format!("{},n{i},0.01,0,60,60\n", 4400 + i));
    }
    api.card_with("c", &deck).await;
    let page = api
        .get("/api/ratecard/rules.json?card=c&limit=10&offset=5")
        .await
        .json();
    assert_eq!(page["total"], 250);
    assert_eq!(page["rules"].as_array().unwrap().len(), 10);
    assert_eq!(page["rules"][0]["prefix"], "4405");
    let filtered = api
        .get("/api/ratecard/rules.json?card=c&prefix=441&limit=10000")
        .await
        .json();
    assert_eq!(filtered["total"], 10);
    assert!(filtered["rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["prefix"].as_str().unwrap().starts_with("441")));
    let rev1 = api
        .get("/api/ratecard/rules.json?card=c&revision=1")
        .await
        .json();
    assert_eq!(rev1["total"], 0);
    for bad in [
        "limit=0",
        "limit=10001",
        "prefix=4a",
        "offset=-1",
        "revision=x",
    ] {
        assert_eq!(
            api.get(&format!("/api/ratecard/rules.json?card=c&{bad}"))
                .await
                .status,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        api.get("/api/ratecard/rules.json?card=c&revision=9")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn rule_set_is_visible_at_once_and_delete_removes() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let set = api
        .post(
            "/api/ratecard/rule/set.json",
            "card=c&prefix=4479&name=UK%20Mobile%20Premium&rate=0.5&mcd=1&pulse=1",
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json()["created"], true);
    let q = api
        .get("/api/ratecard/query.json?card=c&number=447912345&duration=60")
        .await
        .json();
    assert_eq!(
        (q["prefix"].as_str(), q["cost"].clone()),
        (Some("4479"), json!(0.5))
    );
    // Update keeps the fields not given.
    let upd = api
        .post("/api/ratecard/rule/set.json", "card=c&prefix=4479&rate=0.4")
        .await
        .json();
    assert_eq!(
        (
            upd["created"].clone(),
            upd["name"].clone(),
            upd["mcd"].clone()
        ),
        (json!(false), json!("UK Mobile Premium"), json!(1))
    );
    let del = api
        .post("/api/ratecard/rule/delete.json", "card=c&prefix=4479")
        .await;
    assert_eq!(del.status, 200);
    let q = api
        .get("/api/ratecard/query.json?card=c&number=447912345")
        .await
        .json();
    assert_eq!(q["prefix"], "447");
    assert_eq!(
        api.post("/api/ratecard/rule/delete.json", "card=c&prefix=4479")
            .await
            .status,
        404
    );
    for bad in [
        "prefix=44a&rate=1",
        "prefix=55",
        "prefix=55&rate=-1",
        "prefix=55&rate=1&pulse=0",
        "prefix=55&rate=1&status=Maybe",
        "prefix=55&rate=1&mcd=x",
    ] {
        let r = api
            .post("/api/ratecard/rule/set.json", &format!("card=c&{bad}"))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    assert_eq!(
        api.get("/api/ratecard/query.json?card=c&number=55")
            .await
            .status,
        404,
        "rejected edits applied nothing"
    );
}

#[tokio::test]
async fn a_bad_deck_is_rejected_whole_with_line_numbers() {
    let api = Api::new();
    let id = api.card_with("c", DECK).await;
    let bad = "prefix,name,rate,connect_fee,mcd,pulse\n449,ok,0.1,0,60,60\n44x,bad,0.1,0,60,60\n441,neg,-0.1,0,60,60\n449,dup,0.1,0,60,60\n";
    let r = api
        .request(
            "POST",
            &format!("/api/ratecard/import.json?card={id}"),
            Some(basic("acme", &format!("{KEY}-acme"))),
            Some("text/csv"),
            bad,
        )
        .await;
    assert_eq!(r.status, 400);
    let (_, reason) = error_of(&r);
    assert!(
        reason.contains("line 3") && reason.contains("line 4") && reason.contains("line 5"),
        "{reason}"
    );
    let revisions = api.get("/api/ratecard/revisions.json?card=c").await.json();
    assert_eq!(
        revisions["revisions"].as_array().unwrap().len(),
        2,
        "nothing applied"
    );
    assert_eq!(
        api.get("/api/ratecard/query.json?card=c&number=4491")
            .await
            .json()["prefix"],
        "44"
    );
    for (body, ct) in [
        ("", "text/csv"),
        ("prefix,name\n1,a\n", "text/csv"),
        (
            "{\"schema_version\":\"1.0.0\",\"cards\":{}}",
            "application/json",
        ),
    ] {
        let r = api
            .request(
                "POST",
                &format!("/api/ratecard/import.json?card={id}"),
                Some(basic("acme", &format!("{KEY}-acme"))),
                Some(ct),
                body,
            )
            .await;
        assert_eq!(r.status, 400, "{body}");
    }
    assert_eq!(
        api.post("/api/ratecard/import.json", "card=c").await.status,
        400,
        "no deck"
    );
}

#[tokio::test]
async fn ime_import_export_round_trip_with_checksum() {
    let api = Api::new();
    let created = api
        .post("/api/ratecard/create.json", "name=ime")
        .await
        .json();
    let id = created["id"].as_str().unwrap().to_owned();
    let example = include_str!("../../model/tests/data/ime-example.json");
    let auth = Some(basic("acme", &format!("{KEY}-acme")));
    let r = api
        .request(
            "POST",
            &format!("/api/ratecard/import.json?card={id}&format=ime"),
            auth.clone(),
            Some("application/json"),
            example,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rules"], 3);
    let exported = api
        .get(&format!("/api/ratecard/export.xml?card={id}&format=ime"))
        .await;
    assert_eq!(exported.status, 200);
    assert_eq!(
        exported.headers[header::CONTENT_TYPE],
        "application/json",
        "the deck file whatever the extension"
    );
    let mut doc: Value = serde_json::from_slice(&exported.body).unwrap();
    assert_eq!(doc["metadata"]["checksum"].as_str().unwrap().len(), 64);
    // Re-import the export: the checksum verifies.
    let again = api
        .request(
            "POST",
            &format!("/api/ratecard/import.json?card={id}"),
            auth.clone(),
            Some("application/json"),
            exported.body.clone(),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    // Tamper with a rate: the checksum no longer matches.
    doc["cards"][id.as_str()]["rates"][0][2] = json!(9.99);
    let tampered = api
        .request(
            "POST",
            &format!("/api/ratecard/import.json?card={id}"),
            auth.clone(),
            Some("application/json"),
            serde_json::to_vec(&doc).unwrap(),
        )
        .await;
    assert_eq!(tampered.status, 400);
    assert!(error_of(&tampered).1.contains("checksum"));
    // Multipart upload of the same file.
    let body = format!("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"deck.json\"\r\nContent-Type: application/json\r\n\r\n{example}\r\n--b--\r\n");
    let mp = api
        .request(
            "POST",
            &format!("/api/ratecard/import.json?card={id}"),
            auth,
            Some("multipart/form-data; boundary=b"),
            body,
        )
        .await;
    assert_eq!(mp.status, 200, "{}", mp.text());
}

#[tokio::test]
async fn csv_export_is_the_deck_file() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let r = api.get("/api/ratecard/export.json?card=c").await;
    assert_eq!(r.status, 200);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let text = r.text();
    assert!(text.starts_with("prefix,name,rate,connect_fee,mcd,pulse"));
    assert!(text.contains("447,UK Mobile,0.028,0.01,30,6,0,,,Active"));
    assert_eq!(text.lines().count(), 6);
    assert_eq!(
        api.get("/api/ratecard/export.json?card=c&format=pdf")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn scheduled_revisions_go_live_at_their_time() {
    let api = Api::new();
    let id = api.card_with("c", DECK).await;
    let now = edgerate_model::time::now();
    let at = now + 3600;
    let deck2 = "prefix,name,rate,connect_fee,mcd,pulse\n441,UK Landline,0.010,0,60,60\n449,New,0.1,0,60,60\n";
    let r = api
        .request(
            "POST",
            &format!("/api/ratecard/import.json?card={id}&live_at={at}"),
            Some(basic("acme", &format!("{KEY}-acme"))),
            Some("text/csv"),
            deck2,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "scheduled");
    assert_eq!(
        api.get("/api/ratecard/query.json?card=c&number=441")
            .await
            .json()["rate"],
        json!(0.012)
    );
    let future = api
        .get(&format!(
            "/api/ratecard/query.json?card=c&number=441&at={at}"
        ))
        .await
        .json();
    assert_eq!(
        (future["revision"].clone(), future["rate"].clone()),
        (json!(3), json!(0.010))
    );
    let revs = api.get("/api/ratecard/revisions.json?card=c").await.json();
    let states: Vec<&str> = revs["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["archived", "live", "scheduled"]);
    // Activate now.
    let act = api
        .post("/api/ratecard/activate.json", "card=c&revision=3")
        .await;
    assert_eq!(act.status, 200, "{}", act.text());
    assert_eq!(act.json()["state"], "live");
    assert_eq!(
        api.get("/api/ratecard/query.json?card=c&number=441")
            .await
            .json()["rate"],
        json!(0.01)
    );
    // A past time is refused; a missing revision is 404.
    assert_eq!(
        api.post("/api/ratecard/activate.json", "card=c&revision=2&at=1000")
            .await
            .status,
        400
    );
    assert_eq!(
        api.post("/api/ratecard/activate.json", "card=c&revision=9")
            .await
            .status,
        404
    );
    // A draft import changes nothing live.
    let draft = api
        .request(
            "POST",
            &format!("/api/ratecard/import.json?card={id}&live_at=draft"),
            Some(basic("acme", &format!("{KEY}-acme"))),
            Some("text/csv"),
            DECK,
        )
        .await;
    assert_eq!(draft.json()["state"], "draft");
    // The diff between the live revision and the draft.
    let d = api
        .get("/api/ratecard/diff.json?card=c&from=3&to=4")
        .await
        .json();
    let prefixes = |k: &str| {
        d[k].as_array()
            .unwrap()
            .iter()
            .map(|r| r["prefix"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(prefixes("added"), ["1", "44", "447", "4470"]);
    assert_eq!(prefixes("removed"), ["449"]);
    assert_eq!(prefixes("increased"), ["441"]);
    assert_eq!(d["unchanged"], 0);
    assert_eq!(
        api.get("/api/ratecard/diff.json?card=c&from=3")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn accounts_by_the_operator() {
    let api = Api::new();
    let created = api
        .operator(
            "/api/admin/account/create.json",
            "name=Carrier%20One&rps=50&daily=1000",
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let v = created.json();
    let (id, key) = (
        v["account"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        (v["rps"].as_u64(), v["daily"].as_u64()),
        (Some(50), Some(1000))
    );
    let as_new = api
        .request(
            "GET",
            "/api/ratecard/list.json",
            Some(basic(&id, &key)),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(as_new.status, 200);
    assert_eq!(as_new.headers["x-ratelimit-limit"], "1000");
    let list = api
        .operator("/api/admin/account/list.json", "")
        .await
        .json();
    assert!(list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["account"] == id.as_str()));
    assert!(!list.to_string().contains(&key), "keys are never listed");
    let updated = api
        .operator(
            "/api/admin/account/update.json",
            &format!("account={id}&daily=5"),
        )
        .await
        .json();
    assert_eq!(updated["daily"], 5);
    let rotated = api
        .operator(
            "/api/admin/account/key/rotate.json",
            &format!("account={id}"),
        )
        .await
        .json();
    let new_key = rotated["key"].as_str().unwrap();
    assert_eq!(
        api.request(
            "GET",
            "/api/ratecard/list.json",
            Some(basic(&id, &key)),
            None,
            Body::empty()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        api.request(
            "GET",
            "/api/ratecard/list.json",
            Some(basic(&id, new_key)),
            None,
            Body::empty()
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.operator("/api/admin/account/delete.json", &format!("account={id}"))
            .await
            .status,
        200
    );
    assert_eq!(
        api.request(
            "GET",
            "/api/ratecard/list.json",
            Some(basic(&id, new_key)),
            None,
            Body::empty()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        api.operator("/api/admin/account/delete.json", &format!("account={id}"))
            .await
            .status,
        404
    );
    for bad in ["", "name=x&rps=0", "name=x&daily=lots"] {
        assert_eq!(
            api.operator("/api/admin/account/create.json", bad)
                .await
                .status,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        api.request(
            "POST",
            "/api/admin/account/create.json?name=x",
            None,
            None,
            Body::empty()
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn unknown_services_formats_and_methods() {
    let api = Api::new();
    assert_eq!(api.get("/api/ratecard/nothing.json").await.status, 404);
    assert_eq!(api.get("/api/ratecard/query.yaml").await.status, 404);
    // This router runs no SIP user agent: ping and dial say so.
    let no_sip = api.get("/api/lookup/ping.json?number=44").await;
    assert_eq!(error_of(&no_sip).0, 501);
    // Call treatments this node does not perform are refused by name, before anything is sent;
    // extra headers that could inject another header are a 400.
    let auth = Some(basic("acme", &format!("{KEY}-acme")));
    let amd = api
        .request(
            "GET",
            "/api/dial/dial.json?number=44&amd=1",
            auth.clone(),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(error_of(&amd).0, 501);
    assert!(error_of(&amd).1.contains("amd"), "{:?}", error_of(&amd));
    for bad in [
        "header_X-A=a%0D%0AVia:%20evil",
        "header_Via=x",
        "header_X%20A=1",
    ] {
        let r = api
            .request(
                "GET",
                &format!("/api/dial/dial.json?number=44&{bad}"),
                auth.clone(),
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(error_of(&r).0, 400, "{bad}");
    }
    let five = "header_A=1&header_B=1&header_C=1&header_D=1&header_E=1";
    let r = api
        .request(
            "GET",
            &format!("/api/dial/dial.json?number=44&{five}"),
            auth,
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(error_of(&r).0, 400);
    let put = api
        .request(
            "PUT",
            "/api/ratecard/list.json",
            Some(basic("acme", &format!("{KEY}-acme"))),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(put.status, 405);
    assert_eq!(put.headers[header::ALLOW], "GET, POST");
    assert_eq!(api.get("/nowhere").await.status, 404);
}

#[tokio::test]
async fn operability_endpoints() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    assert_eq!(api.get("/healthz").await.status, 200);
    assert_eq!(api.get("/readyz").await.status, 200);
    api.state.set_ready(false);
    assert_eq!(api.get("/readyz").await.status, 503);
    let metrics = api.get("/metrics").await.text();
    assert!(
        metrics.contains("edgerate_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("edgerate_ratecard_rules_loaded"));
    // The latency histogram: cumulative buckets, then the sum and count, per service.
    let import: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains(r#"service="ratecard/import""#))
        .filter(|l| l.starts_with("edgerate_http_request_duration_seconds"))
        .collect();
    assert_eq!(import.len(), 15, "{metrics}");
    let count = |l: &str| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    assert!(import
        .windows(2)
        .take(12)
        .all(|w| count(w[0]) <= count(w[1])));
    assert!(import[12].contains(r#"le="+Inf""#) && count(import[12]) >= 1.0);
    assert_eq!(count(import[14]), count(import[12]));
    let spec = api.get("/openapi.json").await.json();
    for service in edgerate_api::service::Service::ALL {
        let path = format!("/api/{}.{{ext}}", service.as_str());
        assert!(
            spec["paths"].get(&path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let status = api.operator("/api/cluster/status.json", "").await.json();
    assert_eq!(
        (status["node"].as_str(), status["region"].as_str()),
        (Some("test-1"), Some("test"))
    );
    let page = api.get("/").await.text();
    assert!(page.contains("test-1") && page.starts_with("<!DOCTYPE html>"));
    let page = api
        .request(
            "GET",
            &format!("/?api_key={OPERATOR_KEY}"),
            None,
            None,
            Body::empty(),
        )
        .await
        .text();
    assert!(page.contains("<td>c</td>"), "{page}");
}

/// POSTs `body` as `content_type` to `uri` as `acme`.
async fn upload(api: &Api, uri: &str, content_type: &str, body: &str) -> Reply {
    api.request(
        "POST",
        uri,
        Some(basic("acme", &format!("{KEY}-acme"))),
        Some(content_type),
        body.to_owned(),
    )
    .await
}

#[tokio::test]
async fn cdrs_are_rated_on_ingest_and_idempotent() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let now = edgerate_model::time::now();
    let one = api.post("/api/cdr/add.json", &format!("callid=a1&dt={now}&source_cli=12125550100&dest_number=%2B441234567890&duration=61&sip_code=200&card=c")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json(), json!({"added": 1, "duplicates": 0}));
    let again = api
        .post(
            "/api/cdr/add.json",
            &format!("callid=a1&dt={now}&dest_number=441234567890&sip_code=404"),
        )
        .await;
    assert_eq!(
        again.json(),
        json!({"added": 0, "duplicates": 1}),
        "re-sending changes nothing"
    );
    let batch = format!(
        r#"[{{"callid":"j1","dt":{now},"dest_number":"447400123456","duration":31,"sip_code":200,"card":"c"}},
                         {{"callid":"j2","dt":"{}","dest_number":"33123","duration":0,"sip_code":404}},
                         {{"callid":"a1","dt":{now},"dest_number":"44","sip_code":200}}]"#,
        edgerate_model::time::format_datetime(now - 10)
    );
    assert_eq!(
        upload(&api, "/api/cdr/add.json", "application/json", &batch)
            .await
            .json(),
        json!({"added": 2, "duplicates": 1})
    );
    let csv = format!("callid,dt,dest_number,duration,sip_code,card\nc1,{now},12125550100,9,200,c\nc2,{now},441234,5,486,\n");
    assert_eq!(
        upload(&api, "/api/cdr/add.json", "text/csv", &csv)
            .await
            .json(),
        json!({"added": 2, "duplicates": 0})
    );

    let list = api
        .get(&format!(
            "/api/cdr/list.json?from={}&to={}&order=asc",
            now - 60,
            now + 60
        ))
        .await
        .json();
    assert_eq!(list["total"], 5);
    let by_id = |id: &str| {
        list["cdrs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["callid"] == id)
            .unwrap()
            .clone()
    };
    let a1 = by_id("a1");
    assert_eq!(
        (
            a1["dest_code"].clone(),
            a1["rate"].clone(),
            a1["billed_duration"].clone(),
            a1["cost"].clone()
        ),
        (json!("441"), json!(0.012), json!(120), json!(0.024))
    );
    assert_eq!(
        by_id("j1")["cost"],
        json!(0.0268),
        "30/6 with a connect fee, same formula as ratecard/query"
    );
    assert_eq!(by_id("c1")["cost"], json!(0.0008));
    assert!(by_id("j2").get("cost").is_none(), "no card, no rating");
    assert_eq!(by_id("j2")["sip_reason"], "Not Found");
}

#[tokio::test]
async fn a_bad_cdr_batch_stores_nothing() {
    let api = Api::new();
    let now = edgerate_model::time::now();
    for (ct, body, needle) in [
        (
            "application/json",
            r#"[{"callid":"x1","dest_number":"44","sip_code":200},{"callid":"x2","sip_code":200}]"#
                .to_owned(),
            "row 2: missing 'dest_number'",
        ),
        (
            "application/json",
            r#"[{"callid":"x1","dest_number":"44","sip_code":200,"duration":-5}]"#.to_owned(),
            "row 1: 'duration' -5 is negative",
        ),
        (
            "application/json",
            "[{\"callid\":".to_owned(),
            "not valid JSON",
        ),
        (
            "text/csv",
            format!("callid,dt,dest_number,sip_code\ny1,{now},44,200\ny2,yesterday,44,200\n"),
            "line 3: 'dt'",
        ),
        (
            "text/csv",
            "callid,dest_number\nz1,44\n".to_owned(),
            "line 2: missing 'sip_code'",
        ),
    ] {
        let r = upload(&api, "/api/cdr/add.json", ct, &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(error_of(&r).1.contains(needle), "{}", error_of(&r).1);
    }
    assert_eq!(
        api.post("/api/cdr/add.json", "callid=v&dest_number=44")
            .await
            .status,
        400
    );
    let list = api
        .get(&format!("/api/cdr/list.json?from=0&to={}", 86_400 * 90))
        .await
        .json();
    assert_eq!(list["total"], 0);
    let recent = api
        .get(&format!(
            "/api/cdr/list.json?from={}&to={}",
            now - 3600,
            now + 3600
        ))
        .await
        .json();
    assert_eq!(recent["total"], 0, "nothing of a rejected batch was stored");
}

#[tokio::test]
async fn cdr_list_filters_pages_and_ranges() {
    let api = Api::new();
    let base = 1_700_000_000;
    let mut csv = String::from("callid,dt,source_cli,dest_number,duration,sip_code\n");
    for i in 0..30 {
        csv.push_str(&format!(
            "k{i},{},1212555{:04},4420{},{},{}\n",
            base + i * 60,
            i % 3,
            i % 5,
            i,
            if i % 2 == 0 { 200 } else { 486 }
        ));
    }
    assert_eq!(
        upload(&api, "/api/cdr/add.json", "text/csv", &csv)
            .await
            .json()["added"],
        30
    );
    let q = |extra: &str| format!("/api/cdr/list.json?from={base}&to={}&{extra}", base + 3600);
    let all = api.get(&q("limit=10")).await.json();
    assert_eq!(
        (all["total"].clone(), all["cdrs"].as_array().unwrap().len()),
        (json!(30), 10)
    );
    assert_eq!(all["cdrs"][0]["callid"], "k29", "newest first by default");
    assert_eq!(
        api.get(&q("order=asc&limit=1&offset=2")).await.json()["cdrs"][0]["callid"],
        "k2"
    );
    assert_eq!(api.get(&q("number=44203")).await.json()["total"], 6);
    assert_eq!(api.get(&q("cli=12125550001")).await.json()["total"], 10);
    assert_eq!(api.get(&q("sip_code=486")).await.json()["total"], 15);
    let other = api
        .request(
            "GET",
            &q(""),
            Some(basic("rival", &format!("{KEY}-rival"))),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(
        other.json()["total"],
        0,
        "another account's CDRs are not visible"
    );
    for bad in [
        "/api/cdr/list.json?from=0".to_owned(),
        "/api/cdr/list.json?to=0".to_owned(),
        format!("/api/cdr/list.json?from=0&to={}", 94 * 86_400),
        "/api/cdr/list.json?from=10&to=5".to_owned(),
        q("limit=10001"),
        q("order=sideways"),
        q("number=44x"),
    ] {
        assert_eq!(api.get(&bad).await.status, 400, "{bad}");
    }
    let export = api
        .get(&format!(
            "/api/cdr/export.json?from={base}&to={}&sip_code=200",
            base + 3600
        ))
        .await;
    assert_eq!(export.status, 200);
    assert!(export.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = export.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], edgerate_api::cdr::CSV_HEADER);
    assert_eq!(lines.len(), 16);
    assert!(
        lines[1].starts_with(&format!("k0,{base},12125550000,44200,0,200,OK,")),
        "{}",
        lines[1]
    );
    let stats = api
        .get(&format!(
            "/api/cdr/stats.json?from={base}&to={}",
            base + 3600
        ))
        .await
        .json();
    assert_eq!(
        (
            stats["attempts"].clone(),
            stats["connected"].clone(),
            stats["asr"].clone()
        ),
        (json!(30), json!(15), json!(50))
    );
    // connected durations: 0, 2, …, 28 → 210 s over 15 calls.
    assert_eq!(
        (stats["acd"].clone(), stats["minutes"].clone()),
        (json!(14), json!(3.5))
    );
    let by_code = api
        .get(&format!(
            "/api/cdr/stats.json?from={base}&to={}&group_by=sip_code",
            base + 3600
        ))
        .await
        .json();
    assert_eq!(by_code["groups"][0]["sip_code"], 200);
    assert_eq!(by_code["groups"][1]["attempts"], 15);
    assert_eq!(
        api.get(&format!(
            "/api/cdr/stats.json?from={base}&to={}&group_by=week",
            base + 1
        ))
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn asrplus_answers_from_recent_outcomes() {
    let api = Api::new();
    let now = edgerate_model::time::now();
    let csv = format!(
        "callid,dt,dest_number,sip_code\nq1,{},441234567890,404\nq2,{},442000000000,404\nq3,{},442000000000,200\nq4,{},443000000000,604\nq5,{},444000000000,486\n",
        now - 11 * 86_400 - 5,
        now - 100,
        now - 50,
        now - 31 * 86_400,
        now - 10
    );
    assert_eq!(
        upload(&api, "/api/cdr/add.json", "text/csv", &csv)
            .await
            .json()["added"],
        5
    );
    let one = api
        .get("/api/lookup/asrplus.json?number=%2B44%201234%20567890")
        .await
        .json();
    assert_eq!(one["status"], "Invalid");
    assert_eq!(
        (one["code"].clone(), one["reason"].clone()),
        (json!(404), json!("Not Found"))
    );
    assert_eq!(one["age_days"], 11);
    assert!(one["age"].as_i64().unwrap() >= 11 * 86_400 + 5);
    let several = api
        .get("/api/lookup/asrplus.json?number=442000000000,443000000000,444000000000,445")
        .await
        .json();
    assert_eq!(several["442000000000"]["status"], "Valid", "good after bad");
    assert_eq!(
        several["443000000000"],
        json!({"number": "443000000000", "status": "Unknown"}),
        "older than 30 days"
    );
    assert_eq!(
        several["444000000000"]["status"], "Unknown",
        "busy says nothing"
    );
    assert_eq!(several["445"]["status"], "Unknown");
    let xml = api
        .get("/api/lookup/asrplus.xml?number=442000000000,445")
        .await
        .text();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "asrplus");
    assert!(xml.contains("<item key=\"442000000000\">"), "{xml}");
    assert_eq!(api.get("/api/lookup/asrplus.json").await.status, 400);
    assert_eq!(
        api.get("/api/lookup/asrplus.json?number=abc").await.status,
        400
    );
}

#[tokio::test]
async fn smart_lookup_nests_by_number_and_type() {
    let api = Api::new();
    let op = |uri: &str, body: &str| {
        let uri = uri.to_owned();
        let body = body.to_owned();
        let api = &api;
        async move {
            api.request(
                "POST",
                &uri,
                Some(format!("Bearer {OPERATOR_KEY}")),
                Some("text/csv"),
                body,
            )
            .await
        }
    };
    let range = op("/api/admin/dataset/import.json?name=range", "prefix,area_code,de,fg,status,date_modified\n44121,0121,Birmingham,BT,Allocated,2019-01-01\n4412,012,West Midlands,BT,Allocated,2018-01-01\n").await;
    assert_eq!(range.status, 200, "{}", range.text());
    assert_eq!(range.json()["rows"], 2);
    assert_eq!(
        op(
            "/api/admin/dataset/import.json?name=lrn",
            "tn,lrn,state,city\n2125550100,2125550000,NY,New York\n"
        )
        .await
        .status,
        200
    );
    assert_eq!(
        op(
            "/api/admin/dataset/import.json?name=hlr",
            "prefix,mcc,mnc,brand,operator\n4474,234,15,Vodafone,Vodafone UK\n"
        )
        .await
        .status,
        200
    );
    assert_eq!(
        op(
            "/api/admin/dataset/import.json?name=tps",
            "number\n441214960000\n"
        )
        .await
        .status,
        200
    );
    // A bad file changes nothing.
    let bad = op(
        "/api/admin/dataset/import.json?name=range",
        "prefix,area_code\n44x,1\n",
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(error_of(&bad).1.contains("line 2"), "{}", error_of(&bad).1);
    assert_eq!(
        op("/api/admin/dataset/import.json?name=colours", "prefix\n1\n")
            .await
            .status,
        400
    );
    assert_eq!(
        api.post(
            "/api/admin/dataset/import.json?name=tps",
            "file=number%0A1%0A"
        )
        .await
        .status,
        401,
        "operator only"
    );

    let r = api.get("/api/lookup/smart.json?number=441214960000,12125550100,447400123456&type=range,lrn,hlr,tps,plan").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let uk = &v["441214960000"];
    assert_eq!(
        uk["range"],
        json!({"area_code":"0121","de":"Birmingham","fg":"BT","status":"Allocated","date_modified":"2019-01-01"})
    );
    assert_eq!(uk["tps"], json!({"listed": true}));
    assert_eq!(uk["lrn"], json!({"status": "Unknown"}));
    assert_eq!(uk["hlr"], json!({"status": "Unknown"}));
    assert_eq!(
        (
            uk["plan"]["country"].clone(),
            uk["plan"]["country_code"].clone(),
            uk["plan"]["e164"].clone()
        ),
        (json!("GB"), json!(44), json!("+441214960000"))
    );
    let us = &v["12125550100"];
    assert_eq!(
        us["lrn"],
        json!({"tn":"2125550100","lrn":"2125550000","state":"NY","city":"New York"})
    );
    assert_eq!(us["tps"], json!({"listed": false}));
    assert_eq!(v["447400123456"]["hlr"]["operator"], "Vodafone UK");
    assert_eq!(v["447400123456"]["plan"]["type"], "mobile");

    let asr = api
        .get("/api/lookup/smart.json?number=4412&type=asrplus")
        .await
        .json();
    assert_eq!(asr["4412"]["asrplus"]["status"], "Unknown");
    let xml = api
        .get("/api/lookup/smart.xml?number=441214960000&type=tps,plan")
        .await
        .text();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "smart");
    assert!(
        xml.contains("<item key=\"441214960000\"><tps><listed>true</listed></tps>"),
        "{xml}"
    );
    assert_eq!(
        api.get("/api/lookup/smart.json?number=44&type=weather")
            .await
            .status,
        400
    );
    assert_eq!(
        api.get("/api/lookup/smart.json?number=44").await.status,
        400
    );
    assert_eq!(
        api.get("/api/lookup/smart.json?number=44&type=plan,ping")
            .await
            .status,
        501
    );
}

#[tokio::test]
async fn us_calls_take_the_inter_or_intra_rate_by_lrn_state() {
    let api = Api::new();
    api.card_with("us", "prefix,name,rate,connect_fee,mcd,pulse,grace,rate_inter,rate_intra,status\n1212,NYC,0.005,0,6,6,0,0.006,0.004,Active\n").await;
    let query = |cli: &str| {
        let uri = format!("/api/ratecard/query.json?card=us&number=12125550199&duration=60{cli}");
        let api = &api;
        async move { api.get(&uri).await.json()["rate"].clone() }
    };
    assert_eq!(
        query("&cli=12015550100").await,
        json!(0.005),
        "no LRN dataset: rate"
    );
    let lrn = api
        .request(
            "POST",
            "/api/admin/dataset/import.json?name=lrn",
            Some(format!("Bearer {OPERATOR_KEY}")),
            Some("text/csv"),
            "tn,lrn,state\n2125550100,2125550000,NY\n2015550100,2015550000,NJ\n212555,,NY\n",
        )
        .await;
    assert_eq!(lrn.status, 200, "{}", lrn.text());
    assert_eq!(
        query("&cli=12125550100").await,
        json!(0.004),
        "same state: intra"
    );
    assert_eq!(
        query("&cli=12015550100").await,
        json!(0.006),
        "another state: inter"
    );
    assert_eq!(query("").await, json!(0.005), "no cli: rate");
    assert_eq!(
        query("&cli=13105550100").await,
        json!(0.005),
        "cli state unknown: rate"
    );
    assert_eq!(
        query("&cli=441234567890").await,
        json!(0.005),
        "not a US cli: rate"
    );
    let now = edgerate_model::time::now();
    let cdr = api.post("/api/cdr/add.json", &format!("callid=us1&dt={now}&source_cli=12015550100&dest_number=12125550199&duration=60&sip_code=200&card=us")).await;
    assert_eq!(cdr.status, 200);
    let listed = api
        .get(&format!(
            "/api/cdr/list.json?from={}&to={}",
            now - 5,
            now + 5
        ))
        .await
        .json();
    assert_eq!(
        (
            listed["cdrs"][0]["rate"].clone(),
            listed["cdrs"][0]["cost"].clone()
        ),
        (json!(0.006), json!(0.006))
    );
}

/// Hostile input never gets a 500 or a malformed envelope: random bodies of every content type,
/// to services that read variables, decks, CDRs and datasets.
#[tokio::test]
async fn random_input_never_breaks_the_envelope() {
    use rand::{Rng, SeedableRng};
    let api = Api::new();
    api.card_with("c", DECK).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let services = [
        "ratecard/query",
        "ratecard/import",
        "ratecard/rule/set",
        "ratecard/rules",
        "ratecard/diff",
        "ratecard/activate",
        "cdr/add",
        "cdr/list",
        "cdr/stats",
        "lookup/asrplus",
        "lookup/smart",
        "admin/dataset/import",
        "admin/account/create",
    ];
    let types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/csv",
        "application/octet-stream",
    ];
    let alphabet = b"{}[]\",:=&%+-.0123456789abcdefxyz_\n\r #\\\0\xff";
    for i in 0..400 {
        let len = rng.random_range(0..200);
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let service = services[i % services.len()];
        let query = [
            "",
            "card=c",
            "card=c&number=44&duration=x",
            "from=0&to=99",
            "name=lrn",
            "number=1&type=plan",
        ][i % 6];
        let auth = if service.starts_with("admin/") {
            format!("Bearer {OPERATOR_KEY}")
        } else {
            basic("acme", &format!("{KEY}-acme"))
        };
        let r = api
            .request(
                "POST",
                &format!("/api/{service}.json?{query}"),
                Some(auth),
                Some(types[i % types.len()]),
                body.clone(),
            )
            .await;
        assert_ne!(
            r.status,
            500,
            "{service}?{query} with {:?}",
            String::from_utf8_lossy(&body)
        );
        if r.status != 200 {
            let (code, reason) = error_of(&r);
            assert_eq!(u64::from(r.status), code);
            assert!(!reason.is_empty());
        }
    }
}
