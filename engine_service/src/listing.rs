//! The List operation, independent of gRPC: validate the source, walk it
//! (or list its S3 prefix, [`crate::storage::s3_list`]), and hand batches
//! (or chunk descriptors) to a sink, summary last.
//!
//! Runs on the caller's (blocking) thread as the walk's single consumer; the
//! walk itself runs on the walk pool. Memory stays flat: the walk channel is
//! bounded and at most one batch or chunk is held here at a time.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::chunks;
use crate::error::{EngineError, Result};
use crate::filters::Filters;
use crate::pb::{self, list_response::Message};
use crate::results::{display_path, write_atomic};
use crate::storage::{s3_list, Root};
use crate::syncer::{SyncGroup, Syncer};
use crate::walk::{self, Entry, WalkEvent};

/// Resolves a source (a path or `file://` URI) to its canonical directory.
pub fn resolve_source(source: &str) -> Result<PathBuf> {
    let raw = source.strip_prefix("file://").unwrap_or(source);
    if raw.is_empty() {
        return Err(EngineError::InvalidArgument(
            "source is empty: give a directory path".into(),
        ));
    }
    let path = Path::new(raw);
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => EngineError::SourceNotFound { path: path.into() },
        _ => EngineError::io("cannot read source", path, e),
    })?;
    if !meta.is_dir() {
        return Err(EngineError::SourceNotDirectory { path: path.into() });
    }
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| EngineError::io("cannot resolve source", path, e))?;
    // Checked after resolving `..` and symlinks: a link inside an allowed
    // root that points elsewhere is refused like the path it points to.
    crate::sandbox::check(&canonical)?;
    Ok(canonical)
}

/// A validated List request.
pub struct ListParams {
    pub root: Root,
    pub filters: Arc<Filters>,
    pub batch_size: usize,
    pub chunk_dir: Option<PathBuf>,
    pub want_metadata: bool,
}

impl ListParams {
    pub fn from_request(req: &pb::ListRequest) -> Result<Self> {
        let root = Root::resolve(&req.source)?;
        let spec = req.filters.as_ref().map(Into::into).unwrap_or_default();
        let filters = Arc::new(Filters::compile(&spec)?);
        let batch_size = match req.batch_size {
            0 => crate::config::DEFAULT_BATCH_FILES,
            n => n.min(crate::config::MAX_BATCH_FILES),
        } as usize;
        let chunk_dir = if req.chunk_dir.is_empty() {
            None
        } else {
            let dir = PathBuf::from(
                req.chunk_dir
                    .strip_prefix("file://")
                    .unwrap_or(&req.chunk_dir),
            );
            Some(crate::sandbox::create_dir_checked(
                &dir,
                "cannot create chunk_dir",
            )?)
        };
        Ok(ListParams {
            root,
            filters,
            batch_size,
            chunk_dir,
            want_metadata: !req.skip_metadata,
        })
    }
}

fn timestamp(ns: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

fn to_pb_entry(e: Entry) -> pb::FileEntry {
    let (path, raw_path) = display_path(&e.rel);
    pb::FileEntry {
        path,
        raw_path,
        size: e.meta.map_or(0, |m| m.0),
        modified: e.meta.map(|m| timestamp(m.1)),
    }
}

/// Runs the listing, sending every message to `sink`; a `false` from the
/// sink means the client went away: the walk is cancelled and we return.
pub fn run(
    params: ListParams,
    cancel: Arc<AtomicBool>,
    sink: &mut dyn FnMut(pb::ListResponse) -> bool,
) -> Result<()> {
    let started = Instant::now();
    // Its parent is the caller's current span (the List server span).
    let span = tracing::info_span!(
        "list.walk",
        pravah.files = tracing::field::Empty,
        pravah.bytes = tracing::field::Empty,
        pravah.directories = tracing::field::Empty,
        pravah.errors = tracing::field::Empty,
        pravah.chunks = tracing::field::Empty,
    );
    let _entered = span.enter();
    let rx = match &params.root {
        Root::Local(dir) => walk::start(
            dir.clone(),
            params.filters.clone(),
            params.want_metadata,
            cancel.clone(),
        ),
        Root::S3(s3_root) => {
            s3_list::start(s3_root.clone(), params.filters.clone(), cancel.clone())?
        }
    };
    let mut summary = pb::ListSummary {
        root: params.root.display(),
        ..Default::default()
    };
    let mut send = |msg: Message| {
        let ok = sink(pb::ListResponse { message: Some(msg) });
        if !ok {
            cancel.store(true, Ordering::Relaxed);
        }
        ok
    };
    let mut batch: Vec<pb::FileEntry> = Vec::new();
    let mut chunk = ChunkState::default();
    for ev in rx.iter() {
        match ev {
            WalkEvent::Files(files) => {
                crate::metrics::METRICS
                    .walk_files
                    .inc_by(files.len() as u64);
                for e in files {
                    summary.files += 1;
                    summary.bytes += e.meta.map_or(0, |m| m.0);
                    if let Some(dir) = &params.chunk_dir {
                        chunk.add(&e);
                        if chunk.files as usize >= params.batch_size {
                            let desc = chunk.flush(dir)?;
                            if !send(Message::Chunk(desc)) {
                                return Ok(());
                            }
                        }
                    } else {
                        batch.push(to_pb_entry(e));
                        if batch.len() >= params.batch_size {
                            let entries = std::mem::take(&mut batch);
                            if !send(Message::Batch(pb::EntryBatch { entries })) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            WalkEvent::Error { rel, failure } => {
                summary.errors += 1;
                if !send(Message::Error(failure.to_pb(&rel))) {
                    return Ok(());
                }
            }
            WalkEvent::Done { directories } => {
                crate::metrics::METRICS.walk_directories.inc_by(directories);
                summary.directories = directories;
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
    if let Some(dir) = &params.chunk_dir {
        if chunk.files > 0 {
            let desc = chunk.flush(dir)?;
            if !send(Message::Chunk(desc)) {
                return Ok(());
            }
        }
        // The summary is what the control plane checkpoints the listing on.
        chunk
            .synced
            .wait(dir)
            .map_err(|e| EngineError::io("cannot sync the chunk files", dir, e))?;
    } else if !batch.is_empty() && !send(Message::Batch(pb::EntryBatch { entries: batch })) {
        return Ok(());
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    crate::process::record_walk_rate(summary.files, started);
    span.record("pravah.files", summary.files as i64);
    span.record("pravah.bytes", summary.bytes as i64);
    span.record("pravah.directories", summary.directories as i64);
    span.record("pravah.errors", summary.errors as i64);
    span.record("pravah.chunks", chunk.index as i64);
    send(Message::Summary(summary));
    Ok(())
}

/// The chunk being filled.
#[derive(Default)]
struct ChunkState {
    index: u32,
    buf: Vec<u8>,
    files: u64,
    bytes: u64,
    /// Syncs each chunk file in the background once written (started
    /// with the first chunk).
    syncer: Option<Syncer>,
    /// The chunk files handed to `syncer`, waited for before the summary.
    synced: Arc<SyncGroup>,
}

impl ChunkState {
    fn add(&mut self, e: &Entry) {
        chunks::push_chunk_line(&mut self.buf, e);
        self.files += 1;
        self.bytes += e.meta.map_or(0, |m| m.0);
    }

    fn flush(&mut self, dir: &Path) -> Result<pb::ChunkDescriptor> {
        let name = chunks::chunk_name(self.index);
        let path = write_atomic(dir, &name, &self.buf)
            .map_err(|e| EngineError::io("cannot write chunk", dir.join(&name), e))?;
        let desc = pb::ChunkDescriptor {
            index: self.index,
            uri: path.to_string_lossy().into_owned(),
            files: self.files,
            bytes: self.bytes,
        };
        self.syncer
            .get_or_insert_with(Syncer::start)
            .sync_later(path, &self.synced);
        self.index += 1;
        self.buf.clear();
        self.files = 0;
        self.bytes = 0;
        Ok(desc)
    }
}
