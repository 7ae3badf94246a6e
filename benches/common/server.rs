//! The release server under test, for the benches that drive it over HTTP: started on a free
//! loopback port with a fresh data directory and the bench admin's credentials, stopped
//! (SIGTERM, then SIGKILL) on drop whatever happens. Also what the benches read about the
//! machine around it: process CPU, I/O and memory from `/proc`, the disk's durable write rate
//! (`dd`) and the loopback ceiling (a static HTTP body).
//!
//! Not every bench uses every item (each bench compiles this module on its own).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

pub type Res<T> = Result<T, String>;

pub const BENCH_ADMIN_EMAIL: &str = "bench-admin@lightbox.local";
pub const BENCH_ADMIN_PASSWORD: &str = "Bench-Quartz-Meadow-71";

/// A positive integer setting from the environment (`_` allowed as a digit separator), else
/// `default`.
pub fn env_usize(name: &str, default: usize) -> Res<usize> {
    match std::env::var(name) {
        Ok(v) => match v.trim().replace('_', "").parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}={v:?}: expected a positive integer")),
        },
        Err(_) => Ok(default),
    }
}

/// Stops a child process we spawned: SIGTERM, up to 30 s to exit, then SIGKILL. Returns its
/// exit status when it stopped by itself. `what` names it in the message about the kill.
pub fn terminate(child: &mut Child, what: &str) -> Option<ExitStatus> {
    // SAFETY: plain kill(2) on the PID of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                eprintln!("bench: {what} did not stop within 30 s of SIGTERM: killing it");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` in the repository).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The server under test: `LIGHTBOX_BIN`, else the release binary. Missing in a smoke run
/// (`cargo test --benches`): prints how to run the bench and answers `None`; missing in a full
/// run: an error.
pub fn server_binary(bench: &str, full: bool) -> Res<Option<PathBuf>> {
    let bin = std::env::var_os("LIGHTBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/lightbox"));
    if bin.is_file() {
        return Ok(Some(bin));
    }
    if !full {
        println!("{bench}: run with cargo build --release && cargo bench --bench {bench}");
        return Ok(None);
    }
    Err(format!(
        "the release binary {} does not exist: run `cargo build --release` first \
         (or point LIGHTBOX_BIN at a lightbox binary)",
        bin.display()
    ))
}

/// Sign in as the bench admin; returns the bearer token.
pub fn sign_in(url: &str) -> Res<String> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"email": BENCH_ADMIN_EMAIL, "password": BENCH_ADMIN_PASSWORD}))
        .send()
        .map_err(|e| format!("sign-in: {e}"))?;
    let j: Json = r.json().map_err(|e| format!("sign-in: {e}"))?;
    j["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("sign-in refused: {j}"))
}

/// The running server; SIGTERM then SIGKILL on drop, whatever happened (panics included).
pub struct ServerGuard {
    child: Option<Child>,
    pub url: String,
    /// Bearer token of the bootstrap admin.
    pub token: String,
    pub exit_code: Option<i32>,
    /// From spawn to the server's "listening" line.
    pub startup: Duration,
}

impl ServerGuard {
    pub fn start(bin: &Path, data: &Path) -> Res<Self> {
        Self::start_with(bin, data, &[])
    }

    /// [`ServerGuard::start`] with extra environment variables for the server.
    pub fn start_with(bin: &Path, data: &Path, env: &[(&str, &str)]) -> Res<Self> {
        let spawned = Instant::now();
        let mut child = Command::new(bin)
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("LIGHTBOX_CONFIG")
            .env("LIGHTBOX_ADMIN_EMAIL", BENCH_ADMIN_EMAIL)
            .env("LIGHTBOX_ADMIN_PASSWORD", BENCH_ADMIN_PASSWORD)
            // As deployed: no backtrace capture on every internal error value.
            .env_remove("RUST_BACKTRACE")
            .env(
                "LIGHTBOX_LOG",
                std::env::var("LIGHTBOX_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut guard = ServerGuard {
            child: Some(child),
            url: String::new(),
            token: String::new(),
            exit_code: None,
            startup: Duration::ZERO,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            // Keep draining stdout so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.strip_prefix("Lightbox listening on ") {
                    let _ = tx.send(rest.trim().to_owned());
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(url) if url.starts_with("http://127.0.0.1:") => {
                    guard.startup = spawned.elapsed();
                    guard.token = sign_in(&url)?;
                    guard.url = url;
                    return Ok(guard);
                }
                Ok(other) => return Err(format!("unexpected listen address {other:?}")),
                Err(_) => {
                    if let Some(c) = guard.child.as_mut()
                        && let Ok(Some(status)) = c.try_wait()
                    {
                        guard.child = None;
                        return Err(format!("the server exited before listening ({status})"));
                    }
                    if Instant::now() > deadline {
                        return Err("the server did not print its address within 60 s".into());
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGTERM, wait up to 30 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.exit_code = terminate(&mut child, "the server").and_then(|s| s.code());
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (user, system) CPU seconds of a process so far.
pub fn proc_cpu(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a configuration value.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    if tick <= 0.0 {
        return None;
    }
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime / tick, stime / tick))
}

/// A counter of `/proc/<pid>/io` (`read_bytes:`, `write_bytes:`: bytes a process caused to be
/// read from / sent to the block layer).
pub fn proc_io(pid: u32, field: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
}

/// A value in kB from `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `dd if=/dev/zero of=<dir>/dd.tmp bs=1M count=<mib> conv=fdatasync`: (bytes, seconds, MB/s).
pub fn dd_rate(dir: &Path, mib: u64) -> Res<(u64, f64, f64)> {
    let target = dir.join("dd.tmp");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fdatasync"])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run dd: {e}"));
    let _ = std::fs::remove_file(&target);
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("dd failed ({}): {}", out.status, stderr.trim()));
    }
    parse_dd(&stderr).ok_or_else(|| format!("cannot read dd's output: {}", stderr.trim()))
}

/// GNU dd: "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.31 s, 465 MB/s".
fn parse_dd(stderr: &str) -> Option<(u64, f64, f64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains(" bytes") && l.contains("copied"))?;
    let bytes: u64 = line.split_whitespace().next()?.parse().ok()?;
    let after = line.split("copied,").nth(1)?;
    let secs: f64 = after.split_whitespace().next()?.parse().ok()?;
    if secs <= 0.0 {
        return None;
    }
    Some((bytes, secs, bytes as f64 / 1e6 / secs))
}

/// Serves `len` bytes to every GET on a loopback port (keep-alive, Content-Length), from
/// detached threads that end with the process, writing `chunk` bytes at a time: the loopback
/// ceiling the same client can reach. Returns its URL.
pub fn static_server(len: u64, chunk: usize) -> Res<String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = l.local_addr().map_err(|e| format!("bind: {e}"))?;
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve_static(s, len, chunk));
        }
    });
    Ok(format!("http://{addr}/static"))
}

fn serve_static(s: TcpStream, len: u64, chunk: usize) {
    let chunk = vec![0x5a_u8; chunk];
    let Ok(read_half) = s.try_clone() else {
        return;
    };
    let _ = s.set_nodelay(true);
    let mut reader = BufReader::new(read_half);
    let mut w = s;
    let mut line = String::new();
    loop {
        // The request line and headers (a GET has no body), up to the empty line.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim_end().is_empty() => break,
                Ok(_) => {}
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
        );
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if w.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
    }
}
