//! Task `hash`: sha256, blake3 or xxh3 of each file, streamed through a
//! 256 KiB buffer; the summary groups duplicates (same size and hash) with
//! the bytes they waste.
//!
//! Names of one file are one copy, not duplicates (as fdupes and jdupes
//! count them): removing a hard link, or a symlink followed into the tree,
//! frees nothing. Each result carries the file's `inode` (device:inode;
//! not an object's: each is a copy), and a group wastes the size of each
//! copy beyond the first, however many names each copy has.
//! The control plane regroups a job of several chunks from these results
//! (each chunk's summary sees only its own files).
//!
//! The aggregate keeps one entry per copy (size, hash and inode), so its
//! memory grows with the number of files; that is what finding duplicates
//! needs (a key of about 100 bytes and an example path per file).
use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use sha2::Digest;

use super::{parse_options, Aggregate, FileCtx, FileOutcome, Task, TaskInfo};
use crate::results::FileFailure;

pub const INFO: TaskInfo = TaskInfo {
    name: "hash",
    version: "1",
    description: "Hashes each file (sha256, blake3 or xxh3) and groups duplicate files.",
    options_schema,
    result_schema,
    writes_files: false,
    size_independent: false,
    build,
};

/// Most duplicate groups listed in the summary (largest waste first).
const MAX_GROUPS: usize = 100;

fn options_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "hash options",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "algorithm": {"description": "Hash function.", "enum": ["sha256", "blake3", "xxh3"], "default": "blake3"}
        }
    })
}

fn result_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "algorithm": {"type": "string"},
            "hash": {"type": "string", "description": "Lower-case hex."},
            "inode": {"type": "string", "description": "device:inode: names (hard links, followed symlinks) with one inode are one copy."}
        }
    })
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Algorithm {
    Sha256,
    #[default]
    Blake3,
    Xxh3,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Options {
    algorithm: Algorithm,
}

struct Hash {
    algorithm: Algorithm,
}

fn build(options_json: &str) -> Result<Arc<dyn Task>, String> {
    let o: Options = parse_options(options_json)?;
    Ok(Arc::new(Hash {
        algorithm: o.algorithm,
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Hash {
    fn name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Blake3 => "blake3",
            Algorithm::Xxh3 => "xxh3",
        }
    }

    /// The file's size, its digest and its device:inode (none for a staged
    /// object: a copy's inode, which the next copy may get too).
    fn digest(&self, ctx: &FileCtx<'_>) -> Result<(u64, String, Option<String>), FileFailure> {
        let (opened, before) = crate::sandbox::open_regular_with_meta(ctx.path)
            .map_err(|e| FileFailure::from_io(&e, "opening the file"))?;
        let mut file = ctx.cancellable(&opened);
        let mut buf = vec![0u8; 256 * 1024];
        let mut sha = sha2::Sha256::new();
        let mut b3 = blake3::Hasher::new();
        let mut x3 = xxhash_rust::xxh3::Xxh3::new();
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FileFailure::from_io(&e, "reading the file")),
            };
            total += n as u64;
            match self.algorithm {
                Algorithm::Sha256 => sha.update(&buf[..n]),
                Algorithm::Blake3 => {
                    b3.update(&buf[..n]);
                }
                Algorithm::Xxh3 => x3.update(&buf[..n]),
            }
        }
        // A file written to while it was read has a hash of no version of
        // it: said, not summed into the duplicate groups.
        let after = opened
            .metadata()
            .map_err(|e| FileFailure::from_io(&e, "checking the file after reading it"))?;
        if total != before.len()
            || after.len() != before.len()
            || after.modified().ok() != before.modified().ok()
        {
            return Err(FileFailure::new(
                crate::results::FailureKind::Io,
                "the file changed while it was read; hash it again once it is stable",
            ));
        }
        let h = match self.algorithm {
            Algorithm::Sha256 => hex(&sha.finalize()),
            Algorithm::Blake3 => b3.finalize().to_hex().to_string(),
            Algorithm::Xxh3 => format!("{:032x}", x3.digest128()),
        };
        use std::os::unix::fs::MetadataExt;
        let inode = (!ctx.staged).then(|| format!("{}:{}", before.dev(), before.ino()));
        Ok((total, h, inode))
    }
}

impl Task for Hash {
    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        match self.digest(ctx) {
            Ok((size, h, inode)) => {
                let mut v = json!({"algorithm": self.name(), "hash": h});
                if let Some(inode) = inode {
                    v["inode"] = json!(inode);
                }
                FileOutcome {
                    size,
                    result: Ok(v.to_string()),
                }
            }
            Err(f) => FileOutcome {
                size: ctx.known_size.unwrap_or(0),
                result: Err(f),
            },
        }
    }

    fn account(&self, agg: &mut Aggregate, rel: &[u8], size: u64, r: &Result<String, FileFailure>) {
        agg.files += 1;
        match r {
            Err(_) => agg.failed += 1,
            Ok(json) => {
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                // One entry per copy: names of one inode share theirs.
                let mut key = format!("{size}:{}", v["hash"].as_str().unwrap_or(""));
                if let Some(inode) = v["inode"].as_str() {
                    key.push(':');
                    key.push_str(inode);
                }
                let path = String::from_utf8_lossy(rel);
                match agg.groups.get_mut(&key) {
                    Some(g) => {
                        g.0 += 1;
                        // The first path in order, whichever file came first.
                        if *path < *g.1 {
                            g.1 = path.into_owned();
                        }
                    }
                    None => {
                        agg.groups.insert(key, (1, path.into_owned()));
                    }
                }
                agg.count("bytes", size);
            }
        }
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        // (size, hash) -> (files, copies, example). An entry of `groups`
        // with an inode is one copy, its count the names it has; without
        // (an object, or a result of an engine before inodes), each file
        // is a copy.
        let mut by_content: std::collections::HashMap<(u64, &str), (u64, u64, &str)> =
            std::collections::HashMap::new();
        for (key, (n, example)) in &agg.groups {
            let mut parts = key.splitn(3, ':');
            let size: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let hash = parts.next().unwrap_or("");
            let linked = parts.next().is_some();
            let g = by_content.entry((size, hash)).or_insert((0, 0, example));
            g.0 += n;
            g.1 += if linked { 1 } else { *n };
            g.2 = g.2.min(example.as_str());
        }
        let mut dups: Vec<(u64, u64, u64, &str, &str)> = by_content
            .iter()
            .filter(|(_, (_, copies, _))| *copies > 1)
            .map(|((size, hash), (files, copies, example))| {
                (size * (copies - 1), *files, *size, *hash, *example)
            })
            .collect();
        dups.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.3.cmp(b.3)));
        let wasted: u64 = dups.iter().map(|d| d.0).sum();
        let dup_files: u64 = dups.iter().map(|d| d.1).sum();
        json!({
            "algorithm": self.name(),
            "files": agg.files,
            "failed": agg.failed,
            "bytes": agg.counters.get("bytes").copied().unwrap_or(0),
            "distinct": by_content.len(),
            "duplicate_groups": dups.len(),
            "duplicate_files": dup_files,
            "wasted_bytes": wasted,
            "duplicates": dups.iter().take(MAX_GROUPS).map(|(w, n, size, h, ex)| json!({
                "hash": h, "files": n, "size": size, "wasted_bytes": w, "example": ex
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_and_duplicate_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        std::fs::write(dir.path().join("b"), b"abc").unwrap();
        std::fs::write(dir.path().join("c"), b"abcd").unwrap();
        let sha = build(r#"{"algorithm":"sha256"}"#).unwrap();
        let r = sha
            .process_file(&dir.path().join("a"), None)
            .result
            .unwrap();
        assert!(r.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        for algo in ["blake3", "xxh3", "sha256"] {
            let task = build(&format!(r#"{{"algorithm":"{algo}"}}"#)).unwrap();
            let mut agg = Aggregate::default();
            for name in ["a", "b", "c", "missing"] {
                let out = task.process_file(&dir.path().join(name), None);
                task.account(&mut agg, name.as_bytes(), out.size, &out.result);
            }
            let s = task.summarize(&agg);
            assert_eq!(s["duplicate_groups"], 1, "{algo}");
            assert_eq!(s["wasted_bytes"], 3);
            assert_eq!(s["failed"], 1);
            assert_eq!(s["duplicates"][0]["files"], 2);
        }
        assert!(build(r#"{"algorithm":"md5"}"#).is_err());
    }

    #[test]
    fn names_of_one_file_are_one_copy_and_waste_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), b"abcde").unwrap();
        std::fs::hard_link(d.join("a"), d.join("a-link")).unwrap();
        std::fs::hard_link(d.join("a"), d.join("a-link2")).unwrap();
        std::fs::write(d.join("b"), b"xyz").unwrap();
        std::fs::hard_link(d.join("b"), d.join("b-link")).unwrap();
        // A symlink followed into the tree names the same file too.
        std::os::unix::fs::symlink("b", d.join("b-sym")).unwrap();
        std::fs::write(d.join("copy-of-a"), b"abcde").unwrap();
        let task = build("").unwrap();
        let mut agg = Aggregate::default();
        for name in [
            "a",
            "a-link",
            "a-link2",
            "b",
            "b-link",
            "b-sym",
            "copy-of-a",
        ] {
            let out = task.process_file(&d.join(name), None);
            let v: serde_json::Value = serde_json::from_str(out.result.as_ref().unwrap()).unwrap();
            assert!(v["inode"].is_string(), "{name}: {v}");
            task.account(&mut agg, name.as_bytes(), out.size, &out.result);
        }
        let s = task.summarize(&agg);
        // b, b-link and b-sym: one copy, no duplicate. a's three names and
        // its copy: two copies, one wasted.
        assert_eq!(s["distinct"], 2, "{s}");
        assert_eq!(s["duplicate_groups"], 1, "{s}");
        assert_eq!(s["duplicate_files"], 4, "{s}");
        assert_eq!(s["wasted_bytes"], 5, "{s}");
        assert_eq!(s["duplicates"][0]["size"], 5, "{s}");
        assert_eq!(s["duplicates"][0]["example"], "a", "{s}");
    }

    #[test]
    fn a_file_written_to_while_it_is_hashed_is_a_failure_not_a_hash() {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing.log");
        std::fs::write(&path, vec![b'x'; 16 << 20]).unwrap();
        let task = build(r#"{"algorithm":"sha256"}"#).unwrap();
        let stop = AtomicBool::new(false);
        let outcome = std::thread::scope(|s| {
            // A logger appending the whole time the file is read.
            s.spawn(|| {
                let mut log = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    log.write_all(b"line\n").unwrap();
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            let outcome = task.process_file(&path, None);
            stop.store(true, Ordering::Relaxed);
            outcome
        });
        let failure = outcome.result.unwrap_err();
        assert!(
            failure.message.contains("changed while it was read"),
            "{}",
            failure.message
        );
        // Once it is still, the same file hashes.
        assert!(task.process_file(&path, None).result.is_ok());
    }
}
