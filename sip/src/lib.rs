//! The SIP user agent for number ping and call origination (the telephony issue). Today it owns
//! the `[sip]` section of the node's config, so a config file written for the full contract is
//! accepted.

use serde::Deserialize;

/// `[sip]`: where pings and calls are sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    /// The default trunk, `host:port`.
    pub trunk: Option<String>,
}
