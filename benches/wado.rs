//! WADO-RS throughput and latency against the release binary (harness = false).
//!
//! `cargo build --release && cargo bench --bench wado` generates synthetic 512×512 16-bit CT
//! instances in memory and STOWs them into a fresh server: study A (a 100-instance and a
//! 600-instance series) and study B (2000 instances in 4 series, about 1 GB). It then measures,
//! over one keep-alive loopback connection (reqwest, blocking): whole-study retrieve throughput
//! of study B from the page cache, the server's peak RSS around those retrieves, series
//! metadata latency (plain and gzip) and single-frame latency. Timings are reported, never
//! asserted: only status codes and body sizes are checked. See benches/README.md.
//!
//! Without `--bench` in the arguments (`cargo test --benches`) it runs a tiny smoke version
//! (a few dozen instances, 20 samples, no JSON) when the release binary exists, and otherwise
//! exits 0.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

mod common;
use common::CtSpec;
use common::server::{
    Res, ServerGuard, env_usize, proc_cpu, proc_io, proc_status_kib, server_binary, static_server,
    target_dir,
};

const BOUNDARY: &str = "lightbox-wado-bench-3b9d0f6c1e2a4857";
const ACCEPT_STUDY_ANY: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
const ACCEPT_STUDY_DEFAULT: &str = "multipart/related; type=\"application/dicom\"";
const ACCEPT_FRAME: &str =
    "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";
const ACCEPT_METADATA: &str = "application/dicom+json";
/// One native 512×512 16-bit frame.
const FRAME_BYTES: usize = 512 * 512 * 2;
/// The client's read buffer for whole-study bodies.
const READ_BUF: usize = 1 << 20;
/// Write size of the static loopback server (the server's own file chunk is 256 KiB too).
const STATIC_CHUNK: usize = 256 * 1024;

const TARGET_RETRIEVE_GBS: f64 = 1.5;
const TARGET_META_100_MS: f64 = 5.0;
const TARGET_META_600_MS: f64 = 20.0;
const TARGET_FRAME_MS: f64 = 1.0;
const ORTHANC: &str = "Orthanc 1.10.1 + DICOMweb 1.7";
const REF_RETRIEVE: &str = "0.46–0.57 GB/s";
const REF_META_100: &str = "101 ms";
const REF_FRAME: &str = "3.7 ms";

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    match run(full) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wado: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Knobs {
    /// Instances of study A's two series.
    a_series: [usize; 2],
    /// Instances of study B (split over `b_series` series).
    b_instances: usize,
    b_series: usize,
    per_request: usize,
    clients: usize,
    /// Measured whole-study retrieves per Accept.
    runs: usize,
    /// Samples for the 100-instance series metadata and for frames; the 600-instance series
    /// gets 30 % of it.
    samples: usize,
    write_json: bool,
}

impl Knobs {
    fn samples_big(&self) -> usize {
        (self.samples * 3 / 10).max(1)
    }
    fn warmup(&self) -> usize {
        (self.samples / 20).clamp(5, 50)
    }
}

// ---------------------------------------------------------------------------------------------
// The data set
// ---------------------------------------------------------------------------------------------

struct SeriesPlan {
    uid: String,
    sops: Vec<String>,
}

struct StudyPlan {
    uid: String,
    series: Vec<SeriesPlan>,
    /// Part 10 bytes of all its instances (filled in while generating).
    bytes: u64,
}

/// A `2.25.` UID unique to this run and (kind, index).
fn uid(run_id: u64, kind: u8, index: usize) -> String {
    let v = ((run_id as u128) << 64) | ((kind as u128) << 56) | index as u128;
    format!("2.25.{v}")
}

/// Study A (the metadata and frame series) and study B (the 1 GB retrieve).
fn plan(k: &Knobs) -> Vec<StudyPlan> {
    let run_id: u64 = rand::random();
    let b_per = k.b_instances.div_ceil(k.b_series);
    let b_sizes: Vec<usize> = (0..k.b_series)
        .map(|i| b_per.min(k.b_instances.saturating_sub(i * b_per)))
        .filter(|&n| n > 0)
        .collect();
    let mut series_n = 0;
    let mut sop_n = 0;
    [k.a_series.to_vec(), b_sizes]
        .into_iter()
        .enumerate()
        .map(|(st, sizes)| StudyPlan {
            uid: uid(run_id, 1, st),
            series: sizes
                .into_iter()
                .map(|n| {
                    series_n += 1;
                    SeriesPlan {
                        uid: uid(run_id, 2, series_n),
                        sops: (0..n)
                            .map(|_| {
                                sop_n += 1;
                                uid(run_id, 3, sop_n)
                            })
                            .collect(),
                    }
                })
                .collect(),
            bytes: 0,
        })
        .collect()
}

/// Instance `slice` of series `se` of study `st`, as Part 10 bytes (Explicit VR Little Endian).
fn instance(studies: &[StudyPlan], st: usize, se: usize, slice: usize, n: usize) -> Vec<u8> {
    let study = &studies[st];
    let (name, id, birth_date, sex) = if st == 0 {
        ("Bench^Alice", "WADO-000", "19700101", "F")
    } else {
        ("Bench^Bob", "WADO-001", "19820615", "M")
    };
    common::ct_instance(&CtSpec {
        study_uid: study.uid.clone(),
        series_uid: study.series[se].uid.clone(),
        sop_uid: study.series[se].sops[slice].clone(),
        frame_of_reference_uid: format!("{}.1", study.uid),
        study_date: if st == 0 { "20240312" } else { "20240415" }.into(),
        study_id: (st + 1).to_string(),
        accession_number: format!("WADO{st:05}"),
        series_description: format!("AXIAL 0.625mm #{}", se + 1),
        patient_name: name.into(),
        patient_id: id.into(),
        patient_birth_date: birth_date.into(),
        patient_sex: sex.into(),
        series_number: se as u32 + 1,
        instance_number: slice as u32 + 1,
        slice_z: -200.0 + slice as f64 * 0.625,
        // Spread the per-slice seeds over the LCG's state space.
        seed: (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
    })
}

// ---------------------------------------------------------------------------------------------
// STOW (setup)
// ---------------------------------------------------------------------------------------------

struct StowStats {
    instances: usize,
    requests: usize,
    payload: u64,
    wall: f64,
}

/// Generates every instance (one thread) and STOWs them `per_request` at a time from
/// `clients` threads through a short queue, so at most a few bodies are in memory.
fn stow(url: &str, token: &str, studies: &mut [StudyPlan], k: &Knobs) -> Res<StowStats> {
    let mut jobs = Vec::new();
    for (st, study) in studies.iter().enumerate() {
        for (se, series) in study.series.iter().enumerate() {
            for slice in 0..series.sops.len() {
                jobs.push((st, se, slice, jobs.len()));
            }
        }
    }
    let (tx, rx) = sync_channel::<(usize, Vec<u8>)>(k.clients * 2);
    let rx = Arc::new(Mutex::new(rx));
    let endpoint = format!("{url}/dicom-web/studies");
    let start = Instant::now();
    let plan: &[StudyPlan] = studies;
    let (per_study, failures, requests) = std::thread::scope(|s| {
        let generator = s.spawn(move || {
            let mut per_study = vec![0u64; plan.len()];
            let mut requests = 0;
            for (r, chunk) in jobs.chunks(k.per_request).enumerate() {
                let mut body = Vec::with_capacity((FRAME_BYTES + 8192) * chunk.len());
                for &(st, se, slice, n) in chunk {
                    let part10 = instance(plan, st, se, slice, n);
                    per_study[st] += part10.len() as u64;
                    let _ = write!(
                        body,
                        "--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n"
                    );
                    body.extend_from_slice(&part10);
                    body.extend_from_slice(b"\r\n");
                }
                let _ = write!(body, "--{BOUNDARY}--\r\n");
                requests += 1;
                if tx.send((r, body)).is_err() {
                    break; // every client has given up
                }
            }
            (per_study, requests)
        });
        let clients: Vec<_> = (0..k.clients)
            .map(|_| {
                let rx = rx.clone();
                let endpoint = endpoint.clone();
                s.spawn(move || stow_client(&rx, &endpoint, token))
            })
            .collect();
        drop(rx);
        let mut failures: Vec<String> = Vec::new();
        for c in clients {
            match c.join() {
                Ok(f) => failures.extend(f),
                Err(_) => failures.push("a STOW client thread panicked".into()),
            }
        }
        let (per_study, requests) = generator
            .join()
            .unwrap_or_else(|_| (Vec::new(), usize::MAX));
        (per_study, failures, requests)
    });
    let wall = start.elapsed().as_secs_f64();
    if requests == usize::MAX {
        return Err("the instance generator panicked".into());
    }
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(5).map(String::as_str).collect();
        return Err(format!(
            "{} STOW request(s) failed: {}",
            failures.len(),
            shown.join("; ")
        ));
    }
    for (study, bytes) in studies.iter_mut().zip(&per_study) {
        study.bytes = *bytes;
    }
    Ok(StowStats {
        instances: studies
            .iter()
            .flat_map(|s| &s.series)
            .map(|s| s.sops.len())
            .sum(),
        requests,
        payload: per_study.iter().sum(),
        wall,
    })
}

/// One STOW client: post bodies until the queue is closed. Returns failure descriptions; stops
/// at the first one (the queue then closes once every client has stopped).
fn stow_client(rx: &Mutex<Receiver<(usize, Vec<u8>)>>, url: &str, token: &str) -> Vec<String> {
    let http = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
    {
        Ok(c) => c,
        Err(e) => return vec![format!("cannot build an HTTP client: {e}")],
    };
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    loop {
        // The lock is released before the request is sent.
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return vec!["the STOW queue lock is poisoned".into()],
        };
        let Ok((i, body)) = job else {
            return Vec::new();
        };
        let result = http
            .post(url)
            .header("Content-Type", &content_type)
            .header("Accept", "application/dicom+json")
            .header("Authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .and_then(|r| {
                let status = r.status();
                r.bytes().map(|b| (status, b))
            });
        match result {
            Ok((status, _)) if status.as_u16() == 200 => {}
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                return vec![format!("request {i}: HTTP {status}: {text}")];
            }
            Err(e) => return vec![format!("request {i}: {e}")],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// One streamed download: status, bytes of body, seconds from send to the last byte.
struct Download {
    status: u16,
    content_type: String,
    bytes: u64,
    secs: f64,
}

/// GETs `url` and reads the body to the end through `buf`, counting bytes (never holding it).
fn download(
    http: &reqwest::blocking::Client,
    url: &str,
    headers: &[(&str, &str)],
    buf: &mut [u8],
) -> Res<Download> {
    let mut req = http.get(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let t = Instant::now();
    let mut r = req.send().map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut bytes = 0u64;
    loop {
        match r.read(buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("GET {url}: reading the body: {e}")),
        }
    }
    Ok(Download {
        status,
        content_type,
        bytes,
        secs: t.elapsed().as_secs_f64(),
    })
}

/// Throughput of repeated downloads (10^6 bytes per MB, 10^9 per GB).
struct Throughput {
    name: String,
    accept: String,
    bytes: u64,
    runs: Vec<f64>,
    /// (user, system) CPU seconds of the server and of this process over the measured runs.
    server_cpu: Option<(f64, f64)>,
    client_cpu: Option<(f64, f64)>,
    wall: f64,
    /// The server's VmRSS (kB) after each download, the unmeasured one first.
    server_rss_kib: Vec<u64>,
    /// Bytes the server read from the block layer over the measured runs (0: all from the
    /// page cache).
    server_disk_read: Option<u64>,
}

impl Throughput {
    fn mbs(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .runs
            .iter()
            .map(|s| self.bytes as f64 / 1e6 / s)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median_mbs(&self) -> f64 {
        median(&self.mbs())
    }
    fn min_mbs(&self) -> f64 {
        self.mbs().first().copied().unwrap_or(f64::NAN)
    }
    fn max_mbs(&self) -> f64 {
        self.mbs().last().copied().unwrap_or(f64::NAN)
    }
    fn cpu_pct(cpu: Option<(f64, f64)>, wall: f64) -> Option<f64> {
        cpu.map(|(u, s)| (u + s) / wall * 100.0)
    }
    fn json(&self) -> Json {
        json!({
            "name": self.name,
            "accept": self.accept,
            "body_bytes": self.bytes,
            "runs_s": self.runs,
            "mb_per_s_median": self.median_mbs(),
            "mb_per_s_min": self.min_mbs(),
            "mb_per_s_max": self.max_mbs(),
            "gb_per_s_median": self.median_mbs() / 1e3,
            "gb_per_s_min": self.min_mbs() / 1e3,
            "gb_per_s_max": self.max_mbs() / 1e3,
            "server_cpu_user_s": self.server_cpu.map(|c| c.0),
            "server_cpu_sys_s": self.server_cpu.map(|c| c.1),
            "server_cpu_pct_of_one_core": Self::cpu_pct(self.server_cpu, self.wall),
            "client_cpu_user_s": self.client_cpu.map(|c| c.0),
            "client_cpu_sys_s": self.client_cpu.map(|c| c.1),
            "client_cpu_pct_of_one_core": Self::cpu_pct(self.client_cpu, self.wall),
            "server_rss_after_each_kib": self.server_rss_kib,
            "server_disk_read_bytes": self.server_disk_read,
        })
    }
}

/// One unmeasured download, then `runs` measured ones; each must be a 200 of at least
/// `min_bytes` with a Content-Type starting with `type_prefix`, and all must be the same size.
#[allow(clippy::too_many_arguments)]
fn throughput(
    http: &reqwest::blocking::Client,
    name: &str,
    url: &str,
    headers: &[(&str, &str)],
    min_bytes: u64,
    type_prefix: &str,
    runs: usize,
    server_pid: Option<u32>,
) -> Res<Throughput> {
    let mut buf = vec![0u8; READ_BUF];
    let check = |d: &Download| -> Res<()> {
        if d.status != 200 {
            return Err(format!("{name}: GET {url}: HTTP {}", d.status));
        }
        if d.bytes < min_bytes {
            return Err(format!(
                "{name}: GET {url}: {} bytes, expected at least {min_bytes}",
                d.bytes
            ));
        }
        if !d.content_type.starts_with(type_prefix) {
            return Err(format!(
                "{name}: GET {url}: Content-Type {:?}, expected {type_prefix}...",
                d.content_type
            ));
        }
        Ok(())
    };
    let rss = || server_pid.and_then(|p| proc_status_kib(p, "VmRSS:"));
    println!("measuring {name}: 1 unmeasured + {runs} runs");
    let warm = download(http, url, headers, &mut buf)?;
    check(&warm)?;
    let mut server_rss_kib: Vec<u64> = rss().into_iter().collect();
    let me = std::process::id();
    let (s0, c0) = (server_pid.and_then(proc_cpu), proc_cpu(me));
    let r0 = server_pid.and_then(|p| proc_io(p, "read_bytes:"));
    let start = Instant::now();
    let mut secs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let d = download(http, url, headers, &mut buf)?;
        check(&d)?;
        if d.bytes != warm.bytes {
            return Err(format!(
                "{name}: GET {url}: {} bytes, the first retrieve had {}",
                d.bytes, warm.bytes
            ));
        }
        secs.push(d.secs);
        server_rss_kib.extend(rss());
    }
    let wall = start.elapsed().as_secs_f64();
    let (s1, c1) = (server_pid.and_then(proc_cpu), proc_cpu(me));
    let r1 = server_pid.and_then(|p| proc_io(p, "read_bytes:"));
    let diff = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    Ok(Throughput {
        name: name.into(),
        accept: headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("accept"))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        bytes: warm.bytes,
        runs: secs,
        server_cpu: diff(s0, s1),
        client_cpu: diff(c0, c1),
        wall,
        server_rss_kib,
        server_disk_read: r0.zip(r1).map(|(a, b)| b.saturating_sub(a)),
    })
}

/// One small response, read whole.
struct Reply {
    status: u16,
    content_type: String,
    content_encoding: String,
    body: bytes::Bytes,
}

fn get(http: &reqwest::blocking::Client, url: &str, headers: &[(&str, &str)]) -> Res<Reply> {
    let mut req = http.get(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().map_err(|e| format!("GET {url}: {e}"))?;
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let status = r.status().as_u16();
    let (content_type, content_encoding) = (header("content-type"), header("content-encoding"));
    let body = r
        .bytes()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok(Reply {
        status,
        content_type,
        content_encoding,
        body,
    })
}

/// Latency percentiles of one kind of request.
struct Latency {
    name: String,
    example: String,
    accept: String,
    gzip: bool,
    samples: usize,
    warmup: usize,
    body_bytes_min: usize,
    body_bytes_max: usize,
    /// Milliseconds, sorted.
    ms: Vec<f64>,
    /// Milliseconds, in request order.
    raw: Vec<f64>,
}

impl Latency {
    fn p(&self, q: f64) -> f64 {
        percentile(&self.ms, q)
    }
    fn json(&self) -> Json {
        let mean = self.ms.iter().sum::<f64>() / self.ms.len().max(1) as f64;
        json!({
            "name": self.name,
            "example": self.example,
            "accept": self.accept,
            "accept_encoding_gzip": self.gzip,
            "samples": self.samples,
            "warmup": self.warmup,
            "body_bytes_min": self.body_bytes_min,
            "body_bytes_max": self.body_bytes_max,
            "p50_ms": self.p(0.50),
            "p90_ms": self.p(0.90),
            "p99_ms": self.p(0.99),
            "mean_ms": mean,
            "min_ms": self.ms.first(),
            "max_ms": self.ms.last(),
            "over_30ms": self.ms.iter().filter(|&&m| m >= 30.0).count(),
            "samples_ms": self.raw.iter().map(|m| (m * 1e3).round() / 1e3).collect::<Vec<_>>(),
        })
    }
}

/// `warmup` unmeasured requests (checked with `check_warm`), then `samples` measured ones
/// (each checked with `check`). `url(i)` gives request i (warm-ups count from `samples`).
#[allow(clippy::too_many_arguments)]
fn latency(
    http: &reqwest::blocking::Client,
    name: &str,
    url: &dyn Fn(usize) -> String,
    headers: &[(&str, &str)],
    samples: usize,
    warmup: usize,
    check_warm: &dyn Fn(&Reply) -> Res<()>,
    check: &dyn Fn(&Reply) -> Res<()>,
) -> Res<Latency> {
    println!("measuring {name}: {warmup} warm-up + {samples} samples");
    for i in 0..warmup {
        let u = url(samples + i);
        let r = get(http, &u, headers)?;
        check_warm(&r).map_err(|e| format!("{name}: GET {u}: {e}"))?;
    }
    let mut ms = Vec::with_capacity(samples);
    let (mut bmin, mut bmax) = (usize::MAX, 0);
    for i in 0..samples {
        let u = url(i);
        let t = Instant::now();
        let r = get(http, &u, headers)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        check(&r).map_err(|e| format!("{name}: GET {u}: {e}"))?;
        bmin = bmin.min(r.body.len());
        bmax = bmax.max(r.body.len());
    }
    let raw = ms.clone();
    ms.sort_by(f64::total_cmp);
    Ok(Latency {
        name: name.into(),
        example: url(0),
        accept: headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("accept"))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        gzip: headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("accept-encoding") && v.contains("gzip")),
        samples,
        warmup,
        body_bytes_min: bmin,
        body_bytes_max: bmax,
        ms,
        raw,
    })
}

/// A status-200 check with a message carrying the start of the body otherwise.
fn ok_200(r: &Reply) -> Res<()> {
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        ))
    }
}

/// Series metadata: the warm-up checks the JSON (gunzipped if need be) holds `instances`
/// objects and records the body size; every measured reply must be a 200 of that size.
#[allow(clippy::too_many_arguments)]
fn metadata_row(
    http: &reqwest::blocking::Client,
    name: &str,
    url: &str,
    instances: usize,
    gzip: bool,
    samples: usize,
    warmup: usize,
    auth: &str,
) -> Res<Latency> {
    let mut headers = vec![("Accept", ACCEPT_METADATA), ("Authorization", auth)];
    if gzip {
        headers.push(("Accept-Encoding", "gzip"));
    }
    let size = std::sync::atomic::AtomicUsize::new(0);
    let check_warm = |r: &Reply| -> Res<()> {
        ok_200(r)?;
        let encoded = r.content_encoding.eq_ignore_ascii_case("gzip");
        if encoded != gzip {
            return Err(format!(
                "Content-Encoding {:?} with{} Accept-Encoding: gzip",
                r.content_encoding,
                if gzip { "" } else { "out" }
            ));
        }
        let json: Json = if encoded {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut plain)
                .map_err(|e| format!("bad gzip body: {e}"))?;
            serde_json::from_slice(&plain)
        } else {
            serde_json::from_slice(&r.body)
        }
        .map_err(|e| format!("invalid JSON: {e}"))?;
        match json.as_array().map(Vec::len) {
            Some(n) if n == instances => {}
            Some(n) => {
                return Err(format!(
                    "{n} instances in the metadata, expected {instances}"
                ));
            }
            None => return Err("the metadata is not a JSON array".into()),
        }
        size.store(r.body.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    };
    let check = |r: &Reply| -> Res<()> {
        ok_200(r)?;
        let want = size.load(std::sync::atomic::Ordering::Relaxed);
        if r.body.len() != want {
            return Err(format!(
                "{} bytes of metadata, the warm-up had {want}",
                r.body.len()
            ));
        }
        Ok(())
    };
    let url = url.to_owned();
    latency(
        http,
        name,
        &|_| url.clone(),
        &headers,
        samples,
        warmup.max(1),
        &check_warm,
        &check,
    )
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn run(full: bool) -> Res<()> {
    let Some(bin) = server_binary("wado", full)? else {
        return Ok(());
    };
    let k = if full {
        Knobs {
            a_series: [100, 600],
            b_instances: env_usize("WADO_BENCH_STUDY_B_INSTANCES", 2000)?,
            b_series: 4,
            per_request: 10,
            clients: env_usize("LIGHTBOX_BENCH_CLIENTS", 2)?,
            runs: env_usize("WADO_BENCH_RUNS", 5)?,
            samples: env_usize("WADO_BENCH_SAMPLES", 1000)?,
            write_json: true,
        }
    } else {
        println!(
            "wado: smoke run (tiny studies, 20 samples); run with cargo bench --bench wado for the real figures"
        );
        Knobs {
            a_series: [10, 20],
            b_instances: 20,
            b_series: 4,
            per_request: 10,
            clients: 2,
            runs: 1,
            samples: 20,
            write_json: false,
        }
    };

    // 1. A fresh directory on the file system the data will live on.
    let base = std::env::var_os("LIGHTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-data"));
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    // Dropped last (declared first): removes the data once the server is gone.
    let bench_dir = tempfile::Builder::new()
        .prefix("wado-")
        .tempdir_in(&base)
        .map_err(|e| format!("cannot create a directory under {}: {e}", base.display()))?;
    let data = bench_dir.path().join("data");

    // 2. Server.
    let mut server = ServerGuard::start(&bin, &data)?;
    let pid = server.pid();
    let url = server.url.clone();
    println!("server {} (pid {pid}) on {url}", bin.display());
    let auth = format!("Bearer {}", server.token);

    // 3. Data: generated and STOWed (setup, not the point of this bench).
    let mut studies = plan(&k);
    let st = stow(&url, &server.token, &mut studies, &k)?;
    println!(
        "STOW (setup): {} instances, {:.1} MB of Part 10 in {} requests of {} from {} clients: \
         {:.1} s, {:.1} instances/s, {:.1} MB/s (generation overlapped on one thread)",
        st.instances,
        st.payload as f64 / 1e6,
        st.requests,
        k.per_request,
        k.clients,
        st.wall,
        st.instances as f64 / st.wall,
        st.payload as f64 / 1e6 / st.wall
    );

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let dw = format!("{url}/dicom-web");
    let (a, b) = (&studies[0], &studies[1]);
    let b_instances: usize = b.series.iter().map(|s| s.sops.len()).sum();

    // 4. Whole-study retrieves of study B, RSS around them.
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let hwm_before = proc_status_kib(pid, "VmHWM:");
    // Since Linux 4.0, writing 5 to clear_refs resets VmHWM to the current RSS: the peak
    // after the retrieves is then the peak during them.
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let study_b = format!("{dw}/studies/{}", b.uid);
    println!(
        "retrieving study B ({b_instances} instances, {:.1} MB of Part 10): 1 + {} runs per Accept",
        b.bytes as f64 / 1e6,
        k.runs
    );
    let any = throughput(
        &http,
        "study retrieve, transfer-syntax=*",
        &study_b,
        &[("Accept", ACCEPT_STUDY_ANY), ("Authorization", &auth)],
        b.bytes,
        "multipart/related",
        k.runs,
        Some(pid),
    )?;
    let default = throughput(
        &http,
        "study retrieve, default Accept",
        &study_b,
        &[("Accept", ACCEPT_STUDY_DEFAULT), ("Authorization", &auth)],
        b.bytes,
        "multipart/related",
        k.runs,
        Some(pid),
    )?;
    let rss_after = proc_status_kib(pid, "VmRSS:");
    let hwm_after = proc_status_kib(pid, "VmHWM:");
    // Without the reset, VmHWM may still be the STOW peak: the increase is then a lower bound.
    let rss_increase = match (hwm_after, rss_before, hwm_before) {
        (Some(h), Some(r), _) if hwm_reset => Some(h as i64 - r as i64),
        (Some(h), _, Some(hb)) => Some(h as i64 - hb as i64),
        _ => None,
    };

    // 5. Loopback ceiling: the same client reading a static body of the same size.
    let ceiling = match static_server(any.bytes, STATIC_CHUNK) {
        Ok(static_url) => Some(throughput(
            &http,
            "loopback ceiling (static body)",
            &static_url,
            &[],
            any.bytes,
            "application/octet-stream",
            k.runs,
            None,
        )?),
        Err(e) => {
            println!("loopback ceiling: unavailable: {e}");
            None
        }
    };

    // 6. Series metadata.
    let warmup = k.warmup();
    let mut meta = Vec::new();
    for (series, samples) in a.series.iter().zip([k.samples, k.samples_big()]) {
        let n = series.sops.len();
        let u = format!("{dw}/studies/{}/series/{}/metadata", a.uid, series.uid);
        for gzip in [false, true] {
            let name = format!(
                "series metadata, {n} instances{}",
                if gzip { ", gzip" } else { "" }
            );
            meta.push(metadata_row(
                &http, &name, &u, n, gzip, samples, warmup, &auth,
            )?);
        }
    }

    // 7. One frame of a different instance each time (study A then B).
    let all: Vec<(&str, &str, &str)> = studies
        .iter()
        .flat_map(|st| {
            st.series.iter().flat_map(move |se| {
                se.sops
                    .iter()
                    .map(move |sop| (st.uid.as_str(), se.uid.as_str(), sop.as_str()))
            })
        })
        .collect();
    let frame_url = |i: usize| {
        let (st, se, sop) = all[i % all.len()];
        format!("{dw}/studies/{st}/series/{se}/instances/{sop}/frames/1")
    };
    let frame_check = |r: &Reply| -> Res<()> {
        ok_200(r)?;
        if !r.content_type.starts_with("multipart/related") {
            return Err(format!("Content-Type {:?}", r.content_type));
        }
        if r.body.len() < FRAME_BYTES {
            return Err(format!(
                "{} bytes, expected at least {FRAME_BYTES}",
                r.body.len()
            ));
        }
        Ok(())
    };
    let frame = latency(
        &http,
        "one frame, 512x512 16-bit",
        &frame_url,
        &[("Accept", ACCEPT_FRAME), ("Authorization", &auth)],
        k.samples,
        warmup,
        &frame_check,
        &frame_check,
    )?;
    let distinct_frames = k.samples.min(all.len());

    let rss_end = proc_status_kib(pid, "VmRSS:");
    server.stop();
    if let Some(code) = server.exit_code
        && code != 0
    {
        println!("note: the server exited with status {code} after SIGTERM");
    }

    // 8. Report.
    let mb =
        |kib: Option<u64>| kib.map_or("n/a".into(), |v| format!("{:.0} MB", v as f64 / 1024.0));
    let gbs = |t: &Throughput| {
        format!(
            "{:.2} GB/s median ({:.0} MB/s; min {:.2}, max {:.2} GB/s; runs: {})",
            t.median_mbs() / 1e3,
            t.median_mbs(),
            t.min_mbs() / 1e3,
            t.max_mbs() / 1e3,
            t.runs.len()
        )
    };
    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    let body_mb = any.bytes as f64 / 1e6;
    println!();
    println!("WADO-RS (one keep-alive loopback connection, reqwest blocking)");
    println!();
    println!("| Measurement | Result | Target | Met | {ORTHANC} |");
    println!("|---|---|---|---|---|");
    for (t, what) in [
        (&any, "`transfer-syntax=*`"),
        (
            &default,
            "default Accept (Explicit VR LE as stored, no conversion)",
        ),
    ] {
        println!(
            "| Study retrieve, {b_instances} instances, {body_mb:.0} MB body, page cache, {what} | {} | ≥ {TARGET_RETRIEVE_GBS} GB/s | {} | {REF_RETRIEVE} |",
            gbs(t),
            met(t.median_mbs() / 1e3 >= TARGET_RETRIEVE_GBS)
        );
    }
    if let Some(c) = &ceiling {
        println!(
            "| Loopback ceiling: same client, static {body_mb:.0} MB body from a thread of the bench | {} | — | — | — |",
            gbs(c)
        );
    }
    println!(
        "| Server peak RSS during the {body_mb:.0} MB retrieves (VmHWM{}) | {} ({} before: {}{} MB) | flat (streamed) | — | — |",
        if hwm_reset {
            ", reset before"
        } else {
            " since start"
        },
        mb(hwm_after),
        if hwm_reset { "RSS" } else { "peak" },
        rss_increase.map_or("", |d| if d >= 0 { "+" } else { "" }),
        rss_increase.map_or("n/a".into(), |d| format!("{:.0}", d as f64 / 1024.0)),
    );
    for m in &meta {
        let big = m
            .name
            .contains(&format!("{} instances", a.series[1].sops.len()));
        let target = if big {
            TARGET_META_600_MS
        } else {
            TARGET_META_100_MS
        };
        println!(
            "| {} ({:.0} KB{}) | p50 {:.2} ms, p99 {:.2} ms ({} samples) | ≤ {target} ms (p50) | {} | {} |",
            capitalise(&m.name),
            m.body_bytes_max as f64 / 1e3,
            if m.gzip { " gzip" } else { " JSON" },
            m.p(0.5),
            m.p(0.99),
            m.samples,
            met(m.p(0.5) <= target),
            if big { "—" } else { REF_META_100 }
        );
    }
    println!(
        "| One frame, 512×512 16-bit, `/frames/1` multipart ({} B body) | p50 {:.2} ms, p99 {:.2} ms ({} samples, {distinct_frames} instances) | ≤ {TARGET_FRAME_MS} ms p50 | {} | {REF_FRAME} |",
        frame.body_bytes_max,
        frame.p(0.5),
        frame.p(0.99),
        frame.samples,
        met(frame.p(0.5) <= TARGET_FRAME_MS)
    );
    println!();
    for t in [&any, &default].into_iter().chain(ceiling.as_ref()) {
        let pct = |c| Throughput::cpu_pct(c, t.wall).map_or("n/a".into(), |p| format!("{p:.0}%"));
        println!(
            "CPU during {}: server {} of one core, bench process (client{}) {} ({} cores here)",
            t.name,
            pct(t.server_cpu),
            if t.server_cpu.is_none() {
                " + static server"
            } else {
                ""
            },
            pct(t.client_cpu),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    }
    for t in [&any, &default] {
        let list: Vec<String> = t
            .server_rss_kib
            .iter()
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect();
        println!(
            "server VmRSS after each {} (unmeasured first): {} MB; read from disk over the timed runs: {}",
            t.name,
            list.join(", "),
            t.server_disk_read
                .map_or("n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
        );
    }
    println!(
        "server RSS: {} before the retrieves, {} after them, {} at the end; VmHWM {} before",
        mb(rss_before),
        mb(rss_after),
        mb(rss_end),
        mb(hwm_before)
    );

    if k.write_json {
        let doc = json!({
            "bench": "wado",
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "binary": bin.display().to_string(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "stow": {
                "instances": st.instances,
                "requests": st.requests,
                "instances_per_request": k.per_request,
                "clients": k.clients,
                "payload_bytes": st.payload,
                "wall_s": st.wall,
                "instances_per_s": st.instances as f64 / st.wall,
                "mb_per_s": st.payload as f64 / 1e6 / st.wall,
            },
            "study_a": {
                "series_instances": a.series.iter().map(|s| s.sops.len()).collect::<Vec<_>>(),
                "payload_bytes": a.bytes,
            },
            "study_b": {
                "instances": b_instances,
                "series": b.series.len(),
                "payload_bytes": b.bytes,
            },
            "retrieve": [any.json(), default.json()],
            "loopback_ceiling": ceiling.as_ref().map(Throughput::json),
            "rss": {
                "vm_rss_before_kib": rss_before,
                "vm_hwm_before_kib": hwm_before,
                "vm_hwm_reset_before_retrieves": hwm_reset,
                "vm_rss_after_kib": rss_after,
                "vm_hwm_after_kib": hwm_after,
                "increase_kib": rss_increase,
                "vm_rss_end_kib": rss_end,
            },
            "metadata": meta.iter().map(Latency::json).collect::<Vec<_>>(),
            "frame": frame.json(),
            "targets": {
                "retrieve_gb_per_s": TARGET_RETRIEVE_GBS,
                "series_metadata_100_ms": TARGET_META_100_MS,
                "series_metadata_600_ms": TARGET_META_600_MS,
                "frame_p50_ms": TARGET_FRAME_MS,
            },
            "reference": {
                "server": ORTHANC,
                "retrieve": REF_RETRIEVE,
                "series_metadata_100": REF_META_100,
                "frame": REF_FRAME,
            },
        });
        let path = base.join("wado.json");
        match std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
            Ok(()) => println!("results: {}", path.display()),
            Err(e) => println!("results: not written to {}: {e}", path.display()),
        }
    }
    drop(server);
    drop(bench_dir);
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// Loopback ceiling: a minimal HTTP/1.1 server for one static body
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------
