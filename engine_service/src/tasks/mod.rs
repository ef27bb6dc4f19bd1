//! The task registry: every task's name, version, description and option
//! and result JSON Schemas are declared here once, served by
//! GetCapabilities, and used to build a task from a Process start message.
//!
//! A task is a pure per-file function ([`Task::process_file`]) that runs on
//! the processing pool, plus a summary over all its results. Per-file
//! results are JSON objects; the engine writes them merged into part-file
//! lines and groups identical results for the summary.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::results::FileFailure;

pub mod csv_header;

/// One file's outcome: its size and the task's result object or failure.
pub struct FileOutcome {
    pub size: u64,
    pub result: std::result::Result<String, FileFailure>,
}

/// A task as the engine runs it.
pub trait Task: Send + Sync {
    /// Processes one file. `known_size` is the size from the listing, if any
    /// (the task then need not stat the file).
    fn process_file(&self, path: &Path, known_size: Option<u64>) -> FileOutcome;
    /// The summary JSON of all results.
    fn summarize(&self, agg: &Aggregate) -> serde_json::Value;
}

/// What the registry knows of a task.
pub struct TaskInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub options_schema: fn() -> serde_json::Value,
    pub result_schema: fn() -> serde_json::Value,
    /// Builds the task from its options JSON ("" means defaults); the error
    /// is a sentence naming the bad option.
    pub build: fn(&str) -> std::result::Result<Arc<dyn Task>, String>,
}

/// All tasks this engine runs.
pub static TASKS: &[TaskInfo] = &[csv_header::INFO];

/// Finds a task by name and builds it from its options.
pub fn build(name: &str, options_json: &str) -> Result<Arc<dyn Task>> {
    let info = TASKS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| EngineError::UnknownTask {
            name: name.to_owned(),
            known: TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        })?;
    (info.build)(options_json).map_err(|message| EngineError::BadOptions {
        task: name.to_owned(),
        message,
    })
}

/// Identical results grouped, for the summary; built per batch on worker
/// threads and merged once per batch.
#[derive(Debug, Default)]
pub struct Aggregate {
    /// result JSON -> (files, example path)
    pub groups: HashMap<String, (u64, String)>,
    pub files: u64,
    pub failed: u64,
}

impl Aggregate {
    pub fn add(&mut self, rel: &[u8], result: &std::result::Result<String, FileFailure>) {
        self.files += 1;
        match result {
            Ok(json) => match self.groups.get_mut(json.as_str()) {
                Some(g) => g.0 += 1,
                None => {
                    let example = String::from_utf8_lossy(rel).into_owned();
                    self.groups.insert(json.clone(), (1, example));
                }
            },
            Err(_) => self.failed += 1,
        }
    }

    pub fn merge(&mut self, other: Aggregate) {
        self.files += other.files;
        self.failed += other.failed;
        for (key, (n, example)) in other.groups {
            self.groups
                .entry(key)
                .and_modify(|g| g.0 += n)
                .or_insert((n, example));
        }
    }
}
