//! The operator CLI: subcommands that talk to a running node through its API, never by
//! opening its files.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use edgerate_replication::backup;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where the node is and how to print.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's URL.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "EDGERATE_NODE"
    )]
    node: String,
    /// Print the node's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
    /// Account id, for card commands.
    #[arg(long, global = true, env = "EDGERATE_ACCOUNT")]
    account: Option<String>,
    /// Account key, for card commands.
    #[arg(long, global = true, env = "EDGERATE_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account; prints its key once.
    Create {
        name: String,
        #[arg(long)]
        rps: Option<u32>,
        #[arg(long)]
        daily: Option<u64>,
    },
    /// List accounts.
    List,
}

#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// List the account's cards.
    List,
    /// Import a deck as a new revision.
    Import {
        card: String,
        file: PathBuf,
        /// csv or ime (default: from the file's content).
        #[arg(long)]
        format: Option<String>,
        /// When it goes live: unix time, 'YYYY-MM-DD HH:MM:SS', 'now' (default) or 'draft'.
        #[arg(long)]
        live_at: Option<String>,
    },
    /// Export a revision as a deck file.
    Export {
        card: String,
        #[arg(long)]
        revision: Option<u32>,
        #[arg(long, default_value = "csv")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// This node, its region and its peers.
    Status,
}

/// A blocking API client.
pub struct Client {
    args: NodeArgs,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(args: NodeArgs) -> anyhow::Result<Self> {
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()?;
        Ok(Self { args, http })
    }

    fn url(&self, service: &str) -> String {
        format!(
            "{}/api/{service}.json",
            self.args.node.trim_end_matches('/')
        )
    }

    fn operator(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<reqwest::blocking::RequestBuilder> {
        let key = std::env::var("EDGERATE_OPERATOR_KEY")
            .context("set EDGERATE_OPERATOR_KEY to the node's operator key")?;
        Ok(request.bearer_auth(key))
    }

    fn customer(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<reqwest::blocking::RequestBuilder> {
        match (&self.args.account, &self.args.key) {
            (Some(account), Some(key)) => Ok(request.basic_auth(account, Some(key))),
            _ => bail!("give --account and --key (or EDGERATE_ACCOUNT and EDGERATE_KEY)"),
        }
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let response = request
            .send()
            .with_context(|| format!("reaching {}", self.args.node))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().unwrap_or(Value::Null);
        let reason = body["error"]["reason"]
            .as_str()
            .unwrap_or("no reason given");
        bail!("{status}: {reason}")
    }

    fn print(&self, value: &Value, text: impl FnOnce(&Value) -> String) {
        if self.args.json {
            println!("{value}");
        } else {
            println!("{}", text(value));
        }
    }

    pub fn account(&self, command: AccountCommand) -> anyhow::Result<()> {
        match command {
            AccountCommand::Create { name, rps, daily } => {
                let mut form = vec![("name", name)];
                form.extend(rps.map(|r| ("rps", r.to_string())));
                form.extend(daily.map(|d| ("daily", d.to_string())));
                let request =
                    self.operator(self.http.post(self.url("admin/account/create")).form(&form))?;
                let v: Value = self.send(request)?.json()?;
                self.print(&v, |v| {
                    format!(
                        "account {}  key {}  (the key is shown once)",
                        v["account"], v["key"]
                    )
                });
            }
            AccountCommand::List => {
                let v: Value = self
                    .send(self.operator(self.http.get(self.url("admin/account/list")))?)?
                    .json()?;
                self.print(&v, |v| {
                    table(&v["accounts"], &["account", "name", "rps", "daily"])
                });
            }
        }
        Ok(())
    }

    pub fn card(&self, command: CardCommand) -> anyhow::Result<()> {
        match command {
            CardCommand::List => {
                let v: Value = self
                    .send(self.customer(self.http.get(self.url("ratecard/list")))?)?
                    .json()?;
                self.print(&v, |v| {
                    table(
                        &v["cards"],
                        &["id", "name", "currency", "revision", "rules", "updated"],
                    )
                });
            }
            CardCommand::Import {
                card,
                file,
                format,
                live_at,
            } => {
                let opened = std::fs::File::open(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let len = opened.metadata()?.len();
                let progress = bytes_progress("upload", Some(len));
                let body = reqwest::blocking::Body::sized(progress.wrap_read(opened), len);
                let mut query = vec![("card", card)];
                query.extend(format.map(|f| ("format", f)));
                query.extend(live_at.map(|l| ("live_at", l)));
                let request = self
                    .http
                    .post(self.url("ratecard/import"))
                    .query(&query)
                    .header("content-type", "application/octet-stream")
                    .body(body);
                let sent = self.send(self.customer(request)?);
                progress.finish_and_clear();
                let v: Value = sent?.json()?;
                self.print(&v, |v| {
                    format!(
                        "revision {} of {}: {} rules, {}",
                        v["rev"], v["card"], v["rules"], v["state"]
                    )
                });
            }
            CardCommand::Export {
                card,
                revision,
                format,
                out,
            } => {
                let mut query = vec![("card", card), ("format", format)];
                query.extend(revision.map(|r| ("revision", r.to_string())));
                let mut response = self.send(
                    self.customer(self.http.get(self.url("ratecard/export")).query(&query))?,
                )?;
                let progress = bytes_progress("export", response.content_length());
                let mut sink: Box<dyn std::io::Write> = match &out {
                    Some(path) => Box::new(
                        std::fs::File::create(path)
                            .with_context(|| format!("writing {}", path.display()))?,
                    ),
                    None => Box::new(std::io::stdout().lock()),
                };
                let copied = std::io::copy(&mut response, &mut progress.wrap_write(&mut sink));
                progress.finish_and_clear();
                copied.context("downloading the export")?;
                sink.flush()?;
            }
        }
        Ok(())
    }

    /// Downloads a backup of the node into `out` (written beside it as `out.part`, checked
    /// against its manifest, then renamed into place: a cut download never looks like a backup).
    pub fn backup(&self, out: &Path) -> anyhow::Result<()> {
        let mut response = self.send(self.operator(self.http.get(self.url("admin/backup")))?)?;
        let mut part = out.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let mut file =
            std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        let progress = bytes_progress("backup", response.content_length());
        let copied = std::io::copy(&mut response, &mut progress.wrap_write(&mut file));
        progress.finish_and_clear();
        let checked = copied
            .context("downloading the backup")
            .and_then(|_| file.sync_all().context("writing the backup"))
            .and_then(|()| {
                let reader = std::io::BufReader::new(std::fs::File::open(&part)?);
                backup::verify(reader).context("checking the downloaded backup")
            });
        let manifest = match checked {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        std::fs::rename(&part, out).with_context(|| format!("renaming to {}", out.display()))?;
        let summary = serde_json::json!({
            "file": out.display().to_string(),
            "node": manifest.node,
            "created": manifest.created,
            "documents": manifest.documents,
            "bytes": manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
            "format": manifest.format,
        });
        self.print(&summary, |v| {
            format!(
                "backup of {} written to {}: {} documents and the event log, {} bytes, checksums verified",
                v["node"].as_str().unwrap_or("?"),
                out.display(),
                v["documents"],
                v["bytes"]
            )
        });
        Ok(())
    }

    pub fn cluster(&self, command: ClusterCommand) -> anyhow::Result<()> {
        match command {
            ClusterCommand::Status => {
                let v: Value = self
                    .send(self.operator(self.http.get(self.url("cluster/status")))?)?
                    .json()?;
                self.print(&v, |v| {
                    let peers = v["peers"].as_array().map_or(0, Vec::len);
                    format!(
                        "node {}  region {}  peers {peers}\n{}",
                        v["node"].as_str().unwrap_or("?"),
                        v["region"].as_str().unwrap_or("?"),
                        table(
                            &v["peers"],
                            &[
                                "node",
                                "region",
                                "addr",
                                "state",
                                "rtt_ms",
                                "last_sync",
                                "lag"
                            ]
                        )
                    )
                });
            }
        }
        Ok(())
    }
}

/// Progress of a transfer of `total` bytes (if known), on standard error when it is a terminal;
/// nothing in a pipe or a file.
fn bytes_progress(what: &'static str, total: Option<u64>) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            "{msg}: {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {msg}: {bytes} ({bytes_per_sec})",
        ),
    };
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
    bar.with_message(what)
}

/// A plain text table of `columns` of a JSON list.
fn table(rows: &Value, columns: &[&str]) -> String {
    let mut out = columns.join("\t");
    for row in rows.as_array().into_iter().flatten() {
        out.push('\n');
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &row[c] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&cells.join("\t"));
    }
    out
}
