//! ZIP archives: limits on what they inflate to, and extracting their entries.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};

use super::sniff::{Kind, sniff};
use super::tree::{clean_name, folder_rule, is_program_file, is_zip_name};
use super::{CopyError, Extracted, Importer, copy, read_head, skip};

/// Most bytes one ZIP archive may inflate to.
pub const ZIP_MAX_INFLATED: u64 = 8 << 30;
/// Largest accepted uncompressed/compressed ratio of one entry larger than
/// [`ZIP_RATIO_MIN_SIZE`].
pub const ZIP_MAX_RATIO: u64 = 200;
/// Entries up to this size are never refused for their ratio.
pub const ZIP_RATIO_MIN_SIZE: u64 = 1 << 20;
/// Archives with more entries are refused.
pub const ZIP_MAX_ENTRIES: usize = 100_000;

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
// Pass 2 for ZIP archives

impl Importer<'_> {
    pub(super) fn zip(&mut self, file: File, shown: &str) {
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
