//! What the index holds per instance, series and study. Serialised as JSON in sled so the
//! records stay readable with any tool; `SCHEMA_VERSION` changes force a reindex.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::blob::BlobKey;
use crate::dicom::parse::FrameAccess;
use crate::ids::{SeriesUid, SopClassUid, SopInstanceUid, StudyUid};

/// Bump when a record gains or changes a field; start-up then rebuilds the index from files.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub study: StudyUid,
    pub series: SeriesUid,
    pub sop: SopInstanceUid,
    pub sop_class: SopClassUid,
    pub transfer_syntax: String,
    pub blob: BlobKey,
    /// File size in bytes.
    pub size: u64,
    /// BLAKE3 of the file after the preamble.
    pub hash: String,
    /// Unix seconds.
    pub stored_at: u64,
    pub patient_id: String,
    pub patient_name: String,
    pub modality: Option<String>,
    /// Instance-level attributes, DICOM JSON.
    pub attrs: Json,
    pub frames: FrameAccess,
}

impl InstanceRecord {
    /// The first value of an indexed instance attribute (8-hex tag) as an unsigned integer,
    /// whether DICOM JSON holds it as a number (US) or a string (IS).
    pub fn attr_u64(&self, tag: &str) -> Option<u64> {
        let v = self.attrs.get(tag)?.get("Value")?.get(0)?;
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    }

    /// Frames of the instance: the indexed byte ranges, else Number of Frames, else 1.
    pub fn number_of_frames(&self) -> u32 {
        match &self.frames {
            FrameAccess::Indexed(f) => f.len() as u32,
            _ => self
                .attr_u64("00280008")
                .map_or(1, |n| n.clamp(1, u64::from(u32::MAX)) as u32),
        }
    }
}

/// The part of an [`InstanceRecord`] that metadata responses need: identity, version and
/// InstanceNumber. Read from the same stored record without building the attribute tree.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InstanceRef {
    pub study: StudyUid,
    pub series: SeriesUid,
    pub sop: SopInstanceUid,
    pub hash: String,
    #[serde(default)]
    attrs: RefAttrs,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
struct RefAttrs {
    #[serde(rename = "00200013", default)]
    instance_number: Option<Json>,
}

impl InstanceRef {
    pub fn instance_number(&self) -> Option<i64> {
        let v = self.attrs.instance_number.as_ref()?.get("Value")?.get(0)?;
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesRecord {
    pub study: StudyUid,
    pub series: SeriesUid,
    pub modality: Option<String>,
    /// Series-level attributes, DICOM JSON (from the latest instance stored).
    pub attrs: Json,
    pub instance_count: u64,
}

/// One patient identity seen in a study.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatientIdentity {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    pub study: StudyUid,
    /// Study-level attributes, DICOM JSON (from the latest instance stored).
    pub attrs: Json,
    pub series_count: u64,
    pub instance_count: u64,
    /// ModalitiesInStudy: modality → number of series with it.
    pub modalities: BTreeMap<String, u64>,
    /// Patient identities seen in the study, with instance counts. More than one entry is a
    /// wrong-patient hazard: the study is flagged, never silently merged.
    pub patients: BTreeMap<String, u64>,
    /// Unix seconds of the last change.
    pub updated_at: u64,
}

impl StudyRecord {
    /// True when instances of the study disagree on PatientID/PatientName.
    pub fn patient_conflict(&self) -> bool {
        self.patients.len() > 1
    }

    pub fn modalities_in_study(&self) -> BTreeSet<&str> {
        self.modalities.keys().map(String::as_str).collect()
    }
}

/// `id ^ name` as one map key (the separator cannot occur in an LO PatientID).
pub fn patient_key(id: &str, name: &str) -> String {
    format!("{id}\\{name}")
}
