//! Writing outputs to an `s3://bucket/prefix` destination.
//!
//! Tasks write their outputs locally and atomically, as always, into a
//! fresh per-file staging folder ([`super::staging`]) that stands in for
//! the destination. [`S3Destination::upload_tree`] then uploads each staged
//! file to `prefix/<its path relative to the folder>` and deletes it.
//!
//! Atomicity: an object becomes visible under its key only when its upload
//! completes. Small outputs (below `PRAVAH_S3_MULTIPART_THRESHOLD`, 16 MiB)
//! are one PUT; larger ones are a multipart upload of
//! `PRAVAH_S3_PART_SIZE` (8 MiB) parts with at most
//! `PRAVAH_S3_UPLOAD_CONCURRENCY` (4) parts in flight, and any failure
//! aborts it, so a failed upload never leaves a partial object under the
//! final key (an upload cut by a crash leaves only invisible parts, which a
//! bucket lifecycle rule for incomplete multipart uploads reclaims).
//!
//! Encryption: the store is built with the call's server-side encryption
//! ([`super::s3::Encryption`]), which object_store sends on every PUT and
//! multipart creation.
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::s3::{self, Encryption};
use super::s3_read::object_path;
use super::S3Root;
use crate::error::Result;
use crate::results::FileFailure;

fn env_bytes(name: &str, default: usize, least: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(default)
        .max(least)
}

/// An `s3://` destination of a Process call.
pub struct S3Destination {
    pub root: S3Root,
    store: Arc<AmazonS3>,
    /// Outputs at least this large use a multipart upload.
    multipart_threshold: usize,
    part_size: usize,
    parts_in_flight: usize,
}

impl S3Destination {
    /// Parses and checks `uri` (allowed bucket) and builds its client.
    pub fn open(uri: &str, encryption: &Encryption) -> Result<Self> {
        let root = S3Root::parse(uri)?;
        let store = s3::store(&root.bucket, encryption)?;
        Ok(S3Destination {
            root,
            store,
            multipart_threshold: env_bytes("PRAVAH_S3_MULTIPART_THRESHOLD", 16 << 20, 1),
            // S3 refuses parts under 5 MiB (but the last).
            part_size: env_bytes("PRAVAH_S3_PART_SIZE", 8 << 20, 5 << 20),
            parts_in_flight: env_bytes("PRAVAH_S3_UPLOAD_CONCURRENCY", 4, 1),
        })
    }

    /// Uploads every file under `staged` to its key and removes it; returns
    /// the number of objects written. The first failure stops the upload of
    /// this folder (objects already uploaded stay, each one whole).
    pub fn upload_tree(&self, staged: &Path) -> std::result::Result<u64, FileFailure> {
        let mut written = 0;
        for entry in walkdir::WalkDir::new(staged).min_depth(1) {
            let entry = entry.map_err(|e| {
                let io = std::io::Error::other(e.to_string());
                FileFailure::from_io(&io, "reading the staged outputs")
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(staged)
                .expect("walkdir yields paths under its root");
            let key = self.root.key(rel.as_os_str().as_encoded_bytes())?;
            self.upload_file(entry.path(), &key)?;
            let _ = std::fs::remove_file(entry.path());
            written += 1;
        }
        Ok(written)
    }

    /// Uploads one local file to `key` (single PUT or multipart).
    pub fn upload_file(&self, local: &Path, key: &str) -> std::result::Result<(), FileFailure> {
        let path = object_path(key)?;
        let mut file = std::fs::File::open(local)
            .map_err(|e| FileFailure::from_io(&e, "opening a staged output"))?;
        let size = file
            .metadata()
            .map_err(|e| FileFailure::from_io(&e, "reading a staged output"))?
            .len();
        let doing = format!("uploading s3://{}/{key}", self.root.bucket);
        if size < self.multipart_threshold as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data)
                .map_err(|e| FileFailure::from_io(&e, "reading a staged output"))?;
            s3::block_on(self.store.put(&path, PutPayload::from(data)))
                .map_err(|e| s3::classify(&e, &doing))?;
            return Ok(());
        }
        let upload =
            s3::block_on(self.store.put_multipart(&path)).map_err(|e| s3::classify(&e, &doing))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut buf = vec![0u8; self.part_size];
        loop {
            let n = match read_full(&mut file, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = s3::block_on(writer.abort());
                    return Err(FileFailure::from_io(&e, "reading a staged output"));
                }
            };
            if n == 0 {
                break;
            }
            // write() spawns the part upload, so it runs on the S3 runtime.
            let parts_in_flight = self.parts_in_flight;
            let sent = s3::block_on(async {
                writer.write(&buf[..n]);
                writer.wait_for_capacity(parts_in_flight).await
            });
            if let Err(e) = sent {
                let _ = s3::block_on(writer.abort());
                return Err(s3::classify(&e, &doing));
            }
        }
        // finish() aborts the upload itself when a part or the completion fails.
        s3::block_on(writer.finish()).map_err(|e| s3::classify(&e, &doing))?;
        Ok(())
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
