//! The S3 client: configuration from the standard environment, one store per
//! (bucket, encryption), a small runtime for its async I/O, and error
//! classification.
//!
//! Configuration (read when a bucket is first used): `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or
//! `AWS_DEFAULT_REGION`, default `us-east-1`) and the other `AWS_*` keys
//! object_store knows; `S3_ENDPOINT_URL` (or AWS's own `AWS_ENDPOINT_URL`)
//! points at MinIO, Ceph, R2 or a local test server with path-style
//! addressing (plain `http://` allowed there). Credentials live only inside the client: nothing here logs or
//! formats them, and error messages carry the request URL and the
//! server's reply, never the signature.
//!
//! Failing fast: every request has a connect timeout
//! (`PRAVAH_S3_CONNECT_TIMEOUT_SECS`, 5) and a total timeout
//! (`PRAVAH_S3_TIMEOUT_SECS`, 60); transient failures (5xx, throttling,
//! resets, refused connections) are retried with exponential backoff at
//! most `PRAVAH_S3_MAX_RETRIES` (3) times within
//! `PRAVAH_S3_RETRY_TIMEOUT_SECS` (15). An unreachable endpoint thus fails
//! a request within seconds with a message naming it, never hangs.
//!
//! Threads: tasks run on the rayon pool and the listing on its own thread,
//! none of them async. They call [`block_on`], which runs the request on a
//! dedicated two-thread tokio runtime (reqwest needs one) and waits. How
//! many requests run at once is therefore bounded: one object per worker
//! thread at a time, plus the parts of one multipart upload in flight
//! ([`crate::storage::s3_write`]), plus the heads a stream-reading task
//! fetches ahead per batch ([`crate::storage::objects::prefetch`]).
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::error::{EngineError, Result};
use crate::results::{FailureKind, FileFailure};

/// Server-side encryption of written objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Encryption {
    /// The bucket's default.
    #[default]
    Default,
    /// SSE-S3: keys managed by the store (`AES256`).
    SseS3,
    /// SSE-KMS with this key id (empty: the account's default KMS key).
    SseKms(String),
}

impl Encryption {
    /// Parses a mode name (`""`/`none`, `AES256`/`sse-s3`, `aws:kms`/`sse-kms`)
    /// and KMS key id, as the contract and `PRAVAH_S3_SSE` spell them.
    pub fn parse(mode: &str, kms_key_id: &str) -> Result<Self> {
        match mode.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "default" if kms_key_id.is_empty() => Ok(Encryption::Default),
            "aes256" | "sse-s3" => Ok(Encryption::SseS3),
            "" | "aws:kms" | "sse-kms" => Ok(Encryption::SseKms(kms_key_id.trim().to_owned())),
            other => Err(EngineError::InvalidArgument(format!(
                "unknown server-side encryption {other:?}: use sse-s3 (AES256) or sse-kms (aws:kms, with a key id)"
            ))),
        }
    }

    /// The engine's default from `PRAVAH_S3_SSE` and `PRAVAH_S3_SSE_KMS_KEY_ID`.
    pub fn from_env() -> Result<Self> {
        Self::parse(
            &std::env::var("PRAVAH_S3_SSE").unwrap_or_default(),
            &std::env::var("PRAVAH_S3_SSE_KMS_KEY_ID").unwrap_or_default(),
        )
    }
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs_f64(
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(default as f64),
    )
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pravah-s3")
            .enable_all()
            .build()
            .expect("building the S3 I/O runtime")
    })
}

/// Runs an S3 future to completion from a blocking (non-async) thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// Spawns a future on the S3 runtime (for work that outlives one call).
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(future)
}

/// Stores built so far, by bucket and encryption; built once, shared by
/// all calls (each holds a connection pool).
type StoreCache = Mutex<HashMap<(String, Encryption), Arc<AmazonS3>>>;

/// The client for `bucket`, writing with `encryption`.
pub fn store(bucket: &str, encryption: &Encryption) -> Result<Arc<AmazonS3>> {
    static STORES: OnceLock<StoreCache> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    let key = (bucket.to_owned(), encryption.clone());
    if let Some(s) = stores.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(s.clone());
    }
    let built = Arc::new(build(bucket, encryption)?);
    stores
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, built.clone());
    Ok(built)
}

fn build(bucket: &str, encryption: &Encryption) -> Result<AmazonS3> {
    // reqwest is built without a TLS provider of its own: use ring, the one
    // the gRPC server links. Fails only if a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_owned());
    builder = builder.with_region(region);
    let mut options = ClientOptions::new()
        .with_connect_timeout(env_secs("PRAVAH_S3_CONNECT_TIMEOUT_SECS", 5))
        .with_timeout(env_secs("PRAVAH_S3_TIMEOUT_SECS", 60));
    let endpoint = ["S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok());
    if let Some(endpoint) = endpoint {
        let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
        if !endpoint.is_empty() {
            // Plain http only where asked for (a local MinIO or test server).
            options = options.with_allow_http(endpoint.starts_with("http://"));
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
    }
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: std::env::var("PRAVAH_S3_MAX_RETRIES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(3),
        retry_timeout: env_secs("PRAVAH_S3_RETRY_TIMEOUT_SECS", 15),
    };
    builder = builder.with_client_options(options).with_retry(retry);
    // The encryption config key's enum is not exported; its name parses.
    let sse_key = || {
        "aws_server_side_encryption"
            .parse::<AmazonS3ConfigKey>()
            .map_err(|e| EngineError::Internal(format!("object_store SSE key: {e}")))
    };
    builder = match encryption {
        Encryption::Default => builder,
        Encryption::SseS3 => builder.with_config(sse_key()?, "AES256"),
        Encryption::SseKms(key) if key.is_empty() => builder.with_config(sse_key()?, "aws:kms"),
        Encryption::SseKms(key) => builder.with_sse_kms_encryption(key),
    };
    builder.build().map_err(|e| EngineError::Storage {
        kind: FailureKind::InvalidData,
        message: format!("cannot configure the S3 client for bucket {bucket:?}: {e}"),
    })
}

/// The error and its sources as one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// `text` with an S3 error document (`<Error><Code>…</Error>`) cut to its
/// code and message: the whole XML (resource, RequestId, HostId) swamped
/// the one line a failed file gets.
fn without_error_xml(text: &str) -> String {
    let Some(start) = text.find("<?xml").or_else(|| text.find("<Error>")) else {
        return text.to_owned();
    };
    let end = text[start..]
        .find("</Error>")
        .map_or(text.len(), |i| start + i + "</Error>".len());
    let document = &text[start..end];
    let field = |name: &str| {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let from = document.find(&open)? + open.len();
        let to = document[from..].find(&close)? + from;
        Some(document[from..to].trim().to_owned())
    };
    let short = match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => return text.to_owned(),
    };
    format!("{}{short}{}", &text[..start], &text[end..])
}

fn unreachable_in(err: &(dyn std::error::Error + 'static)) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            if matches!(http.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout) {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// Classifies an object store error met while `doing` something, as a
/// kind and a sentence naming the cause and, where one exists, the fix.
pub fn classify(err: &object_store::Error, doing: &str) -> FileFailure {
    let detail = without_error_xml(&chain(err));
    let (kind, why) = match err {
        object_store::Error::NotFound { .. } => (FailureKind::NotFound, "no such object"),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => (
            FailureKind::PermissionDenied,
            "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy",
        ),
        _ if detail.contains("NoSuchBucket") => (
            FailureKind::NotFound,
            "the bucket does not exist",
        ),
        _ if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden"]
            .iter()
            .any(|m| detail.contains(m)) => (
            FailureKind::PermissionDenied,
            "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy",
        ),
        _ if unreachable_in(err) => (
            FailureKind::Io,
            "the S3 endpoint cannot be reached: check S3_ENDPOINT_URL and the network",
        ),
        _ => (FailureKind::Io, "the object store request failed"),
    };
    FileFailure::new(kind, format!("{why} while {doing} ({detail})"))
}

/// As [`classify`], for a failure of the whole request.
pub fn request_error(err: &object_store::Error, doing: &str) -> EngineError {
    let f = classify(err, doing);
    EngineError::Storage {
        kind: f.kind,
        message: f.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_document_is_cut_to_its_code_and_message() {
        let raw = "Error performing GET http://h/b/k in 1ms: Server returned non-2xx status code: \
                   404 Not Found: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code>\
                   <Message>The specified bucket does not exist</Message><BucketName>b</BucketName>\
                   <RequestId>X1</RequestId><HostId>Y2</HostId></Error>";
        assert_eq!(
            without_error_xml(raw),
            "Error performing GET http://h/b/k in 1ms: Server returned non-2xx status code: \
             404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(without_error_xml("plain words"), "plain words");
        assert_eq!(
            without_error_xml("x <Error>no code</Error>"),
            "x <Error>no code</Error>"
        );
    }

    #[test]
    fn encryption_names_parse() {
        assert_eq!(Encryption::parse("", "").unwrap(), Encryption::Default);
        assert_eq!(Encryption::parse("AES256", "").unwrap(), Encryption::SseS3);
        assert_eq!(Encryption::parse("sse-s3", "").unwrap(), Encryption::SseS3);
        assert_eq!(
            Encryption::parse("aws:kms", "k1").unwrap(),
            Encryption::SseKms("k1".into())
        );
        assert_eq!(
            Encryption::parse("", "k1").unwrap(),
            Encryption::SseKms("k1".into())
        );
        assert!(Encryption::parse("rot13", "").is_err());
    }
}
