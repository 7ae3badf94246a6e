//! Test harness: start the real `lightbox` binary on a free port with a fresh data directory and
//! talk HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin every test server is bootstrapped with.
pub const ADMIN_EMAIL: &str = "admin@test.example";
pub const ADMIN_PASSWORD: &str = "Correct-Horse-Battery-42";

static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The admin bearer token of the test server at `url`'s origin.
pub fn token_for(url: &str) -> Option<String> {
    // Newest first (a port may be reused by a later server), and the base must end at a
    // path boundary (port 4000 is not port 40001).
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(base, _)| {
            url.strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(|(_, t)| t.clone())
}

pub struct Server {
    pub url: String,
    /// Bearer token of the bootstrap admin.
    pub token: String,
    pub child: Option<Child>,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lightbox")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dicom")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

impl Server {
    /// Start on a fresh temporary data directory.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut s = Server::start_on(&data, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Start on a given data directory (kept by the caller).
    pub fn start_on(data: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env_remove("LIGHTBOX_CONFIG")
            .env("LIGHTBOX_LOG", "warn")
            .env("LIGHTBOX_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("LIGHTBOX_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn lightbox");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                    sent = true;
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not report its address within 60 s");
        let token = login(&url, ADMIN_EMAIL, ADMIN_PASSWORD)
            .unwrap_or_else(|e| panic!("admin sign-in failed: {e}"));
        TOKENS.lock().unwrap().push((url.clone(), token.clone()));
        Server {
            url,
            token,
            child: Some(child),
            data: data.to_path_buf(),
            _tmp: None,
        }
    }

    /// An HTTP client that sends the admin's bearer token.
    pub fn client(&self) -> reqwest::blocking::Client {
        authed_client(&self.token)
    }

    pub fn dicomweb(&self) -> String {
        format!("{}/dicom-web", self.url)
    }

    /// Register a patient account and sign it in: (bearer token, user id).
    pub fn new_patient(&self, email: &str, password: &str) -> (String, String) {
        let r = send(
            client()
                .post(format!("{}/api/auth/register", self.url))
                .json(&serde_json::json!({"email": email, "password": password})),
        );
        assert_eq!(r.status, 201, "register {email}: {}", r.text);
        let r = send(
            client()
                .post(format!("{}/api/auth/login", self.url))
                .json(&serde_json::json!({"email": email, "password": password})),
        );
        assert_eq!(r.status, 200, "sign in {email}: {}", r.text);
        (r.token(), r.json["user"]["id"].as_str().unwrap().to_owned())
    }

    /// Staff (the admin) delivers `study` to `email`; the patient signed in with
    /// `patient_token` claims it with the code.
    pub fn deliver(&self, study: &str, email: &str, patient_token: &str) {
        let r = send(
            self.client()
                .post(format!("{}/api/studies/{study}/grants", self.url))
                .json(&serde_json::json!({"email": email})),
        );
        assert_eq!(r.status, 201, "grant: {}", r.text);
        let code = r.str("claim_code");
        let r = send(
            authed_client(patient_token)
                .post(format!("{}/api/grants/claim", self.url))
                .json(&serde_json::json!({"code": code})),
        );
        assert_eq!(r.status, 200, "claim: {}", r.text);
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe_kill(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 40 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every stored instance file under `objects/`.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let objects = self.data.join("objects");
        if let Ok(shards) = std::fs::read_dir(&objects) {
            for s in shards.flatten() {
                for f in std::fs::read_dir(s.path()).into_iter().flatten().flatten() {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }

    pub fn temp_files(&self) -> usize {
        std::fs::read_dir(self.data.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub const BOUNDARY: &str = "lightbox-test-boundary-7d1f";

/// A multipart/related body with one part per file, each with `Content-Type: application/dicom`.
pub fn multipart(parts: &[Vec<u8>]) -> Vec<u8> {
    multipart_with(parts, Some("application/dicom"))
}

pub fn multipart_with(parts: &[Vec<u8>], part_type: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        if let Some(t) = part_type {
            body.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn stow_content_type() -> String {
    format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}")
}

/// Sign in; returns the bearer token.
///
/// Every test signs in from 127.0.0.1, and the per-address bucket refills at one attempt per
/// 2 s: a 429 for the *address* is waited out (the Retry-After the server sent, a few times),
/// so a busy test file does not fail on timing. Per-account refusals are returned as errors;
/// the throttle itself is asserted in tests/auth.rs with raw requests.
pub fn login(url: &str, email: &str, password: &str) -> Result<String, String> {
    let mut tries = 0;
    let r = loop {
        let r = client()
            .post(format!("{url}/api/auth/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .map_err(|e| e.to_string())?;
        tries += 1;
        if r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || tries >= 8 {
            break r;
        }
        let after: u64 = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(2);
        let body = r.text().unwrap_or_default();
        if !body.contains("from this address") {
            return Err(format!("429 Too Many Requests: {body}"));
        }
        std::thread::sleep(Duration::from_millis(after * 1000 + 100));
    };
    let status = r.status();
    let j: serde_json::Value = r.json().map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {j}"));
    }
    j["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no token in {j}"))
}

/// A client whose every request carries `Authorization: Bearer <token>`.
pub fn authed_client(token: &str) -> reqwest::blocking::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .default_headers(h)
        .build()
        .unwrap()
}

/// A client without credentials.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// POST a STOW body; returns (status, headers, JSON body or Null).
pub fn stow(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let c = match token_for(url) {
        Some(t) => authed_client(&t),
        None => client(),
    };
    let r = c
        .post(url)
        .header("Content-Type", content_type)
        .header("Accept", "application/dicom+json")
        .body(body)
        .send()
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// FailureReason values of a sequence (FailedSOPSequence 00081198 or OtherFailures 0008119A).
pub fn failure_codes(body: &serde_json::Value, seq: &str) -> Vec<u64> {
    body[seq]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["00081197"]["Value"][0].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// SOP Instance UIDs in ReferencedSOPSequence.
pub fn referenced(body: &serde_json::Value) -> Vec<String> {
    body["00081199"]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["00081155"]["Value"][0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Read a string attribute (first value) from a Part 10 file with dicom-object.
pub fn read_uid(path: &Path, tag: dicom_core::Tag) -> String {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_owned()
}

/// Wait until `f` holds or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A small synthetic CT instance (Explicit VR LE) with the given UIDs and `pixels` bytes of
/// 16-bit pixel data (64 or 1024 columns).
pub fn make_instance(
    study: &str,
    series: &str,
    sop: &str,
    patient_id: &str,
    pixels: usize,
) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let cols: u16 = if pixels > 1_000_000 { 1024 } else { 64 };
    let rows = (pixels / 2 / cols as usize).max(1) as u16;
    let mut obj = InMemDicomObject::new_empty();
    let s = |o: &mut InMemDicomObject, t, vr, v: &str| {
        o.put(DataElement::new(t, vr, PrimitiveValue::from(v)))
    };
    s(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.5.1.4.1.1.2",
    );
    s(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop);
    s(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, study);
    s(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, series);
    s(&mut obj, tags::PATIENT_ID, VR::LO, patient_id);
    s(&mut obj, tags::PATIENT_NAME, VR::PN, "Test^Patient");
    s(&mut obj, tags::MODALITY, VR::CS, "CT");
    s(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(rows),
    ));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(cols),
    ));
    obj.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    obj.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    ));
    obj.put(DataElement::new(
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(12u16),
    ));
    obj.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(11u16),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    let n = rows as usize * cols as usize * 2;
    let mut data = vec![0u8; n];
    let mut x: u32 = sop
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    for b in data.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8 & 0x0F;
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(data),
    ));
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                .media_storage_sop_instance_uid(sop),
        )
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

/// A response read whole: status, headers, text and (when it parses) JSON.
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: serde_json::Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn str(&self, field: &str) -> String {
        self.json[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string '{field}' in {}", self.text))
            .to_owned()
    }

    pub fn array(&self) -> &Vec<serde_json::Value> {
        self.json
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", self.text))
    }

    /// The `Set-Cookie` line of the session cookie, if any.
    pub fn session_set_cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("lightbox_session="))
            .map(str::to_owned)
    }

    /// The value of the session cookie set by this response.
    pub fn session_cookie(&self) -> String {
        let line = self
            .session_set_cookie()
            .unwrap_or_else(|| panic!("no session cookie in {:?}", self.headers));
        line["lightbox_session=".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }

    pub fn token(&self) -> String {
        self.str("token")
    }
}

/// Send a request and read the whole response.
pub fn send(rb: reqwest::blocking::RequestBuilder) -> Resp {
    let r = rb.send().expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}
