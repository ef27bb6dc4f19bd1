//! Tasks `compress` (gzip, zstd) and `decompress` (gzip, zstd, bzip2, xz).
//!
//! Memory is flat whatever the file size: zstd streams the input through a
//! 256 KiB buffer into its encoder, gzip reads it in [`GZIP_BLOCK`] blocks,
//! each compressed whole by libdeflate (about twice zlib's speed at the same
//! level) into one gzip member, and members are concatenated in order
//! (RFC 1952 multi-member, read by gzip, zcat and every gzip library; the
//! ratio cost of restarting the dictionary every 4 MiB is under 0.1%).
//! Outputs go into an [`AtomicFile`] (temp file, published with the
//! batch's outputs: synced, then linked or renamed). Files of at least
//! [`MT_THRESHOLD`] bytes use every core (`threads` option: zstd's worker
//! threads, or `2 x threads` gzip blocks at a time on the pool), so one big
//! log is as fast as pigz or `zstd -T`, while many small files are spread
//! over the pool, one file per thread, with a compressor (zstd context,
//! libdeflate compressor) and buffers reused per thread; an input of at
//! most [`ONE_SHOT_MAX`] bytes is read whole and compressed in one call
//! into a buffer written with one `write` (no stream buffers to allocate,
//! fill, zero and copy per file: per-file overhead is what many small files
//! cost, and a deflate state plus two 256 KiB stream buffers allocated and
//! freed per file left malloc's arenas at 80+ MiB).
//!
//! An output takes its original's owner (where allowed), permission bits
//! and times, as gzip and zstd do ([`crate::output::copy_attributes`]);
//! it is created with the original's permissions less the umask, so never
//! more readable than the original.
//!
//! Removing the original (`keep_original: false`) happens only after the
//! output has been decompressed again and its length and xxh3 checksum
//! match what was read, the output is synced and published under its name
//! and that name synced (when the batch settles, see
//! [`crate::output::Outputs`]), and the input's size and mtime are
//! unchanged since it was opened. A file that changes
//! while it is read fails and its temp output is dropped. A file with other
//! hard links is skipped when its original would be removed (its bytes
//! would stay under the other names), as gzip does, unless `force`.
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use xxhash_rust::xxh3::Xxh3;

use super::{parse_options, Aggregate, FileCtx, FileOutcome, Task, TaskInfo};
use crate::output::{
    copy_attributes, existing_schema, original_mode, output_for, skipped_exists, AtomicFile,
    Committed, Existing, FollowUp,
};
use crate::results::{FailureKind, FileFailure};

/// Files at least this big are compressed by zstd's worker threads.
pub const MT_THRESHOLD: u64 = 32 * 1024 * 1024;
const BUF: usize = 256 * 1024;
/// Input per gzip member when a big file is gzipped on several threads.
pub const GZIP_BLOCK: usize = 4 * 1024 * 1024;
/// Inputs up to this size are compressed in one call from memory.
pub const ONE_SHOT_MAX: u64 = 4 * 1024 * 1024;

/// Extensions of files that are already compressed (or compressed media).
const COMPRESSED_EXT: &[&str] = &[
    "gz", "tgz", "zst", "zstd", "tzst", "bz2", "bz", "tbz2", "tbz", "xz", "txz", "lz4", "lzma",
    "zip", "7z", "rar", "br", "jpg", "jpeg", "png", "gif", "webp", "mp3", "mp4", "mkv", "avif",
    "heic", "parquet",
];

pub const COMPRESS: TaskInfo = TaskInfo {
    name: "compress",
    version: "1",
    description:
        "Compresses each file with gzip or zstd, next to it or mirrored under the destination.",
    options_schema: compress_schema,
    result_schema: compress_result_schema,
    writes_files: true,
    size_independent: false,
    build: build_compress,
};

pub const DECOMPRESS: TaskInfo = TaskInfo {
    name: "decompress",
    version: "1",
    description:
        "Decompresses gzip, zstd, bzip2 and xz files, next to them or under the destination.",
    options_schema: decompress_schema,
    result_schema: compress_result_schema,
    writes_files: true,
    size_independent: false,
    build: build_decompress,
};

fn compress_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "compress options",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "format": {"description": "Compression format.", "enum": ["gzip", "zstd"], "default": "gzip"},
            "level": {"description": "Level: gzip 1-9 (default 6), zstd 1-19 (default 3).",
                      "type": "integer", "minimum": 1, "maximum": 19},
            "threads": {"description": "zstd worker threads for files of 32 MiB and more; 0 means one per core.",
                        "type": "integer", "minimum": 0, "maximum": 256, "default": 0},
            "keep_original": {"description": "Keep the original; when false it is removed only after the output is synced and verified.",
                              "type": "boolean", "default": true},
            "existing": existing_schema(),
            "force": {"description": "Also compress files that are already compressed (by extension or magic bytes), and, with keep_original false, files with other hard links.",
                      "type": "boolean", "default": false}
        },
        // gzip (the default format) stops at 9: checked by clients before a
        // job is stored, not found out when it runs.
        "if": {"properties": {"format": {"const": "gzip"}}},
        "then": {"properties": {"level": {"maximum": 9}}}
    })
}

fn decompress_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "decompress options",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "keep_original": {"description": "Keep the compressed original.", "type": "boolean", "default": true},
            "existing": existing_schema(),
            "max_output_bytes": {"description": "Most bytes one file may decompress to (bomb protection).",
                                 "type": "integer", "minimum": 1, "default": 1099511627776u64}
        }
    })
}

fn compress_result_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "output": {"type": "string", "description": "Output path relative to the destination (or the source root)."},
            "format": {"type": "string"},
            "bytes_out": {"type": "integer"},
            "removed_original": {"type": "boolean"},
            "skipped": {"type": "string", "description": "Why the file was left alone."}
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Gzip => "gz",
            Format::Zstd => "zst",
            Format::Bzip2 => "bz2",
            Format::Xz => "xz",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Gzip => "gzip",
            Format::Zstd => "zstd",
            Format::Bzip2 => "bzip2",
            Format::Xz => "xz",
        }
    }

    /// Recognises a compressed stream by its first bytes.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Format::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Format::Zstd)
        } else if is_bzip2(head) {
            Some(Format::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Format::Xz)
        } else {
            None
        }
    }
}

/// bzip2's magic is plain text ("BZh"), so a text file could begin with it
/// (a CSV whose first column is `BZh`): also required are the block size
/// digit and the magic of the first block, or of the end of an empty stream.
fn is_bzip2(head: &[u8]) -> bool {
    const BLOCK: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
    const END: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];
    head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && (head[4..10] == BLOCK || head[4..10] == END)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct CompressOptions {
    format: Format,
    level: Option<u32>,
    threads: u32,
    keep_original: Option<bool>,
    existing: Existing,
    force: bool,
}

#[derive(Debug)]
pub struct Compress {
    format: Format,
    level: u32,
    threads: u32,
    keep_original: bool,
    existing: Existing,
    force: bool,
}

fn build_compress(options_json: &str) -> Result<Arc<dyn Task>, String> {
    Ok(Arc::new(Compress::from_json(options_json)?))
}

impl Compress {
    pub fn from_json(options_json: &str) -> Result<Self, String> {
        let o: CompressOptions = parse_options(options_json)?;
        let (default, max) = match o.format {
            Format::Gzip => (6, 9),
            Format::Zstd => (3, 19),
            _ => return Err("format must be \"gzip\" or \"zstd\"".into()),
        };
        let level = o.level.unwrap_or(default);
        if !(1..=max).contains(&level) {
            return Err(format!(
                "level {level} is out of range for {}: use 1-{max}",
                o.format.name()
            ));
        }
        let threads = if o.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        } else {
            o.threads
        };
        Ok(Compress {
            format: o.format,
            level,
            threads,
            keep_original: o.keep_original.unwrap_or(true),
            existing: o.existing,
            force: o.force,
        })
    }
}

/// The input as opened: the file plus what identifies its version.
struct Input {
    file: File,
    /// As opened: the version read, and the owner, permissions and times
    /// its output takes.
    meta: std::fs::Metadata,
}

impl Input {
    fn version(&self) -> Version {
        Version {
            len: self.meta.len(),
            mtime: self.meta.modified().ok(),
        }
    }
}

/// What identifies the version of a file that was read: its length and
/// modification time.
#[derive(Debug, Clone, Copy)]
struct Version {
    len: u64,
    mtime: Option<std::time::SystemTime>,
}

fn open_input(path: &Path) -> Result<Input, FileFailure> {
    // A regular file: open_regular_with_meta refuses anything else.
    let (file, meta) = crate::sandbox::open_regular_with_meta(path)
        .map_err(|e| FileFailure::from_io(&e, "opening the file"))?;
    Ok(Input { file, meta })
}

/// Fails when the file at `path` is no longer the version that was read.
fn check_unchanged(path: &Path, input: &Version, read: u64) -> Result<(), FileFailure> {
    let changed = FileFailure::new(
        FailureKind::Io,
        "the file changed while it was processed; its output was discarded and the original left as it is",
    );
    if read != input.len {
        return Err(changed);
    }
    match std::fs::metadata(path) {
        Ok(m) if m.len() == input.len && m.modified().ok() == input.mtime => Ok(()),
        Ok(_) => Err(changed),
        Err(e) => Err(FileFailure::from_io(
            &e,
            "checking the file after processing",
        )),
    }
}

thread_local! {
    /// This pool thread's copy buffer for [`pump`] (taken while in use, so a
    /// nested pump gets its own): zeroing 256 KiB per file cost as much as
    /// reading a small one.
    static PUMP_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Copies `from` into `to`, hashing what was read; returns (bytes, xxh3).
fn pump(
    from: &mut impl Read,
    to: &mut impl Write,
    limit: Option<u64>,
) -> Result<(u64, u64), PumpError> {
    let mut buf = PUMP_BUF.take();
    buf.resize(BUF, 0);
    let r = pump_with(from, to, limit, &mut buf);
    PUMP_BUF.set(buf);
    r
}

fn pump_with(
    from: &mut impl Read,
    to: &mut impl Write,
    limit: Option<u64>,
    buf: &mut [u8],
) -> Result<(u64, u64), PumpError> {
    let mut hasher = Xxh3::new();
    let mut total = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        total += n as u64;
        if let Some(max) = limit {
            if total > max {
                return Err(PumpError::Limit(max));
            }
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(PumpError::Write)?;
    }
    Ok((total, hasher.digest()))
}

thread_local! {
    /// This pool thread's input and output buffers for
    /// [`compress_one_shot`], at most [`ONE_SHOT_MAX`] and its compress
    /// bound (lent as [`OneShotBufs`] while in use).
    static ONE_SHOT_BUFS: std::cell::Cell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// This thread's one-shot buffers, lent for one file and given back when
/// dropped (on every path, errors included).
struct OneShotBufs {
    input: Vec<u8>,
    output: Vec<u8>,
}

impl OneShotBufs {
    fn lend() -> Self {
        let (input, output) = ONE_SHOT_BUFS.take();
        OneShotBufs { input, output }
    }
}

impl Drop for OneShotBufs {
    fn drop(&mut self) {
        let input = std::mem::take(&mut self.input);
        let output = std::mem::take(&mut self.output);
        ONE_SHOT_BUFS.set((input, output));
    }
}

/// Reads a file of `len` bytes whole into the front of `buf` and returns
/// how many bytes it read: `len` when the file is as it was opened, one
/// more when it has grown (the caller then fails it), fewer when it shrank.
/// It asks for `len + 1` bytes, so a file read in one call costs one
/// `read`: no further call to see the end (growth after that read is seen
/// by [`check_unchanged`], which compares the size and mtime again). `buf`
/// only grows, so a reused buffer is not zeroed again per file.
fn read_whole(mut from: &File, len: u64, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let want = len + 1;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut filled = 0;
    while filled < len {
        match from.read(&mut buf[filled..want]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Gzips `from` into `to` as one gzip member per [`GZIP_BLOCK`] of input,
/// `2 x threads` blocks at a time compressed on the rayon pool and written in
/// order (one block at a time, on this thread, when `threads` is 1);
/// returns (bytes read, xxh3 of them). Terminates when a read returns
/// nothing; a panic in a block propagates to the caller's batch job.
fn gzip_blocks(
    from: &mut impl Read,
    to: &mut impl Write,
    level: u32,
    threads: usize,
) -> Result<(u64, u64), PumpError> {
    use rayon::prelude::*;
    let window = if threads > 1 { threads * 2 } else { 1 };
    let mut hasher = Xxh3::new();
    let mut total = 0u64;
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(window);
    let mut eof = false;
    while !eof {
        blocks.clear();
        while blocks.len() < window {
            let mut block = Vec::with_capacity(GZIP_BLOCK);
            let n = from
                .take(GZIP_BLOCK as u64)
                .read_to_end(&mut block)
                .map_err(PumpError::Read)?;
            if n == 0 {
                eof = true;
                break;
            }
            hasher.update(&block);
            total += n as u64;
            blocks.push(block);
            if n < GZIP_BLOCK {
                eof = true;
                break;
            }
        }
        let outs: Vec<std::io::Result<Vec<u8>>> = blocks
            .par_iter()
            .map(|block| {
                let mut out = Vec::new();
                gzip_member(block, &mut out, level).map(|()| out)
            })
            .collect();
        for out in outs {
            to.write_all(&out.map_err(PumpError::Write)?)
                .map_err(PumpError::Write)?;
        }
    }
    if total == 0 {
        // An empty file still gets one (empty) member.
        let mut out = Vec::new();
        gzip_member(&[], &mut out, level).map_err(PumpError::Write)?;
        to.write_all(&out).map_err(PumpError::Write)?;
    }
    Ok((total, hasher.digest()))
}

enum PumpError {
    Read(std::io::Error),
    Write(std::io::Error),
    Limit(u64),
}

fn rel_path(rel: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(rel))
}

fn ext_of(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn already_compressed() -> String {
    json!({ "skipped": "already compressed (set force to compress anyway)" }).to_string()
}

/// Decompresses `path` as `format` and returns (bytes, xxh3) of the content.
fn digest_decompressed(path: &Path, format: Format) -> std::io::Result<(u64, u64)> {
    let file = BufReader::with_capacity(BUF, File::open(path)?);
    let mut sink = std::io::sink();
    let mut reader = decoder(format, file)?;
    match pump(&mut reader, &mut sink, None) {
        Ok(v) => Ok(v),
        Err(PumpError::Read(e)) | Err(PumpError::Write(e)) => Err(e),
        Err(PumpError::Limit(_)) => unreachable!("no limit"),
    }
}

pub(crate) fn decoder<'a, R: std::io::BufRead + 'a>(
    format: Format,
    r: R,
) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match format {
        Format::Gzip => Box::new(GzMembers {
            current: Some(flate2::bufread::GzDecoder::new(r)),
            ended: 0,
        }),
        Format::Zstd => Box::new(Bounded {
            inner: zstd::stream::read::Decoder::with_buffer(r)?,
            format,
        }),
        Format::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Format::Xz => Box::new(Bounded {
            inner: liblzma::bufread::XzDecoder::new_stream(
                r,
                liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(std::io::Error::from)?,
            ),
            format,
        }),
    })
}

/// Most memory one xz stream may take to decode. An xz header declares its
/// dictionary size (up to 1.5 GiB), and liblzma allocates it before the
/// first byte comes out: without a limit, a 100-byte file per thread could
/// take gigabytes. `xz -9` needs 65 MiB.
const XZ_MEMLIMIT: u64 = 256 << 20;

/// The largest zstd window decoded: libzstd's default limit (window log
/// 27), which `zstd -d` also keeps unless told `--long=N` or `--memory`.
const ZSTD_WINDOW_MAX_MIB: u64 = 128;

/// A zstd or xz decoder whose memory-limit error says what it means, with
/// the kind `OutOfMemory` so callers tell it from corrupt data.
struct Bounded<R> {
    inner: R,
    format: Format,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let message = match self.format {
                Format::Xz
                    if e.get_ref()
                        .and_then(|inner| inner.downcast_ref::<liblzma::stream::Error>())
                        .is_some_and(|inner| {
                            matches!(inner, liblzma::stream::Error::MemLimit)
                        }) =>
                {
                    format!(
                        "the xz stream needs more than {} MiB of memory to decode (its dictionary size), the most allowed",
                        XZ_MEMLIMIT >> 20
                    )
                }
                // libzstd's name for ZSTD_error_frameParameter_windowTooLarge.
                Format::Zstd if e.to_string() == "Frame requires too much memory for decoding" => {
                    format!(
                        "the zstd frame needs a window larger than {ZSTD_WINDOW_MAX_MIB} MiB to decode, the most allowed (such frames come from zstd --long above 27)"
                    )
                }
                _ => return e,
            };
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, message)
        })
    }
}

/// Every member of a gzip file, in order, and zero bytes after the last
/// one ignored, as `gzip -d` does: files stored on block devices or tapes
/// are padded with zeros, and `MultiGzDecoder` took the padding for a
/// broken member header. Anything else after a member must be a member.
struct GzMembers<R: std::io::BufRead> {
    current: Option<flate2::bufread::GzDecoder<R>>,
    /// Members read to their end, for the error after the last of them.
    ended: usize,
}

impl<R: std::io::BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(member) = self.current.as_mut() else {
                return Ok(0);
            };
            let n = match member.read(buf) {
                Ok(n) => n,
                Err(e) if self.ended > 0 => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "after {} complete member(s), what follows is not gzip ({e})",
                            self.ended
                        ),
                    ))
                }
                Err(e) => return Err(e),
            };
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.ended += 1;
            // This member has ended: what follows is the end, padding, or
            // the next member.
            let mut rest = self.current.take().expect("set above").into_inner();
            loop {
                let ahead = rest.fill_buf()?;
                if ahead.is_empty() {
                    return Ok(0);
                }
                let zeros = ahead.iter().take_while(|&&b| b == 0).count();
                if zeros == 0 {
                    break;
                }
                rest.consume(zeros);
            }
            self.current = Some(flate2::bufread::GzDecoder::new(rest));
        }
    }
}

/// What removes the original once its output is durable under its final
/// name (see [`crate::output::Outputs`]); the original must still be the
/// version that was read.
fn remove_original(path: &Path, version: Version) -> FollowUp {
    let path = path.to_path_buf();
    Box::new(move || {
        check_unchanged(&path, &version, version.len)?;
        crate::output::remove_file_released(&path).map_err(|e| {
            crate::output::write_failure(&e, "removing the original (the output was kept)")
        })
    })
}

thread_local! {
    /// This pool thread's zstd context for files below [`MT_THRESHOLD`]:
    /// creating and zeroing a context per file cost more than compressing
    /// a 10 KB file. It never has worker threads; only the level is set.
    static ZSTD_CTX: std::cell::RefCell<Option<(u32, zstd::zstd_safe::CCtx<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's zstd context at `level` (created on first
/// use or when the level changes; only the level is ever set on it).
fn with_zstd_ctx<T>(
    level: u32,
    f: impl FnOnce(&mut zstd::zstd_safe::CCtx<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    ZSTD_CTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut ctx = zstd::zstd_safe::CCtx::create();
            ctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level as i32))
                .map_err(|c| std::io::Error::other(zstd::zstd_safe::get_error_name(c)))?;
            *slot = Some((level, ctx));
        }
        let (_, ctx) = slot.as_mut().expect("set above");
        f(ctx)
    })
}

/// Compresses `from` into `to` as one zstd frame with this thread's reused
/// context at `level`.
fn zstd_single(
    from: &mut impl Read,
    to: impl Write,
    level: u32,
    len: u64,
) -> Result<(u64, u64), PumpError> {
    let mut pumped = None;
    let done = with_zstd_ctx(level, |ctx| {
        let mut enc = zstd::stream::write::Encoder::with_context(to, ctx);
        let _ = enc.set_pledged_src_size(Some(len));
        let r = pump(from, &mut enc, None);
        match r {
            Ok(v) => {
                enc.finish().and_then(|mut w| w.flush())?;
                pumped = Some(Ok(v));
            }
            Err(e) => pumped = Some(Err(e)),
        }
        Ok(())
    });
    match (done, pumped) {
        (Err(e), _) => Err(PumpError::Write(e)),
        (Ok(()), Some(r)) => r,
        (Ok(()), None) => unreachable!("set in the closure"),
    }
}

/// Compresses `input` (a small file read whole by [`read_whole`]) into `to`:
/// in one call into `output` (this thread's reused buffer), written with
/// one `write`. Returns (bytes read, xxh3 of them, bytes written).
fn compress_one_shot(
    format: Format,
    input: &[u8],
    output: &mut Vec<u8>,
    to: &mut File,
    level: u32,
) -> Result<(u64, u64, u64), PumpError> {
    let digest = xxhash_rust::xxh3::xxh3_64(input);
    output.clear();
    match format {
        Format::Gzip => gzip_member(input, output, level),
        _ => zstd_frame(input, output, level), // compress takes gzip or zstd only
    }
    .map_err(PumpError::Write)?;
    to.write_all(output).map_err(PumpError::Write)?;
    Ok((input.len() as u64, digest, output.len() as u64))
}

/// Appends `input` to `output` as one zstd frame, compressed by this
/// thread's context (which knows the exact size, as a pledged size would
/// tell it).
fn zstd_frame(input: &[u8], output: &mut Vec<u8>, level: u32) -> std::io::Result<()> {
    output.reserve(zstd::zstd_safe::compress_bound(input.len()));
    with_zstd_ctx(level, |ctx| {
        ctx.compress2(output, input)
            .map(drop)
            .map_err(|c| std::io::Error::other(zstd::zstd_safe::get_error_name(c)))
    })
}

thread_local! {
    /// This pool thread's libdeflate compressor and its level.
    static GZIP_STATE: std::cell::RefCell<Option<(u32, libdeflater::Compressor)>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends `input` to `output` as one gzip member, compressed in one call
/// by this thread's libdeflate compressor (header and CRC-32 trailer
/// included). libdeflate compresses whole buffers only, which is what a
/// small file and a block of a big one are, and there it runs about twice
/// as fast as zlib at the same level, with output 1% smaller (3,000 of the
/// bench's small logs at level 6: 2.4 s and 40.2 MB against 4.6 s and
/// 40.5 MB).
fn gzip_member(input: &[u8], output: &mut Vec<u8>, level: u32) -> std::io::Result<()> {
    let failed = |e: &dyn std::fmt::Debug| std::io::Error::other(format!("gzip: {e:?}"));
    GZIP_STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let lvl = libdeflater::CompressionLvl::new(level as i32).map_err(|e| failed(&e))?;
            *slot = Some((level, libdeflater::Compressor::new(lvl)));
        }
        let (_, compressor) = slot.as_mut().expect("set above");
        let start = output.len();
        output.resize(start + compressor.gzip_compress_bound(input.len()), 0);
        let n = compressor
            .gzip_compress(input, &mut output[start..])
            .map_err(|e| failed(&e))?;
        output.truncate(start + n);
        Ok(())
    })
}

impl Compress {
    /// The output name of `name`: the format's extension added.
    fn output_name(&self, name: &std::ffi::OsStr) -> std::ffi::OsString {
        let mut n = name.to_os_string();
        n.push(".");
        n.push(self.format.ext());
        n
    }

    fn run(&self, ctx: &FileCtx<'_>, input: &Input) -> Result<String, FileFailure> {
        let rel = rel_path(ctx.rel);
        if let Some(result) = self.skipped_by_name(rel) {
            return Ok(result);
        }
        // Removing one name of a file with other hard links frees nothing:
        // its bytes stay, uncompressed, under the other names. gzip leaves
        // such a file alone unless forced, and so does this.
        let links = std::os::unix::fs::MetadataExt::nlink(&input.meta);
        if !self.keep_original && !self.force && links > 1 {
            return Ok(json!({
                "skipped": format!(
                    "the file has {} other hard link(s), so removing it would free no space (set force to compress it anyway)",
                    links - 1
                )
            })
            .to_string());
        }
        // A small input is read whole first (one `read`), and its first
        // bytes are sniffed from memory; other inputs are sniffed with a
        // positioned read that leaves the offset at 0.
        let mut one_shot = (input.meta.len() <= ONE_SHOT_MAX).then(OneShotBufs::lend);
        let read_first = match &mut one_shot {
            Some(bufs) => Some(
                read_whole(&input.file, input.meta.len(), &mut bufs.input)
                    .map_err(|e| FileFailure::from_io(&e, "reading the file"))?,
            ),
            None => None,
        };
        if !self.force {
            let mut head = [0u8; 6];
            let head: &[u8] = match (&one_shot, read_first) {
                (Some(bufs), Some(n)) => &bufs.input[..n.min(head.len())],
                _ => {
                    use std::os::unix::fs::FileExt;
                    let n = input.file.read_at(&mut head, 0).unwrap_or(0);
                    &head[..n]
                }
            };
            if Format::sniff(head).is_some() {
                return Ok(already_compressed());
            }
        }
        let (out_path, out_rel) = output_for(ctx.destination, ctx.path, rel, |name| {
            self.output_name(name)
        })?;
        if self.existing != Existing::Overwrite && ctx.output_exists(&out_path) {
            if self.existing == Existing::Skip {
                return Ok(skipped_exists(&out_rel));
            }
            return Err(ctx.exists_failure(&out_path));
        }
        let mut out = AtomicFile::create_with_mode(&out_path, original_mode(&input.meta))?;
        // Bytes written, when the path that wrote them counted them.
        let mut written = None;
        let pumped = if let (Some(bufs), Some(n)) = (&mut one_shot, read_first) {
            let OneShotBufs { input, output } = bufs;
            compress_one_shot(self.format, &input[..n], output, out.file(), self.level).map(
                |(r, d, w)| {
                    written = Some(w);
                    (r, d)
                },
            )
        } else {
            let mut reader = BufReader::with_capacity(BUF, ctx.cancellable(&input.file));
            let w = BufWriter::with_capacity(BUF, out.file());
            match self.format {
                Format::Gzip => {
                    // Big files on every thread; others one block at a time
                    // on this one (libdeflate compresses whole blocks only).
                    let threads = if input.meta.len() >= MT_THRESHOLD {
                        self.threads as usize
                    } else {
                        1
                    };
                    let mut w = w;
                    let r = gzip_blocks(&mut reader, &mut w, self.level, threads);
                    r.and_then(|v| w.flush().map(|()| v).map_err(PumpError::Write))
                }
                _ if input.meta.len() >= MT_THRESHOLD && self.threads > 1 => (|| {
                    let mut enc = zstd::stream::write::Encoder::new(w, self.level as i32)
                        .map_err(PumpError::Write)?;
                    enc.multithread(self.threads).map_err(PumpError::Write)?;
                    let _ = enc.set_pledged_src_size(Some(input.meta.len()));
                    let r = pump(&mut reader, &mut enc, None);
                    r.and_then(|v| {
                        enc.finish()
                            .and_then(|mut w| w.flush())
                            .map_err(PumpError::Write)?;
                        Ok(v)
                    })
                })(),
                _ => zstd_single(&mut reader, w, self.level, input.meta.len()),
            }
        };
        let (read, digest) = match pumped {
            Ok(v) => v,
            Err(PumpError::Read(e)) => return Err(FileFailure::from_io(&e, "reading the file")),
            Err(PumpError::Write(e)) => {
                // A zstd encoder told the size refuses other input ("Src
                // size is incorrect"): a file that grew or shrank while
                // read is reported as changed, not as an output error.
                check_unchanged(ctx.path, &input.version(), input.meta.len())?;
                return Err(crate::output::write_failure(&e, "writing the output"));
            }
            Err(PumpError::Limit(_)) => unreachable!("no limit"),
        };
        check_unchanged(ctx.path, &input.version(), read)?;
        drop(one_shot);
        let bytes_out = written.unwrap_or_else(|| out.file().metadata().map_or(0, |m| m.len()));
        let mut then = None;
        if !self.keep_original {
            // Verified from the temp file, which is what gets published.
            let verified = digest_decompressed(out.temp_path(), self.format);
            match verified {
                Ok((n, d)) if n == read && d == digest => {}
                _ => return Err(FileFailure::new(
                    FailureKind::Internal,
                    "the output did not decompress to the original bytes; the original was kept",
                )),
            }
            then = Some(remove_original(ctx.path, input.version()));
        }
        copy_attributes(&input.meta, out.file())?;
        let skipped_result = skipped_exists(&out_rel);
        if out.publish(ctx.outputs, self.existing, skipped_result, then)? == Committed::Skipped {
            return Ok(skipped_exists(&out_rel));
        }
        let removed = !self.keep_original;
        Ok(json!({
            "output": out_rel.to_string_lossy(),
            "format": self.format.name(),
            "bytes_out": bytes_out,
            "removed_original": removed,
        })
        .to_string())
    }
}

/// Opens the file and runs `run` on it; a file that cannot be opened fails
/// with the size the listing gave. Shared by compress and decompress.
fn with_input(
    ctx: &FileCtx<'_>,
    run: impl FnOnce(&Input) -> Result<String, FileFailure>,
) -> FileOutcome {
    match open_input(ctx.path) {
        Ok(input) => FileOutcome {
            size: input.meta.len(),
            result: run(&input),
        },
        Err(f) => FileOutcome {
            size: ctx.known_size.unwrap_or(0),
            result: Err(f),
        },
    }
}

/// Counts for summaries of compress and decompress.
fn account_output(
    agg: &mut Aggregate,
    rel: &[u8],
    size: u64,
    result: &Result<String, FileFailure>,
) {
    agg.files += 1;
    match result {
        Err(_) => agg.failed += 1,
        Ok(json) => {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            if v.get("skipped").is_some() {
                agg.count("skipped", 1);
            } else {
                agg.count("written", 1);
                agg.count("bytes_in", size);
                agg.count("bytes_out", v["bytes_out"].as_u64().unwrap_or(0));
                if v["removed_original"] == true {
                    agg.count("removed_originals", 1);
                }
            }
        }
    }
    let _ = rel;
}

fn summarize_output(agg: &Aggregate) -> serde_json::Value {
    let c = |k: &str| agg.counters.get(k).copied().unwrap_or(0);
    let (bin, bout) = (c("bytes_in"), c("bytes_out"));
    json!({
        "files": agg.files,
        "failed": agg.failed,
        "written": c("written"),
        "skipped": c("skipped"),
        "removed_originals": c("removed_originals"),
        "bytes_in": bin,
        "bytes_out": bout,
        "ratio": if bout > 0 { (bin as f64 / bout as f64 * 1000.0).round() / 1000.0 } else { 0.0 },
    })
}

impl Task for Compress {
    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        with_input(ctx, |input| self.run(ctx, input))
    }

    /// Named as compressed (`.gz`, `.zip`, `.jpg`, ...): skipped before
    /// anything is read, unless `force`.
    fn skipped_by_name(&self, rel: &Path) -> Option<String> {
        (!self.force && COMPRESSED_EXT.contains(&ext_of(rel).as_str())).then(already_compressed)
    }

    fn planned_output(&self, rel: &Path) -> Option<PathBuf> {
        if self.skipped_by_name(rel).is_some() {
            return None; // skipped by its name, whatever is at the destination
        }
        Some(rel.with_file_name(self.output_name(rel.file_name()?)))
    }

    fn account(&self, agg: &mut Aggregate, rel: &[u8], size: u64, r: &Result<String, FileFailure>) {
        account_output(agg, rel, size, r)
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        summarize_output(agg)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DecompressOptions {
    keep_original: bool,
    existing: Existing,
    max_output_bytes: u64,
}

impl Default for DecompressOptions {
    fn default() -> Self {
        DecompressOptions {
            keep_original: true,
            existing: Existing::Skip,
            max_output_bytes: 1 << 40,
        }
    }
}

pub struct Decompress {
    o: DecompressOptions,
}

fn build_decompress(options_json: &str) -> Result<Arc<dyn Task>, String> {
    let o: DecompressOptions = parse_options(options_json)?;
    if o.max_output_bytes == 0 {
        return Err("max_output_bytes must be at least 1".into());
    }
    Ok(Arc::new(Decompress { o }))
}

/// The output name of compressed file `name`: its extension dropped
/// (`a.log.gz` -> `a.log`, `b.tgz` -> `b.tar`, as gzip, zstd, bzip2 and
/// xz name them), or `.out` added when it has none of the compressed
/// extensions (the format was sniffed).
fn decompressed_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let stem = Path::new(name).file_stem().unwrap_or(name).to_os_string();
    match ext_of(Path::new(name)).as_str() {
        "tgz" | "txz" | "tzst" | "tbz2" | "tbz" => {
            let mut s = stem;
            s.push(".tar");
            s
        }
        "gz" | "zst" | "zstd" | "bz2" | "bz" | "xz" => stem,
        _ => {
            let mut s = name.to_os_string();
            s.push(".out");
            s
        }
    }
}

impl Decompress {
    fn run(&self, ctx: &FileCtx<'_>, input: &Input) -> Result<String, FileFailure> {
        let rel = rel_path(ctx.rel);
        let mut reader = BufReader::with_capacity(BUF, ctx.cancellable(&input.file));
        let head = std::io::BufRead::fill_buf(&mut reader)
            .map_err(|e| FileFailure::from_io(&e, "reading the file"))?;
        let Some(format) = Format::sniff(head) else {
            return Err(FileFailure::new(
                FailureKind::InvalidData,
                "not a gzip, zstd, bzip2 or xz file",
            ));
        };
        let (out_path, out_rel) = output_for(ctx.destination, ctx.path, rel, decompressed_name)?;
        if self.o.existing != Existing::Overwrite && ctx.output_exists(&out_path) {
            if self.o.existing == Existing::Skip {
                return Ok(skipped_exists(&out_rel));
            }
            return Err(ctx.exists_failure(&out_path));
        }
        let mut out = AtomicFile::create_with_mode(&out_path, original_mode(&input.meta))?;
        let pumped = {
            let mut w = BufWriter::with_capacity(BUF, out.file());
            let mut dec = decoder(format, &mut reader)
                .map_err(|e| FileFailure::new(FailureKind::InvalidData, e.to_string()))?;
            let r = pump(&mut dec, &mut w, Some(self.o.max_output_bytes));
            r.and_then(|v| w.flush().map(|()| v).map_err(PumpError::Write))
        };
        let (written, _) = match pumped {
            Ok(v) => v,
            Err(PumpError::Read(e)) if e.kind() == std::io::ErrorKind::OutOfMemory => {
                return Err(FileFailure::new(
                    FailureKind::LimitExceeded,
                    format!("{e}; nothing was written"),
                ))
            }
            Err(PumpError::Read(e)) => {
                return Err(FileFailure::new(
                    FailureKind::InvalidData,
                    format!(
                        "corrupt or truncated {} data: {e}; nothing was written",
                        format.name()
                    ),
                ))
            }
            Err(PumpError::Write(e)) => {
                return Err(crate::output::write_failure(&e, "writing the output"))
            }
            Err(PumpError::Limit(max)) => {
                return Err(FileFailure::new(
                    FailureKind::LimitExceeded,
                    format!("decompresses to more than max_output_bytes ({max} bytes); raise it if the file is genuine"),
                ))
            }
        };
        copy_attributes(&input.meta, out.file())?;
        let then = (!self.o.keep_original).then(|| remove_original(ctx.path, input.version()));
        let skipped_result = skipped_exists(&out_rel);
        if out.publish(ctx.outputs, self.o.existing, skipped_result, then)? == Committed::Skipped {
            return Ok(skipped_exists(&out_rel));
        }
        let removed = !self.o.keep_original;
        Ok(json!({
            "output": out_rel.to_string_lossy(),
            "format": format.name(),
            "bytes_out": written,
            "removed_original": removed,
        })
        .to_string())
    }
}

impl Task for Decompress {
    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        with_input(ctx, |input| self.run(ctx, input))
    }

    fn planned_output(&self, rel: &Path) -> Option<PathBuf> {
        Some(rel.with_file_name(decompressed_name(rel.file_name()?)))
    }

    fn account(&self, agg: &mut Aggregate, rel: &[u8], size: u64, r: &Result<String, FileFailure>) {
        account_output(agg, rel, size, r)
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        summarize_output(agg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(task: &dyn Task, root: &Path, rel: &str, dest: Option<&Path>) -> FileOutcome {
        task.process(&FileCtx {
            path: &root.join(rel),
            rel: rel.as_bytes(),
            known_size: None,
            destination: dest,
            outputs: None,
            elsewhere: None,
            cancel: None,
            staged: false,
        })
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("line {i} level=info\n").into_bytes())
            .collect()
    }

    #[test]
    fn decompressed_names_follow_the_tools_that_made_them() {
        let name = |n: &str| {
            decompressed_name(std::ffi::OsStr::new(n))
                .into_string()
                .unwrap()
        };
        for (from, to) in [
            ("a.log.gz", "a.log"),
            ("B.GZ", "B"),
            ("c.zst", "c"),
            ("c.zstd", "c"),
            ("d.bz2", "d"),
            ("d.bz", "d"),
            ("e.xz", "e"),
            ("f.tgz", "f.tar"),
            ("f.txz", "f.tar"),
            ("f.tzst", "f.tar"),
            ("f.tbz2", "f.tar"),
            ("f.TBZ", "f.tar"),
            ("sniffed.bin", "sniffed.bin.out"),
            ("noext", "noext.out"),
        ] {
            assert_eq!(name(from), to, "{from}");
        }
    }

    #[test]
    fn gzip_members_are_all_read_and_zero_padding_after_them_ignored() {
        let gz = |text: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(text).unwrap();
            e.finish().unwrap()
        };
        let read = |data: Vec<u8>| {
            let mut out = Vec::new();
            decoder(Format::Gzip, &data[..])
                .unwrap()
                .read_to_end(&mut out)
                .map(|_| out)
        };
        let two = [gz(b"hello\n"), gz(b"world\n")].concat();
        assert_eq!(read(two.clone()).unwrap(), b"hello\nworld\n");
        // Padded to a block, as on tapes and block devices: gzip -d accepts it.
        let padded = [two.clone(), vec![0; 512]].concat();
        assert_eq!(read(padded).unwrap(), b"hello\nworld\n");
        // Zeros, then something else: not padding.
        let garbage = [two, vec![0; 10], b"GARBAGE!!!!!".to_vec()].concat();
        let err = read(garbage).unwrap_err().to_string();
        assert!(err.contains("after 2 complete member(s)"), "{err}");
        assert!(
            read(vec![0; 64]).is_err(),
            "zeros alone are not a gzip file"
        );
    }

    #[test]
    fn gzip_and_zstd_round_trip_through_decompress() {
        for format in ["gzip", "zstd"] {
            let src = tempfile::tempdir().unwrap();
            let dest = tempfile::tempdir().unwrap();
            let dest = dest.path().canonicalize().unwrap();
            std::fs::create_dir(src.path().join("logs")).unwrap();
            std::fs::write(src.path().join("logs/a.log"), sample()).unwrap();
            let task = Compress::from_json(&format!(r#"{{"format":"{format}"}}"#)).unwrap();
            let out = run(&task, src.path(), "logs/a.log", Some(&dest));
            let v: serde_json::Value = serde_json::from_str(&out.result.unwrap()).unwrap();
            let ext = if format == "gzip" { "gz" } else { "zst" };
            assert_eq!(v["output"], format!("logs/a.log.{ext}"));
            assert!(v["bytes_out"].as_u64().unwrap() < sample().len() as u64 / 4);
            // Back again, into a second destination.
            let back = tempfile::tempdir().unwrap();
            let back = back.path().canonicalize().unwrap();
            let rel = format!("logs/a.log.{ext}");
            let out = run(
                build_decompress("").unwrap().as_ref(),
                &dest,
                &rel,
                Some(&back),
            );
            out.result.unwrap();
            assert_eq!(std::fs::read(back.join("logs/a.log")).unwrap(), sample());
        }
    }

    #[test]
    fn remove_original_only_after_verified_output_next_to_input() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.log"), sample()).unwrap();
        let task = Compress::from_json(r#"{"keep_original":false,"format":"zstd"}"#).unwrap();
        let out = run(&task, src.path(), "a.log", None);
        let v: serde_json::Value = serde_json::from_str(&out.result.unwrap()).unwrap();
        assert_eq!(v["removed_original"], true);
        assert!(!src.path().join("a.log").exists());
        let data = zstd::decode_all(File::open(src.path().join("a.log.zst")).unwrap()).unwrap();
        assert_eq!(data, sample());
    }

    #[test]
    fn a_hard_linked_file_is_left_alone_when_its_original_would_be_removed() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.log"), b"shared bytes").unwrap();
        std::fs::hard_link(src.path().join("a.log"), src.path().join("b.log")).unwrap();
        let removing = Compress::from_json(r#"{"keep_original":false}"#).unwrap();
        let out = run(&removing, src.path(), "a.log", None).result.unwrap();
        assert!(out.contains("1 other hard link"), "{out}");
        assert!(src.path().join("a.log").exists());
        assert!(!src.path().join("a.log.gz").exists());
        // Keeping the original, or forced, it is compressed.
        let keeping = Compress::from_json("{}").unwrap();
        run(&keeping, src.path(), "a.log", None).result.unwrap();
        assert!(src.path().join("a.log.gz").exists());
        let forced =
            Compress::from_json(r#"{"keep_original":false,"force":true,"existing":"overwrite"}"#)
                .unwrap();
        run(&forced, src.path(), "b.log", None).result.unwrap();
        assert!(!src.path().join("b.log").exists());
        assert_eq!(
            std::fs::read(src.path().join("a.log")).unwrap(),
            b"shared bytes"
        );
    }

    #[test]
    fn already_compressed_and_existing_output_are_skipped() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("x.gz"), b"\x1f\x8bxxxx").unwrap();
        std::fs::write(src.path().join("noext"), b"\x28\xb5\x2f\xfdxx").unwrap();
        std::fs::write(src.path().join("b.txt"), b"hello").unwrap();
        std::fs::write(src.path().join("b.txt.gz"), b"old").unwrap();
        let task = Compress::from_json("").unwrap();
        for rel in ["x.gz", "noext", "b.txt"] {
            let r = run(&task, src.path(), rel, None).result.unwrap();
            assert!(r.contains("skipped"), "{rel}: {r}");
        }
        // The output in the way is named.
        let r = run(&task, src.path(), "b.txt", None).result.unwrap();
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v, json!({"skipped": "output exists", "output": "b.txt.gz"}));
        assert_eq!(std::fs::read(src.path().join("b.txt.gz")).unwrap(), b"old");
        let fail = Compress::from_json(r#"{"existing":"fail"}"#).unwrap();
        assert!(run(&fail, src.path(), "b.txt", None).result.is_err());
        let over = Compress::from_json(r#"{"existing":"overwrite"}"#).unwrap();
        run(&over, src.path(), "b.txt", None).result.unwrap();
        assert_ne!(std::fs::read(src.path().join("b.txt.gz")).unwrap(), b"old");
    }

    #[test]
    fn bad_levels_and_unknown_options_are_refused() {
        assert!(Compress::from_json(r#"{"level":10}"#)
            .unwrap_err()
            .contains("1-9"));
        assert!(Compress::from_json(r#"{"format":"zstd","level":19}"#).is_ok());
        assert!(Compress::from_json(r#"{"format":"xz"}"#).is_err());
        assert!(Compress::from_json(r#"{"lvl":1}"#).is_err());
    }

    #[test]
    fn truncated_gzip_fails_and_leaves_no_output() {
        let src = tempfile::tempdir().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&sample()).unwrap();
        let gz = enc.finish().unwrap();
        std::fs::write(src.path().join("t.log.gz"), &gz[..gz.len() / 2]).unwrap();
        let task = build_decompress(r#"{"keep_original":false}"#).unwrap();
        let err = run(task.as_ref(), src.path(), "t.log.gz", None)
            .result
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData, "{}", err.message);
        let names: Vec<_> = std::fs::read_dir(src.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the original remains");
    }

    #[test]
    fn decompress_bomb_is_bounded_and_bzip2_xz_decode() {
        let src = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 10 << 20];
        std::fs::write(
            src.path().join("z.zst"),
            zstd::encode_all(&zeros[..], 19).unwrap(),
        )
        .unwrap();
        let task = build_decompress(r#"{"max_output_bytes":1048576}"#).unwrap();
        let err = run(task.as_ref(), src.path(), "z.zst", None)
            .result
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded);
        assert!(!src.path().join("z").exists());

        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(b"bzip2 data").unwrap();
        std::fs::write(src.path().join("a.bz2"), bz.finish().unwrap()).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(b"xz data").unwrap();
        std::fs::write(src.path().join("b.xz"), xz.finish().unwrap()).unwrap();
        let task = build_decompress("").unwrap();
        run(task.as_ref(), src.path(), "a.bz2", None)
            .result
            .unwrap();
        run(task.as_ref(), src.path(), "b.xz", None).result.unwrap();
        assert_eq!(std::fs::read(src.path().join("a")).unwrap(), b"bzip2 data");
        assert_eq!(std::fs::read(src.path().join("b")).unwrap(), b"xz data");
    }

    /// CRC-32 (IEEE), for patching an xz block header in a test.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    #[test]
    fn zstd_with_a_window_past_the_limit_is_limit_exceeded_not_corrupt() {
        let src = tempfile::tempdir().unwrap();
        // A frame of unknown size with a 1 GiB window, as `zstd --long=30`
        // writes from a pipe.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(30).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.write_all(&b"long window ".repeat(1000)).unwrap();
        std::fs::write(src.path().join("w.zst"), enc.finish().unwrap()).unwrap();
        let task = build_decompress("").unwrap();
        let err = run(task.as_ref(), src.path(), "w.zst", None)
            .result
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded, "{}", err.message);
        assert!(
            err.message.contains("window larger than 128 MiB"),
            "{}",
            err.message
        );
        assert!(!src.path().join("w").exists());
    }

    #[test]
    fn xz_that_declares_a_huge_dictionary_fails_before_allocating_it() {
        let src = tempfile::tempdir().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(b"small payload").unwrap();
        let mut file = xz.finish().unwrap();
        // The block header follows the 12-byte stream header: size byte,
        // flags, then LZMA2's filter flags (id 0x21, 1 property byte: the
        // dictionary size) and a CRC-32 of the header. Declare 1 GiB.
        let header_len = (usize::from(file[12]) + 1) * 4;
        let header = &mut file[12..12 + header_len];
        assert_eq!(&header[2..4], &[0x21, 0x01]);
        header[4] = 36;
        let crc = crc32(&header[..header_len - 4]);
        header[header_len - 4..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(src.path().join("huge.xz"), &file).unwrap();

        let task = build_decompress("").unwrap();
        let err = run(task.as_ref(), src.path(), "huge.xz", None)
            .result
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded, "{}", err.message);
        assert!(err.message.contains("256 MiB"), "{}", err.message);
        assert!(!src.path().join("huge").exists());
        assert!(src.path().join("huge.xz").exists());
    }

    #[test]
    fn gzip_block_members_decode_to_the_input_as_one_stream_would() {
        // 2.5 blocks, so members are full, full and partial.
        let data: Vec<u8> = sample()
            .into_iter()
            .cycle()
            .take(GZIP_BLOCK * 5 / 2)
            .collect();
        let blocks = |threads| {
            let mut out = Vec::new();
            match gzip_blocks(&mut &data[..], &mut out, 6, threads) {
                Ok(v) => (v, out),
                Err(_) => panic!("gzip_blocks failed"),
            }
        };
        let ((n, digest), parallel) = blocks(2);
        // One block at a time (a mid-size file) gives the same members.
        assert_eq!(blocks(1).1, parallel);
        assert_eq!(n, data.len() as u64);
        assert_eq!(digest, xxhash_rust::xxh3::xxh3_64(&data));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&parallel[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap();
        // Equal ratio within 1%.
        assert!((parallel.len() as f64) < single.len() as f64 * 1.01);
    }

    #[test]
    fn file_changed_while_read_is_refused_and_kept() {
        let src = tempfile::tempdir().unwrap();
        let path = src.path().join("grow.log");
        std::fs::write(&path, sample()).unwrap();
        let input = open_input(&path).unwrap();
        // A writer appends after the file was opened (as a live log does).
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"one more line\n").unwrap();
        let err = check_unchanged(&path, &input.version(), input.meta.len()).unwrap_err();
        assert!(
            err.message.contains("changed while it was processed"),
            "{}",
            err.message
        );
        // remove_original re-checks, so the grown original is never removed.
        assert!(remove_original(&path, input.version())().is_err());
        assert!(path.exists());
    }

    #[test]
    fn unwritable_destination_and_vanished_file_fail_per_file() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.log"), sample()).unwrap();
        let task = Compress::from_json(r#"{"keep_original":false}"#).unwrap();
        let err = run(&task, src.path(), "gone.log", None).result.unwrap_err();
        assert_eq!(err.kind, FailureKind::NotFound);
        // /proc is never writable, even as root.
        let err = run(&task, src.path(), "a.log", Some(Path::new("/proc/pravah")))
            .result
            .unwrap_err();
        assert!(
            matches!(
                err.kind,
                FailureKind::PermissionDenied | FailureKind::Io | FailureKind::NotFound
            ),
            "{err:?}"
        );
        assert_eq!(std::fs::read(src.path().join("a.log")).unwrap(), sample());
    }

    #[test]
    fn a_cancelled_call_stops_a_big_file_and_leaves_only_the_original() {
        let src = tempfile::tempdir().unwrap();
        let big = sample().repeat((ONE_SHOT_MAX as usize / sample().len()) + 2);
        std::fs::write(src.path().join("big.log"), &big).unwrap();
        let cancel = std::sync::atomic::AtomicBool::new(true);
        for options in [r#"{"keep_original":false}"#, r#"{"format":"zstd"}"#] {
            let task = Compress::from_json(options).unwrap();
            let out = task.process(&FileCtx {
                path: &src.path().join("big.log"),
                rel: b"big.log",
                known_size: None,
                destination: None,
                outputs: None,
                elsewhere: None,
                cancel: Some(&cancel),
                staged: false,
            });
            let failure = out.result.unwrap_err();
            assert!(failure.message.contains("cancelled"), "{}", failure.message);
            let names: Vec<_> = std::fs::read_dir(src.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["big.log"]);
            assert_eq!(std::fs::read(src.path().join("big.log")).unwrap(), big);
        }
    }

    #[test]
    fn in_a_batch_originals_are_removed_only_once_outputs_are_settled() {
        let src = tempfile::tempdir().unwrap();
        let task = Compress::from_json(r#"{"keep_original":false,"format":"zstd"}"#).unwrap();
        let outputs = crate::output::Outputs::default();
        for i in 0..3 {
            std::fs::write(src.path().join(format!("{i}.log")), sample()).unwrap();
            outputs.start_file(i);
            let rel = format!("{i}.log");
            let out = task.process(&FileCtx {
                path: &src.path().join(&rel),
                rel: rel.as_bytes(),
                known_size: None,
                destination: None,
                outputs: Some(&outputs),
                elsewhere: None,
                cancel: None,
                staged: false,
            });
            out.result.unwrap();
        }
        // Nothing published and nothing removed before the batch settles.
        assert!(src.path().join("0.log").exists());
        assert!(!src.path().join("0.log.zst").exists());
        // A writer appends to one original before the batch ends: it is kept.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(src.path().join("1.log"))
            .unwrap();
        f.write_all(b"late line\n").unwrap();
        let changed = outputs.settle();
        assert_eq!(changed.len(), 1);
        assert!(
            matches!(&changed[0], (1, crate::output::Settled::Failed(f)) if f.message.contains("changed")),
            "{changed:?}"
        );
        assert!(src.path().join("1.log").exists());
        for i in [0, 2] {
            assert!(!src.path().join(format!("{i}.log")).exists());
            let data =
                zstd::decode_all(File::open(src.path().join(format!("{i}.log.zst"))).unwrap())
                    .unwrap();
            assert_eq!(data, sample());
        }
    }

    #[test]
    fn read_whole_sees_a_file_that_grew_or_shrank_and_reuses_its_buffer() {
        let src = tempfile::tempdir().unwrap();
        let path = src.path().join("a.log");
        std::fs::write(&path, sample()).unwrap();
        let len = sample().len() as u64;
        let mut buf = Vec::new();
        let n = read_whole(&File::open(&path).unwrap(), len, &mut buf).unwrap();
        assert_eq!(&buf[..n], &sample()[..]);
        // Grown since it was opened: one byte more than expected is read.
        let grown = read_whole(&File::open(&path).unwrap(), len - 10, &mut buf).unwrap();
        assert_eq!(grown as u64, len - 9);
        // Shrunk: fewer.
        let shrunk = read_whole(&File::open(&path).unwrap(), len + 10, &mut buf).unwrap();
        assert_eq!(shrunk as u64, len);
        // A smaller file after a bigger one reads only its own bytes.
        std::fs::write(&path, b"tiny").unwrap();
        let n = read_whole(&File::open(&path).unwrap(), 4, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"tiny");
    }

    #[test]
    fn small_zstd_sniffs_from_memory_and_reports_the_bytes_it_wrote() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("noext"), b"\x1f\x8bxxxx").unwrap();
        std::fs::write(src.path().join("a.log"), &sample()[..1_000_000]).unwrap();
        let task = Compress::from_json(r#"{"format":"zstd"}"#).unwrap();
        let r = run(&task, src.path(), "noext", None).result.unwrap();
        assert!(r.contains("already compressed"), "{r}");
        assert!(!src.path().join("noext.zst").exists());
        let forced = Compress::from_json(r#"{"format":"zstd","force":true}"#).unwrap();
        run(&forced, src.path(), "noext", None).result.unwrap();
        let back = zstd::decode_all(File::open(src.path().join("noext.zst")).unwrap()).unwrap();
        assert_eq!(back, b"\x1f\x8bxxxx");
        // Two files in a row on this thread: the reused buffers hold no
        // bytes of the bigger file in the smaller one's output.
        let v: serde_json::Value =
            serde_json::from_str(&run(&task, src.path(), "a.log", None).result.unwrap()).unwrap();
        let written = std::fs::metadata(src.path().join("a.log.zst"))
            .unwrap()
            .len();
        assert_eq!(v["bytes_out"].as_u64(), Some(written));
        std::fs::write(src.path().join("b.log"), b"short line\n").unwrap();
        run(&task, src.path(), "b.log", None).result.unwrap();
        let back = zstd::decode_all(File::open(src.path().join("b.log.zst")).unwrap()).unwrap();
        assert_eq!(back, b"short line\n");
    }

    #[test]
    fn outputs_keep_their_originals_permissions_times_and_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let src = tempfile::tempdir().unwrap();
        let log = src.path().join("app.log");
        std::fs::write(&log, sample()).unwrap();
        let set = |path: &Path, mode: u32, secs: u64| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let times = std::fs::FileTimes::new().set_modified(t).set_accessed(t);
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_times(times)
                .unwrap();
        };
        // Owned by someone else when the test can arrange it (as root).
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            std::os::unix::fs::chown(&log, Some(12345), Some(23456)).unwrap();
        }
        set(&log, 0o640, 1_577_934_245); // a log only its owner and group may read
        for format in ["gzip", "zstd"] {
            let task = Compress::from_json(&format!(r#"{{"format":"{format}"}}"#)).unwrap();
            run(&task, src.path(), "app.log", None).result.unwrap();
            let ext = if format == "gzip" { "gz" } else { "zst" };
            let out = std::fs::metadata(src.path().join(format!("app.log.{ext}"))).unwrap();
            assert_eq!(
                out.mode() & 0o777,
                0o640,
                "{format}: not readable by others"
            );
            assert_eq!(out.mtime(), 1_577_934_245, "{format}: the log's age");
            if root {
                assert_eq!(
                    (out.uid(), out.gid()),
                    (12345, 23456),
                    "{format}: still theirs"
                );
            }
        }
        // Decompressed: the compressed file's attributes, as gzip -d does.
        let gz = src.path().join("app.log.gz");
        set(&gz, 0o604, 1_600_000_000);
        std::fs::remove_file(&log).unwrap();
        let task = build_decompress("").unwrap();
        run(task.as_ref(), src.path(), "app.log.gz", None)
            .result
            .unwrap();
        let back = std::fs::metadata(&log).unwrap();
        assert_eq!(back.mode() & 0o777, 0o604);
        assert_eq!(back.mtime(), 1_600_000_000);
        assert_eq!(std::fs::read(&log).unwrap(), sample());
    }

    #[test]
    fn small_gzip_outputs_decompress_to_their_inputs_whatever_their_size_and_order() {
        let src = tempfile::tempdir().unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64; // xorshift: bytes deflate cannot shrink
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let compressible: Vec<u8> = sample().iter().copied().cycle().take(3 << 20).collect();
        // Incompressible input needs more room than it has bytes; a small
        // file after a bigger one must not carry the bigger one's bytes;
        // a level change on the same thread is honoured.
        let cases: [(&str, &[u8], u32); 5] = [
            ("empty.log", b"", 6),
            ("random.log", &random, 6),
            ("big.log", &compressible, 6),
            ("tiny.log", b"short line\n", 6),
            ("fast.log", &compressible, 1),
        ];
        for (name, data, level) in cases {
            std::fs::write(src.path().join(name), data).unwrap();
            let task =
                Compress::from_json(&format!(r#"{{"format":"gzip","level":{level}}}"#)).unwrap();
            let r = run(&task, src.path(), name, None).result.unwrap();
            let out = src.path().join(format!("{name}.gz"));
            let v: serde_json::Value = serde_json::from_str(&r).unwrap();
            assert_eq!(
                v["bytes_out"].as_u64(),
                Some(std::fs::metadata(&out).unwrap().len())
            );
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(File::open(&out).unwrap())
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{name}");
        }
        let level = |name: &str| std::fs::metadata(src.path().join(name)).unwrap().len();
        assert!(
            level("fast.log.gz") > level("big.log.gz"),
            "level 1 compresses less than 6"
        );
    }

    #[test]
    fn input_that_grew_after_opening_fails_as_changed_and_writes_nothing() {
        // Read whole (one shot), and streamed into an encoder (zstd's told the size).
        let sizes = [100_000, ONE_SHOT_MAX as usize + (1 << 20)];
        for (format, size) in ["gzip", "zstd"].iter().flat_map(|f| sizes.map(|s| (f, s))) {
            let src = tempfile::tempdir().unwrap();
            let path = src.path().join("live.log");
            let data: Vec<u8> = sample().iter().copied().cycle().take(size).collect();
            std::fs::write(&path, data).unwrap();
            let options = format!(r#"{{"format":"{format}","keep_original":false}}"#);
            let task = Compress::from_json(&options).unwrap();
            let input = open_input(&path).unwrap();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"one more line\n").unwrap();
            let ctx = FileCtx {
                path: &path,
                rel: b"live.log",
                known_size: None,
                destination: None,
                outputs: None,
                elsewhere: None,
                cancel: None,
                staged: false,
            };
            let err = task.run(&ctx, &input).unwrap_err();
            assert!(
                err.message.contains("changed while it was processed"),
                "{format} {size}: {}",
                err.message
            );
            let names: Vec<_> = std::fs::read_dir(src.path()).unwrap().collect();
            assert_eq!(names.len(), 1, "{format} {size}: only the original remains");
        }
    }
}
