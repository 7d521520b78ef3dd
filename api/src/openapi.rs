//! The OpenAPI 3.1 document, generated from the service table.

use crate::service::{Access, Service};
use serde_json::{json, Map, Value};

/// The schema of variable `name` of `service`, with the bounds the node enforces.
fn schema(service: Service, name: &str) -> Value {
    let time = json!({ "type": "string", "pattern": TIME_PATTERN });
    match name {
        "number" => {
            let most = match service {
                Service::LookupPing | Service::DialDial => crate::telephony::MAX_NUMBERS,
                Service::CdrList | Service::CdrExport | Service::CdrStats => 1,
                _ => crate::vars::MAX_NUMBERS,
            };
            if most == 1 {
                json!({ "type": "string", "pattern": NUMBER_PATTERN })
            } else {
                json!({ "type": "array", "maxItems": most, "items": { "type": "string", "pattern": NUMBER_PATTERN } })
            }
        }
        "cli" | "dest_number" | "source_cli" => {
            json!({ "type": "string", "pattern": NUMBER_PATTERN })
        }
        "limit" => json!({ "type": "integer", "minimum": 1, "maximum": 10_000 }),
        "offset" => json!({ "type": "integer", "minimum": 0, "maximum": crate::vars::MAX_OFFSET }),
        "from" | "to" if service == Service::RatecardDiff => {
            json!({ "type": "integer", "minimum": 1 })
        }
        "at" | "from" | "to" | "dt" => time,
        "sip_code" => json!({ "type": "integer", "minimum": 100, "maximum": 699 }),
        "timeout" => {
            json!({ "type": "integer", "minimum": 1, "maximum": if service == Service::DialDial { 300 } else { 60 } })
        }
        "precision" => json!({ "type": "integer", "minimum": 0, "maximum": 10 }),
        "rounding" | "duration_rounding" => {
            json!({ "type": "string", "enum": ["up", "down", "half_up", "half_down"] })
        }
        "direction" => json!({ "type": "string", "enum": ["termination", "origination"] }),
        "status" => json!({ "type": "string", "enum": ["Active", "Blocked"] }),
        "order" => json!({ "type": "string", "enum": ["asc", "desc"] }),
        "group_by" => json!({ "type": "string", "enum": ["prefix", "card", "sip_code", "day"] }),
        "format" if service == Service::RatecardImport || service == Service::RatecardExport => {
            json!({ "type": "string", "enum": ["csv", "ime"] })
        }
        "prefix" if service != Service::RatecardRules => {
            json!({ "type": "string", "pattern": "^[0-9]{1,20}$" })
        }
        "rps" | "daily" => json!({ "type": "integer", "minimum": 1 }),
        "mcd" | "pulse" | "grace" => json!({ "type": "integer", "minimum": 0, "maximum": 86_400 }),
        "revision" => json!({ "type": "integer", "minimum": 1 }),
        _ => json!({ "type": "string" }),
    }
}

/// A number as the API reads it: digits with `+`, spaces, dashes, dots and brackets.
const NUMBER_PATTERN: &str = r"^[+]?[0-9 ().-]{1,40}$";
/// Unix seconds or `YYYY-MM-DD[ HH:MM:SS]` (UTC), 1970 to 9999.
const TIME_PATTERN: &str =
    r"^([0-9]{1,12}|[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}:[0-9]{2}Z?)?)$";

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for service in Service::ALL {
        let params: Vec<Value> = service
            .params()
            .iter()
            .map(|(name, required, description)| {
                let mut param = json!({ "name": name, "in": "query", "required": required, "description": description, "schema": schema(*service, name) });
                if name == &"number" {
                    param["style"] = "form".into();
                    param["explode"] = true.into();
                }
                param
            })
            .collect();
        let mut properties = Map::new();
        for (name, _, description) in service.params() {
            let mut property = schema(*service, name);
            property["description"] = (*description).into();
            properties.insert((*name).into(), property);
        }
        let security = match service.access() {
            Access::Account => json!([{ "basic": [] }, { "bearer": [] }, { "api_key": [] }]),
            Access::Operator => json!([{ "bearer": [] }, { "api_key": [] }]),
        };
        let operation = |method: &str| {
            let mut op = json!({
                "operationId": format!("{method}_{}", service.as_str().replace('/', "_")),
                "summary": service.summary(),
                "tags": [service.as_str().split('/').next().unwrap_or("api")],
                "security": security,
                "parameters": [ { "$ref": "#/components/parameters/format" } ],
                "responses": {
                    "200": { "description": "the answer in the requested format" },
                    "400": { "$ref": "#/components/responses/error" },
                    "401": { "$ref": "#/components/responses/error" },
                    "404": { "$ref": "#/components/responses/error" },
                    "405": { "$ref": "#/components/responses/error" },
                    "408": { "$ref": "#/components/responses/error" },
                    "409": { "$ref": "#/components/responses/error" },
                    "413": { "$ref": "#/components/responses/error" },
                    "429": { "$ref": "#/components/responses/error" },
                    "503": { "$ref": "#/components/responses/error" }
                }
            });
            if let Some(list) = op["parameters"].as_array_mut() {
                list.extend(params.iter().cloned());
            }
            if method == "post" {
                op["requestBody"] = json!({ "description": format!("variables, or the file itself: at most {} bytes once authenticated ({} before, when the credentials are only in the body)", service.max_body(), crate::router::PREAUTH_BODY_BYTES), "content": {
                    "application/x-www-form-urlencoded": { "schema": { "type": "object", "properties": properties } },
                    "multipart/form-data": { "schema": { "type": "object", "properties": properties } },
                    "application/json": { "schema": { "type": "object", "properties": properties } }
                }});
            }
            op
        };
        paths.insert(
            format!("/api/{}.{{format}}", service.as_str()),
            json!({ "get": operation("get"), "post": operation("post") }),
        );
    }
    for (path, summary) in [
        ("/healthz", "liveness"),
        ("/readyz", "readiness (503 while shutting down)"),
        ("/metrics", "Prometheus text"),
        ("/openapi.json", "this document"),
        ("/", "operator status page (HTML)"),
    ] {
        paths.insert(path.into(), json!({ "get": { "summary": summary, "responses": { "200": { "description": "ok" } } } }));
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "edgerate", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Edge-replicated telecom API: rate cards, billing, accounts. Every service answers in html (default), json or xml." },
        "paths": paths,
        "components": {
            "parameters": {
                "format": { "name": "format", "in": "path", "required": true, "schema": { "type": "string", "enum": ["html", "json", "xml"] } }
            },
            "responses": {
                "error": { "description": "the error envelope", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object",
                    "required": ["code", "reason"], "properties": { "code": { "type": "integer" }, "reason": { "type": "string" } } } } }
            },
            "securitySchemes": {
                "basic": { "type": "http", "scheme": "basic", "description": "account id and key" },
                "bearer": { "type": "http", "scheme": "bearer", "description": "key, or account:key" },
                "api_key": { "type": "apiKey", "in": "query", "name": "api_key" }
            }
        }
    })
}
