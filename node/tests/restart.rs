//! The real binary: first start on the embedded default, writes, SIGKILL, restart — every
//! acknowledged write is there; SIGTERM stops it cleanly.

use edgerate_tests::{generated_deck, Api, NodeProcess};
use serde_json::Value;
use std::path::Path;

const OPERATOR: &str = "restart-test-operator-key";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgerate"))
}

/// Everything observable about the demo account's state.
fn snapshot(api: &Api, card: &str) -> Value {
    let now = edgerate_model::time::now();
    let (from, to) = ((now - 86_400).to_string(), (now + 86_400).to_string());
    let export = api.call("ratecard/export", &[("card", card)]);
    assert_eq!(export.status, 200);
    serde_json::json!({
        "cards": api.ok("ratecard/list", &[]),
        "revisions": api.ok("ratecard/revisions", &[("card", card)]),
        "export": String::from_utf8(export.body).unwrap(),
        "query": api.ok("ratecard/query", &[("card", card), ("number", "441234567890,4479001,10000001"), ("duration", "61")]),
        "cdrs": api.ok("cdr/list", &[("from", &from), ("to", &to)]),
        "asrplus": without_ages(api.ok("lookup/asrplus", &[("number", "4479001,447911")])),
    })
}

/// ASR Plus answers without `age`/`age_days`, which move with the clock.
fn without_ages(mut answers: Value) -> Value {
    for answer in answers
        .as_object_mut()
        .into_iter()
        .flat_map(|m| m.values_mut())
    {
        if let Some(fields) = answer.as_object_mut() {
            fields.remove("age");
            fields.remove("age_days");
        }
    }
    answers
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(bin(), &data, OPERATOR);
    let key = node
        .demo_key()
        .expect("the demo key is printed on first start");
    let api = Api::account(&node.url, "demo", &key);
    let demo = api.ok(
        "ratecard/query",
        &[
            ("card", "demo"),
            ("number", "441234567890"),
            ("duration", "61"),
        ],
    );
    assert_eq!(
        demo["cost"],
        serde_json::json!(0.024),
        "the demo card is loaded"
    );

    let card = api.ok("ratecard/create", &[("name", "wholesale")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let imported = api.upload(
        "ratecard/import",
        &format!("card={card}"),
        "text/csv",
        generated_deck(20_000, 1).into_bytes(),
    );
    assert_eq!(
        imported.status,
        200,
        "{}",
        String::from_utf8_lossy(&imported.body)
    );
    api.ok(
        "ratecard/rule/set",
        &[
            ("card", &card),
            ("prefix", "4479"),
            ("name", "Edited"),
            ("rate", "0.5"),
        ],
    );
    api.ok(
        "ratecard/rule/set",
        &[
            ("card", &card),
            ("prefix", "441"),
            ("name", "UK"),
            ("rate", "0.01"),
        ],
    );
    api.ok(
        "ratecard/rule/delete",
        &[("card", &card), ("prefix", "441")],
    );
    let cdrs = "callid,dest_number,duration,sip_code,card\nx1,4479001,61,200,wholesale\nx2,447911,0,404,\n";
    let added = api.upload("cdr/add", "", "text/csv", cdrs.as_bytes().to_vec());
    assert_eq!(added.json()["added"], 2, "{:?}", added);
    let operator = Api::operator(&node.url, OPERATOR);
    let account = operator.ok("admin/account/create", &[("name", "late")]);
    let before = snapshot(&api, &card);
    node.kill();

    let mut node = NodeProcess::start(bin(), &data, OPERATOR);
    assert_eq!(node.demo_key(), None, "the demo is created once");
    let api = Api::account(&node.url, "demo", &key);
    assert_eq!(snapshot(&api, &card), before);
    let after = api.ok("lookup/asrplus", &[("number", "447911")]);
    assert_eq!(
        after["status"], "Invalid",
        "ASR Plus is rebuilt from the log"
    );
    let late = Api::account(
        &node.url,
        account["account"].as_str().unwrap(),
        account["key"].as_str().unwrap(),
    );
    assert_eq!(
        late.call("ratecard/list", &[]).status,
        200,
        "the account created last survives"
    );

    let status = node.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status}");
}

#[test]
fn a_data_dir_of_the_previous_format_is_upgraded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(bin(), &data, OPERATOR);
    let key = node.demo_key().unwrap();
    let before = snapshot(&Api::account(&node.url, "demo", &key), "demo");
    node.terminate();
    // The first layout had no version file: the node reads it as format 1 and writes its own.
    std::fs::remove_file(data.join("format")).unwrap();
    let node = NodeProcess::start(bin(), &data, OPERATOR);
    assert_eq!(
        snapshot(&Api::account(&node.url, "demo", &key), "demo"),
        before
    );
    assert_eq!(std::fs::read_to_string(data.join("format")).unwrap(), "2\n");
    node.terminate();
    // A data dir a newer edgerate wrote is refused before anything in it is read.
    std::fs::write(data.join("format"), "3\n").unwrap();
    let refused = std::process::Command::new(bin())
        .args(["serve", "--http", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("EDGERATE_OPERATOR_KEY", OPERATOR)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("data dir is format 3, newer than this edgerate reads"),
        "{said}"
    );
}
