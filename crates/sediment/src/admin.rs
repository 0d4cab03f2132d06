//! The admin HTTP listener (`admin_listen`, default 127.0.0.1:9644).
//!
//! | path | answer |
//! |---|---|
//! | `GET /health` | 200 while the process runs (liveness) |
//! | `GET /ready` | 503 until logs are recovered, metadata is loaded and the Kafka listener is bound (in a cluster also until the metadata is applied and every replica placed here is in sync with its leader); 200 while serving; 503 again once shutdown starts |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /v1/cluster` | JSON: node id, cluster id, version, listeners, uptime, readiness |
//! | `GET /v1/topics`, `GET /v1/topics/{name}` | JSON: topics with partitions, offsets, sizes (503 until the broker is open) |
//!
//! It is bound before the broker opens its logs, so probes get answers during a long recovery.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use sediment_broker::Broker;

/// What the admin endpoints read.
pub struct Admin {
    started: Instant,
    started_at_ms: u128,
    node_id: i32,
    kafka_listen: SocketAddr,
    advertised: String,
    admin_listen: SocketAddr,
    raft_listen: SocketAddr,
    storage: Value,
    broker: OnceLock<Arc<Broker>>,
    /// While the broker serves but is not ready yet (a cluster member catching up): why.
    not_ready: std::sync::Mutex<Option<String>>,
}

impl Admin {
    pub fn new(cfg: &crate::config::ServeConfig, admin_listen: SocketAddr) -> Arc<Admin> {
        Arc::new(Admin {
            started: Instant::now(),
            started_at_ms: sediment_log::clock::now_ms().max(0) as u128,
            node_id: cfg.broker.node_id,
            kafka_listen: cfg.broker.listen,
            advertised: format!("{}:{}", cfg.broker.advertised_host, cfg.broker.advertised_port),
            admin_listen,
            raft_listen: cfg.raft_listen,
            storage: json!({
                "data_dir": cfg.broker.data_dir.display().to_string(),
                "object_store": format!("{:?}", cfg.object_store),
                "cache_dir": cfg.cache_dir.display().to_string(),
                "cache_size_bytes": cfg.cache_size,
                "cache_memory_bytes": cfg.tiering.cache_memory,
                "cold_read_max_bytes_per_sec": cfg.tiering.cold_read_max_bytes_per_sec,
                "fsync": format!("{:?}", cfg.broker.fsync).to_lowercase(),
            }),
            broker: OnceLock::new(),
            not_ready: std::sync::Mutex::new(None),
        })
    }

    /// What keeps a serving broker from being ready (None once it is).
    pub fn set_not_ready_reason(&self, why: Option<String>) {
        *self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// The broker finished opening (logs recovered, metadata loaded).
    pub fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/topics", get(topics))
        .route("/v1/topics/{name}", get(topic))
        .with_state(admin)
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    if let Err(e) = axum::serve(listener, router(admin)).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    if sediment_telemetry::is_ready() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let catching_up = admin.not_ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let why = match admin.broker.get() {
        None => "not ready: recovering logs and loading metadata\n".to_string(),
        Some(b) if b.is_shutting_down() => "not ready: shutting down\n".to_string(),
        Some(_) => match catching_up {
            Some(why) => format!("not ready: {why}\n"),
            None => "not ready: starting the kafka listener\n".to_string(),
        },
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, sediment_telemetry::PROMETHEUS_CONTENT_TYPE)], sediment_telemetry::render()).into_response()
}

async fn cluster(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let broker = admin.broker.get();
    Json(json!({
        "node_id": admin.node_id,
        "cluster_id": broker.map(|b| b.cluster_id().to_string()),
        "version": env!("CARGO_PKG_VERSION"),
        "ready": sediment_telemetry::is_ready(),
        "uptime_seconds": admin.started.elapsed().as_secs_f64(),
        "started_at_ms": admin.started_at_ms as u64,
        "listeners": {
            "kafka": admin.kafka_listen.to_string(),
            "kafka_advertised": admin.advertised,
            "admin": admin.admin_listen.to_string(),
            "raft": admin.raft_listen.to_string(),
        },
        "brokers": [{ "node_id": admin.node_id, "kafka": admin.advertised }],
        "storage": admin.storage,
        "topics": broker.map(|b| b.topics().len()),
    }))
}

fn not_open() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "the broker is still recovering its logs" }))).into_response()
}

fn topic_json(node_id: i32, t: &sediment_broker::broker::Topic) -> Value {
    let mut size = 0u64;
    let partitions: Vec<Value> = t
        .hosted()
        .map(|p| {
            let (start, leo, bytes, segments) = p.with_log(|l| (l.log_start_offset(), l.log_end_offset(), l.size_bytes(), l.segments().len()));
            size += bytes;
            json!({
                "partition": p.index,
                "leader": p.replica().map_or(Some(node_id as u64), |r| r.leader()).map_or(-1, |l| l as i64),
                "leader_epoch": p.leader_epoch(),
                "log_start_offset": start,
                "high_watermark": p.high_watermark(),
                "log_end_offset": leo,
                "size_bytes": bytes,
                "segments": segments,
            })
        })
        .collect();
    json!({
        "name": t.name,
        "id": t.id.to_string(),
        "partition_count": t.partitions.len(),
        "size_bytes": size,
        "configs": t.config.overrides,
        "partitions": partitions,
    })
}

async fn topics(State(admin): State<Arc<Admin>>) -> Response {
    let Some(b) = admin.broker.get() else { return not_open() };
    let topics: Vec<Value> = b.topics().iter().map(|t| topic_json(admin.node_id, t)).collect();
    Json(json!({ "topics": topics })).into_response()
}

async fn topic(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    let Some(b) = admin.broker.get() else { return not_open() };
    match b.topic(&name) {
        Some(t) => Json(topic_json(admin.node_id, &t)).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("topic \"{name}\" does not exist") }))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_before_and_after_the_broker_opens() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::config::ServeArgs { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
        let cfg = crate::config::load(&args).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = Admin::new(&cfg, addr);
        tokio::spawn(serve(listener, admin.clone()));

        assert_eq!(get(addr, "/health").await.0, 200);
        assert_eq!(get(addr, "/ready").await.0, 503);
        assert_eq!(get(addr, "/v1/topics").await.0, 503);
        let (code, body) = get(addr, "/v1/cluster").await;
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["node_id"], 1);
        assert!(v["cluster_id"].is_null());

        let (_tx, rx) = tokio::sync::watch::channel(false);
        let broker = Broker::open(sediment_broker::BrokerConfig::for_tests(dir.path()), rx).unwrap();
        broker.create_topic("t", 2, 1, Default::default(), false).unwrap();
        admin.set_broker(broker.clone());
        let (code, body) = get(addr, "/v1/topics").await;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["topics"][0]["name"], "t");
        assert_eq!(v["topics"][0]["partitions"].as_array().unwrap().len(), 2);
        assert_eq!(v["topics"][0]["partitions"][1]["log_end_offset"], 0);
        assert_eq!(get(addr, "/v1/topics/t").await.0, 200);
        assert_eq!(get(addr, "/v1/topics/nope").await.0, 404);
        let (code, body) = get(addr, "/v1/cluster").await;
        assert_eq!(code, 200);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["cluster_id"], broker.cluster_id());
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("sediment_requests_total") || body.contains("sediment_connections_total"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);
    }
}
