//! `tier-get`: the raw-GET baseline of `benches/tiering.sh`. Reads the `.log` part of every
//! segment object under a prefix with plain `object_store` ranged GETs of `--chunk` bytes, the
//! same requests Sediment's read-through cache makes, with `--concurrency` requests in flight,
//! and prints throughput and request counts as JSON.
//!
//! ```text
//! tier-get --url s3://BUCKET/PREFIX --under topics/<topic>/ [--chunk 4194304] [--concurrency 4]
//! ```
//! S3 settings come from the standard `AWS_*` variables, as for the broker.

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use sediment_tier::StoreUrl;
use sediment_tier::segment_object::{FOOTER_LEN, Footer};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = StoreUrl::parse(&arg(&args, "--url").ok_or("--url is required")?)?;
    let under = arg(&args, "--under").ok_or("--under is required")?;
    let chunk: u64 = arg(&args, "--chunk").map_or(Ok(4 << 20), |v| v.parse())?;
    let concurrency: usize = arg(&args, "--concurrency").map_or(Ok(4), |v| v.parse())?;
    let store: Arc<dyn ObjectStore> = sediment_tier::store::backend(&url)?;

    let mut objects: Vec<(object_store::path::Path, u64)> = store
        .list(Some(&object_store::path::Path::from(under.as_str())))
        .try_filter_map(|o| async move { Ok(o.location.as_ref().ends_with(".seg").then_some((o.location, o.size))) })
        .try_collect()
        .await?;
    objects.sort();
    // each object's .log length from its footer (one small GET each, not timed)
    let mut ranges = Vec::new();
    for (key, size) in &objects {
        let tail = store.get_range(key, size - FOOTER_LEN as u64..*size).await?;
        let f = Footer::decode(&tail)?;
        let mut pos = 0;
        while pos < f.log_len {
            let end = (pos + chunk).min(f.log_len);
            ranges.push((key.clone(), pos..end));
            pos = end;
        }
    }
    let requests = ranges.len();
    let started = Instant::now();
    let bytes: u64 = futures::stream::iter(ranges)
        .map(|(key, r)| {
            let store = store.clone();
            async move { store.get_range(&key, r).await.map(|b| b.len() as u64) }
        })
        .buffered(concurrency.max(1))
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "objects": objects.len(),
            "requests": requests,
            "bytes": bytes,
            "seconds": secs,
            "mib_per_sec": bytes as f64 / secs / (1 << 20) as f64,
            "chunk": chunk,
            "concurrency": concurrency,
        })
    );
    Ok(())
}
