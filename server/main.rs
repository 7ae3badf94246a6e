//! The `lightbox` command: read the configuration, then serve, import or reindex.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lightbox::config::{self, Settings};

/// Lightbox: a self-hosted DICOMweb server (PS3.18) with a patient portal.
///
/// Every setting can come from a flag, a LIGHTBOX_* environment variable or the TOML file given
/// with --config (in that order of precedence). Example: lightbox serve --data /srv/lightbox
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// TOML configuration file (keys as the long flags: listen, data, public_url, ...)
    #[arg(
        long,
        short,
        global = true,
        env = "LIGHTBOX_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (DICOMweb under /dicom-web, health at /healthz)
    Serve {
        #[command(flatten)]
        settings: Settings,
        /// Print the merged configuration and exit
        #[arg(long)]
        print_config: bool,
    },
    /// Store DICOM files, folders, ZIP archives and CD/USB trees into the data directory
    Import {
        #[command(flatten)]
        settings: Settings,
        /// Files, folders or .zip archives
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Rebuild the whole index from the stored files (after a crash or an upgrade)
    Reindex {
        #[command(flatten)]
        settings: Settings,
    },
    /// Check the audit trail's hash chain (run while the server is stopped)
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify every record's hash and link; exit 1 at the first broken one
    Verify {
        #[command(flatten)]
        settings: Settings,
    },
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let settings = match &cli.command {
        Command::Serve { settings, .. }
        | Command::Import { settings, .. }
        | Command::Reindex { settings }
        | Command::Audit {
            command: AuditCommand::Verify { settings },
        } => settings.clone(),
    };
    let config = match config::load(settings, cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lightbox: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    let result = match cli.command {
        Command::Serve {
            print_config: true, ..
        } => {
            println!("{}", toml::to_string_pretty(&config).unwrap_or_default());
            Ok(())
        }
        Command::Serve { .. } => serve(config),
        Command::Import { paths, .. } => lightbox::import::import_command(&config, &paths),
        Command::Reindex { .. } => lightbox::import::reindex_command(&config),
        Command::Audit {
            command: AuditCommand::Verify { .. },
        } => audit_verify(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lightbox: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that frees memory its own arena and keeps freed chunks there: a
/// stream of file chunks allocated on a reading thread and freed on an I/O thread made RSS
/// climb by hundreds of MB during a 1 GB retrieve. Two arenas keep it flat (measured in
/// benches/wado.rs) at no measurable cost on 2 cores.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn audit_verify(config: &config::Config) -> Result<(), String> {
    let (store, _) = lightbox::store::Store::open(&config.data).map_err(|e| e.to_string())?;
    let log = lightbox::audit::AuditLog::open(&store.db).map_err(|e| e.to_string())?;
    let report = log.verify().map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;
    let (_, head) = log.head();
    match report.first_bad {
        None => {
            println!(
                "audit trail intact: {} records, newest hash {head}",
                report.records
            );
            Ok(())
        }
        Some((seq, why)) => Err(format!(
            "audit trail broken at record {seq}: {why} ({} records)",
            report.records
        )),
    }
}

fn serve(config: config::Config) -> Result<(), String> {
    let data = config.data.clone();
    actix_web::rt::System::new()
        .block_on(lightbox::run(config, move |addr, boot| {
            use lightbox::auth::bootstrap::Bootstrap;
            use std::io::Write;
            println!("Lightbox listening on http://{addr}");
            println!("  portal:    http://{addr}/");
            println!("  DICOMweb:  http://{addr}/dicom-web");
            println!("  API:       http://{addr}/api");
            println!("  health:    http://{addr}/healthz");
            println!("  data:      {}", data.display());
            match boot {
                Bootstrap::Generated { email, password_file } => println!(
                    "  sign in:   at http://{addr}/ as {email} with the password in {} (you must change it at first sign-in)",
                    password_file.display()
                ),
                Bootstrap::FromEnvironment { email } => {
                    println!("  sign in:   {email} with the password from LIGHTBOX_ADMIN_PASSWORD")
                }
                Bootstrap::Existing => {
                    println!("  sign in:   with an existing account at http://{addr}/")
                }
            }
            let _ = std::io::stdout().flush();
        }))
        .map_err(|e| e.to_string())
}
