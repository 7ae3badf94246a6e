//! Account types: users, roles, sessions. Ids are 128-bit random values in hex; session ids are
//! stored only as hashes, so a copy of the database does not hold live sessions.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Who an account is (issue: accounts, roles, tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Free account, self sign-up; sees studies delivered to them and their uploads.
    Patient,
    /// The image library: sees and manages every study.
    Staff,
    /// Staff plus user and settings management.
    Admin,
    /// An outside hospital or clinic, created by staff, with an expiry.
    Facility,
}

impl Role {
    /// Staff and admins see and manage every study.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Staff | Role::Admin)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Staff => "staff",
            Role::Admin => "admin",
            Role::Facility => "facility",
        }
    }
}

/// A random 128-bit id, 32 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    pub fn random() -> Self {
        Id(hex::encode(rand::random::<[u8; 16]>()))
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Id(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Id::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid id"))
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Id,
    /// Lowercased, trimmed.
    pub email: String,
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_ms: u64,
    /// Set for a generated or reset password: everything but changing it is refused.
    pub must_change_password: bool,
    pub disabled: bool,
    /// Facility accounts end here (Unix ms).
    pub expires_ms: Option<u64>,
    /// Facility name, shown in a patient's access history.
    pub organisation: Option<String>,
}

impl User {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }
}

/// A server-side session. Stored under the hash of its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Id,
    pub created_ms: u64,
    pub last_seen_ms: u64,
}

/// An API token for DICOMweb clients (`lbx_<id>_<secret>`). Only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Id,
    pub user_id: Id,
    pub label: String,
    /// BLAKE3 of the secret, hex.
    pub secret_hash: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub last_used_ms: Option<u64>,
    /// Who created it (staff create tokens for facility accounts).
    pub created_by: Id,
}

/// Normalise an email address for lookups: trimmed, lowercased. Refuses what cannot be one.
pub fn normalise_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= 254
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    ok.then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalise_email(" Alice@Example.ORG ").as_deref(),
            Some("alice@example.org")
        );
        for bad in [
            "",
            "alice",
            "@x.org",
            "a@b",
            "a b@x.org",
            "a@x..org.",
            "<a>@x.org",
        ] {
            assert!(normalise_email(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        let id = Id::random();
        assert_eq!(Id::parse(id.as_str()), Some(id));
        assert!(Id::parse("../../etc").is_none());
        assert!(Id::parse(&"A".repeat(32)).is_none());
    }
}
