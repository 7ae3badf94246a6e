//! Files whose encoding disagrees with what they declare, built byte by byte here: each is
//! either stored as what it really is, or refused at once with 0xC000, never handed to a
//! parser that would allocate by a misread length.

mod common;

use std::time::{Duration, Instant};

use common::*;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

fn el_explicit(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(vr);
    let long = matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT" | b"UC" | b"UR");
    if long {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

fn el_implicit(out: &mut Vec<u8>, g: u16, e: u16, value: &[u8]) {
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn even(s: &str, pad: u8) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(pad);
    }
    v
}

/// Preamble, DICM and a File Meta group declaring `ts`.
fn part10(ts: &str, sop: &str, dataset: &[u8]) -> Vec<u8> {
    let mut meta = Vec::new();
    el_explicit(&mut meta, 0x0002, 0x0001, b"OB", &[0, 1]);
    el_explicit(&mut meta, 0x0002, 0x0002, b"UI", &even(CT, 0));
    el_explicit(&mut meta, 0x0002, 0x0003, b"UI", &even(sop, 0));
    el_explicit(&mut meta, 0x0002, 0x0010, b"UI", &even(ts, 0));
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    el_explicit(
        &mut out,
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    );
    out.extend_from_slice(&meta);
    out.extend_from_slice(dataset);
    out
}

/// The identifying attributes, in implicit or explicit VR.
fn identity(explicit: bool, study: &str, sop: &str, pid_as_un: bool) -> Vec<u8> {
    let mut d = Vec::new();
    let mut put = |g, e, vr: &[u8; 2], v: Vec<u8>| {
        if explicit {
            el_explicit(&mut d, g, e, vr, &v);
        } else {
            el_implicit(&mut d, g, e, &v);
        }
    };
    put(0x0008, 0x0016, b"UI", even(CT, 0));
    put(0x0008, 0x0018, b"UI", even(sop, 0));
    put(0x0008, 0x0060, b"CS", even("CT", b' '));
    put(0x0010, 0x0010, b"PN", even("ODD^ENCODING", b' '));
    put(
        0x0010,
        0x0020,
        if pid_as_un { b"UN" } else { b"LO" },
        even("PID-ODD-1", b' '),
    );
    put(0x0020, 0x000D, b"UI", even(study, 0));
    put(0x0020, 0x000E, b"UI", even(&format!("{study}.1"), 0));
    d
}

fn store(s: &Server, file: Vec<u8>) -> (u16, serde_json::Value, Duration) {
    let t = Instant::now();
    let (status, _, body) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&[file]),
    );
    (status, body, t.elapsed())
}

fn qido(s: &Server, pq: &str) -> Vec<serde_json::Value> {
    let r = send(s.client().get(format!("{}{pq}", s.dicomweb())));
    assert_eq!(r.status, 200, "{pq}: {}", r.text);
    r.array().clone()
}

#[test]
fn un_with_undefined_length_is_refused_at_once() {
    let s = Server::start(&[]);
    let (study, sop) = ("2.25.7001", "2.25.7001.1.1");
    let mut d = identity(true, study, sop, false);
    // (4453,100C) UN, undefined length: a sequence in implicit VR (CP-246), holding an item
    // whose content dicom-rs would misread as explicit VR.
    d.extend_from_slice(&[
        0x53, 0x44, 0x0C, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    el_implicit(&mut d, 0x0008, 0x1150, &even(CT, 0));
    d.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let (status, body, took) = store(&s, part10("1.2.840.10008.1.2.1", sop, &d));
    assert_eq!(status, 400, "{body}");
    assert_eq!(failure_codes(&body, "00081198"), [0xC000]);
    assert!(took < Duration::from_secs(5), "refused in {took:?}");
    assert!(s.stored_files().is_empty());
}

#[test]
fn implicit_data_under_a_compressed_explicit_syntax_is_refused() {
    let s = Server::start(&[]);
    let (study, sop) = ("2.25.7002", "2.25.7002.1.1");
    let d = identity(false, study, sop, false);
    let (status, body, _) = store(&s, part10("1.2.840.10008.1.2.4.50", sop, &d));
    assert_eq!(status, 400, "{body}");
    assert_eq!(failure_codes(&body, "00081198"), [0xC000]);
    let comment = body["00081198"]["Value"][0]["00000902"]["Value"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(comment.contains("Implicit VR"), "{comment}");
}

#[test]
fn implicit_data_declared_explicit_le_is_stored_with_its_meta_corrected() {
    let s = Server::start(&[]);
    let (study, sop) = ("2.25.7003", "2.25.7003.1.1");
    let d = identity(false, study, sop, false);
    let (status, body, _) = store(&s, part10("1.2.840.10008.1.2.1", sop, &d));
    assert_eq!(status, 200, "{body}");
    let files = s.stored_files();
    assert_eq!(files.len(), 1);
    let obj = dicom_object::open_file(&files[0]).expect("the stored file parses");
    assert_eq!(
        obj.meta().transfer_syntax().trim_end_matches('\0'),
        "1.2.840.10008.1.2"
    );
    let found = qido(&s, "/studies?PatientID=PID-ODD-1");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["0020000D"]["Value"][0], study);
}

#[test]
fn standard_attributes_sent_as_un_are_indexed_with_their_real_vr() {
    let s = Server::start(&[]);
    let (study, sop) = ("2.25.7004", "2.25.7004.1.1");
    let d = identity(true, study, sop, true);
    let (status, body, _) = store(&s, part10("1.2.840.10008.1.2.1", sop, &d));
    assert_eq!(status, 200, "{body}");
    let found = qido(&s, "/studies?PatientID=PID-ODD-1");
    assert_eq!(found.len(), 1, "found by the UN-encoded PatientID");
    assert_eq!(found[0]["00100020"]["vr"], "LO");
    assert_eq!(found[0]["00100020"]["Value"][0], "PID-ODD-1");
}
