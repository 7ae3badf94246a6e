//! Accounts, sessions, tokens, roles, upload ownership, throttling, security headers and the
//! audit trail (issue 3), against the real server over HTTP.
//!
//! The per-IP sign-in bucket (10 attempts, 30/min) is shared by register and login: every test
//! keeps its credential calls on one server under that, counting the harness's admin sign-in.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

use lightbox::audit::{AuditFilter, AuditLog};
use lightbox::auth::token::{AUDIENCE, Claims};
use lightbox::store::Store;

const PATIENT_PASSWORD: &str = "Tulip-Harbour-Lantern-93";
const PROCESSING_FAILURE: u64 = 0x0110;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn with_bearer(rb: RequestBuilder, token: &str) -> RequestBuilder {
    rb.header("Authorization", format!("Bearer {token}"))
}

fn with_cookie(rb: RequestBuilder, cookie: &str) -> RequestBuilder {
    rb.header("Cookie", format!("lightbox_session={cookie}"))
}

fn register(url: &str, email: &str, password: &str) -> Resp {
    send(
        client()
            .post(format!("{url}/api/auth/register"))
            .json(&json!({"email": email, "password": password})),
    )
}

fn sign_in(url: &str, email: &str, password: &str) -> Resp {
    send(
        client()
            .post(format!("{url}/api/auth/login"))
            .json(&json!({"email": email, "password": password})),
    )
}

/// `GET /api/me` with a bearer token; the status.
fn me_bearer(url: &str, token: &str) -> u16 {
    send(with_bearer(client().get(format!("{url}/api/me")), token)).status
}

/// `GET /api/me` with only the session cookie; the status.
fn me_cookie(url: &str, cookie: &str) -> u16 {
    send(with_cookie(client().get(format!("{url}/api/me")), cookie)).status
}

/// Register and sign in a patient: (token, user id, session cookie).
fn new_patient(url: &str, email: &str) -> (String, String, String) {
    let r = register(url, email, PATIENT_PASSWORD);
    assert_eq!(r.status, 201, "register {email}: {}", r.text);
    let r = sign_in(url, email, PATIENT_PASSWORD);
    assert_eq!(r.status, 200, "sign in {email}: {}", r.text);
    let id = r.json["user"]["id"].as_str().unwrap().to_owned();
    (r.token(), id, r.session_cookie())
}

/// The id of the user with this email, from the admin's user list.
fn user_id(s: &Server, email: &str) -> String {
    let r = send(s.client().get(format!("{}/api/users", s.url)));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email)
        .unwrap_or_else(|| panic!("{email} not in {}", r.text))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn patch_user(s: &Server, token: &str, id: &str, body: Value) -> Resp {
    send(with_bearer(
        client()
            .patch(format!("{}/api/users/{id}", s.url))
            .json(&body),
        token,
    ))
}

/// STOW with an explicit bearer token (or none): (status, JSON body).
fn stow_as(url: &str, token: Option<&str>, parts: &[Vec<u8>]) -> (u16, Value) {
    let mut rb = client()
        .post(format!("{url}/dicom-web/studies"))
        .header("Content-Type", stow_content_type())
        .header("Accept", "application/dicom+json")
        .body(multipart(parts));
    if let Some(t) = token {
        rb = with_bearer(rb, t);
    }
    let r = send(rb);
    (r.status, r.json)
}

/// A fresh UID under a test root, unique in this process.
fn uid(kind: u32) -> String {
    static N: AtomicU32 = AtomicU32::new(1);
    format!(
        "1.2.826.0.1.3680043.10.1435.7.{kind}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn instance(study: &str, series: &str, sop: &str) -> Vec<u8> {
    make_instance(study, series, sop, "PAT-1", 256)
}

/// SOP Instance UIDs of every stored file.
fn stored_sops(s: &Server) -> HashSet<String> {
    s.stored_files()
        .iter()
        .map(|p| read_uid(p, dicom_dictionary_std::tags::SOP_INSTANCE_UID))
        .collect()
}

/// URL-safe base64 without padding.
fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..(c.len() + 1) {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The claims of a token, read without checking it.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&b64url_decode(payload)).expect("JWT payload JSON")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A server started by hand (no admin from the environment unless given), with its stdout.
struct Raw {
    child: Option<Child>,
    url: String,
    /// Stdout lines up to and including the `sign in:` line.
    lines: Vec<String>,
}

impl Raw {
    fn start(data: &Path, env: &[(&str, &str)]) -> Raw {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("LIGHTBOX_CONFIG")
            .env_remove("LIGHTBOX_ADMIN_EMAIL")
            .env_remove("LIGHTBOX_ADMIN_PASSWORD")
            .env("LIGHTBOX_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn lightbox");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `sign in:` line on stdout; got {lines:?}"));
            let done = line.contains("sign in:");
            lines.push(line);
            if done {
                break;
            }
        }
        let url = lines
            .iter()
            .find_map(|l| l.strip_prefix("Lightbox listening on "))
            .unwrap_or_else(|| panic!("no listening line in {lines:?}"))
            .trim()
            .to_owned();
        Raw {
            child: Some(child),
            url,
            lines,
        }
    }

    /// SIGTERM and wait; the exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 40 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Bootstrap
// ---------------------------------------------------------------------------------------------

#[test]
fn bootstrap_generates_a_password_that_must_be_changed_and_env_never_resets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut raw = Raw::start(&data, &[]);
    let file = data.join("initial-admin-password");
    assert!(file.exists(), "{} missing", file.display());
    assert_eq!(mode(&file), 0o600, "initial-admin-password must be 0600");
    assert_eq!(
        mode(&data.join("jwt-secret")),
        0o600,
        "jwt-secret must be 0600"
    );
    let sign_line = raw.lines.last().unwrap().clone();
    assert!(
        sign_line.contains("admin@lightbox.local")
            && sign_line.contains(&file.display().to_string()),
        "stdout must name the email and the file: {sign_line}"
    );
    let generated = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(generated.len() >= 16, "generated password too short");

    let r = sign_in(&raw.url, "admin@lightbox.local", &generated);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], true);
    assert_eq!(r.json["user"]["role"], "admin");
    let first = r.token();

    // Everything but the password change is refused until it is changed.
    let study = uid(1);
    let part = instance(&study, &uid(2), &uid(3));
    let (st, body) = stow_as(&raw.url, Some(&first), std::slice::from_ref(&part));
    assert_eq!(st, 403, "STOW before the password change: {body}");
    let users = send(with_bearer(
        client().get(format!("{}/api/users", raw.url)),
        &first,
    ));
    assert_eq!(users.status, 403, "{}", users.text);
    assert_eq!(me_bearer(&raw.url, &first), 200, "GET /api/me stays open");

    let new_pw = "Granite-Orchard-Meadow-57";
    let r = send(with_bearer(
        client()
            .post(format!("{}/api/auth/password", raw.url))
            .json(&json!({"current_password": generated, "new_password": new_pw})),
        &first,
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], false);
    let second = r.token();
    let (st, body) = stow_as(&raw.url, Some(&second), std::slice::from_ref(&part));
    assert_eq!(st, 200, "STOW after the password change: {body}");
    let users = send(with_bearer(
        client().get(format!("{}/api/users", raw.url)),
        &second,
    ));
    assert_eq!(users.status, 200, "{}", users.text);
    assert_eq!(raw.stop(), Some(0));

    // A restart with the environment set does not touch the existing admin.
    let env_pw = "Environment-Must-Not-Apply-61";
    let raw2 = Raw::start(
        &data,
        &[
            ("LIGHTBOX_ADMIN_EMAIL", "admin@lightbox.local"),
            ("LIGHTBOX_ADMIN_PASSWORD", env_pw),
        ],
    );
    assert!(
        raw2.lines.last().unwrap().contains("existing account"),
        "{:?}",
        raw2.lines
    );
    let r = sign_in(&raw2.url, "admin@lightbox.local", env_pw);
    assert_eq!(
        r.status, 401,
        "the environment password must not work: {}",
        r.text
    );
    let r = sign_in(&raw2.url, "admin@lightbox.local", new_pw);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], false);
}

#[test]
fn weak_admin_password_from_env_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("LIGHTBOX_CONFIG")
        .env("LIGHTBOX_LOG", "warn")
        .env("LIGHTBOX_ADMIN_EMAIL", "root@example.org")
        .env("LIGHTBOX_ADMIN_PASSWORD", "password1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with a weak LIGHTBOX_ADMIN_PASSWORD");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains("LIGHTBOX_ADMIN_PASSWORD") && stderr.contains("too common"),
        "the message must name the variable and the reason: {stderr}"
    );
    assert!(!data.join("initial-admin-password").exists());

    // Nothing was half-created: a good password bootstraps the admin normally.
    let good = "Copper-Willow-Estuary-28";
    let raw = Raw::start(
        &data,
        &[
            ("LIGHTBOX_ADMIN_EMAIL", "root@example.org"),
            ("LIGHTBOX_ADMIN_PASSWORD", good),
        ],
    );
    let r = sign_in(&raw.url, "root@example.org", good);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], false);
}

// ---------------------------------------------------------------------------------------------
// 2. Register
// ---------------------------------------------------------------------------------------------

#[test]
fn register_answers_the_same_for_new_and_existing_email_and_keeps_the_password() {
    let s = Server::start(&[]);
    let a = register(&s.url, "alice@example.org", PATIENT_PASSWORD);
    assert_eq!(a.status, 201, "{}", a.text);
    let b = register(&s.url, "Alice@Example.org", "Another-Strong-Secret-77");
    assert_eq!(b.status, 201, "{}", b.text);
    assert_eq!(a.json, b.json, "same body for a new and an existing email");
    assert!(a.json.get("token").is_none() && a.json.get("id").is_none());
    // The admin's address too: no hint that it exists.
    let c = register(&s.url, ADMIN_EMAIL, "Another-Strong-Secret-77");
    assert_eq!((c.status, &c.json), (201, &a.json));

    // The second registration did not change the password.
    assert_eq!(
        sign_in(&s.url, "alice@example.org", "Another-Strong-Secret-77").status,
        401
    );
    let r = sign_in(&s.url, "alice@example.org", PATIENT_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["role"], "patient");
    assert_eq!(sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD).status, 200);
    // One alice, one admin.
    let users = send(s.client().get(format!("{}/api/users", s.url)));
    assert_eq!(users.json.as_array().unwrap().len(), 2, "{}", users.text);
}

#[test]
fn register_refuses_invalid_email_and_weak_passwords_with_a_message() {
    let s = Server::start(&[]);
    let r = register(&s.url, "not-an-email", PATIENT_PASSWORD);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.json["message"].as_str().unwrap().contains("email"));
    let email = "bob.smith@example.org";
    for (pw, words) in [
        ("Ab1!x", "at least 8"),
        ("password1", "common"),
        (email, "email"),
        ("aaaaaaaaaa", "repetitive"),
        ("12345678", ""),
    ] {
        let r = register(&s.url, email, pw);
        assert_eq!(r.status, 400, "{pw:?}: {}", r.text);
        assert_eq!(r.json["code"], "bad-request");
        let msg = r.json["message"].as_str().unwrap_or_default();
        assert!(
            msg.len() > 10 && msg.contains("password") && msg.contains(words),
            "{pw:?}: unreadable message {msg:?}"
        );
    }
    // None of them created the account.
    let users = send(s.client().get(format!("{}/api/users", s.url)));
    assert_eq!(users.json.as_array().unwrap().len(), 1, "{}", users.text);
}

#[test]
fn register_refuses_unknown_fields_and_never_takes_a_role() {
    let s = Server::start(&[]);
    let r = send(
        client()
            .post(format!("{}/api/auth/register", s.url))
            .json(&json!({
                "email": "mallory@example.org",
                "password": PATIENT_PASSWORD,
                "role": "admin",
            })),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let users = send(s.client().get(format!("{}/api/users", s.url)));
    let list = users.json.as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", users.text);
    assert_eq!(list[0]["email"], ADMIN_EMAIL);
    assert_eq!(
        sign_in(&s.url, "mallory@example.org", PATIENT_PASSWORD).status,
        401
    );
    // Login refuses unknown fields too.
    let r = send(
        client()
            .post(format!("{}/api/auth/login", s.url))
            .json(&json!({
                "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "remember": true,
            })),
    );
    assert_eq!(r.status, 400, "{}", r.text);
}

#[test]
fn self_signup_switched_off_by_flag_is_403() {
    let s = Server::start(&["--self-signup", "false"]);
    let r = register(&s.url, "carol@example.org", PATIENT_PASSWORD);
    assert_eq!(r.status, 403, "{}", r.text);
    let g = send(s.client().get(format!("{}/api/settings", s.url)));
    assert_eq!(g.status, 200);
    assert_eq!(g.json["self_signup"], false);
}

#[test]
fn self_signup_switched_off_at_run_time_by_an_admin() {
    let s = Server::start(&[]);
    let g = send(s.client().get(format!("{}/api/settings", s.url)));
    assert_eq!((g.status, &g.json["self_signup"]), (200, &json!(true)));
    let p = send(
        s.client()
            .put(format!("{}/api/settings", s.url))
            .json(&json!({"self_signup": false})),
    );
    assert_eq!(p.status, 200, "{}", p.text);
    let g = send(s.client().get(format!("{}/api/settings", s.url)));
    assert_eq!(g.json["self_signup"], false);
    assert_eq!(
        register(&s.url, "dave@example.org", PATIENT_PASSWORD).status,
        403
    );
    // Unknown settings are refused.
    let p = send(
        s.client()
            .put(format!("{}/api/settings", s.url))
            .json(&json!({"self_signup": true, "open_bar": true})),
    );
    assert_eq!(p.status, 400, "{}", p.text);
    let p = send(
        s.client()
            .put(format!("{}/api/settings", s.url))
            .json(&json!({"self_signup": true})),
    );
    assert_eq!(p.status, 200);
    assert_eq!(
        register(&s.url, "dave@example.org", PATIENT_PASSWORD).status,
        201
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Login answers
// ---------------------------------------------------------------------------------------------

#[test]
fn login_failures_are_identical_for_wrong_password_and_unknown_email() {
    let s = Server::start(&[]);
    register(&s.url, "erin@example.org", PATIENT_PASSWORD);
    let wrong = sign_in(&s.url, "erin@example.org", "Not-Her-Password-55");
    let unknown = sign_in(&s.url, "nobody@example.org", "Not-Her-Password-55");
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"lightbox\"")
        );
        assert!(r.session_set_cookie().is_none());
    }
    assert_eq!(wrong.text, unknown.text, "same body");
}

#[test]
fn login_success_returns_token_user_and_a_strict_http_only_cookie() {
    let s = Server::start(&[]);
    register(&s.url, "frank@example.org", PATIENT_PASSWORD);
    let r = sign_in(&s.url, " Frank@Example.org ", PATIENT_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.token().is_empty());
    assert_eq!(r.json["token_type"], "Bearer");
    let user = &r.json["user"];
    assert_eq!(user["email"], "frank@example.org");
    assert_eq!(user["role"], "patient");
    assert_eq!(user["id"].as_str().unwrap().len(), 32);
    assert!(user.get("password_hash").is_none(), "{user}");
    let claims = claims_of(&r.token());
    assert_eq!(claims["aud"], AUDIENCE);
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(
        ttl <= 15 * 60,
        "access tokens live at most 15 minutes: {ttl}"
    );

    let cookie = r.session_set_cookie().unwrap();
    let attrs: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "{cookie}");
    assert!(attrs.iter().any(|a| a == "samesite=strict"), "{cookie}");
    assert!(attrs.iter().any(|a| a == "path=/"), "{cookie}");
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "no Secure over plain http: {cookie}"
    );
    // 128-bit session id, not the token.
    let sid = r.session_cookie();
    assert_eq!(sid.len(), 32, "{sid}");
    assert!(!r.token().contains(&sid));
    assert!(r.header("strict-transport-security").is_none());
}

#[test]
fn https_public_url_makes_the_cookie_secure_and_adds_hsts() {
    let s = Server::start(&["--public-url", "https://pacs.example.org"]);
    let r = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(r.status, 200);
    let cookie = r.session_set_cookie().unwrap();
    assert!(
        cookie
            .split(';')
            .any(|a| a.trim().eq_ignore_ascii_case("secure")),
        "{cookie}"
    );
    for path in [
        "/healthz",
        "/api/me",
        "/api/auth/login",
        "/dicom-web/studies",
    ] {
        let r = send(client().get(format!("{}{path}", s.url)));
        let hsts = r.header("strict-transport-security").unwrap_or_default();
        assert!(hsts.contains("max-age="), "{path}: no HSTS ({})", r.status);
    }
    // The cookie's CSRF origin is the public one.
    let cookie = r.session_cookie();
    let out = send(with_cookie(
        client()
            .post(format!("{}/api/auth/logout", s.url))
            .header("Origin", "https://pacs.example.org")
            .json(&json!({})),
        &cookie,
    ));
    assert_eq!(out.status, 204);
    assert_eq!(me_cookie(&s.url, &cookie), 401);
}

// ---------------------------------------------------------------------------------------------
// 4. Tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn bearer_token_gives_me() {
    let s = Server::start(&[]);
    let r = send(s.client().get(format!("{}/api/me", s.url)));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["email"], ADMIN_EMAIL);
    assert_eq!(r.json["role"], "admin");
    // No credentials at all: 401 with a Bearer (never Basic) challenge.
    let r = send(client().get(format!("{}/api/me", s.url)));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"lightbox\"")
    );
}

#[test]
fn forged_tokens_are_refused() {
    let s = Server::start(&[]);
    let real = s.token.clone();
    let sid = claims_of(&real)["sid"].as_str().unwrap().to_owned();
    let secret = hex::decode(
        std::fs::read_to_string(s.data.join("jwt-secret"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let now = now_secs();
    let claims = |aud: &str, iat: u64, exp: u64| Claims {
        sid: sid.clone(),
        aud: aud.to_owned(),
        iat,
        exp,
    };
    // Control: a token made here with the real secret and the right claims works, so the
    // refusals below are about what was changed, not about how the tokens were made.
    let good = hs256(&claims(AUDIENCE, now, now + 600), &secret);
    assert_eq!(me_bearer(&s.url, &good), 200);

    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(
            serde_json::to_string(&claims(AUDIENCE, now, now + 600))
                .unwrap()
                .as_bytes()
        )
    );
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[5] = if sig[5] == 'A' { 'Q' } else { 'A' };
    parts[2] = sig.into_iter().collect();
    let bad_sig = parts.join(".");
    let mut parts: Vec<&str> = real.split('.').collect();
    parts[2] = "";
    let no_sig = parts.join(".");
    let other_secret = hs256(&claims(AUDIENCE, now, now + 600), b"wrong");
    let other_secret_long = hs256(&claims(AUDIENCE, now, now + 600), &[0x42; 32]);
    let wrong_aud = hs256(&claims("lightbox-other", now, now + 600), &secret);
    let expired = hs256(&claims(AUDIENCE, now - 3600, now - 1800), &secret);
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(AUDIENCE, now, now + 600),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    for (what, t) in [
        ("alg none", alg_none.as_str()),
        ("changed signature", &bad_sig),
        ("no signature", &no_sig),
        ("other secret", &other_secret),
        ("other 256-bit secret", &other_secret_long),
        ("wrong audience", &wrong_aud),
        ("expired", &expired),
        ("HS512", &hs512),
        ("garbage", "not.a.token"),
    ] {
        let r = send(with_bearer(client().get(format!("{}/api/me", s.url)), t));
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"lightbox\""),
            "{what}"
        );
        // Nor on DICOMweb.
        let (st, _) = stow_as(&s.url, Some(t), &[instance(&uid(1), &uid(2), &uid(3))]);
        assert_eq!(st, 401, "{what} on STOW");
    }
    // The token's `sid` claim is the stored key, not the session id: it is no cookie.
    assert_eq!(me_cookie(&s.url, &sid), 401);
    assert_eq!(me_bearer(&s.url, &real), 200, "the real token still works");
}

#[test]
fn token_of_an_ended_session_and_basic_auth_are_refused() {
    let s = Server::start(&[]);
    let r = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD);
    let t = r.token();
    assert_eq!(me_bearer(&s.url, &t), 200);
    let out = send(with_bearer(
        client().post(format!("{}/api/auth/logout", s.url)),
        &t,
    ));
    assert_eq!(out.status, 204, "{}", out.text);
    // The token is still within its 15 minutes, but its session has ended: refused at once.
    let r = send(with_bearer(client().get(format!("{}/api/me", s.url)), &t));
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"lightbox\"")
    );

    let basic = format!(
        "Basic {}",
        b64url(format!("{ADMIN_EMAIL}:{ADMIN_PASSWORD}").as_bytes())
    );
    let r = send(
        client()
            .get(format!("{}/api/me", s.url))
            .header("Authorization", basic),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"lightbox\"")
    );
    // The harness's own session is untouched.
    assert_eq!(me_bearer(&s.url, &s.token), 200);
}

// ---------------------------------------------------------------------------------------------
// 5. Sessions
// ---------------------------------------------------------------------------------------------

#[test]
fn logout_ends_the_token_and_the_cookie() {
    let s = Server::start(&[]);
    let r = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD);
    let (t, c) = (r.token(), r.session_cookie());
    assert_eq!(
        me_cookie(&s.url, &c),
        200,
        "the cookie alone works for GET /api/me"
    );
    let me = send(with_cookie(client().get(format!("{}/api/me", s.url)), &c));
    assert_eq!(me.json["email"], ADMIN_EMAIL);
    let out = send(with_bearer(
        client().post(format!("{}/api/auth/logout", s.url)),
        &t,
    ));
    assert_eq!(out.status, 204);
    let cleared = out.session_set_cookie().expect("logout clears the cookie");
    assert!(
        cleared.starts_with("lightbox_session=;")
            || cleared.to_ascii_lowercase().contains("max-age=0"),
        "{cleared}"
    );
    assert_eq!(me_bearer(&s.url, &t), 401);
    assert_eq!(me_cookie(&s.url, &c), 401);
}

#[test]
fn password_change_ends_other_sessions_and_returns_a_new_token() {
    let s = Server::start(&[]);
    let email = "gina@example.org";
    let (t1, _, c1) = new_patient(&s.url, email);
    let r2 = sign_in(&s.url, email, PATIENT_PASSWORD);
    let (t2, c2) = (r2.token(), r2.session_cookie());
    assert_eq!(me_bearer(&s.url, &t2), 200);

    let change = |token: &str, current: &str, new: &str| {
        send(with_bearer(
            client()
                .post(format!("{}/api/auth/password", s.url))
                .json(&json!({"current_password": current, "new_password": new})),
            token,
        ))
    };
    let r = change(
        &t1,
        "Wrong-Current-Password-1",
        "Saffron-Lighthouse-Quiet-40",
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = change(&t1, PATIENT_PASSWORD, "password1");
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(me_bearer(&s.url, &t2), 200, "refused changes end nothing");

    let new_pw = "Saffron-Lighthouse-Quiet-40";
    let r = change(&t1, PATIENT_PASSWORD, new_pw);
    assert_eq!(r.status, 200, "{}", r.text);
    let t3 = r.token();
    assert_ne!(t3, t1);
    let c3 = r.session_cookie();
    assert_ne!(c3, c1, "the session id is rotated");
    assert_eq!(me_bearer(&s.url, &t3), 200);
    assert_eq!(me_cookie(&s.url, &c3), 200);
    assert_eq!(me_bearer(&s.url, &t2), 401, "other sessions end");
    assert_eq!(me_cookie(&s.url, &c2), 401, "other sessions end");
    assert_eq!(sign_in(&s.url, email, PATIENT_PASSWORD).status, 401);
    assert_eq!(sign_in(&s.url, email, new_pw).status, 200);
}

#[test]
fn cookie_state_changes_need_our_origin_and_a_json_body() {
    let s = Server::start(&[]);
    let r = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD);
    let c = r.session_cookie();
    let logout = || with_cookie(client().post(format!("{}/api/auth/logout", s.url)), &c);
    // No Origin.
    send(logout().json(&json!({})));
    assert_eq!(
        me_cookie(&s.url, &c),
        200,
        "logout without Origin must not act"
    );
    // A foreign Origin.
    send(
        logout()
            .header("Origin", "http://evil.example")
            .json(&json!({})),
    );
    assert_eq!(
        me_cookie(&s.url, &c),
        200,
        "logout from a foreign Origin must not act"
    );
    // Our origin, but a form body (what a cross-site form can send).
    send(
        logout()
            .header("Origin", &s.url)
            .header("Content-Type", "text/plain")
            .body("{}"),
    );
    assert_eq!(
        me_cookie(&s.url, &c),
        200,
        "logout without a JSON body must not act"
    );
    send(
        logout()
            .header("Origin", &s.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("a=b"),
    );
    assert_eq!(me_cookie(&s.url, &c), 200);
    // A cookie-authenticated admin change from a foreign origin is refused as anonymous.
    let p = send(
        with_cookie(client().put(format!("{}/api/settings", s.url)), &c)
            .header("Origin", "http://evil.example")
            .json(&json!({"self_signup": false})),
    );
    assert_eq!(p.status, 401, "{}", p.text);
    let g = send(s.client().get(format!("{}/api/settings", s.url)));
    assert_eq!(g.json["self_signup"], true);

    // STOW never takes the cookie, even same-origin.
    let (st, _) = {
        let r = send(
            with_cookie(client().post(format!("{}/dicom-web/studies", s.url)), &c)
                .header("Origin", &s.url)
                .header("Sec-Fetch-Site", "same-origin")
                .header("Content-Type", stow_content_type())
                .body(multipart(&[instance(&uid(1), &uid(2), &uid(3))])),
        );
        (r.status, r.json)
    };
    assert_eq!(st, 401);
    assert!(s.stored_files().is_empty());

    // Our origin and JSON: the logout acts.
    let out = send(logout().header("Origin", &s.url).json(&json!({})));
    assert_eq!(out.status, 204);
    assert_eq!(me_cookie(&s.url, &c), 401);
    assert_eq!(me_bearer(&s.url, &s.token), 200, "other sessions untouched");
}

#[test]
fn idle_session_is_refused_after_the_idle_timeout() {
    let s = Server::start(&["--session-idle", "2s", "--session-absolute", "4s"]);
    let r = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD);
    let (t, c) = (r.token(), r.session_cookie());
    assert_eq!(me_bearer(&s.url, &t), 200);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(me_bearer(&s.url, &t), 401, "idle past 2 s");
    assert_eq!(me_cookie(&s.url, &c), 401);
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        me_bearer(&s.url, &s.token),
        401,
        "past the absolute lifetime"
    );
}

/// A session in use every 0.3 s must outlive a 2 s idle timeout ("ends after this long
/// without a request").
#[test]
fn active_session_outlives_the_idle_timeout() {
    let s = Server::start(&["--session-idle", "2s", "--session-absolute", "1h"]);
    let t = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD).token();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        assert_eq!(
            me_bearer(&s.url, &t),
            200,
            "refused after {:?} although used every 0.3 s",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The absolute lifetime ends a session that is in constant use.
#[test]
fn active_session_ends_at_the_absolute_lifetime() {
    // 1.4 s between the last check expected to pass and the lifetime: a loaded CI machine
    // (tests of this file run in parallel) must not turn a slow request into a failure.
    let s = Server::start(&["--session-idle", "2s", "--session-absolute", "4s"]);
    let t = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD).token();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2600) {
        assert_eq!(
            me_bearer(&s.url, &t),
            200,
            "refused after {:?}, before the absolute lifetime",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(
        4300u64.saturating_sub(start.elapsed().as_millis() as u64),
    ));
    assert_eq!(me_bearer(&s.url, &t), 401, "past the absolute lifetime");
}

// ---------------------------------------------------------------------------------------------
// 6. Roles
// ---------------------------------------------------------------------------------------------

#[test]
fn patients_cannot_manage_users_or_settings() {
    let s = Server::start(&[]);
    let (t, id, c) = new_patient(&s.url, "hank@example.org");
    let admin_id = user_id(&s, ADMIN_EMAIL);
    let u = &s.url;
    let c2 = client();
    let attempts: Vec<(&str, RequestBuilder)> = vec![
        ("GET /api/users", c2.get(format!("{u}/api/users"))),
        (
            "PATCH own role",
            c2.patch(format!("{u}/api/users/{id}"))
                .json(&json!({"role": "admin"})),
        ),
        (
            "PATCH admin",
            c2.patch(format!("{u}/api/users/{admin_id}"))
                .json(&json!({"disabled": true})),
        ),
        (
            "reset admin password",
            c2.post(format!("{u}/api/users/{admin_id}/password-reset")),
        ),
        ("GET /api/settings", c2.get(format!("{u}/api/settings"))),
        (
            "PUT /api/settings",
            c2.put(format!("{u}/api/settings"))
                .json(&json!({"self_signup": false})),
        ),
    ];
    for (what, rb) in attempts {
        let r = send(with_bearer(rb, &t));
        assert_eq!(r.status, 403, "{what}: {}", r.text);
    }
    // Nothing changed.
    let r = send(with_bearer(client().get(format!("{u}/api/me")), &t));
    assert_eq!(r.json["role"], "patient");
    assert_eq!(me_bearer(u, &s.token), 200);
    let g = send(s.client().get(format!("{u}/api/settings")));
    assert_eq!(g.json["self_signup"], true);
    // Cookie-authenticated (same origin, JSON) is no different.
    let r = send(
        with_cookie(client().patch(format!("{u}/api/users/{id}")), &c)
            .header("Origin", u)
            .json(&json!({"role": "admin"})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
}

#[test]
fn admin_changes_roles_and_disables_users_ending_their_sessions() {
    let s = Server::start(&[]);
    let email = "ivy@example.org";
    let (t, id, _) = new_patient(&s.url, email);
    let users = send(s.client().get(format!("{}/api/users", s.url)));
    assert_eq!(users.status, 200);
    let emails: Vec<&str> = users
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert!(
        emails.contains(&email) && emails.contains(&ADMIN_EMAIL),
        "{emails:?}"
    );
    assert!(!users.text.contains("argon2"), "no hashes in the list");

    let r = patch_user(&s, &s.token, &id, json!({"role": "staff"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["role"], "staff");
    assert_eq!(me_bearer(&s.url, &t), 401, "sessions end on a role change");
    let r = sign_in(&s.url, email, PATIENT_PASSWORD);
    assert_eq!(r.json["user"]["role"], "staff");
    let staff = r.token();
    // Staff is not admin.
    let r = send(with_bearer(
        client().get(format!("{}/api/users", s.url)),
        &staff,
    ));
    assert_eq!(r.status, 403);
    let r = patch_user(&s, &staff, &id, json!({"role": "admin"}));
    assert_eq!(r.status, 403, "staff cannot promote themselves");

    let r = patch_user(&s, &s.token, &id, json!({"disabled": true}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["disabled"], true);
    assert_eq!(me_bearer(&s.url, &staff), 401, "sessions end on disable");
    let r = sign_in(&s.url, email, PATIENT_PASSWORD);
    assert_eq!(r.status, 401, "a disabled user cannot sign in: {}", r.text);

    // Bad bodies.
    let r = patch_user(&s, &s.token, &id, json!({"role": "root"}));
    assert_eq!(r.status, 400, "{}", r.text);
    let r = patch_user(&s, &s.token, &id, json!({"email": "x@example.org"}));
    assert_eq!(r.status, 400, "{}", r.text);
}

#[test]
fn the_last_admin_cannot_be_demoted_disabled_or_deleted() {
    let s = Server::start(&[]);
    let admin = user_id(&s, ADMIN_EMAIL);
    for body in [
        json!({"role": "staff"}),
        json!({"role": "patient"}),
        json!({"disabled": true}),
    ] {
        let r = patch_user(&s, &s.token, &admin, body.clone());
        assert_eq!(r.status, 409, "{body}: {}", r.text);
    }
    let r = send(
        s.client()
            .delete(format!("{}/api/me", s.url))
            .json(&json!({"password": ADMIN_PASSWORD})),
    );
    assert_eq!(r.status, 409, "{}", r.text);
    let me = send(s.client().get(format!("{}/api/me", s.url)));
    assert_eq!(me.status, 200, "the admin is intact");
    assert_eq!(me.json["role"], "admin");
    assert_eq!(me.json["disabled"], false);
}

/// Only *active* admins count for the last-admin rule: demoting a disabled admin while another
/// admin is active takes nothing away (deleting it is already allowed).
#[test]
fn a_disabled_admin_can_be_demoted_while_another_admin_is_active() {
    let s = Server::start(&[]);
    register(&s.url, "quinn@example.org", PATIENT_PASSWORD);
    let second = user_id(&s, "quinn@example.org");
    let r = patch_user(&s, &s.token, &second, json!({"role": "admin"}));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = patch_user(&s, &s.token, &second, json!({"disabled": true}));
    assert_eq!(r.status, 200, "{}", r.text);
    let admin = user_id(&s, ADMIN_EMAIL);
    let r = patch_user(&s, &s.token, &admin, json!({"role": "staff"}));
    assert_eq!(r.status, 409, "the only active admin: {}", r.text);
    let r = patch_user(&s, &s.token, &second, json!({"role": "staff"}));
    assert_eq!(r.status, 200, "demoting a disabled admin: {}", r.text);
}

#[test]
fn admin_password_reset_gives_a_temporary_password_and_ends_sessions() {
    let s = Server::start(&[]);
    let email = "jack@example.org";
    let (t, id, _) = new_patient(&s.url, email);
    let r = send(
        s.client()
            .post(format!("{}/api/users/{id}/password-reset", s.url)),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let temp = r.json["temporary_password"].as_str().unwrap().to_owned();
    assert!(temp.len() >= 16);
    assert_eq!(me_bearer(&s.url, &t), 401, "old sessions end");
    assert_eq!(sign_in(&s.url, email, PATIENT_PASSWORD).status, 401);
    let r = sign_in(&s.url, email, &temp);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], true);
    let tt = r.token();
    let (st, _) = stow_as(&s.url, Some(&tt), &[instance(&uid(1), &uid(2), &uid(3))]);
    assert_eq!(st, 403, "nothing but the change before it is done");

    for bad in [
        "0123456789abcdef0123456789abcdef".to_owned(),
        "not-an-id".to_owned(),
        "..%2F..%2Fetc".to_owned(),
        id.to_uppercase(),
    ] {
        let r = send(
            s.client()
                .post(format!("{}/api/users/{bad}/password-reset", s.url)),
        );
        assert_eq!(r.status, 404, "reset {bad}: {}", r.text);
        let r = patch_user(&s, &s.token, &bad, json!({"disabled": true}));
        assert_eq!(r.status, 404, "patch {bad}: {}", r.text);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. STOW ownership and account deletion
// ---------------------------------------------------------------------------------------------

#[test]
fn patients_never_join_or_replace_what_they_do_not_own() {
    let s = Server::start(&[]);
    let (ta, _, _) = new_patient(&s.url, "kate@example.org");
    let (tb, _, _) = new_patient(&s.url, "liam@example.org");
    // Staff member.
    let (_, staff_id, _) = new_patient(&s.url, "mia@example.org");
    assert_eq!(
        patch_user(&s, &s.token, &staff_id, json!({"role": "staff"})).status,
        200
    );
    let ts = sign_in(&s.url, "mia@example.org", PATIENT_PASSWORD).token();

    let study_a = uid(1);
    let series_a = uid(2);
    let a1_sop = uid(3);
    let a1 = instance(&study_a, &series_a, &a1_sop);
    let (st, body) = stow_as(&s.url, Some(&ta), std::slice::from_ref(&a1));
    assert_eq!(st, 200, "A stores a new study: {body}");

    // B into A's study: a new instance, and A's own instance re-sent.
    let b_into_a = instance(&study_a, &series_a, &uid(3));
    let (st, body) = stow_as(&s.url, Some(&tb), std::slice::from_ref(&b_into_a));
    assert_eq!(st, 409, "B joins A's study: {body}");
    assert_eq!(failure_codes(&body, "00081198"), vec![PROCESSING_FAILURE]);
    let (st, body) = stow_as(&s.url, Some(&tb), std::slice::from_ref(&a1));
    assert_eq!(st, 409, "B re-sends A's exact instance: {body}");
    assert_eq!(failure_codes(&body, "00081198"), vec![PROCESSING_FAILURE]);
    assert!(referenced(&body).is_empty());
    // B with the study in the URL too.
    let r = send(with_bearer(
        client()
            .post(format!("{}/dicom-web/studies/{study_a}", s.url))
            .header("Content-Type", stow_content_type())
            .header("Accept", "application/dicom+json")
            .body(multipart(std::slice::from_ref(&b_into_a))),
        &tb,
    ));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(failure_codes(&r.json, "00081198"), vec![PROCESSING_FAILURE]);

    // A adds to their own study; A re-sending is fine.
    let a2_sop = uid(3);
    let (st, body) = stow_as(&s.url, Some(&ta), &[instance(&study_a, &series_a, &a2_sop)]);
    assert_eq!(st, 200, "A adds to own study: {body}");
    let (st, _) = stow_as(&s.url, Some(&ta), std::slice::from_ref(&a1));
    assert_eq!(st, 200, "A re-sends own instance");
    // Staff and admin may add to it.
    let (st, body) = stow_as(&s.url, Some(&ts), &[instance(&study_a, &series_a, &uid(3))]);
    assert_eq!(st, 200, "staff adds: {body}");
    let (st, body) = stow_as(
        &s.url,
        Some(&s.token),
        &[instance(&study_a, &uid(2), &uid(3))],
    );
    assert_eq!(st, 200, "admin adds: {body}");

    // A patient cannot take over a study staff uploaded either.
    let staff_study = uid(1);
    let (st, _) = stow_as(
        &s.url,
        Some(&ts),
        &[instance(&staff_study, &uid(2), &uid(3))],
    );
    assert_eq!(st, 200);
    let (st, body) = stow_as(
        &s.url,
        Some(&tb),
        &[instance(&staff_study, &uid(2), &uid(3))],
    );
    assert_eq!(st, 409, "B joins a staff study: {body}");
    assert_eq!(failure_codes(&body, "00081198"), vec![PROCESSING_FAILURE]);

    // B's own study.
    let b_sop = uid(3);
    let (st, _) = stow_as(&s.url, Some(&tb), &[instance(&uid(1), &uid(2), &b_sop)]);
    assert_eq!(st, 200);
    let sops = stored_sops(&s);
    assert!(sops.contains(&a1_sop) && sops.contains(&a2_sop) && sops.contains(&b_sop));
}

#[test]
fn deleting_ones_account_removes_it_and_the_studies_it_uploaded() {
    let s = Server::start(&[]);
    let email = "nina@example.org";
    let (ta, _, ca) = new_patient(&s.url, email);
    let (tb, _, _) = new_patient(&s.url, "omar@example.org");
    let study_a = uid(1);
    let series = uid(2);
    let a_sops = [uid(3), uid(3)];
    let parts: Vec<Vec<u8>> = a_sops
        .iter()
        .map(|p| instance(&study_a, &series, p))
        .collect();
    assert_eq!(stow_as(&s.url, Some(&ta), &parts).0, 200);
    let study_a2 = uid(1);
    let a3 = uid(3);
    assert_eq!(
        stow_as(&s.url, Some(&ta), &[instance(&study_a2, &uid(2), &a3)]).0,
        200
    );
    let b_sop = uid(3);
    assert_eq!(
        stow_as(&s.url, Some(&tb), &[instance(&uid(1), &uid(2), &b_sop)]).0,
        200
    );
    assert_eq!(s.stored_files().len(), 4);

    let del = |token: &str, pw: &str| {
        send(with_bearer(
            client()
                .delete(format!("{}/api/me", s.url))
                .json(&json!({"password": pw})),
            token,
        ))
    };
    let r = del(&ta, "Not-The-Right-One-31");
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(me_bearer(&s.url, &ta), 200, "nothing deleted");
    assert_eq!(s.stored_files().len(), 4);

    // Cookie-authenticated without our Origin: not acted on.
    let r = send(
        with_cookie(client().delete(format!("{}/api/me", s.url)), &ca)
            .json(&json!({"password": PATIENT_PASSWORD})),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(me_bearer(&s.url, &ta), 200);

    let r = del(&ta, PATIENT_PASSWORD);
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(me_bearer(&s.url, &ta), 401, "A's token stops working");
    assert_eq!(me_cookie(&s.url, &ca), 401);
    let sops = stored_sops(&s);
    for sop in a_sops.iter().chain([&a3]) {
        assert!(!sops.contains(sop), "{sop} of A is still on disk");
    }
    assert!(sops.contains(&b_sop), "B's study must stay");
    let users = send(s.client().get(format!("{}/api/users", s.url)));
    assert!(!users.text.contains(email), "{}", users.text);

    // The study is gone: its UID is free again (B may store it).
    let (st, body) = stow_as(&s.url, Some(&tb), &[instance(&study_a, &series, &uid(3))]);
    assert_eq!(st, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// 8. Throttling
// ---------------------------------------------------------------------------------------------

#[test]
fn repeated_failures_on_one_account_back_off_without_locking_out() {
    let s = Server::start(&[]);
    // Three free failures, then each failure blocks the account (1 s, 2 s, ...).
    for i in 1..=4 {
        let r = sign_in(&s.url, ADMIN_EMAIL, "Wrong-Password-Guess-00");
        assert_eq!(r.status, 401, "failure {i}: {}", r.text);
    }
    let r = sign_in(&s.url, ADMIN_EMAIL, "Wrong-Password-Guess-00");
    assert_eq!(r.status, 429, "{}", r.text);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // During the back-off even the right password waits.
    let r = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text);
    // No lock-out: after the delay the right password works.
    std::thread::sleep(Duration::from_millis(retry * 1000 + 200));
    let r = sign_in(&s.url, ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn unknown_accounts_back_off_like_known_ones() {
    let s = Server::start(&[]);
    for _ in 1..=4 {
        assert_eq!(
            sign_in(&s.url, "ghost@example.org", "Some-Guess-123").status,
            401
        );
    }
    let r = sign_in(&s.url, "ghost@example.org", "Some-Guess-123");
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.header("retry-after").is_some());
}

#[test]
fn a_burst_of_sign_ins_from_one_address_is_throttled() {
    let s = Server::start(&[]);
    // Different accounts each time, so only the per-IP bucket can refuse. A forged
    // X-Forwarded-For from an untrusted peer must not open new buckets.
    let mut first_429 = None;
    for i in 0..20 {
        let r = send(
            client()
                .post(format!("{}/api/auth/login", s.url))
                .header("X-Forwarded-For", format!("198.51.100.{i}"))
                .json(
                    &json!({"email": format!("user{i}@example.org"), "password": "Guess-Guess-42"}),
                ),
        );
        if r.status == 429 {
            assert!(r.header("retry-after").is_some(), "429 without Retry-After");
            first_429 = Some(i);
            break;
        }
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let n = first_429.expect("no 429 within 20 sign-ins from one address");
    assert!(n >= 8, "throttled too early, after {n}");
    // Register draws on the same bucket.
    let r = register(&s.url, "newcomer@example.org", PATIENT_PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text);
}

#[test]
fn a_trusted_proxy_gives_each_client_its_own_bucket() {
    let s = Server::start(&["--trusted-proxies", "127.0.0.1"]);
    let attempt = |ip: &str, i: usize| {
        send(
            client()
                .post(format!("{}/api/auth/login", s.url))
                .header("X-Forwarded-For", ip)
                .json(&json!({"email": format!("u{i}@example.org"), "password": "Guess-Guess-42"})),
        )
        .status
    };
    for i in 0..14 {
        assert_eq!(attempt(&format!("203.0.113.{i}"), i), 401, "client {i}");
    }
    let statuses: Vec<u16> = (0..14).map(|i| attempt("192.0.2.77", 100 + i)).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// Behind a reverse proxy that appends the address it saw (nginx `$proxy_add_x_forwarded_for`),
/// the leftmost X-Forwarded-For entry is whatever the client sent: the client address is the
/// rightmost entry not itself a trusted proxy. A client forging a new leftmost entry on every
/// request must still land in one bucket.
#[test]
fn a_client_behind_a_trusted_proxy_cannot_choose_its_bucket() {
    let s = Server::start(&["--trusted-proxies", "127.0.0.1"]);
    let mut statuses = Vec::new();
    for i in 0..14 {
        let r = send(
            client()
                .post(format!("{}/api/auth/login", s.url))
                .header("X-Forwarded-For", format!("10.{i}.0.1, 192.0.2.77"))
                .json(&json!({"email": format!("v{i}@example.org"), "password": "Guess-Guess-42"})),
        );
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&429),
        "a forged leftmost X-Forwarded-For opened a new bucket each time: {statuses:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Security headers
// ---------------------------------------------------------------------------------------------

#[test]
fn security_headers_on_every_response() {
    let s = Server::start(&[]);
    let u = &s.url;
    let cases: Vec<(&str, RequestBuilder, u16)> = vec![
        ("healthz", client().get(format!("{u}/healthz")), 200),
        ("api me", s.client().get(format!("{u}/api/me")), 200),
        ("api me anonymous", client().get(format!("{u}/api/me")), 401),
        ("api users", s.client().get(format!("{u}/api/users")), 200),
        (
            "api login bad json",
            client()
                .post(format!("{u}/api/auth/login"))
                .header("Content-Type", "application/json")
                .body("{"),
            400,
        ),
        (
            "api login wrong",
            client()
                .post(format!("{u}/api/auth/login"))
                .json(&json!({"email": "x@example.org", "password": "Guess-Guess-42"})),
            401,
        ),
        (
            "api unknown user",
            s.client().get(format!("{u}/api/users/nope")),
            404,
        ),
        (
            "api unknown route",
            s.client().get(format!("{u}/api/nowhere")),
            404,
        ),
        (
            "stow anonymous",
            client()
                .post(format!("{u}/dicom-web/studies"))
                .header("Content-Type", stow_content_type())
                .body(multipart(&[])),
            401,
        ),
        (
            "stow ok",
            s.client()
                .post(format!("{u}/dicom-web/studies"))
                .header("Content-Type", stow_content_type())
                .body(multipart(&[instance(&uid(1), &uid(2), &uid(3))])),
            200,
        ),
        (
            "stow bad type",
            s.client()
                .post(format!("{u}/dicom-web/studies"))
                .header("Content-Type", "text/plain")
                .body("x"),
            415,
        ),
        ("unknown path", client().get(format!("{u}/nowhere")), 404),
    ];
    for (what, rb, expect) in cases {
        let r = send(rb);
        assert_eq!(r.status, expect, "{what}: {}", r.text);
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
        if what.starts_with("api") {
            let cc = r.header("cache-control").unwrap_or_default();
            assert!(cc.contains("no-store"), "{what}: Cache-Control {cc:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Audit
// ---------------------------------------------------------------------------------------------

#[test]
fn sign_ins_and_stores_are_audited_without_secrets() {
    let mut s = Server::start(&[]);
    let wrong_pw = "Wrong-Audit-Password-13";
    assert_eq!(sign_in(&s.url, ADMIN_EMAIL, wrong_pw).status, 401);
    let (tp, patient_id, cookie) = new_patient(&s.url, "pam@example.org");
    let admin_id = user_id(&s, ADMIN_EMAIL);
    let study = uid(1);
    let (st, _) = stow_as(&s.url, Some(&tp), &[instance(&study, &uid(2), &uid(3))]);
    assert_eq!(st, 200);
    assert_eq!(s.stop(), Some(0), "clean stop");

    let data: PathBuf = s.data.clone();
    let store = Store::open(&data).expect("open store").0;
    let log = AuditLog::open(&store.db).unwrap();
    let report = log.verify().unwrap();
    assert!(report.ok(), "{report:?}");
    let records = log.query(&AuditFilter::default(), 100).unwrap();
    assert_eq!(report.records as usize, records.len());
    let logins: Vec<_> = records
        .iter()
        .filter(|r| r.event.event == "110114" && r.event.action == "login")
        .collect();
    let failure = logins
        .iter()
        .find(|r| r.event.outcome == lightbox::audit::Outcome::Failure)
        .expect("failed sign-in audited");
    assert_eq!(failure.event.user_id, None);
    assert_eq!(failure.event.ip.as_deref(), Some("127.0.0.1"));
    let admin_ok = logins
        .iter()
        .find(|r| {
            r.event.outcome == lightbox::audit::Outcome::Success
                && r.event.user_id.as_deref() == Some(admin_id.as_str())
        })
        .expect("admin sign-in audited");
    assert_eq!(admin_ok.event.role.as_deref(), Some("admin"));
    let patient_ok = logins
        .iter()
        .find(|r| {
            r.event.outcome == lightbox::audit::Outcome::Success
                && r.event.user_id.as_deref() == Some(patient_id.as_str())
        })
        .expect("patient sign-in audited");
    assert_eq!(patient_ok.event.role.as_deref(), Some("patient"));
    let stow = records
        .iter()
        .find(|r| r.event.event == "110107")
        .expect("STOW audited");
    assert_eq!(stow.event.user_id.as_deref(), Some(patient_id.as_str()));
    assert_eq!(stow.event.role.as_deref(), Some("patient"));
    assert_eq!(stow.event.studies, vec![study.clone()]);
    assert_eq!(stow.event.outcome, lightbox::audit::Outcome::Success);
    let by_study = log
        .query(
            &AuditFilter {
                study: Some(study.clone()),
                ..Default::default()
            },
            100,
        )
        .unwrap();
    assert_eq!(by_study.len(), 1);

    let all = serde_json::to_string(&records).unwrap();
    for secret in [
        ADMIN_PASSWORD,
        wrong_pw,
        PATIENT_PASSWORD,
        s.token.as_str(),
        tp.as_str(),
        cookie.as_str(),
    ] {
        assert!(!all.contains(secret), "an audit record holds a secret");
    }
    // Nor the token's signature alone.
    let sig = s.token.rsplit('.').next().unwrap();
    assert!(!all.contains(sig));
}
