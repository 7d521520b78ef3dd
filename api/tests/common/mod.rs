//! What the router tests share: the HTTP surface over a fresh catalog and log, with four accounts.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request};
use base64::Engine;
use edgerate_api::auth::hash_key;
use edgerate_api::{App, AppState, NodeInfo};
use edgerate_model::account::Account;
use edgerate_model::asrplus::DEFAULT_BAD_CODES;
use edgerate_replication::catalog::Catalog;
use edgerate_replication::eventlog::EventLog;
use edgerate_replication::ActorId;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;

pub const OPERATOR_KEY: &str = "operator-secret";
pub const KEY: &str = "customer-secret";

pub struct Api {
    pub app: App,
    pub state: AppState,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

pub fn basic(account: &str, key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{account}:{key}"))
    )
}

impl Api {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), ActorId::from(&[3u8; 16][..])).unwrap();
        for (id, rps, daily) in [
            ("acme", 100_000, 1_000_000),
            ("rival", 100_000, 1_000_000),
            ("slow", 2, 1_000_000),
            ("small", 1000, 3),
        ] {
            catalog
                .put_account(Account {
                    id: id.into(),
                    name: id.into(),
                    key_hash: hash_key(&format!("{KEY}-{id}")),
                    rps,
                    daily,
                    created: 0,
                })
                .unwrap();
        }
        let node = NodeInfo {
            id: "test-1".into(),
            region: "test".into(),
            members: None,
            data_dir: dir.path().to_owned(),
        };
        let log = EventLog::open(
            &dir.path().join("events.sqlite"),
            "test-1",
            &DEFAULT_BAD_CODES,
            edgerate_model::time::now(),
        )
        .unwrap();
        let state = AppState::new(
            catalog,
            Arc::new(log),
            node,
            hash_key(OPERATOR_KEY),
            Some(edgerate_api::metrics::install()),
        );
        Self {
            app: App::new(state.clone()),
            state,
            _dir: dir,
        }
    }

    pub async fn request(
        &self,
        method: &str,
        uri: &str,
        auth: Option<String>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let response = self
            .app
            .clone()
            .call(builder.body(body.into()).unwrap())
            .await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// GET as account `acme`.
    pub async fn get(&self, uri: &str) -> Reply {
        self.request(
            "GET",
            uri,
            Some(basic("acme", &format!("{KEY}-acme"))),
            None,
            Body::empty(),
        )
        .await
    }

    /// POST a form as `acme`.
    pub async fn post(&self, uri: &str, form: &str) -> Reply {
        self.request(
            "POST",
            uri,
            Some(basic("acme", &format!("{KEY}-acme"))),
            Some("application/x-www-form-urlencoded"),
            form.to_owned(),
        )
        .await
    }

    /// POST `body` of `content_type` as `acme`.
    pub async fn post_body(&self, uri: &str, content_type: &str, body: impl Into<Body>) -> Reply {
        self.request(
            "POST",
            uri,
            Some(basic("acme", &format!("{KEY}-acme"))),
            Some(content_type),
            body,
        )
        .await
    }

    /// `ratecard/import` of a CSV deck as `acme`, with `query` (card, live_at, mode…).
    pub async fn import_csv(&self, query: &str, csv: &str) -> Reply {
        self.post_body(
            &format!("/api/ratecard/import.json?{query}"),
            "text/csv",
            csv.to_owned(),
        )
        .await
    }

    pub async fn operator(&self, uri: &str, form: &str) -> Reply {
        self.request(
            "POST",
            uri,
            Some(format!("Bearer {OPERATOR_KEY}")),
            Some("application/x-www-form-urlencoded"),
            form.to_owned(),
        )
        .await
    }

    /// Creates card `name` and imports `csv` into it, live now.
    pub async fn card_with(&self, name: &str, csv: &str) -> String {
        let created = self
            .post("/api/ratecard/create.json", &format!("name={name}"))
            .await;
        assert_eq!(created.status, 200, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let imported = self
            .request(
                "POST",
                &format!("/api/ratecard/import.json?card={id}"),
                Some(basic("acme", &format!("{KEY}-acme"))),
                Some("text/csv"),
                csv.to_owned(),
            )
            .await;
        assert_eq!(imported.status, 200, "{}", imported.text());
        id
    }
}

pub const DECK: &str =
    "prefix,name,rate,connect_fee,mcd,pulse,grace,rate_inter,rate_intra,status\n\
    44,UK,0.02,0,60,60,0,,,Active\n\
    441,UK Landline,0.012,0,60,60,0,,,Active\n\
    447,UK Mobile,0.028,0.01,30,6,0,,,Active\n\
    4470,UK Personal,0.25,0,60,60,5,,,Blocked\n\
    1,North America,0.005,0,1,1,0,,,Active\n";

pub fn error_of(reply: &Reply) -> (u64, String) {
    let v = reply.json();
    (
        v["error"]["code"].as_u64().unwrap(),
        v["error"]["reason"].as_str().unwrap().to_owned(),
    )
}
