//! The OpenAPI 3.1 document, generated from the service table.

use crate::service::{Access, Service};
use serde_json::{json, Map, Value};

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for service in Service::ALL {
        let params: Vec<Value> = service
            .params()
            .iter()
            .map(|(name, required, description)| {
                json!({ "name": name, "in": "query", "required": required, "description": description, "schema": { "type": "string" } })
            })
            .collect();
        let mut properties = Map::new();
        for (name, _, description) in service.params() {
            properties.insert(
                (*name).into(),
                json!({ "type": "string", "description": description }),
            );
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
                    "429": { "$ref": "#/components/responses/error" }
                }
            });
            if let Some(list) = op["parameters"].as_array_mut() {
                list.extend(params.iter().cloned());
            }
            if method == "post" {
                op["requestBody"] = json!({ "content": {
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
