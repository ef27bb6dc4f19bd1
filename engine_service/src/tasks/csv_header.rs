//! Task `csv-header`: the column names of each CSV file's first record.
//!
//! Why it is fast: a file costs one open, one read of at most
//! [`FIRST_READ`] bytes and one close (plus an fstat when the listing gave no
//! size and the file is longer than that read; none to check its type, see
//! [`crate::sandbox::open_bounded`]); more is read only while the first
//! record is incomplete, up to `max_header_bytes`, so a 10 GB file costs one
//! small read. Buffers and the CSV parsers live in thread-locals and are
//! reused for every file.
//!
//! Parsing is done by `csv-core` (the `csv` crate's own parser, used without
//! its allocating reader wrapper): quoted fields, delimiters and newlines
//! inside quotes, CRLF. A UTF-8 BOM is stripped first.
//!
//! Compressed CSVs (`.csv.gz`, `.csv.zst`, bzip2, xz: how data sets are
//! often shipped) are recognised by their first bytes and decompressed only
//! as far as the first record ([`CsvHeader::read_compressed_header`]).
use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::compress::{decoder, Format};
use super::{Aggregate, FileOutcome, Task, TaskInfo};
use crate::results::{push_json_str, FailureKind, FileFailure};

/// Whether `head` starts with a UTF-16 byte order mark: Some(little endian).
fn utf16_bom(head: &[u8]) -> Option<bool> {
    match head {
        [0xFF, 0xFE, ..] => Some(true),
        [0xFE, 0xFF, ..] => Some(false),
        _ => None,
    }
}

fn utf16_to_utf8(bytes: &[u8], little_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|p| {
        if little_endian {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Bytes read first; enough for nearly every header.
const FIRST_READ: usize = 16 * 1024;
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Most schemas a summary lists, most files first, and most bytes of their
/// columns and examples. Headerless files make one schema per file: 500,000
/// of them made a summary of some 80 MB, above the gRPC message limit, and
/// the job failed at its very end. The rest are counted
/// (`omitted_schemas`, `files_in_omitted_schemas`); every file's columns
/// are in its own result. The control plane caps its merge of chunk
/// summaries at the same count (pravah.summaries). Schemas beyond the
/// aggregate's budget of kept results ([`super::GROUP_BYTES_KEPT`]) are
/// counted only, so a schema first seen after that is not listed even if
/// it turns out common.
pub const MAX_LISTED_SCHEMAS: usize = 1000;
const MAX_LISTED_BYTES: usize = 4 << 20;
/// Delimiters `auto` chooses among, in tie-break order.
const CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];

pub const INFO: TaskInfo = TaskInfo {
    name: "csv-header",
    version: "1",
    description: "Reads the header row (column names) of each CSV file and groups files by schema.",
    options_schema,
    result_schema,
    writes_files: false,
    size_independent: true,
    build,
};

fn options_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "csv-header options",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "delimiter": {
                "description": "Field delimiter; auto detects among , ; tab | in the first line.",
                "enum": ["auto", ",", ";", "\t", "|"],
                "default": "auto"
            },
            "max_header_bytes": {
                "description": "Most bytes the first record may take.",
                "type": "integer", "minimum": 1, "maximum": 268435456, "default": 1048576
            },
            "encoding_errors": {
                "description": "What to do with a header that is not UTF-8.",
                "enum": ["error", "replace"],
                "default": "error"
            },
            "trim": {
                "description": "Trim whitespace around column names.",
                "type": "boolean", "default": false
            }
        }
    })
}

fn result_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "csv-header result",
        "type": "object",
        "additionalProperties": false,
        "required": ["columns"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}}
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum EncodingErrors {
    #[default]
    Error,
    Replace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOptions {
    delimiter: String,
    max_header_bytes: u64,
    encoding_errors: EncodingErrors,
    trim: bool,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions {
            delimiter: "auto".into(),
            max_header_bytes: 1024 * 1024,
            encoding_errors: EncodingErrors::Error,
            trim: false,
        }
    }
}

/// The validated options.
#[derive(Debug, Clone)]
pub struct CsvHeader {
    /// None means auto-detect.
    delimiter: Option<u8>,
    max_header_bytes: usize,
    encoding_errors: EncodingErrors,
    trim: bool,
}

impl CsvHeader {
    pub fn from_json(options_json: &str) -> Result<Self, String> {
        let raw: RawOptions = if options_json.trim().is_empty() {
            RawOptions::default()
        } else {
            serde_json::from_str(options_json).map_err(|e| e.to_string())?
        };
        let delimiter = match raw.delimiter.as_str() {
            "auto" => None,
            "," => Some(b','),
            ";" => Some(b';'),
            "\t" | "tab" => Some(b'\t'),
            "|" => Some(b'|'),
            other => {
                return Err(format!(
                    "delimiter {other:?} is not supported; use \"auto\", \",\", \";\", \"\\t\" or \"|\""
                ))
            }
        };
        if raw.max_header_bytes == 0 || raw.max_header_bytes > 256 * 1024 * 1024 {
            return Err("max_header_bytes must be between 1 and 268435456".into());
        }
        Ok(CsvHeader {
            delimiter,
            max_header_bytes: raw.max_header_bytes as usize,
            encoding_errors: raw.encoding_errors,
            trim: raw.trim,
        })
    }
}

fn build(options_json: &str) -> Result<Arc<dyn Task>, String> {
    Ok(Arc::new(CsvHeader::from_json(options_json)?))
}

/// What reading a file learned about its size.
struct Read {
    known_size: Option<u64>,
    /// Set when the read reached the end of the file: its size.
    eof_at: Option<u64>,
    /// Reading a decompressed stream: only a read of 0 bytes is its end (a
    /// decoder returns short reads anywhere), and a compressed stream in it
    /// is not opened in turn.
    decompressed: bool,
}

/// Per-thread reusable state.
struct Scratch {
    /// File bytes; its length only grows, `filled` says how much is valid.
    buf: Vec<u8>,
    /// Parser output: field bytes and field end offsets.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// One parser per candidate delimiter, built once per thread.
    readers: [Option<csv_core::Reader>; 4],
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buf: Vec::new(),
        out: vec![0; 4096],
        ends: vec![0; 256],
        readers: [None, None, None, None],
    });
}

impl Task for CsvHeader {
    fn process_file(&self, path: &Path, known_size: Option<u64>) -> FileOutcome {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            self.header(path, known_size, &mut s)
        })
    }

    fn reads_streams(&self) -> bool {
        true
    }

    fn process_reader(&self, reader: &mut dyn std::io::Read, size: u64) -> FileOutcome {
        SCRATCH.with(|s| {
            let mut read = Read {
                known_size: Some(size),
                eof_at: None,
                decompressed: false,
            };
            let result = self.read_header(reader, &mut read, &mut s.borrow_mut());
            FileOutcome { size, result }
        })
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        let mut groups: Vec<(Vec<String>, u64, &str)> = agg
            .groups
            .iter()
            .map(|(json, (n, example))| {
                let columns = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .and_then(|v| serde_json::from_value(v["columns"].clone()).ok())
                    .unwrap_or_default();
                (columns, *n, example.as_str())
            })
            .collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut listed_bytes = 0;
        let listed = groups
            .iter()
            .take(MAX_LISTED_SCHEMAS)
            .take_while(|(columns, _, example)| {
                listed_bytes += columns.iter().map(|c| c.len() + 4).sum::<usize>() + example.len();
                listed_bytes <= MAX_LISTED_BYTES
            })
            .count();
        let schemas: Vec<_> = groups[..listed]
            .iter()
            .map(
                |(columns, n, example)| json!({"columns": columns, "files": n, "example": example}),
            )
            .collect();
        json!({
            "schemas": schemas,
            "distinct_schemas": agg.distinct(),
            "omitted_schemas": agg.distinct() - listed,
            "files_in_omitted_schemas": groups[listed..].iter().map(|g| g.1).sum::<u64>() + agg.unkept_files(),
            "files": agg.files,
            "failed": agg.failed,
        })
    }
}

/// Finds where the first record ends in `bytes`: the index of the first CR or
/// LF outside quotes. A quote opens a quoted field only at a field start.
fn record_end(bytes: &[u8]) -> Option<usize> {
    scan_record(bytes).ok()
}

/// [`record_end`], or, when `bytes` hold no end of record, whether they end
/// inside quotes: at the end of the file that means a quote never closed,
/// which the CSV parser would take as closed there, making the rest of the
/// file one column name.
fn scan_record(bytes: &[u8]) -> Result<usize, bool> {
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        if in_quotes {
            let Some(j) = memchr::memchr(b'"', &bytes[i..]) else {
                return Err(true);
            };
            let j = j + i;
            if bytes.get(j + 1) == Some(&b'"') {
                i = j + 2;
            } else {
                in_quotes = false;
                i = j + 1;
            }
        } else {
            let Some(j) = memchr::memchr3(b'"', b'\n', b'\r', &bytes[i..]) else {
                return Err(false);
            };
            let j = j + i;
            if bytes[j] != b'"' {
                return Ok(j);
            }
            let at_field_start = j == 0 || CANDIDATES.contains(&bytes[j - 1]);
            in_quotes = at_field_start;
            i = j + 1;
        }
    }
    Err(in_quotes)
}

/// Picks the candidate delimiter occurring most often outside quotes.
fn detect_delimiter(record: &[u8]) -> u8 {
    let mut counts = [0usize; 4];
    let mut in_quotes = false;
    for &b in record {
        if b == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes {
            if let Some(k) = CANDIDATES.iter().position(|&c| c == b) {
                counts[k] += 1;
            }
        }
    }
    let mut best = 0;
    for k in 1..4 {
        if counts[k] > counts[best] {
            best = k;
        }
    }
    CANDIDATES[best]
}

impl CsvHeader {
    /// The header of a UTF-16 file (Excel's "Unicode Text" export, with a
    /// byte order mark), which read as binary before (its ASCII has NUL
    /// bytes): read up to twice `max_header_bytes`, decoded to UTF-8 (an
    /// unpaired surrogate becomes U+FFFD), then parsed as any header.
    fn read_utf16_header(
        &self,
        file: &mut dyn std::io::Read,
        read: &mut Read,
        s: &mut Scratch,
        mut bytes: Vec<u8>,
        little_endian: bool,
    ) -> Result<String, FileFailure> {
        let limit = 2 * (self.max_header_bytes + 2);
        let mut want = (4 * FIRST_READ).min(limit);
        let text = loop {
            let text = utf16_to_utf8(&bytes[2..bytes.len() & !1], little_endian);
            if record_end(text.as_bytes()).is_some() || bytes.len() >= limit {
                break text;
            }
            let before = bytes.len();
            let mut more = std::io::Read::take(&mut *file, (want.max(before) - before) as u64);
            std::io::Read::read_to_end(&mut more, &mut bytes)
                .map_err(|e| FileFailure::from_io(&e, "reading the file"))?;
            if bytes.len() == before || read.known_size.is_some_and(|n| bytes.len() as u64 >= n) {
                read.eof_at = Some(bytes.len() as u64);
                break utf16_to_utf8(&bytes[2..bytes.len() & !1], little_endian);
            }
            want = (want * 4).min(limit);
        };
        let len = text.len() as u64;
        let mut inner = Read {
            known_size: Some(len),
            eof_at: None,
            decompressed: read.decompressed,
        };
        self.read_header(&mut std::io::Cursor::new(text.into_bytes()), &mut inner, s)
    }

    /// The header of a gzip, zstd, bzip2 or xz compressed CSV (`.csv.gz`
    /// and the like, recognised by their first bytes): decompressed only as
    /// far as the first record needs, so a 10 GB `.csv.gz` still costs a
    /// few small reads. The limits hold on the decompressed bytes.
    fn read_compressed_header(
        &self,
        file: &mut dyn std::io::Read,
        s: &mut Scratch,
        head: Vec<u8>,
        format: Format,
    ) -> Result<String, FileFailure> {
        let compressed =
            std::io::BufReader::new(std::io::Read::chain(std::io::Cursor::new(head), file));
        let mut decoded = decoder(format, compressed)
            .map_err(|e| FileFailure::from_io(&e, "opening the compressed stream"))?;
        let mut inner = Read {
            known_size: None,
            eof_at: None,
            decompressed: true,
        };
        self.read_header(&mut decoded, &mut inner, s)
            .map_err(|f| FileFailure::new(f.kind, format!("{} file: {}", format.name(), f.message)))
    }

    fn header(&self, path: &Path, known_size: Option<u64>, s: &mut Scratch) -> FileOutcome {
        // Reads here are bounded by max_header_bytes, so a FIFO or device
        // cannot hang them: no fstat to refuse one (open_bounded).
        let mut file = match crate::sandbox::open_bounded(path) {
            Ok(f) => f,
            Err(e) => {
                return FileOutcome {
                    size: known_size.unwrap_or(0),
                    result: Err(FileFailure::from_io(&e, "opening the file")),
                }
            }
        };
        let mut read = Read {
            known_size,
            eof_at: None,
            decompressed: false,
        };
        let mut result = self.read_header(&mut file, &mut read, s);
        if result.is_err() && file.metadata().is_ok_and(|m| !m.file_type().is_file()) {
            // Said as open_regular says it, not as what the read met.
            let e = crate::sandbox::not_regular();
            result = Err(FileFailure::from_io(&e, "opening the file"));
        }
        // A small file's size is known from the short read that hit its end;
        // only a file larger than what we read needs an fstat.
        let size = match (known_size, read.eof_at) {
            (Some(n), _) => n,
            (None, Some(n)) => n,
            (None, None) => file.metadata().map_or(0, |m| m.len()),
        };
        FileOutcome { size, result }
    }

    fn read_header(
        &self,
        file: &mut dyn std::io::Read,
        read: &mut Read,
        s: &mut Scratch,
    ) -> Result<String, FileFailure> {
        // Bytes we may need: the BOM, the record, and one byte to see its end.
        let cap = self.max_header_bytes + BOM.len() + 1;
        let mut filled = 0usize;
        let mut want = FIRST_READ.min(cap);
        let end = loop {
            if s.buf.len() < want {
                s.buf.resize(want, 0);
            }
            let requested = want - filled;
            let n = loop {
                match std::io::Read::read(file, &mut s.buf[filled..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(FileFailure::from_io(&e, "reading the file")),
                }
            };
            if filled == 0 {
                if let Some(little_endian) = utf16_bom(&s.buf[..n]) {
                    let head = s.buf[..n].to_vec();
                    return self.read_utf16_header(file, read, s, head, little_endian);
                }
                if let Some(format) = Format::sniff(&s.buf[..n]).filter(|_| !read.decompressed) {
                    let head = s.buf[..n].to_vec();
                    return self.read_compressed_header(file, s, head, format);
                }
            }
            if let Some(pos) = memchr::memchr(0, &s.buf[filled..filled + n]) {
                return Err(FileFailure::new(
                    FailureKind::InvalidData,
                    format!(
                        "binary file: NUL byte at offset {}; csv-header reads text files only",
                        filled + pos
                    ),
                ));
            }
            filled += n;
            // End of file: nothing more, the listed size reached, or (size
            // unknown) a short read, which on a regular file means the end.
            let eof = match read.known_size {
                _ if n == 0 => true,
                Some(size) => filled as u64 >= size,
                None => !read.decompressed && n < requested,
            };
            if eof {
                read.eof_at = Some(filled as u64);
            }
            let start = if s.buf[..filled].starts_with(BOM) {
                BOM.len()
            } else {
                0
            };
            // Rescanning from the start keeps the quote state simple; it
            // happens only for headers longer than the first read.
            if let Some(e) = record_end(&s.buf[start..filled]) {
                if start + e <= self.max_header_bytes + start {
                    break start + e;
                }
            }
            if filled - start > self.max_header_bytes {
                return Err(FileFailure::new(
                    FailureKind::LimitExceeded,
                    format!(
                        "the first record is longer than max_header_bytes ({} bytes); raise max_header_bytes if the header is really that long",
                        self.max_header_bytes
                    ),
                ));
            }
            if eof {
                if scan_record(&s.buf[start..filled]) == Err(true) {
                    return Err(FileFailure::new(
                        FailureKind::InvalidData,
                        "the file ends inside a quoted field of the header: a quote is never closed",
                    ));
                }
                break filled;
            }
            if filled == want {
                want = (want * 4).min(cap);
            }
        };
        let start = if s.buf[..filled].starts_with(BOM) {
            BOM.len()
        } else {
            0
        };
        if filled == start {
            return Err(FileFailure::new(
                FailureKind::InvalidData,
                "empty file: no header row",
            ));
        }
        let record_len = end - start;
        if record_len == 0 {
            return Err(FileFailure::new(
                FailureKind::InvalidData,
                "the first line is empty: no header row",
            ));
        }
        if self.encoding_errors == EncodingErrors::Error {
            if let Err(e) = std::str::from_utf8(&s.buf[start..end]) {
                return Err(FileFailure::new(
                    FailureKind::InvalidData,
                    format!(
                        "header is not valid UTF-8 at byte {}; set encoding_errors=replace to decode lossily",
                        start + e.valid_up_to()
                    ),
                ));
            }
        }
        let delimiter = self
            .delimiter
            .unwrap_or_else(|| detect_delimiter(&s.buf[start..end]));
        let nfields = parse_record(s, start, end, delimiter)?;
        // {"columns":["a","b"]}
        let mut json =
            Vec::with_capacity(16 + s.ends[..nfields].last().copied().unwrap_or(0) + 4 * nfields);
        json.extend_from_slice(b"{\"columns\":[");
        let mut from = 0;
        for (i, &to) in s.ends[..nfields].iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            let field = &s.out[from..to];
            from = to;
            // Valid UTF-8 (always, unless encoding_errors=replace) costs no
            // second pass: from_utf8 is much cheaper than the lossy decoder.
            let text = match std::str::from_utf8(field) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => String::from_utf8_lossy(field),
            };
            let text = if self.trim { text.trim() } else { &text };
            push_json_str(&mut json, text);
        }
        json.extend_from_slice(b"]}");
        // SAFETY-free: serde_json output of &str values is UTF-8.
        Ok(String::from_utf8(json).expect("JSON built from str is UTF-8"))
    }
}

/// Parses `s.buf[start..end]` as one CSV record into `s.out` / `s.ends`;
/// returns the number of fields.
fn parse_record(
    s: &mut Scratch,
    start: usize,
    end: usize,
    delimiter: u8,
) -> Result<usize, FileFailure> {
    let k = CANDIDATES.iter().position(|&c| c == delimiter).unwrap_or(0);
    let reader = s.readers[k]
        .get_or_insert_with(|| csv_core::ReaderBuilder::new().delimiter(delimiter).build());
    reader.reset();
    if s.out.len() < (end - start) + 16 {
        s.out.resize((end - start) + 16, 0);
    }
    let mut input = &s.buf[start..end];
    let mut nout = 0;
    let mut nend = 0;
    loop {
        let (res, nin, o, e) = reader.read_record(input, &mut s.out[nout..], &mut s.ends[nend..]);
        input = &input[nin..];
        nout += o;
        nend += e;
        match res {
            csv_core::ReadRecordResult::InputEmpty => {
                // Everything fed: an empty input tells the parser "end of data".
                if input.is_empty() {
                    let (res2, _, o2, e2) =
                        reader.read_record(&[], &mut s.out[nout..], &mut s.ends[nend..]);
                    nout += o2;
                    nend += e2;
                    match res2 {
                        csv_core::ReadRecordResult::OutputEndsFull => {
                            let l = s.ends.len();
                            s.ends.resize(l * 2, 0);
                            continue;
                        }
                        csv_core::ReadRecordResult::OutputFull => {
                            let l = s.out.len();
                            s.out.resize(l * 2, 0);
                            continue;
                        }
                        _ => break,
                    }
                }
            }
            csv_core::ReadRecordResult::OutputFull => {
                let l = s.out.len();
                s.out.resize(l * 2, 0);
            }
            csv_core::ReadRecordResult::OutputEndsFull => {
                let l = s.ends.len();
                s.ends.resize(l * 2, 0);
            }
            csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
        }
    }
    if nend == 0 {
        return Err(FileFailure::new(
            FailureKind::InvalidData,
            "empty file: no header row",
        ));
    }
    Ok(nend)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_with(options: &str, bytes: &[u8]) -> Result<Vec<String>, FileFailure> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, bytes).unwrap();
        let task = CsvHeader::from_json(options).unwrap();
        let out = task.process_file(&path, None);
        assert_eq!(out.size, bytes.len() as u64);
        out.result.map(|json| {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            serde_json::from_value(v["columns"].clone()).unwrap()
        })
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A reader that counts what is taken from it.
    struct Counted<'a> {
        inner: &'a [u8],
        taken: usize,
    }

    impl std::io::Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = std::io::Read::read(&mut &self.inner[self.taken..], buf)?;
            self.taken += n;
            Ok(n)
        }
    }

    #[test]
    fn compressed_csvs_are_read_as_far_as_their_header() {
        assert_eq!(header(&gzip(b"id,name\n1,a\n")).unwrap(), ["id", "name"]);
        let zst = zstd::encode_all(&b"x;y\n1;2\n"[..], 3).unwrap();
        assert_eq!(header(&zst).unwrap(), ["x", "y"]);
        // 64 MB of rows after the header: only the start is decompressed.
        let mut big = b"a,b,c\n".to_vec();
        for i in 0..4_000_000u32 {
            big.extend_from_slice(format!("{i},{i},{i}\n").as_bytes());
        }
        let packed = gzip(&big);
        let mut reader = Counted {
            inner: &packed,
            taken: 0,
        };
        let task = CsvHeader::from_json("").unwrap();
        let out = task.process_reader(&mut reader, packed.len() as u64);
        assert!(out.result.unwrap().contains(r#"["a","b","c"]"#));
        assert!(reader.taken < 64 * 1024, "read {} bytes", reader.taken);
    }

    #[test]
    fn a_compressed_csv_past_the_decoders_memory_limit_says_so() {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(30).unwrap();
        enc.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut enc, b"a,b\n1,2\n").unwrap();
        let err = header(&enc.finish().unwrap()).unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded, "{}", err.message);
        assert!(
            err.message
                .starts_with("zstd file: the zstd frame needs a window"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_csv_that_begins_like_a_compressed_file_is_still_a_csv() {
        // bzip2's magic is "BZh": a header may start with it.
        assert_eq!(header(b"BZh,BZh9\n1,2\n").unwrap(), ["BZh", "BZh9"]);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        std::io::Write::write_all(&mut bz, b"k|v\n1|2\n").unwrap();
        assert_eq!(header(&bz.finish().unwrap()).unwrap(), ["k", "v"]);
    }

    #[test]
    fn a_compressed_file_is_opened_once_and_its_errors_say_what_it_is() {
        // A gzip inside a gzip is not opened in turn: its bytes are binary.
        let err = header(&gzip(&gzip(b"a,b\n"))).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData);
        assert!(
            err.message.starts_with("gzip file: binary file"),
            "{}",
            err.message
        );
        // Cut short inside the stream.
        let whole = gzip(b"a,b\n1,2\n");
        let err = header(&whole[..12]).unwrap_err();
        assert!(err.message.starts_with("gzip file: "), "{}", err.message);
        // The header cap holds on the decompressed bytes (a bomb of one line).
        let err = header_with(
            r#"{"max_header_bytes": 1024}"#,
            &gzip(&vec![b'a'; 10 << 20]),
        )
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded);
        // Empty inside.
        let err = header(&gzip(b"")).unwrap_err();
        assert!(err.message.contains("empty file"), "{}", err.message);
    }

    fn header(bytes: &[u8]) -> Result<Vec<String>, FileFailure> {
        header_with("", bytes)
    }

    fn utf16(text: &str, little_endian: bool) -> Vec<u8> {
        std::iter::once('\u{feff}')
            .chain(text.chars())
            .collect::<String>()
            .encode_utf16()
            .flat_map(|u| {
                if little_endian {
                    u.to_le_bytes()
                } else {
                    u.to_be_bytes()
                }
            })
            .collect()
    }

    #[test]
    fn utf16_files_with_a_byte_order_mark_are_read_as_text() {
        // Excel's "Unicode Text": UTF-16LE, tabs, CRLF. It read as binary.
        let excel = utf16("name\tcity\tprix €\r\nA\tB\t1\r\n", true);
        assert_eq!(header(&excel).unwrap(), ["name", "city", "prix €"]);
        let quoted = utf16("\"a,\nb\",c\n1,2\n", false);
        assert_eq!(header(&quoted).unwrap(), ["a,\nb", "c"]);
        // Longer than the first read, and past max_header_bytes.
        let long: Vec<String> = (0..20_000).map(|i| format!("col{i}")).collect();
        let wide = utf16(&format!("{}\n1\n", long.join(",")), true);
        assert_eq!(header(&wide).unwrap(), long);
        let err = header_with(r#"{"max_header_bytes":1000}"#, &wide).unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded);
        // Without a byte order mark, NUL bytes still mean binary.
        let bare: Vec<u8> = "a,b\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(header(&bare).unwrap_err().message.contains("binary file"));
    }

    #[test]
    fn simple_header_with_rows() {
        assert_eq!(header(b"a,b,c\n1,2,3\n").unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn quoted_header_with_embedded_comma_and_newline() {
        assert_eq!(
            header(b"\"x,y\",\"multi\nline\",\"q\"\"uote\"\n1,2,3\n").unwrap(),
            ["x,y", "multi\nline", "q\"uote"]
        );
    }

    #[test]
    fn bom_is_stripped_and_crlf_handled() {
        assert_eq!(
            header(b"\xEF\xBB\xBFid,name\r\n1,x\r\n").unwrap(),
            ["id", "name"]
        );
    }

    #[test]
    fn each_delimiter_is_auto_detected() {
        assert_eq!(header(b"a;b;c\n1;2;3\n").unwrap(), ["a", "b", "c"]);
        assert_eq!(header(b"a\tb\tc\n1\t2\t3\n").unwrap(), ["a", "b", "c"]);
        assert_eq!(header(b"a|b|c\n1|2|3\n").unwrap(), ["a", "b", "c"]);
        assert_eq!(header(b"a,b;c\n").unwrap(), ["a", "b;c"]);
        // Delimiters inside quotes do not count.
        assert_eq!(header(b"\"a;b;c\",d\n").unwrap(), ["a;b;c", "d"]);
    }

    #[test]
    fn explicit_delimiter_option() {
        assert_eq!(
            header_with(r#"{"delimiter":";"}"#, b"a,b;c\n").unwrap(),
            ["a,b", "c"]
        );
        assert_eq!(
            header_with(r#"{"delimiter":"\t"}"#, b"a b\tc\n").unwrap(),
            ["a b", "c"]
        );
    }

    #[test]
    fn a_header_whose_quote_never_closes_is_invalid_not_one_long_name() {
        for bytes in [&b"\"a,b\n1,2\n3,4\n"[..], b"a,\"b\nc\n", b"a,\"b\"\"\n"] {
            let err = header(bytes).unwrap_err();
            assert_eq!(err.kind, FailureKind::InvalidData, "{bytes:?}");
            assert!(err.message.contains("never closed"), "{}", err.message);
        }
        // Closed at the very end, or quotes inside an unquoted name: fine.
        assert_eq!(header(b"a,\"b\nc\"").unwrap(), ["a", "b\nc"]);
        assert_eq!(header(b"a,b\"c").unwrap(), ["a", "b\"c"]);
    }

    #[test]
    fn header_only_without_trailing_newline() {
        assert_eq!(header(b"only,header").unwrap(), ["only", "header"]);
    }

    #[test]
    fn trim_option_trims_names() {
        assert_eq!(header(b" a , b \n").unwrap(), [" a ", " b "]);
        assert_eq!(
            header_with(r#"{"trim":true}"#, b" a , b \n").unwrap(),
            ["a", "b"]
        );
    }

    #[test]
    fn empty_file_is_invalid_data() {
        let err = header(b"").unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData);
        assert_eq!(err.message, "empty file: no header row");
    }

    #[test]
    fn binary_file_is_invalid_data() {
        let err = header(b"PK\x03\x04\x00\x00binary").unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData);
        assert!(err.message.starts_with("binary file"), "{}", err.message);
    }

    #[test]
    fn latin1_header_errors_by_default_and_replaces_on_request() {
        let bytes = b"caf\xe9,na\xefve\n1,2\n";
        let err = header(bytes).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData);
        assert_eq!(
            err.message,
            "header is not valid UTF-8 at byte 3; set encoding_errors=replace to decode lossily"
        );
        let cols = header_with(r#"{"encoding_errors":"replace"}"#, bytes).unwrap();
        assert_eq!(cols, ["caf\u{fffd}", "na\u{fffd}ve"]);
    }

    #[test]
    fn header_longer_than_cap_is_limit_exceeded() {
        let mut big = vec![b'a'; 10 * 1024 * 1024];
        big.push(b'\n');
        let err = header(&big).unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded);
        assert!(err.message.contains("max_header_bytes"));
        // A header just under a small cap passes, just over it fails.
        assert_eq!(
            header_with(r#"{"max_header_bytes":5}"#, b"ab,cd\nx\n").unwrap(),
            ["ab", "cd"]
        );
        assert!(header_with(r#"{"max_header_bytes":4}"#, b"ab,cd\nx\n").is_err());
    }

    #[test]
    fn long_header_needing_several_reads() {
        let names: Vec<String> = (0..20_000).map(|i| format!("column_{i}")).collect();
        let mut bytes = names.join(",").into_bytes();
        bytes.extend_from_slice(b"\n1,2\n");
        assert_eq!(header(&bytes).unwrap(), names);
    }

    #[test]
    fn unknown_option_names_key_and_allowed_ones() {
        let err = CsvHeader::from_json(r#"{"delim":","}"#).unwrap_err();
        assert!(
            err.contains("delim") && err.contains("delimiter") && err.contains("max_header_bytes"),
            "{err}"
        );
        assert!(CsvHeader::from_json(r#"{"delimiter":"x"}"#).is_err());
        assert!(CsvHeader::from_json(r#"{"encoding_errors":"ignore"}"#).is_err());
    }

    #[test]
    fn missing_file_is_not_found() {
        let task = CsvHeader::from_json("").unwrap();
        let out = task.process_file(Path::new("/nonexistent/pravah/x.csv"), None);
        assert_eq!(out.result.unwrap_err().kind, FailureKind::NotFound);
    }

    #[test]
    fn a_fifo_or_a_device_in_place_of_a_csv_fails_at_once() {
        // No fstat refuses them up front (open_bounded): the bounded read
        // fails, and then they are named for what they are.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("swapped.csv");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let task = CsvHeader::from_json(r#"{"max_header_bytes": 4096}"#).unwrap();
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let err = task.process_file(path, None).result.unwrap_err();
            assert!(
                err.message.contains("not a regular file"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn summary_orders_schemas_by_count_then_columns() {
        let task = CsvHeader::from_json("").unwrap();
        let mut agg = Aggregate::default();
        agg.add(b"1.csv", &Ok(r#"{"columns":["b"]}"#.into()));
        agg.add(b"2.csv", &Ok(r#"{"columns":["a"]}"#.into()));
        agg.add(b"3.csv", &Ok(r#"{"columns":["z"]}"#.into()));
        agg.add(b"4.csv", &Ok(r#"{"columns":["z"]}"#.into()));
        agg.add(b"5.csv", &Err(FileFailure::new(FailureKind::Io, "x")));
        let s = task.summarize(&agg);
        assert_eq!(s["distinct_schemas"], 3);
        assert_eq!(s["files"], 5);
        assert_eq!(s["failed"], 1);
        assert_eq!(s["schemas"][0]["columns"][0], "z");
        assert_eq!(s["schemas"][0]["files"], 2);
        assert_eq!(s["schemas"][1]["columns"][0], "a");
        assert_eq!(s["schemas"][2]["example"], "1.csv");
        assert_eq!(s["omitted_schemas"], 0);
    }

    #[test]
    fn a_summary_lists_the_most_common_schemas_and_counts_the_rest() {
        let task = CsvHeader::from_json("").unwrap();
        let mut agg = Aggregate::default();
        // Headerless files: a "schema" each, and one real header shared by 3.
        for i in 0..MAX_LISTED_SCHEMAS + 50 {
            let result = format!(r#"{{"columns":["row {i:05}","{i}"]}}"#);
            agg.add(format!("{i}.csv").as_bytes(), &Ok(result));
        }
        for i in 0..3 {
            agg.add(
                format!("h{i}.csv").as_bytes(),
                &Ok(r#"{"columns":["id"]}"#.into()),
            );
        }
        let s = task.summarize(&agg);
        assert_eq!(s["distinct_schemas"], MAX_LISTED_SCHEMAS + 51);
        let listed = s["schemas"].as_array().unwrap();
        assert_eq!(listed.len(), MAX_LISTED_SCHEMAS);
        assert_eq!(listed[0]["columns"][0], "id");
        assert_eq!(s["omitted_schemas"], 51);
        assert_eq!(s["files_in_omitted_schemas"], 51);
        assert!(s.to_string().len() < 100_000);
        // Schemas past the aggregate's budget, counted by hash only.
        agg.unkept.insert(1, 7);
        agg.unkept.insert(2, 1);
        let s = task.summarize(&agg);
        assert_eq!(s["distinct_schemas"], MAX_LISTED_SCHEMAS + 53);
        assert_eq!(s["omitted_schemas"], 53);
        assert_eq!(s["files_in_omitted_schemas"], 59);

        // Long headers: the byte budget stops the list first.
        let mut agg = Aggregate::default();
        let long = "c".repeat(MAX_LISTED_BYTES / 10);
        for i in 0..20 {
            agg.add(
                format!("{i}.csv").as_bytes(),
                &Ok(format!(r#"{{"columns":["{long}{i}"]}}"#)),
            );
        }
        let s = task.summarize(&agg);
        let listed = s["schemas"].as_array().unwrap().len();
        assert!((8..10).contains(&listed), "{listed}");
        assert_eq!(s["omitted_schemas"], 20 - listed);
    }
}
