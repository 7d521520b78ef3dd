//! `cluster/status`: this node, its region and its peers.

use crate::error::ApiError;
use crate::router::{Ctx, Output};
use crate::state::NodeInfo;
use edgerate_model::time::format_datetime;
use serde_json::{json, Value};

pub fn status(ctx: &Ctx) -> Result<Output, ApiError> {
    let node = ctx.state.node();
    Ok(Output::Value(json!({
        "node": node.id,
        "region": node.region,
        "uptime": ctx.state.uptime_secs(),
        "peers": peers(node),
    })))
}

/// Every peer this node knows: `node, region, addr, state` (up, down, connecting),
/// `rtt_ms`, `last_sync` (when it last heard from the peer) and `lag` (documents not yet
/// confirmed identical on the peer plus event-log records it lacks), `clock_skew_ms` (its clock
/// minus ours at its last hello, half the RTT allowed for) and `clock_skewed` (over 1 s off).
/// A peer clock further off this node's than this (ms) is flagged as skewed.
pub const CLOCK_SKEW_MS: i64 = 1_000;

pub fn peers(node: &NodeInfo) -> Vec<Value> {
    let Some(members) = &node.members else {
        return Vec::new();
    };
    members
        .peers()
        .into_iter()
        .map(|p| {
            json!({
                "node": p.id,
                "region": p.region,
                "addr": p.addr.to_string(),
                "state": p.state.as_str(),
                "rtt_ms": p.rtt_ms.map(|ms| (ms * 100.0).round() / 100.0),
                "last_sync": p.last_sync.map(|ms| format_datetime(ms.div_euclid(1000))),
                "lag": p.lag,
                "clock_skew_ms": p.clock_skew_ms,
                "clock_skewed": p.clock_skew_ms.is_some_and(|s| s.abs() > CLOCK_SKEW_MS),
            })
        })
        .collect()
}
