//! Password hashing and the password policy.
//!
//! Hashing: argon2id with at least the OWASP Password Storage Cheat Sheet
//! minimum (m = 19456 KiB, t = 2, p = 1), stored as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). Every hash or verify
//! holds a semaphore permit and runs on tokio's blocking pool, so the async
//! executor never stalls on ~19 MiB memory-hard work and N parallel logins
//! never allocate more than `max_parallel` × m at once.
//!
//! Policy: NIST SP 800-63B section 5.1.1.2 (memorized secrets): at least 8
//! characters, at least 64 accepted (we allow 256), no composition rules,
//! and refuse values from a list of commonly used / breached passwords,
//! repetitive or sequential characters and context-specific words (the
//! user's email address).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Minimum length in Unicode scalar values (NIST SP 800-63B 5.1.1.2: "at
/// least 8 characters in length").
pub const MIN_LEN: usize = 8;
/// Maximum length in Unicode scalar values. NIST SP 800-63B 5.1.1.2 says
/// verifiers "SHOULD permit ... at least 64 characters"; the upper bound
/// only keeps hashing input bounded.
pub const MAX_LEN: usize = 256;
/// `verify` answers `false` without hashing for inputs longer than this
/// (bytes). 256 characters are at most 1024 bytes in UTF-8, so no password
/// that passed the policy is affected; this only bounds work on hostile input.
const MAX_VERIFY_BYTES: usize = 4 * MAX_LEN;

/// Upper bounds on parameters read back from a stored PHC string. A corrupt
/// or planted hash with m = 4 TiB must not make `verify` allocate it.
const MAX_STORED_M_KIB: u32 = 1024 * 1024; // 1 GiB
const MAX_STORED_T: u32 = 64;
const MAX_STORED_P: u32 = 16;

/// Errors from hashing (not from a wrong password: that is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The argon2 parameters were rejected (only from [`Hasher::with_params`]).
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(argon2::Error),
    /// argon2 / PHC encoding failed.
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    /// The blocking task panicked or was cancelled at runtime shutdown.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The semaphore was closed (never happens: it is never closed).
    #[error("password hasher is shut down")]
    Closed,
}

/// Hashes and verifies passwords with argon2id, bounded in parallelism.
///
/// Cheap to share: put one in an `Arc` (or app state) for the whole server.
#[derive(Debug)]
pub struct Hasher {
    /// Permits for concurrent argon2 computations. `Arc` so the permit can
    /// move into the blocking task: if the request future is dropped (client
    /// went away) the permit is still held until the computation really ends.
    sem: Arc<Semaphore>,
    params: Params,
    max_parallel: usize,
    /// argon2 computations currently running (instrumentation).
    running: Arc<AtomicUsize>,
    /// Highest value `running` has reached (instrumentation).
    peak: Arc<AtomicUsize>,
    /// Dummy PHC with `params`, for unknown accounts (computed on first use).
    dummy: Arc<OnceLock<String>>,
}

impl Hasher {
    /// argon2id with m = 19456 KiB, t = 2, p = 1 (OWASP Password Storage Cheat
    /// Sheet minimum) and at most `max_parallel` computations at once
    /// (clamped to at least 1).
    pub fn new(max_parallel: usize) -> Self {
        Self::build(max_parallel, default_params())
    }

    /// Custom cost parameters (memory in KiB, iterations, lanes). Meant for
    /// tests (cheap params) or for raising the cost; never go below the
    /// defaults in production.
    pub fn with_params(
        max_parallel: usize,
        m_kib: u32,
        t: u32,
        p: u32,
    ) -> Result<Self, PasswordError> {
        let params = Params::new(m_kib, t, p, None).map_err(PasswordError::InvalidParams)?;
        Ok(Self::build(max_parallel, params))
    }

    fn build(max_parallel: usize, params: Params) -> Self {
        let max_parallel = max_parallel.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            sem: Arc::new(Semaphore::new(max_parallel)),
            params,
            max_parallel,
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
            dummy: Arc::new(OnceLock::new()),
        }
    }

    /// The configured maximum number of concurrent computations.
    pub fn max_parallel(&self) -> usize {
        self.max_parallel
    }

    /// Number of argon2 computations running right now (≤ `max_parallel`).
    pub fn in_flight(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Highest number of argon2 computations ever seen running at once.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Hash `password` into a PHC string with a fresh 128-bit random salt.
    /// Call [`check_policy`] first when the password is user-chosen.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(move || hash_blocking(&password, params)).await?
    }

    /// Check `password` against a stored PHC string. `Ok(false)` for a wrong
    /// password and for anything malformed (not argon2id, unparsable,
    /// absurd parameters); never panics. Comparison is constant-time
    /// (password-hash's `Output` equality).
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, PasswordError> {
        if password.len() > MAX_VERIFY_BYTES {
            return Ok(false);
        }
        self.run(move || verify_blocking(&password, &phc)).await
    }

    /// Burn the same time as [`Hasher::verify`] against an account that does
    /// not exist (login with an unknown email), so response timing does not
    /// reveal which emails have accounts. Always answers `false`.
    ///
    /// Uses a dummy hash with this hasher's own parameters (computed on the
    /// blocking pool at first use; equal to [`dummy_hash`] for default
    /// parameters).
    pub async fn verify_dummy(&self, password: String) -> Result<bool, PasswordError> {
        if password.len() > MAX_VERIFY_BYTES {
            return Ok(false);
        }
        let dummy = Arc::clone(&self.dummy);
        let params = self.params.clone();
        self.run(move || {
            let phc = dummy.get_or_init(|| {
                if params == default_params() {
                    dummy_hash().to_owned()
                } else {
                    make_dummy(params)
                }
            });
            // The result is ignored: no password matches a random one we threw away.
            let _ = verify_blocking(&password, phc);
            false
        })
        .await
    }

    /// True when `phc` was made with different parameters (or another
    /// algorithm) than this hasher uses: after a successful login the caller
    /// may re-hash the password and store the new PHC (OWASP: upgrade work
    /// factors over time).
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
        {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }

    /// Acquire a permit, then run `f` on the blocking pool holding it.
    async fn run<T, F>(&self, f: F) -> Result<T, PasswordError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.sem)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Closed)?;
        let running = Arc::clone(&self.running);
        let peak = Arc::clone(&self.peak);
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Decrement even if argon2 panics.
            let _guard = Decrement(running);
            f()
        })
        .await?;
        Ok(out)
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn default_params() -> Params {
    // OWASP Password Storage Cheat Sheet, argon2id minimum configuration.
    Params::DEFAULT
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn new_salt() -> Result<SaltString, PasswordError> {
    // 16 bytes (128 bits, password-hash's recommended length, above the
    // 32-bit minimum of NIST SP 800-63B 5.1.1.2) from rand's thread-local
    // CSPRNG, seeded from the operating system. (password-hash's own
    // `OsRng` path needs rand_core 0.6's `getrandom` feature, which this
    // crate does not enable itself.)
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    SaltString::encode_b64(&bytes).map_err(PasswordError::Hash)
}

fn hash_blocking(password: &str, params: Params) -> Result<String, PasswordError> {
    let salt = new_salt()?;
    argon2(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    let Ok(p) = Params::try_from(&parsed) else {
        return false;
    };
    if p.m_cost() > MAX_STORED_M_KIB || p.t_cost() > MAX_STORED_T || p.p_cost() > MAX_STORED_P {
        return false;
    }
    // The verifier takes algorithm, version and parameters from the PHC.
    argon2(default_params())
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

fn make_dummy(params: Params) -> String {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let password = hex::encode(secret);
    // Hashing with valid params and a valid salt cannot fail in practice; if
    // it ever did, a well-formed PHC with a random output still costs the
    // same to verify, so fall back to formatting one by hand.
    hash_blocking(&password, params.clone()).unwrap_or_else(|_| {
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        let salt = SaltString::encode_b64(&salt)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| "c29tZXNhbHRzb21lc2FsdA".to_owned());
        format!(
            "$argon2id$v=19$m={},t={},p={}${}$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            salt
        )
    })
}

/// A valid argon2id PHC string (default parameters) of a random password
/// nobody knows, computed once per process. Verify against it when the
/// email is unknown so the answer takes as long as for a real account.
///
/// The first call does one full argon2 hash (tens of ms in release builds)
/// on the calling thread: call it once at start-up, or from the blocking
/// pool (as [`Hasher::verify_dummy`] does).
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| make_dummy(default_params()))
}

/// Why a new password was refused. The messages are shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the password must be at least {min} characters long")]
    TooShort { min: usize },
    #[error("the password must be at most {max} characters long")]
    TooLong { max: usize },
    #[error("this password is too common; choose another")]
    Common,
    #[error("the password must not be your email address or based on it")]
    ContainsContext,
    #[error(
        "the password is too repetitive or sequential (like \"aaaaaaaa\" or \"12345678\"); choose another"
    )]
    Repetitive,
}

/// The bundled list of common / breached passwords (lower-cased).
fn common_passwords() -> &'static HashSet<String> {
    static LIST: OnceLock<HashSet<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("common-passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect()
    })
}

/// Check a new password against NIST SP 800-63B 5.1.1.2 (and OWASP
/// Authentication Cheat Sheet) rules:
///
/// - at least [`MIN_LEN`] and at most [`MAX_LEN`] characters, counted as
///   Unicode scalar values; spaces and all printable characters allowed, no
///   truncation, no composition rules (no "one digit, one symbol");
/// - not in the bundled list of commonly used / breached passwords
///   (case-insensitive, surrounding whitespace ignored);
/// - not one of the `context` strings (pass the email address and its local
///   part; the service name "lightbox" is in the bundled list), nor mostly
///   made of one (e.g. the local part plus a digit);
/// - not repetitive or sequential ("aaaaaaaa", "abababab", "12345678",
///   "hgfedcba").
///
/// NIST also asks for Unicode normalisation (NFKC/NFKD) before hashing; we
/// have no normalisation crate, so passwords are hashed as given.
pub fn check_policy(password: &str, context: &[&str]) -> Result<(), PolicyError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(PolicyError::TooShort { min: MIN_LEN });
    }
    if len > MAX_LEN {
        return Err(PolicyError::TooLong { max: MAX_LEN });
    }
    let folded = password.trim().to_lowercase();
    if is_repetitive(&folded) {
        return Err(PolicyError::Repetitive);
    }
    if common_passwords().contains(&folded) {
        return Err(PolicyError::Common);
    }
    for ctx in context {
        let ctx = ctx.trim().to_lowercase();
        if ctx.is_empty() {
            continue;
        }
        if folded == ctx {
            return Err(PolicyError::ContainsContext);
        }
        // A derivative such as "john.smith1" for john.smith@example.org:
        // the context string makes up at least half of the password.
        let ctx_len = ctx.chars().count();
        if ctx_len >= 4 && folded.contains(&ctx) && ctx_len * 2 >= folded.chars().count() {
            return Err(PolicyError::ContainsContext);
        }
    }
    Ok(())
}

/// Fewer than 4 distinct characters, or the whole string one run of
/// consecutive code points going up or down by one.
fn is_repetitive(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let distinct: HashSet<char> = chars.iter().copied().collect();
    if distinct.len() < 4 {
        return true;
    }
    let step = |d: i64| {
        chars
            .windows(2)
            .all(|w| i64::from(u32::from(w[1])) - i64::from(u32::from(w[0])) == d)
    };
    step(1) || step(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters for tests (8 MiB would still be slow in debug builds).
    fn cheap(max_parallel: usize) -> Hasher {
        Hasher::with_params(max_parallel, 64, 1, 1).unwrap()
    }

    #[tokio::test]
    async fn round_trip() {
        let h = cheap(2);
        let phc = h.hash("correct horse battery".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(
            h.verify("correct horse battery".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(
            !h.verify("correct horse battery!".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(!h.verify(String::new(), phc.clone()).await.unwrap());
        assert!(!h.needs_rehash(&phc));
        // Same password, fresh salt, different PHC.
        let phc2 = h.hash("correct horse battery".into()).await.unwrap();
        assert_ne!(phc, phc2);
        assert_eq!(h.in_flight(), 0);
    }

    #[tokio::test]
    async fn verify_uses_params_from_phc() {
        let a = Hasher::with_params(1, 64, 1, 1).unwrap();
        let b = Hasher::with_params(1, 128, 2, 1).unwrap();
        let phc = a.hash("some passphrase".into()).await.unwrap();
        assert!(
            b.verify("some passphrase".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(b.needs_rehash(&phc));
    }

    #[tokio::test]
    async fn malformed_phc_is_false() {
        let h = cheap(1);
        let good = h.hash("password-123-x".into()).await.unwrap();
        let cases = [
            String::new(),
            "not a hash".to_owned(),
            "$argon2id$".to_owned(),
            "$argon2id$v=19$m=64,t=1,p=1$".to_owned(),
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ".to_owned(),
            "$argon2id$v=19$m=64,t=1,p=1$!!!$!!!".to_owned(),
            "$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$AAAA".to_owned(),
            // absurd memory cost must not be attempted
            good.replace("m=64", "m=4000000000"),
            // other algorithms are not accepted
            good.replace("$argon2id$", "$argon2i$"),
            "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234".to_owned(),
            good[..good.len() - 5].to_owned(),
        ];
        for phc in cases {
            assert!(
                !h.verify("password-123-x".into(), phc.clone())
                    .await
                    .unwrap(),
                "{phc}"
            );
        }
        // Oversized input answers false without hashing.
        assert!(!h.verify("x".repeat(10_000), good).await.unwrap());
    }

    #[tokio::test]
    async fn dummy_hash_is_valid_default_argon2id() {
        let phc = tokio::task::spawn_blocking(dummy_hash).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(PasswordHash::new(phc).is_ok());
        assert_eq!(phc, dummy_hash(), "computed once");
        assert!(!Hasher::new(1).needs_rehash(phc));
    }

    #[tokio::test]
    async fn verify_dummy_is_false() {
        let h = cheap(1);
        assert!(!h.verify_dummy("whatever-password".into()).await.unwrap());
        let dummy = h.dummy.get().unwrap().clone();
        assert!(dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{dummy}");
        assert!(!h.verify_dummy("whatever-password".into()).await.unwrap());
        assert_eq!(h.dummy.get().unwrap(), &dummy, "computed once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallelism_is_bounded() {
        // Costlier params so the computations overlap in time.
        let h = Arc::new(Hasher::with_params(2, 4096, 2, 1).unwrap());
        assert_eq!(h.max_parallel(), 2);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let h = Arc::clone(&h);
                tokio::spawn(async move { h.hash(format!("password number {i}")).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(h.peak_in_flight() >= 1);
        assert!(h.peak_in_flight() <= 2, "peak {}", h.peak_in_flight());
        assert_eq!(h.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_request_keeps_permit_until_work_ends() {
        let h = Arc::new(Hasher::with_params(1, 4096, 4, 1).unwrap());
        // Start a hash and drop its future while the blocking work runs.
        let h2 = Arc::clone(&h);
        let task = tokio::spawn(async move { h2.hash("dropped request".into()).await });
        while h.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
        // The next hash waits for the permit, so it never overlaps.
        h.hash("next request".into()).await.unwrap();
        assert_eq!(h.peak_in_flight(), 1);
    }

    #[test]
    fn zero_parallel_is_clamped() {
        assert_eq!(Hasher::with_params(0, 64, 1, 1).unwrap().max_parallel(), 1);
        assert!(Hasher::with_params(1, 1, 1, 1).is_err());
    }

    #[test]
    fn policy_table() {
        use PolicyError::*;
        let ctx = ["jane.doe@example.org", "jane.doe"];
        let cases: &[(&str, Result<(), PolicyError>)] = &[
            ("", Err(TooShort { min: 8 })),
            ("Ab3$xyz", Err(TooShort { min: 8 })),
            // 7 scalar values, 14+ bytes: counted as characters
            ("ñçéüößà", Err(TooShort { min: 8 })),
            ("ñçéüößàè", Ok(())),
            ("tulip river 9", Ok(())),
            ("correct horse battery staple", Ok(())),
            // no composition rules: all lower-case letters is fine
            ("mauvelantern", Ok(())),
            // spaces are allowed and count
            ("a b c d e", Ok(())),
            (&"x7Qp".repeat(16), Ok(())), // 64 characters accepted
            (&"x7Qp".repeat(64), Ok(())), // 256 accepted
            (&"x7Qp2".repeat(52), Err(TooLong { max: 256 })),
            ("password", Err(Common)),
            ("Password1", Err(Common)),
            ("  PASSWORD  ", Err(Common)),
            ("iloveyou1", Err(Common)),
            ("qwerty123", Err(Common)),
            ("p@ssw0rd", Err(Common)),
            ("trustno1", Err(Common)),
            ("lightbox123", Err(Common)),
            ("aaaaaaaa", Err(Repetitive)),
            ("abababab", Err(Repetitive)),
            ("abcabcabc", Err(Repetitive)),
            ("12341234", Ok(())),
            ("abcdefgh", Err(Repetitive)),
            ("ABCDEFGHIJ", Err(Repetitive)),
            ("hgfedcba", Err(Repetitive)),
            ("23456789", Err(Repetitive)),
            ("jane.doe@example.org", Err(ContainsContext)),
            ("JANE.DOE@EXAMPLE.ORG", Err(ContainsContext)),
            ("jane.doe", Err(ContainsContext)),
            ("jane.doe1", Err(ContainsContext)),
            ("jane.doe likes long walks", Ok(())),
        ];
        for (pw, want) in cases {
            assert_eq!(&check_policy(pw, &ctx), want, "{pw:?}");
        }
        assert_eq!(check_policy("jane.doe1", &[]), Ok(()));
        assert_eq!(check_policy("tulip river 9", &["", "  "]), Ok(()));
    }

    #[test]
    fn policy_messages() {
        assert_eq!(
            PolicyError::TooShort { min: 8 }.to_string(),
            "the password must be at least 8 characters long"
        );
        assert_eq!(
            PolicyError::Common.to_string(),
            "this password is too common; choose another"
        );
    }

    #[test]
    fn common_list_is_loaded() {
        let list = common_passwords();
        assert!(list.len() >= 300, "{} entries", list.len());
        for pw in [
            "123456", "password", "qwerty", "12345678", "sunshine", "changeme",
        ] {
            assert!(list.contains(pw), "{pw}");
        }
        assert!(list.iter().all(|p| !p.starts_with('#') && !p.is_empty()));
        assert!(list.iter().all(|p| p == &p.to_lowercase() && p == p.trim()));
    }
}
