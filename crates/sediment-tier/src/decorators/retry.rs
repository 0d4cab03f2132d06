//! Retries with short per-attempt timeouts and exponential backoff with full jitter.
//!
//! `object_store`'s own retry (10 attempts over up to 3 minutes) suits batch jobs, not a Fetch
//! that a consumer waits on: the S3 client is built with its retries off and this decorator owns
//! the policy for every backend alike. An attempt's deadline is `request_timeout` plus the time
//! the payload takes at `min_throughput`, so a 64 MiB part is not cut off while a 4 MiB GET
//! against a dead endpoint fails within seconds. Bodies of GETs are read inside the attempt, so a
//! connection that stalls mid-body is retried too.
//!
//! Only failures that can succeed on a second try are retried: network errors, timeouts, 5xx
//! and throttling (`object_store::Error::Generic`). A missing object, a failed precondition or
//! bad credentials come back at once.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result, UploadPart,
};
use rand::{Rng, SeedableRng};

use super::{buffer_get, generic};
use crate::stats::TierStats;

/// How [`RetryStore`] retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles up to `max_backoff` (full jitter).
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Deadline of one attempt without payload (HEAD, DELETE, LIST, small GET/PUT).
    pub request_timeout: Duration,
    /// Bytes per second an attempt is allowed for its payload on top of `request_timeout`.
    pub min_throughput: u64,
    /// Seed of the jitter (deterministic in tests).
    pub seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            min_throughput: 8 << 20,
            seed: 0x5ed1_3e47,
        }
    }
}

impl RetryPolicy {
    fn deadline(&self, payload: u64) -> Duration {
        self.request_timeout + Duration::from_secs_f64(payload as f64 / self.min_throughput.max(1) as f64)
    }
}

pub struct RetryStore {
    core: Arc<Core>,
}

struct Core {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    rng: Mutex<rand::rngs::StdRng>,
    stats: Arc<TierStats>,
}

impl std::fmt::Debug for RetryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RetryStore({:?}, {})", self.core.policy, self.core.inner)
    }
}

impl std::fmt::Display for RetryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Retry({})", self.core.inner)
    }
}

/// `true` for failures a second attempt can fix.
pub(crate) fn retryable(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. } | object_store::Error::JoinError { .. })
}

impl RetryStore {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy, stats: Arc<TierStats>) -> RetryStore {
        let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(policy.seed));
        RetryStore { core: Arc::new(Core { inner, policy, rng, stats }) }
    }
}

impl Core {
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.policy.base_backoff.saturating_mul(1u32 << attempt.min(16)).min(self.policy.max_backoff);
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        cap.mul_f64(rng.random_range(0.0..=1.0))
    }

    async fn run<T, F, Fut>(&self, what: &str, payload: u64, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = self.policy.deadline(payload);
        let mut attempt = 0u32;
        loop {
            let res = match tokio::time::timeout(deadline, op()).await {
                Ok(r) => r,
                Err(_) => Err(generic("retry", format!("{what}: no answer within {deadline:?}"))),
            };
            match res {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && attempt + 1 < self.policy.max_attempts => {
                    let wait = self.backoff(attempt);
                    attempt += 1;
                    self.stats.retry();
                    tracing::debug!(what, attempt, backoff_ms = wait.as_millis() as u64, error = %crate::error::flatten(&e), "retrying object store request");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn range_len(r: &Option<GetRange>) -> u64 {
    match r {
        Some(GetRange::Bounded(r)) => r.end.saturating_sub(r.start),
        // unknown size: allow for a chunk-sized body
        _ => 8 << 20,
    }
}

#[async_trait]
impl ObjectStore for RetryStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let c = &self.core;
        let len = payload.content_length() as u64;
        c.run(location.as_ref(), len, || c.inner.put_opts(location, payload.clone(), opts.clone())).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let c = &self.core;
        let upload = c.run(location.as_ref(), 0, || c.inner.put_multipart_opts(location, opts.clone())).await?;
        Ok(Box::new(TimeoutUpload { inner: upload, policy: c.policy.clone(), location: location.to_string() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let c = &self.core;
        let len = range_len(&options.range);
        let head = options.head;
        c.run(location.as_ref(), len, || async {
            let r = c.inner.get_opts(location, options.clone()).await?;
            if head {
                return Ok(r);
            }
            Ok(buffer_get(r).await?.0)
        })
        .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let c = &self.core;
        let len = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        c.run(location.as_ref(), len, || c.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let c = self.core.clone();
        locations
            .map(move |loc| {
                let c = c.clone();
                async move {
                    let loc = loc?;
                    c.run(loc.as_ref(), 0, || c.inner.delete(&loc)).await?;
                    Ok(loc)
                }
            })
            .buffered(8)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.core.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.core.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let c = &self.core;
        c.run("list", 0, || c.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let c = &self.core;
        c.run(from.as_ref(), 0, || c.inner.copy_opts(from, to, options.clone())).await
    }
}

/// A multipart upload with deadlines on each part and on completion. Parts are not retried: a
/// part cannot be re-sent under its number through `MultipartUpload`, so a failed part fails the
/// upload and the uploader starts over (same key, same bytes, so nothing is duplicated).
#[derive(Debug)]
struct TimeoutUpload {
    inner: Box<dyn MultipartUpload>,
    policy: RetryPolicy,
    location: String,
}

#[async_trait]
impl MultipartUpload for TimeoutUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let deadline = self.policy.deadline(data.content_length() as u64);
        let location = self.location.clone();
        let fut = self.inner.put_part(data);
        Box::pin(async move {
            tokio::time::timeout(deadline, fut).await.unwrap_or_else(|_| Err(generic("retry", format!("{location}: part upload timed out after {deadline:?}"))))
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let deadline = self.policy.deadline(0) * 4;
        tokio::time::timeout(deadline, self.inner.complete())
            .await
            .unwrap_or_else(|_| Err(generic("retry", format!("{}: completing the upload timed out", self.location))))
    }

    async fn abort(&mut self) -> Result<()> {
        tokio::time::timeout(self.policy.deadline(0), self.inner.abort())
            .await
            .unwrap_or_else(|_| Err(generic("retry", format!("{}: aborting the upload timed out", self.location))))
    }
}
