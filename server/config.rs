//! Configuration: built-in defaults, then the TOML file, then `LIGHTBOX_*` environment variables,
//! then command-line flags (each later layer wins). Bad values stop start-up with a message that
//! names the setting and where it came from.
//!
//! Every setting has one flat name used in all three places: `listen` in the file,
//! `LIGHTBOX_LISTEN` in the environment, `--listen` on the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::http::urls::validate_public_url;

/// The merged, validated configuration. Travels in `AppState`; never a global.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Origins allowed to call DICOMweb routes from a browser; `*` = any.
    pub cors_origins: Vec<String>,
    /// Largest accepted STOW request body, in bytes.
    pub max_upload_bytes: u64,
    /// STOW refuses instances (0xA700) when free disk would fall below this many bytes.
    pub disk_reserve_bytes: u64,
    /// Patients may create their own accounts.
    pub self_signup: bool,
    /// Per patient or facility account and UTC day: most bytes and instances STOW accepts.
    pub stow_quota_bytes: u64,
    pub stow_quota_instances: u64,
    /// A session ends after this long without a request.
    pub session_idle: std::time::Duration,
    /// A session ends this long after sign-in, whatever its use.
    pub session_absolute: std::time::Duration,
    /// QIDO-RS: most results per response (a larger `limit` is clamped).
    pub qido_max_results: usize,
    /// QIDO-RS: match person names case-sensitively (default: case- and accent-insensitive).
    pub qido_case_sensitive_pn: bool,
    /// WADO-RS metadata: BulkDataURIs as paths (`/dicom-web/...`) instead of absolute URLs.
    pub bulkdata_uri_relative: bool,
    /// Rendering: refuse (413) an instance whose decoded pixels would exceed this many bytes.
    pub render_max_decoded_bytes: u64,
    /// Rendering: the long side of a default thumbnail, in pixels.
    pub thumbnail_size: u32,
    pub log: String,
}

/// Settings as they may appear in the file, the environment and on the command line.
/// Every field is optional: absent means "take the next layer down".
#[derive(Debug, Clone, Default, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "LIGHTBOX_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory (index and instance files) [default: ./lightbox-data]
    #[arg(long, env = "LIGHTBOX_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Public base URL used for absolute URLs (RetrieveURL), e.g. https://pacs.example.org
    #[arg(long, env = "LIGHTBOX_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Proxy addresses or networks whose Forwarded / X-Forwarded-* headers are trusted (comma list)
    #[arg(
        long,
        env = "LIGHTBOX_TRUSTED_PROXIES",
        value_name = "CIDR,...",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Origins allowed to call DICOMweb from a browser (comma list; * = any) [default: *]
    #[arg(
        long,
        env = "LIGHTBOX_CORS_ORIGINS",
        value_name = "ORIGIN,...",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Largest STOW request body, e.g. 4GiB, 500MB, 1048576 [default: 4GiB]
    #[arg(long, env = "LIGHTBOX_MAX_UPLOAD", value_name = "SIZE")]
    pub max_upload: Option<String>,
    /// Free disk to keep; STOW refuses instances below it [default: 1GiB]
    #[arg(long, env = "LIGHTBOX_DISK_RESERVE", value_name = "SIZE")]
    pub disk_reserve: Option<String>,
    /// Let patients create their own accounts (POST /api/auth/register) [default: true]
    #[arg(long, env = "LIGHTBOX_SELF_SIGNUP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub self_signup: Option<bool>,
    /// Daily STOW quota per patient or facility account, in bytes [default: 5GB]
    #[arg(long, env = "LIGHTBOX_STOW_QUOTA_BYTES", value_name = "SIZE")]
    pub stow_quota_bytes: Option<String>,
    /// Daily STOW quota per patient or facility account, in instances [default: 20000]
    #[arg(long, env = "LIGHTBOX_STOW_QUOTA_INSTANCES", value_name = "N")]
    pub stow_quota_instances: Option<u64>,
    /// Session idle timeout, e.g. 30m, 1h [default: 30m]
    #[arg(long, env = "LIGHTBOX_SESSION_IDLE", value_name = "DURATION")]
    pub session_idle: Option<String>,
    /// Session absolute lifetime, e.g. 12h [default: 12h]
    #[arg(long, env = "LIGHTBOX_SESSION_ABSOLUTE", value_name = "DURATION")]
    pub session_absolute: Option<String>,
    /// QIDO-RS: most results per response; a larger limit is clamped [default: 1000]
    #[arg(long, env = "LIGHTBOX_QIDO_MAX_RESULTS", value_name = "N")]
    pub qido_max_results: Option<usize>,
    /// QIDO-RS: match person names case-sensitively [default: false]
    #[arg(long, env = "LIGHTBOX_QIDO_CASE_SENSITIVE_PN", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub qido_case_sensitive_pn: Option<bool>,
    /// WADO-RS metadata: write BulkDataURIs as paths (/dicom-web/...) instead of absolute URLs [default: false]
    #[arg(long, env = "LIGHTBOX_BULKDATA_URI_RELATIVE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub bulkdata_uri_relative: Option<bool>,
    /// Rendering: refuse (413) instances whose decoded pixels exceed this many bytes [default: 2147483648]
    #[arg(long, env = "LIGHTBOX_RENDER_MAX_DECODED_BYTES", value_name = "BYTES")]
    pub render_max_decoded_bytes: Option<u64>,
    /// Rendering: long side of a default thumbnail in pixels, 16 to 1024 [default: 128]
    #[arg(long, env = "LIGHTBOX_THUMBNAIL_SIZE", value_name = "PX")]
    pub thumbnail_size: Option<u32>,
    /// Log filter (tracing EnvFilter syntax) [default: info]
    #[arg(long, env = "LIGHTBOX_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

impl Settings {
    /// `self` wins over `lower` field by field.
    fn over(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            data: self.data.or(lower.data),
            public_url: self.public_url.or(lower.public_url),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            cors_origins: self.cors_origins.or(lower.cors_origins),
            max_upload: self.max_upload.or(lower.max_upload),
            disk_reserve: self.disk_reserve.or(lower.disk_reserve),
            self_signup: self.self_signup.or(lower.self_signup),
            stow_quota_bytes: self.stow_quota_bytes.or(lower.stow_quota_bytes),
            stow_quota_instances: self.stow_quota_instances.or(lower.stow_quota_instances),
            session_idle: self.session_idle.or(lower.session_idle),
            session_absolute: self.session_absolute.or(lower.session_absolute),
            qido_max_results: self.qido_max_results.or(lower.qido_max_results),
            qido_case_sensitive_pn: self.qido_case_sensitive_pn.or(lower.qido_case_sensitive_pn),
            bulkdata_uri_relative: self.bulkdata_uri_relative.or(lower.bulkdata_uri_relative),
            render_max_decoded_bytes: self
                .render_max_decoded_bytes
                .or(lower.render_max_decoded_bytes),
            thumbnail_size: self.thumbnail_size.or(lower.thumbnail_size),
            log: self.log.or(lower.log),
        }
    }
}

/// Read the TOML file, if any, and merge it under the flags and environment (which clap has
/// already merged: a flag wins over its env variable).
pub fn load(cli: Settings, file: Option<&Path>) -> Result<Config, String> {
    let from_file = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            toml::from_str::<Settings>(&text)
                .map_err(|e| format!("config file {}: {e}", path.display()))?
        }
        None => Settings::default(),
    };
    finish(cli.over(from_file))
}

/// Apply defaults and validate.
pub fn finish(s: Settings) -> Result<Config, String> {
    let listen_raw = s.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen: SocketAddr = listen_raw
        .parse()
        .map_err(|_| format!("listen: {listen_raw:?} is not an address like 127.0.0.1:8080"))?;
    let public_url = match s.public_url.filter(|u| !u.is_empty()) {
        Some(u) => Some(validate_public_url(&u).map_err(|e| format!("public_url: {e}"))?),
        None => None,
    };
    let trusted_proxies = s
        .trusted_proxies
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("trusted_proxies: {p:?} is not an IP address or network"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cors_origins: Vec<String> = s
        .cors_origins
        .unwrap_or_else(|| vec!["*".into()])
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    for o in &cors_origins {
        if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
            return Err(format!(
                "cors_origins: {o:?} must be * or an origin like https://viewer.example.org"
            ));
        }
    }
    let max_upload_bytes = parse_size(s.max_upload.as_deref().unwrap_or("4GiB"))
        .map_err(|e| format!("max_upload: {e}"))?;
    if max_upload_bytes == 0 {
        return Err("max_upload: must be greater than zero".into());
    }
    let disk_reserve_bytes = parse_size(s.disk_reserve.as_deref().unwrap_or("1GiB"))
        .map_err(|e| format!("disk_reserve: {e}"))?;
    let session_idle = parse_duration(s.session_idle.as_deref().unwrap_or("30m"))
        .map_err(|e| format!("session_idle: {e}"))?;
    let session_absolute = parse_duration(s.session_absolute.as_deref().unwrap_or("12h"))
        .map_err(|e| format!("session_absolute: {e}"))?;
    if session_idle.is_zero() || session_absolute < session_idle {
        return Err("session_absolute must be at least session_idle, and both above zero".into());
    }
    Ok(Config {
        listen,
        data: s.data.unwrap_or_else(|| PathBuf::from("./lightbox-data")),
        public_url,
        trusted_proxies,
        cors_origins,
        max_upload_bytes,
        disk_reserve_bytes,
        self_signup: s.self_signup.unwrap_or(true),
        stow_quota_bytes: parse_size(s.stow_quota_bytes.as_deref().unwrap_or("5GB"))
            .map_err(|e| format!("stow_quota_bytes: {e}"))?,
        stow_quota_instances: s.stow_quota_instances.unwrap_or(20_000),
        session_idle,
        session_absolute,
        qido_max_results: match s.qido_max_results.unwrap_or(1000) {
            0 => return Err("qido_max_results must be at least 1".into()),
            n => n,
        },
        qido_case_sensitive_pn: s.qido_case_sensitive_pn.unwrap_or(false),
        bulkdata_uri_relative: s.bulkdata_uri_relative.unwrap_or(false),
        render_max_decoded_bytes: match s.render_max_decoded_bytes.unwrap_or(2 << 30) {
            0 => return Err("render_max_decoded_bytes must be at least 1".into()),
            n => n,
        },
        thumbnail_size: match s.thumbnail_size.unwrap_or(128) {
            n @ 16..=1024 => n,
            n => {
                return Err(format!(
                    "thumbnail_size must be from 16 to 1024 pixels, not {n}"
                ));
            }
        },
        log: s.log.unwrap_or_else(|| "info".into()),
    })
}

/// Parse a duration: a number with s, m, h or d (e.g. `30m`, `12h`, `14d`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m or 12h"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use s, m, h or d)")),
    };
    Ok(std::time::Duration::from_secs(n * secs))
}

/// Parse a byte size: a plain number of bytes, or a number with KB/MB/GB/TB (powers of 1000)
/// or KiB/MiB/GiB/TiB (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 500MB or 4GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("{s:?}: unknown unit {other:?}")),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let c = finish(Settings::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data, PathBuf::from("./lightbox-data"));
        assert!(c.self_signup);
        assert_eq!(c.session_idle.as_secs(), 30 * 60);
        assert_eq!(c.session_absolute.as_secs(), 12 * 3600);
        assert_eq!(c.cors_origins, vec!["*"]);
        assert_eq!(c.max_upload_bytes, 4 << 30);
    }

    #[test]
    fn flags_win_over_file() {
        let cli = Settings {
            listen: Some("127.0.0.1:9000".into()),
            ..Default::default()
        };
        let file: Settings =
            toml::from_str("listen = \"0.0.0.0:1\"\ndata = \"/srv/x\"\nmax_upload = \"10MB\"")
                .unwrap();
        let c = finish(cli.over(file)).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.data, PathBuf::from("/srv/x"));
        assert_eq!(c.max_upload_bytes, 10_000_000);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let bad = |s: Settings| finish(s).unwrap_err();
        assert!(
            bad(Settings {
                listen: Some("nowhere".into()),
                ..Default::default()
            })
            .starts_with("listen:")
        );
        assert!(
            bad(Settings {
                max_upload: Some("12 parsecs".into()),
                ..Default::default()
            })
            .starts_with("max_upload:")
        );
        assert!(
            bad(Settings {
                trusted_proxies: Some(vec!["x".into()]),
                ..Default::default()
            })
            .starts_with("trusted_proxies:")
        );
        assert!(
            bad(Settings {
                public_url: Some("ftp://x".into()),
                ..Default::default()
            })
            .starts_with("public_url:")
        );
        assert!(toml::from_str::<Settings>("lisen = \"x\"").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5 MB").unwrap(), 1_500_000);
        assert!(parse_size("MB").is_err());
        assert_eq!(parse_duration("14d").unwrap().as_secs(), 14 * 86_400);
        assert!(parse_duration("5 fortnights").is_err());
    }
}
