//! QIDO-RS (PS3.18 10.6, PS3.4 C.2.2.2) against the real server over HTTP: matching, returned
//! attributes, output formats, paging, ordering, errors and per-account scoping, as specified
//! in the QIDO behaviour contract.
//!
//! Every test starts its own server and stores generated instances through STOW-RS, so the
//! archive holds exactly what the test expects and tests may run in parallel.

mod common;

use std::collections::BTreeMap;

use common::*;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use serde_json::{Value, json};

const JSON: &str = "application/dicom+json";
const XML: &str = "multipart/related; type=\"application/dicom+xml\"";
const STUDY: &str = "0020000D";
const SERIES: &str = "0020000E";
const SOP: &str = "00080018";
const CT_CLASS: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR_CLASS: &str = "1.2.840.10008.5.1.4.1.1.4";
const PASSWORD: &str = "Tulip-Harbour-Lantern-93";

// ---------------------------------------------------------------------------------------------
// Test data: a DICOM instance builder
// ---------------------------------------------------------------------------------------------

/// A UID root of its own for each call (`2.25.<random>`).
fn root() -> String {
    format!("2.25.{}", rand::random::<u64>() | (1 << 63))
}

#[derive(Clone, Debug)]
enum Val {
    /// Encoded value bytes (text VRs; ASCII is written as a string, anything else verbatim).
    Text(Vec<u8>),
    U16(u16),
    Seq(Vec<Vec<(Tag, Val)>>),
}

/// One instance under construction. Every attribute can be set, replaced or removed; the
/// defaults make a tiny valid CT image (2 rows x 3 columns, 16 bits).
#[derive(Clone, Debug)]
struct Inst {
    elems: BTreeMap<Tag, (VR, Val)>,
}

fn vr_of(tag: Tag) -> VR {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
        .unwrap_or_else(|| panic!("{tag} not in the dictionary"))
}

fn text_or_number(tag: Tag, value: &str) -> Val {
    match vr_of(tag) {
        VR::US => Val::U16(value.parse().expect("US value")),
        _ => Val::Text(value.as_bytes().to_vec()),
    }
}

impl Inst {
    fn new() -> Inst {
        let mut i = Inst {
            elems: BTreeMap::new(),
        };
        for (tag, v) in [
            (tags::SOP_CLASS_UID, CT_CLASS),
            (tags::PATIENT_ID, "PID-DEFAULT"),
            (tags::PATIENT_NAME, "TEST^PATIENT"),
            (tags::MODALITY, "CT"),
            (tags::PHOTOMETRIC_INTERPRETATION, "MONOCHROME2"),
            (tags::SAMPLES_PER_PIXEL, "1"),
            (tags::ROWS, "2"),
            (tags::COLUMNS, "3"),
            (tags::BITS_ALLOCATED, "16"),
            (tags::BITS_STORED, "12"),
            (tags::HIGH_BIT, "11"),
            (tags::PIXEL_REPRESENTATION, "0"),
        ] {
            i = i.set(tag, v);
        }
        i
    }

    /// Set an attribute from text (VR from the dictionary; US values are parsed).
    fn set(mut self, tag: Tag, value: &str) -> Inst {
        self.elems
            .insert(tag, (vr_of(tag), text_or_number(tag, value)));
        self
    }

    /// Set a text attribute to exact encoded bytes (e.g. ISO 2022 escape sequences).
    fn raw(mut self, tag: Tag, bytes: &[u8]) -> Inst {
        self.elems
            .insert(tag, (vr_of(tag), Val::Text(bytes.to_vec())));
        self
    }

    /// A sequence of items, each a list of (tag, text value).
    fn seq(mut self, tag: Tag, items: &[&[(Tag, &str)]]) -> Inst {
        let items = items
            .iter()
            .map(|item| {
                item.iter()
                    .map(|(t, v)| (*t, text_or_number(*t, v)))
                    .collect()
            })
            .collect();
        self.elems.insert(tag, (VR::SQ, Val::Seq(items)));
        self
    }

    fn study(self, uid: &str) -> Inst {
        self.set(tags::STUDY_INSTANCE_UID, uid)
    }

    fn series(self, uid: &str) -> Inst {
        self.set(tags::SERIES_INSTANCE_UID, uid)
    }

    fn sop(self, uid: &str) -> Inst {
        self.set(tags::SOP_INSTANCE_UID, uid)
    }

    fn utf8(self) -> Inst {
        self.set(tags::SPECIFIC_CHARACTER_SET, "ISO_IR 192")
    }

    fn text(&self, tag: Tag) -> String {
        match self.elems.get(&tag) {
            Some((_, Val::Text(b))) => String::from_utf8_lossy(b).trim().to_owned(),
            other => panic!("{tag}: {other:?}"),
        }
    }

    fn number(&self, tag: Tag) -> usize {
        match self.elems.get(&tag) {
            Some((_, Val::U16(v))) => *v as usize,
            Some((_, Val::Text(b))) => String::from_utf8_lossy(b).trim().parse().unwrap(),
            _ => 1,
        }
    }

    /// A Part 10 file (Explicit VR Little Endian) with zeroed pixel data of the right size.
    fn encode(&self) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        for (tag, (vr, val)) in &self.elems {
            obj.put(element(*tag, *vr, val));
        }
        let frames = self.number(tags::NUMBER_OF_FRAMES);
        let size = self.number(tags::ROWS) * self.number(tags::COLUMNS) * frames * 2;
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![0u8; size]),
        ));
        let sop = self.text(tags::SOP_INSTANCE_UID);
        let class = self.text(tags::SOP_CLASS_UID);
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid(class)
                    .media_storage_sop_instance_uid(sop),
            )
            .unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        out
    }
}

fn element(tag: Tag, vr: VR, val: &Val) -> DataElement<InMemDicomObject> {
    match val {
        Val::Text(b) if b.is_ascii() => DataElement::new(
            tag,
            vr,
            PrimitiveValue::from(String::from_utf8(b.clone()).unwrap()),
        ),
        Val::Text(b) => {
            let mut b = b.clone();
            if b.len() % 2 == 1 {
                b.push(b' ');
            }
            DataElement::new(tag, vr, PrimitiveValue::from(b))
        }
        Val::U16(v) => DataElement::new(tag, vr, PrimitiveValue::from(*v)),
        Val::Seq(items) => {
            let items: Vec<InMemDicomObject> = items
                .iter()
                .map(|item| {
                    let mut o = InMemDicomObject::new_empty();
                    for (t, v) in item {
                        o.put(element(*t, vr_of(*t), v));
                    }
                    o
                })
                .collect();
            DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
        }
    }
}

/// `s` in ISO-2022-JP (ESC $ B ... ESC ( B), as DICOM ISO 2022 IR 87 stores it.
fn jis(s: &str) -> Vec<u8> {
    let (b, _, unmappable) = encoding_rs::ISO_2022_JP.encode(s);
    assert!(!unmappable, "{s}");
    b.into_owned()
}

/// `Yamada^Tarou=山田^太郎=やまだ^たろう` as PS3.5 H.3.1 encodes it under `\ISO 2022 IR 87`.
fn yamada() -> Vec<u8> {
    let mut v = b"Yamada^Tarou=".to_vec();
    v.extend(jis("山田"));
    v.push(b'^');
    v.extend(jis("太郎"));
    v.push(b'=');
    v.extend(jis("やまだ"));
    v.push(b'^');
    v.extend(jis("たろう"));
    v
}

/// STOW the instances as the server's admin; every one must be stored.
fn store(s: &Server, parts: &[Inst]) {
    let bodies: Vec<Vec<u8>> = parts.iter().map(Inst::encode).collect();
    let (status, _, body) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&bodies),
    );
    assert_eq!(status, 200, "STOW: {body}");
    assert_eq!(referenced(&body).len(), parts.len(), "STOW: {body}");
}

/// STOW the instances with another account's bearer token.
fn store_as(s: &Server, token: &str, parts: &[Inst]) {
    let bodies: Vec<Vec<u8>> = parts.iter().map(Inst::encode).collect();
    let r = send(
        authed_client(token)
            .post(format!("{}/studies", s.dicomweb()))
            .header("Content-Type", stow_content_type())
            .header("Accept", JSON)
            .body(multipart(&bodies)),
    );
    assert_eq!(r.status, 200, "STOW: {}", r.text);
    assert_eq!(referenced(&r.json).len(), parts.len(), "STOW: {}", r.text);
}

// ---------------------------------------------------------------------------------------------
// Test data: the shared archive of five studies
// ---------------------------------------------------------------------------------------------

/// UIDs of the standard archive. Default study order: B, A, C, E, D.
///
/// - A: DOE^JOHN, PID-A, 20200101 233000, ACC-001, S1, SMITH^ANNA, "CT HEAD", 19700101, M;
///   series A1 CT #1 (instances #10 MR class 2 frames, #2, #1 with geometry), A2 MR #"02"
///   (2 instances), A3 OT #" 10" (1), A4 SR no number (1).
/// - B: MÜLLER^HANS (ISO_IR 192), PID-B, 20200102 003000, "abc", MR.
/// - C: ROE^JANE, PID-C, 20200101 120000, "ABC", US.
/// - D: ROE^RICHARD^^^, PID-D, no date or time, empty AccessionNumber, OT.
/// - E: Yamada^Tarou=山田^太郎=やまだ^たろう (\ISO 2022 IR 87), PID-E, 19991231 080000, CT.
struct Fx {
    a: String,
    a1: String,
    a2: String,
    a3: String,
    a4: String,
    /// A1's instances by InstanceNumber 10, 2, 1.
    a1i: [String; 3],
    a2i: [String; 2],
    a3i: String,
    a4i: String,
    b: String,
    b1: String,
    bi: String,
    c: String,
    c1: String,
    ci: String,
    d: String,
    d1: String,
    di: String,
    e: String,
    e1: String,
    ei: String,
}

fn fixture() -> (Server, Fx) {
    let s = Server::start(&[]);
    let r = root();
    let u = |p: &str| format!("{r}.{p}");
    let fx = Fx {
        a: u("1"),
        a1: u("1.1"),
        a2: u("1.2"),
        a3: u("1.3"),
        a4: u("1.4"),
        a1i: [u("1.1.1"), u("1.1.2"), u("1.1.3")],
        a2i: [u("1.2.1"), u("1.2.2")],
        a3i: u("1.3.1"),
        a4i: u("1.4.1"),
        b: u("2"),
        b1: u("2.1"),
        bi: u("2.1.1"),
        c: u("3"),
        c1: u("3.1"),
        ci: u("3.1.1"),
        d: u("4"),
        d1: u("4.1"),
        di: u("4.1.1"),
        e: u("5"),
        e1: u("5.1"),
        ei: u("5.1.1"),
    };
    let a = Inst::new()
        .study(&fx.a)
        .set(tags::PATIENT_NAME, "DOE^JOHN")
        .set(tags::PATIENT_ID, "PID-A")
        .set(tags::STUDY_DATE, "20200101")
        .set(tags::STUDY_TIME, "233000")
        .set(tags::ACCESSION_NUMBER, "ACC-001")
        .set(tags::STUDY_ID, "S1")
        .set(tags::REFERRING_PHYSICIAN_NAME, "SMITH^ANNA")
        .set(tags::STUDY_DESCRIPTION, "CT HEAD")
        .set(tags::PATIENT_BIRTH_DATE, "19700101")
        .set(tags::PATIENT_SEX, "M")
        .set(tags::PATIENT_AGE, "050Y")
        .set(tags::TIMEZONE_OFFSET_FROM_UTC, "+0100")
        .set(tags::SOFTWARE_VERSIONS, "v1.2");
    let a1 = a
        .clone()
        .series(&fx.a1)
        .set(tags::MODALITY, "CT")
        .set(tags::SERIES_NUMBER, "1")
        .set(tags::SERIES_DESCRIPTION, "AXIAL")
        .set(tags::BODY_PART_EXAMINED, "HEAD")
        .set(tags::INSTITUTION_NAME, "General Hospital")
        .set(tags::PERFORMED_PROCEDURE_STEP_START_DATE, "20200101")
        .set(tags::PERFORMED_PROCEDURE_STEP_START_TIME, "233500")
        .seq(
            tags::REQUEST_ATTRIBUTES_SEQUENCE,
            &[&[
                (tags::SCHEDULED_PROCEDURE_STEP_ID, "SPS1"),
                (tags::REQUESTED_PROCEDURE_ID, "RP1"),
            ]],
        );
    let a2 = a
        .clone()
        .series(&fx.a2)
        .set(tags::MODALITY, "MR")
        .set(tags::SERIES_NUMBER, "02")
        .set(tags::SERIES_DESCRIPTION, "SAG T1")
        .set(tags::PERFORMED_PROCEDURE_STEP_START_DATE, "20200102")
        .set(tags::PERFORMED_PROCEDURE_STEP_START_TIME, "000500")
        .set(tags::KVP, "110")
        .seq(
            tags::REQUEST_ATTRIBUTES_SEQUENCE,
            &[
                &[
                    (tags::SCHEDULED_PROCEDURE_STEP_ID, "SPS2"),
                    (tags::REQUESTED_PROCEDURE_ID, "RP2"),
                ],
                &[
                    (tags::SCHEDULED_PROCEDURE_STEP_ID, "SPS3"),
                    (tags::REQUESTED_PROCEDURE_ID, "RP3"),
                ],
            ],
        );
    let a3 = a
        .clone()
        .series(&fx.a3)
        .set(tags::MODALITY, "OT")
        .set(tags::SERIES_NUMBER, " 10")
        .set(tags::PERFORMED_PROCEDURE_STEP_START_DATE, "20200101")
        .set(tags::PERFORMED_PROCEDURE_STEP_START_TIME, "120000");
    let a4 = a.clone().series(&fx.a4).set(tags::MODALITY, "SR");
    let b = Inst::new()
        .utf8()
        .study(&fx.b)
        .series(&fx.b1)
        .sop(&fx.bi)
        .set(tags::PATIENT_NAME, "MÜLLER^HANS")
        .set(tags::PATIENT_ID, "PID-B")
        .set(tags::STUDY_DATE, "20200102")
        .set(tags::STUDY_TIME, "003000")
        .set(tags::ACCESSION_NUMBER, "abc")
        .set(tags::STUDY_ID, "S2")
        .set(tags::REFERRING_PHYSICIAN_NAME, "JONES^BOB")
        .set(tags::STUDY_DESCRIPTION, "MR KNEE")
        .set(tags::PATIENT_BIRTH_DATE, "19801231")
        .set(tags::PATIENT_SEX, "F")
        .set(tags::MODALITY, "MR")
        .set(tags::SERIES_NUMBER, "1")
        .set(tags::SOP_CLASS_UID, MR_CLASS);
    let c = Inst::new()
        .study(&fx.c)
        .series(&fx.c1)
        .sop(&fx.ci)
        .set(tags::PATIENT_NAME, "ROE^JANE")
        .set(tags::PATIENT_ID, "PID-C")
        .set(tags::STUDY_DATE, "20200101")
        .set(tags::STUDY_TIME, "120000")
        .set(tags::ACCESSION_NUMBER, "ABC")
        .set(tags::STUDY_ID, "S3")
        .set(tags::STUDY_DESCRIPTION, "US ABDOMEN")
        .set(tags::PATIENT_BIRTH_DATE, "19900615")
        .set(tags::PATIENT_SEX, "F")
        .set(tags::MODALITY, "US")
        .set(tags::SERIES_NUMBER, "1");
    let d = Inst::new()
        .study(&fx.d)
        .series(&fx.d1)
        .sop(&fx.di)
        .set(tags::PATIENT_NAME, "ROE^RICHARD^^^")
        .set(tags::PATIENT_ID, "PID-D")
        .set(tags::ACCESSION_NUMBER, "")
        .set(tags::STUDY_ID, "S4")
        .set(tags::MODALITY, "OT");
    let e = Inst::new()
        .set(tags::SPECIFIC_CHARACTER_SET, "\\ISO 2022 IR 87")
        .study(&fx.e)
        .series(&fx.e1)
        .sop(&fx.ei)
        .raw(tags::PATIENT_NAME, &yamada())
        .set(tags::PATIENT_ID, "PID-E")
        .set(tags::STUDY_DATE, "19991231")
        .set(tags::STUDY_TIME, "080000")
        .set(tags::ACCESSION_NUMBER, "JP-1")
        .set(tags::STUDY_ID, "S5")
        .set(tags::MODALITY, "CT")
        .set(tags::SERIES_NUMBER, "1");
    let parts = vec![
        a1.clone()
            .sop(&fx.a1i[0])
            .set(tags::INSTANCE_NUMBER, "10")
            .set(tags::SOP_CLASS_UID, MR_CLASS)
            .set(tags::NUMBER_OF_FRAMES, "2")
            .set(tags::KVP, "120")
            .set(tags::IMAGE_TYPE, "ORIGINAL\\PRIMARY\\LOCALIZER"),
        a1.clone()
            .sop(&fx.a1i[1])
            .set(tags::INSTANCE_NUMBER, "2")
            .set(tags::KVP, "100")
            .set(tags::IMAGE_TYPE, "ORIGINAL\\PRIMARY\\AXIAL")
            .set(tags::ACQUISITION_DATE_TIME, "20200102010000"),
        a1.clone()
            .sop(&fx.a1i[2])
            .set(tags::INSTANCE_NUMBER, "1")
            .set(tags::KVP, "80")
            .set(tags::IMAGE_TYPE, "ORIGINAL\\PRIMARY\\LOCALIZER")
            .set(tags::ACQUISITION_DATE_TIME, "20200101233000")
            .set(tags::IMAGE_POSITION_PATIENT, "-100\\-100\\50")
            .set(tags::IMAGE_ORIENTATION_PATIENT, "1\\0\\0\\0\\1\\0")
            .set(tags::PIXEL_SPACING, "0.5\\0.5")
            .set(tags::SLICE_THICKNESS, "1.25")
            .set(tags::SLICE_LOCATION, "50")
            .set(tags::WINDOW_CENTER, "40")
            .set(tags::WINDOW_WIDTH, "400")
            .set(tags::RESCALE_INTERCEPT, "-1024")
            .set(tags::RESCALE_SLOPE, "1")
            .set(tags::FRAME_OF_REFERENCE_UID, &u("9"))
            .set(tags::ACQUISITION_NUMBER, "1")
            .set(tags::CONTENT_DATE, "20200101")
            .set(tags::CONTENT_TIME, "233100"),
        a2.clone().sop(&fx.a2i[0]).set(tags::INSTANCE_NUMBER, "1"),
        a2.sop(&fx.a2i[1]).set(tags::INSTANCE_NUMBER, "2"),
        a3.sop(&fx.a3i).set(tags::INSTANCE_NUMBER, "1"),
        a4.sop(&fx.a4i).set(tags::INSTANCE_NUMBER, "1"),
        b,
        c,
        d,
        e,
    ];
    store(&s, &parts);
    (s, fx)
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

/// GET `{server}/dicom-web{pq}` with a token (or none) and an Accept header (or none).
fn qido_with(s: &Server, token: Option<&str>, pq: &str, accept: Option<&str>) -> Resp {
    let c = match token {
        Some(t) => authed_client(t),
        None => client(),
    };
    let mut rb = c.get(format!("{}{pq}", s.dicomweb()));
    if let Some(a) = accept {
        rb = rb.header("Accept", a);
    }
    send(rb)
}

/// GET as the admin, asking for DICOM JSON.
fn qido(s: &Server, pq: &str) -> Resp {
    qido_with(s, Some(&s.token), pq, Some(JSON))
}

/// The results of a successful JSON search.
fn results(s: &Server, pq: &str) -> Vec<Value> {
    let r = qido(s, pq);
    assert_eq!(r.status, 200, "GET {pq}: {}", r.text);
    r.array().clone()
}

/// The first value of `tag` in a result as text (PN: the alphabetic group; numbers printed).
fn first(item: &Value, tag: &str) -> Option<String> {
    let v = &item[tag]["Value"][0];
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(|a| a.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

fn column(items: &[Value], tag: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| first(i, tag).unwrap_or_else(|| panic!("no {tag} in {i}")))
        .collect()
}

/// The UIDs (`tag`) a search as `token` returns, in order; asserts 200.
fn found_as(s: &Server, token: &str, pq: &str, tag: &str) -> Vec<String> {
    let r = qido_with(s, Some(token), pq, Some(JSON));
    assert_eq!(r.status, 200, "GET {pq}: {}", r.text);
    column(r.array(), tag)
}

fn found(s: &Server, pq: &str, tag: &str) -> Vec<String> {
    found_as(s, &s.token, pq, tag)
}

/// Assert that a search returns exactly these UIDs of `tag`, in this order.
fn expect<S: AsRef<str>>(s: &Server, pq: &str, tag: &str, want: &[S]) {
    let want: Vec<&str> = want.iter().map(AsRef::as_ref).collect();
    assert_eq!(found(s, pq, tag), want, "GET {pq}");
}

/// Assert that a search is 200 with an empty JSON array.
fn expect_none(s: &Server, pq: &str) {
    let r = qido(s, pq);
    assert_eq!(r.status, 200, "GET {pq}: {}", r.text);
    assert_eq!(r.json, json!([]), "GET {pq}: {}", r.text);
}

/// Assert a 400 whose JSON message names `name` (when not empty).
fn bad(s: &Server, pq: &str, name: &str) {
    let r = qido(s, pq);
    assert_eq!(r.status, 400, "GET {pq}: {}", r.text);
    let msg = r.json["message"]
        .as_str()
        .unwrap_or_else(|| panic!("GET {pq}: no JSON message in {}", r.text));
    assert!(
        msg.contains(name),
        "GET {pq}: the message does not name {name:?}: {msg}"
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings<S: AsRef<str>>(v: &[S]) -> Vec<String> {
    v.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// A DS/IS value as a number, whether the server wrote a JSON number or a string.
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.trim().parse().unwrap_or_else(|_| panic!("{v}")),
        _ => panic!("not a number: {v}"),
    }
}

fn nums(item: &Value, tag: &str) -> Vec<f64> {
    item[tag]["Value"]
        .as_array()
        .unwrap_or_else(|| panic!("no {tag} values in {item}"))
        .iter()
        .map(num)
        .collect()
}

fn assert_warning(r: &Resp, base: &str, n: usize) {
    let w = r
        .header("warning")
        .unwrap_or_else(|| panic!("no Warning header; expected {n} more: {:?}", r.headers));
    assert!(w.starts_with("299 "), "Warning: {w}");
    assert!(w.contains(&format!("{base}/dicom-web")), "Warning: {w}");
    assert!(
        w.contains(&format!(
            "There are {n} additional results that can be requested"
        )),
        "Warning: {w} (expected {n})"
    );
}

fn assert_no_warning(r: &Resp) {
    assert!(
        r.header("warning").is_none(),
        "unexpected Warning: {:?}",
        r.header("warning")
    );
}

fn content_type(r: &Resp) -> String {
    r.header("content-type").unwrap_or("").to_ascii_lowercase()
}

/// One result by its UID.
fn by_uid<'a>(items: &'a [Value], tag: &str, uid: &str) -> &'a Value {
    items
        .iter()
        .find(|i| first(i, tag).as_deref() == Some(uid))
        .unwrap_or_else(|| panic!("{uid} not among {items:?}"))
}

/// Percent-encode every byte outside unreserved ASCII.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A one-instance study (series `{study}.1` #1, instance `{study}.1.1` #1, StudyTime 120000).
fn simple(study: &str, pid: &str, name: &str, date: &str) -> Inst {
    Inst::new()
        .study(study)
        .series(&format!("{study}.1"))
        .sop(&format!("{study}.1.1"))
        .set(tags::PATIENT_ID, pid)
        .set(tags::PATIENT_NAME, name)
        .set(tags::STUDY_DATE, date)
        .set(tags::STUDY_TIME, "120000")
        .set(tags::SERIES_NUMBER, "1")
        .set(tags::INSTANCE_NUMBER, "1")
}

// ---------------------------------------------------------------------------------------------
// Matching: study level
// ---------------------------------------------------------------------------------------------

#[test]
fn study_keys_match_single_values_universally_and_with_wildcards() {
    let (s, fx) = fixture();
    let all = [&fx.b, &fx.a, &fx.c, &fx.e, &fx.d];
    expect(&s, "/studies", STUDY, &all);
    // Single value, case-sensitive for non-PN strings.
    expect(&s, "/studies?PatientID=PID-A", STUDY, &[&fx.a]);
    expect_none(&s, "/studies?PatientID=pid-a");
    expect(&s, "/studies?AccessionNumber=abc", STUDY, &[&fx.b]);
    expect(&s, "/studies?AccessionNumber=ABC", STUDY, &[&fx.c]);
    expect(&s, "/studies?StudyID=S2", STUDY, &[&fx.b]);
    expect(&s, "/studies?StudyDescription=CT%20HEAD", STUDY, &[&fx.a]);
    expect(&s, "/studies?PatientSex=F", STUDY, &[&fx.b, &fx.c]);
    // Wildcards: * any run, ? one character; still case-sensitive.
    expect(&s, "/studies?AccessionNumber=a*", STUDY, &[&fx.b]);
    expect(&s, "/studies?AccessionNumber=*C", STUDY, &[&fx.c]);
    expect(&s, "/studies?AccessionNumber=?BC", STUDY, &[&fx.c]);
    expect(&s, "/studies?AccessionNumber=ACC-00?", STUDY, &[&fx.a]);
    expect(&s, "/studies?StudyDescription=CT*", STUDY, &[&fx.a]);
    expect_none(&s, "/studies?StudyDescription=ct*");
    expect(&s, "/studies?PatientID=PID-?", STUDY, &all);
    // Universal matching: everything matches, and the attribute is returned (empty or not).
    let r = results(&s, "/studies?AccessionNumber=");
    assert_eq!(column(&r, STUDY), strings(&all));
    for item in &r {
        assert!(item.get("00080050").is_some(), "no AccessionNumber: {item}");
    }
    let d = by_uid(&r, STUDY, &fx.d);
    assert!(
        d["00080050"].get("Value").is_none(),
        "D's AccessionNumber is empty: {d}"
    );
    assert_eq!(first(&r[0], "00080050").as_deref(), Some("abc"));
    expect(&s, "/studies?StudyDate=", STUDY, &all);
    // A matching key of any indexed study attribute, and several keys together (AND).
    expect(
        &s,
        "/studies?ReferringPhysicianName=JONES*",
        STUDY,
        &[&fx.b],
    );
    expect(
        &s,
        "/studies?PatientSex=F&AccessionNumber=ABC",
        STUDY,
        &[&fx.c],
    );
    expect_none(&s, "/studies?PatientSex=M&AccessionNumber=ABC");
}

#[test]
fn dates_times_and_combined_datetime_ranges() {
    let (s, fx) = fixture();
    // Dates: single, closed, open-ended either way.
    expect(&s, "/studies?StudyDate=20200101", STUDY, &[&fx.a, &fx.c]);
    expect(&s, "/studies?StudyDate=19991231", STUDY, &[&fx.e]);
    expect(
        &s,
        "/studies?StudyDate=20200101-20200102",
        STUDY,
        &[&fx.b, &fx.a, &fx.c],
    );
    expect(&s, "/studies?StudyDate=20200102-", STUDY, &[&fx.b]);
    expect(&s, "/studies?StudyDate=-20000101", STUDY, &[&fx.e]);
    expect_none(&s, "/studies?StudyDate=20210101-");
    expect(
        &s,
        "/studies?PatientBirthDate=19700101-19751231",
        STUDY,
        &[&fx.a],
    );
    // Times: a partial time is that hour; ranges.
    expect(&s, "/studies?StudyTime=12", STUDY, &[&fx.c]);
    expect(&s, "/studies?StudyTime=120000", STUDY, &[&fx.c]);
    expect(&s, "/studies?StudyTime=0800-1300", STUDY, &[&fx.c, &fx.e]);
    expect(&s, "/studies?StudyTime=2300-", STUDY, &[&fx.a]);
    expect(&s, "/studies?StudyTime=-0100", STUDY, &[&fx.b]);
    // Both as ranges: one datetime range across midnight.
    expect(
        &s,
        "/studies?StudyDate=20200101-20200102&StudyTime=2300-0100",
        STUDY,
        &[&fx.b, &fx.a],
    );
    expect(
        &s,
        "/studies?StudyTime=2300-0100&StudyDate=20200101-20200102",
        STUDY,
        &[&fx.b, &fx.a],
    );
    expect(
        &s,
        "/studies?StudyDate=20200101&StudyTime=1100-1300",
        STUDY,
        &[&fx.c],
    );
    // The same for the performed procedure step at series level.
    expect(
        &s,
        &format!(
            "/studies/{}/series?PerformedProcedureStepStartDate=20200101-20200102\
             &PerformedProcedureStepStartTime=2330-0010",
            fx.a
        ),
        SERIES,
        &[&fx.a1, &fx.a2],
    );
    expect(
        &s,
        &format!(
            "/studies/{}/series?PerformedProcedureStepStartDate=20200101",
            fx.a
        ),
        SERIES,
        &[&fx.a1, &fx.a3],
    );
    // DT ranges (AcquisitionDateTime at instance level).
    let path = format!("/studies/{}/series/{}/instances", fx.a, fx.a1);
    expect(
        &s,
        &format!("{path}?AcquisitionDateTime=20200101230000-20200101235959"),
        SOP,
        &[&fx.a1i[2]],
    );
    expect(
        &s,
        &format!("{path}?AcquisitionDateTime=20200102000000-"),
        SOP,
        &[&fx.a1i[1]],
    );
    expect(
        &s,
        &format!("{path}?AcquisitionDateTime=-20200101235959"),
        SOP,
        &[&fx.a1i[2]],
    );
}

#[test]
fn uid_lists_modality_lists_and_tag_keys() {
    let (s, fx) = fixture();
    let (a, c) = (&fx.a, &fx.c);
    for sep in [",", "%5C", "%2C"] {
        expect(
            &s,
            &format!("/studies?StudyInstanceUID={c}{sep}{a}"),
            STUDY,
            &[a, c],
        );
    }
    expect(&s, &format!("/studies?StudyInstanceUID={c}"), STUDY, &[c]);
    expect_none(&s, &format!("/studies?StudyInstanceUID={c}.7"));
    // ModalitiesInStudy: any of the study's modalities, any of the listed ones.
    expect(&s, "/studies?ModalitiesInStudy=CT", STUDY, &[a, &fx.e]);
    expect(&s, "/studies?ModalitiesInStudy=MR", STUDY, &[&fx.b, a]);
    expect(&s, "/studies?ModalitiesInStudy=SR", STUDY, &[a]);
    expect(&s, "/studies?ModalitiesInStudy=US", STUDY, &[c]);
    expect(
        &s,
        "/studies?ModalitiesInStudy=CT,MR",
        STUDY,
        &[&fx.b, a, &fx.e],
    );
    expect(
        &s,
        "/studies?ModalitiesInStudy=US%5CMR",
        STUDY,
        &[&fx.b, a, c],
    );
    expect_none(&s, "/studies?ModalitiesInStudy=XA");
    // Keys as tags, hex in either case.
    expect(&s, "/studies?00100020=PID-C", STUDY, &[c]);
    expect(&s, &format!("/studies?0020000d={a}"), STUDY, &[a]);
    expect(&s, &format!("/studies?0020000D={a},{c}"), STUDY, &[a, c]);
    expect(&s, "/studies?00080061=OT", STUDY, &[a, &fx.d]);
    // Series and instance UID lists.
    let series = format!("/studies/{a}/series");
    expect(
        &s,
        &format!("{series}?SeriesInstanceUID={}%5C{}", fx.a4, fx.a2),
        SERIES,
        &[&fx.a2, &fx.a4],
    );
    expect(
        &s,
        &format!(
            "/studies/{a}/series/{}/instances?SOPInstanceUID={},{}",
            fx.a1, fx.a1i[0], fx.a1i[2]
        ),
        SOP,
        &[&fx.a1i[2], &fx.a1i[0]],
    );
}

#[test]
fn person_names_ignore_case_accents_and_trailing_empty_components() {
    let (s, fx) = fixture();
    for q in ["DOE^JOHN", "DOE%5EJOHN", "doe^john", "Doe%5EJohn"] {
        expect(&s, &format!("/studies?PatientName={q}"), STUDY, &[&fx.a]);
    }
    expect(&s, "/studies?PatientName=?OE^J*", STUDY, &[&fx.a, &fx.c]);
    expect(&s, "/studies?PatientName=roe*", STUDY, &[&fx.c, &fx.d]);
    expect_none(&s, "/studies?PatientName=DOE");
    // Accents: stored MÜLLER^HANS.
    for q in [
        pct("MÜLLER^HANS"),
        pct("müller^hans"),
        "MULLER^HANS".into(),
        "muller*".into(),
        pct("mül*"),
    ] {
        expect(&s, &format!("/studies?PatientName={q}"), STUDY, &[&fx.b]);
    }
    // Stored ROE^RICHARD^^^ matches without its empty components.
    expect(&s, "/studies?PatientName=ROE^RICHARD", STUDY, &[&fx.d]);
    // ISO 2022 (ISO-2022-JP) names are decoded before matching.
    expect(&s, "/studies?PatientName=Yamada*", STUDY, &[&fx.e]);
    expect(&s, "/studies?PatientName=yamada*", STUDY, &[&fx.e]);
    // Other PN keys behave the same.
    expect(
        &s,
        "/studies?ReferringPhysicianName=smith^anna",
        STUDY,
        &[&fx.a],
    );
}

#[test]
fn fuzzy_matching_matches_name_component_prefixes() {
    let (s, fx) = fixture();
    let f = |q: &str| format!("/studies?PatientName={q}&fuzzymatching=true");
    expect(&s, &f("joh"), STUDY, &[&fx.a]);
    expect_none(&s, &f("ohn"));
    expect(&s, &f("JOHN"), STUDY, &[&fx.a]);
    expect(&s, &f("do%20jo"), STUDY, &[&fx.a]);
    expect_none(&s, &f("do%20ja"));
    expect(&s, &f("ja"), STUDY, &[&fx.c]);
    expect(&s, &f("roe"), STUDY, &[&fx.c, &fx.d]);
    expect(&s, &f("han"), STUDY, &[&fx.b]);
    expect(&s, &f("mul"), STUDY, &[&fx.b]);
    expect(&s, &f(&pct("MÜL")), STUDY, &[&fx.b]);
    // Every representation of an ISO 2022 name.
    expect(&s, &f("taro"), STUDY, &[&fx.e]);
    expect(&s, &f(&pct("山田")), STUDY, &[&fx.e]);
    expect(&s, &f(&pct("やま")), STUDY, &[&fx.e]);
    // Wildcard tokens: pattern against each component with an implicit trailing *.
    expect(&s, &f("*ohn"), STUDY, &[&fx.a]);
    expect(&s, &f("j?h"), STUDY, &[&fx.a]);
    expect(&s, &f("j?n"), STUDY, &[&fx.c]);
    // Off: exact matching again.
    expect_none(&s, "/studies?PatientName=joh&fuzzymatching=false");
    expect_none(&s, "/studies?PatientName=joh");
    // Other PN keys; non-PN keys are not fuzzy.
    expect(
        &s,
        "/studies?ReferringPhysicianName=smi&fuzzymatching=true",
        STUDY,
        &[&fx.a],
    );
    expect_none(&s, "/studies?PatientID=PID&fuzzymatching=true");
}

#[test]
fn person_name_matching_can_be_made_case_sensitive() {
    let s = Server::start(&["--qido-case-sensitive-pn", "true"]);
    let r = root();
    let (x, y) = (format!("{r}.1"), format!("{r}.2"));
    store(
        &s,
        &[
            simple(&x, "PID-X", "DOE^JOHN", "20200101"),
            simple(&y, "PID-Y", "Doe^Jane", "20190101"),
        ],
    );
    expect(&s, "/studies?PatientName=DOE^JOHN", STUDY, &[&x]);
    expect_none(&s, "/studies?PatientName=doe^john");
    expect(&s, "/studies?PatientName=DOE*", STUDY, &[&x]);
    expect(&s, "/studies?PatientName=Doe*", STUDY, &[&y]);
    expect(&s, "/studies?PatientName=D?e^J*", STUDY, &[&y]);
    expect_none(&s, "/studies?PatientName=doe*");
}

// ---------------------------------------------------------------------------------------------
// Matching: series and instance level
// ---------------------------------------------------------------------------------------------

#[test]
fn series_keys_sequences_and_numeric_series_numbers() {
    let (s, fx) = fixture();
    let p = format!("/studies/{}/series", fx.a);
    // Default order: SeriesNumber numerically ("1", "02", " 10"), missing last.
    expect(&s, &p, SERIES, &[&fx.a1, &fx.a2, &fx.a3, &fx.a4]);
    expect(&s, &format!("{p}?SeriesNumber=2"), SERIES, &[&fx.a2]);
    expect(&s, &format!("{p}?SeriesNumber=10"), SERIES, &[&fx.a3]);
    expect(&s, &format!("{p}?SeriesNumber=1"), SERIES, &[&fx.a1]);
    expect(&s, &format!("{p}?00200011=02"), SERIES, &[&fx.a2]);
    expect(&s, &format!("{p}?Modality=MR"), SERIES, &[&fx.a2]);
    expect(
        &s,
        &format!("{p}?Modality=CT,MR"),
        SERIES,
        &[&fx.a1, &fx.a2],
    );
    expect(
        &s,
        &format!("{p}?Modality=OT%5CCT"),
        SERIES,
        &[&fx.a1, &fx.a3],
    );
    expect(
        &s,
        &format!("{p}?SeriesDescription=SAG*"),
        SERIES,
        &[&fx.a2],
    );
    expect_none(&s, &format!("{p}?SeriesDescription=sag*"));
    expect(&s, &format!("{p}?BodyPartExamined=HEAD"), SERIES, &[&fx.a1]);
    expect(
        &s,
        &format!("{p}?InstitutionName=General*"),
        SERIES,
        &[&fx.a1],
    );
    expect_none(&s, &format!("{p}?InstitutionName=general*"));
    // Sequence matching by tag path and keyword path.
    expect(
        &s,
        &format!("{p}?00400275.00400009=SPS1"),
        SERIES,
        &[&fx.a1],
    );
    expect(
        &s,
        &format!("{p}?00400275.00400009=SPS3"),
        SERIES,
        &[&fx.a2],
    );
    expect(
        &s,
        &format!("{p}?RequestAttributesSequence.ScheduledProcedureStepID=SPS2"),
        SERIES,
        &[&fx.a2],
    );
    expect(
        &s,
        &format!("{p}?RequestAttributesSequence.RequestedProcedureID=RP1"),
        SERIES,
        &[&fx.a1],
    );
    expect(&s, &format!("{p}?00400275.00401001=RP3"), SERIES, &[&fx.a2]);
    expect(
        &s,
        &format!("{p}?00400275.00400009=SPS*"),
        SERIES,
        &[&fx.a1, &fx.a2],
    );
    expect_none(&s, &format!("{p}?00400275.00400009=SPS9"));
    // Returned: the sequence with its items.
    let r = results(&s, &format!("{p}?00400275.00400009=SPS3"));
    let items = r[0]["00400275"]["Value"]
        .as_array()
        .unwrap_or_else(|| panic!("no RequestAttributesSequence: {}", r[0]));
    assert_eq!(items.len(), 2, "{}", r[0]);
    assert_eq!(first(&items[0], "00400009").as_deref(), Some("SPS2"));
    assert_eq!(first(&items[1], "00401001").as_deref(), Some("RP3"));
}

#[test]
fn instance_keys_and_numeric_instance_numbers() {
    let (s, fx) = fixture();
    let p = format!("/studies/{}/series/{}/instances", fx.a, fx.a1);
    let [i10, i2, i1] = &fx.a1i;
    // Default order: InstanceNumber numerically (1, 2, 10).
    expect(&s, &p, SOP, &[i1, i2, i10]);
    expect(&s, &format!("{p}?InstanceNumber=2"), SOP, &[i2]);
    expect(&s, &format!("{p}?InstanceNumber=10"), SOP, &[i10]);
    expect(&s, &format!("{p}?InstanceNumber=010"), SOP, &[i10]);
    expect(&s, &format!("{p}?SOPClassUID={MR_CLASS}"), SOP, &[i10]);
    expect(&s, &format!("{p}?00080016={CT_CLASS}"), SOP, &[i1, i2]);
    expect(&s, &format!("{p}?SOPInstanceUID={i2}"), SOP, &[i2]);
    // Multi-valued stored attributes match if any value does.
    expect(&s, &format!("{p}?ImageType=AXIAL"), SOP, &[i2]);
    expect(&s, &format!("{p}?ImageType=LOCALIZER"), SOP, &[i1, i10]);
    // Instances of a whole study, with series attributes.
    let r = results(&s, &format!("/studies/{}/instances", fx.a));
    let mut want = strings(&fx.a1i);
    want.extend(strings(&fx.a2i));
    want.extend([fx.a3i.clone(), fx.a4i.clone()]);
    assert_eq!(sorted(column(&r, SOP)), sorted(want));
    let x = by_uid(&r, SOP, &fx.a2i[0]);
    assert_eq!(first(x, "00080060").as_deref(), Some("MR"), "{x}");
    assert_eq!(first(x, SERIES).as_deref(), Some(fx.a2.as_str()), "{x}");
    let r = results(&s, &format!("/studies/{}/instances?Modality=MR", fx.a));
    assert_eq!(sorted(column(&r, SOP)), sorted(strings(&fx.a2i)));
}

// ---------------------------------------------------------------------------------------------
// Relational queries and returned attributes
// ---------------------------------------------------------------------------------------------

#[test]
fn relational_queries_apply_higher_level_keys_and_return_their_attributes() {
    let (s, fx) = fixture();
    // /series with study keys; study order first, then series order.
    let r = results(&s, "/series?PatientID=PID-A");
    assert_eq!(
        column(&r, SERIES),
        strings(&[&fx.a1, &fx.a2, &fx.a3, &fx.a4])
    );
    for item in &r {
        assert_eq!(
            first(item, "00100010").as_deref(),
            Some("DOE^JOHN"),
            "{item}"
        );
        assert_eq!(first(item, "00100020").as_deref(), Some("PID-A"), "{item}");
        assert_eq!(first(item, STUDY).as_deref(), Some(fx.a.as_str()), "{item}");
        assert_eq!(
            first(item, "00080020").as_deref(),
            Some("20200101"),
            "{item}"
        );
        assert_eq!(
            first(item, "00080050").as_deref(),
            Some("ACC-001"),
            "{item}"
        );
        assert!(item.get("00080060").is_some(), "{item}");
    }
    expect(
        &s,
        "/series?StudyDate=20200101",
        SERIES,
        &[&fx.a1, &fx.a2, &fx.a3, &fx.a4, &fx.c1],
    );
    expect(&s, "/series?Modality=MR", SERIES, &[&fx.b1, &fx.a2]);
    expect(
        &s,
        "/series?PatientName=doe^john&Modality=CT",
        SERIES,
        &[&fx.a1],
    );
    expect(&s, "/series?ModalitiesInStudy=US", SERIES, &[&fx.c1]);
    expect_none(&s, "/series?PatientID=PID-A&Modality=US");
    expect(
        &s,
        &format!("/studies/{}/series?PatientID=PID-A&Modality=SR", fx.a),
        SERIES,
        &[&fx.a4],
    );
    expect_none(&s, &format!("/studies/{}/series?PatientID=PID-B", fx.a));
    // /instances with study and series keys; study and series attributes returned.
    let r = results(&s, "/instances?StudyDate=20200101");
    let studies = column(&r, STUDY);
    let mut want = vec![fx.a.clone(); 7];
    want.push(fx.c.clone());
    assert_eq!(studies, want, "study order first: {r:?}");
    let c = by_uid(&r, SOP, &fx.ci);
    assert_eq!(first(c, "00100020").as_deref(), Some("PID-C"), "{c}");
    assert_eq!(first(c, "00100010").as_deref(), Some("ROE^JANE"), "{c}");
    assert_eq!(first(c, "00080060").as_deref(), Some("US"), "{c}");
    assert_eq!(first(c, SERIES).as_deref(), Some(fx.c1.as_str()), "{c}");
    assert_eq!(first(c, "00080016").as_deref(), Some(CT_CLASS), "{c}");
    expect(&s, "/instances?PatientID=PID-D&Modality=OT", SOP, &[&fx.di]);
    expect(
        &s,
        "/instances?StudyDate=20200101&Modality=US",
        SOP,
        &[&fx.ci],
    );
    expect(
        &s,
        "/instances?PatientName=doe*&SeriesNumber=2&InstanceNumber=2",
        SOP,
        &[&fx.a2i[1]],
    );
    expect(
        &s,
        &format!(
            "/studies/{}/series/{}/instances?StudyDate=20200101&InstanceNumber=2",
            fx.a, fx.a1
        ),
        SOP,
        &[&fx.a1i[1]],
    );
}

#[test]
fn returned_attributes_counts_and_retrieve_urls() {
    let (s, fx) = fixture();
    let base = format!("{}/dicom-web", s.url);
    // Study level.
    let r = results(&s, &format!("/studies?StudyInstanceUID={}", fx.a));
    assert_eq!(r.len(), 1);
    let a = &r[0];
    for (tag, want) in [
        ("00080020", "20200101"),
        ("00080030", "233000"),
        ("00080050", "ACC-001"),
        ("00080056", "ONLINE"),
        ("00080090", "SMITH^ANNA"),
        ("00080201", "+0100"),
        ("00100010", "DOE^JOHN"),
        ("00100020", "PID-A"),
        ("00100030", "19700101"),
        ("00100040", "M"),
        ("00200010", "S1"),
    ] {
        assert_eq!(first(a, tag).as_deref(), Some(want), "{tag} in {a}");
    }
    assert_eq!(a["00201206"]["Value"], json!([4]), "series count: {a}");
    assert_eq!(a["00201208"]["Value"], json!([7]), "instance count: {a}");
    assert_eq!(a["00201206"]["vr"], "IS");
    assert_eq!(a["00080061"]["vr"], "CS");
    let mut modalities: Vec<String> = a["00080061"]["Value"]
        .as_array()
        .unwrap_or_else(|| panic!("no ModalitiesInStudy: {a}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    modalities.sort();
    assert_eq!(modalities, ["CT", "MR", "OT", "SR"]);
    assert_eq!(a["00081190"]["vr"], "UR");
    assert_eq!(
        first(a, "00081190"),
        Some(format!("{base}/studies/{}", fx.a))
    );
    assert_eq!(a["00080020"]["vr"], "DA");
    assert_eq!(a["00100010"]["vr"], "PN");
    assert!(
        a.get("00081030").is_none(),
        "StudyDescription not asked for: {a}"
    );
    // Series level.
    let r = results(&s, &format!("/studies/{}/series", fx.a));
    let a2 = by_uid(&r, SERIES, &fx.a2);
    assert_eq!(nums(a2, "00200011"), [2.0], "SeriesNumber: {a2}");
    assert_eq!(a2["00201209"]["Value"], json!([2]), "instances: {a2}");
    assert_eq!(first(a2, "00080060").as_deref(), Some("MR"));
    assert_eq!(first(a2, "0008103E").as_deref(), Some("SAG T1"));
    assert_eq!(first(a2, "00400244").as_deref(), Some("20200102"));
    assert_eq!(first(a2, "00400245").as_deref(), Some("000500"));
    assert_eq!(
        first(a2, "00081190"),
        Some(format!("{base}/studies/{}/series/{}", fx.a, fx.a2))
    );
    let a1 = by_uid(&r, SERIES, &fx.a1);
    assert_eq!(a1["00201209"]["Value"], json!([3]), "instances: {a1}");
    assert!(
        a1["00400275"]["Value"]
            .as_array()
            .is_some_and(|v| v.len() == 1),
        "{a1}"
    );
    // Instance level.
    let r = results(&s, &format!("/studies/{}/series/{}/instances", fx.a, fx.a1));
    let i10 = by_uid(&r, SOP, &fx.a1i[0]);
    assert_eq!(first(i10, "00080016").as_deref(), Some(MR_CLASS));
    assert_eq!(first(i10, "00080056").as_deref(), Some("ONLINE"));
    assert_eq!(nums(i10, "00200013"), [10.0], "InstanceNumber: {i10}");
    assert_eq!(i10["00280010"]["Value"], json!([2]), "Rows: {i10}");
    assert_eq!(i10["00280011"]["Value"], json!([3]), "Columns: {i10}");
    assert_eq!(
        i10["00280100"]["Value"],
        json!([16]),
        "BitsAllocated: {i10}"
    );
    assert_eq!(nums(i10, "00280008"), [2.0], "NumberOfFrames: {i10}");
    assert_eq!(
        first(i10, "00081190"),
        Some(format!(
            "{base}/studies/{}/series/{}/instances/{}",
            fx.a, fx.a1, fx.a1i[0]
        ))
    );
    // /instances: the same URL.
    let r = results(&s, &format!("/instances?SOPInstanceUID={}", fx.a1i[0]));
    assert_eq!(r.len(), 1);
    assert_eq!(first(&r[0], "00081190"), first(i10, "00081190"));
    // A forged Host header changes nothing.
    let h = send(
        s.client()
            .get(format!(
                "{}/studies?StudyInstanceUID={}",
                s.dicomweb(),
                fx.a
            ))
            .header("Accept", JSON)
            .header("Host", "evil.example")
            .header("X-Forwarded-Host", "evil.example"),
    );
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(
        first(&h.array()[0], "00081190"),
        Some(format!("{base}/studies/{}", fx.a))
    );
    assert!(!h.text.contains("evil.example"), "{}", h.text);
}

#[test]
fn includefield_lists_repeats_all_and_unindexed_attributes() {
    let (s, fx) = fixture();
    let study = format!("/studies?StudyInstanceUID={}", fx.a);
    for q in [
        "includefield=StudyDescription,PatientAge",
        "includefield=StudyDescription&includefield=PatientAge",
        "includefield=00081030,00101010",
        "includefield=00081030&includefield=PatientAge",
    ] {
        let r = results(&s, &format!("{study}&{q}"));
        assert_eq!(
            first(&r[0], "00081030").as_deref(),
            Some("CT HEAD"),
            "{q}: {}",
            r[0]
        );
        assert_eq!(
            first(&r[0], "00101010").as_deref(),
            Some("050Y"),
            "{q}: {}",
            r[0]
        );
    }
    // Study `all` includes every indexed study attribute.
    let r = results(&s, &format!("{study}&includefield=all"));
    assert_eq!(
        first(&r[0], "00081030").as_deref(),
        Some("CT HEAD"),
        "{}",
        r[0]
    );
    assert_eq!(
        first(&r[0], "00101010").as_deref(),
        Some("050Y"),
        "{}",
        r[0]
    );
    // Matching keys are returned too.
    let r = results(&s, &format!("{study}&StudyDescription=CT*"));
    assert_eq!(
        first(&r[0], "00081030").as_deref(),
        Some("CT HEAD"),
        "{}",
        r[0]
    );
    // Instance `all`: the layout attributes a viewer needs.
    let p = format!("/studies/{}/series/{}/instances", fx.a, fx.a1);
    let r = results(&s, &format!("{p}?includefield=all"));
    let i1 = by_uid(&r, SOP, &fx.a1i[2]);
    assert_eq!(nums(i1, "00200032"), [-100.0, -100.0, 50.0], "{i1}");
    assert_eq!(nums(i1, "00200037"), [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "{i1}");
    assert_eq!(nums(i1, "00280030"), [0.5, 0.5], "{i1}");
    assert_eq!(nums(i1, "00180050"), [1.25], "{i1}");
    assert_eq!(nums(i1, "00201041"), [50.0], "{i1}");
    assert_eq!(nums(i1, "00281050"), [40.0], "{i1}");
    assert_eq!(nums(i1, "00281051"), [400.0], "{i1}");
    assert_eq!(nums(i1, "00281052"), [-1024.0], "{i1}");
    assert_eq!(nums(i1, "00281053"), [1.0], "{i1}");
    assert_eq!(nums(i1, "00200012"), [1.0], "{i1}");
    assert_eq!(nums(i1, "00280002"), [1.0], "{i1}");
    assert_eq!(nums(i1, "00280101"), [12.0], "{i1}");
    assert_eq!(nums(i1, "00280103"), [0.0], "{i1}");
    assert_eq!(
        i1["00080008"]["Value"],
        json!(["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        "{i1}"
    );
    assert_eq!(
        first(i1, "00280004").as_deref(),
        Some("MONOCHROME2"),
        "{i1}"
    );
    assert!(
        first(i1, "00200052").is_some_and(|f| f.ends_with(".9")),
        "{i1}"
    );
    assert_eq!(first(i1, "00080023").as_deref(), Some("20200101"), "{i1}");
    assert_eq!(first(i1, "00080033").as_deref(), Some("233100"), "{i1}");
    // Without includefield those are not returned.
    let r = results(&s, &p);
    let plain = by_uid(&r, SOP, &fx.a1i[2]);
    assert!(plain.get("00200032").is_none(), "{plain}");
    // Named instance attributes.
    let r = results(
        &s,
        &format!("{p}?includefield=ImagePositionPatient,00280030"),
    );
    let i1 = by_uid(&r, SOP, &fx.a1i[2]);
    assert_eq!(nums(i1, "00200032"), [-100.0, -100.0, 50.0], "{i1}");
    assert_eq!(nums(i1, "00280030"), [0.5, 0.5], "{i1}");
    // Not in the index: read from the stored instance.
    let r = results(&s, &format!("{p}?includefield=KVP"));
    let kvp: Vec<f64> = [&fx.a1i[0], &fx.a1i[1], &fx.a1i[2]]
        .iter()
        .map(|i| nums(by_uid(&r, SOP, i), "00180060")[0])
        .collect();
    assert_eq!(kvp, [120.0, 100.0, 80.0], "{r:?}");
    let r = results(
        &s,
        &format!("/studies/{}/series?includefield=00180060", fx.a),
    );
    let a2 = by_uid(&r, SERIES, &fx.a2);
    assert_eq!(nums(a2, "00180060"), [110.0], "{a2}");
    let r = results(&s, &format!("{study}&includefield=00181020"));
    assert_eq!(
        first(&r[0], "00181020").as_deref(),
        Some("v1.2"),
        "{}",
        r[0]
    );
    let r = results(&s, &format!("{study}&includefield=SoftwareVersions"));
    assert_eq!(
        first(&r[0], "00181020").as_deref(),
        Some("v1.2"),
        "{}",
        r[0]
    );
    // `all` only alone; unknown keywords.
    bad(&s, &format!("{study}&includefield=all,PatientAge"), "");
    bad(
        &s,
        &format!("{study}&includefield=all&includefield=PatientAge"),
        "",
    );
    bad(
        &s,
        &format!("{study}&includefield=NoSuchKeyword"),
        "NoSuchKeyword",
    );
}

#[test]
fn specific_character_set_marks_non_ascii_results_only() {
    let (s, fx) = fixture();
    let r = results(&s, "/studies");
    let b = by_uid(&r, STUDY, &fx.b);
    assert_eq!(b["00080005"]["Value"], json!(["ISO_IR 192"]), "{b}");
    assert_eq!(
        b["00100010"]["Value"][0]["Alphabetic"], "MÜLLER^HANS",
        "{b}"
    );
    let e = by_uid(&r, STUDY, &fx.e);
    assert_eq!(e["00080005"]["Value"], json!(["ISO_IR 192"]), "{e}");
    assert_eq!(
        e["00100010"]["Value"][0],
        json!({
            "Alphabetic": "Yamada^Tarou",
            "Ideographic": "山田^太郎",
            "Phonetic": "やまだ^たろう"
        }),
        "{e}"
    );
    for uid in [&fx.a, &fx.c, &fx.d] {
        let x = by_uid(&r, STUDY, uid);
        assert!(
            x.get("00080005").is_none(),
            "ASCII result with a charset: {x}"
        );
    }
    // Series of B carry only ASCII values; with B's study attributes they do not.
    let r = results(&s, &format!("/studies/{}/series", fx.b));
    assert!(r[0].get("00080005").is_none(), "{}", r[0]);
    let r = results(&s, "/series?PatientID=PID-B");
    assert_eq!(r[0]["00080005"]["Value"], json!(["ISO_IR 192"]), "{}", r[0]);
    let r = results(&s, "/instances?PatientID=PID-E");
    assert_eq!(r[0]["00080005"]["Value"], json!(["ISO_IR 192"]), "{}", r[0]);
    let r = results(&s, &format!("/studies/{}/instances", fx.e));
    assert!(r[0].get("00080005").is_none(), "{}", r[0]);
}

// ---------------------------------------------------------------------------------------------
// Output formats
// ---------------------------------------------------------------------------------------------

/// The parts of a multipart body: (headers, body) each.
fn multipart_parts(content_type: &str, body: &str) -> Vec<(String, String)> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| {
            p.split_once('=')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no boundary in {content_type}"));
    let delim = format!("--{boundary}");
    let mut pieces = body.split(delim.as_str());
    pieces.next(); // preamble
    let mut parts = Vec::new();
    let mut closed = false;
    for p in pieces {
        if p.starts_with("--") {
            closed = true;
            break;
        }
        let p = p.strip_prefix("\r\n").unwrap_or(p);
        let (headers, content) = p
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("part without a header end: {p:?}"));
        parts.push((headers.to_owned(), content.to_owned()));
    }
    assert!(closed, "no closing delimiter in {body}");
    parts
}

#[test]
fn json_and_xml_output_and_406_for_anything_else() {
    let (s, fx) = fixture();
    let pq = "/studies?PatientSex=F";
    // JSON for each of these; the Content-Type is checked last (see the end).
    let mut json_types = Vec::new();
    for accept in [
        Some(JSON),
        Some("application/json"),
        Some("*/*"),
        Some("application/dicom+json, image/png;q=0.5"),
        None,
    ] {
        let r = qido_with(&s, Some(&s.token), pq, accept);
        assert_eq!(r.status, 200, "Accept {accept:?}: {}", r.text);
        assert_eq!(column(r.array(), STUDY), strings(&[&fx.b, &fx.c]));
        json_types.push((accept, content_type(&r)));
    }
    // The accept and charset query parameters are allowed.
    let r = qido_with(
        &s,
        Some(&s.token),
        &format!("{pq}&accept=application%2Fdicom%2Bjson&charset=utf-8"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(column(r.array(), STUDY), strings(&[&fx.b, &fx.c]));
    // XML: one NativeDicomModel part per result, in order.
    let r = qido_with(&s, Some(&s.token), pq, Some(XML));
    assert_eq!(r.status, 200, "{}", r.text);
    let ct = content_type(&r);
    assert!(ct.starts_with("multipart/related"), "{ct}");
    assert!(ct.contains("application/dicom+xml"), "{ct}");
    let parts = multipart_parts(r.header("content-type").unwrap(), &r.text);
    assert_eq!(parts.len(), 2, "{}", r.text);
    for ((headers, body), uid) in parts.iter().zip([&fx.b, &fx.c]) {
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("application/dicom+xml"),
            "{headers}"
        );
        assert!(body.contains("<NativeDicomModel"), "{body}");
        assert!(body.contains(uid.as_str()), "{uid} not in {body}");
    }
    assert!(!parts[0].1.contains(fx.c.as_str()));
    assert!(parts[0].1.contains("MÜLLER"), "{}", parts[0].1);
    // Nothing acceptable.
    for accept in ["image/png", "application/dicom", "text/html"] {
        let r = qido_with(&s, Some(&s.token), pq, Some(accept));
        assert_eq!(r.status, 406, "Accept {accept}: {}", r.text);
    }
    // Every JSON answer is labelled application/dicom+json.
    // The response says what was asked for: plain JSON only when only that was acceptable.
    for (accept, ct) in json_types {
        let want = if accept == Some("application/json") {
            "application/json"
        } else {
            JSON
        };
        assert!(ct.starts_with(want), "Accept {accept:?}: Content-Type {ct}");
    }
}

#[test]
fn zero_matches_are_200_with_an_empty_array() {
    let (s, fx) = fixture();
    for pq in [
        "/studies?PatientID=NOBODY".to_owned(),
        "/series?Modality=XA".to_owned(),
        "/instances?InstanceNumber=99".to_owned(),
        format!("/studies/{}/series?Modality=XA", fx.a),
        format!("/studies/{}/instances?SOPClassUID=1.2.3", fx.a),
        format!(
            "/studies/{}/series/{}/instances?InstanceNumber=5",
            fx.a, fx.a1
        ),
    ] {
        let r = qido(&s, &pq);
        assert_eq!(r.status, 200, "{pq}: {}", r.text);
        assert!(content_type(&r).starts_with(JSON), "{pq}: {:?}", r.headers);
        assert_eq!(r.json, json!([]), "{pq}: {}", r.text);
        assert_no_warning(&r);
    }
}

// ---------------------------------------------------------------------------------------------
// Paging and ordering
// ---------------------------------------------------------------------------------------------

/// Five one-instance studies, newest first: P1 (20210105) .. P5 (20210101).
fn five_studies(s: &Server) -> Vec<String> {
    let r = root();
    let uids: Vec<String> = (1..=5).map(|i| format!("{r}.{i}")).collect();
    let parts: Vec<Inst> = uids
        .iter()
        .enumerate()
        .map(|(i, u)| {
            simple(
                u,
                &format!("PID-{i}"),
                "PAGE^PATIENT",
                &format!("2021010{}", 5 - i),
            )
        })
        .collect();
    store(s, &parts);
    uids
}

#[test]
fn paging_with_limit_offset_and_the_warning_header() {
    let s = Server::start(&[]);
    let p = five_studies(&s);
    let page = |q: &str| {
        let r = qido(&s, &format!("/studies?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        let uids = column(r.array(), STUDY);
        (uids, r)
    };
    let (all, r) = page("");
    assert_eq!(all, p);
    assert_no_warning(&r);
    let (uids, r) = page("limit=2");
    assert_eq!(uids, p[..2]);
    assert_warning(&r, &s.url, 3);
    let (uids, r) = page("limit=2&offset=2");
    assert_eq!(uids, p[2..4]);
    assert_warning(&r, &s.url, 1);
    let (uids, r) = page("offset=4&limit=2");
    assert_eq!(uids, p[4..]);
    assert_no_warning(&r);
    let (uids, r) = page("limit=5");
    assert_eq!(uids, p);
    assert_no_warning(&r);
    let (uids, r) = page("offset=3");
    assert_eq!(uids, p[3..]);
    assert_no_warning(&r);
    let (uids, r) = page("offset=5");
    assert!(uids.is_empty());
    assert_eq!(r.json, json!([]));
    assert_no_warning(&r);
    let (uids, _) = page("offset=50&limit=1");
    assert!(uids.is_empty());
    // The count follows the matching keys.
    let (uids, r) = page("StudyDate=20210102-&limit=1&offset=1");
    assert_eq!(uids, p[1..2]);
    assert_warning(&r, &s.url, 2);
    // Series and instances page too.
    let (uids, r) = {
        let r = qido(&s, "/series?limit=3");
        (column(r.array(), SERIES), r)
    };
    let series: Vec<String> = p.iter().map(|u| format!("{u}.1")).collect();
    assert_eq!(uids, series[..3]);
    assert_warning(&r, &s.url, 2);
    let r = qido(&s, "/instances?offset=1&limit=1");
    assert_eq!(column(r.array(), SOP), [format!("{}.1.1", p[1])]);
    assert_warning(&r, &s.url, 3);
}

#[test]
fn limit_is_clamped_to_qido_max_results() {
    let s = Server::start(&["--qido-max-results", "3"]);
    let p = five_studies(&s);
    for q in ["limit=10", "", "limit=3"] {
        let r = qido(&s, &format!("/studies?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(column(r.array(), STUDY), p[..3], "{q}");
        assert_warning(&r, &s.url, 2);
    }
    let r = qido(&s, "/studies?offset=3&limit=10");
    assert_eq!(column(r.array(), STUDY), p[3..]);
    assert_no_warning(&r);
    let r = qido(&s, "/studies?offset=1&limit=1");
    assert_eq!(column(r.array(), STUDY), p[1..2]);
    assert_warning(&r, &s.url, 3);
}

#[test]
fn default_order_and_orderby() {
    let s = Server::start(&[]);
    let r = root();
    let o: Vec<String> = (1..=4).map(|i| format!("{r}.{i}")).collect();
    let mk = |i: usize, name: &str, date: &str, sex: &str| {
        simple(&o[i], &format!("PID-O{i}"), name, date).set(tags::PATIENT_SEX, sex)
    };
    let o0 = mk(0, "CHARLIE^C", "20220103", "M");
    let extra = |sn: &str, n: usize| {
        o0.clone()
            .series(&format!("{}.{n}", o[0]))
            .sop(&format!("{}.{n}.1", o[0]))
            .set(tags::SERIES_NUMBER, sn)
    };
    store(
        &s,
        &[
            o0.clone(),
            extra("10", 2),
            extra("2", 3),
            mk(1, "ALPHA^A", "20220101", "F"),
            mk(2, "BRAVO^B", "20220104", "M"),
            // The same name, date and time as study 1: only the UID tells them apart.
            mk(3, "ALPHA^A", "20220101", "F"),
        ],
    );
    let st = |q: &str| found(&s, &format!("/studies{q}"), STUDY);
    let ids = |idx: &[usize]| idx.iter().map(|&i| o[i].clone()).collect::<Vec<_>>();
    // Default: StudyDate and StudyTime descending; ties by StudyInstanceUID ascending.
    assert_eq!(st(""), ids(&[2, 0, 1, 3]), "default order");
    assert_eq!(st("?orderby=-StudyDate"), ids(&[2, 0, 1, 3]));
    assert_eq!(st("?orderby=StudyDate"), ids(&[1, 3, 0, 2]));
    // Ties (1 and 3) broken by StudyInstanceUID ascending, whatever the direction.
    assert_eq!(st("?orderby=PatientName"), ids(&[1, 3, 2, 0]));
    assert_eq!(st("?orderby=-PatientName"), ids(&[0, 2, 1, 3]));
    assert_eq!(st("?orderby=00100010"), ids(&[1, 3, 2, 0]));
    assert_eq!(st("?orderby=-PatientSex,StudyDate"), ids(&[0, 2, 1, 3]));
    assert_eq!(
        st("?orderby=PatientSex&orderby=-StudyDate"),
        ids(&[1, 3, 2, 0])
    );
    let r = qido(&s, "/studies?orderby=PatientName&limit=2&offset=1");
    assert_eq!(column(r.array(), STUDY), ids(&[3, 2]));
    assert_warning(&r, &s.url, 1);
    bad(&s, "/studies?orderby=NoSuchKeyword", "NoSuchKeyword");
    bad(&s, "/studies?orderby=-NoSuchKeyword", "NoSuchKeyword");
    // Series: numeric SeriesNumber (1, 2, 10), and reversed.
    let series = |n: usize| format!("{}.{n}", o[0]);
    expect(
        &s,
        &format!("/studies/{}/series", o[0]),
        SERIES,
        &[series(1), series(3), series(2)],
    );
    expect(
        &s,
        &format!("/studies/{}/series?orderby=-SeriesNumber", o[0]),
        SERIES,
        &[series(2), series(3), series(1)],
    );
    // All series: study order first.
    let all = found(&s, "/series", SERIES);
    assert_eq!(
        all,
        [
            format!("{}.1", o[2]),
            series(1),
            series(3),
            series(2),
            format!("{}.1", o[1]),
            format!("{}.1", o[3]),
        ]
    );
}

#[test]
fn percent_encoding_is_decoded_exactly_once() {
    let s = Server::start(&[]);
    let r = root();
    let (x, y, z) = (format!("{r}.1"), format!("{r}.2"), format!("{r}.3"));
    store(
        &s,
        &[
            simple(&x, "PID-X", "DOE^JOHN", "20200103").set(tags::ACCESSION_NUMBER, "%25"),
            simple(&y, "PID-Y", "ROE^JANE", "20200102").set(tags::ACCESSION_NUMBER, "%"),
            simple(&z, "PID-Z", "DOE%5EJOHN", "20200101").set(tags::ACCESSION_NUMBER, "A B"),
        ],
    );
    expect(&s, "/studies?AccessionNumber=%2525", STUDY, &[&x]);
    expect(&s, "/studies?AccessionNumber=%25", STUDY, &[&y]);
    expect(&s, "/studies?AccessionNumber=A%20B", STUDY, &[&z]);
    expect(&s, "/studies?PatientName=DOE%5EJOHN", STUDY, &[&x]);
    expect(&s, "/studies?PatientName=DOE%255EJOHN", STUDY, &[&z]);
    // Parameter names are decoded too.
    expect(&s, "/studies?Patient%4Eame=DOE^JOHN", STUDY, &[&x]);
    expect(&s, "/studies?%50atientID=PID-Y", STUDY, &[&y]);
    expect(
        &s,
        &format!("/studies?StudyInstanceUID={}", pct(&x)),
        STUDY,
        &[&x],
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_queries_are_400_naming_the_parameter() {
    let s = Server::start(&[]);
    let r = root();
    let x = format!("{r}.1");
    store(&s, &[simple(&x, "PID-X", "DOE^JOHN", "20200101")]);
    expect(&s, "/studies?PatientID=PID-X", STUDY, &[&x]);
    let series = format!("/studies/{x}/series");
    let instances = format!("/studies/{x}/instances");
    // Parameters and keys.
    bad(&s, "/studies?foo=bar", "foo");
    bad(&s, "/studies?PatientID=PID-X&foo", "foo");
    bad(&s, "/studies?PatientNam=X", "PatientNam");
    bad(&s, "/studies?patientname=X", "patientname");
    bad(&s, "/studies?0010001G=X", "0010001G");
    bad(&s, "/studies?001000100=X", "001000100");
    bad(&s, "/studies?00090010=X", "00090010");
    bad(&s, "/studies?00291010=X", "00291010");
    bad(&s, "/studies?KVP=120", "KVP");
    bad(&s, "/studies?00181020=v1", "00181020");
    bad(&s, "/series?00400275.00409999=X", "00409999");
    bad(
        &s,
        "/series?RequestAttributesSequence.NoSuchKeyword=X",
        "NoSuchKeyword",
    );
    // Lower-level keys.
    bad(&s, "/studies?Modality=CT", "Modality");
    bad(&s, "/studies?SeriesInstanceUID=1.2.3", "SeriesInstanceUID");
    bad(&s, "/studies?SOPInstanceUID=1.2.3", "SOPInstanceUID");
    bad(&s, "/studies?00200011=1", "00200011");
    bad(
        &s,
        &format!("/series?SOPClassUID={CT_CLASS}"),
        "SOPClassUID",
    );
    bad(&s, &format!("{series}?InstanceNumber=1"), "InstanceNumber");
    // The same key twice.
    bad(&s, "/studies?PatientID=A&PatientID=B", "PatientID");
    // Dates and times.
    for q in [
        "StudyDate=-",
        "StudyDate=20200102-20200101",
        "StudyTime=1300-1200",
        "StudyDate=2020-01-01",
        "StudyDate=20201341",
        "StudyDate=2020010",
        "StudyDate=2020*",
        "StudyDate=2020010?",
        "StudyTime=12*",
        "PatientBirthDate=19700101-19600101",
    ] {
        bad(&s, &format!("/studies?{q}"), "");
    }
    bad(
        &s,
        "/series?PerformedProcedureStepStartDate=20200102-20200101",
        "",
    );
    // UIDs.
    for q in [
        "StudyInstanceUID=1.2.*",
        "StudyInstanceUID=1.2.3?",
        "StudyInstanceUID=abc",
        "StudyInstanceUID=1.2.3,x.y",
    ] {
        bad(&s, &format!("/studies?{q}"), "");
    }
    bad(&s, &format!("{series}?SeriesInstanceUID=1.2*"), "");
    // IS keys.
    for q in [
        "SeriesNumber=1*",
        "SeriesNumber=abc",
        "SeriesNumber=1.5",
        "SeriesNumber=?",
    ] {
        bad(&s, &format!("{series}?{q}"), "");
    }
    bad(&s, &format!("{instances}?InstanceNumber=1?"), "");
    bad(&s, &format!("{instances}?InstanceNumber=one"), "");
    // Paging, fuzzymatching, includefield, orderby.
    for q in [
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "offset=-1",
        "offset=x",
        "fuzzymatching=yes",
        "fuzzymatching=1",
        "includefield=all,PatientAge",
        "includefield=PatientAge&includefield=all",
        "includefield=NoSuchKeyword",
        "orderby=NoSuchKeyword",
    ] {
        bad(&s, &format!("/studies?{q}"), "");
    }
    // The body is the error JSON.
    let r = qido(&s, "/studies?foo=bar");
    assert_eq!(r.json["code"], "bad-request", "{}", r.text);
    // The same key twice, once as a keyword and once as a tag.
    bad(&s, "/studies?00100020=A&00100020=B", "00100020");
    bad(&s, "/studies?PatientID=A&00100020=B", "00100020");
}

#[test]
fn unknown_studies_and_series_in_the_path_are_404() {
    let s = Server::start(&[]);
    let r = root();
    let (x, y) = (format!("{r}.1"), format!("{r}.2"));
    store(
        &s,
        &[
            simple(&x, "PID-X", "DOE^JOHN", "20200101"),
            simple(&y, "PID-Y", "ROE^JANE", "20200102"),
        ],
    );
    let none = format!("{r}.9");
    for pq in [
        format!("/studies/{none}/series"),
        format!("/studies/{none}/instances"),
        format!("/studies/{none}/series/{x}.1/instances"),
        format!("/studies/{x}/series/{x}.9/instances"),
        // A series of another study.
        format!("/studies/{x}/series/{y}.1/instances"),
    ] {
        let r = qido(&s, &pq);
        assert_eq!(r.status, 404, "{pq}: {}", r.text);
    }
    expect(
        &s,
        &format!("/studies/{x}/series"),
        SERIES,
        &[format!("{x}.1")],
    );
    expect(
        &s,
        &format!("/studies/{y}/series/{y}.1/instances"),
        SOP,
        &[format!("{y}.1.1")],
    );
}

#[test]
fn searching_needs_credentials() {
    let s = Server::start(&[]);
    let x = format!("{}.1", root());
    store(&s, &[simple(&x, "PID-X", "DOE^JOHN", "20200101")]);
    for pq in [
        "/studies".to_owned(),
        "/series".to_owned(),
        "/instances".to_owned(),
        format!("/studies/{x}/series"),
        format!("/studies/{x}/instances"),
        format!("/studies/{x}/series/{x}.1/instances"),
    ] {
        let r = qido_with(&s, None, &pq, Some(JSON));
        assert_eq!(r.status, 401, "{pq}: {}", r.text);
        assert!(!r.text.contains(&x), "{pq}: {}", r.text);
        let r = send(
            client()
                .get(format!("{}{pq}", s.dicomweb()))
                .header("Authorization", "Bearer not-a-token"),
        );
        assert_eq!(r.status, 401, "{pq} with a bad token: {}", r.text);
    }
    expect(&s, "/studies", STUDY, &[&x]);
}

// ---------------------------------------------------------------------------------------------
// URLs and scoping
// ---------------------------------------------------------------------------------------------

#[test]
fn retrieve_urls_and_warning_use_the_public_url_never_host() {
    let public = "https://pacs.example.org/base";
    let s = Server::start(&["--public-url", public]);
    let r = root();
    let (x, y) = (format!("{r}.1"), format!("{r}.2"));
    store(
        &s,
        &[
            simple(&x, "PID-X", "DOE^JOHN", "20200102"),
            simple(&y, "PID-Y", "ROE^JANE", "20200101"),
        ],
    );
    let get = |pq: &str| {
        let r = send(
            s.client()
                .get(format!("{}{pq}", s.dicomweb()))
                .header("Accept", JSON)
                .header("Host", "evil.example:666")
                .header("X-Forwarded-Host", "evil.example")
                .header("X-Forwarded-Proto", "http")
                .header("Forwarded", "host=evil.example;proto=http"),
        );
        assert_eq!(r.status, 200, "{pq}: {}", r.text);
        assert!(!r.text.contains("evil"), "{pq}: {}", r.text);
        r
    };
    let r = get("/studies?limit=1");
    assert_eq!(
        first(&r.array()[0], "00081190"),
        Some(format!("{public}/dicom-web/studies/{x}"))
    );
    assert_warning(&r, public, 1);
    assert!(!r.header("warning").unwrap().contains("evil"));
    let r = get(&format!("/studies/{x}/series"));
    assert_eq!(
        first(&r.array()[0], "00081190"),
        Some(format!("{public}/dicom-web/studies/{x}/series/{x}.1"))
    );
    let want = format!("{public}/dicom-web/studies/{x}/series/{x}.1/instances/{x}.1.1");
    for pq in [
        format!("/studies/{x}/series/{x}.1/instances"),
        format!("/studies/{x}/instances"),
        format!("/instances?StudyInstanceUID={x}"),
    ] {
        let r = get(&pq);
        assert_eq!(first(&r.array()[0], "00081190"), Some(want.clone()), "{pq}");
    }
    let r = get(&format!("/series?StudyInstanceUID={y}"));
    assert_eq!(
        first(&r.array()[0], "00081190"),
        Some(format!("{public}/dicom-web/studies/{y}/series/{y}.1"))
    );
}

#[test]
fn patients_search_and_count_only_their_own_studies() {
    let s = Server::start(&[]);
    let (pat, _) = s.new_patient("pat@example.org", PASSWORD);
    let (other, _) = s.new_patient("other@example.org", PASSWORD);
    let rt = root();
    let [h1, h2, h3, up, oq]: [String; 5] = std::array::from_fn(|i| format!("{rt}.{}", i + 1));
    // The hospital stores three studies; one is delivered to the patient.
    store(
        &s,
        &[
            simple(&h1, "PID-H1", "HOSP^ONE", "20230105"),
            simple(&h2, "PID-H2", "HOSP^TWO", "20230104"),
            simple(&h3, "PID-P", "PAT^PAT", "20230103"),
        ],
    );
    s.deliver(&h3, "pat@example.org", &pat);
    // Each patient uploads one study.
    store_as(&s, &pat, &[simple(&up, "PID-P", "PAT^PAT", "20230102")]);
    store_as(&s, &other, &[simple(&oq, "PID-Q", "OTHER^Q", "20230101")]);

    assert_eq!(
        found_as(&s, &pat, "/studies", STUDY),
        [h3.clone(), up.clone()]
    );
    let r = qido_with(&s, Some(&pat), "/studies?limit=1", Some(JSON));
    assert_eq!(column(r.array(), STUDY), [h3.as_str()]);
    assert_warning(&r, &s.url, 1);
    let r = qido_with(&s, Some(&pat), "/studies?limit=1&offset=1", Some(JSON));
    assert_eq!(column(r.array(), STUDY), [up.as_str()]);
    assert_no_warning(&r);
    assert_eq!(
        found_as(&s, &pat, "/series", SERIES),
        [format!("{h3}.1"), format!("{up}.1")]
    );
    assert_eq!(
        found_as(&s, &pat, "/instances", SOP),
        [format!("{h3}.1.1"), format!("{up}.1.1")]
    );
    let r = qido_with(&s, Some(&pat), "/series?limit=1", Some(JSON));
    assert_warning(&r, &s.url, 1);
    // Others' studies match nothing, whatever the keys.
    for pq in [
        "/series?PatientID=PID-Q".to_owned(),
        "/studies?PatientID=PID-H1".to_owned(),
        "/instances?PatientName=OTHER*".to_owned(),
        format!("/studies?StudyInstanceUID={h1},{oq}"),
        format!("/series?StudyInstanceUID={h2}"),
    ] {
        let r = qido_with(&s, Some(&pat), &pq, Some(JSON));
        assert_eq!(r.status, 200, "{pq}: {}", r.text);
        assert_eq!(r.json, json!([]), "{pq}: {}", r.text);
    }
    // Not visible in the path: 404, like a study that does not exist.
    let none = format!("{rt}.9");
    let missing = qido_with(
        &s,
        Some(&pat),
        &format!("/studies/{none}/series"),
        Some(JSON),
    );
    assert_eq!(missing.status, 404, "{}", missing.text);
    for study in [&h1, &oq] {
        for (path, missing_path) in [
            (
                format!("/studies/{study}/series"),
                format!("/studies/{none}/series"),
            ),
            (
                format!("/studies/{study}/instances"),
                format!("/studies/{none}/instances"),
            ),
            (
                format!("/studies/{study}/series/{study}.1/instances"),
                format!("/studies/{none}/series/{study}.1/instances"),
            ),
        ] {
            let r = qido_with(&s, Some(&pat), &path, Some(JSON));
            assert_eq!(r.status, 404, "{path}: {}", r.text);
            let m = qido_with(&s, Some(&pat), &missing_path, Some(JSON));
            assert_eq!(m.status, 404, "{missing_path}: {}", m.text);
            assert_eq!(
                r.text.replace(study.as_str(), "UID"),
                m.text
                    .replace(none.as_str(), "UID")
                    .replace(study.as_str(), "UID"),
                "a hidden study answers like a missing one"
            );
        }
    }
    expect_as(
        &s,
        &pat,
        &format!("/studies/{h3}/series"),
        SERIES,
        &[format!("{h3}.1")],
    );
    expect_as(
        &s,
        &pat,
        &format!("/studies/{up}/instances"),
        SOP,
        &[format!("{up}.1.1")],
    );
    // The other patient sees only their upload.
    assert_eq!(found_as(&s, &other, "/studies", STUDY), [oq.as_str()]);
    let r = qido_with(&s, Some(&other), "/studies?limit=1", Some(JSON));
    assert_no_warning(&r);
    assert_eq!(
        found_as(&s, &other, "/series?PatientID=PID-P", SERIES),
        Vec::<String>::new()
    );
    // Staff see everything.
    assert_eq!(
        found(&s, "/studies", STUDY),
        [h1.clone(), h2.clone(), h3.clone(), up.clone(), oq.clone()]
    );
    let r = qido(&s, "/studies?limit=1");
    assert_warning(&r, &s.url, 4);
}

fn expect_as<S: AsRef<str>>(s: &Server, token: &str, pq: &str, tag: &str, want: &[S]) {
    let want: Vec<&str> = want.iter().map(AsRef::as_ref).collect();
    assert_eq!(found_as(s, token, pq, tag), want, "GET {pq}");
}

// ---------------------------------------------------------------------------------------------
// The index follows changes
// ---------------------------------------------------------------------------------------------

#[test]
fn searches_follow_replaces_moves_and_deletes() {
    let s = Server::start(&[]);
    let r = root();
    let (a, b) = (format!("{r}.1"), format!("{r}.2"));
    store(&s, &[simple(&a, "PID-A", "ALPHA^ANN", "20200101")]);
    expect(&s, "/studies?PatientName=ALPHA*", STUDY, &[&a]);
    // Re-storing the instance with other patient data replaces what the index holds.
    store(&s, &[simple(&a, "PID-A", "BETA^BOB", "20200101")]);
    expect_none(&s, "/studies?PatientName=ALPHA*");
    expect(&s, "/studies?PatientName=BETA*", STUDY, &[&a]);
    // Moving the instance (same SOP Instance UID) to another study empties the first one.
    let moved = simple(&b, "PID-B", "GAMMA^GUS", "20210101").sop(&format!("{a}.1.1"));
    store(&s, &[moved]);
    expect_none(&s, &format!("/studies?StudyInstanceUID={a}"));
    expect(&s, "/studies?PatientName=GAMMA*", STUDY, &[&b]);
    expect(&s, "/studies?ModalitiesInStudy=CT", STUDY, &[&b]);
    // A patient's upload disappears from searches when the account (and its uploads) is deleted.
    let email = format!("del-{r}@example.org");
    let (token, _) = s.new_patient(&email, PASSWORD);
    let c = format!("{r}.3");
    store_as(&s, &token, &[simple(&c, "PID-C", "DELTA^DOT", "20220101")]);
    expect(&s, "/studies?PatientName=DELTA*", STUDY, &[&c]);
    let resp = send(
        authed_client(&token)
            .delete(format!("{}/api/me", s.url))
            .json(&json!({"password": PASSWORD})),
    );
    assert_eq!(resp.status, 204, "{}", resp.text);
    expect_none(&s, "/studies?PatientName=DELTA*");
    expect_none(&s, &format!("/series?StudyInstanceUID={c}"));
    expect(&s, "/studies", STUDY, &[&b]);
}
