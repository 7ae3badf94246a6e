//! DICOMweb (PS3.18) under `/dicom-web`: one module per transaction.

pub mod qido;
pub mod stow;
pub mod xml;

use actix_web::web;

/// The DICOMweb route table. Later transactions (WADO-RS, rendered) add their lines here.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/studies", web::post().to(stow::store_instances))
        .route(
            "/studies/{study}",
            web::post().to(stow::store_study_instances),
        )
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
        );
}
