//! The index on sled. One tree, prefixed keys, so that every change of one instance (record,
//! metadata, memberships, series and study aggregates) is a single atomic `Batch`:
//!
//! | key | value |
//! |---|---|
//! | `I\0<sop>` | `InstanceRecord` |
//! | `M\0<sop>` | metadata template (DICOM JSON) |
//! | `E\0<series>` | `SeriesRecord` |
//! | `S\0<study>` | `StudyRecord` |
//! | `ES\0<study>\0<series>` | series of a study |
//! | `IE\0<series>\0<sop>` | instances of a series |
//! | `W\0<study>` | the account owning a study uploaded by a patient or facility |
//! | `V` | schema version |
//!
//! Writers are serialised by one mutex, so aggregates stay exact under concurrent STOWs.
//! sled only makes writes durable on `flush` (it flushes every 500 ms by itself): callers flush
//! before acknowledging.

use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use super::kv::{self, enc, key as k};
use super::records::*;
use super::{CommitOutcome, MetaRepo, NewInstance, RepoError};
use crate::ids::{SeriesUid, SopInstanceUid, StudyUid};

pub struct SledRepo {
    db: sled::Db,
    tree: sled::Tree,
    write: Mutex<()>,
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, RepoError> {
    kv::dec(b).map_err(|e| RepoError::Corrupt(e.to_string()))
}

impl SledRepo {
    /// Open (or create) the index under `dir`. Fails with a clear message when another process
    /// holds it.
    pub fn open(dir: &Path) -> Result<Self, RepoError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            // Fewer segment rewrites: instance files dominate the disk, not the index.
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                // sled 0.34 reports a held lock as Io(Other, "could not acquire lock on ...").
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    RepoError::Locked(format!(
                        "the index at {} is in use by another Lightbox process (a running server?): {io}",
                        dir.display()
                    ))
                }
                other => RepoError::Sled(other),
            })?;
        let tree = db.open_tree("index")?;
        Ok(SledRepo {
            db,
            tree,
            write: Mutex::new(()),
        })
    }

    /// The underlying database, for the other trees that live beside the index (accounts,
    /// audit chain).
    pub fn db(&self) -> sled::Db {
        self.db.clone()
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, RepoError> {
        self.tree.get(key)?.map(|v| dec(&v)).transpose()
    }

    fn children(&self, prefix: &str, parent: &str) -> Result<Vec<String>, RepoError> {
        let mut p = k(prefix, &[parent]);
        p.push(0);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&p).keys() {
            let key = kv?;
            out.push(String::from_utf8_lossy(&key[p.len()..]).into_owned());
        }
        Ok(out)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MetaRepo for SledRepo {
    fn instance(&self, sop: &SopInstanceUid) -> Result<Option<InstanceRecord>, RepoError> {
        self.get(&k("I", &[sop.as_str()]))
    }

    fn instance_ref(&self, sop: &SopInstanceUid) -> Result<Option<InstanceRef>, RepoError> {
        self.get(&k("I", &[sop.as_str()]))
    }

    fn metadata(&self, sop: &SopInstanceUid) -> Result<Option<Json>, RepoError> {
        self.get(&k("M", &[sop.as_str()]))
    }

    fn metadata_raw(&self, sop: &SopInstanceUid) -> Result<Option<Vec<u8>>, RepoError> {
        Ok(self.tree.get(k("M", &[sop.as_str()]))?.map(|v| v.to_vec()))
    }

    fn series(&self, series: &SeriesUid) -> Result<Option<SeriesRecord>, RepoError> {
        self.get(&k("E", &[series.as_str()]))
    }

    fn study(&self, study: &StudyUid) -> Result<Option<StudyRecord>, RepoError> {
        self.get(&k("S", &[study.as_str()]))
    }

    fn series_of_study(&self, study: &StudyUid) -> Result<Vec<SeriesUid>, RepoError> {
        Ok(self
            .children("ES", study.as_str())?
            .iter()
            .filter_map(|s| SeriesUid::parse(s).ok())
            .collect())
    }

    fn instances_of_series(&self, series: &SeriesUid) -> Result<Vec<SopInstanceUid>, RepoError> {
        Ok(self
            .children("IE", series.as_str())?
            .iter()
            .filter_map(|s| SopInstanceUid::parse(s).ok())
            .collect())
    }

    fn commit(&self, new: NewInstance) -> Result<CommitOutcome, RepoError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let now = now();
        let rec = &new.record;
        let old: Option<InstanceRecord> = self.get(&k("I", &[rec.sop.as_str()]))?;
        if let Some(old) = &old {
            if old.sop_class != rec.sop_class {
                return Err(RepoError::ClassMismatch(format!(
                    "SOP Instance {} is registered under SOP Class {}, not {}",
                    rec.sop, old.sop_class, rec.sop_class
                )));
            }
            if let Some(owner) = &new.owner
                && self.get::<String>(&k("W", &[old.study.as_str()]))?.as_ref() != Some(owner)
            {
                return Err(RepoError::NotOwner(
                    "this instance belongs to another account".into(),
                ));
            }
            if old.hash == rec.hash {
                return Ok(CommitOutcome::Unchanged);
            }
        }
        // Detach the old version (if any) and attach the new one in one overlay, so that a
        // replace, even across two studies, is a single atomic batch.
        let overlay = Overlay::new(&self.tree);
        if let Some(old) = &old {
            overlay.detach(old, now)?;
        }
        overlay.attach(&new, now)?;
        let mut batch = sled::Batch::default();
        overlay.write_into(&mut batch);
        self.tree.apply_batch(batch)?;
        Ok(match old {
            Some(old) => CommitOutcome::Replaced { old: Box::new(old) },
            None => CommitOutcome::Stored,
        })
    }

    fn remove(&self, sop: &SopInstanceUid) -> Result<Option<InstanceRecord>, RepoError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let Some(old) = self.get::<InstanceRecord>(&k("I", &[sop.as_str()]))? else {
            return Ok(None);
        };
        let overlay = Overlay::new(&self.tree);
        overlay.detach(&old, now())?;
        let mut batch = sled::Batch::default();
        overlay.write_into(&mut batch);
        self.tree.apply_batch(batch)?;
        Ok(Some(old))
    }

    fn remove_many(
        &self,
        sops: &[SopInstanceUid],
        keep: &dyn Fn(&InstanceRecord) -> bool,
    ) -> Result<Vec<InstanceRecord>, RepoError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let now = now();
        // One overlay for every detach: aggregates are read back from it, so they count down
        // across the whole set, and the batch holds the final state only.
        let overlay = Overlay::new(&self.tree);
        let mut removed = Vec::with_capacity(sops.len());
        for sop in sops {
            let Some(old) = overlay.get::<InstanceRecord>(&k("I", &[sop.as_str()]))? else {
                continue;
            };
            if !keep(&old) {
                continue;
            }
            overlay.detach(&old, now)?;
            removed.push(old);
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        let mut batch = sled::Batch::default();
        overlay.write_into(&mut batch);
        self.tree.apply_batch(batch)?;
        Ok(removed)
    }

    fn owner(&self, study: &StudyUid) -> Result<Option<String>, RepoError> {
        self.get(&k("W", &[study.as_str()]))
    }

    fn owned_studies(&self, owner: &str) -> Result<Vec<StudyUid>, RepoError> {
        let p = k("W", &[""]);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&p) {
            let (key, v) = kv?;
            if dec::<String>(&v)? == owner
                && let Ok(uid) = StudyUid::parse(&String::from_utf8_lossy(&key[p.len()..]))
            {
                out.push(uid);
            }
        }
        Ok(out)
    }

    fn all_instances(&self) -> Result<Vec<InstanceRecord>, RepoError> {
        let p = k("I", &[""]);
        self.tree
            .scan_prefix(&p)
            .values()
            .map(|v| dec(&v?))
            .collect()
    }

    fn for_each_study(&self, f: &mut dyn FnMut(StudyRecord)) -> Result<(), RepoError> {
        for v in self.tree.scan_prefix(k("S", &[""])).values() {
            f(dec(&v?)?);
        }
        Ok(())
    }

    fn for_each_series(&self, f: &mut dyn FnMut(SeriesRecord)) -> Result<(), RepoError> {
        for v in self.tree.scan_prefix(k("E", &[""])).values() {
            f(dec(&v?)?);
        }
        Ok(())
    }

    fn counts(&self) -> Result<(u64, u64, u64), RepoError> {
        let count = |prefix: &str| -> Result<u64, RepoError> {
            let mut p = prefix.as_bytes().to_vec();
            p.push(0);
            Ok(self.tree.scan_prefix(p).keys().count() as u64)
        };
        Ok((count("S")?, count("E")?, count("I")?))
    }

    fn flush(&self) -> Result<(), RepoError> {
        self.db.flush()?;
        Ok(())
    }

    fn schema_version(&self) -> Result<Option<u32>, RepoError> {
        self.get(b"V")
    }

    fn clear(&self) -> Result<(), RepoError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        self.tree.clear()?;
        self.tree.insert(b"V", enc(&SCHEMA_VERSION))?;
        self.db.flush()?;
        Ok(())
    }
}

/// A tiny write-back cache over the tree so that a replace (detach + attach, possibly across
/// two studies) becomes one batch.
struct Overlay<'a> {
    tree: &'a sled::Tree,
    changes: std::cell::RefCell<std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl<'a> Overlay<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Overlay {
            tree,
            changes: Default::default(),
        }
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, RepoError> {
        if let Some(v) = self.changes.borrow().get(key) {
            return v.as_deref().map(dec).transpose();
        }
        self.tree.get(key)?.map(|v| dec(&v)).transpose()
    }

    fn put<T: Serialize>(&self, key: Vec<u8>, v: &T) {
        self.changes.borrow_mut().insert(key, Some(enc(v)));
    }

    fn put_raw(&self, key: Vec<u8>, v: Vec<u8>) {
        self.changes.borrow_mut().insert(key, Some(v));
    }

    fn del(&self, key: Vec<u8>) {
        self.changes.borrow_mut().insert(key, None);
    }

    fn write_into(&self, batch: &mut sled::Batch) {
        for (key, v) in self.changes.borrow().iter() {
            match v {
                Some(v) => batch.insert(key.clone(), v.clone()),
                None => batch.remove(key.clone()),
            }
        }
    }

    fn detach(&self, old: &InstanceRecord, now: u64) -> Result<(), RepoError> {
        self.del(k("IE", &[old.series.as_str(), old.sop.as_str()]));
        let mut series: SeriesRecord = self
            .get(&k("E", &[old.series.as_str()]))?
            .ok_or_else(|| RepoError::Corrupt(format!("series {} missing", old.series)))?;
        let mut study: StudyRecord = self
            .get(&k("S", &[old.study.as_str()]))?
            .ok_or_else(|| RepoError::Corrupt(format!("study {} missing", old.study)))?;
        series.instance_count = series.instance_count.saturating_sub(1);
        study.instance_count = study.instance_count.saturating_sub(1);
        let pk = patient_key(&old.patient_id, &old.patient_name);
        if let Some(n) = study.patients.get_mut(&pk) {
            *n -= 1;
            if *n == 0 {
                study.patients.remove(&pk);
            }
        }
        if series.instance_count == 0 {
            self.del(k("E", &[old.series.as_str()]));
            self.del(k("ES", &[old.study.as_str(), old.series.as_str()]));
            study.series_count = study.series_count.saturating_sub(1);
            if let Some(m) = &series.modality
                && let Some(n) = study.modalities.get_mut(m)
            {
                *n -= 1;
                if *n == 0 {
                    study.modalities.remove(m);
                }
            }
        } else {
            self.put(k("E", &[old.series.as_str()]), &series);
        }
        if study.instance_count == 0 {
            self.del(k("S", &[old.study.as_str()]));
            self.del(k("W", &[old.study.as_str()]));
        } else {
            study.updated_at = now;
            self.put(k("S", &[old.study.as_str()]), &study);
        }
        self.del(k("I", &[old.sop.as_str()]));
        self.del(k("M", &[old.sop.as_str()]));
        Ok(())
    }

    fn attach(&self, new: &NewInstance, now: u64) -> Result<(), RepoError> {
        let rec = &new.record;
        self.put_raw(
            k("IE", &[rec.series.as_str(), rec.sop.as_str()]),
            Vec::new(),
        );
        let series_key = k("E", &[rec.series.as_str()]);
        let study_key = k("S", &[rec.study.as_str()]);
        let existing_study: Option<StudyRecord> = self.get(&study_key)?;
        if let Some(owner) = &new.owner {
            let owner_key = k("W", &[rec.study.as_str()]);
            match (&existing_study, self.get::<String>(&owner_key)?) {
                (None, _) => self.put(owner_key, owner),
                (Some(_), Some(o)) if &o == owner => {}
                (Some(_), _) => {
                    return Err(RepoError::NotOwner(
                        "this study belongs to another account".into(),
                    ));
                }
            }
        }
        let mut study: StudyRecord = existing_study.unwrap_or_else(|| StudyRecord {
            study: rec.study.clone(),
            attrs: Json::Null,
            series_count: 0,
            instance_count: 0,
            modalities: Default::default(),
            patients: Default::default(),
            updated_at: now,
        });
        let series = match self.get::<SeriesRecord>(&series_key)? {
            Some(mut s) => {
                if s.study != rec.study {
                    return Err(RepoError::Conflict(format!(
                        "series {} already belongs to study {}",
                        rec.series, s.study
                    )));
                }
                if s.modality != rec.modality {
                    if let Some(m) = &s.modality
                        && let Some(n) = study.modalities.get_mut(m)
                    {
                        *n -= 1;
                        if *n == 0 {
                            study.modalities.remove(m);
                        }
                    }
                    if let Some(m) = &rec.modality {
                        *study.modalities.entry(m.clone()).or_default() += 1;
                    }
                    s.modality = rec.modality.clone();
                }
                s.instance_count += 1;
                s.attrs = new.series_attrs.clone();
                s
            }
            None => {
                study.series_count += 1;
                self.put_raw(
                    k("ES", &[rec.study.as_str(), rec.series.as_str()]),
                    Vec::new(),
                );
                if let Some(m) = &rec.modality {
                    *study.modalities.entry(m.clone()).or_default() += 1;
                }
                SeriesRecord {
                    study: rec.study.clone(),
                    series: rec.series.clone(),
                    modality: rec.modality.clone(),
                    attrs: new.series_attrs.clone(),
                    instance_count: 1,
                }
            }
        };
        study.instance_count += 1;
        *study
            .patients
            .entry(patient_key(&rec.patient_id, &rec.patient_name))
            .or_default() += 1;
        study.attrs = new.study_attrs.clone();
        study.updated_at = now;
        self.put(series_key, &series);
        self.put(study_key, &study);
        self.put(k("I", &[rec.sop.as_str()]), rec);
        self.put(k("M", &[rec.sop.as_str()]), &new.metadata);
        Ok(())
    }
}
