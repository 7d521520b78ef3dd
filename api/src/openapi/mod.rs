//! The OpenAPI 3.1 document, generated from the service table.

mod replies;

use crate::service::{Access, Service};
use replies::Reply;
use serde_json::{json, Map, Value};

/// The schema of variable `name` of `service`, with the bounds the node enforces.
fn schema(service: Service, name: &str) -> Value {
    let time = json!({ "type": "string", "pattern": TIME_PATTERN });
    let boolean = json!({ "type": "string", "enum": crate::vars::FLAG_VALUES });
    let decimal = json!({ "type": "string", "pattern": DECIMAL_PATTERN });
    match name {
        "number" => {
            let most = match service {
                Service::LookupPing | Service::DialDial => crate::telephony::MAX_NUMBERS,
                Service::RoutingLcr => crate::routing::MAX_NUMBERS,
                Service::CdrList | Service::CdrExport | Service::CdrStats => 1,
                _ => crate::vars::MAX_NUMBERS,
            };
            if most == 1 {
                json!({ "type": "string", "pattern": NUMBER_PATTERN })
            } else {
                json!({ "type": "array", "minItems": 1, "maxItems": most, "items": { "type": "string", "pattern": NUMBER_PATTERN } })
            }
        }
        "type" => json!({ "type": "array", "minItems": 1, "items": { "type": "string",
            "enum": ["asrplus", "plan", "range", "lrn", "hlr", "tps", "ping"] } }),
        "cli" | "dest_number" | "source_cli" => {
            json!({ "type": "string", "pattern": NUMBER_PATTERN })
        }
        "limit" if service == Service::RoutingLcr => {
            json!({ "type": "integer", "minimum": 1, "maximum": crate::routing::MAX_LIMIT })
        }
        "limit" => json!({ "type": "integer", "minimum": 1, "maximum": 10_000 }),
        "offset" => json!({ "type": "integer", "minimum": 0, "maximum": crate::vars::MAX_OFFSET }),
        "from" | "to" if service == Service::RatecardDiff => {
            json!({ "type": "integer", "minimum": 1 })
        }
        "from" if service == Service::RatecardBuild => json!({ "type": "string" }),
        "at" | "from" | "to" | "dt" => time,
        "live_at" => json!({ "anyOf": [ { "type": "string", "enum": ["now", "draft"] }, time ] }),
        "sip_code" => json!({ "type": "integer", "minimum": 100, "maximum": 699 }),
        "timeout" => {
            json!({ "type": "integer", "minimum": 1, "maximum": if service == Service::DialDial { 300 } else { 60 } })
        }
        "precision" => json!({ "type": "integer", "minimum": 0, "maximum": 10 }),
        "notice_days" => json!({ "type": "integer", "minimum": 0, "maximum": 365 }),
        "rounding" | "duration_rounding" => {
            json!({ "type": "string", "enum": ["up", "down", "half_up", "half_down"] })
        }
        "direction" => json!({ "type": "string", "enum": ["termination", "origination"] }),
        "kind" => json!({ "type": "string", "enum": ["customer", "provider"] }),
        "currency" => json!({ "type": "string", "pattern": "^[A-Z]{3}$" }),
        "tech_prefix" => json!({ "type": "string", "pattern": "^[0-9#*]{0,16}$" }),
        "status" => json!({ "type": "string", "enum": ["Active", "Blocked"] }),
        "order" if service == Service::RoutingLcr => {
            json!({ "type": "string", "enum": ["cost", "quality", "margin"] })
        }
        "order" => json!({ "type": "string", "enum": ["asc", "desc"] }),
        "group_by" => json!({ "type": "string", "enum": ["prefix", "card", "sip_code", "day"] }),
        "format" if service == Service::RatecardImport || service == Service::RatecardExport => {
            json!({ "type": "string", "enum": ["csv", "ime"] })
        }
        "mode" => json!({ "type": "string", "enum": crate::ratecard::IMPORT_MODES }),
        "mix" => json!({ "type": "string", "enum": ["min", "max", "avg", "first"] }),
        "rebuild" => json!({ "type": "string", "enum": crate::ratecard::REBUILDS }),
        "round" | "assure" => boolean,
        "name" if service == Service::AdminDatasetImport => {
            json!({ "type": "string", "enum": ["range", "lrn", "hlr", "tps"] })
        }
        "prefix" if service != Service::RatecardRules => {
            json!({ "type": "string", "pattern": "^[0-9]{1,20}$" })
        }
        "rps" | "daily" => json!({ "type": "integer", "minimum": 1 }),
        "mcd" | "pulse" | "grace" => json!({ "type": "integer", "minimum": 0, "maximum": 86_400 }),
        "revision" => json!({ "type": "integer", "minimum": 1 }),
        "duration" => decimal,
        "rate" | "connect_fee" | "rate_inter" | "rate_intra" | "cap" | "profit_percent"
        | "profit_absolute" | "min_margin" | "min_asr" => decimal,
        _ => json!({ "type": "string" }),
    }
}

/// A decimal as the API reads it (no exponent).
const DECIMAL_PATTERN: &str = r"^-?[0-9]{1,15}([.][0-9]{1,10})?$";
/// A number as the API reads it: digits with `+`, spaces, dashes, dots and brackets.
const NUMBER_PATTERN: &str = r"^[+]?[0-9 ().-]{1,40}$";
/// Unix seconds or `YYYY-MM-DD[ HH:MM:SS]` (UTC), 1970 to 9999.
const TIME_PATTERN: &str =
    r"^([0-9]{1,12}|[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}:[0-9]{2}Z?)?)$";

/// Parameter examples: the embedded default's demo card and a number it prices.
fn param_example(name: &str) -> Option<Value> {
    Some(match name {
        "card" => "demo".into(),
        "number" => json!(["441234567890"]),
        "duration" => "61".into(),
        _ => return None,
    })
}

/// The three renderings of a JSON answer: JSON with `schema`, XML and HTML as text.
fn rendered(schema: Value, example: Option<Value>) -> Value {
    let mut json_media = json!({ "schema": schema });
    if let Some(example) = example {
        json_media["example"] = example;
    }
    json!({
        "application/json": json_media,
        "application/xml": { "schema": { "type": "string" } },
        "text/html": { "schema": { "type": "string" } }
    })
}

/// The statuses every service may answer besides 200, and those of services that write.
const ERRORS: [(u16, &str); 8] = [
    (
        400,
        "a variable is missing, unknown or invalid (the reason names it)",
    ),
    (401, "invalid or missing credentials"),
    (
        404,
        "what was named does not exist, or the URL names no service or format",
    ),
    (405, "a method other than GET or POST"),
    (408, "the request body did not arrive in time"),
    (413, "the body is over the service's limit"),
    (
        429,
        "over the account's request rate or daily volume, or its share of the node",
    ),
    (
        503,
        "the node is shutting down, busy, or its disk is full (nothing was applied)",
    ),
];
const WRITE_ERRORS: [(u16, &str); 1] = [(409, "the change conflicts with the state it found")];

fn quota_header(description: &str, required: bool) -> Value {
    json!({ "description": description, "required": required, "schema": { "type": "integer", "minimum": 0 } })
}

/// The responses of `service`.
fn responses(service: Service) -> Value {
    let quota_headers = |required: bool| {
        json!({
            "X-RateLimit-Limit": quota_header("the account's requests per second", required),
            "X-RateLimit-Remaining": quota_header("requests left in this second", required)
        })
    };
    let reply = replies::reply(service);
    let mut ok = match reply {
        Reply::Answer(component) => json!({
            "description": "the answer, in the format the URL's extension names",
            "content": rendered(json!({ "$ref": format!("#/components/schemas/{component}") }), replies::example(service)),
        }),
        Reply::File(types) => {
            let content: Map<String, Value> = types
                .iter()
                .map(|(media, component)| {
                    let schema = match component {
                        Some(c) => json!({ "$ref": format!("#/components/schemas/{c}") }),
                        None => json!({ "type": "string" }),
                    };
                    ((*media).to_owned(), json!({ "schema": schema }))
                })
                .collect();
            json!({ "description": "a file download (Content-Disposition: attachment), whatever the extension", "content": content })
        }
    };
    // An account's answers count against its limits and say where it stands.
    let mut headers = match service.access() {
        Access::Account => quota_headers(true),
        Access::Operator => json!({}),
    };
    if matches!(reply, Reply::File(_)) {
        headers["Content-Disposition"] = json!({ "required": true, "schema": { "type": "string", "pattern": "^attachment; filename=" } });
    }
    ok["headers"] = headers;
    let mut out = Map::new();
    out.insert("200".into(), ok);
    let writes = service.blocking();
    for (status, why) in ERRORS.iter().chain(WRITE_ERRORS.iter().filter(|_| writes)) {
        let mut answer = json!({ "description": why, "content": rendered(json!({ "$ref": "#/components/schemas/Error" }), None) });
        // An error before the caller is known (a bad query string, wrong credentials) has no
        // quota headers.
        let mut headers = quota_headers(false);
        match status {
            429 => {
                headers["Retry-After"] = json!({ "required": true, "description": "seconds until a request may succeed", "schema": { "type": "integer", "minimum": 0 } })
            }
            405 => {
                headers["Allow"] = json!({ "required": true, "description": "the methods the service takes", "schema": { "type": "string", "const": "GET, POST" } })
            }
            _ => {}
        }
        answer["headers"] = headers;
        out.insert(status.to_string(), answer);
    }
    Value::Object(out)
}

/// The variables of `service` that `keep` keeps, as JSON schema properties with their
/// descriptions.
fn properties(service: Service, keep: impl Fn(&str) -> bool) -> Map<String, Value> {
    service
        .params()
        .iter()
        .filter(|(name, _, _)| keep(name))
        .map(|(name, _, description)| {
            let mut property = schema(service, name);
            property["description"] = (*description).into();
            ((*name).to_owned(), property)
        })
        .collect()
}

/// The bodies a POST to `service` may send: its variables as a form, multipart or JSON object;
/// for the uploads also the file itself (a deck, a dataset, CDRs).
fn request_bodies(service: Service, properties: &Map<String, Value>) -> Value {
    let variables =
        json!({ "type": "object", "properties": properties, "additionalProperties": false });
    let mut json_body = variables.clone();
    match service {
        Service::RatecardImport => {
            json_body = json!({ "anyOf": [variables, { "$ref": "#/components/schemas/ImeDeck" }] })
        }
        Service::CdrAdd => {
            // A batch (one CDR also goes as a form, or as a JSON object of variables).
            json_body = json!({ "type": "array", "minItems": 1, "maxItems": crate::cdr::MAX_BATCH, "items": { "$ref": "#/components/schemas/CdrIn" } })
        }
        _ => {}
    }
    let mut content = json!({
        "application/x-www-form-urlencoded": { "schema": variables },
        "multipart/form-data": { "schema": variables },
        "application/json": { "schema": json_body }
    });
    if matches!(
        service,
        Service::RatecardImport | Service::AdminDatasetImport | Service::CdrAdd
    ) {
        content["text/csv"] = json!({ "schema": { "type": "string", "format": "binary" } });
    }
    content
}

/// The document as served: built once, on the first request.
pub fn text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| document().to_string())
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for service in Service::ALL {
        let params: Vec<Value> = service
            .params()
            .iter()
            .map(|(name, required, description)| {
                let mut param = json!({ "name": name, "in": "query", "required": required, "description": description, "schema": schema(*service, name) });
                if let Some(example) = param_example(name) {
                    param["example"] = example;
                }
                param
            })
            .collect();
        let properties = properties(*service, |_| true);
        let security = match service.access() {
            Access::Account => json!([{ "basic": [] }, { "bearer": [] }, { "api_key": [] }]),
            Access::Operator => json!([{ "bearer": [] }, { "api_key": [] }]),
        };
        let responses = responses(*service);
        let operation = |method: &str| {
            let mut op = json!({
                "operationId": format!("{method}_{}", service.as_str().replace('/', "_")),
                "summary": service.summary(),
                "tags": [service.as_str().split('/').next().unwrap_or("api")],
                "security": security,
                "parameters": [ { "$ref": "#/components/parameters/ext" } ],
                "responses": responses,
            });
            // A POST may send every variable in the query string, the body, or both (the body's
            // win): none is required in either place alone.
            if let Some(list) = op["parameters"].as_array_mut() {
                list.extend(params.iter().cloned().map(|mut p| {
                    if method == "post" {
                        p["required"] = false.into();
                    }
                    p
                }));
            }
            if method == "post" {
                op["requestBody"] = json!({ "required": false, "description": format!("the variables (those GET requires, here or in the query string), or the file itself: at most {} bytes once authenticated ({} before, when the credentials are only in the body)", service.max_body(), crate::router::PREAUTH_BODY_BYTES), "content": request_bodies(*service, &properties) });
            }
            op
        };
        paths.insert(
            format!("/api/{}.{{ext}}", service.as_str()),
            json!({ "get": operation("get"), "post": operation("post") }),
        );
    }
    let text = |media: &str, description: &str| json!({ "200": { "description": description, "content": { media: { "schema": { "type": "string" } } } } });
    let status = json!({ "type": "object", "required": ["status"], "properties": { "status": { "type": "string" }, "writable": { "type": "boolean" }, "reason": { "type": "string" } }, "additionalProperties": false });
    let status_answer = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": status } } });
    paths.insert(
        "/healthz".into(),
        json!({ "get": { "summary": "liveness", "responses": { "200": status_answer("alive") } } }),
    );
    let ready = json!({ "200": status_answer("serving; `writable` is false while the disk is full"), "503": status_answer("shutting down") });
    paths.insert(
        "/readyz".into(),
        json!({ "get": { "summary": "readiness (503 while shutting down)", "responses": ready } }),
    );
    paths.insert("/metrics".into(), json!({ "get": { "summary": "Prometheus text exposition", "responses": text("text/plain", "the node's metrics") } }));
    paths.insert("/openapi.json".into(), json!({ "get": { "summary": "this document", "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } } } }));
    paths.insert("/".into(), json!({ "get": { "summary": "operator status page", "responses": text("text/html", "the page") } }));
    let mut schemas = replies::components();
    // One CDR of a `cdr/add` batch: the service's variables but the file.
    let required: Vec<&str> = Service::CdrAdd
        .params()
        .iter()
        .filter(|(_, required, _)| *required)
        .map(|(name, _, _)| *name)
        .collect();
    schemas.insert(
        "CdrIn".into(),
        json!({ "type": "object", "required": required, "properties": properties(Service::CdrAdd, |name| name != "file"), "additionalProperties": false }),
    );
    json!({
        "openapi": "3.1.0",
        "info": { "title": "edgerate", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Edge-replicated telecom API: rate cards, routing, CDRs, lookups, calls. Every service answers in html, json or xml, named by the URL's extension; variables come in the query string or the body (form, multipart or JSON)." },
        "paths": paths,
        "components": {
            "parameters": {
                "ext": { "name": "ext", "in": "path", "required": true, "description": "the answer's format, the URL's extension (the variable `format` of import and export is the deck's)", "schema": { "type": "string", "enum": ["json", "xml", "html"] }, "example": "json" }
            },
            "schemas": schemas,
            "securitySchemes": {
                "basic": { "type": "http", "scheme": "basic", "description": "account id and key" },
                "bearer": { "type": "http", "scheme": "bearer", "description": "key, or account:key" },
                "api_key": { "type": "apiKey", "in": "query", "name": "api_key" }
            }
        }
    })
}
