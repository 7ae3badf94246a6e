//! Ingest parsing: validate one Part 10 file and extract everything later requests need
//! (index attributes per level, the metadata template, the frame index), reading only up to
//! Pixel Data. Never decodes pixels; never loads a large file into memory.
//!
//! Cost: one header parse (`read_until(PIXEL_DATA)`) plus one streaming walk over the element
//! structure (values skipped by seeking). Blocking: call from a blocking thread.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::attrs;
use super::charset;
use super::walk::{self, Frame, FrameGeometry, PixelData, WalkOptions};
use crate::ids::{SeriesUid, SopClassUid, SopInstanceUid, StudyUid, Uid};

/// PS3.4 Annex I / PS3.18 Table I.2-2 failure reasons used at ingest.
pub mod reason {
    /// Processing failure (also: study UID does not match the target URL).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Referenced SOP Class not supported (DICOMDIR).
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Refused: out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Data Set does not match SOP Class (or instance registered under another class).
    pub const DATASET_DOES_NOT_MATCH: u16 = 0xA900;
    /// Cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Referenced Transfer Syntax not supported.
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
}

/// Media Storage Directory Storage (DICOMDIR): refused with 0x0122.
pub const DICOMDIR_SOP_CLASS: &str = "1.2.840.10008.1.3.10";

/// Why an instance was not stored, with whatever UIDs could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub reason: String,
    pub sop_class: Option<String>,
    pub sop_instance: Option<String>,
}

impl Failure {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Failure {
            code,
            reason: reason.into(),
            sop_class: None,
            sop_instance: None,
        }
    }

    pub fn with_uids(mut self, class: Option<String>, instance: Option<String>) -> Self {
        self.sop_class = class.filter(|s| Uid::parse(s).is_ok());
        self.sop_instance = instance.filter(|s| Uid::parse(s).is_ok());
        self
    }

    /// Both UIDs known: the failure goes in FailedSOPSequence, else in OtherFailuresSequence.
    pub fn has_uids(&self) -> bool {
        self.sop_class.is_some() && self.sop_instance.is_some()
    }
}

/// How the frames of an instance can be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FrameAccess {
    /// No Pixel Data.
    None,
    /// Byte ranges in the stored file, per frame.
    Indexed(Vec<Frame>),
    /// Deflated or big-endian data set: frames are decoded from the file at request time.
    DecodeOnRequest,
    /// Pixel Data present but frame boundaries could not be determined (reason).
    Unknown(String),
}

/// Everything ingest learns from one file.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub study: StudyUid,
    pub series: SeriesUid,
    pub sop: SopInstanceUid,
    pub sop_class: SopClassUid,
    pub transfer_syntax: String,
    pub patient_id: String,
    pub patient_name: String,
    pub modality: Option<String>,
    /// DICOM JSON (PS3.18 F) of the study-level attributes.
    pub study_attrs: Json,
    /// DICOM JSON of the series-level attributes.
    pub series_attrs: Json,
    /// DICOM JSON of the instance-level attributes.
    pub instance_attrs: Json,
    /// The whole data set as DICOM JSON, bulk data replaced by relative `BulkDataURI`s
    /// (`bulkdata/<tag>[/<item>/<tag>...]`) that WADO-RS splices into absolute ones.
    pub metadata: Json,
    pub frames: FrameAccess,
}

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &[&str] = &["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"];

/// Binary values longer than this go to bulk data instead of InlineBinary.
const BULK_THRESHOLD: usize = 1024;

fn jpeg_family(ts: &str) -> bool {
    ts.starts_with("1.2.840.10008.1.2.4.5")
        || ts.starts_with("1.2.840.10008.1.2.4.6")
        || ts.starts_with("1.2.840.10008.1.2.4.7")
}

/// Where the preamble of a candidate file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 128-byte preamble then `DICM`.
    Part10,
    /// `DICM` at offset 0 (preamble missing).
    NoPreamble,
    /// Neither: not a Part 10 file.
    NotPart10,
}

/// Look at the first bytes of a file.
pub fn sniff(head: &[u8]) -> Layout {
    if head.len() >= 132 && &head[128..132] == b"DICM" {
        Layout::Part10
    } else if head.len() >= 4 && &head[..4] == b"DICM" {
        Layout::NoPreamble
    } else {
        Layout::NotPart10
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = match e.value() {
        // Values of VR UN (e.g. an implicit file whose dictionary lookup failed, or an explicit
        // writer that chose UN) arrive as raw bytes: read them as text.
        Value::Primitive(PrimitiveValue::U8(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => e.to_str().ok()?.into_owned(),
    };
    let s = s
        .trim_end_matches(['\0', ' '])
        .trim_start_matches(' ')
        .to_owned();
    (!s.is_empty()).then_some(s)
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

/// Parse and validate a Part 10 file whose preamble has already been normalised (`Layout::Part10`).
pub fn parse_file(path: &Path) -> Result<Parsed, Failure> {
    let file = File::open(path)
        .map_err(|e| Failure::new(reason::PROCESSING_FAILURE, format!("cannot open: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| Failure::new(reason::PROCESSING_FAILURE, format!("cannot stat: {e}")))?
        .len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut head = [0u8; 132];
    reader.read_exact(&mut head).map_err(|_| {
        Failure::new(
            reason::CANNOT_UNDERSTAND,
            "not a DICOM Part 10 file: too short",
        )
    })?;
    if sniff(&head) != Layout::Part10 {
        return Err(Failure::new(
            reason::CANNOT_UNDERSTAND,
            "not a DICOM Part 10 file: no DICM prefix",
        ));
    }
    reader.seek(SeekFrom::Start(128)).map_err(io_failure)?;
    let meta = FileMetaTable::from_reader(&mut reader).map_err(|e| {
        Failure::new(
            reason::CANNOT_UNDERSTAND,
            format!("cannot read the file meta information: {e}"),
        )
    })?;
    let meta_class = Some(trim(&meta.media_storage_sop_class_uid));
    let meta_instance = Some(trim(&meta.media_storage_sop_instance_uid));
    let fail = |code: u16, msg: String| {
        Failure::new(code, msg).with_uids(meta_class.clone(), meta_instance.clone())
    };
    let ts = meta.transfer_syntax().to_owned();
    if meta_class.as_deref() == Some(DICOMDIR_SOP_CLASS) {
        return Err(fail(
            reason::SOP_CLASS_NOT_SUPPORTED,
            "DICOMDIR (Media Storage Directory) files are not stored; send the instances it lists"
                .into(),
        ));
    }
    if TransferSyntaxRegistry.get(&ts).is_none() {
        return Err(fail(
            reason::TRANSFER_SYNTAX_NOT_SUPPORTED,
            format!("transfer syntax {ts} is not supported"),
        ));
    }
    let dataset_start = meta_end(&mut reader, file_len).map_err(|why| {
        fail(
            reason::CANNOT_UNDERSTAND,
            format!("malformed file meta information: {why}"),
        )
    })?;

    // Structure walk first: it checks every declared length against the file size, so the
    // dicom-rs parse below never allocates by a length the file cannot hold.
    // Every syntax but deflate can be walked by offset (big endian only for its structure).
    let deflated = DEFLATED.contains(&ts.as_str());
    let big_endian = ts == BIG_ENDIAN;
    let walked = if !deflated {
        let explicit = ts != IMPLICIT_LE;
        let opts = WalkOptions {
            max_depth: 16,
            big_endian,
            collect_text: !big_endian,
        };
        let first = walk::walk(&mut reader, dataset_start, explicit, file_len, &opts);
        let result = match first {
            // Some writers declare Explicit VR but encode Implicit VR (dicom-rs reads these
            // adaptively); accept the file when it walks cleanly as implicit.
            Err(e) if ts == "1.2.840.10008.1.2.1" => {
                walk::walk(&mut reader, dataset_start, false, file_len, &opts).map_err(|_| e)
            }
            // Other explicit syntaxes (the compressed ones) have no implicit twin: a data set
            // encoded in implicit VR under them cannot be represented, and dicom-rs misreads it
            // (allocating by garbage lengths), so it is refused here.
            Err(e) if explicit && !big_endian => {
                if walk::walk(&mut reader, dataset_start, false, file_len, &opts).is_ok() {
                    return Err(fail(
                        reason::CANNOT_UNDERSTAND,
                        format!(
                            "the data set is encoded in Implicit VR, but transfer syntax {ts} requires Explicit VR"
                        ),
                    ));
                }
                Err(e)
            }
            other => other,
        };
        let w = result.map_err(|e| {
            fail(
                reason::CANNOT_UNDERSTAND,
                format!("malformed data set: {e}"),
            )
        })?;
        if w.un_undefined_length {
            // dicom-rs 0.10 reads the implicit-VR content of such an element as explicit VR
            // and then allocates by a misread length (GBs for a tiny file): refused up front.
            return Err(fail(
                reason::CANNOT_UNDERSTAND,
                "the data set holds an element of VR UN with undefined length (a sequence in \
                 implicit VR, CP-246), which this server cannot read yet"
                    .into(),
            ));
        }
        (!big_endian).then_some(w)
    } else {
        // A deflated data set cannot be walked by offset. Bound what it inflates to before
        // dicom-rs reads it (a deflate bomb would otherwise become an allocation), then prove
        // it complete by reading it whole (a rare, retired syntax; small files in practice).
        let cap = (file_len.saturating_mul(64)).clamp(64 << 20, 1 << 30);
        reader
            .seek(SeekFrom::Start(dataset_start))
            .map_err(io_failure)?;
        let inflated = std::io::copy(
            &mut flate2::read::DeflateDecoder::new(&mut reader).take(cap + 1),
            &mut std::io::sink(),
        )
        .map_err(|e| {
            fail(
                reason::CANNOT_UNDERSTAND,
                format!("deflated data set does not inflate: {e}"),
            )
        })?;
        if inflated > cap {
            return Err(fail(
                reason::CANNOT_UNDERSTAND,
                format!("deflated data set inflates to more than {cap} bytes"),
            ));
        }
        dicom_object::open_file(path).map_err(|e| {
            fail(
                reason::CANNOT_UNDERSTAND,
                format!("cannot parse the data set: {e}"),
            )
        })?;
        None
    };

    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| {
            let msg = e.to_string();
            if msg.contains("Unsupported transfer syntax") || msg.contains("unsupported transfer") {
                fail(reason::TRANSFER_SYNTAX_NOT_SUPPORTED, msg)
            } else {
                fail(
                    reason::CANNOT_UNDERSTAND,
                    format!("cannot parse the data set: {msg}"),
                )
            }
        })?;
    let mut obj: InMemDicomObject = obj.into_inner();
    retype_unknown(&mut obj);

    // Identity: all four UIDs must be present and valid.
    let class_raw = text(&obj, tags::SOP_CLASS_UID);
    let instance_raw = text(&obj, tags::SOP_INSTANCE_UID);
    let uid_fail = |msg: String| {
        Failure::new(reason::CANNOT_UNDERSTAND, msg).with_uids(
            class_raw.clone().or(meta_class.clone()),
            instance_raw.clone().or(meta_instance.clone()),
        )
    };
    let get_uid = |tag: Tag, name: &str| -> Result<Uid, Failure> {
        let raw = text(&obj, tag).ok_or_else(|| uid_fail(format!("{name} is missing")))?;
        Uid::parse(&raw).map_err(|e| uid_fail(format!("{name} {raw:?} is invalid: {e}")))
    };
    let sop_class = SopClassUid(get_uid(tags::SOP_CLASS_UID, "SOPClassUID")?);
    let sop = SopInstanceUid(get_uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?);
    let study = StudyUid(get_uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?);
    let series = SeriesUid(get_uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?);
    let ids_fail = |code: u16, msg: String| {
        Failure::new(code, msg).with_uids(Some(sop_class.to_string()), Some(sop.to_string()))
    };
    if sop_class.as_str() == DICOMDIR_SOP_CLASS {
        return Err(ids_fail(
            reason::SOP_CLASS_NOT_SUPPORTED,
            "DICOMDIR (Media Storage Directory) files are not stored".into(),
        ));
    }
    if let Some(mi) = meta_instance.as_deref()
        && !mi.is_empty()
        && mi != sop.as_str()
    {
        // Common in anonymised files; the data set is authoritative (PS3.10 7.1).
        tracing::warn!(%sop, meta = mi, "MediaStorageSOPInstanceUID differs from SOPInstanceUID; using the data set's");
    }

    // Structure walk: completeness, pixel data layout, raw text for ISO 2022.
    let charsets: Vec<String> = obj
        .get(tags::SPECIFIC_CHARACTER_SET)
        .and_then(|e| e.value().to_multi_str().ok().map(|v| v.to_vec()))
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.trim().to_owned())
        .collect();
    let own_decoding = charset::needs_own_decoding(&charsets);

    if own_decoding && let Some(w) = &walked {
        for (tag, vr, bytes) in &w.text {
            let tag = Tag((tag >> 16) as u16, (tag & 0xFFFF) as u16);
            let Some(existing) = obj.get(tag) else {
                continue;
            };
            let vr_now = existing.vr();
            let is_pn = vr_now == VR::PN || vr == b"PN";
            let decoded = charset::decode_text(bytes, &charsets, is_pn);
            let values: Vec<String> = decoded
                .split('\\')
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                .collect();
            obj.put(DataElement::new(
                tag,
                vr_now,
                PrimitiveValue::Strs(values.into()),
            ));
        }
    }
    if own_decoding || !charsets.is_empty() {
        // Values in the index and metadata are UTF-8 from here on.
        obj.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }

    // Frames.
    let frames = match walked.as_ref().and_then(|w| w.pixel_data.as_ref()) {
        _ if deflated || big_endian => {
            if obj.get(tags::ROWS).is_some() {
                FrameAccess::DecodeOnRequest
            } else {
                FrameAccess::None
            }
        }
        None => FrameAccess::None,
        Some(pixel) => {
            let geom = FrameGeometry {
                number_of_frames: int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32,
                rows: int(&obj, tags::ROWS).unwrap_or(0) as u16,
                columns: int(&obj, tags::COLUMNS).unwrap_or(0) as u16,
                samples_per_pixel: int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
                bits_allocated: int(&obj, tags::BITS_ALLOCATED).unwrap_or(0) as u16,
                photometric: text(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
            };
            match walk::frame_index(pixel, &geom, jpeg_family(&ts), &mut reader) {
                Ok(f) => FrameAccess::Indexed(f),
                Err(why) => {
                    if matches!(pixel, PixelData::Native { .. }) {
                        // Native pixel data that cannot hold the declared frames is corrupt.
                        return Err(ids_fail(
                            reason::CANNOT_UNDERSTAND,
                            format!("pixel data does not match the image attributes: {why}"),
                        ));
                    }
                    tracing::warn!(sop = %sop, %why, "frame boundaries unknown");
                    FrameAccess::Unknown(why)
                }
            }
        }
    };

    let pixel_vr = walked
        .as_ref()
        .and_then(|w| w.pixel_data.as_ref())
        .map(|p| match p {
            PixelData::Native { vr, .. } => String::from_utf8_lossy(vr).into_owned(),
            PixelData::Encapsulated { .. } => "OB".to_owned(),
        })
        .unwrap_or_else(|| {
            if int(&obj, tags::BITS_ALLOCATED).unwrap_or(8) > 8 {
                "OW".into()
            } else {
                "OB".into()
            }
        });

    let subset = |list: &[Tag]| -> Json {
        let mut o = InMemDicomObject::new_empty();
        for &tag in list {
            if let Some(e) = obj.get(tag) {
                o.put(e.clone());
            }
        }
        dicom_json::to_value(&o).unwrap_or(Json::Object(Map::new()))
    };
    let study_attrs = subset(attrs::STUDY);
    let series_attrs = subset(attrs::SERIES);
    let instance_attrs = subset(attrs::INSTANCE);

    let mut metadata = metadata_template(&obj)
        .map_err(|e| ids_fail(reason::PROCESSING_FAILURE, format!("metadata: {e}")))?;
    if !matches!(frames, FrameAccess::None) {
        metadata.as_object_mut().expect("object").insert(
            "7FE00010".into(),
            serde_json::json!({"vr": pixel_vr, "BulkDataURI": "bulkdata/7FE00010"}),
        );
    }

    Ok(Parsed {
        patient_id: text(&obj, tags::PATIENT_ID).unwrap_or_default(),
        patient_name: text(&obj, tags::PATIENT_NAME).unwrap_or_default(),
        modality: text(&obj, tags::MODALITY),
        study,
        series,
        sop,
        sop_class,
        transfer_syntax: ts,
        study_attrs,
        series_attrs,
        instance_attrs,
        metadata,
        frames,
    })
}

/// Offset of the first data set byte: walk the File Meta elements (always Explicit VR Little
/// Endian, PS3.10 7.1) from offset 132 while their group is 0002. Does not trust
/// (0002,0000), which some writers get wrong or leave out.
fn meta_end(reader: &mut (impl Read + Seek), file_len: u64) -> Result<u64, String> {
    let mut pos = 132u64;
    reader
        .seek(SeekFrom::Start(pos))
        .map_err(|e| e.to_string())?;
    loop {
        let mut h = [0u8; 8];
        if pos + 8 > file_len {
            return Ok(pos.min(file_len));
        }
        reader.read_exact(&mut h).map_err(|e| e.to_string())?;
        if u16::from_le_bytes([h[0], h[1]]) != 0x0002 {
            return Ok(pos);
        }
        let vr = [h[4], h[5]];
        let (header, len) = if matches!(
            &vr,
            b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR" | b"OD" | b"OL" | b"OV"
        ) {
            let mut l = [0u8; 4];
            reader.read_exact(&mut l).map_err(|e| e.to_string())?;
            (12u64, u64::from(u32::from_le_bytes(l)))
        } else {
            (8u64, u64::from(u16::from_le_bytes([h[6], h[7]])))
        };
        if len == 0xFFFF_FFFF || pos + header + len > file_len {
            return Err(format!(
                "element at byte {pos} runs past the end of the file"
            ));
        }
        pos += header + len;
        reader
            .seek(SeekFrom::Start(pos))
            .map_err(|e| e.to_string())?;
    }
}

fn trim(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).to_owned()
}

/// Standard attributes some writers encode with VR UN (values as in Implicit VR LE) are given
/// their dictionary VR, so that they are indexed, matched and returned as what they are
/// (PS3.5 6.2.2: UN is for values whose VR is not known to the writer). Sequences and values
/// that do not decode are left as UN.
fn retype_unknown(obj: &mut InMemDicomObject) {
    use dicom_core::dictionary::DataDictionary;
    let mut fixes = Vec::new();
    for elem in obj.iter() {
        if elem.vr() != VR::UN {
            continue;
        }
        let Some(vr) = dicom_dictionary_std::StandardDataDictionary
            .by_tag(elem.tag())
            .and_then(|e| e.vr.exact())
        else {
            continue;
        };
        let Value::Primitive(p) = elem.value() else {
            continue;
        };
        let bytes = p.to_bytes();
        if let Some(v) = decode_as(vr, &bytes) {
            fixes.push(DataElement::new(elem.tag(), vr, v));
        }
    }
    for f in fixes {
        obj.put(f);
    }
}

/// Decodes Implicit VR LE value bytes as `vr`.
fn decode_as(vr: VR, b: &[u8]) -> Option<PrimitiveValue> {
    use dicom_core::smallvec::SmallVec;
    let text = || -> String {
        let raw = match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            // Latin-1, the most common single-byte repertoire.
            Err(_) => b.iter().map(|&c| c as char).collect(),
        };
        raw.trim_end_matches(['\0', ' ']).to_owned()
    };
    macro_rules! nums {
        ($t:ty, $n:expr, $variant:ident) => {{
            if b.len() % $n != 0 {
                return None;
            }
            let v: SmallVec<[$t; 2]> = b
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")))
                .collect();
            PrimitiveValue::$variant(v)
        }};
    }
    if b.is_empty() {
        return Some(PrimitiveValue::Empty);
    }
    Some(match vr {
        VR::AE
        | VR::AS
        | VR::CS
        | VR::DA
        | VR::DS
        | VR::DT
        | VR::IS
        | VR::LO
        | VR::PN
        | VR::SH
        | VR::TM
        | VR::UC
        | VR::UI => {
            let t = text();
            if t.trim().is_empty() {
                return Some(PrimitiveValue::Empty);
            }
            let parts: SmallVec<[String; 2]> = t.split('\\').map(|s| s.trim().to_owned()).collect();
            PrimitiveValue::Strs(parts)
        }
        VR::LT | VR::ST | VR::UT | VR::UR => {
            let t = text();
            if t.trim().is_empty() {
                return Some(PrimitiveValue::Empty);
            }
            PrimitiveValue::Str(t)
        }
        VR::US => nums!(u16, 2, U16),
        VR::SS => nums!(i16, 2, I16),
        VR::UL => nums!(u32, 4, U32),
        VR::SL => nums!(i32, 4, I32),
        VR::FL => nums!(f32, 4, F32),
        VR::FD => nums!(f64, 8, F64),
        _ => return None,
    })
}

/// Files that declare Explicit VR Little Endian but whose data set is encoded in Implicit VR
/// (some writers do this) get their File Meta rewritten to declare Implicit VR Little Endian,
/// so that every reader, ours included, parses them as they really are. Decided by walking
/// the data set both ways; nothing else in the file changes. Returns whether it rewrote.
/// Blocking.
pub fn repair_declared_encoding(path: &Path) -> Result<bool, Failure> {
    let mut file = std::fs::File::open(path).map_err(io_failure)?;
    let file_len = file.metadata().map_err(io_failure)?.len();
    let mut head = [0u8; 132];
    if file.read_exact(&mut head).is_err() || sniff(&head) != Layout::Part10 {
        return Ok(false);
    }
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    reader.seek(SeekFrom::Start(128)).map_err(io_failure)?;
    let Ok(mut meta) = FileMetaTable::from_reader(&mut reader) else {
        return Ok(false);
    };
    if meta.transfer_syntax() != "1.2.840.10008.1.2.1" {
        return Ok(false);
    }
    let Ok(dataset_start) = meta_end(&mut reader, file_len) else {
        return Ok(false);
    };
    let opts = WalkOptions {
        max_depth: 16,
        big_endian: false,
        collect_text: false,
    };
    if walk::walk(&mut reader, dataset_start, true, file_len, &opts).is_ok()
        || walk::walk(&mut reader, dataset_start, false, file_len, &opts).is_err()
    {
        return Ok(false);
    }
    meta.set_transfer_syntax(&dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN);
    let mut out = Vec::with_capacity(file_len as usize);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| Failure::new(reason::PROCESSING_FAILURE, format!("meta rewrite: {e}")))?;
    reader
        .seek(SeekFrom::Start(dataset_start))
        .map_err(io_failure)?;
    reader.read_to_end(&mut out).map_err(io_failure)?;
    drop(reader);
    tracing::warn!(
        file = %path.display(),
        "the data set is Implicit VR although the file declares Explicit VR: File Meta corrected"
    );
    std::fs::write(path, out).map_err(io_failure)?;
    Ok(true)
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::new(reason::PROCESSING_FAILURE, format!("read error: {e}"))
}

/// The instance's DICOM JSON without pixel data, large binaries replaced by relative
/// BulkDataURIs. dicom-json 0.10.1 never writes BulkDataURI (dicom-rs #470), so this walks the
/// object itself and leaves everything else to dicom-json.
pub fn metadata_template(obj: &InMemDicomObject) -> Result<Json, serde_json::Error> {
    let mut out = Map::new();
    template_into(obj, "bulkdata", &mut out)?;
    Ok(Json::Object(out))
}

fn template_into(
    obj: &InMemDicomObject,
    prefix: &str,
    out: &mut Map<String, Json>,
) -> Result<(), serde_json::Error> {
    for elem in obj.iter() {
        let tag = elem.tag();
        // Group lengths are not attributes (PS3.18 F.2: not in DICOM JSON).
        if tag == tags::PIXEL_DATA || tag.group() == 0x0002 || tag.element() == 0x0000 {
            continue;
        }
        let key = format!("{:04X}{:04X}", tag.group(), tag.element());
        let path = format!("{prefix}/{key}");
        let vr = elem.vr();
        match elem.value() {
            Value::Sequence(seq) => {
                let mut items = Vec::with_capacity(seq.items().len());
                for (i, item) in seq.items().iter().enumerate() {
                    let mut m = Map::new();
                    template_into(item, &format!("{path}/{i}"), &mut m)?;
                    items.push(Json::Object(m));
                }
                let mut e = Map::new();
                e.insert("vr".into(), Json::String(vr.to_string().into()));
                if !items.is_empty() {
                    e.insert("Value".into(), Json::Array(items));
                }
                out.insert(key, Json::Object(e));
            }
            Value::Primitive(p) if is_binary(vr) && p.calculate_byte_len() > BULK_THRESHOLD => {
                out.insert(
                    key,
                    serde_json::json!({"vr": vr.to_string(), "BulkDataURI": path}),
                );
            }
            Value::PixelSequence(_) => {
                out.insert(
                    key,
                    serde_json::json!({"vr": vr.to_string(), "BulkDataURI": path}),
                );
            }
            _ => {
                let v = serde_json::to_value(dicom_json::DicomJson::from(elem))?;
                out.insert(key, v);
            }
        }
    }
    Ok(())
}

fn is_binary(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN
    )
}
