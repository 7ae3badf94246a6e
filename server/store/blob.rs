//! Instance files on disk: the source of truth. Files are written to `tmp/`, fsynced, then
//! renamed to `objects/<2 hex>/<SOP Instance UID>~<content hash>.dcm`; the parent directory is
//! fsynced before any index entry points at the file. Names are built only from checked UIDs
//! and hashes.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::ids::{SopInstanceUid, Uid};

/// Where one instance file lives, relative to `objects/`: `ab/<sop>~<hash16>.dcm`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BlobKey(String);

impl BlobKey {
    pub fn new(sop: &SopInstanceUid, content_hash: &str) -> Self {
        let shard = &blake3::hash(sop.as_str().as_bytes()).to_hex()[..2];
        BlobKey(format!("{shard}/{sop}~{}.dcm", &content_hash[..16]))
    }

    /// Parse a relative path found on disk; `None` for anything we did not write.
    pub fn from_relative(rel: &str) -> Option<(Self, SopInstanceUid)> {
        let (shard, name) = rel.split_once('/')?;
        if shard.len() != 2 || !shard.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let stem = name.strip_suffix(".dcm")?;
        let (sop, hash) = stem.split_once('~')?;
        if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let sop = SopInstanceUid(Uid::parse(sop).ok()?);
        let key = BlobKey::new(&sop, &format!("{hash}{}", "0".repeat(48)));
        (key.0 == rel).then_some((key, sop))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// File storage for instances.
pub trait BlobStore: Send + Sync {
    /// A new, empty temporary file in the staging area.
    fn create_temp(&self) -> io::Result<(PathBuf, File)>;
    /// Make a finished temp file's data durable (fdatasync). Called while staging, so the
    /// fsyncs of one request overlap with receiving its next parts.
    fn persist_temp(&self, temp: &Path) -> io::Result<()>;
    /// Move a persisted temp file to `key` (the directory is synced by `sync_dirs`).
    fn commit(&self, temp: &Path, key: &BlobKey) -> io::Result<()>;
    /// fsync the directories of these keys (once each).
    fn sync_dirs(&self, keys: &[&BlobKey]) -> io::Result<()>;
    fn path(&self, key: &BlobKey) -> PathBuf;
    fn exists(&self, key: &BlobKey) -> bool;
    fn remove(&self, key: &BlobKey) -> io::Result<()>;
    /// Every stored file, with the SOP Instance UID its name carries; unknown names are
    /// returned as `Err(path)` so recovery can report them.
    fn list(&self) -> io::Result<Vec<Result<(BlobKey, SopInstanceUid), PathBuf>>>;
    /// Remove everything left in the staging area (start-up).
    fn clear_staging(&self) -> io::Result<usize>;
    /// Free bytes on the file system holding the files.
    fn available_space(&self) -> io::Result<u64>;
}

/// `BlobStore` on a local file system.
pub struct FsBlobStore {
    objects: PathBuf,
    tmp: PathBuf,
}

impl FsBlobStore {
    pub fn open(data: &Path) -> io::Result<Self> {
        let objects = data.join("objects");
        let tmp = data.join("tmp");
        fs::create_dir_all(&objects)?;
        fs::create_dir_all(&tmp)?;
        Ok(FsBlobStore { objects, tmp })
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl BlobStore for FsBlobStore {
    fn create_temp(&self) -> io::Result<(PathBuf, File)> {
        let name = format!("{}.part", hex::encode(rand::random::<[u8; 16]>()));
        let path = self.tmp.join(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    fn persist_temp(&self, temp: &Path) -> io::Result<()> {
        File::open(temp)?.sync_data()
    }

    fn commit(&self, temp: &Path, key: &BlobKey) -> io::Result<()> {
        let dest = self.path(key);
        let parent = dest.parent().expect("sharded path");
        if !parent.exists() {
            fs::create_dir_all(parent)?;
            sync_dir(&self.objects)?;
        }
        fs::rename(temp, &dest)
    }

    fn sync_dirs(&self, keys: &[&BlobKey]) -> io::Result<()> {
        let mut dirs: Vec<PathBuf> = keys
            .iter()
            .filter_map(|k| self.path(k).parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(())
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.objects.join(&key.0)
    }

    fn exists(&self, key: &BlobKey) -> bool {
        self.path(key).is_file()
    }

    fn remove(&self, key: &BlobKey) -> io::Result<()> {
        match fs::remove_file(self.path(key)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list(&self) -> io::Result<Vec<Result<(BlobKey, SopInstanceUid), PathBuf>>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.objects)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                out.push(Err(shard.path()));
                continue;
            }
            let shard_name = shard.file_name().to_string_lossy().into_owned();
            for f in fs::read_dir(shard.path())? {
                let f = f?;
                let rel = format!("{shard_name}/{}", f.file_name().to_string_lossy());
                match BlobKey::from_relative(&rel) {
                    Some(k) if f.file_type()?.is_file() => out.push(Ok(k)),
                    _ => out.push(Err(f.path())),
                }
            }
        }
        Ok(out)
    }

    fn clear_staging(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(&self.tmp)? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::remove_file(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn available_space(&self) -> io::Result<u64> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = CString::new(self.objects.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("path contains NUL"))?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// BLAKE3 of a file's bytes after the 128-byte preamble (the preamble is always zeroed, so it
/// carries no content). Hex encoded. BLAKE3 rather than SHA-256: this hash only identifies
/// content (byte-identical re-sends, file names), and it was the largest CPU cost of ingest.
pub fn content_hash(path: &Path) -> io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(128))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_foreign_names() {
        let sop = SopInstanceUid::parse("1.2.3.4").unwrap();
        let key = BlobKey::new(&sop, &"ab".repeat(32));
        let (back, sop2) = BlobKey::from_relative(key.as_str()).unwrap();
        assert_eq!(back, key);
        assert_eq!(sop2, sop);
        assert!(BlobKey::from_relative("zz/1.2.3~abababababababab.dcm").is_none());
        assert!(BlobKey::from_relative("00/../x~abababababababab.dcm").is_none());
        assert!(BlobKey::from_relative(&key.as_str().replace(".dcm", ".tmp")).is_none());
    }
}
