//! The closed set of services under `/api/`, with what each needs (who may call it, whether it
//! writes) and the variables it reads. The OpenAPI document is generated from this table, so it
//! cannot drift from the dispatcher.

/// Who may call a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A customer account's key.
    Account,
    /// The node's operator key.
    Operator,
}

/// One variable of a service: name, required, description.
pub type Param = (&'static str, bool, &'static str);

macro_rules! services {
    ($( $variant:ident = $name:literal, $access:ident, $writes:literal, $summary:literal, [$( ($p:literal, $req:literal, $d:literal) ),* $(,)?] );* $(;)?) => {
        /// A service under `/api/`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Service { $( $variant ),* }

        impl Service {
            pub const ALL: &'static [Service] = &[ $( Service::$variant ),* ];

            /// The service's path under `/api/`, also its metric label.
            pub fn as_str(self) -> &'static str {
                match self { $( Service::$variant => $name ),* }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name { $( $name => Some(Service::$variant), )* _ => None }
            }

            pub fn access(self) -> Access {
                match self { $( Service::$variant => Access::$access ),* }
            }

            /// True when the service writes to disk or reads the database: it then runs on the
            /// blocking pool. (Ping, dial and smart lookups are async: they wait for a trunk and
            /// log their CDRs off the runtime themselves.)
            pub fn blocking(self) -> bool {
                match self { $( Service::$variant => $writes ),* }
            }

            pub fn summary(self) -> &'static str {
                match self { $( Service::$variant => $summary ),* }
            }

            pub fn params(self) -> &'static [Param] {
                match self { $( Service::$variant => &[ $( ($p, $req, $d) ),* ] ),* }
            }
        }
    };
}

services! {
    RatecardQuery = "ratecard/query", Account, false, "Price of one or more numbers on a card (longest prefix match), and the cost of a call when `duration` is given.", [
        ("card", true, "card id or name"),
        ("number", true, "one or more E.164 numbers"),
        ("duration", false, "call length in seconds, decimals allowed"),
        ("cli", false, "calling number (US inter/intra selection)"),
        ("at", false, "unix time or 'YYYY-MM-DD HH:MM:SS' UTC; default now"),
    ];
    RatecardCreate = "ratecard/create", Account, true, "Create a card with an empty live revision 1.", [
        ("name", true, "unique among the account's cards"),
        ("currency", false, "ISO 4217, default USD"),
        ("direction", false, "termination (default) or origination"),
        ("precision", false, "decimal places of a cost, 0-10, default 4"),
        ("rounding", false, "cost rounding: up (default), down, half_up, half_down"),
        ("duration_rounding", false, "fractional seconds: up (default), down, half_up, half_down"),
        ("tech_prefix", false, "technical routing prefix, digits, '#' and '*', stored and exported"),
        ("kind", false, "customer (default: what is sold) or provider (what is bought)"),
        ("cap", false, "per-minute ceiling: a rule above it prices no call (Blocked, reason capped); empty clears"),
        ("notice_days", false, "days of notice a rate increase needs, 0-365; empty clears"),
    ];
    RatecardList = "ratecard/list", Account, false, "The account's cards.", [];
    RatecardGet = "ratecard/get", Account, false, "One card.", [("card", true, "card id or name")];
    RatecardUpdate = "ratecard/update", Account, true, "Change a card's settings.", [
        ("card", true, "card id or name"),
        ("name", false, "new name"),
        ("currency", false, "ISO 4217"),
        ("direction", false, "termination or origination"),
        ("precision", false, "0-10"),
        ("rounding", false, "up, down, half_up, half_down"),
        ("duration_rounding", false, "up, down, half_up, half_down"),
        ("tech_prefix", false, "digits, '#' and '*'"),
        ("kind", false, "customer (default: what is sold) or provider (what is bought)"),
        ("cap", false, "per-minute ceiling: a rule above it prices no call (Blocked, reason capped); empty clears"),
        ("notice_days", false, "days of notice a rate increase needs, 0-365; empty clears"),
    ];
    RatecardDelete = "ratecard/delete", Account, true, "Delete a card and all its revisions.", [("card", true, "card id or name")];
    RatecardRules = "ratecard/rules", Account, false, "A page of a revision's rules, in prefix order.", [
        ("card", true, "card id or name"),
        ("revision", false, "default: the live revision"),
        ("prefix", false, "only prefixes starting with this"),
        ("limit", false, "1-10000, default 100"),
        ("offset", false, "rules to skip, default 0"),
    ];
    RatecardRuleSet = "ratecard/rule/set", Account, true, "Insert or update one rule; without `revision`, in the live revision, visible at once.", [
        ("card", true, "card id or name"),
        ("prefix", true, "digits"),
        ("name", false, "destination name"),
        ("rate", false, "per minute; required for a new rule"),
        ("connect_fee", false, "default 0"),
        ("mcd", false, "minimum charged duration, s; default 60 for a new rule"),
        ("pulse", false, "billing increment, s, >= 1; default 60 for a new rule"),
        ("grace", false, "free seconds, default 0"),
        ("rate_inter", false, "US interstate rate; empty clears"),
        ("rate_intra", false, "US intrastate rate; empty clears"),
        ("status", false, "Active or Blocked"),
        ("revision", false, "default: the live revision"),
    ];
    RatecardRuleDelete = "ratecard/rule/delete", Account, true, "Remove one rule.", [
        ("card", true, "card id or name"),
        ("prefix", true, "digits"),
        ("revision", false, "default: the live revision"),
    ];
    RatecardImport = "ratecard/import", Account, true, "A new revision from a whole deck (CSV or IME), all or nothing.", [
        ("card", true, "card id or name"),
        ("format", false, "csv (default) or ime"),
        ("file", false, "the deck (multipart file or text); else the request body"),
        ("live_at", false, "unix time or 'YYYY-MM-DD HH:MM:SS' when it goes live; 'now' (default) or 'draft'"),
        ("ime_card", false, "which card of an IME document holding several"),
        ("mode", false, "full (default: the deck is the whole card) or delta (its rows change the revision live at live_at; a 'change' column closed removes a prefix)"),
    ];
    RatecardExport = "ratecard/export", Account, false, "A revision as a deck file (text/csv or IME JSON), whatever the extension.", [
        ("card", true, "card id or name"),
        ("revision", false, "default: the live revision"),
        ("format", false, "csv (default) or ime"),
    ];
    RatecardRevisions = "ratecard/revisions", Account, false, "A card's revisions and their states.", [("card", true, "card id or name")];
    RatecardActivate = "ratecard/activate", Account, true, "Schedule a revision, or make it live now.", [
        ("card", true, "card id or name"),
        ("revision", true, "revision number"),
        ("at", false, "when it goes live (not in the past); default now"),
    ];
    RatecardBuild = "ratecard/build", Account, true, "A new revision of a customer card built from provider cards (each one's longest match per prefix, mixed, plus profit); the recipe is kept, so a build with only `card` rebuilds.", [
        ("card", true, "the customer card, id or name"),
        ("from", false, "provider cards (kind=provider), ids or names, in order; without it, the kept recipe"),
        ("mix", false, "min (default), max, avg, or first (the first card listed that offers the prefix)"),
        ("profit_percent", false, "percent added to every money field"),
        ("profit_absolute", false, "added to every money field (per minute for rates)"),
        ("min_margin", false, "least a per-minute rate sells above its cost"),
        ("profit", false, "JSON list of entries {match: '^44,^33' or '*', percent, absolute, min_margin, apply_to: rate|connect_fee|rate_inter|rate_intra|all}; the most specific match wins"),
        ("round", false, "round to the card's precision with its rounding: true (default) or false"),
        ("rebuild", false, "manual (default) or auto: rebuilt by itself when a provider card changes"),
        ("live_at", false, "when the revision goes live: 'now' (default), 'draft', or a time"),
    ];
    RatecardDiff = "ratecard/diff", Account, false, "What changed between two revisions.", [
        ("card", true, "card id or name"),
        ("from", true, "revision number"),
        ("to", true, "revision number"),
    ];
    RatecardSimulate = "ratecard/simulate", Account, true, "What a price change would have earned over the calls rated on a card: a revision, or a rebuild by the card's recipe; per destination and in total. Nothing is written.", [
        ("card", true, "card id or name"),
        ("from", true, "start of the calls' range: unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("to", true, "end of the range (at most 93 days after 'from')"),
        ("revision", false, "a revision of the card (draft or scheduled) to price the calls on; without it, a rebuild by the card's recipe"),
        ("mix", false, "for a rebuild: in place of the recipe's mix"),
        ("profit_percent", false, "for a rebuild: in place of the recipe's profit"),
        ("profit_absolute", false, "for a rebuild: in place of the recipe's profit"),
        ("min_margin", false, "for a rebuild: in place of the recipe's profit"),
        ("profit", false, "for a rebuild: a JSON profit list in place of the recipe's"),
        ("providers", false, "provider cards: each call's cost under its cheapest route, and the margin"),
    ];
    CdrRerate = "cdr/rerate", Account, true, "Price stored CDRs of a card again; each whose rating changes gets a re-rating that supersedes it everywhere (the log only grows). Idempotent.", [
        ("card", true, "the card the CDRs were rated on, id or name"),
        ("from", true, "unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("to", true, "end of the range (at most 93 days after 'from')"),
        ("revision", false, "price on this revision; default: the revision live at each call's time"),
    ];
    RoutingLcr = "routing/lcr", Account, false, "Least-cost routes for a call over the account's provider cards, each priced as its card bills it, with the sell price and margin when `card` is given.", [
        ("number", true, "one or more E.164 numbers (at most 100)"),
        ("card", false, "customer card: the sell price, each route's margin"),
        ("providers", false, "provider cards, ids or names; default every provider card of the account"),
        ("duration", false, "call length in seconds a route's cost is for, default 60"),
        ("cli", false, "calling number (US inter/intra selection)"),
        ("at", false, "unix time or 'YYYY-MM-DD HH:MM:SS' UTC; default now"),
        ("order", false, "cost (default), quality (ASR, then cost) or margin"),
        ("limit", false, "routes per number, 1-100, default 10"),
        ("assure", false, "leave out routes costing more than the sell price: default true with `card`"),
        ("min_asr", false, "leave out routes whose ASR (percent, from CDRs with `provider`) is below this"),
    ];
    AdminAccountCreate = "admin/account/create", Operator, true, "Create an account; its key is shown once.", [
        ("name", true, "account name"),
        ("rps", false, "requests per second, default 100"),
        ("daily", false, "requests per UTC day, default 1000000"),
    ];
    AdminAccountList = "admin/account/list", Operator, false, "Every account.", [];
    AdminAccountUpdate = "admin/account/update", Operator, true, "Change an account's name or limits.", [
        ("account", true, "account id"),
        ("name", false, "account name"),
        ("rps", false, "requests per second"),
        ("daily", false, "requests per UTC day"),
    ];
    AdminAccountKeyRotate = "admin/account/key/rotate", Operator, true, "Replace an account's key; the new key is shown once.", [("account", true, "account id")];
    AdminAccountDelete = "admin/account/delete", Operator, true, "Delete an account and its cards.", [("account", true, "account id")];
    AdminBackup = "admin/backup", Operator, true, "A consistent backup of this node, streamed: a tar archive of every document (Automerge's saved bytes) and the event log (SQLite's online backup), its manifest of checksums last. `edgerate backup` writes it to a file; `edgerate restore` restores it.", [];
    ClusterStatus = "cluster/status", Operator, false, "This node, its region and its peers.", [];
    LookupAsrplus = "lookup/asrplus", Account, false, "Has this number failed recently? The latest final outcome per number over 30 days.", [
        ("number", true, "one or more E.164 numbers"),
    ];
    LookupSmart = "lookup/smart", Account, false, "ASR Plus, numbering plan and dataset lookups for one or more numbers, nested by number then type.", [
        ("number", true, "one or more E.164 numbers"),
        ("type", true, "one or more of asrplus, plan, range, lrn, hlr, tps, ping"),
        ("trunk", false, "for ping: host:port of the SIP trunk (default [sip] trunk)"),
        ("timeout", false, "for ping: seconds to wait for a sign of life (default 8, at most 60)"),
    ];
    LookupPing = "lookup/ping", Account, false, "Is the number live? A signalling-only SIP probe: INVITE, then CANCEL (or ACK and BYE) at once.", [
        ("number", true, "one or more E.164 numbers (at most 100, probed in parallel)"),
        ("trunk", false, "host:port of the SIP trunk (default [sip] trunk)"),
        ("timeout", false, "seconds to wait for a sign of life (default 8, at most 60)"),
    ];
    DialDial = "dial/dial", Account, false, "Originate calls through the trunk; answered calls are transferred to route_all (REFER) when given, then hung up (BYE).", [
        ("trunk", false, "host:port of the SIP trunk (default [sip] trunk)"),
        ("cli", false, "calling number: From user and P-Asserted-Identity"),
        ("number", true, "one or more numbers to call (at most 100)"),
        ("name", false, "display name of the caller"),
        ("header_NAME", false, "adds the header NAME: value to the INVITE (at most 4)"),
        ("route_all", false, "on answer, transfer the call here (number or sip: URI) with REFER"),
        ("timeout", false, "seconds to wait for an answer (default 30, at most 300)"),
    ];
    AdminDatasetImport = "admin/dataset/import", Operator, true, "Replace a lookup dataset (range, lrn, hlr or tps) from CSV, atomically.", [
        ("name", true, "range, lrn, hlr or tps"),
        ("file", false, "the CSV (header: the key column - prefix, tn or number - and fields); else the body"),
    ];
    CdrAdd = "cdr/add", Account, true, "Store CDRs (one as variables, or a JSON array / CSV body of many), rated on their card; idempotent on callid.", [
        ("callid", true, "unique per account"),
        ("dt", false, "call start, unix seconds or 'YYYY-MM-DD HH:MM:SS' UTC; default now"),
        ("source_cli", false, "calling number"),
        ("dest_number", true, "called number"),
        ("duration", false, "seconds, decimals allowed; default 0"),
        ("sip_code", true, "final SIP response code"),
        ("sip_reason", false, "default: the code's standard phrase"),
        ("card", false, "card id or name to rate the call on"),
        ("provider", false, "the provider card (kind=provider) the call was sent to: route quality for routing/lcr"),
        ("file", false, "a CSV (header row of these names) or JSON array of CDRs; else the body"),
    ];
    CdrList = "cdr/list", Account, true, "A page of CDRs in a time range (at most 93 days).", [
        ("from", true, "unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("to", true, "unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("number", false, "called number"),
        ("cli", false, "calling number"),
        ("sip_code", false, "final SIP code"),
        ("card", false, "card as given on ingest"),
        ("limit", false, "1-10000, default 100"),
        ("offset", false, "default 0"),
        ("order", false, "desc (default, newest first) or asc"),
    ];
    CdrExport = "cdr/export", Account, true, "CDRs as a streamed CSV download (filters as cdr/list, oldest first).", [
        ("from", true, "unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("to", true, "unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("number", false, "called number"),
        ("cli", false, "calling number"),
        ("sip_code", false, "final SIP code"),
        ("card", false, "card as given on ingest"),
    ];
    CdrStats = "cdr/stats", Account, true, "Attempts, connected calls, ASR (%), ACD (s), minutes and cost, optionally grouped.", [
        ("from", true, "unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("to", true, "unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("group_by", false, "prefix, card, sip_code or day"),
        ("number", false, "called number"),
        ("cli", false, "calling number"),
        ("sip_code", false, "final SIP code"),
        ("card", false, "card as given on ingest"),
    ];
}

/// The largest body a deck or dataset import may send, bytes.
pub const MAX_IMPORT_BODY: usize = 256 * 1024 * 1024;
/// The largest body of a `cdr/add` batch, bytes (100,000 CDRs of generous size).
pub const MAX_CDR_BODY: usize = 64 * 1024 * 1024;
/// The largest body of every other service, bytes.
pub const MAX_SMALL_BODY: usize = 1024 * 1024;

impl Service {
    /// Bulk work, run at background priority so queries meanwhile are not slowed (see
    /// [`crate::pool::BlockingPool::run_background`]).
    pub fn background(self) -> bool {
        matches!(
            self,
            Service::RatecardImport
                | Service::RatecardBuild
                | Service::RatecardSimulate
                | Service::CdrRerate
                | Service::AdminDatasetImport
        )
    }

    /// The largest request body the service reads (once the request is authenticated).
    pub fn max_body(self) -> usize {
        match self {
            Service::RatecardImport | Service::AdminDatasetImport => MAX_IMPORT_BODY,
            Service::CdrAdd => MAX_CDR_BODY,
            _ => MAX_SMALL_BODY,
        }
    }

    /// Whether the service takes a variable of this name (`api_key` is taken by every service;
    /// `dial/dial` takes any `header_NAME`).
    pub fn takes(self, name: &str) -> bool {
        name == "api_key"
            || self.params().iter().any(|(p, _, _)| *p == name)
            || (self == Service::DialDial && name.starts_with("header_") && name.len() > 7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Service::ALL {
            assert_eq!(Service::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Service::parse("ratecard"), None);
    }

    #[test]
    fn variables_taken() {
        assert!(Service::RatecardQuery.takes("number"));
        assert!(Service::RatecardQuery.takes("api_key"));
        assert!(!Service::RatecardQuery.takes("liveat"));
        assert!(Service::DialDial.takes("header_X-Campaign"));
        assert!(!Service::DialDial.takes("header_"));
        assert!(!Service::LookupPing.takes("header_X"));
    }
}
