//! Users, sessions and account settings in sled (tree `accounts`). Blocking: call from a
//! blocking thread.
//!
//! | key | value |
//! |---|---|
//! | `U\0<user id>` | `User` |
//! | `E\0<email>` | user id |
//! | `S\0<blake3(session id)>` | `Session` |
//! | `SU\0<user id>\0<blake3(session id)>` | sessions of a user (for revocation) |
//! | `T\0<token id>` | `ApiToken` |
//! | `TU\0<user id>\0<token id>` | tokens of a user |
//! | `Q\0<user id>\0<UTC day>` | STOW usage of that day: `[bytes, instances]` |
//! | `C\0<name>` | a setting changed at run time (e.g. `self_signup`) |

use serde::de::DeserializeOwned;

use super::model::{ApiToken, Id, Role, Session, User};
use crate::store::kv::{self, enc, key as k};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("accounts store: {0}")]
    Sled(#[from] sled::Error),
    #[error("accounts record is corrupt: {0}")]
    Corrupt(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("the last admin cannot be removed or demoted")]
    LastAdmin,
}

impl From<AccountError> for crate::error::Error {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::EmailTaken | AccountError::LastAdmin => {
                crate::error::Error::Conflict(e.to_string())
            }
            other => crate::error::Error::store(other),
        }
    }
}

pub struct Accounts {
    tree: sled::Tree,
    db: sled::Db,
    /// Serialises read-modify-write of users (email uniqueness, last-admin rule).
    write: std::sync::Mutex<()>,
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, AccountError> {
    kv::dec(b).map_err(|e| AccountError::Corrupt(e.to_string()))
}

/// The stored key of a session id: its BLAKE3 hash, hex.
pub fn session_key(session_id: &str) -> String {
    blake3::hash(session_id.as_bytes()).to_hex().to_string()
}

impl Accounts {
    pub fn open(db: &sled::Db) -> Result<Self, AccountError> {
        Ok(Accounts {
            tree: db.open_tree("accounts")?,
            db: db.clone(),
            write: std::sync::Mutex::new(()),
        })
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, AccountError> {
        self.tree.get(key)?.map(|v| dec(&v)).transpose()
    }

    pub fn flush(&self) -> Result<(), AccountError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn is_empty(&self) -> Result<bool, AccountError> {
        Ok(self.tree.scan_prefix(k("U", &[""])).next().is_none())
    }

    pub fn user(&self, id: &Id) -> Result<Option<User>, AccountError> {
        self.get(&k("U", &[id.as_str()]))
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, AccountError> {
        match self.tree.get(k("E", &[email]))? {
            Some(id) => {
                let id = Id::parse(&String::from_utf8_lossy(&id))
                    .ok_or_else(|| AccountError::Corrupt("email index".into()))?;
                self.user(&id)
            }
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<User>, AccountError> {
        self.tree
            .scan_prefix(k("U", &[""]))
            .values()
            .map(|v| dec(&v?))
            .collect()
    }

    /// Create a user; the email must be free. Durable when it returns.
    pub fn create(&self, user: &User) -> Result<(), AccountError> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if self.tree.get(k("E", &[&user.email]))?.is_some() {
            return Err(AccountError::EmailTaken);
        }
        let mut b = sled::Batch::default();
        b.insert(k("U", &[user.id.as_str()]), enc(user));
        b.insert(k("E", &[&user.email]), user.id.as_str().as_bytes());
        self.tree.apply_batch(b)?;
        self.flush()
    }

    /// Replace a user record (same email). Refuses to demote or disable the last admin.
    pub fn update(&self, user: &User) -> Result<(), AccountError> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let old: Option<User> = self.get(&k("U", &[user.id.as_str()]))?;
        if let Some(old) = &old
            && old.role == Role::Admin
            && !old.disabled
            && (user.role != Role::Admin || user.disabled)
            && self.active_admins()? <= 1
        {
            return Err(AccountError::LastAdmin);
        }
        self.tree.insert(k("U", &[user.id.as_str()]), enc(user))?;
        self.flush()
    }

    /// Delete a user and all their sessions. Refuses for the last admin.
    pub fn delete(&self, id: &Id) -> Result<Option<User>, AccountError> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let Some(user) = self.get::<User>(&k("U", &[id.as_str()]))? else {
            return Ok(None);
        };
        if user.role == Role::Admin && !user.disabled && self.active_admins()? <= 1 {
            return Err(AccountError::LastAdmin);
        }
        let mut b = sled::Batch::default();
        b.remove(k("U", &[id.as_str()]));
        b.remove(k("E", &[&user.email]));
        for sk in self.session_keys_of(id)? {
            b.remove(k("S", &[&sk]));
            b.remove(k("SU", &[id.as_str(), &sk]));
        }
        for t in self.tokens_of(id)? {
            b.remove(k("T", &[t.id.as_str()]));
            b.remove(k("TU", &[id.as_str(), t.id.as_str()]));
        }
        self.tree.apply_batch(b)?;
        self.flush()?;
        Ok(Some(user))
    }

    fn active_admins(&self) -> Result<usize, AccountError> {
        Ok(self
            .users()?
            .iter()
            .filter(|u| u.role == Role::Admin && !u.disabled)
            .count())
    }

    fn session_keys_of(&self, user: &Id) -> Result<Vec<String>, AccountError> {
        let mut p = k("SU", &[user.as_str()]);
        p.push(0);
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(&p).keys() {
            out.push(String::from_utf8_lossy(&key?[p.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Start a session; returns its id (128-bit random, hex), which only the client keeps.
    pub fn create_session(&self, user: &Id, now_ms: u64) -> Result<String, AccountError> {
        let sid = hex::encode(rand::random::<[u8; 16]>());
        let sk = session_key(&sid);
        let s = Session {
            user_id: user.clone(),
            created_ms: now_ms,
            last_seen_ms: now_ms,
        };
        let mut b = sled::Batch::default();
        b.insert(k("S", &[&sk]), enc(&s));
        b.insert(k("SU", &[user.as_str(), &sk]), &[][..]);
        self.tree.apply_batch(b)?;
        self.flush()?;
        Ok(sid)
    }

    pub fn session(&self, key: &str) -> Result<Option<Session>, AccountError> {
        self.get(&k("S", &[key]))
    }

    /// Record use of a session (not flushed: losing a last-seen update is harmless).
    pub fn touch_session(&self, key: &str, s: &Session) -> Result<(), AccountError> {
        self.tree.insert(k("S", &[key]), enc(s))?;
        Ok(())
    }

    pub fn end_session(&self, key: &str) -> Result<(), AccountError> {
        if let Some(s) = self.session(key)? {
            let mut b = sled::Batch::default();
            b.remove(k("S", &[key]));
            b.remove(k("SU", &[s.user_id.as_str(), key]));
            self.tree.apply_batch(b)?;
            self.flush()?;
        }
        Ok(())
    }

    /// End every session of a user except `keep` (a session key).
    pub fn end_sessions_of(&self, user: &Id, keep: Option<&str>) -> Result<usize, AccountError> {
        let mut b = sled::Batch::default();
        let mut n = 0;
        for sk in self.session_keys_of(user)? {
            if Some(sk.as_str()) == keep {
                continue;
            }
            b.remove(k("S", &[&sk]));
            b.remove(k("SU", &[user.as_str(), &sk]));
            n += 1;
        }
        self.tree.apply_batch(b)?;
        self.flush()?;
        Ok(n)
    }

    /// Create an API token; returns the full secret string `lbx_<id>_<secret>`, shown once.
    pub fn create_token(
        &self,
        user: &Id,
        created_by: &Id,
        label: &str,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(ApiToken, String), AccountError> {
        let id = Id::random();
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let t = ApiToken {
            id: id.clone(),
            user_id: user.clone(),
            label: label.to_owned(),
            secret_hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
            created_ms: now_ms,
            expires_ms,
            last_used_ms: None,
            created_by: created_by.clone(),
        };
        let mut b = sled::Batch::default();
        b.insert(k("T", &[id.as_str()]), enc(&t));
        b.insert(k("TU", &[user.as_str(), id.as_str()]), &[][..]);
        self.tree.apply_batch(b)?;
        self.flush()?;
        Ok((t, format!("lbx_{id}_{secret}")))
    }

    pub fn token(&self, id: &Id) -> Result<Option<ApiToken>, AccountError> {
        self.get(&k("T", &[id.as_str()]))
    }

    pub fn tokens_of(&self, user: &Id) -> Result<Vec<ApiToken>, AccountError> {
        let mut p = k("TU", &[user.as_str()]);
        p.push(0);
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(&p).keys() {
            let key = key?;
            if let Some(id) = Id::parse(&String::from_utf8_lossy(&key[p.len()..]))
                && let Some(t) = self.token(&id)?
            {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Record use of a token (not flushed: a lost last-used update is harmless).
    pub fn touch_token(&self, t: &ApiToken) -> Result<(), AccountError> {
        self.tree.insert(k("T", &[t.id.as_str()]), enc(t))?;
        Ok(())
    }

    pub fn revoke_token(&self, id: &Id) -> Result<Option<ApiToken>, AccountError> {
        let Some(t) = self.token(id)? else {
            return Ok(None);
        };
        let mut b = sled::Batch::default();
        b.remove(k("T", &[id.as_str()]));
        b.remove(k("TU", &[t.user_id.as_str(), id.as_str()]));
        self.tree.apply_batch(b)?;
        self.flush()?;
        Ok(Some(t))
    }

    /// End every session and revoke every token of a user (expiry, disable, role change).
    pub fn end_all_access(&self, user: &Id) -> Result<(), AccountError> {
        self.end_sessions_of(user, None)?;
        for t in self.tokens_of(user)? {
            self.revoke_token(&t.id)?;
        }
        Ok(())
    }

    /// Reserve STOW quota for one instance of `bytes` on UTC day `day` (days since the epoch).
    /// Returns false (nothing reserved) when it would exceed either limit. Atomic per account.
    pub fn reserve_quota(
        &self,
        user: &Id,
        day: u64,
        bytes: u64,
        max_bytes: u64,
        max_instances: u64,
    ) -> Result<bool, AccountError> {
        let key = k("Q", &[user.as_str(), &day.to_string()]);
        let mut ok = false;
        self.tree.fetch_and_update(&key, |old| {
            let [b, n]: [u64; 2] = old
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or([0, 0]);
            ok = b + bytes <= max_bytes && n < max_instances;
            Some(if ok {
                enc(&[b + bytes, n + 1])
            } else {
                enc(&[b, n])
            })
        })?;
        Ok(ok)
    }

    /// Give back quota reserved for instances that were not stored.
    pub fn release_quota(
        &self,
        user: &Id,
        day: u64,
        bytes: u64,
        instances: u64,
    ) -> Result<(), AccountError> {
        let key = k("Q", &[user.as_str(), &day.to_string()]);
        self.tree.fetch_and_update(&key, |old| {
            let [b, n]: [u64; 2] = old
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or([0, 0]);
            Some(enc(&[b.saturating_sub(bytes), n.saturating_sub(instances)]))
        })?;
        Ok(())
    }

    /// A run-time setting, if it was ever changed.
    pub fn setting(&self, name: &str) -> Result<Option<serde_json::Value>, AccountError> {
        self.get(&k("C", &[name]))
    }

    pub fn set_setting(&self, name: &str, value: &serde_json::Value) -> Result<(), AccountError> {
        self.tree.insert(k("C", &[name]), enc(value))?;
        self.flush()
    }
}
