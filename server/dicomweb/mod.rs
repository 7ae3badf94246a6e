//! DICOMweb (PS3.18) under `/dicom-web`: one module per transaction.

pub mod bulk;
pub mod metadata;
pub mod qido;
pub mod stow;
pub mod wado;
pub mod xml;

use actix_web::web;

/// The DICOMweb route table. Later transactions (rendered, thumbnails) add their lines here.
pub fn routes(cfg: &mut web::ServiceConfig) {
    const STUDY: &str = "/studies/{study}";
    const SERIES: &str = "/studies/{study}/series/{series}";
    const INSTANCE: &str = "/studies/{study}/series/{series}/instances/{instance}";
    cfg
        // STOW-RS (PS3.18 10.5)
        .route("/studies", web::post().to(stow::store_instances))
        .route(STUDY, web::post().to(stow::store_study_instances))
        // QIDO-RS (PS3.18 10.6)
        .route("/studies", web::get().to(qido::studies))
        .route("/series", web::get().to(qido::all_series))
        .route("/instances", web::get().to(qido::all_instances))
        .route("/studies/{study}/series", web::get().to(qido::study_series))
        .route(
            "/studies/{study}/instances",
            web::get().to(qido::study_instances),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            web::get().to(qido::series_instances),
        )
        // WADO-RS (PS3.18 10.4)
        .route(STUDY, web::get().to(wado::retrieve))
        .route(SERIES, web::get().to(wado::retrieve))
        .route(INSTANCE, web::get().to(wado::retrieve))
        .route(
            &format!("{STUDY}/metadata"),
            web::get().to(metadata::metadata),
        )
        .route(
            &format!("{SERIES}/metadata"),
            web::get().to(metadata::metadata),
        )
        .route(
            &format!("{INSTANCE}/metadata"),
            web::get().to(metadata::metadata),
        )
        .route(
            &format!("{INSTANCE}/frames/{{frames}}"),
            web::get().to(bulk::frames),
        )
        .route(
            &format!("{STUDY}/bulkdata"),
            web::get().to(bulk::bulkdata_all),
        )
        .route(
            &format!("{SERIES}/bulkdata"),
            web::get().to(bulk::bulkdata_all),
        )
        .route(
            &format!("{INSTANCE}/bulkdata"),
            web::get().to(bulk::bulkdata_all),
        )
        .route(
            &format!("{INSTANCE}/bulkdata/{{path:.+}}"),
            web::get().to(bulk::bulkdata_path),
        )
        .route(
            &format!("{STUDY}/pixeldata"),
            web::get().to(bulk::pixeldata_of),
        )
        .route(
            &format!("{SERIES}/pixeldata"),
            web::get().to(bulk::pixeldata_of),
        )
        .route(
            &format!("{INSTANCE}/pixeldata"),
            web::get().to(bulk::pixeldata_of),
        );
}
