//! Task `inventory`: per-file path, size, modified time and extension; the
//! summary counts files and bytes by extension and by top-level folder and
//! lists the largest files. One `stat` per file, nothing read.
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use serde_json::json;

use super::{parse_options, Aggregate, FileCtx, FileOutcome, Task, TaskInfo};
use crate::results::FileFailure;

pub const INFO: TaskInfo = TaskInfo {
    name: "inventory",
    version: "1",
    description: "Lists each file's size, modified time and extension; summary by extension, top-level folder and largest files.",
    options_schema,
    result_schema,
    writes_files: false,
    size_independent: true,
    build,
};

fn options_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "inventory options",
        "type": "object",
        "additionalProperties": false,
        "properties": {}
    })
}

fn result_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "modified": {"type": "string", "description": "RFC 3339, UTC."},
            "extension": {"type": "string", "description": "Lower case, without the dot; empty when none."},
            "folder": {"type": "string", "description": "Top-level folder, or \".\" for files at the root."}
        }
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Options {}

struct Inventory;

fn build(options_json: &str) -> Result<Arc<dyn Task>, String> {
    let _: Options = parse_options(options_json)?;
    Ok(Arc::new(Inventory))
}

/// RFC 3339 UTC from Unix seconds (civil-from-days, H. Hinnant).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The result for file `rel` of `size` bytes modified at `secs`.
fn listed(rel: &[u8], size: u64, secs: i64) -> FileOutcome {
    let (ext, folder) = parts(rel);
    FileOutcome {
        size,
        result: Ok(
            json!({"modified": rfc3339(secs), "extension": ext, "folder": folder}).to_string(),
        ),
    }
}

fn parts(rel: &[u8]) -> (String, String) {
    let s = String::from_utf8_lossy(rel);
    let folder = match s.split_once('/') {
        Some((top, _)) => top.to_owned(),
        None => ".".to_owned(),
    };
    let ext = Path::new(s.as_ref())
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    (ext, folder)
}

impl Task for Inventory {
    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        match std::fs::symlink_metadata(ctx.path) {
            Ok(m) => {
                let secs = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                listed(ctx.rel, m.len(), secs)
            }
            Err(e) => FileOutcome {
                size: ctx.known_size.unwrap_or(0),
                result: Err(FileFailure::from_io(&e, "reading the file's metadata")),
            },
        }
    }

    /// An object's size and time are all an inventory needs: S3 objects
    /// are taken from the listing, not downloaded, and keep their own time
    /// (a staged copy's was the run's).
    fn metadata_only(&self) -> bool {
        true
    }

    fn process_metadata(&self, rel: &[u8], size: u64, mtime: i64) -> FileOutcome {
        listed(rel, size, mtime)
    }

    fn account(&self, agg: &mut Aggregate, rel: &[u8], size: u64, r: &Result<String, FileFailure>) {
        agg.files += 1;
        if r.is_err() {
            agg.failed += 1;
            return;
        }
        let (ext, folder) = parts(rel);
        agg.group(&format!("ext:{ext}"), size, rel);
        agg.group(&format!("dir:{folder}"), size, rel);
        agg.count("bytes", size);
        agg.offer_largest(size, rel);
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        let by = |prefix: &str, label: &str| {
            let mut rows: Vec<(u64, u64, &str)> = agg
                .groups
                .iter()
                .filter_map(|(k, (n, _))| {
                    let name = k.strip_prefix(prefix)?;
                    let bytes = agg
                        .counters
                        .get(&format!("bytes:{k}"))
                        .copied()
                        .unwrap_or(0);
                    Some((bytes, *n, name))
                })
                .collect();
            rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(b.2)));
            rows.into_iter()
                .map(|(bytes, n, name)| json!({label: name, "files": n, "bytes": bytes}))
                .collect::<Vec<_>>()
        };
        json!({
            "files": agg.files,
            "failed": agg.failed,
            "bytes": agg.counters.get("bytes").copied().unwrap_or(0),
            "by_extension": by("ext:", "extension"),
            "by_folder": by("dir:", "folder"),
            "largest": agg.largest.iter().map(|(s, p)| json!({"path": p, "size": s})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn summary_by_extension_folder_and_largest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        std::fs::write(dir.path().join("logs/a.LOG"), vec![0u8; 300]).unwrap();
        std::fs::write(dir.path().join("logs/b.log"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join("c.csv"), vec![0u8; 50]).unwrap();
        let task = build("").unwrap();
        let mut agg = Aggregate::default();
        for rel in ["logs/a.LOG", "logs/b.log", "c.csv"] {
            let out = task.process(&FileCtx {
                path: &dir.path().join(rel),
                rel: rel.as_bytes(),
                known_size: None,
                destination: None,
                outputs: None,
                elsewhere: None,
                cancel: None,
                staged: false,
            });
            task.account(&mut agg, rel.as_bytes(), out.size, &out.result);
        }
        let s = task.summarize(&agg);
        assert_eq!(s["bytes"], 450);
        assert_eq!(
            s["by_extension"][0],
            json!({"extension": "log", "files": 2, "bytes": 400})
        );
        assert_eq!(
            s["by_folder"][1],
            json!({"folder": ".", "files": 1, "bytes": 50})
        );
        assert_eq!(s["largest"][0]["path"], "logs/a.LOG");
    }
}
