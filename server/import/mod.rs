//! `lightbox import` and `lightbox reindex`: the command-line side of the store.
//!
//! # `lightbox import PATH...`
//!
//! Stores every DICOM instance found in files, folders (recursively), ZIP archives and CD/USB
//! trees into the data directory, through the same [`Store::stage`] / [`Store::commit_batch`]
//! path as STOW-RS. It needs the store for itself: when a running server holds the data
//! directory it stops with a clear message and touches nothing.
//!
//! Two passes: the first walks the paths and lists candidate files (a spinner runs meanwhile),
//! the second opens each candidate with a progress bar (both only drawn when stderr is a
//! terminal), stages it and commits in batches of [`BATCH`] files, one index flush per batch.
//! A summary goes to stdout at the end.
//!
//! ## What counts as DICOM
//!
//! The content decides, never the name (except for the skips below). The first 132 bytes are
//! read: `DICM` at offset 128 is a Part 10 file, `DICM` at offset 0 a Part 10 file without its
//! preamble (the store adds one). Files without any meta header whose first tag is in group
//! 0008 (data sets written raw by old CD writers, implicit or explicit VR little endian) are
//! kept when their leading group 0008 elements hold a SOP Class UID and a SOP Instance UID
//! (every length checked against the bytes): a file meta group built with dicom-object's
//! `FileMetaTableBuilder` is put in front of the unchanged data set bytes, and the store then
//! parses the result like any other file. (The data set is not decoded and re-encoded here:
//! that would alter bytes, and dicom-rs allocates an element's declared length before reading
//! it, so any garbage file starting with `08 00` could claim gigabytes.) Everything else is
//! "not DICOM".
//!
//! A `DICOMDIR` is only an index: it is skipped and the paths it lists are never followed; the
//! walk finds the files by itself (so a CD with a stale or missing DICOMDIR imports fine).
//!
//! ## What is skipped without being opened
//!
//! Names are compared case-insensitively, after dropping an ISO 9660 version suffix (`;1`) and
//! a trailing dot, as CDs mounted without Rock Ridge show them.
//!
//! - Folders named `IHE_PDI` (the IHE PDI web content: XHTML and JPEG copies of the images).
//! - Viewer folders. The rule: a folder (below a path given on the command line) is a viewer
//!   folder when its name contains `VIEWER` (`VIEWER`, `VIEWERS`, `DICOMVIEWER`,
//!   `RadiAntViewer`, ...), ends with `.app` (a macOS application bundle), or directly holds a
//!   program file (`.exe`, `.dll`, ...). The paths given on the command line are never skipped
//!   this way: a CD root often holds `setup.exe` next to its `DICOM/` folder. The same rule
//!   applies to the folders inside a ZIP archive.
//! - Files named `AUTORUN.INF` and program files: `.exe`, `.dll`, `.msi`, `.com`, `.bat`,
//!   `.cmd`, `.sys`, `.ocx`, `.so`, `.dylib`. Anything else (`.htm`, `.js`, `.jpg`, ...) is
//!   sniffed like every file: 132 bytes are cheap and a DICOM file may carry any name.
//! - Symbolic links are not followed blindly: one whose target (fully resolved) stays inside
//!   the path being imported is followed once (each file and folder is read at most once),
//!   one leaving it is skipped with its target shown. FIFOs, sockets and devices are skipped
//!   without being opened (files are opened with `O_NOFOLLOW | O_NONBLOCK` and checked again).
//! - The data directory itself, when it lies inside an imported folder.
//!
//! ## ZIP archives
//!
//! A file is a ZIP archive when its name ends in `.zip` or it starts with `PK\x03\x04` (and
//! has no `DICM` at 128: a DICOM file's preamble may look like anything). Entries are read
//! with the `zip` crate and each one is streamed into a store temp file: entry names are only
//! displayed and matched against the skip rules, never used as paths. Limits, counted on the
//! bytes actually inflated (declared sizes are checked too, but not trusted):
//! [`ZIP_MAX_INFLATED`] per archive (the rest of the archive is then not read),
//! [`ZIP_MAX_RATIO`]:1 per entry above [`ZIP_RATIO_MIN_SIZE`] (the entry is refused: a zip
//! bomb), [`ZIP_MAX_ENTRIES`] entries (the archive is refused). ZIP archives inside ZIP
//! archives are not opened.
//!
//! ## Outcome
//!
//! Rejected instances (a DICM file the store refuses, e.g. a missing SOP Instance UID) are
//! listed with their reason and status code and do not make the command fail. It fails when
//! none of the given paths can be read, when the store cannot be opened, when the store's
//! staging area cannot be written, when the index cannot be flushed, or when free disk space
//! falls below the configured reserve. Whatever was committed before stays committed; an
//! interrupted import leaves only temp files, which the next start removes.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::dicom::parse::{DICOMDIR_SOP_CLASS, Failure, reason};
use crate::store::{RepoError, Staged, Store, StoredKind};

mod archive;
mod sniff;
mod tree;

pub use archive::{ZIP_MAX_ENTRIES, ZIP_MAX_INFLATED, ZIP_MAX_RATIO, ZIP_RATIO_MIN_SIZE};
use sniff::{Kind, sniff, wrap_raw_dataset};
use tree::{Candidate, Walker, clean_os_name, special_kind};

/// Staged files per [`Store::commit_batch`] call (one index flush each).
pub const BATCH: usize = 64;

/// Why something was skipped; also the group label printed in the summary.
mod skip {
    pub const NOT_DICOM: &str = "not DICOM";
    pub const DICOMDIR: &str = "DICOMDIR (index only)";
    pub const IHE_PDI: &str = "in IHE_PDI/";
    pub const VIEWER: &str = "in a viewer folder";
    pub const PROGRAM: &str = "autorun or program file";
    pub const SYMLINK_OUT: &str = "symlink leaving the imported folder";
    pub const BROKEN_LINK: &str = "broken symlink";
    pub const SPECIAL: &str = "FIFO/socket/device";
    pub const DUPLICATE: &str = "reached twice through a link";
    pub const DATA_DIR: &str = "the data directory itself";
    pub const UNREADABLE: &str = "unreadable";
    pub const MISSING: &str = "missing path";
    pub const NESTED_ZIP: &str = "ZIP inside a ZIP (not opened)";
    pub const ZIP_UNREADABLE: &str = "unreadable ZIP archive or entry";
    pub const ZIP_REFUSED: &str = "ZIP entry refused";
    pub const ZIP_SYMLINK: &str = "symlink inside a ZIP";

    /// Groups whose items are listed one by one (the others are only counted).
    pub const LISTED: [&str; 10] = [
        SYMLINK_OUT,
        BROKEN_LINK,
        SPECIAL,
        DATA_DIR,
        UNREADABLE,
        MISSING,
        NESTED_ZIP,
        ZIP_UNREADABLE,
        ZIP_REFUSED,
        ZIP_SYMLINK,
    ];
}

/// Open the store; a data directory held by a running server gets a sentence saying so.
fn open_store(config: &Config, hint: &str) -> Result<Store, String> {
    let (store, report) = Store::open(&config.data).map_err(|e| match e {
        // `SledRepo::open` maps sled's "could not acquire lock" to this message.
        RepoError::Locked(_) => {
            format!(
                "the data directory {} is in use by a running Lightbox server (or another import); stop it first{hint}",
                config.data.display()
            )
        }
        other => format!(
            "cannot open the store in {}: {other}",
            config.data.display()
        ),
    })?;
    if report != Default::default() {
        eprintln!(
            "recovered the store: {} temp files, {} orphan files, {} dangling index entries removed",
            report.temp_files_removed, report.orphan_files_removed, report.dangling_entries_removed
        );
    }
    Ok(store)
}

/// Rebuild the index from the files, with a progress bar.
pub fn reindex_command(config: &Config) -> Result<(), String> {
    let store = open_store(config, "")?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} reindex [{bar:40}] {pos}/{len} files ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let report = store
        .reindex(|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!(
        "reindexed {} instance files ({} superseded duplicates removed, {} unreadable left in place)",
        report.indexed,
        report.superseded,
        report.unreadable.len()
    );
    for (file, why) in &report.unreadable {
        println!("  unreadable: {file}: {why}");
    }
    store.close().map_err(|e| e.to_string())
}

/// `lightbox import PATH...`: see the module documentation.
pub fn import_command(config: &Config, paths: &[PathBuf]) -> Result<(), String> {
    let store = open_store(
        config,
        ", or send the files to it with STOW-RS (POST /dicom-web/studies)",
    )?;
    let tty = io::stderr().is_terminal();

    // Pass 1: list the candidates.
    let spinner = if tty {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message("looking for files");
    let mut walker = Walker {
        data_dir: fs::canonicalize(&config.data).ok(),
        seen_files: HashSet::new(),
        seen_dirs: HashSet::new(),
        candidates: Vec::new(),
        summary: Summary::default(),
        spinner: &spinner,
    };
    let readable_roots = paths.iter().filter(|p| walker.add_root(p)).count();
    spinner.finish_and_clear();
    let Walker {
        candidates,
        summary,
        ..
    } = walker;
    if readable_roots == 0 {
        summary.print();
        return Err("nothing to import: none of the given paths could be read".into());
    }

    // Pass 2: read, stage and commit.
    let bar = if tty {
        ProgressBar::new(candidates.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_length(candidates.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} import [{bar:40}] {pos}/{len} files ({per_sec}, eta {eta}) {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut imp = Importer {
        store: &store,
        reserve: config.disk_reserve_bytes,
        batch: Vec::new(),
        summary,
        bar: &bar,
        fatal: None,
    };
    for c in &candidates {
        if imp.fatal.is_some() {
            break;
        }
        bar.set_message(c.shown.display().to_string());
        imp.file(c);
        bar.inc(1);
    }
    imp.commit();
    bar.finish_and_clear();
    let Importer { summary, fatal, .. } = imp;
    summary.print();
    match fatal {
        Some(f) => Err(format!("import stopped: {f}")),
        None => store.close().map_err(|e| e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Summary

#[derive(Default)]
struct Summary {
    /// Files and ZIP entries looked at.
    looked_at: u64,
    stored: u64,
    replaced: u64,
    unchanged: u64,
    /// (group, count, listed items), in first-seen order.
    skipped: Vec<(&'static str, u64, Vec<String>)>,
    rejected: Vec<(String, Failure)>,
    conflict_studies: BTreeSet<String>,
}

const LIST_MAX: usize = 50;

impl Summary {
    fn skip(&mut self, group: &'static str, what: &Path, detail: Option<String>) {
        self.skip_shown(group, what.display().to_string(), detail);
    }

    fn skip_shown(&mut self, group: &'static str, what: String, detail: Option<String>) {
        let i = match self.skipped.iter().position(|(g, ..)| *g == group) {
            Some(i) => i,
            None => {
                self.skipped.push((group, 0, Vec::new()));
                self.skipped.len() - 1
            }
        };
        let (_, n, items) = &mut self.skipped[i];
        *n += 1;
        if skip::LISTED.contains(&group) && items.len() < LIST_MAX {
            items.push(match detail {
                Some(d) => format!("{what}: {d}"),
                None => what,
            });
        }
    }

    fn skipped_total(&self) -> u64 {
        self.skipped.iter().map(|(_, n, _)| n).sum()
    }

    fn print(&self) {
        println!(
            "import finished: {} stored, {} replaced, {} unchanged, {} skipped, {} rejected ({} files looked at)",
            self.stored,
            self.replaced,
            self.unchanged,
            self.skipped_total(),
            self.rejected.len(),
            self.looked_at
        );
        if !self.skipped.is_empty() {
            let groups: Vec<String> = self
                .skipped
                .iter()
                .map(|(g, n, _)| format!("{n} {g}"))
                .collect();
            println!("skipped: {}", groups.join(", "));
            for (group, n, items) in &self.skipped {
                for item in items {
                    println!("  skipped ({group}): {item}");
                }
                if (*n as usize) > items.len() && !items.is_empty() {
                    println!("  ... and {} more ({group})", *n as usize - items.len());
                }
            }
        }
        for (what, f) in &self.rejected {
            println!("rejected: {what}: {} (0x{:04X})", f.reason, f.code);
        }
        if !self.conflict_studies.is_empty() {
            println!(
                "warning: {} studies now hold instances of more than one patient (check Patient ID / name): {}",
                self.conflict_studies.len(),
                self.conflict_studies
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if self.stored + self.replaced + self.unchanged == 0 && self.rejected.is_empty() {
            println!("no DICOM instances were found");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and copying

/// Read up to `buf.len()` bytes.
fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

enum CopyError {
    /// Reading the source failed (or a ZIP limit was hit: see `archive::Capped::violation`).
    Read(io::Error),
    /// Writing into the store failed.
    Write(io::Error),
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

// ---------------------------------------------------------------------------------------------
// Pass 2: reading, staging, committing

struct Importer<'a> {
    store: &'a Store,
    reserve: u64,
    batch: Vec<(Staged, String)>,
    summary: Summary,
    bar: &'a ProgressBar,
    /// Set when the store cannot go on: the import stops.
    fatal: Option<String>,
}

/// What reading a source into a store temp file gave.
enum Extracted {
    /// A Part 10 file (maybe without preamble) in a store temp file.
    Temp(PathBuf),
    /// Skipped; the reason is already recorded.
    Skipped,
}

impl Importer<'_> {
    fn file(&mut self, c: &Candidate) {
        self.summary.looked_at += 1;
        let shown = c.shown.display().to_string();
        let mut file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&c.open)
        {
            Ok(f) => f,
            Err(e) => {
                return self
                    .summary
                    .skip_shown(skip::UNREADABLE, shown, Some(e.to_string()));
            }
        };
        match file.metadata() {
            Ok(md) if md.is_file() => {}
            Ok(md) => {
                return self.summary.skip_shown(
                    skip::SPECIAL,
                    shown,
                    Some(special_kind(&md.file_type()).into()),
                );
            }
            Err(e) => {
                return self
                    .summary
                    .skip_shown(skip::UNREADABLE, shown, Some(e.to_string()));
            }
        }
        let mut head = [0u8; 132];
        let n = match read_head(&mut file, &mut head) {
            Ok(n) => n,
            Err(e) => {
                return self
                    .summary
                    .skip_shown(skip::UNREADABLE, shown, Some(e.to_string()));
            }
        };
        let name = c.open.file_name().map(clean_os_name).unwrap_or_default();
        match sniff(&head[..n], &name) {
            Kind::NotDicom => self.summary.skip_shown(skip::NOT_DICOM, shown, None),
            Kind::Zip => {
                if let Err(e) = file.seek(SeekFrom::Start(0)) {
                    return self
                        .summary
                        .skip_shown(skip::UNREADABLE, shown, Some(e.to_string()));
                }
                self.zip(file, &shown);
            }
            Kind::Part10 => {
                if let Some(Extracted::Temp(t)) = self.copy_to_temp(&head[..n], &mut file, &shown) {
                    self.stage(t, shown);
                }
            }
            Kind::RawDataSet { explicit } => match self.wrap(&mut file, explicit, &shown) {
                Ok(Some(t)) => self.stage(t, shown),
                Ok(None) => self.summary.skip_shown(skip::NOT_DICOM, shown, None),
                Err(()) => {}
            },
        }
    }

    /// A fresh store temp file; `None` (and the import stops) when the store's staging area
    /// cannot be written.
    fn create_temp(&mut self) -> Option<(PathBuf, File)> {
        match self.store.blobs.create_temp() {
            Ok(t) => Some(t),
            Err(e) => {
                self.fatal = Some(format!("cannot write into the store's staging area: {e}"));
                None
            }
        }
    }

    /// Copy `head` then the rest of `src` into a store temp file. A read error is recorded as
    /// a skip; a write error stops the import (`None`).
    fn copy_to_temp(&mut self, head: &[u8], src: &mut impl Read, shown: &str) -> Option<Extracted> {
        let (temp, mut out) = self.create_temp()?;
        let result = out
            .write_all(head)
            .map_err(CopyError::Write)
            .and_then(|()| copy(src, &mut out));
        drop(out);
        match result {
            Ok(_) => Some(Extracted::Temp(temp)),
            Err(CopyError::Read(e)) => {
                let _ = fs::remove_file(&temp);
                self.summary
                    .skip_shown(skip::UNREADABLE, shown.to_owned(), Some(e.to_string()));
                Some(Extracted::Skipped)
            }
            Err(CopyError::Write(e)) => {
                let _ = fs::remove_file(&temp);
                self.fatal = Some(format!("cannot write into the store's staging area: {e}"));
                None
            }
        }
    }

    /// Rewrite a raw data set as a Part 10 store temp file. `Ok(None)`: not DICOM after all.
    /// Rewrite a raw data set as a Part 10 store temp file. `Ok(None)`: not DICOM after all.
    /// `Err(())`: a read error (recorded as a skip) or a store error (the import stops).
    fn wrap(&mut self, src: &mut File, explicit: bool, shown: &str) -> Result<Option<PathBuf>, ()> {
        let Some((temp, out)) = self.create_temp() else {
            return Err(());
        };
        drop(out);
        let result = wrap_raw_dataset(src, explicit, &temp);
        if !matches!(result, Ok(Some(()))) {
            let _ = fs::remove_file(&temp);
        }
        match result {
            Ok(Some(())) => Ok(Some(temp)),
            Ok(None) => Ok(None),
            Err(CopyError::Read(e)) => {
                self.summary
                    .skip_shown(skip::UNREADABLE, shown.to_owned(), Some(e.to_string()));
                Err(())
            }
            Err(CopyError::Write(e)) => {
                self.fatal = Some(format!("cannot write into the store's staging area: {e}"));
                Err(())
            }
        }
    }

    fn stage(&mut self, temp: PathBuf, shown: String) {
        match self.store.stage(temp) {
            Ok(staged) => {
                self.batch.push((staged, shown));
                if self.batch.len() >= BATCH {
                    self.commit();
                }
            }
            Err(f) if f.sop_class.as_deref() == Some(DICOMDIR_SOP_CLASS) => {
                // A DICOMDIR under another name: an index all the same.
                self.summary.skip_shown(skip::DICOMDIR, shown, None);
            }
            Err(f) => self.summary.rejected.push((shown, f)),
        }
    }

    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let (staged, shown): (Vec<Staged>, Vec<String>) =
            std::mem::take(&mut self.batch).into_iter().unzip();
        let reserve = self.reserve;
        // Import is an operator action on the data directory: no owner (staff scope).
        let results = self.store.commit_batch(staged, reserve, None);
        for (result, shown) in results.into_iter().zip(shown) {
            match result {
                Ok(s) => {
                    match s.outcome {
                        StoredKind::New => self.summary.stored += 1,
                        StoredKind::Replaced => self.summary.replaced += 1,
                        StoredKind::Unchanged => self.summary.unchanged += 1,
                    }
                    if s.patient_conflict {
                        self.summary.conflict_studies.insert(s.study.to_string());
                    }
                }
                Err(f) => {
                    if f.code == reason::OUT_OF_RESOURCES {
                        self.fatal.get_or_insert_with(|| {
                            format!("{} (the reserve is {reserve} bytes)", f.reason)
                        });
                    } else if f.reason == "index flush failed" {
                        self.fatal
                            .get_or_insert_with(|| "the index could not be written to disk".into());
                    }
                    self.summary.rejected.push((shown, f));
                }
            }
        }
    }
}
