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
use lightbox::store::{Store, StoredKind, blob};

mod common;
use common::CtSpec;

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
    let template = common::ct_instance(&CtSpec {
        sop_uid: TEMPLATE_SOP.into(),
        ..CtSpec::default()
    });
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
                let result = store.commit_batch(vec![staged], 0, None);
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
