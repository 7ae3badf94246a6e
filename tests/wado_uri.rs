//! WADO-URI (PS3.18 9) against the real server: the Part 10 file for application/dicom, its
//! transfer syntax, every refusal, and access.

mod common;

use common::*;
use dicom_dictionary_std::tags;

const PASSWORD: &str = "Tulip-Orbit-Canyon-93";

struct Uids {
    study: String,
    series: String,
    sop: String,
}

fn uids(name: &str) -> Uids {
    let p = fixture(name);
    Uids {
        study: read_uid(&p, tags::STUDY_INSTANCE_UID),
        series: read_uid(&p, tags::SERIES_INSTANCE_UID),
        sop: read_uid(&p, tags::SOP_INSTANCE_UID),
    }
}

fn store(s: &Server, names: &[&str]) {
    let files = names.iter().map(|n| fixture_bytes(n)).collect::<Vec<_>>();
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&files),
    );
    assert_eq!(st, 200, "{b}");
}

struct Got {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Got {
    /// The body as text, cut short (error bodies are JSON; files are not worth printing).
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned()
    }
}

fn wado(c: &reqwest::blocking::Client, s: &Server, query: &str, accept: Option<&str>) -> Got {
    let mut rb = c.get(format!("{}/wado?{query}", s.url));
    if let Some(a) = accept {
        rb = rb.header("Accept", a);
    }
    let r = rb.send().unwrap();
    Got {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: r.bytes().unwrap().to_vec(),
    }
}

fn q(u: &Uids) -> String {
    format!(
        "requestType=WADO&studyUID={}&seriesUID={}&objectUID={}",
        u.study, u.series, u.sop
    )
}

fn ts_of(bytes: &[u8]) -> String {
    let obj = dicom_object::from_reader(std::io::Cursor::new(&bytes[128..])).unwrap();
    obj.meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned()
}

#[test]
fn application_dicom_returns_the_stored_file_and_honours_transfer_syntax() {
    let s = Server::start(&[]);
    store(&s, &["ct_explicit.dcm", "ct_jpeg_lossless.dcm"]);
    let c = s.client();
    let u = uids("ct_explicit.dcm");
    let stored = {
        let r = c
            .get(format!(
                "{}/studies/{}/series/{}/instances/{}",
                s.dicomweb(),
                u.study,
                u.series,
                u.sop
            ))
            .header("Accept", "application/dicom; transfer-syntax=*")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.bytes().unwrap().to_vec()
    };
    let g = wado(
        &c,
        &s,
        &format!("{}&contentType=application/dicom", q(&u)),
        None,
    );
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(g.content_type, "application/dicom");
    assert_eq!(g.body, stored);
    // Without contentType, an Accept of only application/dicom gets the file too.
    let g = wado(&c, &s, &q(&u), Some("application/dicom"));
    assert_eq!(g.status, 200);
    assert_eq!(g.body, stored);
    // A comma list: the first supported type wins; unknown types are skipped.
    let g = wado(
        &c,
        &s,
        &format!(
            "{}&contentType=application/x-unknown,application/dicom",
            q(&u)
        ),
        None,
    );
    assert_eq!(g.status, 200);
    assert_eq!(g.body, stored);
    // Unknown parameters are ignored (PS3.18 8.3); charset is accepted.
    let g = wado(
        &c,
        &s,
        &format!(
            "{}&contentType=application/dicom&charset=UTF-8&vendorThing=1",
            q(&u)
        ),
        None,
    );
    assert_eq!(g.status, 200);

    // transferSyntax: JPEG lossless decompressed to Explicit VR LE on request, kept with its own
    // UID, and 406 for one that cannot be produced.
    let j = uids("ct_jpeg_lossless.dcm");
    let base = format!("{}&contentType=application/dicom", q(&j));
    let g = wado(
        &c,
        &s,
        &format!("{base}&transferSyntax=1.2.840.10008.1.2.1"),
        None,
    );
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(ts_of(&g.body), "1.2.840.10008.1.2.1");
    let g = wado(
        &c,
        &s,
        &format!("{base}&transferSyntax=1.2.840.10008.1.2.4.70"),
        None,
    );
    assert_eq!(g.status, 200);
    assert_eq!(ts_of(&g.body), "1.2.840.10008.1.2.4.70");
    let g = wado(
        &c,
        &s,
        &format!("{base}&transferSyntax=1.2.840.10008.1.2.4.50"),
        None,
    );
    assert_eq!(g.status, 406, "{}", g.text());
    assert!(g.text().contains("1.2.840.10008.1.2.4.70"), "{}", g.text());
    let g = wado(
        &c,
        &s,
        &format!("{base}&transferSyntax=1.2.840.10008.1.2"),
        None,
    );
    assert_eq!(g.status, 406, "implicit VR is not for the web");
}

#[test]
fn every_refusal() {
    let s = Server::start(&[]);
    store(&s, &["ct_explicit.dcm", "rgb_explicit.dcm"]);
    let c = s.client();
    let u = uids("ct_explicit.dcm");
    let other = uids("rgb_explicit.dcm");
    let dicom = "contentType=application/dicom";
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!(
                "studyUID={}&seriesUID={}&objectUID={}&{dicom}",
                u.study, u.series, u.sop
            ),
            400,
            "requestType",
        ),
        (
            format!(
                "requestType=XYZ&studyUID={}&seriesUID={}&objectUID={}&{dicom}",
                u.study, u.series, u.sop
            ),
            400,
            "requestType",
        ),
        (
            format!(
                "requestType=WADO&seriesUID={}&objectUID={}&{dicom}",
                u.series, u.sop
            ),
            400,
            "studyUID",
        ),
        (
            format!(
                "requestType=WADO&studyUID={}&seriesUID=1.2.abc&objectUID={}&{dicom}",
                u.study, u.sop
            ),
            400,
            "seriesUID",
        ),
        (
            format!(
                "requestType=WADO&studyUID={}&seriesUID={}&objectUID=&{dicom}",
                u.study, u.series
            ),
            400,
            "objectUID",
        ),
        // The series is not in the study / the object is not in the series: 404.
        (
            format!(
                "requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&{dicom}",
                other.study, u.series, u.sop
            ),
            404,
            "",
        ),
        (
            format!(
                "requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&{dicom}",
                u.study, other.series, u.sop
            ),
            404,
            "",
        ),
        (
            format!(
                "requestType=WADO&studyUID={}&seriesUID={}&objectUID=1.2.3.404&{dicom}",
                u.study, u.series
            ),
            404,
            "",
        ),
        (
            format!("{}&contentType=image/jpeg;q=0.5", q(&u)),
            400,
            "contentType",
        ),
        (
            format!(
                "{}&contentType=application/dicom;transfer-syntax=1.2.840.10008.1.2.1",
                q(&u)
            ),
            400,
            "contentType",
        ),
        (
            format!("{}&contentType=application/dicom,image/jpeg", q(&u)),
            400,
            "mixed",
        ),
        (
            format!("{}&contentType=text/html", q(&u)),
            406,
            "contentType",
        ),
        (
            format!("{}&{dicom}&anonymize=yes", q(&u)),
            400,
            "anonymize is not supported",
        ),
        (
            format!("{}&contentType=image/jpeg&anonymize=yes", q(&u)),
            400,
            "anonymize is not supported",
        ),
        (
            format!("{}&{dicom}&annotation=patient", q(&u)),
            400,
            "annotation",
        ),
        (
            format!("{}&{dicom}&presentationUID=1.2.3", q(&u)),
            400,
            "presentation",
        ),
        (
            format!("{}&contentType=image/jpeg&rows=0", q(&u)),
            400,
            "rows",
        ),
        (
            format!("{}&contentType=image/jpeg&columns=abc", q(&u)),
            400,
            "columns",
        ),
        (
            format!("{}&contentType=image/jpeg&imageQuality=0", q(&u)),
            400,
            "imageQuality",
        ),
        (
            format!("{}&contentType=image/jpeg&imageQuality=101", q(&u)),
            400,
            "imageQuality",
        ),
        (
            format!("{}&contentType=image/jpeg&region=0,0,1", q(&u)),
            400,
            "region",
        ),
        (
            format!("{}&contentType=image/jpeg&region=0.6,0,0.5,1", q(&u)),
            400,
            "region",
        ),
        (
            format!("{}&contentType=image/jpeg&region=0,0,1,2", q(&u)),
            400,
            "region",
        ),
        (
            format!("{}&contentType=image/jpeg&windowCenter=40", q(&u)),
            400,
            "windowCenter",
        ),
        (
            format!("{}&contentType=image/jpeg&frameNumber=0", q(&u)),
            400,
            "frameNumber",
        ),
        // Rendering parameters do not apply to application/dicom, transferSyntax not to images.
        (
            format!("{}&{dicom}&rows=64", q(&u)),
            400,
            "rendered images only",
        ),
        (
            format!(
                "{}&contentType=image/jpeg&transferSyntax=1.2.840.10008.1.2.1",
                q(&u)
            ),
            400,
            "transferSyntax",
        ),
        (
            format!("{}&{dicom}&transferSyntax=not-a-uid", q(&u)),
            400,
            "transferSyntax",
        ),
        (
            format!("{}&{dicom}&transferSyntax=1.2.840.10008.1.2.4.50", q(&u)),
            406,
            "transferSyntax",
        ),
    ];
    for (query, status, needle) in &cases {
        let g = wado(&c, &s, query, None);
        assert_eq!(g.status, *status, "{query}: {}", g.text());
        assert!(g.text().contains(needle), "{query}: {}", g.text());
    }
    // Rendered: JPEG by default (no contentType, no Accept or */*), PNG and GIF when asked;
    // rows/columns fit the image, region crops it first.
    for accept in [None, Some("*/*")] {
        let g = wado(&c, &s, &q(&u), accept);
        assert_eq!(g.status, 200, "{accept:?}: {}", g.text());
        assert_eq!(g.content_type, "image/jpeg");
        assert_eq!(&g.body[..2], &[0xFF, 0xD8], "a JPEG SOI marker");
    }
    let g = wado(
        &c,
        &s,
        &format!(
            "{}&contentType=image/png&rows=48&windowCenter=40&windowWidth=400&imageQuality=90&region=0,0,0.5,0.25&frameNumber=1",
            q(&u)
        ),
        None,
    );
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(g.content_type, "image/png");
    let png = png::Decoder::new(std::io::Cursor::new(&g.body))
        .read_info()
        .unwrap();
    // A 32×16 region of the 64×64 image, fit to 48 rows: 96×48.
    assert_eq!((png.info().width, png.info().height), (96, 48));
    let g = wado(&c, &s, &format!("{}&contentType=image/gif", q(&u)), None);
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(&g.body[..6], b"GIF89a");
    let g = wado(
        &c,
        &s,
        &format!("{}&contentType=image/jpeg&frameNumber=2", q(&u)),
        None,
    );
    assert_eq!(
        g.status,
        404,
        "frame 2 of a single-frame image: {}",
        g.text()
    );
    // Accept decides without contentType; a contentType the Accept header excludes is a 406.
    let g = wado(&c, &s, &q(&u), Some("text/html"));
    assert_eq!(g.status, 406);
    let g = wado(&c, &s, &format!("{}&{dicom}", q(&u)), Some("image/jpeg"));
    assert_eq!(g.status, 406, "{}", g.text());
    let g = wado(&c, &s, &q(&u), Some("image/jpeg;q=0.1, application/dicom"));
    assert_eq!(g.status, 200, "application/dicom weighs more");
}

#[test]
fn wado_uri_applies_the_access_policy() {
    let s = Server::start(&[]);
    store(&s, &["ct_explicit.dcm"]);
    let u = uids("ct_explicit.dcm");
    let query = format!("{}&contentType=application/dicom", q(&u));
    assert_eq!(wado(&client(), &s, &query, None).status, 401);
    let email = "uri-patient@example.org";
    let (token, _) = s.new_patient(email, PASSWORD);
    let patient = authed_client(&token);
    assert_eq!(wado(&patient, &s, &query, None).status, 404);
    s.deliver(&u.study, email, &token);
    let g = wado(&patient, &s, &query, None);
    assert_eq!(g.status, 200);
    assert_eq!(ts_of(&g.body), "1.2.840.10008.1.2.1");
    // Audited as a retrieve.
    assert!(eventually(std::time::Duration::from_secs(5), || {
        send(s.client().get(format!("{}/api/audit?event=110103", s.url)))
            .text
            .contains("wado-uri")
    }));
}
