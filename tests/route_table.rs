//! The authorization suite: walk the whole `/api` route table (and STOW) as anonymous, a
//! patient, a facility, a staff member and an admin. Every caller the table does not admit is
//! refused before its request body is even read: 401 without credentials, 403 with too little
//! role; admitted callers are never refused by the guard.

mod common;

use common::*;
use lightbox::api::{Need, ROUTES};
use serde_json::{Value, json};

fn register_and_login(s: &Server, email: &str) -> (String, String) {
    let pw = "Tulip-Orbit-Canyon-93";
    let r = client()
        .post(format!("{}/api/auth/register", s.url))
        .json(&json!({"email": email, "password": pw}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let token = login(&s.url, email, pw).unwrap();
    let me: Value = authed_client(&token)
        .get(format!("{}/api/me", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    (token, me["id"].as_str().unwrap().to_owned())
}

fn promote(s: &Server, id: &str, role: &str) {
    let r = s
        .client()
        .patch(format!("{}/api/users/{id}", s.url))
        .json(&json!({"role": role}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
}

fn facility(s: &Server) -> String {
    let r: Value = s
        .client()
        .post(format!("{}/api/facilities", s.url))
        .json(&json!({"email": "radiology@clinic.example", "organisation": "Clinic"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let temp = r["temporary_password"].as_str().unwrap();
    let token = login(&s.url, "radiology@clinic.example", temp).unwrap();
    let r: Value = authed_client(&token)
        .post(format!("{}/api/auth/password", s.url))
        .json(&json!({"current_password": temp, "new_password": "Granite-Harbor-Violet-58"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["token"].as_str().unwrap().to_owned()
}

fn admits(need: Need, role: &str) -> bool {
    match need {
        Need::Public | Need::SignedIn => true,
        Need::Staff => role == "staff" || role == "admin",
        Need::Admin => role == "admin",
    }
}

#[test]
fn every_route_admits_exactly_whom_the_table_says() {
    let s = Server::start(&[]);
    let (patient, _) = register_and_login(&s, "pat@example.org");
    let (_, staff_id) = register_and_login(&s, "staff@example.org");
    promote(&s, &staff_id, "staff");
    let staff = login(&s.url, "staff@example.org", "Tulip-Orbit-Canyon-93").unwrap();
    let fac = facility(&s);
    let callers: Vec<(&str, Option<String>)> = vec![
        ("anonymous", None),
        ("patient", Some(patient)),
        ("facility", Some(fac)),
        ("staff", Some(staff)),
        ("admin", Some(s.token.clone())),
    ];
    let random_id = "0123456789abcdef0123456789abcdef";
    let mut checked = 0;
    for (method, pattern, need) in ROUTES {
        if *pattern == "/api/auth/logout" {
            continue; // public, and would end the caller's session
        }
        let path = pattern
            .replace("{id}", random_id)
            .replace("{study}", "1.2.826.0.1.3680043.10.1435.404");
        for (role, token) in &callers {
            let c = match token {
                Some(t) => authed_client(t),
                None => client(),
            };
            // A body that fails validation: a refusal must come before it is read.
            let r = c
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", s.url),
                )
                .header("Content-Type", "application/json")
                .body("{\"unexpected\": true}")
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().unwrap();
            let label = format!("{role} {method} {pattern}: {status} {body}");
            match (token, need) {
                (None, Need::Public) => assert_ne!(status, 401, "{label}"),
                (None, _) => {
                    assert_eq!(status, 401, "{label}");
                    assert!(body.contains("\"unauthenticated\""), "{label}");
                }
                (Some(_), need) if !admits(*need, role) => {
                    assert_eq!(status, 403, "{label}");
                    assert!(body.contains("\"forbidden\""), "{label}");
                }
                (Some(_), _) => assert!(
                    status != 401 && status != 403 || *need == Need::SignedIn && status == 403,
                    "{label}"
                ),
            }
            checked += 1;
        }
    }
    assert!(checked >= ROUTES.len() * 4);

    // STOW: anonymous refused; every signed-in role admitted (into its own studies).
    let body = multipart(&[make_instance(
        "1.2.826.0.1.3680043.10.1435.77.9",
        "1.2.826.0.1.3680043.10.1435.77.9.1",
        "1.2.826.0.1.3680043.10.1435.77.9.1.1",
        "P",
        256,
    )]);
    for (role, token) in &callers {
        let c = match token {
            Some(t) => authed_client(t),
            None => client(),
        };
        let r = c
            .post(format!("{}/dicom-web/studies", s.url))
            .header("Content-Type", stow_content_type())
            .body(body.clone())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        match token {
            None => assert_eq!(status, 401, "{role} STOW"),
            Some(_) => assert!(status != 401 && status != 403, "{role} STOW: {status}"),
        }
    }
}

#[test]
fn daily_stow_quota_refuses_with_a700_and_spares_staff() {
    let s = Server::start(&["--stow-quota-instances", "2"]);
    let (patient, _) = register_and_login(&s, "quota@example.org");
    let study = "1.2.826.0.1.3680043.10.1435.55.1";
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            make_instance(
                study,
                &format!("{study}.1"),
                &format!("{study}.1.{i}"),
                "Q",
                256,
            )
        })
        .collect();
    let r = authed_client(&patient)
        .post(format!("{}/dicom-web/studies", s.url))
        .header("Content-Type", stow_content_type())
        .body(multipart(&parts))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(r.headers()["warning"].to_str().unwrap().starts_with("A700"));
    let j: Value = r.json().unwrap();
    assert_eq!(referenced(&j).len(), 2);
    assert_eq!(failure_codes(&j, "00081198"), vec![0xA700]);
    // Re-sending an already stored instance does not count against the quota... but a new one
    // is still refused today.
    let r = authed_client(&patient)
        .post(format!("{}/dicom-web/studies", s.url))
        .header("Content-Type", stow_content_type())
        .body(multipart(&parts[..1]))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Staff are not subject to the quota.
    let (st, _, b) = stow(
        &format!("{}/studies", s.dicomweb()),
        &stow_content_type(),
        multipart(&parts),
    );
    assert_eq!(st, 200, "{b}");
}

#[test]
fn a_role_change_ends_api_tokens_too() {
    let s = Server::start(&[]);
    let fac: Value = s
        .client()
        .post(format!("{}/api/facilities", s.url))
        .json(&json!({"email": "pacs@clinic.example", "organisation": "Clinic"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = fac["user"]["id"].as_str().unwrap().to_owned();
    let tok: Value = s
        .client()
        .post(format!("{}/api/users/{id}/tokens", s.url))
        .json(&json!({"label": "gateway"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = tok["token"].as_str().unwrap().to_owned();
    let study = "1.2.826.0.1.3680043.10.1435.56.1";
    let stow_with = |t: &str| {
        authed_client(t)
            .post(format!("{}/dicom-web/studies", s.url))
            .header("Content-Type", stow_content_type())
            .body(multipart(&[make_instance(
                study,
                &format!("{study}.1"),
                &format!("{study}.1.1"),
                "F",
                256,
            )]))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // API tokens work for DICOMweb even before the facility's first interactive sign-in.
    assert_eq!(stow_with(&token), 200);
    promote(&s, &id, "patient");
    assert_eq!(stow_with(&token), 401);
}
