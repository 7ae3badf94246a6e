//! DICOMweb (PS3.18) under `/dicom-web`: one module per transaction.

pub mod stow;
pub mod xml;

use actix_web::web;

/// The DICOMweb route table. Later transactions (QIDO-RS, WADO-RS, rendered) add their lines
/// here.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/studies", web::post().to(stow::store_instances))
        .route(
            "/studies/{study}",
            web::post().to(stow::store_study_instances),
        );
}
