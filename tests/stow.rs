//! STOW-RS (PS3.18 10.5, Annex I) against the real server over HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use lightbox::ids::StudyUid;
use lightbox::store::Store;

const FIXTURE_STUDY: &str = "1.2.826.0.1.3680043.10.1435.1.1";

/// Every transfer syntax the issue lists, plus multi-frame and colour variants.
const VALID: &[&str] = &[
    "ct_implicit.dcm",
    "ct_explicit.dcm",
    "ct_bigendian.dcm",
    "ct_deflate.dcm",
    "ct_jpeg_baseline.dcm",
    "ct_jpeg_lossless.dcm",
    "ct_jpegls.dcm",
    "ct_j2k.dcm",
    "ct_rle.dcm",
    "mf_native.dcm",
    "mf_rle_bot.dcm",
    "mf_rle_nobot.dcm",
    "mf_jpeg_bot.dcm",
    "mf_jpeg_nobot.dcm",
    "mf_jpeg_fragmented.dcm",
    "rgb_explicit.dcm",
    "rgb_jpeg.dcm",
    "iso2022_jp.dcm",
    "iso2022_jp_generated.dcm",
    "private_sop.dcm",
];

fn open_store(data: &std::path::Path) -> Store {
    Store::open(data).expect("open store").0
}

#[test]
fn stores_every_transfer_syntax_and_keeps_bytes_except_preamble() {
    let mut s = Server::start(&[]);
    let parts: Vec<Vec<u8>> = VALID.iter().map(|f| fixture_bytes(f)).collect();
    let (status, headers, body) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&parts),
    );
    assert_eq!(status, 200, "body: {body}");
    assert_eq!(headers["content-type"], "application/dicom+json");
    assert_eq!(headers["cache-control"], "private, no-store");
    assert_eq!(referenced(&body).len(), VALID.len());
    assert!(
        body.get("00081198").is_none(),
        "no FailedSOPSequence when all stored"
    );
    // RetrieveURL of each instance is absolute and names study/series/instance.
    let item = &body["00081199"]["Value"][0];
    let url = item["00081190"]["Value"][0].as_str().unwrap();
    assert!(
        url.starts_with(&s.url)
            && url.contains("/dicom-web/studies/")
            && url.contains("/instances/")
    );

    // Files on disk equal the originals except the (zeroed) preamble.
    let stored = s.stored_files();
    assert_eq!(stored.len(), VALID.len());
    for name in VALID {
        let orig = fixture_bytes(name);
        let hit = stored
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .find(|b| b.len() == orig.len() && b[128..] == orig[128..])
            .unwrap_or_else(|| panic!("{name} not stored byte-identically"));
        assert!(
            hit[..128].iter().all(|&b| b == 0),
            "{name}: preamble not zeroed"
        );
    }
    assert_eq!(s.stop(), Some(0), "graceful shutdown exits 0");
    // The index knows them all, with frame indexes for the walkable files.
    let store = open_store(&s.data);
    let (_, _, instances) = store.repo.counts().unwrap();
    assert_eq!(instances, VALID.len() as u64);
}

#[test]
fn preamble_is_zeroed_and_single_part_and_chunked_bodies_work() {
    let s = Server::start(&[]);
    let garbage = fixture_bytes("preamble_garbage.dcm");
    assert!(garbage[..128].iter().any(|&b| b != 0));
    // Single-part application/dicom.
    let (status, _, body) = stow(
        &format!("{}/studies", s.dicomweb()),
        "application/dicom",
        garbage.clone(),
    );
    assert_eq!(status, 200, "{body}");
    let files = s.stored_files();
    assert_eq!(files.len(), 1);
    let on_disk = std::fs::read(&files[0]).unwrap();
    assert!(on_disk[..128].iter().all(|&b| b == 0));
    assert_eq!(on_disk[128..], garbage[128..]);

    // Chunked transfer encoding, unquoted type and boundary, parts without Content-Type,
    // and an informational transfer-syntax parameter.
    let body = multipart_with(
        &[
            fixture_bytes("ct_explicit.dcm"),
            fixture_bytes("ct_rle.dcm"),
        ],
        None,
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let r = s.client()
        .post(format!("{}/studies", s.dicomweb()))
        .header(
            "Content-Type",
            format!("multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1; boundary={BOUNDARY}"),
        )
        .body(reqwest::blocking::Body::new(ChunkReader(chunks.into_iter(), Vec::new())))
        .send()
        .unwrap();
    let j: serde_json::Value = r.json().unwrap();
    assert_eq!(referenced(&j).len(), 2, "{j}");
}

/// A reader without a known length, so reqwest sends `Transfer-Encoding: chunked`.
struct ChunkReader<I>(I, Vec<u8>);
impl<I: Iterator<Item = Result<Vec<u8>, std::io::Error>>> Read for ChunkReader<I> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1.is_empty() {
            match self.0.next() {
                Some(Ok(c)) => self.1 = c,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1.drain(..n);
        Ok(n)
    }
}

#[test]
fn refusals_carry_the_annex_i_codes_and_statuses() {
    let s = Server::start(&[]);
    let url = format!("{}/studies", s.dicomweb());
    let one = |name: &str| {
        stow(
            &url,
            &stow_content_type(),
            multipart(&[fixture_bytes(name)]),
        )
    };

    // Unparseable: Other Failures Sequence, 0xC000, 400.
    let (st, _, b) = one("garbage.bin");
    assert_eq!(st, 400, "{b}");
    assert_eq!(failure_codes(&b, "0008119A"), vec![0xC000]);
    assert!(b.get("00081198").is_none());

    // Truncated: UIDs known, so FailedSOPSequence with 0xC000; 400.
    let (st, _, b) = one("truncated.dcm");
    assert_eq!(st, 400, "{b}");
    assert_eq!(failure_codes(&b, "00081198"), vec![0xC000]);

    // Missing SOP Instance UID and malformed UID: 0xC000.
    for f in ["no_sop_uid.dcm", "bad_uid.dcm"] {
        let (st, _, b) = one(f);
        assert_eq!(st, 400, "{f}: {b}");
        let mut codes = failure_codes(&b, "00081198");
        codes.extend(failure_codes(&b, "0008119A"));
        assert_eq!(codes, vec![0xC000], "{f}");
    }

    // DICOMDIR: 0x0122, nothing stored, 409.
    let (st, _, b) = one("DICOMDIR.dcm");
    assert_eq!(st, 409, "{b}");
    assert_eq!(failure_codes(&b, "00081198"), vec![0x0122]);

    // Registered under another SOP class: 0xA900, 409.
    assert_eq!(one("ct_explicit.dcm").0, 200);
    let (st, _, b) = one("mismatched_class.dcm");
    assert_eq!(st, 409, "{b}");
    assert_eq!(failure_codes(&b, "00081198"), vec![0xA900]);

    // Study UID mismatch with the URL: 0x0110, 409.
    let (st, _, b) = stow(
        &format!("{url}/1.2.3.4.5"),
        &stow_content_type(),
        multipart(&[fixture_bytes("ct_rle.dcm")]),
    );
    assert_eq!(st, 409, "{b}");
    assert_eq!(failure_codes(&b, "00081198"), vec![0x0110]);
    assert_eq!(
        b["00081190"]["Value"][0].as_str().unwrap(),
        format!("{url}/1.2.3.4.5")
    );

    // Mixed good and bad: 202 with both sequences.
    let (st, _, b) = stow(
        &url,
        &stow_content_type(),
        multipart(&[
            fixture_bytes("ct_implicit.dcm"),
            fixture_bytes("garbage.bin"),
            fixture_bytes("truncated.dcm"),
        ]),
    );
    assert_eq!(st, 202, "{b}");
    assert_eq!(referenced(&b).len(), 1);
    assert_eq!(failure_codes(&b, "00081198"), vec![0xC000]);
    assert_eq!(failure_codes(&b, "0008119A"), vec![0xC000]);

    // Nothing of the refused ones reached the disk; temp files are gone.
    assert_eq!(s.stored_files().len(), 2);
    assert_eq!(s.temp_files(), 0);
}

#[test]
fn wrong_media_types_and_bad_requests() {
    let s = Server::start(&[]);
    let url = format!("{}/studies", s.dicomweb());
    let body = || multipart(&[fixture_bytes("ct_explicit.dcm")]);
    let check = |ct: &str, want: u16| {
        let r = s
            .client()
            .post(&url)
            .header("Content-Type", ct)
            .body(body())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{ct}");
        let j: serde_json::Value = r.json().unwrap();
        assert!(
            j["message"].as_str().unwrap().len() > 10,
            "readable message for {ct}: {j}"
        );
        j
    };
    let j = check("application/json", 415);
    assert!(j["message"].as_str().unwrap().contains("multipart/related"));
    let j = check(
        &format!("multipart/related; type=\"application/dicom+json\"; boundary={BOUNDARY}"),
        415,
    );
    assert!(j["message"].as_str().unwrap().contains("not supported yet"));
    check("multipart/related; type=\"application/dicom\"", 400); // no boundary
    // A response type we cannot produce: 406 naming what is available.
    let r = s
        .client()
        .post(&url)
        .header("Content-Type", stow_content_type())
        .header("Accept", "image/png")
        .body(body())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 406);
    assert!(r.text().unwrap().contains("application/dicom+json"));
    // Unknown query parameter.
    let r = s
        .client()
        .post(format!("{url}?foo=1"))
        .header("Content-Type", stow_content_type())
        .body(body())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Invalid study UID in the path.
    let r = s
        .client()
        .post(format!("{url}/not-a-uid"))
        .header("Content-Type", stow_content_type())
        .body(body())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Broken multipart (no closing boundary, garbage framing): 400, nothing stored.
    let mut broken = body();
    broken.truncate(broken.len() - 30);
    let r = s
        .client()
        .post(&url)
        .header("Content-Type", stow_content_type())
        .body(broken)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(s.stored_files().len(), 0);
    // XML response when asked.
    let r = s
        .client()
        .post(&url)
        .header("Content-Type", stow_content_type())
        .header("Accept", "application/dicom+xml")
        .body(body())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/dicom+xml");
    assert!(
        r.text()
            .unwrap()
            .contains("<DicomAttribute tag=\"00081199\" vr=\"SQ\">")
    );
    // The server is still up.
    assert_eq!(
        s.client()
            .get(format!("{}/healthz", s.url))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn oversized_bodies_get_413_and_leave_nothing() {
    let s = Server::start(&["--max-upload", "20000"]);
    let url = format!("{}/studies", s.dicomweb());
    let big = multipart(&[
        fixture_bytes("ct_explicit.dcm"),
        fixture_bytes("ct_implicit.dcm"),
        fixture_bytes("rgb_explicit.dcm"),
    ]);
    // Declared Content-Length over the limit.
    let (st, _, b) = stow(&url, &stow_content_type(), big.clone());
    assert_eq!(st, 413, "{b}");
    assert_eq!(b["code"], "payload-too-large");
    // Chunked, so the limit is found while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let r = s
        .client()
        .post(&url)
        .header("Content-Type", stow_content_type())
        .body(reqwest::blocking::Body::new(ChunkReader(
            chunks.into_iter(),
            Vec::new(),
        )))
        .send();
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }
    assert!(
        eventually(Duration::from_secs(5), || s.temp_files() == 0),
        "temp files removed"
    );
    assert!(s.stored_files().is_empty());
}

#[test]
fn disk_reserve_refuses_with_a700() {
    let s = Server::start(&["--disk-reserve", "1000000TB"]);
    let (st, h, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&[fixture_bytes("ct_explicit.dcm")]),
    );
    assert_eq!(st, 409, "{b}");
    assert_eq!(failure_codes(&b, "00081198"), vec![0xA700]);
    assert!(h["warning"].to_str().unwrap().starts_with("A700"));
    assert!(s.stored_files().is_empty());
}

#[test]
fn client_abort_leaves_no_temp_files_and_server_stays_up() {
    let s = Server::start(&[]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let body = multipart(&[
        fixture_bytes("ct_explicit.dcm"),
        fixture_bytes("rgb_explicit.dcm"),
    ]);
    let mut conn = TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /dicom-web/studies HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        stow_content_type(),
        body.len()
    )
    .unwrap();
    conn.write_all(&body[..body.len() / 2]).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(conn); // abort mid-body
    assert!(
        eventually(Duration::from_secs(10), || s.temp_files() == 0),
        "temp files left behind"
    );
    assert!(s.stored_files().is_empty(), "half an upload was stored");
    let (st, _, _) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&[fixture_bytes("ct_explicit.dcm")]),
    );
    assert_eq!(st, 200);
}

#[test]
fn restore_rules_noop_replace_move_and_patient_conflict() {
    let mut s = Server::start(&[]);
    let url = format!("{}/studies", s.dicomweb());
    let send = |name: &str| {
        stow(
            &url,
            &stow_content_type(),
            multipart(&[fixture_bytes(name)]),
        )
    };
    assert_eq!(send("ct_explicit.dcm").0, 200);
    assert_eq!(send("ct_rle.dcm").0, 200);
    let before = s.stored_files();
    // Byte-identical: no-op.
    assert_eq!(send("ct_explicit.dcm").0, 200);
    assert_eq!(s.stored_files(), before);
    // Changed content: replaced atomically (one file for the instance, new content).
    assert_eq!(send("ct_explicit_changed.dcm").0, 200);
    let after = s.stored_files();
    assert_eq!(after.len(), 2);
    let changed = fixture_bytes("ct_explicit_changed.dcm");
    assert!(
        after
            .iter()
            .any(|p| std::fs::read(p).unwrap()[128..] == changed[128..])
    );
    // Moved to another study/series.
    assert_eq!(send("ct_moved.dcm").0, 200);
    // Another patient in the same study: stored, flagged, warned.
    let (st, h, b) = send("patient_conflict.dcm");
    assert_eq!(st, 200, "{b}");
    assert!(
        h["warning"]
            .to_str()
            .unwrap()
            .contains("more than one patient")
    );
    assert_eq!(s.stop(), Some(0));

    let store = open_store(&s.data);
    let moved_sop = read_uid(
        &fixture("ct_moved.dcm"),
        dicom_dictionary_std::tags::SOP_INSTANCE_UID,
    );
    let moved_study = read_uid(
        &fixture("ct_moved.dcm"),
        dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
    );
    let rec = store
        .repo
        .instance(&lightbox::ids::SopInstanceUid::parse(&moved_sop).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(rec.study.as_str(), moved_study);
    let old_study = store
        .repo
        .study(&StudyUid::parse(FIXTURE_STUDY).unwrap())
        .unwrap()
        .unwrap();
    // ct_rle + patient_conflict remain in the fixture study; ct_explicit moved out.
    assert_eq!(old_study.instance_count, 2);
    assert!(old_study.patient_conflict());
    let new_study = store
        .repo
        .study(&StudyUid::parse(&moved_study).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(new_study.instance_count, 1);
    assert_eq!(new_study.series_count, 1);
    assert!(!new_study.patient_conflict());
}

#[test]
fn iso_2022_names_are_decoded_to_utf8_in_the_index() {
    let mut s = Server::start(&[]);
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&[fixture_bytes("iso2022_jp_generated.dcm")]),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.stop(), Some(0));
    let store = open_store(&s.data);
    let sop = read_uid(
        &fixture("iso2022_jp_generated.dcm"),
        dicom_dictionary_std::tags::SOP_INSTANCE_UID,
    );
    let rec = store
        .repo
        .instance(&lightbox::ids::SopInstanceUid::parse(&sop).unwrap())
        .unwrap()
        .unwrap();
    let study = store.repo.study(&rec.study).unwrap().unwrap();
    let pn = &study.attrs["00100010"]["Value"][0];
    assert_eq!(pn["Alphabetic"], "Yamada^Tarou");
    assert_eq!(pn["Ideographic"], "山田^太郎");
    assert_eq!(pn["Phonetic"], "やまだ^たろう");
    assert_eq!(study.attrs["00080005"]["Value"][0], "ISO_IR 192");
}

#[test]
fn metadata_template_and_frame_index_are_recorded_at_ingest() {
    let mut s = Server::start(&[]);
    let names = [
        "mf_native.dcm",
        "mf_jpeg_nobot.dcm",
        "mf_rle_bot.dcm",
        "mf_jpeg_fragmented.dcm",
        "ct_deflate.dcm",
    ];
    let parts: Vec<Vec<u8>> = names.iter().map(|n| fixture_bytes(n)).collect();
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&parts),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.stop(), Some(0));
    let store = open_store(&s.data);
    for name in names {
        let sop = read_uid(&fixture(name), dicom_dictionary_std::tags::SOP_INSTANCE_UID);
        let sop = lightbox::ids::SopInstanceUid::parse(&sop).unwrap();
        let rec = store.repo.instance(&sop).unwrap().unwrap();
        let meta = store.repo.metadata(&sop).unwrap().unwrap();
        assert_eq!(
            meta["7FE00010"]["BulkDataURI"], "bulkdata/7FE00010",
            "{name}"
        );
        assert!(
            meta.get("00020010").is_none(),
            "{name}: no file meta group in metadata"
        );
        let frames_declared = meta["00280008"]["Value"][0]
            .as_str()
            .map(|v| v.trim().parse::<usize>().unwrap())
            .or_else(|| meta["00280008"]["Value"][0].as_u64().map(|v| v as usize))
            .unwrap_or(1);
        match (&rec.frames, name) {
            (lightbox::dicom::parse::FrameAccess::DecodeOnRequest, "ct_deflate.dcm") => {}
            (lightbox::dicom::parse::FrameAccess::Indexed(f), _) => {
                assert_eq!(f.len(), frames_declared, "{name}")
            }
            (other, _) => panic!("{name}: unexpected frame access {other:?}"),
        }
    }
}

#[test]
fn cors_preflight_and_headers() {
    let s = Server::start(&[]);
    let r = s
        .client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/studies", s.dicomweb()),
        )
        .header("Origin", "https://viewer.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for want in [
        "authorization",
        "accept",
        "content-type",
        "if-none-match",
        "range",
    ] {
        assert!(allowed.contains(want), "{want} in {allowed}");
    }
    assert!(h.get("access-control-allow-credentials").is_none());
    let (_, h, _) = {
        let r = s
            .client()
            .post(format!("{}/studies", s.dicomweb()))
            .header("Origin", "https://viewer.example.org")
            .header("Content-Type", stow_content_type())
            .body(multipart(&[fixture_bytes("ct_explicit.dcm")]))
            .send()
            .unwrap();
        (r.status(), r.headers().clone(), ())
    };
    let exposed = h["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for want in [
        "content-type",
        "content-length",
        "content-location",
        "warning",
        "etag",
    ] {
        assert!(exposed.contains(want), "{want} in {exposed}");
    }
}

#[test]
fn healthz_and_startup_refusals() {
    let s = Server::start(&[]);
    let j: serde_json::Value = s
        .client()
        .get(format!("{}/healthz", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(j["status"], "ok");
    assert_eq!(j["store"]["status"], "ok");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));

    let tmp = tempfile::tempdir().unwrap();
    // Authentication is always on: STOW without credentials is 401 with a Bearer challenge.
    let r = client()
        .post(format!("{}/studies", s.dicomweb()))
        .header("Content-Type", stow_content_type())
        .body(multipart(&[fixture_bytes("ct_explicit.dcm")]))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"lightbox\"");
    assert!(s.stored_files().is_empty());
    // Bad values stop start-up with a message naming the setting.
    let out = std::process::Command::new(bin())
        .args(["serve", "--max-upload", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_upload"));
    // Env var and config file layers.
    let cfg = tmp.path().join("lightbox.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:1234\"\nmax_upload = \"1MB\"\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config"])
        .arg(&cfg)
        .args(["serve", "--print-config"])
        .env("LIGHTBOX_LISTEN", "127.0.0.1:4321")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("127.0.0.1:4321"),
        "env wins over file: {text}"
    );
    assert!(
        text.contains("max_upload_bytes = 1000000"),
        "file wins over default: {text}"
    );
}

/// Rebuild a fixture's File Meta with another Transfer Syntax UID (explicit VR LE meta group).
fn with_transfer_syntax(name: &str, ts: &str) -> Vec<u8> {
    let orig = fixture_bytes(name);
    let glen = u32::from_le_bytes(orig[140..144].try_into().unwrap()) as usize;
    let dataset = &orig[132 + 12 + glen..];
    let class = read_uid(&fixture(name), dicom_dictionary_std::tags::SOP_CLASS_UID);
    let inst = read_uid(&fixture(name), dicom_dictionary_std::tags::SOP_INSTANCE_UID);
    let mut meta = Vec::new();
    let mut ui = |elem: u16, v: &str| {
        let mut v = v.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        meta.extend_from_slice(&0x0002u16.to_le_bytes());
        meta.extend_from_slice(&elem.to_le_bytes());
        meta.extend_from_slice(b"UI");
        meta.extend_from_slice(&(v.len() as u16).to_le_bytes());
        meta.extend_from_slice(&v);
    };
    ui(0x0002, &class);
    ui(0x0003, &inst);
    ui(0x0010, ts);
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(meta.len() as u32 + 14).to_le_bytes());
    out.extend_from_slice(&[0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&meta);
    out.extend_from_slice(dataset);
    out
}

#[test]
fn unknown_transfer_syntax_is_refused_with_c122() {
    let s = Server::start(&[]);
    let body = with_transfer_syntax("ct_explicit.dcm", "1.2.840.10008.1.2.4.999");
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&[body]),
    );
    assert_eq!(st, 409, "{b}");
    assert_eq!(failure_codes(&b, "00081198"), vec![0xC122]);
    // The same bytes under a known syntax are stored (proves the rebuilt meta is sound).
    let body = with_transfer_syntax("ct_explicit.dcm", "1.2.840.10008.1.2.1");
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&[body]),
    );
    assert_eq!(st, 200, "{b}");
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn large_uploads_stream_to_disk_with_bounded_memory() {
    let s = Server::start(&[]);
    let pid = s.child.as_ref().unwrap().id();
    let before = vm_hwm_kib(pid);
    // Three 40 MB instances in one 120 MB request.
    let study = "1.2.826.0.1.3680043.10.1435.88.1";
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            make_instance(
                study,
                &format!("{study}.1"),
                &format!("{study}.1.{i}"),
                "P9",
                40_000_000,
            )
        })
        .collect();
    let total: usize = parts.iter().map(Vec::len).sum();
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&parts),
    );
    assert_eq!(st, 200, "{b}");
    let grew_mib = (vm_hwm_kib(pid).saturating_sub(before)) / 1024;
    eprintln!(
        "request {} MB, server peak RSS grew by {grew_mib} MiB",
        total / 1_000_000
    );
    assert!(
        grew_mib < 48,
        "peak RSS grew by {grew_mib} MiB for a {} MB request",
        total / 1_000_000
    );
}

#[test]
fn retrieve_urls_come_from_public_url_or_trusted_proxies_never_from_host() {
    let post = |s: &Server, headers: &[(&str, &str)]| -> String {
        let mut req = s
            .client()
            .post(format!("{}/studies", s.dicomweb()))
            .header("Content-Type", stow_content_type())
            .body(multipart(&[fixture_bytes("ct_explicit.dcm")]));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let j: serde_json::Value = req.send().unwrap().json().unwrap();
        j["00081190"]["Value"][0].as_str().unwrap().to_owned()
    };
    let spoof = [
        ("Host", "evil.example"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
    ];

    // Untrusted peer: Host and X-Forwarded-* are ignored.
    let s = Server::start(&[]);
    let url = post(&s, &spoof);
    assert!(
        url.starts_with(&format!("{}/dicom-web/studies/", s.url)),
        "{url}"
    );

    // public_url wins over everything.
    let s = Server::start(&["--public-url", "https://pacs.example.org/lightbox/"]);
    let url = post(&s, &spoof);
    assert!(
        url.starts_with("https://pacs.example.org/lightbox/dicom-web/studies/"),
        "{url}"
    );

    // A trusted proxy's forwarded headers are used.
    let s = Server::start(&["--trusted-proxies", "127.0.0.1/32"]);
    let url = post(
        &s,
        &[
            ("X-Forwarded-Host", "pacs.example.org"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Prefix", "/img"),
        ],
    );
    assert!(
        url.starts_with("https://pacs.example.org/img/dicom-web/studies/"),
        "{url}"
    );
    // ... but never an injected value.
    let url = post(
        &s,
        &[
            ("X-Forwarded-Host", "evil.example/x?y"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    assert!(!url.contains("evil"), "{url}");
}

#[test]
fn deflate_bombs_are_refused_and_big_endian_is_walked() {
    use std::io::Write as _;
    let s = Server::start(&[]);
    // The File Meta of the deflated fixture, then 100 MB of zeros deflated to a few hundred KB
    // (the inflate limit is 64× the file size, at least 64 MiB).
    let orig = fixture_bytes("ct_deflate.dcm");
    let glen = u32::from_le_bytes(orig[140..144].try_into().unwrap()) as usize;
    let mut bomb = orig[..132 + 12 + glen].to_vec();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        enc.write_all(&zeros).unwrap();
    }
    bomb.extend(enc.finish().unwrap());
    let pid = s.child.as_ref().unwrap().id();
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        "application/dicom",
        bomb,
    );
    assert_eq!(st, 400, "{b}");
    let mut codes = failure_codes(&b, "00081198");
    codes.extend(failure_codes(&b, "0008119A"));
    assert_eq!(codes, vec![0xC000]);
    assert!(
        vm_hwm_kib(pid) < 200 * 1024,
        "the bomb was inflated into memory"
    );

    // A big-endian file whose declared length runs past the end is refused by the walk,
    // before any allocation by that length.
    let mut be = fixture_bytes("ct_bigendian.dcm");
    let n = be.len();
    be.truncate(n - 1000);
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        "application/dicom",
        be,
    );
    assert_eq!(st, 400, "{b}");
    assert_eq!(failure_codes(&b, "00081198"), vec![0xC000]);
}
