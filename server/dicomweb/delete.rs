//! `DELETE` of a study, series or instance under `/dicom-web/studies/...`.
//!
//! This is a Lightbox extension, **not** a PS3.18 Studies Service transaction: PS3.18 defines
//! no DELETE on the Studies resources (removal is left to each archive's own policy), so
//! clients must not expect it from other origin servers. Staff and admins only.
//!
//! Everything about one object goes at once ([`crate::store::Store::delete`]): index entries,
//! study and series aggregates and owner entry in one sled batch (flushed), then derived data
//! (thumbnails), the search catalog rows and the files. This module then drops the cached
//! series metadata and, when the study has no instance left, the study's grants. A crash in the
//! middle leaves the object either whole or gone, never half: see `Store::delete`; grants that
//! a crash left behind are swept at start-up (`Grants::forget_missing_studies`).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::wado::{self, Target};
use crate::access::{self, Action, Principal};
use crate::audit::{Outcome, event};
use crate::error::{Error, Result};
use crate::ids::SeriesUid;
use crate::state::AppState;
use crate::store::Deleted;

/// `DELETE /studies/{study}[/series/{series}[/instances/{instance}]]`: 204 when removed;
/// 404 when absent or not visible to the caller; 403 when visible but the caller is not staff.
/// Audited as 110105 (DICOM Study Deleted) with the level and what went.
pub async fn delete(
    principal: Principal,
    state: web::Data<AppState>,
    t: Target,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    wado::require_audit(&state)?;
    let (st, who, target) = (state.clone(), principal.clone(), t.clone());
    // sled reads and writes, an fsync and file removals: blocking.
    let outcome = web::block(move || -> Result<Deleted> {
        // Visibility first: an object the caller may not see is a 404 like an absent one,
        // and only then may a visible one be refused with 403.
        wado::locate_refs(&st, &who, &target)?;
        access::check(&who, Action::Delete)?;
        let d = st
            .store
            .delete(&target.study, target.series.as_ref(), target.sop.as_ref())?;
        if d.instances.is_empty() {
            return Err(Error::NotFound(format!("{} not found", level(&target).1)));
        }
        if d.study_gone {
            st.grants.forget_study(&target.study)?;
        }
        Ok(d)
    })
    .await?;
    let (kind, what) = level(&t);
    let deleted = match outcome {
        Ok(d) => d,
        Err(e @ Error::Forbidden(_)) => {
            let mut ev = principal.event(event::DELETE, "delete", Outcome::Refused);
            ev.studies = vec![t.study.to_string()];
            ev.detail = json!({"level": kind, "target": what});
            state.audit.record(ev);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let mut series: Vec<SeriesUid> = deleted.instances.iter().map(|r| r.series.clone()).collect();
    series.sort();
    series.dedup();
    state.metadata_cache.forget_series(&series);
    let mut ev = principal.event(event::DELETE, "delete", Outcome::Success);
    ev.studies = vec![t.study.to_string()];
    ev.detail = json!({
        "level": kind,
        "target": what,
        "series": series.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "instances": deleted.instances.len(),
        "study_removed": deleted.study_gone,
    });
    state.audit.record(ev);
    Ok(HttpResponse::NoContent().finish())
}

fn level(t: &Target) -> (&'static str, String) {
    match (&t.series, &t.sop) {
        (_, Some(i)) => ("instance", format!("instance {i}")),
        (Some(s), None) => ("series", format!("series {s}")),
        (None, None) => ("study", format!("study {}", t.study)),
    }
}
