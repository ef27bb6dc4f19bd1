//! Random access to a file by byte ranges, buffered in blocks: how the
//! extract task reads a ZIP or tar archive in place, whether it is a local
//! file or an object in S3.
//!
//! Why blocks: the zip crate reads in small pieces (a 30-byte local header,
//! a name, a 2 KiB window while it looks for the end of the central
//! directory) and seeks before every entry. Over ranged GETs each of those
//! would be one request, and `std::io::BufReader` drops its buffer on every
//! seek. [`BlockReader`] instead fetches whole aligned blocks
//! (`[k * block, (k + 1) * block)`, clamped to the size) and keeps the last
//! [`KEPT`] of them, so reads and seeks inside a kept block cost nothing:
//! the central directory at the end of a ZIP is fetched with one or two
//! requests, a run of small entries with one request per block, and a
//! large entry or a tar stream as one request per block in order. Nothing
//! is staged on local disk; memory per reader is at most [`KEPT`] blocks.
//!
//! A reader is cheap to clone (the source is shared and kept blocks are
//! reference-counted), so one parsed `ZipArchive` is cloned for each
//! thread that extracts a range of its entries.
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

/// Blocks a reader keeps: two, so that a read or a backwards search that
/// crosses a block boundary does not fetch the same blocks again and again.
pub const KEPT: usize = 2;

/// Something whose bytes can be fetched by range.
pub trait RangeSource: Send + Sync {
    /// The size in bytes.
    fn size(&self) -> u64;
    /// How many bytes a [`BlockReader`] of it should fetch at a time.
    fn block_size(&self) -> u64 {
        256 * 1024
    }
    /// The bytes of `range` (within `0..size()`); fewer bytes than asked
    /// for mean the source is shorter than its size said.
    fn fetch(&self, range: Range<u64>) -> std::io::Result<Bytes>;
}

/// A local file read with positional reads (`pread`), shared by clones.
pub struct LocalFile {
    file: std::fs::File,
    size: u64,
}

impl LocalFile {
    pub fn new(file: std::fs::File) -> std::io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(LocalFile { file, size })
    }
}

impl RangeSource for LocalFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn fetch(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match self
                .file
                .read_at(&mut buf[filled..], range.start + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(Bytes::from(buf))
    }
}

/// A buffered `Read + Seek` view of a [`RangeSource`]; see the module doc.
#[derive(Clone)]
pub struct BlockReader {
    source: Arc<dyn RangeSource>,
    block: u64,
    size: u64,
    pos: u64,
    /// Kept blocks by start offset, most recently fetched last.
    kept: Vec<(u64, Bytes)>,
}

impl BlockReader {
    /// A reader of `source` that fetches `block` bytes at a time (at least 1).
    pub fn new(source: Arc<dyn RangeSource>, block: u64) -> Self {
        let size = source.size();
        BlockReader {
            source,
            block: block.max(1),
            size,
            pos: 0,
            kept: Vec::with_capacity(KEPT),
        }
    }

    /// The source's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The kept block that starts at `start`, fetched if needed.
    fn block_at(&mut self, start: u64) -> std::io::Result<&Bytes> {
        let index = match self.kept.iter().position(|(s, _)| *s == start) {
            Some(i) => i,
            None => {
                let end = self.size.min(start + self.block);
                let bytes = self.source.fetch(start..end)?;
                if (bytes.len() as u64) < end - start {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file ended at byte {} although its size is {} (changed while read?)",
                            start + bytes.len() as u64,
                            self.size
                        ),
                    ));
                }
                if self.kept.len() == KEPT {
                    self.kept.remove(0);
                }
                self.kept.push((start, bytes));
                self.kept.len() - 1
            }
        };
        Ok(&self.kept[index].1)
    }
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let start = self.pos / self.block * self.block;
        let offset = (self.pos - start) as usize;
        let block = self.block_at(start)?;
        let n = buf.len().min(block.len() - offset);
        buf[..n].copy_from_slice(&block[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlockReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = seek_target(self.pos, self.size, to)?;
        Ok(self.pos)
    }
}

/// Where a seek lands from `pos` in a source of `size` bytes; shared by
/// every reader over ranges, which all keep only a position and a size.
pub fn seek_target(pos: u64, size: u64, to: SeekFrom) -> std::io::Result<u64> {
    let target = match to {
        SeekFrom::Start(n) => Some(n),
        SeekFrom::End(d) => size.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    target.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "seek before the start of the file",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    /// Bytes in memory that record every range asked for.
    struct Recorded {
        data: Vec<u8>,
        fetched: Mutex<Vec<Range<u64>>>,
    }

    impl RangeSource for Recorded {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn fetch(&self, range: Range<u64>) -> std::io::Result<Bytes> {
            self.fetched.lock().unwrap().push(range.clone());
            Ok(Bytes::copy_from_slice(
                &self.data[range.start as usize..range.end as usize],
            ))
        }
    }

    fn recorded(data: Vec<u8>) -> Arc<Recorded> {
        Arc::new(Recorded {
            data,
            fetched: Mutex::new(Vec::new()),
        })
    }

    #[test]
    fn reads_and_seeks_inside_a_kept_block_fetch_nothing_more() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let src = recorded(data.clone());
        let mut r = BlockReader::new(src.clone(), 4096);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        assert_eq!(
            *src.fetched.lock().unwrap(),
            [0..4096, 4096..8192, 8192..10_000],
            "one aligned request per block, the last clamped to the size"
        );
        // Small reads and seeks back and forth over the last two blocks.
        src.fetched.lock().unwrap().clear();
        for at in [9000u64, 5000, 9990, 4096, 8191] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let mut b = [0u8; 3];
            let n = r.read(&mut b).unwrap();
            assert_eq!(&b[..n], &data[at as usize..at as usize + n]);
        }
        assert!(src.fetched.lock().unwrap().is_empty());
        // Past the end: nothing, and no request.
        r.seek(SeekFrom::End(5)).unwrap();
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
        assert!(r.seek(SeekFrom::Current(-1_000_000)).is_err());
        assert!(src.fetched.lock().unwrap().is_empty());
    }

    #[test]
    fn a_zip_is_opened_and_read_with_few_requests() {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for i in 0..500 {
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            zip.start_file(format!("dir/{i:04}.txt"), stored).unwrap();
            zip.write_all(format!("entry {i}\n").repeat(20).as_bytes())
                .unwrap();
        }
        let data = zip.finish().unwrap().into_inner();
        assert!(data.len() > 100_000, "{}", data.len());
        let src = recorded(data.clone());
        let block = 64 * 1024;
        let mut archive = zip::ZipArchive::new(BlockReader::new(src.clone(), block)).unwrap();
        let opening = src.fetched.lock().unwrap().len();
        assert!(
            opening <= 2,
            "the central directory took {opening} requests"
        );
        // Two clones read halves of the entries, as extract's threads do.
        let mut other = archive.clone();
        for i in 0..500 {
            let z = if i < 250 { &mut archive } else { &mut other };
            let mut s = String::new();
            z.by_index(i).unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("entry {i}\n").repeat(20));
        }
        let blocks = (data.len() as u64).div_ceil(block) as usize;
        let requests = src.fetched.lock().unwrap().len();
        assert!(
            requests <= blocks + opening + 1,
            "{requests} requests for {blocks} blocks"
        );
    }

    #[test]
    fn a_source_shorter_than_its_size_is_an_error_not_a_short_file() {
        struct Short;
        impl RangeSource for Short {
            fn size(&self) -> u64 {
                100
            }
            fn fetch(&self, range: Range<u64>) -> std::io::Result<Bytes> {
                Ok(Bytes::from(vec![
                    1u8;
                    (range.end - range.start) as usize / 2
                ]))
            }
        }
        let mut r = BlockReader::new(Arc::new(Short), 64);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_local_file_reads_by_position() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello, blocks").unwrap();
        let mut r = BlockReader::new(Arc::new(LocalFile::new(f).unwrap()), 4);
        r.seek(SeekFrom::Start(7)).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "blocks");
    }
}
