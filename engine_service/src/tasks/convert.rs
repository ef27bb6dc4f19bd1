//! Task `convert`: CSV to JSON Lines, CSV to Parquet and JSON Lines to CSV,
//! streamed (flat memory), written atomically under the destination.
//!
//! From CSV, the header row names the keys or columns, made distinct first
//! ([`distinct_names`]: `a,a` becomes `a`, `a_2`), so no value is dropped.
//!
//! CSV to JSONL: the header row names the keys; with `infer_types` a field
//! that is already a JSON number, `true` or `false` is written as that JSON
//! text, unchanged, and an empty field as null ([`json_literal`]); any
//! other field stays a string. JSONL to CSV reads the file twice: once for
//! the union of keys (in order of first appearance), once to write rows, so
//! memory holds only the column names. Every value is written as it is in
//! the line (numbers keep their digits, nested values their JSON text);
//! strings are unescaped and null is an empty cell. A UTF-8 byte order mark
//! before the first line is skipped, as the CSV readers skip one.
//!
//! CSV to Parquet: column types are inferred by `arrow-csv` from the first
//! `sample_rows` records (integers, floats, booleans, dates, else strings;
//! a column empty in all of them is a string column too), and the `types`
//! option overrides any column. The file is then read again in batches of
//! 8,192 rows and written with row groups of at most 65,536 rows, so memory
//! is bounded by one row group whatever the file size. A value that does
//! not fit its column's type fails the file, named by its line (see
//! [`Convert::misfit`]). Only the arrow crates the reader and writer need
//! are compiled (no compute kernels).
//!
//! Every input is read through [`LineLimit`]: a line (a CSV record or a
//! JSON line) longer than `max_line_bytes` fails the file. Without it a file
//! with no line breaks (a dump, binary data named `.csv`) was one record,
//! held whole several times over: a 400 MB line took 2.4 GB on its way to
//! Parquet, and a big enough one would take the engine down with every job
//! on it.
use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::csv_quotes::QuotesClosed;
use super::{parse_options, Aggregate, Cancellable, FileCtx, FileOutcome, Task, TaskInfo};
use crate::output::{
    existing_schema, output_for, skipped_exists, write_failure, AtomicFile, Committed, Existing,
};
use crate::results::{FailureKind, FileFailure};

pub const INFO: TaskInfo = TaskInfo {
    name: "convert",
    version: "1",
    description:
        "Converts CSV to JSON Lines or Parquet (types inferred, overridable) and JSON Lines to CSV.",
    options_schema,
    result_schema,
    writes_files: true,
    size_independent: false,
    build,
};

fn options_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "convert options",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "to": {"description": "Output format; the input format comes from the extension (.csv/.tsv or .jsonl/.ndjson).",
                   "enum": ["jsonl", "csv", "parquet"], "default": "jsonl"},
            "types": {"description": "CSV to Parquet: column name -> type, overriding the inferred one.",
                      "type": "object",
                      "additionalProperties": {"enum": ["string", "int64", "float64", "boolean"]},
                      "default": {}},
            "sample_rows": {"description": "CSV to Parquet: records read to infer column types.",
                            "type": "integer", "minimum": 1, "maximum": 1000000, "default": 1000},
            "compression": {"description": "Parquet compression.", "enum": ["snappy", "zstd", "none"], "default": "snappy"},
            "delimiter": {"description": "CSV delimiter (input or output).", "enum": [",", ";", "\t", "|"], "default": ","},
            "infer_types": {"description": "CSV to JSONL: a field that is already a JSON number, true or false is written as it is (1.50 stays 1.50; 02134, +5 and TRUE stay strings), and an empty field as null.",
                            "type": "boolean", "default": false},
            "max_line_bytes": {"description": "Longest line (CSV record or JSON line) read; a longer one fails the file, so that a file without line breaks cannot take the engine's memory.",
                               "type": "integer", "minimum": 1024, "maximum": 1073741824, "default": DEFAULT_MAX_LINE_BYTES},
            "existing": existing_schema()
        }
    })
}

fn result_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"output": {"type": "string"}, "rows": {"type": "integer"}, "skipped": {"type": "string"}}
    })
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum To {
    #[default]
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ColumnType {
    String,
    Int64,
    Float64,
    Boolean,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Compression {
    #[default]
    Snappy,
    Zstd,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    to: To,
    delimiter: String,
    infer_types: bool,
    existing: Existing,
    types: std::collections::BTreeMap<String, ColumnType>,
    sample_rows: usize,
    compression: Compression,
    max_line_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            to: To::Jsonl,
            delimiter: ",".into(),
            infer_types: false,
            existing: Existing::Skip,
            types: Default::default(),
            sample_rows: 1000,
            compression: Compression::Snappy,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// 16 MiB: far above real records, and with the readers' copies of a
/// record, about 100 MB per thread at worst.
const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// A reader that fails once `max` bytes pass without a line break, and says
/// so in `tripped` (the CSV and Arrow readers wrap the error in their own).
struct LineLimit<'a, R> {
    inner: R,
    max: usize,
    /// Bytes since the last `\n`.
    run: usize,
    tripped: &'a Cell<bool>,
}

impl<R: Read> Read for LineLimit<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        // Every line that ends in this chunk, then the one it leaves open.
        let mut start = 0;
        let mut longest = 0;
        for end in memchr::memchr_iter(b'\n', &buf[..n]) {
            longest = longest.max(self.run + end - start);
            self.run = 0;
            start = end + 1;
        }
        self.run += n - start;
        if longest.max(self.run) > self.max {
            self.tripped.set(true);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line longer than max_line_bytes",
            ));
        }
        Ok(n)
    }
}

/// A convert input: buffered, cancellable, with a bound on line length.
type Input<'a> = BufReader<LineLimit<'a, Cancellable<'a, File>>>;

/// A CSV input: also fails when the file ends inside quotes.
type CsvInput<'a> = BufReader<QuotesClosed<LineLimit<'a, Cancellable<'a, File>>>>;

struct Convert {
    o: Options,
    delimiter: u8,
}

fn build(options_json: &str) -> Result<Arc<dyn Task>, String> {
    let o: Options = parse_options(options_json)?;
    let delimiter = match o.delimiter.as_str() {
        "," => b',',
        ";" => b';',
        "\t" => b'\t',
        "|" => b'|',
        other => return Err(format!("delimiter {other:?} is not one of , ; tab |")),
    };
    if o.sample_rows == 0 {
        return Err("sample_rows must be at least 1".into());
    }
    if !(1024..=1 << 30).contains(&o.max_line_bytes) {
        return Err("max_line_bytes must be between 1024 and 1073741824".into());
    }
    Ok(Arc::new(Convert { o, delimiter }))
}

/// The header's names made distinct, so that no value is dropped: JSON
/// objects and Parquet schemas need one name per column, and `a,a` kept one
/// value of each row and lost the other without a word (an empty name, as
/// in `,x`, the same). A repeated name gets `_2`, `_3`, ... and an empty one
/// `column_N` (its 1-based position), each skipping names the header already
/// has; the first of each name and every other name are kept as they are.
fn distinct_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut taken = std::collections::HashSet::new();
    let first: Vec<bool> = names
        .iter()
        .map(|n| !n.is_empty() && taken.insert((*n).to_owned()))
        .collect();
    names
        .iter()
        .zip(first)
        .enumerate()
        .map(|(i, (name, first))| {
            if first {
                return (*name).to_owned();
            }
            let base = if name.is_empty() {
                format!("column_{}", i + 1)
            } else {
                (*name).to_owned()
            };
            let mut candidate = base.clone();
            let mut k = 2;
            while !taken.insert(candidate.clone()) {
                candidate = format!("{base}_{k}");
                k += 1;
            }
            candidate
        })
        .collect()
}

/// With `infer_types`, the JSON text a CSV field is written as, or None
/// when it is written as a string. A field is a number, `true` or `false`
/// only when it already is that JSON text, and it is then written as it
/// is: parsed and printed again, `02134` (a ZIP code) became `2134`, `+5`
/// `5` and `1.50` `1.5`, digits lost without a word. So a field reads back
/// from JSON as the text it was, and JSON Lines to CSV gives the CSV again.
/// For the same reason `TRUE` and `True` stay strings (true would not give
/// them back), as does the text `null`: an empty field is null, since CSV
/// has no other way to write one and JSON Lines to CSV writes null empty.
///
/// Integers past 64 bits used to stay strings because they went through
/// `f64` (`12345678901234567890123` came out `1.2345678901234568e22`);
/// written as their own text they keep every digit, so they are numbers
/// like any other. A number past `f64`'s range (`1e400`) still stays a
/// string: it is valid JSON, but serde_json refuses it and most other
/// readers make it infinity, so as a number it would lose its value.
fn json_literal(s: &str) -> Option<&str> {
    match s {
        "" => Some("null"),
        "true" | "false" => Some(s),
        _ if is_json_number(s) && s.parse::<f64>().is_ok_and(f64::is_finite) => Some(s),
        _ => None,
    }
}

/// Whether `s` is a number in JSON's grammar (RFC 8259, section 6): an
/// optional `-`, an integer part without leading zeros, then an optional
/// fraction and exponent, each with at least one digit. No `+` in front,
/// no `.5` or `5.`, no `inf` or `NaN`.
fn is_json_number(s: &str) -> bool {
    /// The number of ASCII digits at the start of `b`.
    fn digits(b: &[u8]) -> usize {
        b.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let mut b = s.as_bytes();
    b = b.strip_prefix(b"-").unwrap_or(b);
    match digits(b) {
        0 => return false,
        n if n > 1 && b[0] == b'0' => return false,
        n => b = &b[n..],
    }
    if let Some(rest) = b.strip_prefix(b".") {
        match digits(rest) {
            0 => return false,
            n => b = &rest[n..],
        }
    }
    if let Some(rest) = b.strip_prefix(b"e").or_else(|| b.strip_prefix(b"E")) {
        let rest = rest
            .strip_prefix(b"+")
            .or_else(|| rest.strip_prefix(b"-"))
            .unwrap_or(rest);
        match digits(rest) {
            0 => return false,
            n => b = &rest[n..],
        }
    }
    b.is_empty()
}

fn bad(msg: impl std::fmt::Display) -> FileFailure {
    FileFailure::new(FailureKind::InvalidData, msg.to_string())
}

/// One JSON Lines object: its keys and values in the order written, each
/// value as its own JSON text. A repeated key is kept twice; its users let
/// the later one win, as `serde_json::Map` does.
type RawObject<'a> = Vec<(String, &'a RawValue)>;

/// A UTF-8 byte order mark, which some Windows tools put before the text.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Calls `f` with the 1-based line number and object of every non-blank
/// line of `input`; a line that is not UTF-8, not JSON or not an object
/// fails the file with its line number. A byte order mark before the first
/// line is skipped: it is not JSON, and failed a file the CSV readers
/// (which skip one) would have taken.
fn for_each_object(
    input: impl BufRead,
    mut f: impl FnMut(usize, &RawObject<'_>) -> Result<(), FileFailure>,
) -> Result<(), FileFailure> {
    for (i, line) in input.split(b'\n').enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| FileFailure::from_io(&e, "reading the file"))?;
        let skipped = if n == 1 && line.starts_with(BOM) {
            BOM.len()
        } else {
            0
        };
        let text = std::str::from_utf8(&line[skipped..]).map_err(|e| {
            bad(format!(
                "line {n}: not valid UTF-8 (byte {} of the line), which JSON must be",
                skipped + e.valid_up_to() + 1
            ))
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<TopLevel<'_>>(text) {
            Ok(TopLevel(entries)) => entries,
            // Valid JSON of another type (an array, a string, ...).
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                return Err(bad(format!("line {n}: not a JSON object")))
            }
            Err(e) => return Err(bad(format!("line {n}: not JSON: {e}"))),
        };
        f(n, &obj)?;
    }
    Ok(())
}

/// A JSON object parsed only as far as its top level: its entries, with
/// their values as raw text.
struct TopLevel<'a>(RawObject<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = TopLevel<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut entries: RawObject<'a> = Vec::new();
                while let Some(entry) = m.next_entry::<String, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(TopLevel(entries))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A CSV cell from a JSON value: a string unescaped, null (or no value) an
/// empty cell, and anything else exactly as written in the line. Numbers
/// keep their digits: through `f64`, `12345678901234567890123` became
/// `1.2345678901234568e22` and `0.10` became `0.1`.
fn cell_text(v: Option<&RawValue>) -> Result<std::borrow::Cow<'_, str>, serde_json::Error> {
    let Some(v) = v else {
        return Ok("".into());
    };
    let raw = v.get();
    Ok(match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<std::borrow::Cow<'_, str>>(raw)?,
        Some(b'n') => "".into(), // null: the only value that starts with n
        _ => raw.into(),
    })
}

impl Convert {
    /// The input, read through [`FileCtx::cancellable`] and [`LineLimit`].
    fn open<'a>(
        &self,
        ctx: &FileCtx<'a>,
        tripped: &'a Cell<bool>,
    ) -> Result<Input<'a>, FileFailure> {
        Ok(BufReader::with_capacity(
            256 * 1024,
            self.limited(ctx, tripped)?,
        ))
    }

    /// A CSV input: [`Convert::open`]'s, and [`QuotesClosed`].
    fn open_csv<'a>(
        &self,
        ctx: &FileCtx<'a>,
        tripped: &'a Cell<bool>,
    ) -> Result<CsvInput<'a>, FileFailure> {
        Ok(BufReader::with_capacity(
            256 * 1024,
            QuotesClosed::new(self.limited(ctx, tripped)?, self.delimiter),
        ))
    }

    fn limited<'a>(
        &self,
        ctx: &FileCtx<'a>,
        tripped: &'a Cell<bool>,
    ) -> Result<LineLimit<'a, Cancellable<'a, File>>, FileFailure> {
        let f = crate::sandbox::open_regular(ctx.path)
            .map_err(|e| FileFailure::from_io(&e, "opening the file"))?;
        Ok(LineLimit {
            inner: ctx.cancellable(f),
            max: self.o.max_line_bytes,
            run: 0,
            tripped,
        })
    }

    fn csv_to_jsonl(
        &self,
        ctx: &FileCtx<'_>,
        tripped: &Cell<bool>,
        w: &mut impl Write,
    ) -> Result<u64, FileFailure> {
        let file = self.open_csv(ctx, tripped)?;
        let mut r = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .flexible(false)
            .from_reader(file);
        let headers = distinct_names(
            r.headers()
                .map_err(|e| bad(format!("bad CSV header: {e}")))?
                .iter(),
        );
        let mut rows = 0u64;
        let mut record = csv::StringRecord::new();
        let mut line = Vec::with_capacity(1024);
        while r
            .read_record(&mut record)
            .map_err(|e| bad(format!("bad CSV at row {}: {e}", rows + 2)))?
        {
            // The object written by hand, so that a field already JSON is
            // written as its own text (the names are distinct: no key twice).
            line.clear();
            line.push(b'{');
            for (i, (k, v)) in headers.iter().zip(record.iter()).enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                serde_json::to_writer(&mut line, k).map_err(bad)?;
                line.push(b':');
                match self.o.infer_types.then(|| json_literal(v)).flatten() {
                    Some(text) => line.extend_from_slice(text.as_bytes()),
                    None => serde_json::to_writer(&mut line, v).map_err(bad)?,
                }
            }
            line.extend_from_slice(b"}\n");
            w.write_all(&line)
                .map_err(|e| write_failure(&e, "writing the output"))?;
            rows += 1;
        }
        Ok(rows)
    }

    fn csv_to_parquet(
        &self,
        ctx: &FileCtx<'_>,
        tripped: &Cell<bool>,
        out: &mut File,
    ) -> Result<u64, FileFailure> {
        use arrow_schema::{ArrowError, DataType, Field, Schema};
        let open = || self.open_csv(ctx, tripped);
        let format = arrow_csv::reader::Format::default()
            .with_header(true)
            .with_delimiter(self.delimiter);
        let (inferred, _) = format
            .infer_schema(open()?, Some(self.o.sample_rows))
            .map_err(|e| bad(format!("cannot read the CSV: {e}")))?;
        let names = distinct_names(inferred.fields().iter().map(|f| f.name().as_str()));
        let inferred = Schema::new(
            inferred
                .fields()
                .iter()
                .zip(names)
                .map(|(f, name)| f.as_ref().clone().with_name(name))
                .collect::<Vec<Field>>(),
        );
        for name in self.o.types.keys() {
            if inferred.field_with_name(name).is_err() {
                return Err(bad(format!(
                    "option types names column {name:?}, which the header does not have"
                )));
            }
        }
        let fields: Vec<Field> = inferred
            .fields()
            .iter()
            .map(|f| {
                let dt = match self.o.types.get(f.name()) {
                    Some(ColumnType::String) => DataType::Utf8,
                    Some(ColumnType::Int64) => DataType::Int64,
                    Some(ColumnType::Float64) => DataType::Float64,
                    Some(ColumnType::Boolean) => DataType::Boolean,
                    // Empty in every sampled record: arrow infers Null, a
                    // type that holds no value, and every later value
                    // (`hello` in row 1501) was written as null without a
                    // word. A string holds anything.
                    None if f.data_type() == &DataType::Null => DataType::Utf8,
                    None => f.data_type().clone(),
                };
                Field::new(f.name(), dt, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let reader = arrow_csv::ReaderBuilder::new(schema.clone())
            .with_format(format)
            .with_batch_size(BATCH_ROWS)
            .build(open()?)
            .map_err(|e| bad(format!("cannot read the CSV: {e}")))?;
        let compression = match self.o.compression {
            Compression::Snappy => parquet::basic::Compression::SNAPPY,
            Compression::Zstd => parquet::basic::Compression::ZSTD(Default::default()),
            Compression::None => parquet::basic::Compression::UNCOMPRESSED,
        };
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(65_536))
            .build();
        let werr = |e: parquet::errors::ParquetError| match e {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<std::io::Error>() {
                    Ok(io) => write_failure(&io, "writing the output"),
                    Err(other) => bad(other),
                }
            }
            other => bad(format!("writing Parquet: {other}")),
        };
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(werr)?;
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| match e {
                ArrowError::IoError(..) => {
                    bad(format!("cannot read the CSV after row {rows}: {e}"))
                }
                e => bad(self.misfit(ctx, &schema, rows).unwrap_or_else(|| {
                    format!(
                        "a CSV record in rows {} to {} does not fit the column types: {e}; \
                         set the column's type with the types option",
                        rows + 1,
                        rows + BATCH_ROWS as u64
                    )
                })),
            })?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(werr)?;
        }
        writer.close().map_err(werr)?;
        Ok(rows)
    }

    /// What is wrong with the first record after the first `from` data
    /// rows that `schema` does not read, named by its line: arrow fails a
    /// whole batch of [`BATCH_ROWS`] records, so the batch's start was all
    /// the error had (`after row 0` for a bad value in row 1501), and its
    /// own "line" counts records after the header. Reads the file again
    /// with the csv crate up to the end of that batch (a second pass, on
    /// failure only), keeps the batch's records (as arrow held them), and
    /// halves them until one is left that arrow does not read: about twice
    /// the batch's parsing, where asking arrow record by record took 25
    /// seconds for 20 columns. None when the second pass finds nothing (the
    /// file changed, or arrow failed for another reason).
    fn misfit(&self, ctx: &FileCtx<'_>, schema: &SchemaRef, from: u64) -> Option<String> {
        // Its own flag: a long line met only by this pass is not the error.
        let tripped = Cell::new(false);
        let mut r = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .flexible(true)
            .from_reader(self.open_csv(ctx, &tripped).ok()?);
        let fields = schema.fields();
        let line = |r: &csv::ByteRecord| r.position().map_or(0, |p| p.line());
        // The batch's records up to the first that is not a record of the
        // header's width in UTF-8, which arrow fails before any value.
        let mut batch = Vec::new();
        let mut broken = None;
        let mut record = csv::ByteRecord::new();
        let mut rows = 0u64;
        while rows < from + BATCH_ROWS as u64 && r.read_byte_record(&mut record).ok()? {
            rows += 1;
            if rows <= from {
                continue;
            }
            if record.len() != fields.len() {
                let n = record.len();
                broken = Some(format!(
                    "line {}: {n} fields where the header has {}",
                    line(&record),
                    fields.len()
                ));
                break;
            }
            let not_utf8 = fields
                .iter()
                .zip(record.iter())
                .find(|(_, value)| std::str::from_utf8(value).is_err());
            if let Some((field, _)) = not_utf8 {
                broken = Some(format!(
                    "line {}: column {:?} is not valid UTF-8",
                    line(&record),
                    field.name()
                ));
                break;
            }
            batch.push(record.clone());
        }
        if reads(&batch, schema) {
            return broken;
        }
        // Records `lo..hi` hold one arrow does not read; the first such
        // is in the first half that arrow does not read.
        let (mut lo, mut hi) = (0, batch.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if reads(&batch[lo..mid], schema) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let record = &batch[lo];
        let (field, value) = fields.iter().zip(record.iter()).find(|(field, value)| {
            let one = Arc::new(arrow_schema::Schema::new(vec![field.as_ref().clone()]));
            !reads(&[csv::ByteRecord::from(vec![*value])], &one)
        })?;
        let name = field.name();
        let source = if self.o.types.contains_key(name) {
            "as the types option says".to_owned()
        } else {
            format!("inferred from the first {} records", self.o.sample_rows)
        };
        Some(format!(
            "line {}: {:?} in column {name:?} is not of type {} ({source}); \
             set the column's type with the types option",
            line(record),
            shortened(&String::from_utf8_lossy(value), 80),
            type_name(field.data_type()),
        ))
    }

    fn jsonl_to_csv(
        &self,
        ctx: &FileCtx<'_>,
        tripped: &Cell<bool>,
        w: &mut impl Write,
    ) -> Result<u64, FileFailure> {
        let open = || self.open(ctx, tripped);
        let mut columns: Vec<String> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for_each_object(open()?, |_, obj| {
            for (k, _) in obj {
                if !index.contains_key(k.as_str()) {
                    index.insert(k.clone(), columns.len());
                    columns.push(k.clone());
                }
            }
            Ok(())
        })?;
        // No keys (an empty or blank file, or lines of `{}` only): nothing
        // to write, not even a header. The csv crate writes an empty record
        // as `""`, which reads back as a column with an empty name.
        if columns.is_empty() {
            return Ok(0);
        }
        let mut out = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .from_writer(w);
        let werr = |e: csv::Error| match e.into_kind() {
            csv::ErrorKind::Io(io) => write_failure(&io, "writing the output"),
            other => bad(format!("{other:?}")),
        };
        out.write_record(&columns).map_err(werr)?;
        let mut rows = 0u64;
        // Per column, the index in the line's object of its value.
        let mut fields: Vec<Option<usize>> = Vec::with_capacity(columns.len());
        for_each_object(open()?, |line, obj| {
            fields.clear();
            fields.resize(columns.len(), None);
            for (j, (k, _)) in obj.iter().enumerate() {
                // A key the first pass did not see: the file changed between
                // the passes (which the caller's check also catches).
                let i = *index.get(k.as_str()).ok_or_else(|| {
                    bad(format!(
                        "line {line}: key {k:?} appeared after the file was first read"
                    ))
                })?;
                fields[i] = Some(j);
            }
            let cells = fields
                .iter()
                .map(|j| cell_text(j.map(|j| obj[j].1)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("line {line}: {e}")))?;
            out.write_record(cells.iter().map(|c| c.as_bytes()))
                .map_err(werr)?;
            rows += 1;
            Ok(())
        })?;
        out.flush()
            .map_err(|e| write_failure(&e, "writing the output"))?;
        Ok(rows)
    }

    /// The output extension for an input named `rel`, None when this
    /// conversion does not take its type.
    fn out_ext(&self, rel: &Path) -> Option<&'static str> {
        let ext = rel
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let from_csv = matches!(ext.as_str(), "csv" | "tsv");
        let from_jsonl = matches!(ext.as_str(), "jsonl" | "ndjson");
        match (self.o.to, from_csv, from_jsonl) {
            (To::Jsonl, true, _) => Some("jsonl"),
            (To::Parquet, true, _) => Some("parquet"),
            (To::Csv, _, true) => Some("csv"),
            _ => None,
        }
    }

    fn run(&self, ctx: &FileCtx<'_>) -> Result<String, FileFailure> {
        let rel = Path::new(std::ffi::OsStr::from_bytes(ctx.rel));
        let Some(out_ext) = self.out_ext(rel) else {
            return Ok(no_conversion());
        };
        let (out_path, out_rel) = output_for(ctx.destination, ctx.path, rel, |name| {
            output_name(name, out_ext)
        })?;
        if self.o.existing != Existing::Overwrite && ctx.output_exists(&out_path) {
            if self.o.existing == Existing::Skip {
                return Ok(skipped_exists(&out_rel));
            }
            return Err(ctx.exists_failure(&out_path));
        }
        let mut out = AtomicFile::create(&out_path)?;
        let tripped = Cell::new(false);
        let converted = if self.o.to == To::Parquet {
            self.csv_to_parquet(ctx, &tripped, out.file())
        } else {
            let mut w = BufWriter::with_capacity(256 * 1024, out.file());
            if out_ext == "jsonl" {
                self.csv_to_jsonl(ctx, &tripped, &mut w)
            } else {
                self.jsonl_to_csv(ctx, &tripped, &mut w)
            }
            .and_then(|rows| {
                w.flush()
                    .map_err(|e| write_failure(&e, "writing the output"))?;
                Ok(rows)
            })
        };
        let rows = match converted {
            Err(_) if tripped.get() => {
                return Err(FileFailure::new(
                    FailureKind::LimitExceeded,
                    format!(
                        "a line is longer than max_line_bytes ({} bytes): not line-based text? \
                         (raise max_line_bytes to convert it anyway)",
                        self.o.max_line_bytes
                    ),
                ))
            }
            other => other?,
        };
        let skipped_result = skipped_exists(&out_rel);
        if out.publish(ctx.outputs, self.o.existing, skipped_result.clone(), None)?
            == Committed::Skipped
        {
            return Ok(skipped_result);
        }
        Ok(json!({"output": out_rel.to_string_lossy(), "rows": rows}).to_string())
    }
}

/// Records per batch read from a CSV on its way to Parquet.
const BATCH_ROWS: usize = 8192;

/// Whether arrow reads `records` with `schema` as the batch reader does
/// (an empty value is null): they are written out as CSV again and read
/// back, so that the rules are arrow's own, not a copy of them.
fn reads(records: &[csv::ByteRecord], schema: &SchemaRef) -> bool {
    let mut w = csv::Writer::from_writer(Vec::new());
    if records.iter().any(|r| w.write_byte_record(r).is_err()) {
        return false;
    }
    let Ok(text) = w.into_inner() else {
        return false;
    };
    arrow_csv::ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH_ROWS)
        .build(std::io::Cursor::new(text))
        .is_ok_and(|mut batches| batches.all(|b| b.is_ok()))
}

/// A column type as the `types` option names it, where it has a name.
fn type_name(t: &arrow_schema::DataType) -> String {
    use arrow_schema::DataType;
    match t {
        DataType::Utf8 => "string".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        other => other.to_string(),
    }
}

/// `s`, or its first `max` characters and an ellipsis.
fn shortened(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]).into(),
        None => s.into(),
    }
}

/// `name` with its extension replaced by `out_ext`.
fn output_name(name: &std::ffi::OsStr, out_ext: &str) -> std::ffi::OsString {
    let mut n = Path::new(name).file_stem().unwrap_or(name).to_os_string();
    n.push(".");
    n.push(out_ext);
    n
}

/// The result for a file whose extension this conversion does not read.
fn no_conversion() -> String {
    json!({"skipped": "no conversion for this file type"}).to_string()
}

impl Task for Convert {
    fn skipped_by_name(&self, rel: &Path) -> Option<String> {
        self.out_ext(rel).is_none().then(no_conversion)
    }

    fn planned_output(&self, rel: &Path) -> Option<std::path::PathBuf> {
        Some(rel.with_file_name(output_name(rel.file_name()?, self.out_ext(rel)?)))
    }

    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        let size = std::fs::metadata(ctx.path).map_or(ctx.known_size.unwrap_or(0), |m| m.len());
        FileOutcome {
            size,
            result: self.run(ctx),
        }
    }

    fn account(
        &self,
        agg: &mut Aggregate,
        _rel: &[u8],
        _size: u64,
        r: &Result<String, FileFailure>,
    ) {
        agg.files += 1;
        match r {
            Err(_) => agg.failed += 1,
            Ok(j) if j.contains("\"skipped\"") => agg.count("skipped", 1),
            Ok(j) => {
                let v: Value = serde_json::from_str(j).unwrap_or_default();
                agg.count("converted", 1);
                agg.count("rows", v["rows"].as_u64().unwrap_or(0));
            }
        }
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        let c = |k: &str| agg.counters.get(k).copied().unwrap_or(0);
        json!({"files": agg.files, "failed": agg.failed, "converted": c("converted"),
               "skipped": c("skipped"), "rows": c("rows")})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(o: &str, root: &Path, rel: &str, dest: &Path) -> Result<Value, FileFailure> {
        build(o)
            .unwrap()
            .process(&FileCtx {
                path: &root.join(rel),
                rel: rel.as_bytes(),
                known_size: None,
                destination: Some(dest),
                outputs: None,
                elsewhere: None,
                cancel: None,
                staged: false,
            })
            .result
            .map(|j| serde_json::from_str(&j).unwrap())
    }

    #[test]
    fn a_line_longer_than_max_line_bytes_fails_the_file_in_every_direction() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        let long = "x".repeat(3000);
        // The long line comes after a good one, past the first read's start.
        std::fs::write(src.path().join("t.csv"), format!("a,b\n1,2\n3,{long}\n")).unwrap();
        std::fs::write(
            src.path().join("t.jsonl"),
            format!("{{\"a\":1}}\n{{\"a\":\"{long}\"}}\n"),
        )
        .unwrap();
        for (to, rel) in [("jsonl", "t.csv"), ("parquet", "t.csv"), ("csv", "t.jsonl")] {
            let options = format!(r#"{{"to":"{to}","max_line_bytes":2048}}"#);
            let failure = run(&options, src.path(), rel, &dest).unwrap_err();
            assert_eq!(
                failure.kind,
                FailureKind::LimitExceeded,
                "{to}: {}",
                failure.message
            );
            assert!(
                failure.message.contains("max_line_bytes (2048 bytes)"),
                "{}",
                failure.message
            );
            // Within the limit, the same file converts.
            let options = format!(r#"{{"to":"{to}","max_line_bytes":4096}}"#);
            assert_eq!(
                run(&options, src.path(), rel, &dest).unwrap()["rows"],
                2,
                "{to}"
            );
            for entry in std::fs::read_dir(&dest).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
        assert!(build(r#"{"max_line_bytes":10}"#).is_err());
    }

    #[test]
    fn a_csv_that_ends_inside_quotes_fails_instead_of_losing_its_rows() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        // A stray quote in the header, and one in the last field of a row:
        // both swallowed every following line without an error.
        std::fs::write(src.path().join("head.csv"), "\"a,b\n1,2\n3,4\n").unwrap();
        std::fs::write(src.path().join("row.csv"), "a,b\n1,\"2\n3,4\n5,6\n").unwrap();
        std::fs::write(src.path().join("ok.csv"), "a,b\n1,\"2\n3\"\n5,6\n").unwrap();
        for to in ["jsonl", "parquet"] {
            let options = format!(r#"{{"to":"{to}"}}"#);
            for rel in ["head.csv", "row.csv"] {
                let failure = run(&options, src.path(), rel, &dest).unwrap_err();
                assert_eq!(failure.kind, FailureKind::InvalidData, "{to} {rel}");
                assert!(
                    failure.message.contains("a quote is never closed"),
                    "{to} {rel}: {}",
                    failure.message
                );
            }
            // A quoted field with a line break in it is fine.
            assert_eq!(
                run(&options, src.path(), "ok.csv", &dest).unwrap()["rows"],
                2
            );
            assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 1, "{to}");
            for entry in std::fs::read_dir(&dest).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
    }

    #[test]
    fn line_limit_counts_bytes_since_the_last_line_break_across_reads() {
        let tripped = Cell::new(false);
        // Lines of 999 bytes, read 700 bytes at a time: never 1000 in a row.
        let text = format!("{}\n", "y".repeat(999)).repeat(20);
        let mut r = LineLimit {
            inner: std::io::Cursor::new(text.clone()),
            max: 1000,
            run: 0,
            tripped: &tripped,
        };
        let mut buf = [0u8; 700];
        let mut total = 0;
        while let n @ 1.. = r.read(&mut buf).unwrap() {
            total += n;
        }
        assert_eq!(total, text.len());
        assert!(!tripped.get());
        let mut r = LineLimit {
            inner: std::io::Cursor::new("z".repeat(1001)),
            max: 1000,
            run: 0,
            tripped: &tripped,
        };
        assert!(std::io::copy(&mut r, &mut std::io::sink()).is_err());
        assert!(tripped.get());
    }

    #[test]
    fn repeated_and_empty_header_names_are_made_distinct() {
        let names = |h: &[&str]| distinct_names(h.iter().copied());
        assert_eq!(names(&["a", "a", "b", "a"]), ["a", "a_2", "b", "a_3"]);
        assert_eq!(names(&["", "x", ""]), ["column_1", "x", "column_3"]);
        // Names the header already has are skipped, wherever they stand.
        assert_eq!(names(&["a", "a", "a_2"]), ["a", "a_3", "a_2"]);
        assert_eq!(names(&["", "column_1"]), ["column_1_2", "column_1"]);
        assert_eq!(names(&["id", "name"]), ["id", "name"]);
    }

    #[test]
    fn csv_to_jsonl_and_back() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        std::fs::write(
            src.path().join("t.csv"),
            "id,name,ok\n1,\"a,b\",true\n2,,false\n",
        )
        .unwrap();
        let v = run(r#"{"infer_types":true}"#, src.path(), "t.csv", &dest).unwrap();
        assert_eq!(v["rows"], 2);
        let text = std::fs::read_to_string(dest.join("t.jsonl")).unwrap();
        assert_eq!(
            text,
            "{\"id\":1,\"name\":\"a,b\",\"ok\":true}\n{\"id\":2,\"name\":null,\"ok\":false}\n"
        );
        let back = tempfile::tempdir().unwrap();
        let back = back.path().canonicalize().unwrap();
        run(r#"{"to":"csv"}"#, &dest, "t.jsonl", &back).unwrap();
        assert_eq!(
            std::fs::read_to_string(back.join("t.csv")).unwrap(),
            "id,name,ok\n1,\"a,b\",true\n2,,false\n"
        );
        let v = run(
            r#"{"to":"parquet","types":{"id":"string"}}"#,
            src.path(),
            "t.csv",
            &dest,
        )
        .unwrap();
        assert_eq!(v["rows"], 2);
        let file = File::open(dest.join("t.parquet")).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let schema = reader.schema().clone();
        assert_eq!(schema.field(0).data_type(), &arrow_schema::DataType::Utf8);
        assert_eq!(
            schema.field(2).data_type(),
            &arrow_schema::DataType::Boolean
        );
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
        assert!(run(
            r#"{"to":"parquet","types":{"nope":"string"},"existing":"overwrite"}"#,
            src.path(),
            "t.csv",
            &dest
        )
        .is_err());
        std::fs::write(src.path().join("bad.csv"), "a,b\n1,2,3\n").unwrap();
        assert_eq!(
            run("", src.path(), "bad.csv", &dest).unwrap_err().kind,
            FailureKind::InvalidData
        );
        assert!(!dest.join("bad.jsonl").exists());
    }

    #[test]
    fn jsonl_to_csv_writes_every_value_as_written() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        std::fs::write(
            src.path().join("n.jsonl"),
            concat!(
                r#"{"id":12345678901234567890123,"f":1e2,"g":0.10,"h":-0,"s":"a\"b\u00e9","n":null,"o":{"x": [1, 2]},"t":true}"#,
                "\n\r\n",
                r#"{"g":1,"g":2,"new":"x"}"#,
                "\r\n",
            ),
        )
        .unwrap();
        let v = run(r#"{"to":"csv"}"#, src.path(), "n.jsonl", &dest).unwrap();
        assert_eq!(v["rows"], 2);
        assert_eq!(
            std::fs::read_to_string(dest.join("n.csv")).unwrap(),
            concat!(
                "id,f,g,h,s,n,o,t,new\n",
                "12345678901234567890123,1e2,0.10,-0,\"a\"\"b\u{e9}\",,\"{\"\"x\"\": [1, 2]}\",true,\n",
                ",,2,,,,,,x\n",
            )
        );
    }

    #[test]
    fn a_jsonl_line_that_is_not_utf8_fails_with_its_line_number() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        std::fs::write(src.path().join("b.jsonl"), b"{\"a\":1}\n{\"a\":\"\xff\"}\n").unwrap();
        let failure = run(r#"{"to":"csv"}"#, src.path(), "b.jsonl", &dest).unwrap_err();
        assert_eq!(failure.kind, FailureKind::InvalidData);
        assert!(
            failure
                .message
                .starts_with("line 2: not valid UTF-8 (byte 7"),
            "{}",
            failure.message
        );
        assert!(!dest.join("b.csv").exists());
    }

    #[test]
    fn jsonl_lines_that_are_not_objects_fail_with_their_line() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        for (second, expected) in [
            ("[1,2]", "line 2: not a JSON object"),
            ("\"text\"", "line 2: not a JSON object"),
            ("null", "line 2: not a JSON object"),
            ("{\"a\":", "line 2: not JSON: EOF while parsing"),
            ("{\"a\":1}}", "line 2: not JSON: trailing characters"),
        ] {
            std::fs::write(
                src.path().join("x.jsonl"),
                format!("{{\"a\":1}}\n{second}\n"),
            )
            .unwrap();
            let failure = run(r#"{"to":"csv"}"#, src.path(), "x.jsonl", &dest).unwrap_err();
            assert_eq!(failure.kind, FailureKind::InvalidData);
            assert!(
                failure.message.starts_with(expected),
                "{second}: {}",
                failure.message
            );
            assert!(!dest.join("x.csv").exists());
        }
    }

    #[test]
    fn inferred_fields_are_json_only_when_already_json_text_and_then_as_written() {
        for kept in [
            "0",
            "-0",
            "1.50",
            "0.5",
            "-12.000",
            "1e5",
            "2E+3",
            "1.5e-7",
            "9223372036854775808",
            "-12345678901234567890123",
            "true",
            "false",
        ] {
            assert_eq!(json_literal(kept), Some(kept), "{kept}");
        }
        assert_eq!(json_literal(""), Some("null"));
        for string in [
            "02134", "+5", "00", "-", ".5", "5.", "1.", "1e", "1e+", "-.5", " 1", "1 ", "0x10",
            "1_000", "NaN", "inf", "1e400", "TRUE", "True", "null", "yes",
        ] {
            assert_eq!(json_literal(string), None, "{string}");
        }
    }

    #[test]
    fn csv_to_jsonl_with_infer_types_keeps_every_fields_digits_and_reads_back_the_same() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        let csv = concat!(
            "zip,n,price,id,big,ok,flag\n",
            "02134,+5,1.50,12345678901234567890123,1e400,true,TRUE\n",
            "10001,-0,2E+3,-1,0.5,false,\n",
        );
        std::fs::write(src.path().join("z.csv"), csv).unwrap();
        run(r#"{"infer_types":true}"#, src.path(), "z.csv", &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("z.jsonl")).unwrap(),
            concat!(
                r#"{"zip":"02134","n":"+5","price":1.50,"id":12345678901234567890123,"big":"1e400","ok":true,"flag":"TRUE"}"#,
                "\n",
                r#"{"zip":10001,"n":-0,"price":2E+3,"id":-1,"big":0.5,"ok":false,"flag":null}"#,
                "\n",
            )
        );
        // Every field as it was, so JSON Lines to CSV gives the CSV back.
        let back = tempfile::tempdir().unwrap();
        let back = back.path().canonicalize().unwrap();
        run(r#"{"to":"csv"}"#, &dest, "z.jsonl", &back).unwrap();
        assert_eq!(std::fs::read_to_string(back.join("z.csv")).unwrap(), csv);
    }

    /// The Parquet file at `path` as its schema and its rows as CSV.
    fn parquet_as_csv(path: &Path) -> (arrow_schema::SchemaRef, String) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(path).unwrap(),
        )
        .unwrap();
        let schema = reader.schema().clone();
        let mut text = Vec::new();
        let mut w = arrow_csv::WriterBuilder::new()
            .with_header(false)
            .build(&mut text);
        for batch in reader.build().unwrap() {
            w.write(&batch.unwrap()).unwrap();
        }
        drop(w);
        (schema, String::from_utf8(text).unwrap())
    }

    #[test]
    fn a_column_empty_in_every_sampled_record_is_strings_and_keeps_later_values() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        let rows = "1,\n".repeat(1500) + "2,hello\n";
        std::fs::write(src.path().join("e.csv"), format!("a,b\n{rows}")).unwrap();
        let v = run(r#"{"to":"parquet"}"#, src.path(), "e.csv", &dest).unwrap();
        assert_eq!(v["rows"], 1501);
        let (schema, text) = parquet_as_csv(&dest.join("e.parquet"));
        assert_eq!(schema.field(0).data_type(), &arrow_schema::DataType::Int64);
        assert_eq!(schema.field(1).data_type(), &arrow_schema::DataType::Utf8);
        assert_eq!(text, rows);
    }

    #[test]
    fn a_value_that_does_not_fit_its_column_type_is_named_by_its_line() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        // In the third batch of 8,192 records, after a quoted line break:
        // record 20,001 after the header starts on line 20,003.
        let mut csv = "a,b,c\n1,2,\"two\nlines\"\n".to_owned();
        csv += &"1,2,x\n".repeat(19_999);
        let bad = format!("{csv}1,hello,x\n1,2,x\n");
        std::fs::write(src.path().join("bad.csv"), &bad).unwrap();
        let failure = run(r#"{"to":"parquet"}"#, src.path(), "bad.csv", &dest).unwrap_err();
        assert_eq!(failure.kind, FailureKind::InvalidData);
        assert_eq!(
            failure.message,
            "line 20003: \"hello\" in column \"b\" is not of type int64 (inferred from the \
             first 1000 records); set the column's type with the types option"
        );
        let options = r#"{"to":"parquet","types":{"c":"float64"}}"#;
        let failure = run(options, src.path(), "bad.csv", &dest).unwrap_err();
        assert!(
            failure
                .message
                .starts_with("line 2: \"two\\nlines\" in column \"c\" is not of type float64 (as the types option says)"),
            "{}",
            failure.message
        );
        std::fs::write(src.path().join("ragged.csv"), format!("{csv}1,2\n")).unwrap();
        let failure = run(r#"{"to":"parquet"}"#, src.path(), "ragged.csv", &dest).unwrap_err();
        assert_eq!(
            failure.message,
            "line 20003: 2 fields where the header has 3"
        );
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }

    #[test]
    fn an_empty_or_blank_jsonl_file_converts_to_an_empty_csv() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        for (name, text) in [
            ("empty", ""),
            ("blank", "\n  \r\n\n"),
            ("no_keys", "{}\n{}\n"),
        ] {
            std::fs::write(src.path().join(format!("{name}.jsonl")), text).unwrap();
            let v = run(
                r#"{"to":"csv"}"#,
                src.path(),
                &format!("{name}.jsonl"),
                &dest,
            )
            .unwrap();
            assert_eq!(v["rows"], 0, "{name}");
            let csv = std::fs::read(dest.join(format!("{name}.csv"))).unwrap();
            assert!(csv.is_empty(), "{name}: {csv:?}");
        }
    }

    #[test]
    fn a_byte_order_mark_before_the_first_jsonl_line_is_skipped() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        std::fs::write(
            src.path().join("bom.jsonl"),
            b"\xEF\xBB\xBF{\"a\":1}\n{\"a\":2}\n",
        )
        .unwrap();
        run(r#"{"to":"csv"}"#, src.path(), "bom.jsonl", &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("bom.csv")).unwrap(),
            "a\n1\n2\n"
        );
        // Only before the first line, and bytes still count from the line's start.
        for (text, expected) in [
            (
                &b"{\"a\":1}\n\xEF\xBB\xBF{\"a\":2}\n"[..],
                "line 2: not JSON",
            ),
            (
                b"\xEF\xBB\xBF{\"a\":\"\xFF\"}\n",
                "line 1: not valid UTF-8 (byte 10 ",
            ),
        ] {
            std::fs::write(src.path().join("x.jsonl"), text).unwrap();
            let failure = run(r#"{"to":"csv"}"#, src.path(), "x.jsonl", &dest).unwrap_err();
            assert!(failure.message.starts_with(expected), "{}", failure.message);
        }
    }
}
