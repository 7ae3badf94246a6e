//! Facility accounts, API tokens, grants and claims, "my studies" and the audit API (issue 3),
//! against the real server over HTTP (and, for expiry and tamper detection, its data directory).
//!
//! Sign-in and sign-up share a per-IP bucket (10 attempts, refilled at 30/min): every test keeps
//! its register + login calls on one server below that, counting the harness's admin sign-in.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "Tulip-Harbour-Lantern-93";
const FACILITY_PASSWORD: &str = "Granite-Meadow-Falcon-58";
const PROCESSING_FAILURE: u64 = 0x0110;
const DAY_MS: u64 = 86_400_000;
/// Slack for "about now" comparisons of server timestamps.
const SLACK_MS: u64 = 120_000;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// HTTP Basic with `password` (any user name).
fn basic(password: &str) -> String {
    let raw = format!("anything:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A JSON API call; `auth` is the whole `Authorization` value.
fn api(method: &str, url: &str, auth: Option<&str>, body: Option<Value>) -> Resp {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = client().request(m, url);
    if let Some(a) = auth {
        rb = rb.header("Authorization", a);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    send(rb)
}

fn get(url: &str, token: &str) -> Resp {
    api("GET", url, Some(&bearer(token)), None)
}

fn post(url: &str, token: &str, body: Value) -> Resp {
    api("POST", url, Some(&bearer(token)), Some(body))
}

fn delete(url: &str, token: &str) -> Resp {
    api("DELETE", url, Some(&bearer(token)), None)
}

/// `GET /api/me` with only the session cookie.
fn me_cookie(url: &str, cookie: &str) -> u16 {
    send(
        client()
            .get(format!("{url}/api/me"))
            .header("Cookie", format!("lightbox_session={cookie}")),
    )
    .status
}

fn sign_in(url: &str, email: &str, password: &str) -> Resp {
    api(
        "POST",
        &format!("{url}/api/auth/login"),
        None,
        Some(json!({"email": email, "password": password})),
    )
}

/// Register and sign in a patient: (bearer token, user id). Two credential calls.
fn new_patient(url: &str, email: &str) -> (String, String) {
    let r = api(
        "POST",
        &format!("{url}/api/auth/register"),
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(r.status, 201, "register {email}: {}", r.text);
    let r = sign_in(url, email, PASSWORD);
    assert_eq!(r.status, 200, "sign in {email}: {}", r.text);
    (
        r.str("token"),
        r.json["user"]["id"].as_str().unwrap().to_owned(),
    )
}

/// Register a user, make them staff (as the admin), sign them in: (bearer token, user id).
/// Two credential calls.
fn new_staff(s: &Server, email: &str) -> (String, String) {
    let r = api(
        "POST",
        &format!("{}/api/auth/register", s.url),
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(r.status, 201, "register {email}: {}", r.text);
    let users = get(&format!("{}/api/users", s.url), &s.token);
    assert_eq!(users.status, 200, "{}", users.text);
    let id = users
        .array()
        .iter()
        .find(|u| u["email"] == email)
        .unwrap_or_else(|| panic!("{email} not in {}", users.text))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api(
        "PATCH",
        &format!("{}/api/users/{id}", s.url),
        Some(&bearer(&s.token)),
        Some(json!({"role": "staff"})),
    );
    assert_eq!(r.status, 200, "make {email} staff: {}", r.text);
    let r = sign_in(&s.url, email, PASSWORD);
    assert_eq!(r.status, 200, "sign in {email}: {}", r.text);
    assert_eq!(r.json["user"]["role"], "staff");
    (r.str("token"), id)
}

/// Create a facility account as `staff`: (user id, temporary password).
fn new_facility(s: &Server, staff: &str, email: &str) -> (String, String) {
    let r = post(
        &format!("{}/api/facilities", s.url),
        staff,
        json!({"email": email, "organisation": "St. Elsewhere Clinic", "expires_in_days": 30}),
    );
    assert_eq!(r.status, 201, "create facility {email}: {}", r.text);
    (
        r.json["user"]["id"].as_str().unwrap().to_owned(),
        r.str("temporary_password"),
    )
}

/// Sign a facility in with its temporary password and set its own: (bearer token, session
/// cookie). One credential call.
fn activate_facility(url: &str, email: &str, temporary: &str) -> (String, String) {
    let r = sign_in(url, email, temporary);
    assert_eq!(r.status, 200, "facility sign-in: {}", r.text);
    assert_eq!(r.json["user"]["role"], "facility");
    assert_eq!(r.json["user"]["must_change_password"], true);
    let r = post(
        &format!("{url}/api/auth/password"),
        &r.str("token"),
        json!({"current_password": temporary, "new_password": FACILITY_PASSWORD}),
    );
    assert_eq!(r.status, 200, "facility password change: {}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], false);
    (r.str("token"), r.session_cookie())
}

/// Create an API token for `owner` as `staff`.
fn create_token(url: &str, staff: &str, owner: &str, days: Option<u64>) -> Resp {
    let mut body = json!({"label": "PACS gateway"});
    if let Some(d) = days {
        body["expires_in_days"] = json!(d);
    }
    post(&format!("{url}/api/users/{owner}/tokens"), staff, body)
}

/// STOW-RS to `/dicom-web/studies[/{study}]` with the given `Authorization` value (or none).
fn stow_as(url: &str, auth: Option<&str>, study: Option<&str>, parts: &[Vec<u8>]) -> Resp {
    let target = match study {
        Some(s) => format!("{url}/dicom-web/studies/{s}"),
        None => format!("{url}/dicom-web/studies"),
    };
    let mut rb = client()
        .post(target)
        .header("Content-Type", stow_content_type())
        .header("Accept", "application/dicom+json")
        .body(multipart(parts));
    if let Some(a) = auth {
        rb = rb.header("Authorization", a);
    }
    send(rb)
}

/// A fresh UID under a test root, unique in this process.
fn uid(kind: u32) -> String {
    static N: AtomicU32 = AtomicU32::new(1);
    format!(
        "1.2.826.0.1.3680043.10.1435.8.{kind}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn instance(study: &str, series: &str, sop: &str) -> Vec<u8> {
    make_instance(study, series, sop, "PAT-ACCESS", 256)
}

/// One new study with one instance: (study UID, instance).
fn one_instance_study() -> (String, Vec<u8>) {
    let study = uid(1);
    let part = instance(&study, &uid(2), &uid(3));
    (study, part)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn assert_about(actual: u64, expected: u64, what: &str) {
    assert!(
        actual.abs_diff(expected) <= SLACK_MS,
        "{what}: {actual} is not about {expected} (off by {} ms)",
        actual.abs_diff(expected)
    );
}

/// `GET /api/studies` as `token`: the study UIDs listed, with the whole response.
fn my_studies(url: &str, token: &str) -> (Vec<String>, Resp) {
    let r = get(&format!("{url}/api/studies"), token);
    assert_eq!(r.status, 200, "my studies: {}", r.text);
    let uids = r
        .array()
        .iter()
        .map(|s| s["study"].as_str().unwrap().to_owned())
        .collect();
    (uids, r)
}

/// `GET /api/audit` as `token` with a raw query string.
fn audit(url: &str, token: &str, query: &str) -> Resp {
    get(&format!("{url}/api/audit?{query}"), token)
}

/// Wait until an audit query as the admin returns a record for which `f` holds.
fn wait_for_audit(s: &Server, query: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut found = Value::Null;
    let ok = eventually(Duration::from_secs(10), || {
        let r = audit(&s.url, &s.token, query);
        assert_eq!(r.status, 200, "audit {query}: {}", r.text);
        match r.array().iter().find(|rec| f(rec)) {
            Some(rec) => {
                found = rec.clone();
                true
            }
            None => false,
        }
    });
    assert!(ok, "no matching audit record for ?{query}");
    found
}

// ---------------------------------------------------------------------------------------------
// 1. Facility accounts
// ---------------------------------------------------------------------------------------------

#[test]
fn staff_and_admins_create_facility_accounts_with_an_expiry() {
    let s = Server::start(&[]);
    let u = &s.url;
    let (staff, _) = new_staff(&s, "stella@hospital.example");
    let (patient, _) = new_patient(u, "pat@example.org");

    // Staff, 30 days.
    let before = now_ms();
    let r = post(
        &format!("{u}/api/facilities"),
        &staff,
        json!({"email": "Radiology@Clinic.Example", "organisation": "Clinic One", "expires_in_days": 30}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let temporary = r.str("temporary_password");
    assert!(temporary.len() >= 12, "temporary password {temporary:?}");
    let fac = &r.json["user"];
    let fac_id = fac["id"].as_str().unwrap().to_owned();
    assert_eq!(fac["role"], "facility");
    assert_eq!(fac["email"], "radiology@clinic.example");
    assert_eq!(fac["organisation"], "Clinic One");
    assert_eq!(fac["must_change_password"], true);
    let expires = fac["expires_at_ms"].as_u64().expect("expires_at_ms");
    assert_about(expires, before + 30 * DAY_MS, "30-day facility");

    // Admin, default lifetime: 14 days.
    let r = post(
        &format!("{u}/api/facilities"),
        &s.token,
        json!({"email": "imaging@other.example", "organisation": "Other Imaging"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let default_id = r.json["user"]["id"].as_str().unwrap().to_owned();
    assert_about(
        r.json["user"]["expires_at_ms"].as_u64().unwrap(),
        now_ms() + 14 * DAY_MS,
        "default facility lifetime",
    );

    // Out-of-range lifetimes, missing organisation, unknown fields.
    for body in [
        json!({"email": "a@b.example", "organisation": "X", "expires_in_days": 0}),
        json!({"email": "a@b.example", "organisation": "X", "expires_in_days": 400}),
        json!({"email": "a@b.example", "organisation": " ", "expires_in_days": 5}),
        json!({"email": "not-an-email", "organisation": "X"}),
        json!({"email": "a@b.example", "organisation": "X", "role": "admin"}),
    ] {
        let r = post(&format!("{u}/api/facilities"), &staff, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    // The same email twice.
    let r = post(
        &format!("{u}/api/facilities"),
        &staff,
        json!({"email": "radiology@clinic.example", "organisation": "Again"}),
    );
    assert_eq!(r.status, 409, "{}", r.text);

    // Patients and anonymous callers may not.
    let r = post(
        &format!("{u}/api/facilities"),
        &patient,
        json!({"email": "p@clinic.example", "organisation": "Mine"}),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api(
        "POST",
        &format!("{u}/api/facilities"),
        None,
        Some(json!({"email": "p@clinic.example", "organisation": "Mine"})),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(get(&format!("{u}/api/facilities"), &patient).status, 403);

    // Listed for staff, without any password material.
    let r = get(&format!("{u}/api/facilities"), &staff);
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: Vec<&str> = r.array().iter().filter_map(|f| f["id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "{}", r.text);
    assert!(ids.contains(&fac_id.as_str()) && ids.contains(&default_id.as_str()));
    assert!(r.array().iter().all(|f| f["role"] == "facility"));
    assert!(!r.text.contains(&temporary), "temporary password listed");
    assert!(!r.text.contains("argon2"), "password hash listed");

    // The facility signs in with the temporary password: nothing but a change is allowed.
    let r = sign_in(u, "radiology@clinic.example", &temporary);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], true);
    let first = r.str("token");
    let r = post(
        &format!("{u}/api/auth/password"),
        &first,
        json!({"current_password": temporary, "new_password": FACILITY_PASSWORD}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let fac_token = r.str("token");
    let me = get(&format!("{u}/api/me"), &fac_token);
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["role"], "facility");
    assert_eq!(me.json["must_change_password"], false);
    assert_eq!(me.json["expires_at_ms"].as_u64(), Some(expires));
    let (studies, _) = my_studies(u, &fac_token);
    assert!(studies.is_empty());
    // A facility does not manage facilities.
    assert_eq!(get(&format!("{u}/api/facilities"), &fac_token).status, 403);
}

#[test]
fn extending_a_facility_moves_its_expiry_and_is_audited() {
    let s = Server::start(&[]);
    let u = &s.url;
    let (staff, staff_id) = new_staff(&s, "stan@hospital.example");
    let (patient, _) = new_patient(u, "pete@example.org");
    let r = post(
        &format!("{u}/api/facilities"),
        &staff,
        json!({"email": "ext@clinic.example", "organisation": "Ext", "expires_in_days": 3}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["user"]["id"].as_str().unwrap().to_owned();
    let old = r.json["user"]["expires_at_ms"].as_u64().unwrap();

    let r = post(
        &format!("{u}/api/facilities/{id}/extend"),
        &staff,
        json!({"days": 10}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.json["expires_at_ms"].as_u64().unwrap();
    assert_eq!(
        new,
        old + 10 * DAY_MS,
        "extension counts from the old expiry"
    );
    let listed = get(&format!("{u}/api/facilities"), &staff);
    let f = listed
        .array()
        .iter()
        .find(|f| f["id"] == id.as_str())
        .unwrap();
    assert_eq!(f["expires_at_ms"].as_u64(), Some(new), "stored");

    for (body, expect) in [
        (json!({"days": 0}), 400),
        (json!({"days": 400}), 400),
        (json!({}), 400),
        (json!({"days": 1, "until": 5}), 400),
    ] {
        let r = post(
            &format!("{u}/api/facilities/{id}/extend"),
            &staff,
            body.clone(),
        );
        assert_eq!(r.status, expect, "{body}: {}", r.text);
    }
    let r = post(
        &format!("{u}/api/facilities/{id}/extend"),
        &patient,
        json!({"days": 10}),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    // Only facility accounts are extended; unknown ids are 404.
    let r = post(
        &format!("{u}/api/facilities/{staff_id}/extend"),
        &s.token,
        json!({"days": 10}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let r = post(
        &format!("{u}/api/facilities/0123456789abcdef0123456789abcdef/extend"),
        &s.token,
        json!({"days": 10}),
    );
    assert_eq!(r.status, 404, "{}", r.text);

    // The extension is in the audit trail, by the staff member, naming the account.
    let rec = wait_for_audit(&s, "event=110113", |r| {
        r["event"]["action"] == "extend-facility"
    });
    assert_eq!(rec["event"]["user_id"], staff_id.as_str());
    assert_eq!(rec["event"]["role"], "staff");
    assert_eq!(rec["event"]["outcome"], "success");
    assert_eq!(rec["event"]["detail"]["target"], id.as_str());
    assert_eq!(rec["event"]["detail"]["expires_at_ms"].as_u64(), Some(new));
    // Refused attempts did not change anything.
    let listed = get(&format!("{u}/api/facilities"), &staff);
    let f = listed
        .array()
        .iter()
        .find(|f| f["id"] == id.as_str())
        .unwrap();
    assert_eq!(f["expires_at_ms"].as_u64(), Some(new));
}

#[test]
fn disabling_a_facility_ends_its_sessions_and_tokens_at_once() {
    let s = Server::start(&[]);
    let u = &s.url;
    let (id, temporary) = new_facility(&s, &s.token, "off@clinic.example");
    let (fac, cookie) = activate_facility(u, "off@clinic.example", &temporary);
    let r = create_token(u, &s.token, &id, Some(30));
    assert_eq!(r.status, 201, "{}", r.text);
    let api_token = r.str("token");

    // Everything works before.
    assert_eq!(get(&format!("{u}/api/me"), &fac).status, 200);
    assert_eq!(me_cookie(u, &cookie), 200);
    let (_, part) = one_instance_study();
    let r = stow_as(u, Some(&bearer(&api_token)), None, &[part]);
    assert_eq!(r.status, 200, "{}", r.text);

    let r = post(
        &format!("{u}/api/facilities/{id}/disable"),
        &s.token,
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["disabled"], true);

    // At once: the bearer token, the cookie, the API token (both ways), a new sign-in.
    let r = get(&format!("{u}/api/me"), &fac);
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"lightbox\"")
    );
    assert_eq!(get(&format!("{u}/api/studies"), &fac).status, 401);
    assert_eq!(me_cookie(u, &cookie), 401);
    let (_, part) = one_instance_study();
    let r = stow_as(
        u,
        Some(&bearer(&api_token)),
        None,
        std::slice::from_ref(&part),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let r = stow_as(
        u,
        Some(&basic(&api_token)),
        None,
        std::slice::from_ref(&part),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let r = stow_as(u, Some(&bearer(&fac)), None, std::slice::from_ref(&part));
    assert_eq!(r.status, 401, "{}", r.text);
    let r = sign_in(u, "off@clinic.example", FACILITY_PASSWORD);
    assert_eq!(r.status, 401, "{}", r.text);
    // Its tokens are gone, and a disabled facility cannot be given new shares.
    let r = get(&format!("{u}/api/users/{id}/tokens"), &s.token);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.array().is_empty(), "{}", r.text);
    let (study, part) = one_instance_study();
    assert_eq!(
        stow_as(u, Some(&bearer(&s.token)), None, &[part]).status,
        200
    );
    let r = post(
        &format!("{u}/api/studies/{study}/grants"),
        &s.token,
        json!({"account_id": id}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let rec = wait_for_audit(&s, "event=110113", |r| {
        r["event"]["action"] == "disable-facility"
    });
    assert_eq!(rec["event"]["detail"]["target"], id.as_str());
}

#[test]
fn an_expired_facility_is_refused_everywhere() {
    let mut s = Server::start(&[]);
    let u = s.url.clone();
    let email = "late@clinic.example";
    let (id, temporary) = new_facility(&s, &s.token, email);
    let (fac, cookie) = activate_facility(&u, email, &temporary);
    let r = create_token(&u, &s.token, &id, Some(30));
    assert_eq!(r.status, 201, "{}", r.text);
    let api_token = r.str("token");
    // A study shared with it, and one it uploaded.
    let (shared, part) = one_instance_study();
    assert_eq!(
        stow_as(&u, Some(&bearer(&s.token)), None, &[part]).status,
        200
    );
    let r = post(
        &format!("{u}/api/studies/{shared}/grants"),
        &s.token,
        json!({"account_id": id}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let (_, part) = one_instance_study();
    let r = stow_as(&u, Some(&basic(&api_token)), None, &[part]);
    assert_eq!(r.status, 200, "{}", r.text);
    let (studies, _) = my_studies(&u, &fac);
    assert_eq!(studies.len(), 2);
    assert_eq!(s.stop(), Some(0), "clean stop");

    // Make the account's expiry pass (a day cannot be waited for).
    {
        let (store, _) = lightbox::store::Store::open(&s.data).expect("open store");
        let accounts = lightbox::auth::Accounts::open(&store.db).unwrap();
        let fid = lightbox::auth::Id::parse(&id).unwrap();
        let mut user = accounts.user(&fid).unwrap().expect("facility stored");
        user.expires_ms = Some(now_ms() - 1000);
        accounts.update(&user).unwrap();
        accounts.flush().unwrap();
    }
    let s2 = Server::start_on(&s.data, &[]);
    let u = s2.url.clone();

    let (_, part) = one_instance_study();
    for (what, auth) in [
        ("API token as Bearer", bearer(&api_token)),
        ("API token as Basic", basic(&api_token)),
        ("session bearer", bearer(&fac)),
    ] {
        let r = stow_as(&u, Some(&auth), None, std::slice::from_ref(&part));
        assert_eq!(r.status, 401, "STOW with {what}: {}", r.text);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"lightbox\""),
            "{what}"
        );
    }
    for path in ["/api/me", "/api/studies"] {
        let r = get(&format!("{u}{path}"), &fac);
        assert_eq!(r.status, 401, "{path} with the session bearer: {}", r.text);
    }
    assert_eq!(me_cookie(&u, &cookie), 401, "session cookie");
    let r = post(
        &format!("{u}/api/grants/claim"),
        &fac,
        json!({"code": "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA-A"}),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let r = sign_in(&u, email, FACILITY_PASSWORD);
    assert_eq!(r.status, 401, "sign-in of an expired account: {}", r.text);
    // Nothing of the refused STOWs was stored.
    assert_eq!(s2.stored_files().len(), 2);
    // Staff still see it, expired; an extension revives sign-in (not the old tokens).
    let r = post(
        &format!("{u}/api/facilities/{id}/extend"),
        &s2.token,
        json!({"days": 7}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_about(
        r.json["expires_at_ms"].as_u64().unwrap(),
        now_ms() + 7 * DAY_MS,
        "extension of an expired account counts from now",
    );
    let r = stow_as(&u, Some(&bearer(&api_token)), None, &[part]);
    assert_eq!(r.status, 401, "a token that died at expiry stays dead");
    let r = sign_in(&u, email, FACILITY_PASSWORD);
    assert_eq!(r.status, 200, "sign-in after the extension: {}", r.text);
}

// ---------------------------------------------------------------------------------------------
// 2. API tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn api_tokens_are_shown_once_and_valid_for_dicomweb_only() {
    let s = Server::start(&[]);
    let u = &s.url;
    let (staff, staff_id) = new_staff(&s, "sam@hospital.example");
    let (fac_id, temporary) = new_facility(&s, &staff, "pacs@clinic.example");
    let (fac_session, _) = activate_facility(u, "pacs@clinic.example", &temporary);

    let before = now_ms();
    let r = create_token(u, &staff, &fac_id, Some(30));
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.str("token");
    let token_id = r.str("id");
    assert_eq!(r.json["user_id"], fac_id.as_str());
    assert_eq!(r.json["label"], "PACS gateway");
    assert_about(
        r.json["expires_at_ms"].as_u64().unwrap(),
        before + 30 * DAY_MS,
        "token expiry",
    );
    let rest = token.strip_prefix("lbx_").expect("lbx_ prefix");
    let (id_part, secret) = rest.split_once('_').expect("lbx_<id>_<secret>");
    assert_eq!(id_part, token_id);
    assert!(
        secret.len() >= 32,
        "secret of at least 128 bits: {secret:?}"
    );

    // Listed without the secret.
    let r = get(&format!("{u}/api/users/{fac_id}/tokens"), &staff);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.array().len(), 1, "{}", r.text);
    assert_eq!(r.array()[0]["id"], token_id.as_str());
    assert_eq!(r.array()[0]["label"], "PACS gateway");
    assert!(r.array()[0].get("token").is_none(), "{}", r.text);
    assert!(!r.text.contains(secret), "the secret is listed: {}", r.text);
    assert!(r.array()[0]["last_used_at_ms"].is_null());

    // STOW as Bearer and as the password of Basic.
    let (study_a, part) = one_instance_study();
    let r = stow_as(u, Some(&bearer(&token)), None, &[part]);
    assert_eq!(r.status, 200, "Bearer lbx_: {}", r.text);
    let (study_b, part) = one_instance_study();
    let r = stow_as(u, Some(&basic(&token)), None, &[part]);
    assert_eq!(r.status, 200, "Basic with lbx_ password: {}", r.text);
    let (mine, listing) = my_studies(u, &fac_session);
    assert_eq!(mine.len(), 2, "{}", listing.text);
    assert!(mine.contains(&study_a) && mine.contains(&study_b));
    assert!(listing.array().iter().all(|s| s["source"] == "uploaded"));
    let r = get(&format!("{u}/api/users/{fac_id}/tokens"), &staff);
    let used = r.array()[0]["last_used_at_ms"].as_u64().expect("last used");
    assert_about(used, now_ms(), "last used");

    // Never for /api, either way.
    for auth in [bearer(&token), basic(&token)] {
        for (method, path) in [
            ("GET", "/api/me"),
            ("GET", "/api/studies"),
            ("GET", "/api/audit"),
        ] {
            let r = api(method, &format!("{u}{path}"), Some(&auth), None);
            assert_eq!(r.status, 401, "{method} {path} with {auth}: {}", r.text);
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"lightbox\"")
            );
        }
    }
    // A staff member's own token is refused on /api too.
    let r = create_token(u, &staff, &staff_id, Some(5));
    assert_eq!(r.status, 201, "{}", r.text);
    let staff_api_token = r.str("token");
    let r = get(&format!("{u}/api/users/{fac_id}/tokens"), &staff_api_token);
    assert_eq!(r.status, 401, "{}", r.text);

    // One character of the secret changed; the id of another token; junk.
    let last = token.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &token[..token.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let first_secret_char = token.len() - secret.len();
    let mut flipped_first = token.clone().into_bytes();
    flipped_first[first_secret_char] = if flipped_first[first_secret_char] == b'a' {
        b'b'
    } else {
        b'a'
    };
    let flipped_first = String::from_utf8(flipped_first).unwrap();
    let other_id = format!("lbx_{}_{secret}", "0".repeat(32));
    let staff_secret = staff_api_token.rsplit('_').next().unwrap();
    let mixed = format!("lbx_{token_id}_{staff_secret}");
    for (what, bad) in [
        ("last character changed", flipped.as_str()),
        ("first secret character changed", flipped_first.as_str()),
        ("unknown id", other_id.as_str()),
        ("another token's secret", mixed.as_str()),
        ("no secret", &token[..token.len() - secret.len() - 1]),
        ("junk", "lbx_zzz"),
    ] {
        let (_, part) = one_instance_study();
        for auth in [bearer(bad), basic(bad)] {
            let r = stow_as(u, Some(&auth), None, std::slice::from_ref(&part));
            assert_eq!(r.status, 401, "{what} ({auth}): {}", r.text);
        }
    }

    // Revocation takes effect on the next request.
    let r = delete(&format!("{u}/api/tokens/{token_id}"), &staff);
    assert_eq!(r.status, 204, "{}", r.text);
    let (_, part) = one_instance_study();
    let r = stow_as(u, Some(&bearer(&token)), None, std::slice::from_ref(&part));
    assert_eq!(r.status, 401, "revoked token: {}", r.text);
    let r = stow_as(u, Some(&basic(&token)), None, std::slice::from_ref(&part));
    assert_eq!(r.status, 401, "revoked token as Basic: {}", r.text);
    let r = get(&format!("{u}/api/users/{fac_id}/tokens"), &staff);
    assert!(r.array().is_empty(), "{}", r.text);
    assert_eq!(
        delete(&format!("{u}/api/tokens/{token_id}"), &staff).status,
        404
    );
    assert_eq!(
        delete(&format!("{u}/api/tokens/not-a-token"), &staff).status,
        404
    );
    // The token events are audited, without the secret.
    let rec = wait_for_audit(&s, "event=110113", |r| {
        r["event"]["action"] == "revoke-token"
    });
    assert_eq!(rec["event"]["detail"]["token_id"], token_id.as_str());
    let all = audit(u, &s.token, "limit=1000");
    assert!(all.text.contains("create-token"), "token creation audited");
    assert!(!all.text.contains(secret), "a secret in the audit trail");
}

#[test]
fn only_staff_make_tokens_for_facilities_and_themselves() {
    let s = Server::start(&[]);
    let u = &s.url;
    let (staff, staff_id) = new_staff(&s, "sue@hospital.example");
    let (_, other_staff_id) = new_staff(&s, "sid@hospital.example");
    let (patient, patient_id) = new_patient(u, "paula@example.org");
    let (fac_id, temporary) = new_facility(&s, &staff, "fac@clinic.example");
    let (fac, _) = activate_facility(u, "fac@clinic.example", &temporary);
    let admin_id = get(&format!("{u}/api/me"), &s.token).str("id");

    // Their own: at most 90 days; 14 by default.
    let r = create_token(u, &staff, &staff_id, Some(90));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_about(
        r.json["expires_at_ms"].as_u64().unwrap(),
        now_ms() + 90 * DAY_MS,
        "90-day staff token",
    );
    let own = r.str("token");
    for days in [91, 0, 365] {
        let r = create_token(u, &staff, &staff_id, Some(days));
        assert_eq!(r.status, 400, "{days} days: {}", r.text);
    }
    let r = create_token(u, &staff, &staff_id, None);
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["expires_at_ms"].as_u64().unwrap() <= now_ms() + 14 * DAY_MS + SLACK_MS);
    // A staff token stores anywhere (staff scope).
    let (_, part) = one_instance_study();
    let r = stow_as(u, Some(&bearer(&own)), None, &[part]);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = get(&format!("{u}/api/users/{staff_id}/tokens"), &staff);
    assert_eq!(r.status, 200);
    assert_eq!(r.array().len(), 2, "{}", r.text);

    // Not for another staff member, an admin or a patient; nor may they list theirs.
    for (who, id) in [
        ("other staff", &other_staff_id),
        ("admin", &admin_id),
        ("patient", &patient_id),
    ] {
        let r = create_token(u, &staff, id, Some(5));
        assert_eq!(r.status, 403, "token for {who}: {}", r.text);
        let r = get(&format!("{u}/api/users/{id}/tokens"), &staff);
        assert_eq!(r.status, 403, "tokens of {who}: {}", r.text);
    }
    // ... nor revoke another staff member's token.
    let r = create_token(u, &s.token, &admin_id, Some(5));
    assert_eq!(r.status, 201, "admin's own token: {}", r.text);
    let admin_token_id = r.str("id");
    let r = delete(&format!("{u}/api/tokens/{admin_token_id}"), &staff);
    assert_eq!(r.status, 403, "{}", r.text);
    // A facility token may be longer than 90 days, never past the account's own expiry.
    let r = create_token(u, &staff, &fac_id, Some(200));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_about(
        r.json["expires_at_ms"].as_u64().unwrap(),
        now_ms() + 30 * DAY_MS,
        "facility token capped at the account's expiry",
    );
    // Unknown account.
    let r = create_token(u, &staff, "0123456789abcdef0123456789abcdef", Some(5));
    assert_eq!(r.status, 404, "{}", r.text);

    // Patients and facilities make no tokens at all.
    for (who, t, id) in [
        ("patient for self", &patient, &patient_id),
        ("patient for facility", &patient, &fac_id),
        ("facility for self", &fac, &fac_id),
    ] {
        let r = create_token(u, t, id, Some(5));
        assert_eq!(r.status, 403, "{who}: {}", r.text);
        let r = get(&format!("{u}/api/users/{id}/tokens"), t);
        assert_eq!(r.status, 403, "{who} lists: {}", r.text);
    }
    let r = delete(&format!("{u}/api/tokens/{admin_token_id}"), &patient);
    assert_eq!(r.status, 403, "{}", r.text);
    // Anonymous.
    let r = api(
        "POST",
        &format!("{u}/api/users/{fac_id}/tokens"),
        None,
        Some(json!({"label": "x"})),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    // Label rules and unknown fields.
    for body in [
        json!({"label": ""}),
        json!({"label": "x".repeat(101)}),
        json!({"label": "x", "user_id": staff_id}),
    ] {
        let r = post(&format!("{u}/api/users/{fac_id}/tokens"), &staff, body);
        assert_eq!(r.status, 400, "{}", r.text);
    }
}

#[test]
fn a_facility_stores_into_its_own_studies_only() {
    let s = Server::start(&[]);
    let u = &s.url;
    let (fac_id, temporary) = new_facility(&s, &s.token, "inbox@clinic.example");
    let (fac, _) = activate_facility(u, "inbox@clinic.example", &temporary);
    let r = create_token(u, &s.token, &fac_id, Some(30));
    assert_eq!(r.status, 201, "{}", r.text);
    let token = bearer(&r.str("token"));

    // The hospital's study, also shared with the facility.
    let hosp_study = uid(1);
    let hosp_series = uid(2);
    let hosp_sop = uid(3);
    let hosp_part = instance(&hosp_study, &hosp_series, &hosp_sop);
    let r = stow_as(
        u,
        Some(&bearer(&s.token)),
        None,
        std::slice::from_ref(&hosp_part),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(
        &format!("{u}/api/studies/{hosp_study}/grants"),
        &s.token,
        json!({"account_id": fac_id}),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    // A new study becomes the facility's.
    let own_study = uid(1);
    let own_series = uid(2);
    let r = stow_as(
        u,
        Some(&token),
        None,
        &[instance(&own_study, &own_series, &uid(3))],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = stow_as(
        u,
        Some(&token),
        Some(&own_study),
        &[instance(&own_study, &own_series, &uid(3))],
    );
    assert_eq!(r.status, 200, "adds to its own study: {}", r.text);
    let (_, listing) = my_studies(u, &fac);
    let own = listing
        .array()
        .iter()
        .find(|s| s["study"] == own_study.as_str())
        .expect("own study listed");
    assert_eq!(own["source"], "uploaded");
    assert_eq!(own["instances"], 2);
    let shared = listing
        .array()
        .iter()
        .find(|s| s["study"] == hosp_study.as_str())
        .expect("shared study listed");
    assert_eq!(shared["source"], "shared");
    let files = s.stored_files().len();

    // Not into a study it does not own (shared with it or not), by body or by URL.
    let (other_study, other_part) = one_instance_study();
    let r = stow_as(u, Some(&bearer(&s.token)), None, &[other_part]);
    assert_eq!(r.status, 200, "{}", r.text);
    for (what, target, part) in [
        (
            "into the shared study",
            None,
            instance(&hosp_study, &hosp_series, &uid(3)),
        ),
        (
            "into the shared study by URL",
            Some(hosp_study.as_str()),
            instance(&hosp_study, &uid(2), &uid(3)),
        ),
        (
            "into an unshared study",
            None,
            instance(&other_study, &uid(2), &uid(3)),
        ),
        (
            "re-sending the hospital's instance",
            None,
            hosp_part.clone(),
        ),
        (
            "the hospital's SOP Instance UID in its own study",
            None,
            instance(&own_study, &own_series, &hosp_sop),
        ),
    ] {
        let r = stow_as(u, Some(&token), target, &[part]);
        assert_eq!(r.status, 409, "{what}: {}", r.text);
        assert_eq!(
            failure_codes(&r.json, "00081198"),
            vec![PROCESSING_FAILURE],
            "{what}: {}",
            r.text
        );
        assert!(referenced(&r.json).is_empty(), "{what}");
    }
    assert_eq!(s.stored_files().len(), files + 1, "nothing stored");
    let (mine, _) = my_studies(u, &fac);
    assert!(!mine.contains(&other_study));
}

// ---------------------------------------------------------------------------------------------
// 3. Grants and claims
// ---------------------------------------------------------------------------------------------

/// Staff STOW a study of three CT instances in two series.
fn hospital_study(s: &Server) -> String {
    let study = uid(1);
    let (se1, se2) = (uid(2), uid(2));
    let parts = vec![
        instance(&study, &se1, &uid(3)),
        instance(&study, &se1, &uid(3)),
        instance(&study, &se2, &uid(3)),
    ];
    let r = stow_as(&s.url, Some(&bearer(&s.token)), None, &parts);
    assert_eq!(r.status, 200, "{}", r.text);
    study
}

fn assert_claim_code(code: &str) {
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 6, "{code}");
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        vec![5, 5, 5, 5, 5, 1],
        "{code}"
    );
    assert!(
        groups.concat().chars().all(|c| CROCKFORD.contains(c)),
        "{code}"
    );
}

fn claim(url: &str, token: &str, code: &str) -> Resp {
    post(
        &format!("{url}/api/grants/claim"),
        token,
        json!({"code": code}),
    )
}

#[test]
fn delivery_to_a_patient_needs_the_claim_code() {
    let s = Server::start(&[]);
    let u = &s.url;
    let study = hospital_study(&s);
    let grants_url = format!("{u}/api/studies/{study}/grants");

    let r = post(&grants_url, &s.token, json!({"email": "Pat@X.org"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.str("claim_code");
    let grant_id = r.str("grant_id");
    assert_claim_code(&code);
    assert_eq!(grant_id.len(), 32, "{grant_id}");

    // A study that is not stored; malformed bodies.
    let r = post(
        &format!("{u}/api/studies/{}/grants", uid(1)),
        &s.token,
        json!({"email": "pat@x.org"}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    for body in [
        json!({"email": "pat@x.org", "account_id": "0123456789abcdef0123456789abcdef"}),
        json!({}),
        json!({"email": "not an email"}),
        json!({"email": "pat@x.org", "code": "MINE"}),
    ] {
        let r = post(&grants_url, &s.token, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }

    // The patient with that email sees nothing before claiming.
    let (pat, pat_id) = new_patient(u, "pat@x.org");
    let (other, _) = new_patient(u, "other@x.org");
    let (mine, _) = my_studies(u, &pat);
    assert!(mine.is_empty(), "email matching alone granted {mine:?}");
    // Patients may not deliver or list grants.
    assert_eq!(
        post(&grants_url, &pat, json!({"email": "pat@x.org"})).status,
        403
    );
    assert_eq!(get(&grants_url, &pat).status, 403);

    // A wrong code.
    let wrong = claim(u, &pat, "ABCDE-FGHJK-MNPQR-STVWX-YZ012-3");
    assert_eq!(wrong.status, 404, "{}", wrong.text);
    // The code typed in lowercase without dashes.
    let typed = code.replace('-', "").to_lowercase();
    let r = claim(u, &pat, &typed);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["study"], study.as_str());
    assert_eq!(r.json["grant_id"], grant_id.as_str());

    let (mine, listing) = my_studies(u, &pat);
    assert_eq!(mine, vec![study.clone()]);
    let entry = &listing.array()[0];
    assert_eq!(entry["source"], "delivered");
    assert_eq!(entry["instances"], 3, "{entry}");
    assert_eq!(entry["series"], 2, "{entry}");
    assert_eq!(entry["modalities"], json!(["CT"]), "{entry}");

    // Another patient with the same code: the same answer as a wrong code.
    let r = claim(u, &other, &code);
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json, wrong.json, "a used code looks like a wrong one");
    assert!(my_studies(u, &other).0.is_empty());
    // The first patient again: fine.
    let r = claim(u, &pat, &code);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(my_studies(u, &pat).0, vec![study.clone()]);

    // Staff list the grant, with who claimed it, never the code.
    let r = get(&grants_url, &s.token);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.array().len(), 1, "{}", r.text);
    let g = &r.array()[0];
    assert_eq!(g["id"], grant_id.as_str());
    assert_eq!(g["kind"], "patient");
    assert_eq!(g["email"], "pat@x.org");
    assert_eq!(g["claimed_by"], pat_id.as_str());
    assert!(g["revoked_at_ms"].is_null());
    let compact = code.replace('-', "");
    assert!(
        !r.text.contains(&code) && !r.text.contains(&compact),
        "the claim code is listed: {}",
        r.text
    );
    assert!(!r.text.contains("code_hash"), "{}", r.text);

    // Revocation: gone at once, and the code no longer works.
    assert_eq!(
        delete(&format!("{u}/api/grants/{grant_id}"), &pat).status,
        403
    );
    let r = delete(&format!("{u}/api/grants/{grant_id}"), &s.token);
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(
        my_studies(u, &pat).0.is_empty(),
        "revoked grant still shows"
    );
    let r = claim(u, &pat, &code);
    assert_eq!(r.status, 404, "claim after revocation: {}", r.text);
    assert_eq!(r.json, wrong.json);
    let r = get(&grants_url, &s.token);
    assert!(
        r.array()[0]["revoked_at_ms"].as_u64().is_some(),
        "{}",
        r.text
    );
    assert_eq!(
        delete(
            &format!("{u}/api/grants/0123456789abcdef0123456789abcdef"),
            &s.token
        )
        .status,
        404
    );
    // Claims are audited with the study.
    let rec = wait_for_audit(&s, &format!("study={study}"), |r| {
        r["event"]["action"] == "claim" && r["event"]["outcome"] == "success"
    });
    assert_eq!(rec["event"]["user_id"], pat_id.as_str());
    assert!(!audit(u, &s.token, "limit=1000").text.contains(&compact));
}

#[test]
fn wrong_claim_codes_are_throttled() {
    let s = Server::start(&[]);
    let u = &s.url;
    let study = hospital_study(&s);
    let r = post(
        &format!("{u}/api/studies/{study}/grants"),
        &s.token,
        json!({"email": "guess@x.org"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.str("claim_code");
    let (pat, _) = new_patient(u, "guess@x.org");

    let mut statuses = Vec::new();
    let mut throttled = None;
    let mut blocked_at = Instant::now();
    for i in 0..12 {
        let r = claim(u, &pat, &format!("WRONG-CODE{i:02}-AAAAA-AAAAA-AAAAA-A"));
        statuses.push(r.status);
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status, 404, "{}", r.text);
        blocked_at = Instant::now();
    }
    let r = throttled.unwrap_or_else(|| panic!("never throttled: {statuses:?}"));
    assert!(statuses.len() <= 6, "throttled late: {statuses:?}");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    // While throttled (the first back-off is 1 s) even the right code is refused.
    let r = claim(u, &pat, &code);
    if blocked_at.elapsed() < Duration::from_millis(800) {
        assert_eq!(r.status, 429, "{}", r.text);
        assert!(my_studies(u, &pat).0.is_empty());
    }
}

#[test]
fn only_patient_accounts_claim_codes() {
    let s = Server::start(&[]);
    let u = &s.url;
    let study = hospital_study(&s);
    let grants_url = format!("{u}/api/studies/{study}/grants");
    let (staff, _) = new_staff(&s, "steve@hospital.example");
    let (fac_id, temporary) = new_facility(&s, &staff, "claims@clinic.example");
    let (fac, _) = activate_facility(u, "claims@clinic.example", &temporary);
    let r = post(
        &grants_url,
        &staff,
        json!({"email": "steve@hospital.example"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.str("claim_code");
    for (who, t) in [("admin", &s.token), ("staff", &staff), ("facility", &fac)] {
        let r = claim(u, t, &code);
        assert_eq!(r.status, 403, "{who} claims: {}", r.text);
    }
    let r = api(
        "POST",
        &format!("{u}/api/grants/claim"),
        None,
        Some(json!({"code": code})),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    // The grant is still unclaimed.
    let r = get(&grants_url, &staff);
    assert!(r.array()[0]["claimed_by"].is_null(), "{}", r.text);
    // A facility may not deliver either.
    let r = post(&grants_url, &fac, json!({"account_id": fac_id}));
    assert_eq!(r.status, 403, "{}", r.text);
}

#[test]
fn sharing_with_a_facility_is_visible_at_once() {
    let s = Server::start(&[]);
    let u = &s.url;
    let study = hospital_study(&s);
    let unshared = hospital_study(&s);
    let grants_url = format!("{u}/api/studies/{study}/grants");
    let (fac_id, temporary) = new_facility(&s, &s.token, "share@clinic.example");
    let (fac, _) = activate_facility(u, "share@clinic.example", &temporary);
    let (_, patient_id) = new_patient(u, "nora@example.org");
    let admin_id = get(&format!("{u}/api/me"), &s.token).str("id");
    assert!(my_studies(u, &fac).0.is_empty());

    let r = post(&grants_url, &s.token, json!({"account_id": fac_id}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json.get("claim_code").is_none(), "{}", r.text);
    let grant_id = r.str("grant_id");
    let (mine, listing) = my_studies(u, &fac);
    assert_eq!(mine, vec![study.clone()], "{}", listing.text);
    let entry = &listing.array()[0];
    assert_eq!(entry["source"], "shared");
    assert_eq!(entry["instances"], 3);
    assert_eq!(entry["series"], 2);
    assert!(!mine.contains(&unshared));

    // Only active facility accounts.
    for (who, id) in [
        ("patient", patient_id.as_str()),
        ("admin", admin_id.as_str()),
        ("unknown", "0123456789abcdef0123456789abcdef"),
        ("malformed", "nope"),
    ] {
        let r = post(&grants_url, &s.token, json!({"account_id": id}));
        assert_eq!(r.status, 400, "share with {who}: {}", r.text);
    }
    let r = get(&grants_url, &s.token);
    assert_eq!(r.array().len(), 1, "{}", r.text);
    assert_eq!(r.array()[0]["kind"], "facility");
    assert_eq!(r.array()[0]["account_id"], fac_id.as_str());

    let r = delete(&format!("{u}/api/grants/{grant_id}"), &s.token);
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(
        my_studies(u, &fac).0.is_empty(),
        "revoked share still shows"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. My studies
// ---------------------------------------------------------------------------------------------

#[test]
fn my_studies_lists_a_patients_uploads_and_is_not_for_staff() {
    let s = Server::start(&[]);
    let u = &s.url;
    let (pat, _) = new_patient(u, "upload@example.org");
    let (other, _) = new_patient(u, "nosy@example.org");
    let (staff, _) = new_staff(&s, "sally@hospital.example");

    let study = uid(1);
    let series = uid(2);
    let parts = vec![
        instance(&study, &series, &uid(3)),
        instance(&study, &series, &uid(3)),
    ];
    let r = stow_as(u, Some(&bearer(&pat)), None, &parts);
    assert_eq!(r.status, 200, "{}", r.text);
    let (mine, listing) = my_studies(u, &pat);
    assert_eq!(mine, vec![study.clone()]);
    let entry = &listing.array()[0];
    assert_eq!(entry["source"], "uploaded");
    assert_eq!(entry["instances"], 2);
    assert_eq!(entry["series"], 1);
    assert_eq!(entry["modalities"], json!(["CT"]));
    assert!(my_studies(u, &other).0.is_empty(), "B sees A's upload");

    // A grant on one's own upload does not list it twice.
    let r = post(
        &format!("{u}/api/studies/{study}/grants"),
        &staff,
        json!({"email": "upload@example.org"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(claim(u, &pat, &r.str("claim_code")).status, 200);
    let (mine, listing) = my_studies(u, &pat);
    assert_eq!(mine, vec![study.clone()], "{}", listing.text);
    assert_eq!(listing.array()[0]["source"], "uploaded");

    for (who, t) in [("staff", &staff), ("admin", &s.token)] {
        let r = get(&format!("{u}/api/studies"), t);
        assert_eq!(r.status, 403, "{who}: {}", r.text);
    }
    let r = api("GET", &format!("{u}/api/studies"), None, None);
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"lightbox\"")
    );
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("no-store"))
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Audit
// ---------------------------------------------------------------------------------------------

/// `lightbox audit verify` on a data directory (given through the environment; see
/// `audit_verify_accepts_data_after_the_subcommand` for the flag).
fn verify_audit(data: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["audit", "verify"])
        .env_remove("LIGHTBOX_CONFIG")
        .env("LIGHTBOX_DATA", data)
        .env("LIGHTBOX_LOG", "warn")
        .output()
        .expect("run lightbox audit verify")
}

#[test]
fn audit_api_filters_and_the_chain_verifies_until_tampered() {
    let mut s = Server::start(&[]);
    let u = s.url.clone();
    let admin_id = get(&format!("{u}/api/me"), &s.token).str("id");
    let study = hospital_study(&s);
    let other_study = hospital_study(&s);
    let r = post(
        &format!("{u}/api/studies/{study}/grants"),
        &s.token,
        json!({"email": "audit@x.org"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let (pat, pat_id) = new_patient(&u, "audit@x.org");
    assert_eq!(
        sign_in(&u, "audit@x.org", "Wrong-Password-Entirely-77").status,
        401
    );

    // Every record so far, newest first, chained.
    let all = wait_for_audit(&s, "limit=1000", |r| {
        r["event"]["event"] == "110114" && r["event"]["outcome"] == "failure"
    });
    assert_eq!(all["event"]["action"], "login");
    let r = audit(&u, &s.token, "limit=1000");
    assert_eq!(r.status, 200, "{}", r.text);
    let records = r.array().clone();
    assert!(records.len() >= 6, "{}", r.text);
    for rec in &records {
        assert!(rec["seq"].is_u64(), "{rec}");
        assert_eq!(rec["prev"].as_str().unwrap().len(), 64, "{rec}");
        assert_eq!(rec["hash"].as_str().unwrap().len(), 64, "{rec}");
    }
    for w in records.windows(2) {
        let (newer, older) = (&w[0], &w[1]);
        assert_eq!(
            newer["seq"].as_u64().unwrap(),
            older["seq"].as_u64().unwrap() + 1,
            "newest first, no gaps"
        );
        assert_eq!(newer["prev"], older["hash"], "chained");
    }
    let oldest = records.last().unwrap();
    assert_eq!(oldest["seq"], 0);
    assert_eq!(oldest["prev"], "0".repeat(64));

    // event=110114: sign-ins only (the admin's, the patient's, the failure).
    let r = audit(&u, &s.token, "event=110114");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.array().iter().all(|r| r["event"]["event"] == "110114"),
        "{}",
        r.text
    );
    let users: Vec<&Value> = r.array().iter().map(|r| &r["event"]["user_id"]).collect();
    assert!(users.contains(&&json!(admin_id)), "{}", r.text);
    assert!(users.contains(&&json!(pat_id)), "{}", r.text);
    // Beside each record, the email of its account (the hashed event itself is unchanged).
    for rec in r.array() {
        let want = match rec["event"]["user_id"].as_str() {
            Some(id) if id == admin_id => json!(ADMIN_EMAIL),
            Some(id) if id == pat_id => json!("audit@x.org"),
            _ => Value::Null,
        };
        assert_eq!(rec["user_email"], want, "{rec}");
        assert!(rec["event"].get("user_email").is_none(), "{rec}");
    }
    assert!(
        r.array().iter().any(|r| r["event"]["outcome"] == "failure"),
        "{}",
        r.text
    );

    // study=: the STOW and the grant of that study, nothing of the other.
    let r = audit(&u, &s.token, &format!("study={study}"));
    assert_eq!(r.status, 200, "{}", r.text);
    let events: Vec<(String, String)> = r
        .array()
        .iter()
        .map(|r| {
            (
                r["event"]["event"].as_str().unwrap().to_owned(),
                r["event"]["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        events.contains(&("110107".into(), "stow".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("110113".into(), "grant".into())),
        "{events:?}"
    );
    assert!(
        r.array().iter().all(|r| r["event"]["studies"]
            .as_array()
            .unwrap()
            .contains(&json!(study))),
        "{}",
        r.text
    );
    let r = audit(&u, &s.token, &format!("study={other_study}"));
    assert_eq!(r.array().len(), 1, "only the other STOW: {}", r.text);
    // user= and combinations.
    let r = audit(&u, &s.token, &format!("user={pat_id}"));
    assert!(!r.array().is_empty());
    assert!(
        r.array()
            .iter()
            .all(|r| r["event"]["user_id"] == pat_id.as_str()),
        "{}",
        r.text
    );

    // limit.
    let r = audit(&u, &s.token, "limit=2");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.array().len(), 2, "{}", r.text);
    assert!(r.array()[0]["seq"].as_u64() > r.array()[1]["seq"].as_u64());
    let r = audit(&u, &s.token, "limit=0");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.array().is_empty());

    // Bad parameters; who may read.
    for q in ["foo=1", "limit=abc", "limit=-1", "since_ms=yesterday"] {
        let r = audit(&u, &s.token, q);
        assert_eq!(r.status, 400, "?{q}: {}", r.text);
    }
    let r = audit(&u, &pat, "");
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api("GET", &format!("{u}/api/audit"), None, None);
    assert_eq!(r.status, 401, "{}", r.text);
    // There is no way to change or remove records.
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = api(
            method,
            &format!("{u}/api/audit"),
            Some(&bearer(&s.token)),
            None,
        );
        assert!(
            r.status == 404 || r.status == 405,
            "{method} /api/audit: {}",
            r.status
        );
    }

    // Reading the audit trail is itself audited (110101).
    let rec = wait_for_audit(&s, "event=110101", |r| {
        r["event"]["user_id"] == admin_id.as_str()
    });
    assert_eq!(rec["event"]["action"], "read-audit");
    assert_eq!(rec["event"]["role"], "admin");

    // Stop cleanly: the chain verifies.
    assert_eq!(s.stop(), Some(0), "clean stop");
    let out = verify_audit(&s.data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stdout}\n{stderr}");
    assert!(stdout.contains("audit trail intact"), "{stdout}\n{stderr}");

    // Change one byte of the STOW record's action.
    let tampered_seq = {
        let (store, _) = lightbox::store::Store::open(&s.data).expect("open store");
        let tree = store.db.open_tree("audit_chain").unwrap();
        let mut target = None;
        for item in tree.iter() {
            let (key, value) = item.unwrap();
            let text = String::from_utf8(value.to_vec()).unwrap();
            if text.contains("\"action\":\"stow\"") {
                let changed = text.replacen("\"action\":\"stow\"", "\"action\":\"stop\"", 1);
                assert_eq!(changed.len(), text.len());
                tree.insert(&key, changed.as_bytes()).unwrap();
                target = Some(u64::from_be_bytes(key.as_ref().try_into().unwrap()));
                break;
            }
        }
        store.db.flush().unwrap();
        target.expect("a STOW record in the chain")
    };
    let out = verify_audit(&s.data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "tampering not detected: {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("broken at record {tampered_seq}")),
        "the broken record ({tampered_seq}) is named: {stdout}\n{stderr}"
    );
    assert!(!stdout.contains("audit trail intact"), "{stdout}");
}

#[test]
fn audit_verify_accepts_data_after_the_subcommand() {
    // The documented command line: `lightbox audit verify --data <dir>`.
    let mut s = Server::start(&[]);
    assert_eq!(s.stop(), Some(0), "clean stop");
    let out = Command::new(bin())
        .args(["audit", "verify", "--data"])
        .arg(&s.data)
        .env_remove("LIGHTBOX_CONFIG")
        .env_remove("LIGHTBOX_DATA")
        .output()
        .expect("run lightbox audit verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("audit trail intact"), "{stdout}\n{stderr}");
}

#[test]
fn a_temporary_password_opens_nothing_but_the_password_change() {
    // A facility account as staff created it: signed in with the temporary password, which
    // staff saw and passed on. Only its own account and the password change are open.
    let s = Server::start(&[]);
    let u = &s.url;
    let study = hospital_study(&s);
    let (id, temporary) = new_facility(&s, &s.token, "fresh@clinic.example");
    let r = post(
        &format!("{u}/api/studies/{study}/grants"),
        &s.token,
        json!({"account_id": id}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = sign_in(u, "fresh@clinic.example", &temporary);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["must_change_password"], true);
    let t = r.str("token");
    assert_eq!(get(&format!("{u}/api/me"), &t).status, 200);
    let r = get(&format!("{u}/api/studies"), &t);
    assert_eq!(
        r.status, 403,
        "patient data listed before the temporary password was changed: {}",
        r.text
    );
    let r = claim(u, &t, "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA-A");
    assert_eq!(r.status, 403, "{}", r.text);
    let (_, part) = one_instance_study();
    let r = stow_as(u, Some(&bearer(&t)), None, &[part]);
    assert_eq!(r.status, 403, "{}", r.text);
}
