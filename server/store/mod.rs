//! The store: an index (`MetaRepo`, sled today) over instance files (`BlobStore`, local disk
//! today). Files are the source of truth; the index can always be rebuilt from them
//! (`lightbox reindex`). Routes never touch sled or paths directly: they call `Store`.
//!
//! Durability contract of [`Store::commit_batch`]: when it returns, every stored file has been
//! fsynced, renamed into place with its directory fsynced, and the index changes flushed.
//! Atomicity: index entries only ever name files that are complete on disk; a crash leaves
//! orphan files (removed by [`Store::recover`]) but never an entry without its file.

pub mod blob;
pub mod kv;
pub mod records;
pub mod sled_repo;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::dicom::parse::{self, Failure, Layout, Parsed, reason};
use crate::ids::{SeriesUid, SopInstanceUid, StudyUid};
use crate::search::catalog::Catalog;
use blob::{BlobKey, BlobStore, FsBlobStore};
use records::*;
use sled_repo::SledRepo;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("index: {0}")]
    Sled(#[from] sled::Error),
    /// Another process holds the index (a running server or import).
    #[error("{0}")]
    Locked(String),
    /// The data directory cannot be created or opened.
    #[error("{0}")]
    Open(String),
    #[error("index record is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    ClassMismatch(String),
    #[error("{0}")]
    Conflict(String),
    /// A patient or facility upload touching an object of another account.
    #[error("{0}")]
    NotOwner(String),
}

impl From<RepoError> for crate::error::Error {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Conflict(m) | RepoError::ClassMismatch(m) => {
                crate::error::Error::Conflict(m)
            }
            other => crate::error::Error::store(other),
        }
    }
}

/// An instance ready to be indexed.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub record: InstanceRecord,
    /// Set for uploads by patients and facilities: the account that must own the study (a new
    /// study becomes theirs; an existing one must already be).
    pub owner: Option<String>,
    pub study_attrs: Json,
    pub series_attrs: Json,
    pub metadata: Json,
}

/// What indexing an instance did.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    Stored,
    /// Byte-identical to what was stored: nothing changed.
    Unchanged,
    /// Changed content (possibly moved to another study/series): the old file can go.
    Replaced {
        old: Box<InstanceRecord>,
    },
}

/// The index. Implementations must make `commit` and `remove` atomic and keep aggregates exact
/// under concurrent callers. Blocking.
pub trait MetaRepo: Send + Sync {
    fn instance(&self, sop: &SopInstanceUid) -> Result<Option<InstanceRecord>, RepoError>;
    /// Identity, version and InstanceNumber of an instance, cheaper than [`MetaRepo::instance`].
    fn instance_ref(&self, sop: &SopInstanceUid) -> Result<Option<InstanceRef>, RepoError>;
    fn metadata(&self, sop: &SopInstanceUid) -> Result<Option<Json>, RepoError>;
    /// The metadata template as stored (JSON bytes), for responses that splice it unparsed.
    fn metadata_raw(&self, sop: &SopInstanceUid) -> Result<Option<Vec<u8>>, RepoError>;
    fn series(&self, series: &SeriesUid) -> Result<Option<SeriesRecord>, RepoError>;
    fn study(&self, study: &StudyUid) -> Result<Option<StudyRecord>, RepoError>;
    fn series_of_study(&self, study: &StudyUid) -> Result<Vec<SeriesUid>, RepoError>;
    fn instances_of_series(&self, series: &SeriesUid) -> Result<Vec<SopInstanceUid>, RepoError>;
    fn commit(&self, new: NewInstance) -> Result<CommitOutcome, RepoError>;
    fn remove(&self, sop: &SopInstanceUid) -> Result<Option<InstanceRecord>, RepoError>;
    /// Remove several instances in ONE atomic change (all or none, also across a crash), with
    /// their aggregates. An instance that is absent, or for which `keep` answers false when the
    /// write lock is held (it moved since the caller listed it), is left alone. Not flushed.
    fn remove_many(
        &self,
        sops: &[SopInstanceUid],
        keep: &dyn Fn(&InstanceRecord) -> bool,
    ) -> Result<Vec<InstanceRecord>, RepoError>;
    /// The account that owns a study uploaded by a patient or facility.
    fn owner(&self, study: &StudyUid) -> Result<Option<String>, RepoError>;
    /// Every study an account owns.
    fn owned_studies(&self, owner: &str) -> Result<Vec<StudyUid>, RepoError>;
    fn all_instances(&self) -> Result<Vec<InstanceRecord>, RepoError>;
    /// Every study record, one at a time (no list of them all is built).
    fn for_each_study(&self, f: &mut dyn FnMut(StudyRecord)) -> Result<(), RepoError>;
    /// Every series record, one at a time.
    fn for_each_series(&self, f: &mut dyn FnMut(SeriesRecord)) -> Result<(), RepoError>;
    /// (studies, series, instances)
    fn counts(&self) -> Result<(u64, u64, u64), RepoError>;
    /// Make every change so far durable.
    fn flush(&self) -> Result<(), RepoError>;
    fn schema_version(&self) -> Result<Option<u32>, RepoError>;
    /// Drop the whole index and stamp the current schema version.
    fn clear(&self) -> Result<(), RepoError>;
}

/// One file that passed parsing and is waiting to be committed.
#[derive(Debug)]
pub struct Staged {
    pub temp: PathBuf,
    pub parsed: Parsed,
    pub hash: String,
    pub size: u64,
}

/// Result of storing one instance.
#[derive(Debug, Clone)]
pub struct Stored {
    pub study: StudyUid,
    pub series: SeriesUid,
    pub sop: SopInstanceUid,
    pub sop_class: String,
    pub outcome: StoredKind,
    /// The study now holds instances of more than one patient identity.
    pub patient_conflict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    New,
    Unchanged,
    Replaced,
}

/// What start-up recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub temp_files_removed: usize,
    pub orphan_files_removed: usize,
    pub dangling_entries_removed: usize,
    pub foreign_files: Vec<PathBuf>,
}

/// What [`Store::delete`] removed.
#[derive(Debug, Clone, Default)]
pub struct Deleted {
    /// The index records of the removed instances (empty: nothing was there).
    pub instances: Vec<InstanceRecord>,
    /// The study has no instance left: its aggregates and owner entry are gone too.
    pub study_gone: bool,
}

/// Present in the data directory only between a clean stop and the next start.
const CLEAN_MARKER: &str = "clean-shutdown";
/// Data derived from stored files (thumbnails), under the data directory.
const DERIVED_DIR: &str = "derived";

pub struct Store {
    pub repo: Arc<dyn MetaRepo>,
    /// The sled database holding the index, also home of the accounts and audit trees.
    pub db: sled::Db,
    pub blobs: Arc<dyn BlobStore>,
    /// The in-memory search catalog, kept in step with the index by every method here that
    /// changes it.
    pub catalog: Arc<Catalog>,
    data: PathBuf,
}

impl Store {
    /// Open the store under `data` (creating it), run recovery, and rebuild the index when its
    /// schema version is not the current one.
    pub fn open(data: &Path) -> Result<(Self, RecoveryReport), RepoError> {
        std::fs::create_dir_all(data).map_err(|e| {
            RepoError::Open(format!(
                "cannot create data directory {}: {e}",
                data.display()
            ))
        })?;
        let blobs = FsBlobStore::open(data).map_err(|e| {
            RepoError::Open(format!(
                "cannot open {}: {e}",
                data.join("objects").display()
            ))
        })?;
        let repo = SledRepo::open(&data.join("index"))?;
        let store = Store {
            db: repo.db(),
            repo: Arc::new(repo),
            blobs: Arc::new(blobs),
            catalog: Arc::new(Catalog::default()),
            data: data.to_path_buf(),
        };
        // After a clean stop the files and the index agree: skip the full scans of recovery
        // (which read every file name and every record). The marker goes first, so a crash
        // from here on recovers at the next start.
        let marker = data.join(CLEAN_MARKER);
        let report = if marker.exists() {
            std::fs::remove_file(&marker)
                .and_then(|()| blob::sync_dir(data))
                .map_err(|e| RepoError::Open(format!("cannot remove {}: {e}", marker.display())))?;
            RecoveryReport::default()
        } else {
            store.recover()?
        };
        match store.repo.schema_version()? {
            Some(v) if v == SCHEMA_VERSION => {}
            None if store.repo.counts()?.2 == 0
                && store.blobs.list().map(|l| l.is_empty()).unwrap_or(true) =>
            {
                store.repo.clear()?;
            }
            other => {
                tracing::warn!(
                    found = ?other,
                    wanted = SCHEMA_VERSION,
                    "index schema differs from this version: rebuilding it from the files"
                );
                store.reindex(|_, _| {})?;
            }
        }
        store.catalog.rebuild(store.repo.as_ref())?;
        Ok((store, report))
    }

    /// Flushes the index and records a clean stop, so that the next [`Store::open`] can skip
    /// recovery. Call once, when nothing will write any more.
    pub fn close(&self) -> Result<(), RepoError> {
        self.repo.flush()?;
        let io = |e: std::io::Error| RepoError::Open(format!("cannot record a clean stop: {e}"));
        let marker = self.data.join(CLEAN_MARKER);
        let f = std::fs::File::create(&marker).map_err(io)?;
        f.sync_all().map_err(io)?;
        blob::sync_dir(&self.data).map_err(io)?;
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Where data derived from a study's files is kept (rendered thumbnails): one directory per
    /// study, `data/derived/{StudyInstanceUID}`, removed whole by [`Store::forget_derived`].
    pub fn derived_dir(&self, study: &StudyUid) -> PathBuf {
        self.data.join(DERIVED_DIR).join(study.as_str())
    }

    /// Drop everything derived from a study (after any store, replace or delete touching it).
    /// Derived data is rebuilt on request, so a failure is only logged.
    pub fn forget_derived(&self, study: &StudyUid) {
        let dir = self.derived_dir(study);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove derived data")
            }
        }
    }

    /// Remove temp files, files no index entry names, and entries whose file is gone.
    pub fn recover(&self) -> Result<RecoveryReport, RepoError> {
        let io = |e: std::io::Error| RepoError::Corrupt(format!("recovery: {e}"));
        let mut report = RecoveryReport {
            temp_files_removed: self.blobs.clear_staging().map_err(io)?,
            ..Default::default()
        };
        // After a crash, derived data may describe files that changed: drop it all (it is
        // rebuilt on request).
        match std::fs::remove_dir_all(self.data.join(DERIVED_DIR)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        for item in self.blobs.list().map_err(io)? {
            match item {
                Ok((key, sop)) => {
                    let named = self.repo.instance(&sop)?.is_some_and(|r| r.blob == key);
                    if !named {
                        tracing::warn!(
                            file = key.as_str(),
                            "recovery: removing a file no index entry names (an upload that never completed)"
                        );
                        self.blobs.remove(&key).map_err(io)?;
                        report.orphan_files_removed += 1;
                    }
                }
                Err(path) => report.foreign_files.push(path),
            }
        }
        for rec in self.repo.all_instances()? {
            if !self.blobs.exists(&rec.blob) {
                tracing::warn!(sop = %rec.sop, file = rec.blob.as_str(), "recovery: removing an index entry whose file is missing");
                self.repo.remove(&rec.sop)?;
                report.dangling_entries_removed += 1;
            }
        }
        for p in &report.foreign_files {
            tracing::warn!(path = %p.display(), "recovery: unexpected file in the objects directory (left alone)");
        }
        if report != RecoveryReport::default() {
            self.repo.flush()?;
            tracing::info!(?report, "recovery finished");
        }
        Ok(report)
    }

    /// Rebuild the whole index from the files. `progress(done, total)` is called per file.
    pub fn reindex(
        &self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<ReindexReport, RepoError> {
        let io = |e: std::io::Error| RepoError::Corrupt(format!("reindex: {e}"));
        let mut files: Vec<(BlobKey, std::time::SystemTime)> = self
            .blobs
            .list()
            .map_err(io)?
            .into_iter()
            .filter_map(Result::ok)
            .map(|(k, _)| {
                let t = std::fs::metadata(self.blobs.path(&k))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (k, t)
            })
            .collect();
        // Oldest first, so that when two files carry one SOP Instance UID the newest wins.
        files.sort_by_key(|(_, t)| *t);
        self.repo.clear()?;
        let total = files.len();
        let mut report = ReindexReport::default();
        for (i, (key, _)) in files.iter().enumerate() {
            let path = self.blobs.path(key);
            let result = parse::parse_file(&path).and_then(|parsed| {
                let hash = blob::content_hash(&path)
                    .map_err(|e| Failure::new(reason::PROCESSING_FAILURE, e.to_string()))?;
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Ok(self.new_instance(parsed, key.clone(), hash, size, None))
            });
            match result {
                Ok(new) => match self.repo.commit(new)? {
                    CommitOutcome::Replaced { old } if old.blob != *key => {
                        self.blobs.remove(&old.blob).map_err(io)?;
                        report.indexed += 1;
                        report.superseded += 1;
                    }
                    _ => report.indexed += 1,
                },
                Err(f) => {
                    tracing::warn!(file = key.as_str(), reason = %f.reason, "reindex: file cannot be indexed; left in place");
                    report.unreadable.push((key.as_str().to_owned(), f.reason));
                }
            }
            progress(i + 1, total);
        }
        self.repo.flush()?;
        self.catalog.rebuild(self.repo.as_ref())?;
        Ok(report)
    }

    fn new_instance(
        &self,
        p: Parsed,
        blob: BlobKey,
        hash: String,
        size: u64,
        owner: Option<String>,
    ) -> NewInstance {
        NewInstance {
            owner,
            record: InstanceRecord {
                study: p.study,
                series: p.series,
                sop: p.sop,
                sop_class: p.sop_class,
                transfer_syntax: p.transfer_syntax,
                blob,
                size,
                hash,
                stored_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                patient_id: p.patient_id,
                patient_name: p.patient_name,
                modality: p.modality,
                attrs: p.instance_attrs,
                frames: p.frames,
            },
            study_attrs: p.study_attrs,
            series_attrs: p.series_attrs,
            metadata: p.metadata,
        }
    }

    /// Prepare a received file for storage: fix its preamble (zeroed; added when missing),
    /// hash and parse it, and make its data durable. The temp file is removed on failure.
    /// Blocking.
    pub fn stage(&self, temp: PathBuf) -> Result<Staged, Failure> {
        self.stage_hashed(temp, None)
    }

    /// As [`Store::stage`], with the BLAKE3 hash of the bytes after offset 128 already computed
    /// while the file was received (used only when the file has its preamble).
    pub fn stage_hashed(&self, temp: PathBuf, hash: Option<String>) -> Result<Staged, Failure> {
        let result = stage_file(&self.blobs, &temp, hash);
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Store staged files: durable files first, then the index, then one flush. Results are in
    /// input order. Blocking.
    /// Instances that would take free disk space below `disk_reserve` bytes fail with 0xA700.
    /// With `owner`, the batch may only create studies (which become the owner's) or add to
    /// studies the owner has; anything else fails with 0x0110.
    pub fn commit_batch(
        &self,
        staged: Vec<Staged>,
        disk_reserve: u64,
        owner: Option<&str>,
    ) -> Vec<Result<Stored, Failure>> {
        let mut results: Vec<Option<Result<Stored, Failure>>> = Vec::with_capacity(staged.len());
        let mut pending: Vec<(usize, NewInstance)> = Vec::new();
        // 1. Files: fsync + rename, skipping byte-identical re-sends.
        for (i, s) in staged.into_iter().enumerate() {
            let fail = |code: u16, msg: String| {
                Failure::new(code, msg).with_uids(
                    Some(s.parsed.sop_class.to_string()),
                    Some(s.parsed.sop.to_string()),
                )
            };
            if let Some(owner) = owner {
                let not_owned = |study: &StudyUid| -> bool {
                    match self.repo.owner(study) {
                        Ok(Some(o)) => o != owner,
                        Ok(None) => self.repo.study(study).ok().flatten().is_some(),
                        Err(_) => true,
                    }
                };
                let existing = self.repo.instance(&s.parsed.sop).ok().flatten();
                if existing.as_ref().is_some_and(|old| not_owned(&old.study))
                    || not_owned(&s.parsed.study)
                {
                    let _ = std::fs::remove_file(&s.temp);
                    results.push(Some(Err(fail(
                        reason::PROCESSING_FAILURE,
                        "this instance or study belongs to another account".into(),
                    ))));
                    continue;
                }
            }
            match self.repo.instance(&s.parsed.sop) {
                Ok(Some(old)) if old.sop_class != s.parsed.sop_class => {
                    let _ = std::fs::remove_file(&s.temp);
                    results.push(Some(Err(fail(
                        reason::DATASET_DOES_NOT_MATCH,
                        format!(
                            "SOP Instance {} is already registered under SOP Class {}",
                            s.parsed.sop, old.sop_class
                        ),
                    ))));
                    continue;
                }
                Ok(Some(old)) if old.hash == s.hash => {
                    let _ = std::fs::remove_file(&s.temp);
                    let conflict = self
                        .repo
                        .study(&old.study)
                        .ok()
                        .flatten()
                        .is_some_and(|st| st.patient_conflict());
                    results.push(Some(Ok(Stored {
                        study: old.study,
                        series: old.series,
                        sop: old.sop,
                        sop_class: old.sop_class.to_string(),
                        outcome: StoredKind::Unchanged,
                        patient_conflict: conflict,
                    })));
                    continue;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&s.temp);
                    results.push(Some(Err(fail(reason::PROCESSING_FAILURE, e.to_string()))));
                    continue;
                }
                _ => {}
            }
            if !self.has_room(disk_reserve, 0) {
                let _ = std::fs::remove_file(&s.temp);
                results.push(Some(Err(fail(
                    reason::OUT_OF_RESOURCES,
                    "free disk space is below the configured reserve".into(),
                ))));
                continue;
            }
            let key = BlobKey::new(&s.parsed.sop, &s.hash);
            if let Err(e) = self.blobs.commit(&s.temp, &key) {
                let _ = std::fs::remove_file(&s.temp);
                results.push(Some(Err(fail(
                    reason::PROCESSING_FAILURE,
                    format!("write failed: {e}"),
                ))));
                continue;
            }
            results.push(None);
            pending.push((
                i,
                self.new_instance(s.parsed, key, s.hash, s.size, owner.map(str::to_owned)),
            ));
        }
        let keys: Vec<&BlobKey> = pending.iter().map(|(_, n)| &n.record.blob).collect();
        if let Err(e) = self.blobs.sync_dirs(&keys) {
            for (i, n) in &pending {
                let _ = self.blobs.remove(&n.record.blob);
                results[*i] = Some(Err(Failure::new(
                    reason::PROCESSING_FAILURE,
                    format!("sync failed: {e}"),
                )
                .with_uids(
                    Some(n.record.sop_class.to_string()),
                    Some(n.record.sop.to_string()),
                )));
            }
            pending.clear();
        }
        // 2. Index.
        let mut superseded: Vec<BlobKey> = Vec::new();
        let mut touched: Vec<StudyUid> = Vec::new();
        for (i, new) in pending {
            let rec = new.record.clone();
            let fail = |code: u16, msg: String| {
                Failure::new(code, msg)
                    .with_uids(Some(rec.sop_class.to_string()), Some(rec.sop.to_string()))
            };
            results[i] = Some(match self.repo.commit(new) {
                Ok(outcome) => {
                    let kind = match outcome {
                        CommitOutcome::Stored => StoredKind::New,
                        CommitOutcome::Unchanged => StoredKind::Unchanged,
                        CommitOutcome::Replaced { old } => {
                            touched.push(old.study.clone());
                            if old.blob != rec.blob {
                                superseded.push(old.blob.clone());
                            }
                            StoredKind::Replaced
                        }
                    };
                    touched.push(rec.study.clone());
                    let conflict = self
                        .repo
                        .study(&rec.study)
                        .ok()
                        .flatten()
                        .is_some_and(|st| st.patient_conflict());
                    Ok(Stored {
                        study: rec.study.clone(),
                        series: rec.series.clone(),
                        sop: rec.sop.clone(),
                        sop_class: rec.sop_class.to_string(),
                        outcome: kind,
                        patient_conflict: conflict,
                    })
                }
                Err(e) => {
                    // The file was renamed into place but is not indexed: remove it (unless an
                    // identical concurrent upload owns the same name).
                    let owned = self
                        .repo
                        .instance(&rec.sop)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.blob == rec.blob);
                    if !owned {
                        let _ = self.blobs.remove(&rec.blob);
                    }
                    Err(match e {
                        RepoError::ClassMismatch(m) => fail(reason::DATASET_DOES_NOT_MATCH, m),
                        RepoError::Conflict(m) | RepoError::NotOwner(m) => {
                            fail(reason::PROCESSING_FAILURE, m)
                        }
                        other => fail(reason::PROCESSING_FAILURE, other.to_string()),
                    })
                }
            });
        }
        // 3. One flush for the batch, then the superseded files can go.
        if let Err(e) = self.repo.flush() {
            tracing::error!(error = %e, "index flush failed");
            return results
                .into_iter()
                .map(|r| match r {
                    Some(Ok(s)) => Err(Failure::new(
                        reason::PROCESSING_FAILURE,
                        "index flush failed",
                    )
                    .with_uids(Some(s.sop_class), Some(s.sop.to_string()))),
                    Some(Err(f)) => Err(f),
                    None => Err(Failure::new(reason::PROCESSING_FAILURE, "not processed")),
                })
                .collect();
        }
        touched.sort();
        touched.dedup();
        for study in &touched {
            self.forget_derived(study);
            if let Err(e) = self.catalog.refresh(self.repo.as_ref(), study) {
                tracing::error!(error = %e, study = %study, "search catalog refresh failed");
            }
        }
        for key in superseded {
            if let Err(e) = self.blobs.remove(&key) {
                tracing::warn!(file = key.as_str(), error = %e, "could not remove a replaced file; recovery will");
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Failure::new(reason::PROCESSING_FAILURE, "not processed")))
            })
            .collect()
    }

    /// Remove a whole study (see [`Store::delete`]). Returns the instances removed. Blocking.
    pub fn delete_study(&self, study: &StudyUid) -> Result<usize, RepoError> {
        Ok(self.delete(study, None, None)?.instances.len())
    }

    /// Remove a study, one series of it, or one instance of that series: every index entry in
    /// one atomic batch, flushed, then derived data, then the files. A crash before the flush
    /// leaves everything in place; a crash after it leaves files no entry names, which
    /// [`Store::recover`] removes at the next start: never half an object. Instances that are
    /// not (or no longer) under the given study and series are left alone; nothing removed
    /// means the target was absent. Blocking (sled writes, one fsync, file removals).
    pub fn delete(
        &self,
        study: &StudyUid,
        series: Option<&SeriesUid>,
        sop: Option<&SopInstanceUid>,
    ) -> Result<Deleted, RepoError> {
        let sops = match (series, sop) {
            (_, Some(sop)) => vec![sop.clone()],
            (Some(series), None) => self.repo.instances_of_series(series)?,
            (None, None) => {
                let mut v = Vec::new();
                for s in self.repo.series_of_study(study)? {
                    v.extend(self.repo.instances_of_series(&s)?);
                }
                v
            }
        };
        let keep = |r: &InstanceRecord| r.study == *study && series.is_none_or(|s| r.series == *s);
        let instances = self.repo.remove_many(&sops, &keep)?;
        if instances.is_empty() {
            return Ok(Deleted::default());
        }
        self.repo.flush()?;
        self.forget_derived(study);
        if let Err(e) = self.catalog.refresh(self.repo.as_ref(), study) {
            tracing::error!(error = %e, study = %study, "search catalog refresh failed");
        }
        let study_gone = self.repo.study(study)?.is_none();
        for r in &instances {
            if let Err(e) = self.blobs.remove(&r.blob) {
                tracing::warn!(file = r.blob.as_str(), error = %e, "could not remove a deleted file; recovery will");
            }
        }
        Ok(Deleted {
            instances,
            study_gone,
        })
    }

    /// Free disk space is at least the reserve plus `extra` bytes.
    pub fn has_room(&self, reserve: u64, extra: u64) -> bool {
        match self.blobs.available_space() {
            Ok(free) => free >= reserve.saturating_add(extra),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read free disk space");
                true
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct ReindexReport {
    pub indexed: usize,
    pub superseded: usize,
    pub unreadable: Vec<(String, String)>,
}

/// Zero or add the preamble in place, then hash and parse.
fn stage_file(
    blobs: &Arc<dyn BlobStore>,
    temp: &Path,
    known_hash: Option<String>,
) -> Result<Staged, Failure> {
    use std::io::{Seek, SeekFrom, Write};
    let pf = |e: std::io::Error| Failure::new(reason::PROCESSING_FAILURE, format!("staging: {e}"));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(temp)
        .map_err(pf)?;
    let mut head = [0u8; 132];
    let n = read_up_to(&mut f, &mut head).map_err(pf)?;
    let mut known_hash = known_hash;
    let temp = match parse::sniff(&head[..n]) {
        Layout::Part10 => {
            if head[..128].iter().any(|&b| b != 0) {
                // Polyglot files hide executables in the preamble: it is always zeroed.
                f.seek(SeekFrom::Start(0)).map_err(pf)?;
                f.write_all(&[0u8; 128]).map_err(pf)?;
            }
            temp.to_path_buf()
        }
        Layout::NoPreamble => {
            known_hash = None; // the content shifts by 128 bytes
            let (path, mut out) = blobs.create_temp().map_err(pf)?;
            out.write_all(&[0u8; 128]).map_err(pf)?;
            f.seek(SeekFrom::Start(0)).map_err(pf)?;
            std::io::copy(&mut f, &mut out).map_err(pf)?;
            drop(out);
            let _ = std::fs::remove_file(temp);
            path
        }
        Layout::NotPart10 => {
            return Err(Failure::new(
                reason::CANNOT_UNDERSTAND,
                "not a DICOM Part 10 file (no DICM prefix)",
            ));
        }
    };
    drop(f);
    match parse::repair_declared_encoding(&temp) {
        Ok(true) => known_hash = None,
        Ok(false) => {}
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    }
    let parsed = match parse::parse_file(&temp) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    let hash = match known_hash {
        Some(h) => h,
        None => blob::content_hash(&temp).map_err(pf)?,
    };
    let size = std::fs::metadata(&temp).map_err(pf)?.len();
    blobs.persist_temp(&temp).map_err(pf)?;
    Ok(Staged {
        temp,
        parsed,
        hash,
        size,
    })
}

fn read_up_to(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
