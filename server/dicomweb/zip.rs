//! ZIP retrieve: `Accept: application/zip` on a study, series or instance (PS3.18 8.7.3.2,
//! Supplement 211) answers with a ZIP of Part 10 files, one per instance.
//!
//! What goes in is decided exactly like a multipart DICOM retrieve ([`super::wado::retrieve`]):
//! the same transfer-syntax rules, read from the `transfer-syntax` parameter of the
//! `application/zip` range (no parameter: Explicit VR Little Endian except lossy data; `*`: as
//! stored), the same 206/406. This module only writes the archive.
//!
//! - Entries are `{StudyUID}/{SeriesUID}/{SOPInstanceUID}.dcm`, built from the validated UIDs
//!   of the index only (never from stored strings), so no entry can escape its directory.
//! - Entries are Stored, not deflated: pixel data barely compresses and deflate costs CPU.
//! - Written with `ZipWriter::new_stream` (data descriptors, no seeking) on a blocking thread
//!   into a bounded channel of 1 MiB chunks: memory stays flat whatever the size. An entry of
//!   4 GiB or more is written with Zip64 sizes; the central directory switches to Zip64 by
//!   itself when the archive passes 4 GiB or 65,535 entries.

use std::io::{Read, Write};
use std::path::PathBuf;

use ::zip::ZipWriter;
use ::zip::write::SimpleFileOptions;
use bytes::Bytes;

use crate::dicom::transcode;
use crate::error::Error;
use crate::store::records::InstanceRecord;

/// Bytes per chunk sent to the connection.
const CHUNK: usize = 1024 * 1024;
/// Chunks buffered between the writing thread and the connection.
const CHANNEL_DEPTH: usize = 4;

/// One file of the archive.
pub struct ZipEntry {
    /// Path inside the archive, from UIDs only.
    pub name: String,
    /// The stored instance file.
    pub path: PathBuf,
    /// Converted to this transfer syntax when its turn comes (`None`: the file as stored).
    pub convert_to: Option<String>,
}

impl ZipEntry {
    /// The entry for an instance going out in transfer syntax `ts`.
    pub fn new(rec: &InstanceRecord, path: PathBuf, ts: &str) -> Self {
        ZipEntry {
            name: entry_name(rec),
            path,
            convert_to: (ts != rec.transfer_syntax).then(|| ts.to_owned()),
        }
    }
}

/// `{StudyUID}/{SeriesUID}/{SOPInstanceUID}.dcm`.
pub fn entry_name(rec: &InstanceRecord) -> String {
    format!("{}/{}/{}.dcm", rec.study, rec.series, rec.sop)
}

/// `attachment; filename="{level}-{uid}.zip"` (RFC 6266): the level and its UID only, which
/// are digits and dots, so nothing needs quoting or escaping.
pub fn content_disposition(level: &str, uid: &str) -> String {
    format!("attachment; filename=\"{level}-{uid}.zip\"")
}

/// Sends what the ZIP writer produces to the connection in chunks of [`CHUNK`] bytes.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffered(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The ZIP writer may flush after small writes: chunks go out when full, and at the end.
        Ok(())
    }
}

/// The archive of `entries`, in order, as a stream of chunks.
pub fn stream(
    entries: Vec<ZipEntry>,
) -> impl futures_util::Stream<Item = Result<Bytes, Error>> + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Error>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let fail = tx.clone();
        if let Err(e) = write_archive(entries, tx) {
            // A vanished client shows as a broken pipe: nothing to report to anyone.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::error!(error = %e, "ZIP retrieve failed mid-response");
                let _ = fail.blocking_send(Err(Error::internal(e)));
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

fn write_archive(
    entries: Vec<ZipEntry>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, Error>>,
) -> std::io::Result<()> {
    let mut zip = ZipWriter::new_stream(ChannelWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    });
    let mut chunk = vec![0u8; CHUNK];
    for e in entries {
        // A conversion holds one instance in memory (as in a multipart retrieve); a file as
        // stored is copied in chunks.
        let (mut source, size): (Box<dyn Read>, u64) = match &e.convert_to {
            Some(ts) => {
                let bytes = transcode::convert(&e.path, ts).map_err(|why| {
                    std::io::Error::other(format!("{}: conversion failed: {why}", e.name))
                })?;
                let n = bytes.len() as u64;
                (Box::new(std::io::Cursor::new(bytes)), n)
            }
            None => {
                let f = std::fs::File::open(&e.path)
                    .map_err(|why| std::io::Error::other(format!("{}: {why}", e.path.display())))?;
                let n = f.metadata()?.len();
                (Box::new(f), n)
            }
        };
        let options = SimpleFileOptions::default()
            .compression_method(::zip::CompressionMethod::Stored)
            .large_file(size >= u64::from(u32::MAX));
        zip.start_file(e.name.as_str(), options)
            .map_err(std::io::Error::other)?;
        loop {
            let n = source.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            zip.write_all(&chunk[..n])?;
        }
    }
    let mut out = zip.finish().map_err(std::io::Error::other)?.into_inner();
    out.send_buffered()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names_only_the_level_and_uid() {
        assert_eq!(
            content_disposition("study", "1.2.3"),
            "attachment; filename=\"study-1.2.3.zip\""
        );
    }

    #[tokio::test]
    async fn archive_round_trips_and_is_streamed_in_chunks() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let small = dir.path().join("small");
        let big_bytes: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &big_bytes).unwrap();
        std::fs::write(&small, b"tiny").unwrap();
        let entries = vec![
            ZipEntry {
                name: "1/2/3.dcm".into(),
                path: big,
                convert_to: None,
            },
            ZipEntry {
                name: "1/2/4.dcm".into(),
                path: small,
                convert_to: None,
            },
        ];
        let mut body = Vec::new();
        let mut chunks = 0;
        let mut s = std::pin::pin!(stream(entries));
        while let Some(c) = s.next().await {
            let c = c.unwrap();
            assert!(c.len() <= CHUNK);
            body.extend_from_slice(&c);
            chunks += 1;
        }
        assert!(chunks >= 4);
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
        assert_eq!(a.len(), 2);
        let mut f = a.by_name("1/2/3.dcm").unwrap();
        assert_eq!(f.compression(), zip::CompressionMethod::Stored);
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, big_bytes);
    }
}
