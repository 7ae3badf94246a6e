//! DICOMweb (PS3.18) under `/dicom-web`: one module per transaction.
//!
//! The route table is [`declare`]: each line registers a route AND describes it (method, path
//! template, media types, query parameters, title) through [`Routes`]. The server registers it
//! with [`routes`]; Retrieve Capabilities ([`capabilities`]) describes it from [`route_table`],
//! which runs the same `declare`, so the two cannot drift.

pub mod bulk;
pub mod capabilities;
pub mod delete;
pub mod metadata;
pub mod qido;
pub mod rendered;
pub mod stow;
pub mod wado;
pub mod wado_uri;
pub mod xml;
pub mod zip;

use std::sync::OnceLock;

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, Responder, web};

/// One route of the table as Retrieve Capabilities describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteDoc {
    /// `GET`, `POST`, `DELETE`, `OPTIONS`.
    pub method: &'static str,
    /// Path template under the service base (`/dicom-web`), e.g. `/studies/{study}/series`;
    /// empty for the base itself.
    pub path: String,
    /// A short title.
    pub title: &'static str,
    /// Media types of the response (the first is the default).
    pub produces: &'static [&'static str],
    /// Query parameters accepted; `{attributeID}` stands for any searchable attribute.
    pub params: &'static [&'static str],
}

/// Registers routes on a `ServiceConfig` (when there is one) and records their [`RouteDoc`]s.
pub struct Routes<'a> {
    cfg: Option<&'a mut web::ServiceConfig>,
    docs: Vec<RouteDoc>,
}

impl Routes<'_> {
    /// Register `handler` for `method path` and describe it.
    pub fn add<F, Args>(
        &mut self,
        method: Method,
        path: &str,
        handler: F,
        (title, produces, params): Doc,
    ) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        if let Some(cfg) = self.cfg.as_deref_mut() {
            cfg.route(path, web::method(method.clone()).to(handler));
        }
        let method = match method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            Method::PUT => "PUT",
            _ => "OTHER",
        };
        self.docs.push(RouteDoc {
            method,
            path: path.to_owned(),
            title,
            produces,
            params,
        });
        self
    }
}

/// Title, response media types, query parameters.
pub type Doc = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

const DICOM_SET: &[&str] = &[
    "multipart/related; type=\"application/dicom\"",
    "application/zip",
];
const DICOM_ONE: &[&str] = &[
    "multipart/related; type=\"application/dicom\"",
    "application/dicom",
    "application/zip",
];
const METADATA: &[&str] = &[
    "application/dicom+json",
    "multipart/related; type=\"application/dicom+xml\"",
];
const SEARCH: &[&str] = &[
    "application/dicom+json",
    "multipart/related; type=\"application/dicom+xml\"",
];
const STOW_RESPONSE: &[&str] = &["application/dicom+json", "application/dicom+xml"];
const BULK: &[&str] = &[
    "multipart/related; type=\"application/octet-stream\"",
    "application/octet-stream",
];
const FRAMES: &[&str] = &[
    "multipart/related; type=\"application/octet-stream\"",
    "multipart/related; type=\"image/jpeg\"",
    "multipart/related; type=\"image/jls\"",
    "multipart/related; type=\"image/jp2\"",
    "multipart/related; type=\"image/dicom-rle\"",
];
const RENDERED: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "multipart/related; type=\"image/jpeg\"",
    "multipart/related; type=\"image/png\"",
    "multipart/related; type=\"image/gif\"",
    "video/mpeg",
    "video/mp4",
    "video/H265",
    "application/pdf",
];
const THUMBNAIL: &[&str] = &["image/jpeg", "image/png", "image/gif"];
use crate::render::params::{RENDERED_PARAMS, THUMBNAIL_PARAMS};
const NONE: &[&str] = &[];
const ACCEPT: &[&str] = &["accept"];
const QIDO_PARAMS: &[&str] = &[
    "{attributeID}",
    "includefield",
    "fuzzymatching",
    "limit",
    "offset",
    "orderby",
    "accept",
    "charset",
];

/// The DICOMweb route table. Later transactions (rendered, thumbnails) add their lines here.
pub fn declare(r: &mut Routes<'_>) {
    const STUDY: &str = "/studies/{study}";
    const SERIES: &str = "/studies/{study}/series/{series}";
    const INSTANCE: &str = "/studies/{study}/series/{series}/instances/{instance}";
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    // Retrieve Capabilities (PS3.18 8.9)
    r.add(
        Method::OPTIONS,
        "",
        capabilities::capabilities,
        ("Retrieve Capabilities", capabilities::MEDIA_TYPES, ACCEPT),
    );
    // STOW-RS (PS3.18 10.5)
    let stow_doc: Doc = ("Store Instances", STOW_RESPONSE, ACCEPT);
    r.add(post.clone(), "/studies", stow::store_instances, stow_doc);
    r.add(post, STUDY, stow::store_study_instances, stow_doc);
    // QIDO-RS (PS3.18 10.6)
    let search = |title| (title, SEARCH, QIDO_PARAMS);
    r.add(
        get.clone(),
        "/studies",
        qido::studies,
        search("Search for Studies"),
    )
    .add(
        get.clone(),
        "/series",
        qido::all_series,
        search("Search for Series"),
    )
    .add(
        get.clone(),
        "/instances",
        qido::all_instances,
        search("Search for Instances"),
    )
    .add(
        get.clone(),
        "/studies/{study}/series",
        qido::study_series,
        search("Search for Series of a Study"),
    )
    .add(
        get.clone(),
        "/studies/{study}/instances",
        qido::study_instances,
        search("Search for Instances of a Study"),
    )
    .add(
        get.clone(),
        "/studies/{study}/series/{series}/instances",
        qido::series_instances,
        search("Search for Instances of a Series"),
    );
    // WADO-RS (PS3.18 10.4)
    r.add(
        get.clone(),
        STUDY,
        wado::retrieve,
        ("Retrieve Study", DICOM_SET, ACCEPT),
    )
    .add(
        get.clone(),
        SERIES,
        wado::retrieve,
        ("Retrieve Series", DICOM_SET, ACCEPT),
    )
    .add(
        get.clone(),
        INSTANCE,
        wado::retrieve,
        ("Retrieve Instance", DICOM_ONE, ACCEPT),
    );
    let md_params: &'static [&'static str] = &["accept", "charset"];
    for (path, title) in [
        (format!("{STUDY}/metadata"), "Retrieve Study Metadata"),
        (format!("{SERIES}/metadata"), "Retrieve Series Metadata"),
        (format!("{INSTANCE}/metadata"), "Retrieve Instance Metadata"),
    ] {
        r.add(
            get.clone(),
            &path,
            metadata::metadata,
            (title, METADATA, md_params),
        );
    }
    r.add(
        get.clone(),
        &format!("{INSTANCE}/frames/{{frames}}"),
        bulk::frames,
        ("Retrieve Frames", FRAMES, ACCEPT),
    );
    for (path, title) in [
        (format!("{STUDY}/bulkdata"), "Retrieve Study Bulk Data"),
        (format!("{SERIES}/bulkdata"), "Retrieve Series Bulk Data"),
        (
            format!("{INSTANCE}/bulkdata"),
            "Retrieve Instance Bulk Data",
        ),
    ] {
        r.add(
            get.clone(),
            &path,
            bulk::bulkdata_all,
            (title, BULK, ACCEPT),
        );
    }
    r.add(
        get.clone(),
        &format!("{INSTANCE}/bulkdata/{{path:.+}}"),
        bulk::bulkdata_path,
        ("Retrieve Bulk Data (BulkDataURI)", BULK, ACCEPT),
    );
    for (path, title) in [
        (format!("{STUDY}/pixeldata"), "Retrieve Study Pixel Data"),
        (format!("{SERIES}/pixeldata"), "Retrieve Series Pixel Data"),
        (
            format!("{INSTANCE}/pixeldata"),
            "Retrieve Instance Pixel Data",
        ),
    ] {
        r.add(
            get.clone(),
            &path,
            bulk::pixeldata_of,
            (title, BULK, ACCEPT),
        );
    }
    // Rendered and thumbnail resources (PS3.18 10.4.1.1.3-4)
    for (path, title) in [
        (format!("{STUDY}/rendered"), "Retrieve Rendered Study"),
        (format!("{SERIES}/rendered"), "Retrieve Rendered Series"),
        (format!("{INSTANCE}/rendered"), "Retrieve Rendered Instance"),
        (
            format!("{INSTANCE}/frames/{{frames}}/rendered"),
            "Retrieve Rendered Frames",
        ),
    ] {
        r.add(
            get.clone(),
            &path,
            rendered::rendered,
            (title, RENDERED, RENDERED_PARAMS),
        );
    }
    for (path, title) in [
        (format!("{STUDY}/thumbnail"), "Retrieve Study Thumbnail"),
        (format!("{SERIES}/thumbnail"), "Retrieve Series Thumbnail"),
        (
            format!("{INSTANCE}/thumbnail"),
            "Retrieve Instance Thumbnail",
        ),
        (
            format!("{INSTANCE}/frames/{{frames}}/thumbnail"),
            "Retrieve Frame Thumbnail",
        ),
    ] {
        r.add(
            get.clone(),
            &path,
            rendered::thumbnail,
            (title, THUMBNAIL, THUMBNAIL_PARAMS),
        );
    }
    // DELETE: a Lightbox extension, not a PS3.18 transaction (see `delete`).
    r.add(
        delete.clone(),
        STUDY,
        delete::delete,
        ("Delete Study (extension, staff only)", NONE, NONE),
    )
    .add(
        delete.clone(),
        SERIES,
        delete::delete,
        ("Delete Series (extension, staff only)", NONE, NONE),
    )
    .add(
        delete,
        INSTANCE,
        delete::delete,
        ("Delete Instance (extension, staff only)", NONE, NONE),
    );
}

/// Register the DICOMweb routes (under the `/dicom-web` scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    declare(&mut Routes {
        cfg: Some(cfg),
        docs: Vec::new(),
    });
}

/// The description of every route [`routes`] registers, in table order.
pub fn route_table() -> &'static [RouteDoc] {
    static TABLE: OnceLock<Vec<RouteDoc>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut r = Routes {
            cfg: None,
            docs: Vec::new(),
        };
        declare(&mut r);
        r.docs
    })
}
