//! The client subcommands of the `sediment` binary: `topic`, `produce`,
//! `consume`, `bench` and `group`.
//!
//! The binary flattens [`ClientCommand`] into its own subcommand enum and
//! calls [`run`]; an `Err` becomes exit code 1 (clap usage errors exit 2 before
//! anything connects). Results go to stdout, summaries and progress to
//! stderr; progress bars appear only when stderr is a terminal (and the
//! records themselves are not being typed into or printed onto it).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use indicatif::{ProgressBar, ProgressStyle};
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncReadExt;

use crate::admin::{Admin, AlterOp, NewTopic};
use crate::bench::{self, BenchConfig, BenchMode};
use crate::conn::Client;
use crate::consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset};
use crate::error::Error;
use crate::partitioner::Keyless;
use crate::producer::{Acks, BatchCallback, BatchDelivery, Codec, Producer, ProducerConfig, ProducerRecord};

/// Connection flags shared by every client subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Broker to bootstrap from
    #[arg(long, env = "SEDIMENT_BOOTSTRAP", default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    pub bootstrap: String,
}

/// Client subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list, describe, delete and alter topics
    Topic(TopicArgs),
    /// Produce records read from stdin, one per line
    Produce(ProduceArgs),
    /// Consume records and print them to stdout
    Consume(ConsumeArgs),
    /// Load generator: produce and consume, report throughput and latency
    Bench(BenchArgs),
    /// List consumer groups, describe one (members, assignments, lag)
    Group(GroupArgs),
    /// Show the cluster's brokers; add or remove a broker
    Cluster(ClusterArgs),
}

/// `sediment cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Cluster operation
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// `sediment cluster <operation>`.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// List the brokers and the controller
    Describe(ClusterDescribeArgs),
    /// Add a running broker (started with --peers naming this cluster's brokers) to the cluster
    AddBroker(AddBrokerArgs),
    /// Move a broker's partition replicas to the other brokers, then remove it from the cluster
    RemoveBroker(RemoveBrokerArgs),
}

/// `sediment cluster describe`.
#[derive(clap::Args, Debug)]
pub struct ClusterDescribeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment cluster add-broker`.
#[derive(clap::Args, Debug)]
pub struct AddBrokerArgs {
    /// The new broker's --node-id
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub node_id: i32,
    /// The new broker's --raft-listen address, as the other brokers reach it
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub raft_address: (String, u16),
    /// Seconds to wait for the new broker to catch up with the cluster's metadata
    #[arg(long, default_value = "60", value_parser = parse_duration_secs)]
    pub timeout: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment cluster remove-broker`.
#[derive(clap::Args, Debug)]
pub struct RemoveBrokerArgs {
    /// The broker's node id
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub node_id: i32,
    /// Seconds to wait for its replicas to move to other brokers
    #[arg(long, default_value = "600", value_parser = parse_duration_secs)]
    pub timeout: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment group`.
#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    /// Group operation
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// `sediment group <operation>`.
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups with their state and protocol type
    List(GroupListArgs),
    /// Show a group's members, their assignments, and committed offsets and lag per partition
    Describe(GroupDescribeArgs),
}

/// `sediment group list`.
#[derive(clap::Args, Debug)]
pub struct GroupListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment group describe GROUP`.
#[derive(clap::Args, Debug)]
pub struct GroupDescribeArgs {
    /// Group id
    pub group: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment topic`.
#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    /// Topic operation
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// `sediment topic <operation>`.
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic
    Create(TopicCreateArgs),
    /// List topics
    List(TopicListArgs),
    /// Show a topic's partitions, offsets and configs
    Describe(TopicNameArgs),
    /// Delete a topic
    Delete(TopicNameArgs),
    /// Set or delete topic configs
    Alter(TopicAlterArgs),
}

/// `sediment topic create`.
#[derive(clap::Args, Debug)]
pub struct TopicCreateArgs {
    /// Topic name
    pub name: String,
    /// Number of partitions (-1 = the broker's num.partitions)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub partitions: i32,
    /// Replication factor (-1 = the broker's default)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i16,
    /// Topic config, repeatable
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Only ask the broker to validate the request
    #[arg(long)]
    pub validate_only: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment topic list`.
#[derive(clap::Args, Debug)]
pub struct TopicListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment topic describe|delete NAME`.
#[derive(clap::Args, Debug)]
pub struct TopicNameArgs {
    /// Topic name
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment topic alter`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["set", "delete"])))]
pub struct TopicAlterArgs {
    /// Topic name
    pub name: String,
    /// Set a config, repeatable
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Remove a topic-level config (back to its default), repeatable
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    /// Only ask the broker to validate the change
    #[arg(long)]
    pub validate_only: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to
    #[arg(long)]
    pub topic: String,
    /// Partition (default: by key, else spread over all partitions)
    #[arg(long)]
    pub partition: Option<i32>,
    /// Split each line at the first SEP into key and value
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Acknowledgements: 0, 1 or all (-1)
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_negative_numbers = true)]
    pub acks: Acks,
    /// Batch compression
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    /// Header added to every record, repeatable
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Batch size in bytes
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub batch_size: u64,
    /// How long a batch waits for more records
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Idempotent producer: retries are never written twice (default: true with --acks all,
    /// as in Kafka's Java client; true with other acks is a usage error)
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub idempotence: Option<bool>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to consume
    #[arg(long)]
    pub topic: String,
    /// Only this partition (default: all)
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start at the log start instead of the end
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read)
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..), allow_negative_numbers = true)]
    pub offset: Option<i64>,
    /// Exit after this many records
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit when no record arrived for this long
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Output format: %k key, %v value, %o offset, %p partition, %t timestamp (ms),
    /// %h headers (k=v,...), %% a percent sign; \n and \t escapes; a newline follows each record
    #[arg(long, default_value = "%v", value_parser = Format::parse)]
    pub format: Format,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

/// `sediment bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Topic (created if missing)
    #[arg(long, default_value = "sediment-bench")]
    pub topic: String,
    /// Partitions of the topic if it is created
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Replication factor of the topic if it is created (default: the cluster's, min(3, brokers))
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i16).range(-1..))]
    pub replication_factor: i16,
    /// Producer count (each with its own connections)
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer count (each reads a share of the partitions)
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Value size of each record in bytes
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub record_size: u64,
    /// Acknowledgements: 0, 1 or all
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_negative_numbers = true)]
    pub acks: Acks,
    /// Producer batch size in bytes
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub batch_size: u64,
    /// Producer linger
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Produce requests in flight per connection
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_in_flight: u64,
    /// Idempotent producers (needs --acks all; at most 5 requests in flight)
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
    pub idempotence: bool,
    /// Records per second over all producers (0 = unlimited)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to produce for
    #[arg(long, default_value_t = 10.0, value_parser = parse_duration_secs)]
    pub duration: f64,
    /// Batch compression
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    /// Only consume what the topic holds (from the beginning)
    #[arg(long, conflicts_with = "produce_only")]
    pub consume_only: bool,
    /// Only produce
    #[arg(long)]
    pub produce_only: bool,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnArgs,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got \"{s}\"")),
    }
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    s.parse()
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    match s.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((h, Ok(p))) if !h.is_empty() && p > 0 => Ok((h.to_string(), p)),
        _ => Err(format!("expected HOST:PORT, got \"{s}\"")),
    }
}

fn parse_duration_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got \"{s}\"")),
    }
}

/// Runs a client subcommand.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Topic(t) => run_topic(t.command).await,
        ClientCommand::Produce(a) => run_produce(a).await,
        ClientCommand::Consume(a) => run_consume(a).await,
        ClientCommand::Bench(a) => run_bench(a).await,
        ClientCommand::Group(g) => run_group(g.command).await,
        ClientCommand::Cluster(c) => run_cluster(c.command).await,
    }
}

/// New replica sets for every partition with a replica on `node`: that replica goes to the
/// broker (not already a replica) holding the fewest replicas, in the same position so the
/// preferred leader order stays.
pub fn drain_plan(placement: &[(String, i32, Vec<i32>)], brokers: &[i32], node: i32) -> Result<Vec<(String, i32, Vec<i32>)>, Error> {
    let mut load: std::collections::BTreeMap<i32, usize> = brokers.iter().filter(|b| **b != node).map(|b| (*b, 0)).collect();
    for (_, _, replicas) in placement {
        for b in replicas {
            if let Some(n) = load.get_mut(b) {
                *n += 1;
            }
        }
    }
    let mut plan = Vec::new();
    for (topic, p, replicas) in placement.iter().filter(|(_, _, r)| r.contains(&node)) {
        let to = load.iter().filter(|(b, _)| !replicas.contains(b)).min_by_key(|(b, n)| (**n, **b)).map(|(b, _)| *b).ok_or_else(|| {
            Error::Invalid(format!(
                "cannot move {topic}-{p} off broker {node}: every other broker already holds a replica of it (replicas {replicas:?}); add a broker first"
            ))
        })?;
        *load.get_mut(&to).expect("a candidate") += 1;
        plan.push((topic.clone(), *p, replicas.iter().map(|b| if *b == node { to } else { *b }).collect()));
    }
    Ok(plan)
}

/// Moves every replica off `node` and waits until the moves are done (with a progress bar).
async fn drain_broker(admin: &Admin, node: i32, timeout: Duration) -> anyhow::Result<usize> {
    let (placement, brokers) = admin.replica_placement().await?;
    let plan = drain_plan(&placement, &brokers, node)?;
    if plan.is_empty() {
        return Ok(0);
    }
    let mut by_topic: std::collections::BTreeMap<&str, Vec<(i32, Vec<i32>)>> = std::collections::BTreeMap::new();
    for (t, p, r) in &plan {
        by_topic.entry(t.as_str()).or_default().push((*p, r.clone()));
    }
    for (t, targets) in &by_topic {
        admin.reassign(t, targets).await?;
    }
    let bar = ProgressBar::new(plan.len() as u64);
    bar.set_style(ProgressStyle::with_template("moving replicas off broker {msg} [{bar:30}] {pos}/{len} ({elapsed})").expect("template").progress_chars("=> "));
    bar.set_message(node.to_string());
    let deadline = Instant::now() + timeout;
    loop {
        let left = admin.reassignments_in_progress().await?.iter().filter(|(t, p, _, _)| plan.iter().any(|(pt, pp, _)| pt == t && pp == p)).count();
        bar.set_position((plan.len() - left) as u64);
        if left == 0 {
            bar.finish();
            return Ok(plan.len());
        }
        if Instant::now() >= deadline {
            bar.abandon();
            anyhow::bail!(
                "{left} of {} replica moves off broker {node} not done within {:.0}s; they continue in the background",
                plan.len(),
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run_cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Describe(a) => {
            let (id, controller, brokers) = Admin::new(Client::connect(&a.conn.bootstrap).await?).describe_cluster().await?;
            println!("cluster id: {id}");
            println!("controller: {controller}");
            println!("{:<8} ADDRESS", "BROKER");
            for (b, addr) in brokers {
                println!("{b:<8} {addr}");
            }
        }
        ClusterCommand::AddBroker(a) => {
            let admin = Admin::new(Client::connect(&a.conn.bootstrap).await?);
            let (host, port) = &a.raft_address;
            admin.add_broker(a.node_id, host, *port, Duration::from_secs_f64(a.timeout)).await?;
            println!("broker {} added (raft {host}:{port})", a.node_id);
        }
        ClusterCommand::RemoveBroker(a) => {
            let admin = Admin::new(Client::connect(&a.conn.bootstrap).await?);
            let moved = drain_broker(&admin, a.node_id, Duration::from_secs_f64(a.timeout)).await?;
            admin.remove_broker(a.node_id).await?;
            println!("broker {} removed ({moved} partition replicas moved to other brokers)", a.node_id);
        }
    }
    Ok(())
}

async fn run_group(cmd: GroupCommand) -> anyhow::Result<()> {
    use crate::group::{GroupAdmin, render_description};
    let mut out = std::io::stdout();
    match cmd {
        GroupCommand::List(a) => {
            let groups = GroupAdmin::new(Client::connect(&a.conn.bootstrap).await?).list_groups().await?;
            let width = groups.iter().map(|g| g.group.len()).max().unwrap_or(5).max(5);
            writeln!(out, "{:<width$}  {:<20}  PROTOCOL-TYPE", "GROUP", "STATE")?;
            for g in groups {
                let ptype = if g.protocol_type.is_empty() { "-" } else { g.protocol_type.as_str() };
                writeln!(out, "{:<width$}  {:<20}  {ptype}", g.group, g.state)?;
            }
        }
        GroupCommand::Describe(a) => {
            let d = GroupAdmin::new(Client::connect(&a.conn.bootstrap).await?).describe_group(&a.group).await?;
            write!(out, "{}", render_description(&d))?;
        }
    }
    Ok(())
}

async fn admin(conn: &ConnArgs) -> anyhow::Result<Admin> {
    Ok(Admin::new(Client::connect(&conn.bootstrap).await?))
}

async fn run_topic(cmd: TopicCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cmd {
        TopicCommand::Create(a) => {
            let topic = NewTopic { name: a.name.clone(), partitions: a.partitions, replication_factor: a.replication_factor, configs: a.configs };
            let created = admin(&a.conn).await?.create_topic(&topic, a.validate_only).await?;
            let detail = describe_created(created.partitions, created.replication_factor);
            if a.validate_only {
                writeln!(out, "topic \"{}\" is valid{detail} (validate only, not created)", a.name)?;
            } else {
                writeln!(out, "created topic \"{}\"{detail}", a.name)?;
            }
        }
        TopicCommand::List(a) => {
            let topics = admin(&a.conn).await?.list_topics().await?;
            for t in topics {
                writeln!(out, "{}", t.name)?;
            }
        }
        TopicCommand::Describe(a) => {
            let admin = admin(&a.conn).await?;
            let d = admin.describe_topic(&a.name).await?;
            let configs = admin.describe_configs(&a.name).await?;
            write!(out, "{}", render_description(&d, &configs))?;
        }
        TopicCommand::Delete(a) => {
            admin(&a.conn).await?.delete_topic(&a.name).await?;
            writeln!(out, "deleted topic \"{}\"", a.name)?;
        }
        TopicCommand::Alter(a) => {
            let ops: Vec<AlterOp> = a.set.into_iter().map(|(k, v)| AlterOp::Set(k, v)).chain(a.delete.into_iter().map(AlterOp::Delete)).collect();
            if ops.is_empty() {
                anyhow::bail!("nothing to alter: give --set KEY=VALUE or --delete KEY");
            }
            admin(&a.conn).await?.alter_configs(&a.name, &ops, a.validate_only).await?;
            if a.validate_only {
                writeln!(out, "config change for topic \"{}\" is valid (validate only, not applied)", a.name)?;
            } else {
                writeln!(out, "altered configs of topic \"{}\"", a.name)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn describe_created(partitions: i32, rf: i16) -> String {
    match (partitions, rf) {
        (p, r) if p > 0 && r > 0 => format!(" with {p} partitions, replication factor {r}"),
        (p, _) if p > 0 => format!(" with {p} partitions"),
        _ => String::new(),
    }
}

/// Left-aligned columns separated by two spaces.
fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut s = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(&format!("{cell:<w$}"));
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    s
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn render_description(d: &crate::admin::TopicDescription, configs: &[crate::admin::ConfigEntry]) -> String {
    let mut s = format!("topic: {}\n", d.name);
    if !d.id.is_nil() {
        s += &format!("id: {}\n", d.id);
    }
    s += &format!("partitions: {}\n", d.partitions.len());
    let rf = d.partitions.first().map_or(0, |p| p.replicas.len());
    s += &format!("replication factor: {rf}\n");
    if d.internal {
        s += "internal: true\n";
    }
    s.push('\n');
    let opt = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                if p.leader >= 0 { p.leader.to_string() } else { "none".to_owned() },
                p.leader_epoch.to_string(),
                join_ids(&p.replicas),
                join_ids(&p.isr),
                opt(p.log_start_offset),
                opt(p.high_watermark),
            ]
        })
        .collect();
    s += &render_table(&["partition", "leader", "epoch", "replicas", "isr", "log-start", "high-watermark"], &rows);
    s.push('\n');
    let rows: Vec<Vec<String>> = configs
        .iter()
        .map(|c| {
            let value = match (&c.value, c.sensitive) {
                (_, true) => "(sensitive)".to_owned(),
                (Some(v), false) => v.clone(),
                (None, false) => "(null)".to_owned(),
            };
            vec![c.name.clone(), value, c.source.to_string(), c.is_default.to_string()]
        })
        .collect();
    s += &render_table(&["config", "value", "source", "is-default"], &rows);
    s
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let (pb, template) = match total {
        Some(t) => (ProgressBar::new(t), "{bar:40} {human_pos}/{human_len} records ({per_sec:0}, eta {eta})"),
        None => (ProgressBar::new_spinner(), "{spinner} {human_pos} records ({per_sec:0})"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Produce delivery counters fed by the batch callback.
#[derive(Default)]
struct ProduceStats {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

async fn run_produce(a: ProduceArgs) -> anyhow::Result<()> {
    let client = Client::connect(&a.conn.bootstrap).await?;
    let info = client.refresh_topic(&a.topic).await?;
    if let Some(p) = a.partition
        && info.partition(p).is_none()
    {
        return Err(Error::UnknownPartition { topic: a.topic.clone(), partition: p }.into());
    }
    let stats = Arc::new(ProduceStats::default());
    let cb_stats = stats.clone();
    let callback: BatchCallback = Arc::new(move |d: &BatchDelivery<'_>| {
        let n = d.tokens.len() as u64;
        match d.result {
            Ok(_) => {
                cb_stats.ok.fetch_add(n, Ordering::AcqRel);
            }
            Err(e) => {
                cb_stats.failed.fetch_add(n, Ordering::AcqRel);
                let mut first = cb_stats.first_error.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert_with(|| e.to_string());
            }
        }
    });
    let config = ProducerConfig {
        acks: a.acks,
        compression: a.compression,
        batch_size: usize::try_from(a.batch_size).unwrap_or(usize::MAX),
        linger: Duration::from_millis(a.linger_ms),
        keyless: Keyless::Sticky,
        idempotent: idempotence_with(a.idempotence, a.acks),
        ..ProducerConfig::default()
    };
    let producer = Producer::with_callback(client, config, callback);
    let topic = StrBytes::from_string(a.topic.clone());
    let headers: Vec<(StrBytes, Option<Bytes>)> = a.headers.iter().map(|(k, v)| (StrBytes::from_string(k.clone()), Some(Bytes::from(v.clone())))).collect();
    let separator = a.key_separator.as_deref().map(str::as_bytes).filter(|s| !s.is_empty());
    let progress = (std::io::stderr().is_terminal() && !std::io::stdin().is_terminal()).then(|| progress_bar(None));

    let started = Instant::now();
    let mut stdin = tokio::io::stdin();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut line_no: u64 = 0;
    let mut eof = false;
    let mut scanned = 0usize;
    while !eof {
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        if stdin.read_buf(&mut buf).await.context("cannot read stdin")? == 0 {
            eof = true;
        }
        loop {
            let newline = buf[scanned..].iter().position(|&b| b == b'\n').map(|i| scanned + i);
            let line = match newline {
                Some(i) => {
                    let mut line = buf.split_to(i + 1).freeze();
                    line.truncate(i);
                    scanned = 0;
                    line
                }
                None if eof && !buf.is_empty() => {
                    scanned = 0;
                    buf.split().freeze()
                }
                None => {
                    scanned = buf.len();
                    break;
                }
            };
            line_no += 1;
            let (key, value) = match separator {
                Some(sep) => match line.windows(sep.len()).position(|w| w == sep) {
                    Some(i) => (Some(line.slice(..i)), line.slice(i + sep.len()..)),
                    None => {
                        let _ = producer.close().await;
                        anyhow::bail!("line {line_no} has no key separator \"{}\"", a.key_separator.as_deref().unwrap_or_default());
                    }
                },
                None => (None, line),
            };
            let record = ProducerRecord { topic: topic.clone(), partition: a.partition, key, value: Some(value), headers: headers.clone(), timestamp: None };
            producer.send_tracked(record, 0).await?;
            if let Some(pb) = &progress
                && line_no.is_multiple_of(1024)
            {
                pb.set_position(line_no);
            }
        }
    }
    producer.close().await?;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let ok = stats.ok.load(Ordering::Acquire);
    let failed = stats.failed.load(Ordering::Acquire);
    let secs = started.elapsed().as_secs_f64();
    if failed > 0 {
        let first = stats.first_error.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or_default();
        anyhow::bail!("failed to produce {failed} of {} records to topic \"{}\": {first}", ok + failed, a.topic);
    }
    eprintln!("produced {ok} records to topic \"{}\" in {secs:.2} s", a.topic);
    Ok(())
}

/// A compiled `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Key,
    Value,
    Offset,
    Partition,
    Timestamp,
    Headers,
}

impl Format {
    /// Parses a format string.
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => match chars.next() {
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('o') => Piece::Offset,
                    Some('p') => Piece::Partition,
                    Some('t') => Piece::Timestamp,
                    Some('h') => Piece::Headers,
                    Some('%') => {
                        lit.push(b'%');
                        continue;
                    }
                    other => {
                        let d = other.map(String::from).unwrap_or_default();
                        return Err(format!("unknown directive \"%{d}\" (use %k %v %o %p %t %h or %%)"));
                    }
                },
                '\\' => {
                    match chars.next() {
                        Some('n') => lit.push(b'\n'),
                        Some('t') => lit.push(b'\t'),
                        Some('r') => lit.push(b'\r'),
                        Some('\\') => lit.push(b'\\'),
                        Some(other) => {
                            lit.push(b'\\');
                            let mut b = [0; 4];
                            lit.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                        }
                        None => lit.push(b'\\'),
                    }
                    continue;
                }
                other => {
                    let mut b = [0; 4];
                    lit.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                    continue;
                }
            };
            if !lit.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        Ok(Format { pieces })
    }

    /// Writes `r` followed by a newline.
    pub fn write(&self, out: &mut impl Write, r: &ConsumedRecord) -> std::io::Result<()> {
        for p in &self.pieces {
            match p {
                Piece::Literal(l) => out.write_all(l)?,
                Piece::Key => out.write_all(r.key.as_deref().unwrap_or_default())?,
                Piece::Value => out.write_all(r.value.as_deref().unwrap_or_default())?,
                Piece::Offset => write!(out, "{}", r.offset)?,
                Piece::Partition => write!(out, "{}", r.partition)?,
                Piece::Timestamp => write!(out, "{}", r.timestamp)?,
                Piece::Headers => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.write_all(b",")?;
                        }
                        out.write_all(k.as_bytes())?;
                        if let Some(v) = v {
                            out.write_all(b"=")?;
                            out.write_all(v)?;
                        }
                    }
                }
            }
        }
        out.write_all(b"\n")
    }
}

async fn run_consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let client = Client::connect(&a.conn.bootstrap).await?;
    let start = match (a.from_beginning, a.offset) {
        (_, Some(o)) => StartOffset::At(o),
        (true, None) => StartOffset::Earliest,
        (false, None) => StartOffset::Latest,
    };
    let mut config = ConsumerConfig::default();
    if let Some(t) = a.timeout_ms {
        config.max_wait = config.max_wait.min(Duration::from_millis(t.max(1)));
    }
    let partitions = a.partition.map(|p| vec![p]);
    let mut consumer = Consumer::new(client, &a.topic, partitions.as_deref(), start, config).await?;
    if a.max_messages == Some(0) {
        return Ok(());
    }
    let progress = (std::io::stderr().is_terminal() && !std::io::stdout().is_terminal()).then(|| progress_bar(a.max_messages));
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout());
    let timeout = a.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut count: u64 = 0;
    let mut broken_pipe = false;
    let mut records = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result: anyhow::Result<()> = 'outer: loop {
        records.clear();
        tokio::select! {
            r = consumer.poll_into(&mut records) => {
                if let Err(e) = r {
                    break Err(e.into());
                }
            }
            _ = &mut ctrl_c => break Ok(()),
        }
        let now = Instant::now();
        if !records.is_empty() {
            last_record = now;
        }
        for r in &records {
            if let Err(e) = a.format.write(&mut out, r) {
                broken_pipe = e.kind() == std::io::ErrorKind::BrokenPipe;
                break 'outer io_result(e);
            }
            count += 1;
            if a.max_messages.is_some_and(|m| count >= m) {
                break 'outer Ok(());
            }
        }
        if let Err(e) = out.flush() {
            broken_pipe = e.kind() == std::io::ErrorKind::BrokenPipe;
            break io_result(e);
        }
        if let Some(pb) = &progress {
            pb.set_position(count);
        }
        if timeout.is_some_and(|t| now.duration_since(last_record) >= t) {
            break Ok(());
        }
    };
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    if broken_pipe {
        // Nothing more can be written; the buffer's remains are discarded.
        return Ok(());
    }
    let flushed = out.flush();
    result?;
    if let Err(e) = flushed {
        return io_result(e);
    }
    eprintln!("consumed {count} records");
    Ok(())
}

/// A closed stdout (`| head`) ends the command quietly; other write errors fail it.
fn io_result(e: std::io::Error) -> anyhow::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(anyhow::Error::new(e).context("cannot write to stdout")) }
}

/// Whether to produce idempotently: `flag`, or by default exactly when acks=all (the Java
/// client's rule). Asking for idempotence with other acks is a usage error (exit 2).
fn idempotence_with(flag: Option<bool>, acks: Acks) -> bool {
    match flag {
        Some(true) if acks != Acks::All => {
            clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("--idempotence true needs --acks all (got --acks {acks})\n")).exit()
        }
        Some(on) => on,
        None => acks == Acks::All,
    }
}

async fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    let mode = match (a.produce_only, a.consume_only) {
        (true, _) => BenchMode::ProduceOnly,
        (_, true) => BenchMode::ConsumeOnly,
        _ => BenchMode::Both,
    };
    if mode != BenchMode::ConsumeOnly && a.producers == 0 {
        anyhow::bail!("--producers must be at least 1 (or use --consume-only)");
    }
    if mode == BenchMode::ConsumeOnly && a.consumers == 0 {
        anyhow::bail!("--consumers must be at least 1 with --consume-only");
    }
    let config = BenchConfig {
        bootstrap: a.conn.bootstrap,
        topic: a.topic,
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        producers: a.producers,
        consumers: a.consumers,
        record_size: usize::try_from(a.record_size).unwrap_or(usize::MAX),
        acks: a.acks,
        batch_size: usize::try_from(a.batch_size).unwrap_or(usize::MAX),
        linger: Duration::from_millis(a.linger_ms),
        max_in_flight: usize::try_from(a.max_in_flight).unwrap_or(1),
        idempotent: a.idempotence && idempotence_with(Some(true), a.acks),
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        compression: a.compression,
        mode,
        progress: std::io::stderr().is_terminal(),
    };
    let report = bench::run(config).await?;
    let mut out = std::io::stdout();
    if a.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    out.flush()?;
    if report.produce_errors > 0 {
        anyhow::bail!("{} records failed to produce; first error: {}", report.produce_errors, report.first_error.unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kafka_protocol::indexmap::IndexMap;

    #[derive(clap::Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        TestCli::try_parse_from(std::iter::once("sediment").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn drain_plan_spreads_replicas_and_keeps_positions() {
        let placement = vec![("t".to_string(), 0, vec![4, 1, 2]), ("t".to_string(), 1, vec![1, 4, 3]), ("u".to_string(), 0, vec![2, 3])];
        let plan = drain_plan(&placement, &[1, 2, 3, 4], 4).expect("plan");
        assert_eq!(plan, vec![("t".to_string(), 0, vec![3, 1, 2]), ("t".to_string(), 1, vec![1, 2, 3])]);
        // nowhere to go: every other broker already holds the partition
        assert!(drain_plan(&[("t".to_string(), 0, vec![1, 2, 3])], &[1, 2, 3], 3).is_err());
    }

    #[test]
    fn command_definitions_are_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn parses_topic_create() {
        let cmd = parse(&[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=1000",
            "--config",
            "cleanup.policy=compact",
            "--bootstrap",
            "h:1",
        ])
        .unwrap();
        let ClientCommand::Topic(TopicArgs { command: TopicCommand::Create(c) }) = cmd else { panic!("{cmd:?}") };
        assert_eq!(c.name, "orders");
        assert_eq!(c.partitions, 3);
        assert_eq!(c.replication_factor, -1);
        assert_eq!(c.configs, vec![("retention.ms".into(), "1000".into()), ("cleanup.policy".into(), "compact".into())]);
        assert_eq!(c.conn.bootstrap, "h:1");
        assert!(parse(&["topic", "create", "x", "--config", "novalue"]).is_err());
        assert!(parse(&["topic", "create", "x", "--config", "=v"]).is_err());
    }

    #[test]
    fn parses_produce_and_consume() {
        let cmd = parse(&["produce", "--topic", "t", "--acks", "-1", "--compression", "zstd", "--header", "a=b"]).unwrap();
        let ClientCommand::Produce(p) = cmd else { panic!() };
        assert_eq!(p.acks, Acks::All);
        assert_eq!(p.compression, Codec::Zstd);
        assert_eq!(p.headers, vec![("a".into(), "b".into())]);
        assert!(parse(&["produce", "--topic", "t", "--acks", "2"]).is_err());
        let cmd = parse(&["consume", "--topic", "t", "--from-beginning", "--format", "%k=%v"]).unwrap();
        let ClientCommand::Consume(c) = cmd else { panic!() };
        assert!(c.from_beginning);
        assert!(parse(&["consume", "--topic", "t", "--from-beginning", "--offset", "3"]).is_err());
        assert!(parse(&["consume", "--topic", "t", "--format", "%x"]).is_err());
        let e = parse(&["consume", "--topic", "t", "--offset", "-3"]).unwrap_err().to_string();
        assert!(e.contains("-3 is not in 0.."), "{e}");
        assert!(parse(&["topic", "alter", "t"]).is_err(), "alter needs --set or --delete");
        assert!(parse(&["topic", "alter", "t", "--delete", "retention.ms"]).is_ok());
        assert!(parse(&["bench", "--consume-only", "--produce-only"]).is_err());
        assert!(parse(&["bench", "--duration", "0"]).is_err());
        let cmd = parse(&["bench", "--acks", "0", "--json", "--duration", "0.5"]).unwrap();
        let ClientCommand::Bench(b) = cmd else { panic!() };
        assert_eq!(b.acks, Acks::None);
        assert_eq!(b.duration, 0.5);
    }

    #[test]
    fn format_renders_every_directive() {
        let f = Format::parse("%p:%o@%t %k=%v [%h] 100%%\\t.").unwrap();
        let mut headers = IndexMap::new();
        headers.insert(StrBytes::from_static_str("a"), Some(Bytes::from_static(b"1")));
        headers.insert(StrBytes::from_static_str("b"), None);
        let r = ConsumedRecord { partition: 2, offset: 7, timestamp: 99, key: Some(Bytes::from_static(b"k")), value: None, headers };
        let mut out = Vec::new();
        f.write(&mut out, &r).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "2:7@99 k= [a=1,b] 100%\t.\n");
        assert!(Format::parse("%").is_err());
        assert!(Format::parse("%z").is_err());
    }

    #[test]
    fn progress_templates_parse() {
        for t in [Some(10), None] {
            let pb = progress_bar(t);
            pb.finish_and_clear();
        }
        assert!(ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} records ({per_sec:0}, eta {eta})").is_ok());
        assert!(ProgressStyle::with_template("{spinner} {human_pos} records ({per_sec:0})").is_ok());
    }

    #[test]
    fn tables_align_columns() {
        let t = render_table(&["a", "long-header"], &[vec!["wide-cell".into(), "x".into()]]);
        assert_eq!(t, "a          long-header\nwide-cell  x\n");
    }
}
