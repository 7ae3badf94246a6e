//! `lightbox import` end to end: the real binary on a CD-like tree, twice, and against a data
//! directory held by a running server.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{bin, fixture};

const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// A small CT instance written as a Part 10 file in the given transfer syntax.
fn instance(sop: &str, ts: &str) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let mut obj = InMemDicomObject::new_empty();
    let mut s = |t, vr, v: &str| obj.put(DataElement::new(t, vr, PrimitiveValue::from(v)));
    s(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE);
    s(tags::SOP_INSTANCE_UID, VR::UI, sop);
    s(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.4242");
    s(tags::SERIES_INSTANCE_UID, VR::UI, "2.25.4242.1");
    s(tags::PATIENT_ID, VR::LO, "IMPORT-1");
    s(tags::PATIENT_NAME, VR::PN, "Import^Test");
    s(tags::MODALITY, VR::CS, "CT");
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

/// A fixture's bytes, or a generated instance while the fixtures are not there.
fn fixture_or(name: &str, sop: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|_| instance(sop, EXPLICIT_VR_LE))
}

/// The data set of a Part 10 file without preamble, `DICM` and meta group, as old CD writers
/// left it.
fn strip_meta(part10: &[u8]) -> Vec<u8> {
    assert_eq!(&part10[128..132], b"DICM");
    // (0002,0000) UL, explicit VR: tag 4 + VR 2 + length 2, then the 4-byte group length.
    assert_eq!(&part10[132..136], &[0x02, 0, 0, 0]);
    let group_len = u32::from_le_bytes(part10[140..144].try_into().unwrap()) as usize;
    part10[144 + group_len..].to_vec()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Instances the tree below holds outside skipped places.
const EXPECTED_STORED: u64 = 10;

/// A CD-like tree in `dir/cd`, plus a DICOM file outside it that a symlink points to.
///
/// Imported: 7 files in `dicom/` (explicit, implicit, RLE multi-frame, a preamble-less copy,
/// raw data sets without meta header in implicit and explicit VR, one in a subfolder) and 3
/// instances in `studies.zip` (one a raw data set).
fn build_cd(dir: &Path) -> PathBuf {
    let cd = dir.join("cd");
    let dicomdir = std::fs::read(fixture("DICOMDIR.dcm")).unwrap_or_else(|_| {
        // A stand-in: a file named DICOMDIR is skipped by its name alone.
        instance("2.25.99", EXPLICIT_VR_LE)
    });
    write(&cd.join("DICOMDIR"), &dicomdir);
    write(
        &cd.join("AUTORUN.INF"),
        b"[autorun]\r\nopen=VIEWER\\viewer.exe\r\n",
    );
    write(&cd.join("setup.exe"), b"MZ\x90\x00 not really a program");
    write(&cd.join("README.TXT"), b"Images of Import^Test\r\n");
    write(&cd.join("INDEX.HTM"), b"<html><body>images</body></html>");
    // Must be skipped even though they hold DICOM files.
    write(&cd.join("IHE_PDI/INDEX.HTM"), b"<html></html>");
    write(
        &cd.join("IHE_PDI/IMAGES/IMG1"),
        &instance("2.25.9001", EXPLICIT_VR_LE),
    );
    write(
        &cd.join("VIEWER/viewer.dat"),
        &instance("2.25.9002", EXPLICIT_VR_LE),
    );
    write(&cd.join("VIEWER/viewer.dll"), b"MZ");
    write(&cd.join("Program/tool.exe"), b"MZ");
    write(
        &cd.join("Program/sample"),
        &instance("2.25.9003", EXPLICIT_VR_LE),
    );

    // The images, in a lower-case folder with ISO 9660-style names.
    let d = cd.join("dicom");
    write(
        &d.join("IM000001"),
        &fixture_or("ct_explicit.dcm", "2.25.1001"),
    );
    write(
        &d.join("IM000002"),
        &fixture_or("ct_implicit.dcm", "2.25.1002"),
    );
    write(
        &d.join("IM000003;1"),
        &fixture_or("mf_rle_bot.dcm", "2.25.1003"),
    );
    let rle = fixture_or("ct_rle.dcm", "2.25.1004");
    write(&d.join("IM000004."), &rle[128..]);
    write(
        &d.join("IM000005"),
        &strip_meta(&instance("2.25.1005", IMPLICIT_VR_LE)),
    );
    write(
        &d.join("SUB/IM000006"),
        &instance("2.25.1006", EXPLICIT_VR_LE),
    );
    write(
        &d.join("SUB/IM000007"),
        &strip_meta(&instance("2.25.1007", EXPLICIT_VR_LE)),
    );
    write(&d.join("notes.txt"), b"not an image");
    // DICM but no readable meta header: rejected by the store (0xC000).
    let mut broken = vec![0u8; 128];
    broken.extend_from_slice(b"DICM\x02\x00\x00\x00garbage");
    write(&d.join("BROKEN"), &broken);
    // A link inside the tree (its target is read once) and one leaving it (skipped).
    std::os::unix::fs::symlink("IM000001", d.join("LINK_IN")).unwrap();
    write(
        &dir.join("outside.dcm"),
        &instance("2.25.9004", EXPLICIT_VR_LE),
    );
    std::os::unix::fs::symlink(dir.join("outside.dcm"), d.join("LINK_OUT")).unwrap();
    mkfifo(&d.join("PIPE"));

    // A ZIP archive: two instances, a DICOMDIR entry, a nested archive and a zip bomb.
    let zip_file = std::fs::File::create(cd.join("studies.zip")).unwrap();
    let mut zip = zip::ZipWriter::new(zip_file);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in [
        ("DICOM/A/IM1", instance("2.25.2001", EXPLICIT_VR_LE)),
        ("DICOM/A/IM2", instance("2.25.2002", IMPLICIT_VR_LE)),
        (
            "DICOM/A/IM3",
            strip_meta(&instance("2.25.2003", IMPLICIT_VR_LE)),
        ),
        ("DICOMDIR", dicomdir.clone()),
        ("old/inner.zip", b"PK\x03\x04".to_vec()),
    ] {
        zip.start_file(name, deflated).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    // 8 MiB of zeros deflate to a few KiB: far over the 200:1 limit.
    zip.start_file("DICOM/A/BOMB", deflated).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..8 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap();
    cd
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("LIGHTBOX_CONFIG")
        .env("LIGHTBOX_LOG", "warn")
        .output()
        .expect("run lightbox")
}

fn import(data: &Path, paths: &[&Path]) -> (Output, String) {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["import".as_ref(), "--data".as_ref(), data.as_os_str()];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    let out = run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "--- import stdout ---\n{stdout}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, stdout)
}

#[derive(Debug, PartialEq, Eq)]
struct Totals {
    stored: u64,
    replaced: u64,
    unchanged: u64,
    skipped: u64,
    rejected: u64,
}

/// Parse "import finished: 8 stored, 0 replaced, 0 unchanged, 15 skipped, 1 rejected (...)".
fn totals(stdout: &str) -> Totals {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("import finished: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let n = |what: &str| -> u64 {
        line.split(", ")
            .map(|part| part.split(" (").next().unwrap())
            .find_map(|part| part.strip_suffix(&format!(" {what}")))
            .unwrap_or_else(|| panic!("no {what} in {line}"))
            .parse()
            .unwrap()
    };
    Totals {
        stored: n("stored"),
        replaced: n("replaced"),
        unchanged: n("unchanged"),
        skipped: n("skipped"),
        rejected: n("rejected"),
    }
}

/// The count of one group in the "skipped: 3 not DICOM, 2 DICOMDIR (index only), ..." line.
fn skipped(stdout: &str, group: &str) -> u64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("skipped: "))
        .unwrap_or("");
    line.split(", ")
        .find_map(|part| {
            let (n, g) = part.split_once(' ')?;
            (g == group).then(|| n.parse().unwrap())
        })
        .unwrap_or(0)
}

fn reindexed(data: &Path) -> u64 {
    let out = run(&["reindex".as_ref(), "--data".as_ref(), data.as_os_str()]);
    assert!(
        out.status.success(),
        "reindex failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("reindexed "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no reindex line in {stdout}"))
        .parse()
        .unwrap()
}

#[test]
fn imports_a_cd_tree_and_skips_what_is_not_an_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let cd = build_cd(tmp.path());
    let data = tmp.path().join("data");
    let (out, stdout) = import(&data, &[&cd]);
    assert!(out.status.success(), "import failed");

    assert_eq!(
        totals(&stdout),
        Totals {
            stored: EXPECTED_STORED,
            replaced: 0,
            unchanged: 0,
            skipped: 15,
            rejected: 1,
        }
    );
    // Skip groups: README.TXT, INDEX.HTM, notes.txt.
    assert_eq!(skipped(&stdout, "not DICOM"), 3);
    // The DICOMDIR file and the DICOMDIR entry of the archive.
    assert_eq!(skipped(&stdout, "DICOMDIR (index only)"), 2);
    assert_eq!(skipped(&stdout, "autorun or program file"), 2);
    assert_eq!(skipped(&stdout, "in IHE_PDI/"), 1);
    // VIEWER/ by its name, Program/ because it holds tool.exe.
    assert_eq!(skipped(&stdout, "in a viewer folder"), 2);
    assert_eq!(skipped(&stdout, "reached twice through a link"), 1);
    assert_eq!(skipped(&stdout, "symlink leaving the imported folder"), 1);
    assert_eq!(skipped(&stdout, "FIFO/socket/device"), 1);
    assert_eq!(skipped(&stdout, "ZIP inside a ZIP (not opened)"), 1);
    assert_eq!(skipped(&stdout, "ZIP entry refused"), 1);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("LINK_OUT") && l.contains("outside.dcm")),
        "the link leaving the tree is listed with its target"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("studies.zip!DICOM/A/BOMB")
                && l.contains("compression ratio")
                && l.contains("200:1")),
        "the zip bomb is refused for its ratio"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("rejected: ") && l.contains("BROKEN") && l.contains("(0xC000)")),
        "the broken file is listed with its reason and code"
    );
    // Nothing from the skipped folders or the outside file got in.
    assert_eq!(reindexed(&data), EXPECTED_STORED);
    // No temp file left behind.
    assert_eq!(std::fs::read_dir(data.join("tmp")).unwrap().count(), 0);
}

#[test]
fn importing_the_same_tree_twice_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cd = build_cd(tmp.path());
    let data = tmp.path().join("data");
    let (out, first) = import(&data, &[&cd]);
    assert!(out.status.success());
    assert_eq!(totals(&first).stored, EXPECTED_STORED);

    let (out, second) = import(&data, &[&cd]);
    assert!(out.status.success());
    let t = totals(&second);
    assert_eq!(
        (t.stored, t.replaced, t.unchanged),
        (0, 0, EXPECTED_STORED),
        "{second}"
    );
    assert_eq!(reindexed(&data), EXPECTED_STORED);

    // One file and one archive given directly also work; a missing path is reported but does
    // not stop the rest.
    let missing = tmp.path().join("no-such-file");
    let (out, third) = import(
        &data,
        &[
            &cd.join("dicom/IM000001"),
            &cd.join("studies.zip"),
            &missing,
        ],
    );
    assert!(out.status.success());
    let t = totals(&third);
    assert_eq!((t.stored, t.unchanged), (0, 4), "{third}");
    assert_eq!(skipped(&third, "missing path"), 1);

    // Nothing readable at all: the command fails.
    let (out, _) = import(&data, &[&missing]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to import"));
}

#[test]
fn refuses_clearly_while_a_server_holds_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = tmp.path().join("one.dcm");
    write(&file, &instance("2.25.3001", EXPLICIT_VR_LE));

    let mut server = common::Server::start_on(&data, &[]);
    let (out, stdout) = import(&data, &[&file]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    server.stop();

    assert!(
        !out.status.success(),
        "import must fail while the server runs"
    );
    assert!(
        stderr.contains("is in use by a running Lightbox server")
            && stderr.contains("stop it first")
            && stderr.contains("STOW-RS")
            && stderr.contains(&data.display().to_string()),
        "unclear message: {stderr}"
    );
    assert!(
        !stdout.contains("import finished"),
        "nothing was attempted: {stdout}"
    );

    // Once the server is gone the same import works, and the store is intact.
    let (out, stdout) = import(&data, &[&file]);
    assert!(out.status.success());
    assert_eq!(totals(&stdout).stored, 1);
    assert_eq!(reindexed(&data), 1);
}

#[test]
fn commits_many_files_in_batches_and_never_reads_its_own_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("usb");
    for i in 0..150 {
        write(
            &tree.join(format!("S{}/IM{i:05}", i % 3)),
            &instance(&format!("2.25.5000{i}"), EXPLICIT_VR_LE),
        );
    }
    // The data directory inside the imported folder: its files must not be read back.
    let data = tree.join("lightbox-data");
    let (out, stdout) = import(&data, &[&tree]);
    assert!(out.status.success());
    assert_eq!(totals(&stdout).stored, 150);
    assert_eq!(skipped(&stdout, "the data directory itself"), 1);

    let (out, stdout) = import(&data, &[&tree]);
    assert!(out.status.success());
    let t = totals(&stdout);
    assert_eq!((t.stored, t.unchanged, t.rejected), (0, 150, 0), "{stdout}");
    assert_eq!(reindexed(&data), 150);
}
