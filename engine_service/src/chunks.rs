//! Listing chunk files: written by List in chunk_dir mode, read back by
//! Process for ChunkRef work items.
//!
//! Format (JSON lines, one file each): `{"p": path, "s": size, "m":
//! mtime_unix_ns}` plus `"b"` (base64 of the raw path bytes) for names that
//! are not UTF-8. `s` and `m` are absent when the listing skipped metadata.
//! Chunks are written atomically, like part files.
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::results::{push_json_str, FailureKind, FileFailure};
use crate::walk::Entry;

/// Chunk file name for an index.
pub fn chunk_name(index: u32) -> String {
    format!("chunk-{index:06}.jsonl")
}

/// Appends one chunk line for `entry`.
pub fn push_chunk_line(out: &mut Vec<u8>, entry: &Entry) {
    out.extend_from_slice(b"{\"p\":");
    let utf8 = std::str::from_utf8(&entry.rel);
    match utf8 {
        Ok(s) => push_json_str(out, s),
        Err(_) => push_json_str(out, &String::from_utf8_lossy(&entry.rel)),
    }
    if let Some((size, mtime)) = entry.meta {
        out.extend_from_slice(format!(",\"s\":{size},\"m\":{mtime}").as_bytes());
    }
    if utf8.is_err() {
        out.extend_from_slice(b",\"b\":\"");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&entry.rel)
                .as_bytes(),
        );
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
}

#[derive(Deserialize)]
struct ChunkLine {
    p: String,
    s: Option<u64>,
    m: Option<i64>,
    b: Option<String>,
}

/// One chunk line: relative path bytes, and the size and modification time
/// (unix ns) when the listing knew them.
pub type ChunkEntry = (Vec<u8>, Option<u64>, Option<i64>);

/// Reads a chunk file into its entries.
pub fn read_chunk(path: &Path) -> Result<Vec<ChunkEntry>, FileFailure> {
    let text =
        std::fs::read(path).map_err(|e| FileFailure::from_io(&e, "reading the chunk file"))?;
    let mut out = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: ChunkLine = serde_json::from_slice(line).map_err(|e| {
            FileFailure::new(
                FailureKind::InvalidData,
                format!(
                    "chunk file {} line {} is not a chunk entry: {e}",
                    path.display(),
                    n + 1
                ),
            )
        })?;
        let rel = match parsed.b {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    FileFailure::new(
                        FailureKind::InvalidData,
                        format!(
                            "chunk file {} line {}: bad base64 in \"b\": {e}",
                            path.display(),
                            n + 1
                        ),
                    )
                })?,
            None => parsed.p.into_bytes(),
        };
        out.push((rel, parsed.s, parsed.m));
    }
    Ok(out)
}

/// Joins a relative path to the root, refusing absolute paths and `..`.
pub fn join_inside(root: &Path, rel: &[u8]) -> Result<PathBuf, FileFailure> {
    let mut path = PathBuf::new();
    join_inside_into(root, rel, &mut path)?;
    Ok(path)
}

/// [`join_inside`] into `path`, whose allocation is reused: a batch joins
/// every file's path into one buffer.
pub fn join_inside_into(root: &Path, rel: &[u8], path: &mut PathBuf) -> Result<(), FileFailure> {
    use std::os::unix::ffi::OsStrExt;
    let escapes = rel.first() == Some(&b'/') || rel.split(|&b| b == b'/').any(|c| c == b"..");
    if escapes || rel.is_empty() {
        return Err(FileFailure::new(
            FailureKind::OutsideRoot,
            "path escapes the source root (absolute or containing \"..\"); give paths relative to the root",
        ));
    }
    let joined = path.as_mut_os_string();
    joined.clear();
    joined.push(root.as_os_str());
    if !root.as_os_str().as_bytes().ends_with(b"/") {
        joined.push("/");
    }
    joined.push(std::ffi::OsStr::from_bytes(rel));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_round_trip_including_non_utf8() {
        let entries = vec![
            Entry {
                rel: b"a/b.csv".to_vec(),
                meta: Some((5, 7)),
            },
            Entry {
                rel: b"odd\xff.csv".to_vec(),
                meta: None,
            },
        ];
        let mut out = Vec::new();
        for e in &entries {
            push_chunk_line(&mut out, e);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(chunk_name(3));
        std::fs::write(&path, &out).unwrap();
        assert!(path.ends_with("chunk-000003.jsonl"));
        let back = read_chunk(&path).unwrap();
        assert_eq!(
            back,
            vec![
                (b"a/b.csv".to_vec(), Some(5), Some(7)),
                (b"odd\xff.csv".to_vec(), None, None)
            ]
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        let root = Path::new("/data");
        assert!(join_inside(root, b"../etc/passwd").is_err());
        assert!(join_inside(root, b"/etc/passwd").is_err());
        assert!(join_inside(root, b"a/../../x").is_err());
        assert_eq!(
            join_inside(root, b"a/b.csv").unwrap(),
            Path::new("/data/a/b.csv")
        );
    }

    #[test]
    fn joining_into_a_reused_buffer_matches_path_join() {
        let mut path = PathBuf::from("/left/over/from/the/last/file.csv");
        for (root, rel) in [("/data", "a/b.csv"), ("/", "x.csv"), ("/data/", "c")] {
            join_inside_into(Path::new(root), rel.as_bytes(), &mut path).unwrap();
            assert_eq!(path, Path::new(root).join(rel));
            assert_eq!(path.as_os_str(), Path::new(root).join(rel).as_os_str());
        }
        assert!(join_inside_into(Path::new("/data"), b"../x", &mut path).is_err());
    }
}
