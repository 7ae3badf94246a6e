//! First start: create the admin account, only when no user exists at all. From
//! `LIGHTBOX_ADMIN_EMAIL` / `LIGHTBOX_ADMIN_PASSWORD` when given; otherwise a strong generated
//! password is written to `<data>/initial-admin-password` (mode 0600) and must be changed at
//! first sign-in. An existing admin is never reset from the environment.

use std::path::{Path, PathBuf};

use super::accounts::Accounts;
use super::model::{Id, Role, User, normalise_email};
use super::password::{self, Hasher};

/// What bootstrap did, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Users exist already: nothing done.
    Existing,
    /// Admin created with the password from the environment.
    FromEnvironment { email: String },
    /// Admin created with a generated password, written to this file.
    Generated {
        email: String,
        password_file: PathBuf,
    },
}

pub const DEFAULT_ADMIN_EMAIL: &str = "admin@lightbox.local";

/// A random password of 24 characters from an unambiguous alphabet (about 137 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..24)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn ensure_admin(
    accounts: &std::sync::Arc<Accounts>,
    hasher: &Hasher,
    data: &Path,
    env_email: Option<String>,
    env_password: Option<String>,
) -> Result<Bootstrap, String> {
    let acc = accounts.clone();
    let empty = tokio::task::spawn_blocking(move || acc.is_empty())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if !empty {
        return Ok(Bootstrap::Existing);
    }
    let email = match env_email.filter(|e| !e.trim().is_empty()) {
        Some(e) => normalise_email(&e)
            .ok_or_else(|| format!("LIGHTBOX_ADMIN_EMAIL {e:?} is not an email address"))?,
        None => DEFAULT_ADMIN_EMAIL.to_owned(),
    };
    let (pw, generated) = match env_password.filter(|p| !p.is_empty()) {
        Some(p) => {
            password::check_policy(&p, &[&email])
                .map_err(|e| format!("LIGHTBOX_ADMIN_PASSWORD: {e}"))?;
            (p, false)
        }
        None => (generate_password(), true),
    };
    let hash = hasher.hash(pw.clone()).await.map_err(|e| e.to_string())?;
    let user = User {
        id: Id::random(),
        email: email.clone(),
        role: Role::Admin,
        password_hash: hash,
        created_ms: super::now_ms(),
        must_change_password: generated,
        disabled: false,
        expires_ms: None,
        organisation: None,
    };
    let password_file = data.join("initial-admin-password");
    if generated {
        let _ = std::fs::remove_file(&password_file);
        super::token::write_private(&password_file, format!("{pw}\n").as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", password_file.display()))?;
    }
    let acc = accounts.clone();
    tokio::task::spawn_blocking(move || acc.create(&user))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(if generated {
        Bootstrap::Generated {
            email,
            password_file,
        }
    } else {
        Bootstrap::FromEnvironment { email }
    })
}
