//! `sediment`: the broker (`serve`) and the tools that talk to it over the Kafka protocol.
//!
//! Exit codes: 0 success, 2 usage or configuration error (one line naming the flag or key),
//! 1 runtime failure.

mod admin;
#[cfg(feature = "bucket-admin")]
mod bucket;
mod config;
mod tier;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;

use config::{ServeArgs, ServeConfig};

#[derive(Parser, Debug)]
#[command(name = "sediment", version, about = "Kafka-compatible broker with tiered storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
// parsed once at start-up: the size of the serve flags does not matter
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run a broker
    Serve(ServeArgs),
    #[command(flatten)]
    Client(sediment_client::cli::ClientCommand),
    /// Create or verify an S3 bucket's settings (encryption, public access block, lifecycle)
    #[cfg(feature = "bucket-admin")]
    Bucket(bucket::BucketArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = match config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if args.check_config {
                println!("config ok");
                return ExitCode::SUCCESS;
            }
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            // Logs, trace and metric export. HTTP exporters are built here, outside the runtime
            // (their blocking client must not live in async code); gRPC ones inside it.
            let telemetry_cfg =
                sediment_telemetry::TelemetryConfig { log_format: cfg.log_format, otlp: cfg.otlp.clone(), instance_id: Some(cfg.broker.node_id.to_string()) };
            let telemetry = match sediment_telemetry::init(&telemetry_cfg, Some(rt.handle())) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            sediment_broker::observe::init();
            let result = rt.block_on(serve(cfg));
            if let Err(e) = &result {
                tracing::error!(error = %e, "broker failed");
            }
            // Flush spans and metrics while the runtime still exists (gRPC), outside async code.
            telemetry.shutdown();
            drop(rt);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "bucket-admin")]
        Command::Bucket(args) => run_tool(bucket::run(args)),
        Command::Client(cmd) => run_tool(sediment_client::cli::run(cmd)),
    }
}

/// Runs a tool subcommand (quiet logs, its own runtime): exit 0, or 1 with the error's chain.
fn run_tool(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    init_tracing_quiet();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    // first: a SIGTERM during start-up (a broker waiting for its quorum) stops it gracefully
    let mut stop = StopSignals::install()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tracing::info!(
        node_id = cfg.broker.node_id,
        data_dir = %cfg.broker.data_dir.display(),
        object_store = ?cfg.object_store,
        "starting sediment {}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(t) = &cfg.otlp.traces {
        tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, sampler = ?cfg.otlp.sampler, "exporting traces over otlp");
    }
    if let Some(m) = &cfg.otlp.metrics {
        tracing::info!(endpoint = %m.endpoint, protocol = ?m.protocol, "exporting metrics over otlp");
    }
    // The admin listener comes first: /health and /ready (503) answer during log recovery.
    let admin_listener = TcpListener::bind(cfg.admin_listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", cfg.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin = admin::Admin::new(&cfg, admin_addr);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin.clone()));
    tracing::info!(admin = %admin_addr, "admin listener ready (/health, /ready, /metrics, /v1/cluster, /v1/topics)");
    let broker_cfg = cfg.broker.clone();
    let listen = broker_cfg.listen;
    // The Kafka port is bound now and accepted on once the broker can answer: a port taken by
    // someone else fails the start at once, and nobody can take it while the broker recovers
    // its logs or waits for its controller (clients that connect meanwhile wait in the backlog,
    // as with a Kafka broker that has not enabled request processing yet).
    let listener = TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    // A cluster's broker (or, with `single_node_raft`, one started without --peers as the only
    // voter of a cluster of one) runs the Raft path; otherwise the single-node path.
    let mut cfg = cfg;
    if cfg.peers.is_empty() && cfg.single_node_raft {
        cfg.peers.insert(cfg.broker.node_id, cfg.raft_listen.to_string());
    }
    let alone = cfg.peers.len() == 1 && cfg.peers.contains_key(&cfg.broker.node_id);
    // every broker of a cluster names the same bucket: a partition's leader uploads, and any
    // replica may lead later and read what an earlier leader uploaded
    let tier = tier::open(&cfg).await?;
    let cluster = if cfg.peers.is_empty() {
        // a data dir that ran as a Raft group (a cluster member, or a broker of one): the
        // single-node path would append without Raft entries, which the next Raft start cuts
        let raft_dir = cfg.broker.data_dir.join("meta").join("raft");
        if raft_dir.exists() {
            anyhow::bail!(
                "{} holds a Raft metadata log: start this broker with the peers it ran with, or with single_node_raft = true (SEDIMENT_SINGLE_NODE_RAFT=true) if it ran alone",
                cfg.broker.data_dir.display()
            );
        }
        None
    } else {
        // a single-node data dir of an earlier path: its partitions get their Raft entries
        // before any group opens them
        let defaults = sediment_broker::topic_config::BrokerDefaults::new(&cfg.broker.topic_defaults)
            .map_err(|e| anyhow::anyhow!("invalid broker topic defaults: {e}"))?;
        let legacy = sediment_broker::migrate::pending(&cfg.broker.data_dir, cfg.broker.node_id, alone)?;
        if let Some(legacy) = legacy.clone() {
            let (dir, node, addr) = (cfg.broker.data_dir.clone(), cfg.broker.node_id, cfg.raft_listen.to_string());
            let entries = tokio::task::spawn_blocking(move || sediment_broker::migrate::adopt_partitions(&dir, &legacy, node, &addr, &defaults)).await??;
            tracing::info!(entries, "partition logs adopted; recording their topics in the controller");
            failpoint("adopt-after-partitions");
        }
        // a lone voter without a cluster key listens for no peer (nobody may talk to it)
        let raft_listener = if alone && cfg.cluster_key.is_none() {
            None
        } else {
            let l = TcpListener::bind(cfg.raft_listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {} (raft): {e}", cfg.raft_listen))?;
            tracing::info!(raft = %l.local_addr()?, peers = ?cfg.peers, "joining the cluster");
            Some(l)
        };
        let meta_dir = cfg.broker.data_dir.join("meta").join("raft");
        let ctx = sediment_broker::cluster::ClusterCtx::start(
            cfg.broker.node_id,
            &meta_dir,
            raft_listener,
            &cfg.peers,
            cfg.cluster_key.clone(),
            cfg.broker.cluster_id.as_deref(),
        )
        .await?;
        Some((ctx, legacy))
    };
    let legacy = cluster.as_ref().and_then(|(_, l)| l.clone());
    let cluster = cluster.map(|(c, _)| c);
    // Recovery can read whole segments: keep it off the async workers.
    let broker = tokio::task::spawn_blocking({
        let rx = shutdown_rx.clone();
        let handle = tokio::runtime::Handle::current();
        let tier = tier.clone();
        move || {
            let _guard = handle.enter();
            match cluster {
                Some(ctx) => sediment_broker::Broker::open_cluster(broker_cfg, rx, ctx, tier),
                None => sediment_broker::Broker::open_with_tier(broker_cfg, rx, tier),
            }
        }
    })
    .await??;
    admin.set_broker(broker.clone());
    sediment_broker::observe::register(&broker);
    // as a Kafka broker does, serve clients once registered with the controller and caught up
    // with its state (a cluster of one: milliseconds): before, Metadata would list no brokers,
    // topics known before a restart would look missing, and CreateTopics could place no
    // replica. Bounded, so a broker whose quorum is down still answers and says why.
    let mut stopped = false;
    if let Some(c) = &broker.cluster {
        tokio::select! {
            caught_up = c.wait_caught_up(REGISTRATION_WAIT) => if !caught_up {
                tracing::warn!(waited_ms = REGISTRATION_WAIT.as_millis() as u64, "not registered with the controller yet; serving anyway (not ready until it is)");
            },
            _ = stop.recv() => stopped = true,
        }
    }
    if let Some(legacy) = legacy.as_ref().filter(|_| !stopped) {
        sediment_broker::migrate::adopt_metadata(&broker, legacy).await?;
    }
    tracing::info!(listen = %listener.local_addr()?, advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port), "kafka listener ready");
    let server = tokio::spawn(sediment_broker::server::serve(broker.clone(), listener));
    // one broker is ready once it serves; in a cluster only once it has applied the metadata
    // and every replica placed here is in sync, so a rolling restart that waits for /ready
    // never stops a second replica of a partition while the first is still copying it
    let readiness = tokio::spawn(become_ready(broker.clone(), admin.clone()));

    if !stopped {
        stop.recv().await;
    }
    readiness.abort();
    sediment_telemetry::set_ready(false);
    if broker.cluster.is_some() {
        // still serving: producers follow each partition to its new leader meanwhile; and
        // taking no leadership back (a preferred-leader rebalance would ask)
        sediment_raft::network::set_leaving();
        tracing::info!("shutdown requested; handing over the partitions led here");
        let started = std::time::Instant::now();
        let done = sediment_broker::cluster::controlled_shutdown(&broker, CONTROLLED_SHUTDOWN_TIMEOUT).await;
        tracing::info!(led = done.led, moved = done.moved, elapsed_ms = started.elapsed().as_millis() as u64, "controlled shutdown: leaderships handed over");
        // the metadata leadership last, within what is left of the bound
        let left = CONTROLLED_SHUTDOWN_TIMEOUT.saturating_sub(started.elapsed()).max(Duration::from_secs(3));
        let led_metadata = broker.cluster.as_ref().is_some_and(|c| c.controller.leader() == Some(c.node_id as u64) && c.controller.voters().len() > 1);
        if led_metadata {
            let started = std::time::Instant::now();
            match sediment_broker::cluster::hand_over_controller(&broker, left).await {
                Some(to) => tracing::info!(to, elapsed_ms = started.elapsed().as_millis() as u64, "controlled shutdown: metadata leadership handed over"),
                None => tracing::warn!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "controlled shutdown: metadata leadership not handed over; the others elect after the lease"
                ),
            }
        }
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
    let _ = shutdown_tx.send(true);
    let phase = std::time::Instant::now();
    if tokio::time::timeout(Duration::from_secs(30), server).await.is_err() {
        tracing::warn!("in-flight requests did not finish within 30s; closing anyway");
    }
    tracing::info!(elapsed_ms = phase.elapsed().as_millis() as u64, "shutdown: requests finished");
    let phase = std::time::Instant::now();
    broker.stop_replicas().await;
    tracing::info!(elapsed_ms = phase.elapsed().as_millis() as u64, "shutdown: raft groups stopped");
    let phase = std::time::Instant::now();
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.flush_all()).await?;
    tracing::info!(elapsed_ms = phase.elapsed().as_millis() as u64, "shutdown: partitions flushed");
    if let Some(t) = &tier {
        t.close().await;
    }
    drop(broker);
    admin_task.abort();
    tracing::info!("shutdown complete");
    Ok(())
}

/// Crash-test hook: when `SEDIMENT_FAILPOINT` names `point`, the process exits at once with
/// code 86, as a crash there would leave the data dir (no shutdown, nothing flushed after it).
fn failpoint(point: &str) {
    if std::env::var("SEDIMENT_FAILPOINT").is_ok_and(|v| v == point) {
        tracing::warn!(point, "failpoint reached; exiting");
        std::process::exit(86);
    }
}

/// Longest a starting broker waits for its registration before it accepts on the Kafka listener.
const REGISTRATION_WAIT: Duration = Duration::from_secs(10);

/// Longest a stopping broker spends handing its leaderships over (the chart's grace period,
/// 60 s, also covers the 30 s for in-flight requests that follows).
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls [`sediment_broker::Broker::readiness`] until it holds, then reports ready (it stays
/// ready until shutdown); the admin endpoint shows what is still missing meanwhile.
async fn become_ready(broker: std::sync::Arc<sediment_broker::Broker>, admin: std::sync::Arc<admin::Admin>) {
    let started = std::time::Instant::now();
    let mut last_logged = std::time::Instant::now();
    loop {
        match broker.readiness().await {
            Ok(replicas) => {
                admin.set_not_ready_reason(None);
                sediment_telemetry::set_ready(true);
                if broker.cluster.is_some() {
                    tracing::info!(replicas, elapsed_ms = started.elapsed().as_millis() as u64, "ready: metadata applied and every replica here in sync");
                }
                return;
            }
            Err(why) => {
                if last_logged.elapsed() > Duration::from_secs(10) {
                    tracing::info!(reason = %why, "not ready yet");
                    last_logged = std::time::Instant::now();
                }
                admin.set_not_ready_reason(Some(why));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SIGTERM and SIGINT, listened for from the start of `serve` (before, the default action
/// would kill the process).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
