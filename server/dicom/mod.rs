//! DICOM parsing for ingest: validation, index attributes, metadata templates, frame index.
//! Nothing here knows about HTTP.

pub mod attrs;
pub mod charset;
pub mod j2k;
pub mod parse;
pub mod transcode;
pub mod walk;
