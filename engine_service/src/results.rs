//! Per-file outcomes and how they are written.
//!
//! A file's failure is data, not an error of the request: it is a
//! [`FileFailure`] with a kind and a sentence, recorded and skipped. Part files
//! are JSON lines written atomically ([`write_atomic`]): a temp file in the
//! same directory, then a rename, so no reader ever sees a half-written part
//! under its final name and a retried batch overwrites rather than duplicates.
//!
//! Durability is batched: a part or listing chunk is not synced by the
//! worker that writes it (an fsync costs milliseconds, and a 100,000-file
//! csv-header writes a hundred parts, each fsync blocking a worker). Both
//! are synced in the background as they are written ([`crate::syncer`]) and
//! waited for before their work item or listing is reported done, which is
//! when the control plane checkpoints it.
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::pb;

/// Why one file failed, in the words of the part-file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    NotFound,
    PermissionDenied,
    Io,
    InvalidData,
    LimitExceeded,
    OutsideRoot,
    Internal,
}

impl FailureKind {
    /// The `error_kind` string written into part files.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::NotFound => "not_found",
            FailureKind::PermissionDenied => "permission_denied",
            FailureKind::Io => "io",
            FailureKind::InvalidData => "invalid_data",
            FailureKind::LimitExceeded => "limit_exceeded",
            FailureKind::OutsideRoot => "outside_root",
            FailureKind::Internal => "internal",
        }
    }

    pub fn to_pb(self) -> pb::ErrorKind {
        match self {
            FailureKind::NotFound => pb::ErrorKind::NotFound,
            FailureKind::PermissionDenied => pb::ErrorKind::PermissionDenied,
            FailureKind::Io => pb::ErrorKind::Io,
            FailureKind::InvalidData => pb::ErrorKind::InvalidData,
            FailureKind::LimitExceeded => pb::ErrorKind::LimitExceeded,
            FailureKind::OutsideRoot => pb::ErrorKind::OutsideRoot,
            FailureKind::Internal => pb::ErrorKind::Internal,
        }
    }
}

/// One file's failure: a kind and a sentence naming the cause and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl FileFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        FileFailure {
            kind,
            message: message.into(),
        }
    }

    /// Classifies an I/O error met while reading a file.
    pub fn from_io(err: &std::io::Error, doing: &str) -> Self {
        if let Some(outside) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<crate::beneath::LeadsOutsideRoot>())
        {
            return FileFailure::new(FailureKind::OutsideRoot, outside.to_string());
        }
        match err.kind() {
            std::io::ErrorKind::NotFound => FileFailure::new(
                FailureKind::NotFound,
                format!("file not found while {doing}; it may have been removed during the job"),
            ),
            std::io::ErrorKind::PermissionDenied => FileFailure::new(
                FailureKind::PermissionDenied,
                format!("permission denied while {doing}; grant the engine read access"),
            ),
            // A decoder's memory limit (compress::Bounded), or the system's.
            std::io::ErrorKind::OutOfMemory => {
                FileFailure::new(FailureKind::LimitExceeded, err.to_string())
            }
            _ => FileFailure::new(FailureKind::Io, format!("I/O error while {doing}: {err}")),
        }
    }

    /// As the `FileError` message of the contract.
    pub fn to_pb(&self, path: &[u8]) -> pb::FileError {
        let (path, raw_path) = display_path(path);
        pb::FileError {
            path,
            raw_path,
            kind: self.kind.to_pb() as i32,
            message: self.message.clone(),
        }
    }
}

/// The contract's (lossy display path, exact raw bytes if lossy) pair.
pub fn display_path(raw: &[u8]) -> (String, Vec<u8>) {
    match std::str::from_utf8(raw) {
        Ok(s) => (s.to_owned(), Vec::new()),
        Err(_) => (String::from_utf8_lossy(raw).into_owned(), raw.to_vec()),
    }
}

/// The bytes a JSON string must escape: control characters, `"` and `\`.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Nearly every name and column needs no escape (JSON escapes only
    // quotes, backslashes and control characters): copied as it is. Else
    // serde_json's escaping, which is exact; writing into a Vec never fails.
    if !s.bytes().any(|b| NEEDS_ESCAPE[b as usize]) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing JSON into a Vec cannot fail");
    }
}

/// Appends one part-file line for a file: `{"path":..,"size":N,<fields>}`
/// on success, where `fields` is the task's result object whose members are
/// merged flat, or the error members on failure. Non-UTF-8 names also get
/// `raw_path_b64`.
pub fn push_part_line(
    out: &mut Vec<u8>,
    rel: &[u8],
    size: u64,
    outcome: &Result<String, FileFailure>,
) {
    out.extend_from_slice(b"{\"path\":");
    let utf8 = std::str::from_utf8(rel);
    match utf8 {
        Ok(s) => push_json_str(out, s),
        Err(_) => push_json_str(out, &String::from_utf8_lossy(rel)),
    }
    out.extend_from_slice(b",\"size\":");
    out.extend_from_slice(itoa::Buffer::new().format(size).as_bytes());
    match outcome {
        Ok(result_json) => {
            // The result is a JSON object; merge its members after ours.
            let inner = result_json.trim();
            let inner = inner
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or("");
            if !inner.trim().is_empty() {
                out.push(b',');
                out.extend_from_slice(inner.as_bytes());
            }
        }
        Err(failure) => {
            out.extend_from_slice(b",\"error\":");
            push_json_str(out, &failure.message);
            out.extend_from_slice(b",\"error_kind\":\"");
            out.extend_from_slice(failure.kind.as_str().as_bytes());
            out.push(b'"');
        }
    }
    if utf8.is_err() {
        out.extend_from_slice(b",\"raw_path_b64\":\"");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(rel)
                .as_bytes(),
        );
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
}

/// Writes `contents` to `dir/name` atomically: a temp file in the same
/// directory (so the rename never crosses file systems), then a rename over
/// the final name. Not yet durable: see the module doc. Returns the
/// final absolute path.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
    let final_path = dir.join(name);
    let tmp_path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp_path)?;
        file.write_all(contents)?;
        drop(file);
        std::fs::rename(&tmp_path, &final_path)
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(err);
    }
    Ok(final_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_line_merges_result_members_flat() {
        let mut out = Vec::new();
        push_part_line(
            &mut out,
            b"a/b.csv",
            12,
            &Ok(r#"{"columns":["x","y"]}"#.into()),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"path\":\"a/b.csv\",\"size\":12,\"columns\":[\"x\",\"y\"]}\n"
        );
    }

    #[test]
    fn json_strings_match_serde_json_escaping() {
        for s in [
            "plain",
            "",
            "say \"hi\"",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\u{1}\u{1f}",
            "del\u{7f}",
            "naïve ☃ 名前",
            "</script>",
        ] {
            let mut out = Vec::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn part_line_for_failure_and_non_utf8_name() {
        let mut out = Vec::new();
        let failure = FileFailure::new(FailureKind::InvalidData, "empty file: no header row");
        push_part_line(&mut out, b"bad\xff.csv", 0, &Err(failure));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["error_kind"], "invalid_data");
        assert_eq!(line["raw_path_b64"], "YmFk/y5jc3Y=");
        assert_eq!(line["path"], "bad\u{fffd}.csv");
    }

    #[test]
    fn atomic_write_leaves_only_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_atomic(dir.path(), "part-x-000000.jsonl", b"{}\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
