//! In-process benchmarks of the ingest path for one 512×512 16-bit CT instance (~525 KB):
//!
//! - `ingest/parse_file`: header parse + structure walk + index attributes + metadata template;
//! - `ingest/content_hash`: BLAKE3 of the file after the preamble;
//! - `ingest/stage`: `Store::stage` on a fresh temp file (preamble check, parse, hash);
//! - `ingest/store_one`: what STOW-RS does per instance, for a batch of one: write the bytes to
//!   `blobs.create_temp()`, `stage`, `commit_batch` (fsync, rename, directory fsync, index
//!   commit and flush), with a fresh SOP Instance UID every iteration.
//!
//! Files live under `LIGHTBOX_BENCH_DIR` (default `target/bench-data`), so the fsyncs hit the
//! same file system a data directory would. `cargo bench --bench ingest`; see benches/README.md.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dicom_core::value::{C, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use lightbox::store::{Store, StoredKind, blob};

const ROWS: usize = 512;
const COLS: usize = 512;
/// SOP Instance UID of the template; patched in place (same length) for fresh instances.
const TEMPLATE_SOP: &str = "2.25.100000000000000000000";

fn sop_uid(n: u64) -> String {
    format!("2.25.1{n:020}")
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("LIGHTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
                .join("bench-data")
        });
    std::fs::create_dir_all(&base).expect("create the bench data directory");
    tempfile::Builder::new()
        .prefix("ingest-")
        .tempdir_in(&base)
        .expect("create a temp directory for the bench")
}

/// One synthetic CT slice (Explicit VR Little Endian) as Part 10 bytes.
fn ct_instance() -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, v));
    };
    let s = |x: &str| PrimitiveValue::from(x.to_owned());
    let strs =
        |xs: &[&str]| PrimitiveValue::Strs(C::from_vec(xs.iter().map(|x| x.to_string()).collect()));
    put(tags::SPECIFIC_CHARACTER_SET, VR::CS, s("ISO_IR 100"));
    put(
        tags::IMAGE_TYPE,
        VR::CS,
        strs(&["ORIGINAL", "PRIMARY", "AXIAL"]),
    );
    put(tags::SOP_CLASS_UID, VR::UI, s("1.2.840.10008.5.1.4.1.1.2"));
    put(tags::SOP_INSTANCE_UID, VR::UI, s(TEMPLATE_SOP));
    put(tags::STUDY_DATE, VR::DA, s("20240312"));
    put(tags::STUDY_TIME, VR::TM, s("101500"));
    put(tags::ACCESSION_NUMBER, VR::SH, s("ACC00001"));
    put(tags::MODALITY, VR::CS, s("CT"));
    put(tags::MANUFACTURER, VR::LO, s("Lightbox Bench"));
    put(tags::REFERRING_PHYSICIAN_NAME, VR::PN, s(""));
    put(tags::STUDY_DESCRIPTION, VR::LO, s("CT CHEST ABDOMEN"));
    put(tags::SERIES_DESCRIPTION, VR::LO, s("AXIAL 2.5mm"));
    put(tags::PATIENT_NAME, VR::PN, s("Bench^Alice"));
    put(tags::PATIENT_ID, VR::LO, s("BENCH-000"));
    put(tags::PATIENT_BIRTH_DATE, VR::DA, s("19700101"));
    put(tags::PATIENT_SEX, VR::CS, s("F"));
    put(tags::SLICE_THICKNESS, VR::DS, s("2.5"));
    put(tags::KVP, VR::DS, s("120"));
    put(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        s("2.25.200000000000000000001"),
    );
    put(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        s("2.25.300000000000000000001"),
    );
    put(tags::STUDY_ID, VR::SH, s("1"));
    put(tags::SERIES_NUMBER, VR::IS, s("1"));
    put(tags::INSTANCE_NUMBER, VR::IS, s("1"));
    put(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        strs(&["-250", "-250", "-200.00"]),
    );
    put(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        strs(&["1", "0", "0", "0", "1", "0"]),
    );
    put(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        s("2.25.400000000000000000001"),
    );
    put(tags::SLICE_LOCATION, VR::DS, s("-200.00"));
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s("MONOCHROME2"));
    put(tags::ROWS, VR::US, PrimitiveValue::from(ROWS as u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(COLS as u16));
    put(tags::PIXEL_SPACING, VR::DS, strs(&["0.976562", "0.976562"]));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(1u16),
    );
    put(tags::WINDOW_CENTER, VR::DS, s("40"));
    put(tags::WINDOW_WIDTH, VR::DS, s("400"));
    put(tags::RESCALE_INTERCEPT, VR::DS, s("-1024"));
    put(tags::RESCALE_SLOPE, VR::DS, s("1"));
    put(tags::RESCALE_TYPE, VR::LO, s("HU"));
    // Noisy disc phantom from a 64-bit LCG: never all zeros.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut px = Vec::with_capacity(ROWS * COLS);
    for y in 0..ROWS as i64 {
        for x in 0..COLS as i64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 33) & 0x3F) as i64 - 32;
            let (dx, dy) = (x - 256, y - 256);
            let base = if dx * dx + dy * dy < 200 * 200 {
                1064
            } else {
                0
            };
            px.push(((base + noise).clamp(-2048, 2047) as i16) as u16);
        }
    }
    put(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(C::from_vec(px)),
    );
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .expect("file meta");
    let mut out = Vec::with_capacity(ROWS * COLS * 2 + 4096);
    file.write_all(&mut out).expect("serialise the instance");
    out
}

/// Offsets of every occurrence of the template SOP Instance UID (file meta and data set).
fn uid_offsets(bytes: &[u8]) -> Vec<usize> {
    let needle = TEMPLATE_SOP.as_bytes();
    let offsets: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        offsets.len(),
        2,
        "the template UID should appear in the meta group and the data set"
    );
    offsets
}

/// The template with SOP Instance UID number `n` (same length, so every length stays valid).
fn with_uid(template: &[u8], offsets: &[usize], n: u64) -> Vec<u8> {
    let uid = sop_uid(n);
    assert_eq!(uid.len(), TEMPLATE_SOP.len());
    let mut bytes = template.to_vec();
    for &o in offsets {
        bytes[o..o + uid.len()].copy_from_slice(uid.as_bytes());
    }
    bytes
}

/// Write bytes to a new staging temp file, as STOW-RS does (no fsync here).
fn to_temp(store: &Store, bytes: &[u8]) -> PathBuf {
    let (path, mut file) = store.blobs.create_temp().expect("create_temp");
    file.write_all(bytes).expect("write temp");
    file.flush().expect("flush temp");
    path
}

fn ingest(c: &mut Criterion) {
    let dir = bench_dir();
    let template = ct_instance();
    let offsets = uid_offsets(&template);
    let size = template.len() as u64;
    let file = dir.path().join("ct.dcm");
    std::fs::write(&file, &template).expect("write the instance file");
    let (store, _) = Store::open(&dir.path().join("data")).expect("open the store");
    let mut next_uid: u64 = 1;

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(size));

    g.bench_function("parse_file", |b| {
        b.iter(|| black_box(lightbox::dicom::parse::parse_file(black_box(&file)).expect("parse")))
    });

    g.bench_function("content_hash", |b| {
        b.iter(|| black_box(blob::content_hash(black_box(&file)).expect("hash")))
    });

    // Only `stage` is timed; the temp file is written before and removed after.
    g.bench_function("stage", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let temp = to_temp(&store, &template);
                let t = Instant::now();
                let staged = store.stage(temp).expect("stage");
                total += t.elapsed();
                let _ = std::fs::remove_file(&staged.temp);
            }
            total
        })
    });

    g.bench_function("store_one", |b| {
        b.iter_batched(
            || {
                next_uid += 1;
                with_uid(&template, &offsets, next_uid)
            },
            |bytes| {
                let temp = to_temp(&store, &bytes);
                let staged = store.stage(temp).expect("stage");
                let result = store.commit_batch(vec![staged], 0);
                match result.as_slice() {
                    [Ok(s)] => assert_eq!(s.outcome, StoredKind::New),
                    other => panic!("commit_batch: {other:?}"),
                }
                bytes
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let stored = store.repo.counts().map(|c| c.2).unwrap_or(0);
    println!("ingest: {stored} instances stored by store_one; instance size {size} bytes");
    drop(store);
    drop(dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = ingest
}
criterion_main!(benches);
