//! Builds the `Arc<dyn ObjectStore>` a broker uses from its `object_store` URL, and stacks the
//! decorators on it.
//!
//! * `s3://BUCKET/PREFIX`: `AmazonS3Builder::from_env()` (the standard `AWS_*` variables:
//!   `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`, ...), path-style requests (what MinIO, SeaweedFS, LocalStack and moto
//!   expect on a custom endpoint), plain HTTP only when `AWS_ALLOW_HTTP=true`, and the client's
//!   own retries off: [`RetryStore`] owns the retry policy.
//! * `file://PATH`: `LocalFileSystem` rooted at PATH (created if missing); writes are atomic
//!   (temporary file + rename). The embedded default.
//! * `memory://`: `InMemory`, for tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, RetryConfig};

use crate::decorators::{FaultControl, FaultStore, LimitedStore, MetricsStore, RetryPolicy, RetryStore};
use crate::error::{Result, TierError};
use crate::stats::TierStats;

/// Where the objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
    Memory,
}

impl StoreUrl {
    /// Parses `file://PATH`, `s3://BUCKET[/PREFIX]` or `memory://`.
    pub fn parse(v: &str) -> Result<StoreUrl> {
        if let Some(path) = v.strip_prefix("file://") {
            if path.is_empty() {
                return Err(TierError::Config("file:// needs a path".into()));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = v.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(TierError::Config("s3:// needs a bucket name".into()));
            }
            return Ok(StoreUrl::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
        }
        if v == "memory://" || v == "memory:" {
            return Ok(StoreUrl::Memory);
        }
        Err(TierError::Config(format!("\"{v}\" is not file://PATH, s3://BUCKET/PREFIX or memory://")))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::File(p) => write!(f, "file://{}", p.display()),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreUrl::Memory => f.write_str("memory://"),
        }
    }
}

/// Settings of the decorator stack.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub retry: RetryPolicy,
    /// Requests in flight at once (uploads and cold reads together).
    pub max_concurrency: usize,
    /// Optional cap on requests per second.
    pub requests_per_sec: Option<f64>,
    /// Tests: a fault injector between the metrics decorator and the backend.
    pub fault: Option<Arc<FaultControl>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { retry: RetryPolicy::default(), max_concurrency: 64, requests_per_sec: None, fault: None }
    }
}

fn env_true(name: &str) -> bool {
    std::env::var(name).map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")).unwrap_or(false)
}

/// The backend for `url`, without decorators. S3 clients are built but not contacted.
pub fn backend(url: &StoreUrl) -> Result<Arc<dyn ObjectStore>> {
    match url {
        StoreUrl::Memory => Ok(Arc::new(InMemory::new())),
        StoreUrl::File(path) => {
            std::fs::create_dir_all(path).map_err(|e| TierError::io("create object store directory", path, e))?;
            let fs = LocalFileSystem::new_with_prefix(path)
                .map_err(|e| TierError::Config(format!("file://{}: {}", path.display(), crate::error::flatten(&e))))?
                .with_automatic_cleanup(true);
            Ok(Arc::new(fs))
        }
        StoreUrl::S3 { bucket, prefix } => {
            let custom_endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"].iter().any(|v| std::env::var_os(v).is_some());
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(RetryConfig { max_retries: 0, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() })
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(Duration::from_secs(120))
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_allow_http(env_true("AWS_ALLOW_HTTP")),
                );
            if custom_endpoint {
                // MinIO-class servers answer path-style requests (http://host:port/bucket/key)
                b = b.with_virtual_hosted_style_request(false);
            }
            if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                b = b.with_region("us-east-1");
            }
            let s3 = b.build().map_err(|e| TierError::Config(format!("s3://{bucket}: {}", crate::error::flatten(&e))))?;
            if prefix.is_empty() { Ok(Arc::new(s3)) } else { Ok(Arc::new(PrefixStore::new(s3, prefix.as_str()))) }
        }
    }
}

/// Stacks the decorators: limit → retry → metrics → [fault] → backend.
pub fn decorate(backend: Arc<dyn ObjectStore>, opts: &StoreOptions, stats: Arc<TierStats>) -> Arc<dyn ObjectStore> {
    let mut s = backend;
    if let Some(control) = &opts.fault {
        s = Arc::new(FaultStore::new(s, control.clone()));
    }
    s = Arc::new(MetricsStore::new(s, stats.clone()));
    s = Arc::new(RetryStore::new(s, opts.retry.clone(), stats));
    Arc::new(LimitedStore::new(s, opts.max_concurrency, opts.requests_per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(StoreUrl::parse("memory://").ok(), Some(StoreUrl::Memory));
        assert_eq!(StoreUrl::parse("file:///tmp/x").ok(), Some(StoreUrl::File("/tmp/x".into())));
        assert_eq!(StoreUrl::parse("s3://b/p/q/").ok(), Some(StoreUrl::S3 { bucket: "b".into(), prefix: "p/q".into() }));
        assert!(StoreUrl::parse("s3:///x").is_err());
        assert!(StoreUrl::parse("gs://x").is_err());
        assert_eq!(StoreUrl::parse("s3://b/p").map(|u| u.to_string()).ok().as_deref(), Some("s3://b/p"));
    }
}
