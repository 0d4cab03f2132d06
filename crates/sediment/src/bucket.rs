//! `sediment bucket init|check`: the bucket settings a Sediment deployment relies on and that
//! `object_store` cannot make, through `aws-sdk-s3` (bucket administration only; the broker never
//! links this path).
//!
//! | setting | why |
//! |---|---|
//! | the bucket exists and answers | the archive lives there |
//! | default encryption (SSE-S3, or SSE-KMS with `--kms-key-id`) | archived records are at rest in it for years |
//! | public access block (all four flags) | an archive must never become public by a policy mistake |
//! | lifecycle rule aborting incomplete multipart uploads under the prefix | a broker killed mid-upload leaves parts that cost money until aborted |
//! | create-only PUT (`If-None-Match: *`) is honoured | segment objects are written once; the uploader relies on it |
//!
//! `init` creates what is missing and leaves other lifecycle rules of the bucket in place; `check`
//! changes nothing and exits 1 when anything is missing. S3 settings come from the standard AWS
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials).

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter, PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};

/// Id of the lifecycle rule `init` owns (other rules of the bucket are kept).
const RULE_ID: &str = "sediment-abort-incomplete-multipart-uploads";

/// `sediment bucket`.
#[derive(clap::Args, Debug)]
pub struct BucketArgs {
    #[command(subcommand)]
    command: BucketCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BucketCommand {
    /// Create the bucket if needed and set encryption, the public access block and a lifecycle
    /// rule for incomplete multipart uploads
    Init(InitArgs),
    /// Verify those settings and that create-only PUTs are honoured; exit 1 if anything is missing
    Check(Target),
}

#[derive(clap::Args, Debug)]
struct Target {
    /// The object store brokers use: s3://BUCKET/PREFIX
    #[arg(long, env = "SEDIMENT_OBJECT_STORE", value_parser = parse_s3_url, value_name = "s3://BUCKET/PREFIX")]
    object_store: (String, String),
}

#[derive(clap::Args, Debug)]
struct InitArgs {
    #[command(flatten)]
    target: Target,
    /// Encrypt with this KMS key (SSE-KMS) instead of S3-managed keys (SSE-S3)
    #[arg(long, value_name = "KEY_ID")]
    kms_key_id: Option<String>,
    /// Abort multipart uploads left incomplete for this many days
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(i32).range(1..=3650))]
    abort_incomplete_after_days: i32,
}

fn parse_s3_url(v: &str) -> std::result::Result<(String, String), String> {
    let rest = v.strip_prefix("s3://").ok_or_else(|| format!("\"{v}\" is not s3://BUCKET/PREFIX (bucket settings exist only on S3)"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("s3:// needs a bucket name".into());
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// Runs `sediment bucket ...`.
pub async fn run(args: BucketArgs) -> Result<()> {
    let (target, init) = match args.command {
        BucketCommand::Init(i) => (i.target.object_store.clone(), Some(i)),
        BucketCommand::Check(t) => (t.object_store, None),
    };
    let (bucket, prefix) = target;
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let region = conf.region().map(|r| r.to_string());
    // Path-style requests: S3-compatible servers on a custom endpoint rarely resolve bucket
    // subdomains, and AWS itself still accepts them.
    let s3 = Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build());
    let b = Bucket { s3, bucket, prefix };
    match init {
        Some(i) => b.init(region.as_deref(), i.kms_key_id.as_deref(), i.abort_incomplete_after_days).await,
        None => b.check().await,
    }
}

struct Bucket {
    s3: Client,
    bucket: String,
    prefix: String,
}

/// One line of the check report.
struct Finding {
    ok: bool,
    what: &'static str,
    detail: String,
}

impl Bucket {
    fn prefix_dir(&self) -> String {
        if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) }
    }

    async fn init(&self, region: Option<&str>, kms_key: Option<&str>, days: i32) -> Result<()> {
        let name = &self.bucket;
        match self.s3.head_bucket().bucket(name).send().await {
            Ok(_) => println!("bucket {name} exists"),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                let mut req = self.s3.create_bucket().bucket(name);
                // us-east-1 is the one region that refuses an explicit location constraint
                if let Some(r) = region.filter(|r| *r != "us-east-1") {
                    req = req.create_bucket_configuration(CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(r)).build());
                }
                match req.send().await {
                    Ok(_) => println!("created bucket {name}"),
                    Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => println!("bucket {name} exists"),
                    Err(e) => return Err(sdk(e)).with_context(|| format!("cannot create bucket {name}")),
                }
            }
            Err(e) => return Err(sdk(e)).with_context(|| format!("cannot reach bucket {name}")),
        }

        let by_default = match kms_key {
            Some(k) => ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::AwsKms).kms_master_key_id(k),
            None => ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256),
        }
        .build()?;
        let encryption = ServerSideEncryptionConfiguration::builder()
            .rules(ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(by_default).build())
            .build()?;
        // Each setting is tried even when an earlier one fails (a server may lack one API).
        let mut failed: Vec<String> = Vec::new();
        let mut report = |what: &str, detail: &str, r: Result<()>| match r {
            Ok(()) => println!("{what}: {detail}"),
            Err(e) => {
                eprintln!("cannot set {what}: {e:#}");
                failed.push(what.to_string());
            }
        };
        let r = self.s3.put_bucket_encryption().bucket(name).server_side_encryption_configuration(encryption).send().await.map(|_| ()).map_err(sdk);
        report("default encryption", if kms_key.is_some() { "aws:kms" } else { "AES256" }, r);

        let r = self
            .s3
            .put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(sdk);
        report("public access block", "all four flags set", r);

        let r = self.set_lifecycle_rule(days).await;
        let detail = format!("incomplete multipart uploads under \"{}\" aborted after {days} days", self.prefix_dir());
        report("lifecycle rule", &detail, r);
        if !failed.is_empty() {
            bail!("bucket {name}: could not set {}", failed.join(", "));
        }
        println!("bucket {name} is ready; `sediment bucket check` verifies it");
        Ok(())
    }

    /// Adds (or replaces) our rule, keeping the bucket's other lifecycle rules: PUT replaces the
    /// whole configuration.
    async fn set_lifecycle_rule(&self, days: i32) -> Result<()> {
        let name = &self.bucket;
        let mut rules: Vec<LifecycleRule> = match self.s3.get_bucket_lifecycle_configuration().bucket(name).send().await {
            Ok(r) => r.rules().iter().filter(|r| r.id() != Some(RULE_ID)).cloned().collect(),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(e) => return Err(sdk(e)),
        };
        rules.push(
            LifecycleRule::builder()
                .id(RULE_ID)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix(self.prefix_dir()).build())
                .abort_incomplete_multipart_upload(AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build())
                .build()?,
        );
        self.s3
            .put_bucket_lifecycle_configuration()
            .bucket(name)
            .lifecycle_configuration(BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build()?)
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        let name = &self.bucket;
        let mut findings = Vec::new();
        if let Err(e) = self.s3.head_bucket().bucket(name).send().await {
            bail!("bucket {name} is not reachable: {}", sdk(e));
        }
        findings.push(Finding { ok: true, what: "bucket", detail: format!("{name} exists and answers") });
        findings.push(self.check_encryption().await?);
        findings.push(self.check_public_access().await?);
        findings.push(self.check_lifecycle().await?);
        findings.push(self.check_create_only_put().await?);
        let bad = findings.iter().filter(|f| !f.ok).count();
        for f in &findings {
            println!("{:<8} {:<22} {}", if f.ok { "ok" } else { "MISSING" }, f.what, f.detail);
        }
        if bad > 0 {
            bail!("bucket {name}: {bad} setting(s) missing; `sediment bucket init` sets them");
        }
        Ok(())
    }

    async fn check_encryption(&self) -> Result<Finding> {
        let what = "default encryption";
        Ok(match self.s3.get_bucket_encryption().bucket(&self.bucket).send().await {
            Ok(r) => {
                let algo = r
                    .server_side_encryption_configuration()
                    .and_then(|c| c.rules().first())
                    .and_then(|r| r.apply_server_side_encryption_by_default())
                    .map(|d| d.sse_algorithm().as_str().to_string());
                match algo {
                    Some(a) => Finding { ok: true, what, detail: a },
                    None => Finding { ok: false, what, detail: "no default rule".into() },
                }
            }
            Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => Finding { ok: false, what, detail: "not configured".into() },
            Err(e) if not_implemented(&e) => unsupported(what),
            Err(e) => return Err(sdk(e)).context("cannot read the bucket encryption"),
        })
    }

    async fn check_public_access(&self) -> Result<Finding> {
        let what = "public access block";
        Ok(match self.s3.get_public_access_block().bucket(&self.bucket).send().await {
            Ok(r) => {
                let c = r.public_access_block_configuration();
                let all = c.is_some_and(|c| {
                    c.block_public_acls() == Some(true)
                        && c.ignore_public_acls() == Some(true)
                        && c.block_public_policy() == Some(true)
                        && c.restrict_public_buckets() == Some(true)
                });
                Finding { ok: all, what, detail: if all { "all four flags set".into() } else { "some flags off".into() } }
            }
            Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => Finding { ok: false, what, detail: "not configured".into() },
            Err(e) if not_implemented(&e) => unsupported(what),
            Err(e) => return Err(sdk(e)).context("cannot read the public access block"),
        })
    }

    async fn check_lifecycle(&self) -> Result<Finding> {
        let what = "multipart lifecycle";
        let dir = self.prefix_dir();
        Ok(match self.s3.get_bucket_lifecycle_configuration().bucket(&self.bucket).send().await {
            Ok(r) => {
                // Any enabled rule whose filter covers the prefix and aborts incomplete uploads.
                let days = r.rules().iter().find_map(|rule| {
                    let enabled = *rule.status() == ExpirationStatus::Enabled;
                    let covers = rule.filter().and_then(|f| f.prefix()).is_none_or(|p| dir.starts_with(p));
                    let abort = rule.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation());
                    if enabled && covers { abort } else { None }
                });
                match days {
                    Some(d) => Finding { ok: true, what, detail: format!("incomplete uploads under \"{dir}\" aborted after {d} days") },
                    None => Finding { ok: false, what, detail: format!("no rule aborts incomplete uploads under \"{dir}\"") },
                }
            }
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Finding { ok: false, what, detail: "no lifecycle configuration".into() },
            Err(e) if not_implemented(&e) => unsupported(what),
            Err(e) => return Err(sdk(e)).context("cannot read the lifecycle configuration"),
        })
    }

    /// Writes a probe object twice with `If-None-Match: *`: the second must be refused (412).
    async fn check_create_only_put(&self) -> Result<Finding> {
        let what = "create-only PUT";
        let key = format!("{}_sediment_check/{}", self.prefix_dir(), std::process::id());
        let put = || {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_none_match("*")
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b"sediment bucket check"))
                .send()
        };
        // A probe left by an earlier, interrupted check would make the first PUT fail.
        let _ = self.s3.delete_object().bucket(&self.bucket).key(&key).send().await;
        put().await.map_err(sdk).context("cannot write a probe object")?;
        let second = put().await;
        let _ = self.s3.delete_object().bucket(&self.bucket).key(&key).send().await;
        Ok(match second {
            Err(e) if e.raw_response().is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) => {
                Finding { ok: true, what, detail: "a second create of the same key is refused".into() }
            }
            Err(e) => return Err(sdk(e)).context("cannot write a probe object"),
            Ok(_) => Finding { ok: false, what, detail: "If-None-Match is ignored: a retried upload could overwrite a segment object".into() },
        })
    }
}

/// The server does not implement this bucket API (SeaweedFS has no public access block, for
/// one): a finding, not a failure of the whole check.
fn not_implemented<E: ProvideErrorMetadata, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool {
    e.code() == Some("NotImplemented")
}

fn unsupported(what: &'static str) -> Finding {
    Finding { ok: false, what, detail: "the server does not implement it (NotImplemented)".into() }
}

/// An SDK error with its service code and message (the default Display says only "service error").
fn sdk<E, R>(e: aws_sdk_s3::error::SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.code() {
        Some(code) => anyhow::anyhow!("{code}: {}", e.message().unwrap_or("")),
        None => anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_s3_url;

    #[test]
    fn target_is_an_s3_url() {
        assert_eq!(parse_s3_url("s3://b/p/q/").unwrap(), ("b".into(), "p/q".into()));
        assert_eq!(parse_s3_url("s3://b").unwrap(), ("b".into(), String::new()));
        assert!(parse_s3_url("file:///tmp").unwrap_err().contains("s3://"));
        assert!(parse_s3_url("s3:///p").is_err());
    }
}
