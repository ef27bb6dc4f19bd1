//! Reading objects: a ranged-GET reader for tasks that read only part of a
//! file, an object as a [`RangeSource`] for tasks that read by ranges
//! (extract, through a [`super::blocks::BlockReader`]), and a streamed
//! download for tasks that need a local file.
//!
//! [`RangedReader`] is `Read + Seek`: each `read` is one ranged GET of
//! exactly the bytes asked for (clamped to the object's size), so
//! csv-header, which reads 16 KiB and grows its read only while the header
//! is incomplete, fetches a few KiB of a multi-gigabyte object. Nothing is
//! buffered beyond the caller's buffer, so callers should read in large
//! pieces; [`prefetch_heads`] fetches the start of many objects at once so
//! such readers rarely wait on a request. [`download`] streams an object into a local file chunk by chunk
//! (memory stays flat whatever the object's size).
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use super::blocks::RangeSource;
use super::s3;
use crate::metrics::METRICS;
use crate::results::{FailureKind, FileFailure};

/// An io::Error carrying a classified store failure.
fn io_error(err: &object_store::Error, doing: &str) -> std::io::Error {
    let f = s3::classify(err, doing);
    let kind = match f.kind {
        FailureKind::NotFound => std::io::ErrorKind::NotFound,
        FailureKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, f.message)
}

/// Counts one GET and the bytes it returned (the engine's S3 metrics).
fn count_get(bytes: usize) {
    METRICS.s3_get_requests.inc();
    METRICS.s3_get_bytes.inc_by(bytes as u64);
}

/// One ranged GET, counted.
async fn get_range(
    store: &AmazonS3,
    path: &ObjectPath,
    range: std::ops::Range<u64>,
) -> object_store::Result<Bytes> {
    let bytes = store.get_range(path, range).await?;
    count_get(bytes.len());
    Ok(bytes)
}

/// The size of `key`: `known` (from the listing) or a HEAD request.
fn object_size(
    store: &AmazonS3,
    path: &ObjectPath,
    known: Option<u64>,
) -> Result<u64, FileFailure> {
    match known {
        Some(n) => Ok(n),
        None => Ok(s3::block_on(store.head(path))
            .map_err(|e| s3::classify(&e, "reading the object's size"))?
            .size),
    }
}

/// An object read by ranged GETs, one request per [`RangeSource::fetch`].
pub struct ObjectRanges {
    store: Arc<AmazonS3>,
    path: ObjectPath,
    size: u64,
}

impl ObjectRanges {
    /// Opens `key`; with `known_size` (from the listing) no request is made
    /// until the first fetch, otherwise a HEAD learns the size.
    pub fn open(
        store: Arc<AmazonS3>,
        key: &str,
        known_size: Option<u64>,
    ) -> Result<Self, FileFailure> {
        let path = object_path(key)?;
        let size = object_size(&store, &path, known_size)?;
        Ok(ObjectRanges { store, path, size })
    }
}

impl RangeSource for ObjectRanges {
    fn size(&self) -> u64 {
        self.size
    }

    /// `PRAVAH_S3_READ_BLOCK_BYTES` (4 MiB, at least 64 KiB): large enough
    /// that request latency is paid rarely, small enough that a reader per
    /// extracting thread stays cheap in memory.
    fn block_size(&self) -> u64 {
        static BLOCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *BLOCK.get_or_init(|| {
            std::env::var("PRAVAH_S3_READ_BLOCK_BYTES")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(4 << 20)
                .max(64 << 10)
        })
    }

    fn fetch(&self, range: std::ops::Range<u64>) -> std::io::Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        s3::block_on(get_range(&self.store, &self.path, range))
            .map_err(|e| io_error(&e, "reading the object"))
    }
}

/// The store path of a key that [`super::S3Root::key`] produced.
pub fn object_path(key: &str) -> Result<ObjectPath, FileFailure> {
    ObjectPath::parse(key).map_err(|e| {
        FileFailure::new(
            FailureKind::OutsideRoot,
            format!("object key {key:?} cannot be addressed safely: {e}"),
        )
    })
}

/// A `Read + Seek` view of one object through ranged GETs.
pub struct RangedReader {
    store: Arc<AmazonS3>,
    path: ObjectPath,
    pos: u64,
    size: u64,
    /// The object's first bytes, if fetched ahead ([`prefetch_heads`]).
    head: Bytes,
}

impl RangedReader {
    /// Opens `key`; with `known_size` (from the listing) no request is made
    /// until the first read, otherwise a HEAD learns the size.
    pub fn open(
        store: Arc<AmazonS3>,
        key: &str,
        known_size: Option<u64>,
    ) -> Result<Self, FileFailure> {
        let path = object_path(key)?;
        let size = object_size(&store, &path, known_size)?;
        Ok(RangedReader {
            store,
            path,
            pos: 0,
            size,
            head: Bytes::new(),
        })
    }

    /// Serves reads of the object's start from `head` (fetched ahead).
    pub fn with_head(mut self, head: Bytes) -> Self {
        self.head = head;
        self
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        if self.pos < self.head.len() as u64 {
            let from = self.pos as usize;
            let n = buf.len().min(self.head.len() - from);
            buf[..n].copy_from_slice(&self.head[from..from + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let end = self.size.min(self.pos + buf.len() as u64);
        let bytes = s3::block_on(get_range(&self.store, &self.path, self.pos..end))
            .map_err(|e| io_error(&e, "reading the object"))?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangedReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = super::blocks::seek_target(self.pos, self.size, to)?;
        Ok(self.pos)
    }
}

/// Fetches the first `bytes` of each `(key, size)` concurrently, at most
/// `concurrency` requests at a time, in input order. Why: a task reading
/// only an object's start (csv-header) is bound by request latency, not by
/// CPU; the worker threads alone would keep only one request each in
/// flight. A failure is per object and surfaces when that object is read.
pub fn prefetch_heads(
    store: &Arc<AmazonS3>,
    objects: &[(String, u64)],
    bytes: u64,
    concurrency: usize,
) -> Vec<Option<Bytes>> {
    let fetches = objects.iter().map(|(key, size)| {
        let store = store.clone();
        let (key, end) = (key.clone(), bytes.min(*size));
        async move {
            let path = object_path(&key).ok()?;
            if end == 0 {
                return Some(Bytes::new());
            }
            get_range(&store, &path, 0..end).await.ok()
        }
    });
    s3::block_on(
        futures::stream::iter(fetches)
            .buffered(concurrency.max(1))
            .collect(),
    )
}

/// Streams object `key` into `out`; returns the bytes written.
/// Stops between network chunks once `cancel` is raised, so a cancelled job
/// does not finish downloading a large object first.
pub fn download(
    store: &AmazonS3,
    key: &str,
    out: &mut std::fs::File,
    cancel: &AtomicBool,
) -> Result<u64, FileFailure> {
    let path = object_path(key)?;
    s3::block_on(async {
        let result = store
            .get(&path)
            .await
            .map_err(|e| s3::classify(&e, "downloading the object"))?;
        count_get(0);
        let mut stream = result.into_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s3::classify(&e, "downloading the object"))?;
            if cancel.load(Ordering::Relaxed) {
                return Err(FileFailure::new(
                    FailureKind::Io,
                    "the job was cancelled while the object was downloaded",
                ));
            }
            // A local write of at most one network chunk; fine on this runtime.
            out.write_all(&chunk)
                .map_err(|e| crate::output::write_failure(&e, "staging the object locally"))?;
            written += chunk.len() as u64;
            METRICS.s3_get_bytes.inc_by(chunk.len() as u64);
        }
        Ok(written)
    })
}
