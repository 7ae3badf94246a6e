//! QIDO-RS latency against the release binary (harness = false).
//!
//! `cargo build --release && cargo bench --bench qido` indexes a synthetic archive of N studies
//! (N = 10,000 and 100,000 by default; `QIDO_BENCH_STUDIES=2000` for a quick run) straight
//! through the store (`Store::open` + `MetaRepo::commit`, no instance files), closes the store
//! cleanly, starts `lightbox serve` on it, and measures the wall-clock latency of typical
//! viewer searches over one keep-alive connection. Timings are reported, never asserted. See
//! benches/README.md.
//!
//! Without `--bench` in the arguments (`cargo test --benches`) it runs a tiny smoke version
//! (300 studies, 20 samples, no JSON) when the release binary exists, and otherwise exits 0.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value as Json, json};

use lightbox::dicom::parse::FrameAccess;
use lightbox::ids::{SeriesUid, SopClassUid, SopInstanceUid, StudyUid};
use lightbox::store::blob::BlobKey;
use lightbox::store::records::InstanceRecord;
use lightbox::store::{NewInstance, Store};

#[path = "common/server.rs"]
mod server;
use server::{ServerGuard, proc_status_kib, server_binary, target_dir};

type Res<T> = Result<T, String>;

const DEFAULT_STUDIES: &[usize] = &[10_000, 100_000];
const INSTANCES_PER_STUDY: usize = 10;
const BIG_SERIES_INSTANCES: usize = 100;
const FAMILY_NAMES: usize = 2_000;
const GIVEN_NAMES: usize = 200;
const WARMUP: usize = 100;
const LIMIT: usize = 25;
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// First day of the StudyDate spread, and its length (10 years).
const FIRST_YEAR: i64 = 2015;
const DATE_SPAN_DAYS: i64 = 3653;

const TARGETS: &str = "study searches p50 <= 1 ms at 10,000 studies and within 2x of that \
                       at 100,000; 100-instance listing <= 5 ms";
const REFERENCE: &str = "Orthanc 1.10.1 + DICOMweb 1.7 on a 10-study archive: 6-11 ms study \
                         searches, 101 ms for a 100-instance series";

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    match run(full) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qido: {e}");
            ExitCode::FAILURE
        }
    }
}

fn positive(name: &str, v: &str) -> Res<usize> {
    match v.trim().replace('_', "").parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name}: {v:?} is not a positive integer")),
    }
}

struct Knobs {
    sizes: Vec<usize>,
    samples: usize,
    warmup: usize,
    write_json: bool,
    progress: bool,
}

fn run(full: bool) -> Res<()> {
    let Some(bin) = server_binary("qido", full)? else {
        return Ok(());
    };
    let knobs = if full {
        let sizes = match std::env::var("QIDO_BENCH_STUDIES") {
            Ok(v) => v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| positive("QIDO_BENCH_STUDIES", s))
                .collect::<Res<Vec<_>>>()?,
            Err(_) => DEFAULT_STUDIES.to_vec(),
        };
        if sizes.is_empty() {
            return Err("QIDO_BENCH_STUDIES names no study count".into());
        }
        let samples = match std::env::var("QIDO_BENCH_SAMPLES") {
            Ok(v) => positive("QIDO_BENCH_SAMPLES", &v)?,
            Err(_) => 1000,
        };
        Knobs {
            sizes,
            samples,
            warmup: WARMUP,
            write_json: true,
            progress: true,
        }
    } else {
        println!(
            "qido: smoke run (300 studies, 20 samples); run with cargo bench --bench qido for the real figures"
        );
        Knobs {
            sizes: vec![300],
            samples: 20,
            warmup: 5,
            write_json: false,
            progress: false,
        }
    };
    let base = std::env::var_os("LIGHTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-data"));
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    for &n in &knobs.sizes {
        run_size(&bin, &base, n, &knobs)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Synthetic archive
// ---------------------------------------------------------------------------------------------

/// 64-bit LCG (Knuth's MMIX constants); the high 32 bits are the output.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 32
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SYLLABLES: &[&str] = &[
    "BA", "BER", "CHA", "DAL", "DE", "EL", "FA", "GAR", "HAN", "IN", "JO", "KA", "LAN", "LI", "MA",
    "MER", "NO", "OS", "PE", "QUIN", "RA", "ROS", "SA", "SCH", "TA", "TOR", "UL", "VAN", "WE",
    "YA", "ZI", "MON", "LEN", "GOR", "BRA", "STE", "VIK", "ORT", "HEL", "KOW",
];
const ENDINGS: &[&str] = &[
    "", "SON", "MANN", "EZ", "SKI", "OV", "ER", "ELLI", "OS", "INE", "EAU", "BERG",
];
const GIVEN_SYLLABLES: &[&str] = &[
    "A", "AN", "BEL", "CA", "DA", "E", "EL", "FI", "GI", "HA", "I", "JA", "KE", "LI", "LO", "MA",
    "MI", "NA", "NI", "O", "PA", "RI", "RO", "SA", "SI", "TE", "TO", "VI", "YU", "ZE",
];
const GIVEN_ENDINGS: &[&str] = &["", "A", "O", "N", "NA", "EL", "US", "IE", "AS", "RA"];

/// `count` distinct names made of 1–3 syllables plus an ending, drawn with an LCG.
fn make_names(seed: u64, count: usize, syl: &[&str], endings: &[&str], min: usize) -> Vec<String> {
    let mut rng = Lcg(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let parts = min + rng.below(3);
        let mut name = String::new();
        for _ in 0..parts {
            name.push_str(syl[rng.below(syl.len())]);
        }
        name.push_str(endings[rng.below(endings.len())]);
        if seen.insert(name.clone()) {
            out.push(name);
        }
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of (year, month, day).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as u32
}

/// A `2.25.` UID unique to (kind, index). Deterministic: every run uses a fresh data directory.
fn uid(kind: u8, index: u64) -> String {
    const ROOT: u128 = 0x4C49_4748_5442_4F58; // "LIGHTBOX"
    format!(
        "2.25.{}",
        (ROOT << 64) | (u128::from(kind) << 48) | u128::from(index)
    )
}

/// A 64-hex pseudo content hash for instance `index`.
fn fake_hash(index: u64) -> String {
    let mut s = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = String::with_capacity(64);
    for _ in 0..4 {
        s ^= s >> 31;
        s = s.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        s ^= s >> 29;
        out.push_str(&format!("{s:016x}"));
    }
    out
}

struct Modality {
    code: &'static str,
    sop_class: &'static str,
    rows: u16,
    cols: u16,
    bits: u16,
    /// Cross-sectional: slices with a position along z.
    slices: bool,
    study_descriptions: &'static [&'static str],
    series_descriptions: &'static [&'static str],
    body_parts: &'static [&'static str],
}

const MODALITIES: &[Modality] = &[
    Modality {
        code: "CT",
        sop_class: "1.2.840.10008.5.1.4.1.1.2",
        rows: 512,
        cols: 512,
        bits: 16,
        slices: true,
        study_descriptions: &[
            "CT CHEST W CONTRAST",
            "CT HEAD WO CONTRAST",
            "CT ABDOMEN PELVIS W CONTRAST",
            "CT CHEST LOW DOSE SCREENING",
            "CTA PULMONARY ARTERIES",
        ],
        series_descriptions: &["AXIAL 2.5mm", "AXIAL 1.25mm STD", "CORONAL MPR 3mm"],
        body_parts: &["CHEST", "HEAD", "ABDOMEN"],
    },
    Modality {
        code: "MR",
        sop_class: "1.2.840.10008.5.1.4.1.1.4",
        rows: 256,
        cols: 256,
        bits: 16,
        slices: true,
        study_descriptions: &[
            "MR BRAIN WO CONTRAST",
            "MR KNEE LEFT",
            "MR LUMBAR SPINE",
            "MR SHOULDER RIGHT",
        ],
        series_descriptions: &["T1 SAG", "T2 AX FSE", "FLAIR AX", "DWI"],
        body_parts: &["BRAIN", "KNEE", "LSPINE", "SHOULDER"],
    },
    Modality {
        code: "CR",
        sop_class: "1.2.840.10008.5.1.4.1.1.1",
        rows: 2500,
        cols: 2048,
        bits: 16,
        slices: false,
        study_descriptions: &["CHEST PA AND LATERAL", "HAND 3 VIEWS", "PELVIS AP"],
        series_descriptions: &["PA", "LAT", "AP"],
        body_parts: &["CHEST", "HAND", "PELVIS"],
    },
    Modality {
        code: "US",
        sop_class: "1.2.840.10008.5.1.4.1.1.6.1",
        rows: 480,
        cols: 640,
        bits: 8,
        slices: false,
        study_descriptions: &["US ABDOMEN COMPLETE", "US THYROID", "US OB 2ND TRIMESTER"],
        series_descriptions: &["B-MODE", "DOPPLER"],
        body_parts: &["ABDOMEN", "NECK", "PELVIS"],
    },
    Modality {
        code: "DX",
        sop_class: "1.2.840.10008.5.1.4.1.1.1.1",
        rows: 3000,
        cols: 2500,
        bits: 16,
        slices: false,
        study_descriptions: &["CHEST 1 VIEW", "KNEE 2 VIEWS"],
        series_descriptions: &["AP", "LAT"],
        body_parts: &["CHEST", "KNEE"],
    },
    Modality {
        code: "MG",
        sop_class: "1.2.840.10008.5.1.4.1.1.1.2",
        rows: 4096,
        cols: 3328,
        bits: 16,
        slices: false,
        study_descriptions: &["MAMMO SCREENING BILATERAL"],
        series_descriptions: &["L CC", "R MLO"],
        body_parts: &["BREAST"],
    },
    Modality {
        code: "NM",
        sop_class: "1.2.840.10008.5.1.4.1.1.20",
        rows: 128,
        cols: 128,
        bits: 16,
        slices: false,
        study_descriptions: &["NM BONE SCAN WHOLE BODY"],
        series_descriptions: &["ANT POST"],
        body_parts: &["WHOLEBODY"],
    },
    Modality {
        code: "PT",
        sop_class: "1.2.840.10008.5.1.4.1.1.128",
        rows: 192,
        cols: 192,
        bits: 16,
        slices: true,
        study_descriptions: &["PET CT FDG WHOLE BODY"],
        series_descriptions: &["PET AC", "PET NAC"],
        body_parts: &["WHOLEBODY"],
    },
];

/// CT 40 %, MR 25 %, CR 15 %, US 10 %, DX 4 %, MG 3 %, NM 2 %, PT 1 %.
fn pick_modality(rng: &mut Lcg) -> &'static Modality {
    let r = rng.below(100);
    let i = [40, 65, 80, 90, 94, 97, 99, 100]
        .iter()
        .position(|&cut| r < cut)
        .unwrap_or(0);
    &MODALITIES[i]
}

const REFERRING: &[&str] = &[
    "HOUSE^GREGORY",
    "GREY^MEREDITH",
    "KILDARE^JAMES",
    "WELBY^MARCUS",
    "QUINN^MICHAELA",
    "",
];

/// What the query generator needs to know about each study.
struct StudyInfo {
    uid: String,
    family: u32,
    year: i64,
    month: u32,
    ct: bool,
}

/// The big study: one series of [`BIG_SERIES_INSTANCES`] CT slices.
struct Big {
    study: String,
    series: String,
}

struct Archive {
    families: Vec<String>,
    givens: Vec<String>,
    patients: usize,
    rng: Lcg,
    next_sop: u64,
    now: u64,
}

fn pn(name: &str) -> Json {
    if name.is_empty() {
        json!({"vr": "PN"})
    } else {
        json!({"vr": "PN", "Value": [{"Alphabetic": name}]})
    }
}

fn s(vr: &str, v: &str) -> Json {
    json!({"vr": vr, "Value": [v]})
}

fn merge(parts: &[&Json]) -> Json {
    let mut out = serde_json::Map::new();
    for p in parts {
        if let Json::Object(m) = p {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    Json::Object(out)
}

/// One study to index: its study and series attributes, then its instances.
struct StudyPlan {
    index: u64,
    info: StudyInfo,
    series_uid: String,
    modality: &'static Modality,
    patient_id: String,
    patient_name: String,
    study_attrs: Json,
    series_attrs: Json,
}

impl Archive {
    fn new(studies: usize) -> Self {
        Archive {
            families: make_names(0x5EED_0001, FAMILY_NAMES, SYLLABLES, ENDINGS, 1),
            givens: make_names(0x5EED_0002, GIVEN_NAMES, GIVEN_SYLLABLES, GIVEN_ENDINGS, 1),
            // About three studies per patient.
            patients: (studies / 3).max(1),
            rng: Lcg(0x2545_F491_4F6C_DD1D),
            next_sop: 0,
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Study `i`; `big` gives it a patient of its own and makes it a CT.
    fn study(&mut self, i: u64, big: bool) -> StudyPlan {
        let rng = &mut self.rng;
        let patient = if big {
            self.patients as u64
        } else {
            rng.below(self.patients) as u64
        };
        // The patient's identity is a function of the patient number alone.
        let mut prng = Lcg(patient.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5_5A5A);
        prng.next();
        let family = prng.below(self.families.len()) as u32;
        let given = prng.below(self.givens.len());
        let birth_days = days_from_civil(1930, 1, 1) + prng.below(85 * 365) as i64;
        let sex = ["F", "M", "F", "M", "O"][prng.below(5)];
        let (by, bm, bd) = civil_from_days(birth_days);
        let patient_name = format!("{}^{}", self.families[family as usize], self.givens[given]);
        let patient_id = format!("PID{patient:08}");

        let modality = if big {
            &MODALITIES[0]
        } else {
            pick_modality(rng)
        };
        let day = days_from_civil(FIRST_YEAR, 1, 1) + rng.below(DATE_SPAN_DAYS as usize) as i64;
        let (y, m, d) = civil_from_days(day);
        let time = format!(
            "{:02}{:02}{:02}",
            7 + rng.below(12),
            rng.below(60),
            rng.below(60)
        );
        let study_uid = uid(1, i);
        let series_uid = uid(2, i);
        let desc = modality.study_descriptions[rng.below(modality.study_descriptions.len())];
        let series_desc =
            modality.series_descriptions[rng.below(modality.series_descriptions.len())];
        let body_part = modality.body_parts[rng.below(modality.body_parts.len())];
        let referring = REFERRING[rng.below(REFERRING.len())];
        let study_attrs = json!({
            "00080005": s("CS", "ISO_IR 100"),
            "00080020": s("DA", &format!("{y:04}{m:02}{d:02}")),
            "00080030": s("TM", &time),
            "00080050": s("SH", &format!("A{:09}", 100_000_000 + i)),
            "00080090": pn(referring),
            "00081030": s("LO", desc),
            "00100010": pn(&patient_name),
            "00100020": s("LO", &patient_id),
            "00100030": s("DA", &format!("{by:04}{bm:02}{bd:02}")),
            "00100040": s("CS", sex),
            "0020000D": s("UI", &study_uid),
            "00200010": s("SH", &format!("{}", 1 + i % 100_000)),
        });
        let series_attrs = json!({
            "00080060": s("CS", modality.code),
            "00080070": s("LO", "Lightbox Bench"),
            "0008103E": s("LO", series_desc),
            "00180015": s("CS", body_part),
            "0020000E": s("UI", &series_uid),
            "00200011": {"vr": "IS", "Value": [1]},
        });
        StudyPlan {
            index: i,
            info: StudyInfo {
                uid: study_uid,
                family,
                year: y,
                month: m,
                ct: modality.code == "CT",
            },
            series_uid,
            modality,
            patient_id,
            patient_name,
            study_attrs,
            series_attrs,
        }
    }

    /// Instance `n` (1-based InstanceNumber) of a planned study.
    fn instance(&mut self, p: &StudyPlan, n: usize) -> Res<NewInstance> {
        let sop_index = self.next_sop;
        self.next_sop += 1;
        let sop = uid(3, sop_index);
        let m = p.modality;
        let mut attrs = serde_json::Map::new();
        attrs.insert("00080005".into(), s("CS", "ISO_IR 100"));
        attrs.insert(
            "00080008".into(),
            json!({"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]}),
        );
        attrs.insert("00080016".into(), s("UI", m.sop_class));
        attrs.insert("00080018".into(), s("UI", &sop));
        attrs.insert("00200013".into(), json!({"vr": "IS", "Value": [n]}));
        attrs.insert("00280002".into(), json!({"vr": "US", "Value": [1]}));
        attrs.insert("00280004".into(), s("CS", "MONOCHROME2"));
        attrs.insert("00280010".into(), json!({"vr": "US", "Value": [m.rows]}));
        attrs.insert("00280011".into(), json!({"vr": "US", "Value": [m.cols]}));
        attrs.insert("00280100".into(), json!({"vr": "US", "Value": [m.bits]}));
        attrs.insert(
            "00280101".into(),
            json!({"vr": "US", "Value": [if m.bits == 8 { 8 } else { 12 }]}),
        );
        if m.slices {
            let z = -200.0 + 2.5 * n as f64;
            attrs.insert(
                "00200032".into(),
                json!({"vr": "DS", "Value": [-250.0, -250.0, z]}),
            );
            attrs.insert(
                "00200037".into(),
                json!({"vr": "DS", "Value": [1, 0, 0, 0, 1, 0]}),
            );
            attrs.insert("00200052".into(), s("UI", &uid(4, p.index)));
            attrs.insert("00201041".into(), json!({"vr": "DS", "Value": [z]}));
            attrs.insert("00180050".into(), json!({"vr": "DS", "Value": [2.5]}));
        }
        let attrs = Json::Object(attrs);
        let extra = json!({
            "00280030": {"vr": "DS", "Value": [0.976562, 0.976562]},
            "00281050": {"vr": "DS", "Value": [40]},
            "00281051": {"vr": "DS", "Value": [400]},
            "00281052": {"vr": "DS", "Value": [-1024]},
            "00281053": {"vr": "DS", "Value": [1]},
            "7FE00010": {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"},
        });
        let metadata = merge(&[&p.study_attrs, &p.series_attrs, &attrs, &extra]);
        let sop_uid = SopInstanceUid::parse(&sop).map_err(|e| format!("{sop}: {e}"))?;
        let hash = fake_hash(sop_index);
        let size = u64::from(m.rows) * u64::from(m.cols) * u64::from(m.bits / 8) + 4096;
        Ok(NewInstance {
            record: InstanceRecord {
                study: StudyUid::parse(&p.info.uid).map_err(|e| e.to_string())?,
                series: SeriesUid::parse(&p.series_uid).map_err(|e| e.to_string())?,
                blob: BlobKey::new(&sop_uid, &hash),
                sop: sop_uid,
                sop_class: SopClassUid::parse(m.sop_class).map_err(|e| e.to_string())?,
                transfer_syntax: EXPLICIT_VR_LE.into(),
                size,
                hash,
                stored_at: self.now,
                patient_id: p.patient_id.clone(),
                patient_name: p.patient_name.clone(),
                modality: Some(m.code.into()),
                attrs,
                frames: FrameAccess::None,
            },
            owner: None,
            study_attrs: p.study_attrs.clone(),
            series_attrs: p.series_attrs.clone(),
            metadata,
        })
    }
}

struct Loaded {
    studies: Vec<StudyInfo>,
    families: Vec<String>,
    big: Big,
    instances: usize,
    seconds: f64,
}

/// Index N studies × 1 series × 10 instances plus the big study, then close the store.
fn load(data: &Path, n: usize, progress: bool) -> Res<Loaded> {
    let total = n * INSTANCES_PER_STUDY + BIG_SERIES_INSTANCES;
    let bar = if progress {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} instances ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("indexing {n} studies"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let (store, _) = Store::open(data).map_err(|e| format!("Store::open: {e}"))?;
    let mut archive = Archive::new(n);
    let mut studies = Vec::with_capacity(n);
    let commit = |store: &Store, new: NewInstance| -> Res<()> {
        store
            .repo
            .commit(new)
            .map(|_| ())
            .map_err(|e| format!("commit: {e}"))
    };
    for i in 0..n {
        let plan = archive.study(i as u64, false);
        for k in 1..=INSTANCES_PER_STUDY {
            commit(&store, archive.instance(&plan, k)?)?;
        }
        studies.push(plan.info);
        bar.inc(INSTANCES_PER_STUDY as u64);
    }
    let plan = archive.study(n as u64, true);
    for k in 1..=BIG_SERIES_INSTANCES {
        commit(&store, archive.instance(&plan, k)?)?;
    }
    bar.inc(BIG_SERIES_INSTANCES as u64);
    let big = Big {
        study: plan.info.uid.clone(),
        series: plan.series_uid.clone(),
    };
    // Flush and record a clean stop: without it the server's start-up recovery would drop
    // every entry, since no instance file exists.
    store.close().map_err(|e| format!("Store::close: {e}"))?;
    drop(store);
    bar.finish_and_clear();
    Ok(Loaded {
        studies,
        families: archive.families,
        big,
        instances: total,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Expect {
    AtLeastOne,
    Exactly(usize),
}

struct Row {
    name: &'static str,
    /// Warm-up paths first, then the sampled ones.
    paths: Vec<String>,
    expect: Expect,
}

fn month_range(y: i64, m: u32) -> String {
    format!("{y:04}{m:02}01-{y:04}{m:02}{:02}", days_in_month(y, m))
}

fn rows(l: &Loaded, count: usize) -> Vec<Row> {
    let mut rng = Lcg(0xC0FF_EE00_D15C_0001);
    let studies = &l.studies;
    let cts: Vec<&StudyInfo> = studies.iter().filter(|s| s.ct).collect();
    let mut pick = |v: usize| rng.below(v);
    let mut name = Vec::new();
    let mut date = Vec::new();
    let mut combined = Vec::new();
    let mut series = Vec::new();
    for _ in 0..count {
        let s = &studies[pick(studies.len())];
        name.push(format!(
            "/dicom-web/studies?PatientName={}*&limit={LIMIT}",
            l.families[s.family as usize]
        ));
        let s = &studies[pick(studies.len())];
        date.push(format!(
            "/dicom-web/studies?StudyDate={}&limit={LIMIT}",
            month_range(s.year, s.month)
        ));
        if !cts.is_empty() {
            let c = cts[pick(cts.len())];
            combined.push(format!(
                "/dicom-web/studies?PatientName={}*&StudyDate={y}0101-{y}1231&ModalitiesInStudy=CT&limit={LIMIT}",
                l.families[c.family as usize],
                y = c.year
            ));
        }
        let s = &studies[pick(studies.len())];
        series.push(format!("/dicom-web/studies/{}/series?limit={LIMIT}", s.uid));
    }
    let fixed = |p: String| vec![p; count];
    let mut out = vec![
        Row {
            name: "PatientName=<FAMILY>*",
            paths: name,
            expect: Expect::AtLeastOne,
        },
        Row {
            name: "StudyDate=<one month>",
            paths: date,
            expect: Expect::AtLeastOne,
        },
        Row {
            name: "ModalitiesInStudy=CT",
            paths: fixed(format!(
                "/dicom-web/studies?ModalitiesInStudy=CT&limit={LIMIT}"
            )),
            expect: Expect::AtLeastOne,
        },
    ];
    if !combined.is_empty() {
        out.push(Row {
            name: "PatientName + StudyDate (1 year) + CT",
            paths: combined,
            expect: Expect::AtLeastOne,
        });
    }
    out.extend([
        Row {
            name: "/studies (no filter, newest first)",
            paths: fixed(format!("/dicom-web/studies?limit={LIMIT}")),
            expect: Expect::Exactly(LIMIT.min(studies.len() + 1)),
        },
        Row {
            name: "/studies/{study}/series",
            paths: series,
            expect: Expect::Exactly(1),
        },
        Row {
            name: "100-instance series: /instances?limit=100",
            paths: fixed(format!(
                "/dicom-web/studies/{}/series/{}/instances?limit=100",
                l.big.study, l.big.series
            )),
            expect: Expect::Exactly(BIG_SERIES_INSTANCES),
        },
    ]);
    out
}

struct Stats {
    name: &'static str,
    example: String,
    samples: usize,
    p50: f64,
    p99: f64,
    mean: f64,
    min: f64,
    max: f64,
    results_min: usize,
    results_max: usize,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends every path of the row in order over `http`; the first `warmup` are not recorded.
/// Panics (after which the guards stop the server) on a non-200 or an unexpected result count.
fn measure(
    http: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    row: &Row,
    warmup: usize,
) -> Stats {
    let mut lat = Vec::with_capacity(row.paths.len());
    let (mut rmin, mut rmax) = (usize::MAX, 0);
    let auth = format!("Bearer {token}");
    for (i, path) in row.paths.iter().enumerate() {
        let full = format!("{url}{path}");
        let t = Instant::now();
        let result = http
            .get(&full)
            .header("Accept", "application/dicom+json")
            .header("Authorization", &auth)
            .send()
            .and_then(|r| {
                let status = r.status();
                r.bytes().map(|b| (status, b))
            });
        let elapsed = t.elapsed().as_secs_f64();
        let (status, body) = match result {
            Ok(x) => x,
            Err(e) => panic!("GET {path}: {e}"),
        };
        assert!(
            status.as_u16() == 200,
            "GET {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        let n = match serde_json::from_slice::<Json>(&body) {
            Ok(Json::Array(a)) => a.len(),
            Ok(other) => panic!("GET {path}: not a JSON array: {other}"),
            Err(e) => panic!("GET {path}: invalid JSON: {e}"),
        };
        match row.expect {
            Expect::AtLeastOne => assert!(n >= 1, "GET {path}: no result"),
            Expect::Exactly(k) => assert!(n == k, "GET {path}: {n} results, expected {k}"),
        }
        if i >= warmup {
            lat.push(elapsed * 1e3);
            rmin = rmin.min(n);
            rmax = rmax.max(n);
        }
    }
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    lat.sort_by(f64::total_cmp);
    Stats {
        name: row.name,
        example: row.paths.get(warmup).cloned().unwrap_or_default(),
        samples: lat.len(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        mean,
        min: lat.first().copied().unwrap_or(f64::NAN),
        max: lat.last().copied().unwrap_or(f64::NAN),
        results_min: rmin,
        results_max: rmax,
    }
}

// ---------------------------------------------------------------------------------------------
// One study count
// ---------------------------------------------------------------------------------------------

fn run_size(bin: &Path, base: &Path, n: usize, k: &Knobs) -> Res<()> {
    println!();
    println!("== QIDO-RS: {n} studies ==");
    // Dropped last (declared first): removes the data once the server is gone.
    let bench_dir = tempfile::Builder::new()
        .prefix(&format!("qido-{n}-"))
        .tempdir_in(base)
        .map_err(|e| format!("cannot create a directory under {}: {e}", base.display()))?;
    let data = bench_dir.path().join("data");

    // 1. Index.
    let loaded = load(&data, n, k.progress)?;
    let index_bytes = dir_size(&data.join("index"));
    println!(
        "loaded {} studies, {} instances via MetaRepo::commit in {:.1} s ({:.0} instances/s); index {:.1} MB on disk",
        n + 1,
        loaded.instances,
        loaded.seconds,
        loaded.instances as f64 / loaded.seconds,
        index_bytes as f64 / 1e6
    );

    // 2. Server: the first start creates the bootstrap admin (an argon2 hash); the second is a
    // plain restart. Both build the search catalog from the index.
    let mut first = ServerGuard::start(bin, &data)?;
    let first_start = first.startup;
    println!(
        "server first start  {:.3} s to the listening line (includes creating the bootstrap admin)",
        first_start.as_secs_f64()
    );
    // `start` has already signed in: the server installs its SIGTERM handler only after printing
    // the listening line, and a SIGTERM before that would kill it without the clean stop (the
    // restart would then run recovery and drop every entry, since no instance file exists).
    first.stop();
    if first.exit_code != Some(0) {
        return Err(format!(
            "the first server did not stop cleanly after SIGTERM (exit code {:?})",
            first.exit_code
        ));
    }
    drop(first);
    let mut server = ServerGuard::start(bin, &data)?;
    let startup = server.startup;
    println!(
        "server restart      {:.3} s to the listening line (pid {}, {})",
        startup.as_secs_f64(),
        server.pid(),
        server.url
    );
    let rss_after_start = proc_status_kib(server.pid(), "VmRSS:");
    let token = server.token.clone();
    let http = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;

    // 3. Measure, row by row.
    let rows = rows(&loaded, k.warmup + k.samples);
    let mut stats = Vec::with_capacity(rows.len());
    for row in &rows {
        stats.push(measure(&http, &server.url, &token, row, k.warmup));
    }
    let pid = server.pid();
    let peak_kib = proc_status_kib(pid, "VmHWM:");
    let rss_kib = proc_status_kib(pid, "VmRSS:");
    server.stop();
    if let Some(code) = server.exit_code
        && code != 0
    {
        println!("note: the server exited with status {code} after SIGTERM");
    }

    // 4. Report.
    println!();
    println!(
        "QIDO-RS latency, {n} studies (+1 with a 100-instance series), {} instances; {} samples per row after {} warm-up, one keep-alive connection, limit={LIMIT}",
        loaded.instances, k.samples, k.warmup
    );
    println!();
    println!("| query | p50 ms | p99 ms | mean ms | results |");
    println!("|---|---:|---:|---:|---:|");
    for s in &stats {
        let results = if s.results_min == s.results_max {
            s.results_min.to_string()
        } else {
            format!("{}–{}", s.results_min, s.results_max)
        };
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {results} |",
            s.name, s.p50, s.p99, s.mean
        );
    }
    println!();
    let mib = |k: Option<u64>| {
        k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "unavailable".into())
    };
    println!("load time           {:.1} s", loaded.seconds);
    println!(
        "server start-up     {:.3} s (restart)",
        startup.as_secs_f64()
    );
    println!(
        "server RSS          {} after start-up, {} after the run; peak (VmHWM) {}",
        mib(rss_after_start),
        mib(rss_kib),
        mib(peak_kib)
    );
    println!("targets             {TARGETS}");
    println!("reference           {REFERENCE}");

    if k.write_json {
        let doc = json!({
            "bench": "qido",
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "binary": bin.display().to_string(),
            "studies": n + 1,
            "generated_studies": n,
            "instances": loaded.instances,
            "load_s": loaded.seconds,
            "index_bytes": index_bytes,
            "server_first_start_s": first_start.as_secs_f64(),
            "server_startup_s": startup.as_secs_f64(),
            "server_rss_after_start_kib": rss_after_start,
            "server_rss_after_run_kib": rss_kib,
            "server_peak_rss_kib": peak_kib,
            "samples": k.samples,
            "warmup": k.warmup,
            "limit": LIMIT,
            "rows": stats.iter().map(|s| json!({
                "query": s.name,
                "example": s.example,
                "samples": s.samples,
                "p50_ms": s.p50,
                "p99_ms": s.p99,
                "mean_ms": s.mean,
                "min_ms": s.min,
                "max_ms": s.max,
                "results_min": s.results_min,
                "results_max": s.results_max,
            })).collect::<Vec<_>>(),
            "targets": TARGETS,
            "reference": REFERENCE,
        });
        let path = base.join(format!("qido-{n}.json"));
        match std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
            Ok(()) => println!("results             {}", path.display()),
            Err(e) => println!("results             not written to {}: {e}", path.display()),
        }
    }
    drop(server);
    drop(bench_dir);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------
