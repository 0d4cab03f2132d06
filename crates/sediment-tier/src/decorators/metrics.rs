//! Counts every request that reaches the backend (retries included: that is what the bucket
//! bills) by kind, with bytes moved and latency, into [`TierStats`].

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    UploadPart,
};

use crate::stats::{OpKind, TierStats};

#[derive(Debug)]
pub struct MetricsStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<TierStats>,
}

impl MetricsStore {
    pub fn new(inner: Arc<dyn ObjectStore>, stats: Arc<TierStats>) -> MetricsStore {
        MetricsStore { inner, stats }
    }
}

impl std::fmt::Display for MetricsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metrics({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for MetricsStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let len = payload.content_length() as u64;
        let t = Instant::now();
        let r = self.inner.put_opts(location, payload, opts).await;
        self.stats.request(OpKind::Put, 0, len, t.elapsed(), r.is_ok());
        r
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let t = Instant::now();
        let r = self.inner.put_multipart_opts(location, opts).await;
        // creating a multipart upload is a POST; count it with the parts
        self.stats.request(OpKind::PutPart, 0, 0, t.elapsed(), r.is_ok());
        Ok(Box::new(MetricsUpload { inner: r?, stats: self.stats.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            OpKind::Head
        } else if options.range.is_some() {
            OpKind::GetRange
        } else {
            OpKind::Get
        };
        let t = Instant::now();
        let r = self.inner.get_opts(location, options).await;
        let read = match &r {
            Ok(g) if op != OpKind::Head => g.range.end.saturating_sub(g.range.start),
            _ => 0,
        };
        self.stats.request(op, read, 0, t.elapsed(), r.is_ok());
        r
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let t = Instant::now();
        let r = self.inner.get_ranges(location, ranges).await;
        let read = r.as_ref().map(|v| v.iter().map(|b| b.len() as u64).sum()).unwrap_or(0);
        self.stats.request(OpKind::GetRange, read, 0, t.elapsed(), r.is_ok());
        r
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let stats = self.stats.clone();
        let t = Instant::now();
        self.inner.delete_stream(locations).inspect(move |r| stats.request(OpKind::Delete, 0, 0, t.elapsed(), r.is_ok())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.stats.request(OpKind::List, 0, 0, std::time::Duration::ZERO, true);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.stats.request(OpKind::List, 0, 0, std::time::Duration::ZERO, true);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let t = Instant::now();
        let r = self.inner.list_with_delimiter(prefix).await;
        self.stats.request(OpKind::List, 0, 0, t.elapsed(), r.is_ok());
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.copy_opts(from, to, options).await;
        self.stats.request(OpKind::Copy, 0, 0, t.elapsed(), r.is_ok());
        r
    }
}

#[derive(Debug)]
struct MetricsUpload {
    inner: Box<dyn MultipartUpload>,
    stats: Arc<TierStats>,
}

#[async_trait]
impl MultipartUpload for MetricsUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let len = data.content_length() as u64;
        let stats = self.stats.clone();
        let fut = self.inner.put_part(data);
        Box::pin(async move {
            let t = Instant::now();
            let r = fut.await;
            stats.request(OpKind::PutPart, 0, len, t.elapsed(), r.is_ok());
            r
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let t = Instant::now();
        let r = self.inner.complete().await;
        self.stats.request(OpKind::PutPart, 0, 0, t.elapsed(), r.is_ok());
        r
    }

    async fn abort(&mut self) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.abort().await;
        self.stats.request(OpKind::Delete, 0, 0, t.elapsed(), r.is_ok());
        r
    }
}
