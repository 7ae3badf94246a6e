//! WADO-RS (PS3.18 10.4) against the real server over HTTP: retrieve of studies, series and
//! instances (multipart, single part, transfer-syntax rules, 206/406), metadata (JSON, XML,
//! BulkDataURI bases, ETag, gzip), bulk data (Range), pixel data, frames, and access refusals,
//! as specified in the WADO-RS behaviour contract.
//!
//! Every test starts its own server and stores the fixtures it needs through STOW-RS. Pixel
//! values are compared with references decoded outside the server: the lossless fixtures'
//! pixels are pinned to the output of dcmtk / gdcm (see [`DCMTK_PIXELS`]).

mod common;

use std::io::Read;

use common::*;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use serde_json::{Value, json};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.70";
const JPEG_LS: &str = "1.2.840.10008.1.2.4.80";
const J2K: &str = "1.2.840.10008.1.2.4.90";
const RLE: &str = "1.2.840.10008.1.2.5";

const CT_STUDY: &str = "1.2.826.0.1.3680043.10.1435.1.1";
const CT_SERIES: &str = "1.2.826.0.1.3680043.10.1435.1.1.1";
const CT_LOSSY_SERIES: &str = "1.2.826.0.1.3680043.10.1435.1.1.2";
const MF_STUDY: &str = "1.2.826.0.1.3680043.10.1435.2.1";
const MF_SERIES: &str = "1.2.826.0.1.3680043.10.1435.2.1.1";

const DICOM_MULTIPART: &str = "multipart/related; type=\"application/dicom\"";
const OCTET_MULTIPART: &str = "multipart/related; type=\"application/octet-stream\"";
const PASSWORD: &str = "Tulip-Harbour-Lantern-93";

/// blake3 of the native little-endian pixel data of fixtures as decoded by dcmtk 3.6.7
/// (`dcmdjpeg`, `dcmdjpls`, `dcmdrle`, `dcmconv +te`) and gdcm 3.0 (`gdcmconv --raw`, for J2K):
/// decoders independent of the ones in the server. No compressed fixture shares its pixels with
/// an Explicit VR LE one (each CT fixture is another slice), so these are the references; for the
/// CT fixtures they equal `ct_stored_int16(64, N)` of `make_fixtures.py` (checked when pinning).
const DCMTK_PIXELS: &[(&str, &str)] = &[
    (
        "ct_implicit.dcm",
        "1b4026b01788735623392a3a6b810e21d15498913d7e99cbd38356c0bde8c224",
    ),
    (
        "ct_bigendian.dcm",
        "75029a63fe55d79a439d4f6b9df1a060560711b7a13de838e60dedf22027be3f",
    ),
    (
        "ct_deflate.dcm",
        "82d2eb143eb2245350f80a37f05c4984b7ce3ef3108c019119e15ec33f6ac768",
    ),
    (
        "ct_jpeg_lossless.dcm",
        "4049325c10afb49db4c371a90b520ffce02d749b98ce603b929b92b262acc2c0",
    ),
    (
        "ct_jpegls.dcm",
        "9eea2313863a40bcc7635a2a47dd68e8c0ec287b6fd70e8ee79254597906970f",
    ),
    (
        "ct_j2k.dcm",
        "1edf9447ffd3bfc1765568fddb9101ce86ecdbd0f9900760f482c2993774cf04",
    ),
    (
        "ct_rle.dcm",
        "52d1813b27106e3d47be4fab8b3d6cff8ab90c035364c66c0556be9f57dbceef",
    ),
    (
        "mf_rle_bot.dcm",
        "efb128690660fd1f70fbcd340f682dbfbb36218aee42d02ed2c57548046f111a",
    ),
    (
        "mf_rle_nobot.dcm",
        "05c317aeacf0c41fdd749928b18a78ba26454354e8769c94bd66f0f783e0abca",
    ),
];

// ---------------------------------------------------------------------------------------------
// HTTP and multipart
// ---------------------------------------------------------------------------------------------

/// A response read whole, body as bytes.
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    }

    fn content_type(&self) -> String {
        self.header("content-type").unwrap_or_default()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The parts of a `multipart/related` body (panics when it is not one).
    fn parts(&self) -> Vec<Part> {
        let ct = self.content_type();
        assert!(
            ct.starts_with("multipart/related"),
            "status {}, content type {ct:?}: {}",
            self.status,
            self.text().chars().take(300).collect::<String>()
        );
        parse_multipart(&ct, &self.body)
    }

    /// Status, content type and the start of the body, for assertion messages.
    fn summary(&self) -> String {
        format!(
            "{} {:?} {}",
            self.status,
            self.content_type(),
            String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
        )
    }
}

fn fetch(c: &reqwest::blocking::Client, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().expect("body").to_vec();
    Got {
        status,
        headers,
        body,
    }
}

/// GET `{dicomweb}{path}` as the admin.
fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> Got {
    fetch(&s.client(), &format!("{}{path}", s.dicomweb()), headers)
}

/// GET with one `Accept` value.
fn get_as(s: &Server, path: &str, accept: &str) -> Got {
    get(s, path, &[("Accept", accept)])
}

/// Percent-encodes a query parameter value (spaces as %20).
fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

struct Part {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("part without {name}: {:?}", self.headers))
    }
}

fn boundary_of(content_type: &str) -> String {
    content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| {
            let (n, v) = p.split_once('=')?;
            n.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no boundary in {content_type:?}"))
}

/// A strict `multipart/related` reader: the body starts with the first delimiter, every part has
/// a header block, and the close delimiter ends the body (optionally followed by CRLF).
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let delim = format!("--{}", boundary_of(content_type)).into_bytes();
    let next_delim = [b"\r\n".as_slice(), &delim].concat();
    assert!(
        body.starts_with(&delim),
        "body does not start with the boundary: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(100)])
    );
    let mut pos = delim.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if let Some(after) = rest.strip_prefix(b"--") {
            assert!(
                after.is_empty() || after == b"\r\n",
                "bytes after the close delimiter: {:?}",
                String::from_utf8_lossy(after)
            );
            return parts;
        }
        let rest = rest
            .strip_prefix(b"\r\n")
            .expect("CRLF after a boundary delimiter");
        let (head, content_at) = if rest.starts_with(b"\r\n") {
            ("", 2)
        } else {
            let end = memchr::memmem::find(rest, b"\r\n\r\n").expect("end of part headers");
            (
                std::str::from_utf8(&rest[..end]).expect("ASCII headers"),
                end + 4,
            )
        };
        let headers = head
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let content = &rest[content_at..];
        let end = memchr::memmem::find(content, &next_delim).expect("delimiter after a part");
        parts.push(Part {
            headers,
            body: content[..end].to_vec(),
        });
        pos = body.len() - content.len() + end + next_delim.len();
    }
}

// ---------------------------------------------------------------------------------------------
// DICOM helpers
// ---------------------------------------------------------------------------------------------

fn parse_part10(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(bytes)
        .unwrap_or_else(|e| panic!("not a Part 10 file ({e})"))
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .unwrap_or_else(|_| panic!("no {tag}"))
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_owned()
}

fn ts_of(obj: &DefaultDicomObject) -> String {
    obj.meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned()
}

/// The value bytes of native Pixel Data (little endian).
fn native_pixels(obj: &InMemDicomObject) -> Vec<u8> {
    obj.element(tags::PIXEL_DATA)
        .expect("pixel data")
        .value()
        .to_bytes()
        .expect("native pixel data")
        .into_owned()
}

/// Samples of a decoded image as little-endian bytes.
fn decoded_bytes(d: &dicom_pixeldata::DecodedPixelData<'_>) -> Vec<u8> {
    if d.bits_allocated() == 16 {
        d.data_ow().iter().flat_map(|v| v.to_le_bytes()).collect()
    } else {
        d.data().to_vec()
    }
}

fn decode_all(obj: &DefaultDicomObject) -> Vec<u8> {
    decoded_bytes(&obj.decode_pixel_data().expect("decode"))
}

/// The reference pixels of a fixture (decoded in this process with dicom-pixeldata, and for the
/// fixtures in [`DCMTK_PIXELS`] checked against dcmtk's decode).
fn reference_pixels(name: &str) -> Vec<u8> {
    let obj = dicom_object::open_file(fixture(name)).unwrap();
    let bytes = decode_all(&obj);
    if let Some((_, want)) = DCMTK_PIXELS.iter().find(|(n, _)| *n == name) {
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            *want,
            "{name}: the reference decode disagrees with dcmtk"
        );
    }
    bytes
}

/// One frame of a fixture decoded by dicom-pixeldata.
fn reference_frame(name: &str, n: u32) -> Vec<u8> {
    let obj = dicom_object::open_file(fixture(name)).unwrap();
    decoded_bytes(&obj.decode_pixel_data_frame(n - 1).expect("decode frame"))
}

/// The stored compressed bitstream of each frame of an encapsulated fixture: one fragment per
/// frame, or all fragments when the instance has one frame.
fn stored_frames(name: &str) -> Vec<Vec<u8>> {
    let obj = dicom_object::open_file(fixture(name)).unwrap();
    let frames: usize = obj
        .element(tags::NUMBER_OF_FRAMES)
        .map(|e| e.to_int::<u32>().unwrap() as usize)
        .unwrap_or(1);
    let fragments = obj
        .element(tags::PIXEL_DATA)
        .unwrap()
        .value()
        .fragments()
        .expect("encapsulated")
        .to_vec();
    if fragments.len() == frames {
        fragments
    } else {
        assert_eq!(frames, 1, "{name}: cannot map fragments to frames");
        vec![fragments.concat()]
    }
}

/// The fixture's bytes with the 128-byte preamble zeroed, as the server stores it.
fn as_stored(name: &str) -> Vec<u8> {
    let mut b = fixture_bytes(name);
    b[..128].fill(0);
    b
}

struct Uids {
    study: String,
    series: String,
    sop: String,
    ts: String,
}

fn uids(bytes: &[u8]) -> Uids {
    let obj = parse_part10(bytes);
    Uids {
        study: text(&obj, tags::STUDY_INSTANCE_UID),
        series: text(&obj, tags::SERIES_INSTANCE_UID),
        sop: text(&obj, tags::SOP_INSTANCE_UID),
        ts: ts_of(&obj),
    }
}

fn fx(name: &str) -> Uids {
    uids(&fixture_bytes(name))
}

fn inst_path(u: &Uids) -> String {
    format!(
        "/studies/{}/series/{}/instances/{}",
        u.study, u.series, u.sop
    )
}

fn series_path(u: &Uids) -> String {
    format!("/studies/{}/series/{}", u.study, u.series)
}

fn store(s: &Server, files: Vec<Vec<u8>>) {
    let (status, _, body) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&files),
    );
    assert_eq!(status, 200, "STOW: {body}");
}

fn store_fixtures(s: &Server, names: &[&str]) {
    store(s, names.iter().map(|n| fixture_bytes(n)).collect());
}

fn write_part10(obj: InMemDicomObject, ts: &str) -> Vec<u8> {
    let class = text(&obj, tags::SOP_CLASS_UID);
    let sop = text(&obj, tags::SOP_INSTANCE_UID);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(class)
                .media_storage_sop_instance_uid(sop),
        )
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

/// Bulk values of [`bulky_instance`].
fn top_bulk() -> Vec<u8> {
    (0..2000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn nested_bulk() -> Vec<u8> {
    (0..1500u32).map(|i| (i * 13 % 241) as u8).collect()
}

/// A 64x64 CT instance with, besides Pixel Data, an EncapsulatedDocument (0042,0011) of 2000
/// bytes, one of 1500 bytes inside item 0 of ReferencedImageSequence (0008,1140), and a 100-byte
/// private OB value (inline, under the 1 KiB bulk threshold).
fn bulky_instance(study: &str, sop: &str) -> Vec<u8> {
    let base = make_instance(study, &format!("{study}.1"), sop, "LBX-BULK", 64 * 64 * 2);
    let mut obj = parse_part10(&base).into_inner();
    obj.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT,
        VR::OB,
        PrimitiveValue::from(top_bulk()),
    ));
    let item = InMemDicomObject::from_element_iter([DataElement::new(
        tags::ENCAPSULATED_DOCUMENT,
        VR::OB,
        PrimitiveValue::from(nested_bulk()),
    )]);
    obj.put(DataElement::new(
        tags::REFERENCED_IMAGE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ));
    obj.put(DataElement::new(
        Tag(0x0009, 0x0010),
        VR::LO,
        PrimitiveValue::from("LIGHTBOX TEST"),
    ));
    obj.put(DataElement::new(
        Tag(0x0009, 0x1010),
        VR::OB,
        PrimitiveValue::from(vec![0xA5u8; 100]),
    ));
    write_part10(obj, EXPLICIT_LE)
}

/// A Basic Text SR instance: no pixel data.
fn text_sr(study: &str, sop: &str) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    for (tag, vr, v) in [
        (tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.88.11"),
        (tags::SOP_INSTANCE_UID, VR::UI, sop),
        (tags::STUDY_INSTANCE_UID, VR::UI, study),
        (tags::SERIES_INSTANCE_UID, VR::UI, &format!("{study}.1")),
        (tags::PATIENT_ID, VR::LO, "LBX-SR"),
        (tags::PATIENT_NAME, VR::PN, "Report^Only"),
        (tags::MODALITY, VR::CS, "SR"),
        (tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        (tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        (tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
    ] {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    }
    write_part10(obj, EXPLICIT_LE)
}

/// Every BulkDataURI in a DICOM JSON value.
fn bulk_uris(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(u) = m.get("BulkDataURI").and_then(Value::as_str) {
                out.push(u.to_owned());
            }
            for x in m.values() {
                bulk_uris(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| bulk_uris(x, out)),
        _ => {}
    }
}

/// Attribute keys of group 0002 or group lengths (gggg0000), at any depth.
fn forbidden_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let is_tag = k.len() == 8 && k.bytes().all(|b| b.is_ascii_hexdigit());
                if is_tag && (k.starts_with("0002") || k.ends_with("0000")) {
                    out.push(k.clone());
                }
                forbidden_keys(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| forbidden_keys(x, out)),
        _ => {}
    }
}

fn sop_of(item: &Value) -> String {
    item["00080018"]["Value"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no SOP Instance UID in {item}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Retrieve DICOM instances
// ---------------------------------------------------------------------------------------------

#[test]
fn retrieve_study_series_and_instance_as_multipart_in_series_then_instance_order() {
    let s = Server::start(&[]);
    // Stored out of order. SeriesNumber 1 holds InstanceNumbers 1..8, SeriesNumber 2 the JPEG.
    store_fixtures(
        &s,
        &[
            "ct_jpeg_baseline.dcm",
            "ct_rle.dcm",
            "ct_explicit.dcm",
            "ct_j2k.dcm",
            "ct_implicit.dcm",
            "ct_jpegls.dcm",
            "ct_deflate.dcm",
            "ct_jpeg_lossless.dcm",
            "ct_bigendian.dcm",
            "mf_native.dcm",
        ],
    );
    let in_order = [
        "ct_implicit.dcm",
        "ct_explicit.dcm",
        "ct_bigendian.dcm",
        "ct_deflate.dcm",
        "ct_jpeg_lossless.dcm",
        "ct_jpegls.dcm",
        "ct_j2k.dcm",
        "ct_rle.dcm",
        "ct_jpeg_baseline.dcm",
    ];
    let check = |r: &Got, names: &[&str]| {
        assert_eq!(r.status, 200, "{}", r.summary());
        let ct = r.content_type();
        assert!(
            ct.starts_with("multipart/related; type=\"application/dicom\"; boundary="),
            "{ct}"
        );
        let parts = r.parts();
        let locations: Vec<&str> = parts.iter().map(|p| p.header("Content-Location")).collect();
        let want: Vec<String> = names
            .iter()
            .map(|n| format!("{}{}", s.dicomweb(), inst_path(&fx(n))))
            .collect();
        assert_eq!(locations, want, "part order / Content-Location");
        for (p, name) in parts.iter().zip(names) {
            let ts = if *name == "ct_jpeg_baseline.dcm" {
                JPEG_BASELINE
            } else {
                EXPLICIT_LE
            };
            assert_eq!(
                p.header("Content-Type"),
                format!("application/dicom; transfer-syntax={ts}"),
                "{name}"
            );
            let obj = parse_part10(&p.body);
            assert_eq!(ts_of(&obj), ts, "{name}");
            assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), fx(name).sop, "{name}");
            if matches!(*name, "ct_explicit.dcm" | "ct_jpeg_baseline.dcm") {
                assert!(p.body == as_stored(name), "{name}: not the stored bytes");
            }
        }
    };
    check(
        &get_as(&s, &format!("/studies/{CT_STUDY}"), DICOM_MULTIPART),
        &in_order,
    );
    check(
        &get_as(
            &s,
            &format!("/studies/{CT_STUDY}/series/{CT_SERIES}"),
            DICOM_MULTIPART,
        ),
        &in_order[..8],
    );
    check(
        &get_as(
            &s,
            &format!("/studies/{CT_STUDY}/series/{CT_LOSSY_SERIES}"),
            DICOM_MULTIPART,
        ),
        &in_order[8..],
    );
    check(
        &get_as(&s, &inst_path(&fx("ct_explicit.dcm")), DICOM_MULTIPART),
        &["ct_explicit.dcm"],
    );

    // Unknown study; a series not in that study; an instance not in that series.
    let sop = fx("ct_explicit.dcm").sop;
    for path in [
        format!("/studies/{CT_STUDY}.9"),
        format!("/studies/{CT_STUDY}/series/{CT_SERIES}.9"),
        format!("/studies/{MF_STUDY}/series/{CT_SERIES}"),
        format!("/studies/{CT_STUDY}/series/{MF_SERIES}"),
        format!("/studies/{CT_STUDY}/series/{CT_LOSSY_SERIES}/instances/{sop}"),
        format!("/studies/{MF_STUDY}/series/{MF_SERIES}/instances/{sop}"),
    ] {
        let r = get_as(&s, &path, DICOM_MULTIPART);
        assert_eq!(r.status, 404, "{path}: {}", r.summary());
        assert_eq!(r.json()["code"], "not-found", "{path}");
    }
}

#[test]
fn single_part_and_media_type_negotiation() {
    let s = Server::start(&[]);
    store_fixtures(&s, &["ct_explicit.dcm", "ct_implicit.dcm"]);
    let path = inst_path(&fx("ct_explicit.dcm"));
    let url = format!("{}{path}", s.dicomweb());
    let stored = as_stored("ct_explicit.dcm");
    let single = |r: Got, what: &str| {
        assert_eq!(r.status, 200, "{what}: {}", r.summary());
        assert_eq!(
            r.content_type(),
            format!("application/dicom; transfer-syntax={EXPLICIT_LE}"),
            "{what}"
        );
        assert_eq!(
            r.header("content-location").as_deref(),
            Some(url.as_str()),
            "{what}"
        );
        assert!(r.body == stored, "{what}: body is not the stored file");
    };
    let multi = |r: Got, what: &str| {
        assert_eq!(r.status, 200, "{what}: {}", r.summary());
        assert!(
            r.content_type().starts_with(DICOM_MULTIPART),
            "{what}: {}",
            r.content_type()
        );
        let parts = r.parts();
        assert_eq!(parts.len(), 1, "{what}");
        assert_eq!(parts[0].header("Content-Location"), url, "{what}");
        assert!(
            parts[0].body == stored,
            "{what}: part is not the stored file"
        );
    };
    single(get_as(&s, &path, "application/dicom"), "application/dicom");
    single(
        get_as(
            &s,
            &path,
            &format!("application/dicom; transfer-syntax={EXPLICIT_LE}"),
        ),
        "application/dicom with transfer-syntax",
    );
    multi(get_as(&s, &path, "*/*"), "*/*");
    multi(get(&s, &path, &[]), "no Accept");
    multi(get_as(&s, &path, DICOM_MULTIPART), "quoted type");
    multi(
        get_as(&s, &path, "multipart/related; type=application/dicom"),
        "unquoted type",
    );
    // q values.
    multi(
        get_as(
            &s,
            &path,
            "application/dicom;q=0.1, multipart/related; type=\"application/dicom\";q=0.9",
        ),
        "multipart preferred by q",
    );
    single(
        get_as(
            &s,
            &path,
            "application/dicom;q=0.9, multipart/related; type=\"application/dicom\";q=0.1",
        ),
        "single part preferred by q",
    );
    single(
        get_as(
            &s,
            &path,
            "multipart/related; type=\"application/dicom\";q=0, application/dicom;q=0.2",
        ),
        "multipart excluded by q=0",
    );
    // The accept query parameter beats the header.
    multi(
        get(
            &s,
            &format!("{path}?accept={}", enc(DICOM_MULTIPART)),
            &[("Accept", "application/dicom")],
        ),
        "accept parameter multipart",
    );
    single(
        get(
            &s,
            &format!("{path}?accept={}", enc("application/dicom")),
            &[("Accept", DICOM_MULTIPART)],
        ),
        "accept parameter single part",
    );

    // Single part only for one instance.
    for p in [
        format!("/studies/{CT_STUDY}"),
        format!("/studies/{CT_STUDY}/series/{CT_SERIES}"),
    ] {
        let r = get_as(&s, &p, "application/dicom");
        assert_eq!(r.status, 406, "{p}: {}", r.summary());
        assert_eq!(r.json()["code"], "not-acceptable");
    }
    // A single-part implicit VR instance comes out as Explicit VR LE.
    let r = get_as(&s, &inst_path(&fx("ct_implicit.dcm")), "application/dicom");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        r.content_type(),
        format!("application/dicom; transfer-syntax={EXPLICIT_LE}")
    );
    assert_eq!(ts_of(&parse_part10(&r.body)), EXPLICIT_LE);

    // DICOM and rendered types mixed: 400. Unknown query parameter: 400.
    for (p, accept) in [
        (
            path.clone(),
            "multipart/related; type=\"application/dicom\", image/jpeg",
        ),
        (
            format!("/studies/{CT_STUDY}"),
            "multipart/related; type=\"application/dicom\", image/jpeg",
        ),
        (path.clone(), "application/dicom, image/png"),
    ] {
        let r = get_as(&s, &p, accept);
        assert_eq!(r.status, 400, "{p} {accept}: {}", r.summary());
        assert_eq!(r.json()["code"], "bad-request");
    }
    let r = get(&s, &format!("{path}?foo=bar"), &[]);
    assert_eq!(r.status, 400, "unknown parameter: {}", r.summary());
}

#[test]
fn native_syntaxes_come_out_as_explicit_le_deflate_stays_with_star() {
    let s = Server::start(&[]);
    let cases = [
        ("ct_implicit.dcm", IMPLICIT_LE, EXPLICIT_LE),
        ("ct_bigendian.dcm", BIG_ENDIAN, EXPLICIT_LE),
        ("ct_deflate.dcm", DEFLATED, DEFLATED),
    ];
    store_fixtures(&s, &cases.map(|c| c.0));
    for (name, stored, with_star) in cases {
        let u = fx(name);
        assert_eq!(u.ts, stored);
        let want = reference_pixels(name);
        assert_eq!(want.len(), 8192);
        for accept in [
            DICOM_MULTIPART.to_owned(),
            format!("{DICOM_MULTIPART}; transfer-syntax={EXPLICIT_LE}"),
            format!("{DICOM_MULTIPART}; transfer-syntax=*"),
            "multipart/related; type=application/dicom; transfer-syntax=*".to_owned(),
        ] {
            let r = get_as(&s, &inst_path(&u), &accept);
            assert_eq!(r.status, 200, "{name} {accept}: {}", r.summary());
            let parts = r.parts();
            assert_eq!(parts.len(), 1);
            let ts = if accept.ends_with('*') {
                with_star
            } else {
                EXPLICIT_LE
            };
            assert_eq!(
                parts[0].header("Content-Type"),
                format!("application/dicom; transfer-syntax={ts}"),
                "{name} {accept}"
            );
            let obj = parse_part10(&parts[0].body);
            assert_eq!(ts_of(&obj), ts, "{name} {accept}");
            assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), u.sop);
            assert_eq!(text(&obj, tags::PATIENT_NAME), "LIGHTBOX^CT PHANTOM");
            assert_eq!(
                obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(),
                64
            );
            assert!(
                native_pixels(&obj) == want,
                "{name} {accept}: pixels differ from the reference"
            );
            if ts == DEFLATED {
                assert!(parts[0].body == as_stored(name), "deflate not as stored");
            }
        }
    }
}

#[test]
fn lossless_compressed_syntaxes_are_decompressed_and_star_keeps_them() {
    let s = Server::start(&[]);
    let cases = [
        ("ct_jpeg_lossless.dcm", JPEG_LOSSLESS),
        ("ct_jpegls.dcm", JPEG_LS),
        ("ct_j2k.dcm", J2K),
        ("ct_rle.dcm", RLE),
    ];
    store_fixtures(&s, &cases.map(|c| c.0));
    for (name, stored) in cases {
        let u = fx(name);
        assert_eq!(u.ts, stored);
        let want = reference_pixels(name);
        let path = inst_path(&u);
        for accept in [
            DICOM_MULTIPART.to_owned(),
            format!("{DICOM_MULTIPART}; transfer-syntax={EXPLICIT_LE}"),
            format!("application/dicom; transfer-syntax={EXPLICIT_LE}"),
            "application/dicom".to_owned(),
        ] {
            let r = get_as(&s, &path, &accept);
            assert_eq!(r.status, 200, "{name} {accept}: {}", r.summary());
            let ct = format!("application/dicom; transfer-syntax={EXPLICIT_LE}");
            let body = if accept.starts_with("multipart") {
                let mut parts = r.parts();
                assert_eq!(parts.len(), 1);
                assert_eq!(parts[0].header("Content-Type"), ct, "{name} {accept}");
                parts.remove(0).body
            } else {
                assert_eq!(r.content_type(), ct, "{name} {accept}");
                r.body
            };
            let obj = parse_part10(&body);
            assert_eq!(ts_of(&obj), EXPLICIT_LE, "{name} {accept}");
            assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), u.sop);
            assert_eq!(text(&obj, tags::PHOTOMETRIC_INTERPRETATION), "MONOCHROME2");
            assert!(
                native_pixels(&obj) == want,
                "{name} {accept}: pixels differ from the reference"
            );
        }
        let r = get_as(&s, &path, &format!("{DICOM_MULTIPART}; transfer-syntax=*"));
        assert_eq!(r.status, 200, "{name} *: {}", r.summary());
        let parts = r.parts();
        assert_eq!(
            parts[0].header("Content-Type"),
            format!("application/dicom; transfer-syntax={stored}")
        );
        assert!(parts[0].body == as_stored(name), "{name} *: not as stored");
    }
}

#[test]
fn lossy_data_stays_as_stored_unless_explicit_le_is_asked() {
    let s = Server::start(&[]);
    // The JPEG baseline CT without LossyImageCompression: a conversion must add it.
    let mut obj = dicom_object::open_file(fixture("ct_jpeg_baseline.dcm"))
        .unwrap()
        .into_inner();
    assert_eq!(text(&obj, tags::LOSSY_IMAGE_COMPRESSION), "01");
    obj.remove_element(tags::LOSSY_IMAGE_COMPRESSION);
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(format!("{CT_LOSSY_SERIES}.77")),
    ));
    let unmarked = write_part10(obj, JPEG_BASELINE);
    assert!(
        parse_part10(&unmarked)
            .element(tags::LOSSY_IMAGE_COMPRESSION)
            .is_err()
    );
    store(
        &s,
        vec![
            fixture_bytes("ct_jpeg_baseline.dcm"),
            fixture_bytes("rgb_jpeg.dcm"),
            unmarked.clone(),
        ],
    );
    let jpeg = fx("ct_jpeg_baseline.dcm");

    // No parameter: as stored.
    let r = get_as(&s, &inst_path(&jpeg), DICOM_MULTIPART);
    let parts = r.parts();
    assert_eq!(
        parts[0].header("Content-Type"),
        format!("application/dicom; transfer-syntax={JPEG_BASELINE}")
    );
    assert!(parts[0].body == as_stored("ct_jpeg_baseline.dcm"));
    let r = get_as(&s, &inst_path(&jpeg), "application/dicom");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        r.content_type(),
        format!("application/dicom; transfer-syntax={JPEG_BASELINE}")
    );
    assert!(r.body == as_stored("ct_jpeg_baseline.dcm"));

    // Explicit VR LE on request: decompressed and marked lossy.
    let want = reference_pixels("ct_jpeg_baseline.dcm");
    assert_eq!(want.len(), 64 * 64);
    for u in [jpeg, uids(&unmarked)] {
        let r = get_as(
            &s,
            &inst_path(&u),
            &format!("{DICOM_MULTIPART}; transfer-syntax={EXPLICIT_LE}"),
        );
        assert_eq!(r.status, 200, "{}: {}", u.sop, r.summary());
        let parts = r.parts();
        assert_eq!(
            parts[0].header("Content-Type"),
            format!("application/dicom; transfer-syntax={EXPLICIT_LE}")
        );
        let obj = parse_part10(&parts[0].body);
        assert_eq!(ts_of(&obj), EXPLICIT_LE, "{}", u.sop);
        assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), u.sop);
        assert_eq!(
            obj.element(tags::LOSSY_IMAGE_COMPRESSION)
                .map(|e| e.to_str().unwrap().trim().to_owned())
                .ok()
                .as_deref(),
            Some("01"),
            "{}: LossyImageCompression",
            u.sop
        );
        assert_eq!(text(&obj, tags::PHOTOMETRIC_INTERPRETATION), "MONOCHROME2");
        assert!(native_pixels(&obj) == want, "{}: pixels differ", u.sop);
    }

    // Colour JPEG (YBR_FULL_422) to Explicit VR LE: RGB, interleaved.
    let r = get_as(
        &s,
        &inst_path(&fx("rgb_jpeg.dcm")),
        &format!("{DICOM_MULTIPART}; transfer-syntax={EXPLICIT_LE}"),
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let obj = parse_part10(&r.parts()[0].body);
    assert_eq!(ts_of(&obj), EXPLICIT_LE);
    assert_eq!(text(&obj, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    let us = |t: Tag| obj.element(t).unwrap().to_int::<u16>().unwrap();
    assert_eq!(us(tags::PLANAR_CONFIGURATION), 0);
    assert_eq!(us(tags::SAMPLES_PER_PIXEL), 3);
    assert_eq!(text(&obj, tags::LOSSY_IMAGE_COMPRESSION), "01");
    let got = native_pixels(&obj);
    let original = native_pixels(&dicom_object::open_file(fixture("rgb_explicit.dcm")).unwrap());
    assert_eq!(got.len(), original.len());
    // Lossy, so not equal: but close to the RGB original (YBR left as is would be far off).
    let mean = got
        .iter()
        .zip(&original)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / got.len() as f64;
    assert!(mean < 8.0, "mean difference from the RGB original: {mean}");
}

#[test]
fn jpeg_ls_lossless_is_encoded_on_request() {
    let s = Server::start(&[]);
    let names = ["ct_explicit.dcm", "ct_j2k.dcm", "mf_native.dcm"];
    store_fixtures(&s, &names);
    for name in names {
        let u = fx(name);
        let r = get_as(
            &s,
            &inst_path(&u),
            &format!("{DICOM_MULTIPART}; transfer-syntax={JPEG_LS}"),
        );
        assert_eq!(r.status, 200, "{name}: {}", r.summary());
        let parts = r.parts();
        assert_eq!(
            parts[0].header("Content-Type"),
            format!("application/dicom; transfer-syntax={JPEG_LS}"),
            "{name}"
        );
        let obj = parse_part10(&parts[0].body);
        assert_eq!(ts_of(&obj), JPEG_LS, "{name}");
        assert!(
            obj.element(tags::PIXEL_DATA)
                .unwrap()
                .value()
                .fragments()
                .is_some(),
            "{name}: pixel data not encapsulated"
        );
        assert!(
            decode_all(&obj) == reference_pixels(name),
            "{name}: the JPEG-LS data does not decode to the reference"
        );
    }
}

#[test]
fn partial_content_when_some_instances_cannot_be_sent_and_406_when_none() {
    let s = Server::start(&[]);
    store_fixtures(
        &s,
        &["ct_explicit.dcm", "ct_implicit.dcm", "ct_jpeg_baseline.dcm"],
    );
    let jpeg_only = format!("{DICOM_MULTIPART}; transfer-syntax={JPEG_BASELINE}");
    let r = get_as(&s, &format!("/studies/{CT_STUDY}"), &jpeg_only);
    assert_eq!(r.status, 206, "{}", r.summary());
    let warning = r.header("warning").expect("Warning header");
    assert!(
        warning.starts_with(&format!(
            "299 {}: 2 of 3 instances were left out",
            s.dicomweb()
        )),
        "{warning}"
    );
    let parts = r.parts();
    assert_eq!(parts.len(), 1);
    assert_eq!(
        parts[0].header("Content-Location"),
        format!("{}{}", s.dicomweb(), inst_path(&fx("ct_jpeg_baseline.dcm")))
    );
    assert!(parts[0].body == as_stored("ct_jpeg_baseline.dcm"));

    // None deliverable: 406 naming the stored syntaxes.
    let r = get_as(
        &s,
        &format!("/studies/{CT_STUDY}/series/{CT_SERIES}"),
        &jpeg_only,
    );
    assert_eq!(r.status, 406, "{}", r.summary());
    let j = r.json();
    assert_eq!(j["code"], "not-acceptable");
    let message = j["message"].as_str().unwrap();
    let uids: Vec<&str> = message
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|t| t.trim_end_matches('.'))
        .collect();
    assert!(
        uids.contains(&IMPLICIT_LE) && uids.contains(&EXPLICIT_LE),
        "{message}"
    );

    // Implicit VR LE and big endian are never offered; JPEG baseline is not produced.
    let explicit = inst_path(&fx("ct_explicit.dcm"));
    for (path, ts) in [
        (format!("/studies/{CT_STUDY}"), IMPLICIT_LE),
        (explicit.clone(), IMPLICIT_LE),
        (format!("/studies/{CT_STUDY}"), BIG_ENDIAN),
        (explicit.clone(), BIG_ENDIAN),
        (explicit.clone(), JPEG_BASELINE),
    ] {
        let r = get_as(
            &s,
            &path,
            &format!("{DICOM_MULTIPART}; transfer-syntax={ts}"),
        );
        assert_eq!(r.status, 406, "{path} {ts}: {}", r.summary());
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

#[test]
fn metadata_json_for_study_series_and_instance() {
    let s = Server::start(&[]);
    let names = [
        "ct_explicit.dcm",
        "ct_implicit.dcm",
        "ct_j2k.dcm",
        "ct_jpeg_baseline.dcm",
    ];
    store_fixtures(&s, &names);
    let dw = s.dicomweb();
    let r = get(&s, &format!("/studies/{CT_STUDY}/metadata"), &[]);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.content_type(), "application/dicom+json");
    let vary = r.header("vary").unwrap_or_default().to_ascii_lowercase();
    assert!(
        vary.contains("accept-encoding") && vary.contains("accept"),
        "Vary: {vary}"
    );
    let study = r.json();
    let items = study.as_array().expect("array");
    assert_eq!(items.len(), 4);
    let mut sops: Vec<String> = items.iter().map(sop_of).collect();
    sops.sort();
    let mut want: Vec<String> = names.iter().map(|n| fx(n).sop).collect();
    want.sort();
    assert_eq!(sops, want);
    for item in items {
        let mut bad = Vec::new();
        forbidden_keys(item, &mut bad);
        assert!(bad.is_empty(), "group 0002 / group length keys: {bad:?}");
        let name = names.iter().find(|n| fx(n).sop == sop_of(item)).unwrap();
        let u = fx(name);
        assert_eq!(
            item["7FE00010"]["BulkDataURI"],
            format!("{dw}{}/bulkdata/7FE00010", inst_path(&u)),
            "{name}"
        );
        assert!(item["7FE00010"].get("InlineBinary").is_none());
        let vr = item["7FE00010"]["vr"].as_str().unwrap();
        match *name {
            "ct_explicit.dcm" => assert_eq!(vr, "OW"),
            "ct_j2k.dcm" | "ct_jpeg_baseline.dcm" => assert_eq!(vr, "OB"),
            _ => assert!(vr == "OW" || vr == "OB", "{vr}"),
        }
        assert_eq!(item["0020000D"], json!({"vr": "UI", "Value": [CT_STUDY]}));
        assert_eq!(
            item["00100010"],
            json!({"vr": "PN", "Value": [{"Alphabetic": "LIGHTBOX^CT PHANTOM"}]})
        );
        assert_eq!(item["00280010"], json!({"vr": "US", "Value": [64]}));
    }

    // Series and instance.
    let r = get(
        &s,
        &format!("/studies/{CT_STUDY}/series/{CT_SERIES}/metadata"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let mut sops: Vec<String> = r.json().as_array().unwrap().iter().map(sop_of).collect();
    sops.sort();
    let mut want: Vec<String> = names[..3].iter().map(|n| fx(n).sop).collect();
    want.sort();
    assert_eq!(sops, want);
    let r = get(
        &s,
        &format!("/studies/{CT_STUDY}/series/{CT_LOSSY_SERIES}/metadata"),
        &[],
    );
    let lossy = r.json();
    assert_eq!(lossy.as_array().unwrap().len(), 1);
    assert_eq!(sop_of(&lossy[0]), fx("ct_jpeg_baseline.dcm").sop);
    let inst = format!("{}/metadata", inst_path(&fx("ct_explicit.dcm")));
    let one = get(&s, &inst, &[]).json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(sop_of(&one[0]), fx("ct_explicit.dcm").sop);
    assert_eq!(
        one[0],
        *items
            .iter()
            .find(|i| sop_of(i) == fx("ct_explicit.dcm").sop)
            .unwrap()
    );

    // Media types.
    let r = get_as(&s, &inst, "application/json");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(r.json(), one);
    let r = get_as(&s, &inst, "*/*");
    assert_eq!(r.content_type(), "application/dicom+json");
    assert_eq!(r.json(), one);
    for accept in ["image/png", DICOM_MULTIPART, "application/octet-stream"] {
        let r = get_as(&s, &inst, accept);
        assert_eq!(r.status, 406, "{accept}: {}", r.summary());
    }
}

/// The BulkDataURI of ct_explicit's Pixel Data in its instance metadata, and the ETag.
fn pixel_uri(s: &Server, headers: &[(&str, &str)]) -> (String, String) {
    let r = get(
        s,
        &format!("{}/metadata", inst_path(&fx("ct_explicit.dcm"))),
        headers,
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let uri = r.json()[0]["7FE00010"]["BulkDataURI"]
        .as_str()
        .expect("BulkDataURI")
        .to_owned();
    (uri, r.header("etag").expect("ETag"))
}

/// The Content-Location of the one part of ct_explicit's retrieve.
fn retrieve_location(s: &Server, headers: &[(&str, &str)]) -> String {
    let mut h = headers.to_vec();
    h.push(("Accept", DICOM_MULTIPART));
    let r = get(s, &inst_path(&fx("ct_explicit.dcm")), &h);
    r.parts()[0].header("Content-Location").to_owned()
}

const FORWARDED: [(&str, &str); 2] = [
    ("X-Forwarded-Host", "proxy.example"),
    ("X-Forwarded-Proto", "https"),
];

#[test]
fn bulkdata_uris_default_to_the_listen_address_and_ignore_untrusted_headers() {
    let s = Server::start(&[]);
    store_fixtures(&s, &["ct_explicit.dcm"]);
    assert!(s.url.starts_with("http://127.0.0.1:"), "{}", s.url);
    let inst = inst_path(&fx("ct_explicit.dcm"));
    let want = format!("{}/dicom-web{inst}/bulkdata/7FE00010", s.url);
    let (plain, etag) = pixel_uri(&s, &[]);
    assert_eq!(plain, want);
    let forged = [
        FORWARDED[0],
        FORWARDED[1],
        ("Forwarded", "proto=https;host=proxy.example"),
        ("Host", "evil.example"),
    ];
    let (uri, etag2) = pixel_uri(&s, &forged);
    assert_eq!(uri, want, "forwarded headers from an untrusted peer");
    assert_eq!(etag2, etag);
    let (uri, _) = pixel_uri(&s, &[("Host", "evil.example:666")]);
    assert_eq!(uri, want, "Host header");
    assert_eq!(
        retrieve_location(&s, &forged),
        format!("{}/dicom-web{inst}", s.url)
    );
}

#[test]
fn bulkdata_uris_use_the_public_url() {
    let s = Server::start(&["--public-url", "https://pacs.example.org/base"]);
    store_fixtures(&s, &["ct_explicit.dcm"]);
    let inst = inst_path(&fx("ct_explicit.dcm"));
    let (uri, _) = pixel_uri(&s, &FORWARDED);
    assert_eq!(
        uri,
        format!("https://pacs.example.org/base/dicom-web{inst}/bulkdata/7FE00010")
    );
    assert_eq!(
        retrieve_location(&s, &[]),
        format!("https://pacs.example.org/base/dicom-web{inst}")
    );
}

#[test]
fn bulkdata_uris_follow_a_trusted_proxy() {
    let s = Server::start(&["--trusted-proxies", "127.0.0.1/32"]);
    store_fixtures(&s, &["ct_explicit.dcm"]);
    let inst = inst_path(&fx("ct_explicit.dcm"));
    let (uri, proxied_etag) = pixel_uri(&s, &FORWARDED);
    assert_eq!(
        uri,
        format!("https://proxy.example/dicom-web{inst}/bulkdata/7FE00010")
    );
    let (uri, direct_etag) = pixel_uri(&s, &[]);
    assert_eq!(uri, format!("{}/dicom-web{inst}/bulkdata/7FE00010", s.url));
    assert_ne!(
        proxied_etag, direct_etag,
        "the ETag depends on the base URL"
    );
    assert_eq!(
        retrieve_location(&s, &FORWARDED),
        format!("https://proxy.example/dicom-web{inst}")
    );
}

#[test]
fn bulkdata_uris_can_be_relative() {
    let s = Server::start(&["--bulkdata-uri-relative", "true"]);
    store_fixtures(&s, &["ct_explicit.dcm"]);
    let inst = inst_path(&fx("ct_explicit.dcm"));
    let (uri, _) = pixel_uri(&s, &[]);
    assert_eq!(uri, format!("/dicom-web{inst}/bulkdata/7FE00010"));
    let r = fetch(
        &s.client(),
        &format!("{}{uri}", s.url),
        &[("Accept", "application/octet-stream")],
    );
    assert_eq!(r.status, 200, "{}", r.summary());
}

#[test]
fn every_bulkdata_uri_of_the_metadata_resolves() {
    let s = Server::start(&[]);
    let (bulky_study, bulky_sop) = ("2.25.4242", "2.25.4242.1.1");
    store(&s, vec![bulky_instance(bulky_study, bulky_sop)]);
    let names = [
        "ct_explicit.dcm",
        "ct_bigendian.dcm",
        "ct_j2k.dcm",
        "mf_native.dcm",
        "mf_jpeg_bot.dcm",
        "rgb_jpeg.dcm",
    ];
    store_fixtures(&s, &names);
    let bulky = format!(
        "{}/studies/{bulky_study}/series/{bulky_study}.1/instances/{bulky_sop}",
        s.dicomweb()
    );

    let meta = get(&s, &format!("/studies/{bulky_study}/metadata"), &[]).json();
    let item = &meta[0];
    assert_eq!(
        item["00420011"],
        json!({"vr": "OB", "BulkDataURI": format!("{bulky}/bulkdata/00420011")})
    );
    assert_eq!(
        item["00081140"]["Value"][0]["00420011"],
        json!({"vr": "OB", "BulkDataURI": format!("{bulky}/bulkdata/00081140/0/00420011")})
    );
    // 100 bytes stay inline.
    use base64::Engine;
    assert_eq!(
        item["00091010"],
        json!({"vr": "OB", "InlineBinary": base64::engine::general_purpose::STANDARD.encode([0xA5u8; 100])})
    );

    let mut uris = Vec::new();
    bulk_uris(&meta, &mut uris);
    for study in [CT_STUDY, MF_STUDY, &fx("rgb_jpeg.dcm").study] {
        bulk_uris(
            &get(&s, &format!("/studies/{study}/metadata"), &[]).json(),
            &mut uris,
        );
    }
    assert_eq!(uris.len(), 3 + names.len(), "{uris:#?}");
    for uri in &uris {
        assert!(uri.starts_with(&s.dicomweb()), "{uri}");
        let r = fetch(&s.client(), uri, &[("Accept", "*/*")]);
        assert_eq!(r.status, 200, "{uri}: {}", r.summary());
        assert!(!r.body.is_empty(), "{uri}");
    }

    // Exact bytes: single part by default, one part when multipart is asked.
    for (path, want) in [
        ("00420011", top_bulk()),
        ("00081140/0/00420011", nested_bulk()),
    ] {
        let url = format!("{bulky}/bulkdata/{path}");
        for accept in [None, Some("*/*"), Some("application/octet-stream")] {
            let h: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
            let r = fetch(&s.client(), &url, &h);
            assert_eq!(r.status, 200, "{path} {accept:?}: {}", r.summary());
            assert!(
                r.content_type().starts_with("application/octet-stream"),
                "{path} {accept:?}: {}",
                r.content_type()
            );
            assert!(r.body == want, "{path} {accept:?}: bytes differ");
        }
        let r = fetch(&s.client(), &url, &[("Accept", OCTET_MULTIPART)]);
        assert_eq!(r.status, 200, "{path}: {}", r.summary());
        let parts = r.parts();
        assert_eq!(parts.len(), 1);
        assert!(
            parts[0]
                .header("Content-Type")
                .starts_with("application/octet-stream")
        );
        assert_eq!(parts[0].header("Content-Location"), url);
        assert!(parts[0].body == want, "{path} multipart: bytes differ");
    }
    for missing in ["00420012", "00081140/1/00420011", "00081140/0/00420012"] {
        let r = fetch(&s.client(), &format!("{bulky}/bulkdata/{missing}"), &[]);
        assert_eq!(r.status, 404, "{missing}: {}", r.summary());
    }
}

#[test]
fn etag_and_conditional_requests() {
    let s = Server::start(&[]);
    store_fixtures(&s, &["ct_explicit.dcm"]);
    let paths = [
        format!("/studies/{CT_STUDY}/metadata"),
        format!("/studies/{CT_STUDY}/series/{CT_SERIES}/metadata"),
        format!("{}/metadata", inst_path(&fx("ct_explicit.dcm"))),
    ];
    let etags: Vec<String> = paths
        .iter()
        .map(|p| {
            let r = get(&s, p, &[]);
            assert_eq!(r.status, 200, "{p}: {}", r.summary());
            r.header("etag").unwrap_or_else(|| panic!("{p}: no ETag"))
        })
        .collect();
    for (p, tag) in paths.iter().zip(&etags) {
        let r = get(&s, p, &[("If-None-Match", tag)]);
        assert_eq!(r.status, 304, "{p}: {}", r.summary());
        assert!(r.body.is_empty(), "{p}: 304 with a body");
        assert_eq!(r.header("etag").as_ref(), Some(tag), "{p}");
        let r = get(&s, p, &[("If-None-Match", "\"something-else\"")]);
        assert_eq!(r.status, 200, "{p}");
    }

    // The instance replaced (same UIDs, SeriesDescription changed): every ETag changes.
    store_fixtures(&s, &["ct_explicit_changed.dcm"]);
    let mut replaced = Vec::new();
    for (p, old) in paths.iter().zip(&etags) {
        let r = get(&s, p, &[("If-None-Match", old)]);
        assert_eq!(r.status, 200, "{p} after replacement: {}", r.summary());
        let new = r.header("etag").expect("ETag");
        assert_ne!(&new, old, "{p}: ETag unchanged after replacement");
        assert_eq!(
            r.json()[0]["0008103E"]["Value"][0],
            "CT phantom 64x64 (changed)"
        );
        replaced.push(new);
    }
    // An instance added to the series: study and series ETags change, the instance's does not.
    store_fixtures(&s, &["ct_implicit.dcm"]);
    for (i, (p, old)) in paths.iter().zip(&replaced).enumerate() {
        let r = get(&s, p, &[("If-None-Match", old)]);
        if i < 2 {
            assert_eq!(r.status, 200, "{p} after an addition");
            assert_ne!(r.header("etag").as_ref(), Some(old), "{p}");
        } else {
            assert_eq!(r.status, 304, "{p}: the instance did not change");
        }
    }
}

#[test]
fn metadata_is_gzipped_on_request() {
    let s = Server::start(&[]);
    store_fixtures(
        &s,
        &[
            "ct_explicit.dcm",
            "ct_implicit.dcm",
            "ct_jpeg_baseline.dcm",
            "mf_native.dcm",
        ],
    );
    let paths = [
        format!("/studies/{CT_STUDY}/metadata"),
        format!("/studies/{CT_STUDY}/series/{CT_SERIES}/metadata"),
        format!("{}/metadata", inst_path(&fx("ct_explicit.dcm"))),
        format!("/studies/{MF_STUDY}/metadata"),
    ];
    for p in &paths {
        let plain = get(&s, p, &[]);
        assert_eq!(plain.status, 200, "{p}");
        assert_eq!(plain.header("content-encoding"), None, "{p}");
        let identity = plain.json();
        for _ in 0..2 {
            let r = get(&s, p, &[("Accept-Encoding", "gzip")]);
            assert_eq!(r.status, 200, "{p}: {}", r.summary());
            assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"), "{p}");
            let vary = r.header("vary").unwrap_or_default().to_ascii_lowercase();
            assert!(vary.contains("accept-encoding"), "{p}: Vary {vary}");
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .unwrap_or_else(|e| panic!("{p}: not gzip: {e}"));
            let unzipped: Value = serde_json::from_slice(&out).expect("JSON after gunzip");
            assert_eq!(unzipped, identity, "{p}");
        }
        let r = get(&s, p, &[("Accept-Encoding", "gzip;q=0, identity")]);
        assert_eq!(r.header("content-encoding"), None, "{p}: gzip;q=0");
        assert_eq!(r.json(), identity);
    }
}

#[test]
fn metadata_as_xml_has_one_native_dicom_model_part_per_instance() {
    let s = Server::start(&[]);
    let names = ["ct_explicit.dcm", "ct_implicit.dcm", "ct_j2k.dcm"];
    store_fixtures(&s, &names);
    let r = get_as(
        &s,
        &format!("/studies/{CT_STUDY}/metadata"),
        "multipart/related; type=\"application/dicom+xml\"",
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(
        r.content_type()
            .starts_with("multipart/related; type=\"application/dicom+xml\"; boundary="),
        "{}",
        r.content_type()
    );
    let parts = r.parts();
    assert_eq!(parts.len(), 3);
    let mut seen = Vec::new();
    for p in &parts {
        assert!(
            p.header("Content-Type")
                .starts_with("application/dicom+xml"),
            "{}",
            p.header("Content-Type")
        );
        let xml = String::from_utf8(p.body.clone()).expect("UTF-8");
        assert_eq!(xml.matches("<NativeDicomModel").count(), 1, "{xml}");
        assert!(xml.contains("</NativeDicomModel>"));
        assert!(xml.contains("tag=\"00080018\""));
        let name = names
            .iter()
            .find(|n| xml.contains(&format!(">{}<", fx(n).sop)))
            .unwrap_or_else(|| panic!("no known SOP Instance UID in {xml}"));
        assert!(
            xml.contains(&format!(
                "uri=\"{}{}/bulkdata/7FE00010\"",
                s.dicomweb(),
                inst_path(&fx(name))
            )),
            "{name}: no absolute BulkData uri"
        );
        seen.push(*name);
    }
    seen.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(seen, want);
}

// ---------------------------------------------------------------------------------------------
// Bulk data and pixel data
// ---------------------------------------------------------------------------------------------

#[test]
fn byte_ranges_on_bulk_data_and_native_pixel_data() {
    let s = Server::start(&[]);
    store(&s, vec![bulky_instance("2.25.4343", "2.25.4343.1.1")]);
    store_fixtures(&s, &["ct_explicit.dcm"]);
    let top = top_bulk();
    let pixels = native_pixels(&dicom_object::open_file(fixture("ct_explicit.dcm")).unwrap());
    let cases = [
        (
            format!(
                "{}/studies/2.25.4343/series/2.25.4343.1/instances/2.25.4343.1.1/bulkdata/00420011",
                s.dicomweb()
            ),
            top,
        ),
        (
            format!(
                "{}{}/bulkdata/7FE00010",
                s.dicomweb(),
                inst_path(&fx("ct_explicit.dcm"))
            ),
            pixels,
        ),
    ];
    for (url, data) in cases {
        let len = data.len();
        let octet = ("Accept", "application/octet-stream");
        let r = fetch(&s.client(), &url, &[octet]);
        assert_eq!(r.status, 200, "{url}: {}", r.summary());
        assert_eq!(r.header("accept-ranges").as_deref(), Some("bytes"), "{url}");
        assert!(r.body == data, "{url}: whole body");
        for (range, status, content_range, want) in [
            (
                "bytes=0-99".to_owned(),
                206,
                format!("bytes 0-99/{len}"),
                data[..100].to_vec(),
            ),
            (
                "bytes=-10".to_owned(),
                206,
                format!("bytes {}-{}/{len}", len - 10, len - 1),
                data[len - 10..].to_vec(),
            ),
            (
                format!("bytes={}-", len - 5),
                206,
                format!("bytes {}-{}/{len}", len - 5, len - 1),
                data[len - 5..].to_vec(),
            ),
            (
                format!("bytes={len}-{}", len + 100),
                416,
                format!("bytes */{len}"),
                Vec::new(),
            ),
        ] {
            let r = fetch(&s.client(), &url, &[octet, ("Range", &range)]);
            assert_eq!(r.status, status, "{url} {range}: {}", r.summary());
            assert_eq!(
                r.header("content-range").as_deref(),
                Some(content_range.as_str()),
                "{url} {range}"
            );
            if status == 206 {
                assert!(r.body == want, "{url} {range}: wrong bytes");
            }
        }
    }
}

#[test]
fn native_pixel_data_bulk_is_little_endian_and_single_part_by_default() {
    let s = Server::start(&[]);
    let names = [
        "ct_explicit.dcm",
        "ct_implicit.dcm",
        "ct_bigendian.dcm",
        "ct_deflate.dcm",
    ];
    store_fixtures(&s, &names);
    for name in names {
        let path = format!("{}/bulkdata/7FE00010", inst_path(&fx(name)));
        let want = reference_pixels(name);
        let r = get_as(&s, &path, "application/octet-stream");
        assert_eq!(r.status, 200, "{name}: {}", r.summary());
        assert!(r.content_type().starts_with("application/octet-stream"));
        assert!(
            r.body == want,
            "{name}: pixel data differs from the reference"
        );
    }
    // The big-endian file's value (its last element) holds the same samples byte-swapped.
    let be = fixture_bytes("ct_bigendian.dcm");
    let swapped: Vec<u8> = be[be.len() - 8192..]
        .chunks(2)
        .flat_map(|w| [w[1], w[0]])
        .collect();
    assert!(swapped == reference_pixels("ct_bigendian.dcm"));

    let path = format!("{}/bulkdata/7FE00010", inst_path(&fx("ct_explicit.dcm")));
    let url = format!("{}{path}", s.dicomweb());
    let want = reference_pixels("ct_explicit.dcm");
    let r = get_as(&s, &path, OCTET_MULTIPART);
    assert_eq!(r.status, 200, "{}", r.summary());
    let parts = r.parts();
    assert_eq!(parts.len(), 1);
    assert!(
        parts[0]
            .header("Content-Type")
            .starts_with("application/octet-stream")
    );
    assert_eq!(parts[0].header("Content-Location"), url);
    assert!(parts[0].body == want);
    // Without Accept or with */*: single part.
    for h in [vec![], vec![("Accept", "*/*")]] {
        let r = get(&s, &path, &h);
        assert_eq!(r.status, 200, "{h:?}: {}", r.summary());
        assert!(
            r.content_type().starts_with("application/octet-stream"),
            "{h:?}: single part expected, got {}",
            r.content_type()
        );
        assert!(r.body == want, "{h:?}: bytes differ");
    }
}

const MF: [&str; 6] = [
    "mf_native.dcm",
    "mf_rle_bot.dcm",
    "mf_rle_nobot.dcm",
    "mf_jpeg_nobot.dcm",
    "mf_jpeg_bot.dcm",
    "mf_jpeg_fragmented.dcm",
];

/// The media type of a compressed frame.
fn frame_type(ts: &str) -> &'static str {
    match ts {
        RLE => "image/dicom-rle",
        JPEG_LS => "image/jls",
        J2K => "image/jp2",
        _ => "image/jpeg",
    }
}

/// Expected pixeldata parts of fixtures: (Content-Location, Content-Type or its prefix, bytes).
fn pixel_parts(s: &Server, names: &[&str], decoded: bool) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in names {
        let u = fx(name);
        let inst = format!("{}{}", s.dicomweb(), inst_path(&u));
        if u.ts == EXPLICIT_LE {
            out.push((
                format!("{inst}/bulkdata/7FE00010"),
                "application/octet-stream".to_owned(),
                reference_pixels(name),
            ));
            continue;
        }
        for (i, stored) in stored_frames(name).into_iter().enumerate() {
            let n = i as u32 + 1;
            out.push(if decoded {
                (
                    format!("{inst}/frames/{n}"),
                    "application/octet-stream".to_owned(),
                    reference_frame(name, n),
                )
            } else {
                (
                    format!("{inst}/frames/{n}"),
                    format!("{}; transfer-syntax={}", frame_type(&u.ts), u.ts),
                    stored,
                )
            });
        }
    }
    out
}

fn assert_parts(r: &Got, want: &[(String, String, Vec<u8>)], what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.summary());
    let parts = r.parts();
    let got: Vec<&str> = parts.iter().map(|p| p.header("Content-Location")).collect();
    let expected: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(got, expected, "{what}: parts");
    for (p, (loc, ct, bytes)) in parts.iter().zip(want) {
        assert!(
            p.header("Content-Type").starts_with(ct.as_str()),
            "{what} {loc}: Content-Type {}",
            p.header("Content-Type")
        );
        assert!(p.body == *bytes, "{what} {loc}: bytes differ");
    }
}

#[test]
fn pixeldata_and_bulkdata_of_study_series_and_instance() {
    let s = Server::start(&[]);
    store_fixtures(&s, &MF);
    store(&s, vec![bulky_instance("2.25.4444", "2.25.4444.1.1")]);
    let decoded = pixel_parts(&s, &MF, true);
    let as_stored = pixel_parts(&s, &MF, false);
    assert_eq!(decoded.len(), 1 + 5 + 5 + 5 + 5 + 1);
    for level in [
        format!("/studies/{MF_STUDY}"),
        format!("/studies/{MF_STUDY}/series/{MF_SERIES}"),
    ] {
        let p = format!("{level}/pixeldata");
        assert_parts(&get_as(&s, &p, OCTET_MULTIPART), &decoded, &p);
        assert_parts(&get(&s, &p, &[]), &decoded, &format!("{p} (no Accept)"));
        assert_parts(
            &get_as(&s, &p, &format!("{OCTET_MULTIPART}; transfer-syntax=*")),
            &as_stored,
            &format!("{p} transfer-syntax=*"),
        );
        assert_parts(
            &get_as(&s, &p, "multipart/related; type=\"*/*\""),
            &as_stored,
            &format!("{p} type=*/*"),
        );
        let b = format!("{level}/bulkdata");
        assert_parts(&get_as(&s, &b, OCTET_MULTIPART), &decoded, &b);
    }
    let rle = inst_path(&fx("mf_rle_bot.dcm"));
    assert_parts(
        &get_as(&s, &format!("{rle}/pixeldata"), OCTET_MULTIPART),
        &pixel_parts(&s, &["mf_rle_bot.dcm"], true),
        "instance pixeldata",
    );
    let native = inst_path(&fx("mf_native.dcm"));
    assert_parts(
        &get_as(&s, &format!("{native}/pixeldata"), OCTET_MULTIPART),
        &pixel_parts(&s, &["mf_native.dcm"], true),
        "native instance pixeldata",
    );

    // All bulk data of an instance: the other bulk values and the pixel data.
    let bulky = format!(
        "{}/studies/2.25.4444/series/2.25.4444.1/instances/2.25.4444.1.1",
        s.dicomweb()
    );
    let pixels =
        native_pixels(&parse_part10(&bulky_instance("2.25.4444", "2.25.4444.1.1")).into_inner());
    let mut want = vec![
        (
            format!("{bulky}/bulkdata/00081140/0/00420011"),
            nested_bulk(),
        ),
        (format!("{bulky}/bulkdata/00420011"), top_bulk()),
        (format!("{bulky}/bulkdata/7FE00010"), pixels),
    ];
    want.sort();
    for p in [
        "/studies/2.25.4444/bulkdata",
        "/studies/2.25.4444/series/2.25.4444.1/bulkdata",
        "/studies/2.25.4444/series/2.25.4444.1/instances/2.25.4444.1.1/bulkdata",
    ] {
        let r = get_as(&s, p, OCTET_MULTIPART);
        assert_eq!(r.status, 200, "{p}: {}", r.summary());
        let mut got: Vec<(String, Vec<u8>)> = r
            .parts()
            .into_iter()
            .map(|part| {
                assert!(
                    part.header("Content-Type")
                        .starts_with("application/octet-stream")
                );
                (part.header("Content-Location").to_owned(), part.body)
            })
            .collect();
        got.sort();
        assert!(
            got == want,
            "{p}: parts {:?}",
            got.iter().map(|g| (&g.0, g.1.len())).collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

#[test]
fn native_frames_in_list_order_and_frame_list_errors() {
    let s = Server::start(&[]);
    store_fixtures(&s, &["mf_native.dcm", "ct_explicit.dcm"]);
    let u = fx("mf_native.dcm");
    let inst = inst_path(&u);
    let url = format!("{}{inst}", s.dicomweb());
    let px = native_pixels(&dicom_object::open_file(fixture("mf_native.dcm")).unwrap());
    assert_eq!(px.len(), 5 * 32 * 32);
    let frame = |n: usize| px[(n - 1) * 1024..n * 1024].to_vec();
    let octet_le = format!("application/octet-stream; transfer-syntax={EXPLICIT_LE}");
    for list in ["2,1", "2%2C1", "2%2c1"] {
        for accept in [
            OCTET_MULTIPART,
            "*/*",
            "multipart/related; type=application/octet-stream",
        ] {
            let r = get_as(&s, &format!("{inst}/frames/{list}"), accept);
            assert_eq!(r.status, 200, "{list} {accept}: {}", r.summary());
            assert!(
                r.content_type()
                    .starts_with("multipart/related; type=\"application/octet-stream\""),
                "{}",
                r.content_type()
            );
            let parts = r.parts();
            assert_eq!(parts.len(), 2, "{list} {accept}");
            for (p, n) in parts.iter().zip([2, 1]) {
                assert_eq!(p.header("Content-Type"), octet_le);
                assert_eq!(p.header("Content-Location"), format!("{url}/frames/{n}"));
                assert!(p.body == frame(n), "{list} {accept}: frame {n} bytes");
            }
        }
    }
    // Single part for one frame.
    for n in [3, 5] {
        let r = get_as(
            &s,
            &format!("{inst}/frames/{n}"),
            "application/octet-stream",
        );
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(r.content_type(), octet_le);
        assert_eq!(
            r.header("content-location"),
            Some(format!("{url}/frames/{n}"))
        );
        assert!(r.body == frame(n), "frame {n}");
    }
    let r = get_as(
        &s,
        &format!("{inst}/frames/1,2"),
        "application/octet-stream",
    );
    assert_eq!(r.status, 406, "several frames single part: {}", r.summary());

    for (list, status) in [
        ("1,1", 400),
        ("2,3,2", 400),
        ("0", 404),
        ("6", 404),
        ("1,6", 404),
        ("abc", 400),
        ("1,x", 400),
        ("-1", 400),
        ("1.5", 400),
    ] {
        let r = get_as(&s, &format!("{inst}/frames/{list}"), OCTET_MULTIPART);
        assert_eq!(r.status, status, "frames/{list}: {}", r.summary());
        assert!(r.json()["code"].is_string(), "frames/{list}");
    }

    // A single-frame instance has frame 1 only.
    let ct = inst_path(&fx("ct_explicit.dcm"));
    let r = get_as(&s, &format!("{ct}/frames/1"), "application/octet-stream");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(r.body == reference_pixels("ct_explicit.dcm"));
    let r = get_as(&s, &format!("{ct}/frames/2"), OCTET_MULTIPART);
    assert_eq!(r.status, 404, "{}", r.summary());
}

/// Encapsulated fixtures with their stored transfer syntax.
const ENCAPSULATED: [(&str, &str); 9] = [
    ("mf_jpeg_bot.dcm", JPEG_BASELINE),
    ("mf_jpeg_nobot.dcm", JPEG_BASELINE),
    ("mf_jpeg_fragmented.dcm", JPEG_BASELINE),
    ("mf_rle_bot.dcm", RLE),
    ("mf_rle_nobot.dcm", RLE),
    ("ct_jpegls.dcm", JPEG_LS),
    ("ct_j2k.dcm", J2K),
    ("ct_jpeg_lossless.dcm", JPEG_LOSSLESS),
    ("ct_rle.dcm", RLE),
];

#[test]
fn encapsulated_frames_as_stored_in_their_own_media_type() {
    let s = Server::start(&[]);
    store_fixtures(&s, &ENCAPSULATED.map(|c| c.0));
    for (name, ts) in ENCAPSULATED {
        let u = fx(name);
        assert_eq!(u.ts, ts);
        let inst = inst_path(&u);
        let url = format!("{}{inst}", s.dicomweb());
        let frames = stored_frames(name);
        let order: Vec<usize> = (1..=frames.len()).rev().collect();
        let list = order
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mt = frame_type(ts);
        for (accept, ct) in [
            (
                format!("multipart/related; type=\"{mt}\""),
                format!("{mt}; transfer-syntax={ts}"),
            ),
            (
                format!("multipart/related; type={mt}; transfer-syntax={ts}"),
                format!("{mt}; transfer-syntax={ts}"),
            ),
            (
                format!("{OCTET_MULTIPART}; transfer-syntax=*"),
                format!("application/octet-stream; transfer-syntax={ts}"),
            ),
        ] {
            let r = get_as(&s, &format!("{inst}/frames/{list}"), &accept);
            assert_eq!(r.status, 200, "{name} {accept}: {}", r.summary());
            let parts = r.parts();
            assert_eq!(parts.len(), frames.len(), "{name} {accept}");
            for (p, n) in parts.iter().zip(&order) {
                assert_eq!(p.header("Content-Type"), ct, "{name} {accept}");
                assert_eq!(p.header("Content-Location"), format!("{url}/frames/{n}"));
                assert!(
                    p.body == frames[n - 1],
                    "{name} {accept}: frame {n} is not the stored bitstream"
                );
                if mt == "image/jpeg" {
                    assert!(p.body.starts_with(&[0xFF, 0xD8]), "{name}: no SOI");
                    let end = p.body.strip_suffix(&[0]).unwrap_or(&p.body);
                    assert!(end.ends_with(&[0xFF, 0xD9]), "{name}: no EOI");
                }
            }
        }
        // One frame, single part.
        let r = get_as(&s, &format!("{inst}/frames/1"), mt);
        assert_eq!(r.status, 200, "{name} {mt}: {}", r.summary());
        assert_eq!(r.content_type(), format!("{mt}; transfer-syntax={ts}"));
        assert!(r.body == frames[0], "{name}: single-part frame 1");
    }
}

#[test]
fn encapsulated_frames_decoded_to_native_samples() {
    let s = Server::start(&[]);
    store_fixtures(&s, &ENCAPSULATED.map(|c| c.0));
    for (name, ts) in ENCAPSULATED {
        let u = fx(name);
        let inst = inst_path(&u);
        let count = stored_frames(name).len() as u32;
        // Lossless codecs: the dcmtk-pinned reference; lossy: dicom-pixeldata's decode.
        let want: Vec<Vec<u8>> = if ts == JPEG_BASELINE {
            (1..=count).map(|n| reference_frame(name, n)).collect()
        } else {
            let all = reference_pixels(name);
            let size = all.len() / count as usize;
            all.chunks(size).map(<[u8]>::to_vec).collect()
        };
        let list = (1..=count)
            .rev()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        for accept in [
            "*/*".to_owned(),
            OCTET_MULTIPART.to_owned(),
            format!(
                "multipart/related; type=application/octet-stream; transfer-syntax={EXPLICIT_LE}"
            ),
        ] {
            let r = get_as(&s, &format!("{inst}/frames/{list}"), &accept);
            assert_eq!(r.status, 200, "{name} {accept}: {}", r.summary());
            let parts = r.parts();
            assert_eq!(parts.len(), count as usize);
            for (p, n) in parts.iter().zip((1..=count).rev()) {
                assert_eq!(
                    p.header("Content-Type"),
                    format!("application/octet-stream; transfer-syntax={EXPLICIT_LE}"),
                    "{name} {accept}"
                );
                assert!(
                    p.body == want[n as usize - 1],
                    "{name} {accept}: frame {n} differs from the reference decode ({} bytes, want {})",
                    p.body.len(),
                    want[n as usize - 1].len()
                );
            }
        }
        let r = get_as(&s, &format!("{inst}/frames/1"), "application/octet-stream");
        assert_eq!(r.status, 200, "{name}: {}", r.summary());
        assert_eq!(
            r.content_type(),
            format!("application/octet-stream; transfer-syntax={EXPLICIT_LE}")
        );
        assert!(r.body == want[0], "{name}: single-part frame 1");
    }
}

#[test]
fn deflate_and_big_endian_frames_are_decoded() {
    let s = Server::start(&[]);
    let names = ["ct_deflate.dcm", "ct_bigendian.dcm", "ct_implicit.dcm"];
    store_fixtures(&s, &names);
    for name in names {
        let inst = inst_path(&fx(name));
        let want = reference_pixels(name);
        let r = get_as(&s, &format!("{inst}/frames/1"), "*/*");
        assert_eq!(r.status, 200, "{name}: {}", r.summary());
        let parts = r.parts();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].header("Content-Type"),
            format!("application/octet-stream; transfer-syntax={EXPLICIT_LE}")
        );
        assert!(parts[0].body == want, "{name}: multipart frame");
        let r = get_as(&s, &format!("{inst}/frames/1"), "application/octet-stream");
        assert_eq!(r.status, 200, "{name}: {}", r.summary());
        assert!(r.body == want, "{name}: single-part frame");
        let r = get_as(&s, &format!("{inst}/frames/2"), "*/*");
        assert_eq!(r.status, 404, "{name} frame 2: {}", r.summary());
    }
}

#[test]
fn an_instance_without_pixel_data_has_no_frames() {
    let s = Server::start(&[]);
    store(&s, vec![text_sr("2.25.777", "2.25.777.1.1")]);
    let inst = "/studies/2.25.777/series/2.25.777.1/instances/2.25.777.1.1";
    let meta = get(&s, &format!("{inst}/metadata"), &[]).json();
    assert_eq!(sop_of(&meta[0]), "2.25.777.1.1");
    assert!(meta[0].get("7FE00010").is_none(), "{}", meta[0]);
    for accept in ["*/*", OCTET_MULTIPART, "application/octet-stream"] {
        let r = get_as(&s, &format!("{inst}/frames/1"), accept);
        assert_eq!(r.status, 404, "{accept}: {}", r.summary());
        assert_eq!(r.json()["code"], "not-found");
    }
    let r = get_as(&s, inst, "application/dicom");
    assert_eq!(r.status, 200, "{}", r.summary());
}

// ---------------------------------------------------------------------------------------------
// Access
// ---------------------------------------------------------------------------------------------

/// Every WADO-RS route for one instance's study, series and instance.
fn routes(u: &Uids) -> Vec<String> {
    let st = format!("/studies/{}", u.study);
    let se = series_path(u);
    let i = inst_path(u);
    vec![
        st.clone(),
        se.clone(),
        i.clone(),
        format!("{st}/metadata"),
        format!("{se}/metadata"),
        format!("{i}/metadata"),
        format!("{i}/frames/1"),
        format!("{i}/bulkdata/7FE00010"),
        format!("{st}/bulkdata"),
        format!("{se}/bulkdata"),
        format!("{i}/bulkdata"),
        format!("{st}/pixeldata"),
        format!("{se}/pixeldata"),
        format!("{i}/pixeldata"),
    ]
}

/// A 404 body with the study UID replaced, for comparing refusals of different studies.
fn normalized(r: &Got, study: &str) -> Value {
    let j = r.json();
    let obj = j.as_object().expect("JSON object");
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message"], "{j}");
    let message = j["message"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(|t| if t == study { "<study>" } else { t })
        .collect::<Vec<_>>()
        .join(" ");
    json!({"code": j["code"], "message": message})
}

#[test]
fn refusals_on_every_route_and_a_patient_sees_only_their_study() {
    let s = Server::start(&[]);
    store_fixtures(&s, &["ct_explicit.dcm", "rgb_explicit.dcm"]);
    let email = "pat@example.org";
    let (pat, _) = s.new_patient(email, PASSWORD);
    let rgb = fx("rgb_explicit.dcm");
    s.deliver(&rgb.study, email, &pat);
    let ct = fx("ct_explicit.dcm");
    let ghost = Uids {
        study: format!("{}.404", ct.study),
        series: ct.series.clone(),
        sop: ct.sop.clone(),
        ts: String::new(),
    };
    let dw = s.dicomweb();
    let patient = authed_client(&pat);
    let wrong = authed_client("not-a-token");
    for (route, ghost_route) in routes(&ct).iter().zip(routes(&ghost)) {
        let url = format!("{dw}{route}");
        let r = fetch(&client(), &url, &[]);
        assert_eq!(
            r.status,
            401,
            "{route} without credentials: {}",
            r.summary()
        );
        let r = fetch(&wrong, &url, &[]);
        assert_eq!(r.status, 401, "{route} with a bad token: {}", r.summary());
        // Not theirs: exactly like a study that does not exist.
        let theirs_not = fetch(&patient, &url, &[]);
        assert_eq!(theirs_not.status, 404, "{route}: {}", theirs_not.summary());
        let missing = fetch(&patient, &format!("{dw}{ghost_route}"), &[]);
        assert_eq!(missing.status, 404, "{ghost_route}: {}", missing.summary());
        let admin_missing = fetch(&s.client(), &format!("{dw}{ghost_route}"), &[]);
        assert_eq!(admin_missing.status, 404, "{ghost_route} (admin)");
        let a = normalized(&theirs_not, &ct.study);
        assert_eq!(a["code"], "not-found");
        assert_eq!(a, normalized(&missing, &ghost.study), "{route}");
        assert_eq!(a, normalized(&admin_missing, &ghost.study), "{route}");
        assert_eq!(theirs_not.content_type(), missing.content_type(), "{route}");
    }
    // Their own study: every route answers.
    for route in routes(&rgb) {
        let r = fetch(&patient, &format!("{dw}{route}"), &[]);
        assert_eq!(r.status, 200, "{route}: {}", r.summary());
    }
    let r = fetch(
        &patient,
        &format!("{dw}/studies/{}", rgb.study),
        &[("Accept", DICOM_MULTIPART)],
    );
    let parts = r.parts();
    assert_eq!(parts.len(), 1);
    assert!(parts[0].body == as_stored("rgb_explicit.dcm"));
    let meta = fetch(
        &patient,
        &format!("{dw}/studies/{}/metadata", rgb.study),
        &[],
    )
    .json();
    assert_eq!(sop_of(&meta[0]), rgb.sop);
}

#[test]
fn malformed_uids_in_the_path_are_400_naming_the_segment() {
    let s = Server::start(&[]);
    for (path, segment) in [
        ("/studies/1.2.x".to_owned(), "study"),
        (format!("/studies/{CT_STUDY}/series/abc/metadata"), "series"),
        (
            format!("/studies/{CT_STUDY}/series/{CT_SERIES}/instances/1..2/pixeldata"),
            "instance",
        ),
        ("/studies/1.2.x/bulkdata".to_owned(), "study"),
    ] {
        let r = get(&s, &path, &[]);
        assert_eq!(r.status, 400, "{path}: {}", r.summary());
        let msg = String::from_utf8_lossy(&r.body).to_string();
        assert!(msg.contains(segment), "{path}: {msg}");
    }
}
