//! The release server under test, for the benches that drive it over HTTP: started on a free
//! loopback port with a fresh data directory and the bench admin's credentials, stopped
//! (SIGTERM, then SIGKILL) on drop whatever happens.
//!
//! Not every bench uses every item (each bench compiles this module on its own).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

pub type Res<T> = Result<T, String>;

pub const BENCH_ADMIN_EMAIL: &str = "bench-admin@lightbox.local";
pub const BENCH_ADMIN_PASSWORD: &str = "Bench-Quartz-Meadow-71";

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
}

impl ServerGuard {
    pub fn start(bin: &Path, data: &Path) -> Res<Self> {
        Self::start_with(bin, data, &[])
    }

    /// [`ServerGuard::start`] with extra environment variables for the server.
    pub fn start_with(bin: &Path, data: &Path, env: &[(&str, &str)]) -> Res<Self> {
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
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on the PID of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.exit_code = status.code();
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!("bench: the server did not stop within 30 s of SIGTERM: killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
