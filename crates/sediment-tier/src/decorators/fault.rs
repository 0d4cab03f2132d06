//! A fault-injecting store for tests: added latency, a failure rate, a switch that makes the
//! whole store unreachable (an outage), and "fail the next N requests". Randomness comes from a
//! seeded RNG, so a failing test replays the same faults.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use object_store::{ObjectStoreExt, memory::InMemory, path::Path};
//! use sediment_tier::decorators::{FaultControl, FaultStore};
//! let control = FaultControl::new(7);
//! let store = FaultStore::new(Arc::new(InMemory::new()), control.clone());
//! control.set_outage(true);
//! assert!(store.put(&Path::from("a"), "x".into()).await.is_err());
//! control.set_outage(false);
//! assert!(store.put(&Path::from("a"), "x".into()).await.is_ok());
//! # });
//! ```

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    UploadPart,
};
use rand::{Rng, SeedableRng};

use super::generic;
use crate::stats::OpKind;

/// The knobs of a [`FaultStore`], shared with the test that turns them.
pub struct FaultControl {
    outage: AtomicBool,
    /// Failure probability in parts per million.
    error_ppm: AtomicU32,
    latency_us: AtomicU64,
    fail_next: AtomicU32,
    /// When set, faults apply only to these kinds of request.
    only: Mutex<Option<Vec<OpKind>>>,
    rng: Mutex<rand::rngs::StdRng>,
    /// Requests seen, by kind (faulted ones included).
    seen: [AtomicU64; 8],
    injected: AtomicU64,
}

impl std::fmt::Debug for FaultControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultControl")
            .field("outage", &self.outage.load(Ordering::Relaxed))
            .field("error_ppm", &self.error_ppm.load(Ordering::Relaxed))
            .field("latency_us", &self.latency_us.load(Ordering::Relaxed))
            .finish()
    }
}

impl FaultControl {
    pub fn new(seed: u64) -> Arc<FaultControl> {
        Arc::new(FaultControl {
            outage: AtomicBool::new(false),
            error_ppm: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            fail_next: AtomicU32::new(0),
            only: Mutex::new(None),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            seen: Default::default(),
            injected: AtomicU64::new(0),
        })
    }

    /// Every request fails (after the latency) while on.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    /// Each request fails with this probability (0.0..=1.0).
    pub fn set_error_rate(&self, p: f64) {
        self.error_ppm.store((p.clamp(0.0, 1.0) * 1e6) as u32, Ordering::SeqCst);
    }

    /// Added to every request before it runs.
    pub fn set_latency(&self, d: Duration) {
        self.latency_us.store(d.as_micros() as u64, Ordering::SeqCst);
    }

    /// The next `n` requests fail.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Restrict faults to some kinds of request (`None`: all).
    pub fn only(&self, kinds: Option<Vec<OpKind>>) {
        *self.only.lock().unwrap_or_else(|e| e.into_inner()) = kinds;
    }

    pub fn seen(&self, op: OpKind) -> u64 {
        self.seen[op as usize].load(Ordering::Relaxed)
    }

    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Applies latency, then decides whether this request fails.
    async fn before(&self, op: OpKind, what: &str) -> Result<()> {
        self.seen[op as usize].fetch_add(1, Ordering::Relaxed);
        let latency = self.latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        let applies = self.only.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_none_or(|k| k.contains(&op));
        if !applies {
            return Ok(());
        }
        let fail = if self.outage.load(Ordering::SeqCst) {
            Some("injected outage")
        } else if self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            Some("injected failure")
        } else {
            let ppm = self.error_ppm.load(Ordering::Relaxed);
            let roll = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random_range(0..1_000_000u32);
            (roll < ppm).then_some("injected random failure")
        };
        match fail {
            Some(why) => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                Err(generic("fault", format!("{why}: {} {what}", op.as_str())))
            }
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    control: Arc<FaultControl>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, control: Arc<FaultControl>) -> FaultStore {
        FaultStore { inner, control }
    }
}

impl std::fmt::Display for FaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fault({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.control.before(OpKind::Put, location.as_ref()).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.control.before(OpKind::PutPart, location.as_ref()).await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultUpload { inner, control: self.control.clone(), location: location.to_string() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            OpKind::Head
        } else if options.range.is_some() {
            OpKind::GetRange
        } else {
            OpKind::Get
        };
        self.control.before(op, location.as_ref()).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.control.before(OpKind::GetRange, location.as_ref()).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let control = self.control.clone();
        let inner = self.inner.clone();
        locations
            .then(move |loc| {
                let control = control.clone();
                let inner = inner.clone();
                async move {
                    let loc = loc?;
                    control.before(OpKind::Delete, loc.as_ref()).await?;
                    let mut s = inner.delete_stream(futures::stream::once(async move { Ok(loc) }).boxed());
                    match s.next().await {
                        Some(r) => r,
                        None => Err(generic("fault", "delete yielded nothing")),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let control = self.control.clone();
        let mut inner = Some(self.inner.list(prefix));
        futures::stream::once(async move { control.before(OpKind::List, "list").await })
            .flat_map(move |r| match (r, inner.take()) {
                (Ok(()), Some(s)) => s,
                (Err(e), _) => futures::stream::once(async move { Err(e) }).boxed(),
                (Ok(()), None) => futures::stream::empty().boxed(),
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.control.before(OpKind::List, "list").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.control.before(OpKind::Copy, from.as_ref()).await?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    control: Arc<FaultControl>,
    location: String,
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let control = self.control.clone();
        let location = self.location.clone();
        let fut = self.inner.put_part(data);
        Box::pin(async move {
            control.before(OpKind::PutPart, &location).await?;
            fut.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.control.before(OpKind::PutPart, &self.location).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
