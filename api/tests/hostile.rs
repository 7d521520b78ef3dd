//! Hostile and careless input through the router: unknown variables, bodies before
//! authentication, bounds on every list and range, text that would break XML or run in a
//! spreadsheet, and read-modify-write races.

mod common;

use common::*;

fn acme() -> Option<String> {
    Some(basic("acme", &format!("{KEY}-acme")))
}

#[tokio::test]
async fn an_unknown_variable_is_a_400_naming_it() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let r = api
        .get("/api/ratecard/query.json?card=c&number=441&liveat=1")
        .await;
    assert_eq!(error_of(&r), (400, "unknown variable 'liveat'".into()));
    let r = api
        .post("/api/ratecard/import.json", "card=c&modus=delta&file=x")
        .await;
    assert_eq!(error_of(&r), (400, "unknown variable 'modus'".into()));
    // JSON bodies are variables too; api_key is taken everywhere.
    let r = api
        .request(
            "POST",
            "/api/ratecard/query.json",
            None,
            Some("application/json"),
            format!(r#"{{"api_key":"acme:{KEY}-acme","card":"c","number":"441","dur":5}}"#),
        )
        .await;
    assert_eq!(error_of(&r), (400, "unknown variable 'dur'".into()));
    // Call treatments this node does not perform stay a 501 naming the variable.
    let r = api.get("/api/dial/dial.json?number=441&amd=1").await;
    assert_eq!(r.status, 501, "{}", r.text());
    assert!(error_of(&r).1.contains("'amd'"));
    let ok = api.get("/api/ratecard/query.json?card=c&number=441").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[tokio::test]
async fn a_body_is_not_read_before_credentials() {
    let api = Api::new();
    // No credentials outside the body: at most 64 KiB is read.
    let big = format!("card=c&number=441&pad={}", "x".repeat(200 * 1024));
    let r = api
        .request(
            "POST",
            "/api/ratecard/query.json",
            None,
            Some("application/x-www-form-urlencoded"),
            big.clone(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    // Wrong credentials in the header: 401 before the body is looked at.
    let r = api
        .request(
            "POST",
            "/api/ratecard/import.json?card=c",
            Some(basic("acme", "wrong")),
            Some("text/csv"),
            "x".repeat(2 * 1024 * 1024),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Authenticated: a small service takes at most 1 MiB, an import much more.
    let r = api
        .request(
            "POST",
            "/api/ratecard/query.json",
            acme(),
            Some("application/x-www-form-urlencoded"),
            format!("card=c&number=441&pad={}", "x".repeat(2 * 1024 * 1024)),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    // A key in a small body still works.
    api.card_with("c", DECK).await;
    let r = api
        .request(
            "POST",
            "/api/ratecard/query.json",
            None,
            Some("application/x-www-form-urlencoded"),
            format!("api_key=acme:{KEY}-acme&card=c&number=441"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn lists_and_ranges_are_bounded_before_the_work() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    let many: Vec<String> = (0..1001).map(|i| format!("44{i}")).collect();
    for (service, other) in [
        ("ratecard/query", "card=c"),
        ("lookup/asrplus", ""),
        ("lookup/smart", "type=plan"),
    ] {
        let r = api
            .post(
                &format!("/api/{service}.json"),
                &format!("{other}&number={}", many.join(",")),
            )
            .await;
        let (code, reason) = error_of(&r);
        assert_eq!(code, 400, "{service}");
        assert!(
            reason.contains("'number'") && reason.contains("1000"),
            "{reason}"
        );
    }
    for (query, variable) in [
        ("from=-9223372036854775808&to=9223372036854775807", "from"),
        ("from=0&to=9223372036854775807", "to"),
        ("from=0&to=100&offset=18446744073709551615", "offset"),
        ("from=0&to=100&offset=99999999999", "offset"),
        ("from=0&to=100&limit=0", "limit"),
        ("from=0&to=99999999", "to"),
    ] {
        let r = api.get(&format!("/api/cdr/list.json?{query}")).await;
        let (code, reason) = error_of(&r);
        assert_eq!(code, 400, "{query}: {reason}");
        assert!(
            reason.contains(&format!("'{variable}'")),
            "{query}: {reason}"
        );
    }
    let r = api
        .get("/api/ratecard/query.json?card=c&number=441&at=99999999999999")
        .await;
    assert_eq!(error_of(&r).0, 400);
}

#[tokio::test]
async fn a_cdr_dated_far_ahead_is_refused() {
    let api = Api::new();
    let r = api
        .post(
            "/api/cdr/add.json",
            "callid=f1&dest_number=441234&sip_code=404&dt=2100-01-01 00:00:00",
        )
        .await;
    let (code, reason) = error_of(&r);
    assert_eq!(code, 400);
    assert!(reason.contains("ahead"), "{reason}");
    let r = api.get("/api/lookup/asrplus.json?number=441234").await;
    assert_eq!(r.json()["status"], "Unknown", "nothing was stored");
    let soon = edgerate_model::time::now() + 3600;
    let r = api
        .post(
            "/api/cdr/add.json",
            &format!("callid=f2&dest_number=441234&sip_code=404&dt={soon}"),
        )
        .await;
    assert_eq!(r.status, 200, "an hour of clock skew is fine: {}", r.text());
}

#[tokio::test]
async fn echoed_control_characters_keep_xml_parseable() {
    let api = Api::new();
    let r = api.get("/api/ratecard/get.xml?card=%01%02%1b").await;
    assert_eq!(r.status, 404);
    let text = r.text();
    roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let r = api.get("/api/ratecard/get.html?card=%00x%07").await;
    assert!(!r.text().contains('\u{0}') && !r.text().contains('\u{7}'));
}

#[tokio::test]
async fn exported_cells_never_run_as_formulas_and_import_back() {
    let api = Api::new();
    let deck = "prefix,name,rate,connect_fee,mcd,pulse\n44,=HYPERLINK(\"http://x\"),0.01,0,60,60\n45,+cmd,0.01,0,60,60\n46,@SUM(A1),0.01,0,60,60\n";
    api.card_with("c", deck).await;
    let export = api.get("/api/ratecard/export.json?card=c").await.text();
    assert!(
        export.contains("\"'=HYPERLINK(\"\"http://x\"\")\""),
        "{export}"
    );
    assert!(
        export.contains(",'+cmd,") && export.contains(",'@SUM(A1),"),
        "{export}"
    );
    api.card_with("d", &export).await;
    let rule = api
        .get("/api/ratecard/query.json?card=d&number=44")
        .await
        .json();
    assert_eq!(rule["name"], "=HYPERLINK(\"http://x\")");
}

#[tokio::test]
async fn an_account_update_keeps_the_days_usage() {
    let api = Api::new();
    let small = || Some(basic("small", &format!("{KEY}-small")));
    let ask = || async {
        api.request("GET", "/api/ratecard/list.json", small(), None, "")
            .await
            .status
    };
    assert_eq!((ask().await, ask().await), (200, 200));
    let r = api
        .operator(
            "/api/admin/account/update.json",
            "account=small&name=renamed",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ask().await, 200, "the third of 3 a day");
    assert_eq!(ask().await, 429, "the update did not reset the day's count");
}

#[tokio::test]
async fn concurrent_partial_edits_of_one_rule_keep_every_field() {
    let api = Api::new();
    api.card_with("c", DECK).await;
    for round in 0..20 {
        let name = format!("name{round}");
        let fee = format!("0.{round:02}1");
        let (set_name, set_fee) = (
            format!("card=c&prefix=441&name={name}"),
            format!("card=c&prefix=441&connect_fee={fee}"),
        );
        let (a, b) = tokio::join!(
            api.post("/api/ratecard/rule/set.json", &set_name),
            api.post("/api/ratecard/rule/set.json", &set_fee),
        );
        assert_eq!(
            (a.status, b.status),
            (200, 200),
            "{} {}",
            a.text(),
            b.text()
        );
        let rule = api
            .get("/api/ratecard/query.json?card=c&number=441")
            .await
            .json();
        assert_eq!(rule["name"], name.as_str(), "round {round}: {rule}");
        assert_eq!(
            rule["connect_fee"].to_string(),
            fee.trim_end_matches('0'),
            "round {round}: {rule}"
        );
    }
}

#[tokio::test]
async fn the_spec_states_the_bounds() {
    let api = Api::new();
    let spec = api.get("/openapi.json").await.json();
    let params = |path: &str| spec["paths"][path]["get"]["parameters"].clone();
    let find = |list: &serde_json::Value, name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let query = params("/api/ratecard/query.{ext}");
    assert_eq!(find(&query, "number")["schema"]["maxItems"], 1000);
    let ping = params("/api/lookup/ping.{ext}");
    assert_eq!(find(&ping, "number")["schema"]["maxItems"], 100);
    let list = params("/api/cdr/list.{ext}");
    assert_eq!(find(&list, "offset")["schema"]["maximum"], 10_000_000);
    assert_eq!(find(&list, "limit")["schema"]["maximum"], 10_000);
    let responses = &spec["paths"]["/api/cdr/add.{ext}"]["post"]["responses"];
    for code in ["413", "429", "503"] {
        assert!(responses.get(code).is_some(), "{code}");
    }
}
