//! Small helpers shared by every sled tree: prefixed keys and JSON values.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `prefix \0 part \0 part ...`: a key in a prefixed keyspace. Parts are checked UIDs, ids or
/// hashes, which never contain NUL.
pub fn key(prefix: &str, parts: &[&str]) -> Vec<u8> {
    let mut v = prefix.as_bytes().to_vec();
    for p in parts {
        v.push(0);
        v.extend_from_slice(p.as_bytes());
    }
    v
}

/// Records are JSON in sled, readable with any tool.
pub fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

pub fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(b)
}
