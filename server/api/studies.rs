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
    access::check(&principal, Action::OwnAccount)?;
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
