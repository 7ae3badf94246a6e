//! `lightbox import` and `lightbox reindex`: the command-line side of the store.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::store::Store;

fn open_store(config: &Config) -> Result<Store, String> {
    let (store, report) = Store::open(&config.data).map_err(|e| e.to_string())?;
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
    let store = open_store(config)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} reindex [{bar:40}] {pos}/{len} files ({per_sec}, eta {eta})")
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

/// Placeholder-free stub replaced by the import module proper.
pub fn import_command(config: &Config, paths: &[PathBuf]) -> Result<(), String> {
    let _ = (config, paths);
    Err("import is not available in this build".into())
}
