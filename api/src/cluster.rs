//! `cluster/status`: this node, its region and its peers.

use crate::error::ApiError;
use crate::router::{Ctx, Output};
use serde_json::json;

pub fn status(ctx: &Ctx) -> Result<Output, ApiError> {
    let node = ctx.state.node();
    Ok(Output::Value(json!({
        "node": node.id,
        "region": node.region,
        "uptime": ctx.state.uptime_secs(),
        "peers": [],
    })))
}
