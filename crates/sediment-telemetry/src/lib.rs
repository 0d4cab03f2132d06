//! Sediment's telemetry: the metrics registry, the `tracing` subscriber and OpenTelemetry export.
//!
//! * [`metrics`] — every instrument, bound handles for the hot paths, scrape-time partition
//!   gauges through [`StorageSource`], and [`render`] for `GET /metrics`.
//! * [`setup`] — `OTEL_*` settings ([`OtlpSettings`]), log format, [`init`] of the subscriber
//!   and exporters, and the [`TelemetryGuard`] that flushes them at exit.
//! * [`trace`] — span targets and the hand-over of a trace context to background tasks.
//!
//! Dependencies point one way: this crate knows nothing of the broker; the broker implements
//! [`StorageSource`] and records into the handles it gets from [`metrics()`].

pub mod metrics;
pub mod setup;
pub mod trace;

pub use metrics::{
    ApiMetrics, Metrics, ObjectStoreOp, PROMETHEUS_CONTENT_TYPE, PartitionStats, RaftGroup, StorageSource, TopicMetrics, is_ready, kafka_error_name, metrics,
    render, set_ready,
};
pub use setup::{InitError, LogFormat, OtlpSettings, Protocol, TelemetryConfig, TelemetryGuard, init, sample_request, traces_enabled};
pub use trace::{REQUEST_TARGET, STORAGE_TARGET, TraceParent};
