//! The instrumentation one produce request goes through in `sediment-broker` (server.rs,
//! produce.rs), replayed without the broker: the request span (created, fields recorded when
//! enabled, entered, error code recorded, closed), the per-API counter and latency histogram,
//! the produce latency histogram and the topic's byte and record counters.

use std::time::{Duration, Instant};

use criterion::Criterion;
use sediment_telemetry::{OtlpSettings, Protocol, TelemetryConfig, TraceParent, setup::SamplerSetting, setup::SignalExport};
use tracing::field::Empty;

pub fn run(sampler: Option<f64>, name: &str) {
    let mut otlp = OtlpSettings::off();
    if let Some(ratio) = sampler {
        // Nothing listens on the default endpoint: the batch processor's thread fails its exports
        // (off the measured path); what is measured is the request thread's cost.
        otlp.traces = Some(SignalExport { protocol: Protocol::HttpProtobuf, endpoint: "http://127.0.0.1:4318".into() });
        otlp.sampler = SamplerSetting::Ratio(ratio);
    }
    let cfg = TelemetryConfig { log_format: Default::default(), otlp, instance_id: None };
    let guard = sediment_telemetry::init(&cfg, None).expect("telemetry");
    let m = sediment_telemetry::metrics();
    let api = m.api("Produce");
    let topic = m.topic("bench");
    let client_id = String::from("bench-client");
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    c.bench_function(name, |b| {
        b.iter(|| {
            let started = Instant::now();
            let span = if !sediment_telemetry::sample_request() {
                tracing::Span::none()
            } else {
                tracing::info_span!(
                target: sediment_telemetry::REQUEST_TARGET,
                "kafka.request",
                otel.name = "Produce",
                otel.kind = "server",
                otel.status_code = Empty,
                messaging.system = "kafka",
                kafka.api = "Produce",
                kafka.api_key = 0i16,
                kafka.api_version = 9i16,
                kafka.correlation_id = 7i32,
                kafka.client_id = client_id.as_str(),
                client.address = %peer,
                messaging.destination.name = Empty,
                kafka.partition_count = Empty,
                kafka.bytes = Empty,
                kafka.acks = Empty,
                kafka.error_code = Empty,
                )
            };
            if !span.is_disabled() {
                span.record("messaging.destination.name", "bench");
                span.record("kafka.partition_count", 1i64);
                span.record("kafka.bytes", 16384i64);
                span.record("kafka.acks", 1i16);
            }
            {
                let _e = span.enter();
                // the append: bytes and records in, and the fsync's trace parent
                topic.produced(16384, 160);
                std::hint::black_box(TraceParent::current());
            }
            if !span.is_disabled() {
                span.record("kafka.error_code", 0i16);
            }
            let elapsed = started.elapsed();
            api.record(elapsed);
            m.produce_latency(1, elapsed);
            drop(span);
        })
    });
    c.final_summary();
    guard.shutdown();
}
