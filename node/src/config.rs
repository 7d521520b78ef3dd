//! The node's config file (TOML, API.md §10). Unknown keys are errors. Each section's struct
//! belongs to the crate that uses it; this file puts them together and validates the whole.

use anyhow::{bail, Context};
use edgerate_api::server::HttpSection;
use edgerate_sip::SipSection;
use edgerate_topology::{NodeSection, PeerSection, TlsSection};
use serde::Deserialize;
use std::path::Path;

/// The config file version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// The whole config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config file version; default 1.
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub http: HttpSection,
    pub peer: Option<PeerSection>,
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub operator: OperatorSection,
    pub sip: Option<SipSection>,
    #[serde(default)]
    pub asrplus: AsrPlusSection,
    #[serde(default)]
    pub cdr: CdrSection,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub log: LogSection,
}

/// `[log]`: what the node logs (to standard error; under systemd, the journal).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (default: one human-readable line per event) or `json` (one JSON object per line,
    /// for a log shipper).
    #[serde(default)]
    pub format: LogFormat,
    /// `error`, `warn`, `info` (default), `debug` or `trace`, or a filter such as
    /// `info,edgerate_replication=debug`; the `RUST_LOG` environment variable overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// `[routing]`: route quality for `routing/lcr`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// Days of CDRs route quality (ASR, ACD) is kept over; default 7, at most 90.
    #[serde(default = "default_quality_days")]
    pub quality_days: u32,
}

impl Default for RoutingSection {
    fn default() -> Self {
        Self {
            quality_days: default_quality_days(),
        }
    }
}

fn default_quality_days() -> u32 {
    edgerate_model::quality::DEFAULT_DAYS
}

/// `[asrplus]`: which final SIP codes mark a number as not existing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsrPlusSection {
    /// Default `[404, 410, 484, 604]`.
    #[serde(default = "default_bad_codes")]
    pub bad_codes: Vec<u16>,
}

impl Default for AsrPlusSection {
    fn default() -> Self {
        Self {
            bad_codes: default_bad_codes(),
        }
    }
}

fn default_bad_codes() -> Vec<u16> {
    edgerate_model::asrplus::DEFAULT_BAD_CODES.to_vec()
}

/// `[cdr]`: how long CDRs are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrSection {
    /// Days; default 400.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
}

impl Default for CdrSection {
    fn default() -> Self {
        Self {
            retention_days: default_retention(),
        }
    }
}

fn default_retention() -> u32 {
    400
}

/// `[operator]`: the operator key for `admin/*` and `cluster/*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSection {
    /// Else `EDGERATE_OPERATOR_KEY`, else generated on first start and kept in the data dir.
    pub key: Option<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config =
            Self::parse(&text).with_context(|| format!("config {}", path.display()))?;
        if let (Some(tls), Some(dir)) = (&mut config.tls, path.parent()) {
            // Relative certificate paths: beside the config file when they are there, else
            // from the working directory.
            for file in [&mut tls.ca, &mut tls.cert, &mut tls.key] {
                if file.is_relative() && dir.join(&*file).exists() {
                    *file = dir.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(v) = self.version {
            if v != CONFIG_VERSION {
                bail!("version {v} is not supported (this build reads version {CONFIG_VERSION})");
            }
        }
        self.node.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| anyhow::anyhow!("[log] level {:?}: {e}", self.log.level))?;
        self.http.validate().map_err(anyhow::Error::msg)?;
        if let Some(peer) = &self.peer {
            peer.validate()?;
        }
        if let Some(key) = &self.operator.key {
            if key.len() < 8 {
                bail!("[operator] key must be at least 8 characters");
            }
        }
        if let Some(code) = self
            .asrplus
            .bad_codes
            .iter()
            .find(|c| !(300..=699).contains(*c))
        {
            bail!("[asrplus] bad_codes: {code} is not a SIP failure code (300-699)");
        }
        if !(1..=90).contains(&self.routing.quality_days) {
            bail!("[routing] quality_days must be 1-90");
        }
        if self.cdr.retention_days == 0 {
            bail!("[cdr] retention_days must be at least 1");
        }
        if self.peer.is_some() != self.tls.is_some() {
            bail!(
                "[peer] and [tls] go together: peers authenticate each other with the cluster CA"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[node]
id = "lon-1"
region = "uk"
data_dir = "/var/lib/edgerate/lon-1"
[http]
listen = "0.0.0.0:8080"
[peer]
listen = "0.0.0.0:7080"
seeds = ["203.0.113.7:7080"]
[tls]
ca = "certs/ca.pem"
cert = "certs/lon-1.pem"
key = "certs/lon-1.key"
[operator]
key = "change-me"
[sip]
trunk = "127.0.0.1:5060"
"#;

    #[test]
    fn reads_the_contract_example() {
        let c = Config::parse(FULL).unwrap();
        assert_eq!(c.node.id, "lon-1");
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.operator.key.as_deref(), Some("change-me"));
        assert_eq!(c.peer.unwrap().seeds.len(), 1);
    }

    #[test]
    fn a_typo_is_an_error() {
        let err = Config::parse("[node]\nidd = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        assert!(Config::parse("[htp]\nlisten = \"127.0.0.1:1\"\n").is_err());
        assert!(Config::parse("[http]\nlisten = \"nowhere\"\n").is_err());
        assert!(Config::parse("[node]\nid = \"a b\"\n").is_err());
        assert!(Config::parse("version = 2\n").is_err());
        assert!(Config::parse("[http]\nidle_timeout_s = 0\n").is_err());
        assert!(Config::parse("[log]\nformat = \"yaml\"\n").is_err());
        assert!(Config::parse("[log]\nlevel = \"info,=bogus=\"\n").is_err());
        let json = Config::parse("[log]\nformat = \"json\"\nlevel = \"warn\"\n").unwrap();
        assert_eq!(
            (json.log.format, json.log.level.as_str()),
            (LogFormat::Json, "warn")
        );
    }

    #[test]
    fn the_example_configs_are_valid() {
        let c = Config::parse(include_str!("../../config.example.toml")).unwrap();
        assert_eq!(c.node.region, "uk");
        for (text, id) in [
            (
                include_str!("../../deploy/three-region/lon-1.toml"),
                "lon-1",
            ),
            (
                include_str!("../../deploy/three-region/nyc-1.toml"),
                "nyc-1",
            ),
            (
                include_str!("../../deploy/three-region/sgp-1.toml"),
                "sgp-1",
            ),
        ] {
            assert_eq!(Config::parse(text).unwrap().node.id, id);
        }
    }

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.http, HttpSection::default());
        assert_eq!(c.node.data_dir, Path::new("./edgerate-data"));
    }
}
