//! Pass 1 of `lightbox import`: walking folders and CD/USB trees into a list of candidates.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use walkdir::WalkDir;

use super::{Summary, skip};

const PROGRAM_EXTENSIONS: [&str; 10] = [
    "EXE", "DLL", "MSI", "COM", "BAT", "CMD", "SYS", "OCX", "SO", "DYLIB",
];

// ---------------------------------------------------------------------------------------------
// Names

/// Upper-cased file name without an ISO 9660 version suffix (`;1`) or trailing dot.
pub(super) fn clean_name(name: &str) -> String {
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

pub(super) fn clean_os_name(name: &OsStr) -> String {
    clean_name(&name.to_string_lossy())
}

fn extension(clean: &str) -> Option<&str> {
    clean.rsplit_once('.').map(|(_, e)| e)
}

pub(super) fn is_program_file(clean: &str) -> bool {
    clean == "AUTORUN.INF" || extension(clean).is_some_and(|e| PROGRAM_EXTENSIONS.contains(&e))
}

pub(super) fn is_zip_name(clean: &str) -> bool {
    extension(clean) == Some("ZIP")
}

/// The skip group of a folder judged by its name alone.
pub(super) fn folder_rule(clean: &str) -> Option<&'static str> {
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

pub(super) struct Candidate {
    /// Resolved path to open.
    pub(super) open: PathBuf,
    /// Path as the user sees it.
    pub(super) shown: PathBuf,
}

pub(super) struct Walker<'a> {
    pub(super) data_dir: Option<PathBuf>,
    /// (device, inode) of every candidate: each file is read once.
    pub(super) seen_files: HashSet<(u64, u64)>,
    /// Canonical folders walked: each folder is walked once.
    pub(super) seen_dirs: HashSet<PathBuf>,
    pub(super) candidates: Vec<Candidate>,
    pub(super) summary: Summary,
    pub(super) spinner: &'a ProgressBar,
}

impl Walker<'_> {
    /// Add one command-line path; false when it cannot be read at all.
    pub(super) fn add_root(&mut self, arg: &Path) -> bool {
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

pub(super) fn special_kind(ft: &fs::FileType) -> &'static str {
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
}
