//! Span conventions and context hand-over.
//!
//! Request spans use target [`REQUEST_TARGET`], spans of slow storage work [`STORAGE_TARGET`];
//! both are `INFO`. They are exported as OTLP spans when tracing is on and left out of log lines
//! by default (see [`log_filter`](crate::setup::log_filter)).
//!
//! Background work done on behalf of a request (the group-commit fsync runs in the partition's
//! flusher task) cannot be a `tracing` child of the request span: the span may be closed by
//! then, and one fsync serves many requests. [`TraceParent`] carries the OpenTelemetry context of
//! the request that started the work, so the background span joins that request's trace.

use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Target of the per-request span (`kafka.request`).
pub const REQUEST_TARGET: &str = "sediment::request";
/// Target of spans around slow storage work (fsync; later S3 requests and cache misses).
pub const STORAGE_TARGET: &str = "sediment::storage";

/// The trace context of a span, to parent spans created elsewhere. Empty (and free) when
/// tracing is off.
#[derive(Clone, Default)]
pub struct TraceParent(Option<opentelemetry::Context>);

impl TraceParent {
    /// The context of the current span, if tracing is on and a span is current.
    #[inline]
    pub fn current() -> TraceParent {
        if !crate::setup::traces_enabled() {
            return TraceParent(None);
        }
        let span = tracing::Span::current();
        if span.is_disabled() {
            return TraceParent(None);
        }
        TraceParent(Some(span.context()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Makes `span` a child of this context (no-op when empty or when `span` is disabled).
    pub fn adopt(&self, span: &tracing::Span) {
        if let Some(cx) = &self.0
            && !span.is_disabled()
        {
            let _ = span.set_parent(cx.clone());
        }
    }
}

impl std::fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "TraceParent(set)" } else { "TraceParent(empty)" })
    }
}
