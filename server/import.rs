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
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use walkdir::WalkDir;

use crate::config::Config;
use crate::dicom::parse::{self, DICOMDIR_SOP_CLASS, Failure, Layout, reason};
use crate::store::{RepoError, Staged, Store, StoredKind};

/// Staged files per [`Store::commit_batch`] call (one index flush each).
pub const BATCH: usize = 64;
/// Most bytes one ZIP archive may inflate to.
pub const ZIP_MAX_INFLATED: u64 = 8 << 30;
/// Largest accepted uncompressed/compressed ratio of one entry larger than
/// [`ZIP_RATIO_MIN_SIZE`].
pub const ZIP_MAX_RATIO: u64 = 200;
/// Entries up to this size are never refused for their ratio.
pub const ZIP_RATIO_MIN_SIZE: u64 = 1 << 20;
/// Archives with more entries are refused.
pub const ZIP_MAX_ENTRIES: usize = 100_000;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

const PROGRAM_EXTENSIONS: [&str; 10] = [
    "EXE", "DLL", "MSI", "COM", "BAT", "CMD", "SYS", "OCX", "SO", "DYLIB",
];

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
    Ok(())
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
        None => Ok(()),
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
// Names

/// Upper-cased file name without an ISO 9660 version suffix (`;1`) or trailing dot.
fn clean_name(name: &str) -> String {
    let mut s = name.to_ascii_uppercase();
    if let Some(i) = s.rfind(';')
        && i + 1 < s.len()
        && s[i + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        s.truncate(i);
    }
    while s.ends_with('.') {
        s.pop();
    }
    s
}

fn clean_os_name(name: &OsStr) -> String {
    clean_name(&name.to_string_lossy())
}

fn extension(clean: &str) -> Option<&str> {
    clean.rsplit_once('.').map(|(_, e)| e)
}

fn is_program_file(clean: &str) -> bool {
    clean == "AUTORUN.INF" || extension(clean).is_some_and(|e| PROGRAM_EXTENSIONS.contains(&e))
}

fn is_zip_name(clean: &str) -> bool {
    extension(clean) == Some("ZIP")
}

/// The skip group of a folder judged by its name alone.
fn folder_rule(clean: &str) -> Option<&'static str> {
    if clean == "IHE_PDI" {
        Some(skip::IHE_PDI)
    } else if clean.contains("VIEWER") || clean.ends_with(".APP") {
        Some(skip::VIEWER)
    } else {
        None
    }
}

/// Does this folder directly hold a program file?
fn holds_program(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let n = clean_os_name(&e.file_name());
        n != "AUTORUN.INF" && is_program_file(&n) && e.file_type().is_ok_and(|t| t.is_file())
    })
}

// ---------------------------------------------------------------------------------------------
// Pass 1: the walk

struct Candidate {
    /// Resolved path to open.
    open: PathBuf,
    /// Path as the user sees it.
    shown: PathBuf,
}

struct Walker<'a> {
    data_dir: Option<PathBuf>,
    /// (device, inode) of every candidate: each file is read once.
    seen_files: HashSet<(u64, u64)>,
    /// Canonical folders walked: each folder is walked once.
    seen_dirs: HashSet<PathBuf>,
    candidates: Vec<Candidate>,
    summary: Summary,
    spinner: &'a ProgressBar,
}

impl Walker<'_> {
    /// Add one command-line path; false when it cannot be read at all.
    fn add_root(&mut self, arg: &Path) -> bool {
        // The user named this path: a symlink here is followed wherever it goes.
        let root = match fs::canonicalize(arg) {
            Ok(r) => r,
            Err(e) => {
                self.summary.skip(skip::MISSING, arg, Some(e.to_string()));
                return false;
            }
        };
        let md = match fs::metadata(&root) {
            Ok(m) => m,
            Err(e) => {
                self.summary.skip(skip::MISSING, arg, Some(e.to_string()));
                return false;
            }
        };
        if self.in_data_dir(&root) {
            self.summary.skip(skip::DATA_DIR, arg, None);
            return true;
        }
        if md.is_dir() {
            let mut pending = vec![(root.clone(), arg.to_path_buf())];
            while let Some((dir, shown)) = pending.pop() {
                self.walk(&root, &dir, &shown, &mut pending);
            }
        } else if md.is_file() {
            self.add_file(root, arg.to_path_buf(), &md);
        } else {
            self.summary.skip(
                skip::SPECIAL,
                arg,
                Some(special_kind(&md.file_type()).into()),
            );
        }
        true
    }

    fn in_data_dir(&self, p: &Path) -> bool {
        self.data_dir.as_deref().is_some_and(|d| p.starts_with(d))
    }

    /// Walk `dir` (canonical, inside `root`), shown to the user as `shown`. Folders reached
    /// through in-root symlinks are pushed on `pending`.
    fn walk(
        &mut self,
        root: &Path,
        dir: &Path,
        shown: &Path,
        pending: &mut Vec<(PathBuf, PathBuf)>,
    ) {
        if !self.seen_dirs.insert(dir.to_path_buf()) {
            return;
        }
        let show = |p: &Path| shown.join(p.strip_prefix(dir).unwrap_or(p));
        let mut it = WalkDir::new(dir)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(next) = it.next() {
            let entry = match next {
                Ok(e) => e,
                Err(e) => {
                    let p = e.path().map(show).unwrap_or_else(|| shown.to_path_buf());
                    let why = e
                        .io_error()
                        .map(|io| io.to_string())
                        .unwrap_or_else(|| e.to_string());
                    self.summary.skip(skip::UNREADABLE, &p, Some(why));
                    continue;
                }
            };
            let ft = entry.file_type();
            let path = entry.path();
            if ft.is_dir() {
                if entry.depth() == 0 {
                    continue;
                }
                let name = clean_os_name(entry.file_name());
                let rule = if self.in_data_dir(path) {
                    Some(skip::DATA_DIR)
                } else if self.seen_dirs.contains(path) {
                    Some(skip::DUPLICATE)
                } else {
                    folder_rule(&name).or_else(|| holds_program(path).then_some(skip::VIEWER))
                };
                if let Some(group) = rule {
                    self.summary.skip(group, &show(path), None);
                    it.skip_current_dir();
                } else {
                    // Mark it so a symlink to it is not walked a second time.
                    self.seen_dirs.insert(path.to_path_buf());
                }
            } else if ft.is_symlink() {
                self.symlink(root, path, &show(path), pending);
            } else if ft.is_file() {
                match entry.metadata() {
                    Ok(md) => self.add_file(path.to_path_buf(), show(path), &md),
                    Err(e) => self
                        .summary
                        .skip(skip::UNREADABLE, &show(path), Some(e.to_string())),
                }
            } else {
                self.summary
                    .skip(skip::SPECIAL, &show(path), Some(special_kind(&ft).into()));
            }
            let n = self.candidates.len();
            if n.is_multiple_of(256) {
                self.spinner
                    .set_message(format!("looking for files: {n} found"));
            }
        }
    }

    /// Follow a link once if it stays inside `root`.
    fn symlink(
        &mut self,
        root: &Path,
        link: &Path,
        shown: &Path,
        pending: &mut Vec<(PathBuf, PathBuf)>,
    ) {
        let target = match fs::canonicalize(link) {
            Ok(t) => t,
            Err(e) => {
                let to = fs::read_link(link)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                self.summary
                    .skip(skip::BROKEN_LINK, shown, Some(format!("-> {to}: {e}")));
                return;
            }
        };
        if !target.starts_with(root) {
            self.summary.skip(
                skip::SYMLINK_OUT,
                shown,
                Some(format!("-> {}", target.display())),
            );
            return;
        }
        if self.in_data_dir(&target) {
            self.summary.skip(skip::DATA_DIR, shown, None);
            return;
        }
        // The skip rules of the folders on the way to the target still apply.
        let rel = target.strip_prefix(root).unwrap_or(&target);
        let mut components: Vec<String> = rel.iter().map(clean_os_name).collect();
        let md = match fs::metadata(&target) {
            Ok(m) => m,
            Err(e) => {
                self.summary
                    .skip(skip::UNREADABLE, shown, Some(e.to_string()));
                return;
            }
        };
        if md.is_file() {
            components.pop();
        }
        if let Some(group) = components.iter().find_map(|c| folder_rule(c)) {
            self.summary.skip(group, shown, None);
            return;
        }
        if md.is_dir() {
            if self.seen_dirs.contains(&target) {
                self.summary.skip(skip::DUPLICATE, shown, None);
            } else {
                pending.push((target, shown.to_path_buf()));
            }
        } else if md.is_file() {
            self.add_file(target, shown.to_path_buf(), &md);
        } else {
            self.summary.skip(
                skip::SPECIAL,
                shown,
                Some(special_kind(&md.file_type()).into()),
            );
        }
    }

    fn add_file(&mut self, open: PathBuf, shown: PathBuf, md: &fs::Metadata) {
        let name = open.file_name().map(clean_os_name).unwrap_or_default();
        if name == "DICOMDIR" {
            self.summary.skip(skip::DICOMDIR, &shown, None);
        } else if is_program_file(&name) {
            self.summary.skip(skip::PROGRAM, &shown, None);
        } else if !self.seen_files.insert((md.dev(), md.ino())) {
            self.summary.skip(skip::DUPLICATE, &shown, None);
        } else {
            self.candidates.push(Candidate { open, shown });
        }
    }
}

fn special_kind(ft: &fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "not a regular file"
    }
}

// ---------------------------------------------------------------------------------------------
// Sniffing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `DICM` at 128 or at 0: the store takes it as it is.
    Part10,
    Zip,
    /// A data set without meta header, starting in group 0008; true when explicit VR.
    RawDataSet {
        explicit: bool,
    },
    NotDicom,
}

/// VRs, to tell an explicit VR data set from an implicit one.
const VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
];

fn sniff(head: &[u8], clean_name: &str) -> Kind {
    match parse::sniff(head) {
        Layout::Part10 | Layout::NoPreamble => return Kind::Part10,
        Layout::NotPart10 => {}
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") || is_zip_name(clean_name)
    {
        return Kind::Zip;
    }
    if head.len() >= 8 && head[0..2] == [0x08, 0x00] {
        let explicit = VRS.iter().any(|vr| head[4..6] == vr[..]);
        if !explicit {
            // Implicit VR: a 4-byte length follows the tag; anything but "undefined" must be
            // plausible for a group 0008 element.
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len != u32::MAX && len > 1 << 20 {
                return Kind::NotDicom;
            }
        }
        return Kind::RawDataSet { explicit };
    }
    Kind::NotDicom
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// How far into a raw data set the SOP Class and SOP Instance UIDs are looked for.
const RAW_SCAN: usize = 64 * 1024;

/// SOP Class and SOP Instance UIDs of a data set without meta header, read from its leading
/// group 0008 elements (which come first: elements are in tag order). Every length is checked
/// against the bytes at hand, so garbage that merely starts like a data set costs nothing.
fn raw_uids(b: &[u8], explicit: bool) -> Option<(String, String)> {
    let u16_at = |p: usize| b.get(p..p + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |p: usize| {
        b.get(p..p + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let text = |v: &[u8]| {
        let s = std::str::from_utf8(v).ok()?.trim_end_matches(['\0', ' ']);
        (!s.is_empty()).then(|| s.to_owned())
    };
    let mut pos = 0usize;
    let mut last: Option<u16> = None;
    let mut class = None;
    loop {
        if u16_at(pos)? != 0x0008 {
            return None;
        }
        let elem = u16_at(pos + 2)?;
        if last.is_some_and(|l| elem <= l) || elem > 0x0018 {
            return None;
        }
        last = Some(elem);
        let (len, header) = if explicit {
            let vr = b.get(pos + 4..pos + 6)?;
            if !VRS.iter().any(|v| vr == &v[..]) {
                return None;
            }
            if LONG_VRS.iter().any(|v| vr == &v[..]) {
                (u32_at(pos + 8)?, 12)
            } else {
                (u32::from(u16_at(pos + 6)?), 8)
            }
        } else {
            (u32_at(pos + 4)?, 8)
        };
        // Undefined lengths (a sequence before the UIDs) are not followed.
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l != u32::MAX as usize)?;
        let value = b.get(pos + header..(pos + header).checked_add(len)?)?;
        match elem {
            0x0016 => class = Some(text(value)?),
            0x0018 => return Some((class?, text(value)?)),
            _ => {}
        }
        pos += header + len;
    }
}

/// Write a data set without meta header (`src`, read from its start) to `out` as a Part 10
/// file: zero preamble, `DICM`, a file meta group naming the SOP Class and Instance and the
/// transfer syntax detected, then the data set bytes unchanged. `Ok(None)` when no SOP Class
/// and SOP Instance UIDs lead the data set (then it is not treated as DICOM).
fn wrap_raw_dataset(
    src: &mut File,
    explicit_first: bool,
    out: &Path,
) -> Result<Option<()>, CopyError> {
    use dicom_object::FileMetaTableBuilder;

    src.seek(SeekFrom::Start(0)).map_err(CopyError::Read)?;
    let mut prefix = vec![0u8; RAW_SCAN];
    let n = read_head(src, &mut prefix).map_err(CopyError::Read)?;
    prefix.truncate(n);
    let order = if explicit_first {
        [true, false]
    } else {
        [false, true]
    };
    let Some((explicit, (class, instance))) = order
        .into_iter()
        .find_map(|explicit| raw_uids(&prefix, explicit).map(|u| (explicit, u)))
    else {
        return Ok(None);
    };
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(if explicit {
            EXPLICIT_VR_LE
        } else {
            IMPLICIT_VR_LE
        })
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(instance)
        .build()
        .map_err(|e| {
            CopyError::Read(io::Error::other(format!(
                "cannot build a file meta header: {e}"
            )))
        })?;
    let mut w = io::BufWriter::new(File::create(out).map_err(CopyError::Write)?);
    w.write_all(&[0u8; 128]).map_err(CopyError::Write)?;
    w.write_all(b"DICM").map_err(CopyError::Write)?;
    meta.write(&mut w)
        .map_err(|e| CopyError::Write(io::Error::other(format!("file meta header: {e}"))))?;
    src.seek(SeekFrom::Start(0)).map_err(CopyError::Read)?;
    copy(src, &mut w)?;
    w.into_inner()
        .map_err(|e| CopyError::Write(e.into_error()))?;
    Ok(Some(()))
}

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
    /// Reading the source failed (or a ZIP limit was hit: see [`Capped::violation`]).
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

/// A ZIP limit hit while inflating.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    Ratio { compressed: u64 },
    ArchiveTotal,
}

/// Counts inflated bytes and stops reading at the ZIP limits.
struct Capped<R> {
    inner: R,
    read: u64,
    compressed: u64,
    /// Bytes the archive may still inflate to.
    budget: u64,
    violation: Option<Violation>,
}

impl<R> Capped<R> {
    fn new(inner: R, compressed: u64, budget: u64) -> Self {
        Capped {
            inner,
            read: 0,
            compressed,
            budget,
            violation: None,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.violation.is_some() {
            return Err(io::Error::other("ZIP limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.budget {
            self.violation = Some(Violation::ArchiveTotal);
        } else if self.read > ZIP_RATIO_MIN_SIZE
            && self.read > ZIP_MAX_RATIO.saturating_mul(self.compressed.max(1))
        {
            self.violation = Some(Violation::Ratio {
                compressed: self.compressed,
            });
        }
        if self.violation.is_some() {
            return Err(io::Error::other("ZIP limit exceeded"));
        }
        Ok(n)
    }
}

fn ratio_message(size: u64, compressed: u64) -> String {
    format!(
        "compression ratio {}:1 is over the {ZIP_MAX_RATIO}:1 limit ({size} bytes from {compressed}; a zip bomb?)",
        size / compressed.max(1)
    )
}

fn archive_total_message() -> String {
    format!(
        "the archive inflates to more than {} GiB; the rest of it was not read",
        ZIP_MAX_INFLATED >> 30
    )
}

/// Control characters in archive entry names are not printed as they are.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
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
        let results = self.store.commit_batch(staged, reserve);
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

    // --- ZIP archives ---------------------------------------------------------------------

    fn zip(&mut self, file: File, shown: &str) {
        let mut archive = match zip::ZipArchive::new(BufReader::new(file)) {
            Ok(a) => a,
            Err(e) => {
                return self.summary.skip_shown(
                    skip::ZIP_UNREADABLE,
                    shown.to_owned(),
                    Some(e.to_string()),
                );
            }
        };
        let count = archive.len();
        if count > ZIP_MAX_ENTRIES {
            return self.summary.skip_shown(
                skip::ZIP_REFUSED,
                shown.to_owned(),
                Some(format!(
                    "{count} entries, over the limit of {ZIP_MAX_ENTRIES}"
                )),
            );
        }
        // Folders holding a program file are viewer folders, inside archives too.
        let program_dirs: HashSet<String> = archive
            .file_names()
            .filter_map(|n| {
                let n = n.ok()?;
                let parts: Vec<String> = n
                    .split(['/', '\\'])
                    .filter(|p| !p.is_empty())
                    .map(clean_name)
                    .collect();
                let (last, dirs) = parts.split_last()?;
                (!dirs.is_empty() && last != "AUTORUN.INF" && is_program_file(last))
                    .then(|| dirs.join("/"))
            })
            .collect();
        self.bar.inc_length(count as u64);
        let mut budget = ZIP_MAX_INFLATED;
        for i in 0..count {
            self.bar.inc(1);
            if self.fatal.is_some() {
                return;
            }
            let mut entry = match archive.by_index(i) {
                Ok(e) => e,
                Err(e) => {
                    self.summary.looked_at += 1;
                    self.summary.skip_shown(
                        skip::ZIP_UNREADABLE,
                        format!("{shown}!#{i}"),
                        Some(e.to_string()),
                    );
                    continue;
                }
            };
            if entry.is_dir() {
                continue;
            }
            self.summary.looked_at += 1;
            let name = match entry.name() {
                Ok(n) => n.into_owned(),
                Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
            };
            let label = format!("{shown}!{}", printable(&name));
            if entry.is_symlink() {
                self.summary.skip_shown(skip::ZIP_SYMLINK, label, None);
                continue;
            }
            let parts: Vec<String> = name
                .split(['/', '\\'])
                .filter(|p| !p.is_empty())
                .map(clean_name)
                .collect();
            let Some((last, dirs)) = parts.split_last() else {
                self.summary.skip_shown(skip::NOT_DICOM, label, None);
                continue;
            };
            let folder = dirs.iter().enumerate().find_map(|(k, d)| {
                folder_rule(d).or_else(|| {
                    program_dirs
                        .contains(&dirs[..=k].join("/"))
                        .then_some(skip::VIEWER)
                })
            });
            if let Some(group) = folder {
                self.summary.skip_shown(group, label, None);
                continue;
            }
            if last == "DICOMDIR" {
                self.summary.skip_shown(skip::DICOMDIR, label, None);
                continue;
            }
            if is_program_file(last) {
                self.summary.skip_shown(skip::PROGRAM, label, None);
                continue;
            }
            if is_zip_name(last) {
                self.summary.skip_shown(skip::NESTED_ZIP, label, None);
                continue;
            }
            // Declared sizes first (cheap), then the bytes actually inflated.
            let (size, compressed) = (entry.size(), entry.compressed_size());
            if size > ZIP_RATIO_MIN_SIZE && size > ZIP_MAX_RATIO.saturating_mul(compressed.max(1)) {
                self.summary.skip_shown(
                    skip::ZIP_REFUSED,
                    label,
                    Some(ratio_message(size, compressed)),
                );
                continue;
            }
            if size > budget {
                self.summary
                    .skip_shown(skip::ZIP_REFUSED, label, Some(archive_total_message()));
                return;
            }
            let mut capped = Capped::new(&mut entry, compressed, budget);
            let outcome = self.zip_entry(&mut capped, last, &label);
            budget = budget.saturating_sub(capped.read);
            match capped.violation {
                Some(Violation::ArchiveTotal) => {
                    self.summary.skip_shown(
                        skip::ZIP_REFUSED,
                        label,
                        Some(archive_total_message()),
                    );
                    return;
                }
                Some(Violation::Ratio { compressed }) => {
                    self.summary.skip_shown(
                        skip::ZIP_REFUSED,
                        label,
                        Some(ratio_message(capped.read, compressed)),
                    );
                }
                None => {
                    if let Some(Extracted::Temp(temp)) = outcome {
                        self.stage(temp, label);
                    }
                }
            }
        }
    }

    /// Sniff and extract one entry. With a limit violation, returns `Skipped` without recording
    /// anything (the caller reports the violation).
    fn zip_entry(
        &mut self,
        entry: &mut Capped<impl Read>,
        clean_name: &str,
        label: &str,
    ) -> Option<Extracted> {
        let mut head = [0u8; 132];
        let n = match read_head(entry, &mut head) {
            Ok(n) => n,
            Err(_) if entry.violation.is_some() => return Some(Extracted::Skipped),
            Err(e) => {
                self.summary.skip_shown(
                    skip::ZIP_UNREADABLE,
                    label.to_owned(),
                    Some(e.to_string()),
                );
                return Some(Extracted::Skipped);
            }
        };
        let kind = sniff(&head[..n], clean_name);
        match kind {
            Kind::NotDicom => {
                self.summary
                    .skip_shown(skip::NOT_DICOM, label.to_owned(), None);
                Some(Extracted::Skipped)
            }
            Kind::Zip => {
                self.summary
                    .skip_shown(skip::NESTED_ZIP, label.to_owned(), None);
                Some(Extracted::Skipped)
            }
            Kind::Part10 | Kind::RawDataSet { .. } => {
                let (temp, mut out) = self.create_temp()?;
                let result = out
                    .write_all(&head[..n])
                    .map_err(CopyError::Write)
                    .and_then(|()| copy(entry, &mut out));
                drop(out);
                match result {
                    Ok(_) => {}
                    Err(CopyError::Read(e)) => {
                        let _ = fs::remove_file(&temp);
                        if entry.violation.is_none() {
                            self.summary.skip_shown(
                                skip::ZIP_UNREADABLE,
                                label.to_owned(),
                                Some(e.to_string()),
                            );
                        }
                        return Some(Extracted::Skipped);
                    }
                    Err(CopyError::Write(e)) => {
                        let _ = fs::remove_file(&temp);
                        self.fatal =
                            Some(format!("cannot write into the store's staging area: {e}"));
                        return None;
                    }
                }
                let Kind::RawDataSet { explicit } = kind else {
                    return Some(Extracted::Temp(temp));
                };
                // The raw bytes are in `temp`; rewrite them as a Part 10 file.
                let wrapped = match File::open(&temp) {
                    Ok(mut raw) => self.wrap(&mut raw, explicit, label),
                    Err(e) => {
                        self.fatal = Some(format!("cannot read back a staged file: {e}"));
                        Err(())
                    }
                };
                let _ = fs::remove_file(&temp);
                match wrapped {
                    Ok(Some(t)) => Some(Extracted::Temp(t)),
                    Ok(None) => {
                        self.summary
                            .skip_shown(skip::NOT_DICOM, label.to_owned(), None);
                        Some(Extracted::Skipped)
                    }
                    Err(()) => Some(Extracted::Skipped),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_as_cds_show_them() {
        assert_eq!(clean_name("dicomdir;1"), "DICOMDIR");
        assert_eq!(clean_name("IM000001."), "IM000001");
        assert_eq!(clean_name("Autorun.inf"), "AUTORUN.INF");
        assert!(is_program_file("VIEWER.EXE"));
        assert!(is_program_file(&clean_name("autorun.inf;1")));
        assert!(!is_program_file("IM000001"));
        assert_eq!(folder_rule("IHE_PDI"), Some(skip::IHE_PDI));
        assert_eq!(folder_rule(&clean_name("DicomViewer")), Some(skip::VIEWER));
        assert_eq!(folder_rule("DICOM"), None);
    }

    #[test]
    fn sniff_tells_the_layouts_apart() {
        let mut p10 = vec![0xAAu8; 128];
        p10.extend_from_slice(b"DICM");
        assert_eq!(sniff(&p10, "X"), Kind::Part10);
        // A preamble that looks like a ZIP does not make a DICOM file an archive.
        p10[..4].copy_from_slice(b"PK\x03\x04");
        assert_eq!(sniff(&p10, "X.ZIP"), Kind::Part10);
        assert_eq!(sniff(b"DICM\x02\x00\x00\x00", "X"), Kind::Part10);
        assert_eq!(sniff(b"PK\x03\x04rest", "X"), Kind::Zip);
        assert_eq!(sniff(b"", "A.ZIP"), Kind::Zip);
        // (0008,0005) implicit VR, length 10
        assert_eq!(
            sniff(&[0x08, 0, 0x05, 0, 10, 0, 0, 0], "X"),
            Kind::RawDataSet { explicit: false }
        );
        assert_eq!(
            sniff(&[0x08, 0, 0x05, 0, b'C', b'S', 10, 0], "X"),
            Kind::RawDataSet { explicit: true }
        );
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n", "X.PNG"), Kind::NotDicom);
        assert_eq!(
            sniff(&[0x08, 0, 0x05, 0, 0, 0, 0, 0x40], "X"),
            Kind::NotDicom
        );
    }

    #[test]
    fn raw_data_sets_give_their_uids_when_lengths_fit() {
        let el = |e: u16, v: &[u8]| {
            let mut b = vec![0x08, 0x00];
            b.extend_from_slice(&e.to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
            b
        };
        let mut ds = el(0x0005, b"ISO_IR 100");
        ds.extend(el(0x0016, b"1.2.840.10008.5.1.4.1.1.2\0"));
        ds.extend(el(0x0018, b"2.25.7"));
        ds.extend(el(0x0020, b"20240101"));
        assert_eq!(
            raw_uids(&ds, false),
            Some(("1.2.840.10008.5.1.4.1.1.2".into(), "2.25.7".into()))
        );
        assert_eq!(raw_uids(&ds, true), None);
        // A length running past the bytes, elements out of order, no SOP Class UID.
        let mut bad = ds.clone();
        bad[4..8].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        assert_eq!(raw_uids(&bad, false), None);
        let mut swapped = el(0x0018, b"2.25.7");
        swapped.extend(el(0x0016, b"1.2.3"));
        assert_eq!(raw_uids(&swapped, false), None);
        assert_eq!(raw_uids(&el(0x0018, b"2.25.7"), false), None);
    }

    #[test]
    fn capped_reader_stops_on_ratio_and_total_whatever_was_declared() {
        // 3 MiB of zeros that "compressed" to 1 KiB: over 200:1 once past 1 MiB.
        let zeros = io::repeat(0).take(3 << 20);
        let mut c = Capped::new(zeros, 1024, ZIP_MAX_INFLATED);
        let r = copy(&mut c, &mut io::sink());
        assert!(matches!(r, Err(CopyError::Read(_))));
        assert_eq!(c.violation, Some(Violation::Ratio { compressed: 1024 }));
        assert!(c.read <= ZIP_RATIO_MIN_SIZE + 256 * 1024);

        let zeros = io::repeat(0).take(3 << 20);
        let mut c = Capped::new(zeros, 3 << 20, 2 << 20);
        assert!(copy(&mut c, &mut io::sink()).is_err());
        assert_eq!(c.violation, Some(Violation::ArchiveTotal));

        let data = io::repeat(7).take(2 << 20);
        let mut c = Capped::new(data, 1 << 20, ZIP_MAX_INFLATED);
        assert_eq!(copy(&mut c, &mut io::sink()).ok(), Some(2 << 20));
        assert_eq!(c.violation, None);
    }
}
