//! Listing an `s3://bucket/prefix` as if it were a directory walk: the same
//! [`WalkEvent`]s, the same filters, on a bounded channel.
//!
//! Keys become paths relative to the prefix ('/'-separated, like a walk).
//! Filters apply as on disk: a segment starting with '.' is hidden, an
//! exclude glob matching an ancestor "directory" prunes the key, `max_depth`
//! counts segments, and size and last-modified come free with the listing,
//! so every entry carries metadata.
//!
//! Folder markers (empty `dir/` objects, which the S3 console creates) read
//! as an empty `dir` (object_store drops the trailing '/'); one followed by
//! keys under it is dropped. A childless one cannot be told from an empty
//! file `dir` by the listing, so it is asked for by that name (one HEAD per
//! empty object with no children, which are few): a marker answers 404 and
//! is dropped, as a walk lists no empty folder, where it used to be listed
//! and then fail as "no such object".
//!
//! Hostile keys: a key with '.', '..' or empty segments (`a/../b`, `a//b`)
//! could name another prefix's object if it were joined naively, and
//! object_store refuses to parse it (and keys with control characters) (which fails the whole page of 1000
//! keys). Such a page is listed again one key per request until the bad
//! key, which is reported as an `outside_root` error and skipped; listing
//! then goes on after it, so one hostile key costs at most a page of extra
//! requests and never hides the other keys. Keys are never joined to a
//! local path: each one is fetched by its exact key.
//!
//! Errors: the first page is fetched before [`start`] returns, so a missing
//! bucket, bad credentials or an unreachable endpoint fail the request
//! itself with a clear status. A later page failing (after the client's
//! retries) ends the listing with one error event.
//!
//! Termination: the lister thread stops at the last page, on the cancel
//! flag (checked per page), or when the receiver is dropped.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use object_store::aws::AmazonS3;
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};

use super::s3::{self, Encryption};
use super::S3Root;
use crate::error::Result;
use crate::filters::Filters;
use crate::results::{FailureKind, FileFailure};
use crate::walk::{Entry, WalkEvent, SEND_BATCH};

/// Keys per list request (the S3 maximum).
const PAGE_KEYS: usize = 1000;
/// Messages in flight between lister and consumer; bounds memory.
const CHANNEL_CAPACITY: usize = 16;

/// Where the next list request starts.
#[derive(Debug, Clone, Default)]
struct Cursor {
    token: Option<String>,
    /// Start after this exact key (used to step over a hostile key).
    offset: Option<String>,
}

struct Lister {
    store: Arc<AmazonS3>,
    root: S3Root,
    /// `prefix/`, or None for the whole bucket.
    list_prefix: Option<String>,
    filters: Arc<Filters>,
}

/// The raw key object_store refused to parse, if that is why a page failed.
fn bad_key(err: &object_store::Error) -> Option<String> {
    use object_store::path::Error as PathError;
    match err {
        object_store::Error::InvalidPath {
            source: PathError::BadSegment { path, .. } | PathError::EmptySegment { path },
        } => Some(path.clone()),
        _ => None,
    }
}

impl Lister {
    fn page(&self, at: &Cursor, keys: usize) -> object_store::Result<PaginatedListResult> {
        let opts = PaginatedListOptions {
            offset: at.offset.clone(),
            page_token: at.token.clone(),
            max_keys: Some(keys),
            ..Default::default()
        };
        s3::block_on(self.store.list_paginated(self.list_prefix.as_deref(), opts))
    }

    /// The entry for a listed object, or None when filters drop it.
    fn entry(&self, meta: &object_store::ObjectMeta) -> Option<Entry> {
        let mtime = meta
            .last_modified
            .timestamp_nanos_opt()
            .unwrap_or(meta.last_modified.timestamp() * 1_000_000_000);
        entry_for(
            self.list_prefix.as_deref(),
            &self.filters,
            meta.location.as_ref(),
            meta.size,
            mtime,
        )
    }

    /// Whether an object of exactly this name exists (an empty file), rather
    /// than only a folder marker `name/` listed under it. When the store
    /// cannot say, it is kept, and processing reports what it finds.
    fn exists(&self, location: &object_store::path::Path) -> bool {
        !matches!(
            s3::block_on(object_store::ObjectStoreExt::head(&*self.store, location)),
            Err(object_store::Error::NotFound { .. })
        )
    }

    fn failure(&self, err: &object_store::Error) -> FileFailure {
        s3::classify(err, &format!("listing {}", self.root.uri()))
    }
}

/// The entry for `key` (relative to `list_prefix`) as a walk would give
/// it, or None when the filters drop it.
fn entry_for(
    list_prefix: Option<&str>,
    f: &Filters,
    key: &str,
    size: u64,
    mtime: i64,
) -> Option<Entry> {
    let rel = match list_prefix {
        Some(p) => key.strip_prefix(p)?,
        None => key,
    };
    if rel.is_empty() {
        return None;
    }
    let segments: Vec<&str> = rel.split('/').collect();
    if f.max_depth > 0 && segments.len() > f.max_depth as usize {
        return None;
    }
    if segments.iter().any(|s| f.skip_hidden(s.as_bytes())) {
        return None;
    }
    // Exclude globs prune "directories": test every ancestor.
    let mut end = 0;
    for s in &segments[..segments.len() - 1] {
        end += s.len();
        if f.prunes_dir(&rel.as_bytes()[..end]) {
            return None;
        }
        end += 1;
    }
    let name = segments.last().copied().unwrap_or(rel);
    if !f.matches_name(rel.as_bytes(), name.as_bytes()) || !f.matches_metadata(size, mtime as i128)
    {
        return None;
    }
    Some(Entry {
        rel: rel.as_bytes().to_vec(),
        meta: Some((size, mtime)),
    })
}

/// Starts listing `root`; the first page is fetched here (see the module
/// doc), the rest on a lister thread feeding the returned receiver.
pub fn start(
    root: S3Root,
    filters: Arc<Filters>,
    cancel: Arc<AtomicBool>,
) -> Result<Receiver<WalkEvent>> {
    let store = s3::store(&root.bucket, &Encryption::Default)?;
    let list_prefix = (!root.prefix.is_empty()).then(|| format!("{}/", root.prefix));
    let lister = Lister {
        store,
        root,
        list_prefix,
        filters,
    };
    let start = Cursor::default();
    let first = match lister.page(&start, PAGE_KEYS) {
        Ok(page) => Ok(page),
        Err(e) if bad_key(&e).is_some() => Err(e),
        Err(e) => {
            return Err(s3::request_error(
                &e,
                &format!("listing {}", lister.root.uri()),
            ))
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
    std::thread::Builder::new()
        .name("pravah-s3-list".into())
        .spawn(move || run(&lister, start, first, &tx, &cancel))
        .map_err(|e| crate::error::EngineError::Internal(format!("cannot start lister: {e}")))?;
    Ok(rx)
}

fn run(
    lister: &Lister,
    mut at: Cursor,
    first: object_store::Result<PaginatedListResult>,
    tx: &Sender<WalkEvent>,
    cancel: &AtomicBool,
) {
    let send = |ev: WalkEvent| {
        let ok = tx.send(ev).is_ok();
        if !ok {
            cancel.store(true, Ordering::Relaxed);
        }
        ok
    };
    let mut pending = Some(first);
    // After a page failed on a hostile key: list one key per request.
    let mut careful = false;
    let mut batch = Vec::with_capacity(SEND_BATCH);
    // The last empty object seen, until the next key shows whether it was a
    // folder marker (then dropped) or an empty file.
    let mut held: Option<(object_store::path::Path, Option<Entry>)> = None;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let keys = if careful { 1 } else { PAGE_KEYS };
        let page = pending.take().unwrap_or_else(|| lister.page(&at, keys));
        match page {
            Ok(page) => {
                for meta in &page.result.objects {
                    let key = meta.location.as_ref();
                    if let Some((marker, entry)) = held.take() {
                        // A folder marker ("dir/") reads as an empty "dir";
                        // its children sort right after it.
                        let name: &str = marker.as_ref();
                        let is_folder = key.len() > name.len()
                            && key.starts_with(name)
                            && key.as_bytes()[name.len()] == b'/';
                        if !is_folder && entry.is_some() && lister.exists(&marker) {
                            batch.extend(entry);
                        }
                    }
                    let entry = lister.entry(meta);
                    if meta.size == 0 {
                        held = Some((meta.location.clone(), entry));
                    } else {
                        batch.extend(entry);
                    }
                    if batch.len() >= SEND_BATCH
                        && !send(WalkEvent::Files(std::mem::take(&mut batch)))
                    {
                        return;
                    }
                }
                match page.page_token {
                    Some(token) => {
                        at = Cursor {
                            token: Some(token),
                            offset: None,
                        }
                    }
                    None => break,
                }
            }
            Err(e) => match bad_key(&e) {
                Some(_) if !careful => careful = true,
                Some(key) => {
                    let rel = match &lister.list_prefix {
                        Some(p) => key.strip_prefix(p.as_str()).unwrap_or(&key),
                        None => &key,
                    };
                    let failure = FileFailure::new(
                        FailureKind::OutsideRoot,
                        "object key has '.', '..' or empty segments (it could name an object outside the prefix) or control characters; skipped",
                    );
                    if !send(WalkEvent::Error {
                        rel: rel.as_bytes().to_vec(),
                        failure,
                    }) {
                        return;
                    }
                    careful = false;
                    at = Cursor {
                        token: None,
                        offset: Some(key),
                    };
                }
                None => {
                    if !batch.is_empty() && !send(WalkEvent::Files(std::mem::take(&mut batch))) {
                        return;
                    }
                    send(WalkEvent::Error {
                        rel: Vec::new(),
                        failure: lister.failure(&e),
                    });
                    break;
                }
            },
        }
    }
    if let Some((marker, entry)) = held {
        if entry.is_some() && lister.exists(&marker) {
            batch.extend(entry);
        }
    }
    if !batch.is_empty() && !send(WalkEvent::Files(batch)) {
        return;
    }
    send(WalkEvent::Done { directories: 0 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::FilterSpec;

    fn kept(spec: FilterSpec, keys: &[(&str, u64)]) -> Vec<String> {
        let f = Filters::compile(&spec).unwrap();
        keys.iter()
            .filter_map(|(k, size)| entry_for(Some("in/"), &f, k, *size, 1_000))
            .map(|e| String::from_utf8(e.rel).unwrap())
            .collect()
    }

    const KEYS: &[(&str, u64)] = &[
        ("in/a.csv", 10),
        ("in/.hidden/b.csv", 10),
        ("in/build/c.csv", 10),
        ("in/deep/er/d.CSV", 500),
        ("in/e.txt", 10),
        ("inside/f.csv", 10),
    ];

    #[test]
    fn keys_are_filtered_like_a_walk() {
        assert_eq!(
            kept(FilterSpec::default(), KEYS),
            ["a.csv", "build/c.csv", "deep/er/d.CSV", "e.txt"]
        );
        let spec = FilterSpec {
            extensions: vec!["csv".into()],
            exclude: vec!["build".into()],
            include_hidden: true,
            ..Default::default()
        };
        assert_eq!(
            kept(spec, KEYS),
            ["a.csv", ".hidden/b.csv", "deep/er/d.CSV"]
        );
        let spec = FilterSpec {
            max_depth: 2,
            max_size: Some(100),
            ..Default::default()
        };
        assert_eq!(kept(spec, KEYS), ["a.csv", "build/c.csv", "e.txt"]);
        let spec = FilterSpec {
            include: vec!["deep/**".into()],
            ..Default::default()
        };
        assert_eq!(kept(spec, KEYS), ["deep/er/d.CSV"]);
    }
}
