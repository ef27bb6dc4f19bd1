//! Where files live: local directories or prefixes of an S3-compatible
//! object store (AWS S3, MinIO, Ceph, R2), behind one [`Root`] type.
//!
//! Why a layer around the tasks rather than inside them: every task reads a
//! local file by path and writes outputs atomically through
//! [`crate::output`]. Rather than teach each task a second I/O model, the
//! object store is adapted at the edges:
//! - listing an `s3://bucket/prefix` yields the same [`crate::walk::WalkEvent`]s
//!   as a directory walk, with the same filters ([`s3_list`]);
//! - a task that can read from any `Read` (csv-header) gets a ranged-GET
//!   reader that fetches only the bytes it asks for ([`s3_read`]);
//! - a task that reads by ranges (extract) gets the object as a
//!   [`blocks::RangeSource`] and reads it in place through a
//!   [`blocks::BlockReader`]: aligned blocks of `PRAVAH_S3_READ_BLOCK_BYTES`
//!   (4 MiB) per ranged GET, so a ZIP's central directory costs one or two
//!   requests and its entries one request per block; tar streams are read
//!   the same way, in order. Archives are never staged on local disk;
//! - every other task gets the object staged into a local temp file under
//!   the call's staging folder (next to its results folder), deleted after
//!   the file is processed ([`staging`]);
//! - a task writing to an `s3://` destination writes into a fresh local
//!   staging folder, whose files are then uploaded under the destination
//!   prefix (single PUT, or multipart for large outputs) and deleted
//!   ([`s3_write`]). An object appears under its final key only when its
//!   upload completes, so a failed upload leaves nothing there. The task's
//!   `existing` policy applies there too: each output is looked up under its
//!   key before the task's work (skip reports the file skipped, fail fails
//!   it, overwrite replaces, a replaced folder loses the old objects the new
//!   one lacks), and single PUTs are conditional (`If-None-Match: *`). An
//!   object whose output the task names from its name alone
//!   ([`crate::tasks::Task::planned_output`]) is looked up before it is
//!   downloaded, so a re-run onto the same prefix costs a HEAD per file.
//!
//! Not done yet: a multipart upload is not conditional (object_store 0.14
//! has no conditional multipart completion), so a writer racing between the
//! last look-up and the upload of a large output can be overwritten.
//!
//! The S3 client itself ([`s3`]) is configured from the standard AWS
//! variables and never logs credentials.
pub mod blocks;
pub mod objects;
pub mod s3;
pub mod s3_list;
pub mod s3_read;
pub mod s3_write;
pub mod staging;

use std::path::PathBuf;

use crate::error::{EngineError, Result};
use crate::results::{FailureKind, FileFailure};

/// A bucket and a key prefix: where an `s3://bucket/prefix` URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Root {
    pub bucket: String,
    /// The key prefix without leading or trailing '/'; "" is the whole bucket.
    pub prefix: String,
}

impl S3Root {
    /// Parses `s3://bucket/prefix` (the prefix may be empty) and checks the
    /// bucket against the engine's allowed buckets.
    pub fn parse(uri: &str) -> Result<Self> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| EngineError::InvalidArgument(format!("{uri:?} is not an s3:// URI")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(EngineError::InvalidArgument(format!(
                "{uri:?} names no bucket: use s3://bucket/prefix"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|seg| seg == ".." || seg == ".")
            || (!prefix.is_empty() && prefix.split('/').any(str::is_empty))
        {
            return Err(EngineError::InvalidArgument(format!(
                "{uri:?}: the prefix may not contain '.', '..' or empty segments"
            )));
        }
        crate::sandbox::check_bucket(bucket)?;
        Ok(S3Root {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The object key of a path relative to this root. Refuses what could
    /// name an object outside the prefix or that the store cannot address:
    /// absolute paths, '.', '..' and empty segments, non-UTF-8 names.
    pub fn key(&self, rel: &[u8]) -> std::result::Result<String, FileFailure> {
        let rel = std::str::from_utf8(rel).map_err(|_| {
            FileFailure::new(
                FailureKind::InvalidData,
                "the name is not valid UTF-8, which object keys must be",
            )
        })?;
        if rel.is_empty()
            || rel
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(FileFailure::new(
                FailureKind::OutsideRoot,
                "path escapes the prefix or has empty segments (absolute, '.', '..' or '//'); give paths relative to the prefix",
            ));
        }
        Ok(if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        })
    }

    /// The root as a URI, `s3://bucket/prefix`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Where a source's files are.
#[derive(Debug, Clone)]
pub enum Root {
    /// A canonical local directory inside the allowed roots.
    Local(PathBuf),
    /// A prefix in an allowed bucket.
    S3(S3Root),
}

impl Root {
    /// Resolves a source: `s3://` URIs by bucket, anything else as a local
    /// directory ([`crate::listing::resolve_source`]).
    pub fn resolve(source: &str) -> Result<Self> {
        if source.starts_with("s3://") {
            S3Root::parse(source).map(Root::S3)
        } else {
            crate::listing::resolve_source(source).map(Root::Local)
        }
    }

    /// The root as the listing summary reports it (and ChunkRef.root echoes).
    pub fn display(&self) -> String {
        match self {
            Root::Local(p) => p.to_string_lossy().into_owned(),
            Root::S3(s) => s.uri(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(prefix: &str) -> S3Root {
        S3Root {
            bucket: "b".into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn keys_stay_under_the_prefix() {
        assert_eq!(root("in").key(b"a/b c.csv").unwrap(), "in/a/b c.csv");
        assert_eq!(root("").key("ü.csv".as_bytes()).unwrap(), "ü.csv");
        for bad in [
            &b"../x"[..],
            b"a/../../x",
            b"/etc/passwd",
            b"a//b",
            b"./a",
            b"",
            b"\xff",
        ] {
            assert!(root("in").key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uris_parse_into_bucket_and_prefix() {
        // No buckets are configured in unit tests: every bucket is refused.
        let err = S3Root::parse("s3://data/in/").unwrap_err();
        assert!(matches!(err, EngineError::BucketNotAllowed { .. }), "{err}");
        assert!(matches!(
            S3Root::parse("s3:///x").unwrap_err(),
            EngineError::InvalidArgument(_)
        ));
        assert!(matches!(
            S3Root::parse("s3://data/a/../b").unwrap_err(),
            EngineError::InvalidArgument(_)
        ));
    }
}
