//! The JSON schema of every service's answer (OpenAPI components), one per kind of answer and
//! reused; [`reply`] names the one each service answers with. The HTTP tests validate real
//! answers against these, so a field added to an answer and not here fails a test.

use crate::service::Service;
use serde_json::{json, Map, Value};

/// A reference to component `name`.
fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An object whose `required` keys are always there; `optional` ones only sometimes. No key
/// outside the two is allowed.
fn object(required: &[(&str, Value)], optional: &[(&str, Value)]) -> Value {
    let mut properties = Map::new();
    for (name, schema) in required.iter().chain(optional) {
        properties.insert((*name).into(), schema.clone());
    }
    let names: Vec<&str> = required.iter().map(|(n, _)| *n).collect();
    json!({ "type": "object", "required": names, "properties": properties, "additionalProperties": false })
}

fn string() -> Value {
    json!({ "type": "string" })
}
fn integer() -> Value {
    json!({ "type": "integer" })
}
/// An exact decimal, written as a JSON number (never in exponent form, trailing zeros dropped).
fn decimal() -> Value {
    json!({ "type": "number" })
}
fn boolean() -> Value {
    json!({ "type": "boolean" })
}
fn nullable(mut schema: Value) -> Value {
    match schema.get("type").cloned() {
        Some(Value::String(t)) => schema["type"] = json!([t, "null"]),
        _ => schema = json!({ "anyOf": [schema, { "type": "null" }] }),
    }
    schema
}
fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}
fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}
/// An object keyed by phone number (several numbers asked), each value `item`.
fn by_number(item: Value) -> Value {
    json!({ "type": "object", "propertyNames": { "pattern": "^[0-9]{1,20}$" }, "additionalProperties": item })
}
/// One number asked: `item`; several: an object keyed by number.
fn one_or_by_number(item: &str) -> Value {
    json!({ "anyOf": [r(item), by_number(r(item))] })
}

const STATUS: [&str; 2] = ["Active", "Blocked"];
const ROUNDING: [&str; 4] = ["up", "down", "half_up", "half_down"];

fn rule_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("prefix", string()),
        ("name", string()),
        ("rate", decimal()),
        ("connect_fee", decimal()),
        ("mcd", integer()),
        ("pulse", integer()),
        ("grace", integer()),
        ("rate_inter", nullable(decimal())),
        ("rate_intra", nullable(decimal())),
        ("status", one_of(&STATUS)),
    ]
}

fn revision_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("rev", integer()),
        ("created", integer()),
        ("live_at", nullable(integer())),
        ("state", one_of(&["draft", "scheduled", "live", "archived"])),
        ("rules", integer()),
        ("source", string()),
    ]
}

fn with(
    mut base: Vec<(&'static str, Value)>,
    more: &[(&'static str, Value)],
) -> Vec<(&'static str, Value)> {
    base.extend(more.iter().cloned());
    base
}

fn stats_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("attempts", integer()),
        ("connected", integer()),
        ("asr", decimal()),
        ("acd", decimal()),
        ("minutes", decimal()),
        ("cost", decimal()),
    ]
}

fn sums_required() -> Vec<(&'static str, Value)> {
    vec![
        ("calls", integer()),
        ("minutes", decimal()),
        ("revenue_now", decimal()),
        ("revenue_new", decimal()),
        ("delta", decimal()),
        ("unpriced", integer()),
    ]
}
fn sums_optional() -> Vec<(&'static str, Value)> {
    vec![
        ("cost", decimal()),
        ("margin", decimal()),
        ("unrouted", integer()),
    ]
}

/// Every answer schema, by component name.
pub fn components() -> Map<String, Value> {
    let error_body = object(&[("code", integer()), ("reason", string())], &[]);
    let revision_ref = object(
        &[
            ("revision", integer()),
            ("live_at", integer()),
            ("rules", integer()),
        ],
        &[],
    );
    let priced = object(
        &[
            ("card", string()),
            ("revision", integer()),
            ("number", string()),
            ("prefix", string()),
            ("name", string()),
            ("rate", decimal()),
            ("connect_fee", decimal()),
            ("mcd", integer()),
            ("pulse", integer()),
            ("currency", string()),
            ("status", one_of(&STATUS)),
        ],
        &[
            ("reason", one_of(&["capped"])),
            ("duration", decimal()),
            ("billed_duration", integer()),
            ("cost", decimal()),
        ],
    );
    let recipe = object(
        &[
            (
                "from",
                array(object(
                    &[("card", string()), ("name", nullable(string()))],
                    &[],
                )),
            ),
            ("mix", one_of(&["min", "max", "avg", "first"])),
            (
                "profit",
                array(object(
                    &[
                        ("match", string()),
                        ("percent", decimal()),
                        ("absolute", decimal()),
                        ("min_margin", decimal()),
                        (
                            "apply_to",
                            one_of(&["rate", "connect_fee", "rate_inter", "rate_intra", "all"]),
                        ),
                    ],
                    &[],
                )),
            ),
            ("round", boolean()),
            ("rebuild", one_of(&["auto", "manual"])),
        ],
        &[],
    );
    let card = object(
        &[
            ("id", string()),
            ("name", string()),
            ("currency", string()),
            ("direction", one_of(&["termination", "origination"])),
            ("precision", integer()),
            ("rounding", one_of(&ROUNDING)),
            ("duration_rounding", one_of(&ROUNDING)),
            ("tech_prefix", string()),
            ("revision", nullable(integer())),
            ("rules", integer()),
            ("created", integer()),
            ("updated", integer()),
            ("kind", one_of(&["customer", "provider"])),
            ("cap", nullable(decimal())),
            ("notice_days", nullable(integer())),
        ],
        &[("built_from", r("Recipe")), ("stale", boolean())],
    );
    let change = object(
        &[
            ("prefix", string()),
            ("name", string()),
            ("from", r("Rule")),
            ("to", r("Rule")),
        ],
        &[],
    );
    let sums = object(&sums_required(), &sums_optional());
    let destination = object(
        &with(sums_required(), &[("prefix", string())]),
        &sums_optional(),
    );
    let cdr = object(
        &[
            ("callid", string()),
            ("dt", integer()),
            ("source_cli", string()),
            ("dest_number", string()),
            ("duration", decimal()),
            ("sip_code", integer()),
            ("sip_reason", string()),
            ("card", nullable(string())),
        ],
        &[
            ("provider", string()),
            ("provider_prefix", string()),
            ("dest_code", string()),
            ("dest_name", string()),
            ("rate", decimal()),
            ("billed_duration", integer()),
            ("cost", decimal()),
        ],
    );
    let group =
        |name: &'static str, key: Value| object(&with(vec![(name, key)], &stats_fields()), &[]);
    let stats_total = object(
        &with(stats_fields(), &[("from", integer()), ("to", integer())]),
        &[],
    );
    let stats_grouped = object(
        &[
            ("from", integer()),
            ("to", integer()),
            ("group_by", one_of(&["prefix", "card", "sip_code", "day"])),
            (
                "groups",
                array(json!({ "anyOf": [
                    r("GroupByPrefix"), r("GroupByCard"), r("GroupBySipCode"), r("GroupByDay"),
                ] })),
            ),
        ],
        &[],
    );
    let account_fields = vec![
        ("account", string()),
        ("name", string()),
        ("rps", integer()),
        ("daily", integer()),
        ("created", integer()),
    ];
    let asr = object(
        &[
            ("number", string()),
            ("status", one_of(&["Unknown", "Valid", "Invalid"])),
        ],
        &[
            ("code", integer()),
            ("reason", string()),
            ("datetime", integer()),
            ("age", integer()),
            ("age_days", integer()),
        ],
    );
    let ping = object(
        &[
            ("number", string()),
            ("Short", one_of(&["Live", "Dead", "Re-Try"])),
            ("msg", string()),
            ("code", integer()),
        ],
        &[],
    );
    let plan = object(
        &[
            ("valid", boolean()),
            ("country", nullable(string())),
            ("country_code", nullable(integer())),
            ("type", string()),
            ("carrier", nullable(string())),
            ("e164", nullable(string())),
        ],
        &[],
    );
    // A dataset match is the dataset's own columns, all text; no match is {"status":"Unknown"};
    // the do-not-call list answers {"listed": bool}.
    let dataset_match = json!({ "anyOf": [r("DatasetRow"), r("Listed")] });
    let smart = json!({ "type": "object", "additionalProperties": object(&[], &[
        ("asrplus", r("AsrAnswer")),
        ("plan", r("Plan")),
        ("range", dataset_match.clone()),
        ("lrn", dataset_match.clone()),
        ("hlr", dataset_match.clone()),
        ("tps", dataset_match),
        ("ping", r("PingResult")),
    ]) });
    let call = object(
        &[
            ("number", string()),
            ("callid", string()),
            ("status", one_of(&["answered", "failed"])),
            ("code", integer()),
            ("reason", string()),
        ],
        &[("transferred", boolean())],
    );
    let route = object(
        &[
            ("card", string()),
            ("card_id", string()),
            ("name", string()),
            ("prefix", string()),
            ("rate", decimal()),
            ("connect_fee", decimal()),
            ("cost", decimal()),
            ("margin", nullable(decimal())),
            ("asr", nullable(decimal())),
            ("acd", nullable(decimal())),
            ("status", one_of(&STATUS)),
        ],
        &[],
    );
    let lcr_answer = object(
        &[
            ("number", string()),
            (
                "sell",
                nullable(object(
                    &[
                        ("card", string()),
                        ("prefix", string()),
                        ("rate", decimal()),
                        ("cost", nullable(decimal())),
                    ],
                    &[],
                )),
            ),
            ("routes", array(r("Route"))),
            (
                "excluded",
                array(object(
                    &[
                        ("card", string()),
                        ("prefix", string()),
                        (
                            "reason",
                            one_of(&["blocked", "capped", "above_sell", "low_asr"]),
                        ),
                    ],
                    &[],
                )),
            ),
        ],
        &[],
    );
    let peer = object(
        &[
            ("node", string()),
            ("region", string()),
            ("addr", string()),
            ("state", one_of(&["up", "down", "connecting"])),
            ("rtt_ms", nullable(decimal())),
            ("last_sync", nullable(string())),
            ("lag", integer()),
            ("clock_skew_ms", nullable(integer())),
            ("clock_skewed", boolean()),
        ],
        &[],
    );
    let imported = object(
        &with(revision_fields(), &[("card", string())]),
        &[
            ("increases", r("RevisionRef")),
            ("increases_held", integer()),
            ("scheduled", array(r("RevisionRef"))),
            ("warnings", array(string())),
            ("warnings_total", integer()),
        ],
    );
    let built = object(
        &with(
            revision_fields(),
            &[
                ("card", string()),
                ("revision", integer()),
                (
                    "from",
                    array(object(&[("card", string()), ("revision", integer())], &[])),
                ),
                ("skipped", integer()),
            ],
        ),
        &[("increases", r("RevisionRef"))],
    );
    let mut schemas = Map::new();
    for (name, schema) in [
        ("Error", object(&[("error", error_body)], &[])),
        ("Rule", object(&rule_fields(), &[])),
        ("Card", card),
        ("Recipe", recipe),
        ("Revision", object(&revision_fields(), &[])),
        ("RevisionRef", revision_ref),
        ("Priced", priced),
        (
            "Query",
            // Several numbers: each one's price, or the error envelope for that number alone.
            json!({ "anyOf": [r("Priced"), by_number(json!({ "anyOf": [r("Priced"), r("Error")] }))] }),
        ),
        ("Cards", object(&[("cards", array(r("Card")))], &[])),
        (
            "CardDeleted",
            object(
                &[("card", string()), ("deleted", json!({ "const": true }))],
                &[],
            ),
        ),
        (
            "Rules",
            object(
                &[
                    ("card", string()),
                    ("revision", integer()),
                    ("total", integer()),
                    ("rules", array(r("Rule"))),
                ],
                &[],
            ),
        ),
        (
            "RuleSet",
            object(
                &with(
                    rule_fields(),
                    &[
                        ("card", string()),
                        ("revision", integer()),
                        ("created", boolean()),
                    ],
                ),
                &[],
            ),
        ),
        (
            "RuleDeleted",
            object(
                &[
                    ("card", string()),
                    ("revision", integer()),
                    ("prefix", string()),
                    ("deleted", json!({ "const": true })),
                ],
                &[],
            ),
        ),
        ("Import", imported),
        (
            "Revisions",
            object(
                &[("card", string()), ("revisions", array(r("Revision")))],
                &[],
            ),
        ),
        (
            "Activated",
            object(&with(revision_fields(), &[("card", string())]), &[]),
        ),
        ("Build", built),
        ("Change", change),
        (
            "Diff",
            object(
                &[
                    ("card", string()),
                    ("from", integer()),
                    ("to", integer()),
                    ("added", array(r("Rule"))),
                    ("removed", array(r("Rule"))),
                    ("increased", array(r("Change"))),
                    ("decreased", array(r("Change"))),
                    ("changed", array(r("Change"))),
                    ("unchanged", integer()),
                ],
                &[],
            ),
        ),
        ("Sums", sums),
        (
            "Simulate",
            object(
                &[
                    ("card", string()),
                    ("from", integer()),
                    ("to", integer()),
                    ("destinations", array(destination)),
                    ("totals", r("Sums")),
                ],
                &[("revision", integer()), ("recipe", r("Recipe"))],
            ),
        ),
        (
            "Rerate",
            object(
                &[
                    ("card", string()),
                    ("revision", nullable(integer())),
                    ("from", integer()),
                    ("to", integer()),
                    ("calls", integer()),
                    ("changed", integer()),
                    ("unchanged", integer()),
                    ("cost_delta", decimal()),
                ],
                &[],
            ),
        ),
        ("Route", route),
        ("LcrAnswer", lcr_answer),
        ("Lcr", one_or_by_number("LcrAnswer")),
        ("Account", object(&account_fields, &[])),
        (
            "AccountCreated",
            object(&with(account_fields.clone(), &[("key", string())]), &[]),
        ),
        (
            "Accounts",
            object(&[("accounts", array(r("Account")))], &[]),
        ),
        (
            "AccountKey",
            object(&[("account", string()), ("key", string())], &[]),
        ),
        (
            "AccountDeleted",
            object(
                &[("account", string()), ("deleted", json!({ "const": true }))],
                &[],
            ),
        ),
        (
            "ClusterStatus",
            object(
                &[
                    ("node", string()),
                    ("region", string()),
                    ("uptime", integer()),
                    ("peers", array(r("Peer"))),
                ],
                &[],
            ),
        ),
        ("Peer", peer),
        ("AsrAnswer", asr),
        ("AsrPlus", one_or_by_number("AsrAnswer")),
        ("Plan", plan),
        ("Smart", smart),
        ("PingResult", ping),
        ("Ping", one_or_by_number("PingResult")),
        ("Call", call),
        ("Dial", object(&[("calls", array(r("Call")))], &[])),
        (
            "Dataset",
            object(
                &[
                    ("name", one_of(&["range", "lrn", "hlr", "tps"])),
                    ("rows", integer()),
                    ("fields", array(string())),
                    ("generation", integer()),
                    ("imported", integer()),
                ],
                &[],
            ),
        ),
        (
            "CdrAdded",
            object(&[("added", integer()), ("duplicates", integer())], &[]),
        ),
        ("Cdr", cdr),
        (
            "Cdrs",
            object(&[("total", integer()), ("cdrs", array(r("Cdr")))], &[]),
        ),
        (
            "Stats",
            json!({ "anyOf": [r("StatsTotal"), r("StatsGrouped")] }),
        ),
        ("StatsTotal", stats_total),
        ("StatsGrouped", stats_grouped),
        ("GroupByPrefix", group("prefix", string())),
        ("GroupByCard", group("card", string())),
        ("GroupBySipCode", group("sip_code", nullable(integer()))),
        ("GroupByDay", group("day", string())),
        (
            "DatasetRow",
            json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        ),
        ("Listed", object(&[("listed", boolean())], &[])),
        ("ImeDeck", ime_deck()),
    ] {
        schemas.insert(name.into(), schema);
    }
    schemas
}

/// An "Interconnect Made Easy" deck as `ratecard/export` writes it (`format=ime`): the card's
/// settings and its rules as rows in the order `fields` names.
fn ime_deck() -> Value {
    let card = object(
        &[
            ("name", string()),
            ("type", one_of(&["termination", "origination"])),
            ("currency", string()),
            ("endpoint", string()),
            ("fields", array(object(&[("name", string())], &[]))),
            (
                "charge",
                object(
                    &[("precision", integer()), ("rounding", one_of(&ROUNDING))],
                    &[],
                ),
            ),
            (
                "rates",
                array(array(
                    json!({ "type": ["string", "number", "integer", "null"] }),
                )),
            ),
        ],
        &[("tech_prefix", string())],
    );
    object(
        &[
            ("name", string()),
            ("schema_version", string()),
            ("version", string()),
            ("date", string()),
            (
                "cards",
                json!({ "type": "object", "additionalProperties": card }),
            ),
            ("metadata", object(&[("checksum", string())], &[])),
        ],
        &[],
    )
}

/// What a service answers with on success.
pub enum Reply {
    /// A JSON answer (also rendered as XML and HTML) of this component.
    Answer(&'static str),
    /// A file, whatever the URL's extension: each content type with its component, if it has
    /// one (else text).
    File(&'static [(&'static str, Option<&'static str>)]),
}

/// The answer of `service`.
pub fn reply(service: Service) -> Reply {
    use Service::*;
    Reply::Answer(match service {
        RatecardQuery => "Query",
        RatecardCreate | RatecardGet | RatecardUpdate => "Card",
        RatecardList => "Cards",
        RatecardDelete => "CardDeleted",
        RatecardRules => "Rules",
        RatecardRuleSet => "RuleSet",
        RatecardRuleDelete => "RuleDeleted",
        RatecardImport => "Import",
        RatecardExport => {
            return Reply::File(&[("text/csv", None), ("application/json", Some("ImeDeck"))])
        }
        RatecardRevisions => "Revisions",
        RatecardActivate => "Activated",
        RatecardBuild => "Build",
        RatecardDiff => "Diff",
        RatecardSimulate => "Simulate",
        CdrRerate => "Rerate",
        RoutingLcr => "Lcr",
        AdminAccountCreate => "AccountCreated",
        AdminAccountList => "Accounts",
        AdminAccountUpdate => "Account",
        AdminAccountKeyRotate => "AccountKey",
        AdminAccountDelete => "AccountDeleted",
        AdminBackup => return Reply::File(&[("application/x-tar", None)]),
        ClusterStatus => "ClusterStatus",
        LookupAsrplus => "AsrPlus",
        LookupSmart => "Smart",
        LookupPing => "Ping",
        DialDial => "Dial",
        AdminDatasetImport => "Dataset",
        CdrAdd => "CdrAdded",
        CdrList => "Cdrs",
        CdrExport => return Reply::File(&[("text/csv", None)]),
        CdrStats => "Stats",
    })
}

/// Example answers of the main services (the README's).
pub fn example(service: Service) -> Option<Value> {
    Some(match service {
        Service::RatecardQuery => json!({
            "card": "demo", "revision": 2, "number": "441234567890", "prefix": "441",
            "name": "United Kingdom Landline", "rate": 0.012, "connect_fee": 0, "mcd": 60,
            "pulse": 60, "currency": "USD", "status": "Active", "duration": 61,
            "billed_duration": 120, "cost": 0.024
        }),
        Service::LookupAsrplus => json!({
            "number": "447700900000", "status": "Invalid", "code": 404, "reason": "Not Found",
            "datetime": 1_764_700_000, "age": 120, "age_days": 0
        }),
        Service::CdrAdd => json!({ "added": 2, "duplicates": 0 }),
        Service::RoutingLcr => json!({
            "number": "441234567890",
            "sell": { "card": "retail", "prefix": "441", "rate": 0.02, "cost": 0.02 },
            "routes": [{ "card": "carrier-a", "card_id": "c3", "name": "UK Fixed", "prefix": "44",
                         "rate": 0.008, "connect_fee": 0, "cost": 0.008, "margin": 0.012,
                         "asr": 52.5, "acd": 180, "status": "Active" }],
            "excluded": []
        }),
        _ => return None,
    })
}
