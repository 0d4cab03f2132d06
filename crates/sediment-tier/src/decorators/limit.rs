//! A cap on concurrent requests and, optionally, on requests per second. The permit is taken
//! outside the retry decorator, so a request backing off during an outage keeps its permit and
//! the pressure on a struggling bucket does not grow with the number of waiting callers.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct LimitedStore {
    inner: Arc<dyn ObjectStore>,
    max_concurrency: usize,
    permits: Arc<Semaphore>,
    rate: Option<Arc<Mutex<Bucket>>>,
}

/// Token bucket: `per_sec` tokens a second, at most `per_sec` banked.
struct Bucket {
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long to wait for one.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec).min(self.per_sec.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

impl std::fmt::Debug for LimitedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LimitedStore({}, {})", self.max_concurrency, self.inner)
    }
}

impl std::fmt::Display for LimitedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limit({}, {})", self.max_concurrency, self.inner)
    }
}

impl LimitedStore {
    /// At most `max_concurrency` requests at once; with `requests_per_sec`, also a rate.
    pub fn new(inner: Arc<dyn ObjectStore>, max_concurrency: usize, requests_per_sec: Option<f64>) -> LimitedStore {
        let rate = requests_per_sec.filter(|r| *r > 0.0).map(|per_sec| Arc::new(Mutex::new(Bucket { per_sec, tokens: per_sec, at: Instant::now() })));
        LimitedStore { inner, max_concurrency: max_concurrency.max(1), permits: Arc::new(Semaphore::new(max_concurrency.max(1))), rate }
    }

    async fn admit(permits: Arc<Semaphore>, rate: Option<Arc<Mutex<Bucket>>>) -> OwnedSemaphorePermit {
        if let Some(rate) = rate {
            loop {
                let wait = rate.lock().unwrap_or_else(|e| e.into_inner()).take();
                match wait {
                    None => break,
                    Some(d) => tokio::time::sleep(d).await,
                }
            }
        }
        // the semaphore is never closed
        match permits.acquire_owned().await {
            Ok(p) => p,
            Err(_) => unreachable!("semaphore closed"),
        }
    }

    async fn permit(&self) -> OwnedSemaphorePermit {
        Self::admit(self.permits.clone(), self.rate.clone()).await
    }
}

#[async_trait]
impl ObjectStore for LimitedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let _p = self.permit().await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        // one permit for the whole upload: its parts are already bounded by the uploader
        let p = self.permit().await;
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(LimitedUpload { inner: upload, _permit: p }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let _p = self.permit().await;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let _p = self.permit().await;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let inner = self.inner.clone();
        Self::admit(self.permits.clone(), self.rate.clone())
            .map(move |p| {
                inner.delete_stream(locations).map(move |r| {
                    let _keep = &p;
                    r
                })
            })
            .into_stream()
            .flatten()
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let _p = self.permit().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let _p = self.permit().await;
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct LimitedUpload {
    inner: Box<dyn MultipartUpload>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl MultipartUpload for LimitedUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
