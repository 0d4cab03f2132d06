//! `ObjectStore` decorators, stacked by [`crate::store::decorate`]:
//!
//! ```text
//! LimitedStore     concurrency (and optional request-rate) cap, permit held across retries
//!  └ RetryStore    per-attempt timeouts sized for the fetch path, exponential backoff + jitter
//!     └ MetricsStore  every attempt counted by kind, bytes and latency (what the bucket bills)
//!        └ [FaultStore]  tests only: latency, error rates, outage on/off
//!           └ AmazonS3 | LocalFileSystem | InMemory
//! ```
//!
//! Each wraps an `Arc<dyn ObjectStore>` and is itself an `ObjectStore`, so the uploader and the
//! reader see one store and never retry, count or throttle by themselves.

mod fault;
mod limit;
mod metrics;
mod retry;

pub use fault::{FaultControl, FaultStore};
pub use limit::LimitedStore;
pub use metrics::MetricsStore;
pub use retry::{RetryPolicy, RetryStore};

use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetResult, GetResultPayload};

/// Reads a whole `GetResult` body into memory and hands back an equivalent result whose payload
/// is that one buffer (so a timeout or retry can cover the body, not only the headers).
pub(crate) async fn buffer_get(mut r: GetResult) -> object_store::Result<(GetResult, Bytes)> {
    let meta = r.meta.clone();
    let range = r.range.clone();
    let attributes = r.attributes.clone();
    let extensions = std::mem::take(&mut r.extensions);
    let bytes = r.bytes().await?;
    let b2 = bytes.clone();
    let result = GetResult { payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(b2) }).boxed()), meta, range, attributes, extensions };
    Ok((result, bytes))
}

/// A generic error naming the decorator, as `object_store` builds its own.
pub(crate) fn generic(store: &'static str, msg: impl Into<String>) -> object_store::Error {
    let msg: String = msg.into();
    object_store::Error::Generic { store, source: msg.into() }
}
