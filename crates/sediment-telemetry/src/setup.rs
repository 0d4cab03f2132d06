//! Start-up of logs, traces and metrics export.
//!
//! * Logs: `tracing` events to stderr, text or JSON, filtered by `RUST_LOG` (default `info`).
//! * Traces: when an OTLP endpoint is configured, an OpenTelemetry layer turns the request spans
//!   (target [`REQUEST_TARGET`](crate::REQUEST_TARGET)) and their children into OTLP spans,
//!   sampled by `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`. Without an endpoint there is no
//!   such layer, and no layer enables the request spans (the log layer leaves them out unless
//!   `RUST_LOG` names their target), so creating one costs a cached callsite check.
//! * Metrics: always served as Prometheus text on `/metrics`; with an endpoint also pushed over
//!   OTLP every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 000).
//!
//! Everything is read from the standard `OTEL_*` variables and validated by
//! [`OtlpSettings::from_env`] before any socket opens, so a bad value is a config error.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::{REQUEST_TARGET, STORAGE_TARGET};

static TRACES_ON: AtomicBool = AtomicBool::new(false);
/// Head sampling of request spans: a request is traced when a random u64 is below this
/// (`u64::MAX` = all). Set by [`init`] from the root sampler of `OTEL_TRACES_SAMPLER`.
static REQUEST_SAMPLE_BELOW: AtomicU64 = AtomicU64::new(u64::MAX);

/// `true` when spans are exported over OTLP. Code that would do extra work only for a trace
/// (capturing a parent context for a background task) checks this first.
#[inline]
pub fn traces_enabled() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// Whether to create the span of a new request. Request spans are roots (Kafka carries no trace
/// context), so the configured root sampler is applied here, before the span exists: a request
/// that is not sampled gets no span at all and costs what it costs with export off. The SDK's
/// sampler then records server-kind root spans unconditionally (see [`HeadSampled`]).
/// With export off it returns `true`: the subscriber's filters decide (a cached check).
#[inline]
pub fn sample_request() -> bool {
    if !traces_enabled() {
        return true;
    }
    let below = REQUEST_SAMPLE_BELOW.load(Ordering::Relaxed);
    match below {
        0 => false,
        u64::MAX => true,
        _ => next_random() < below,
    }
}

/// xorshift64*: a few ns, per thread, good enough to pick 1% of requests.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            #[allow(clippy::disallowed_methods)] // a sampler seed, not a timestamp
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
            let t = std::thread::current().id();
            let h = { use std::hash::{Hash, Hasher}; let mut h = std::collections::hash_map::DefaultHasher::new(); t.hash(&mut h); h.finish() };
            (seed ^ h) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// The SDK sampler: server-kind root spans (requests) were head-sampled by [`sample_request`]
/// before they were created, so they are recorded; every other span follows the configured
/// sampler (children of a sampled request are sampled through their parent).
#[derive(Debug, Clone)]
pub struct HeadSampled(pub Sampler);

impl opentelemetry_sdk::trace::ShouldSample for HeadSampled {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        use opentelemetry::trace::TraceContextExt;
        let is_root = parent_context.is_none_or(|cx| !cx.has_active_span());
        if is_root && *span_kind == opentelemetry::trace::SpanKind::Server {
            return opentelemetry_sdk::trace::SamplingResult {
                decision: opentelemetry_sdk::trace::SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.0.should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// Log line format (`log_format` config key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("\"{other}\" is not text or json")),
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf` (default): POST to `<endpoint>/v1/traces` and `/v1/metrics`.
    HttpProtobuf,
    /// `grpc`: the OTLP gRPC services (tonic).
    Grpc,
}

/// Export of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalExport {
    pub protocol: Protocol,
    /// The endpoint as configured (for the start-up log line).
    pub endpoint: String,
}

/// Trace sampler (`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerSetting {
    /// Probability that a root span (a request) is sampled.
    pub fn root_ratio(self) -> f64 {
        match self {
            SamplerSetting::AlwaysOn | SamplerSetting::ParentBasedAlwaysOn => 1.0,
            SamplerSetting::AlwaysOff | SamplerSetting::ParentBasedAlwaysOff => 0.0,
            SamplerSetting::Ratio(r) | SamplerSetting::ParentBasedRatio(r) => r,
        }
    }

    fn sampler(self) -> Sampler {
        match self {
            SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
            SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
            SamplerSetting::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerSetting::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerSetting::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerSetting::ParentBasedRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

/// What the `OTEL_*` environment asks for, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    pub traces: Option<SignalExport>,
    pub metrics: Option<SignalExport>,
    pub sampler: SamplerSetting,
    pub service_name: String,
}

/// Default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "sediment";

impl OtlpSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<OtlpSettings, String> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads the variables through `var` (tests pass a map). Errors name the variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<OtlpSettings, String> {
        let disabled = match var("OTEL_SDK_DISABLED").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!("OTEL_SDK_DISABLED: \"{other}\" is not true or false"));
            }
        };
        let signal = |name: &str, exporter_var: &str, none_values: &[&str]| -> Result<Option<SignalExport>, String> {
            match var(exporter_var).as_deref() {
                None | Some("otlp") => {}
                Some(v) if none_values.contains(&v) => return Ok(None),
                Some(other) => {
                    return Err(format!("{exporter_var}: \"{other}\" is not one of otlp, {}", none_values.join(", ")));
                }
            }
            let endpoint_var = format!("OTEL_EXPORTER_OTLP_{name}_ENDPOINT");
            let (endpoint, from) = match var(&endpoint_var) {
                Some(e) => (e, endpoint_var),
                None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(e) => (e, "OTEL_EXPORTER_OTLP_ENDPOINT".to_string()),
                    None => return Ok(None),
                },
            };
            if endpoint.starts_with("https://") {
                return Err(format!("{from}: \"{endpoint}\": this build exports OTLP over plain http only (send to a local collector)"));
            }
            let rest = endpoint.strip_prefix("http://").ok_or_else(|| format!("{from}: \"{endpoint}\" is not an http:// URL"))?;
            let authority = rest.split('/').next().unwrap_or("");
            if authority.is_empty() {
                return Err(format!("{from}: \"{endpoint}\" has no host"));
            }
            if let Some((_, port)) = authority.rsplit_once(':')
                && !port.ends_with(']')
                && port.parse::<u16>().is_err()
            {
                return Err(format!("{from}: \"{endpoint}\" has a bad port"));
            }
            let protocol_var = format!("OTEL_EXPORTER_OTLP_{name}_PROTOCOL");
            let (protocol, pvar) = match var(&protocol_var) {
                Some(p) => (p, protocol_var),
                None => (var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()), "OTEL_EXPORTER_OTLP_PROTOCOL".to_string()),
            };
            let protocol = match protocol.as_str() {
                "http/protobuf" => Protocol::HttpProtobuf,
                "grpc" => Protocol::Grpc,
                other => return Err(format!("{pvar}: \"{other}\" is not http/protobuf or grpc")),
            };
            Ok(Some(SignalExport { protocol, endpoint }))
        };
        let mut traces = signal("TRACES", "OTEL_TRACES_EXPORTER", &["none"])?;
        let mut metrics = signal("METRICS", "OTEL_METRICS_EXPORTER", &["none", "prometheus"])?;
        if disabled {
            traces = None;
            metrics = None;
        }
        let ratio = || -> Result<f64, String> {
            match var("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!("OTEL_TRACES_SAMPLER_ARG: \"{a}\" is not a ratio between 0 and 1")),
                },
            }
        };
        let sampler = match var("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
            Some("always_on") => SamplerSetting::AlwaysOn,
            Some("always_off") => SamplerSetting::AlwaysOff,
            Some("traceidratio") => SamplerSetting::Ratio(ratio()?),
            Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerSetting::ParentBasedRatio(ratio()?),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER: \"{other}\" is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ));
            }
        };
        if let Some(v) = var("OTEL_METRIC_EXPORT_INTERVAL")
            && !matches!(v.trim().parse::<u64>(), Ok(n) if n > 0)
        {
            return Err(format!("OTEL_METRIC_EXPORT_INTERVAL: \"{v}\" is not a positive number of milliseconds"));
        }
        let from_attrs = var("OTEL_RESOURCE_ATTRIBUTES")
            .and_then(|a| a.split(',').find_map(|kv| kv.split_once('=').filter(|(k, _)| k.trim() == "service.name").map(|(_, v)| v.trim().to_string())));
        let service_name = var("OTEL_SERVICE_NAME").or(from_attrs).unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        Ok(OtlpSettings { traces, metrics, sampler, service_name })
    }

    /// Export off: the default when no endpoint is set.
    pub fn off() -> OtlpSettings {
        OtlpSettings { traces: None, metrics: None, sampler: SamplerSetting::ParentBasedAlwaysOn, service_name: DEFAULT_SERVICE_NAME.into() }
    }
}

/// Everything [`init`] needs.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub otlp: OtlpSettings,
    /// `service.instance.id` (the node id), if known.
    pub instance_id: Option<String>,
}

/// Failure to start telemetry (an exporter could not be built).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot build the OTLP {signal} exporter: {message}")]
    Exporter { signal: &'static str, message: String },
}

/// Keeps the exporters alive; [`shutdown`](TelemetryGuard::shutdown) flushes them.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is buffered and stops the exporters. Call outside async code (the HTTP
    /// exporter's client blocks) and, for gRPC, while the Tokio runtime still exists.
    pub fn shutdown(mut self) {
        if let Some(p) = self.tracer_provider.take()
            && let Err(e) = p.shutdown()
        {
            tracing::debug!(error = %e, "tracer provider shutdown");
        }
        crate::metrics().shutdown();
        TRACES_ON.store(false, Ordering::Relaxed);
    }
}

/// The `RUST_LOG` filter for the log output. Request and storage spans exist for tracing; they
/// stay out of log lines (and cost nothing) unless `RUST_LOG` names their targets.
pub fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let mut directives = base.to_string();
    for target in [REQUEST_TARGET, STORAGE_TARGET] {
        if !base.contains(target) {
            directives.push_str(&format!(",{target}=off"));
        }
    }
    // openraft logs routine election races ("message will be ignored because vote changed")
    // at WARN; its errors still show. Name `openraft` in RUST_LOG to see more.
    if !base.contains("openraft") {
        directives.push_str(",openraft=error");
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: ignoring RUST_LOG ({e}); logging at info");
        EnvFilter::new(format!("info,{REQUEST_TARGET}=off,{STORAGE_TARGET}=off"))
    })
}

/// Installs the global `tracing` subscriber and the metric readers. Build HTTP exporters outside
/// any Tokio runtime context; gRPC exporters need one, so pass its handle.
pub fn init(cfg: &TelemetryConfig, runtime: Option<&tokio::runtime::Handle>) -> Result<TelemetryGuard, InitError> {
    let mut resource =
        Resource::builder().with_service_name(cfg.otlp.service_name.clone()).with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(id) = &cfg.instance_id {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", id.clone()));
    }
    let resource = resource.build();

    let metric_reader = match &cfg.otlp.metrics {
        None => None,
        Some(s) => {
            let _guard = (s.protocol == Protocol::Grpc).then(|| runtime.map(|r| r.enter())).flatten();
            let builder = opentelemetry_otlp::MetricExporter::builder();
            let exporter = match s.protocol {
                Protocol::HttpProtobuf => builder.with_http().build(),
                Protocol::Grpc => builder.with_tonic().build(),
            }
            .map_err(|e| InitError::Exporter { signal: "metrics", message: e.to_string() })?;
            Some(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).build())
        }
    };
    if !crate::metrics::install(metric_reader, resource.clone()) && cfg.otlp.metrics.is_some() {
        tracing::warn!("metrics were created before telemetry start-up; OTLP metrics export is off");
    }

    let (tracer_provider, otel_layer) = match &cfg.otlp.traces {
        None => (None, None),
        Some(s) => {
            let _guard = (s.protocol == Protocol::Grpc).then(|| runtime.map(|r| r.enter())).flatten();
            let builder = opentelemetry_otlp::SpanExporter::builder();
            let exporter = match s.protocol {
                Protocol::HttpProtobuf => builder.with_http().build(),
                Protocol::Grpc => builder.with_tonic().build(),
            }
            .map_err(|e| InitError::Exporter { signal: "traces", message: e.to_string() })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(HeadSampled(cfg.otlp.sampler.sampler()))
                .with_resource(resource.clone())
                .build();
            let tracer = provider.tracer(crate::metrics::METER_NAME);
            // Spans from Sediment's own code at info and above; events inside them become span
            // events. Dependencies' spans (hyper, reqwest) stay out.
            // (`sediment` is a prefix: it covers sediment_broker, sediment_log, ... too.)
            let filter = Targets::new().with_target("sediment", tracing::Level::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_level(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_filter(filter);
            (Some(provider), Some(layer))
        }
    };
    let ratio = cfg.otlp.sampler.root_ratio();
    let below = if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * u64::MAX as f64) as u64
    };
    REQUEST_SAMPLE_BELOW.store(below, Ordering::Relaxed);
    TRACES_ON.store(tracer_provider.is_some(), Ordering::Relaxed);

    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = log_filter(rust_log.as_deref());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt_layer = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_target(false).with_filter(filter).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let _ = tracing_subscriber::registry().with(fmt_layer).with(otel_layer).try_init();
    Ok(TelemetryGuard { tracer_provider })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<OtlpSettings, String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        OtlpSettings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_means_export_off() {
        let s = settings(&[]).unwrap();
        assert_eq!(s, OtlpSettings::off());
    }

    #[test]
    fn endpoint_turns_both_signals_on() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap();
        assert_eq!(s.traces.as_ref().unwrap().protocol, Protocol::HttpProtobuf);
        assert_eq!(s.metrics.as_ref().unwrap().endpoint, "http://127.0.0.1:4318");
        assert_eq!(s.service_name, "sediment");
    }

    #[test]
    fn per_signal_settings() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ])
        .unwrap();
        assert_eq!(s.traces.unwrap().protocol, Protocol::Grpc);
        assert!(s.metrics.is_none());
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318"), ("OTEL_SDK_DISABLED", "true")]).unwrap();
        assert!(s.traces.is_none() && s.metrics.is_none());
    }

    #[test]
    fn sampler_and_service_name() {
        let s = settings(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.01")]).unwrap();
        assert_eq!(s.sampler, SamplerSetting::ParentBasedRatio(0.01));
        let s = settings(&[("OTEL_TRACES_SAMPLER", "traceidratio")]).unwrap();
        assert_eq!(s.sampler, SamplerSetting::Ratio(1.0));
        let s = settings(&[("OTEL_RESOURCE_ATTRIBUTES", "a=b,service.name=brokers")]).unwrap();
        assert_eq!(s.service_name, "brokers");
        let s = settings(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=brokers"), ("OTEL_SERVICE_NAME", "x")]).unwrap();
        assert_eq!(s.service_name, "x");
    }

    #[test]
    fn errors_name_the_variable() {
        for (vars, var) in [
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://x")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:port")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")], "OTEL_EXPORTER_OTLP_PROTOCOL"),
            (vec![("OTEL_TRACES_SAMPLER", "sometimes")], "OTEL_TRACES_SAMPLER"),
            (vec![("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")], "OTEL_TRACES_SAMPLER_ARG"),
            (vec![("OTEL_TRACES_EXPORTER", "zipkin")], "OTEL_TRACES_EXPORTER"),
            (vec![("OTEL_METRIC_EXPORT_INTERVAL", "0")], "OTEL_METRIC_EXPORT_INTERVAL"),
        ] {
            let e = settings(&vars).unwrap_err();
            assert!(e.starts_with(var), "{e}");
        }
    }

    #[test]
    fn head_sampling_ratio() {
        REQUEST_SAMPLE_BELOW.store((0.01 * u64::MAX as f64) as u64, Ordering::Relaxed);
        TRACES_ON.store(true, Ordering::Relaxed);
        let n = 200_000;
        let hits = (0..n).filter(|_| sample_request()).count();
        TRACES_ON.store(false, Ordering::Relaxed);
        REQUEST_SAMPLE_BELOW.store(u64::MAX, Ordering::Relaxed);
        assert!((1_600..2_400).contains(&hits), "{hits} of {n} sampled at 1%");
        assert_eq!(SamplerSetting::ParentBasedRatio(0.25).root_ratio(), 0.25);
        assert_eq!(SamplerSetting::ParentBasedAlwaysOff.root_ratio(), 0.0);
    }

    #[test]
    fn log_filter_keeps_request_spans_out_unless_asked() {
        let f = log_filter(None).to_string();
        assert!(f.contains("sediment::request=off"), "{f}");
        let f = log_filter(Some("debug,sediment::request=info")).to_string();
        assert!(!f.contains("sediment::request=off"), "{f}");
    }
}
