//! `edgerate`: run a node, or talk to a running one.

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgerate_node::client::{self, Client};
use edgerate_node::config::{Config, LogFormat};
use edgerate_node::{Options, DEMO_ACCOUNT, DEMO_CARD};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Request handling allocates many small, short-lived buffers; mimalloc serves them faster
/// than the system allocator (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "edgerate",
    version,
    about = "Edge-replicated telecom API: rate cards, billing, accounts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no flags: the embedded default, with a demo account and card).
    Serve {
        /// Config file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the config).
        #[arg(long)]
        data: Option<PathBuf>,
        /// HTTP listen address (overrides the config).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Print the start-up lines (address, keys made on first start) as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Accounts (operator key from EDGERATE_OPERATOR_KEY).
    Account {
        #[command(flatten)]
        node: client::NodeArgs,
        #[command(subcommand)]
        command: client::AccountCommand,
    },
    /// Rate cards (account credentials from --account/--key or EDGERATE_ACCOUNT/EDGERATE_KEY).
    Card {
        #[command(flatten)]
        node: client::NodeArgs,
        #[command(subcommand)]
        command: client::CardCommand,
    },
    /// A consistent backup of a running node, written to a file (operator key from
    /// EDGERATE_OPERATOR_KEY).
    Backup {
        #[command(flatten)]
        node: client::NodeArgs,
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty data dir (no node needed; start the node on it after).
    Restore {
        /// The archive `edgerate backup` wrote.
        file: PathBuf,
        /// The data dir to create (must be empty or absent).
        #[arg(long)]
        data: PathBuf,
        /// Print the backup's manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cluster CA and node certificates (files only; no node needed).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The cluster (operator key from EDGERATE_OPERATOR_KEY).
    Cluster {
        #[command(flatten)]
        node: client::NodeArgs,
        #[command(subcommand)]
        command: client::ClusterCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a cluster CA: DIR/ca.pem and DIR/ca.key.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a node certificate signed by the CA: OUT/NAME.pem and OUT/NAME.key.
    Issue {
        /// The folder holding ca.pem and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// The node's id (the certificate's name).
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgerate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            data,
            http,
            json,
        } => serve(config, data, http, json),
        Command::Account { node, command } => Client::new(node)?.account(command),
        Command::Card { node, command } => Client::new(node)?.card(command),
        Command::Cluster { node, command } => Client::new(node)?.cluster(command),
        Command::Backup { node, out } => Client::new(node)?.backup(&out),
        Command::Restore { file, data, json } => restore(&file, &data, json),
        Command::Certs { command } => {
            let (written, json) = match command {
                CertsCommand::Init { out, json } => {
                    (edgerate_topology::certs::init_ca(&out)?, json)
                }
                CertsCommand::Issue {
                    ca,
                    name,
                    out,
                    json,
                } => (edgerate_topology::certs::issue(&ca, &name, &out)?, json),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "wrote": written.display().to_string() })
                );
            } else {
                println!("wrote {}", written.display());
            }
            Ok(())
        }
    }
}

fn restore(file: &std::path::Path, data: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let archive =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let manifest = edgerate_replication::backup::restore(std::io::BufReader::new(archive), data)
        .with_context(|| format!("restoring {}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string(&manifest)?);
    } else {
        println!(
            "restored the backup of {} (taken at {}) into {}: {} documents and the event log; \
             start the node on it with the same [node] id and certificate",
            manifest.node,
            edgerate_model::time::format_datetime(manifest.created),
            data.display(),
            manifest.documents
        );
    }
    Ok(())
}

fn serve(
    config_path: Option<PathBuf>,
    data: Option<PathBuf>,
    http: Option<SocketAddr>,
    json: bool,
) -> anyhow::Result<()> {
    let demo = config_path.is_none();
    let mut config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    if let Some(dir) = data {
        config.node.data_dir = dir;
    }
    if let Some(addr) = http {
        config.http.listen = addr;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http.worker_threads())
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let (node, first) = edgerate_node::start(Options { config, demo, listener: None }).await?;
        let url = format!("http://{}", node.http_addr);
        if json {
            let mut started = serde_json::json!({ "serving": url, "node": node.state.node().id });
            if let Some(key) = &first.operator_key {
                started["operator_key"] = key.as_str().into();
            }
            if let Some(key) = &first.demo_key {
                started["demo_account"] = DEMO_ACCOUNT.into();
                started["demo_key"] = key.as_str().into();
                started["demo_card"] = DEMO_CARD.into();
            }
            println!("{started}");
        } else {
            if let Some(key) = &first.operator_key {
                println!("operator key (generated, kept in the data dir; shown once): {key}");
            }
            if let Some(key) = &first.demo_key {
                println!("demo account: {DEMO_ACCOUNT}  key: {key}  (shown once)");
                println!("try: curl -u '{DEMO_ACCOUNT}:{key}' '{url}/api/ratecard/query.json?card={DEMO_CARD}&number=441234567890&duration=61'");
            }
            println!("edgerate serving on {url}");
        }
        wait_for_signal().await;
        tracing::info!("shutting down");
        node.shutdown().await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
