//! DELETE of a study, series or instance (a Lightbox extension, not a PS3.18 transaction)
//! against the real server: each level and its cascade (search, metadata, retrieve, files,
//! derived data, grants, audit), the refusals, and crash safety (kill -9 in the middle of a
//! large delete leaves the study whole or gone, never half).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const PASSWORD: &str = "Tulip-Orbit-Canyon-93";
const STUDY: &str = "1.2.826.0.1.3680043.10.1435.62.1";

fn store_as(token: &str, s: &Server, files: Vec<Vec<u8>>) {
    let r = send(
        authed_client(token)
            .post(format!("{}/studies", s.dicomweb()))
            .header("Content-Type", stow_content_type())
            .header("Accept", "application/dicom+json")
            .body(multipart(&files)),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

/// STUDY: series .1 with instances .1.1 and .1.2, series .2 with .2.1.
fn three_instances(s: &Server) {
    let files = [("1", "1"), ("1", "2"), ("2", "1")]
        .iter()
        .map(|(se, i)| {
            make_instance(
                STUDY,
                &format!("{STUDY}.{se}"),
                &format!("{STUDY}.{se}.{i}"),
                "DEL-1",
                2048,
            )
        })
        .collect();
    store_as(&s.token, s, files);
}

fn delete(c: &reqwest::blocking::Client, url: &str) -> Resp {
    send(c.delete(url))
}

fn sops_of(r: &Resp) -> Vec<String> {
    let mut v: Vec<String> = r
        .array()
        .iter()
        .map(|i| i["00080018"]["Value"][0].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn delete_at_each_level_cascades_to_search_metadata_files_derived_data_and_grants() {
    let s = Server::start(&[]);
    three_instances(&s);
    let base = s.dicomweb();
    let c = s.client();
    let (patient, _) = s.new_patient("del-patient@example.org", PASSWORD);
    s.deliver(STUDY, "del-patient@example.org", &patient);
    let pc = authed_client(&patient);
    assert_eq!(s.stored_files().len(), 3);
    let derived = s.data.join("derived").join(STUDY);
    std::fs::create_dir_all(&derived).unwrap();
    std::fs::write(derived.join("thumbnail.jpg"), b"x").unwrap();

    // Instance level.
    let inst = format!("{base}/studies/{STUDY}/series/{STUDY}.1/instances/{STUDY}.1.2");
    assert_eq!(send(c.get(&inst)).status, 200);
    let r = delete(&c, &inst);
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    assert_eq!(send(c.get(&inst)).status, 404);
    assert_eq!(send(c.get(format!("{inst}/metadata"))).status, 404);
    assert_eq!(
        delete(&c, &inst).status,
        404,
        "a second delete finds nothing"
    );
    let r = send(c.get(format!("{base}/studies/{STUDY}/instances")));
    assert_eq!(
        sops_of(&r),
        vec![format!("{STUDY}.1.1"), format!("{STUDY}.2.1")]
    );
    assert_eq!(s.stored_files().len(), 2);
    assert!(!derived.exists(), "derived data of the study is dropped");
    // The study record counts what is left.
    let r = send(c.get(format!("{base}/studies?StudyInstanceUID={STUDY}")));
    assert_eq!(r.array()[0]["00201208"]["Value"][0], json!(2));
    // The patient still sees the rest of the study.
    assert_eq!(
        send(pc.get(format!("{base}/studies/{STUDY}/metadata"))).status,
        200
    );

    // Series level; the series metadata was cached before.
    let series = format!("{base}/studies/{STUDY}/series/{STUDY}.1");
    assert_eq!(send(c.get(format!("{series}/metadata"))).status, 200);
    assert_eq!(delete(&c, &series).status, 204);
    assert_eq!(send(c.get(format!("{series}/metadata"))).status, 404);
    assert_eq!(send(c.get(&series)).status, 404);
    let r = send(c.get(format!("{base}/studies/{STUDY}/series")));
    assert_eq!(r.array().len(), 1);
    assert_eq!(
        r.array()[0]["0020000E"]["Value"][0],
        json!(format!("{STUDY}.2"))
    );
    assert_eq!(s.stored_files().len(), 1);

    // Study level.
    let study = format!("{base}/studies/{STUDY}");
    let other = format!("{base}/studies/{STUDY}/series/{STUDY}.2/metadata");
    assert_eq!(send(c.get(&other)).status, 200);
    assert_eq!(delete(&c, &study).status, 204);
    for url in [study.clone(), format!("{study}/metadata"), other.clone()] {
        assert_eq!(send(c.get(&url)).status, 404, "{url}");
    }
    let r = send(c.get(format!("{base}/studies?StudyInstanceUID={STUDY}")));
    assert_eq!(r.status, 200);
    assert!(r.array().is_empty());
    assert!(
        send(c.get(format!("{base}/instances?StudyInstanceUID={STUDY}")))
            .array()
            .is_empty()
    );
    assert!(s.stored_files().is_empty());
    assert_eq!(delete(&c, &study).status, 404);
    // Grants of the deleted study are gone: the staff list is empty, the patient's list too,
    // and the study stored again is not visible to the patient any more.
    let r = send(c.get(format!("{}/api/studies/{STUDY}/grants", s.url)));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json.as_array().map(Vec::len).unwrap_or(0),
        0,
        "{}",
        r.text
    );
    let r = send(pc.get(format!("{}/api/studies", s.url)));
    assert!(!r.text.contains(STUDY), "{}", r.text);
    three_instances(&s);
    assert_eq!(send(pc.get(format!("{study}/metadata"))).status, 404);
    assert_eq!(send(c.get(format!("{study}/metadata"))).status, 200);

    // Audited: 110105 with the level of each delete.
    assert!(eventually(Duration::from_secs(5), || {
        let r = send(c.get(format!("{}/api/audit?event=110105&study={STUDY}", s.url)));
        ["\"instance\"", "\"series\"", "\"study\""]
            .iter()
            .all(|l| r.text.contains(l))
    }));
}

#[test]
fn only_staff_may_delete_and_invisible_studies_are_404() {
    let s = Server::start(&[]);
    three_instances(&s);
    let base = s.dicomweb();
    let study = format!("{base}/studies/{STUDY}");

    // Anonymous: 401.
    assert_eq!(delete(&client(), &study).status, 401);
    // A patient without access: 404 (not told the study exists).
    let (stranger, _) = s.new_patient("stranger@example.org", PASSWORD);
    assert_eq!(delete(&authed_client(&stranger), &study).status, 404);
    // A patient who owns a study (uploaded it) may see it but not delete it: 403.
    let (owner, _) = s.new_patient("owner@example.org", PASSWORD);
    let own = "1.2.826.0.1.3680043.10.1435.62.2";
    store_as(
        &owner,
        &s,
        vec![make_instance(
            own,
            &format!("{own}.1"),
            &format!("{own}.1.1"),
            "OWN",
            256,
        )],
    );
    let own_url = format!("{base}/studies/{own}");
    let r = delete(&authed_client(&owner), &own_url);
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json["code"], "forbidden");
    let r = delete(
        &authed_client(&owner),
        &format!("{own_url}/series/{own}.1/instances/{own}.1.1"),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        send(authed_client(&owner).get(format!("{own_url}/metadata"))).status,
        200
    );
    // A patient with a delivered study: 403 too.
    let (reader, _) = s.new_patient("reader@example.org", PASSWORD);
    s.deliver(STUDY, "reader@example.org", &reader);
    assert_eq!(delete(&authed_client(&reader), &study).status, 403);
    // Refusals changed nothing.
    assert_eq!(s.stored_files().len(), 4);
    // Absent objects and a series or instance under the wrong parent: 404 even for staff.
    let c = s.client();
    assert_eq!(
        delete(&c, &format!("{base}/studies/{STUDY}.404")).status,
        404
    );
    assert_eq!(
        delete(&c, &format!("{base}/studies/{own}/series/{STUDY}.1")).status,
        404
    );
    assert_eq!(
        delete(
            &c,
            &format!("{base}/studies/{STUDY}/series/{STUDY}.2/instances/{STUDY}.1.1")
        )
        .status,
        404
    );
    assert_eq!(delete(&c, &format!("{base}/studies/1.2.abc")).status, 400);
    assert_eq!(s.stored_files().len(), 4);
    // Refused attempts are audited too.
    assert!(eventually(Duration::from_secs(5), || {
        send(c.get(format!("{}/api/audit?event=110105", s.url)))
            .text
            .contains("refused")
    }));
}

/// Sign-ins are throttled per address (10 in a burst): facility and staff get their own server.
#[test]
fn facilities_are_refused_and_staff_may_delete() {
    let s = Server::start(&[]);
    three_instances(&s);
    let base = s.dicomweb();
    let study = format!("{base}/studies/{STUDY}");
    let c = s.client();
    // A facility: 404 without a share, 403 with one.
    let f = send(
        s.client()
            .post(format!("{}/api/facilities", s.url))
            .json(&json!({"email": "pacs@clinic.example", "organisation": "Clinic"})),
    );
    assert_eq!(f.status, 201, "{}", f.text);
    let temp = f.str("temporary_password");
    let fac_id = f.json["user"]["id"].as_str().unwrap().to_owned();
    let t = login(&s.url, "pacs@clinic.example", &temp).unwrap();
    let r = send(
        authed_client(&t)
            .post(format!("{}/api/auth/password", s.url))
            .json(&json!({"current_password": temp, "new_password": "Granite-Harbor-Violet-58"})),
    );
    let facility = authed_client(&r.token());
    assert_eq!(delete(&facility, &study).status, 404);
    let r = send(
        s.client()
            .post(format!("{}/api/studies/{STUDY}/grants", s.url))
            .json(&json!({"account_id": fac_id})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(delete(&facility, &study).status, 403);
    assert_eq!(s.stored_files().len(), 3);
    // A staff member (not admin) may delete.
    let (_, staff_id) = s.new_patient("staff@example.org", PASSWORD);
    let r = send(
        c.patch(format!("{}/api/users/{staff_id}", s.url))
            .json(&json!({"role": "staff"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let staff = authed_client(&login(&s.url, "staff@example.org", PASSWORD).unwrap());
    assert_eq!(delete(&staff, &study).status, 204);
    assert_eq!(send(c.get(format!("{study}/metadata"))).status, 404);
    assert!(s.stored_files().is_empty());
}

/// Instances of STUDY the server lists, and whether every one of them is retrievable.
fn instances_and_retrievable(s: &Server) -> (usize, bool) {
    let c = s.client();
    let r = send(c.get(format!(
        "{}/studies/{STUDY}/instances?limit=1000",
        s.dicomweb()
    )));
    let listed = if r.status == 200 { r.array().len() } else { 0 };
    if listed == 0 {
        return (0, true);
    }
    // The whole study as a ZIP: one entry per instance, each a complete file.
    let z = c
        .get(format!("{}/studies/{STUDY}", s.dicomweb()))
        .header("Accept", "application/zip; transfer-syntax=*")
        .send()
        .unwrap();
    if z.status().as_u16() != 200 {
        return (listed, false);
    }
    let body = z.bytes().unwrap().to_vec();
    let Ok(a) = zip::ZipArchive::new(std::io::Cursor::new(body)) else {
        return (listed, false);
    };
    (listed, a.len() == listed)
}

#[test]
fn kill_9_during_a_large_delete_leaves_the_study_whole_or_gone() {
    const N: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let files: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            make_instance(
                STUDY,
                &format!("{STUDY}.{}", i % 4 + 1),
                &format!("{STUDY}.9.{i}"),
                "CRASH",
                2048,
            )
        })
        .collect();
    let mut outcomes = Vec::new();
    // On this machine the whole delete takes 25–60 ms: the delays straddle it.
    for delay_ms in [0u64, 10, 20, 30, 35, 40, 45, 50, 60, 80] {
        let mut s = Server::start_on(&data, &[]);
        if instances_and_retrievable(&s).0 == 0 {
            for chunk in files.chunks(50) {
                store_as(&s.token, &s, chunk.to_vec());
            }
            let r = send(
                authed_client(&s.token)
                    .post(format!("{}/api/studies/{STUDY}/grants", s.url))
                    .json(&json!({"email": "crash.patient@example.org"})),
            );
            assert_eq!(r.status, 201, "{}", r.text);
        }
        assert_eq!(instances_and_retrievable(&s), (N, true));
        assert_eq!(s.stored_files().len(), N);
        let url = format!("{}/studies/{STUDY}", s.dicomweb());
        let token = s.token.clone();
        let h = std::thread::spawn(move || {
            authed_client(&token)
                .delete(url)
                .send()
                .map(|r| r.status().as_u16())
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        s.crash();
        let answered = h.join().unwrap().ok();
        let s = Server::start_on(&data, &[]);
        let (listed, complete) = instances_and_retrievable(&s);
        let files_left = s.stored_files().len();
        assert!(
            (listed == N && complete && files_left == N) || (listed == 0 && files_left == 0),
            "after kill -9 at {delay_ms} ms: {listed} instances listed (complete: {complete}), \
             {files_left} files"
        );
        if answered == Some(204) {
            assert_eq!(listed, 0, "an acknowledged delete was undone");
        }
        // The study record agrees with what is there.
        let r = send(
            s.client()
                .get(format!("{}/studies?StudyInstanceUID={STUDY}", s.dicomweb())),
        );
        match listed {
            0 => assert!(r.array().is_empty()),
            n => assert_eq!(r.array()[0]["00201208"]["Value"][0], json!(n)),
        }
        // The grant goes with the study, and only with it (swept at start-up if a crash fell
        // between the index flush and the grant removal).
        let r = send(authed_client(&s.token).get(format!("{}/api/studies/{STUDY}/grants", s.url)));
        let grants = r.json.as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(
            grants,
            usize::from(listed == N),
            "after kill -9 at {delay_ms} ms: {listed} instances, {grants} grants: {}",
            r.text
        );
        outcomes.push((delay_ms, listed, answered));
        drop(s);
    }
    eprintln!("kill -9 outcomes (delay ms, instances left, response): {outcomes:?}");
}
