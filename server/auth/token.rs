//! Bearer access tokens: HS256 JWTs (jsonwebtoken with exactly one crypto backend,
//! `rust_crypto`), at most 15 minutes, bound to a server-side session so that a revoked or
//! expired session refuses its tokens at once. The signing secret is generated at first start
//! and kept in `<data>/jwt-secret` (mode 0600).

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Audience of access tokens; a token minted for another purpose is refused.
pub const AUDIENCE: &str = "lightbox-access";
/// Lifetime of an access token.
pub const ACCESS_TTL_SECS: u64 = 15 * 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The session's stored key (a hash of the session id: a token cannot become a cookie).
    pub sid: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    /// Load the secret from `<data>/jwt-secret`, creating it (0600) on first start.
    pub fn load_or_create(data: &Path) -> std::io::Result<Self> {
        let path = data.join("jwt-secret");
        let secret = match std::fs::read_to_string(&path) {
            Ok(s) => hex::decode(s.trim())
                .map_err(|_| std::io::Error::other(format!("{} is not hex", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = rand::random::<[u8; 32]>().to_vec();
                write_private(&path, hex::encode(&secret).as_bytes())?;
                secret
            }
            Err(e) => return Err(e),
        };
        if secret.len() < 32 {
            return Err(std::io::Error::other(format!(
                "{} holds fewer than 256 bits",
                path.display()
            )));
        }
        Ok(Self::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Mint an access token for a session key.
    pub fn issue(&self, session_key: &str, now_secs: u64) -> Result<(String, u64), String> {
        let claims = Claims {
            sid: session_key.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now_secs,
            exp: now_secs + ACCESS_TTL_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|t| (t, claims.exp))
            .map_err(|e| e.to_string())
    }

    /// Verify signature (HS256 only), audience and expiry. `alg: none`, other algorithms, a
    /// wrong signature or audience, or an expired token are all refused.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "aud", "iat"]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

/// Write a file readable by its owner only (0600), durably.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64_like::b64;

    /// Minimal URL-safe base64 without padding, for forging tokens in tests.
    mod base64_like {
        pub fn b64(data: &[u8]) -> String {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for c in data.chunks(3) {
                let n = (c[0] as u32) << 16
                    | (*c.get(1).unwrap_or(&0) as u32) << 8
                    | *c.get(2).unwrap_or(&0) as u32;
                for i in 0..(c.len() + 1) {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }

    #[test]
    fn round_trip_and_forgeries() {
        let keys = TokenKeys::from_secret(&[7u8; 32]);
        let now = 1_900_000_000;
        let (t, exp) = keys.issue("abc", now).unwrap();
        assert_eq!(exp, now + ACCESS_TTL_SECS);
        // Not yet valid in real time: jsonwebtoken checks exp against the clock, so use a
        // token issued now for the positive case.
        let real_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (t_now, _) = keys.issue("abc", real_now).unwrap();
        assert_eq!(keys.verify(&t_now).unwrap().sid, "abc");
        let _ = t;
        // Wrong secret.
        let other = TokenKeys::from_secret(&[8u8; 32]);
        assert!(other.verify(&t_now).is_none());
        // Expired.
        let (old, _) = keys.issue("abc", real_now - 2 * ACCESS_TTL_SECS).unwrap();
        assert!(keys.verify(&old).is_none());
        // alg: none.
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(format!(
            r#"{{"sid":"abc","aud":"{AUDIENCE}","iat":{real_now},"exp":{}}}"#,
            real_now + 60
        )
        .as_bytes());
        assert!(keys.verify(&format!("{header}.{body}.")).is_none());
        // Wrong audience, correctly signed.
        let claims = Claims {
            sid: "abc".into(),
            aud: "lightbox-other".into(),
            iat: real_now,
            exp: real_now + 60,
        };
        let wrong_aud = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap();
        assert!(keys.verify(&wrong_aud).is_none());
        // Tampered payload.
        let mut parts: Vec<&str> = t_now.split('.').collect();
        let forged_body = b64(format!(
            r#"{{"sid":"root","aud":"{AUDIENCE}","iat":{real_now},"exp":{}}}"#,
            real_now + 60
        )
        .as_bytes());
        parts[1] = &forged_body;
        assert!(keys.verify(&parts.join(".")).is_none());
    }
}
