//! ZIP retrieve (`Accept: application/zip`, PS3.18 8.7.3.2 / Supplement 211) against the real
//! server: contents and names unzipped and compared with the originals, the transfer-syntax
//! rules of WADO-RS, negotiation, Content-Disposition and access.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use common::*;
use dicom_dictionary_std::tags;

const PASSWORD: &str = "Tulip-Orbit-Canyon-93";
const STUDY: &str = "1.2.826.0.1.3680043.10.1435.61.1";

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// Every entry: name → bytes.
    fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(self.body.clone()))
            .unwrap_or_else(|e| panic!("not a ZIP ({e}): {} bytes", self.body.len()));
        let mut out = BTreeMap::new();
        for i in 0..a.len() {
            let mut f = a.by_index(i).unwrap();
            assert_eq!(f.compression(), zip::CompressionMethod::Stored);
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            out.insert(f.name().unwrap().to_string(), b);
        }
        out
    }
}

fn get(c: &reqwest::blocking::Client, url: &str, accept: &str) -> Got {
    let r = c.get(url).header("Accept", accept).send().unwrap();
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().unwrap().to_vec(),
    }
}

fn store(s: &Server, files: Vec<Vec<u8>>) {
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&files),
    );
    assert_eq!(st, 200, "{b}");
}

fn ts_of(bytes: &[u8]) -> String {
    let obj = dicom_object::from_reader(std::io::Cursor::new(&bytes[128..])).unwrap();
    obj.meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned()
}

/// Study STUDY: series .1 with two instances, series .2 with one.
fn small_study(s: &Server) -> BTreeMap<String, Vec<u8>> {
    let mut originals = BTreeMap::new();
    for (series, n) in [("1", 2), ("2", 1)] {
        for i in 1..=n {
            let se = format!("{STUDY}.{series}");
            let sop = format!("{se}.{i}");
            let bytes = make_instance(STUDY, &se, &sop, "ZIP-1", 4096);
            originals.insert(format!("{STUDY}/{se}/{sop}.dcm"), bytes);
        }
    }
    store(s, originals.values().cloned().collect());
    originals
}

#[test]
fn zip_of_a_study_a_series_and_an_instance_holds_the_original_files_under_uid_names() {
    let s = Server::start(&[]);
    let originals = small_study(&s);
    let base = s.dicomweb();
    let c = s.client();

    let g = get(&c, &format!("{base}/studies/{STUDY}"), "application/zip");
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-type"), "application/zip");
    assert_eq!(
        g.header("content-disposition"),
        format!("attachment; filename=\"study-{STUDY}.zip\"")
    );
    // Explicit VR LE is sent as stored: every entry equals the file sent.
    assert_eq!(g.entries(), originals);

    let series = format!("{STUDY}.1");
    let g = get(
        &c,
        &format!("{base}/studies/{STUDY}/series/{series}"),
        "application/zip",
    );
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("content-disposition"),
        format!("attachment; filename=\"series-{series}.zip\"")
    );
    let want: BTreeMap<_, _> = originals
        .iter()
        .filter(|(k, _)| k.contains(&format!("/{series}/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(g.entries(), want);

    let sop = format!("{STUDY}.2.1");
    let g = get(
        &c,
        &format!("{base}/studies/{STUDY}/series/{STUDY}.2/instances/{sop}"),
        "application/zip",
    );
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("content-disposition"),
        format!("attachment; filename=\"instance-{sop}.zip\"")
    );
    let e = g.entries();
    assert_eq!(
        e.keys().collect::<Vec<_>>(),
        vec![&format!("{STUDY}/{STUDY}.2/{sop}.dcm")]
    );
    assert_eq!(
        e.values().next().unwrap(),
        &originals[&format!("{STUDY}/{STUDY}.2/{sop}.dcm")]
    );

    // Absent objects are 404, not an empty archive.
    let g = get(&c, &format!("{base}/studies/{STUDY}.99"), "application/zip");
    assert_eq!(g.status, 404);
}

#[test]
fn zip_follows_the_transfer_syntax_rules_and_accept_weights() {
    let s = Server::start(&[]);
    let originals = small_study(&s);
    store(
        &s,
        vec![
            fixture_bytes("ct_implicit.dcm"),
            fixture_bytes("ct_jpeg_lossless.dcm"),
        ],
    );
    let base = s.dicomweb();
    let c = s.client();
    let uids = |name: &str| {
        let p = fixture(name);
        (
            read_uid(&p, tags::STUDY_INSTANCE_UID),
            read_uid(&p, tags::SERIES_INSTANCE_UID),
            read_uid(&p, tags::SOP_INSTANCE_UID),
        )
    };
    for name in ["ct_implicit.dcm", "ct_jpeg_lossless.dcm"] {
        let (st, se, sop) = uids(name);
        let url = format!("{base}/studies/{st}/series/{se}/instances/{sop}");
        let entry = format!("{st}/{se}/{sop}.dcm");
        // No parameter: Explicit VR Little Endian (decompressed / re-encoded).
        let g = get(&c, &url, "application/zip");
        assert_eq!(g.status, 200, "{name}");
        let e = g.entries();
        assert_eq!(ts_of(&e[&entry]), "1.2.840.10008.1.2.1", "{name}");
        // transfer-syntax=*: exactly what a WADO-RS retrieve with `*` sends.
        let g = get(&c, &url, "application/zip; transfer-syntax=*");
        assert_eq!(g.status, 200, "{name}");
        let single = get(&c, &url, "application/dicom; transfer-syntax=*");
        assert_eq!(single.status, 200);
        assert_eq!(g.entries()[&entry], single.body, "{name}");
    }
    // JPEG lossless stays as stored with `*`.
    let (st, se, sop) = uids("ct_jpeg_lossless.dcm");
    let url = format!("{base}/studies/{st}/series/{se}/instances/{sop}");
    let g = get(&c, &url, "application/zip; transfer-syntax=*");
    assert_eq!(
        ts_of(&g.entries()[&format!("{st}/{se}/{sop}.dcm")]),
        "1.2.840.10008.1.2.4.70"
    );
    // A transfer syntax that cannot be produced: 406, as for multipart.
    let g = get(
        &c,
        &url,
        "application/zip; transfer-syntax=1.2.840.10008.1.2.4.50",
    );
    assert_eq!(g.status, 406);

    // Weights decide between ZIP and multipart; */* keeps multipart (server preference).
    let study_url = format!("{base}/studies/{STUDY}");
    let g = get(
        &c,
        &study_url,
        "multipart/related; type=\"application/dicom\"; q=0.5, application/zip",
    );
    assert_eq!(g.header("content-type"), "application/zip");
    assert_eq!(g.entries(), originals);
    let g = get(
        &c,
        &study_url,
        "application/zip; q=0.2, multipart/related; type=\"application/dicom\"",
    );
    assert!(g.header("content-type").starts_with("multipart/related"));
    let g = get(&c, &study_url, "*/*");
    assert!(g.header("content-type").starts_with("multipart/related"));
    // ZIP mixed with a rendered type is refused like any DICOM/rendered mix.
    let g = get(&c, &study_url, "application/zip, image/jpeg");
    assert_eq!(g.status, 400);
    // The accept query parameter works too.
    let g = get(
        &c,
        &format!("{study_url}?accept=application/zip"),
        "application/dicom+json",
    );
    assert_eq!(g.header("content-type"), "application/zip");
}

#[test]
fn zip_needs_access_to_the_study() {
    let s = Server::start(&[]);
    small_study(&s);
    let url = format!("{}/studies/{STUDY}", s.dicomweb());
    // Anonymous: 401.
    assert_eq!(get(&client(), &url, "application/zip").status, 401);
    // A patient without access: 404, like an absent study.
    let email = "zip-patient@example.org";
    let (token, _) = s.new_patient(email, PASSWORD);
    let patient = authed_client(&token);
    assert_eq!(get(&patient, &url, "application/zip").status, 404);
    // Once the study is delivered and claimed: the whole archive.
    s.deliver(STUDY, email, &token);
    let g = get(&patient, &url, "application/zip");
    assert_eq!(g.status, 200);
    assert_eq!(g.entries().len(), 3);
}
