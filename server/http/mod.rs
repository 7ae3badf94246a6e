//! HTTP plumbing shared by every transaction: media-type negotiation, query-string decoding,
//! absolute URL building behind proxies.

pub mod media;
pub mod multipart;
pub mod query;
pub mod urls;
