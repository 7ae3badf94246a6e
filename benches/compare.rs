//! Side-by-side benchmark: Lightbox against Orthanc + its DICOMweb plugin (harness = false).
//!
//! `benches/compare.sh` (or `cargo build --release && cargo bench --bench compare`) generates one
//! synthetic CT corpus in memory (2 patients × 3 studies × 2 series × 100 slices), then runs
//! `COMPARE_ROUNDS` rounds. Each round starts Orthanc (config from `benches/orthanc/orthanc.json`,
//! fresh storage, DICOM port off, no authentication) and measures it, stops it, then does the same
//! with Lightbox as deployed (accounts on, bearer token, audit on, fresh data directory). Both get
//! the same bytes, the same client, the same Accept headers and the same query strings (built by
//! hand: raw `*`, `^` and `,`, since Orthanc does not percent-decode them).
//!
//! Output: a Markdown table (both medians and the median of the per-round ratios, > 1 meaning
//! Lightbox is better) in `target/bench-results/compare.md`, everything in `compare.json`.
//! Timings are reported, never asserted. Without `--bench` (`cargo test --benches`) it only
//! prints how to run it: it never starts Orthanc under `cargo test`. See benches/README.md.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

mod common;
use common::CtSpec;
use common::server::{
    Res, ServerGuard, dd_rate, env_usize, proc_status_kib, static_server, target_dir, terminate,
};

const PATIENTS: [(&str, &str, &str); 2] = [
    ("BENCH^ALICE", "BENCH-A", "F"),
    ("BENCH^BORIS", "BENCH-B", "M"),
];
/// Study dates per patient: one study a year, 2022–2024.
const STUDY_DATES: [[&str; 3]; 2] = [
    ["20220314", "20230621", "20241105"],
    ["20220902", "20230117", "20240430"],
];
const SERIES_PER_STUDY: usize = 2;
const BOUNDARY: &str = "lightbox-compare-8d1e4b7f02a6";
const FRAME_BYTES: usize = 512 * 512 * 2;
const DD_MIB: u64 = 1024;

const ACCEPT_JSON: &str = "application/dicom+json";
const ACCEPT_STUDY: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
const ACCEPT_FRAME: &str =
    "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";

/// PIDs the signal handler stops (SIGTERM) before this process exits on SIGINT/SIGTERM/SIGHUP.
static ORTHANC_PID: AtomicI32 = AtomicI32::new(0);
static LIGHTBOX_PID: AtomicI32 = AtomicI32::new(0);

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "compare: side-by-side benchmark against Orthanc; run it with benches/compare.sh \
             (or cargo build --release && cargo bench --bench compare; COMPARE_QUICK=1 for a short run)"
        );
        return ExitCode::SUCCESS;
    }
    install_signal_handlers();
    let result = run();
    if let Some(f) = std::env::var_os("COMPARE_PID_FILE") {
        let _ = std::fs::remove_file(f);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    for p in [&ORTHANC_PID, &LIGHTBOX_PID] {
        let pid = p.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe; the PID is a child we started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Knobs {
    quick: bool,
    rounds: usize,
    slices: usize,
    samples: usize,
    warmup: usize,
    retrieve_runs: usize,
    mixed_secs: usize,
    mixed_clients: Vec<usize>,
    stow_clients: usize,
    per_request: usize,
}

impl Knobs {
    fn from_env() -> Res<Self> {
        let quick = std::env::var("COMPARE_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let q = |quick_value: usize, full_value: usize| {
            if quick { quick_value } else { full_value }
        };
        let samples = env_usize("COMPARE_SAMPLES", q(30, 500))?;
        let mixed_clients = match std::env::var("COMPARE_MIXED_CLIENTS") {
            Ok(v) => v
                .split(',')
                .map(|s| match s.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("COMPARE_MIXED_CLIENTS={v:?}: expected e.g. 2,8")),
                })
                .collect::<Res<Vec<_>>>()?,
            Err(_) => vec![2, 8],
        };
        Ok(Knobs {
            quick,
            rounds: env_usize("COMPARE_ROUNDS", q(2, 3))?,
            slices: env_usize("COMPARE_SLICES", q(20, 100))?,
            samples,
            warmup: env_usize("COMPARE_WARMUP", (samples / 10).clamp(3, 20))?,
            retrieve_runs: env_usize("COMPARE_RETRIEVE_RUNS", q(2, 5))?,
            mixed_secs: env_usize("COMPARE_MIXED_SECS", q(4, 20))?,
            mixed_clients,
            stow_clients: env_usize("COMPARE_STOW_CLIENTS", 2)?,
            per_request: env_usize("COMPARE_PER_REQUEST", 10)?,
        })
    }

    fn json(&self) -> Json {
        json!({
            "quick": self.quick, "rounds": self.rounds, "slices_per_series": self.slices,
            "samples": self.samples, "warmup": self.warmup, "retrieve_runs": self.retrieve_runs,
            "mixed_seconds": self.mixed_secs, "mixed_clients": self.mixed_clients,
            "stow_clients": self.stow_clients, "instances_per_request": self.per_request,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------------

struct Series {
    uid: String,
    sops: Vec<String>,
}

struct Study {
    uid: String,
    series: Vec<Series>,
    /// Part 10 bytes of all its instances.
    bytes: u64,
}

struct Corpus {
    studies: Vec<Study>,
    /// STOW bodies (multipart/related), each `per_request` instances of one series.
    bodies: Vec<&'static [u8]>,
    instances: usize,
    bytes: u64,
}

impl Corpus {
    fn instances(&self) -> Vec<(&str, &str, &str)> {
        self.studies
            .iter()
            .flat_map(|st| {
                st.series.iter().flat_map(move |se| {
                    se.sops
                        .iter()
                        .map(move |sop| (st.uid.as_str(), se.uid.as_str(), sop.as_str()))
                })
            })
            .collect()
    }

    fn series(&self) -> Vec<(&str, &Series)> {
        self.studies
            .iter()
            .flat_map(|st| st.series.iter().map(move |se| (st.uid.as_str(), se)))
            .collect()
    }
}

/// One STOW body: its job number, the multipart bytes, and (study UID, Part 10 size) per instance.
type Built = (usize, Vec<u8>, Vec<(String, u64)>);

/// 2 patients × 3 studies × 2 series × `slices` CT slices, as STOW bodies of `per_request`
/// instances each. Generated on two threads; the bodies live for the whole run (leaked on
/// purpose so that every request can send them without a copy).
fn corpus(slices: usize, per_request: usize) -> Corpus {
    let mut studies = Vec::new();
    let mut jobs: Vec<Vec<CtSpec>> = Vec::new();
    for (p, (name, pid, sex)) in PATIENTS.iter().enumerate() {
        for (s, date) in STUDY_DATES[p].iter().enumerate() {
            let k = (p * 3 + s) as u64;
            let study_uid = format!("2.25.{}", 710_000_000_000u64 + k);
            let mut study = Study {
                uid: study_uid.clone(),
                series: Vec::new(),
                bytes: 0,
            };
            for se in 0..SERIES_PER_STUDY {
                let series_uid = format!("2.25.{}", 720_000_000_000u64 + k * 10 + se as u64);
                let mut specs = Vec::new();
                for i in 0..slices {
                    let sop_uid = format!(
                        "2.25.{}",
                        730_000_000_000u64 + k * 100_000 + se as u64 * 10_000 + i as u64
                    );
                    specs.push(CtSpec {
                        study_uid: study_uid.clone(),
                        series_uid: series_uid.clone(),
                        sop_uid,
                        frame_of_reference_uid: format!("2.25.{}", 740_000_000_000u64 + k),
                        study_date: date.to_string(),
                        study_id: format!("{}", s + 1),
                        accession_number: format!("ACC{p}{s}{:04}", 17 * (k + 3)),
                        series_description: if se == 0 {
                            "AXIAL 2.5mm".into()
                        } else {
                            "AXIAL 2.5mm BONE".into()
                        },
                        patient_name: name.to_string(),
                        patient_id: pid.to_string(),
                        patient_birth_date: if p == 0 { "19610722" } else { "19780209" }.into(),
                        patient_sex: sex.to_string(),
                        series_number: se as u32 + 1,
                        instance_number: i as u32 + 1,
                        slice_z: -200.0 + 2.5 * i as f64,
                        seed: 0x9E37_79B9_7F4A_7C15 ^ (k << 40 | (se as u64) << 32 | i as u64),
                    });
                }
                study.series.push(Series {
                    uid: series_uid,
                    sops: specs.iter().map(|s| s.sop_uid.clone()).collect(),
                });
                for chunk in specs.chunks(per_request) {
                    jobs.push(chunk.to_vec());
                }
            }
            studies.push(study);
        }
    }
    let next = AtomicUsize::new(0);
    let mut built: Vec<Built> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(specs) = jobs.get(j) else { break };
                        let mut body = Vec::new();
                        let mut sizes = Vec::new();
                        for spec in specs {
                            let inst = common::ct_instance(spec);
                            body.extend_from_slice(
                                format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n")
                                    .as_bytes(),
                            );
                            body.extend_from_slice(&inst);
                            body.extend_from_slice(b"\r\n");
                            sizes.push((spec.study_uid.clone(), inst.len() as u64));
                        }
                        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
                        out.push((j, body, sizes));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("corpus worker"))
            .collect()
    });
    built.sort_by_key(|b| b.0);
    let mut bodies = Vec::new();
    let (mut instances, mut bytes) = (0, 0);
    for (_, body, sizes) in built {
        for (study, n) in sizes {
            instances += 1;
            bytes += n;
            if let Some(st) = studies.iter_mut().find(|s| s.uid == study) {
                st.bytes += n;
            }
        }
        bodies.push(&*Box::leak(body.into_boxed_slice()));
    }
    Corpus {
        studies,
        bodies,
        instances,
        bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// The two servers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Orthanc,
    Lightbox,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Orthanc => "Orthanc",
            Which::Lightbox => "Lightbox",
        }
    }
}

/// What the load program needs of a running server.
struct Target {
    /// `http://127.0.0.1:PORT/dicom-web`
    dw: String,
    token: Option<String>,
    pid: u32,
}

impl Target {
    fn get(&self, http: &reqwest::blocking::Client, url: &str, accept: &str) -> Res<Reply> {
        let mut rq = http.get(url).header("Accept", accept);
        if let Some(t) = &self.token {
            rq = rq.bearer_auth(t);
        }
        let r = rq.send().map_err(|e| format!("GET {url}: {e}"))?;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = r.bytes().map_err(|e| format!("GET {url}: {e}"))?;
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: bytes::Bytes,
}

impl Reply {
    fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]);
        let text: Vec<&str> = text.split_whitespace().collect();
        format!(
            "{} {:?}: {}",
            self.status,
            self.content_type,
            text.join(" ")
        )
    }
}

/// Orthanc as a child process with its own config and storage; SIGTERM then SIGKILL on drop.
struct OrthancGuard {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

struct OrthancSetup {
    bin: PathBuf,
    plugins: Vec<PathBuf>,
    template: Json,
}

impl OrthancSetup {
    fn find() -> Res<Self> {
        let bin = match std::env::var_os("ORTHANC_BIN") {
            Some(b) => PathBuf::from(b),
            None => ["/usr/sbin/Orthanc", "/usr/bin/Orthanc", "/usr/local/bin/Orthanc"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or("Orthanc not found: run benches/compare.sh, which installs it (apt-get install -y orthanc orthanc-dicomweb orthanc-gdcm)")?,
        };
        let find_plugin = |env: &str, stem: &str| -> Option<PathBuf> {
            if let Some(p) = std::env::var_os(env) {
                return Some(PathBuf::from(p));
            }
            ["/usr/share/orthanc/plugins", "/usr/lib/orthanc"]
                .iter()
                .map(|d| Path::new(d).join(format!("{stem}.so")))
                .find(|p| p.exists())
        };
        let mut plugins = vec![
            find_plugin("ORTHANC_DICOMWEB_PLUGIN", "libOrthancDicomWeb")
                .ok_or("the Orthanc DICOMweb plugin was not found: apt-get install -y orthanc-dicomweb (or set ORTHANC_DICOMWEB_PLUGIN)")?,
        ];
        // GDCM only matters for compressed transfer syntaxes; loaded when installed, as Debian does.
        if let Some(g) = find_plugin("ORTHANC_GDCM_PLUGIN", "libOrthancGdcm") {
            plugins.push(g);
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/orthanc/orthanc.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let template: Json =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(OrthancSetup {
            bin,
            plugins,
            template,
        })
    }

    /// The template with the run's port, storage and plugin paths.
    fn config(&self, port: u16, storage: &Path) -> Json {
        let mut c = self.template.clone();
        let s = storage.display().to_string();
        c["HttpPort"] = json!(port);
        c["StorageDirectory"] = json!(s);
        c["IndexDirectory"] = json!(s);
        c["Plugins"] = json!(
            self.plugins
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        );
        c
    }

    fn start(&self, dir: &Path) -> Res<OrthancGuard> {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).map_err(|e| format!("{}: {e}", storage.display()))?;
        let port = free_port()?;
        let config = dir.join("orthanc.json");
        let text = serde_json::to_string_pretty(&self.config(port, &storage)).unwrap_or_default();
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let log = dir.join("orthanc.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl in the forked child before exec: Orthanc gets SIGTERM if we die.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        ORTHANC_PID.store(child.id() as i32, Ordering::SeqCst);
        let mut guard = OrthancGuard {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/system", guard.url)).send()
                && r.status() == 200
            {
                return Ok(guard);
            }
            if let Some(c) = guard.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                guard.child = None;
                return Err(format!(
                    "Orthanc exited before answering ({status}); its log:\n{}",
                    guard.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Orthanc did not answer within 60 s; its log:\n{}",
                    guard.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl OrthancGuard {
    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(&mut child, "Orthanc");
        ORTHANC_PID.store(0, Ordering::SeqCst);
    }
}

impl Drop for OrthancGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| format!("bind: {e}"))?.port())
}

/// `COMPARE_PID_FILE` (set by compare.sh): this process, its servers and its data directory, so
/// that the script's trap can stop them by PID whatever happens.
fn write_pid_file(dir: &Path) {
    let Some(f) = std::env::var_os("COMPARE_PID_FILE") else {
        return;
    };
    let mut text = format!("bench {}\ndir {}\n", std::process::id(), dir.display());
    for (role, p) in [("orthanc", &ORTHANC_PID), ("lightbox", &LIGHTBOX_PID)] {
        let pid = p.load(Ordering::SeqCst);
        if pid > 0 {
            text.push_str(&format!("{role} {pid}\n"));
        }
    }
    let _ = std::fs::write(f, text);
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Better {
    Higher,
    Lower,
    /// Shown, no ratio.
    Info,
}

struct Row {
    name: String,
    unit: &'static str,
    better: Better,
    value: Option<f64>,
}

#[derive(Default)]
struct Phase {
    rows: Vec<Row>,
    notes: Vec<String>,
    extra: BTreeMap<String, Json>,
}

impl Phase {
    fn push(&mut self, name: &str, unit: &'static str, better: Better, value: Option<f64>) {
        self.rows.push(Row {
            name: name.to_owned(),
            unit,
            better,
            value,
        });
    }

    /// p50 and p99 rows of a latency sample set (`None`: the server cannot serve it).
    fn latency(&mut self, name: &str, ms: Option<&[f64]>) {
        let (p50, p99) = match ms {
            Some(v) if !v.is_empty() => {
                let mut s = v.to_vec();
                s.sort_by(f64::total_cmp);
                (Some(percentile(&s, 0.50)), Some(percentile(&s, 0.99)))
            }
            _ => (None, None),
        };
        self.push(&format!("{name} p50"), "ms", Better::Lower, p50);
        self.push(&format!("{name} p99"), "ms", Better::Lower, p99);
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

fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

fn client() -> Res<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

/// STOW every body from `clients` threads: (MB/s, instances/s, wall seconds).
fn stow(t: &Target, c: &Corpus, clients: usize) -> Res<(f64, f64, f64)> {
    let next = AtomicUsize::new(0);
    let url = format!("{}/studies", t.dw);
    let ctype = format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    let start = Instant::now();
    std::thread::scope(|scope| -> Res<()> {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| -> Res<()> {
                    let http = client()?;
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = c.bodies.get(j) else {
                            return Ok(());
                        };
                        let mut rq = http
                            .post(&url)
                            .header("Content-Type", &ctype)
                            .header("Accept", ACCEPT_JSON)
                            .body(*body);
                        if let Some(tok) = &t.token {
                            rq = rq.bearer_auth(tok);
                        }
                        let r = rq.send().map_err(|e| format!("STOW: {e}"))?;
                        let status = r.status().as_u16();
                        let text = r.text().unwrap_or_default();
                        if status != 200 || stow_failures(&text) > 0 {
                            return Err(format!(
                                "STOW request {j}: {status}: {}",
                                &text[..text.len().min(300)]
                            ));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "STOW client panicked")??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    Ok((c.bytes as f64 / 1e6 / secs, c.instances as f64 / secs, secs))
}

/// Items of the Failed SOP Sequence (0008,1198) of a STOW response (Orthanc sends the attribute
/// empty when nothing failed); unreadable JSON counts as a failure.
fn stow_failures(text: &str) -> usize {
    match serde_json::from_str::<Json>(text) {
        Ok(j) => j["00081198"]["Value"].as_array().map_or(0, Vec::len),
        Err(_) => 1,
    }
}

/// `warmup` then `samples` GETs of `url(i)`; send to last body byte, in ms. The first warm-up
/// reply decides whether the server serves the resource at all: a non-2xx there gives
/// `Ok(None)` (shown "n/a"); any later failure is an error. `check` sees every warm-up reply.
fn latency(
    http: &reqwest::blocking::Client,
    t: &Target,
    url: &dyn Fn(usize) -> String,
    accept: &str,
    samples: usize,
    warmup: usize,
    check: &dyn Fn(&Reply) -> Res<()>,
) -> Res<Result<Vec<f64>, String>> {
    let mut ms = Vec::with_capacity(samples);
    for i in 0..warmup.max(1) + samples {
        let u = url(i);
        let start = Instant::now();
        let r = t.get(http, &u, accept)?;
        let elapsed = start.elapsed().as_secs_f64() * 1e3;
        if i == 0 && !(200..300).contains(&r.status) {
            let text = String::from_utf8_lossy(&r.body[..r.body.len().min(400)]);
            let text: Vec<&str> = text.split_whitespace().collect();
            let text: String = text.join(" ").chars().take(120).collect();
            return Ok(Err(format!("HTTP {} ({text})", r.status)));
        }
        if r.status != 200 || r.body.is_empty() {
            return Err(format!("GET {u}: {}", r.describe()));
        }
        if i < warmup.max(1) {
            check(&r).map_err(|e| format!("GET {u}: {e}"))?;
        } else {
            ms.push(elapsed);
        }
    }
    Ok(Ok(ms))
}

fn json_array_len(r: &Reply) -> Res<usize> {
    let j: Json = serde_json::from_slice(&r.body).map_err(|e| format!("not JSON: {e}"))?;
    j.as_array()
        .map(Vec::len)
        .ok_or_else(|| "not a JSON array".to_owned())
}

fn expect_array(n: usize) -> impl Fn(&Reply) -> Res<()> {
    move |r: &Reply| {
        let got = json_array_len(r)?;
        if got != n {
            return Err(format!("{got} results, expected {n}"));
        }
        Ok(())
    }
}

fn expect_media(prefix: &'static str, min_len: usize) -> impl Fn(&Reply) -> Res<()> {
    move |r: &Reply| {
        if !r.content_type.starts_with(prefix) {
            return Err(format!(
                "Content-Type {:?}, expected {prefix}",
                r.content_type
            ));
        }
        if r.body.len() < min_len {
            return Err(format!("{} bytes, expected ≥ {min_len}", r.body.len()));
        }
        Ok(())
    }
}

/// The QIDO requests: (row name, URL of sample i, results expected).
type Query<'a> = (
    &'static str,
    Box<dyn Fn(usize) -> String + Send + Sync + 'a>,
    Box<dyn Fn(usize) -> usize + Send + Sync + 'a>,
);

fn queries<'a>(dw: &'a str, c: &'a Corpus) -> Vec<Query<'a>> {
    let series = c.series();
    let slices = c.studies[0].series[0].sops.len();
    let years = ["2022", "2023", "2024"];
    vec![
        (
            "QIDO studies PatientName=BENCH^A* or BENCH^B*",
            Box::new(move |i| {
                let initial = if i % 2 == 0 { 'A' } else { 'B' };
                format!("{dw}/studies?PatientName=BENCH^{initial}*")
            }),
            Box::new(|_| 3),
        ),
        (
            "QIDO studies StudyDate=<year>0101-<year>1231",
            Box::new(move |i| {
                let y = years[i % 3];
                format!("{dw}/studies?StudyDate={y}0101-{y}1231")
            }),
            Box::new(|_| 2),
        ),
        (
            "QIDO studies ModalitiesInStudy=CT",
            Box::new(move |_| format!("{dw}/studies?ModalitiesInStudy=CT")),
            Box::new(|_| 6),
        ),
        (
            "QIDO series of a study",
            Box::new(move |i| format!("{dw}/studies/{}/series", c.studies[i % 6].uid)),
            Box::new(|_| SERIES_PER_STUDY),
        ),
        (
            "QIDO instances of a series",
            Box::new(move |i| {
                let (st, se) = series[i % series.len()];
                format!("{dw}/studies/{st}/series/{}/instances", se.uid)
            }),
            Box::new(move |_| slices),
        ),
    ]
}

/// GET `url` `runs` times (after one unmeasured), streaming the body: median MB/s of `payload`
/// bytes (the Part 10 bytes, so that framing differences do not count), and the bytes received.
fn retrieve(
    http: &reqwest::blocking::Client,
    token: Option<&str>,
    urls: &dyn Fn(usize) -> (String, u64),
    accept: &str,
    runs: usize,
) -> Res<f64> {
    let mut rates = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..=runs {
        let (u, payload) = urls(i);
        let start = Instant::now();
        let mut rq = http.get(&u).header("Accept", accept);
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        let mut r = rq.send().map_err(|e| format!("GET {u}: {e}"))?;
        if r.status() != 200 {
            return Err(format!("GET {u}: {}", r.status()));
        }
        let mut got = 0u64;
        loop {
            let n = r.read(&mut buf).map_err(|e| format!("GET {u}: {e}"))?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        if got < payload {
            return Err(format!("GET {u}: {got} bytes, expected ≥ {payload}"));
        }
        if i > 0 {
            rates.push(payload as f64 / 1e6 / secs);
        }
    }
    median(&rates).ok_or_else(|| "no retrieve".into())
}

#[derive(Clone, Copy, Debug)]
enum Op {
    QidoName,
    QidoDate,
    QidoModality,
    QidoSeries,
    QidoInstances,
    Frame,
    Rendered,
    Metadata,
}

/// The fixed mixed-load cycle: 6 QIDO, 8 frames, 4 rendered JPEGs, 2 series metadata.
const MIX: [Op; 20] = [
    Op::QidoName,
    Op::Frame,
    Op::Rendered,
    Op::Frame,
    Op::QidoSeries,
    Op::Frame,
    Op::Rendered,
    Op::QidoDate,
    Op::Frame,
    Op::Metadata,
    Op::QidoModality,
    Op::Frame,
    Op::Rendered,
    Op::Frame,
    Op::QidoInstances,
    Op::Frame,
    Op::Rendered,
    Op::Frame,
    Op::QidoName,
    Op::Metadata,
];

/// `clients` threads, each with its own client (keep-alive connection), cycle through [`MIX`]
/// for `secs` seconds: (requests/s, every latency in ms).
fn mixed(t: &Target, c: &Corpus, clients: usize, secs: usize) -> Res<(f64, Vec<f64>)> {
    let qs = queries(&t.dw, c);
    let insts = c.instances();
    let series = c.series();
    let pick = |op: Op, n: usize| -> (String, &'static str) {
        let (st, se, sop) = insts[(n * 7919) % insts.len()];
        let inst = format!("{}/studies/{st}/series/{se}/instances/{sop}", t.dw);
        match op {
            Op::QidoName => (qs[0].1(n), ACCEPT_JSON),
            Op::QidoDate => (qs[1].1(n), ACCEPT_JSON),
            Op::QidoModality => (qs[2].1(n), ACCEPT_JSON),
            Op::QidoSeries => (qs[3].1(n), ACCEPT_JSON),
            Op::QidoInstances => (qs[4].1(n), ACCEPT_JSON),
            Op::Frame => (format!("{inst}/frames/1"), ACCEPT_FRAME),
            Op::Rendered => (format!("{inst}/rendered"), "image/jpeg"),
            Op::Metadata => {
                let (st, se) = series[n % series.len()];
                (
                    format!("{}/studies/{st}/series/{}/metadata", t.dw, se.uid),
                    ACCEPT_JSON,
                )
            }
        }
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs as u64);
    let all = std::thread::scope(|scope| -> Res<Vec<f64>> {
        let workers: Vec<_> = (0..clients)
            .map(|w| {
                let pick = &pick;
                scope.spawn(move || -> Res<Vec<f64>> {
                    let http = client()?;
                    let mut ms = Vec::new();
                    let mut i = w * 3;
                    while Instant::now() < deadline {
                        let op = MIX[i % MIX.len()];
                        let (u, accept) = pick(op, i * clients + w);
                        let s = Instant::now();
                        let r = t.get(&http, &u, accept)?;
                        ms.push(s.elapsed().as_secs_f64() * 1e3);
                        if r.status != 200 || r.body.is_empty() {
                            return Err(format!("mixed {op:?}: GET {u}: {}", r.describe()));
                        }
                        i += 1;
                    }
                    Ok(ms)
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.join().map_err(|_| "mixed-load client panicked")??);
        }
        Ok(all)
    })?;
    let secs = start.elapsed().as_secs_f64();
    Ok((all.len() as f64 / secs, all))
}

/// Everything measured on one running server, in row order.
fn measure(which: Which, t: &Target, c: &Corpus, k: &Knobs) -> Res<Phase> {
    let mut ph = Phase::default();
    let http = client()?;
    let label = which.name();

    println!("  {label}: STOW {} instances", c.instances);
    let (mbs, ips, secs) = stow(t, c, k.stow_clients)?;
    ph.push("STOW throughput", "MB/s", Better::Higher, Some(mbs));
    ph.push("STOW instances", "inst/s", Better::Higher, Some(ips));
    ph.extra.insert("stow_seconds".into(), json!(secs));

    println!("  {label}: QIDO");
    for (name, url, expected) in queries(&t.dw, c) {
        // Every warm-up reply is checked against the count expected for its own sample.
        let n = std::cell::Cell::new(0usize);
        let check = |r: &Reply| {
            let i = n.get();
            n.set(i + 1);
            expect_array(expected(i))(r)
        };
        let ms = latency(&http, t, &*url, ACCEPT_JSON, k.samples, k.warmup, &check)?;
        record(&mut ph, name, ms);
    }

    println!("  {label}: study retrieve");
    let studies = &c.studies;
    let rate = retrieve(
        &http,
        t.token.as_deref(),
        &|i| {
            let st = &studies[i % studies.len()];
            (format!("{}/studies/{}", t.dw, st.uid), st.bytes)
        },
        ACCEPT_STUDY,
        k.retrieve_runs,
    )?;
    ph.push(
        "study retrieve (transfer-syntax=*)",
        "MB/s",
        Better::Higher,
        Some(rate),
    );

    println!("  {label}: metadata, frames, rendered");
    let series = c.series();
    let slices = c.studies[0].series[0].sops.len();
    let ms = latency(
        &http,
        t,
        &|i| {
            let (st, se) = series[i % series.len()];
            format!("{}/studies/{st}/series/{}/metadata", t.dw, se.uid)
        },
        ACCEPT_JSON,
        k.samples,
        k.warmup,
        &expect_array(slices),
    )?;
    record(
        &mut ph,
        &format!("series metadata ({slices} instances)"),
        ms,
    );

    let insts = c.instances();
    let inst = |i: usize| {
        let (st, se, sop) = insts[(i * 7919) % insts.len()];
        format!("{}/studies/{st}/series/{se}/instances/{sop}", t.dw)
    };
    let ms = latency(
        &http,
        t,
        &|i| format!("{}/frames/1", inst(i)),
        ACCEPT_FRAME,
        k.samples,
        k.warmup,
        &expect_media("multipart/related", FRAME_BYTES),
    )?;
    record(&mut ph, "one frame (512×512×16)", ms);
    for (name, media) in [
        ("rendered JPEG", "image/jpeg"),
        ("rendered PNG", "image/png"),
    ] {
        let ms = latency(
            &http,
            t,
            &|i| format!("{}/rendered", inst(i)),
            media,
            k.samples,
            k.warmup,
            &expect_media(media, 100),
        )?;
        record(&mut ph, name, ms);
    }
    let ms = latency(
        &http,
        t,
        &|i| format!("{}/thumbnail", inst(i)),
        "image/jpeg",
        k.samples,
        k.warmup,
        &expect_media("image/jpeg", 100),
    )?;
    record(&mut ph, "thumbnail (instance)", ms);

    for &n in &k.mixed_clients {
        println!("  {label}: mixed load, {n} clients, {} s", k.mixed_secs);
        let (rps, ms) = mixed(t, c, n, k.mixed_secs)?;
        let name = format!("mixed read load, {n} clients");
        ph.push(
            &format!("{name}: throughput"),
            "req/s",
            Better::Higher,
            Some(rps),
        );
        ph.latency(&name, Some(&ms));
        ph.extra
            .insert(format!("mixed_{n}_samples"), json!(ms.len()));
    }

    let hwm = proc_status_kib(t.pid, "VmHWM:").map(|k| k as f64 / 1024.0);
    ph.push("peak RSS (VmHWM)", "MiB", Better::Lower, hwm);
    ph.push("load average (1 min) at the end", "", Better::Info, load1());
    Ok(ph)
}

fn record(ph: &mut Phase, name: &str, ms: Result<Vec<f64>, String>) {
    match ms {
        Ok(v) => ph.latency(name, Some(&v)),
        Err(why) => {
            println!("    {name}: n/a ({})", why.lines().next().unwrap_or(""));
            ph.notes.push(format!("{name}: not served: {why}"));
            ph.latency(name, None);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Machine and ceilings
// ---------------------------------------------------------------------------------------------

fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    json!({
        "cpu_model": model, "cpus": cpus, "ram_gib": mem_kib as f64 / 1024.0 / 1024.0,
        "kernel": kernel, "load_average_1min_at_start": load1(),
    })
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn run() -> Res<()> {
    let k = Knobs::from_env()?;
    let bin = std::env::var_os("LIGHTBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/lightbox"));
    if !bin.is_file() {
        return Err(format!(
            "{} is missing: run benches/compare.sh, or cargo build --release first",
            bin.display()
        ));
    }
    let orthanc = OrthancSetup::find()?;
    let root = std::env::var_os("LIGHTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-data"));
    let dir = root.join(format!("compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_pid_file(&dir);
    let result = run_in(&k, &bin, &orthanc, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(k: &Knobs, bin: &Path, orthanc: &OrthancSetup, dir: &Path) -> Res<()> {
    let mut machine = machine();
    println!(
        "compare: {} mode, {} round(s), 2 × 3 × 2 × {} instances",
        if k.quick { "QUICK" } else { "full" },
        k.rounds,
        k.slices
    );
    let t0 = Instant::now();
    let c = corpus(k.slices, k.per_request);
    println!(
        "compare: corpus of {} instances, {:.0} MB, in {:.1} s",
        c.instances,
        c.bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "compare: dd {DD_MIB} MiB conv=fdatasync in {}",
        dir.display()
    );
    let dd = dd_rate(dir, DD_MIB)
        .map(|(_, _, mbs)| mbs)
        .map_err(|e| println!("compare: dd: {e}"))
        .ok();
    let biggest = c.studies.iter().map(|s| s.bytes).max().unwrap_or(0);
    let static_url = static_server(biggest, 256 * 1024)?;

    let mut phases: Vec<[Phase; 2]> = Vec::new();
    let mut loopback = Vec::new();
    let mut versions = json!({});
    let mut orthanc_config = json!({});
    for round in 0..k.rounds {
        println!("compare: round {}/{}", round + 1, k.rounds);
        let http = client()?;
        let lb = retrieve(
            &http,
            None,
            &|_| (static_url.clone(), biggest),
            "application/octet-stream",
            k.retrieve_runs,
        )?;
        loopback.push(lb);

        // Orthanc first, then Lightbox, each with a fresh store.
        let odir = dir.join(format!("orthanc-{round}"));
        let o = {
            let guard = orthanc.start(&odir)?;
            write_pid_file(dir);
            let sys = client()?
                .get(format!("{}/system", guard.url))
                .send()
                .and_then(|r| r.json::<Json>())
                .unwrap_or(Json::Null);
            let plugin = |id: &str| {
                client()
                    .ok()
                    .and_then(|h| h.get(format!("{}/plugins/{id}", guard.url)).send().ok())
                    .and_then(|r| r.json::<Json>().ok())
                    .map(|j| j["Version"].clone())
                    .unwrap_or(Json::Null)
            };
            versions["orthanc"] = sys["Version"].clone();
            versions["orthanc_dicomweb_plugin"] = plugin("dicom-web");
            versions["orthanc_gdcm_plugin"] = plugin("gdcm");
            orthanc_config = serde_json::from_str(
                &std::fs::read_to_string(odir.join("orthanc.json")).unwrap_or_default(),
            )
            .unwrap_or(Json::Null);
            let t = Target {
                dw: format!("{}/dicom-web", guard.url),
                token: None,
                pid: guard.pid(),
            };
            let ph = measure(Which::Orthanc, &t, &c, k);
            if ph.is_err() {
                eprintln!("Orthanc's log (tail):\n{}", guard.log_tail());
            }
            drop(guard);
            write_pid_file(dir);
            ph?
        };
        let _ = std::fs::remove_dir_all(&odir);

        let ldir = dir.join(format!("lightbox-{round}"));
        std::fs::create_dir_all(&ldir).map_err(|e| format!("{}: {e}", ldir.display()))?;
        let l = {
            let mut guard = ServerGuard::start(bin, &ldir)?;
            LIGHTBOX_PID.store(guard.pid() as i32, Ordering::SeqCst);
            write_pid_file(dir);
            let t = Target {
                dw: format!("{}/dicom-web", guard.url),
                token: Some(guard.token.clone()),
                pid: guard.pid(),
            };
            let ph = measure(Which::Lightbox, &t, &c, k);
            guard.stop();
            LIGHTBOX_PID.store(0, Ordering::SeqCst);
            write_pid_file(dir);
            ph?
        };
        let _ = std::fs::remove_dir_all(&ldir);
        print_round(round, &o, &l);
        phases.push([o, l]);
    }

    versions["lightbox"] = json!(command_line(&bin.display().to_string(), &["--version"]));
    versions["lightbox_git"] = json!(command_line("git", &["rev-parse", "--short", "HEAD"]).map(
        |h| {
            let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{h}+changes") } else { h }
        }
    ));
    versions["orthanc_debian_packages"] = json!(command_line(
        "dpkg-query",
        &[
            "-W",
            "-f=${Package} ${Version}; ",
            "orthanc",
            "orthanc-dicomweb",
            "orthanc-gdcm"
        ]
    ));
    machine["load_average_1min_at_end"] = json!(load1());
    machine["disk_write_mb_s"] = json!(dd);
    machine["disk_dir"] = json!(dir.display().to_string());
    machine["loopback_mb_s"] = json!(median(&loopback));
    machine["loopback_mb_s_rounds"] = json!(loopback);

    let rows = aggregate(&phases);
    let md = markdown(k, &c, &machine, &versions, &orthanc_config, &rows, &phases);
    println!("\n{md}");
    let out = target_dir().join("bench-results");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let report = json!({
        "bench": "compare",
        "mode": if k.quick { "quick" } else { "full" },
        "seconds": t0.elapsed().as_secs_f64(),
        "knobs": k.json(),
        "machine": machine,
        "versions": versions,
        "orthanc_config": orthanc_config,
        "corpus": {
            "patients": 2, "studies": c.studies.len(), "series": c.studies.len() * SERIES_PER_STUDY,
            "instances": c.instances, "bytes": c.bytes,
        },
        "headers": {
            "qido_metadata": ACCEPT_JSON, "study_retrieve": ACCEPT_STUDY, "frame": ACCEPT_FRAME,
            "rendered": "image/jpeg | image/png", "thumbnail": "image/jpeg",
        },
        "rows": rows.iter().map(AggRow::json).collect::<Vec<_>>(),
        "rounds": phases.iter().map(|[o, l]| json!({
            "orthanc": phase_json(o), "lightbox": phase_json(l),
        })).collect::<Vec<_>>(),
    });
    let json_path = out.join("compare.json");
    let md_path = out.join("compare.md");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    std::fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!(
        "compare: wrote {} and {} ({:.0} s in all)",
        md_path.display(),
        json_path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn phase_json(p: &Phase) -> Json {
    json!({
        "rows": p.rows.iter().map(|r| json!({"name": r.name, "unit": r.unit, "value": r.value})).collect::<Vec<_>>(),
        "notes": p.notes,
        "extra": p.extra,
    })
}

fn print_round(round: usize, o: &Phase, l: &Phase) {
    println!("  round {} summary:", round + 1);
    for (a, b) in o.rows.iter().zip(&l.rows) {
        println!(
            "    {:<52} Orthanc {:>10}  Lightbox {:>10} {}",
            a.name,
            fmt_val(a.value),
            fmt_val(b.value),
            a.unit
        );
    }
}

struct AggRow {
    name: String,
    unit: &'static str,
    better: Better,
    orthanc: Vec<Option<f64>>,
    lightbox: Vec<Option<f64>>,
    ratios: Vec<f64>,
}

impl AggRow {
    fn med(v: &[Option<f64>]) -> Option<f64> {
        median(&v.iter().flatten().copied().collect::<Vec<_>>())
    }

    fn ratio(&self) -> Option<(f64, f64, f64)> {
        let m = median(&self.ratios)?;
        let min = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .ratios
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        Some((m, min, max))
    }

    fn json(&self) -> Json {
        let r = self.ratio();
        json!({
            "name": self.name, "unit": self.unit,
            "better": match self.better { Better::Higher => "higher", Better::Lower => "lower", Better::Info => "info" },
            "orthanc_median": Self::med(&self.orthanc), "lightbox_median": Self::med(&self.lightbox),
            "orthanc_rounds": self.orthanc, "lightbox_rounds": self.lightbox,
            "ratio_rounds": self.ratios,
            "ratio_median": r.map(|x| x.0), "ratio_min": r.map(|x| x.1), "ratio_max": r.map(|x| x.2),
        })
    }
}

/// Per row: both servers' values per round and the per-round ratios (> 1 = Lightbox better:
/// Lightbox/Orthanc for throughput, Orthanc/Lightbox for latency and memory).
fn aggregate(phases: &[[Phase; 2]]) -> Vec<AggRow> {
    let Some(first) = phases.first() else {
        return Vec::new();
    };
    first[0]
        .rows
        .iter()
        .map(|row| {
            let find = |p: &Phase| {
                p.rows
                    .iter()
                    .find(|r| r.name == row.name)
                    .and_then(|r| r.value)
            };
            let orthanc: Vec<_> = phases.iter().map(|[o, _]| find(o)).collect();
            let lightbox: Vec<_> = phases.iter().map(|[_, l]| find(l)).collect();
            let ratios = orthanc
                .iter()
                .zip(&lightbox)
                .filter_map(|(o, l)| {
                    let (o, l) = ((*o)?, (*l)?);
                    let r = match row.better {
                        Better::Higher => l / o,
                        Better::Lower => o / l,
                        Better::Info => return None,
                    };
                    (r.is_finite() && r > 0.0).then_some(r)
                })
                .collect();
            AggRow {
                name: row.name.clone(),
                unit: row.unit,
                better: row.better,
                orthanc,
                lightbox,
                ratios,
            }
        })
        .collect()
}

fn fmt_val(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(x) if !x.is_finite() => "n/a".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn fmt_ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}×")
    } else {
        format!("{x:.2}×")
    }
}

fn markdown(
    k: &Knobs,
    c: &Corpus,
    machine: &Json,
    versions: &Json,
    oc: &Json,
    rows: &[AggRow],
    phases: &[[Phase; 2]],
) -> String {
    let mut s = String::new();
    let mode = if k.quick {
        "QUICK run (COMPARE_QUICK=1): development figures, smaller corpus and samples; not for publication"
    } else {
        "full run"
    };
    let f = |v: &Json| match v {
        Json::Null => "?".to_owned(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mbs = |v: &Json| v.as_f64().map_or("n/a".into(), |x| format!("{x:.0} MB/s"));
    s.push_str("## Lightbox vs Orthanc, side by side\n\n");
    s.push_str(&format!("- Mode: {mode}.\n"));
    s.push_str(&format!(
        "- Machine: {} × {} CPUs, {:.1} GiB RAM, Linux {}; 1-min load average {} at start, {} at end.\n",
        f(&machine["cpu_model"]),
        f(&machine["cpus"]),
        machine["ram_gib"].as_f64().unwrap_or(0.0),
        f(&machine["kernel"]),
        fmt_val(machine["load_average_1min_at_start"].as_f64()),
        fmt_val(machine["load_average_1min_at_end"].as_f64()),
    ));
    s.push_str(&format!(
        "- Same-run ceilings: disk {} (`dd bs=1M count={DD_MIB} conv=fdatasync` in the bench directory); \
         loopback {} (the same client downloading a static body of a study's size from an in-process server).\n",
        mbs(&machine["disk_write_mb_s"]),
        mbs(&machine["loopback_mb_s"]),
    ));
    s.push_str(&format!(
        "- Orthanc {} + DICOMweb plugin {} + GDCM plugin {} (Debian: {}); no authentication, DICOM port off, \
         StorageAccessOnFind={}, DicomWeb.StudiesMetadata={}, DicomWeb.SeriesMetadata={}, StorageCompression={}, \
         HttpThreadsCount={}, KeepAlive={}, TcpNoDelay={} (config: benches/orthanc/orthanc.json).\n",
        f(&versions["orthanc"]),
        f(&versions["orthanc_dicomweb_plugin"]),
        f(&versions["orthanc_gdcm_plugin"]),
        f(&versions["orthanc_debian_packages"]).trim_end_matches([';', ' ']),
        f(&oc["StorageAccessOnFind"]),
        f(&oc["DicomWeb"]["StudiesMetadata"]),
        f(&oc["DicomWeb"]["SeriesMetadata"]),
        f(&oc["StorageCompression"]),
        f(&oc["HttpThreadsCount"]),
        f(&oc["KeepAlive"]),
        f(&oc["TcpNoDelay"]),
    ));
    s.push_str(&format!(
        "- Lightbox {} (git {}): accounts on, bearer token on every request, audit on.\n",
        f(&versions["lightbox"]).trim_start_matches("lightbox "),
        f(&versions["lightbox_git"]),
    ));
    s.push_str(&format!(
        "- Corpus: 2 patients × 3 studies × 2 series × {} slices = {} CT instances (512×512, 16-bit), {:.0} MB, \
         the same bytes to both; STOW {} instances per request from {} clients.\n",
        k.slices,
        c.instances,
        c.bytes as f64 / 1e6,
        k.per_request,
        k.stow_clients,
    ));
    let mixed_samples: Vec<String> = k
        .mixed_clients
        .iter()
        .map(|n| {
            let min_of = |i: usize| {
                phases
                    .iter()
                    .filter_map(|p| p[i].extra.get(&format!("mixed_{n}_samples"))?.as_u64())
                    .min()
                    .unwrap_or(0)
            };
            format!(
                "{n} clients: Orthanc ≥ {}, Lightbox ≥ {}",
                min_of(0),
                min_of(1)
            )
        })
        .collect();
    s.push_str(&format!(
        "- {} round(s), each Orthanc then Lightbox with fresh stores; latency rows: {} samples after {} warm-up \
         (one keep-alive connection); study retrieve: median of {} runs; mixed load: {} s per client count, \
         fixed cycle of 6 QIDO, 8 frames, 4 rendered JPEGs, 2 series metadata (samples per round: {}).\n",
        k.rounds,
        k.samples,
        k.warmup,
        k.retrieve_runs,
        k.mixed_secs,
        mixed_samples.join("; "),
    ));
    s.push_str(
        "- Ratio: median of the per-round ratios (min–max), Lightbox/Orthanc for throughput and \
         Orthanc/Lightbox for latency and memory, so > 1 means Lightbox is better. \"n/a\": the server \
         answered non-2xx (cannot serve it).\n\n",
    );
    s.push_str("| Measurement | Orthanc | Lightbox | Ratio (median, min–max) |\n");
    s.push_str("|---|---:|---:|---|\n");
    for r in rows {
        let unit = if r.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.unit)
        };
        let ratio = match (r.better, r.ratio()) {
            (Better::Info, _) => "—".to_owned(),
            (_, None) => "n/a".to_owned(),
            (_, Some((m, lo, hi))) if r.ratios.len() == 1 => {
                let _ = (lo, hi);
                format!("{} (1 round)", fmt_ratio(m))
            }
            (_, Some((m, lo, hi))) => {
                format!("{} ({}–{})", fmt_ratio(m), fmt_ratio(lo), fmt_ratio(hi))
            }
        };
        s.push_str(&format!(
            "| {}{unit} | {} | {} | {ratio} |\n",
            r.name.replace('|', "\\|"),
            fmt_val(AggRow::med(&r.orthanc)),
            fmt_val(AggRow::med(&r.lightbox)),
        ));
    }
    let mut notes: Vec<String> = phases
        .iter()
        .flat_map(|[o, l]| {
            o.notes
                .iter()
                .map(|n| format!("Orthanc: {n}"))
                .chain(l.notes.iter().map(|n| format!("Lightbox: {n}")))
        })
        .map(|n| n.lines().next().unwrap_or("").chars().take(200).collect())
        .collect();
    notes.sort();
    notes.dedup();
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s
}
