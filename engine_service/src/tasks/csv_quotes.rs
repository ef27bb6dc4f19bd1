//! A CSV input that fails when the file ends inside a quoted field.
//!
//! Why: the `csv` and `arrow-csv` readers (both on `csv-core`) take the end
//! of the file as the end of an open quoted field. One stray quote then
//! swallows every line after it into a single value: `"a,b` as a header
//! gave a one-column file of zero rows, and `1,"2` in the middle made the
//! rest of the file one field of the last row, with no error. A converted
//! file that silently lost its rows is worse than a failed one, so this
//! reader follows the quoting as `csv-core` does (its defaults: `"` quotes,
//! doubled to escape, no escape character, a leading UTF-8 byte order mark
//! skipped) and turns that end of file into an error that the readers pass
//! on.
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field (or a record).
    FieldStart,
    /// In a field that did not start with a quote: quotes are literal.
    Unquoted,
    /// Inside quotes.
    Quoted,
    /// Just after a quote inside quotes: a closing quote, or the first of
    /// a doubled one.
    QuoteInQuoted,
}

pub struct QuotesClosed<R> {
    inner: R,
    delimiter: u8,
    state: State,
    /// Bytes read so far, and where the open quoted field started.
    offset: u64,
    opened_at: u64,
    /// Whether the bytes so far are all a prefix of a UTF-8 byte order
    /// mark, which csv-core skips: the first field starts after it.
    in_bom: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<R: Read> QuotesClosed<R> {
    pub fn new(inner: R, delimiter: u8) -> Self {
        QuotesClosed {
            inner,
            delimiter,
            state: State::FieldStart,
            offset: 0,
            opened_at: 0,
            in_bom: true,
        }
    }

    fn follow(&mut self, mut bytes: &[u8]) {
        // The byte order mark, possibly over several reads.
        while self.in_bom && !bytes.is_empty() {
            let at = self.offset as usize;
            if at < BOM.len() && bytes[0] == BOM[at] {
                self.offset += 1;
                bytes = &bytes[1..];
                self.in_bom = at + 1 < BOM.len();
            } else {
                // Not a mark after all: the bytes taken for one were text.
                if at > 0 {
                    self.state = State::Unquoted;
                }
                self.in_bom = false;
            }
        }
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::FieldStart | State::Unquoted => {
                    let b = bytes[i];
                    if b == self.delimiter || b == b'\n' || b == b'\r' {
                        self.state = State::FieldStart;
                    } else if b == b'"' && self.state == State::FieldStart {
                        self.state = State::Quoted;
                        self.opened_at = self.offset + i as u64;
                    } else {
                        self.state = State::Unquoted;
                        // Skip to the end of the field.
                        match memchr::memchr3(self.delimiter, b'\n', b'\r', &bytes[i..]) {
                            Some(n) => {
                                i += n;
                                continue;
                            }
                            None => break,
                        }
                    }
                }
                State::Quoted => match memchr::memchr(b'"', &bytes[i..]) {
                    Some(n) => {
                        i += n;
                        self.state = State::QuoteInQuoted;
                    }
                    None => break,
                },
                State::QuoteInQuoted => {
                    let b = bytes[i];
                    self.state = if b == b'"' {
                        State::Quoted
                    } else if b == self.delimiter || b == b'\n' || b == b'\r' {
                        State::FieldStart
                    } else {
                        State::Unquoted
                    };
                }
            }
            i += 1;
        }
        self.offset += bytes.len() as u64;
    }
}

impl<R: Read> Read for QuotesClosed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.state == State::Quoted {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the file ends inside a quoted field opened at byte {}: a quote is never closed",
                    self.opened_at
                ),
            ));
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `data` through the check `chunk` bytes at a time.
    fn check(data: &[u8], delimiter: u8, chunk: usize) -> Result<(), String> {
        struct Chunks<'a>(&'a [u8], usize);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut sink = Vec::new();
        QuotesClosed::new(Chunks(data, chunk), delimiter)
            .read_to_end(&mut sink)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn closed_quotes_pass_and_an_open_one_fails_whatever_the_reads() {
        let closed: &[&[u8]] = &[
            b"a,b\n1,2\n",
            b"a,b\n\"x,\n\"\"y\"\"\",2\n",
            b"a,b\r\n1,\"\"\r\n",
            b"a,b\n1,2\"\"\"\n", // quotes inside an unquoted field are literal
            b"\"a\"x,b\n",       // text after a closing quote: csv-core reads on
            b"a,\"b\"",          // closing quote at the very end
            b"",
            b"\xEF\xBB\xBF\"x,\"y\n", // quoted after a byte order mark
            b"\xEF\xBB\"x\n",         // half a mark is text: quotes literal
        ];
        let open: &[&[u8]] = &[
            b"\"a,b\n1,2\n",
            b"a,b\n1,\"2\n3,4\n",
            b"a,b\n1,\"2\"\"",    // a doubled quote is not a closing one
            b"a;b\n1;\"x,\"\n\"", // the last line opens one
            b"\xEF\xBB\xBF\"a,b\n",
        ];
        for chunk in [1, 2, 3, 64] {
            for data in closed {
                assert_eq!(check(data, b',', chunk), Ok(()), "{data:?} by {chunk}");
            }
            for data in open.iter().filter(|d| d != &&open[3]) {
                let err = check(data, b',', chunk).unwrap_err();
                assert!(err.contains("never closed"), "{data:?} by {chunk}: {err}");
            }
            assert!(check(open[3], b';', chunk).is_err());
        }
        assert!(check(b"a,b\n1,\"2\n", b',', 64)
            .unwrap_err()
            .contains("opened at byte 6"));
        // With `;` as the delimiter, a comma does not start a field.
        assert_eq!(check(b"a;b\n1,\"2;3\n", b';', 64), Ok(()));
    }
}
