//! Rendered-image and thumbnail latency against the release binary (harness = false).
//!
//! `cargo build --release && cargo bench --bench render` STOWs synthetic 512×512 16-bit CT
//! slices (benches/common) into a fresh server and measures, over one keep-alive loopback
//! connection with a bearer token (audit on, as deployed):
//! - an instance rendered to JPEG (default quality) and to PNG, rotating over the slices so that
//!   every request renders (no If-None-Match is sent, so the server's ETag does not short-cut);
//! - a cached default thumbnail of an instance and of a series (after one request made it);
//! - a 256×256 viewport rendering (decode + window + resize + JPEG);
//! - one slice compressed as 12-bit JPEG Extended by DCMTK's `dcmcjpeg +ee +bt` (when installed;
//!   "n/a" otherwise), rendered to JPEG and decoded as a WADO-RS frame (our own decoder,
//!   `server/render/jpeg12.rs`).
//!
//! Timings are reported, never asserted; status codes and media types are checked. Without
//! `--bench` (`cargo test --benches`) it runs a smoke version (20 samples) when the release
//! binary exists, and otherwise exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;

mod common;
use common::CtSpec;
use common::server::{Res, ServerGuard, server_binary, target_dir};

const ORTHANC: &str = "Orthanc 1.10.1 + DICOMweb 1.7";
const ROWS: &[(&str, f64, &str)] = &[
    ("rendered JPEG", 3.0, "6.3 ms"),
    ("rendered PNG", 10.0, "75 ms"),
    ("cached thumbnail (instance)", 1.0, "no thumbnail resource"),
    ("cached thumbnail (series)", 1.0, "no thumbnail resource"),
    ("rendered JPEG, viewport 256×256", f64::NAN, "—"),
    ("rendered JPEG, 12-bit JPEG source", f64::NAN, "—"),
    ("decoded frame, 12-bit JPEG source", f64::NAN, "—"),
];

/// `body` compressed to 12-bit JPEG Extended by `dcmcjpeg` (DCMTK), or `None` without DCMTK.
fn jpeg12(dir: &std::path::Path, body: &[u8]) -> Res<Option<Vec<u8>>> {
    let (src, dst) = (dir.join("jpeg12-src.dcm"), dir.join("jpeg12.dcm"));
    std::fs::write(&src, body).map_err(|e| format!("{}: {e}", src.display()))?;
    let out = match std::process::Command::new("dcmcjpeg")
        .args(["+ee", "+bt", "+un"])
        .arg(&src)
        .arg(&dst)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("dcmcjpeg: {e}")),
    };
    if !out.status.success() {
        return Err(format!(
            "dcmcjpeg: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::read(&dst)
        .map(Some)
        .map_err(|e| format!("{}: {e}", dst.display()))
}

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    match run(full) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render: {e}");
            ExitCode::FAILURE
        }
    }
}

fn stow(url: &str, token: &str, bodies: &[Vec<u8>]) -> Res<()> {
    const BOUNDARY: &str = "lightbox-render-bench-5c0e";
    let mut body = Vec::new();
    for b in bodies {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(b);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/dicom-web/studies"))
        .bearer_auth(token)
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        )
        .header("Accept", "application/dicom+json")
        .body(body)
        .send()
        .map_err(|e| format!("STOW: {e}"))?;
    if r.status() != 200 {
        return Err(format!("STOW answered {}", r.status()));
    }
    Ok(())
}

struct Row {
    name: &'static str,
    target_ms: f64,
    reference: &'static str,
    ms: Vec<f64>,
    bytes: usize,
}

impl Row {
    fn p(&self, q: f64) -> f64 {
        let i = ((self.ms.len() as f64 - 1.0) * q).round() as usize;
        self.ms[i.min(self.ms.len() - 1)]
    }
}

fn measure(
    http: &reqwest::blocking::Client,
    token: &str,
    url: &dyn Fn(usize) -> String,
    media: &str,
    samples: usize,
    warmup: usize,
) -> Res<(Vec<f64>, usize)> {
    let mut ms = Vec::with_capacity(samples);
    let mut bytes = 0;
    for i in 0..warmup + samples {
        let u = url(i);
        let t = Instant::now();
        let r = http
            .get(&u)
            .bearer_auth(token)
            .header("Accept", media)
            .send()
            .map_err(|e| format!("GET {u}: {e}"))?;
        let status = r.status();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = r.bytes().map_err(|e| format!("GET {u}: {e}"))?;
        let elapsed = t.elapsed().as_secs_f64() * 1e3;
        if status != 200 || !ct.starts_with(media) {
            return Err(format!(
                "GET {u}: {status} {ct}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        if i >= warmup {
            ms.push(elapsed);
            bytes = body.len();
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms, bytes))
}

fn run(full: bool) -> Res<()> {
    let Some(bin) = server_binary("render", full)? else {
        return Ok(());
    };
    let (samples, warmup, slices) = if full { (1000, 100, 50) } else { (20, 2, 4) };
    let root = std::env::var_os("LIGHTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-data"));
    let data = root.join(format!("render-{}", std::process::id()));
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let result = (|| {
        let server = ServerGuard::start(&bin, &data)?;
        let base = CtSpec::default();
        let sops: Vec<String> = (0..slices)
            .map(|i| format!("2.25.1000000000000000{:05}", i + 1))
            .collect();
        let bodies: Vec<Vec<u8>> = sops
            .iter()
            .enumerate()
            .map(|(i, sop)| {
                common::ct_instance(&CtSpec {
                    sop_uid: sop.clone(),
                    instance_number: i as u32 + 1,
                    slice_z: -200.0 + 2.5 * i as f64,
                    seed: 0x9E37_79B9_7F4A_7C15 ^ i as u64,
                    ..base.clone()
                })
            })
            .collect();
        for chunk in bodies.chunks(10) {
            stow(&server.url, &server.token, chunk)?;
        }
        let sop12 = "2.25.2000000000000000000001".to_string();
        let body12 = jpeg12(
            &data,
            &common::ct_instance(&CtSpec {
                sop_uid: sop12.clone(),
                instance_number: slices as u32 + 1,
                slice_z: 300.0,
                seed: 12,
                ..base.clone()
            }),
        )?;
        if let Some(b) = &body12 {
            stow(&server.url, &server.token, std::slice::from_ref(b))?;
        }
        let series = format!(
            "{}/dicom-web/studies/{}/series/{}",
            server.url, base.study_uid, base.series_uid
        );
        let inst = |i: usize| format!("{series}/instances/{}", sops[i % sops.len()]);
        let http = reqwest::blocking::Client::builder()
            .build()
            .map_err(|e| e.to_string())?;
        let t = &server.token;
        let jpeg = measure(
            &http,
            t,
            &|i| format!("{}/rendered", inst(i)),
            "image/jpeg",
            samples,
            warmup,
        )?;
        let png = measure(
            &http,
            t,
            &|i| format!("{}/rendered?accept=image/png", inst(i)),
            "image/png",
            samples,
            warmup,
        )?;
        // The first request of each thumbnail makes it; the warm-up covers every slice.
        let thumb = measure(
            &http,
            t,
            &|i| format!("{}/thumbnail", inst(i)),
            "image/jpeg",
            samples,
            warmup.max(slices),
        )?;
        let series_thumb = measure(
            &http,
            t,
            &|_| format!("{series}/thumbnail"),
            "image/jpeg",
            samples,
            warmup,
        )?;
        let viewport = measure(
            &http,
            t,
            &|i| format!("{}/rendered?viewport=256,256", inst(i)),
            "image/jpeg",
            samples,
            warmup,
        )?;
        let (mut r12, mut f12) = (None, None);
        if body12.is_some() {
            let inst12 = format!("{series}/instances/{sop12}");
            r12 = Some(measure(
                &http,
                t,
                &|_| format!("{inst12}/rendered"),
                "image/jpeg",
                samples,
                warmup,
            )?);
            f12 = Some(measure(
                &http,
                t,
                &|_| format!("{inst12}/frames/1"),
                "application/octet-stream",
                samples,
                warmup,
            )?);
        }
        let results = [
            Some(jpeg),
            Some(png),
            Some(thumb),
            Some(series_thumb),
            Some(viewport),
            r12,
            f12,
        ];
        let mut missing = Vec::new();
        let rows: Vec<Row> = ROWS
            .iter()
            .zip(results)
            .filter_map(|(&(name, target_ms, reference), m)| {
                let Some((ms, bytes)) = m else {
                    missing.push(name);
                    return None;
                };
                Some(Row {
                    name,
                    target_ms,
                    reference,
                    ms,
                    bytes,
                })
            })
            .collect();
        println!();
        println!(
            "Rendering, 512×512 16-bit CT (12 stored, signed, rescale, window 40/400), {slices} slices, \
             {samples} samples after {warmup} warm-up, one keep-alive connection, bearer token, audit on"
        );
        println!("| request | p50 ms | p99 ms | body bytes | target p50 | {ORTHANC} |");
        println!("|---|---|---|---|---|---|");
        for r in &rows {
            let target = if r.target_ms.is_nan() {
                "—".to_string()
            } else {
                format!("≤ {} ms", r.target_ms)
            };
            println!(
                "| {} | {:.2} | {:.2} | {} | {target} | {} |",
                r.name,
                r.p(0.5),
                r.p(0.99),
                r.bytes,
                r.reference
            );
        }
        for name in &missing {
            println!("| {name} | n/a (DCMTK's dcmcjpeg is not installed) | | | | |");
        }
        if full {
            let out = target_dir().join("bench-results");
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            let j = json!({
                "slices": slices,
                "samples": samples,
                "warmup": warmup,
                "rows": rows.iter().map(|r| json!({
                    "name": r.name,
                    "p50_ms": r.p(0.5),
                    "p99_ms": r.p(0.99),
                    "body_bytes": r.bytes,
                    "target_p50_ms": if r.target_ms.is_nan() { None } else { Some(r.target_ms) },
                    "reference": r.reference,
                })).collect::<Vec<_>>(),
            });
            let path = out.join("render.json");
            std::fs::write(&path, serde_json::to_string_pretty(&j).unwrap_or_default())
                .map_err(|e| e.to_string())?;
            println!("\nwritten: {}", path.display());
        }
        drop(server);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&data);
    result
}
