//! STOW-RS load test against the release binary (harness = false).
//!
//! `cargo build --release && cargo bench --bench stow_load` generates synthetic 512×512 16-bit
//! CT instances in memory, POSTs them as multipart/related requests from concurrent client
//! threads, and reports throughput next to the disk's own durable sequential write rate
//! (`dd ... conv=fdatasync`). Timings are reported, never asserted. See benches/README.md.
//!
//! Without `--bench` in the arguments (`cargo test --benches`) it runs a tiny smoke version
//! (20 instances, no dd, no JSON) when the release binary exists, and otherwise exits 0.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::CtSpec;
use common::server::{
    Res, ServerGuard, dd_rate, env_usize, proc_cpu, proc_io, server_binary, target_dir,
};

const PATIENTS: usize = 2;
const STUDIES_PER_PATIENT: usize = 3;
const SERIES_PER_STUDY: usize = 2;
const SLICES_PER_SERIES: usize = 100;
const BOUNDARY: &str = "lightbox-stow-load-6f1c2a9e84d34b7c";
const TARGET_RATIO: f64 = 0.85;
const REFERENCE: &str = "Orthanc 1.10.1 + DICOMweb 1.7: 79 MB/s (150 instances/s)";
const DD_MIB: u64 = 1024;

/// A request number and its multipart body.
type Job = (usize, Vec<u8>);

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    match run(full) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("stow_load: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Knobs {
    instances: usize,
    clients: usize,
    per_request: usize,
}

/// Returns Ok(true) when every request succeeded.
fn run(full: bool) -> Res<bool> {
    let Some(bin) = server_binary("stow_load", full)? else {
        return Ok(true);
    };
    let knobs = if full {
        Knobs {
            instances: env_usize("LIGHTBOX_BENCH_INSTANCES", 1200)?,
            clients: env_usize("LIGHTBOX_BENCH_CLIENTS", 2)?,
            per_request: env_usize("LIGHTBOX_BENCH_PER_REQUEST", 10)?,
        }
    } else {
        println!(
            "stow_load: smoke run (20 instances); run with cargo bench --bench stow_load for the real figures"
        );
        Knobs {
            instances: 20,
            clients: 2,
            per_request: 10,
        }
    };

    // 1. Everything in memory before any timing.
    let t = Instant::now();
    let (bodies, payload_bytes) = build_bodies(&knobs)?;
    println!(
        "generated {} instances ({:.1} MB of Part 10) in {} requests of up to {} in {:.1} s",
        knobs.instances,
        payload_bytes as f64 / 1e6,
        bodies.len(),
        knobs.per_request,
        t.elapsed().as_secs_f64()
    );

    // 2. A fresh directory on the file system the data will live on.
    let base = std::env::var_os("LIGHTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-data"));
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    // Dropped last (declared first): removes the data once the server is gone.
    let bench_dir = tempfile::Builder::new()
        .prefix("stow-load-")
        .tempdir_in(&base)
        .map_err(|e| format!("cannot create a directory under {}: {e}", base.display()))?;
    let data = bench_dir.path().join("data");

    // 3. Server.
    let mut server = ServerGuard::start(&bin, &data)?;
    println!(
        "server {} (pid {}) on {}",
        bin.display(),
        server.pid(),
        server.url
    );
    let cpu_before = proc_cpu(server.pid());

    // 4. Load.
    let n_requests = bodies.len();
    let queue = Arc::new(Mutex::new(bodies));
    let url = format!("{}/dicom-web/studies", server.url);
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    // The disk's durable write rate on an idle disk, just before the load (a virtual disk's
    // write cache makes this the optimistic figure; the one after the load is the sustained one).
    let dd_before = if full {
        dd_rate(bench_dir.path(), DD_MIB).ok()
    } else {
        None
    };
    let start = Instant::now();
    let handles: Vec<_> = (0..knobs.clients)
        .map(|_| {
            let queue = queue.clone();
            let url = url.clone();
            let content_type = content_type.clone();
            let token = server.token.clone();
            std::thread::spawn(move || client(&queue, &url, &content_type, &token))
        })
        .collect();
    let mut latencies: Vec<f64> = Vec::with_capacity(n_requests);
    let mut failures: Vec<String> = Vec::new();
    for h in handles {
        match h.join() {
            Ok((lat, fail)) => {
                latencies.extend(lat);
                failures.extend(fail);
            }
            Err(_) => failures.push("a client thread panicked".into()),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu_after = proc_cpu(server.pid());
    let io = proc_io(server.pid(), "write_bytes:");
    server.stop();
    if let Some(code) = server.exit_code
        && code != 0
    {
        println!("note: the server exited with status {code} after SIGTERM");
    }

    // 5. Report.
    latencies.sort_by(f64::total_cmp);
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let ok_instances = knobs.instances; // every request must succeed for the figures to count
    let inst_per_s = ok_instances as f64 / wall;
    let mb_per_s = payload_bytes as f64 / 1e6 / wall;
    println!();
    println!(
        "STOW-RS load ({} clients, {} instances/request)",
        knobs.clients, knobs.per_request
    );
    println!("  instances        {ok_instances}");
    println!(
        "  payload          {:.1} MB (Part 10 bytes, 10^6)",
        payload_bytes as f64 / 1e6
    );
    println!(
        "  requests         {n_requests} ({} failed)",
        failures.len()
    );
    println!("  wall time        {wall:.2} s");
    println!("  throughput       {inst_per_s:.1} instances/s, {mb_per_s:.1} MB/s");
    println!(
        "  latency/request  p50 {:.0} ms, p99 {:.0} ms",
        p50 * 1e3,
        p99 * 1e3
    );
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => {
            let (user, sys) = (a.0 - b.0, a.1 - b.1);
            println!(
                "  server CPU       user {user:.2} s + sys {sys:.2} s = {:.0}% of one core over the run",
                (user + sys) / wall * 100.0
            );
            Some((user, sys))
        }
        _ => None,
    };
    if let Some(w) = io {
        println!(
            "  server wrote     {:.1} MB to the block layer (/proc/<pid>/io write_bytes)",
            w as f64 / 1e6
        );
    }
    for f in &failures {
        println!("  FAILED: {f}");
    }

    let dd = if full {
        match dd_rate(bench_dir.path(), DD_MIB) {
            Ok(dd) => Some(dd),
            Err(e) => {
                println!("  dd               unavailable: {e}");
                None
            }
        }
    } else {
        None
    };
    let ratio = dd.map(|(_, _, rate)| mb_per_s / rate);
    if let Some((bytes, secs, rate)) = dd {
        println!(
            "  dd (fdatasync)   {rate:.1} MB/s ({:.1} MB in {secs:.2} s, bs=1M count={DD_MIB})",
            bytes as f64 / 1e6
        );
    }
    if let Some(r) = ratio {
        println!("  STOW / dd        {r:.2} (target {TARGET_RATIO:.2})");
    }
    if let Some((_, _, rate)) = dd_before {
        println!(
            "  dd before load   {rate:.1} MB/s (idle disk); STOW / that {:.2}",
            mb_per_s / rate
        );
    }
    println!("  reference        {REFERENCE}");

    if full {
        let out = target_dir().join("bench-results");
        let doc = json!({
            "bench": "stow_load",
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "binary": bin.display().to_string(),
            "clients": knobs.clients,
            "instances_per_request": knobs.per_request,
            "instances": ok_instances,
            "requests": n_requests,
            "failed_requests": failures.len(),
            "failures": failures,
            "payload_bytes": payload_bytes,
            "payload_mb": payload_bytes as f64 / 1e6,
            "wall_s": wall,
            "instances_per_s": inst_per_s,
            "mb_per_s": mb_per_s,
            "latency_p50_ms": p50 * 1e3,
            "latency_p99_ms": p99 * 1e3,
            "server_cpu_user_s": cpu.map(|c| c.0),
            "server_cpu_sys_s": cpu.map(|c| c.1),
            "server_write_bytes": io,
            "dd_bytes": dd.map(|d| d.0),
            "dd_s": dd.map(|d| d.1),
            "dd_mb_per_s": dd.map(|d| d.2),
            "ratio_stow_over_dd": ratio,
            "dd_before_load_mb_per_s": dd_before.map(|d| d.2),
            "target_ratio": TARGET_RATIO,
            "reference": REFERENCE,
        });
        let path = out.join("stow_load.json");
        let written = std::fs::create_dir_all(&out).and_then(|()| {
            std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default())
        });
        match written {
            Ok(()) => println!("  results          {}", path.display()),
            Err(e) => println!("  results          not written to {}: {e}", path.display()),
        }
    }
    drop(server);
    drop(bench_dir);
    Ok(failures.is_empty())
}

/// One client thread: take request bodies until none is left. Returns latencies (s) and
/// failure descriptions.
fn client(
    queue: &Mutex<VecDeque<(usize, Vec<u8>)>>,
    url: &str,
    content_type: &str,
    token: &str,
) -> (Vec<f64>, Vec<String>) {
    let mut lat = Vec::new();
    let mut fail = Vec::new();
    let http = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            fail.push(format!("cannot build an HTTP client: {e}"));
            return (lat, fail);
        }
    };
    while let Some((i, body)) = next_job(queue) {
        let t = Instant::now();
        let result = http
            .post(url)
            .header("Content-Type", content_type)
            .header("Accept", "application/dicom+json")
            .header("Authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .and_then(|r| {
                let status = r.status();
                r.bytes().map(|b| (status, b))
            });
        lat.push(t.elapsed().as_secs_f64());
        match result {
            Ok((status, _)) if status.as_u16() == 200 => {}
            Ok((status, body)) => {
                let mut text = String::from_utf8_lossy(&body).into_owned();
                text.truncate(300);
                fail.push(format!("request {i}: HTTP {status}: {text}"));
            }
            Err(e) => fail.push(format!("request {i}: {e}")),
        }
    }
    (lat, fail)
}

/// Pop the next request body (the lock is released before the request is sent).
fn next_job(queue: &Mutex<VecDeque<Job>>) -> Option<Job> {
    queue.lock().ok()?.pop_front()
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Multipart bodies of `per_request` instances each, and the total Part 10 bytes.
fn build_bodies(k: &Knobs) -> Res<(VecDeque<Job>, u64)> {
    let run_id: u64 = rand::random();
    let mut bodies = VecDeque::new();
    let mut total = 0u64;
    let mut body = Vec::new();
    let mut in_body = 0;
    for n in 0..k.instances {
        let part10 = instance(run_id, n);
        total += part10.len() as u64;
        if in_body == 0 {
            body = Vec::with_capacity((part10.len() + 128) * k.per_request + 64);
        }
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        body.extend_from_slice(&part10);
        body.extend_from_slice(b"\r\n");
        in_body += 1;
        if in_body == k.per_request || n + 1 == k.instances {
            write!(body, "--{BOUNDARY}--\r\n").map_err(|e| e.to_string())?;
            bodies.push_back((bodies.len(), std::mem::take(&mut body)));
            in_body = 0;
        }
    }
    Ok((bodies, total))
}

/// A `2.25.` UID unique to this run and (kind, index).
fn uid(run_id: u64, kind: u8, index: usize) -> String {
    let v = ((run_id as u128) << 64) | ((kind as u128) << 56) | index as u128;
    format!("2.25.{v}")
}

/// Instance `n` of the synthetic data set (2 patients × 3 studies × 2 series × 100 slices,
/// wrapping around for larger counts), as Part 10 bytes in Explicit VR Little Endian.
fn instance(run_id: u64, n: usize) -> Vec<u8> {
    let slice = n % SLICES_PER_SERIES;
    let series_n = n / SLICES_PER_SERIES;
    let study_n = series_n / SERIES_PER_STUDY;
    let series_in_study = series_n % SERIES_PER_STUDY;
    let patient = study_n / STUDIES_PER_PATIENT % PATIENTS;
    let (name, birth_date, sex) = if patient == 0 {
        ("Bench^Alice", "19700101", "F")
    } else {
        ("Bench^Bob", "19820615", "M")
    };
    common::ct_instance(&CtSpec {
        study_uid: uid(run_id, 1, study_n),
        series_uid: uid(run_id, 2, series_n),
        sop_uid: uid(run_id, 3, n),
        frame_of_reference_uid: uid(run_id, 4, study_n),
        study_date: format!("2024{:02}{:02}", 1 + study_n % 12, 1 + study_n % 28),
        study_id: (study_n + 1).to_string(),
        accession_number: format!("ACC{study_n:05}"),
        series_description: if series_in_study == 0 {
            "AXIAL 2.5mm"
        } else {
            "AXIAL 2.5mm C+"
        }
        .into(),
        patient_name: name.into(),
        patient_id: format!("BENCH-{patient:03}"),
        patient_birth_date: birth_date.into(),
        patient_sex: sex.into(),
        series_number: series_in_study as u32 + 1,
        instance_number: slice as u32 + 1,
        slice_z: -200.0 + slice as f64 * 2.5,
        // Spread the per-slice seeds over the LCG's state space.
        seed: (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
    })
}
