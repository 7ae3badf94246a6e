//! `GET /api/studies`: the studies a patient or facility may see ("My studies"), with where
//! each came from. Staff search every study with QIDO-RS instead.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::audit::{Outcome, event};
use crate::error::{Error, Result};
use crate::ids::StudyUid;
use crate::state::AppState;

/// `GET /api/studies`
pub async fn my_studies(principal: Principal, state: web::Data<AppState>) -> Result<HttpResponse> {
    access::check(&principal, Action::OwnStudies)?;
    if !state.audit.healthy() {
        // Reads of patient data fail closed when they cannot be audited.
        return Err(Error::Unavailable(
            "the audit trail cannot be written; try again later".into(),
        ));
    }
    let user = principal.user().expect("authorised").clone();
    if user.role.is_staff() {
        return Err(Error::Forbidden(
            "staff search all studies with QIDO-RS (/dicom-web/studies)".into(),
        ));
    }
    let st = state.clone();
    let list = web::block(move || -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        let mut seen: Vec<StudyUid> = Vec::new();
        let owned = st.store.repo.owned_studies(user.id.as_str())?;
        let granted = st.grants.visible_studies(&user.id)?;
        for (study, source) in owned
            .into_iter()
            .map(|s| (s, "uploaded"))
            .chain(granted.into_iter().map(|s| (s, "delivered")))
        {
            if seen.contains(&study) {
                continue;
            }
            let Some(rec) = st.store.repo.study(&study)? else {
                continue;
            };
            let source = if source == "delivered" && user.role == crate::auth::Role::Facility {
                "shared"
            } else {
                source
            };
            out.push(json!({
                "study": study.as_str(),
                "source": source,
                "attributes": rec.attrs,
                "modalities": rec.modalities_in_study(),
                "series": rec.series_count,
                "instances": rec.instance_count,
            }));
            seen.push(study);
        }
        Ok(out)
    })
    .await??;
    let mut ev = principal.event(event::QUERY, "my-studies", Outcome::Success);
    ev.studies = list
        .iter()
        .filter_map(|s| s["study"].as_str().map(str::to_owned))
        .collect();
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(list))
}

/// Audit records of a study read for its access history (newest first).
const HISTORY_SCAN: usize = 20_000;
/// Rows of the access history at most.
const HISTORY_ROWS: usize = 500;
/// Repeated accesses closer than this (to the newest of the run) become one row.
const GROUP_WINDOW_MS: u64 = 3_600_000;

/// `GET /api/studies/{study}/access-history`: who accessed a study the caller may see, as the
/// role and organisation of each accessor (never staff emails or addresses). 404 for a study
/// the caller may not see, exactly as for one that does not exist. Repeated accesses are grouped: `count`
/// records from `first_ms` to `time_ms`.
pub async fn access_history(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<StudyUid>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::OwnStudies)?;
    if !state.audit.healthy() {
        return Err(Error::Unavailable(
            "the audit trail cannot be written; try again later".into(),
        ));
    }
    let study = path.into_inner();
    let me = principal.user().expect("authorised").id.clone();
    let st = state.clone();
    let p2 = principal.clone();
    let s2 = study.clone();
    let rows = web::block(move || -> Result<Option<Vec<serde_json::Value>>> {
        if !access::can_see_study(&st, &p2, &s2)? {
            return Ok(None);
        }
        let filter = crate::audit::AuditFilter {
            study: Some(s2.to_string()),
            ..Default::default()
        };
        // A viewer writes one record per image: repeated accesses by the same account, with
        // the same action and outcome, within an hour, are one row with a count, so that a few
        // viewing sessions do not push the delivery and the claim out of the history.
        let records = st
            .audit_log
            .query(&filter, HISTORY_SCAN)
            .map_err(|e| Error::store(e.to_string()))?;
        let mut rows: Vec<serde_json::Value> = Vec::new();
        let mut open: std::collections::HashMap<(Option<String>, String, String, String), usize> =
            std::collections::HashMap::new();
        for r in records {
            let e = r.event;
            let key = (
                e.user_id.clone(),
                e.event.to_string(),
                e.action.clone(),
                format!("{:?}", e.outcome),
            );
            if let Some(&i) = open.get(&key)
                && rows[i]["time_ms"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(e.time_ms)
                    < GROUP_WINDOW_MS
            {
                rows[i]["count"] = json!(rows[i]["count"].as_u64().unwrap_or(1) + 1);
                rows[i]["first_ms"] = json!(e.time_ms);
                continue;
            }
            if rows.len() == HISTORY_ROWS {
                break;
            }
            open.insert(key, rows.len());
            let accessor = match e.user_id.as_deref().and_then(crate::auth::Id::parse) {
                Some(id) if id == me => json!({"who": "you"}),
                Some(id) => match st.accounts.user(&id)? {
                    Some(u) if u.role == crate::auth::Role::Facility => {
                        json!({"who": "facility", "organisation": u.organisation})
                    }
                    Some(u) => json!({"who": u.role.as_str()}),
                    None => json!({"who": e.role.unwrap_or_else(|| "account".into())}),
                },
                None => json!({"who": "anonymous"}),
            };
            rows.push(json!({
                "time_ms": e.time_ms,
                "first_ms": e.time_ms,
                "count": 1,
                "event": e.event,
                "action": e.action,
                "outcome": e.outcome,
                "accessor": accessor,
            }));
        }
        Ok(Some(rows))
    })
    .await??
    .ok_or_else(|| Error::NotFound(format!("no study {study}")))?;
    let mut ev = principal.event(event::AUDIT_LOG_USED, "access-history", Outcome::Success);
    ev.studies = vec![study.to_string()];
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(rows))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use actix_web::{App, test, web};

    use crate::auth::{Accounts, Id, Role, User};
    use crate::state::AppState;

    /// Reads of patient data fail closed (503) once the audit trail cannot be written.
    #[actix_web::test]
    async fn patient_data_reads_fail_closed_when_the_audit_trail_fails() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::finish(crate::config::Settings {
            data: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        let (store, _) = crate::store::Store::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let accounts = Arc::new(Accounts::open(&store.db).unwrap());
        let audit_log = Arc::new(crate::audit::AuditLog::open(&store.db).unwrap());
        let audit = audit_log.clone().spawn_writer();
        let user = User {
            id: Id::random(),
            email: "p@example.org".into(),
            role: Role::Patient,
            password_hash: "unused".into(),
            created_ms: crate::auth::now_ms(),
            must_change_password: false,
            disabled: false,
            expires_ms: None,
            organisation: None,
        };
        accounts.create(&user).unwrap();
        let sid = accounts
            .create_session(&user.id, crate::auth::now_ms())
            .unwrap();
        let tokens = crate::auth::token::TokenKeys::from_secret(&[9u8; 32]);
        let (token, _) = tokens
            .issue(
                &crate::auth::accounts::session_key(&sid),
                crate::auth::now_ms() / 1000,
            )
            .unwrap();
        let state = web::Data::new(AppState {
            config,
            grants: Arc::new(crate::auth::grants::Grants::open(&store.db).unwrap()),
            store,
            urls: Default::default(),
            accounts,
            tokens,
            hasher: crate::auth::password::Hasher::new(1),
            throttle: crate::auth::throttle::Throttle::new(Default::default()),
            audit_log: audit_log.clone(),
            audit: audit.clone(),
            metadata_cache: Default::default(),
            render_gate: crate::render::Gate::for_cores(),
        });
        let app =
            test::init_service(App::new().configure(|c| crate::configure(c, state.clone()))).await;
        let get = || {
            test::TestRequest::get()
                .uri("/api/studies")
                .insert_header(("Authorization", format!("Bearer {token}")))
                .to_request()
        };
        assert_eq!(test::call_service(&app, get()).await.status().as_u16(), 200);
        audit.flush().await.unwrap();
        // The store under the trail breaks: the next batch fails and the sink turns unhealthy.
        audit_log.fail_writes.store(true, Ordering::SeqCst);
        assert_eq!(test::call_service(&app, get()).await.status().as_u16(), 200);
        assert!(audit.flush().await.is_err());
        assert!(!audit.healthy());
        let resp = test::call_service(&app, get()).await;
        assert_eq!(resp.status().as_u16(), 503);
    }
}
