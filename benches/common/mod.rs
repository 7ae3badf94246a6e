//! Synthetic CT instances shared by the benches.
//!
//! Each file directly under `benches/` is its own crate root, so a bench uses this with
//! `mod common;`. It lives in a subdirectory so that Cargo does not take it for a bench target.
//!
//! [`ct_instance`] builds one CT Image Storage instance as Part 10 bytes (Explicit VR Little
//! Endian, about 525 KB): 512×512, 16 bits allocated, 12 stored, signed, with the attributes a
//! scanner would write (patient, study, series, geometry, window, rescale). [`CtSpec`] holds
//! what varies between instances; everything else is fixed. The output is deterministic: the
//! same spec always gives the same bytes.

pub mod server;

use dicom_core::value::{C, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const ROWS: usize = 512;
const COLS: usize = 512;

/// The attributes that vary between synthetic CT instances.
///
/// [`CtSpec::default`] is a single plausible slice: patient `Bench^Alice`, study 1, series 1,
/// instance 1 at z = -200 mm.
#[derive(Clone, Debug)]
pub struct CtSpec {
    /// Study Instance UID (0020,000D).
    pub study_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_uid: String,
    /// SOP Instance UID (0008,0018); written to both the file meta group and the data set.
    pub sop_uid: String,
    /// Frame of Reference UID (0020,0052), usually one per study.
    pub frame_of_reference_uid: String,
    /// Study Date (0008,0020), `YYYYMMDD`.
    pub study_date: String,
    /// Study ID (0020,0010).
    pub study_id: String,
    /// Accession Number (0008,0050).
    pub accession_number: String,
    /// Series Description (0008,103E).
    pub series_description: String,
    /// Patient's Name (0010,0010), `Family^Given`.
    pub patient_name: String,
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Patient's Birth Date (0010,0030), `YYYYMMDD`.
    pub patient_birth_date: String,
    /// Patient's Sex (0010,0040): `F`, `M` or `O`.
    pub patient_sex: String,
    /// Series Number (0020,0011).
    pub series_number: u32,
    /// Instance Number (0020,0013).
    pub instance_number: u32,
    /// Slice position in mm along the patient z axis: the third value of Image Position
    /// (Patient) (0020,0032) and the Slice Location (0020,1041), both written with 2 decimals.
    pub slice_z: f64,
    /// Initial state of the 64-bit LCG that draws the pixel noise. Any value works; different
    /// seeds give different noise (and so different content hashes) for otherwise equal slices.
    pub seed: u64,
}

impl Default for CtSpec {
    fn default() -> Self {
        CtSpec {
            study_uid: "2.25.200000000000000000001".into(),
            series_uid: "2.25.300000000000000000001".into(),
            sop_uid: "2.25.100000000000000000001".into(),
            frame_of_reference_uid: "2.25.400000000000000000001".into(),
            study_date: "20240312".into(),
            study_id: "1".into(),
            accession_number: "ACC00001".into(),
            series_description: "AXIAL 2.5mm".into(),
            patient_name: "Bench^Alice".into(),
            patient_id: "BENCH-000".into(),
            patient_birth_date: "19700101".into(),
            patient_sex: "F".into(),
            series_number: 1,
            instance_number: 1,
            slice_z: -200.0,
            seed: 0x2545_F491_4F6C_DD1D,
        }
    }
}

/// One synthetic CT slice as Part 10 bytes (Explicit VR Little Endian).
///
/// Fixed attributes: CT Image Storage, Image Type `ORIGINAL\PRIMARY\AXIAL`, study time 10:15,
/// axial orientation, x/y origin at -250 mm, Pixel Spacing 0.976562 mm (a 500 mm field of
/// view), Slice Thickness 2.5 mm, 120 kVp, MONOCHROME2, Window Center 40 / Width 400, Rescale
/// Intercept -1024 / Slope 1 (HU). Pixels: see [`phantom`].
pub fn ct_instance(spec: &CtSpec) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, v));
    };
    let s = |x: &str| PrimitiveValue::from(x.to_owned());
    let strs = |xs: &[&str]| PrimitiveValue::Strs(xs.iter().map(|x| x.to_string()).collect());
    let z = format!("{:.2}", spec.slice_z);

    put(tags::SPECIFIC_CHARACTER_SET, VR::CS, s("ISO_IR 100"));
    put(
        tags::IMAGE_TYPE,
        VR::CS,
        strs(&["ORIGINAL", "PRIMARY", "AXIAL"]),
    );
    put(tags::SOP_CLASS_UID, VR::UI, s(CT_IMAGE_STORAGE));
    put(tags::SOP_INSTANCE_UID, VR::UI, s(&spec.sop_uid));
    put(tags::STUDY_DATE, VR::DA, s(&spec.study_date));
    put(tags::STUDY_TIME, VR::TM, s("101500"));
    put(tags::ACCESSION_NUMBER, VR::SH, s(&spec.accession_number));
    put(tags::MODALITY, VR::CS, s("CT"));
    put(tags::MANUFACTURER, VR::LO, s("Lightbox Bench"));
    put(tags::REFERRING_PHYSICIAN_NAME, VR::PN, s(""));
    put(tags::STUDY_DESCRIPTION, VR::LO, s("CT CHEST ABDOMEN"));
    put(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        s(&spec.series_description),
    );
    put(tags::PATIENT_NAME, VR::PN, s(&spec.patient_name));
    put(tags::PATIENT_ID, VR::LO, s(&spec.patient_id));
    put(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        s(&spec.patient_birth_date),
    );
    put(tags::PATIENT_SEX, VR::CS, s(&spec.patient_sex));
    put(tags::SLICE_THICKNESS, VR::DS, s("2.5"));
    put(tags::KVP, VR::DS, s("120"));
    put(tags::STUDY_INSTANCE_UID, VR::UI, s(&spec.study_uid));
    put(tags::SERIES_INSTANCE_UID, VR::UI, s(&spec.series_uid));
    put(tags::STUDY_ID, VR::SH, s(&spec.study_id));
    put(
        tags::SERIES_NUMBER,
        VR::IS,
        s(&spec.series_number.to_string()),
    );
    put(
        tags::INSTANCE_NUMBER,
        VR::IS,
        s(&spec.instance_number.to_string()),
    );
    put(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        strs(&["-250", "-250", z.as_str()]),
    );
    put(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        strs(&["1", "0", "0", "0", "1", "0"]),
    );
    put(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        s(&spec.frame_of_reference_uid),
    );
    put(tags::SLICE_LOCATION, VR::DS, s(&z));
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s("MONOCHROME2"));
    put(tags::ROWS, VR::US, PrimitiveValue::from(ROWS as u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(COLS as u16));
    put(tags::PIXEL_SPACING, VR::DS, strs(&["0.976562", "0.976562"]));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(1u16),
    );
    put(tags::WINDOW_CENTER, VR::DS, s("40"));
    put(tags::WINDOW_WIDTH, VR::DS, s("400"));
    put(tags::RESCALE_INTERCEPT, VR::DS, s("-1024"));
    put(tags::RESCALE_SLOPE, VR::DS, s("1"));
    put(tags::RESCALE_TYPE, VR::LO, s("HU"));
    put(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(C::from_vec(phantom(spec.seed))),
    );

    // Neither step can fail for this fixed, complete attribute set written to memory.
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LE))
        .expect("build the file meta group");
    let mut out = Vec::with_capacity(ROWS * COLS * 2 + 4096);
    file.write_all(&mut out)
        .expect("serialise the instance to memory");
    out
}

/// A noisy disc phantom, row by row: air (stored 0 → -1024 HU) outside a 200-pixel radius
/// around the centre, soft tissue (stored 1064 → 40 HU) inside, plus uniform noise in
/// [-32, 31] from a 64-bit LCG started at `seed`, clamped to 12-bit signed. Never all zeros.
fn phantom(seed: u64) -> Vec<u16> {
    let mut state = seed;
    let mut out = Vec::with_capacity(ROWS * COLS);
    let r2 = 200 * 200;
    for y in 0..ROWS as i64 {
        for x in 0..COLS as i64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 33) & 0x3F) as i64 - 32;
            let (dx, dy) = (x - COLS as i64 / 2, y - ROWS as i64 / 2);
            let base = if dx * dx + dy * dy < r2 { 1064 } else { 0 };
            out.push(((base + noise).clamp(-2048, 2047) as i16) as u16);
        }
    }
    out
}
