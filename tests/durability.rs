//! Concurrency and crash safety of the store, through the real server.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lightbox::store::Store;

const STUDY: &str = "1.2.826.0.1.3680043.10.1435.77.1";

fn study_is_consistent(store: &Store) -> BTreeMap<String, (String, String, String)> {
    // Every index entry names a complete file whose hash matches; aggregates equal the children.
    let mut seen = BTreeMap::new();
    let records = store.repo.all_instances().unwrap();
    let mut per_series: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_study: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        let path = store.blobs.path(&r.blob);
        assert!(
            path.is_file(),
            "index names a missing file {}",
            path.display()
        );
        assert_eq!(
            lightbox::store::blob::content_hash(&path).unwrap(),
            r.hash,
            "file content differs from the index"
        );
        *per_series.entry(r.series.to_string()).or_default() += 1;
        *per_study.entry(r.study.to_string()).or_default() += 1;
        seen.insert(
            r.sop.to_string(),
            (r.study.to_string(), r.series.to_string(), r.hash.clone()),
        );
    }
    for (series, n) in &per_series {
        let rec = store
            .repo
            .series(&lightbox::ids::SeriesUid::parse(series).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(rec.instance_count, *n, "series {series} count");
        let members = store.repo.instances_of_series(&rec.series).unwrap();
        assert_eq!(members.len() as u64, *n);
    }
    for (study, n) in &per_study {
        let rec = store
            .repo
            .study(&lightbox::ids::StudyUid::parse(study).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(rec.instance_count, *n, "study {study} count");
        let series = store.repo.series_of_study(&rec.study).unwrap();
        assert_eq!(rec.series_count, series.len() as u64);
    }
    seen
}

#[test]
fn parallel_stows_into_one_study_leave_exact_counts() {
    let mut s = Server::start(&[]);
    let url = format!("{}/studies", s.dicomweb());
    let clients = 6;
    let requests = 8;
    let per_request = 5;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                for r in 0..requests {
                    let parts: Vec<Vec<u8>> = (0..per_request)
                        .map(|i| {
                            // Three series shared by all clients: the aggregates race.
                            let series = format!("{STUDY}.{}", (r + i) % 3 + 1);
                            let sop = format!("{STUDY}.9.{c}.{r}.{i}");
                            make_instance(STUDY, &series, &sop, "P1", 2048)
                        })
                        .collect();
                    let (st, _, b) = stow(&url, &stow_content_type(), multipart(&parts));
                    assert_eq!(st, 200, "{b}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.stop(), Some(0));
    let store = Store::open(&s.data).unwrap().0;
    let seen = study_is_consistent(&store);
    let total = (clients * requests * per_request) as u64;
    assert_eq!(seen.len() as u64, total);
    let study = store
        .repo
        .study(&lightbox::ids::StudyUid::parse(STUDY).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(study.instance_count, total);
    assert_eq!(study.series_count, 3);
    assert_eq!(study.modalities.get("CT"), Some(&3));
}

#[test]
fn kill_9_during_stows_loses_no_acknowledged_instance_and_indexes_nothing_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_on(&data, &[]);
    let url = format!("{}/studies", s.dicomweb());
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let handles: Vec<_> = (0..4)
        .map(|c| {
            let url = url.clone();
            let acked = acked.clone();
            let token = s.token.clone();
            std::thread::spawn(move || {
                let client = authed_client(&token);
                for r in 0.. {
                    if Instant::now() > stop_at + Duration::from_secs(5) {
                        break;
                    }
                    let sops: Vec<String> =
                        (0..4).map(|i| format!("{STUDY}.8.{c}.{r}.{i}")).collect();
                    let parts: Vec<Vec<u8>> = sops
                        .iter()
                        .enumerate()
                        .map(|(i, sop)| {
                            make_instance(
                                STUDY,
                                &format!("{STUDY}.{}", i % 2 + 1),
                                sop,
                                "P1",
                                200_000,
                            )
                        })
                        .collect();
                    let resp = client
                        .post(&url)
                        .header("Content-Type", stow_content_type())
                        .body(multipart(&parts))
                        .send();
                    match resp {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let j: serde_json::Value = match r.json() {
                                Ok(j) => j,
                                Err(_) => break,
                            };
                            acked.lock().unwrap().extend(referenced(&j));
                        }
                        _ => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(stop_at - Instant::now());
    s.crash();
    for h in handles {
        h.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "some uploads were acknowledged before the crash"
    );

    // Recovery runs on open.
    let (store, report) = Store::open(&data).unwrap();
    eprintln!(
        "recovery after kill -9: {report:?}, {} acknowledged",
        acked.len()
    );
    let seen = study_is_consistent(&store);
    for sop in &acked {
        assert!(seen.contains_key(sop), "acknowledged instance {sop} lost");
    }
    assert_eq!(
        std::fs::read_dir(data.join("tmp")).unwrap().count(),
        0,
        "temp files removed"
    );
    // Every file on disk is named by the index.
    let files = store.blobs.list().unwrap();
    assert_eq!(files.iter().filter(|f| f.is_ok()).count(), seen.len());

    // Reindex from the files gives the same index.
    store.reindex(|_, _| {}).unwrap();
    let again = study_is_consistent(&store);
    assert_eq!(again, seen);
    drop(store);

    // And the server starts again on it and accepts new work.
    let s2 = Server::start_on(&data, &[]);
    let (st, _, _) = stow(
        &format!("{}/studies", s2.dicomweb()),
        &stow_content_type(),
        multipart(&[make_instance(
            STUDY,
            &format!("{STUDY}.1"),
            &format!("{STUDY}.7.1"),
            "P1",
            2048,
        )]),
    );
    assert_eq!(st, 200);
}

#[test]
fn a_clean_stop_lets_the_next_start_skip_recovery_and_a_crash_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let marker = data.join("clean-shutdown");
    // A server stopped gracefully leaves the marker.
    let mut s = Server::start_on(&data, &[]);
    assert!(!marker.exists(), "no marker while running");
    assert_eq!(s.stop(), Some(0));
    assert!(marker.exists(), "a graceful stop records a clean shutdown");
    // Opening consumes it: a crash from now on must recover.
    let (store, _) = Store::open(&data).unwrap();
    assert!(!marker.exists());
    drop(store); // no close(): like a crash
    std::fs::write(data.join("tmp").join("leftover.part"), b"half an upload").unwrap();
    let (store, report) = Store::open(&data).unwrap();
    assert_eq!(
        report.temp_files_removed, 1,
        "an unclean stop runs recovery"
    );
    store.close().unwrap();
    assert!(marker.exists());
}
