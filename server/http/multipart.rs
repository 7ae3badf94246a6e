//! A streaming reader for `multipart/related` request bodies (RFC 2046 5.1, RFC 2387).
//!
//! Written here because actix-multipart 0.8 mis-reads parts that have no header lines
//! (`--boundary CRLF CRLF body`, legal per RFC 2046 and sent by some STOW clients): it swallows
//! the part into the next header block. Memory stays bounded: a part's body is handed out in
//! chunks as it arrives, holding back only as many bytes as the delimiter is long.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use memchr::memmem::Finder;

/// Largest header block of one part.
const MAX_HEADER_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("the body does not start with the boundary")]
    NoFirstBoundary,
    #[error("the body ended before the closing boundary")]
    Incomplete,
    #[error("part headers are malformed or larger than 16 KiB")]
    BadHeaders,
    #[error("malformed boundary line")]
    BadBoundaryLine,
    #[error("reading the request body failed: {0}")]
    Payload(String),
}

/// Headers of one part (names lowercased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders(pub Vec<(String, String)>);

impl PartHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Start,
    /// Just after a boundary line: headers follow.
    Headers,
    /// Inside a part body.
    Body,
    /// After the closing boundary.
    Done,
}

pub struct MultipartReader<S> {
    stream: S,
    buf: BytesMut,
    eof: bool,
    state: State,
    /// `CRLF--boundary`
    delimiter: Vec<u8>,
    finder: Finder<'static>,
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(stream: S, boundary: &str) -> Self {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        let finder = Finder::new(&delimiter).into_owned();
        MultipartReader {
            stream,
            buf: BytesMut::with_capacity(128 * 1024),
            eof: false,
            state: State::Start,
            delimiter,
            finder,
        }
    }

    async fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.eof {
            return Ok(false);
        }
        match self.stream.next().await {
            Some(Ok(b)) => {
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
            Some(Err(e)) => Err(MultipartError::Payload(e.to_string())),
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    /// After a delimiter: `--` closes, else optional whitespace then CRLF.
    async fn after_delimiter(&mut self) -> Result<(), MultipartError> {
        loop {
            if self.buf.len() >= 2 && &self.buf[..2] == b"--" {
                self.state = State::Done;
                self.buf.clear();
                return Ok(());
            }
            if let Some(pos) = memchr::memmem::find(&self.buf, b"\r\n") {
                if self.buf[..pos].iter().all(|&b| b == b' ' || b == b'\t') {
                    self.buf.advance(pos + 2);
                    self.state = State::Headers;
                    return Ok(());
                }
                return Err(MultipartError::BadBoundaryLine);
            }
            if self.buf.len() > 1024 {
                return Err(MultipartError::BadBoundaryLine);
            }
            if !self.fill().await? {
                return Err(MultipartError::Incomplete);
            }
        }
    }

    /// Advance to the next part and return its headers; `None` after the closing boundary.
    /// Any unread body of the current part is skipped.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, MultipartError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Start => {
                    // The first boundary may come without the leading CRLF (and after a preamble).
                    let dash = &self.delimiter[2..];
                    if self.buf.len() >= dash.len() && self.buf.starts_with(dash) {
                        self.buf.advance(dash.len());
                        self.after_delimiter().await?;
                    } else if let Some(pos) = self.finder.find(&self.buf) {
                        self.buf.advance(pos + self.delimiter.len());
                        self.after_delimiter().await?;
                    } else {
                        if self.buf.len() > 64 * 1024 {
                            return Err(MultipartError::NoFirstBoundary);
                        }
                        if !self.fill().await? {
                            return Err(MultipartError::NoFirstBoundary);
                        }
                    }
                }
                State::Body => while self.read_chunk().await?.is_some() {},
                State::Headers => {
                    let end = loop {
                        if self.buf.starts_with(b"\r\n") {
                            break 0;
                        }
                        if let Some(pos) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                            break pos + 2;
                        }
                        if self.buf.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::BadHeaders);
                        }
                        if !self.fill().await? {
                            return Err(MultipartError::Incomplete);
                        }
                    };
                    let block = self.buf.split_to(end);
                    self.buf.advance(2);
                    let text =
                        std::str::from_utf8(&block).map_err(|_| MultipartError::BadHeaders)?;
                    let mut headers = Vec::new();
                    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                        let (n, v) = line.split_once(':').ok_or(MultipartError::BadHeaders)?;
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                    self.state = State::Body;
                    return Ok(Some(PartHeaders(headers)));
                }
            }
        }
    }

    /// The next chunk of the current part's body; `None` at its end.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        if self.state != State::Body {
            return Ok(None);
        }
        loop {
            if let Some(pos) = self.finder.find(&self.buf) {
                if pos > 0 {
                    return Ok(Some(self.buf.split_to(pos).freeze()));
                }
                self.buf.advance(self.delimiter.len());
                self.after_delimiter().await?;
                return Ok(None);
            }
            // Hand out at once what cannot be the start of a delimiter, so each received byte
            // is searched about once (re-scanning a growing buffer would be quadratic).
            let keep = self.delimiter.len() - 1;
            if self.buf.len() > keep {
                let n = self.buf.len() - keep;
                return Ok(Some(self.buf.split_to(n).freeze()));
            }
            if !self.fill().await? {
                return Err(MultipartError::Incomplete);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(
        body: &[u8],
        chunk: usize,
    ) -> Result<Vec<(PartHeaders, Vec<u8>)>, MultipartError> {
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut r = MultipartReader::new(futures_util::stream::iter(chunks), "b0undary");
        let mut out = Vec::new();
        while let Some(h) = r.next_part().await? {
            let mut data = Vec::new();
            while let Some(c) = r.read_chunk().await? {
                data.extend_from_slice(&c);
            }
            out.push((h, data));
        }
        Ok(out)
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn parts_with_and_without_headers_any_chunking() {
        let body = b"preamble\r\n--b0undary\r\n\r\nFIRST\r\n--not-it\r\n--b0undary  \r\nContent-Type: application/dicom\r\nX: y\r\n\r\nSECOND\r\n--b0undary--\r\nepilogue";
        for chunk in [1, 2, 3, 7, 64, 1000] {
            let p = run(parts(body, chunk)).unwrap();
            assert_eq!(p.len(), 2, "chunk {chunk}");
            assert_eq!(p[0].1, b"FIRST\r\n--not-it");
            assert!(p[0].0.0.is_empty());
            assert_eq!(p[1].0.get("content-type"), Some("application/dicom"));
            assert_eq!(p[1].1, b"SECOND");
        }
    }

    #[test]
    fn leading_crlf_before_first_boundary() {
        let body = b"\r\n--b0undary\r\nContent-Type: application/dicom\r\n\r\nA\r\n--b0undary--";
        let p = run(parts(body, 5)).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1, b"A");
    }

    #[test]
    fn truncated_and_malformed_bodies_fail() {
        assert_eq!(
            run(parts(b"--b0undary\r\n\r\nDATA without end", 4)).unwrap_err(),
            MultipartError::Incomplete
        );
        assert_eq!(
            run(parts(b"no boundary at all", 4)).unwrap_err(),
            MultipartError::NoFirstBoundary
        );
        assert_eq!(
            run(parts(b"--b0undaryXX\r\n\r\nA\r\n--b0undary--", 4)).unwrap_err(),
            MultipartError::BadBoundaryLine
        );
        assert_eq!(
            run(parts(
                b"--b0undary\r\nno colon here\r\n\r\nA\r\n--b0undary--",
                4
            ))
            .unwrap_err(),
            MultipartError::BadHeaders
        );
    }

    #[test]
    fn large_part_is_streamed_in_chunks() {
        let mut body = b"--b0undary\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(7u8, 1_000_000));
        body.extend_from_slice(b"\r\n--b0undary--\r\n");
        let p = run(parts(&body, 8192)).unwrap();
        assert_eq!(p[0].1.len(), 1_000_000);
    }
}
