//! Rendered and thumbnail resources against the real server: who may see them, where default
//! thumbnails are kept and when they go (replace, DELETE), and the basic shape of the output.
//! Pixel correctness against an independent reference is in tests/python/test_rendered.py.

mod common;

use common::*;

const PASSWORD: &str = "Amber-Lantern-Pier-58";
const CT: &str = "1.2.826.0.1.3680043.10.1435.1.1";
const CT_SERIES: &str = "1.2.826.0.1.3680043.10.1435.1.1.1";
const CT_IMPLICIT: &str = "1.2.826.0.1.3680043.10.1435.1.1.1.1";

fn store(s: &Server, names: &[&str]) {
    let files: Vec<Vec<u8>> = names.iter().map(|n| fixture_bytes(n)).collect();
    let r = send(
        s.client()
            .post(format!("{}/studies", s.dicomweb()))
            .header("Content-Type", stow_content_type())
            .header("Accept", "application/dicom+json")
            .body(multipart(&files)),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

fn get(c: &reqwest::blocking::Client, url: &str) -> (u16, String, Vec<u8>) {
    let r = c.get(url).send().unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.bytes().unwrap().to_vec())
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    let r = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    (r.info().width, r.info().height)
}

fn urls(s: &Server) -> Vec<String> {
    let study = format!("{}/studies/{CT}", s.dicomweb());
    let series = format!("{study}/series/{CT_SERIES}");
    let instance = format!("{series}/instances/{CT_IMPLICIT}");
    let mut out = Vec::new();
    for base in [&study, &series, &instance] {
        out.push(format!("{base}/rendered"));
        out.push(format!("{base}/thumbnail"));
    }
    out.push(format!("{instance}/frames/1/rendered"));
    out.push(format!("{instance}/frames/1/thumbnail"));
    out
}

#[test]
fn patients_see_renderings_of_their_studies_only() {
    let s = Server::start(&[]);
    store(&s, &["ct_implicit.dcm", "ct_rle.dcm"]);
    for u in urls(&s) {
        assert_eq!(get(&client(), &u).0, 401, "anonymous {u}");
        let (status, ct, body) = get(&s.client(), &u);
        assert_eq!(status, 200, "staff {u}");
        assert_eq!(ct, "image/jpeg", "{u}");
        assert_eq!(&body[..2], &[0xFF, 0xD8], "{u}");
    }
    let email = "render-patient@example.org";
    let (token, _) = s.new_patient(email, PASSWORD);
    let patient = authed_client(&token);
    for u in urls(&s) {
        let (status, _, body) = get(&patient, &u);
        assert_eq!(status, 404, "a study the patient may not see: {u}");
        assert!(
            !String::from_utf8_lossy(&body).contains("LIGHTBOX"),
            "no patient data in the refusal"
        );
    }
    s.deliver(CT, email, &token);
    for u in urls(&s) {
        assert_eq!(get(&patient, &u).0, 200, "after the claim: {u}");
    }
    // Viewing writes one audit record per image; the access history groups a run of them.
    let inst = format!(
        "{}/studies/{CT}/series/{CT_SERIES}/instances/{CT_IMPLICIT}/rendered",
        s.dicomweb()
    );
    for _ in 0..5 {
        assert_eq!(get(&patient, &inst).0, 200);
    }
    let history = || {
        send(patient.get(format!("{}/api/studies/{CT}/access-history", s.url)))
            .array()
            .clone()
    };
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            history().iter().any(|r| {
                r["action"] == "rendered"
                    && r["accessor"]["who"] == "you"
                    && r["count"].as_u64().is_some_and(|c| c >= 9)
            })
        }),
        "one grouped row for the renderings: {:?}",
        history()
    );
    let rows = history();
    // 4 renderings while checking every URL, then 5: one row, interleaved thumbnails or not.
    let rendered: Vec<_> = rows
        .iter()
        .filter(|r| r["action"] == "rendered" && r["accessor"]["who"] == "you")
        .collect();
    assert_eq!(rendered.len(), 1, "{rows:?}");
    assert_eq!(rendered[0]["count"], 9, "{rows:?}");
    assert!(rendered[0]["first_ms"].as_u64() <= rendered[0]["time_ms"].as_u64());
    assert!(
        rows.iter().any(|r| r["accessor"]["who"] != "you"),
        "the hospital's delivery is still in the history: {rows:?}"
    );
}

#[test]
fn default_thumbnails_are_kept_until_the_study_changes() {
    let s = Server::start(&[]);
    store(&s, &["ct_implicit.dcm"]);
    let thumbs = s.data.join("derived").join(CT).join("thumbnails");
    let url = format!(
        "{}/studies/{CT}/series/{CT_SERIES}/instances/{CT_IMPLICIT}/thumbnail?accept=image/png",
        s.dicomweb()
    );
    let (status, ct, first) = get(&s.client(), &url);
    assert_eq!((status, ct.as_str()), (200, "image/png"));
    assert_eq!(png_size(&first), (128, 128), "128 px on the long side");
    let kept: Vec<_> = std::fs::read_dir(&thumbs).unwrap().collect();
    assert_eq!(kept.len(), 1, "the default thumbnail is kept");
    // Another size is rendered on request, not kept.
    let (status, _, small) = get(&s.client(), &format!("{url}&viewport=32,32"));
    assert_eq!(status, 200);
    assert_eq!(png_size(&small), (32, 32));
    assert_eq!(std::fs::read_dir(&thumbs).unwrap().count(), 1);
    // Served from the kept file: the same bytes.
    assert_eq!(get(&s.client(), &url).2, first);

    // A replacement (same SOP Instance UID, other pixels) drops the derived data.
    let mut changed = fixture_bytes("ct_implicit.dcm");
    let n = changed.len();
    for b in &mut changed[n - 2000..] {
        *b ^= 0x55;
    }
    let r = send(
        s.client()
            .post(format!("{}/studies", s.dicomweb()))
            .header("Content-Type", stow_content_type())
            .header("Accept", "application/dicom+json")
            .body(multipart(&[changed])),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!thumbs.exists(), "replace removed the kept thumbnails");
    let (status, _, second) = get(&s.client(), &url);
    assert_eq!(status, 200);
    assert_ne!(second, first, "the thumbnail shows the new pixels");
    assert!(thumbs.exists());

    // DELETE removes them with the study.
    let r = send(s.client().delete(format!("{}/studies/{CT}", s.dicomweb())));
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!s.data.join("derived").join(CT).exists());
    assert_eq!(get(&s.client(), &url).0, 404);
}

#[test]
fn not_images_are_406_and_bad_parameters_400() {
    let s = Server::start(&[]);
    store(&s, &["ct_implicit.dcm"]);
    let inst = format!(
        "{}/studies/{CT}/series/{CT_SERIES}/instances/{CT_IMPLICIT}",
        s.dicomweb()
    );
    let c = s.client();
    for (query, needle) in [
        ("viewport=0,10", "viewport"),
        ("window=40", "window"),
        ("quality=101", "quality"),
        ("annotation=<script>", "annotation"),
        ("frobnicate=1", "frobnicate"),
    ] {
        let (status, _, body) = get(&c, &format!("{inst}/rendered?{query}"));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}: {text}");
        assert!(text.contains(needle), "{query}: {text}");
    }
    let (status, _, _) = get(&c, &format!("{inst}/thumbnail?window=40,400"));
    assert_eq!(status, 400, "thumbnails take no window");
    let (status, _, body) = get(&c, &format!("{inst}/frames/2/rendered"));
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = get(
        &c,
        &format!("{inst}/rendered?accept=application/dicom%2Bjson"),
    );
    assert_eq!(status, 406);
    // Annotations are not burned in: the image comes with a Warning.
    let r = c
        .get(format!("{inst}/rendered?annotation=patient"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let warning = r.headers().get("warning").unwrap().to_str().unwrap();
    assert!(warning.starts_with("299 ") && warning.contains("annotation"));
    // The viewport flips: sw negative mirrors the image left to right.
    let plain = get(&c, &format!("{inst}/rendered?accept=image/png")).2;
    let flipped = get(
        &c,
        &format!("{inst}/rendered?accept=image/png&viewport=64,64,0,0,-64,64"),
    )
    .2;
    let decode = |b: &[u8]| {
        let mut r = png::Decoder::new(std::io::Cursor::new(b.to_vec()))
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        r.next_frame(&mut buf).unwrap();
        buf
    };
    let (a, b) = (decode(&plain), decode(&flipped));
    assert_ne!(a, b);
    for y in 0..64 {
        for x in 0..64 {
            assert_eq!(a[y * 64 + x], b[y * 64 + 63 - x], "pixel {x},{y}");
        }
    }
}
