//! Which files of a source take part: the contract's `Filters`, compiled once
//! per request into matchers the walker calls per entry without allocating.
//!
//! Globs match the '/'-separated path relative to the root. Exclude globs
//! also prune directories (a directory matching `build` or `build/**` is not
//! entered). Extensions compare ASCII case-insensitively. Size and time
//! bounds need a stat per file, so [`Filters::needs_metadata`] tells the
//! walker whether to pay for one.
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{EngineError, Result};
use crate::pb;

/// The filters as plain data, built from the proto or from the CLI.
#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub extensions: Vec<String>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Unix nanoseconds, inclusive.
    pub modified_after_ns: Option<i128>,
    /// Unix nanoseconds, exclusive.
    pub modified_before_ns: Option<i128>,
    pub include_hidden: bool,
    pub follow_symlinks: bool,
    /// 0 means no limit.
    pub max_depth: u32,
}

fn timestamp_ns(ts: &prost_types::Timestamp) -> i128 {
    ts.seconds as i128 * 1_000_000_000 + ts.nanos as i128
}

impl From<&pb::Filters> for FilterSpec {
    fn from(f: &pb::Filters) -> Self {
        FilterSpec {
            include: f.include.clone(),
            exclude: f.exclude.clone(),
            extensions: f.extensions.clone(),
            min_size: f.min_size,
            max_size: f.max_size,
            modified_after_ns: f.modified_after.as_ref().map(timestamp_ns),
            modified_before_ns: f.modified_before.as_ref().map(timestamp_ns),
            include_hidden: f.include_hidden,
            follow_symlinks: f.follow_symlinks,
            max_depth: f.max_depth.unwrap_or(0),
        }
    }
}

/// Compiled filters, shared read-only by all walker threads.
#[derive(Debug)]
pub struct Filters {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// Lower-cased extensions without the dot; empty means any.
    extensions: Vec<Vec<u8>>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    pub modified_after_ns: Option<i128>,
    pub modified_before_ns: Option<i128>,
    pub include_hidden: bool,
    pub follow_symlinks: bool,
    pub max_depth: u32,
}

fn build_set(globs: &[String], what: &str) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        let glob: Glob = GlobBuilder::new(g)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| EngineError::InvalidArgument(format!("invalid {what} glob {g:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| EngineError::InvalidArgument(format!("invalid {what} globs: {e}")))
}

impl Filters {
    pub fn compile(spec: &FilterSpec) -> Result<Self> {
        if let (Some(lo), Some(hi)) = (spec.min_size, spec.max_size) {
            if lo > hi {
                return Err(EngineError::InvalidArgument(format!(
                    "min_size ({lo}) is greater than max_size ({hi})"
                )));
            }
        }
        let extensions = spec
            .extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase().into_bytes())
            .filter(|e| !e.is_empty())
            .collect();
        Ok(Filters {
            include: build_set(&spec.include, "include")?,
            exclude: build_set(&spec.exclude, "exclude")?,
            extensions,
            min_size: spec.min_size,
            max_size: spec.max_size,
            modified_after_ns: spec.modified_after_ns,
            modified_before_ns: spec.modified_before_ns,
            include_hidden: spec.include_hidden,
            follow_symlinks: spec.follow_symlinks,
            max_depth: spec.max_depth,
        })
    }

    /// Whether deciding on a file needs its size or mtime.
    pub fn needs_metadata(&self) -> bool {
        self.min_size.is_some()
            || self.max_size.is_some()
            || self.modified_after_ns.is_some()
            || self.modified_before_ns.is_some()
    }

    /// Hidden names are skipped unless asked for.
    #[inline]
    pub fn skip_hidden(&self, name: &[u8]) -> bool {
        !self.include_hidden && name.first() == Some(&b'.')
    }

    /// Whether a directory (path relative to root) is pruned by an exclude.
    pub fn prunes_dir(&self, rel: &[u8]) -> bool {
        let Some(exclude) = &self.exclude else {
            return false;
        };
        let rel = path_of(rel);
        if exclude.is_match(rel) {
            return true;
        }
        // "dir/**" names everything under dir; test a child to prune dir.
        let mut probe = rel.as_os_str().to_owned();
        probe.push("/\u{1}");
        exclude.is_match(std::path::Path::new(&probe))
    }

    /// Name-based checks for a file: hidden is checked by the walker.
    pub fn matches_name(&self, rel: &[u8], name: &[u8]) -> bool {
        if !self.extensions.is_empty() {
            let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
                return false;
            };
            let ext = &name[dot + 1..];
            if !self
                .extensions
                .iter()
                .any(|e| e.len() == ext.len() && e.eq_ignore_ascii_case(ext))
            {
                return false;
            }
        }
        if self.include.is_none() && self.exclude.is_none() {
            return true;
        }
        let path = path_of(rel);
        if let Some(include) = &self.include {
            if !include.is_match(path) {
                return false;
            }
        }
        if let Some(exclude) = &self.exclude {
            if exclude.is_match(path) {
                return false;
            }
        }
        true
    }

    /// Size and mtime checks, once metadata is known.
    pub fn matches_metadata(&self, size: u64, mtime_ns: i128) -> bool {
        self.min_size.is_none_or(|lo| size >= lo)
            && self.max_size.is_none_or(|hi| size <= hi)
            && self.modified_after_ns.is_none_or(|a| mtime_ns >= a)
            && self.modified_before_ns.is_none_or(|b| mtime_ns < b)
    }
}

fn path_of(rel: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(spec: FilterSpec) -> Filters {
        Filters::compile(&spec).unwrap()
    }

    #[test]
    fn include_and_exclude_globs_are_relative_to_root() {
        let f = compile(FilterSpec {
            include: vec!["**/*.csv".into()],
            exclude: vec!["tmp/**".into()],
            ..Default::default()
        });
        assert!(f.matches_name(b"a.csv", b"a.csv"));
        assert!(f.matches_name(b"x/y/a.csv", b"a.csv"));
        assert!(!f.matches_name(b"x/a.txt", b"a.txt"));
        assert!(!f.matches_name(b"tmp/a.csv", b"a.csv"));
        assert!(f.prunes_dir(b"tmp"));
        assert!(!f.prunes_dir(b"data"));
    }

    #[test]
    fn exclude_by_directory_name_prunes_it() {
        let f = compile(FilterSpec {
            exclude: vec!["**/node_modules".into()],
            ..Default::default()
        });
        assert!(f.prunes_dir(b"a/node_modules"));
        assert!(f.prunes_dir(b"node_modules"));
    }

    #[test]
    fn extensions_are_case_insensitive_without_dot() {
        let f = compile(FilterSpec {
            extensions: vec!["CSV".into(), ".tsv".into()],
            ..Default::default()
        });
        assert!(f.matches_name(b"a.csv", b"a.csv"));
        assert!(f.matches_name(b"a.Csv", b"a.Csv"));
        assert!(f.matches_name(b"b.TSV", b"b.TSV"));
        assert!(!f.matches_name(b"a.csvx", b"a.csvx"));
        assert!(!f.matches_name(b"csv", b"csv"));
    }

    #[test]
    fn size_bounds_are_inclusive_and_mtime_before_exclusive() {
        let f = compile(FilterSpec {
            min_size: Some(10),
            max_size: Some(20),
            modified_after_ns: Some(100),
            modified_before_ns: Some(200),
            ..Default::default()
        });
        assert!(f.needs_metadata());
        assert!(f.matches_metadata(10, 100));
        assert!(f.matches_metadata(20, 199));
        assert!(!f.matches_metadata(9, 150));
        assert!(!f.matches_metadata(21, 150));
        assert!(!f.matches_metadata(15, 200));
        assert!(!f.matches_metadata(15, 99));
    }

    #[test]
    fn min_above_max_is_rejected() {
        let err = Filters::compile(&FilterSpec {
            min_size: Some(5),
            max_size: Some(1),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("min_size"));
    }

    #[test]
    fn hidden_names_skipped_by_default() {
        let f = compile(FilterSpec::default());
        assert!(f.skip_hidden(b".git"));
        assert!(!f.skip_hidden(b"git"));
        let f = compile(FilterSpec {
            include_hidden: true,
            ..Default::default()
        });
        assert!(!f.skip_hidden(b".git"));
    }

    #[test]
    fn bad_glob_is_invalid_argument() {
        let err = Filters::compile(&FilterSpec {
            include: vec!["a[".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("include glob"));
    }
}
